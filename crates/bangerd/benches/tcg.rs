//! Benchmark: how QEMU's TCG (software emulation, the path of hosts
//! without usable KVM) best runs banger's guests. Per variant (TCG
//! threads and vCPUs), ROUNDS rounds of two VMs created side by side
//! (two VMs on a two-core host is where guests were seen in soft
//! lockup), each then running a load that churns memory and processes;
//! the consoles are searched for the kernel's lockup and stall reports.
//! Variants are interleaved round by round, so drift hits each alike.
//!
//! cargo bench -p bangerd --bench tcg -- [ROUNDS]
//!
//! Needs QEMU, the Debian mirror (the default image is built first) and
//! the guest binary (BANGER_GUEST_BINARY or scripts/build-guest's
//! output). On a host with usable KVM it measures nothing of TCG and
//! says so.

use banger_testkit as support;

use std::path::{Path, PathBuf};
use std::time::Instant;

use banger_host::accel::{Accel, KvmFacts, KvmPaths};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde_json::json;

/// What the guests run once up: pages touched and freed, processes
/// forked, the page cache filled (what the memory-management lockups
/// were seen in).
const LOAD: &str = "for i in 1 2 3; do head -c 64M /dev/urandom | sha256sum >/dev/null; done; \
     for i in $(seq 1 200); do /bin/true; done; \
     systemctl is-system-running --wait >/dev/null; echo done";

/// What a guest kernel prints when a CPU stops making progress.
const REPORTS: [&str; 4] = [
    "soft lockup",
    "hard LOCKUP",
    "rcu_sched self-detected stall",
    "rcu: INFO: rcu_sched detected stalls",
];

struct Variant {
    name: &'static str,
    threads: &'static str,
    vcpus: u32,
    root: tempfile::TempDir,
    creates_ms: Vec<f64>,
    loads_ms: Vec<f64>,
    reports: usize,
    failures: usize,
}

fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// Lockup and stall reports in every console under `root`.
fn reports_in(root: &Path) -> usize {
    let vms = root.join("var/lib/banger/vms");
    let Ok(dirs) = std::fs::read_dir(vms) else {
        return 0;
    };
    let mut found = 0;
    for dir in dirs.flatten() {
        let text = std::fs::read_to_string(dir.path().join("serial.log")).unwrap_or_default();
        for line in text.lines() {
            if REPORTS.iter().any(|r| line.contains(r)) {
                eprintln!("{}: {line}", dir.path().display());
                found += 1;
            }
        }
    }
    found
}

/// One round of a variant: two VMs created at once, the load in both.
async fn round(variant: &mut Variant, run: usize) {
    let config = variant.root.path().join("etc/banger/config.toml");
    let (running, socket) = support::daemon::serve(variant.root.path(), config).await;
    let names = [format!("t{run}a"), format!("t{run}b")];
    let create = |name: &str| {
        let socket = socket.clone();
        let body = json!({ "name": name }).to_string();
        async move {
            let start = Instant::now();
            let (status, vm) = support::call(&socket, "POST", "/v1/vms", Some(&body)).await;
            (status, vm, start.elapsed().as_secs_f64() * 1000.0)
        }
    };
    let (a, b) = tokio::join!(create(&names[0]), create(&names[1]));
    for (status, vm, ms) in [a, b] {
        if status == 201 {
            variant.creates_ms.push(ms);
        } else {
            eprintln!("{}: create failed: {vm}", variant.name);
            variant.failures += 1;
        }
    }
    let load = |name: &str| {
        let socket = socket.clone();
        let path = format!("/v1/vms/{name}/exec");
        let body = json!({ "argv": ["sh", "-c", LOAD] }).to_string();
        async move {
            let start = Instant::now();
            let (_, events) = support::call_ndjson(&socket, &path, &body).await;
            let out: Vec<u8> = events
                .iter()
                .filter(|e| e["type"] == "stdout")
                .flat_map(|e| {
                    B64.decode(e["data"].as_str().unwrap_or(""))
                        .unwrap_or_default()
                })
                .collect();
            (
                String::from_utf8_lossy(&out).contains("done"),
                start.elapsed().as_secs_f64() * 1000.0,
            )
        }
    };
    let (a, b) = tokio::join!(load(&names[0]), load(&names[1]));
    for (done, ms) in [a, b] {
        if done {
            variant.loads_ms.push(ms);
        } else {
            variant.failures += 1;
        }
    }
    variant.reports += reports_in(variant.root.path());
    for name in &names {
        support::call(
            &socket,
            "DELETE",
            &format!("/v1/vms/{name}?force=true"),
            None,
        )
        .await;
    }
    support::daemon::shut_down(running).await;
}

fn main() {
    let rounds: usize = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .and_then(|a| a.parse().ok())
        .unwrap_or(10);
    let guest = support::guest_binary().expect("the guest binary");
    let accel = KvmFacts::probe(&KvmPaths::default()).accel();
    if let Accel::Kvm = accel {
        println!("this host has usable KVM: TCG's variants are not what its VMs run");
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut variants: Vec<Variant> = [
        ("multi-thread, 2 vcpus", "multi", 2),
        ("single-thread, 2 vcpus", "single", 2),
        ("multi-thread, 1 vcpu", "multi", 1),
    ]
    .into_iter()
    .map(|(name, threads, vcpus)| {
        let root = tempfile::tempdir().unwrap();
        support::open_to_vm_users(root.path());
        support::daemon::write_vm_config(
            root.path(),
            &guest,
            &format!(
                "warm_templates = false\ntcg_threads = \"{threads}\"\n[network]\nenabled = false\n"
            ),
            &format!("vcpus = {vcpus}\n"),
        );
        runtime.block_on(support::build_default_image(root.path(), &guest));
        Variant {
            name,
            threads,
            vcpus,
            root,
            creates_ms: Vec::new(),
            loads_ms: Vec::new(),
            reports: 0,
            failures: 0,
        }
    })
    .collect();
    for run in 0..rounds {
        for variant in &mut variants {
            let _cleanup = support::Cleanup(PathBuf::from(variant.root.path()));
            runtime.block_on(round(variant, run));
            eprintln!(
                "round {run} {}: {} reports, {} failures so far",
                variant.name, variant.reports, variant.failures
            );
        }
    }
    println!("## TCG: threads and vcpus");
    println!();
    println!("Method: accel {accel:?}; per variant {rounds} rounds of two VMs (512 MiB, the default image, no network) created at once, then in both at once: 192 MiB of /dev/urandom hashed, 200 processes forked, `systemctl is-system-running --wait`; variants interleaved round by round; the consoles searched for soft lockup, hard LOCKUP and RCU stall reports. Create: `POST /v1/vms` to a ready agent, p50 over both VMs of every round. Load: the exec, p50.");
    println!();
    println!("| variant | tcg thread | vcpus | VMs | create p50 | load p50 | lockup/stall reports | failures |");
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    for v in &variants {
        println!(
            "| {} | {} | {} | {} | {:.0} ms | {:.0} ms | {} | {} |",
            v.name,
            v.threads,
            v.vcpus,
            rounds * 2,
            median(&v.creates_ms),
            median(&v.loads_ms),
            v.reports,
            v.failures
        );
    }
}
