//! Promote's host side: a VM's disks, copied into staging by the core
//! while the VM was paused or stopped, become a layered image. The copy
//! of its system disk is repaired as after a power cut (`e2fsck -fy`:
//! the journal replayed; the guest synced its files first when it ran),
//! then scrubbed of what makes that machine itself (`debugfs -w`: host
//! keys, machine-id, banger's per-VM files, the random seed), and becomes
//! the image's top layer; its work disk's copy, repaired, the work seed.
//! Both are shrunk to their data (`resize2fs -M`; the layer without its
//! journal), so what follows costs what the VM changed, not its disks'
//! sizes.
//! The parent's kernel, initrd, rootfs and layers join by hard link with
//! the digests the parent's manifest already holds, so a promote costs
//! what the VM changed. The tools parse the guest's filesystem in user
//! space, as a user of their own (`ext4::tools`); nothing of it is
//! mounted on the host.

use std::path::Path;

use banger_core::image_maker::{MakeError, PromoteFiles};
use banger_core::progress::Progress;
use banger_proto::image::{ArtifactRole, Manifest, Origin, MANIFEST_FORMAT};

use super::digest;

fn failed(err: impl std::fmt::Display) -> MakeError {
    MakeError::failed(err.to_string(), None)
}

/// The tools promote runs.
pub const TOOLS: [&str; 4] = ["e2fsck", "debugfs", "tune2fs", "resize2fs"];

/// Runs an e2fsprogs tool with `args` then `disk`: unprivileged, the
/// disk being the guest's filesystem (`ext4::tools`).
async fn run(name: &str, args: &[&str], disk: &Path) -> Result<std::process::Output, MakeError> {
    let args: Vec<std::ffi::OsString> = args.iter().map(|a| a.into()).collect();
    super::ext4::tools::run_unprivileged(name, &args, disk, &[])
        .await
        .map_err(|e| {
            MakeError::unavailable(
                format!("cannot run {name}: {e}"),
                Some("install it: apt-get install e2fsprogs"),
            )
        })
}

/// Runs an e2fsprogs tool on a disk copy; its output is the error.
async fn tool(name: &str, args: &[&str], disk: &Path) -> Result<(), MakeError> {
    let out = run(name, args, disk).await?;
    if out.status.success() {
        return Ok(());
    }
    Err(failed(format!(
        "{name} failed on the vm's disk copy: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    )))
}

/// Shrinks a repaired copy to what it holds (`resize2fs -M`, which also
/// shortens the file), so digests, publication and bundles cost the
/// data, not the VM's disk size. A layer is read-only: its journal goes
/// first. A work seed keeps its journal (it is cloned into a disk the
/// guest writes, and grown there).
async fn shrink(disk: &Path, layer: bool) -> Result<(), MakeError> {
    if layer {
        tool("tune2fs", &["-O", "^has_journal"], disk).await?;
    }
    tool("resize2fs", &["-M"], disk).await
}

/// `e2fsck -fy` of a disk copy: fixed (exit 0 to 2) or refused.
async fn repair(disk: &Path, what: &str) -> Result<(), MakeError> {
    let out = run("e2fsck", &["-fy"], disk).await?;
    match out.status.code() {
        Some(0..=2) => Ok(()),
        code => Err(MakeError::failed(
            format!(
                "the vm's {what} is damaged beyond repair (e2fsck exit {code:?}): {}",
                String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .last()
                    .unwrap_or_default()
            ),
            Some("stop the vm, start it again so its own fsck runs, then promote"),
        )),
    }
}

/// Removes `paths` (guest paths) from the layer's `upper/`; a path the
/// VM never wrote is not there, which is fine.
async fn scrub(layer: &Path, paths: &[String]) -> Result<(), MakeError> {
    let mut commands = String::new();
    for path in paths {
        // Paths come from banger's own lists; refuse anything else.
        if !path.starts_with('/') || path.contains("..") || path.contains(char::is_whitespace) {
            return Err(failed(format!("bad scrub path {path:?}")));
        }
        commands.push_str(&format!("rm /upper{path}\n"));
    }
    let script = layer.with_extension("scrub");
    std::fs::write(&script, commands).map_err(failed)?;
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .map_err(failed)?;
    // Beside the layer: the tool runs in its directory.
    let script_arg = script
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let out = run("debugfs", &["-w", "-f", &script_arg], layer).await;
    let _ = std::fs::remove_file(&script);
    let out = out?;
    if !out.status.success() {
        return Err(failed(format!(
            "debugfs could not scrub the layer: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// Makes the promoted image in `staging` and writes its manifest.
pub async fn make(
    name: &str,
    files: &PromoteFiles,
    staging: &Path,
    progress: &dyn Progress,
) -> Result<Manifest, MakeError> {
    progress.stage("repair");
    let layer = staging.join(&files.layer_file);
    repair(&layer, "system disk").await?;
    let work = staging.join(ArtifactRole::WorkSeed.file_name());
    if work.exists() {
        repair(&work, "work disk").await?;
    }
    progress.stage("scrub");
    scrub(&layer, &files.scrub).await?;
    progress.stage("shrink");
    shrink(&layer, true).await?;
    if work.exists() {
        shrink(&work, false).await?;
    }
    progress.stage("digest");
    let mut artifacts = Vec::new();
    for artifact in &files.parent_manifest.artifacts {
        if artifact.role == ArtifactRole::WorkSeed {
            continue;
        }
        std::fs::hard_link(
            files.parent_dir.join(&artifact.file),
            staging.join(&artifact.file),
        )
        .map_err(|e| failed(format!("cannot link the parent's {}: {e}", artifact.file)))?;
        artifacts.push(artifact.clone());
    }
    let (staging_dir, layer_file) = (staging.to_path_buf(), files.layer_file.clone());
    let own = tokio::task::spawn_blocking(move || {
        let mut own = vec![digest::describe_file(
            &staging_dir,
            ArtifactRole::Layer,
            &layer_file,
        )?];
        if staging_dir
            .join(ArtifactRole::WorkSeed.file_name())
            .exists()
        {
            own.push(digest::describe(&staging_dir, ArtifactRole::WorkSeed)?);
        }
        Ok::<_, digest::DigestError>(own)
    })
    .await
    .map_err(failed)?
    .map_err(failed)?;
    artifacts.extend(own);
    let parent = &files.parent_manifest;
    let mut lineage = vec![files.parent_name.clone()];
    lineage.extend(parent.lineage.iter().cloned());
    let manifest = Manifest {
        format: MANIFEST_FORMAT,
        name: name.to_string(),
        kernel_version: parent.kernel_version.clone(),
        origin: Origin {
            method: "promote".into(),
            from: format!("vm {} of image {}", files.vm, files.parent_name),
            packages: Vec::new(),
            banger_version: env!("CARGO_PKG_VERSION").into(),
            made_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        },
        artifacts,
        oci: parent.oci.clone(),
        sshd: parent.sshd,
        lineage,
    };
    digest::check_manifest(&manifest).map_err(failed)?;
    digest::write_manifest(staging, &manifest).map_err(failed)?;
    Ok(manifest)
}
