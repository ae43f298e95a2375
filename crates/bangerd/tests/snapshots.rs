//! Snapshots of real VMs under QEMU (TCG where KVM is not usable),
//! through a real bangerd and its API, checked from inside the guests: a
//! file written and a process started before `vm snapshot` are in a VM
//! created from it and a write after it is not; two forks are machines of
//! their own (address, MAC, hostname, SSH host key the host's ssh
//! accepts, machine-id, random bytes, a clock set from the host) and
//! reach each other by `NAME.vm`; the warm template the first cold create
//! makes in the background serves a create of its shape by a restore;
//! refusals change nothing; removing every VM and
//! snapshot leaves `verify` clean and the image removable.

use banger_testkit as support;

use std::collections::HashSet;

use serde_json::{json, Value};

/// What a guest says about itself, one fact per line.
const FACTS: &str = "hostname; cat /etc/hostname; cat /etc/machine-id; \
    cut -d' ' -f2 /etc/ssh/ssh_host_ed25519_key.pub; cat /sys/class/net/eth0/address; \
    hostname -I | cut -d' ' -f1; date +%s; head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \\n'; echo";

#[derive(Debug)]
struct Facts {
    hostname: String,
    etc_hostname: String,
    machine_id: String,
    host_key: String,
    mac: String,
    ip: String,
    clock: i64,
    random: String,
    /// The host's clock just before the exec that read the guest's and
    /// just after its answer: the guest's reading was taken in between.
    host_window: (i64, i64),
}

impl Facts {
    /// How far the guest's clock was outside the host's while it was
    /// read (0 when inside), in seconds.
    fn clock_off(&self) -> i64 {
        let (before, after) = self.host_window;
        if self.clock < before {
            self.clock - before
        } else if self.clock > after {
            self.clock - after
        } else {
            0
        }
    }
}

async fn facts(socket: &std::path::Path, vm: &str) -> Facts {
    let before = now();
    let (code, out, err) = support::sh(socket, vm, FACTS).await;
    let after = now();
    assert_eq!(code, 0, "{vm}: {err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 8, "{vm}: {out}");
    Facts {
        hostname: lines[0].into(),
        etc_hostname: lines[1].into(),
        machine_id: lines[2].into(),
        host_key: lines[3].into(),
        mac: lines[4].into(),
        ip: lines[5].into(),
        clock: lines[6].parse().unwrap(),
        random: lines[7].into(),
        host_window: (before, after),
    }
}

fn stages(vm: &Value) -> Vec<String> {
    vm["create_stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect()
}

/// Every VM's `vmm.log`, for failure messages.
fn vmm_logs(root: &std::path::Path) -> String {
    let mut text = String::new();
    if let Ok(dirs) = std::fs::read_dir(root.join("var/lib/banger/vms")) {
        for dir in dirs.flatten() {
            let log = std::fs::read_to_string(dir.path().join("vmm.log")).unwrap_or_default();
            text.push_str(&format!("{}: {log}\n", dir.file_name().to_string_lossy()));
        }
    }
    text
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Every fact that makes a machine itself differs between `a` and `b`.
fn distinct(a: &Facts, b: &Facts) {
    assert_ne!(a.hostname, b.hostname);
    assert_ne!(a.machine_id, b.machine_id);
    assert_ne!(a.host_key, b.host_key);
    assert_ne!(a.mac, b.mac);
    assert_ne!(a.ip, b.ip);
    assert_ne!(a.random, b.random, "two guests drew the same random bytes");
}

#[tokio::test(flavor = "multi_thread")]
async fn snapshots_forks_and_templates_make_new_machines() {
    let Some(guest) = support::guest_binary() else {
        return;
    };
    let Some(ns) = support::NetNs::new("snap") else {
        return;
    };
    let served = support::vm_daemon(&ns, &guest, "", true).await;
    let (root, socket) = (&served.root, served.socket.clone());
    let mut daemon = served.process;
    let call = |method: &'static str, path: String, body: Option<Value>| {
        let socket = socket.clone();
        async move { support::call_json(&socket, method, &path, body).await }
    };

    // The source: a file on the work disk and one on the overlay, and a
    // process whose only trace is in memory.
    let (status, src) = call("POST", "/v1/vms".into(), Some(json!({"name": "src"}))).await;
    assert_eq!(status, 201, "{src}");
    let (code, pid, err) = support::sh(
        &socket,
        "src",
        "echo before > /root/before.txt; echo overlay > /etc/marker; \
         setsid sh -c 'echo $$ > /run/ticker.pid; exec sleep 100000' </dev/null >/dev/null 2>&1 & \
         sleep 0.5; cat /run/ticker.pid",
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let source = facts(&socket, "src").await;

    let (status, snapshot) = call(
        "POST",
        "/v1/vms/src/snapshot".into(),
        Some(json!({"name": "s1"})),
    )
    .await;
    assert_eq!(status, 201, "{snapshot} {}", vmm_logs(root.path()));
    assert_eq!(snapshot["kind"], "user");
    assert_eq!(snapshot["source_vm"], "src");
    let (code, _, err) = support::sh(&socket, "src", "echo after > /root/after.txt").await;
    assert_eq!(code, 0, "the source runs on after its snapshot: {err}");

    // Refusals change nothing.
    let (status, err) = call(
        "POST",
        "/v1/vms".into(),
        Some(json!({"name": "x", "from": "s1", "vcpus": 1})),
    )
    .await;
    assert_eq!(status, 422, "{err}");
    assert!(err["error"]["hint"].is_string(), "{err}");
    let (status, err) = call(
        "POST",
        "/v1/vms".into(),
        Some(json!({"name": "x", "from": "nope"})),
    )
    .await;
    assert_eq!(status, 404, "{err}");
    let (status, _) = call(
        "POST",
        "/v1/vms".into(),
        Some(json!({"name": "idle", "no_start": true})),
    )
    .await;
    assert_eq!(status, 201);
    let (status, err) = call("POST", "/v1/vms/idle/snapshot".into(), Some(json!({}))).await;
    assert_eq!(status, 409, "{err}");
    let (status, err) = call("POST", "/v1/vms/nope/snapshot".into(), Some(json!({}))).await;
    assert_eq!(status, 404, "{err}");
    let (status, err) = call("DELETE", "/v1/images/debian-bookworm".into(), None).await;
    assert_eq!(status, 409, "{err}");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("snapshot s1"),
        "{err}"
    );
    let (status, _) = call("DELETE", "/v1/vms/idle".into(), None).await;
    assert_eq!(status, 200);
    let (_, list) = call("GET", "/v1/snapshots".into(), None).await;
    let users = list["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["kind"] == "user")
        .count();
    assert_eq!(users, 1, "{list}");

    // A VM from the snapshot: the snapshot's files and process, not the
    // later write, and a machine of its own.
    let (status, copy) = call(
        "POST",
        "/v1/vms".into(),
        Some(json!({"name": "copy", "from": "s1"})),
    )
    .await;
    assert_eq!(status, 201, "{copy} {}", vmm_logs(root.path()));
    let stages_of_copy = stages(&copy);
    for stage in ["vmm_restore", "agent_ready", "identity", "ssh_ready"] {
        assert!(
            stages_of_copy.iter().any(|s| s == stage),
            "{stages_of_copy:?}"
        );
    }
    assert!(!stages_of_copy.iter().any(|s| s == "vmm_start"));
    let (code, out, err) = support::sh(
        &socket,
        "copy",
        &format!(
            "cat /root/before.txt /etc/marker; test -e /root/after.txt || echo no-after; \
             kill -0 {} && echo alive",
            pid.trim()
        ),
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "before\noverlay\nno-after\nalive\n");
    let copied = facts(&socket, "copy").await;
    assert_eq!(copied.hostname, "copy");
    assert_eq!(copied.etc_hostname, "copy");
    assert_eq!(copied.ip, copy["guest_ip"].as_str().unwrap());
    distinct(&source, &copied);
    // Seconds are whole on both sides: one of slack.
    assert!(
        copied.clock_off().abs() <= 1,
        "the guest's clock is {} s off the host's while it was read",
        copied.clock_off()
    );

    // The host's ssh accepts the copy's new host key with strict checking.
    let (_, ssh) = call("GET", "/v1/ssh".into(), None).await;
    let out = ns
        .command("ssh")
        .args([
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
        ])
        .arg(format!(
            "UserKnownHostsFile={}",
            ssh["known_hosts_file"].as_str().unwrap()
        ))
        .arg("-i")
        .arg(ssh["identity_file"].as_str().unwrap())
        .arg(format!("root@{}", copied.ip))
        .arg("cat /etc/hostname")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ssh to the copy: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "copy\n");

    // Two forks of the running source: each its own machine, and they
    // reach each other by name.
    let (status, forked) = call(
        "POST",
        "/v1/vms/src/fork".into(),
        Some(json!({"count": 2, "name": "f"})),
    )
    .await;
    assert_eq!(status, 201, "{forked} {}", vmm_logs(root.path()));
    let names: Vec<&str> = forked["vms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["f-1", "f-2"]);
    let f1 = facts(&socket, "f-1").await;
    let f2 = facts(&socket, "f-2").await;
    distinct(&f1, &f2);
    distinct(&f1, &source);
    distinct(&f2, &copied);
    let (code, out, err) = support::sh(
        &socket,
        "f-1",
        // Retried as in the network test: a first lookup or connect under
        // emulation, with four VMs sharing two cores, may time out.
        "for i in $(seq 1 10); do timeout 10 bash -c 'exec 3<>/dev/tcp/f-2.vm/22; head -c 7 <&3' && exit 0; sleep 1; done; exit 1",
    )
    .await;
    assert_eq!((code, out.as_str()), (0, "SSH-2.0"), "{err}");
    let (_, after, _) = support::sh(&socket, "f-1", "cat /root/after.txt").await;
    assert_eq!(after, "after\n", "a fork is the source as it is now");
    let (_, list) = call("GET", "/v1/snapshots".into(), None).await;
    assert!(
        !list["snapshots"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["kind"] == "fork"),
        "the fork's own snapshot is gone: {list}"
    );

    // The first cold create made the image's warm template in the
    // background (`warm_templates` is on by default); a create of its
    // shape restores it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    let template = loop {
        let (status, template) =
            call("GET", "/v1/snapshots/debian-bookworm.warm".into(), None).await;
        if status == 200 {
            break template;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no warm template after the first create: {template}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    };
    assert_eq!(template["kind"], "template");
    assert_eq!(template["memory_file"], true);
    let (status, warm) = call("POST", "/v1/vms".into(), Some(json!({"name": "warm"}))).await;
    assert_eq!(status, 201, "{warm}");
    assert!(stages(&warm).iter().any(|s| s == "vmm_restore"), "{warm}");
    // The template was saved once the guest's boot had settled: a VM
    // restored from it is not still finishing that boot.
    let (_, state, _) = support::sh(&socket, "warm", "systemctl is-system-running").await;
    assert!(
        ["running", "degraded"].contains(&state.trim()),
        "a restored guest still booting: {state}"
    );
    let warmed = facts(&socket, "warm").await;
    assert_eq!(warmed.hostname, "warm");
    assert!(
        warmed.clock_off().abs() <= 1,
        "the guest's clock is {} s off the host's while it was read",
        warmed.clock_off()
    );
    let (code, _, err) = support::sh(&socket, "warm", "echo ok > /root/mine.txt").await;
    assert_eq!(code, 0, "{err}");
    // A VM restored from the template forks like any other: its QEMU
    // came up from a memory file, its fork does not.
    let (status, forked) = call(
        "POST",
        "/v1/vms/warm/fork".into(),
        Some(json!({"count": 1, "name": "warmfork"})),
    )
    .await;
    assert_eq!(status, 201, "{forked} {}", vmm_logs(root.path()));
    let (code, mine, err) = support::sh(&socket, "warmfork", "cat /root/mine.txt").await;
    assert_eq!((code, mine.as_str()), (0, "ok\n"), "{err}");

    // Everything removed: nothing left behind, the image removable.
    let (_, vms) = call("GET", "/v1/vms".into(), None).await;
    let mut seen = HashSet::new();
    for vm in vms["vms"].as_array().unwrap() {
        let name = vm["name"].as_str().unwrap().to_string();
        assert!(seen.insert(vm["guest_ip"].to_string()), "{vms}");
        let (status, body) = call("DELETE", format!("/v1/vms/{name}?force=true"), None).await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, body) = call("DELETE", "/v1/snapshots/s1".into(), None).await;
    assert_eq!(status, 200, "{body}");
    let (status, verify) = call("GET", "/v1/verify".into(), None).await;
    assert_eq!(status, 200, "{verify}");
    assert_eq!(verify["leaks"], json!([]), "{verify}");
    let (status, body) = call("DELETE", "/v1/images/debian-bookworm".into(), None).await;
    assert_eq!(status, 200, "{body}");
    let left: Vec<_> = std::fs::read_dir(root.path().join("var/lib/banger/snapshots"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name())
                .filter(|n| n != ".staging")
                .collect()
        })
        .unwrap_or_default();
    assert!(left.is_empty(), "snapshot files left: {left:?}");
    let _ = daemon.kill();
    let _ = daemon.wait();
}
