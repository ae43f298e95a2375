//! The work disk (`root.ext4`, mounted on `/root` in the guest): a sparse
//! copy of the image's work seed grown to the requested size
//! (`e2fsck -fy` then `resize2fs`), or, for an image without a seed, a
//! fresh ext4 made from scratch.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use async_trait::async_trait;
use banger_core::capability::{Capability, CapabilityError, GuestConfig, VmContext};
use banger_core::vmm::{DriveSpec, MachineSpec};
use tokio::process::Command;

pub const WORK_DISK: &str = banger_core::capability::WORK_DISK_FILE;

/// The work disk capability: `root.ext4`, `/dev/vdc` in the guest, on
/// `/root`. Made at first start, kept across restarts, removed with the VM.
#[derive(Debug, Default)]
pub struct WorkDisk;

fn disk_path(ctx: &VmContext) -> PathBuf {
    ctx.vm_dir.join(WORK_DISK)
}

#[async_trait]
impl Capability for WorkDisk {
    fn name(&self) -> &'static str {
        "work disk"
    }

    fn prepare_stage(&self) -> &'static str {
        "work_disk"
    }

    fn guest_config(&self, _ctx: &VmContext, config: &mut GuestConfig) {
        config.cmdline.push("banger.work=/dev/vdc".into());
    }

    async fn prepare_host(
        &self,
        ctx: &VmContext,
        _config: &GuestConfig,
    ) -> Result<(), CapabilityError> {
        let disk = disk_path(ctx);
        if crate::durable::present(&disk) {
            return Ok(());
        }
        let err = |e: &dyn std::fmt::Display| CapabilityError {
            capability: "work disk",
            message: e.to_string(),
        };
        std::fs::create_dir_all(&ctx.vm_dir).map_err(|e| err(&e))?;
        if let Some(snapshot) = &ctx.restore_from {
            return super::system::from_snapshot(&snapshot.join(WORK_DISK), &disk).await;
        }
        let partial = ctx.vm_dir.join(".root.ext4.partial");
        let size = ctx.vm.spec.work_disk_bytes;
        match &ctx.image.work_seed_path {
            Some(seed) => clone_from_seed(seed, &partial, size)
                .await
                .map_err(|e| err(&e))?,
            None => make_fresh(&partial, size).await.map_err(|e| err(&e))?,
        }
        crate::durable::publish(&partial, &disk).map_err(|e| err(&e))?;
        Ok(())
    }

    fn machine_config(&self, ctx: &VmContext, spec: &mut MachineSpec) {
        spec.drives.push(DriveSpec {
            id: "work".into(),
            path: disk_path(ctx),
            read_only: false,
        });
    }

    async fn remove(&self, ctx: &VmContext) {
        let _ = std::fs::remove_file(disk_path(ctx));
    }

    async fn save(&self, ctx: &VmContext, dir: &std::path::Path) -> Result<(), CapabilityError> {
        super::copy::sparse_copy_async(&disk_path(ctx), &dir.join(WORK_DISK))
            .await
            .map_err(|e| CapabilityError {
                capability: "work disk",
                message: e.to_string(),
            })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WorkDiskError {
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("{tool} failed on {path}: {detail}")]
    Tool {
        tool: &'static str,
        path: String,
        detail: String,
    },
    #[error("the work disk cannot be {want} bytes: the seed alone is {seed} bytes")]
    TooSmall { want: u64, seed: u64 },
}

async fn run(tool: &'static str, path: &Path, command: &mut Command) -> Result<(), WorkDiskError> {
    let out = command
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| WorkDiskError::Tool {
            tool,
            path: path.display().to_string(),
            detail: format!("cannot run it: {e}"),
        })?;
    // e2fsck exits 1 when it fixed something, which a fresh copy may need.
    let ok = out.status.success() || (tool == "e2fsck" && out.status.code() == Some(1));
    if !ok {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(3).collect();
        return Err(WorkDiskError::Tool {
            tool,
            path: path.display().to_string(),
            detail: format!("{} ({})", out.status, tail.join(" | ")),
        });
    }
    Ok(())
}

/// Clones `seed` to `out` (sparse) and grows it to `size` bytes.
pub async fn clone_from_seed(seed: &Path, out: &Path, size: u64) -> Result<(), WorkDiskError> {
    let seed_size = std::fs::metadata(seed)
        .map_err(|source| WorkDiskError::Io {
            action: "read",
            path: seed.display().to_string(),
            source,
        })?
        .len();
    if size < seed_size {
        return Err(WorkDiskError::TooSmall {
            want: size,
            seed: seed_size,
        });
    }
    let result = async {
        run(
            "cp",
            out,
            Command::new("cp")
                .arg("--sparse=always")
                .arg("--")
                .arg(seed)
                .arg(out),
        )
        .await?;
        run("e2fsck", out, Command::new("e2fsck").arg("-fy").arg(out)).await?;
        run(
            "resize2fs",
            out,
            Command::new("resize2fs")
                .arg(out)
                .arg(format!("{}K", size / 1024)),
        )
        .await
    }
    .await;
    if result.is_err() {
        let _ = std::fs::remove_file(out);
    }
    result
}

/// Makes `out`, a fresh empty ext4 of `size` bytes (sparse), labelled
/// `banger-work`.
pub async fn make_fresh(out: &Path, size: u64) -> Result<(), WorkDiskError> {
    let io = |action| {
        move |source| WorkDiskError::Io {
            action,
            path: out.display().to_string(),
            source,
        }
    };
    let file = std::fs::File::create(out).map_err(io("create"))?;
    file.set_len(size).map_err(io("size"))?;
    drop(file);
    let result = run(
        "mkfs.ext4",
        out,
        Command::new("mkfs.ext4")
            .args(["-q", "-F", "-L", "banger-work", "-E"])
            .arg(crate::image::ext4::FRESH_FILE_EXTENDED)
            .arg(out),
    )
    .await;
    if result.is_err() {
        let _ = std::fs::remove_file(out);
    }
    result
}
