//! The Firecracker driver's snapshots against `firecracker-double` (a
//! test double of the firecracker binary; see its docs for what it copies
//! of Firecracker's snapshot API): a paused VM saved to a state and a
//! memory file, resumed; the saved machine taken up by a fresh process as
//! another VM, with that VM's own disks, TAP and vsock socket, after the
//! first is gone; and the refusals, which leave nothing behind. Jailed,
//! the same through `jailer-double`.

mod support;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use banger_core::vmm::{MachineSpec, MemoryFile, Vmm, VmmError, VmmHandle, VmmStatus};
use banger_host::accel::Accel;
use banger_host::firecracker::driver::{FirecrackerDriver, API_SOCKET};
use banger_host::firecracker::jail::JailerConfig;
use banger_host::firecracker::{FcRequest, FirecrackerClient};
use banger_host::process;
use serde_json::Value;
use support::{double_binary, jailer_binary, spec_on, Tap};

fn driver() -> FirecrackerDriver {
    FirecrackerDriver::new(double_binary(), Accel::Kvm)
}

/// A VM spec in `dir` on `tap` whose writable disks are its own, in its
/// directory, as banger's are.
fn vm(dir: &Path, tap: &Tap, vm_id: &str, cid: u32) -> MachineSpec {
    let mut spec = spec_on(dir, tap);
    spec.vm_id = vm_id.into();
    spec.agent.vsock_cid = cid;
    std::fs::create_dir_all(&spec.vm_dir).unwrap();
    for drive in spec.drives.iter_mut().filter(|d| !d.read_only) {
        let own = spec.vm_dir.join(drive.path.file_name().unwrap());
        std::fs::copy(&drive.path, &own).unwrap();
        drive.path = own;
    }
    spec
}

async fn config(handle: &VmmHandle) -> Value {
    FirecrackerClient::new(&handle.control_socket)
        .send(&FcRequest::get("/vm/config"))
        .await
        .unwrap()
        .unwrap()
}

/// Saves `handle`'s machine into `snap` the way the daemon does.
async fn snapshot(driver: &FirecrackerDriver, handle: &VmmHandle, snap: &Path) -> bool {
    std::fs::create_dir_all(snap).unwrap();
    driver.pause(handle).await.unwrap();
    let saved = driver
        .save(handle, &snap.join("state"), &snap.join("memory"), false)
        .await;
    driver.resume(handle).await.unwrap();
    saved.unwrap()
}

fn restored(spec: &MachineSpec, snap: &Path) -> MachineSpec {
    let mut spec = spec.clone();
    spec.memory_file = Some(MemoryFile {
        path: snap.join("memory"),
        shared: false,
    });
    spec
}

#[tokio::test]
async fn a_saved_machine_comes_back_as_another_vm_with_its_own_disks_tap_and_socket() {
    let dir = tempfile::tempdir().unwrap();
    let (tap_a, tap_b) = (Tap::new(), Tap::new());
    let a = vm(&dir.path().join("a"), &tap_a, "aaaaaaaaaaaaaaaa", 1000);
    let b = vm(&dir.path().join("b"), &tap_b, "bbbbbbbbbbbbbbbb", 1001);
    let snap = dir.path().join("snap");
    let handle = driver().start(&a).await.unwrap();
    // The VM's own disks are named relative to its directory.
    let drives = config(&handle).await["drives"].clone();
    let paths: Vec<&str> = drives
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["path_on_host"].as_str().unwrap())
        .collect();
    assert!(
        paths.contains(&"system.cow") && paths.contains(&"root.ext4"),
        "{paths:?}"
    );

    assert!(
        snapshot(&driver(), &handle, &snap).await,
        "memory in a file"
    );
    assert_eq!(driver().status(&handle).await, VmmStatus::Running);
    let memory = snap.join("memory").metadata().unwrap();
    assert_eq!(memory.len(), 512 << 20, "the machine's whole memory");
    assert!(memory.blocks() < 64, "written sparse by the double");

    // The source goes, disks and all: the copy needs none of it.
    driver().kill(&handle).await.unwrap();
    std::fs::remove_dir_all(&a.vm_dir).unwrap();

    let copy = driver()
        .restore(&restored(&b, &snap), &snap.join("state"))
        .await
        .unwrap();
    assert!(process::alive(copy.pid, copy.start_ticks));
    assert_eq!(driver().status(&copy).await, VmmStatus::Running);
    let seen = config(&copy).await;
    assert_eq!(
        seen["network-interfaces"][0]["host_dev_name"],
        tap_b.0.as_str()
    );
    assert_eq!(
        seen["vsock"]["uds_path"],
        b.agent.socket.to_str().unwrap(),
        "the new vm's agent socket"
    );
    assert!(seen.get("boot-source").is_none(), "{seen}");
    // The restored guest is the saved one: it obeys Ctrl+Alt+Del.
    let started = std::time::Instant::now();
    driver().stop(&copy, Duration::from_secs(10)).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(!copy.control_socket.exists());
}

#[tokio::test]
async fn refused_saves_and_restores_leave_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (tap_a, tap_b) = (Tap::new(), Tap::new());
    let a = vm(&dir.path().join("a"), &tap_a, "cccccccccccccccc", 1002);
    let b = vm(&dir.path().join("b"), &tap_b, "dddddddddddddddd", 1003);
    let snap = dir.path().join("snap");
    std::fs::create_dir_all(&snap).unwrap();
    let handle = driver().start(&a).await.unwrap();

    // A running machine is not saved (Firecracker wants it paused).
    let err = driver()
        .save(&handle, &snap.join("state"), &snap.join("memory"), false)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not paused"), "{err}");
    assert_eq!(std::fs::read_dir(&snap).unwrap().count(), 0, "nothing left");
    assert_eq!(driver().status(&handle).await, VmmStatus::Running);

    // No memory file: refused before a process exists.
    let err = driver().restore(&b, &snap.join("state")).await.unwrap_err();
    assert!(matches!(err, VmmError::Preflight(_)), "{err}");
    assert!(!b.run_dir.join(API_SOCKET).exists());

    // A state that is no snapshot: the load fails, the process ends, its
    // cause is reported, nothing is left.
    std::fs::write(snap.join("state"), "{}").unwrap();
    std::fs::write(snap.join("memory"), "").unwrap();
    let err = driver()
        .restore(&restored(&b, &snap), &snap.join("state"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not a snapshot"), "{err}");
    assert!(!b.run_dir.join(API_SOCKET).exists());
    driver().kill(&handle).await.unwrap();
}

#[tokio::test]
async fn jailed_snapshots_are_written_in_the_jail_and_taken_out_as_roots() {
    if !nix::unistd::Uid::effective().is_root() {
        let why = "the jailer tests need root (the jail drops to another user)";
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{why}");
        eprintln!("not run: {why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let jailed = FirecrackerDriver::new(double_binary(), Accel::Kvm).with_jailer(JailerConfig {
        binary: jailer_binary(),
        chroot_base: dir.path().join("jail"),
        uid_base: 0x7000_0000,
    });
    let (tap_a, tap_b) = (Tap::new(), Tap::new());
    let a = vm(&dir.path().join("a"), &tap_a, "eeeeeeeeeeeeeeee", 1004);
    let b = vm(&dir.path().join("b"), &tap_b, "ffffffffffffffff", 1005);
    let snap: PathBuf = dir.path().join("snap");
    let handle = jailed.start(&a).await.unwrap();
    assert!(snapshot(&jailed, &handle, &snap).await);
    for file in ["state", "memory"] {
        let meta = snap.join(file).metadata().unwrap();
        assert_eq!((meta.uid(), meta.gid()), (0, 0), "{file}");
    }
    jailed.kill(&handle).await.unwrap();

    let copy = jailed
        .restore(&restored(&b, &snap), &snap.join("state"))
        .await
        .unwrap();
    assert_eq!(jailed.status(&copy).await, VmmStatus::Running);
    assert_eq!(
        config(&copy).await["network-interfaces"][0]["host_dev_name"],
        tap_b.0.as_str()
    );
    jailed.kill(&copy).await.unwrap();
    assert!(!dir
        .path()
        .join("jail/firecracker-double/ffffffffffffffff")
        .exists());
    // The snapshot's files are where they were, and still root's.
    assert_eq!(snap.join("memory").metadata().unwrap().uid(), 0);
}
