//! The Firecracker driver's jailed path against `jailer-double` (a test
//! double of the jailer: it checks its arguments and the chroot it is
//! handed, makes the jail's devices, drops to the VM's user and execs
//! `firecracker-double`, which opens every file with that user's rights
//! under the chroot). Needs root, as the jailer does.

mod support;

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::Duration;

use banger_core::vmm::{Vmm, VmmError, VmmStatus};
use banger_host::accel::Accel;
use banger_host::firecracker::driver::{FirecrackerDriver, StartMode};
use banger_host::firecracker::jail::JailerConfig;
use banger_host::process;
use support::{double_binary, jailer_binary, spec_on, Tap};

const UID_BASE: u32 = 0x7000_0000;

fn root_or_why() -> bool {
    if nix::unistd::Uid::effective().is_root() {
        return true;
    }
    let why = "the jailer tests need root (the jail drops to another user)";
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{why}");
    eprintln!("not run: {why}");
    false
}

fn jailed(base: PathBuf, mode: StartMode) -> FirecrackerDriver {
    FirecrackerDriver::new(double_binary(), Accel::Kvm)
        .with_mode(mode)
        .with_jailer(JailerConfig {
            binary: jailer_binary(),
            chroot_base: base,
            uid_base: UID_BASE,
        })
}

/// The real, effective and saved uids of a process.
fn uids(pid: u32) -> Vec<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    line.split_whitespace()
        .skip(1)
        .take(3)
        .map(|n| n.parse().unwrap())
        .collect()
}

#[tokio::test]
async fn each_vm_runs_jailed_as_its_own_user_and_leaves_no_jail() {
    if !root_or_why() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let tap = Tap::new();
    let spec = spec_on(dir.path(), &tap);
    let base = dir.path().join("jail");
    for mode in [StartMode::Api, StartMode::ConfigFile] {
        let driver = jailed(base.clone(), mode);
        let handle = driver.start(&spec).await.unwrap();
        let uid = UID_BASE + (spec.agent.vsock_cid & 0xffff);
        assert_eq!(uids(handle.pid), [uid, uid, uid], "{mode:?}");
        assert_eq!(driver.status(&handle).await, VmmStatus::Running);

        // The jail: the shared files by link, the VM's own disks its user's,
        // the sockets inside, the devices the jailer made.
        let jail = base.join("firecracker-double").join(&spec.vm_id);
        let root = jail.join("root");
        assert!(handle.control_socket.starts_with(&root));
        assert!(handle.agent_socket.starts_with(&root));
        assert_eq!(
            root.join("vmlinux").metadata().unwrap().ino(),
            spec.kernel.metadata().unwrap().ino()
        );
        let own = root.join("system.disk").metadata().unwrap();
        assert_eq!((own.uid(), own.gid()), (uid, uid));
        let shared = root.join("rootfs.disk").metadata().unwrap();
        assert_eq!(shared.uid(), 0, "shared files stay root's");
        assert!(root.join("dev/kvm").exists() && root.join("dev/net/tun").exists());
        // Its log is the VM's vmm.log, its console serial.log.
        let log = std::fs::read_to_string(spec.vm_dir.join("vmm.log")).unwrap();
        assert!(log.contains("Running Firecracker"), "{log}");

        driver.stop(&handle, Duration::from_secs(10)).await.unwrap();
        assert!(!process::alive(handle.pid, handle.start_ticks));
        assert!(!jail.exists(), "{mode:?}: the jail stays");
        assert!(spec.kernel.exists() && spec.drives[1].path.exists());
    }
}

#[tokio::test]
async fn shared_files_are_opened_by_the_vm_user_through_their_links() {
    use std::os::unix::fs::PermissionsExt;
    if !root_or_why() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let tap = Tap::new();
    let spec = spec_on(dir.path(), &tap);
    // Image files are root's and 0600 in the state directory.
    for path in [&spec.kernel, &spec.drives[0].path] {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    // The jailed Firecracker opens each file as the VM's user when it is
    // configured, so the boot shows the driver made them readable.
    let driver = jailed(dir.path().join("jail"), StartMode::Api);
    let handle = driver.start(&spec).await.unwrap();
    assert_eq!(driver.status(&handle).await, VmmStatus::Running);
    driver.kill(&handle).await.unwrap();
    assert_eq!(spec.kernel.metadata().unwrap().mode() & 0o777, 0o644);
}

#[tokio::test]
async fn the_jailer_refuses_an_exec_file_that_is_not_firecracker() {
    if !root_or_why() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let tap = Tap::new();
    let spec = spec_on(dir.path(), &tap);
    let sleep = banger_host::tools::find_tool("sleep").unwrap();
    let driver = FirecrackerDriver::new(sleep, Accel::Kvm).with_jailer(JailerConfig {
        binary: jailer_binary(),
        chroot_base: dir.path().join("jail"),
        uid_base: UID_BASE,
    });
    let err = driver.start(&spec).await.unwrap_err();
    let VmmError::Boot { log, .. } = &err else {
        panic!("{err}");
    };
    assert!(
        log.iter()
            .any(|line| line.contains("The file name needs to contain 'firecracker'")),
        "{log:?}"
    );
    assert!(!dir.path().join("jail/sleep").join(&spec.vm_id).exists());

    let missing = FirecrackerDriver::new(double_binary(), Accel::Kvm).with_jailer(JailerConfig {
        binary: dir.path().join("no-jailer"),
        chroot_base: dir.path().join("jail"),
        uid_base: UID_BASE,
    });
    let err = missing.start(&spec).await.unwrap_err();
    assert!(matches!(err, VmmError::Preflight(_)), "{err}");
    assert!(err.to_string().contains("jailer binary"), "{err}");
}
