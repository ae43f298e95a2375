//! Per-VM locks: the long work on one VM (boot, stop, delete) holds only
//! that VM's lock, so work on different VMs overlaps. A key can also be
//! shared: VMs starting from one snapshot hold a share of its key each,
//! together, and its removal (which takes the key alone) waits for them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedRwLockReadGuard, OwnedRwLockWriteGuard, RwLock};

#[derive(Debug, Default)]
pub struct VmLocks {
    locks: Mutex<HashMap<String, Arc<RwLock<()>>>>,
}

impl VmLocks {
    fn entry(&self, id: &str) -> Arc<RwLock<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        locks.entry(id.to_string()).or_default().clone()
    }

    /// Waits for and takes the lock of `id` alone.
    pub async fn lock(&self, id: &str) -> OwnedRwLockWriteGuard<()> {
        self.entry(id).write_owned().await
    }

    /// Waits for and takes a share of the lock of `id`: shares are held
    /// together, and `lock` waits until every one has gone (a waiting
    /// `lock` goes before shares asked for after it).
    pub async fn share(&self, id: &str) -> OwnedRwLockReadGuard<()> {
        self.entry(id).read_owned().await
    }

    /// Forgets the lock of a removed VM (the caller holds it).
    pub fn forget(&self, id: &str) {
        self.locks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }
}
