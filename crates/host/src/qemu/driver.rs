//! `QemuDriver`: the `Vmm` trait on a QEMU process. Checks the files
//! before spawning, clears sockets a previous QEMU left, runs the command
//! line from `plan` in its own process group (so the VM outlives a daemon
//! restart) with QEMU's own output in `vmm.log` and the guest console in
//! `serial.log`, and waits for QMP to answer `running`. Stop asks ACPI
//! (`system_powerdown`), waits, then kills; status and re-adoption go by
//! pid + start time, then QMP.
//!
//! Snapshots are QEMU's migration to and from a file the daemon opens and
//! hands over QMP (`getfd`, `fd:`): the sandboxed QEMU, another user,
//! neither opens it nor spawns a helper. A saved machine whose memory is
//! a file (a template) leaves its pages out (`x-ignore-shared`); a QEMU
//! restoring it maps that file copy-on-write.

use std::fs::OpenOptions;
use std::os::fd::AsFd;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use banger_core::vmm::{MachineSpec, Vmm, VmmError, VmmHandle, VmmStatus};
use nix::sys::signal::Signal;

use super::plan::{qemu_args, restore_args, QemuConfig, QMP_SOCKET};
use super::qmp::Qmp;
use crate::process;

const LOG_TAIL_LINES: usize = 12;
const QMP_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a start waits for a TAP another process still holds.
const TAP_WAIT: Duration = Duration::from_secs(2);

/// The name a snapshot's file descriptor goes by inside QEMU.
const STATE_FD: &str = "banger-state";
/// How long a save or a restore may take (memory streams at disk speed).
const MIGRATION_WAIT: Duration = Duration::from_secs(600);

#[derive(Debug, Clone)]
pub struct QemuDriver {
    cfg: QemuConfig,
    /// How long QEMU may take to answer on QMP after exec.
    pub qmp_wait: Duration,
}

impl QemuDriver {
    pub fn new(cfg: QemuConfig) -> Self {
        QemuDriver {
            cfg,
            qmp_wait: Duration::from_secs(10),
        }
    }

    pub fn config(&self) -> &QemuConfig {
        &self.cfg
    }

    fn preflight(&self, spec: &MachineSpec) -> Result<Vec<String>, VmmError> {
        let bad = VmmError::Preflight;
        if !self.cfg.binary.is_file() {
            return Err(bad(format!(
                "qemu binary {} not found (apt-get install qemu-system-x86)",
                self.cfg.binary.display()
            )));
        }
        let mut files: Vec<&Path> = vec![spec.kernel.as_path()];
        files.extend(spec.initrd.as_deref());
        files.extend(spec.drives.iter().map(|d| d.path.as_path()));
        if let Some(missing) = files.into_iter().find(|p| !p.is_file()) {
            return Err(bad(format!("{} does not exist", missing.display())));
        }
        qemu_args(spec, &self.cfg).map_err(|e| bad(e.to_string()))
    }

    async fn wait_for_qmp(&self, handle: &VmmHandle) -> Result<(), String> {
        let mut client = self.connect_when_up(handle).await?;
        match client.status().await {
            Ok(status) if status == "running" => Ok(()),
            Ok(status) => Err(format!("qemu is {status}, not running")),
            Err(err) => Err(err.to_string()),
        }
    }

    /// A QMP connection to a QEMU just spawned, once it answers (within
    /// `qmp_wait`, and while the process lives).
    async fn connect_when_up(&self, handle: &VmmHandle) -> Result<Qmp, String> {
        let deadline = Instant::now() + self.qmp_wait;
        loop {
            if let Ok(client) = Qmp::connect(&handle.control_socket, QMP_TIMEOUT).await {
                return Ok(client);
            }
            if !process::alive(handle.pid, handle.start_ticks) {
                return Err("qemu exited before qmp answered".into());
            }
            if Instant::now() > deadline {
                return Err(format!("qmp did not answer within {:?}", self.qmp_wait));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Runs QEMU with `args` in its own process group, its output in
    /// `vmm.log`, a fresh console log; returns once it is spawned.
    async fn spawn(
        &self,
        spec: &MachineSpec,
        args: &[String],
    ) -> Result<(VmmHandle, std::path::PathBuf), VmmError> {
        let spawn_err = |e: std::io::Error| VmmError::Spawn(e.to_string());
        if let Some(nic) = &spec.nic {
            crate::net::holders::wait_free(&nic.tap, TAP_WAIT)
                .await
                .map_err(VmmError::Preflight)?;
        }
        std::fs::create_dir_all(&spec.run_dir).map_err(spawn_err)?;
        std::fs::create_dir_all(&spec.vm_dir).map_err(spawn_err)?;
        if let Some(base) = self.cfg.uid_base {
            own_disks(spec, super::plan::vm_uid(base, spec.agent.vsock_cid)).map_err(spawn_err)?;
        }
        let handle_paths = VmmHandle {
            kind: "qemu".into(),
            pid: 0,
            start_ticks: 0,
            control_socket: spec.run_dir.join(QMP_SOCKET),
            agent_socket: spec.agent.socket.clone(),
        };
        remove_sockets(&handle_paths);
        let log_path = spec.vm_dir.join("vmm.log");
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(spawn_err)?;
        // A fresh console log per boot.
        std::fs::write(spec.vm_dir.join("serial.log"), b"").map_err(spawn_err)?;
        let mut child = tokio::process::Command::new(&self.cfg.binary)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(spawn_err)?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .map_err(|e| VmmError::Spawn(format!("{}: {e}", self.cfg.binary.display())))?;
        let pid = child
            .id()
            .ok_or_else(|| VmmError::Spawn("the process vanished".into()))?;
        let start_ticks = process::start_ticks(pid).unwrap_or(0);
        // Reap the child whenever it exits, so it never lingers as a zombie.
        tokio::spawn(async move {
            let _ = child.wait().await;
        });
        let handle = VmmHandle {
            pid,
            start_ticks,
            ..handle_paths
        };
        Ok((handle, log_path))
    }

    /// Kills a QEMU that did not come up and says why, with its log.
    async fn failed_boot(&self, handle: &VmmHandle, log_path: &Path, message: String) -> VmmError {
        self.kill_and_clean(handle).await;
        VmmError::Boot {
            message,
            log: crate::log_tail::tail(log_path, LOG_TAIL_LINES),
        }
    }

    /// Feeds the saved machine in `state` to a QEMU started with
    /// `-incoming defer`, and waits until it runs.
    async fn incoming(
        &self,
        handle: &VmmHandle,
        state: &Path,
        memory_file: bool,
    ) -> Result<(), String> {
        let file = std::fs::File::open(state)
            .map_err(|e| format!("cannot open {}: {e}", state.display()))?;
        let mut qmp = self.connect_when_up(handle).await?;
        let text = |e: super::qmp::QmpError| e.to_string();
        ignore_shared(&mut qmp, memory_file).await.map_err(text)?;
        qmp.send_fd(STATE_FD, file.as_fd()).await.map_err(text)?;
        drop(file);
        qmp.execute(
            "migrate-incoming",
            Some(serde_json::json!({ "uri": format!("fd:{STATE_FD}") })),
        )
        .await
        .map_err(text)?;
        drop(qmp);
        // QEMU reads the whole state before its monitor answers again,
        // and exits if the state does not fit the machine.
        let deadline = Instant::now() + MIGRATION_WAIT;
        loop {
            if !process::alive(handle.pid, handle.start_ticks) {
                return Err("qemu exited while restoring the saved machine".into());
            }
            if let Ok(mut qmp) = Qmp::connect(&handle.control_socket, MIGRATION_WAIT).await {
                match qmp.status().await {
                    Ok(status) if status == "running" => return Ok(()),
                    Ok(status) if status == "inmigrate" => {}
                    // Saved while paused, it comes back paused: run it.
                    Ok(status) if status == "paused" => {
                        qmp.execute("cont", None).await.map_err(text)?;
                    }
                    Ok(status) => return Err(format!("qemu is {status} after restoring")),
                    Err(_) => {}
                }
            }
            if Instant::now() > deadline {
                return Err(format!("the restore did not end within {MIGRATION_WAIT:?}"));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn control(&self, handle: &VmmHandle) -> Result<Qmp, VmmError> {
        Qmp::connect(&handle.control_socket, QMP_TIMEOUT)
            .await
            .map_err(|e| VmmError::Control(e.to_string()))
    }

    async fn kill_and_clean(&self, handle: &VmmHandle) {
        process::signal(handle.pid, handle.start_ticks, Signal::SIGKILL);
        process::wait_gone(handle.pid, handle.start_ticks, Duration::from_secs(5)).await;
        remove_sockets(handle);
    }
}

/// Gives the VM's own user its writable disks and a way to them: QEMU
/// opens them as root, but a migration changes their access mode (read
/// only once saved, read-write once restored) and QEMU then opens them
/// again by path, as the user it dropped to. Other users still cannot
/// list the directory or read the files.
fn own_disks(spec: &MachineSpec, uid: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for drive in spec.drives.iter().filter(|d| !d.read_only) {
        std::os::unix::fs::chown(&drive.path, Some(uid), Some(uid))?;
    }
    std::fs::set_permissions(&spec.vm_dir, std::fs::Permissions::from_mode(0o711))
}

/// Whether file-backed guest memory is left out of a migration stream
/// (`on`) or carried in it; the two sides of a migration must agree.
async fn ignore_shared(qmp: &mut Qmp, on: bool) -> Result<(), super::qmp::QmpError> {
    qmp.execute(
        "migrate-set-capabilities",
        Some(serde_json::json!({
            "capabilities": [{ "capability": "x-ignore-shared", "state": on }]
        })),
    )
    .await
    .map(|_| ())
}

/// Removes the sockets QEMU leaves behind (never other files).
fn remove_sockets(handle: &VmmHandle) {
    use std::os::unix::fs::FileTypeExt;
    for path in [&handle.control_socket, &handle.agent_socket] {
        if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
            let _ = std::fs::remove_file(path);
        }
    }
}

#[async_trait]
impl Vmm for QemuDriver {
    fn kind(&self) -> &'static str {
        "qemu"
    }

    async fn start(&self, spec: &MachineSpec) -> Result<VmmHandle, VmmError> {
        let args = self.preflight(spec)?;
        let (handle, log_path) = self.spawn(spec, &args).await?;
        match self.wait_for_qmp(&handle).await {
            Ok(()) => Ok(handle),
            Err(message) => Err(self.failed_boot(&handle, &log_path, message).await),
        }
    }

    async fn stop(&self, handle: &VmmHandle, grace: Duration) -> Result<(), VmmError> {
        if process::alive(handle.pid, handle.start_ticks) {
            match Qmp::connect(&handle.control_socket, QMP_TIMEOUT).await {
                Ok(mut qmp) => {
                    if let Err(err) = qmp.execute("system_powerdown", None).await {
                        tracing::info!(error = %err, "acpi powerdown not accepted; killing");
                    }
                }
                Err(err) => tracing::info!(error = %err, "no qmp; killing"),
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
                "qemu pid {} survived sigkill",
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
        let mut qmp = self.control(handle).await?;
        qmp.execute("stop", None)
            .await
            .map(|_| ())
            .map_err(|e| VmmError::Control(e.to_string()))
    }

    async fn resume(&self, handle: &VmmHandle) -> Result<(), VmmError> {
        let mut qmp = self.control(handle).await?;
        // Right after a save QEMU may still be finishing the migration
        // ("not finalized yet"): asked again for a moment.
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            match qmp.execute("cont", None).await {
                Ok(_) => return Ok(()),
                Err(err) if Instant::now() > deadline => {
                    return Err(VmmError::Control(err.to_string()))
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    fn boots_into_memory_file(&self) -> bool {
        true
    }

    /// The memory goes into the migration stream, unless the machine runs
    /// on a shared memory file (`x-ignore-shared`).
    async fn save(
        &self,
        handle: &VmmHandle,
        state: &Path,
        _memory: &Path,
        memory_file: bool,
    ) -> Result<bool, VmmError> {
        let control = |e: super::qmp::QmpError| VmmError::Control(e.to_string());
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(state)
            .map_err(|e| VmmError::Control(format!("cannot make {}: {e}", state.display())))?;
        let mut qmp = self.control(handle).await?;
        // Set either way: a QEMU that was itself restored from a memory
        // file keeps the capability its restore turned on, and a stream
        // that claims it does not load into a machine without that file.
        ignore_shared(&mut qmp, memory_file)
            .await
            .map_err(control)?;
        // A paused machine goes in one pass, as fast as the disk takes it.
        qmp.execute(
            "migrate-set-parameters",
            Some(serde_json::json!({ "max-bandwidth": 1u64 << 40 })),
        )
        .await
        .map_err(control)?;
        qmp.send_fd(STATE_FD, file.as_fd()).await.map_err(control)?;
        qmp.execute(
            "migrate",
            Some(serde_json::json!({ "uri": format!("fd:{STATE_FD}") })),
        )
        .await
        .map_err(control)?;
        qmp.wait_migration(MIGRATION_WAIT).await.map_err(control)?;
        file.sync_all()
            .map_err(|e| VmmError::Control(format!("cannot write {}: {e}", state.display())))?;
        Ok(memory_file)
    }

    async fn restore(&self, spec: &MachineSpec, state: &Path) -> Result<VmmHandle, VmmError> {
        self.preflight(spec)?;
        let args = restore_args(spec, &self.cfg).map_err(|e| VmmError::Preflight(e.to_string()))?;
        let (handle, log_path) = self.spawn(spec, &args).await?;
        match self
            .incoming(&handle, state, spec.memory_file.is_some())
            .await
        {
            Ok(()) => Ok(handle),
            Err(message) => Err(self.failed_boot(&handle, &log_path, message).await),
        }
    }

    async fn status(&self, handle: &VmmHandle) -> VmmStatus {
        if !process::alive(handle.pid, handle.start_ticks) {
            return VmmStatus::Exited;
        }
        match Qmp::connect(&handle.control_socket, QMP_TIMEOUT).await {
            Ok(mut qmp) => match qmp.status().await {
                Ok(status) if status == "running" => VmmStatus::Running,
                Ok(status) => VmmStatus::Unresponsive(format!("qemu is {status}")),
                Err(err) => VmmStatus::Unresponsive(err.to_string()),
            },
            Err(err) => VmmStatus::Unresponsive(err.to_string()),
        }
    }
}
