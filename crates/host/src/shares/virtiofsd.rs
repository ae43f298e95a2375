//! One virtiofsd per shared folder: started detached (its own process
//! group, so it outlives a daemon restart with the VM it serves), found
//! again by its socket path in `/proc`, and ended with the VM (it also
//! ends by itself when QEMU disconnects). It serves the folder the VM was
//! made with, held open and started in (`--shared-dir .`), under the
//! `filter` that refuses device nodes and set-id bits.

use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use banger_core::mounts::SharedFolder;

/// How long a virtiofsd may take to listen.
const LISTEN_WAIT: Duration = Duration::from_secs(10);

/// Starts a virtiofsd serving `share` on `socket`; returns once it listens.
pub async fn start(
    binary: &Path,
    share: &SharedFolder,
    socket: &Path,
    vm_dir: &Path,
    index: usize,
) -> Result<(), String> {
    let dir = socket.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot make {}: {e}", dir.display()))?;
    let _ = std::fs::remove_file(socket);
    let as_root = share.uid == 0;
    if !as_root {
        // The user virtiofsd runs as makes its socket there.
        nix::unistd::chown(dir, Some(share.uid.into()), Some(share.gid.into()))
            .map_err(|e| format!("cannot hand {} to uid {}: {e}", dir.display(), share.uid))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| format!("cannot protect {}: {e}", dir.display()))?;
    }
    let log_path = vm_dir.join(format!("virtiofsd-{index}.log"));
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| format!("cannot open {}: {e}", log_path.display()))?;
    // Served from the directory the VM was made with, held open: its
    // path is not looked up again by virtiofsd.
    let folder = open_folder(share)?;
    let mut command = tokio::process::Command::new(binary);
    command
        .args(["--shared-dir", "."])
        .arg("--socket-path")
        .arg(socket)
        .args(["--cache", "auto", "--log-level", "error"])
        .args(["--sandbox", if as_root { "namespace" } else { "none" }])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .process_group(0)
        .kill_on_drop(false);
    if share.read_only {
        command.arg("--readonly");
    }
    if as_root {
        // Device nodes need CAP_MKNOD: a root virtiofsd does without it
        // (the filter refuses them too, and set-id bits, for everyone).
        command.arg("--modcaps=-mknod");
    } else {
        command.uid(share.uid).gid(share.gid);
    }
    crate::sandbox::confine(
        command.as_std_mut(),
        crate::sandbox::Confinement {
            dir: Some(folder.as_raw_fd()),
            programs: super::filter::programs().map_err(|e| e.to_string())?,
        },
    );
    let spawned = command.spawn();
    drop(folder);
    let mut child = spawned.map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
    let deadline = Instant::now() + LISTEN_WAIT;
    loop {
        if socket.exists() {
            // Reaped by a task of its own: it outlives this call.
            tokio::spawn(async move {
                let _ = child.wait().await;
            });
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            let tail = std::fs::read_to_string(&log_path).unwrap_or_default();
            let last = tail.lines().last().unwrap_or("").to_string();
            return Err(format!("virtiofsd exited ({status}): {last}"));
        }
        if Instant::now() > deadline {
            let _ = child.kill().await;
            return Err(format!("virtiofsd did not listen within {LISTEN_WAIT:?}"));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The shared folder, opened without following a link at its name, and
/// checked to be the directory the VM was made with.
pub(super) fn open_folder(share: &SharedFolder) -> Result<std::fs::File, String> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let shown = share.host_dir.display();
    let replaced = || {
        format!(
            "{shown} is no longer the folder this vm was made with (it was replaced, or is now a link): it is not served; put the folder back, or make the vm again with the --mount you mean"
        )
    };
    let folder = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_DIRECTORY | nix::libc::O_NOFOLLOW)
        .open(&share.host_dir)
        .map_err(|e| match e.raw_os_error() {
            Some(nix::libc::ELOOP | nix::libc::ENOTDIR) => replaced(),
            _ => format!("cannot open {shown}: {e}"),
        })?;
    let meta = folder
        .metadata()
        .map_err(|e| format!("cannot read {shown}: {e}"))?;
    match share.identity {
        Some(id) if (id.dev, id.ino) != (meta.dev(), meta.ino()) => Err(replaced()),
        _ => Ok(folder),
    }
}

/// virtiofsd processes serving banger VMs under `run_dir`: (pid, vm id).
pub fn banger_virtiofsds(run_dir: &Path) -> Vec<(u32, String)> {
    let vms = run_dir.join("vms");
    let mut found = Vec::new();
    for (pid, args) in crate::process::command_lines() {
        if !args.first().is_some_and(|a| a.ends_with("virtiofsd")) {
            continue;
        }
        let socket = args
            .windows(2)
            .find(|pair| pair[0] == "--socket-path")
            .map(|pair| PathBuf::from(&pair[1]));
        let id = socket.as_deref().and_then(|s| vm_of(s, &vms));
        if let Some(id) = id {
            found.push((pid, id));
        }
    }
    found
}

/// The VM id of a socket `vms/<id>/fs/N.sock`.
fn vm_of(socket: &Path, vms: &Path) -> Option<String> {
    let rest = socket.strip_prefix(vms).ok()?;
    let mut parts = rest.components();
    let id = parts.next()?.as_os_str().to_string_lossy().into_owned();
    (parts.next()?.as_os_str() == super::SHARES_DIR).then_some(id)
}

/// Ends every virtiofsd of the VM whose runtime directory is `vm_run_dir`.
pub async fn kill_virtiofsds(vm_run_dir: &Path) {
    let Some(id) = vm_run_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
    else {
        return;
    };
    let Some(run_dir) = vm_run_dir.parent().and_then(Path::parent) else {
        return;
    };
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let pids = || -> Vec<u32> {
        banger_virtiofsds(run_dir)
            .into_iter()
            .filter(|(_, vm)| *vm == id)
            .map(|(pid, _)| pid)
            .collect()
    };
    for pid in pids() {
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    while !pids().is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for pid in pids() {
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
    }
}

#[cfg(test)]
mod tests {
    use super::vm_of;
    use std::path::Path;

    #[test]
    fn sockets_name_their_vm() {
        let vms = Path::new("/run/banger/vms");
        assert_eq!(
            vm_of(Path::new("/run/banger/vms/abc/fs/0.sock"), vms).as_deref(),
            Some("abc")
        );
        assert_eq!(vm_of(Path::new("/run/banger/vms/abc/qmp.sock"), vms), None);
        assert_eq!(vm_of(Path::new("/elsewhere/abc/fs/0.sock"), vms), None);
    }
}
