//! The VM lifecycle on `Banger`: boot (capability hooks, VMM start, agent
//! ready), halt (agent power-off, VMM stop, cleanup), dispose (remove),
//! start/stop/restart/exec as front-ends call them, and reconcile after a
//! daemon restart. Every state change is persisted before the call that
//! made it returns; a failed boot ends `failed` with the reason, and
//! releases everything it had made.

use std::fmt::Display;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::mpsc;

use super::{Banger, Runtime, ServiceError};
use crate::agent::ExecChunk;
use crate::capability::{Capability, GuestConfig, VmContext};
use crate::image::Image;
use crate::operation::Operation;
use crate::snapshot::Snapshot;
use crate::vm::{Vm, VmState};
use crate::vmm::{AgentChannel, DriveSpec, MachineSpec, MemoryFile, VmmStatus};

/// How a VM comes up.
#[derive(Debug, Clone)]
pub(super) enum BootFrom {
    /// A boot of its kernel.
    Cold,
    /// A cold boot whose guest memory is the shared file `memory` (a
    /// template being made).
    ColdIntoMemory(PathBuf),
    /// Where the snapshot was, then made a machine of its own.
    Snapshot { snapshot: Snapshot, dir: PathBuf },
}

/// What reconcile found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Reconciled {
    /// Running VMs found alive and kept.
    pub adopted: Vec<String>,
    /// VMs whose VMM was gone (or stuck) and were marked stopped.
    pub stopped: Vec<String>,
    /// VMs the daemon was booting when it stopped: marked failed.
    pub failed: Vec<String>,
    /// VMs that could not be handled (`NAME: why`); the others were.
    pub unhandled: Vec<String>,
}

/// What reconcile did with one VM.
enum Reconcile {
    Skipped,
    Adopted,
    Stopped,
    Failed,
}

/// Why a VM caught mid-boot by a daemon restart is `failed`.
pub const BOOT_INTERRUPTED: &str = "bangerd stopped during its boot";

impl Banger {
    pub(super) fn runtime(&self) -> Result<&Runtime, ServiceError> {
        self.runtime.as_ref().ok_or_else(|| {
            ServiceError::Unsupported("this daemon has no vmm to boot vms with".into())
        })
    }

    /// Where a VM's persistent files live.
    pub fn vm_dir(&self, vm: &Vm) -> PathBuf {
        self.settings.vms_dir.join(&vm.id)
    }

    /// Where a VM's sockets live.
    pub fn vm_run_dir(&self, vm: &Vm) -> PathBuf {
        self.settings.run_dir.join("vms").join(&vm.id)
    }

    /// The guest console log.
    pub fn serial_log(&self, vm: &Vm) -> PathBuf {
        self.vm_dir(vm).join("serial.log")
    }

    pub(super) fn context(&self, vm: &Vm, image: &Image) -> VmContext {
        VmContext {
            vm: vm.clone(),
            image: image.clone(),
            vm_dir: self.vm_dir(vm),
            run_dir: self.vm_run_dir(vm),
            restore_from: None,
        }
    }

    pub(super) fn image_of(&self, vm: &Vm) -> Result<Image, ServiceError> {
        self.store
            .find_image(&vm.image_id)?
            .ok_or_else(|| ServiceError::Runtime {
                name: vm.name.clone(),
                message: format!("its image {} is gone", vm.image_name),
            })
    }

    fn persist(&self, vm: &mut Vm, to: VmState) -> Result<(), ServiceError> {
        vm.transition(to, self.clock.now_ms())?;
        self.store.update_vm(vm)?;
        Ok(())
    }

    /// Boots a VM the caller holds the lock of (state created, stopped or
    /// failed). On failure the VM is `failed` with the reason and nothing
    /// it made at runtime is left.
    pub(super) async fn boot(
        &self,
        vm: &mut Vm,
        image: &Image,
        op: &mut Operation,
    ) -> Result<(), ServiceError> {
        self.boot_from(vm, image, op, &BootFrom::Cold).await
    }

    /// `boot`, from a snapshot or into a memory file when `from` says so.
    pub(super) async fn boot_from(
        &self,
        vm: &mut Vm,
        image: &Image,
        op: &mut Operation,
        from: &BootFrom,
    ) -> Result<(), ServiceError> {
        let runtime = self.runtime()?.clone();
        vm.last_error = None;
        self.persist(vm, VmState::Starting)?;
        let mut ctx = self.context(vm, image);
        if let BootFrom::Snapshot { dir, .. } = from {
            ctx.restore_from = Some(dir.clone());
        }
        let mut prepared: Vec<Arc<dyn Capability>> = Vec::new();
        let result = self
            .boot_steps(vm, &ctx, &runtime, op, &mut prepared, from)
            .await;
        vm.stages = op.stages().to_vec();
        if op.kind() == crate::operation::VM_CREATE {
            vm.create_stages = vm.stages.clone();
        }
        match result {
            Ok(()) => {
                self.persist(vm, VmState::Running)?;
                tracing::info!(vm = %vm.name, "vm running");
                Ok(())
            }
            Err(message) => {
                self.fail_boot(vm, Some(&ctx), &runtime, &prepared, &message)
                    .await?;
                tracing::warn!(vm = %vm.name, error = %message, "vm failed to start");
                Err(ServiceError::Boot {
                    name: vm.name.clone(),
                    message,
                })
            }
        }
    }

    /// Ends a boot that cannot go on: kills its VMM, cleans up what
    /// `prepared` made (in reverse; nothing without a context), and
    /// records the VM `failed` with `message`.
    async fn fail_boot(
        &self,
        vm: &mut Vm,
        ctx: Option<&VmContext>,
        runtime: &Runtime,
        prepared: &[Arc<dyn Capability>],
        message: &str,
    ) -> Result<(), ServiceError> {
        if let Some(handle) = vm.handle.take() {
            let _ = runtime.vmm.kill(&handle).await;
        }
        if let Some(ctx) = ctx {
            for cap in prepared.iter().rev() {
                cap.cleanup(ctx).await;
            }
        }
        vm.last_error = Some(message.to_string());
        self.persist(vm, VmState::Failed)
    }

    async fn boot_steps(
        &self,
        vm: &mut Vm,
        ctx: &VmContext,
        runtime: &Runtime,
        op: &mut Operation,
        prepared: &mut Vec<Arc<dyn Capability>>,
        from: &BootFrom,
    ) -> Result<(), String> {
        let text = |e: &dyn Display| e.to_string();
        for cap in &runtime.capabilities {
            cap.preflight(ctx).await.map_err(|e| text(&e))?;
        }
        let mut guest = GuestConfig::for_vm(vm);
        for cap in &runtime.capabilities {
            cap.guest_config(ctx, &mut guest);
        }
        for cap in &runtime.capabilities {
            prepared.push(cap.clone());
            let staged = cap.serves(&ctx.vm);
            if staged {
                op.next(cap.prepare_stage());
            }
            cap.prepare_host(ctx, &guest).await.map_err(|e| text(&e))?;
            if staged {
                op.stage(cap.prepare_stage());
            }
        }
        let image = &ctx.image;
        let mut spec = MachineSpec {
            vm_id: vm.id.clone(),
            vcpus: vm.spec.vcpus,
            memory_mib: vm.spec.memory_mib,
            // The ELF kernel boots faster (PVH) and is what Firecracker needs.
            kernel: image
                .vmlinux_path
                .clone()
                .unwrap_or(image.kernel_path.clone()),
            initrd: image.initrd_path.clone(),
            cmdline: guest.cmdline_text(),
            drives: vec![DriveSpec {
                id: "rootfs".into(),
                path: image.rootfs_path.clone(),
                read_only: true,
            }],
            nic: None,
            agent: AgentChannel {
                vsock_cid: vm.vsock_cid,
                socket: ctx.run_dir.join("agent.sock"),
            },
            vm_dir: ctx.vm_dir.clone(),
            run_dir: ctx.run_dir.clone(),
            memory_file: None,
            shares: Vec::new(),
        };
        for cap in &runtime.capabilities {
            cap.machine_config(ctx, &mut spec);
        }
        add_layers(&mut spec, &image.layers);
        let restore = match from {
            BootFrom::Cold => None,
            BootFrom::ColdIntoMemory(path) => {
                spec.memory_file = Some(MemoryFile {
                    path: path.clone(),
                    shared: true,
                });
                None
            }
            BootFrom::Snapshot { snapshot, dir } => {
                if snapshot.memory_file {
                    spec.memory_file = Some(MemoryFile {
                        path: dir.join(crate::snapshot::MEMORY_FILE),
                        shared: false,
                    });
                }
                Some(dir.join(crate::snapshot::STATE_FILE))
            }
        };
        let vmm_stage = if restore.is_some() {
            "vmm_restore"
        } else {
            "vmm_start"
        };
        op.next(vmm_stage);
        let handle = match &restore {
            Some(state) => runtime.vmm.restore(&spec, state).await,
            None => runtime.vmm.start(&spec).await,
        }
        .map_err(|e| text(&e))?;
        vm.handle = Some(handle.clone());
        self.store.update_vm(vm).map_err(|e| text(&e))?;
        op.stage(vmm_stage);
        op.next("agent_ready");
        let ready = runtime
            .agents
            .wait_ready(&handle, &self.serial_log(vm), self.settings.boot_timeout)
            .await
            .map_err(|e| text(&e))?;
        op.stage("agent_ready");
        if restore.is_some() {
            op.next("identity");
            let identity = super::snapshots::identity(self.clock.now_ms(), &guest, &spec);
            runtime
                .agents
                .identity(&handle, identity)
                .await
                .map_err(|e| format!("the restored guest took no new identity: {e}"))?;
            op.stage("identity");
        }
        // The guest's own clock: kernel start to banger-init, banger-init
        // to the image's init, and on to the agent's answer.
        if let (None, Some(init), Some(switch)) =
            (&restore, ready.init_start_ms, ready.switch_root_ms)
        {
            op.record("guest_kernel_to_init", init);
            op.record("guest_init_to_switch_root", switch.saturating_sub(init));
            op.record(
                "guest_switch_root_to_agent",
                ready.uptime_ms.saturating_sub(switch),
            );
        }
        for cap in &runtime.capabilities {
            let stage = cap.ready_stage();
            if let Some(stage) = stage {
                op.next(stage);
            }
            let waited = std::time::Instant::now();
            cap.post_start(ctx).await.map_err(|e| match stage {
                Some(stage) => format!(
                    "stage {stage} stalled after {:.1}s: {e}",
                    waited.elapsed().as_secs_f64()
                ),
                None => text(&e),
            })?;
            if let Some(stage) = stage {
                op.stage(stage);
            }
        }
        Ok(())
    }

    /// Stops the VMM of a VM the caller holds the lock of, gracefully
    /// (agent power-off, then the VMM's own stop) unless `graceful` is
    /// false, runs the cleanups, and records it stopped.
    pub(super) async fn halt(&self, vm: &mut Vm, graceful: bool) -> Result<(), ServiceError> {
        let runtime = self.runtime()?.clone();
        if vm.state == VmState::Running || vm.state == VmState::Starting {
            self.persist(vm, VmState::Stopping)?;
        }
        if let Some(handle) = vm.handle.clone() {
            // Forced (`--force`, a removal, a VMM already gone, a boot
            // interrupted): killed at once, with no power-off asked.
            let stopped = if graceful {
                let grace = match runtime
                    .agents
                    .shutdown(&handle, std::time::Duration::from_secs(5))
                    .await
                {
                    Ok(()) => self.settings.stop_grace,
                    Err(err) => {
                        tracing::info!(vm = %vm.name, error = %err, "agent shutdown failed");
                        std::time::Duration::from_secs(2)
                    }
                };
                runtime.vmm.stop(&handle, grace).await
            } else {
                runtime.vmm.kill(&handle).await
            };
            if let Err(err) = stopped {
                return Err(ServiceError::Runtime {
                    name: vm.name.clone(),
                    message: err.to_string(),
                });
            }
        }
        let image = self.image_of(vm)?;
        let ctx = self.context(vm, &image);
        for cap in runtime.capabilities.iter().rev() {
            cap.cleanup(&ctx).await;
        }
        vm.handle = None;
        if vm.state != VmState::Stopped {
            self.persist(vm, VmState::Stopped)?;
        } else {
            self.store.update_vm(vm)?;
        }
        Ok(())
    }

    /// Removes everything of a VM the caller holds the lock of (its VMM
    /// is killed first if it still runs).
    pub(super) async fn dispose(&self, vm: &mut Vm) -> Result<(), ServiceError> {
        if let Some(runtime) = self.runtime.clone() {
            if vm.handle.is_some() || vm.state.is_active() {
                self.halt(vm, false).await?;
            }
            if let Ok(image) = self.image_of(vm) {
                let ctx = self.context(vm, &image);
                for cap in runtime.capabilities.iter().rev() {
                    cap.remove(&ctx).await;
                }
            }
        }
        for dir in [self.vm_dir(vm), self.vm_run_dir(vm)] {
            if let Err(err) = std::fs::remove_dir_all(&dir) {
                if err.kind() != std::io::ErrorKind::NotFound {
                    return Err(ServiceError::Runtime {
                        name: vm.name.clone(),
                        message: format!("cannot remove {}: {err}", dir.display()),
                    });
                }
            }
        }
        Ok(())
    }

    /// Starts a stopped (or failed, or never started) VM.
    pub async fn start_vm(&self, id_or_name: &str) -> Result<Vm, ServiceError> {
        self.runtime()?;
        let id = self.find_vm(id_or_name)?.id;
        let _lock = self.vm_locks.lock(&id).await;
        let mut vm = self.find_vm(&id)?;
        if vm.state.is_active() {
            return Err(ServiceError::VmActive {
                name: vm.name.clone(),
                state: vm.state.as_str(),
            });
        }
        let image = self.image_of(&vm)?;
        let mut op = Operation::begin("vm.start");
        let result = self.boot(&mut vm, &image, &mut op).await;
        op.finish(result.as_ref().map(|_| ()).map_err(|e| e as &dyn Display));
        result.map(|()| vm)
    }

    /// Stops a running VM: gracefully unless `force`.
    pub async fn stop_vm(&self, id_or_name: &str, force: bool) -> Result<Vm, ServiceError> {
        self.runtime()?;
        let id = self.find_vm(id_or_name)?.id;
        let _lock = self.vm_locks.lock(&id).await;
        let mut vm = self.find_vm(&id)?;
        if !vm.state.is_active() && vm.handle.is_none() {
            return Err(ServiceError::NotRunning {
                name: vm.name.clone(),
                state: vm.state.as_str(),
            });
        }
        let op = Operation::begin("vm.stop");
        let result = self.halt(&mut vm, !force).await;
        op.finish(result.as_ref().map(|_| ()).map_err(|e| e as &dyn Display));
        result.map(|()| vm)
    }

    /// Stops (if running) and starts a VM, under one hold of its lock.
    pub async fn restart_vm(&self, id_or_name: &str) -> Result<Vm, ServiceError> {
        self.runtime()?;
        let id = self.find_vm(id_or_name)?.id;
        let _lock = self.vm_locks.lock(&id).await;
        let mut vm = self.find_vm(&id)?;
        let mut op = Operation::begin("vm.restart");
        if vm.state.is_active() || vm.handle.is_some() {
            self.halt(&mut vm, true).await?;
            op.stage("stop");
        }
        let image = self.image_of(&vm)?;
        let result = self.boot(&mut vm, &image, &mut op).await;
        op.finish(result.as_ref().map(|_| ()).map_err(|e| e as &dyn Display));
        result.map(|()| vm)
    }

    /// Runs a command in a running VM, streaming its output to `out`.
    /// Runs `argv` in a running VM, as `user` when given (else the
    /// image's user).
    pub async fn exec(
        &self,
        id_or_name: &str,
        argv: Vec<String>,
        (stdin, user): (Option<Vec<u8>>, Option<String>),
        out: mpsc::Sender<ExecChunk>,
    ) -> Result<(), ServiceError> {
        let (runtime, vm, handle) = self.running_vm(id_or_name)?;
        let mut context = self.exec_context(&vm)?.0;
        if user.is_some() {
            context.user = user;
        }
        runtime
            .agents
            .exec(&handle, argv, context, stdin, out)
            .await
            .map_err(|e| ServiceError::Runtime {
                name: vm.name.clone(),
                message: e.to_string(),
            })
    }

    /// Runs `argv` on a terminal in a running VM (`vm exec -it`); an empty
    /// `argv` runs the image's command (an OCI image's entrypoint and
    /// command), else `/bin/sh`.
    pub async fn terminal(
        &self,
        id_or_name: &str,
        (argv, user): (Vec<String>, Option<String>),
        size: (u16, u16),
        input: mpsc::Receiver<crate::agent::TerminalInput>,
        out: mpsc::Sender<ExecChunk>,
    ) -> Result<(), ServiceError> {
        let (runtime, vm, handle) = self.running_vm(id_or_name)?;
        let (mut context, command) = self.exec_context(&vm)?;
        if user.is_some() {
            context.user = user;
        }
        let argv = match (argv.is_empty(), command.is_empty()) {
            (false, _) => argv,
            (true, false) => command,
            (true, true) => vec!["/bin/sh".to_string()],
        };
        runtime
            .agents
            .terminal(&handle, argv, context, size, input, out)
            .await
            .map_err(|e| ServiceError::Runtime {
                name: vm.name.clone(),
                message: e.to_string(),
            })
    }

    /// The runtime, the VM and its handle, if it runs.
    pub(super) fn running_vm(
        &self,
        id_or_name: &str,
    ) -> Result<(Runtime, Vm, crate::vmm::VmmHandle), ServiceError> {
        let runtime = self.runtime()?.clone();
        let vm = self.find_vm(id_or_name)?;
        match (&vm.handle, vm.state) {
            (Some(handle), VmState::Running) => {
                let handle = handle.clone();
                Ok((runtime, vm, handle))
            }
            _ => Err(ServiceError::NotRunning {
                name: vm.name.clone(),
                state: vm.state.as_str(),
            }),
        }
    }

    /// How commands run in `vm` (an OCI image's env, working directory
    /// and user), and the image's own command (entrypoint then command).
    pub(super) fn exec_context(
        &self,
        vm: &Vm,
    ) -> Result<(crate::agent::ExecContext, Vec<String>), ServiceError> {
        let oci = self
            .store
            .find_image(&vm.image_id)?
            .and_then(|image| image.manifest)
            .and_then(|manifest| manifest.oci);
        Ok(match oci {
            Some(oci) => (
                crate::agent::ExecContext::from_container(&oci.config),
                oci.config
                    .entrypoint
                    .iter()
                    .chain(&oci.config.cmd)
                    .cloned()
                    .collect(),
            ),
            None => Default::default(),
        })
    }

    /// Turns NAT on or off for a VM; live when it runs.
    pub async fn set_nat(&self, id_or_name: &str, on: bool) -> Result<Vm, ServiceError> {
        let id = self.find_vm(id_or_name)?.id;
        let _lock = self.vm_locks.lock(&id).await;
        let mut vm = self.find_vm(&id)?;
        let mut spec = vm.spec.clone();
        spec.nat = on;
        self.check_spec(&spec)?;
        vm.spec.nat = on;
        vm.updated_at_ms = self.clock.now_ms();
        self.store.update_vm(&vm)?;
        self.apply_config(&vm).await?;
        Ok(vm)
    }

    /// After a daemon restart: keep VMs whose VMM still runs, mark the
    /// others stopped and clean what they left.
    pub async fn reconcile(&self) -> Result<Reconciled, ServiceError> {
        let mut report = Reconciled::default();
        let Some(runtime) = self.runtime.clone() else {
            return Ok(report);
        };
        // Each VM alone: one that cannot be handled does not keep the
        // others from being adopted or stopped.
        for vm in self.store.list_vms()? {
            let name = vm.name.clone();
            match self.reconcile_one(&runtime, vm).await {
                Ok(Reconcile::Skipped) => {}
                Ok(Reconcile::Adopted) => report.adopted.push(name),
                Ok(Reconcile::Stopped) => report.stopped.push(name),
                Ok(Reconcile::Failed) => report.failed.push(name),
                Err(err) => {
                    tracing::warn!(vm = %name, error = %err, "cannot reconcile this vm; the others go on");
                    report.unhandled.push(format!("{name}: {err}"));
                }
            }
        }
        Ok(report)
    }

    /// Stops the records of running VMs whose VMM exited on its own (the
    /// guest powered off, the VMM crashed or was killed): their devices,
    /// records and rules are released as by a stop. Returns their names.
    pub async fn reap_exited(&self) -> Vec<String> {
        let Some(runtime) = self.runtime.clone() else {
            return Vec::new();
        };
        let Ok(vms) = self.store.list_vms() else {
            return Vec::new();
        };
        let mut reaped = Vec::new();
        for vm in vms {
            let gone = vm.state == VmState::Running
                && vm
                    .handle
                    .as_ref()
                    .is_some_and(|h| runtime.vmm.has_exited(h));
            if !gone {
                continue;
            }
            let name = vm.name.clone();
            match self.reap_one(&runtime, &vm.id).await {
                Ok(true) => {
                    tracing::info!(vm = %name, "its vmm exited: vm stopped");
                    reaped.push(name);
                }
                Ok(false) => {}
                Err(err) => {
                    tracing::warn!(vm = %name, error = %err, "cannot stop a vm whose vmm exited")
                }
            }
        }
        reaped
    }

    /// Under the VM's lock, checked again (a stop or restart in flight
    /// owns the VM until it is done): still running on an exited VMM.
    async fn reap_one(&self, runtime: &Runtime, id: &str) -> Result<bool, ServiceError> {
        let _lock = self.vm_locks.lock(id).await;
        let mut vm = self.find_vm(id)?;
        let gone = vm.state == VmState::Running
            && vm
                .handle
                .as_ref()
                .is_some_and(|h| runtime.vmm.has_exited(h));
        if gone {
            self.halt(&mut vm, false).await?;
        }
        Ok(gone)
    }

    async fn reconcile_one(&self, runtime: &Runtime, vm: Vm) -> Result<Reconcile, ServiceError> {
        if !vm.state.is_active() && vm.handle.is_none() {
            return Ok(Reconcile::Skipped);
        }
        let _lock = self.vm_locks.lock(&vm.id).await;
        let mut vm = self.find_vm(&vm.id)?;
        let mut alive = match &vm.handle {
            Some(handle) => runtime.vmm.status(handle).await,
            None => VmmStatus::Exited,
        };
        if let (Some(handle), VmState::Running, VmmStatus::Unresponsive(_)) =
            (&vm.handle, vm.state, &alive)
        {
            // A daemon killed mid-snapshot left its VM paused: it runs on.
            if runtime.vmm.resume(handle).await.is_ok() {
                alive = runtime.vmm.status(handle).await;
            }
        }
        if alive == VmmStatus::Running && vm.state == VmState::Running {
            if let Ok(image) = self.image_of(&vm) {
                let ctx = self.context(&vm, &image);
                for cap in &runtime.capabilities {
                    if let Err(err) = cap.readopt(&ctx).await {
                        tracing::warn!(vm = %vm.name, error = %err, "re-adopting");
                    }
                }
            }
            return Ok(Reconcile::Adopted);
        }
        tracing::info!(vm = %vm.name, status = ?alive, state = vm.state.as_str(), "vm not running after restart: stopping it");
        if vm.state == VmState::Starting {
            // Half-booted: ended like a failed boot, with the reason.
            let ctx = self
                .image_of(&vm)
                .map(|image| self.context(&vm, &image))
                .ok();
            self.fail_boot(
                &mut vm,
                ctx.as_ref(),
                runtime,
                &runtime.capabilities,
                BOOT_INTERRUPTED,
            )
            .await?;
            return Ok(Reconcile::Failed);
        }
        self.halt(&mut vm, false).await?;
        Ok(Reconcile::Stopped)
    }
}

/// A promoted image's layers as read-only disks after the VM's own (so
/// the devices the guest is told of keep their names), and
/// `banger.layers` naming them top first.
pub(super) fn add_layers(spec: &mut MachineSpec, layers: &[std::path::PathBuf]) {
    if layers.is_empty() {
        return;
    }
    let first = spec.drives.len();
    let mut devices = Vec::new();
    for (i, layer) in layers.iter().enumerate() {
        spec.drives.push(DriveSpec {
            id: format!("layer{i}"),
            path: layer.clone(),
            read_only: true,
        });
        devices.push(format!("/dev/vd{}", char::from(b'a' + (first + i) as u8)));
    }
    devices.reverse();
    spec.cmdline
        .push_str(&format!(" banger.layers={}", devices.join(",")));
}
