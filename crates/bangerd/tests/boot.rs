//! Real VMs under QEMU (TCG on hosts without usable KVM), driven through
//! a real bangerd process and its API, checked from inside the guest
//! through the agent: create boots to a ready agent and sshd; the lean
//! guest ends its boot with systemd running and nothing failed, the
//! agent and sshd adopted by their units, and a unit the user installs
//! runs at the next boot; the work disk and
//! the overlay keep their files across a restart, and one VM's overlay
//! is not another's; the daemon is killed with SIGKILL while VMs run and
//! re-adopts them; a VM that cannot boot ends failed with QEMU's words;
//! removal leaves no process, file or socket. The image is built once,
//! first (the catalog's default image, where the mirror is reachable); the
//! daemon then runs in a network namespace of the test's own.

use banger_testkit as support;

use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::json;

fn qemu_pid(id: &str) -> Option<u32> {
    let out = Command::new("pgrep")
        .arg("-f")
        .arg(format!("banger-{id}"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .filter(|pid: &u32| banger_host::process::stat(*pid).is_some_and(|(s, _)| s != 'Z'))
}

#[tokio::test(flavor = "multi_thread")]
async fn vms_boot_keep_their_disks_survive_a_daemon_kill_and_leave_nothing() {
    let Some(guest) = support::guest_binary() else {
        return;
    };
    let Some(ns) = support::NetNs::new("boot") else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let _cleanup = support::Cleanup(root.path().to_path_buf());
    let etc = root.path().join("etc/banger");
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::write(
        etc.join("config.toml"),
        format!(
            "guest_binary = \"{}\"\nwarm_templates = false\n[vm_defaults]\nmemory_mib = 512\nwork_disk_size = \"2G\"\n",
            guest.display()
        ),
    )
    .unwrap();
    support::build_default_image(root.path(), &guest).await;
    let socket = root.path().join("run/banger/bangerd.sock");
    let mut daemon = support::spawn_daemon(&ns, root.path());
    support::wait_for_socket(&socket).await;

    // Create: boots, agent ready.
    let (status, a) = support::call(&socket, "POST", "/v1/vms", Some(r#"{"name":"a"}"#)).await;
    assert_eq!(status, 201, "{a}");
    assert_eq!(a["state"], "running");
    let stages: Vec<&str> = a["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        stages,
        [
            "resolve_image",
            "reserve_vm",
            "tap",
            "ssh_keys",
            "system_disk",
            "work_disk",
            "vmm_start",
            "agent_ready",
            "guest_kernel_to_init",
            "guest_init_to_switch_root",
            "guest_switch_root_to_agent",
            "ssh_ready"
        ]
    );
    let a_id = a["id"].as_str().unwrap().to_string();

    let (code, cmdline, _) = support::sh(&socket, "a", "cat /proc/cmdline").await;
    assert_eq!(code, 0);
    for key in [
        "banger.root=/dev/vda",
        "banger.system=/dev/vdb",
        "banger.work=/dev/vdc",
        "banger.hostname=a",
    ] {
        assert!(cmdline.contains(key), "{cmdline}");
    }
    let (_, df, _) = support::sh(&socket, "a", "df -P /root | tail -1").await;
    assert!(df.starts_with("/dev/vdc "), "{df}");
    let (_, hostname, _) = support::sh(&socket, "a", "hostname").await;
    assert_eq!(hostname.trim(), "a");
    let (code, _, err) = support::sh(&socket, "a", "echo oops >&2; exit 3").await;
    assert_eq!((code, err.as_str()), (3, "oops\n"));

    // The lean guest: systemd is PID 1 and finishes its boot with nothing
    // failed; the agent and sshd, started by banger-init before it, are
    // its services now; udev is masked and sshd restarts like any unit.
    let (_, state, why) = support::sh(&socket, "a", "systemctl is-system-running --wait").await;
    let (_, failed, _) = support::sh(&socket, "a", "systemctl --failed --no-legend --plain").await;
    assert!(
        ["running", "degraded"].contains(&state.trim()),
        "system state {state:?} ({why}), failed units: {failed}"
    );
    let (_, init, _) = support::sh(&socket, "a", "cat /proc/1/comm").await;
    assert_eq!(init.trim(), "systemd");
    let (code, adopted, err) = support::sh(
        &socket,
        "a",
        "systemctl is-active banger-agent ssh && test \"$(systemctl show -p MainPID --value ssh)\" = \"$(cat /run/sshd.pid)\" && systemctl is-enabled systemd-udevd.service getty.target 2>&1",
    )
    .await;
    assert_eq!(code, 1, "is-enabled of masked units: {adopted} {err}");
    assert_eq!(adopted, "active\nactive\nmasked\nmasked\n", "{err}");
    let (code, _, err) = support::sh(
        &socket,
        "a",
        "systemctl restart ssh && systemctl is-active ssh && systemctl reload ssh",
    )
    .await;
    assert_eq!(code, 0, "{err}");

    // A unit the user installs runs at boot.
    let (code, _, err) = support::sh(
        &socket,
        "a",
        "printf '[Unit]\\nDescription=user oneshot\\n[Service]\\nType=oneshot\\nExecStart=/bin/sh -c \"cat /proc/sys/kernel/random/boot_id > /var/tmp/oneshot\"\\n[Install]\\nWantedBy=multi-user.target\\n' > /etc/systemd/system/oneshot.service && systemctl enable oneshot.service",
    )
    .await;
    assert_eq!(code, 0, "{err}");

    // Files in /root (work disk) and outside it (overlay) survive a restart.
    let (code, _, _) = support::sh(
        &socket,
        "a",
        "echo kept > /root/kept && echo mine > /etc/marker && sync",
    )
    .await;
    assert_eq!(code, 0);
    let (status, restarted) = support::call(&socket, "POST", "/v1/vms/a/restart", None).await;
    assert_eq!(status, 200, "{restarted}");
    let (_, files, _) = support::sh(&socket, "a", "cat /root/kept /etc/marker").await;
    assert_eq!(files, "kept\nmine\n");
    let (code, boot, err) = support::sh(
        &socket,
        "a",
        "systemctl is-system-running --wait >/dev/null; test \"$(cat /var/tmp/oneshot)\" = \"$(cat /proc/sys/kernel/random/boot_id)\" && echo this-boot",
    )
    .await;
    assert_eq!((code, boot.as_str()), (0, "this-boot\n"), "{err}");

    // Another VM of the same image does not see a's overlay.
    let (status, b) = support::call(&socket, "POST", "/v1/vms", Some(r#"{"name":"b"}"#)).await;
    assert_eq!(status, 201, "{b}");
    let b_id = b["id"].as_str().unwrap().to_string();
    let (code, _, _) = support::sh(&socket, "b", "test -e /etc/marker").await;
    assert_eq!(code, 1, "b must not see a's /etc/marker");

    // Each VM's QEMU runs as a user of its own, not root, sandboxed.
    let identity = |id: &str| {
        let pid = qemu_pid(id).expect("qemu runs");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let field = |name: &str| {
            let line = status.lines().find(|l| l.starts_with(name)).unwrap();
            line.split_whitespace().nth(1).unwrap().to_string()
        };
        (field("Uid:"), field("Seccomp:"), field("NoNewPrivs:"))
    };
    let (a_uid, a_seccomp, a_nnp) = identity(&a_id);
    let (b_uid, ..) = identity(&b_id);
    assert!(
        a_uid != "0" && b_uid != "0" && a_uid != b_uid,
        "{a_uid} {b_uid}"
    );
    assert_eq!((a_seccomp.as_str(), a_nnp.as_str()), ("2", "1"));
    let (_, report) = support::call(&socket, "GET", "/v1/verify", None).await;
    assert_eq!(report["warnings"], json!([]), "{report}");

    // The daemon dies hard; the VMs do not; a new daemon adopts them.
    kill(Pid::from_raw(daemon.id() as i32), Signal::SIGKILL).unwrap();
    let _ = daemon.wait();
    assert!(
        qemu_pid(&a_id).is_some() && qemu_pid(&b_id).is_some(),
        "vms outlive the daemon"
    );
    daemon = support::spawn_daemon(&ns, root.path());
    support::wait_for_socket(&socket).await;
    let (_, a) = support::call(&socket, "GET", "/v1/vms/a", None).await;
    assert_eq!(a["state"], "running", "{a}");
    let (_, hostname, _) = support::sh(&socket, "a", "hostname").await;
    assert_eq!(hostname.trim(), "a");
    // Daemons come and go quickly; the first request of each new one is
    // answered (the guest once lost a request sent while its agent was
    // closing the port the old daemon had left).
    for _ in 0..5 {
        kill(Pid::from_raw(daemon.id() as i32), Signal::SIGKILL).unwrap();
        let _ = daemon.wait();
        daemon = support::spawn_daemon(&ns, root.path());
        support::wait_for_socket(&socket).await;
        let (code, _, _) = support::sh(&socket, "a", "true").await;
        assert_eq!(code, 0);
    }
    // A command that takes its agent down with it ends with an error (the
    // new agent, asked after a silence, does not know it) and the next
    // one runs.
    let lines = support::call_stream(
        &socket,
        "/v1/vms/a/exec",
        r#"{"argv":["systemctl","restart","banger-agent"]}"#,
    )
    .await;
    let last = lines.last().expect("an answer");
    assert_eq!(last["type"], "error", "{lines:?}");
    assert!(
        last["error"]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no longer runs this command"),
        "{last}"
    );
    let (_, hostname, _) = support::sh(&socket, "a", "hostname").await;
    assert_eq!(hostname.trim(), "a");
    // A stop whose client goes away mid-way runs to its end anyway.
    support::abandon_call(&socket, "POST", "/v1/vms/a/stop", "a").await;
    support::wait_state(&socket, "a", "stopped").await;
    assert_eq!(qemu_pid(&a_id), None);

    // A VM whose VMM died while the daemon was down is marked stopped on
    // the next start, and what it held is cleaned.
    kill(Pid::from_raw(daemon.id() as i32), Signal::SIGKILL).unwrap();
    let _ = daemon.wait();
    let b_qemu = qemu_pid(&b_id).expect("b still runs");
    kill(Pid::from_raw(b_qemu as i32), Signal::SIGKILL).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while qemu_pid(&b_id).is_some() {
        assert!(
            std::time::Instant::now() < deadline,
            "qemu of b did not die"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    daemon = support::spawn_daemon(&ns, root.path());
    support::wait_for_socket(&socket).await;
    let (_, b) = support::call(&socket, "GET", "/v1/vms/b", None).await;
    assert_eq!(b["state"], "stopped", "{b}");
    let (_, report) = support::call(&socket, "GET", "/v1/verify", None).await;
    assert_eq!(report["leaks"], json!([]), "{report}");

    // The daemon dies in the middle of a create: the next daemon kills the
    // half-booted VM, releases what it held and marks it failed.
    let creating = {
        let socket = socket.clone();
        tokio::spawn(
            async move { support::call_stream(&socket, "/v1/vms", r#"{"name":"d"}"#).await },
        )
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let d_id = loop {
        let (status, d) = support::call(&socket, "GET", "/v1/vms/d", None).await;
        if status == 200 {
            if let Some(id) = d["id"].as_str().filter(|id| qemu_pid(id).is_some()) {
                break id.to_string();
            }
        }
        assert!(Instant::now() < deadline, "d never got a vmm: {d}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // Past the vmm start (its handle is recorded), before the agent answers.
    tokio::time::sleep(Duration::from_millis(500)).await;
    kill(Pid::from_raw(daemon.id() as i32), Signal::SIGKILL).unwrap();
    let _ = daemon.wait();
    creating.abort();
    let _ = creating.await;
    daemon = support::spawn_daemon(&ns, root.path());
    support::wait_for_socket(&socket).await;
    let (_, d) = support::call(&socket, "GET", "/v1/vms/d", None).await;
    assert_eq!(
        (d["state"].as_str(), d["last_error"].as_str()),
        (Some("failed"), Some("bangerd stopped during its boot")),
        "{d}"
    );
    assert_eq!(qemu_pid(&d_id), None, "the half-booted vmm was killed");
    let (_, report) = support::call(&socket, "GET", "/v1/verify", None).await;
    assert_eq!(report["leaks"], json!([]), "{report}");

    // A VM whose kernel QEMU cannot load ends failed with QEMU's words.
    let fake = root.path().join("fake");
    std::fs::create_dir_all(&fake).unwrap();
    let mut kernel = b"\x7fELF\x02\x01\x01".to_vec();
    kernel.resize(4096, 0);
    std::fs::write(fake.join("vmlinux"), kernel).unwrap();
    let (_, image) = support::call(&socket, "GET", "/v1/images/debian-bookworm", None).await;
    // A copy: paths inside banger's state are not taken from requests.
    let rootfs = fake.join("rootfs.ext4");
    assert!(std::process::Command::new("cp")
        .arg("--sparse=always")
        .arg(image["rootfs_path"].as_str().unwrap())
        .arg(&rootfs)
        .status()
        .unwrap()
        .success());
    let body =
        json!({"name": "broken", "kernel": fake.join("vmlinux"), "rootfs": rootfs}).to_string();
    let (status, _) = support::call(&socket, "POST", "/v1/images/register", Some(&body)).await;
    assert_eq!(status, 201);
    let (status, err) = support::call(
        &socket,
        "POST",
        "/v1/vms",
        Some(r#"{"name":"c","image":"broken"}"#),
    )
    .await;
    assert_eq!(status, 500, "{err}");
    let message = err["error"]["message"].as_str().unwrap();
    assert!(message.starts_with("vm c failed to start: "), "{message}");
    assert!(message.contains("last vmm log"), "{message}");
    let (_, c) = support::call(&socket, "GET", "/v1/vms/c", None).await;
    assert_eq!(c["state"], "failed");
    let c_id = c["id"].as_str().unwrap().to_string();
    assert_eq!(qemu_pid(&c_id), None);
    // The failed start gave back its tap device, dns record and rules.
    let (_, report) = support::call(&socket, "GET", "/v1/verify", None).await;
    assert_eq!(report["leaks"], json!([]), "{report}");

    // Removal (b still runs: --force) leaves nothing of the vms.
    for vm in ["a", "b?force=true", "c", "d"] {
        let (status, gone) = support::call(&socket, "DELETE", &format!("/v1/vms/{vm}"), None).await;
        assert_eq!(status, 200, "{vm}: {gone}");
    }
    assert_eq!(qemu_pid(&b_id), None);
    for id in [&a_id, &b_id, &c_id, &d_id] {
        assert!(
            !root.path().join("var/lib/banger/vms").join(id).exists(),
            "files of {id} left"
        );
        assert!(
            !root.path().join("run/banger/vms").join(id).exists(),
            "sockets of {id} left"
        );
    }
    kill(Pid::from_raw(daemon.id() as i32), Signal::SIGTERM).unwrap();
    assert!(daemon.wait().unwrap().success());
}
