//! An in-memory `Store`: a fake for unit tests of the flows, with the same
//! uniqueness rules as the SQLite schema.

use std::collections::{BTreeMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::Mutex;

use crate::image::Image;
use crate::snapshot::Snapshot;
use crate::store::{Store, StoreError};
use crate::vm::Vm;

#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    images: BTreeMap<String, Image>,
    vms: BTreeMap<String, Vm>,
    snapshots: BTreeMap<String, Snapshot>,
}

fn lock(store: &MemoryStore) -> std::sync::MutexGuard<'_, Inner> {
    store.inner.lock().unwrap_or_else(|e| e.into_inner())
}

impl Store for MemoryStore {
    fn upsert_image(&self, image: &Image) -> Result<(), StoreError> {
        let mut inner = lock(self);
        if inner
            .images
            .values()
            .any(|i| i.name == image.name && i.id != image.id)
        {
            return Err(StoreError::NameTaken {
                kind: "image",
                name: image.name.clone(),
            });
        }
        inner.images.insert(image.id.clone(), image.clone());
        Ok(())
    }

    fn find_image(&self, id_or_name: &str) -> Result<Option<Image>, StoreError> {
        let inner = lock(self);
        Ok(inner
            .images
            .values()
            .find(|i| i.id == id_or_name || i.name == id_or_name)
            .cloned())
    }

    fn list_images(&self) -> Result<Vec<Image>, StoreError> {
        Ok(lock(self).images.values().cloned().collect())
    }

    fn delete_image(&self, id: &str) -> Result<(), StoreError> {
        let mut inner = lock(self);
        // Like the schema's foreign key: an image in use stays.
        if inner.vms.values().any(|v| v.image_id == id)
            || inner.snapshots.values().any(|s| s.image_id == id)
        {
            return Err(StoreError::Backend(format!(
                "image {id} is referenced by a vm"
            )));
        }
        inner.images.remove(id);
        Ok(())
    }

    fn insert_vm(&self, vm: &Vm) -> Result<(), StoreError> {
        let mut inner = lock(self);
        if inner.vms.values().any(|v| v.name == vm.name) {
            return Err(StoreError::NameTaken {
                kind: "vm",
                name: vm.name.clone(),
            });
        }
        if inner.vms.values().any(|v| v.guest_ip == vm.guest_ip) {
            return Err(StoreError::AddressTaken(vm.guest_ip));
        }
        inner.vms.insert(vm.id.clone(), vm.clone());
        Ok(())
    }

    fn update_vm(&self, vm: &Vm) -> Result<(), StoreError> {
        let mut inner = lock(self);
        match inner.vms.get_mut(&vm.id) {
            Some(slot) => {
                *slot = vm.clone();
                Ok(())
            }
            None => Err(StoreError::Missing {
                kind: "vm",
                id: vm.id.clone(),
            }),
        }
    }

    fn find_vm(&self, id_or_name: &str) -> Result<Option<Vm>, StoreError> {
        let inner = lock(self);
        Ok(inner
            .vms
            .values()
            .find(|v| v.id == id_or_name || v.name == id_or_name)
            .cloned())
    }

    fn list_vms(&self) -> Result<Vec<Vm>, StoreError> {
        Ok(lock(self).vms.values().cloned().collect())
    }

    fn delete_vm(&self, id: &str) -> Result<(), StoreError> {
        lock(self).vms.remove(id);
        Ok(())
    }

    fn used_guest_ips(&self) -> Result<HashSet<Ipv4Addr>, StoreError> {
        Ok(lock(self).vms.values().map(|v| v.guest_ip).collect())
    }

    fn insert_snapshot(&self, snapshot: &Snapshot) -> Result<(), StoreError> {
        let mut inner = lock(self);
        if inner.snapshots.values().any(|s| s.name == snapshot.name) {
            return Err(StoreError::NameTaken {
                kind: "snapshot",
                name: snapshot.name.clone(),
            });
        }
        inner
            .snapshots
            .insert(snapshot.id.clone(), snapshot.clone());
        Ok(())
    }

    fn find_snapshot(&self, id_or_name: &str) -> Result<Option<Snapshot>, StoreError> {
        Ok(lock(self)
            .snapshots
            .values()
            .find(|s| s.id == id_or_name || s.name == id_or_name)
            .cloned())
    }

    fn list_snapshots(&self) -> Result<Vec<Snapshot>, StoreError> {
        Ok(lock(self).snapshots.values().cloned().collect())
    }

    fn delete_snapshot(&self, id: &str) -> Result<(), StoreError> {
        lock(self).snapshots.remove(id);
        Ok(())
    }
}
