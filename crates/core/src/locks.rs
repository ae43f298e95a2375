//! Per-VM locks: the long work on one VM (boot, stop, delete) holds only
//! that VM's lock, so work on different VMs overlaps.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

#[derive(Debug, Default)]
pub struct VmLocks {
    locks: Mutex<HashMap<String, Arc<AsyncMutex<()>>>>,
}

impl VmLocks {
    /// Waits for and takes the lock of VM `id`.
    pub async fn lock(&self, id: &str) -> OwnedMutexGuard<()> {
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
            locks.entry(id.to_string()).or_default().clone()
        };
        lock.lock_owned().await
    }

    /// Forgets the lock of a removed VM (the caller holds it).
    pub fn forget(&self, id: &str) {
        self.locks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }
}
