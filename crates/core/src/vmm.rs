//! The VMM driver trait, shaped for Firecracker and QEMU alike: what a
//! machine is (`MachineSpec`), how a running VMM is found again after a
//! daemon restart (`VmmHandle`), and the lifecycle calls.

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;

/// One block device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriveSpec {
    /// Short id (`rootfs`, `system`, `work`); letters, digits and `_`.
    pub id: String,
    pub path: PathBuf,
    pub read_only: bool,
}

/// The guest NIC, backed by a host TAP device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NicSpec {
    pub tap: String,
    pub mac: String,
}

/// The host end of the agent channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentChannel {
    pub vsock_cid: u32,
    /// Firecracker: the hybrid vsock unix socket. QEMU: the serial port socket.
    pub socket: PathBuf,
}

/// A shared folder as the VMM sees it: a vhost-user-fs backend's socket
/// (virtiofsd, already listening) and the tag the guest mounts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareSpec {
    pub tag: String,
    pub socket: PathBuf,
}

/// Everything a VMM needs to boot one VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineSpec {
    pub vm_id: String,
    pub vcpus: u32,
    pub memory_mib: u32,
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    pub cmdline: String,
    pub drives: Vec<DriveSpec>,
    pub nic: Option<NicSpec>,
    pub agent: AgentChannel,
    /// Per-VM files: `vmm.log`, `serial.log`, `metrics.json`.
    pub vm_dir: PathBuf,
    /// Per-VM sockets live here.
    pub run_dir: PathBuf,
    /// Guest memory backed by this file instead of anonymous memory.
    pub memory_file: Option<MemoryFile>,
    /// Shared folders (QEMU; guest memory is then shared with their
    /// backends).
    pub shares: Vec<ShareSpec>,
}

/// Guest memory in a file: `shared` writes go to the file (a template
/// being made); otherwise the file is mapped copy-on-write, so every VM
/// restored from it shares the pages it has not written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryFile {
    pub path: PathBuf,
    pub shared: bool,
}

/// How to find a running VMM again: the process (pid plus its start time,
/// so a recycled pid is not mistaken for it) and its control socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmmHandle {
    pub kind: String,
    pub pid: u32,
    /// Start time of the process in clock ticks since boot (`/proc/PID/stat`).
    pub start_ticks: u64,
    pub control_socket: PathBuf,
    /// The agent channel's host socket (removed with the VMM).
    pub agent_socket: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmmStatus {
    Running,
    /// The process is gone (or is another process now).
    Exited,
    /// The process lives but its control socket does not answer.
    Unresponsive(String),
}

#[derive(Debug, thiserror::Error)]
pub enum VmmError {
    #[error("{0}")]
    Preflight(String),
    #[error("cannot start the vmm: {0}")]
    Spawn(String),
    #[error("the vmm failed to boot the vm: {message}{}", log_tail(.log))]
    Boot { message: String, log: Vec<String> },
    #[error("vmm control failed: {0}")]
    Control(String),
    #[error("{0}")]
    Unsupported(String),
}

fn log_tail(lines: &[String]) -> String {
    if lines.is_empty() {
        String::new()
    } else {
        format!(" (last vmm log: {})", lines.join(" | "))
    }
}

#[async_trait]
pub trait Vmm: Send + Sync {
    /// `firecracker` or `qemu`.
    fn kind(&self) -> &'static str;
    /// Spawns the VMM and boots the machine. On error nothing is left
    /// running and no socket is left behind.
    async fn start(&self, spec: &MachineSpec) -> Result<VmmHandle, VmmError>;
    /// Asks the guest to shut down, waits up to `grace`, then kills.
    async fn stop(&self, handle: &VmmHandle, grace: Duration) -> Result<(), VmmError>;
    /// Kills the VMM at once and removes its sockets.
    async fn kill(&self, handle: &VmmHandle) -> Result<(), VmmError>;
    /// Is it still there, and does it answer (also used to re-adopt a VM
    /// after a daemon restart).
    async fn status(&self, handle: &VmmHandle) -> VmmStatus;
    /// True once the VMM process is gone; cheap (no control socket), so
    /// the daemon can ask often.
    fn has_exited(&self, handle: &VmmHandle) -> bool;

    /// Whether `pause`, `save` and `restore` work.
    fn can_snapshot(&self) -> bool {
        false
    }

    /// Stops the guest's vCPUs; its disks are flushed, so their files
    /// hold what the guest wrote, until `resume`.
    async fn pause(&self, _handle: &VmmHandle) -> Result<(), VmmError> {
        Err(self.no_snapshots())
    }

    async fn resume(&self, _handle: &VmmHandle) -> Result<(), VmmError> {
        Err(self.no_snapshots())
    }

    /// Whether `start` boots a spec's shared `MemoryFile` (so a template
    /// made that way is saved without its memory in the state).
    fn boots_into_memory_file(&self) -> bool {
        false
    }

    /// Writes a paused machine's state to the new file `state`: devices,
    /// and its memory, either in the state or, for a VMM that keeps memory
    /// apart, in the new file `memory`. A machine running on a shared
    /// `MemoryFile` at `memory` (`on_memory_file`) leaves it out: that
    /// file holds it. Returns whether `memory` holds the machine's memory.
    async fn save(
        &self,
        _handle: &VmmHandle,
        _state: &std::path::Path,
        _memory: &std::path::Path,
        _on_memory_file: bool,
    ) -> Result<bool, VmmError> {
        Err(self.no_snapshots())
    }

    /// Starts a VMM that takes up the machine saved in `state` where it
    /// was, instead of booting; the spec must have the saved shape. On
    /// error nothing is left running.
    async fn restore(
        &self,
        _spec: &MachineSpec,
        _state: &std::path::Path,
    ) -> Result<VmmHandle, VmmError> {
        Err(self.no_snapshots())
    }

    fn no_snapshots(&self) -> VmmError {
        VmmError::Unsupported(format!("{} vms cannot be snapshotted yet", self.kind()))
    }
}
