//! Chaos: lifecycle requests (create, stop, start, rm, snapshot, fork,
//! promote) against a real daemon with real VMs, while bangerd or a
//! random VMM is killed with
//! SIGKILL at a random moment; the daemon is restarted after every kill.
//! After each restart `verify` must find nothing left over and every
//! record must match the processes: a VM recorded running has its VMM,
//! any other has none, no VMM runs for a VM that is not recorded, and no
//! image operation left its staging.
//!
//! `BANGER_CHAOS_CYCLES` (default 3, what CI runs) and
//! `BANGER_CHAOS_SEED` (default: the time) shape a run; `scripts/chaos`
//! runs a long one and prints its table.

use banger_testkit as support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::json;

/// A small deterministic generator (xorshift64*), so a seed replays a run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Every VMM process of this daemon: vm id -> pid (its VMMs are QEMU's,
/// found by their run directory; there are no jails).
fn vmms(run_dir: &Path) -> BTreeMap<String, u32> {
    banger_host::process::banger_vmms(run_dir, Path::new("/nonexistent-jails"))
        .into_iter()
        .map(|(pid, id)| (id, pid))
        .collect()
}

/// What must hold after a restart; returns the broken invariants.
async fn check(socket: &Path, run_dir: &Path, state_dir: &Path) -> Vec<String> {
    let mut broken = Vec::new();
    // What a killed image operation (a promote) staged is gone.
    let staging = state_dir.join("images/.staging");
    let staged = std::fs::read_dir(&staging).map(|d| d.count()).unwrap_or(0);
    if staged > 0 {
        broken.push(format!("{staged} image staging directories left"));
    }
    let (_, report) = support::call(socket, "GET", "/v1/verify", None).await;
    if report["leaks"] != json!([]) {
        broken.push(format!("verify: {}", report["leaks"]));
    }
    let (_, list) = support::call(socket, "GET", "/v1/vms", None).await;
    let running = vmms(run_dir);
    let mut recorded = Vec::new();
    for vm in list["vms"].as_array().unwrap() {
        let id = vm["id"].as_str().unwrap().to_string();
        let state = vm["state"].as_str().unwrap();
        match (state, running.contains_key(&id)) {
            ("running", false) => broken.push(format!("{id} is running without a vmm")),
            ("running", true) | (_, false) => {}
            (other, true) => broken.push(format!("{id} is {other} but its vmm runs")),
        }
        recorded.push(id);
    }
    for id in running.keys() {
        if !recorded.contains(id) {
            broken.push(format!("a vmm runs for {id}, which has no record"));
        }
    }
    broken
}

#[tokio::test(flavor = "multi_thread")]
async fn kills_at_random_moments_leave_records_matching_processes() {
    let Some(guest) = support::guest_binary() else {
        return;
    };
    let Some(ns) = support::NetNs::new("chaos") else {
        return;
    };
    let cycles: u64 = std::env::var("BANGER_CHAOS_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let seed: u64 = std::env::var("BANGER_CHAOS_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        })
        | 1;
    eprintln!("chaos: {cycles} cycles, BANGER_CHAOS_SEED={seed}");
    let mut rng = Rng(seed);
    let root = tempfile::tempdir().unwrap();
    let _cleanup = support::Cleanup(root.path().to_path_buf());
    support::open_to_vm_users(root.path());
    let etc = root.path().join("etc/banger");
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::write(
        etc.join("config.toml"),
        format!(
            "guest_binary = \"{}\"\nwarm_templates = false\n[vm_defaults]\nmemory_mib = 384\nwork_disk_size = \"1G\"\n[network]\ntap_pool_size = 2\nupstream_dns = []\n",
            guest.display()
        ),
    )
    .unwrap();
    support::build_default_image(root.path(), &guest).await;
    let socket = root.path().join("run/banger/bangerd.sock");
    let run_dir = root.path().join("run/banger");
    let mut daemon = support::spawn_daemon(&ns, root.path());
    support::wait_for_socket(&socket).await;

    let started = Instant::now();
    let (mut daemon_kills, mut vmm_kills, mut requests) = (0u32, 0u32, 0u32);
    let mut failures = Vec::new();
    for cycle in 0..cycles {
        // Three names, so a kill can land beside VMs that just run; an
        // operation that fits the VM's record (create when there is none).
        let name = format!("c{}", rng.below(3));
        let (_, list) = support::call(&socket, "GET", "/v1/vms", None).await;
        let exists = list["vms"]
            .as_array()
            .unwrap()
            .iter()
            .any(|vm| vm["name"] == name.as_str());
        let (method, path, body) = match (exists, rng.below(7)) {
            (false, _) => (
                "POST",
                "/v1/vms".to_string(),
                Some(json!({ "name": name, "nat": rng.below(2) == 0 }).to_string()),
            ),
            (true, 0) => ("POST", format!("/v1/vms/{name}/start"), None),
            (true, 1) => ("POST", format!("/v1/vms/{name}/stop"), None),
            (true, 2) => ("POST", format!("/v1/vms/{name}/restart"), None),
            // A kill while the machine is saved (the VM paused) or restored.
            (true, 3) => (
                "POST",
                format!("/v1/vms/{name}/snapshot"),
                Some("{}".to_string()),
            ),
            (true, 4) => (
                "POST",
                format!("/v1/vms/{name}/fork"),
                Some(json!({ "name": format!("{name}-f{cycle}") }).to_string()),
            ),
            // A kill while the VM is paused for its copy, or while the
            // copies are repaired and published.
            (true, 5) => (
                "POST",
                format!("/v1/vms/{name}/promote"),
                Some(json!({ "name": format!("{name}-p{cycle}") }).to_string()),
            ),
            (true, _) => ("DELETE", format!("/v1/vms/{name}?force=true"), None),
        };
        // Most of a create under emulation is the boot: kill within it,
        // or after the request is done.
        let delay = Duration::from_millis(rng.below(6_000));
        // Two in three kills go to a VMM when one runs then.
        let (kill_vmm, pick) = (rng.below(3) != 0, rng.next() as usize);
        requests += 1;
        let request = {
            let socket = socket.clone();
            let path = path.clone();
            tokio::spawn(
                async move { support::try_call(&socket, method, &path, body.as_deref()).await },
            )
        };
        tokio::time::sleep(delay).await;
        // A VMM known at the kill (a new one of this request, or an old one).
        let now: Vec<(String, u32)> = vmms(&run_dir).into_iter().collect();
        let vmm = if kill_vmm && !now.is_empty() {
            Some(now[pick % now.len()].clone())
        } else {
            None
        };
        let kill_daemon = vmm.is_none();
        match &vmm {
            Some((_, pid)) => {
                let _ = kill(Pid::from_raw(*pid as i32), Signal::SIGKILL);
                vmm_kills += 1;
            }
            None => {
                kill(Pid::from_raw(daemon.id() as i32), Signal::SIGKILL).unwrap();
                let _ = daemon.wait();
                daemon_kills += 1;
            }
        }
        let answer = tokio::time::timeout(support::STREAM_DEADLINE, request)
            .await
            .ok()
            .and_then(Result::ok)
            .map(|r| match r {
                Ok((status, body)) if status >= 400 => {
                    format!("{status} {}", body["error"]["message"])
                }
                Ok((status, _)) => status.to_string(),
                Err(_) => "cut off".into(),
            });
        if kill_daemon {
            daemon = support::spawn_daemon(&ns, root.path());
            support::wait_for_socket(&socket).await;
        } else {
            // The daemon reaps a VMM that exited within its check period.
            tokio::time::sleep(Duration::from_millis(2_500)).await;
        }
        let broken = check(&socket, &run_dir, &root.path().join("var/lib/banger")).await;
        eprintln!(
            "cycle {cycle}: {method} {path} ({}), killed {} after {delay:?}: {}",
            answer.unwrap_or_else(|| "no answer".into()),
            match &vmm {
                Some((id, _)) => format!("the vmm of {id}"),
                None => "bangerd".into(),
            },
            if broken.is_empty() {
                "consistent".to_string()
            } else {
                broken.join("; ")
            }
        );
        failures.extend(broken.into_iter().map(|b| format!("cycle {cycle}: {b}")));
    }

    // Everything goes; nothing stays.
    let (_, list) = support::call(&socket, "GET", "/v1/vms", None).await;
    for vm in list["vms"].as_array().unwrap() {
        let id = vm["id"].as_str().unwrap();
        let (status, out) =
            support::call(&socket, "DELETE", &format!("/v1/vms/{id}?force=true"), None).await;
        assert_eq!(status, 200, "{out}");
    }
    let (_, list) = support::call(&socket, "GET", "/v1/snapshots", None).await;
    for snapshot in list["snapshots"].as_array().unwrap() {
        let id = snapshot["id"].as_str().unwrap();
        let (status, out) =
            support::call(&socket, "DELETE", &format!("/v1/snapshots/{id}"), None).await;
        assert_eq!(status, 200, "{out}");
    }
    let (_, list) = support::call(&socket, "GET", "/v1/images", None).await;
    for image in list["images"].as_array().unwrap() {
        if image["source"] == "promote" {
            let id = image["id"].as_str().unwrap();
            let (status, out) =
                support::call(&socket, "DELETE", &format!("/v1/images/{id}"), None).await;
            assert_eq!(status, 200, "{out}");
        }
    }
    let (_, report) = support::call(&socket, "GET", "/v1/verify", None).await;
    let leaks_at_end = report["leaks"].as_array().map(Vec::len).unwrap_or(0);
    assert!(vmms(&run_dir).is_empty(), "vmms left after rm");
    let _ = kill(Pid::from_raw(daemon.id() as i32), Signal::SIGTERM);
    let _ = daemon.wait();

    println!("| cycles | requests | bangerd kills | vmm kills | inconsistencies | leaks at end | seed | time |");
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    println!(
        "| {cycles} | {requests} | {daemon_kills} | {vmm_kills} | {} | {leaks_at_end} | {seed} | {:.0} s |",
        failures.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(failures.is_empty(), "{failures:#?}");
    assert_eq!(leaks_at_end, 0, "{report}");
}
