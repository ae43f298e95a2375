//! The Firecracker driver against `firecracker-double` (a test double of
//! the firecracker binary: it serves the API and validates each request
//! against Firecracker's API description, but boots nothing; the guest it
//! pretends to run is picked by the fake kernel). The VM's TAP device is
//! real: the driver refuses one that does not exist.

mod support;

use std::os::unix::net::UnixListener;
use std::time::Duration;

use banger_core::vmm::{MachineSpec, Vmm, VmmError, VmmStatus};
use banger_host::accel::Accel;
use banger_host::firecracker::driver::{FirecrackerDriver, StartMode, API_SOCKET};
use banger_host::process;
use support::{double_binary, kernel, spec_on, Tap};

fn driver() -> FirecrackerDriver {
    FirecrackerDriver::new(double_binary(), Accel::Kvm)
}

#[tokio::test]
async fn boots_reports_running_and_stops_leaving_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let tap = Tap::new();
    let spec = spec_on(dir.path(), &tap);
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
    // The console holds the guest's output only; Firecracker's own lines
    // are in its log from the first one.
    let serial = std::fs::read_to_string(spec.vm_dir.join("serial.log")).unwrap();
    assert_eq!(
        serial,
        "double guest 0123456789abcdef: booted (nothing really runs)\n"
    );
    let log = std::fs::read_to_string(spec.vm_dir.join("vmm.log")).unwrap();
    assert!(
        log.lines()
            .next()
            .unwrap()
            .contains(":INFO] Running Firecracker"),
        "{log}"
    );
}

#[tokio::test]
async fn a_new_driver_reattaches_by_handle_and_can_kill() {
    let dir = tempfile::tempdir().unwrap();
    let tap = Tap::new();
    let handle = driver().start(&spec_on(dir.path(), &tap)).await.unwrap();
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
    let tap = Tap::new();
    let spec = spec_on(dir.path(), &tap);
    std::fs::create_dir_all(&spec.run_dir).unwrap();
    drop(UnixListener::bind(spec.run_dir.join(API_SOCKET)).unwrap());
    drop(UnixListener::bind(&spec.agent.socket).unwrap());
    let handle = driver().start(&spec).await.unwrap();
    driver().kill(&handle).await.unwrap();
}

#[tokio::test]
async fn bad_input_is_refused_before_anything_is_spawned() {
    let dir = tempfile::tempdir().unwrap();
    let tap = Tap::new();
    let good = spec_on(dir.path(), &tap);

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
    let mut tiny_disk = good.clone();
    std::fs::write(dir.path().join("tiny.ext4"), b"disk").unwrap();
    tiny_disk.drives[1].path = dir.path().join("tiny.ext4");
    let mut no_tap = good.clone();
    no_tap.nic.as_mut().unwrap().tap = "bgt-missing0".into();

    let usable = driver();
    let cases: Vec<(&FirecrackerDriver, &MachineSpec, &str)> = vec![
        (&missing, &good, "firecracker binary"),
        (&no_kvm, &good, "kvm is not usable: pvm"),
        (&usable, &bz, "is not an elf vmlinux"),
        (&usable, &no_disk, "gone.ext4 does not exist"),
        (&usable, &tiny_disk, "smaller than one 512-byte sector"),
        (&usable, &no_tap, "tap device bgt-missing0 does not exist"),
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
    let tap = Tap::new();
    let spec = spec_on(dir.path(), &tap);
    // `false` stands in for a firecracker that exits at once.
    let dying = FirecrackerDriver::new(banger_host::tools::find_tool("false").unwrap(), Accel::Kvm);
    let err = dying.start(&spec).await.unwrap_err();
    assert!(matches!(err, VmmError::Boot { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("firecracker exited without saying why"),
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
    let tap = Tap::new();
    let spec = spec_on(dir.path(), &tap);
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

#[tokio::test]
async fn a_hung_guest_is_killed_after_the_grace_and_an_obeying_one_is_not_waited_for() {
    let dir = tempfile::tempdir().unwrap();
    let tap = Tap::new();
    let spec = spec_on(dir.path(), &tap);
    // The guest obeys Ctrl+Alt+Del: Firecracker exits long before the grace.
    let handle = driver().start(&spec).await.unwrap();
    let began = std::time::Instant::now();
    driver()
        .stop(&handle, Duration::from_secs(20))
        .await
        .unwrap();
    assert!(
        began.elapsed() < Duration::from_secs(10),
        "{:?}",
        began.elapsed()
    );
    assert!(!process::alive(handle.pid, handle.start_ticks));

    // A hung guest ignores it: the driver waits out the grace, then kills.
    kernel(&spec.kernel, "ignores-ctrl-alt-del");
    let handle = driver().start(&spec).await.unwrap();
    let grace = Duration::from_millis(1500);
    let began = std::time::Instant::now();
    driver().stop(&handle, grace).await.unwrap();
    assert!(began.elapsed() >= grace, "{:?}", began.elapsed());
    assert!(!process::alive(handle.pid, handle.start_ticks));
    assert!(!handle.control_socket.exists(), "api socket left behind");
}

#[tokio::test]
async fn a_failed_boot_from_a_config_file_reports_its_cause() {
    let dir = tempfile::tempdir().unwrap();
    let tap = Tap::new();
    let spec = spec_on(dir.path(), &tap);
    kernel(&spec.kernel, "fails-to-boot");
    let driver = driver().with_mode(StartMode::ConfigFile);
    let err = driver.start(&spec).await.unwrap_err();
    assert!(matches!(err, VmmError::Boot { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("firecracker exited: firecracker cannot load the kernel (")
            && !text.contains("no cause"),
        "{text}"
    );
    assert!(
        !spec.run_dir.join(API_SOCKET).exists(),
        "api socket left behind"
    );
    // The log holds an earlier boot's success line: only this boot's count.
    let log = spec.vm_dir.join("vmm.log");
    let mut text = std::fs::read_to_string(&log).unwrap();
    text.push_str(
        "[x:main:INFO] Successfully started microvm that was configured from one single json\n",
    );
    std::fs::write(&log, text).unwrap();
    let err = driver.start(&spec).await.unwrap_err();
    assert!(err.to_string().contains("cannot load the kernel"), "{err}");
    // The api mode reports the same cause from InstanceStart's answer.
    let err = self::driver().start(&spec).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("Start microvm error: Cannot load kernel"),
        "{err}"
    );
}

/// Why config-file mode sends nothing while the machine boots: a request
/// in flight when the boot fails takes the cause with it (the process
/// aborts before logging it), as Firecracker v1.16.1 does.
#[tokio::test]
async fn the_double_loses_the_cause_when_a_request_waits_on_a_failed_boot() {
    use std::os::unix::process::ExitStatusExt;
    let dir = tempfile::tempdir().unwrap();
    let kernel_path = dir.path().join("vmlinux");
    kernel(&kernel_path, "fails-to-boot");
    // A boot long enough that the request below surely waits on it, even
    // on a loaded machine (the default 300 ms was not, once, in CI).
    let mut bytes = std::fs::read(&kernel_path).unwrap();
    bytes.extend_from_slice(b"double-boot-ms: 3000\n");
    std::fs::write(&kernel_path, bytes).unwrap();
    let config = serde_json::json!({
        "boot-source": {"kernel_image_path": kernel_path},
        "drives": [],
        "machine-config": {"vcpu_count": 1, "mem_size_mib": 128},
    });
    let config_path = dir.path().join("vm.json");
    std::fs::write(&config_path, config.to_string()).unwrap();
    let log = dir.path().join("vmm.log");
    std::fs::write(&log, b"").unwrap();
    let sock = dir.path().join("api.sock");
    let mut child = tokio::process::Command::new(double_binary())
        .arg("--api-sock")
        .arg(&sock)
        .arg("--config-file")
        .arg(&config_path)
        .arg("--log-path")
        .arg(&log)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Until the socket takes connections: it exists from bind(), before
    // listen(), and a request refused in between waits on nothing (the
    // double then fails its boot with none waiting and exits 1).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::os::unix::net::UnixStream::connect(&sock).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the double never listened"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let client = banger_host::firecracker::FirecrackerClient::new(&sock);
    let asked = client.describe().await;
    // Asked and cut off by the abort, not refused before it was asked.
    assert!(
        matches!(
            asked,
            Err(banger_host::firecracker::FirecrackerError::Protocol { .. })
        ),
        "the boot failed: no answer, the exchange broken: {asked:?}"
    );
    let status = child.wait().await.unwrap();
    assert_eq!(status.signal(), Some(6), "aborted: {status:?}");
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(!logged.contains("Cannot load kernel"), "{logged}");
}

/// The real-binary check (`scripts/firecracker-check`), run against the
/// double: every step it takes is accepted, so a refusal from a real
/// Firecracker is the binary's answer, not the check's.
#[tokio::test]
async fn the_real_binary_check_passes_against_the_double() {
    use banger_host::firecracker::check::{run, table, CheckSetup};
    let dir = tempfile::tempdir().unwrap();
    let tap = Tap::new();
    let image = dir.path().join("image");
    std::fs::create_dir_all(&image).unwrap();
    kernel(&image.join("vmlinux"), "obeys");
    std::fs::write(image.join("initrd"), b"initramfs").unwrap();
    std::fs::write(image.join("rootfs.ext4"), vec![0u8; 4096]).unwrap();
    let steps = run(&CheckSetup {
        firecracker: double_binary(),
        image,
        work: dir.path().join("work"),
        tap: tap.0.clone(),
        accel: Accel::Kvm,
    })
    .await;
    let report = table(&steps);
    assert!(steps.iter().all(|s| s.ok), "{report}");
    let names: Vec<&str> = steps.iter().map(|s| s.name.as_str()).collect();
    for expected in [
        "PUT /actions InstanceStart",
        "PUT /actions SendCtrlAltDel",
        "exit after SendCtrlAltDel",
        "driver (config file): stop",
        "snapshot: pause, save, resume",
        "snapshot: restore as another vm",
        "snapshot: stop the restored vm",
    ] {
        assert!(names.contains(&expected), "{report}");
    }
}

/// Waits (bounded) until one process holds `tap`: the double takes it
/// once its machine runs.
async fn held_within(tap: &Tap, limit: Duration) {
    let deadline = std::time::Instant::now() + limit;
    while banger_host::net::holders::holders(&tap.0).len() != 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "nothing holds {}",
            tap.0
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A VMM is stopped only when its last thread is gone: the double's
/// `slow-to-leave` guest ends its main thread first while a thread keeps
/// the TAP 600 ms (as a vCPU thread still in the kernel does). Once stop
/// returns, nothing holds the TAP and the next start takes it at once.
#[tokio::test]
async fn a_stopped_vmms_tap_is_free_at_once_for_the_next_start() {
    use banger_host::net::holders::holders;
    let dir = tempfile::tempdir().unwrap();
    let tap = Tap::new();
    let spec = spec_on(dir.path(), &tap);
    kernel(&spec.kernel, "slow-to-leave");
    for _ in 0..2 {
        let handle = driver().start(&spec).await.unwrap();
        held_within(&tap, Duration::from_secs(5)).await;
        driver()
            .stop(&handle, Duration::from_secs(10))
            .await
            .unwrap();
        assert!(
            holders(&tap.0).is_empty(),
            "stop returned while a thread of the vmm still held {}",
            tap.0
        );
        assert!(!process::alive(handle.pid, handle.start_ticks));
    }
    // A guest that powers off by itself: the VMM counts as exited (which
    // returns its TAP to the pool) only once no thread holds the TAP.
    let handle = driver().start(&spec).await.unwrap();
    held_within(&tap, Duration::from_secs(5)).await;
    banger_host::firecracker::FirecrackerClient::new(&handle.control_socket)
        .send(&banger_host::firecracker::plan::stop_request())
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if driver().has_exited(&handle) {
            assert!(
                holders(&tap.0).is_empty(),
                "counted as exited while a thread still held {}",
                tap.0
            );
            break;
        }
        assert!(std::time::Instant::now() < deadline, "it never exited");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    driver().kill(&handle).await.unwrap();
}

/// A TAP another process holds: the start names the holder (after a
/// short wait), and the double, started on it anyway, ends with the line
/// Firecracker v1.16.1 printed for it.
#[tokio::test]
async fn a_tap_another_process_holds_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let tap = Tap::new();
    let first = spec_on(&dir.path().join("a"), &tap);
    let held = driver().start(&first).await.unwrap();
    held_within(&tap, Duration::from_secs(5)).await;
    let second = spec_on(&dir.path().join("b"), &tap);
    let err = driver().start(&second).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, VmmError::Preflight(_)), "{text}");
    assert!(
        text.contains(&format!("tap {} is held by pid {} (", tap.0, held.pid)),
        "{text}"
    );
    // The double on its own, past the driver's check.
    let config = serde_json::json!({
        "boot-source": {"kernel_image_path": first.kernel},
        "drives": [],
        "network-interfaces": [{"iface_id": "eth0", "host_dev_name": tap.0}],
    });
    let config_path = dir.path().join("vm.json");
    std::fs::write(&config_path, config.to_string()).unwrap();
    let out = tokio::process::Command::new(double_binary())
        .arg("--api-sock")
        .arg(dir.path().join("api.sock"))
        .arg("--config-file")
        .arg(&config_path)
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.lines().last(),
        Some(format!(
            r#"Error: RunWithApi(BuildFromJson(ParseFromJson(NetDevice(CreateNetworkDevice(TapOpen(IfreqExecuteError(Os {{ code: 16, kind: ResourceBusy, message: "Device or resource busy" }}, "{}"))))))))"#,
            tap.0
        ))
        .as_deref()
    );
    driver().kill(&held).await.unwrap();
}
