//! The driver's lifecycle against a Firecracker binary given by path, step
//! by step, with what the binary answered to each: how anyone on a KVM
//! host proves the driver against the real thing (`scripts/firecracker-check`).
//! It makes what a VM needs from a banger image (the image's ELF vmlinux
//! and initrd, its rootfs read-only, scratch disks, a TAP device it
//! removes again) and reports instead of stopping at the first refusal.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use banger_core::vmm::{AgentChannel, DriveSpec, MachineSpec, NicSpec, Vmm};

use super::api::FcRequest;
use super::client::{remove_stale_sockets, FirecrackerClient};
use super::driver::{boot_config, FirecrackerDriver, StartMode};
use super::plan::{
    boot_requests, command_line, describe_request, stop_request, FirecrackerBootConfig,
};
use crate::accel::Accel;
use crate::process;

/// One step and how it went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub name: String,
    pub ok: bool,
    /// The answer, or why it failed.
    pub detail: String,
    pub elapsed: Duration,
}

/// What the check is run with.
#[derive(Debug, Clone)]
pub struct CheckSetup {
    pub firecracker: PathBuf,
    /// A banger image directory (`vmlinux`, `initrd`, `rootfs.ext4`).
    pub image: PathBuf,
    /// Where the VM's files go (removed by the caller).
    pub work: PathBuf,
    /// A TAP device that exists.
    pub tap: String,
    pub accel: Accel,
}

/// Runs every step; never stops early.
pub async fn run(setup: &CheckSetup) -> Vec<Step> {
    let mut steps = Vec::new();
    let spec = match machine(setup) {
        Ok(spec) => spec,
        Err(err) => {
            steps.push(step("prepare the vm files", Err(err), Instant::now()));
            return steps;
        }
    };
    requests_one_by_one(setup, &spec, &mut steps).await;
    for mode in [StartMode::Api, StartMode::ConfigFile] {
        driver_lifecycle(setup, &spec, mode, &mut steps).await;
    }
    snapshot_round_trip(setup, &spec, &mut steps).await;
    steps
}

/// The driver's snapshot path: start, pause, save, resume, kill, then a
/// restore of the saved machine as a VM in another directory (its own
/// disks, the same TAP), its status, its stop.
async fn snapshot_round_trip(setup: &CheckSetup, spec: &MachineSpec, steps: &mut Vec<Step>) {
    let driver = FirecrackerDriver::new(setup.firecracker.clone(), setup.accel.clone());
    let snap = setup.work.join("snapshot");
    let mut copy = spec.clone();
    copy.vm_dir = setup.work.join("copy");
    copy.run_dir = setup.work.join("copy-run");
    copy.agent.socket = copy.run_dir.join("vsock.sock");
    copy.memory_file = Some(banger_core::vmm::MemoryFile {
        path: snap.join("memory"),
        shared: false,
    });
    let prepared = std::fs::create_dir_all(&snap)
        .and_then(|()| std::fs::create_dir_all(&copy.vm_dir))
        .and_then(|()| {
            for drive in copy.drives.iter_mut().filter(|d| !d.read_only) {
                let own = copy.vm_dir.join(drive.path.file_name().unwrap_or_default());
                std::fs::copy(&drive.path, &own)?;
                drive.path = own;
            }
            Ok(())
        });
    if let Err(err) = prepared {
        steps.push(step(
            "snapshot: prepare",
            Err(err.to_string()),
            Instant::now(),
        ));
        return;
    }
    let began = Instant::now();
    let handle = match driver.start(spec).await {
        Ok(handle) => handle,
        Err(err) => {
            steps.push(step("snapshot: start", Err(err.to_string()), began));
            return;
        }
    };
    steps.push(step(
        "snapshot: start",
        Ok(format!("pid {}", handle.pid)),
        began,
    ));
    let began = Instant::now();
    let saved = async {
        driver.pause(&handle).await?;
        driver
            .save(&handle, &snap.join("state"), &snap.join("memory"), false)
            .await?;
        driver.resume(&handle).await
    }
    .await
    .map(|()| "paused, saved, resumed".to_string())
    .map_err(|e| e.to_string());
    let ok = saved.is_ok();
    steps.push(step("snapshot: pause, save, resume", saved, began));
    let _ = driver.kill(&handle).await;
    steps.push(step(
        "snapshot: killed vmm gone",
        gone(handle.pid, handle.start_ticks, &setup.tap),
        Instant::now(),
    ));
    if !ok {
        return;
    }
    let began = Instant::now();
    match driver.restore(&copy, &snap.join("state")).await {
        Ok(restored) => {
            let status = driver.status(&restored).await;
            steps.push(step(
                "snapshot: restore as another vm",
                Ok(format!("{status:?}")),
                began,
            ));
            let began = Instant::now();
            let stopped = driver
                .stop(&restored, Duration::from_secs(10))
                .await
                .map(|()| "stopped".to_string())
                .map_err(|e| e.to_string());
            steps.push(step("snapshot: stop the restored vm", stopped, began));
            steps.push(step(
                "snapshot: stopped vmm gone",
                gone(restored.pid, restored.start_ticks, &setup.tap),
                Instant::now(),
            ));
        }
        Err(err) => steps.push(step(
            "snapshot: restore as another vm",
            Err(err.to_string()),
            began,
        )),
    }
}

/// Whether a process that was ended is gone: all its threads, and its
/// hold on `tap` (the next step starts on the same TAP at once).
fn gone(pid: u32, start_ticks: u64, tap: &str) -> Result<String, String> {
    if process::alive(pid, start_ticks) {
        let threads = std::fs::read_dir(format!("/proc/{pid}/task"))
            .map(|d| d.count())
            .unwrap_or(0);
        return Err(format!("pid {pid} has {threads} threads left"));
    }
    let held = crate::net::holders::holders(tap);
    if !held.is_empty() {
        return Err(format!("tap {tap} still held by {held:?}"));
    }
    Ok(format!(
        "pid {pid} and all its threads gone, tap {tap} free"
    ))
}

fn step(name: &str, result: Result<String, String>, began: Instant) -> Step {
    let (ok, detail) = match result {
        Ok(detail) => (true, detail),
        Err(detail) => (false, detail),
    };
    Step {
        name: name.to_string(),
        ok,
        detail,
        elapsed: began.elapsed(),
    }
}

/// The VM: the image's kernel, initrd and rootfs, two scratch disks.
fn machine(setup: &CheckSetup) -> Result<MachineSpec, String> {
    let file = |name: &str| {
        let path = setup.image.join(name);
        path.is_file()
            .then_some(path.clone())
            .ok_or_else(|| format!("{} is missing", path.display()))
    };
    let kernel = file("vmlinux")?;
    let initrd = file("initrd")?;
    let rootfs = file("rootfs.ext4")?;
    let vm_dir = setup.work.join("vm");
    let run_dir = setup.work.join("run");
    std::fs::create_dir_all(&vm_dir).map_err(|e| e.to_string())?;
    let mut drives = vec![DriveSpec {
        id: "rootfs".into(),
        path: rootfs,
        read_only: true,
    }];
    for id in ["system", "work"] {
        let path = vm_dir.join(format!("{id}.img"));
        let disk = std::fs::File::create(&path).map_err(|e| e.to_string())?;
        disk.set_len(64 << 20).map_err(|e| e.to_string())?;
        drives.push(DriveSpec {
            id: id.into(),
            path,
            read_only: false,
        });
    }
    Ok(MachineSpec {
        vm_id: "banger-check".into(),
        vcpus: 1,
        memory_mib: 256,
        kernel,
        initrd: Some(initrd),
        cmdline: "console=ttyS0 reboot=k panic=1 pci=off".into(),
        drives,
        nic: Some(NicSpec {
            tap: setup.tap.clone(),
            mac: "02:fc:00:00:00:09".into(),
        }),
        agent: AgentChannel {
            vsock_cid: 3,
            socket: run_dir.join("vsock.sock"),
        },
        vm_dir,
        run_dir,
        memory_file: None,
        shares: Vec::new(),
    })
}

/// Spawns the binary as the driver would and sends the driver's boot
/// requests one at a time, recording each answer, then asks the guest to
/// stop and watches whether Firecracker exits.
async fn requests_one_by_one(setup: &CheckSetup, spec: &MachineSpec, steps: &mut Vec<Step>) {
    let Some(nic) = &spec.nic else {
        return;
    };
    let cfg = boot_config(spec, nic);
    let api = spec.run_dir.join("check.sock");
    let began = Instant::now();
    let spawned = spawn(setup, &cfg, &api);
    let Ok(mut child) = spawned else {
        steps.push(step(
            "spawn firecracker",
            spawned.map(|_| String::new()),
            began,
        ));
        return;
    };
    let raw_pid = child.id();
    let raw_ticks = raw_pid.and_then(process::start_ticks).unwrap_or(0);
    let client = FirecrackerClient::new(&api);
    let answered = wait_answering(&client).await;
    steps.push(step("api socket answers", answered, began));
    let requests = match boot_requests(&cfg) {
        Ok(requests) => requests,
        Err(err) => {
            steps.push(step("plan the boot", Err(err.to_string()), began));
            Vec::new()
        }
    };
    for request in requests
        .iter()
        .chain([&describe_request(), &stop_request()])
    {
        let began = Instant::now();
        let answer = send(&client, request).await;
        steps.push(step(&name_of(request), answer, began));
    }
    let began = Instant::now();
    let exited = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
    let result = match exited {
        Ok(Ok(status)) => Ok(format!("firecracker exited ({status})")),
        Ok(Err(err)) => Err(err.to_string()),
        Err(_) => {
            let _ = child.kill().await;
            Err("still running 10 s after SendCtrlAltDel: the guest ignored it (killed)".into())
        }
    };
    steps.push(step("exit after SendCtrlAltDel", result, began));
    if let Some(pid) = raw_pid {
        steps.push(step(
            "exited firecracker gone",
            gone(pid, raw_ticks, &setup.tap),
            Instant::now(),
        ));
    }
    let _ = remove_stale_sockets(&api, &spec.agent.socket);
}

fn spawn(
    setup: &CheckSetup,
    cfg: &FirecrackerBootConfig,
    api: &Path,
) -> Result<tokio::process::Child, String> {
    std::fs::create_dir_all(api.parent().unwrap_or(Path::new("/"))).map_err(|e| e.to_string())?;
    for path in [&cfg.log_path, &cfg.metrics_path] {
        std::fs::File::create(path).map_err(|e| e.to_string())?;
    }
    let serial = std::fs::File::create(cfg.log_path.with_file_name("serial.log"))
        .map_err(|e| e.to_string())?;
    let args = command_line(cfg, api, "banger-check").map_err(|e| e.to_string())?;
    tokio::process::Command::new(&setup.firecracker)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(serial)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("{}: {e}", setup.firecracker.display()))
}

async fn wait_answering(client: &FirecrackerClient) -> Result<String, String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match client.describe().await {
            Ok(info) => return Ok(format!("{} {}", info.app_name, info.vmm_version)),
            Err(err) if Instant::now() > deadline => return Err(err.to_string()),
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

async fn send(client: &FirecrackerClient, request: &FcRequest) -> Result<String, String> {
    match client.send(request).await {
        Ok(None) => Ok("204".into()),
        Ok(Some(body)) => Ok(format!(
            "200 {}",
            body.to_string().chars().take(80).collect::<String>()
        )),
        Err(err) => Err(err.to_string()),
    }
}

fn name_of(request: &FcRequest) -> String {
    let action = request
        .body
        .as_ref()
        .and_then(|b| b["action_type"].as_str())
        .map(|a| format!(" {a}"))
        .unwrap_or_default();
    format!(
        "{} {}{action}",
        request.method.as_str().to_uppercase(),
        request.path
    )
}

/// `FirecrackerDriver` end to end in one mode: start, status, stop (or
/// kill when the stop fails).
async fn driver_lifecycle(
    setup: &CheckSetup,
    spec: &MachineSpec,
    mode: StartMode,
    steps: &mut Vec<Step>,
) {
    let label = match mode {
        StartMode::Api => "driver (api)",
        StartMode::ConfigFile => "driver (config file)",
    };
    let driver =
        FirecrackerDriver::new(setup.firecracker.clone(), setup.accel.clone()).with_mode(mode);
    let began = Instant::now();
    let handle = match driver.start(spec).await {
        Ok(handle) => {
            steps.push(step(
                &format!("{label}: start"),
                Ok(format!("pid {}", handle.pid)),
                began,
            ));
            handle
        }
        Err(err) => {
            steps.push(step(
                &format!("{label}: start"),
                Err(err.to_string()),
                began,
            ));
            return;
        }
    };
    let began = Instant::now();
    let status = driver.status(&handle).await;
    steps.push(step(
        &format!("{label}: status"),
        Ok(format!("{status:?}")),
        began,
    ));
    let began = Instant::now();
    let stopped = driver.stop(&handle, Duration::from_secs(10)).await;
    let gone = !process::alive(handle.pid, handle.start_ticks);
    let result = match stopped {
        Ok(()) if gone => Ok("stopped, nothing left".into()),
        Ok(()) => Err("stop returned but the process lives".into()),
        Err(err) => Err(err.to_string()),
    };
    steps.push(step(&format!("{label}: stop"), result, began));
    if !gone {
        let _ = driver.kill(&handle).await;
    }
    steps.push(step(
        &format!("{label}: stopped vmm gone"),
        self::gone(handle.pid, handle.start_ticks, &setup.tap),
        Instant::now(),
    ));
}

/// The steps as a table.
pub fn table(steps: &[Step]) -> String {
    let mut out = String::from("| step | accepted | ms | answer |\n| --- | --- | --- | --- |\n");
    for s in steps {
        out.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            s.name,
            if s.ok { "yes" } else { "NO" },
            s.elapsed.as_millis(),
            s.detail.replace('|', "/").replace('\n', " ")
        ));
    }
    out
}
