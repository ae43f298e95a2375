//! A snapshot: a running VM's machine state (memory and devices) and its
//! disks as they were at one instant, from which new VMs start where it
//! was instead of booting. Its files live in `snapshots/<id>/`: `state`
//! (the VMM's saved machine), `memory` (a template's guest memory, mapped
//! copy-on-write by every VM restored from it) and the VM's own disks
//! under the names its capabilities gave them.

use serde::{Deserialize, Serialize};

/// The saved machine.
pub const STATE_FILE: &str = "state";
/// A template's guest memory.
pub const MEMORY_FILE: &str = "memory";

/// What a snapshot is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotKind {
    /// Taken by `vm snapshot`; kept until `snapshot rm`.
    User,
    /// An image's warm template: a freshly booted, agent-ready VM.
    Template,
    /// Taken by `vm fork` for its copies; removed when they are made.
    Fork,
}

impl SnapshotKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SnapshotKind::User => "user",
            SnapshotKind::Template => "template",
            SnapshotKind::Fork => "fork",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub id: String,
    pub name: String,
    pub kind: SnapshotKind,
    /// The VM it was taken of (its name then); an image's template has none.
    pub source_vm: Option<String>,
    pub image_id: String,
    pub image_name: String,
    /// The VMM that saved it; only that VMM restores it.
    pub vmm: String,
    /// The machine shape every VM made from it has.
    pub vcpus: u32,
    pub memory_mib: u32,
    pub work_disk_bytes: u64,
    pub system_disk_bytes: u64,
    pub nat: bool,
    /// Guest memory is the `memory` file, not part of `state`.
    pub memory_file: bool,
    /// Bytes its files take on disk.
    pub disk_bytes: u64,
    pub created_at_ms: u64,
}

impl Snapshot {
    /// The name an image's template goes by.
    pub fn template_name(image_name: &str) -> String {
        format!("{image_name}.warm")
    }
}
