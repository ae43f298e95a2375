//! e2fsprogs over a filesystem someone else wrote (a registered rootfs, a
//! pulled image, a promoted VM's disks): parsed and changed in user space
//! by C tools, so never as root. Each run is a user of its own
//! (`TOOLS_UID`, below the VMs' ids; no account needs to exist), with
//! no_new_privs and root's groups dropped, started in the disk's
//! directory (held open) and given the disk by its name there; the disk
//! is that user's for the run and root's again after, set through a
//! descriptor. Paths the tool reads besides the disk are given relative
//! to that directory and must be readable by others. A daemon that is
//! not root runs the tools as itself: it has nothing more to lend.

use std::ffi::OsString;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Output, Stdio};

/// The user (and group) e2fsprogs runs as over untrusted filesystems.
pub const TOOLS_UID: u32 = 0x6fff_ffff;

/// Runs `tool ARGS... NAME AFTER...` where NAME is `disk`'s file name, in
/// `disk`'s directory, as `TOOLS_UID` (see the module).
pub async fn run_unprivileged(
    tool: &str,
    args: &[OsString],
    disk: &Path,
    after: &[OsString],
) -> io::Result<Output> {
    let dir_path = disk
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = disk
        .file_name()
        .ok_or_else(|| io::Error::other(format!("{} names no file", disk.display())))?;
    let dir = std::fs::File::open(dir_path)?;
    let image = std::fs::OpenOptions::new().read(true).open(disk)?;
    let as_root = nix::unistd::geteuid().is_root();
    let mut command =
        tokio::process::Command::new(crate::tools::find_tool(tool).unwrap_or(tool.into()));
    command
        .args(args)
        .arg(name)
        .args(after)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    if as_root {
        std::os::unix::fs::fchown(&image, Some(TOOLS_UID), Some(TOOLS_UID))?;
        command.uid(TOOLS_UID).gid(TOOLS_UID);
        // The tool starts in the directory: it must be searchable (only
        // that: its entries stay root's).
        let mode = dir.metadata()?.permissions().mode();
        if mode & 0o001 == 0 {
            dir.set_permissions(std::fs::Permissions::from_mode(mode | 0o001))?;
        }
    }
    crate::sandbox::confine(
        command.as_std_mut(),
        crate::sandbox::Confinement {
            dir: Some(dir.as_raw_fd()),
            programs: Vec::new(),
        },
    );
    let out = command.output().await;
    if as_root {
        std::os::unix::fs::fchown(&image, Some(0), Some(0))?;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[tokio::test]
    async fn a_tool_runs_as_its_own_user_and_the_disk_is_roots_again() {
        let dir = tempfile::tempdir().unwrap();
        // Staging as root makes it: closed to others.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let disk = dir.path().join("disk.ext4");
        std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
        let mkfs = std::process::Command::new("mkfs.ext4")
            .args(["-q", "-F"])
            .arg(&disk)
            .status()
            .unwrap();
        assert!(mkfs.success());
        let out = run_unprivileged("e2fsck", &["-fn".into()], &disk, &[])
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // The tool's own view of itself: `id -u` under the same set-up.
        let probe = dir.path().join("probe");
        std::fs::write(&probe, "").unwrap();
        let id = run_unprivileged(
            "sh",
            &["-c".into(), "id -u; touch made-here".into()],
            &probe,
            &[],
        )
        .await
        .unwrap();
        let shown = String::from_utf8_lossy(&id.stdout).trim().to_string();
        if nix::unistd::geteuid().is_root() {
            assert_eq!(shown, TOOLS_UID.to_string());
            assert_eq!(disk.metadata().unwrap().uid(), 0, "root's again");
            // It may not write in the directory (root's), only the disk.
            assert!(!dir.path().join("made-here").exists());
        }
    }
}
