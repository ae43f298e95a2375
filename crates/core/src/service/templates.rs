//! Warm templates: per image, a snapshot of a freshly booted VM whose
//! agent and sshd are ready, its guest memory a file of its own. A create
//! of that image and shape restores it instead of booting: the memory
//! file is mapped copy-on-write, so the restore reads only device state
//! and every VM from one template shares the pages none of them wrote.

use std::time::Duration;

use super::lifecycle::BootFrom;
use super::{Banger, ServiceError};
use crate::image::Image;
use crate::operation::Operation;
use crate::snapshot::{Snapshot, SnapshotKind, MEMORY_FILE};
use crate::spec::{CreateParams, VmSpec};
use crate::vm::{new_id, Vm};

/// How long a template's guest may take to finish booting before it is
/// saved as it is.
const SETTLE_WAIT: Duration = Duration::from_secs(60);

/// In a template's staging directory: the id of the VM it boots.
pub(super) const TEMPLATE_VM: &str = "template-vm";

impl Banger {
    /// The image's template, when there is one this VMM restores and its
    /// shape is `spec`'s.
    pub(super) fn template_for(
        &self,
        image: &Image,
        spec: &VmSpec,
    ) -> Result<Option<Snapshot>, ServiceError> {
        let Some(runtime) = &self.runtime else {
            return Ok(None);
        };
        // A template has no shared folders to restore into.
        if !spec.mounts.is_empty() {
            return Ok(None);
        }
        let template = self
            .store
            .find_snapshot(&Snapshot::template_name(&image.name))?;
        Ok(template.filter(|t| {
            t.kind == SnapshotKind::Template
                && t.image_id == image.id
                && t.vmm == runtime.vmm.kind()
                && t.vcpus == spec.vcpus
                && t.memory_mib == spec.memory_mib
                && t.work_disk_bytes == spec.work_disk_bytes
                && t.system_disk_bytes == spec.system_disk_bytes
        }))
    }

    /// Boots `vm`, whose restore from the image's warm template failed:
    /// a template is a cache, and one that no longer restores (saved by
    /// another QEMU or another banger) must not fail creates. It is
    /// dropped (the cold boot makes a new one, as for an image without
    /// one), the disks the restore started from it go, and the VM boots
    /// as if there had been none. The stage `template_dropped` says so,
    /// with the time the failed restore took.
    pub(super) async fn boot_past_template(
        &self,
        vm: &mut Vm,
        image: &Image,
        op: &mut Operation,
        template: &Snapshot,
        why: &str,
    ) -> Result<(), ServiceError> {
        tracing::warn!(template = %template.name, vm = %vm.name, error = %why, "the warm template does not restore: dropped, the vm boots");
        op.next("template_dropped");
        // Gone already or replaced by a newer one: nothing to drop.
        if let Err(err) = self.delete_snapshot(&template.id).await {
            tracing::info!(template = %template.name, error = %err, "the template was not dropped");
        }
        let runtime = self.runtime()?.clone();
        let ctx = self.context(vm, image);
        for cap in runtime.capabilities.iter().rev() {
            cap.remove(&ctx).await;
        }
        op.stage("template_dropped");
        self.boot(vm, image, op).await
    }

    /// Whether a template of the image (by id) is worth making: the
    /// image exists, this VMM saves VMs, and it has none yet.
    pub fn template_wanted(&self, image_id: &str) -> bool {
        let Some(runtime) = &self.runtime else {
            return false;
        };
        let Ok(Some(image)) = self.store.find_image(image_id) else {
            return false;
        };
        runtime.vmm.can_snapshot()
            && matches!(
                self.store
                    .find_snapshot(&Snapshot::template_name(&image.name)),
                Ok(None)
            )
    }

    /// Makes the warm template of an image in the default shape (and
    /// replaces an older one): boots a VM with its memory in a file,
    /// waits until it is ready, saves it, and removes that VM.
    pub async fn warm_image(&self, image: &str) -> Result<Snapshot, ServiceError> {
        let runtime = self.snapshot_runtime()?;
        let image = self
            .resolver
            .resolve_watched(image, &crate::progress::NoProgress)
            .await?;
        let request = CreateParams {
            name: Some(format!("warm-{}", &new_id()[..6])),
            image: Some(image.id.clone()),
            no_start: true,
            ..Default::default()
        }
        .validate(&self.settings.defaults)?;
        let mut vm = self.reserve(&request, &image).await?;
        let _lock = self.vm_locks.lock(&vm.id).await;
        let snapshot_id = new_id();
        let mut op = Operation::begin("image.warm");
        let made = async {
            let staging = self.staging(&snapshot_id)?;
            // Names the template's VM, so a daemon killed while making the
            // template removes it at its next start.
            std::fs::write(staging.path.join(TEMPLATE_VM), &vm.id).map_err(|e| {
                ServiceError::Snapshot {
                    message: format!("cannot write {}: {e}", staging.path.display()),
                }
            })?;
            // Booted into the file its restores map, where the VMM can;
            // else the save writes the memory there.
            let from = if runtime.vmm.boots_into_memory_file() {
                BootFrom::ColdIntoMemory(staging.path.join(MEMORY_FILE))
            } else {
                BootFrom::Cold
            };
            self.boot_from(&mut vm, &image, &mut op, &from).await?;
            self.settle(&runtime, &vm).await;
            let memory_file = self
                .save_machine(&runtime, &vm, &image, &staging.path, true)
                .await
                .map_err(|message| ServiceError::Snapshot {
                    message: format!("cannot save the template of {}: {message}", image.name),
                })?;
            Ok::<_, ServiceError>((staging, memory_file))
        }
        .await;
        // The template's VM goes whatever happened: killed (it is paused
        // on a memory file that must stay as saved), removed, forgotten.
        if let Some(handle) = vm.handle.clone() {
            let _ = runtime.vmm.kill(&handle).await;
        }
        let removed = match self.dispose(&mut vm).await {
            Ok(()) => self.store.delete_vm(&vm.id).map_err(ServiceError::from),
            Err(err) => Err(err),
        };
        if let Err(err) = removed {
            tracing::warn!(vm = %vm.name, error = %err, "the template's vm remains");
        }
        self.vm_locks.forget(&vm.id);
        let (mut staging, memory_file) = match made {
            Ok(made) => made,
            Err(err) => {
                op.finish(Err(&err));
                return Err(err);
            }
        };
        let name = Snapshot::template_name(&image.name);
        if let Some(old) = self.store.find_snapshot(&name)? {
            self.delete_snapshot(&old.id).await?;
        }
        let snapshot = Snapshot {
            id: snapshot_id,
            name,
            kind: SnapshotKind::Template,
            source_vm: None,
            image_id: image.id.clone(),
            image_name: image.name.clone(),
            vmm: runtime.vmm.kind().to_string(),
            vcpus: request.spec.vcpus,
            memory_mib: request.spec.memory_mib,
            work_disk_bytes: request.spec.work_disk_bytes,
            system_disk_bytes: request.spec.system_disk_bytes,
            nat: false,
            memory_file,
            disk_bytes: super::snapshots::disk_use(&staging.path),
            created_at_ms: self.clock.now_ms().max(0) as u64,
        };
        self.publish_snapshot(&snapshot, &mut staging)?;
        op.finish(Ok(()));
        tracing::info!(image = %image.name, "warm template made");
        Ok(snapshot)
    }

    /// Waits until the template's guest has finished booting. The agent
    /// and sshd answer before systemd has started the rest of the system;
    /// saved then, every VM restored from the template would run the end
    /// of that boot (journald's start, udev, mounts, tmpfiles) after its
    /// create, writing memory of its own and taking the CPU its identity
    /// and sshd need. A guest without systemd has nothing to wait for.
    async fn settle(&self, runtime: &super::Runtime, vm: &Vm) {
        let Some(handle) = &vm.handle else {
            return;
        };
        let argv = ["systemctl", "is-system-running", "--wait"];
        let began = std::time::Instant::now();
        let settled = super::guest_command::run(runtime, handle, &argv, SETTLE_WAIT).await;
        tracing::info!(
            vm = %vm.name,
            outcome = ?settled,
            waited_ms = began.elapsed().as_millis() as u64,
            "the template's guest settled"
        );
    }
}
