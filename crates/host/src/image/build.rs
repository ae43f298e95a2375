//! Building an image from Debian packages on this host: `mmdebstrap` a
//! minbase tree with systemd, openssh-server, iproute2 and Debian's cloud
//! kernel (its own initramfs run diverted away: banger ships its own),
//! then take the kernel out (bzImage and the ELF vmlinux in it), make the
//! initramfs, put the agent into the tree and set its systemd up the
//! lean way (`lean`), and make
//! `rootfs.ext4` and `work-seed.ext4` from it without mounting anything.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use banger_core::progress::Progress;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use super::{ext4, initramfs, kernel, modules};
use banger_proto::image::ArtifactRole;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildRecipe {
    /// Debian suite (`bookworm`).
    pub suite: String,
    /// Packages beyond the base set.
    pub packages: Vec<String>,
    /// Mirror URL; mmdebstrap's default when absent.
    pub mirror: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildOutput {
    pub kernel_version: String,
    /// The module names in the initramfs, in load order.
    pub initramfs_modules: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("mmdebstrap failed ({status}): {tail}")]
    Debootstrap { status: String, tail: String },
    #[error("cannot run {tool}: {source}")]
    Spawn {
        tool: &'static str,
        source: std::io::Error,
    },
    #[error("the tree has no kernel in /boot")]
    NoKernel,
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Kernel(#[from] kernel::KernelError),
    #[error(transparent)]
    Modules(#[from] modules::ModulesError),
    #[error(transparent)]
    Initramfs(#[from] initramfs::InitramfsError),
    #[error(transparent)]
    Ext4(#[from] ext4::Ext4Error),
    #[error("worker failed: {0}")]
    Join(String),
    #[error("cannot put the agent into the tree: {0}")]
    Inject(String),
}

/// Packages every image has.
pub const BASE_PACKAGES: &[&str] = &[
    "systemd",
    "systemd-sysv",
    "openssh-server",
    "iproute2",
    "linux-image-cloud-amd64",
];

pub use super::lean::AGENT_PATH;

/// Runs in the tree after the essential packages, before the others: the
/// kernel's postinst must not build an initramfs (slow, and unused).
const DIVERT_INITRAMFS_HOOK: &str = "chroot \"$1\" dpkg-divert --quiet --local --rename --add /usr/sbin/update-initramfs && ln -s /bin/true \"$1/usr/sbin/update-initramfs\"";

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl Fn(std::io::Error) -> BuildError + 'a {
    move |source| BuildError::Io {
        action,
        path: path.display().to_string(),
        source,
    }
}

/// Builds the image's artifacts into `staging`.
pub async fn build(
    recipe: &BuildRecipe,
    guest_binary: &Path,
    staging: &Path,
    progress: &dyn Progress,
) -> Result<BuildOutput, BuildError> {
    let tree = staging.join(".tree");
    let artifact = |role: ArtifactRole| staging.join(role.file_name());

    progress.stage("debootstrap");
    debootstrap(recipe, &tree, progress).await?;
    // The tree's own mode becomes the guest's `/` (mkfs.ext4 -d), whatever
    // umask the daemon runs with.
    std::fs::set_permissions(&tree, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .map_err(io_err("chmod", &tree))?;

    progress.stage("kernel");
    let (bzimage, version) = find_kernel(&tree)?;
    std::fs::copy(&bzimage, artifact(ArtifactRole::Kernel)).map_err(io_err("copy", &bzimage))?;
    let (from, to) = (
        artifact(ArtifactRole::Kernel),
        artifact(ArtifactRole::Vmlinux),
    );
    tokio::task::spawn_blocking(move || kernel::extract_vmlinux(&from, &to))
        .await
        .map_err(|e| BuildError::Join(e.to_string()))??;
    for entry in std::fs::read_dir(tree.join("boot"))
        .map_err(io_err("read", &tree))?
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("vmlinuz") || name.starts_with("initrd.img") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    for link in ["vmlinuz", "vmlinuz.old", "initrd.img", "initrd.img.old"] {
        let _ = std::fs::remove_file(tree.join(link));
    }

    progress.stage("initramfs");
    let spec_tree = tree.clone();
    let spec_version = version.clone();
    let init = guest_binary.to_path_buf();
    let out = artifact(ArtifactRole::Initrd);
    let initramfs_modules = tokio::task::spawn_blocking(move || {
        modules::ensure_depmod(&spec_tree, &spec_version)?;
        let modules_dir = spec_tree.join("lib/modules").join(&spec_version);
        let files = modules::resolve(&modules_dir, modules::GUEST_MODULES)?;
        let spec = initramfs::InitramfsSpec {
            init,
            version: spec_version,
            modules: modules::groups(&modules_dir, &files)?,
            modules_dir,
        };
        Ok::<_, BuildError>(initramfs::write(&spec, &out)?)
    })
    .await
    .map_err(|e| BuildError::Join(e.to_string()))??;

    progress.stage("agent");
    install_agent(&tree, guest_binary)?;
    tidy(&tree)?;

    progress.stage("rootfs");
    ext4::make_from_dir(&tree, &artifact(ArtifactRole::Rootfs), None, "banger-root").await?;

    progress.stage("work_seed");
    ext4::make_work_seed(&tree.join("root"), &artifact(ArtifactRole::WorkSeed)).await?;

    std::fs::remove_dir_all(&tree).map_err(io_err("remove", &tree))?;
    Ok(BuildOutput {
        kernel_version: version,
        initramfs_modules,
    })
}

/// The mmdebstrap command line (pure; tested alone).
pub fn mmdebstrap_args(recipe: &BuildRecipe, tree: &Path) -> Vec<String> {
    let mut packages: Vec<String> = BASE_PACKAGES.iter().map(|p| p.to_string()).collect();
    for extra in &recipe.packages {
        if !packages.contains(extra) {
            packages.push(extra.clone());
        }
    }
    let mut args = vec![
        "--variant=minbase".to_string(),
        "--mode=root".to_string(),
        "--format=directory".to_string(),
        format!("--include={}", packages.join(",")),
        format!("--essential-hook={DIVERT_INITRAMFS_HOOK}"),
        recipe.suite.clone(),
        tree.display().to_string(),
    ];
    if let Some(mirror) = &recipe.mirror {
        args.push(mirror.clone());
    }
    args
}

async fn debootstrap(
    recipe: &BuildRecipe,
    tree: &Path,
    progress: &dyn Progress,
) -> Result<(), BuildError> {
    let mut child = Command::new("mmdebstrap")
        .args(mmdebstrap_args(recipe, tree))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        // Not SIGKILL on drop: mmdebstrap must get to unmount what it
        // mounted in the tree (`StopBuild`).
        .kill_on_drop(false)
        .process_group(0)
        .spawn()
        .map_err(|source| BuildError::Spawn {
            tool: "mmdebstrap",
            source,
        })?;
    // If this future is dropped, stop the build (apt and dpkg too).
    let group = child.id().map(|pid| StopBuild(pid as i32));
    let mut tail: Vec<String> = Vec::new();
    if let Some(stderr) = child.stderr.take() {
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            progress.note(&line);
            tail.push(line);
            if tail.len() > 8 {
                tail.remove(0);
            }
        }
    }
    let status = child.wait().await.map_err(|source| BuildError::Spawn {
        tool: "mmdebstrap",
        source,
    })?;
    if let Some(mut group) = group {
        group.0 = 0;
    }
    if !status.success() {
        return Err(BuildError::Debootstrap {
            status: status.to_string(),
            tail: tail.join(" | "),
        });
    }
    Ok(())
}

/// Stops a cancelled mmdebstrap when dropped (0 = disarmed): SIGTERM
/// first, on which it ends its children and unmounts the `proc`, `sys`
/// and `/dev` binds it made in the tree; its whole process group is
/// killed only if it is still there `STOP_GRACE` later. (Staging removal
/// never enters a mount point meanwhile: `banger_core::tree_removal`.)
struct StopBuild(i32);

/// How long a cancelled mmdebstrap has to clean up.
const STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

impl Drop for StopBuild {
    fn drop(&mut self) {
        use nix::sys::signal::{kill, killpg, Signal};
        use nix::unistd::Pid;
        if self.0 <= 0 {
            return;
        }
        let pid = Pid::from_raw(self.0);
        let _ = kill(pid, Signal::SIGTERM);
        std::thread::spawn(move || {
            std::thread::sleep(STOP_GRACE);
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if comm.trim() == "mmdebstrap" {
                let _ = killpg(pid, Signal::SIGKILL);
            }
        });
    }
}

/// The bzImage in the tree's /boot and its release.
fn find_kernel(tree: &Path) -> Result<(PathBuf, String), BuildError> {
    let boot = tree.join("boot");
    let mut found: Vec<(PathBuf, String)> = std::fs::read_dir(&boot)
        .map_err(io_err("read", &boot))?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_prefix("vmlinuz-")
                .map(|version| (e.path(), version.to_string()))
        })
        .collect();
    found.sort_by(|a, b| a.1.cmp(&b.1));
    found.pop().ok_or(BuildError::NoKernel)
}

/// Puts the agent into the tree and sets its systemd up the lean way
/// (`lean`: early agent and sshd, masked units).
fn install_agent(tree: &Path, guest_binary: &Path) -> Result<(), BuildError> {
    super::userland::ops::apply_to_dir(tree, &super::lean::ops(guest_binary))
        .map_err(|e| BuildError::Inject(e.to_string()))
}

/// What must not be shared by every VM of the image, and what only
/// takes space.
fn tidy(tree: &Path) -> Result<(), BuildError> {
    let machine_id = tree.join("etc/machine-id");
    std::fs::write(&machine_id, b"").map_err(io_err("write", &machine_id))?;
    let _ = std::fs::remove_file(tree.join("var/lib/dbus/machine-id"));
    let ssh = tree.join("etc/ssh");
    if let Ok(entries) = std::fs::read_dir(&ssh) {
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with("ssh_host_") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    for dir in ["var/lib/apt/lists", "var/cache/apt"] {
        let path = tree.join(dir);
        if let Ok(entries) = std::fs::read_dir(&path) {
            for entry in entries.flatten() {
                let p = entry.path();
                if p.is_file() {
                    let _ = std::fs::remove_file(&p);
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mmdebstrap_line() {
        let recipe = BuildRecipe {
            suite: "bookworm".into(),
            packages: vec!["curl".into(), "iproute2".into()],
            mirror: Some("http://deb.debian.org/debian".into()),
        };
        let args = mmdebstrap_args(&recipe, Path::new("/s/.tree"));
        assert_eq!(args[0], "--variant=minbase");
        assert_eq!(
            args[3],
            "--include=systemd,systemd-sysv,openssh-server,iproute2,linux-image-cloud-amd64,curl"
        );
        assert_eq!(
            &args[5..],
            ["bookworm", "/s/.tree", "http://deb.debian.org/debian"]
        );
    }

    #[test]
    fn agent_and_units_are_installed_and_host_keys_removed() {
        let tree = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tree.path().join("etc/ssh")).unwrap();
        std::fs::write(tree.path().join("etc/ssh/ssh_host_ed25519_key"), b"k").unwrap();
        std::fs::write(tree.path().join("etc/ssh/sshd_config"), b"c").unwrap();
        std::fs::write(tree.path().join("etc/machine-id"), b"abc\n").unwrap();
        let guest = tree.path().join("guest");
        std::fs::write(&guest, b"\x7fELF").unwrap();
        install_agent(tree.path(), &guest).unwrap();
        tidy(tree.path()).unwrap();
        assert_eq!(
            std::fs::read(tree.path().join(AGENT_PATH)).unwrap(),
            b"\x7fELF"
        );
        let link = tree
            .path()
            .join("etc/systemd/system/multi-user.target.wants/banger-agent.service");
        assert_eq!(
            std::fs::read_link(link).unwrap(),
            Path::new("/etc/systemd/system/banger-agent.service")
        );
        assert!(!tree.path().join("etc/ssh/ssh_host_ed25519_key").exists());
        assert!(tree.path().join("etc/ssh/sshd_config").exists());
        assert_eq!(
            std::fs::read(tree.path().join("etc/machine-id")).unwrap(),
            b""
        );
    }
}
