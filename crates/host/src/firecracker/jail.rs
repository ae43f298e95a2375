//! Firecracker under its `jailer`: each VM's Firecracker runs chrooted in
//! `CHROOT_BASE/EXEC_NAME/VM_ID/root` (`EXEC_NAME` is the Firecracker
//! binary's file name, usually `firecracker`) as a user of its own (the same uid
//! and gid QEMU would drop to, `qemu::plan::vm_uid`), with `/dev/kvm` and
//! `/dev/net/tun` made by the jailer.
//!
//! What goes into the chroot, by hard link (the chroot base must share a
//! filesystem with the images and VMs, which `$state_dir/jail` does):
//! the kernel, initrd and read-only rootfs (shared; their inodes are made
//! readable by others, reachable only through 0700 directories and each
//! VM's chroot), the per-VM disks and the log and metrics files (chowned
//! to the VM's user). The plan is unchanged; only paths are rewritten to
//! chroot-relative ones, and the API and vsock sockets live inside the
//! chroot, where the daemon reaches them by their host path.

use std::ffi::OsString;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::plan::{DriveConfig, FirecrackerBootConfig, VsockConfig};

/// How Firecracker runs jailed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JailerConfig {
    /// The `jailer` binary of the same release as Firecracker.
    pub binary: PathBuf,
    /// Jails live in `chroot_base/EXEC_NAME/VM_ID`.
    pub chroot_base: PathBuf,
    /// Where VMM user ids start (`vmm_uid_base`).
    pub uid_base: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum JailError {
    #[error("cannot prepare the jail {path}: {source}")]
    Io { path: String, source: io::Error },
    #[error(
        "{file} is on another filesystem than the jail {base}: files reach a jail by hard link"
    )]
    OtherFilesystem { file: String, base: String },
}

/// One VM's jail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jail {
    /// `chroot_base/EXEC_NAME/VM_ID`: removed whole.
    pub dir: PathBuf,
    /// `dir/root`: the chroot.
    pub root: PathBuf,
    pub uid: u32,
    pub gid: u32,
}

/// Inside the chroot.
pub const API_SOCKET: &str = "/api.sock";
pub const VSOCK_SOCKET: &str = "/vsock.sock";
pub const CONFIG_FILE: &str = "/firecracker.json";
/// A saved machine's state and memory, while they are written or read.
pub const SNAPSHOT_STATE: &str = "/snapshot.state";
pub const SNAPSHOT_MEMORY: &str = "/snapshot.memory";

impl Jail {
    /// The jail of VM `vm_id` whose agent CID is `vsock_cid`, for the
    /// Firecracker binary at `firecracker` (the jailer names the jail's
    /// directory after its file name).
    pub fn new(cfg: &JailerConfig, firecracker: &Path, vm_id: &str, vsock_cid: u32) -> Jail {
        let exec_name = firecracker.file_name().unwrap_or_default();
        let dir = cfg.chroot_base.join(exec_name).join(vm_id);
        let uid = crate::qemu::plan::vm_uid(cfg.uid_base, vsock_cid);
        Jail {
            root: dir.join("root"),
            dir,
            uid,
            gid: uid,
        }
    }

    /// The jail a running VM's API socket lies in.
    pub fn of_api_socket(cfg: &JailerConfig, socket: &Path) -> Option<PathBuf> {
        let dir = socket.parent()?.parent()?;
        let inside = dir.parent()?.parent()? == cfg.chroot_base;
        inside.then(|| dir.to_path_buf())
    }

    /// Where a chroot path is on the host.
    pub fn host_path(&self, inner: &str) -> PathBuf {
        self.root.join(inner.trim_start_matches('/'))
    }

    /// Makes the chroot afresh and puts in what the VM needs; returns the
    /// configuration as Firecracker sees it from inside.
    pub fn prepare(
        &self,
        host: &FirecrackerBootConfig,
    ) -> Result<FirecrackerBootConfig, JailError> {
        let io_err = |path: &Path| {
            let path = path.display().to_string();
            move |source| JailError::Io { path, source }
        };
        self.remove();
        std::fs::create_dir_all(&self.root).map_err(io_err(&self.root))?;
        std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o700))
            .map_err(io_err(&self.dir))?;
        let base = self.dir.metadata().map_err(io_err(&self.dir))?.dev();
        // Shared and read-only: readable through the link.
        let shared = |host: &Path, inner: &str| -> Result<String, JailError> {
            self.link(host, inner, base, None)?;
            Ok(inner.to_string())
        };
        // The VM's own: its user's.
        let own = |host: &Path, inner: &str| -> Result<String, JailError> {
            self.link(host, inner, base, Some((self.uid, self.gid)))?;
            Ok(inner.to_string())
        };
        let mut inner = host.clone();
        inner.kernel = shared(&host.kernel, "/vmlinux")?.into();
        inner.initrd = match &host.initrd {
            Some(initrd) => Some(shared(initrd, "/initrd")?.into()),
            None => None,
        };
        inner.drives = host
            .drives
            .iter()
            .map(|drive| {
                let name = format!("/{}.disk", drive.id);
                let path = if drive.read_only {
                    shared(&drive.path, &name)?
                } else {
                    own(&drive.path, &name)?
                };
                Ok(DriveConfig {
                    path: path.into(),
                    ..drive.clone()
                })
            })
            .collect::<Result<_, JailError>>()?;
        inner.log_path = own(&host.log_path, "/vmm.log")?.into();
        inner.metrics_path = own(&host.metrics_path, "/metrics.json")?.into();
        inner.vsock = VsockConfig {
            guest_cid: host.vsock.guest_cid,
            uds_path: VSOCK_SOCKET.into(),
        };
        Ok(inner)
    }

    /// Puts a saved machine's file into a prepared chroot, read-only and
    /// readable through the link (a template's memory serves many jails).
    pub fn link_shared(&self, host: &Path, inner: &str) -> Result<(), JailError> {
        let base = self
            .dir
            .metadata()
            .map_err(|source| JailError::Io {
                path: self.dir.display().to_string(),
                source,
            })?
            .dev();
        self.link(host, inner, base, None)
    }

    /// Makes the new, empty file `inner` in the chroot for the VM's user
    /// to write. A name the VMM planted there (a link to a host file) is
    /// refused, never followed.
    pub fn make_file(&self, inner: &str) -> Result<(), JailError> {
        use std::os::unix::fs::OpenOptionsExt;
        let path = self.host_path(inner);
        let failed = |source| JailError::Io {
            path: path.display().to_string(),
            source,
        };
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .mode(0o600)
            .open(&path)
            .map_err(failed)?;
        std::os::unix::fs::fchown(&file, Some(self.uid), Some(self.gid)).map_err(failed)
    }

    /// Moves a file Firecracker wrote in the chroot to `host`, root's and
    /// 0644, so no VM's user keeps a hand on it. The VMM's user may write
    /// in the chroot: the file is opened without following a link, owner
    /// and mode are set through that descriptor, and what arrives at
    /// `host` must be that very file.
    pub fn take_out(&self, inner: &str, host: &Path) -> Result<(), JailError> {
        use std::os::unix::fs::OpenOptionsExt;
        let from = self.host_path(inner);
        let failed = |source| JailError::Io {
            path: from.display().to_string(),
            source,
        };
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
            .open(&from)
            .map_err(failed)?;
        let meta = file.metadata().map_err(failed)?;
        if !meta.is_file() {
            return Err(failed(io::Error::other("not a regular file")));
        }
        std::os::unix::fs::fchown(&file, Some(0), Some(0)).map_err(failed)?;
        file.set_permissions(std::fs::Permissions::from_mode(0o644))
            .map_err(failed)?;
        nix::fcntl::renameat2(
            None,
            &from,
            None,
            host,
            nix::fcntl::RenameFlags::RENAME_NOREPLACE,
        )
        .map_err(|e| failed(e.into()))?;
        let arrived = host.symlink_metadata().map_err(failed)?;
        if (arrived.dev(), arrived.ino()) != (meta.dev(), meta.ino()) {
            let _ = std::fs::remove_file(host);
            return Err(failed(io::Error::other(
                "the file was replaced while it was taken out",
            )));
        }
        Ok(())
    }

    fn link(
        &self,
        host: &Path,
        inner: &str,
        base_dev: u64,
        owner: Option<(u32, u32)>,
    ) -> Result<(), JailError> {
        // The file is banger's; its owner and mode are set through this
        // descriptor, never through the name in the chroot.
        let source = std::fs::File::open(host).map_err(|source| JailError::Io {
            path: host.display().to_string(),
            source,
        })?;
        let meta = source.metadata().map_err(|source| JailError::Io {
            path: host.display().to_string(),
            source,
        })?;
        if meta.dev() != base_dev {
            return Err(JailError::OtherFilesystem {
                file: host.display().to_string(),
                base: self.dir.display().to_string(),
            });
        }
        let target = self.host_path(inner);
        let failed = |source| JailError::Io {
            path: target.display().to_string(),
            source,
        };
        // A new name: linkat(2) never follows or replaces one there.
        std::fs::hard_link(host, &target).map_err(failed)?;
        let linked = target.symlink_metadata().map_err(failed)?;
        if (linked.dev(), linked.ino()) != (meta.dev(), meta.ino()) {
            return Err(failed(io::Error::other("the link was replaced")));
        }
        match owner {
            Some((uid, gid)) => {
                std::os::unix::fs::fchown(&source, Some(uid), Some(gid)).map_err(failed)?
            }
            None => {
                let mode = meta.permissions().mode() | 0o444;
                source
                    .set_permissions(std::fs::Permissions::from_mode(mode))
                    .map_err(failed)?
            }
        }
        Ok(())
    }

    /// Removes the jail, entering no mount point; a missing one is fine.
    pub fn remove(&self) {
        remove_jail(&self.dir);
    }
}

/// Every jail under `base` (`base/EXEC_NAME/VM_ID`): (vm id, directory).
pub fn jails(base: &Path) -> Vec<(String, PathBuf)> {
    let mut found = Vec::new();
    for exec in std::fs::read_dir(base).into_iter().flatten().flatten() {
        for jail in std::fs::read_dir(exec.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            found.push((jail.file_name().to_string_lossy().into_owned(), jail.path()));
        }
    }
    found
}

/// Removes the jails of VMs not in `live` (a Firecracker killed with its
/// daemon leaves its jail); returns what it removed.
pub fn remove_stale_jails(base: &Path, live: &[String]) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    for (id, dir) in jails(base) {
        if !live.contains(&id) {
            remove_jail(&dir);
            removed.push(dir);
        }
    }
    removed
}

/// Removes a jail directory (see `Jail::remove`).
pub fn remove_jail(dir: &Path) {
    if let Ok(left) = banger_core::tree_removal::remove_tree(dir) {
        for mount in left {
            tracing::warn!(mount = %mount.display(), "a mount point stays in a jail");
        }
    }
}

/// The jailer's command line: the VM's id, Firecracker, the user, the
/// chroot base, cgroup v2, then Firecracker's own arguments after `--`.
pub fn command_line(
    cfg: &JailerConfig,
    jail: &Jail,
    firecracker: &Path,
    vm_id: &str,
    firecracker_args: Vec<OsString>,
) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec![
        "--id".into(),
        vm_id.into(),
        "--exec-file".into(),
        firecracker.into(),
        "--uid".into(),
        jail.uid.to_string().into(),
        "--gid".into(),
        jail.gid.to_string().into(),
        "--chroot-base-dir".into(),
        cfg.chroot_base.clone().into(),
        "--cgroup-version".into(),
        "2".into(),
        "--".into(),
    ];
    args.extend(firecracker_args);
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(base: &Path) -> JailerConfig {
        JailerConfig {
            binary: "/usr/bin/jailer".into(),
            chroot_base: base.into(),
            uid_base: 0x7000_0000,
        }
    }

    #[test]
    fn the_command_line_hands_firecracker_its_own_args_after_dashes() {
        let c = cfg(Path::new("/var/lib/banger/jail"));
        let jail = Jail::new(
            &c,
            Path::new("/usr/bin/firecracker"),
            "0123456789abcdef",
            0xac1d_0002,
        );
        assert_eq!(jail.uid, 0x7000_0002);
        assert_eq!(
            jail.root,
            Path::new("/var/lib/banger/jail/firecracker/0123456789abcdef/root")
        );
        let args = command_line(
            &c,
            &jail,
            Path::new("/usr/bin/firecracker"),
            "0123456789abcdef",
            vec!["--api-sock".into(), "/api.sock".into()],
        );
        let args: Vec<&str> = args.iter().map(|a| a.to_str().unwrap()).collect();
        assert_eq!(
            args.join(" "),
            "--id 0123456789abcdef --exec-file /usr/bin/firecracker --uid 1879048194 --gid 1879048194 \
             --chroot-base-dir /var/lib/banger/jail --cgroup-version 2 -- --api-sock /api.sock"
        );
        assert_eq!(
            Jail::of_api_socket(&c, &jail.host_path(API_SOCKET)),
            Some(jail.dir.clone())
        );
        assert_eq!(
            Jail::of_api_socket(&c, Path::new("/run/banger/x/api.sock")),
            None
        );
    }

    #[test]
    fn prepare_links_shared_files_and_gives_the_vm_its_own() {
        use super::super::plan::tests::sample;
        let tmp = tempfile::tempdir().unwrap();
        let c = cfg(&tmp.path().join("jail"));
        let mut host = sample();
        let files = tmp.path().join("files");
        std::fs::create_dir_all(&files).unwrap();
        let file = |name: &str| {
            let path = files.join(name);
            std::fs::write(&path, name).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
            path
        };
        host.kernel = file("vmlinux");
        host.initrd = Some(file("initrd"));
        host.drives[0].path = file("rootfs.ext4");
        host.drives[1].path = file("overlay.ext4");
        host.log_path = file("vmm.log");
        host.metrics_path = file("metrics.json");
        let jail = Jail::new(&c, Path::new("/usr/bin/firecracker"), "vm1", 7);
        let inner = jail.prepare(&host).unwrap();
        assert_eq!(inner.kernel, Path::new("/vmlinux"));
        assert_eq!(inner.drives[1].path, Path::new("/overlay.disk"));
        assert_eq!(inner.vsock.uds_path, Path::new(VSOCK_SOCKET));
        let meta = |inner: &str| jail.host_path(inner).metadata().unwrap();
        // Same inode; shared ones readable, own ones the VM user's.
        assert_eq!(
            meta("/vmlinux").ino(),
            host.kernel.metadata().unwrap().ino()
        );
        assert_eq!(meta("/vmlinux").mode() & 0o777, 0o644);
        if nix::unistd::Uid::effective().is_root() {
            assert_eq!(meta("/overlay.disk").uid(), jail.uid);
            assert_eq!(meta("/vmm.log").gid(), jail.gid);
        }
        // Links the VMM's user could plant in the chroot are never
        // followed by root-side work.
        let victim = files.join("victim");
        std::fs::write(&victim, "host file").unwrap();
        std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::os::unix::fs::symlink(&victim, jail.host_path(SNAPSHOT_STATE)).unwrap();
        assert!(jail.make_file(SNAPSHOT_STATE).is_err());
        let out = tmp.path().join("state");
        assert!(jail.take_out(SNAPSHOT_STATE, &out).is_err());
        assert!(!out.exists());
        let victim_meta = victim.metadata().unwrap();
        assert_eq!(victim_meta.mode() & 0o777, 0o600, "its mode is unchanged");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "host file");
        // A file the VMM wrote is taken out, root's and 0644.
        jail.make_file(SNAPSHOT_MEMORY).unwrap();
        std::fs::write(jail.host_path(SNAPSHOT_MEMORY), "memory").unwrap();
        let memory = tmp.path().join("memory");
        jail.take_out(SNAPSHOT_MEMORY, &memory).unwrap();
        assert_eq!(memory.metadata().unwrap().mode() & 0o777, 0o644);
        assert!(!jail.host_path(SNAPSHOT_MEMORY).exists());

        // Again from scratch, then gone; the originals stay.
        jail.prepare(&host).unwrap();
        jail.remove();
        assert!(!jail.dir.exists());
        assert!(host.kernel.exists());
    }
}
