//! `GET /v1/vms/{vm}/stats`: what one VM uses on the host. Counters are
//! cumulative since the VM's last start; a reader takes two readings to
//! get rates (`banger vm stats` does, a second apart).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::vm::VmState;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct VmStats {
    pub id: String,
    pub name: String,
    pub state: VmState,
    pub vcpus: u32,
    pub memory_mib: u32,
    /// When this reading was taken: milliseconds since the Unix epoch.
    pub sampled_at_ms: i64,
    /// CPU time the VMM used (all vcpus and its own threads), in
    /// nanoseconds; absent when the VM does not run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_ns: Option<u64>,
    /// The VMM's resident memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_rss_bytes: Option<u64>,
    /// The VMM's proportional memory (pages shared with other VMs, such
    /// as a warm template's, counted in part).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_pss_bytes: Option<u64>,
    /// Bytes the system disk (the VM's overlay) holds on the host.
    pub system_disk_bytes: u64,
    /// Bytes the work disk holds on the host.
    pub work_disk_bytes: u64,
    /// Bytes the guest received on its NIC; absent without one running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net_rx_bytes: Option<u64>,
    /// Bytes the guest sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net_tx_bytes: Option<u64>,
}
