//! Request bodies of Firecracker's HTTP API that banger sends, named after
//! the definitions in the vendored spec (`spec/firecracker-api.yaml`).
//!
//! Only the fields banger uses are modelled. Optional fields are skipped
//! when `None`, so a body never carries a `null` or a field the spec does
//! not define; `spec_tests` checks every request against the spec.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `Logger`: where Firecracker writes its human-readable log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Logger {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub level: Option<LogLevel>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub show_level: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub show_log_origin: Option<bool>,
}

/// `Logger.level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum LogLevel {
    Error,
    Warning,
    Info,
    Debug,
    Trace,
    Off,
}

/// `Metrics`: where Firecracker flushes its JSON metrics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Metrics {
    pub metrics_path: String,
}

/// `MachineConfiguration`: vCPUs and memory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MachineConfiguration {
    /// 1..=32; with SMT, 1 or even.
    pub vcpu_count: u32,
    pub mem_size_mib: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub smt: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub track_dirty_pages: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub huge_pages: Option<HugePages>,
}

/// `MachineConfiguration.huge_pages`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum HugePages {
    None,
    #[serde(rename = "2M")]
    TwoMib,
}

/// `BootSource`: the kernel, its command line and the initrd.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BootSource {
    pub kernel_image_path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub boot_args: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initrd_path: Option<String>,
}

/// `Drive`, virtio-block form (banger never uses vhost-user-block, so
/// `socket` is not modelled; nor is `rate_limiter`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Drive {
    pub drive_id: String,
    pub is_root_device: bool,
    /// Optional in the spec (vhost-user drives omit it) but required for
    /// virtio-block, so always sent.
    pub path_on_host: String,
    /// Same as `path_on_host`: always sent for virtio-block.
    pub is_read_only: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partuuid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_type: Option<CacheType>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub io_engine: Option<IoEngine>,
}

/// `Drive.cache_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum CacheType {
    Unsafe,
    Writeback,
}

/// `Drive.io_engine`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum IoEngine {
    Sync,
    Async,
}

/// `NetworkInterface`: a guest NIC backed by a host TAP device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NetworkInterface {
    pub iface_id: String,
    pub host_dev_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guest_mac: Option<String>,
    /// 68..=65535; absent means the guest picks its default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
}

/// `Vsock`: the guest's vsock device, proxied through `uds_path`.
/// (`vsock_id` is deprecated and optional since v1.0, so never sent.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Vsock {
    /// At least 3.
    pub guest_cid: u32,
    pub uds_path: String,
}

/// `InstanceActionInfo`: body of `PUT /actions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InstanceActionInfo {
    pub action_type: ActionType,
}

/// `InstanceActionInfo.action_type` (the spec's `FlushMetrics` is unused).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ActionType {
    InstanceStart,
    SendCtrlAltDel,
}

/// `Vm`: body of `PATCH /vm`, pausing or resuming the vCPUs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VmStateChange {
    pub state: VmRunState,
}

/// `Vm.state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum VmRunState {
    Paused,
    Resumed,
}

/// `SnapshotCreateParams`: body of `PUT /snapshot/create` (always a full
/// snapshot: the state and a whole copy of the memory).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SnapshotCreateParams {
    pub snapshot_type: SnapshotType,
    pub snapshot_path: String,
    pub mem_file_path: String,
}

/// `SnapshotCreateParams.snapshot_type` (`Diff` is unused).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum SnapshotType {
    Full,
}

/// `SnapshotLoadParams`: body of `PUT /snapshot/load`, with the new VM's
/// TAP and vsock socket in place of the saved ones.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SnapshotLoadParams {
    pub snapshot_path: String,
    pub mem_backend: MemoryBackend,
    pub resume_vm: bool,
    pub network_overrides: Vec<NetworkOverride>,
    pub vsock_override: VsockOverride,
}

/// `MemoryBackend`: the memory file, mapped copy-on-write (`File`; the
/// spec's `Uffd` is unused).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemoryBackend {
    pub backend_type: MemoryBackendType,
    pub backend_path: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum MemoryBackendType {
    File,
}

/// `NetworkOverride`: another TAP for a saved interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NetworkOverride {
    pub iface_id: String,
    pub host_dev_name: String,
}

/// `VsockOverride`: another socket for the saved vsock device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VsockOverride {
    pub uds_path: String,
}

/// `InstanceInfo`: what `GET /` answers (the one response body banger reads).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceInfo {
    pub app_name: String,
    pub id: String,
    pub state: InstanceState,
    pub vmm_version: String,
}

/// `InstanceInfo.state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum InstanceState {
    #[serde(rename = "Not started")]
    NotStarted,
    Running,
    Paused,
}

/// HTTP method of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Put,
    Patch,
}

impl Method {
    /// Lowercase, as the spec's `paths` keys spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "get",
            Method::Put => "put",
            Method::Patch => "patch",
        }
    }
}

/// One request to the Firecracker API socket, not yet sent.
#[derive(Debug, Clone, PartialEq)]
pub struct FcRequest {
    pub method: Method,
    /// Concrete path, e.g. `/drives/rootfs`.
    pub path: String,
    /// JSON body; `None` for bodiless requests such as `GET /`.
    pub body: Option<Value>,
}

impl FcRequest {
    /// `PUT path` with `body` as JSON.
    pub fn put(path: impl Into<String>, body: &impl Serialize) -> FcRequest {
        FcRequest {
            method: Method::Put,
            path: path.into(),
            body: Some(to_json(body)),
        }
    }

    /// `PATCH path` with `body` as JSON.
    pub fn patch(path: impl Into<String>, body: &impl Serialize) -> FcRequest {
        FcRequest {
            method: Method::Patch,
            path: path.into(),
            body: Some(to_json(body)),
        }
    }

    /// `GET path`, no body.
    pub fn get(path: impl Into<String>) -> FcRequest {
        FcRequest {
            method: Method::Get,
            path: path.into(),
            body: None,
        }
    }
}

/// JSON form of a body. The bodies here are plain structs of strings,
/// numbers and unit enums, which always serialize.
pub(crate) fn to_json(body: &impl Serialize) -> Value {
    serde_json::to_value(body).expect("firecracker request bodies always serialize")
}
