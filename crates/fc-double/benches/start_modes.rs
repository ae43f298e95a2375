//! Benchmark: FirecrackerDriver start to `Running`, API mode vs
//! `--config-file` mode, against `firecracker-double` (a test double: it
//! boots nothing, so this measures the driver's own work, process spawn
//! and the API round trips, not a guest boot). Runs the two modes
//! interleaved and prints medians and the ratio.
//!
//! `cargo bench -p banger-fc-double --bench start_modes [-- RUNS]`

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use banger_core::vmm::{AgentChannel, DriveSpec, MachineSpec, NicSpec, Vmm};
use banger_host::accel::Accel;
use banger_host::firecracker::driver::{FirecrackerDriver, StartMode};

// The tests' real TAP device (the driver refuses a missing one).
#[path = "../tests/support/mod.rs"]
mod support;
use support::Tap;

fn double_binary() -> PathBuf {
    // Benches have no CARGO_BIN_EXE_*: the binary sits in the target
    // directory above the bench executable's `deps/`.
    let exe = std::env::current_exe().expect("own path");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let candidates = [
        dir.join("firecracker-double"),
        dir.join("release/firecracker-double"),
    ];
    candidates
        .into_iter()
        .find(|p| p.exists())
        .expect("build it first: cargo build --release -p banger-fc-double")
}

fn spec(dir: &Path, tap: &Tap) -> MachineSpec {
    // The double's config-file boot takes no time of its own here.
    std::fs::write(
        dir.join("vmlinux"),
        b"\x7fELF\x02\x01\x01\ndouble-boot-ms: 0\n",
    )
    .unwrap();
    std::fs::write(dir.join("rootfs.ext4"), vec![0u8; 4096]).unwrap();
    MachineSpec {
        vm_id: "bench".into(),
        vcpus: 2,
        memory_mib: 512,
        kernel: dir.join("vmlinux"),
        initrd: None,
        cmdline: "console=ttyS0".into(),
        drives: vec![DriveSpec {
            id: "rootfs".into(),
            path: dir.join("rootfs.ext4"),
            read_only: true,
        }],
        nic: Some(NicSpec {
            tap: tap.0.clone(),
            mac: "02:fc:00:00:00:02".into(),
        }),
        agent: AgentChannel {
            vsock_cid: 3,
            socket: dir.join("run/vsock.sock"),
        },
        vm_dir: dir.join("vm"),
        run_dir: dir.join("run"),
        memory_file: None,
        shares: Vec::new(),
    }
}

fn median(mut samples: Vec<Duration>) -> f64 {
    samples.sort();
    samples[samples.len() / 2].as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() {
    let runs: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(30);
    let binary = double_binary();
    let dir = tempfile::tempdir().unwrap();
    let tap = Tap::new();
    let spec = spec(dir.path(), &tap);
    let modes = [StartMode::Api, StartMode::ConfigFile];
    let mut samples = [Vec::new(), Vec::new()];
    for _ in 0..runs {
        for (i, mode) in modes.iter().enumerate() {
            let driver = FirecrackerDriver::new(binary.clone(), Accel::Kvm).with_mode(*mode);
            let started = Instant::now();
            let handle = driver.start(&spec).await.expect("start");
            samples[i].push(started.elapsed());
            driver.kill(&handle).await.expect("kill");
        }
    }
    let [api, file] = samples;
    let (api, file) = (median(api), median(file));
    println!("firecracker driver start to Running, against firecracker-double (boots nothing)");
    println!("method: {runs} runs per mode, interleaved; median wall time of Vmm::start");
    println!("| mode        | median ms |");
    println!("|-------------|-----------|");
    println!("| api         | {api:9.2} |");
    println!("| config-file | {file:9.2} |");
    println!("ratio api / config-file: {:.2}", api / file);
}
