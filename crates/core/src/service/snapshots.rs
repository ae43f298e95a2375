//! Snapshots on `Banger`: save a running VM (paused for the instant its
//! disks are copied and its machine saved, then running on), list and
//! remove snapshots, start new VMs from one (`vm create --from`), fork a
//! running VM into running copies, and keep a warm template per image
//! that creates restore instead of booting. A VM from a snapshot is made
//! a machine of its own before it is reported ready (`identity`).
//!
//! Files: `snapshots/.staging/<id>` while one is made (removed on any
//! failure and at daemon start), `snapshots/<id>` once recorded. The
//! record is written after the directory is in place, and removed before
//! it goes.

use std::path::{Path, PathBuf};

use banger_proto::agent::{Identity, IdentityFile};

use super::lifecycle::BootFrom;
use super::{Banger, Runtime, ServiceError};
use crate::capability::GuestConfig;
use crate::image::Image;
use crate::operation::Operation;
use crate::snapshot::{Snapshot, SnapshotKind, MEMORY_FILE, STATE_FILE};
use crate::spec::CreateParams;
use crate::vm::{new_id, Vm, VmState};
use crate::vmm::MachineSpec;

const STAGING: &str = ".staging";

/// The identity a guest restored as `spec` takes: the VM's guest config,
/// the host's clock, fresh entropy and machine-id.
pub(super) fn identity(now_ms: i64, guest: &GuestConfig, spec: &MachineSpec) -> Identity {
    use base64::Engine;
    let entropy: [u8; 64] = rand::random();
    let machine_id: u128 = rand::random();
    Identity {
        time_ms: now_ms.max(0) as u64,
        entropy: base64::engine::general_purpose::STANDARD.encode(entropy),
        machine_id: format!("{machine_id:032x}"),
        cmdline: guest.cmdline_text(),
        mac: spec.nic.as_ref().map(|nic| nic.mac.clone()),
        files: guest
            .files
            .iter()
            .map(|f| IdentityFile {
                path: f.path.clone(),
                contents: f.contents.clone(),
                mode: f.mode,
            })
            .collect(),
    }
}

/// Bytes the files of `dir` take on disk.
pub(super) fn disk_use(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.blocks() * 512)
                .sum()
        })
        .unwrap_or(0)
}

/// A directory being made that goes away unless kept.
pub(super) struct StagingDir {
    pub(super) path: PathBuf,
    keep: bool,
}

impl Drop for StagingDir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

impl Banger {
    /// Where a snapshot's files live.
    pub fn snapshot_dir(&self, id: &str) -> PathBuf {
        self.settings.snapshots_dir.join(id)
    }

    /// The runtime, when its VMM can save and restore VMs.
    pub(super) fn snapshot_runtime(&self) -> Result<Runtime, ServiceError> {
        let runtime = self.runtime()?.clone();
        if !runtime.vmm.can_snapshot() {
            return Err(ServiceError::Unsupported(format!(
                "{} vms cannot be saved or restored by this banger",
                runtime.vmm.kind()
            )));
        }
        Ok(runtime)
    }

    pub(super) fn staging(&self, id: &str) -> Result<StagingDir, ServiceError> {
        let path = self.settings.snapshots_dir.join(STAGING).join(id);
        std::fs::create_dir_all(&path).map_err(|e| ServiceError::Snapshot {
            message: format!("cannot make {}: {e}", path.display()),
        })?;
        Ok(StagingDir { path, keep: false })
    }

    pub fn list_snapshots(&self) -> Result<Vec<Snapshot>, ServiceError> {
        Ok(self.store.list_snapshots()?)
    }

    pub fn find_snapshot(&self, id_or_name: &str) -> Result<Snapshot, ServiceError> {
        self.store
            .find_snapshot(id_or_name)?
            .ok_or_else(|| ServiceError::SnapshotNotFound(id_or_name.to_string()))
    }

    /// Saves a running VM as snapshot `name` (a generated one when
    /// absent); the VM runs on.
    pub async fn snapshot_vm(
        &self,
        id_or_name: &str,
        name: Option<String>,
    ) -> Result<Snapshot, ServiceError> {
        let name = match name {
            Some(name) => {
                crate::names::validate_name(&name).map_err(crate::spec::SpecError::from)?;
                name
            }
            None => {
                let vm = self.find_vm(id_or_name)?;
                format!("{}-{}", prefix(&vm.name, 7), &new_id()[..6])
            }
        };
        if self.store.find_snapshot(&name)?.is_some() {
            return Err(ServiceError::SnapshotNameTaken(name));
        }
        let op = Operation::begin("vm.snapshot");
        let result = self
            .take_snapshot(id_or_name, name, SnapshotKind::User)
            .await;
        op.finish(
            result
                .as_ref()
                .map(|_| ())
                .map_err(|e| e as &dyn std::fmt::Display),
        );
        result
    }

    /// Pauses the running VM, saves it into a new snapshot directory,
    /// resumes it, records the snapshot.
    async fn take_snapshot(
        &self,
        id_or_name: &str,
        name: String,
        kind: SnapshotKind,
    ) -> Result<Snapshot, ServiceError> {
        let runtime = self.snapshot_runtime()?;
        let id = self.find_vm(id_or_name)?.id;
        let _lock = self.vm_locks.lock(&id).await;
        let vm = self.find_vm(&id)?;
        if vm.state != VmState::Running || vm.handle.is_none() {
            return Err(ServiceError::NotRunning {
                name: vm.name.clone(),
                state: vm.state.as_str(),
            });
        }
        if !vm.spec.mounts.is_empty() {
            return Err(ServiceError::Refused(crate::capability::Refusal {
                message: format!(
                    "vm {} has shared folders, which a snapshot cannot hold (virtiofs keeps their state outside the vm)",
                    vm.name
                ),
                hint: "copy files with `banger vm cp` instead, or snapshot a vm without --mount"
                    .into(),
            }));
        }
        let image = self.image_of(&vm)?;
        let snapshot_id = new_id();
        let mut staging = self.staging(&snapshot_id)?;
        let memory_file = self
            .save_machine(&runtime, &vm, &image, &staging.path, false)
            .await
            .map_err(|message| ServiceError::Runtime {
                name: vm.name.clone(),
                message: format!("cannot snapshot: {message}"),
            })?;
        let snapshot = Snapshot {
            id: snapshot_id,
            name,
            kind,
            source_vm: Some(vm.name.clone()),
            image_id: image.id.clone(),
            image_name: image.name.clone(),
            vmm: runtime.vmm.kind().to_string(),
            vcpus: vm.spec.vcpus,
            memory_mib: vm.spec.memory_mib,
            work_disk_bytes: vm.spec.work_disk_bytes,
            system_disk_bytes: vm.spec.system_disk_bytes,
            nat: vm.spec.nat,
            memory_file,
            disk_bytes: disk_use(&staging.path),
            created_at_ms: self.clock.now_ms().max(0) as u64,
        };
        self.publish_snapshot(&snapshot, &mut staging)?;
        tracing::info!(snapshot = %snapshot.name, vm = %vm.name, "snapshot taken");
        Ok(snapshot)
    }

    /// Pause, copy the VM's files, save the machine, resume, whatever
    /// happened; whether the snapshot's `MEMORY_FILE` holds its memory. A
    /// template's VM (`template`) is not resumed: it is killed instead, so
    /// a shared memory file it runs on stays as saved.
    pub(super) async fn save_machine(
        &self,
        runtime: &Runtime,
        vm: &Vm,
        image: &Image,
        dir: &Path,
        template: bool,
    ) -> Result<bool, String> {
        let handle = vm.handle.clone().ok_or("it has no vmm")?;
        runtime
            .vmm
            .pause(&handle)
            .await
            .map_err(|e| e.to_string())?;
        let ctx = self.context(vm, image);
        let saved = async {
            for cap in &runtime.capabilities {
                cap.save(&ctx, dir).await.map_err(|e| e.to_string())?;
            }
            runtime
                .vmm
                .save(
                    &handle,
                    &dir.join(STATE_FILE),
                    &dir.join(MEMORY_FILE),
                    template && runtime.vmm.boots_into_memory_file(),
                )
                .await
                .map_err(|e| e.to_string())
        }
        .await;
        if !template {
            if let Err(err) = runtime.vmm.resume(&handle).await {
                tracing::warn!(vm = %vm.name, error = %err, "cannot resume after a snapshot");
                if saved.is_ok() {
                    return Err(format!("saved, but cannot resume the vm: {err}"));
                }
            }
        }
        saved
    }

    /// Moves the staging directory into place, then records it.
    pub(super) fn publish_snapshot(
        &self,
        snapshot: &Snapshot,
        staging: &mut StagingDir,
    ) -> Result<(), ServiceError> {
        let dir = self.snapshot_dir(&snapshot.id);
        std::fs::rename(&staging.path, &dir).map_err(|e| ServiceError::Snapshot {
            message: format!("cannot publish {}: {e}", dir.display()),
        })?;
        staging.path = dir;
        match self.store.insert_snapshot(snapshot) {
            Ok(()) => {
                staging.keep = true;
                Ok(())
            }
            Err(crate::store::StoreError::NameTaken { name, .. }) => {
                Err(ServiceError::SnapshotNameTaken(name))
            }
            Err(err) => Err(err.into()),
        }
    }

    /// Removes a snapshot no create is reading: the record, then its files.
    pub async fn delete_snapshot(&self, id_or_name: &str) -> Result<Snapshot, ServiceError> {
        let snapshot = self.find_snapshot(id_or_name)?;
        let _lock = self.vm_locks.lock(&snapshot_key(&snapshot.id)).await;
        let snapshot = self.find_snapshot(&snapshot.id)?;
        self.store.delete_snapshot(&snapshot.id)?;
        if let Err(err) = std::fs::remove_dir_all(self.snapshot_dir(&snapshot.id)) {
            tracing::warn!(snapshot = %snapshot.name, error = %err, "snapshot files remain; they go at the next daemon start");
        }
        tracing::info!(snapshot = %snapshot.name, "snapshot removed");
        Ok(snapshot)
    }

    /// At daemon start: removes the VM of a template a stopped daemon was
    /// making, then staging and snapshot files no record names (a daemon
    /// stopped while saving).
    pub async fn clean_snapshot_dirs(&self) -> Result<Vec<PathBuf>, ServiceError> {
        self.remove_template_vms().await;
        let known: std::collections::HashSet<String> = self
            .store
            .list_snapshots()?
            .into_iter()
            .map(|s| s.id)
            .collect();
        let mut removed = Vec::new();
        let Ok(entries) = std::fs::read_dir(&self.settings.snapshots_dir) else {
            return Ok(removed);
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if (name == STAGING || !known.contains(&name))
                && std::fs::remove_dir_all(entry.path()).is_ok()
            {
                removed.push(entry.path());
            }
        }
        Ok(removed)
    }

    /// Removes the VMs of templates a killed daemon was making (their
    /// staging names them), VMM and all.
    async fn remove_template_vms(&self) {
        let staging = self.settings.snapshots_dir.join(STAGING);
        for entry in std::fs::read_dir(&staging).into_iter().flatten().flatten() {
            let marker = entry.path().join(super::templates::TEMPLATE_VM);
            let Ok(id) = std::fs::read_to_string(&marker) else {
                continue;
            };
            if self.store.find_vm(id.trim()).ok().flatten().is_none() {
                continue;
            }
            match self.delete_vm(id.trim(), true).await {
                Ok(vm) => {
                    tracing::info!(vm = %vm.name, "removed the vm of a template a stopped daemon was making")
                }
                Err(err) => {
                    tracing::warn!(vm = %id.trim(), error = %err, "cannot remove the vm of an unfinished template")
                }
            }
        }
    }

    /// Removes the files of the snapshots `ids` whose records are gone
    /// (an image's template, removed with the image).
    pub fn remove_snapshot_files(&self, ids: &[String]) -> Result<(), ServiceError> {
        for id in ids {
            if self.store.find_snapshot(id)?.is_none() {
                let dir = self.snapshot_dir(id);
                if let Err(err) = std::fs::remove_dir_all(&dir) {
                    if err.kind() != std::io::ErrorKind::NotFound {
                        return Err(ServiceError::Snapshot {
                            message: format!("cannot remove {}: {err}", dir.display()),
                        });
                    }
                }
            }
        }
        Ok(())
    }

    /// The snapshot a create starts from, and the shape it fixes: asked
    /// sizes other than the snapshot's are refused.
    pub(super) fn snapshot_for_create(
        &self,
        from: &str,
        params: &CreateParams,
    ) -> Result<Snapshot, ServiceError> {
        let snapshot = self.find_snapshot(from)?;
        let kind = self.snapshot_runtime()?.vmm.kind();
        if snapshot.vmm != kind {
            return Err(ServiceError::SnapshotShape {
                snapshot: snapshot.name.clone(),
                message: format!(
                    "it was saved by {}, and vms here run on {kind}",
                    snapshot.vmm
                ),
            });
        }
        let asked = [
            ("vcpus", params.vcpus.map(u64::from), snapshot.vcpus as u64),
            (
                "memory (MiB)",
                params.memory_mib.map(u64::from),
                snapshot.memory_mib as u64,
            ),
            (
                "work disk (bytes)",
                params.work_disk_bytes,
                snapshot.work_disk_bytes,
            ),
            (
                "system disk (bytes)",
                params.system_disk_bytes,
                snapshot.system_disk_bytes,
            ),
        ];
        for (what, asked, has) in asked {
            if let Some(asked) = asked.filter(|a| *a != has) {
                return Err(ServiceError::SnapshotShape {
                    snapshot: snapshot.name.clone(),
                    message: format!("its {what} is {has}, not {asked}"),
                });
            }
        }
        Ok(snapshot)
    }

    /// Boots `vm` from `snapshot`, holding the snapshot so no `rm` takes
    /// its files meanwhile.
    pub(super) async fn boot_from_snapshot(
        &self,
        vm: &mut Vm,
        image: &Image,
        op: &mut Operation,
        snapshot: &Snapshot,
    ) -> Result<(), ServiceError> {
        // A share: VMs start from one snapshot side by side.
        let _hold = self.vm_locks.share(&snapshot_key(&snapshot.id)).await;
        // Gone since it was looked up: refused before anything was made.
        let snapshot = self.find_snapshot(&snapshot.id)?;
        let from = BootFrom::Snapshot {
            dir: self.snapshot_dir(&snapshot.id),
            snapshot,
        };
        self.boot_from(vm, image, op, &from).await
    }

    /// Makes `count` running copies of a running VM, each with its memory
    /// and processes as they were, named `name` (`name-1`.. for several)
    /// or `VM-fork-N`.
    pub async fn fork_vm(
        &self,
        id_or_name: &str,
        count: u32,
        name: Option<String>,
        nat: Option<bool>,
    ) -> Result<Vec<Vm>, ServiceError> {
        if !(1..=MAX_FORKS).contains(&count) {
            return Err(ServiceError::Spec(crate::spec::SpecError::Count {
                count,
                max: MAX_FORKS,
            }));
        }
        let source = self.find_vm(id_or_name)?;
        let names: Vec<String> = match (&name, count) {
            (Some(name), 1) => vec![name.clone()],
            (Some(name), n) => (1..=n).map(|i| format!("{name}-{i}")).collect(),
            (None, n) => (0..n)
                .map(|_| format!("{}-{}", prefix(&source.name, 5), &new_id()[..4]))
                .collect(),
        };
        for name in &names {
            if crate::names::validate_name(name).is_err() {
                return Err(ServiceError::Refused(crate::capability::Refusal {
                    message: format!("the copies' names ({name}) would break the name rules"),
                    hint: "pick a shorter --name: copies are NAME-1, NAME-2, ..".into(),
                }));
            }
            if self.store.find_vm(name)?.is_some() {
                return Err(ServiceError::NameTaken(name.clone()));
            }
        }
        let snapshot = self
            .take_snapshot(&source.id, format!("fork-{}", new_id()), SnapshotKind::Fork)
            .await?;
        // The copies start side by side, each a share of the snapshot.
        let creates = names.into_iter().map(|name| {
            self.create_vm(CreateParams {
                name: Some(name),
                from: Some(snapshot.id.clone()),
                nat: nat.unwrap_or(source.spec.nat),
                remove_on_failure: true,
                ..Default::default()
            })
        });
        let mut made = Vec::new();
        let mut failure = None;
        for created in futures_util::future::join_all(creates).await {
            match created {
                Ok(vm) => made.push(vm),
                Err(err) => failure = failure.or(Some(err)),
            }
        }
        if let Err(err) = self.delete_snapshot(&snapshot.id).await {
            tracing::warn!(error = %err, "the fork's snapshot remains");
        }
        match failure {
            None => Ok(made),
            Some(err) => {
                for vm in &made {
                    let _ = self.delete_vm(&vm.id, true).await;
                }
                Err(err)
            }
        }
    }
}

/// Most copies one fork makes (the API's rule).
pub const MAX_FORKS: u32 = banger_proto::rules::FORK_COUNT_MAX;

/// `name` cut so that `extra` more characters keep it a valid name.
fn prefix(name: &str, extra: usize) -> &str {
    let keep = banger_proto::rules::NAME_MAX
        .saturating_sub(extra)
        .min(name.len());
    name[..keep].trim_end_matches('-')
}

/// The lock key that holds a snapshot while VMs start from it (each a
/// share) and that its removal takes alone.
fn snapshot_key(id: &str) -> String {
    format!("snapshot:{id}")
}
