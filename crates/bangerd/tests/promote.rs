//! Promote with real VMs under QEMU, through a real bangerd: a running VM
//! that wrote files in /etc, /opt and /root, enabled a systemd unit and
//! deleted a file of its image is promoted while it runs on; two VMs
//! from the new image have all of it and are machines of their own (not
//! the source's host key, machine-id or hostname); the image stands on
//! its parent (lineage, one layer, the parent not removable); refusals
//! and a promote whose client went away change nothing; the image's
//! bundle, pulled by a second daemon under another root, boots there
//! with the same files.

use banger_testkit as support;

use serde_json::{json, Value};

/// What makes a machine itself, one per line.
const IDENTITY: &str = "hostname; cat /etc/machine-id; \
    cut -d' ' -f2 /etc/ssh/ssh_host_ed25519_key.pub";

/// What the source VM leaves in its image, checked in every VM from it.
const CHANGES: &str = "cat /etc/promoted.conf /opt/app/data.txt /root/notes.txt; \
    test ! -e /etc/motd && echo motd-gone; \
    for i in $(seq 1 100); do test -e /run/hello && break; sleep 0.2; done; cat /run/hello";

const EXPECTED: &str = "etc\nopt\nroot\nmotd-gone\nhello from the unit\n";

async fn identity(socket: &std::path::Path, vm: &str) -> Vec<String> {
    let (code, out, err) = support::sh(socket, vm, IDENTITY).await;
    assert_eq!(code, 0, "{vm}: {err}");
    let lines: Vec<String> = out.lines().map(String::from).collect();
    assert_eq!(lines.len(), 3, "{vm}: {out}");
    lines
}

#[tokio::test(flavor = "multi_thread")]
async fn a_promoted_vm_is_an_image_whose_vms_are_new_machines_anywhere() {
    let Some(guest) = support::guest_binary() else {
        return;
    };
    let Some(ns) = support::NetNs::new("promote") else {
        return;
    };
    let primary = support::vm_daemon(&ns, &guest, "warm_templates = false\n", true).await;
    let (root, socket) = (primary.root.path(), primary.socket.clone());
    let mut daemon = primary.process;
    let call = |method: &'static str, path: String, body: Option<Value>| {
        let socket = socket.clone();
        async move { support::call_json(&socket, method, &path, body).await }
    };

    let (status, src) = call("POST", "/v1/vms".into(), Some(json!({"name": "src"}))).await;
    assert_eq!(status, 201, "{src}");
    let (code, _, err) = support::sh(
        &socket,
        "src",
        "echo etc > /etc/promoted.conf; mkdir -p /opt/app; echo opt > /opt/app/data.txt; \
         echo root > /root/notes.txt; rm /etc/motd; \
         printf '[Unit]\\nDescription=hello\\n[Service]\\nType=oneshot\\nExecStart=/bin/sh -c \"echo hello from the unit > /run/hello\"\\n[Install]\\nWantedBy=multi-user.target\\n' \
           > /etc/systemd/system/hello.service; \
         systemctl enable hello.service 2>&1",
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let source = identity(&socket, "src").await;

    // Refusals first: they change nothing.
    let (status, err) = call(
        "POST",
        "/v1/vms/nosuch/promote".into(),
        Some(json!({"name": "x"})),
    )
    .await;
    assert_eq!(status, 404, "{err}");
    let (status, err) = call(
        "POST",
        "/v1/vms/src/promote".into(),
        Some(json!({"name": "debian-bookworm"})),
    )
    .await;
    assert_eq!(status, 409, "a taken name: {err}");
    let (status, _) = call(
        "POST",
        "/v1/vms".into(),
        Some(json!({"name": "unborn", "no_start": true})),
    )
    .await;
    assert_eq!(status, 201);
    let (status, err) = call(
        "POST",
        "/v1/vms/unborn/promote".into(),
        Some(json!({"name": "x"})),
    )
    .await;
    assert_eq!(status, 409, "{err}");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("never started"),
        "{err}"
    );
    let (_, images) = call("GET", "/v1/images".into(), None).await;
    assert_eq!(images["images"].as_array().unwrap().len(), 1, "{images}");

    // A promote whose client goes away (Ctrl-C) is cancelled: nothing
    // recorded, no staging left, the VM running (not left paused).
    let first = support::abandon_stream(
        &socket,
        "/v1/vms/src/promote",
        &json!({"name": "cancelled"}).to_string(),
    )
    .await;
    assert_eq!(first["type"], "stage", "{first}");
    let staging = root.join("var/lib/banger/images/.staging");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::fs::read_dir(&staging).map(|d| d.count()).unwrap_or(0) > 0 {
        assert!(std::time::Instant::now() < deadline, "staging left");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let (status, _) = call("GET", "/v1/images/cancelled".into(), None).await;
    assert_eq!(status, 404, "a cancelled promote records nothing");
    let (code, out, _) = support::sh(&socket, "src", "cat /etc/promoted.conf").await;
    assert_eq!((code, out.as_str()), (0, "etc\n"), "the source runs");

    // Promoted while it runs; it runs on, unchanged.
    let (status, image) = call(
        "POST",
        "/v1/vms/src/promote".into(),
        Some(json!({"name": "dev"})),
    )
    .await;
    assert_eq!(status, 201, "{image}");
    assert_eq!(image["source"], "promote");
    assert_eq!(image["lineage"], json!(["debian-bookworm"]));
    assert_eq!(image["layer_paths"].as_array().unwrap().len(), 1, "{image}");
    let (code, out, _) = support::sh(&socket, "src", "cat /etc/promoted.conf").await;
    assert_eq!((code, out.as_str()), (0, "etc\n"), "the source runs on");
    assert_eq!(
        std::fs::read_dir(&staging).map(|d| d.count()).unwrap_or(0),
        0,
        "nothing left in staging"
    );

    // Two VMs from it: the source's changes, their own identities.
    let mut seen = vec![source];
    for vm in ["a1", "a2"] {
        let (status, made) = call(
            "POST",
            "/v1/vms".into(),
            Some(json!({"name": vm, "image": "dev"})),
        )
        .await;
        assert_eq!(status, 201, "{made}");
        let (code, out, err) = support::sh(&socket, vm, CHANGES).await;
        assert_eq!((code, out.as_str()), (0, EXPECTED), "{vm}: {err}");
        let id = identity(&socket, vm).await;
        assert_eq!(id[0], vm);
        for other in &seen {
            for (mine, theirs) in id.iter().zip(other) {
                assert_ne!(mine, theirs, "{vm} shares an identity with another machine");
            }
        }
        seen.push(id);
    }

    // The parent stays while its child is there.
    let (status, err) = call("DELETE", "/v1/images/debian-bookworm".into(), None).await;
    assert_eq!(status, 409, "{err}");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("image dev"),
        "{err}"
    );

    // Its bundle, pulled by another daemon under another root, boots.
    let bundle = root.join("dev.tar.zst");
    let (status, out) = call(
        "POST",
        "/v1/images/dev/export".into(),
        Some(json!({ "file": bundle })),
    )
    .await;
    assert_eq!(status, 200, "{out}");
    for vm in ["a1", "a2", "src", "unborn"] {
        let (status, out) = call("DELETE", format!("/v1/vms/{vm}?force=true"), None).await;
        assert_eq!(status, 200, "{vm}: {out}");
    }
    let _ = daemon.kill();
    let _ = daemon.wait();

    let Some(ns2) = support::NetNs::new("promote2") else {
        return;
    };
    let secondary = support::vm_daemon(&ns2, &guest, "warm_templates = false\n", false).await;
    let (socket2, mut daemon2) = (secondary.socket.clone(), secondary.process);
    let body = json!({ "source": bundle }).to_string();
    let (status, pulled) = support::call(&socket2, "POST", "/v1/images/pull", Some(&body)).await;
    assert_eq!(status, 201, "{pulled}");
    assert_eq!(pulled["name"], "dev");
    assert_eq!(pulled["lineage"], json!(["debian-bookworm"]));
    assert_eq!(
        pulled["manifest"]["artifacts"],
        image["manifest"]["artifacts"]
    );
    let body = json!({"name": "b1", "image": "dev"}).to_string();
    let (status, made) = support::call(&socket2, "POST", "/v1/vms", Some(&body)).await;
    assert_eq!(status, 201, "{made}");
    let (code, out, err) = support::sh(&socket2, "b1", CHANGES).await;
    assert_eq!((code, out.as_str()), (0, EXPECTED), "{err}");
    let (status, _) = support::call(&socket2, "DELETE", "/v1/vms/b1?force=true", None).await;
    assert_eq!(status, 200);
    let _ = daemon2.kill();
    let _ = daemon2.wait();
}
