//! The Firecracker driver against `firecracker-double` (a test double of
//! the firecracker binary: it serves the API and validates each request
//! against Firecracker's API description, but boots nothing).

use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use banger_core::vmm::{AgentChannel, DriveSpec, MachineSpec, NicSpec, Vmm, VmmError, VmmStatus};
use banger_host::accel::Accel;
use banger_host::firecracker::driver::{FirecrackerDriver, StartMode, API_SOCKET};
use banger_host::process;

fn double_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_firecracker-double"))
}

fn spec(dir: &Path) -> MachineSpec {
    let images = dir.join("image");
    std::fs::create_dir_all(&images).unwrap();
    std::fs::write(
        images.join("vmlinux"),
        b"\x7fELF\x02\x01\x01rest-of-a-kernel",
    )
    .unwrap();
    std::fs::write(images.join("initrd"), b"initramfs").unwrap();
    for disk in ["rootfs.ext4", "system.cow", "root.ext4"] {
        std::fs::write(images.join(disk), b"disk").unwrap();
    }
    let drive = |id: &str, file: &str, read_only| DriveSpec {
        id: id.into(),
        path: images.join(file),
        read_only,
    };
    MachineSpec {
        vm_id: "0123456789abcdef".into(),
        vcpus: 2,
        memory_mib: 512,
        kernel: images.join("vmlinux"),
        initrd: Some(images.join("initrd")),
        cmdline: "console=ttyS0 reboot=k panic=1".into(),
        drives: vec![
            drive("rootfs", "rootfs.ext4", true),
            drive("system", "system.cow", false),
            drive("work", "root.ext4", false),
        ],
        nic: Some(NicSpec {
            tap: "tap-pool-0".into(),
            mac: "02:fc:00:00:00:02".into(),
        }),
        agent: AgentChannel {
            vsock_cid: 2887581698,
            socket: dir.join("run/vsock.sock"),
        },
        vm_dir: dir.join("vm"),
        run_dir: dir.join("run"),
    }
}

fn driver() -> FirecrackerDriver {
    FirecrackerDriver::new(double_binary(), Accel::Kvm)
}

#[tokio::test]
async fn boots_reports_running_and_stops_leaving_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let spec = spec(dir.path());
    let handle = driver().start(&spec).await.unwrap();
    assert_eq!(handle.kind, "firecracker");
    assert!(process::alive(handle.pid, handle.start_ticks));
    assert_eq!(driver().status(&handle).await, VmmStatus::Running);
    for file in ["vmm.log", "metrics.json", "serial.log"] {
        assert!(spec.vm_dir.join(file).exists(), "{file}");
    }

    driver()
        .stop(&handle, Duration::from_secs(10))
        .await
        .unwrap();
    assert!(!process::alive(handle.pid, handle.start_ticks));
    assert!(!handle.control_socket.exists(), "api socket left behind");
    assert_eq!(driver().status(&handle).await, VmmStatus::Exited);
    let serial = std::fs::read_to_string(spec.vm_dir.join("serial.log")).unwrap();
    assert!(serial.contains("test double"), "{serial}");
}

#[tokio::test]
async fn a_new_driver_reattaches_by_handle_and_can_kill() {
    let dir = tempfile::tempdir().unwrap();
    let handle = driver().start(&spec(dir.path())).await.unwrap();
    // A daemon restart keeps only the recorded handle.
    let restarted = driver();
    assert_eq!(restarted.status(&handle).await, VmmStatus::Running);
    restarted.kill(&handle).await.unwrap();
    assert_eq!(restarted.status(&handle).await, VmmStatus::Exited);
    assert!(!handle.control_socket.exists());
}

#[tokio::test]
async fn stale_sockets_from_a_killed_firecracker_do_not_block_a_start() {
    let dir = tempfile::tempdir().unwrap();
    let spec = spec(dir.path());
    std::fs::create_dir_all(&spec.run_dir).unwrap();
    drop(UnixListener::bind(spec.run_dir.join(API_SOCKET)).unwrap());
    drop(UnixListener::bind(&spec.agent.socket).unwrap());
    let handle = driver().start(&spec).await.unwrap();
    driver().kill(&handle).await.unwrap();
}

#[tokio::test]
async fn bad_input_is_refused_before_anything_is_spawned() {
    let dir = tempfile::tempdir().unwrap();
    let good = spec(dir.path());

    let missing = FirecrackerDriver::new(dir.path().join("no-firecracker"), Accel::Kvm);
    let no_kvm = FirecrackerDriver::new(
        double_binary(),
        Accel::Tcg {
            reason: "pvm".into(),
        },
    );
    let mut bz = good.clone();
    std::fs::write(dir.path().join("bzImage"), b"MZ\x00\x00not-elf").unwrap();
    bz.kernel = dir.path().join("bzImage");
    let mut too_big = good.clone();
    too_big.vcpus = 64; // beyond Firecracker's 32
    let mut no_disk = good.clone();
    no_disk.drives[2].path = dir.path().join("gone.ext4");

    let usable = driver();
    let cases: Vec<(&FirecrackerDriver, &MachineSpec, &str)> = vec![
        (&missing, &good, "firecracker binary"),
        (&no_kvm, &good, "kvm is not usable: pvm"),
        (&usable, &bz, "is not an elf vmlinux"),
        (&usable, &no_disk, "gone.ext4 does not exist"),
        (&usable, &too_big, "vcpu count 64"),
    ];
    for (driver, spec, needle) in cases {
        let err = driver.start(spec).await.unwrap_err();
        assert!(matches!(err, VmmError::Preflight(_)), "{err}");
        assert!(err.to_string().contains(needle), "{err}");
        assert!(
            !spec.run_dir.exists(),
            "something was made before the checks passed"
        );
    }
}

#[tokio::test]
async fn a_vmm_that_dies_at_start_is_a_boot_error_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let spec = spec(dir.path());
    // `false` stands in for a firecracker that exits at once.
    let dying = FirecrackerDriver::new(banger_host::tools::find_tool("false").unwrap(), Accel::Kvm);
    let err = dying.start(&spec).await.unwrap_err();
    assert!(matches!(err, VmmError::Boot { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("exited before its api socket answered"),
        "{err}"
    );
    assert!(
        !spec.run_dir.join(API_SOCKET).exists(),
        "api socket left behind"
    );
}

#[tokio::test]
async fn config_file_mode_starts_without_configuration_requests() {
    let dir = tempfile::tempdir().unwrap();
    let spec = spec(dir.path());
    let driver = driver().with_mode(StartMode::ConfigFile);
    let handle = driver.start(&spec).await.unwrap();
    assert_eq!(driver.status(&handle).await, VmmStatus::Running);
    let written: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(spec.vm_dir.join("firecracker.json")).unwrap(),
    )
    .unwrap();
    let spec_doc = banger_host::firecracker::ApiSpec::load();
    spec_doc
        .check_definition("FullVmConfiguration", &written)
        .unwrap();
    assert_eq!(written["drives"].as_array().unwrap().len(), 3);
    driver.stop(&handle, Duration::from_secs(10)).await.unwrap();
    assert!(!handle.control_socket.exists());
}
