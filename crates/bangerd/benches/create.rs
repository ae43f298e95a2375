//! Benchmark: `vm create` to SSH ready, as a user meets it, with its
//! variants: the warm TAP pool against none, N creates at once against one
//! after another, and the floor: the same kernel, initramfs and rootfs
//! booted by a bare QEMU command line until its sshd answers; and the
//! creates without a boot (`create/warm.rs`: a warm template, a fork, the
//! memory of VMs restored from one template). Runs inside a network
//! namespace it makes and removes; prints tables with the host details
//! and writes JSON.
//!
//! And promote (`create/promote.rs`): a VM that changed 100 MiB made an
//! image, against a full copy of the base rootfs.
//!
//! cargo bench-create -- [--runs N] [--parallel P] [--memory-vms N]
//!   [--idle SECONDS] [--only promote] [--json FILE]
//! (an alias of `cargo bench -p bangerd --bench create --`)

#[path = "create/promote.rs"]
mod promote;
use banger_testkit as support;
#[path = "create/warm.rs"]
mod warm;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use banger_core::vmm::{AgentChannel, DriveSpec, MachineSpec, NicSpec};
use banger_host::accel::{tsc_khz, KvmFacts, KvmPaths};
use banger_host::image::ext4;
use banger_host::qemu::plan::{qemu_args, AgentTransport, QemuConfig};
use banger_host::ssh::wait_banner;
use banger_host::tools::find_tool;
use serde_json::{json, Value};

pub(crate) fn percentile(values: &[f64], p: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() - 1) as f64 * p).round() as usize]
}

struct Args {
    runs: usize,
    parallel: usize,
    memory_vms: usize,
    idle_s: u64,
    /// Run only this variant (`promote`).
    only: Option<String>,
    json: PathBuf,
}

fn args() -> Args {
    let mut args = Args {
        runs: 5,
        parallel: 3,
        memory_vms: 8,
        idle_s: 60,
        only: None,
        json: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/bench-create.json"),
    };
    let raw: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < raw.len() {
        match raw[i].as_str() {
            "--runs" => args.runs = raw[i + 1].parse().expect("--runs N"),
            "--parallel" => args.parallel = raw[i + 1].parse().expect("--parallel N"),
            "--memory-vms" => args.memory_vms = raw[i + 1].parse().expect("--memory-vms N"),
            "--idle" => args.idle_s = raw[i + 1].parse().expect("--idle SECONDS"),
            "--json" => args.json = PathBuf::from(&raw[i + 1]),
            "--only" => args.only = Some(raw[i + 1].clone()),
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    args
}

fn write_config(root: &Path, name: &str, guest: &Path, extra: &str) -> PathBuf {
    let path = root.join("etc/banger").join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(
        &path,
        format!(
            "guest_binary = \"{}\"\nwarm_templates = false\n[vm_defaults]\nmemory_mib = 512\nvcpus = 2\nwork_disk_size = \"2G\"\nsystem_disk_size = \"1G\"\n{extra}",
            guest.display()
        ),
    )
    .unwrap();
    path
}

pub(crate) use support::daemon::{serve as daemon, shut_down as stop};

/// One create to SSH ready: total ms and stages.
pub(crate) async fn create(socket: &Path, name: &str) -> (f64, BTreeMap<String, f64>) {
    create_with(socket, &format!(r#"{{"name":"{name}"}}"#)).await
}

pub(crate) async fn create_with(socket: &Path, body: &str) -> (f64, BTreeMap<String, f64>) {
    let t = Instant::now();
    let (status, vm) = support::call(socket, "POST", "/v1/vms", Some(body)).await;
    let total = t.elapsed().as_secs_f64() * 1000.0;
    assert_eq!(status, 201, "{vm}");
    let stages = vm["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_string(),
                s["elapsed_ms"].as_f64().unwrap(),
            )
        })
        .collect();
    (total, stages)
}

pub(crate) async fn remove(socket: &Path, name: &str) {
    let (status, _) = support::call(
        socket,
        "DELETE",
        &format!("/v1/vms/{name}?force=true"),
        None,
    )
    .await;
    assert_eq!(status, 200);
}

/// Sequential creates under one config.
async fn variant(
    root: &Path,
    config: PathBuf,
    runs: usize,
    tag: &str,
) -> (Vec<f64>, BTreeMap<String, Vec<f64>>) {
    let (running, socket) = daemon(root, config).await;
    let mut totals = Vec::new();
    let mut stages: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for run in 0..runs {
        let name = format!("{tag}{run}");
        let (total, s) = create(&socket, &name).await;
        totals.push(total);
        for (k, v) in s {
            stages.entry(k).or_default().push(v);
        }
        remove(&socket, &name).await;
    }
    stop(running).await;
    (totals, stages)
}

/// The floor's init: a few lines that set the address and run sshd.
const FLOOR_INIT: &str = "#!/bin/sh
ip addr add 172.30.0.250/24 dev eth0
ip link set eth0 up
mkdir -p /run/sshd
exec /usr/sbin/sshd -D
";

/// The floor: a bare QEMU command line with a NIC (on a bridge of its
/// own) booting the same
/// kernel, initramfs and rootfs with `FLOOR_INIT` as the init (no
/// systemd, no agent, no early services), until sshd's banner.
async fn floor(image: &Value, dir: &Path, run: usize) -> f64 {
    use std::os::unix::fs::PermissionsExt;
    let vm_dir = dir.join(format!("floor-{run}"));
    std::fs::create_dir_all(vm_dir.join("tree/upper/etc")).unwrap();
    std::fs::create_dir_all(vm_dir.join("tree/work")).unwrap();
    std::fs::write(vm_dir.join("tree/upper/etc/hostname"), "floor\n").unwrap();
    let init = vm_dir.join("tree/upper/floor-init");
    std::fs::write(&init, FLOOR_INIT).unwrap();
    std::fs::set_permissions(&init, std::fs::Permissions::from_mode(0o755)).unwrap();
    // A host key made here, as banger does, so sshd does not make its own.
    let ssh = vm_dir.join("tree/upper/etc/ssh");
    std::fs::create_dir_all(ssh.join("sshd_config.d")).unwrap();
    let key = ssh.join("ssh_host_ed25519_key");
    assert!(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .status()
        .unwrap()
        .success());
    std::fs::write(
        ssh.join("sshd_config.d/banger.conf"),
        "HostKey /etc/ssh/ssh_host_ed25519_key\n",
    )
    .unwrap();
    let system = vm_dir.join("system.cow");
    ext4::make_from_dir(
        &vm_dir.join("tree"),
        &system,
        Some(1 << 30),
        "banger-system",
    )
    .await
    .unwrap();
    let work = vm_dir.join("root.ext4");
    std::fs::copy(image["work_seed_path"].as_str().unwrap(), &work).unwrap();
    let tap = format!("floor{run}");
    let ip = |args: &[&str]| {
        assert!(
            Command::new("ip").args(args).status().unwrap().success(),
            "{args:?}"
        )
    };
    // A bridge of its own: banger's drops frames from ports it did not pin.
    let bridge = format!("floorbr{run}");
    ip(&["link", "add", &bridge, "type", "bridge"]);
    ip(&["addr", "add", "172.30.0.1/24", "dev", &bridge]);
    ip(&["link", "set", &bridge, "up"]);
    ip(&["tuntap", "add", "dev", &tap, "mode", "tap"]);
    ip(&["link", "set", &tap, "master", &bridge, "up"]);
    let path = |key: &str| PathBuf::from(image[key].as_str().unwrap());
    let spec = MachineSpec {
        vm_id: format!("floor{run}"),
        vcpus: 2,
        memory_mib: 512,
        kernel: path("vmlinux_path"),
        initrd: Some(path("initrd_path")),
        cmdline: "banger.root=/dev/vda banger.system=/dev/vdb banger.work=/dev/vdc banger.hostname=floor banger.early=off banger.init=/floor-init".into(),
        drives: vec![
            DriveSpec { id: "rootfs".into(), path: path("rootfs_path"), read_only: true },
            DriveSpec { id: "system".into(), path: system, read_only: false },
            DriveSpec { id: "work".into(), path: work, read_only: false },
        ],
        nic: Some(NicSpec { tap: tap.clone(), mac: "06:00:ac:1d:00:fa".into() }),
        agent: AgentChannel { vsock_cid: 3, socket: vm_dir.join("agent.sock") },
        vm_dir: vm_dir.clone(),
        run_dir: vm_dir.clone(),
        memory_file: None,
        shares: Vec::new(),
    };
    let qemu = QemuConfig {
        binary: find_tool("qemu-system-x86_64").unwrap(),
        accel: KvmFacts::probe(&KvmPaths::default()).accel(),
        tsc_khz: tsc_khz(),
        agent: AgentTransport::Serial,
        tcg_tb_size_mib: 64,
        tcg_threads: Default::default(),
        uid_base: Some(bangerd::config::DEFAULT_VMM_UID_BASE),
    };
    let args = qemu_args(&spec, &qemu).unwrap();
    let t = Instant::now();
    let mut child = tokio::process::Command::new(&qemu.binary)
        .args(&args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    wait_banner("172.30.0.250:22".parse().unwrap(), Duration::from_secs(180))
        .await
        .unwrap();
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    let _ = child.kill().await;
    ip(&["link", "del", &tap]);
    ip(&["link", "del", &bridge]);
    let _ = std::fs::remove_dir_all(&vm_dir);
    ms
}

async fn bench(root: &Path, guest: &Path, a: &Args, image: Value) -> Value {
    let promote_config = write_config(
        root,
        "promote.toml",
        guest,
        "[network]\ntap_pool_size = 0\nupstream_dns = []\n",
    );
    let promote_variant = promote::bench(root, promote_config, a.runs, 100).await;
    if a.only.as_deref() == Some("promote") {
        return json!({ "promote_variant": promote_variant });
    }
    let with_pool = write_config(
        root,
        "pool.toml",
        guest,
        "[network]\ntap_pool_size = 4\nupstream_dns = []\n",
    );
    let no_pool = write_config(
        root,
        "nopool.toml",
        guest,
        "[network]\ntap_pool_size = 0\nupstream_dns = []\n",
    );
    let (pool_totals, pool_stages) = variant(root, with_pool.clone(), a.runs, "pool").await;
    let (nopool_totals, nopool_stages) = variant(root, no_pool, a.runs, "nopool").await;

    // An image of the same files without a work seed: /root made from scratch.
    let (running, socket) = daemon(root, with_pool.clone()).await;
    // Register takes files from outside banger's own directories: copies.
    let files = root.join("noseed-files");
    std::fs::create_dir_all(&files).unwrap();
    let copy = |key: &str| {
        let to = files.join(key);
        assert!(Command::new("cp")
            .arg("--sparse=always")
            .arg(image[key].as_str().unwrap())
            .arg(&to)
            .status()
            .unwrap()
            .success());
        to
    };
    let body = json!({
        "name": "noseed",
        "kernel": copy("vmlinux_path"),
        "initrd": copy("initrd_path"),
        "rootfs": copy("rootfs_path"),
        "no_work_seed": true,
    })
    .to_string();
    let (status, registered) =
        support::call(&socket, "POST", "/v1/images/register", Some(&body)).await;
    assert_eq!(status, 201, "{registered}");
    let mut noseed_totals = Vec::new();
    let mut noseed_stages: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for run in 0..a.runs {
        let name = format!("noseed{run}");
        let body = format!(r#"{{"name":"{name}","image":"noseed"}}"#);
        let (total, stages) = create_with(&socket, &body).await;
        noseed_totals.push(total);
        for (k, v) in stages {
            noseed_stages.entry(k).or_default().push(v);
        }
        remove(&socket, &name).await;
    }
    stop(running).await;

    // N at once against N one after another.
    let (running, socket) = daemon(root, with_pool).await;
    let t = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..a.parallel {
        let socket = socket.clone();
        tasks.push(tokio::spawn(async move {
            create(&socket, &format!("par{i}")).await
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let parallel_wall = t.elapsed().as_secs_f64() * 1000.0;
    for i in 0..a.parallel {
        remove(&socket, &format!("par{i}")).await;
    }
    let t = Instant::now();
    for i in 0..a.parallel {
        create(&socket, &format!("seq{i}")).await;
    }
    let sequential_wall = t.elapsed().as_secs_f64() * 1000.0;
    for i in 0..a.parallel {
        remove(&socket, &format!("seq{i}")).await;
    }
    stop(running).await;

    let warm_variants = warm::bench(
        root,
        write_config(
            root,
            "warm.toml",
            guest,
            "[network]\ntap_pool_size = 4\nupstream_dns = []\n",
        ),
        &warm::WarmArgs {
            runs: a.runs,
            memory_vms: a.memory_vms,
            idle: Duration::from_secs(a.idle_s),
        },
    )
    .await;

    let mut floors = Vec::new();
    for run in 0..a.runs {
        floors.push(floor(&image, root, run).await);
    }
    let p50s = |stages: &BTreeMap<String, Vec<f64>>| {
        stages
            .iter()
            .map(|(k, v)| (k.clone(), percentile(v, 0.5)))
            .collect::<BTreeMap<_, _>>()
    };
    json!({
        "runs": a.runs,
        "parallel": a.parallel,
        "banger": { "p50_ms": percentile(&pool_totals, 0.5), "p90_ms": percentile(&pool_totals, 0.9), "samples_ms": pool_totals,
                    "stages_p50_ms": p50s(&pool_stages) },
        "no_tap_pool": { "p50_ms": percentile(&nopool_totals, 0.5), "p90_ms": percentile(&nopool_totals, 0.9), "samples_ms": nopool_totals,
                         "stages_p50_ms": p50s(&nopool_stages) },
        "no_work_seed": { "p50_ms": percentile(&noseed_totals, 0.5), "p90_ms": percentile(&noseed_totals, 0.9), "samples_ms": noseed_totals,
                          "stages_p50_ms": p50s(&noseed_stages) },
        "floor": { "p50_ms": percentile(&floors, 0.5), "p90_ms": percentile(&floors, 0.9), "samples_ms": floors },
        "parallel_wall_ms": parallel_wall,
        "sequential_wall_ms": sequential_wall,
        "warm_variants": warm_variants,
        "promote_variant": promote_variant,
    })
}

fn main() {
    let a = args();
    let guest = support::guest_binary().expect("the guest binary");
    let root = tempfile::tempdir().unwrap();
    // The image is built here, where the Debian mirror is reachable.
    let image = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(support::build_default_image(root.path(), &guest));
    let file = |path: &Option<PathBuf>| path.as_ref().map(|p| p.display().to_string());
    let image = json!({
        "kernel_path": image.kernel_path.display().to_string(),
        "vmlinux_path": file(&image.vmlinux_path),
        "initrd_path": file(&image.initrd_path),
        "rootfs_path": image.rootfs_path.display().to_string(),
        "work_seed_path": file(&image.work_seed_path),
    });
    let ns = support::NetNs::new("bench").expect("a network namespace");
    let _cleanup = support::Cleanup(root.path().to_path_buf());
    let result = support::in_netns(&ns, || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(bench(root.path(), &guest, &a, image))
    });
    let mut report = result;
    let accel = format!("{:?}", KvmFacts::probe(&KvmPaths::default()).accel());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    report["host"] = json!({ "cpus": cpus, "accel": accel, "kernel": kernel });

    promote::print(&report);
    if a.only.is_some() {
        std::fs::write(&a.json, serde_json::to_string_pretty(&report).unwrap()).unwrap();
        println!("json: {}", a.json.display());
        return;
    }
    let ms = |v: &Value| format!("{:.0}", v.as_f64().unwrap_or(0.0));
    println!("## vm create to ssh ready");
    println!();
    println!("Host: {cpus} cpus, kernel {kernel}, accelerator {accel}.");
    println!(
        "Method: in-process daemon in a network namespace, default image already built, 2 vcpus, 512 MiB; {} sequential creates per variant (each removed after), p50/p90 of the wall time of `POST /v1/vms` (returns once sshd answered). Floor: the same kernel, initramfs, rootfs and a NIC on the bridge, booted by a bare QEMU command line with a five-line script as init that sets the address and runs sshd (an ed25519 host key put in its system disk, as banger does; no systemd, no agent), until sshd's banner. The guest stages are the guest's own clock (kernel start to banger-init, banger-init to the image's init, on to the agent's answer) and ssh_ready is the agent's answer to sshd's banner. No work seed: the same files registered with `no_work_seed`, so /root is made from scratch.",
        a.runs
    );
    println!();
    println!("| variant | p50 ms | p90 ms |");
    println!("| --- | ---: | ---: |");
    for (label, key) in [
        ("banger (warm tap pool)", "banger"),
        ("banger, no tap pool", "no_tap_pool"),
        ("banger, no work seed", "no_work_seed"),
        ("bare qemu floor", "floor"),
    ] {
        println!(
            "| {label} | {} | {} |",
            ms(&report[key]["p50_ms"]),
            ms(&report[key]["p90_ms"])
        );
    }
    println!();
    println!("| stage, p50 ms | warm tap pool | no tap pool | no work seed |");
    println!("| --- | ---: | ---: | ---: |");
    if let Some(stages) = report["banger"]["stages_p50_ms"].as_object() {
        for (k, v) in stages {
            println!(
                "| {k} | {} | {} | {} |",
                ms(v),
                ms(&report["no_tap_pool"]["stages_p50_ms"][k]),
                ms(&report["no_work_seed"]["stages_p50_ms"][k])
            );
        }
    }
    println!();
    let f = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    let banger = f(&report["banger"]["p50_ms"]);
    let kernel = f(&report["banger"]["stages_p50_ms"]["guest_kernel_to_init"]);
    println!(
        "| ratio | value |\n| --- | ---: |\n| create to ssh ready / bare qemu floor | {:.2} |\n| create to ssh ready / guest kernel to init | {:.2} |\n| one after another / {} at once | {:.2} |",
        banger / f(&report["floor"]["p50_ms"]),
        banger / kernel,
        a.parallel,
        f(&report["sequential_wall_ms"]) / f(&report["parallel_wall_ms"]),
    );
    println!();
    println!(
        "{} creates at once: {} ms wall; one after another: {} ms.",
        a.parallel,
        ms(&report["parallel_wall_ms"]),
        ms(&report["sequential_wall_ms"]),
    );
    warm::print(&report, banger);
    std::fs::write(&a.json, serde_json::to_string_pretty(&report).unwrap()).unwrap();
    println!("json: {}", a.json.display());
}
