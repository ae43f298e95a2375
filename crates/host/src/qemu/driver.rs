//! `QemuDriver`: the `Vmm` trait on a QEMU process. Checks the files
//! before spawning, clears sockets a previous QEMU left, runs the command
//! line from `plan` in its own process group (so the VM outlives a daemon
//! restart) with QEMU's own output in `vmm.log` and the guest console in
//! `serial.log`, and waits for QMP to answer `running`. Stop asks ACPI
//! (`system_powerdown`), waits, then kills; status and re-adoption go by
//! pid + start time, then QMP.

use std::fs::OpenOptions;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use banger_core::vmm::{MachineSpec, Vmm, VmmError, VmmHandle, VmmStatus};
use nix::sys::signal::Signal;

use super::plan::{qemu_args, QemuConfig, QMP_SOCKET};
use super::qmp::Qmp;
use crate::process;

const LOG_TAIL_LINES: usize = 12;
const QMP_TIMEOUT: Duration = Duration::from_secs(5);

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

    async fn wait_for_qmp(&self, qmp: &Path, handle: &VmmHandle) -> Result<(), String> {
        let deadline = Instant::now() + self.qmp_wait;
        loop {
            if let Ok(mut client) = Qmp::connect(qmp, QMP_TIMEOUT).await {
                return match client.status().await {
                    Ok(status) if status == "running" => Ok(()),
                    Ok(status) => Err(format!("qemu is {status}, not running")),
                    Err(err) => Err(err.to_string()),
                };
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

    async fn kill_and_clean(&self, handle: &VmmHandle) {
        process::signal(handle.pid, handle.start_ticks, Signal::SIGKILL);
        process::wait_gone(handle.pid, handle.start_ticks, Duration::from_secs(5)).await;
        remove_sockets(handle);
    }
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
        let spawn_err = |e: std::io::Error| VmmError::Spawn(e.to_string());
        std::fs::create_dir_all(&spec.run_dir).map_err(spawn_err)?;
        std::fs::create_dir_all(&spec.vm_dir).map_err(spawn_err)?;
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
            .args(&args)
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
        match self.wait_for_qmp(&handle.control_socket, &handle).await {
            Ok(()) => Ok(handle),
            Err(message) => {
                self.kill_and_clean(&handle).await;
                Err(VmmError::Boot {
                    message,
                    log: crate::log_tail::tail(&log_path, LOG_TAIL_LINES),
                })
            }
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
