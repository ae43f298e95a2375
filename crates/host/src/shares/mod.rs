//! Shared folders: each host directory of a VM is served by its own
//! `virtiofsd` (started before QEMU, listening on a socket in the VM's
//! runtime directory) and mounted by banger-init from the kernel command
//! line (`banger.shares=`). virtiofsd runs with the rights of the user
//! who created the VM: as that user (without a sandbox: it reaches what
//! the user can, no more) or, for root, as root without `CAP_MKNOD`
//! inside virtiofsd's own namespace sandbox, rooted at the folder. Either
//! way the guest cannot leave the folder (virtiofsd resolves every path
//! inside it), and cannot make device nodes or set-id files in it
//! (`filter`). The folder is the directory the VM was made with: held
//! open at each start and checked against its recorded device and inode,
//! never a link or a replacement found by path.
//!
//! Firecracker has no shared filesystem: such VMs are refused with a hint.
//! A VM with shared folders is never snapshotted (the backend's state is
//! outside the VM), which the core refuses.

mod filter;
mod virtiofsd;

pub use virtiofsd::{banger_virtiofsds, kill_virtiofsds};

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use banger_core::capability::{Capability, CapabilityError, GuestConfig, Refusal, VmContext};
use banger_core::mounts::SharedFolder;
use banger_core::spec::VmSpec;
use banger_core::vmm::{MachineSpec, ShareSpec};

/// The directory of a VM's virtiofsd sockets, under its runtime directory.
pub const SHARES_DIR: &str = "fs";

pub struct SharesCapability {
    /// Whether VMs run under QEMU (Firecracker has no shared filesystem).
    qemu: bool,
    virtiofsd: Option<PathBuf>,
}

fn socket(run_dir: &Path, index: usize) -> PathBuf {
    run_dir.join(SHARES_DIR).join(format!("{index}.sock"))
}

impl SharesCapability {
    pub fn new(qemu: bool, virtiofsd: Option<PathBuf>) -> Self {
        SharesCapability { qemu, virtiofsd }
    }
}

fn failed(message: impl std::fmt::Display) -> CapabilityError {
    CapabilityError {
        capability: "shares",
        message: message.to_string(),
    }
}

#[async_trait]
impl Capability for SharesCapability {
    fn name(&self) -> &'static str {
        "shares"
    }

    fn prepare_stage(&self) -> &'static str {
        "shares"
    }

    fn serves(&self, vm: &banger_core::vm::Vm) -> bool {
        !vm.spec.mounts.is_empty()
    }

    fn check_spec(&self, spec: &VmSpec) -> Result<(), Refusal> {
        if spec.mounts.is_empty() {
            return Ok(());
        }
        if !self.qemu {
            return Err(Refusal {
                message: "firecracker has no shared filesystem: --mount needs a qemu vm".into(),
                hint:
                    "copy files with `banger vm cp` instead, or run the daemon with vmm = \"qemu\""
                        .into(),
            });
        }
        if self.virtiofsd.is_none() {
            return Err(Refusal {
                message: "shared folders need virtiofsd, which is not installed here".into(),
                hint: "install it with `cargo install virtiofsd` (scripts/install-deps does), or use `banger vm cp`"
                    .into(),
            });
        }
        Ok(())
    }

    /// A folder that is no longer the one the VM was made with (replaced,
    /// or now a link) is refused before anything is prepared.
    async fn preflight(&self, ctx: &VmContext) -> Result<(), CapabilityError> {
        for share in &ctx.vm.spec.mounts {
            virtiofsd::open_folder(share).map_err(failed)?;
        }
        Ok(())
    }

    fn guest_config(&self, ctx: &VmContext, config: &mut GuestConfig) {
        if !ctx.vm.spec.mounts.is_empty() {
            config
                .cmdline
                .push(banger_core::mounts::cmdline(&ctx.vm.spec.mounts));
        }
    }

    async fn prepare_host(
        &self,
        ctx: &VmContext,
        _config: &GuestConfig,
    ) -> Result<(), CapabilityError> {
        let shares = &ctx.vm.spec.mounts;
        if shares.is_empty() {
            return Ok(());
        }
        let Some(binary) = &self.virtiofsd else {
            return Err(failed("no virtiofsd to serve the shared folders"));
        };
        kill_virtiofsds(&ctx.run_dir).await;
        for (index, share) in shares.iter().enumerate() {
            let started = virtiofsd::start(
                binary,
                share,
                &socket(&ctx.run_dir, index),
                &ctx.vm_dir,
                index,
            )
            .await;
            if let Err(err) = started {
                kill_virtiofsds(&ctx.run_dir).await;
                return Err(failed(format!("{}: {err}", share.host_dir.display())));
            }
        }
        Ok(())
    }

    fn machine_config(&self, ctx: &VmContext, spec: &mut MachineSpec) {
        for index in 0..ctx.vm.spec.mounts.len() {
            spec.shares.push(ShareSpec {
                tag: SharedFolder::tag(index),
                socket: socket(&ctx.run_dir, index),
            });
        }
    }

    async fn cleanup(&self, ctx: &VmContext) {
        if !ctx.vm.spec.mounts.is_empty() || ctx.run_dir.join(SHARES_DIR).exists() {
            kill_virtiofsds(&ctx.run_dir).await;
            let _ = std::fs::remove_dir_all(ctx.run_dir.join(SHARES_DIR));
        }
    }
}
