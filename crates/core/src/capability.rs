//! Capabilities: what a VM has beyond its image and VMM (the system disk,
//! the work disk; later networking, DNS, NAT, port forwards, shared
//! folders). Each plugs into the VM lifecycle through optional hooks, run
//! in the order the capabilities are listed and cleaned up in reverse,
//! also after a failed start:
//!
//! 1. `preflight`: refuse early, before anything is made;
//! 2. `guest_config`: add files and kernel command line keys for the guest;
//! 3. `prepare_host`: make what the VM needs on the host (disks, devices);
//! 4. `machine_config`: add drives, devices to the machine;
//! 5. `post_start`: once the guest's agent answered;
//! 6. `cleanup`: after stop or a failed start (runtime objects only);
//! 7. `remove`: when the VM is removed (its persistent files);
//! 8. `readopt`: a running VM found again after a daemon restart;
//! 9. `config_changed`: a running VM's settings changed (`vm set`);
//! 10. `save`: the VM is paused for a snapshot: copy its own files in.
//!
//! A VM started from a snapshot has `VmContext::restore_from`: its
//! `prepare_host` starts its files as the snapshot's.

use std::path::PathBuf;

use async_trait::async_trait;

use crate::doctor::Check;
use crate::image::Image;
use crate::spec::VmSpec;
use crate::vm::Vm;
use crate::vmm::MachineSpec;

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("{capability}: {message}")]
pub struct CapabilityError {
    pub capability: &'static str,
    pub message: String,
}

/// A capability's refusal of a request it cannot serve on this host
/// (`--nat` without an uplink): well formed but not possible here
/// (unprocessable), refused before anything is made.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("{message}")]
pub struct Refusal {
    pub message: String,
    pub hint: String,
}

/// What the hooks see of the VM being started.
#[derive(Debug, Clone)]
pub struct VmContext {
    pub vm: Vm,
    pub image: Image,
    /// Persistent per-VM files (disks, logs).
    pub vm_dir: PathBuf,
    /// Per-VM sockets.
    pub run_dir: PathBuf,
    /// The snapshot directory a VM being restored starts its files from.
    pub restore_from: Option<PathBuf>,
}

/// One file the host puts into the guest's system disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestFile {
    /// Absolute path inside the guest.
    pub path: String,
    pub contents: String,
    pub mode: u32,
}

/// A VM's own disks in its directory (and in a snapshot's), by the names
/// the disk capabilities give them: promote reads them.
pub const SYSTEM_DISK_FILE: &str = "system.cow";
pub const WORK_DISK_FILE: &str = "root.ext4";

/// What the guest is told: files for its system disk and `banger.*` keys
/// for its kernel command line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GuestConfig {
    pub files: Vec<GuestFile>,
    pub cmdline: Vec<String>,
}

impl GuestConfig {
    /// The base every VM gets: hostname, hosts, the image's root device.
    pub fn for_vm(vm: &Vm) -> GuestConfig {
        let file = |path: &str, contents: String| GuestFile {
            path: path.into(),
            contents,
            mode: 0o644,
        };
        GuestConfig {
            files: vec![
                file("/etc/hostname", format!("{}\n", vm.name)),
                file(
                    "/etc/hosts",
                    format!(
                        "127.0.0.1\tlocalhost\n127.0.1.1\t{name}.vm {name}\n::1\tlocalhost ip6-localhost ip6-loopback\n",
                        name = vm.name
                    ),
                ),
                // The overlay is the root; nothing to mount from fstab.
                file("/etc/fstab", "# banger: / is an overlay, /root the work disk\n".into()),
            ],
            cmdline: vec![
                "banger.root=/dev/vda".into(),
                format!("banger.hostname={}", vm.name),
            ],
        }
    }

    pub fn add_file(&mut self, path: &str, contents: impl Into<String>, mode: u32) {
        self.files.retain(|f| f.path != path);
        self.files.push(GuestFile {
            path: path.into(),
            contents: contents.into(),
            mode,
        });
    }

    pub fn cmdline_text(&self) -> String {
        self.cmdline.join(" ")
    }
}

#[async_trait]
pub trait Capability: Send + Sync {
    fn name(&self) -> &'static str;

    /// The stage name of its `prepare_host` (`work_disk`, `tap`).
    fn prepare_stage(&self) -> &'static str;

    /// Whether `vm` needs this capability's host work: one it does not
    /// need (no published ports, no shared folders) shows no stage.
    fn serves(&self, _vm: &Vm) -> bool {
        true
    }

    /// Refuses a machine shape it cannot serve on this host; called
    /// before a create reserves anything and before a change is stored.
    fn check_spec(&self, _spec: &VmSpec) -> Result<(), Refusal> {
        Ok(())
    }

    async fn preflight(&self, _ctx: &VmContext) -> Result<(), CapabilityError> {
        Ok(())
    }

    fn guest_config(&self, _ctx: &VmContext, _config: &mut GuestConfig) {}

    async fn prepare_host(
        &self,
        _ctx: &VmContext,
        _config: &GuestConfig,
    ) -> Result<(), CapabilityError> {
        Ok(())
    }

    fn machine_config(&self, _ctx: &VmContext, _spec: &mut MachineSpec) {}

    async fn post_start(&self, _ctx: &VmContext) -> Result<(), CapabilityError> {
        Ok(())
    }

    /// When its `post_start` waits for something the user cares about
    /// (`ssh_ready`), the name of that stage.
    fn ready_stage(&self) -> Option<&'static str> {
        None
    }

    async fn cleanup(&self, _ctx: &VmContext) {}

    async fn readopt(&self, _ctx: &VmContext) -> Result<(), CapabilityError> {
        Ok(())
    }

    async fn config_changed(&self, _ctx: &VmContext) -> Result<(), CapabilityError> {
        Ok(())
    }

    async fn remove(&self, _ctx: &VmContext) {}

    /// Copies what the paused VM has of its own (its disks) into the
    /// snapshot directory `dir`, under the names `prepare_host` looks for.
    async fn save(&self, _ctx: &VmContext, _dir: &std::path::Path) -> Result<(), CapabilityError> {
        Ok(())
    }

    fn doctor(&self) -> Vec<Check> {
        Vec::new()
    }
}
