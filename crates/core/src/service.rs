//! `Banger`: the one internal API every front-end (the HTTP API today)
//! calls. It owns the create lock and the per-VM locks, and runs the
//! create flow in its three phases:
//!
//! 1. validate the request and resolve the image (possibly slow: an
//!    auto-pull), holding no lock;
//! 2. reserve under the create lock, for milliseconds: re-check the name,
//!    allocate the guest address and vsock CID, persist the `created` row;
//! 3. everything else under that VM's own lock.

use std::fmt::Display;
use std::sync::Arc;

use tokio::sync::Mutex;

use crate::addr::{vsock_cid, AddrError, BridgeNet};
use crate::clock::Clock;
use crate::image::Image;
use crate::image_maker::MakeError;
use crate::images::ImageError;
use crate::locks::VmLocks;
use crate::names::generate_name;
use crate::operation::Operation;
use crate::resolve::{ImageResolver, ResolveError};
use crate::spec::{CreateParams, SpecDefaults, SpecError, ValidatedCreate};
use crate::store::{Store, StoreError};
use crate::vm::{new_id, StateError, Vm, VmState};

/// The class of a `ServiceError`; front-ends map it to a status or exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request breaks the API's rules (form, type, pattern, range).
    InvalidInput,
    /// Well formed, but not possible as asked (see `ErrorCode`).
    Unprocessable,
    Forbidden,
    NotFound,
    Conflict,
    Unsupported,
    Internal,
    /// A server the daemon fetches from failed.
    Upstream,
}

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error("unknown image {0:?}")]
    UnknownImage(String),
    #[error(transparent)]
    Resolve(ResolveError),
    #[error("vm name already exists: {0}")]
    NameTaken(String),
    #[error("no vm named {0:?}")]
    VmNotFound(String),
    #[error("vm {name} is {state}")]
    VmActive { name: String, state: &'static str },
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Addr(#[from] AddrError),
    #[error("{0}")]
    Unsupported(String),
    #[error(transparent)]
    Store(StoreError),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error("vm {name} failed to start: {message}")]
    Boot { name: String, message: String },
    #[error("vm {name} is {state}: it must be running")]
    NotRunning { name: String, state: &'static str },
    #[error("vm {name}: {message}")]
    Runtime { name: String, message: String },
    #[error(transparent)]
    Refused(#[from] crate::capability::Refusal),
    #[error("address {ip} is outside the bridge prefix {net}")]
    AddrOutside { ip: std::net::Ipv4Addr, net: String },
    #[error("address {ip} is the bridge's own, or the network or broadcast address of {net}")]
    AddrReserved { ip: std::net::Ipv4Addr, net: String },
    #[error("address {ip} is taken by vm {by}")]
    AddrTaken { ip: std::net::Ipv4Addr, by: String },
    #[error("no snapshot named {0:?}")]
    SnapshotNotFound(String),
    #[error("snapshot name already exists: {0}")]
    SnapshotNameTaken(String),
    #[error("snapshot {snapshot} cannot start this vm: {message}")]
    SnapshotShape { snapshot: String, message: String },
    #[error("snapshot: {message}")]
    Snapshot { message: String },
    #[error("vm {0} has never started: it has no system disk to promote")]
    NeverStarted(String),
    #[error("image {image} already has {layers} layers, the most an image may have")]
    TooManyLayers { image: String, layers: usize },
    #[error("{}", copy::describe(vm, kind, path, message))]
    Copy {
        vm: String,
        kind: String,
        path: String,
        message: String,
    },
}

impl From<StoreError> for ServiceError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NameTaken { kind: "vm", name } => ServiceError::NameTaken(name),
            other => ServiceError::Store(other),
        }
    }
}

impl From<ResolveError> for ServiceError {
    fn from(err: ResolveError) -> Self {
        match err {
            ResolveError::Unknown(name) => ServiceError::UnknownImage(name),
            other => ServiceError::Resolve(other),
        }
    }
}

impl ServiceError {
    pub fn kind(&self) -> ErrorKind {
        use ServiceError::*;
        match self {
            Spec(SpecError::Ports(crate::ports::PortError::NotPublished { .. })) => {
                ErrorKind::NotFound
            }
            Spec(SpecError::Ports(_)) => ErrorKind::Conflict,
            // The schema's path rules are looser than a mount's.
            Spec(SpecError::Mounts(_)) => ErrorKind::Unprocessable,
            Spec(_) => ErrorKind::InvalidInput,
            UnknownImage(_) => ErrorKind::NotFound,
            Refused(_) | AddrOutside { .. } | AddrReserved { .. } | SnapshotShape { .. } => {
                ErrorKind::Unprocessable
            }
            SnapshotNotFound(_) => ErrorKind::NotFound,
            NeverStarted(_) => ErrorKind::Conflict,
            TooManyLayers { .. } => ErrorKind::Unprocessable,
            Copy { kind, .. } => copy::kind(kind),
            SnapshotNameTaken(_) => ErrorKind::Conflict,
            Snapshot { .. } => ErrorKind::Internal,
            AddrTaken { .. } => ErrorKind::Conflict,
            VmNotFound(_) => ErrorKind::NotFound,
            NameTaken(_) | VmActive { .. } | State(_) => ErrorKind::Conflict,
            Addr(AddrError::Exhausted(_)) => ErrorKind::Conflict,
            Unsupported(_) => ErrorKind::Unsupported,
            Resolve(_) | Addr(_) | Store(_) => ErrorKind::Internal,
            NotRunning { .. } => ErrorKind::Conflict,
            Boot { .. } | Runtime { .. } => ErrorKind::Internal,
            Image(err) => match err {
                ImageError::Name(_) => ErrorKind::InvalidInput,
                ImageError::Make(MakeError::Invalid { .. }) => ErrorKind::Unprocessable,
                ImageError::Make(MakeError::Unavailable { .. }) => ErrorKind::Unsupported,
                ImageError::Make(MakeError::Upstream { .. }) => ErrorKind::Upstream,
                ImageError::NotFound(_) | ImageError::NotInCatalog(_) => ErrorKind::NotFound,
                ImageError::NameTaken(_)
                | ImageError::InUse { .. }
                | ImageError::ExportTarget(_) => ErrorKind::Conflict,
                ImageError::Store(StoreError::NameTaken { .. }) => ErrorKind::Conflict,
                ImageError::Make(MakeError::Failed { .. })
                | ImageError::Dirs(_)
                | ImageError::Store(_) => ErrorKind::Internal,
            },
        }
    }

    /// What the user can do about it.
    pub fn hint(&self) -> Option<String> {
        use ServiceError::*;
        Some(match self {
            Spec(SpecError::Name(_)) => "pick a name like web-1, or leave it out to get one".into(),
            Spec(SpecError::Ports(crate::ports::PortError::NotPublished { vm, .. })) => {
                format!("see its ports with `banger vm port ls {vm}`")
            }
            Spec(SpecError::Ports(_)) => {
                "pick another host port, or free it with `banger vm port rm VM PORT`".into()
            }
            Spec(SpecError::Mounts(_)) => {
                "write --mount HOST_DIR:GUEST_DIR[:ro] with absolute paths, each guest directory once".into()
            }
            Spec(_) => "see `banger vm create --help` for the accepted values".into(),
            UnknownImage(_) => {
                "list images with `banger image ls`, and the catalog with `banger image ls --catalog`"
                    .into()
            }
            NameTaken(_) => "pick another name, or remove the old vm with `banger vm rm`".into(),
            VmNotFound(_) => "list vms with `banger vm ls`".into(),
            VmActive { name, .. } => {
                format!("stop it first with `banger vm stop {name}`, or use --force")
            }
            Addr(AddrError::Exhausted(_)) => "remove unused vms or widen the bridge prefix".into(),
            Refused(refusal) => refusal.hint.clone(),
            AddrOutside { net, .. } | AddrReserved { net, .. } => {
                format!("pick a host address of {net} other than the bridge's, or leave --ip out")
            }
            AddrTaken { .. } => "pick another address, or leave --ip out to get a free one".into(),
            SnapshotNotFound(_) => "list snapshots with `banger snapshot ls`".into(),
            SnapshotNameTaken(name) => format!(
                "pick another name, or remove the old one with `banger snapshot rm {name}`"
            ),
            SnapshotShape { snapshot, .. } => format!(
                "leave the sizes out: a vm from a snapshot has its shape (`banger snapshot show {snapshot}`)"
            ),
            Unsupported(_) => "use --no-start to record the vm without booting it".into(),
            Boot { name, .. } => format!("see the guest console with `banger vm logs {name}`"),
            NotRunning { name, .. } => format!("start it with `banger vm start {name}`"),
            NeverStarted(name) => format!("start it once with `banger vm start {name}`"),
            TooManyLayers { .. } => {
                "promote a vm of an image with fewer layers (`banger image show` lists them)".into()
            }
            Copy { vm, kind, path, .. } => return copy::hint(vm, kind, path),
            Image(err) => match err {
                ImageError::Name(_) => "pick a name like debian-dev".into(),
                ImageError::NameTaken(name) => {
                    format!("pick another name, or remove the old one with `banger image rm {name}`")
                }
                ImageError::NotFound(_) => "list images with `banger image ls`".into(),
                ImageError::NotInCatalog(_) => {
                    "see `banger image ls --catalog`, or pull a bundle by url or path".into()
                }
                ImageError::InUse { .. } => {
                    "remove those first (`banger vm rm`, `banger snapshot rm`, `banger image rm`)".into()
                }
                ImageError::ExportTarget(_) => "pick a new file name, or remove the old file".into(),
                ImageError::Make(err) => return err.hint().map(String::from),
                _ => return None,
            },
            _ => return None,
        })
    }
}

/// What the flows need to know about the host's configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    pub bridge: BridgeNet,
    pub defaults: SpecDefaults,
    /// The VMM new VMs are recorded with (`qemu` or `firecracker`).
    pub vmm: String,
    /// Per-VM persistent files live in `vms_dir/<id>/`.
    pub vms_dir: std::path::PathBuf,
    /// Per-VM sockets live in `run_dir/vms/<id>/`.
    pub run_dir: std::path::PathBuf,
    /// How long a guest may take from VMM start to its agent answering.
    pub boot_timeout: std::time::Duration,
    /// How long a guest may take to power off before it is killed.
    pub stop_grace: std::time::Duration,
    /// Snapshot files live in `snapshots_dir/<id>/`.
    pub snapshots_dir: std::path::PathBuf,
}

impl Settings {
    /// Defaults for everything but the network and VM defaults.
    pub fn new(
        bridge: BridgeNet,
        defaults: SpecDefaults,
        vmm: &str,
        state_dir: &std::path::Path,
        run_dir: &std::path::Path,
    ) -> Self {
        Settings {
            bridge,
            defaults,
            vmm: vmm.to_string(),
            vms_dir: state_dir.join("vms"),
            snapshots_dir: state_dir.join("snapshots"),
            run_dir: run_dir.to_path_buf(),
            boot_timeout: std::time::Duration::from_secs(180),
            stop_grace: std::time::Duration::from_secs(30),
        }
    }
}

/// The internal API.
pub struct Banger {
    store: Arc<dyn Store>,
    resolver: Arc<dyn ImageResolver>,
    clock: Arc<dyn Clock>,
    settings: Settings,
    create_lock: Mutex<()>,
    vm_locks: VmLocks,
    runtime: Option<Runtime>,
}

/// What booting needs; a `Banger` without one records VMs but cannot
/// start them.
#[derive(Clone)]
pub struct Runtime {
    pub vmm: Arc<dyn crate::vmm::Vmm>,
    pub agents: Arc<dyn crate::agent::AgentLink>,
    /// Run in this order; cleaned up in reverse.
    pub capabilities: Vec<Arc<dyn crate::capability::Capability>>,
}

impl Banger {
    pub fn new(
        store: Arc<dyn Store>,
        resolver: Arc<dyn ImageResolver>,
        clock: Arc<dyn Clock>,
        settings: Settings,
    ) -> Self {
        Banger {
            store,
            resolver,
            clock,
            settings,
            create_lock: Mutex::new(()),
            vm_locks: VmLocks::default(),
            runtime: None,
        }
    }

    /// Lets this `Banger` boot VMs.
    /// The kind of the VMM VMs start with (`qemu`, `firecracker`), if any.
    pub fn vmm_kind(&self) -> Option<&'static str> {
        self.runtime.as_ref().map(|r| r.vmm.kind())
    }

    pub fn with_runtime(mut self, runtime: Runtime) -> Self {
        self.runtime = Some(runtime);
        self
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Creates a VM (see the module header for the phases).
    pub async fn create_vm(&self, params: CreateParams) -> Result<Vm, ServiceError> {
        self.create_vm_watched(params, None).await
    }

    /// Creates a VM, telling `progress` as each stage begins.
    pub async fn create_vm_watched(
        &self,
        params: CreateParams,
        progress: Option<Arc<dyn crate::progress::Progress>>,
    ) -> Result<Vm, ServiceError> {
        let mut op = Operation::begin(crate::operation::VM_CREATE);
        if let Some(progress) = progress {
            op = op.with_progress(progress);
        }
        let result = self.create_phases(&mut op, params).await;
        op.finish(result.as_ref().map(|_| ()).map_err(|e| e as &dyn Display));
        result
    }

    async fn create_phases(
        &self,
        op: &mut Operation,
        params: CreateParams,
    ) -> Result<Vm, ServiceError> {
        let mut request = params.validate(&self.settings.defaults)?;
        if !request.no_start && self.runtime.is_none() {
            return Err(ServiceError::Unsupported(
                "this daemon has no vmm to boot vms with".to_string(),
            ));
        }
        // A name taken is said before any slow work (an image built or
        // pulled on first use); `reserve` checks again under its lock.
        if let Some(name) = &request.name {
            if self.store.find_vm(name)?.is_some() {
                return Err(ServiceError::NameTaken(name.clone()));
            }
        }
        if let Some(ip) = request.guest_ip {
            self.check_guest_ip(ip)?;
        }
        crate::ports::check_free(&self.store.list_vms()?, "", &request.spec.ports)
            .map_err(SpecError::from)?;
        let snapshot = match &params.from {
            Some(_) if request.no_start => {
                return Err(ServiceError::Refused(crate::capability::Refusal {
                    message: "a vm from a snapshot starts where the snapshot was: it cannot be recorded without starting".into(),
                    hint: "leave out --no-start, or create it later with --from".into(),
                }))
            }
            Some(from) => {
                let snapshot = self.snapshot_for_create(from, &params)?;
                request.spec.vcpus = snapshot.vcpus;
                request.spec.memory_mib = snapshot.memory_mib;
                request.spec.work_disk_bytes = snapshot.work_disk_bytes;
                request.spec.system_disk_bytes = snapshot.system_disk_bytes;
                Some(snapshot)
            }
            None => None,
        };
        self.check_spec(&request.spec)?;
        op.next("resolve_image");
        let image = match &snapshot {
            Some(snapshot) => self
                .store
                .find_image(&snapshot.image_id)?
                .ok_or_else(|| ServiceError::UnknownImage(snapshot.image_name.clone()))?,
            None => {
                self.resolver
                    .resolve_watched(&request.image, op.progress())
                    .await?
            }
        };
        op.stage("resolve_image");
        // A warm template of the image that fits the shape: restored.
        let (snapshot, template) = match snapshot {
            Some(snapshot) => (Some(snapshot), false),
            None if !params.cold && !request.no_start => {
                (self.template_for(&image, &request.spec)?, true)
            }
            None => (None, false),
        };

        op.next("reserve_vm");
        let mut vm = self.reserve(&request, &image).await?;
        if let Err(err) = access::add_keys(&self.vm_dir(&vm), &vm.name, &request.ssh_keys) {
            let _ = self.store.delete_vm(&vm.id);
            return Err(err);
        }
        op.stage("reserve_vm");

        let _vm_lock = self.vm_locks.lock(&vm.id).await;
        if request.no_start {
            vm.transition(VmState::Stopped, self.clock.now_ms())?;
            vm.stages = op.stages().to_vec();
            vm.create_stages = vm.stages.clone();
            self.store.update_vm(&vm)?;
            return Ok(vm);
        }
        let booted = match &snapshot {
            Some(snapshot) => match self.boot_from_snapshot(&mut vm, &image, op, snapshot).await {
                // The template went (a newer one, its image's removal)
                // between the lookup and the restore: a boot then.
                Err(ServiceError::SnapshotNotFound(_)) if template => {
                    self.boot(&mut vm, &image, op).await
                }
                Err(ServiceError::Boot { message, .. }) if template => {
                    self.boot_past_template(&mut vm, &image, op, snapshot, &message)
                        .await
                }
                other => other,
            },
            None => self.boot(&mut vm, &image, op).await,
        };
        if let Err(err) = booted {
            if params.remove_on_failure {
                self.discard_failed(&mut vm).await;
            }
            return Err(err);
        }
        Ok(vm)
    }

    /// Removes a VM whose create failed, with everything of it; the
    /// caller holds its lock.
    async fn discard_failed(&self, vm: &mut Vm) {
        let removed = match self.dispose(vm).await {
            Ok(()) => self.store.delete_vm(&vm.id).map_err(ServiceError::from),
            Err(err) => Err(err),
        };
        match removed {
            Ok(()) => {
                self.vm_locks.forget(&vm.id);
                tracing::info!(vm = %vm.name, "failed vm removed")
            }
            Err(err) => tracing::warn!(vm = %vm.name, error = %err, "cannot remove the failed vm"),
        }
    }

    /// A requested guest address must be a free host address of the
    /// bridge prefix (re-checked under the create lock).
    fn check_guest_ip(&self, ip: std::net::Ipv4Addr) -> Result<(), ServiceError> {
        let bridge = &self.settings.bridge;
        let net = bridge.network().to_string();
        if !bridge.network().contains(&ip) {
            return Err(ServiceError::AddrOutside { ip, net });
        }
        if !bridge.is_guest_addr(ip) {
            return Err(ServiceError::AddrReserved { ip, net });
        }
        if let Some(by) = self
            .store
            .list_vms()?
            .into_iter()
            .find(|vm| vm.guest_ip == ip)
        {
            return Err(ServiceError::AddrTaken { ip, by: by.name });
        }
        Ok(())
    }

    /// Lets every capability refuse a machine shape this host cannot serve.
    pub(crate) fn check_spec(&self, spec: &crate::spec::VmSpec) -> Result<(), ServiceError> {
        if let Some(runtime) = &self.runtime {
            for cap in &runtime.capabilities {
                cap.check_spec(spec)?;
            }
        }
        Ok(())
    }

    /// Phase 2: the only part of create under the global create lock.
    async fn reserve(&self, request: &ValidatedCreate, image: &Image) -> Result<Vm, ServiceError> {
        let _create_lock = self.create_lock.lock().await;
        let name = match &request.name {
            Some(name) => {
                if self.store.find_vm(name)?.is_some() {
                    return Err(ServiceError::NameTaken(name.clone()));
                }
                name.clone()
            }
            None => {
                let mut lookup_error = None;
                let name = generate_name(|candidate| match self.store.find_vm(candidate) {
                    Ok(found) => found.is_some(),
                    Err(err) => {
                        lookup_error = Some(err);
                        false
                    }
                });
                if let Some(err) = lookup_error {
                    return Err(err.into());
                }
                name
            }
        };
        crate::ports::check_free(&self.store.list_vms()?, "", &request.spec.ports)
            .map_err(SpecError::from)?;
        let guest_ip = match request.guest_ip {
            Some(ip) => {
                self.check_guest_ip(ip)?;
                ip
            }
            None => self
                .settings
                .bridge
                .next_free(&self.store.used_guest_ips()?)?,
        };
        let now = self.clock.now_ms();
        let vm = Vm {
            id: new_id(),
            name,
            image_id: image.id.clone(),
            image_name: image.name.clone(),
            state: VmState::Created,
            spec: request.spec.clone(),
            guest_ip,
            vsock_cid: vsock_cid(guest_ip),
            created_at_ms: now,
            updated_at_ms: now,
            last_error: None,
            stages: Vec::new(),
            create_stages: Vec::new(),
            vmm: self.settings.vmm.clone(),
            handle: None,
        };
        self.store.insert_vm(&vm)?;
        Ok(vm)
    }

    pub fn list_vms(&self) -> Result<Vec<Vm>, ServiceError> {
        Ok(self.store.list_vms()?)
    }

    pub fn find_vm(&self, id_or_name: &str) -> Result<Vm, ServiceError> {
        self.store
            .find_vm(id_or_name)?
            .ok_or_else(|| ServiceError::VmNotFound(id_or_name.to_string()))
    }

    /// Removes a VM's record. A VM that may still run is refused unless
    /// `force` is given.
    pub async fn delete_vm(&self, id_or_name: &str, force: bool) -> Result<Vm, ServiceError> {
        let id = self.find_vm(id_or_name)?.id;
        let _vm_lock = self.vm_locks.lock(&id).await;
        // Re-read under the lock: another request may have changed it.
        let vm = self
            .find_vm(&id)
            .map_err(|_| ServiceError::VmNotFound(id_or_name.to_string()))?;
        if vm.state.is_active() && !force {
            return Err(ServiceError::VmActive {
                name: vm.name.clone(),
                state: vm.state.as_str(),
            });
        }
        let mut vm = vm;
        self.dispose(&mut vm).await?;
        self.store.delete_vm(&vm.id)?;
        self.vm_locks.forget(&vm.id);
        tracing::info!(vm = %vm.name, id = %vm.id, "vm removed");
        Ok(vm)
    }
}

pub mod access;
mod copy;
mod guest_command;
mod lifecycle;
mod ports;
mod promote;
mod snapshots;
mod templates;
pub use lifecycle::{Reconciled, BOOT_INTERRUPTED};
pub use snapshots::MAX_FORKS;

#[cfg(test)]
mod tests;

#[cfg(test)]
mod lifecycle_tests;

#[cfg(test)]
mod promote_tests;
#[cfg(test)]
mod snapshot_tests;
