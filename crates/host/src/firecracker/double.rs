//! TEST DOUBLE for a Firecracker process. Firecracker cannot be installed
//! (or boot anything) on every machine the tests run on, so
//! `FirecrackerDouble` stands in for its API socket: it serves HTTP on a
//! unix socket, refuses what Firecracker v1.16.1 would refuse (anything
//! its own API description, [`ApiSpec`], rejects; a second
//! `InstanceStart`; reconfiguring a pre-boot-only resource after start;
//! `SendCtrlAltDel` before start; an unknown path) with
//! `400 {"fault_message": ...}` in Firecracker's words, answers `GET /`,
//! `GET /machine-config` and `GET /vm/config`, keeps the instance state,
//! and records every request.
//!
//! The guest it pretends to run is read from the kernel it is given (see
//! [`DoubleGuest`]): one that obeys Ctrl+Alt+Del, one that ignores it, one
//! whose boot fails. While it "boots" from a config file every request
//! waits, as Firecracker's do ([`FirecrackerDouble::spawn_booting`]).
//!
//! Snapshots as Firecracker takes them: `PATCH /vm` pauses and resumes a
//! started machine; `PUT /snapshot/create` only of a paused one, writing
//! its configuration as the state file and a sparse memory file of the
//! machine's size; `PUT /snapshot/load` only on a process given nothing
//! but its logger and metrics, opening the saved disks by their saved
//! paths (relative ones from its working directory), taking the TAP and
//! vsock overrides; a failed load is fatal to the process, as in
//! Firecracker ([`FirecrackerDouble::fatal`]).
//!
//! It does NOT boot a VM, open TAP devices or vsock sockets, or write the
//! metrics file. Never use it outside tests.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{Method as HttpMethod, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::net::UnixListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::api::{FcRequest, InstanceInfo, InstanceState, Method};
use super::spec::ApiSpec;

/// Firecracker's own message for a pre-boot-only request after start.
pub const POST_BOOT_FAULT: &str =
    "The requested operation is not supported after starting the microVM.";
/// Firecracker's own message for a post-boot-only request before start.
pub const PRE_BOOT_FAULT: &str =
    "The requested operation is not supported before starting the microVM.";

/// `PUT` paths Firecracker still accepts once the VM runs (everything else
/// the double refuses after start; of `PATCH`, only `/vm` is modelled).
const PUT_AFTER_START: &[&str] = &["/actions", "/mmds", "/snapshot/create"];

/// Firecracker's own message for a load after boot resources were set.
pub const LOAD_AFTER_CONFIG_FAULT: &str =
    "Loading a microVM snapshot not allowed after configuring boot-specific resources.";

/// What the double writes as a snapshot's state file.
const STATE_MARKER: &str = "firecracker-double snapshot";

/// Firecracker's prefix for everything that fails `InstanceStart`.
pub const START_FAULT_PREFIX: &str = "Start microvm error: ";

/// What the kernel a test hands the double says its guest does: a line
/// `double-guest: obeys|ignores-ctrl-alt-del|fails-to-boot` anywhere in
/// the (fake) kernel file; `obeys` when there is none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DoubleGuest {
    /// Reboots on Ctrl+Alt+Del (with `reboot=k`), so Firecracker exits.
    #[default]
    Obeys,
    /// A hung guest: Ctrl+Alt+Del is accepted and nothing happens.
    IgnoresCtrlAltDel,
    /// The kernel cannot be loaded: `InstanceStart` fails.
    FailsToBoot,
    /// Obeys, but its process's main thread ends before a thread that
    /// still holds the TAP (a vCPU thread slow to leave the kernel).
    SlowToLeave,
}

/// The marker a fake kernel carries to pick its guest.
pub const GUEST_MARKER: &str = "double-guest: ";

impl DoubleGuest {
    /// The guest a kernel file stands for.
    pub fn of_kernel(path: &Path) -> DoubleGuest {
        let text = std::fs::read(path).unwrap_or_default();
        let text = String::from_utf8_lossy(&text);
        let word = text
            .lines()
            .find_map(|line| line.split(GUEST_MARKER).nth(1))
            .map(str::trim);
        match word {
            Some("ignores-ctrl-alt-del") => DoubleGuest::IgnoresCtrlAltDel,
            Some("fails-to-boot") => DoubleGuest::FailsToBoot,
            Some("slow-to-leave") => DoubleGuest::SlowToLeave,
            _ => DoubleGuest::Obeys,
        }
    }

    /// How long booting this kernel from a config file takes: a line
    /// `double-boot-ms: N` in the kernel file, else 300 ms.
    pub fn boot_time_of_kernel(path: &Path) -> std::time::Duration {
        let text = std::fs::read(path).unwrap_or_default();
        let ms = String::from_utf8_lossy(&text)
            .lines()
            .find_map(|line| line.split("double-boot-ms: ").nth(1))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(300);
        std::time::Duration::from_millis(ms)
    }

    /// Why Firecracker fails to start this guest, if it does.
    pub fn boot_fault(self) -> Option<String> {
        (self == DoubleGuest::FailsToBoot).then(|| {
            format!(
                "{START_FAULT_PREFIX}Cannot load kernel due to invalid memory configuration or invalid kernel image: Kernel Loader: failed to load ELF kernel image"
            )
        })
    }
}

/// One request the double received, with the status it answered.
#[derive(Debug, Clone, PartialEq)]
pub struct Exchange {
    pub request: FcRequest,
    pub status: u16,
    /// The `fault_message` sent with a `400`.
    pub fault: Option<String>,
}

/// A fake Firecracker API on a unix socket; see the module docs.
pub struct FirecrackerDouble {
    socket: PathBuf,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<io::Result<()>>>,
}

struct Shared {
    spec: ApiSpec,
    state: Mutex<Vm>,
    /// False while the machine boots from a config file: requests wait.
    open: tokio::sync::watch::Sender<bool>,
    /// Requests waiting for the boot to end.
    waiting: std::sync::atomic::AtomicUsize,
}

#[derive(Default)]
struct Vm {
    exchanges: Vec<Exchange>,
    started: bool,
    ctrl_alt_del: bool,
    /// The configuration so far, by section (`boot-source`, ...; drives
    /// and interfaces as lists), as `GET /vm/config` shows it.
    config: serde_json::Map<String, Value>,
    /// Jailed: the chroot every path is under, and files are opened with
    /// this process's (dropped) rights when configured.
    root: Option<PathBuf>,
    paused: bool,
    /// The guest a loaded snapshot's kernel stood for.
    restored_guest: Option<DoubleGuest>,
    /// Why a load failed: the process must end.
    fatal: Option<String>,
}

impl FirecrackerDouble {
    /// Binds `socket_path` and serves on it until [`shutdown`] (or drop).
    /// The socket exists when this returns. Must run inside a tokio
    /// runtime.
    ///
    /// [`shutdown`]: FirecrackerDouble::shutdown
    pub async fn spawn(socket_path: impl Into<PathBuf>) -> io::Result<FirecrackerDouble> {
        FirecrackerDouble::serve(socket_path.into(), true).await
    }

    /// Like [`spawn`], for a machine that boots from a config file: every
    /// request waits until [`boot_finished`] (as Firecracker's API waits
    /// for its boot to end).
    ///
    /// [`spawn`]: FirecrackerDouble::spawn
    /// [`boot_finished`]: FirecrackerDouble::boot_finished
    pub async fn spawn_booting(socket_path: impl Into<PathBuf>) -> io::Result<FirecrackerDouble> {
        FirecrackerDouble::serve(socket_path.into(), false).await
    }

    async fn serve(socket: PathBuf, open: bool) -> io::Result<FirecrackerDouble> {
        let listener = UnixListener::bind(&socket)?;
        let shared = Arc::new(Shared {
            spec: ApiSpec::load(),
            state: Mutex::new(Vm::default()),
            open: tokio::sync::watch::Sender::new(open),
            waiting: std::sync::atomic::AtomicUsize::new(0),
        });
        let app = Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&shared));
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
        });
        Ok(FirecrackerDouble {
            socket,
            shared,
            stop: Some(stop),
            server: Some(server),
        })
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Every request received so far, in order, accepted or not.
    pub fn exchanges(&self) -> Vec<Exchange> {
        self.shared.vm().exchanges.clone()
    }

    /// The requests received so far, in order, accepted or not.
    pub fn requests(&self) -> Vec<FcRequest> {
        self.exchanges().into_iter().map(|e| e.request).collect()
    }

    /// The state `GET /` reports.
    pub fn state(&self) -> InstanceState {
        self.shared.vm().instance_state()
    }

    /// Whether an accepted `SendCtrlAltDel` asked the guest to stop (a real
    /// Firecracker exits once a guest that obeys reboots).
    pub fn stopped(&self) -> bool {
        self.shared.vm().ctrl_alt_del
    }

    /// Why the process must end (a failed snapshot load), if it must.
    pub fn fatal(&self) -> Option<String> {
        self.shared.vm().fatal.clone()
    }

    /// The guest of the configured kernel (`Obeys` before a boot source),
    /// or of the loaded snapshot's.
    pub fn guest(&self) -> DoubleGuest {
        let vm = self.shared.vm();
        if let Some(guest) = vm.restored_guest {
            return guest;
        }
        vm.config
            .get("boot-source")
            .and_then(|b| b["kernel_image_path"].as_str())
            .map(|path| DoubleGuest::of_kernel(&vm.resolve(path)))
            .unwrap_or_default()
    }

    /// The TAP devices of the configured network interfaces.
    pub fn taps(&self) -> Vec<String> {
        let vm = self.shared.vm();
        vm.config
            .get("network-interfaces")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|nic| nic["host_dev_name"].as_str().map(str::to_string))
            .collect()
    }

    /// Runs as if chrooted in `root` (by `jailer-double`): request paths
    /// are under it and their files must open with this process's rights.
    pub fn set_root(&self, root: PathBuf) {
        self.shared.vm().root = Some(root);
    }

    /// Applies a request as if it came over the socket (validated,
    /// recorded), without a connection: how a config file is replayed.
    pub fn apply(&self, request: FcRequest) -> Result<Option<Value>, String> {
        self.shared.exchange(request)
    }

    /// Lets waiting and later requests through (the boot ended).
    pub fn boot_finished(&self) {
        self.shared.open.send_replace(true);
    }

    /// How many requests wait for the boot to end.
    pub fn waiting(&self) -> usize {
        self.shared
            .waiting
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Stops serving, waits for the server task, and removes the socket.
    pub async fn shutdown(mut self) -> io::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.map_err(io::Error::other)??;
        }
        match std::fs::remove_file(&self.socket) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

impl Drop for FirecrackerDouble {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

impl Shared {
    fn vm(&self) -> MutexGuard<'_, Vm> {
        // A panic while holding the lock cannot leave `Vm` half-updated in a
        // way that matters to a test double.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Checks, applies and records one request: the answer body for a
    /// `200`, `None` for a `204`, or the fault message of a `400`.
    fn exchange(&self, request: FcRequest) -> Result<Option<Value>, String> {
        // Apply and record under one lock, so the record's order is the
        // order the state changed in.
        let mut vm = self.vm();
        let outcome = if !known_path(&request.path) {
            Err(format!(
                "Invalid request method and/or path: {} {}.",
                request.method.as_str().to_uppercase(),
                request.path.trim_start_matches('/')
            ))
        } else {
            match self.spec.check_request(&request) {
                Err(errs) => Err(errs.join("; ")),
                Ok(()) => vm.apply(&request),
            }
        };
        vm.exchanges.push(Exchange {
            request,
            status: match &outcome {
                Ok(None) => 204,
                Ok(Some(_)) => 200,
                Err(_) => 400,
            },
            fault: outcome.as_ref().err().cloned(),
        });
        outcome
    }
}

/// Paths Firecracker's API serves (their first component).
fn known_path(path: &str) -> bool {
    const KNOWN: &[&str] = &[
        "",
        "actions",
        "balloon",
        "boot-source",
        "cpu-config",
        "drives",
        "entropy",
        "hotplug",
        "logger",
        "machine-config",
        "metrics",
        "mmds",
        "network-interfaces",
        "pmem",
        "serial",
        "snapshot",
        "version",
        "vm",
        "vsock",
    ];
    let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
    KNOWN.contains(&first)
}

impl Vm {
    /// Where a path Firecracker was given is on the host.
    fn resolve(&self, path: &str) -> PathBuf {
        match &self.root {
            Some(root) => root.join(path.trim_start_matches('/')),
            None => PathBuf::from(path),
        }
    }

    /// Jailed, Firecracker opens its files at configuration as its user:
    /// one it may not open is refused there.
    fn check_files(&self, path: &str, body: &Value) -> Result<(), String> {
        if self.root.is_none() {
            return Ok(());
        }
        let open = |file: &str, write: bool| {
            std::fs::OpenOptions::new()
                .read(true)
                .write(write)
                .open(self.resolve(file))
                .map(drop)
        };
        if path.starts_with("/drives/") {
            let file = body["path_on_host"].as_str().unwrap_or_default();
            let write = !body["is_read_only"].as_bool().unwrap_or(false);
            open(file, write).map_err(|e| {
                format!(
                    "Drive config error: Unable to open the block device backing file {file}: {e}"
                )
            })?;
        }
        if path == "/boot-source" {
            for key in ["kernel_image_path", "initrd_path"] {
                if let Some(file) = body[key].as_str() {
                    open(file, false).map_err(|e| {
                        format!("Boot source error: The kernel file cannot be opened: {e}")
                    })?;
                }
            }
        }
        Ok(())
    }

    /// Keeps a configuration request's body under its section.
    fn record_config(&mut self, path: &str, body: Value) {
        let mut parts = path.trim_start_matches('/').splitn(2, '/');
        let section = parts.next().unwrap_or_default().to_string();
        if parts.next().is_some() {
            // `/drives/{id}`, `/network-interfaces/{id}`: a list by id.
            let key = if section == "drives" {
                "drive_id"
            } else {
                "iface_id"
            };
            let list = self
                .config
                .entry(section)
                .or_insert_with(|| Value::Array(Vec::new()));
            if let Value::Array(items) = list {
                items.retain(|item| item[key] != body[key]);
                items.push(body);
            }
        } else {
            self.config.insert(section, body);
        }
    }

    fn instance_state(&self) -> InstanceState {
        match (self.started, self.paused) {
            (false, _) => InstanceState::NotStarted,
            (true, false) => InstanceState::Running,
            (true, true) => InstanceState::Paused,
        }
    }

    /// `PUT /snapshot/create` of a paused machine.
    fn create_snapshot(&mut self, body: &Value) -> Result<Option<Value>, String> {
        if !self.started {
            return Err(PRE_BOOT_FAULT.into());
        }
        if !self.paused {
            return Err("Create snapshot error: the microVM is not paused".into());
        }
        let state = self.resolve(body["snapshot_path"].as_str().unwrap_or_default());
        let memory = self.resolve(body["mem_file_path"].as_str().unwrap_or_default());
        let mib = self
            .config
            .get("machine-config")
            .and_then(|m| m["mem_size_mib"].as_u64());
        let saved = json!({ STATE_MARKER: 1, "config": Value::Object(self.config.clone()) });
        let written = std::fs::write(&state, saved.to_string()).and_then(|()| {
            let file = std::fs::File::create(&memory)?;
            file.set_len(mib.unwrap_or(128) << 20)
        });
        written
            .map(|()| None)
            .map_err(|e| format!("Create snapshot error: Cannot write the snapshot files: {e}"))
    }

    /// `PUT /snapshot/load` on a fresh process; a failure is fatal.
    fn load_snapshot(&mut self, body: &Value) -> Result<Option<Value>, String> {
        let configured = self.config.keys().any(|k| k != "logger" && k != "metrics");
        if self.started || configured {
            return Err(LOAD_AFTER_CONFIG_FAULT.into());
        }
        let loaded = self.load(body);
        if let Err(err) = &loaded {
            self.fatal = Some(err.clone());
        }
        loaded
    }

    fn load(&mut self, body: &Value) -> Result<Option<Value>, String> {
        let fault =
            |e: String| format!("Load snapshot error: Failed to restore from the snapshot: {e}");
        let state = self.resolve(body["snapshot_path"].as_str().unwrap_or_default());
        let text = std::fs::read_to_string(&state)
            .map_err(|e| fault(format!("{}: {e}", state.display())))?;
        let saved: Value = serde_json::from_str(&text).map_err(|e| fault(e.to_string()))?;
        if saved.get(STATE_MARKER).is_none() {
            return Err(fault("not a snapshot state file".into()));
        }
        let memory = body["mem_backend"]["backend_path"]
            .as_str()
            .or(body["mem_file_path"].as_str())
            .map(|p| self.resolve(p))
            .unwrap_or_default();
        let mut config = saved["config"].as_object().cloned().unwrap_or_default();
        let mib = config
            .get("machine-config")
            .and_then(|m| m["mem_size_mib"].as_u64())
            .unwrap_or(128);
        let size = std::fs::metadata(&memory)
            .map(|m| m.len())
            .map_err(|e| fault(format!("{}: {e}", memory.display())))?;
        if size != mib << 20 {
            return Err(fault(format!(
                "the memory file holds {size} bytes, the machine {mib} MiB"
            )));
        }
        for drive in config
            .get("drives")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let path = drive["path_on_host"].as_str().unwrap_or_default();
            let write = !drive["is_read_only"].as_bool().unwrap_or(false);
            std::fs::OpenOptions::new()
                .read(true)
                .write(write)
                .open(self.resolve(path))
                .map_err(|e| {
                    fault(format!(
                        "Unable to open the block device backing file {path}: {e}"
                    ))
                })?;
        }
        for o in body["network_overrides"].as_array().into_iter().flatten() {
            let nics = config
                .get_mut("network-interfaces")
                .and_then(Value::as_array_mut);
            let nic = nics
                .into_iter()
                .flatten()
                .find(|n| n["iface_id"] == o["iface_id"])
                .ok_or_else(|| {
                    fault(format!(
                        "no network interface {} to override",
                        o["iface_id"]
                    ))
                })?;
            nic["host_dev_name"] = o["host_dev_name"].clone();
        }
        if let Some(uds) = body["vsock_override"].get("uds_path") {
            let vsock = config
                .get_mut("vsock")
                .ok_or_else(|| fault("no vsock device to override".into()))?;
            vsock["uds_path"] = uds.clone();
        }
        // As `GET /vm/config` shows a restored machine: no boot source.
        let boot = config.remove("boot-source");
        self.restored_guest = boot
            .as_ref()
            .and_then(|b| b["kernel_image_path"].as_str())
            .map(|k| DoubleGuest::of_kernel(&self.resolve(k)));
        for (section, value) in config {
            self.config.entry(section).or_insert(value);
        }
        self.started = true;
        self.paused = !body["resume_vm"].as_bool().unwrap_or(false);
        Ok(None)
    }

    /// Applies an already spec-valid request: the answer body for a `200`,
    /// `None` for a `204`, or the fault message.
    fn apply(&mut self, req: &FcRequest) -> Result<Option<Value>, String> {
        match (req.method, req.path.as_str()) {
            (Method::Get, "/") => {
                let info = InstanceInfo {
                    app_name: "Firecracker".into(),
                    id: "anonymous-instance".into(),
                    state: self.instance_state(),
                    vmm_version: "1.16.1".into(),
                };
                Ok(Some(serde_json::to_value(info).map_err(|e| e.to_string())?))
            }
            (Method::Get, "/machine-config") => Ok(Some(
                self.config
                    .get("machine-config")
                    .cloned()
                    .unwrap_or_else(|| json!({"vcpu_count": 1, "mem_size_mib": 128, "smt": false})),
            )),
            (Method::Get, "/vm/config") => Ok(Some(Value::Object(self.config.clone()))),
            (Method::Get, path) => Err(format!("get {path} is not implemented by the test double")),
            (Method::Put, "/actions") => {
                let action = req.body.as_ref().and_then(|b| b["action_type"].as_str());
                match action {
                    Some("InstanceStart") if self.started => Err(POST_BOOT_FAULT.into()),
                    Some("InstanceStart") => {
                        let kernel = self
                            .config
                            .get("boot-source")
                            .and_then(|b| b["kernel_image_path"].as_str())
                            .map(|path| self.resolve(path));
                        let Some(kernel) = kernel else {
                            return Err(format!(
                                "{START_FAULT_PREFIX}Cannot start microvm without kernel configuration."
                            ));
                        };
                        if let Some(fault) = DoubleGuest::of_kernel(&kernel).boot_fault() {
                            return Err(fault);
                        }
                        self.started = true;
                        Ok(None)
                    }
                    Some("SendCtrlAltDel") if !self.started => Err(PRE_BOOT_FAULT.into()),
                    Some("SendCtrlAltDel") => {
                        self.ctrl_alt_del = true;
                        Ok(None)
                    }
                    _ => Ok(None),
                }
            }
            (Method::Patch, "/vm") if !self.started => Err(PRE_BOOT_FAULT.into()),
            (Method::Patch, "/vm") => {
                let body = req.body.clone().unwrap_or(Value::Null);
                self.paused = body["state"] == "Paused";
                Ok(None)
            }
            (Method::Patch, path) => Err(format!(
                "patch {path} is not implemented by the test double"
            )),
            (Method::Put, "/snapshot/create") => {
                self.create_snapshot(req.body.as_ref().unwrap_or(&Value::Null))
            }
            (Method::Put, "/snapshot/load") => {
                self.load_snapshot(req.body.as_ref().unwrap_or(&Value::Null))
            }
            (Method::Put, path) if self.started && !PUT_AFTER_START.contains(&path) => {
                Err(POST_BOOT_FAULT.into())
            }
            (Method::Put, path) => {
                let body = req.body.clone().unwrap_or(Value::Null);
                self.check_files(path, &body)?;
                self.record_config(path, body);
                Ok(None)
            }
        }
    }
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: HttpMethod,
    uri: Uri,
    body: Bytes,
) -> Response {
    // While the machine boots from a config file, requests wait for it.
    let mut open = shared.open.subscribe();
    if !*open.borrow() {
        shared
            .waiting
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let _ = open.wait_for(|open| *open).await;
        shared
            .waiting
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
    let path = uri.path().to_string();
    let method = match method {
        HttpMethod::GET => Method::Get,
        HttpMethod::PUT => Method::Put,
        HttpMethod::PATCH => Method::Patch,
        other => {
            return fault(format!(
                "Invalid request method and/or path: {other} {}.",
                path.trim_start_matches('/')
            ))
        }
    };
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        match serde_json::from_slice::<Value>(&body) {
            Ok(v) => Some(v),
            Err(e) => return fault(format!("the request body is not json: {e}")),
        }
    };
    match shared.exchange(FcRequest { method, path, body }) {
        Ok(None) => StatusCode::NO_CONTENT.into_response(),
        Ok(Some(v)) => (StatusCode::OK, Json(v)).into_response(),
        Err(m) => fault(m),
    }
}

fn fault(message: String) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({ "fault_message": message })),
    )
        .into_response()
}
