//! The create benchmark's promote variant: a running VM of the default
//! image writes N MiB into its overlay, then, one after another, a full
//! copy of the image's rootfs to disk (`cp --sparse=always` and an
//! `fsync`: the floor) against `POST /v1/vms/src/promote` (each promoted
//! image removed after).

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use serde_json::{json, Value};

use super::{create_with, daemon, percentile, remove, stop, support};

pub async fn bench(root: &Path, config: std::path::PathBuf, runs: usize, mib: u64) -> Value {
    let (running, socket) = daemon(root, config).await;
    create_with(&socket, r#"{"name":"src"}"#).await;
    let script = format!("head -c {mib}M /dev/urandom > /opt/blob && sync");
    let body = json!({ "argv": ["sh", "-c", script] }).to_string();
    let (status, events) = support::call_ndjson(&socket, "/v1/vms/src/exec", &body).await;
    assert_eq!(status, 200, "{events:?}");
    assert!(
        events.iter().any(|e| e["type"] == "exit" && e["code"] == 0),
        "{events:?}"
    );
    let (_, image) = support::call(&socket, "GET", "/v1/images/debian-bookworm", None).await;
    let rootfs = image["rootfs_path"].as_str().unwrap().to_string();
    let (mut floor, mut promote) = (Vec::new(), Vec::new());
    for run in 0..runs {
        let copy = root.join(format!("rootfs-copy-{run}"));
        let t = Instant::now();
        assert!(Command::new("cp")
            .arg("--sparse=always")
            .arg(&rootfs)
            .arg(&copy)
            .status()
            .unwrap()
            .success());
        std::fs::File::open(&copy).unwrap().sync_all().unwrap();
        floor.push(t.elapsed().as_secs_f64() * 1000.0);
        std::fs::remove_file(&copy).unwrap();

        let name = format!("promoted{run}");
        let t = Instant::now();
        let (status, made) = support::call(
            &socket,
            "POST",
            "/v1/vms/src/promote",
            Some(&json!({ "name": name }).to_string()),
        )
        .await;
        promote.push(t.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(status, 201, "{made}");
        let (status, _) =
            support::call(&socket, "DELETE", &format!("/v1/images/{name}"), None).await;
        assert_eq!(status, 200);
    }
    remove(&socket, "src").await;
    stop(running).await;
    let rootfs_bytes = std::fs::metadata(&rootfs).map(|m| m.len()).unwrap_or(0);
    json!({
        "mib": mib,
        "rootfs_bytes": rootfs_bytes,
        "floor": { "p50_ms": percentile(&floor, 0.5), "samples_ms": floor },
        "promote": { "p50_ms": percentile(&promote, 0.5), "samples_ms": promote },
    })
}

pub fn print(report: &Value) {
    let p = &report["promote_variant"];
    if p.is_null() {
        return;
    }
    let f = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    println!("## promote");
    println!();
    println!(
        "Method: one running VM of the default image (512 MiB, 2 vcpus) that wrote {} MiB of random bytes into /opt; then, {} times in turn, the floor: a full copy of the image's rootfs ({} MiB apparent) with `cp --sparse=always` and an fsync of the copy, and `POST /v1/vms/src/promote` to 201 (the guest synced, paused for the copy of its disks, resumed; repair, scrub, links, digests, publication), the promoted image removed after each.",
        p["mib"],
        p["promote"]["samples_ms"].as_array().map_or(0, Vec::len),
        p["rootfs_bytes"].as_u64().unwrap_or(0) >> 20
    );
    println!();
    println!("| variant | p50 ms | / full rootfs copy |");
    println!("| --- | ---: | ---: |");
    let floor = f(&p["floor"]["p50_ms"]);
    println!("| full copy of the base rootfs | {floor:.0} | 1.00 |");
    println!(
        "| promote of a vm that changed {} MiB | {:.0} | {:.2} |",
        p["mib"],
        f(&p["promote"]["p50_ms"]),
        f(&p["promote"]["p50_ms"]) / floor
    );
    println!();
}
