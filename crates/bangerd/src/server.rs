//! Bringing the daemon up and down: state directories, the store, the
//! unix socket (mode 0660, group `banger` when it exists), and graceful
//! shutdown on SIGTERM, SIGINT or `POST /v1/shutdown`.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use banger_core::clock::SystemClock;
use banger_core::events::{EventedStore, Events};
use banger_core::image_dirs::ImageDirs;
use banger_core::images::Images;
use banger_core::store::Store;
use banger_core::{Banger, Settings};
use banger_host::doctor::HostFacts;
use banger_host::image::maker::HostImageMaker;
use banger_host::vmm_select::{select, VmmPreference};
use banger_store::SqliteStore;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::api::{app, AppState};
use crate::config::Config;

/// A daemon serving on its socket.
pub struct Running {
    pub shutdown: watch::Sender<bool>,
    pub task: JoinHandle<Result<()>>,
}

/// How OCI pulls reach registries, and their layer cache.
fn oci_pulls(config: &Config) -> Result<banger_host::image::maker::OciPulls> {
    let cache = banger_oci::cache::BlobCache::open(&config.state_dir.join("oci/blobs"))
        .context("cannot open the layer cache")?;
    Ok(banger_host::image::maker::OciPulls {
        cache,
        options: banger_oci::PullOptions {
            insecure: config.insecure_registries.clone(),
            auth_files: banger_oci::auth::default_files(),
            credentials: None,
            limits: Default::default(),
        },
    })
}

/// Opens the state, binds the socket and starts serving.
pub async fn start(config: Config) -> Result<Running> {
    for dir in [&config.state_dir, &config.run_dir] {
        create_passable(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        warn_if_closed(dir);
    }
    // The daemon runs with umask 077 (`main`): what it and its VMMs make
    // is its own. The state directory only lets others through to
    // banger's known_hosts (`ssh/`, 0711; the file 0644) and each VM's
    // QEMU, running as the VM's own user, to its own disks (`vms/`).
    for dir in [
        config.state_dir.clone(),
        config.state_dir.join("ssh"),
        config.state_dir.join("vms"),
    ] {
        std::fs::create_dir_all(&dir)?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711))?;
    }
    // Before anything in the state is touched: a second daemon stops here.
    let state_lock = crate::state_lock::lock(&config.state_dir)?;
    // Every record written is an event for `GET /v1/events`.
    let events = Events::new(Arc::new(SystemClock));
    let store: Arc<dyn Store> = EventedStore::new(
        Arc::new(SqliteStore::open(&config.database())?),
        events.clone(),
    );
    let dirs = ImageDirs::new(config.state_dir.join("images"));
    for stale in dirs.clean_stale() {
        tracing::info!(path = %stale.display(), "removed what an interrupted image operation left");
    }
    let images = Arc::new(
        Images::new(
            store.clone(),
            Arc::new(
                HostImageMaker::new(config.guest_binary.clone(), config.debian_mirror.clone())
                    .with_oci(oci_pulls(&config)?),
            ),
            dirs,
            config.catalog.clone(),
            Arc::new(SystemClock),
        )
        .with_default_image(&config.defaults.image),
    );
    let vmm = selected_vmm(config.vmm, &config.state_dir);
    let mut banger = Banger::new(
        store,
        images.clone(),
        Arc::new(SystemClock),
        Settings::new(
            config.bridge,
            config.defaults.clone(),
            &vmm,
            &config.state_dir,
            &config.run_dir,
        ),
    );
    let network = crate::runtime::network(&config).await?;
    let ssh = Arc::new(
        banger_host::ssh::SshKeys::ensure(
            &config.state_dir.join("ssh"),
            config.ssh_authorized_keys.clone(),
        )
        .await
        .context("cannot prepare the daemon's ssh key")?,
    );
    // Relays hold two descriptors a connection: bounded by the limit.
    let nofile = banger_host::ports::raise_nofile();
    let ports = Arc::new(banger_host::ports::PortsCapability::new(
        network.is_some(),
        banger_host::ports::RelayLimits::for_nofile(nofile),
    ));
    if let Some(runtime) = crate::runtime::build(
        &vmm,
        network.clone(),
        Some(ssh.clone()),
        config.vmm_uid_base,
        &config.jail_base(),
        ports.clone(),
        config.tcg_threads,
    ) {
        banger = banger.with_runtime(runtime);
    }
    let banger = Arc::new(banger);
    let reconciled = banger.reconcile().await?;
    if reconciled != banger_core::service::Reconciled::default() {
        tracing::info!(adopted = ?reconciled.adopted, stopped = ?reconciled.stopped, failed = ?reconciled.failed, unhandled = ?reconciled.unhandled, "vms reconciled");
    }
    let live: Vec<String> = banger
        .list_vms()?
        .into_iter()
        .filter(|vm| vm.handle.is_some())
        .map(|vm| vm.id)
        .collect();
    let jails = config.jail_base();
    for (pid, vm) in banger_host::process::kill_orphan_vmms(&config.run_dir, &jails, &live) {
        tracing::warn!(pid, vm = %vm, "killed a vmm no vm record owns");
    }
    let settings = banger.settings();
    for (pid, vm) in banger_host::shares::banger_virtiofsds(&settings.run_dir) {
        if !live.contains(&vm) {
            tracing::warn!(pid, vm = %vm, "ending a virtiofsd no running vm owns");
            banger_host::shares::kill_virtiofsds(&settings.run_dir.join("vms").join(&vm)).await;
        }
    }
    for jail in banger_host::firecracker::jail::remove_stale_jails(&jails, &live) {
        tracing::info!(jail = %jail.display(), "removed a jail no running vm owns");
    }
    for socket in banger_host::process::remove_stale_sockets(&config.run_dir, &live) {
        tracing::info!(socket = %socket.display(), "removed a socket no running vm owns");
    }
    // A daemon stopped while saving, or an image removed with its template.
    for dir in banger.clean_snapshot_dirs().await? {
        tracing::info!(dir = %dir.display(), "removed snapshot files no snapshot owns");
    }
    let listener = bind(&config.socket, &config.socket_group).await?;
    let (shutdown, mut stopped) = watch::channel(false);
    tokio::spawn(reap_exited_vmms(banger.clone(), shutdown.subscribe()));
    tokio::spawn(cap_consoles(
        banger.clone(),
        config.console_log_max,
        shutdown.subscribe(),
    ));
    let warmer = config
        .warm_templates
        .then(|| crate::warm::Warmer::new(banger.clone()));
    let state = AppState {
        jail_base: config.jail_base(),
        ssh,
        network,
        banger,
        images,
        guest_binary: config.guest_binary.clone(),
        vmm_uid_base: config.vmm_uid_base,
        state_dir: config.state_dir.clone(),
        run_dir: config.run_dir.clone(),
        vmm: config.vmm,
        started: Instant::now(),
        shutdown: shutdown.clone(),
        warmer,
        ports,
        publish: config.publish.clone(),
        member_sources: config.member_sources.clone(),
        insecure_registries: config.insecure_registries.clone(),
        metrics: crate::metrics::Metrics::global(),
        events,
    };
    tracing::info!(socket = %config.socket.display(), state_dir = %config.state_dir.display(), "bangerd serving");
    let socket = config.socket.clone();
    let task = tokio::spawn(async move {
        // Held while the daemon serves.
        let _state_lock = state_lock;
        let served = axum::serve(
            listener,
            app(state).into_make_service_with_connect_info::<crate::api::Peer>(),
        )
        .with_graceful_shutdown(async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        })
        .await;
        let _ = std::fs::remove_file(&socket);
        tracing::info!("bangerd stopped");
        served.context("api server failed")
    });
    Ok(Running { shutdown, task })
}

/// How often the consoles of running VMs are measured.
const CONSOLE_CHECK: std::time::Duration = std::time::Duration::from_secs(2);

/// Keeps every running VM's console log under `max` (the guest can write
/// to it without end): the oldest half goes when it is past the cap.
/// How often the daemon looks for VMMs that exited on their own.
const REAP_CHECK: std::time::Duration = std::time::Duration::from_secs(1);

/// Stops the records of VMs whose VMM exited (guest power-off, crash,
/// kill), so their devices, addresses and rules are released at once.
async fn reap_exited_vmms(banger: Arc<Banger>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(REAP_CHECK) => {}
            _ = stop.wait_for(|stop| *stop) => return,
        }
        banger.reap_exited().await;
    }
}

async fn cap_consoles(banger: Arc<Banger>, max: u64, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(CONSOLE_CHECK) => {}
            _ = stop.wait_for(|stop| *stop) => return,
        }
        let Ok(vms) = banger.list_vms() else {
            continue;
        };
        for vm in vms
            .iter()
            .filter(|vm| vm.state == banger_core::vm::VmState::Running)
        {
            let log = banger.serial_log(vm);
            match tokio::task::spawn_blocking(move || banger_host::console::trim(&log, max)).await {
                Ok(Ok(0)) => {}
                Ok(Ok(cut)) => {
                    tracing::info!(vm = %vm.name, cut, "console log past its cap: oldest part dropped")
                }
                Ok(Err(err)) => {
                    tracing::warn!(vm = %vm.name, error = %err, "cannot trim the console log")
                }
                Err(_) => {}
            }
        }
    }
}

/// The VMM new VMs get. When the configured choice cannot be met the
/// daemon still serves (records, doctor); the VM is recorded with the
/// configured VMM and `doctor` names the problem.
fn selected_vmm(pref: VmmPreference, state_dir: &std::path::Path) -> String {
    let vmm_facts = HostFacts::gather(state_dir, pref).vmm_facts();
    match select(pref, &vmm_facts) {
        Ok((kind, why)) => {
            tracing::info!(vmm = kind.as_str(), why, "vmm selected");
            kind.as_str().to_string()
        }
        Err(err) => {
            tracing::warn!(error = %err, hint = err.hint(), "no usable vmm");
            match pref {
                VmmPreference::Firecracker => "firecracker".into(),
                _ => "qemu".into(),
            }
        }
    }
}

/// Binds the API socket. A live daemon on it is an error; a stale socket
/// file left by a crash is removed.
/// Creates `dir` and whichever of its ancestors are missing, each 0711
/// (under the daemon's umask they would be 0700): the VMs' users must
/// pass through to their disks, group members to the socket.
fn create_passable(dir: &Path) -> std::io::Result<()> {
    let mut missing = Vec::new();
    let mut at = Some(dir);
    while let Some(path) = at.filter(|p| !p.as_os_str().is_empty() && !p.exists()) {
        missing.push(path);
        at = path.parent();
    }
    for path in missing.into_iter().rev() {
        match std::fs::create_dir(path) {
            Err(err) if err.kind() != std::io::ErrorKind::AlreadyExists => return Err(err),
            _ => std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o711))?,
        }
    }
    Ok(())
}

/// An existing ancestor others may not pass through keeps the VMs'
/// users from their disks (QEMU reopens them by path to save a machine)
/// and group members from the socket: said once, at start.
fn warn_if_closed(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    for ancestor in dir.ancestors().skip(1) {
        let closed = ancestor
            .metadata()
            .map(|m| m.permissions().mode() & 0o001 == 0)
            .unwrap_or(false);
        if closed {
            tracing::warn!(
                dir = %ancestor.display(),
                "others may not pass through this directory: vm users cannot reach their disks (snapshots fail) and group members cannot reach the socket; chmod o+x it"
            );
        }
    }
}

async fn bind(socket: &Path, group: &str) -> Result<UnixListener> {
    if socket.exists() {
        if UnixStream::connect(socket).await.is_ok() {
            bail!("another bangerd is already serving {}", socket.display());
        }
        std::fs::remove_file(socket)
            .with_context(|| format!("cannot remove stale socket {}", socket.display()))?;
    }
    if let Some(parent) = socket.parent() {
        std::fs::create_dir_all(parent)?;
        // Group members must reach the socket: they may pass through its
        // directory (not list it; what else is there is root's, 0700).
        std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o711))?;
    }
    let listener =
        UnixListener::bind(socket).with_context(|| format!("cannot bind {}", socket.display()))?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o660))?;
    match nix::unistd::Group::from_name(group) {
        Ok(Some(group)) => {
            nix::unistd::chown(socket, None, Some(group.gid)).with_context(|| {
                format!("cannot give {} to group {}", socket.display(), group.name)
            })?;
        }
        _ => tracing::info!(
            group,
            "socket group does not exist; only root can use the api"
        ),
    }
    Ok(listener)
}

/// Resolves when SIGTERM or SIGINT arrives.
pub async fn signalled() -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => tracing::info!("sigterm: shutting down"),
        _ = int.recv() => tracing::info!("sigint: shutting down"),
    }
    Ok(())
}
