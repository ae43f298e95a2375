//! `jailer-double`: a TEST DOUBLE of Firecracker's `jailer`, for the
//! driver's jailed path on hosts without Firecracker. It checks its
//! arguments as the jailer v1.16.1 does (the id, an exec file whose name
//! contains `firecracker`, numeric ids, an absolute chroot base, cgroup
//! version 1 or 2) and the chroot it is handed
//! (`BASE/EXEC_NAME/ID/root`, made by the driver), makes `/dev/kvm` and
//! `/dev/net/tun` in it, copies the exec file into it, gives the chroot to
//! the VM's user, drops to that user (groups, gid, uid), and execs the
//! copy with the arguments after `--`.
//!
//! What it does NOT do that the jailer does: enter a mount namespace,
//! `pivot_root`/`chroot` (the copy still loads its libraries from the
//! host), or set up cgroups. The exec file (`firecracker-double`) is handed the chroot as
//! an open directory (`--double-root /proc/self/fd/N`, which reaches it
//! without entering the directories above), resolves every path under
//! it, and opens every file with the dropped user's rights, so a file the
//! VM's user cannot open fails there as it would in a real jail.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use clap::Parser;
use nix::sys::stat::{makedev, mknod, Mode, SFlag};
use nix::unistd::{chown, setgroups, setresgid, setresuid, Gid, Uid};

#[derive(Debug, Parser)]
struct Args {
    #[arg(long)]
    id: String,
    #[arg(long)]
    exec_file: PathBuf,
    #[arg(long)]
    uid: u32,
    #[arg(long)]
    gid: u32,
    #[arg(long)]
    chroot_base_dir: PathBuf,
    #[arg(long, default_value = "1")]
    cgroup_version: u8,
    /// Firecracker's own arguments.
    #[arg(last = true)]
    firecracker: Vec<String>,
}

fn fail(message: String) -> ! {
    eprintln!("Jailer error: {message}");
    std::process::exit(1);
}

fn main() {
    let args = Args::parse();
    let id_ok = (1..=64).contains(&args.id.len())
        && args
            .id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if !id_ok {
        fail(format!("Invalid instance ID: {}", args.id));
    }
    let exec_name = args
        .exec_file
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_string();
    if !exec_name.contains("firecracker") {
        fail(format!(
            "Invalid filename. The file name needs to contain 'firecracker': {exec_name}"
        ));
    }
    let runs = std::fs::metadata(&args.exec_file)
        .map(|m| m.is_file())
        .unwrap_or(false);
    if !runs {
        fail(format!("{} is not a file", args.exec_file.display()));
    }
    if !args.chroot_base_dir.is_absolute() {
        fail(format!(
            "chroot base dir {} is not absolute",
            args.chroot_base_dir.display()
        ));
    }
    if !matches!(args.cgroup_version, 1 | 2) {
        fail(format!("invalid cgroup version {}", args.cgroup_version));
    }
    let root = args
        .chroot_base_dir
        .join(&exec_name)
        .join(&args.id)
        .join("root");
    if !root.is_dir() {
        fail(format!("the chroot {} was not made", root.display()));
    }
    let (uid, gid) = (Uid::from_raw(args.uid), Gid::from_raw(args.gid));
    if let Err(err) = devices(&root, uid, gid) {
        fail(format!("cannot make the jail's devices: {err}"));
    }
    // The jailer runs a copy inside the jail: the original may sit where
    // the VM's user cannot reach it.
    let copy = root.join(&exec_name);
    if let Err(err) = std::fs::copy(&args.exec_file, &copy) {
        fail(format!("cannot copy {}: {err}", args.exec_file.display()));
    }
    if let Err(err) = chown(&root, Some(uid), Some(gid)) {
        fail(format!("cannot chown {}: {err}", root.display()));
    }
    // In place of a chroot: a handle on the jail that survives the exec
    // and reaches it without passing the directories above it, which the
    // VM's user may not enter (as a chrooted process never does).
    let jail = match nix::fcntl::open(
        &root,
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(err) => fail(format!("cannot open {}: {err}", root.display())),
    };
    // Groups first, then the group, then the user: no way back.
    let dropped = setgroups(&[gid])
        .and_then(|()| setresgid(gid, gid, gid))
        .and_then(|()| setresuid(uid, uid, uid));
    if let Err(err) = dropped {
        fail(format!("cannot drop to {}:{}: {err}", args.uid, args.gid));
    }
    let inside = format!("/proc/self/fd/{jail}");
    let err = std::process::Command::new(format!("{inside}/{exec_name}"))
        .args(&args.firecracker)
        .arg("--double-root")
        .arg(&inside)
        .exec();
    fail(format!("cannot exec {}: {err}", args.exec_file.display()));
}

/// `/dev/kvm` and `/dev/net/tun`, the user's, as the jailer makes them.
fn devices(root: &Path, uid: Uid, gid: Gid) -> nix::Result<()> {
    std::fs::create_dir_all(root.join("dev/net")).map_err(|_| nix::Error::EIO)?;
    for (path, major, minor) in [("dev/kvm", 10, 232), ("dev/net/tun", 10, 200)] {
        let path = root.join(path);
        let _ = std::fs::remove_file(&path);
        mknod(
            &path,
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o600),
            makedev(major, minor),
        )?;
        chown(&path, Some(uid), Some(gid))?;
    }
    Ok(())
}
