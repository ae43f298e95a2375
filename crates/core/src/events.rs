//! Lifecycle events as they happen: every record the daemon writes goes
//! through [`EventedStore`], which tells [`Events`] what changed (a VM
//! made, its state changed, removed; an image or snapshot added or
//! removed). Readers subscribe and get every event from then on; one
//! that reads too slowly is told how many it missed instead of holding
//! the daemon back.

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::sync::Arc;

use banger_proto::event::{Event, EventObject};
use tokio::sync::broadcast;

use crate::clock::{rfc3339, Clock};
use crate::image::Image;
use crate::snapshot::Snapshot;
use crate::store::{Store, StoreError};
use crate::vm::Vm;

/// Events a reader may fall behind by before it misses some.
pub const EVENTS_BUFFERED: usize = 1024;

/// Where events are sent and subscribed to.
pub struct Events {
    tx: broadcast::Sender<Event>,
    clock: Arc<dyn Clock>,
}

impl Events {
    pub fn new(clock: Arc<dyn Clock>) -> Arc<Events> {
        let (tx, _) = broadcast::channel(EVENTS_BUFFERED);
        Arc::new(Events { tx, clock })
    }

    /// Every event from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }

    fn send(&self, object: EventObject, action: &str, id: &str, name: &str) {
        tracing::debug!(object = object.as_str(), action, name, "event");
        // No reader is no error.
        let _ = self.tx.send(Event {
            at: rfc3339(self.clock.now_ms()),
            object,
            action: action.to_string(),
            id: id.to_string(),
            name: name.to_string(),
            missed: None,
        });
    }

    /// What a reader that missed `missed` events is told.
    pub fn lagged(&self, missed: u64) -> Event {
        Event {
            at: rfc3339(self.clock.now_ms()),
            object: EventObject::Stream,
            action: "lagged".to_string(),
            id: String::new(),
            name: String::new(),
            missed: Some(missed),
        }
    }
}

/// A store that reports what its writes changed. A change is reported
/// after it is written, never for a write that failed.
pub struct EventedStore {
    inner: Arc<dyn Store>,
    events: Arc<Events>,
}

impl EventedStore {
    pub fn new(inner: Arc<dyn Store>, events: Arc<Events>) -> Arc<EventedStore> {
        Arc::new(EventedStore { inner, events })
    }
}

impl Store for EventedStore {
    fn upsert_image(&self, image: &Image) -> Result<(), StoreError> {
        let existed = self.inner.find_image(&image.id)?.is_some();
        self.inner.upsert_image(image)?;
        let action = if existed { "updated" } else { "created" };
        self.events
            .send(EventObject::Image, action, &image.id, &image.name);
        Ok(())
    }

    fn find_image(&self, id_or_name: &str) -> Result<Option<Image>, StoreError> {
        self.inner.find_image(id_or_name)
    }

    fn list_images(&self) -> Result<Vec<Image>, StoreError> {
        self.inner.list_images()
    }

    fn delete_image(&self, id: &str) -> Result<(), StoreError> {
        let image = self.inner.find_image(id)?;
        self.inner.delete_image(id)?;
        if let Some(image) = image {
            self.events
                .send(EventObject::Image, "removed", &image.id, &image.name);
        }
        Ok(())
    }

    fn insert_vm(&self, vm: &Vm) -> Result<(), StoreError> {
        self.inner.insert_vm(vm)?;
        self.events
            .send(EventObject::Vm, "created", &vm.id, &vm.name);
        Ok(())
    }

    fn update_vm(&self, vm: &Vm) -> Result<(), StoreError> {
        let before = self.inner.find_vm(&vm.id)?.map(|old| old.state);
        self.inner.update_vm(vm)?;
        if before != Some(vm.state) {
            self.events
                .send(EventObject::Vm, vm.state.as_str(), &vm.id, &vm.name);
        }
        Ok(())
    }

    fn find_vm(&self, id_or_name: &str) -> Result<Option<Vm>, StoreError> {
        self.inner.find_vm(id_or_name)
    }

    fn list_vms(&self) -> Result<Vec<Vm>, StoreError> {
        self.inner.list_vms()
    }

    fn delete_vm(&self, id: &str) -> Result<(), StoreError> {
        let vm = self.inner.find_vm(id)?;
        self.inner.delete_vm(id)?;
        if let Some(vm) = vm {
            self.events
                .send(EventObject::Vm, "removed", &vm.id, &vm.name);
        }
        Ok(())
    }

    fn used_guest_ips(&self) -> Result<HashSet<Ipv4Addr>, StoreError> {
        self.inner.used_guest_ips()
    }

    fn insert_snapshot(&self, snapshot: &Snapshot) -> Result<(), StoreError> {
        self.inner.insert_snapshot(snapshot)?;
        self.events.send(
            EventObject::Snapshot,
            "created",
            &snapshot.id,
            &snapshot.name,
        );
        Ok(())
    }

    fn find_snapshot(&self, id_or_name: &str) -> Result<Option<Snapshot>, StoreError> {
        self.inner.find_snapshot(id_or_name)
    }

    fn list_snapshots(&self) -> Result<Vec<Snapshot>, StoreError> {
        self.inner.list_snapshots()
    }

    fn delete_snapshot(&self, id: &str) -> Result<(), StoreError> {
        let snapshot = self.inner.find_snapshot(id)?;
        self.inner.delete_snapshot(id)?;
        if let Some(snapshot) = snapshot {
            self.events.send(
                EventObject::Snapshot,
                "removed",
                &snapshot.id,
                &snapshot.name,
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SystemClock;
    use crate::memory_store::MemoryStore;

    #[test]
    fn writes_are_reported_once_and_failed_writes_not_at_all() {
        let events = Events::new(Arc::new(SystemClock));
        let store = EventedStore::new(Arc::new(MemoryStore::default()), events.clone());
        let mut rx = events.subscribe();
        let mut vm = Vm::sample("box", "i");
        vm.state = crate::vm::VmState::Created;
        store.insert_vm(&vm).unwrap();
        assert!(store.insert_vm(&vm).is_err(), "the name is taken");
        store.update_vm(&vm).unwrap();
        vm.state = crate::vm::VmState::Running;
        store.update_vm(&vm).unwrap();
        store.delete_vm(&vm.id).unwrap();
        let seen: Vec<(EventObject, String, String)> = std::iter::from_fn(|| rx.try_recv().ok())
            .map(|e| (e.object, e.action, e.name))
            .collect();
        let vm_event = |action: &str| (EventObject::Vm, action.to_string(), "box".to_string());
        assert_eq!(
            seen,
            vec![
                vm_event("created"),
                vm_event("running"),
                vm_event("removed")
            ],
            "an update that keeps the state is no event"
        );
    }

    #[test]
    fn a_slow_reader_learns_how_many_it_missed() {
        let events = Events::new(Arc::new(SystemClock));
        let mut rx = events.subscribe();
        for i in 0..EVENTS_BUFFERED + 5 {
            events.send(EventObject::Image, "created", &i.to_string(), "x");
        }
        match rx.try_recv() {
            Err(broadcast::error::TryRecvError::Lagged(missed)) => {
                assert_eq!(events.lagged(missed).missed, Some(5))
            }
            other => panic!("not lagged: {other:?}"),
        }
    }
}
