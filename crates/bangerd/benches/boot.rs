//! Benchmark: `vm create` to a ready agent, stage by stage, side by side
//! with the floor: the same kernel, initramfs and disks booted by a bare
//! QEMU command line (no daemon, no disk preparation) until the agent
//! answers. Interleaved runs; medians; the ratio.
//!
//! cargo bench -p bangerd --bench boot -- [RUNS]
//!
//! Needs QEMU, the Debian mirror (the image is built first) and the guest
//! binary (BANGER_GUEST_BINARY or scripts/build-guest's output).

use banger_testkit as support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use banger_core::vmm::{AgentChannel, DriveSpec, MachineSpec};
use banger_host::accel::{tsc_khz, KvmFacts, KvmPaths};
use banger_host::agent::client::AgentClient;
use banger_host::disks::work::clone_from_seed;
use banger_host::image::ext4;
use banger_host::qemu::plan::{qemu_args, AgentTransport, QemuConfig};
use banger_host::tools::find_tool;
use bangerd::config::{Config, Overrides};
use serde_json::Value;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// Boots the image with a bare QEMU command line; ms until the agent answers.
async fn floor(image: &Value, dir: &Path, qemu: &QemuConfig, run: usize) -> f64 {
    let vm_dir = dir.join(format!("floor-{run}"));
    std::fs::create_dir_all(vm_dir.join("tree/upper")).unwrap();
    std::fs::create_dir_all(vm_dir.join("tree/work")).unwrap();
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
    let seed = PathBuf::from(image["work_seed_path"].as_str().unwrap());
    clone_from_seed(&seed, &work, 1 << 30).await.unwrap();
    let path = |key: &str| PathBuf::from(image[key].as_str().unwrap());
    let spec = MachineSpec {
        vm_id: format!("floor{run}"),
        vcpus: 2,
        memory_mib: 512,
        kernel: path("vmlinux_path"),
        initrd: Some(path("initrd_path")),
        cmdline:
            "banger.root=/dev/vda banger.system=/dev/vdb banger.work=/dev/vdc banger.hostname=floor"
                .into(),
        drives: vec![
            DriveSpec {
                id: "rootfs".into(),
                path: path("rootfs_path"),
                read_only: true,
            },
            DriveSpec {
                id: "system".into(),
                path: system,
                read_only: false,
            },
            DriveSpec {
                id: "work".into(),
                path: work,
                read_only: false,
            },
        ],
        nic: None,
        agent: AgentChannel {
            vsock_cid: 3,
            socket: vm_dir.join("agent.sock"),
        },
        vm_dir: vm_dir.clone(),
        run_dir: vm_dir.clone(),
        memory_file: None,
        shares: Vec::new(),
    };
    let args = qemu_args(&spec, qemu).unwrap();
    let started = Instant::now();
    let mut child = tokio::process::Command::new(&qemu.binary)
        .args(&args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let ready = loop {
        if let Ok(stream) = tokio::net::UnixStream::connect(&spec.agent.socket).await {
            let (r, w) = stream.into_split();
            let client = AgentClient::new(r, w);
            let mut answered = None;
            for _ in 0..120 {
                if client.hello(Duration::from_secs(1)).await.is_ok() {
                    answered = Some(started.elapsed());
                    break;
                }
            }
            if let Some(at) = answered {
                break at;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "the floor vm never answered"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let _ = child.kill().await;
    let _ = std::fs::remove_dir_all(&vm_dir);
    ready.as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() {
    let runs: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(5);
    let guest = support::guest_binary().expect("the guest binary");
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("etc/banger")).unwrap();
    std::fs::write(
        root.path().join("etc/banger/config.toml"),
        format!("guest_binary = \"{}\"\nwarm_templates = false\n[network]\nenabled = false\n[vm_defaults]\nmemory_mib = 512\nvcpus = 2\nwork_disk_size = \"1G\"\nsystem_disk_size = \"1G\"\n", guest.display()),
    )
    .unwrap();
    let config = Config::load(&Overrides {
        root: Some(root.path().into()),
        ..Default::default()
    })
    .unwrap();
    let socket = config.socket.clone();
    support::build_default_image(root.path(), &guest).await;
    let running = bangerd::server::start(config).await.unwrap();
    let (status, image) = support::call(&socket, "GET", "/v1/images/debian-bookworm", None).await;
    assert_eq!(status, 200, "{image}");
    let accel = KvmFacts::probe(&KvmPaths::default()).accel();
    let qemu = QemuConfig {
        binary: find_tool("qemu-system-x86_64").expect("qemu-system-x86_64"),
        accel: accel.clone(),
        tsc_khz: tsc_khz(),
        agent: AgentTransport::Serial,
        tcg_tb_size_mib: 64,
        tcg_threads: Default::default(),
        uid_base: Some(bangerd::config::DEFAULT_VMM_UID_BASE),
    };

    let mut stages: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut totals = Vec::new();
    let mut floors = Vec::new();
    for run in 0..runs {
        // Alternate which goes first.
        for step in 0..2 {
            if (run + step) % 2 == 0 {
                let t = Instant::now();
                let body = format!(r#"{{"name":"bench{run}"}}"#);
                let (status, vm) = support::call(&socket, "POST", "/v1/vms", Some(&body)).await;
                totals.push(t.elapsed().as_secs_f64() * 1000.0);
                assert_eq!(status, 201, "{vm}");
                for stage in vm["stages"].as_array().unwrap() {
                    stages
                        .entry(stage["name"].as_str().unwrap().to_string())
                        .or_default()
                        .push(stage["elapsed_ms"].as_f64().unwrap());
                }
                let (status, _) = support::call(
                    &socket,
                    "DELETE",
                    &format!("/v1/vms/bench{run}?force=true"),
                    None,
                )
                .await;
                assert_eq!(status, 200);
            } else {
                floors.push(floor(&image, root.path(), &qemu, run).await);
            }
        }
    }
    let _ = running.shutdown.send(true);
    let _ = running.task.await;

    println!("## vm create to agent ready");
    println!();
    println!(
        "Method: {runs} interleaved runs; median wall time. banger: `POST /v1/vms` on an in-process \
         daemon (image already built; 2 vcpus, 512 MiB; disks made per vm) until the call returns \
         with the agent answering; stages are the daemon's own (host clock) and the guest's \
         (guest clock, from banger-init's timings). Floor: the same kernel, initramfs and disks \
         booted by a bare QEMU command line, timed from spawn until the agent answers hello. \
         Accelerator: {accel:?}. Host: {} cores.",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!();
    println!("| stage | median ms |");
    println!("| --- | ---: |");
    for name in [
        "reserve_vm",
        "system_disk",
        "work_disk",
        "vmm_start",
        "agent_ready",
        "guest_kernel_to_init",
        "guest_init_to_switch_root",
        "guest_switch_root_to_agent",
    ] {
        if let Some(v) = stages.get(name) {
            println!("| {name} | {:.0} |", median(v.clone()));
        }
    }
    let (total, floor) = (median(totals), median(floors));
    println!("| **banger create total** | **{total:.0}** |");
    println!("| **bare qemu floor** | **{floor:.0}** |");
    println!();
    println!("ratio banger / floor: {:.2}", total / floor);
}
