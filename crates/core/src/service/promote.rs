//! Promote: a VM becomes an image over the one it runs. Under the VM's
//! lock and briefly: a running VM syncs its files (the agent runs `sync`),
//! is paused, its disk capabilities copy its disks into the new image's
//! staging directory (sparse, as for a snapshot), and it resumes; a
//! stopped VM is copied as it is. Everything slow after that (repair,
//! scrub, digests) runs unlocked in staging, in the image flows; only
//! publication takes the image lock, so of two promotes to one name one
//! wins and the other leaves nothing. A promote dropped midway (its
//! client went away) records nothing, its staging goes, and a VM paused
//! for the copy is resumed.

use std::path::Path;

use super::{Banger, ServiceError};
use crate::capability::{GuestConfig, SYSTEM_DISK_FILE, WORK_DISK_FILE};
use crate::image::Image;
use crate::image_maker::{ImageRequest, PromoteFiles};
use crate::images::Images;
use crate::progress::Progress;
use crate::vm::{Vm, VmState};
use banger_proto::image::{ArtifactRole, MAX_LAYERS};

/// Guest paths that make a machine itself, removed from every promoted
/// layer besides the VM's own guest config files.
const IDENTITY_FILES: &[&str] = &[
    "/etc/machine-id",
    "/var/lib/dbus/machine-id",
    "/etc/hostname",
    "/etc/resolv.conf",
    "/etc/ssh/ssh_host_rsa_key",
    "/etc/ssh/ssh_host_rsa_key.pub",
    "/etc/ssh/ssh_host_ecdsa_key",
    "/etc/ssh/ssh_host_ecdsa_key.pub",
    "/etc/ssh/ssh_host_ed25519_key",
    "/etc/ssh/ssh_host_ed25519_key.pub",
    "/etc/ssh/ssh_host_dsa_key",
    "/etc/ssh/ssh_host_dsa_key.pub",
    "/var/lib/systemd/random-seed",
    "/var/lib/systemd/credential.secret",
];

/// How long the guest may take to write its files out before the copy.
const SYNC_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

impl Banger {
    /// Promotes VM `id_or_name` to the image `name` (its work disk as the
    /// work seed unless `no_work`), published through `images`.
    pub async fn promote_vm(
        &self,
        images: &Images,
        id_or_name: &str,
        name: &str,
        no_work: bool,
        progress: &dyn Progress,
    ) -> Result<Image, ServiceError> {
        crate::names::validate_name(name).map_err(crate::images::ImageError::from)?;
        images.ensure_free(name)?;
        let id = self.find_vm(id_or_name)?.id;
        let staging = images.stage("promote")?;
        let (vm, parent) = {
            let _lock = self.vm_locks.lock(&id).await;
            let vm = self.find_vm(&id)?;
            let parent = self.image_of(&vm)?;
            if parent.layers.len() >= MAX_LAYERS {
                return Err(ServiceError::TooManyLayers {
                    image: parent.name.clone(),
                    layers: parent.layers.len(),
                });
            }
            progress.stage("copy");
            self.copy_disks(&vm, &parent, staging.path()).await?;
            (vm, parent)
        };
        let layer_file = ArtifactRole::layer_file(parent.layers.len());
        let dir = staging.path();
        let work = dir.join(WORK_DISK_FILE);
        let moved = std::fs::rename(dir.join(SYSTEM_DISK_FILE), dir.join(&layer_file)).and_then(
            |()| match (work.exists(), no_work) {
                (true, false) => {
                    std::fs::rename(&work, dir.join(ArtifactRole::WorkSeed.file_name()))
                }
                (true, true) => std::fs::remove_file(&work),
                (false, _) => Ok(()),
            },
        );
        moved.map_err(|e| ServiceError::Runtime {
            name: vm.name.clone(),
            message: format!("cannot stage its disks: {e}"),
        })?;
        let parent_dir = parent
            .rootfs_path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let parent_manifest = parent
            .manifest
            .clone()
            .ok_or_else(|| ServiceError::Runtime {
                name: vm.name.clone(),
                message: format!("image {} has no manifest to promote over", parent.name),
            })?;
        let request = ImageRequest::Promote(Box::new(PromoteFiles {
            vm: vm.name.clone(),
            parent_id: parent.id.clone(),
            parent_name: parent.name.clone(),
            parent_dir,
            parent_manifest,
            layer_file,
            scrub: self.scrub_list(&vm, &parent),
        }));
        let image = images
            .make_in(Some(name), request, Some(staging), progress)
            .await?;
        tracing::info!(vm = %vm.name, image = %image.name, parent = %parent.name, "vm promoted");
        Ok(image)
    }

    /// Copies the VM's disks into `dir` under their own names: running,
    /// synced and paused around the copy; stopped, as they are.
    async fn copy_disks(&self, vm: &Vm, image: &Image, dir: &Path) -> Result<(), ServiceError> {
        let runtime = self.runtime()?.clone();
        let ctx = self.context(vm, image);
        if !ctx.vm_dir.join(SYSTEM_DISK_FILE).exists() {
            return Err(ServiceError::NeverStarted(vm.name.clone()));
        }
        let copy = || async {
            for cap in &runtime.capabilities {
                cap.save(&ctx, dir).await.map_err(|e| e.to_string())?;
            }
            Ok::<_, String>(())
        };
        let failed = |message: String| ServiceError::Runtime {
            name: vm.name.clone(),
            message: format!("cannot copy its disks: {message}"),
        };
        match (vm.state, vm.handle.clone()) {
            (VmState::Running, Some(handle)) => {
                self.guest_sync(&runtime, vm, &handle).await;
                runtime
                    .vmm
                    .pause(&handle)
                    .await
                    .map_err(|e| failed(e.to_string()))?;
                let mut paused = ResumeOnDrop {
                    vmm: runtime.vmm.clone(),
                    handle: Some(handle.clone()),
                };
                let copied = copy().await;
                paused.handle = None;
                if let Err(err) = runtime.vmm.resume(&handle).await {
                    tracing::warn!(vm = %vm.name, error = %err, "cannot resume after a promote");
                }
                copied.map_err(failed)
            }
            (VmState::Stopped | VmState::Created | VmState::Failed, None) => {
                copy().await.map_err(failed)
            }
            (state, _) => Err(ServiceError::VmActive {
                name: vm.name.clone(),
                state: state.as_str(),
            }),
        }
    }

    /// Asks the guest to write its files out; a guest that cannot (no
    /// `sync` in its userland) is copied as after a power cut.
    async fn guest_sync(&self, runtime: &super::Runtime, vm: &Vm, handle: &crate::vmm::VmmHandle) {
        let synced = super::guest_command::run(runtime, handle, &["sync"], SYNC_WAIT).await;
        if !matches!(synced, Ok(Some(0))) {
            tracing::warn!(vm = %vm.name, outcome = ?synced, "the guest did not sync before the promote: copied as it was");
        }
    }

    /// What the new layer must not keep: the VM's guest config files and
    /// the identity every machine has.
    fn scrub_list(&self, vm: &Vm, image: &Image) -> Vec<String> {
        let mut paths: Vec<String> = IDENTITY_FILES.iter().map(|p| p.to_string()).collect();
        if let Ok(runtime) = self.runtime() {
            let ctx = self.context(vm, image);
            let mut guest = GuestConfig::for_vm(vm);
            for cap in &runtime.capabilities {
                cap.guest_config(&ctx, &mut guest);
            }
            paths.extend(guest.files.into_iter().map(|f| f.path));
        }
        paths.sort();
        paths.dedup();
        paths
    }
}

/// Resumes a VM paused for the copy when the promote is dropped midway
/// (its client went away); disarmed once the copy resumes it itself.
struct ResumeOnDrop {
    vmm: std::sync::Arc<dyn crate::vmm::Vmm>,
    handle: Option<crate::vmm::VmmHandle>,
}

impl Drop for ResumeOnDrop {
    fn drop(&mut self) {
        let Some(handle) = self.handle.take() else {
            return;
        };
        let vmm = self.vmm.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(err) = vmm.resume(&handle).await {
                    tracing::warn!(error = %err, "cannot resume a vm after a cancelled promote");
                }
            });
        }
    }
}
