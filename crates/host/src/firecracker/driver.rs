//! `FirecrackerDriver`: the `Vmm` trait on a Firecracker process. Checks
//! everything it can before spawning (binary, KVM, an ELF kernel, the
//! files and the TAP device, which Firecracker would otherwise make up),
//! clears sockets a previous Firecracker left (its vsock socket is bound
//! at configuration and refuses a leftover), spawns
//! `firecracker --api-sock SOCK --id VM --log-path vmm.log` in its own
//! process group (so the VM outlives a daemon restart), configures it
//! through the API and sends `InstanceStart`. Guest serial goes to
//! `serial.log` (only the guest's: Firecracker logs to its file from the
//! first line), its metrics to `metrics.json`, all in the VM directory.
//!
//! With `--config-file` Firecracker's API answers nothing until the boot
//! ends, and a boot that fails while a request waits aborts it before the
//! cause is logged: that mode sends no request until the log says the
//! machine runs, and reports the logged cause when the process exits.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use banger_core::vmm::{MachineSpec, NicSpec, Vmm, VmmError, VmmHandle, VmmStatus};
use nix::sys::signal::Signal;

use super::api::{InstanceState, VmRunState};
use super::client::{configure_and_start, remove_stale_sockets, FirecrackerClient};
use super::jail::{self, Jail, JailerConfig};
use super::plan::{
    boot_requests, command_line, stop_request, DriveConfig, FirecrackerBootConfig, VsockConfig,
    CONFIG_FILE_STARTED,
};
use crate::accel::Accel;
use crate::process;

/// How long a start waits for a TAP another process still holds.
const TAP_WAIT: Duration = Duration::from_secs(2);

/// Name of the API socket in the VM's runtime directory.
pub const API_SOCKET: &str = "firecracker.sock";
const LOG_TAIL_LINES: usize = 12;

/// How the machine is configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartMode {
    /// One API request per resource, then `InstanceStart` (about ten round
    /// trips on the API socket).
    Api,
    /// `--config-file VM_DIR/firecracker.json`: Firecracker configures and
    /// starts the machine itself; the API is only polled until `Running`.
    ConfigFile,
}

#[derive(Debug, Clone)]
pub struct FirecrackerDriver {
    pub(super) binary: PathBuf,
    accel: Accel,
    mode: StartMode,
    /// How long Firecracker may take to open its API socket.
    pub socket_wait: Duration,
    /// How long a boot from a config file may take.
    pub boot_wait: Duration,
    /// Run each VM's Firecracker under the jailer.
    pub(super) jailer: Option<JailerConfig>,
}

/// Where the host lists its network devices.
const NET_CLASS: &str = "/sys/class/net";

/// The smallest disk Firecracker can use: one sector.
const MIN_DISK_BYTES: u64 = 512;

impl FirecrackerDriver {
    pub fn new(binary: PathBuf, accel: Accel) -> Self {
        FirecrackerDriver {
            binary,
            accel,
            mode: StartMode::Api,
            socket_wait: Duration::from_secs(5),
            boot_wait: Duration::from_secs(30),
            jailer: None,
        }
    }

    /// Runs each VM's Firecracker jailed (see `jail`).
    pub fn with_jailer(mut self, jailer: JailerConfig) -> Self {
        self.jailer = Some(jailer);
        self
    }

    pub fn with_mode(mut self, mode: StartMode) -> Self {
        self.mode = mode;
        self
    }

    pub(super) fn api_socket(spec: &MachineSpec) -> PathBuf {
        spec.run_dir.join(API_SOCKET)
    }

    /// Everything checked before a process exists.
    pub(super) fn preflight(&self, spec: &MachineSpec) -> Result<FirecrackerBootConfig, VmmError> {
        let bad = |text: String| VmmError::Preflight(text);
        if !spec.shares.is_empty() {
            return Err(VmmError::Unsupported(
                "firecracker has no shared filesystem: copy files with `banger vm cp`".into(),
            ));
        }
        let mut binaries = vec![("firecracker", &self.binary)];
        binaries.extend(self.jailer.as_ref().map(|j| ("jailer", &j.binary)));
        for (what, binary) in binaries {
            let executable = binary
                .metadata()
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false);
            if !executable {
                return Err(bad(format!("{what} binary {} not found", binary.display())));
            }
        }
        if let Accel::Tcg { reason } = &self.accel {
            return Err(bad(format!(
                "firecracker needs kvm, and kvm is not usable: {reason}"
            )));
        }
        if !is_elf(&spec.kernel) {
            return Err(bad(format!(
                "kernel {} is not an elf vmlinux: firecracker cannot boot a compressed bzimage",
                spec.kernel.display()
            )));
        }
        let mut files: Vec<&Path> = spec.drives.iter().map(|d| d.path.as_path()).collect();
        files.extend(spec.initrd.as_deref());
        if let Some(missing) = files.into_iter().find(|p| !p.is_file()) {
            return Err(bad(format!("{} does not exist", missing.display())));
        }
        // Firecracker takes a tiny disk with a warning only.
        for drive in &spec.drives {
            let bytes = drive.path.metadata().map(|m| m.len()).unwrap_or(0);
            if bytes < MIN_DISK_BYTES {
                return Err(bad(format!(
                    "disk {} is {bytes} bytes: smaller than one {MIN_DISK_BYTES}-byte sector",
                    drive.path.display()
                )));
            }
        }
        let nic = spec
            .nic
            .as_ref()
            .ok_or_else(|| bad("a firecracker vm needs a network interface".into()))?;
        // As root, Firecracker makes a TAP of a name that does not exist,
        // connected to nothing.
        if !Path::new(NET_CLASS).join(&nic.tap).exists() {
            return Err(bad(format!(
                "tap device {} does not exist: the vm would be cut off",
                nic.tap
            )));
        }
        let cfg = boot_config(spec, nic);
        // Plan now, so a config Firecracker would refuse fails before a spawn.
        boot_requests(&cfg).map_err(|e| bad(e.to_string()))?;
        Ok(cfg)
    }

    /// Spawns Firecracker for `spec` (jailed when the jailer is there),
    /// with `cfg` as it will see it: in its jail, or relative to the VM's
    /// directory, its working directory, for the VM's own disks (so a
    /// saved machine finds the disks of whichever VM restores it). With
    /// `config_file` it configures and starts itself from a file; `links`
    /// are host files a jailed one must see, under their inner names.
    pub(super) async fn spawn(
        &self,
        spec: &MachineSpec,
        cfg: &FirecrackerBootConfig,
        config_file: bool,
        links: &[(&Path, &str)],
    ) -> Result<Spawned, VmmError> {
        let api = Self::api_socket(spec);
        let spawn_err = |e: std::io::Error| VmmError::Spawn(e.to_string());
        // Firecracker cannot open a TAP another process holds (EBUSY).
        crate::net::holders::wait_free(&cfg.tap, TAP_WAIT)
            .await
            .map_err(VmmError::Preflight)?;
        std::fs::create_dir_all(&spec.run_dir).map_err(spawn_err)?;
        std::fs::create_dir_all(&spec.vm_dir).map_err(spawn_err)?;
        remove_stale_sockets(&api, &spec.agent.socket).map_err(spawn_err)?;
        // Firecracker opens its log and metrics files but does not create them.
        for path in [&cfg.log_path, &cfg.metrics_path] {
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(spawn_err)?;
        }
        // Emptied for this boot, then appended to, so the daemon can trim
        // its front while Firecracker writes (`crate::console`).
        let serial = OpenOptions::new()
            .create(true)
            .append(true)
            .open(spec.vm_dir.join("serial.log"))
            .and_then(|file| file.set_len(0).map(|()| file))
            .map_err(spawn_err)?;
        let stderr = OpenOptions::new()
            .append(true)
            .open(&cfg.log_path)
            .map_err(spawn_err)?;
        let planned = |e: super::plan::PlanError| VmmError::Preflight(e.to_string());
        // Jailed, Firecracker sees its files and sockets inside the chroot.
        let jail = self
            .jailer
            .as_ref()
            .map(|jailer| Jail::new(jailer, &self.binary, &spec.vm_id, spec.agent.vsock_cid));
        let (seen, api, agent_socket, config_path) = match &jail {
            Some(jail) => {
                let jailed = |e: jail::JailError| VmmError::Spawn(e.to_string());
                let inner = jail.prepare(cfg).map_err(jailed)?;
                for (host, inner) in links {
                    jail.link_shared(host, inner).map_err(jailed)?;
                }
                (
                    inner,
                    jail.host_path(jail::API_SOCKET),
                    jail.host_path(jail::VSOCK_SOCKET),
                    (
                        jail.host_path(jail::CONFIG_FILE),
                        PathBuf::from(jail::CONFIG_FILE),
                    ),
                )
            }
            None => {
                let path = spec.vm_dir.join("firecracker.json");
                (
                    relative_disks(cfg, &spec.vm_dir),
                    api,
                    spec.agent.socket.clone(),
                    (path.clone(), path),
                )
            }
        };
        let inner_api = match &jail {
            Some(_) => PathBuf::from(jail::API_SOCKET),
            None => api.clone(),
        };
        let mut args = command_line(&seen, &inner_api, &spec.vm_id).map_err(planned)?;
        if config_file {
            let json = super::plan::config_file(&seen).map_err(planned)?;
            std::fs::write(&config_path.0, json.to_string()).map_err(spawn_err)?;
            args.push("--config-file".into());
            args.push(config_path.1.into());
        }
        let mut command = match (&self.jailer, &jail) {
            (Some(jailer), Some(jail)) => {
                let mut command = tokio::process::Command::new(&jailer.binary);
                command.args(jail::command_line(
                    jailer,
                    jail,
                    &self.binary,
                    &spec.vm_id,
                    args,
                ));
                command
            }
            _ => {
                let mut command = tokio::process::Command::new(&self.binary);
                command.args(args).current_dir(&spec.vm_dir);
                command
            }
        };
        // The log is the VM's across boots: only what this boot adds counts.
        let log_start = cfg.log_path.metadata().map(|m| m.len()).unwrap_or(0);
        let mut child = command
            .stdin(Stdio::null())
            .stdout(serial)
            .stderr(stderr)
            .process_group(0)
            .spawn()
            .map_err(|e| VmmError::Spawn(format!("{}: {e}", self.binary.display())))?;
        let pid = child
            .id()
            .ok_or_else(|| VmmError::Spawn("the process vanished".into()))?;
        let start_ticks = process::start_ticks(pid).unwrap_or(0);
        // Reap the child whenever it exits, so it never lingers as a zombie.
        tokio::spawn(async move {
            let _ = child.wait().await;
        });
        Ok(Spawned {
            handle: VmmHandle {
                kind: "firecracker".into(),
                pid,
                start_ticks,
                control_socket: api,
                agent_socket,
            },
            seen,
            log_start,
        })
    }

    async fn spawn_and_boot(
        &self,
        spec: &MachineSpec,
        cfg: &FirecrackerBootConfig,
    ) -> Result<VmmHandle, VmmError> {
        let config_file = self.mode == StartMode::ConfigFile;
        let spawned = self.spawn(spec, cfg, config_file, &[]).await?;
        let handle = spawned.handle;
        let client = FirecrackerClient::new(&handle.control_socket);
        let booted = async {
            match self.mode {
                StartMode::Api => {
                    self.wait_for_api(&client, &handle, (&cfg.log_path, spawned.log_start))
                        .await?;
                    configure_and_start(&client, &spawned.seen)
                        .await
                        .map_err(|e| e.to_string())
                }
                StartMode::ConfigFile => {
                    self.wait_for_config_boot(&handle, &cfg.log_path, spawned.log_start)
                        .await?;
                    self.confirm_running(&client).await
                }
            }
        }
        .await;
        self.started_or_cleaned(handle, booted, &cfg.log_path).await
    }

    /// The handle when `outcome` is fine; else the process killed, its
    /// sockets and jail gone, and the error with the log's tail.
    pub(super) async fn started_or_cleaned(
        &self,
        handle: VmmHandle,
        outcome: Result<(), String>,
        log: &Path,
    ) -> Result<VmmHandle, VmmError> {
        match outcome {
            Ok(()) => Ok(handle),
            Err(message) => {
                self.kill_and_clean(&handle).await;
                Err(VmmError::Boot {
                    message,
                    log: crate::log_tail::tail(log, LOG_TAIL_LINES),
                })
            }
        }
    }

    pub(super) async fn wait_for_api(
        &self,
        client: &FirecrackerClient,
        handle: &VmmHandle,
        log: (&Path, u64),
    ) -> Result<(), String> {
        let deadline = Instant::now() + self.socket_wait;
        loop {
            if client.describe().await.is_ok() {
                return Ok(());
            }
            if !process::alive(handle.pid, handle.start_ticks) {
                return Err(exited(&mut LogWatch::new(log.0, log.1)));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "firecracker's api socket did not answer within {:?}",
                    self.socket_wait
                ));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// With `--config-file` the machine starts on its own, and no request
    /// may be in flight until it has: watch its log for the line that says
    /// it runs, and the process for an exit whose cause the log holds.
    async fn wait_for_config_boot(
        &self,
        handle: &VmmHandle,
        log: &Path,
        from: u64,
    ) -> Result<(), String> {
        let deadline = Instant::now() + self.boot_wait;
        let mut watch = LogWatch::new(log, from);
        loop {
            if watch.started() {
                return Ok(());
            }
            if !process::alive(handle.pid, handle.start_ticks) {
                return Err(exited(&mut watch));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "firecracker did not start the machine from its config file within {:?}",
                    self.boot_wait
                ));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Once the log says the machine runs, the API answers at once.
    pub(super) async fn confirm_running(&self, client: &FirecrackerClient) -> Result<(), String> {
        let info = client.describe().await.map_err(|e| e.to_string())?;
        if info.state == InstanceState::Running {
            Ok(())
        } else {
            Err(format!(
                "firecracker logged a started machine, but its state is {:?}",
                info.state
            ))
        }
    }

    pub(super) async fn kill_and_clean(&self, handle: &VmmHandle) {
        process::signal(handle.pid, handle.start_ticks, Signal::SIGKILL);
        process::wait_gone(handle.pid, handle.start_ticks, Duration::from_secs(5)).await;
        let _ = remove_stale_sockets(&handle.control_socket, &handle.agent_socket);
        let jail = self
            .jailer
            .as_ref()
            .and_then(|jailer| Jail::of_api_socket(jailer, &handle.control_socket));
        if let Some(dir) = jail {
            jail::remove_jail(&dir);
        }
    }
}

/// The boot config of a VM: its machine spec, its NIC, and the log and
/// metrics files in its directory.
pub fn boot_config(spec: &MachineSpec, nic: &NicSpec) -> FirecrackerBootConfig {
    FirecrackerBootConfig {
        vcpus: spec.vcpus,
        memory_mib: u64::from(spec.memory_mib),
        kernel: spec.kernel.clone(),
        initrd: spec.initrd.clone(),
        boot_args: spec.cmdline.clone(),
        drives: spec
            .drives
            .iter()
            .map(|d| DriveConfig {
                id: d.id.clone(),
                path: d.path.clone(),
                read_only: d.read_only,
            })
            .collect(),
        tap: nic.tap.clone(),
        guest_mac: nic.mac.clone(),
        vsock: VsockConfig {
            guest_cid: spec.agent.vsock_cid,
            uds_path: spec.agent.socket.clone(),
        },
        log_path: spec.vm_dir.join("vmm.log"),
        metrics_path: spec.vm_dir.join("metrics.json"),
    }
}

/// A spawned Firecracker: its handle, the configuration as it sees it,
/// and where this boot's part of its log starts.
pub(super) struct Spawned {
    pub handle: VmmHandle,
    pub seen: FirecrackerBootConfig,
    pub log_start: u64,
}

/// `cfg` with the VM's own disks (those in `vm_dir`, Firecracker's
/// working directory) named relative to it.
pub fn relative_disks(cfg: &FirecrackerBootConfig, vm_dir: &Path) -> FirecrackerBootConfig {
    let mut seen = cfg.clone();
    for drive in &mut seen.drives {
        if let Ok(inside) = drive.path.strip_prefix(vm_dir) {
            drive.path = inside.to_path_buf();
        }
    }
    seen
}

/// Reads what a log file gained since the last look, at most 64 KiB a
/// time, and remembers the lines it needs.
struct LogWatch {
    path: PathBuf,
    offset: u64,
    started: bool,
    causes: super::exit_cause::CauseFinder,
    partial: String,
}

impl LogWatch {
    /// Watches what `path` gains past `offset`.
    fn new(path: &Path, offset: u64) -> Self {
        LogWatch {
            path: path.to_path_buf(),
            offset,
            started: false,
            causes: Default::default(),
            partial: String::new(),
        }
    }

    fn read_new(&mut self) {
        use std::io::{Seek, SeekFrom};
        let Ok(mut file) = File::open(&self.path) else {
            return;
        };
        if file.seek(SeekFrom::Start(self.offset)).is_err() {
            return;
        }
        let mut chunk = Vec::new();
        let Ok(n) = file.take(64 * 1024).read_to_end(&mut chunk) else {
            return;
        };
        self.offset += n as u64;
        self.partial.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = self.partial.find('\n') {
            let line: String = self.partial.drain(..=end).collect();
            let line = line.trim_end();
            if line.contains(CONFIG_FILE_STARTED) {
                self.started = true;
            }
            self.causes.line(line);
        }
        // A line longer than the bound is not a line the driver needs.
        if self.partial.len() > 64 * 1024 {
            self.partial.clear();
        }
    }

    /// Whether the log said the machine runs.
    fn started(&mut self) -> bool {
        self.read_new();
        self.started
    }

    /// Why the process ended, from what it wrote after this spawn.
    fn cause(&mut self) -> Option<super::exit_cause::ExitCause> {
        self.read_new();
        self.causes.cause()
    }
}

/// A Firecracker that exited: its cause as it wrote it after this spawn
/// (its log and its stdout and stderr share `vmm.log`), readable.
fn exited(watch: &mut LogWatch) -> String {
    match watch.cause() {
        Some(cause) => format!("firecracker exited: {cause}"),
        None => {
            "firecracker exited without saying why (nothing in vmm.log after this start)".into()
        }
    }
}

fn is_elf(path: &Path) -> bool {
    let mut magic = [0u8; 4];
    File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && magic == *b"\x7fELF"
}

#[async_trait]
impl Vmm for FirecrackerDriver {
    fn kind(&self) -> &'static str {
        "firecracker"
    }

    async fn start(&self, spec: &MachineSpec) -> Result<VmmHandle, VmmError> {
        let cfg = self.preflight(spec)?;
        self.spawn_and_boot(spec, &cfg).await
    }

    async fn stop(&self, handle: &VmmHandle, grace: Duration) -> Result<(), VmmError> {
        if process::alive(handle.pid, handle.start_ticks) {
            let client = FirecrackerClient::new(&handle.control_socket);
            if let Err(err) = client.send(&stop_request()).await {
                tracing::info!(error = %err, "ctrl-alt-del not accepted; killing");
            }
            if !process::wait_gone(handle.pid, handle.start_ticks, grace).await {
                tracing::info!(
                    pid = handle.pid,
                    "guest did not stop within {grace:?}; killing"
                );
            }
        }
        self.kill(handle).await
    }

    async fn kill(&self, handle: &VmmHandle) -> Result<(), VmmError> {
        self.kill_and_clean(handle).await;
        if process::alive(handle.pid, handle.start_ticks) {
            return Err(VmmError::Control(format!(
                "firecracker pid {} survived sigkill",
                handle.pid
            )));
        }
        Ok(())
    }

    fn has_exited(&self, handle: &VmmHandle) -> bool {
        !process::alive(handle.pid, handle.start_ticks)
    }

    fn can_snapshot(&self) -> bool {
        true
    }

    async fn pause(&self, handle: &VmmHandle) -> Result<(), VmmError> {
        self.set_run_state(handle, VmRunState::Paused).await
    }

    async fn resume(&self, handle: &VmmHandle) -> Result<(), VmmError> {
        self.set_run_state(handle, VmRunState::Resumed).await
    }

    /// Firecracker always writes the memory into a file of its own.
    async fn save(
        &self,
        handle: &VmmHandle,
        state: &Path,
        memory: &Path,
        _on_memory_file: bool,
    ) -> Result<bool, VmmError> {
        self.save_snapshot(handle, state, memory).await?;
        Ok(true)
    }

    async fn restore(&self, spec: &MachineSpec, state: &Path) -> Result<VmmHandle, VmmError> {
        self.restore_snapshot(spec, state).await
    }

    async fn status(&self, handle: &VmmHandle) -> VmmStatus {
        if !process::alive(handle.pid, handle.start_ticks) {
            return VmmStatus::Exited;
        }
        match FirecrackerClient::new(&handle.control_socket)
            .describe()
            .await
        {
            Ok(_) => VmmStatus::Running,
            Err(err) => VmmStatus::Unresponsive(err.to_string()),
        }
    }
}
