//! The persistence trait the flows act through. `banger-store` implements
//! it on SQLite; `memory_store` is the in-tree fake for unit tests.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use crate::image::Image;
use crate::snapshot::Snapshot;
use crate::vm::Vm;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StoreError {
    #[error("{kind} name already exists: {name}")]
    NameTaken { kind: &'static str, name: String },
    #[error("guest address {0} is already taken")]
    AddressTaken(Ipv4Addr),
    #[error("{kind} {id} does not exist")]
    Missing { kind: &'static str, id: String },
    #[error("state store: {0}")]
    Backend(String),
    #[error("state store holds a bad record: {0}")]
    Corrupt(String),
}

/// Records of images and VMs. Every method is short (milliseconds); none
/// may be slow enough to matter under the create lock.
pub trait Store: Send + Sync {
    fn upsert_image(&self, image: &Image) -> Result<(), StoreError>;
    fn find_image(&self, id_or_name: &str) -> Result<Option<Image>, StoreError>;
    fn list_images(&self) -> Result<Vec<Image>, StoreError>;
    fn delete_image(&self, id: &str) -> Result<(), StoreError>;

    /// Inserts a new VM; the name, address and CID must be free.
    fn insert_vm(&self, vm: &Vm) -> Result<(), StoreError>;
    /// Replaces an existing VM record.
    fn update_vm(&self, vm: &Vm) -> Result<(), StoreError>;
    fn find_vm(&self, id_or_name: &str) -> Result<Option<Vm>, StoreError>;
    fn list_vms(&self) -> Result<Vec<Vm>, StoreError>;
    fn delete_vm(&self, id: &str) -> Result<(), StoreError>;
    /// Guest addresses currently held by VMs.
    fn used_guest_ips(&self) -> Result<HashSet<Ipv4Addr>, StoreError>;

    /// Inserts a new snapshot; its name must be free.
    fn insert_snapshot(&self, snapshot: &Snapshot) -> Result<(), StoreError>;
    fn find_snapshot(&self, id_or_name: &str) -> Result<Option<Snapshot>, StoreError>;
    fn list_snapshots(&self) -> Result<Vec<Snapshot>, StoreError>;
    fn delete_snapshot(&self, id: &str) -> Result<(), StoreError>;
}
