//! Snapshot resources as they cross the API.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// What a snapshot is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotKind {
    /// Taken by `vm snapshot`.
    User,
    /// An image's warm template.
    Template,
    /// Held by a fork while its copies start.
    Fork,
}

/// A saved machine new VMs start from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Snapshot {
    pub id: String,
    pub name: String,
    pub kind: SnapshotKind,
    /// The VM it was taken of; an image's template has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_vm: Option<String>,
    pub image_id: String,
    pub image_name: String,
    /// The VMM that restores it.
    pub vmm: String,
    pub vcpus: u32,
    pub memory_mib: u32,
    pub work_disk_bytes: u64,
    pub system_disk_bytes: u64,
    pub nat: bool,
    /// Guest memory is a file every VM from it maps copy-on-write.
    pub memory_file: bool,
    /// Bytes its files take on disk.
    pub disk_bytes: u64,
    /// RFC 3339, UTC.
    pub created_at: String,
}

/// Body of `GET /v1/snapshots`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SnapshotList {
    pub snapshots: Vec<Snapshot>,
}

/// Body of `POST /v1/vms/{vm}/fork`'s answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ForkResult {
    pub vms: Vec<crate::vm::Vm>,
}
