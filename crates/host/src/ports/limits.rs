//! How many TCP connections the relays hold: each costs the daemon two
//! descriptors, so a flood of idle connections to a published port must
//! not starve the API, the database or VM starts of descriptors. Every VM
//! relays at most `PER_VM` at once and all VMs together at most `total`
//! (set from the daemon's open-file limit); a connection past either is
//! accepted and closed at once, and counted.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Connections one VM's published ports relay at once.
pub const PER_VM: usize = 1024;
/// Descriptors kept for everything but relays (API, store, VMMs, disks).
const RESERVED_FDS: u64 = 2048;
/// Relayed connections in all, whatever the limit allows.
const MOST: u64 = 16_384;

#[derive(Debug)]
pub struct RelayLimits {
    all: Arc<Semaphore>,
    total: usize,
    per_vm: Mutex<HashMap<String, Arc<Semaphore>>>,
    refused: AtomicU64,
}

/// The slots one relayed connection holds.
#[derive(Debug)]
pub struct Slot {
    _vm: OwnedSemaphorePermit,
    _all: OwnedSemaphorePermit,
}

impl RelayLimits {
    /// Limits for a daemon whose open-file limit is `nofile`: half of
    /// what it leaves past `RESERVED_FDS`, at least 64, at most `MOST`.
    pub fn for_nofile(nofile: u64) -> Self {
        let total = (nofile.saturating_sub(RESERVED_FDS) / 2).clamp(64, MOST) as usize;
        RelayLimits::with_total(total)
    }

    pub fn with_total(total: usize) -> Self {
        RelayLimits {
            all: Arc::new(Semaphore::new(total)),
            total,
            per_vm: Mutex::default(),
            refused: AtomicU64::new(0),
        }
    }

    /// The most connections relayed at once for all VMs.
    pub fn total(&self) -> usize {
        self.total
    }

    /// A slot for one more connection of `vm`, or `None` (counted) when
    /// the VM or the daemon relays all it may.
    pub fn take(&self, vm: &str) -> Option<Slot> {
        let vm_slots = {
            let mut per_vm = self.per_vm.lock().unwrap_or_else(|e| e.into_inner());
            per_vm
                .entry(vm.to_string())
                .or_insert_with(|| Arc::new(Semaphore::new(PER_VM)))
                .clone()
        };
        let slot = vm_slots
            .try_acquire_owned()
            .ok()
            .zip(self.all.clone().try_acquire_owned().ok())
            .map(|(vm, all)| Slot { _vm: vm, _all: all });
        if slot.is_none() {
            self.refused.fetch_add(1, Ordering::Relaxed);
        }
        slot
    }

    /// Forgets a removed VM's count (its relays hold their own slots).
    pub fn forget(&self, vm: &str) {
        let mut per_vm = self.per_vm.lock().unwrap_or_else(|e| e.into_inner());
        per_vm.remove(vm);
    }

    /// Connections refused since start.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

/// Raises this process's soft open-file limit to its hard limit; returns
/// the limit now in force.
pub fn raise_nofile() -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => hard,
            Err(err) => {
                tracing::warn!(error = %err, "cannot raise the open-file limit");
                soft
            }
        },
        Ok((soft, _)) => soft,
        Err(_) => 1024,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_vm_and_all_together_are_bounded() {
        let limits = RelayLimits::with_total(PER_VM + 10);
        let a: Vec<Slot> = (0..PER_VM).map(|_| limits.take("a").unwrap()).collect();
        assert!(limits.take("a").is_none(), "a's own bound");
        let b: Vec<Slot> = (0..10).map(|_| limits.take("b").unwrap()).collect();
        assert!(limits.take("b").is_none(), "the bound for all");
        assert_eq!(limits.refused(), 2);
        drop(a);
        assert!(limits.take("b").is_some(), "slots come back");
        drop(b);
        assert_eq!(RelayLimits::for_nofile(1024).total(), 64);
        assert_eq!(RelayLimits::for_nofile(1 << 20).total(), 16_384);
        assert_eq!(RelayLimits::for_nofile(10_240).total(), 4096);
    }
}
