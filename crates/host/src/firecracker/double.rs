//! TEST DOUBLE for a Firecracker process. Firecracker cannot be installed
//! (or boot anything) on every machine the tests run on, so
//! `FirecrackerDouble` stands in for its API socket: it serves HTTP on a
//! unix socket, refuses what Firecracker v1.16.1 would refuse (anything
//! its own API description, [`ApiSpec`], rejects; a second
//! `InstanceStart`; reconfiguring a pre-boot-only resource after start;
//! `SendCtrlAltDel` before start) with `400 {"fault_message": ...}`, keeps
//! the instance state, and records every request. It does NOT boot a VM,
//! run a guest, open TAP devices or vsock sockets, or write the log and
//! metrics files; `GET`s other than `GET /` are refused. Never use it
//! outside tests.

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
/// the double refuses after start; `PATCH` is not modelled).
const PUT_AFTER_START: &[&str] = &["/actions", "/mmds"];

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
}

#[derive(Default)]
struct Vm {
    exchanges: Vec<Exchange>,
    started: bool,
    boot_source: bool,
    ctrl_alt_del: bool,
}

impl FirecrackerDouble {
    /// Binds `socket_path` and serves on it until [`shutdown`] (or drop).
    /// The socket exists when this returns. Must run inside a tokio
    /// runtime.
    ///
    /// [`shutdown`]: FirecrackerDouble::shutdown
    pub async fn spawn(socket_path: impl Into<PathBuf>) -> io::Result<FirecrackerDouble> {
        let socket = socket_path.into();
        let listener = UnixListener::bind(&socket)?;
        let shared = Arc::new(Shared {
            spec: ApiSpec::load(),
            state: Mutex::new(Vm::default()),
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
    /// Firecracker would exit once the guest reboots).
    pub fn stopped(&self) -> bool {
        self.shared.vm().ctrl_alt_del
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
}

impl Vm {
    fn instance_state(&self) -> InstanceState {
        if self.started {
            InstanceState::Running
        } else {
            InstanceState::NotStarted
        }
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
            (Method::Get, path) => Err(format!("get {path} is not implemented by the test double")),
            (Method::Put, "/actions") => {
                let action = req.body.as_ref().and_then(|b| b["action_type"].as_str());
                match action {
                    Some("InstanceStart") if self.started => Err(POST_BOOT_FAULT.into()),
                    Some("InstanceStart") if !self.boot_source => {
                        Err("Cannot start microvm without kernel configuration.".into())
                    }
                    Some("InstanceStart") => {
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
            (Method::Put, path) if self.started && !PUT_AFTER_START.contains(&path) => {
                Err(POST_BOOT_FAULT.into())
            }
            (Method::Put, path) => {
                if path == "/boot-source" {
                    self.boot_source = true;
                }
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
    let path = uri.path().to_string();
    let method = match method {
        HttpMethod::GET => Method::Get,
        HttpMethod::PUT => Method::Put,
        other => {
            return fault(format!(
                "method {other} is not supported by the test double"
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
    let request = FcRequest { method, path, body };
    // Apply and record under one lock, so the record's order is the order
    // the state changed in.
    let mut vm = shared.vm();
    let outcome = match shared.spec.check_request(&request) {
        Err(errs) => Err(errs.join("; ")),
        Ok(()) => vm.apply(&request),
    };
    let (status, fault_message, response) = match outcome {
        Ok(None) => (
            StatusCode::NO_CONTENT,
            None,
            StatusCode::NO_CONTENT.into_response(),
        ),
        Ok(Some(v)) => (
            StatusCode::OK,
            None,
            (StatusCode::OK, Json(v)).into_response(),
        ),
        Err(m) => (StatusCode::BAD_REQUEST, Some(m.clone()), fault(m)),
    };
    vm.exchanges.push(Exchange {
        request,
        status: status.as_u16(),
        fault: fault_message,
    });
    response
}

fn fault(message: String) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({ "fault_message": message })),
    )
        .into_response()
}
