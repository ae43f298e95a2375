//! The create benchmark's variants that skip the boot: creates restored
//! from the image's warm template, forks of a running VM, and the host
//! memory (sum of the VMM processes' PSS) of N VMs restored from one
//! template against N cold-booted ones, each set idle for a while first.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{create, create_with, daemon, percentile, remove, stop, support};

/// Sum of `Pss:` over the QEMU processes of the daemon at `root`.
fn vmm_pss_kib(root: &Path) -> u64 {
    let needle = root.display().to_string();
    let mut total = 0;
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline);
        if !cmdline.contains("qemu-system") || !cmdline.contains(&needle) {
            continue;
        }
        let rollup =
            std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
        total += rollup
            .lines()
            .find_map(|l| l.strip_prefix("Pss:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or(0);
    }
    total
}

/// N VMs made by `body_of(i)`, idle for `idle`, then their VMMs' PSS.
async fn memory_of(
    socket: &Path,
    root: &Path,
    count: usize,
    idle: Duration,
    tag: &str,
    body_of: impl Fn(&str) -> String,
) -> u64 {
    for i in 0..count {
        let name = format!("{tag}{i}");
        create_with(socket, &body_of(&name)).await;
    }
    tokio::time::sleep(idle).await;
    let pss = vmm_pss_kib(root);
    for i in 0..count {
        remove(socket, &format!("{tag}{i}")).await;
    }
    pss
}

pub struct WarmArgs {
    pub runs: usize,
    pub memory_vms: usize,
    pub idle: Duration,
}

/// Runs the variants under `config` (a daemon with `warm_templates`
/// off, so the template is made once, here).
pub async fn bench(root: &Path, config: PathBuf, a: &WarmArgs) -> Value {
    let (running, socket) = daemon(root, config).await;
    let t = Instant::now();
    let (status, template) =
        support::call(&socket, "POST", "/v1/images/debian-bookworm/warm", None).await;
    assert_eq!(status, 201, "{template}");
    let template_ms = t.elapsed().as_secs_f64() * 1000.0;

    let mut warm = Vec::new();
    let mut warm_stages: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for run in 0..a.runs {
        let name = format!("warm{run}");
        let (total, stages) = create(&socket, &name).await;
        assert!(stages.contains_key("vmm_restore"), "{stages:?}");
        warm.push(total);
        for (k, v) in stages {
            warm_stages.entry(k).or_default().push(v);
        }
        remove(&socket, &name).await;
    }

    // Forks of one running VM (itself cold-booted), once its boot has
    // settled: a VM in use, not one still starting its services.
    create_with(&socket, r#"{"name":"source","cold":true}"#).await;
    let body = json!({ "argv": ["systemctl", "is-system-running", "--wait"] }).to_string();
    let (status, events) = support::call_ndjson(&socket, "/v1/vms/source/exec", &body).await;
    assert_eq!(status, 200, "{events:?}");
    let mut forks = Vec::new();
    for run in 0..a.runs {
        let name = format!("fork{run}");
        let t = Instant::now();
        let (status, made) = support::call(
            &socket,
            "POST",
            "/v1/vms/source/fork",
            Some(&json!({ "name": name }).to_string()),
        )
        .await;
        assert_eq!(status, 201, "{made}");
        forks.push(t.elapsed().as_secs_f64() * 1000.0);
        remove(&socket, &name).await;
    }
    remove(&socket, "source").await;

    let warm_pss = memory_of(&socket, root, a.memory_vms, a.idle, "pssw", |name| {
        json!({ "name": name }).to_string()
    })
    .await;
    let cold_pss = memory_of(&socket, root, a.memory_vms, a.idle, "pssc", |name| {
        json!({ "name": name, "cold": true }).to_string()
    })
    .await;
    stop(running).await;
    json!({
        "template_ms": template_ms,
        "warm": { "p50_ms": percentile(&warm, 0.5), "p90_ms": percentile(&warm, 0.9), "samples_ms": warm,
                  "stages_p50_ms": warm_stages.iter().map(|(k, v)| (k.clone(), percentile(v, 0.5))).collect::<BTreeMap<_, _>>() },
        "fork": { "p50_ms": percentile(&forks, 0.5), "p90_ms": percentile(&forks, 0.9), "samples_ms": forks },
        "memory": { "vms": a.memory_vms, "idle_s": a.idle.as_secs(), "warm_pss_kib": warm_pss, "cold_pss_kib": cold_pss },
    })
}

/// The tables of these variants, next to the cold create's p50.
pub fn print(report: &Value, cold_p50: f64) {
    let f = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    let w = &report["warm_variants"];
    println!("## without a boot");
    println!();
    println!(
        "Method: the same daemon and shape; `POST /v1/images/debian-bookworm/warm` once ({:.0} ms: a boot with its memory in a file, saved once the agent and sshd answer and the guest's boot has settled), then sequential creates of the default shape (restored from the template: the memory file mapped copy-on-write, the disks copied sparse, a new identity) to ssh ready; forks: `POST /v1/vms/source/fork` of one running cold-booted VM, its boot settled (`systemctl is-system-running --wait`), to the copy's ssh ready. Memory: {} VMs restored from the template against {} cold-booted ones, each set idle {} s, then the sum of `Pss:` of their QEMU processes (`/proc/PID/smaps_rollup`).",
        f(&w["template_ms"]),
        w["memory"]["vms"],
        w["memory"]["vms"],
        w["memory"]["idle_s"]
    );
    println!();
    println!("| variant | p50 ms | p90 ms | / cold create p50 |");
    println!("| --- | ---: | ---: | ---: |");
    println!("| cold create (warm tap pool) | {cold_p50:.0} | | 1.00 |");
    for (label, key) in [
        ("create from the warm template", "warm"),
        ("fork of a running vm", "fork"),
    ] {
        println!(
            "| {label} | {:.0} | {:.0} | {:.2} |",
            f(&w[key]["p50_ms"]),
            f(&w[key]["p90_ms"]),
            f(&w[key]["p50_ms"]) / cold_p50
        );
    }
    println!();
    let (warm, cold) = (
        f(&w["memory"]["warm_pss_kib"]),
        f(&w["memory"]["cold_pss_kib"]),
    );
    println!("| {} idle vms | PSS MiB |", w["memory"]["vms"]);
    println!("| --- | ---: |");
    println!("| restored from one template | {:.0} |", warm / 1024.0);
    println!("| cold-booted | {:.0} |", cold / 1024.0);
    println!("| ratio | {:.2} |", warm / cold);
    println!();
    if let Some(stages) = w["warm"]["stages_p50_ms"].as_object() {
        println!("| warm create stage | p50 ms |");
        println!("| --- | ---: |");
        for (k, v) in stages {
            println!("| {k} | {:.0} |", f(v));
        }
        println!();
    }
}
