//! From a userland to a bootable image: whatever root filesystem a user
//! brings gets banger's initramfs, made for its kernel from the modules
//! the userland holds, and banger's agent with the lean systemd set-up
//! (`super::lean`), so it boots like a built image.
//!
//! - `probe`: what a root filesystem holds, and the refusal (with a hint)
//!   of one that would only boot into a panic;
//! - `ops`: the changes to a userland as values, carried out on a
//!   directory (builds) or inside an ext4 image without mounting it
//!   (registered root filesystems keep all they had).

pub mod ops;
pub mod probe;

use std::path::{Path, PathBuf};

use super::{ext4, initramfs, lean, modules};
use probe::InitKind;

#[derive(Debug, thiserror::Error)]
pub enum UserlandError {
    #[error(transparent)]
    Ext4(#[from] ext4::Ext4Error),
    #[error(transparent)]
    Modules(#[from] modules::ModulesError),
    #[error(transparent)]
    Initramfs(#[from] initramfs::InitramfsError),
    #[error(transparent)]
    Ops(#[from] ops::OpsError),
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{0:?} is not a kernel release")]
    Release(String),
    #[error("worker failed: {0}")]
    Join(String),
}

/// What a userland boots with.
#[derive(Debug, Clone, Copy)]
pub struct BootWith<'a> {
    /// The ext4 image holding the kernel's modules.
    pub modules_from: &'a Path,
    /// The kernel release.
    pub release: &'a str,
    pub init: InitKind,
    /// Whether the userland has sshd (started with the agent).
    pub sshd: bool,
}

/// Room added to a registered rootfs for the agent and its units.
const INJECT_SLACK: u64 = 16 << 20;

/// Makes the ext4 root filesystem at `rootfs` (the image's own copy, in
/// staging) bootable with the kernel `release`: writes banger's
/// initramfs with that kernel's modules (from the ext4 image
/// `modules_from`: the rootfs itself, or the image whose kernel it
/// borrows) to `initrd`, and puts the agent with the lean units (its own
/// systemd) or banger's small init (`sshd`: start the userland's sshd with
/// the agent) into it, its identity taken out. `scratch` is a
/// directory of staging it may fill. Returns the initramfs's module
/// names in load order.
pub async fn make_bootable(
    rootfs: &Path,
    with: &BootWith<'_>,
    guest_binary: &Path,
    initrd: &Path,
    scratch: &Path,
) -> Result<Vec<String>, UserlandError> {
    let BootWith {
        modules_from,
        release,
        init,
        sshd,
    } = *with;
    let modules_root = scratch.join("modules");
    if !modules::plain_name(release) {
        return Err(UserlandError::Release(release.to_string()));
    }
    let lib_modules = modules_root.join("lib/modules");
    std::fs::create_dir_all(&lib_modules).map_err(|source| UserlandError::Io {
        path: lib_modules.display().to_string(),
        source,
    })?;
    // Read inside the image: a module that is a link is the file it
    // links to in the image, never one of the host's.
    ext4::copy_tree_out(
        modules_from,
        &format!("/lib/modules/{release}"),
        &lib_modules.join(release),
        ext4::Links::Resolve,
    )
    .await?;
    let (root, version, init_binary, out) = (
        modules_root.clone(),
        release.to_string(),
        guest_binary.to_path_buf(),
        initrd.to_path_buf(),
    );
    let names = tokio::task::spawn_blocking(move || {
        modules::ensure_depmod(&root, &version)?;
        let modules_dir: PathBuf = root.join("lib/modules").join(&version);
        let files = modules::resolve(&modules_dir, modules::GUEST_MODULES)?;
        let spec = initramfs::InitramfsSpec {
            init: init_binary,
            version,
            modules: modules::groups(&modules_dir, &files)?,
            modules_dir,
        };
        Ok::<_, UserlandError>(initramfs::write(&spec, &out)?)
    })
    .await
    .map_err(|e| UserlandError::Join(e.to_string()))??;
    let _ = std::fs::remove_dir_all(&modules_root);

    let guest_bytes = std::fs::metadata(guest_binary)
        .map_err(|source| UserlandError::Io {
            path: guest_binary.display().to_string(),
            source,
        })?
        .len();
    ext4::grow(rootfs, guest_bytes + INJECT_SLACK).await?;
    let mut changes = match init {
        InitKind::Systemd => lean::ops(guest_binary),
        InitKind::Small => lean::small_init_ops(guest_binary, sshd),
    };
    changes.extend(identity_ops());
    ops::apply_to_ext4(rootfs, &changes, &scratch.join("ops")).await?;
    Ok(names)
}

/// What every VM of an image must not share, taken out of a registered
/// rootfs: the machine id (empty: systemd makes one per boot and runs no
/// first-boot wizard) and SSH host keys (each VM gets its own from the
/// host).
pub fn identity_ops() -> Vec<ops::TreeOp> {
    let mut changes = vec![ops::TreeOp::Write {
        path: "/etc/machine-id".into(),
        contents: ops::Contents::Text(String::new()),
        mode: 0o444,
    }];
    for kind in ["rsa", "ecdsa", "ed25519", "dsa"] {
        for suffix in ["", ".pub"] {
            changes.push(ops::TreeOp::Remove {
                path: format!("/etc/ssh/ssh_host_{kind}_key{suffix}"),
            });
        }
    }
    changes
}
