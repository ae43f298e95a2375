//! The system disk capability (`system.cow`): a sparse ext4 per VM that
//! holds the overlay's upper layer over the image's read-only rootfs, so
//! everything a guest writes outside `/root` is its own and survives
//! restarts. Made at first start from the guest config (hostname, hosts,
//! fstab, ...) with `mkfs.ext4 -d`, nothing mounted; the guest sees it as
//! `/dev/vdb`.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use async_trait::async_trait;
use banger_core::capability::{Capability, CapabilityError, GuestConfig, VmContext};
use banger_core::vmm::{DriveSpec, MachineSpec};

use crate::image::ext4;

pub const SYSTEM_DISK: &str = banger_core::capability::SYSTEM_DISK_FILE;

#[derive(Debug, Default)]
pub struct SystemDisk;

fn path(ctx: &VmContext) -> PathBuf {
    ctx.vm_dir.join(SYSTEM_DISK)
}

fn err(message: impl std::fmt::Display) -> CapabilityError {
    CapabilityError {
        capability: "system disk",
        message: message.to_string(),
    }
}

/// Makes `dir` and its missing parents 0755 whatever the umask: an
/// upper-layer directory's mode is what the guest sees for the merged one
/// (`upper` itself is the guest's `/`).
fn make_dirs(dir: &std::path::Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        make_dirs(parent)?;
    }
    std::fs::create_dir(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
}

/// Writes the upper-layer tree (`upper/<files>`, `work/`) under `tree`.
pub fn write_tree(tree: &std::path::Path, config: &GuestConfig) -> std::io::Result<()> {
    std::fs::create_dir_all(tree.join("work"))?;
    let upper = tree.join("upper");
    make_dirs(&upper)?;
    for file in &config.files {
        let target = upper.join(file.path.trim_start_matches('/'));
        if let Some(parent) = target.parent() {
            make_dirs(parent)?;
        }
        std::fs::write(&target, &file.contents)?;
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(file.mode))?;
    }
    Ok(())
}

#[async_trait]
impl Capability for SystemDisk {
    fn name(&self) -> &'static str {
        "system disk"
    }

    fn prepare_stage(&self) -> &'static str {
        "system_disk"
    }

    fn guest_config(&self, _ctx: &VmContext, config: &mut GuestConfig) {
        config.cmdline.push("banger.system=/dev/vdb".into());
    }

    async fn prepare_host(
        &self,
        ctx: &VmContext,
        config: &GuestConfig,
    ) -> Result<(), CapabilityError> {
        let disk = path(ctx);
        if crate::durable::present(&disk) {
            return Ok(());
        }
        std::fs::create_dir_all(&ctx.vm_dir).map_err(err)?;
        if let Some(snapshot) = &ctx.restore_from {
            return from_snapshot(&snapshot.join(SYSTEM_DISK), &disk).await;
        }
        let tree = ctx.vm_dir.join(".system-tree");
        let _ = std::fs::remove_dir_all(&tree);
        write_tree(&tree, config).map_err(err)?;
        let partial = ctx.vm_dir.join(".system.cow.partial");
        let made = ext4::make_from_dir(
            &tree,
            &partial,
            Some(ctx.vm.spec.system_disk_bytes),
            "banger-system",
        )
        .await;
        let _ = std::fs::remove_dir_all(&tree);
        made.map_err(err)?;
        crate::durable::publish(&partial, &disk).map_err(err)?;
        Ok(())
    }

    fn machine_config(&self, ctx: &VmContext, spec: &mut MachineSpec) {
        spec.drives.push(DriveSpec {
            id: "system".into(),
            path: path(ctx),
            read_only: false,
        });
    }

    async fn remove(&self, ctx: &VmContext) {
        let _ = std::fs::remove_file(path(ctx));
    }

    async fn save(&self, ctx: &VmContext, dir: &std::path::Path) -> Result<(), CapabilityError> {
        super::copy::sparse_copy_async(&path(ctx), &dir.join(SYSTEM_DISK))
            .await
            .map_err(err)
    }
}

/// The disk of a VM restored from a snapshot: a copy of the snapshot's,
/// published whole.
pub(crate) async fn from_snapshot(
    saved: &std::path::Path,
    disk: &std::path::Path,
) -> Result<(), CapabilityError> {
    let failed = |e: &dyn std::fmt::Display| CapabilityError {
        capability: "disks",
        message: e.to_string(),
    };
    let name = disk.file_name().unwrap_or_default().to_string_lossy();
    let partial = disk.with_file_name(format!(".{name}.partial"));
    let _ = std::fs::remove_file(&partial);
    super::copy::sparse_copy_async(saved, &partial)
        .await
        .map_err(|e| failed(&e))?;
    crate::durable::publish(&partial, disk).map_err(|e| failed(&e))
}
