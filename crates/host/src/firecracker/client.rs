//! Talking to a running Firecracker: `FirecrackerClient` sends one
//! [`FcRequest`] over the API unix socket as HTTP/1.1 and maps the answer
//! (Firecracker v1.16.1: success is `204` with no body, `GET /` is `200`
//! with `InstanceInfo`, every error is `400` with `{"fault_message": ...}`)
//! to a result; `configure_and_start` sends the boot plan in order; and
//! `remove_stale_sockets` clears the sockets a killed Firecracker leaves.

use std::io;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::header::{ACCEPT, CONTENT_TYPE, HOST};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use thiserror::Error;
use tokio::net::UnixStream;

use super::api::{FcRequest, InstanceInfo, Method};
use super::plan::{self, FirecrackerBootConfig, PlanError};

/// How long one request may take (connect, send, read the answer) unless
/// the caller says otherwise. Firecracker answers configuration requests
/// in milliseconds; `InstanceStart` takes longest.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a request to Firecracker failed.
#[derive(Debug, Error)]
pub enum FirecrackerError {
    /// The socket is missing, refuses connections, or is not a socket.
    #[error("cannot connect to the firecracker api socket {}: {source}", path.display())]
    Connect {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("firecracker did not answer {path} within {}", humanize(*timeout))]
    Timeout { path: String, timeout: Duration },
    /// Firecracker refused the request; `message` is its `fault_message`.
    #[error("firecracker refused {path}: {message}")]
    Fault { path: String, message: String },
    /// A status Firecracker does not use, or an error without a
    /// `fault_message`.
    #[error("firecracker answered {path} with unexpected status {status}")]
    Unexpected { path: String, status: u16 },
    /// The HTTP exchange broke after connecting (connection closed, bad
    /// framing, unparsable answer body).
    #[error("http exchange with firecracker on {path} failed: {message}")]
    Protocol { path: String, message: String },
}

/// Why `configure_and_start` stopped.
#[derive(Debug, Error)]
pub enum BootError {
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// Request `step` (1-based) of `total` failed; the ones before it were
    /// accepted, the ones after it were not sent.
    #[error("boot request {step} of {total} ({} {path}) failed: {source}", method.as_str())]
    Request {
        step: usize,
        total: usize,
        method: Method,
        path: String,
        #[source]
        source: FirecrackerError,
    },
}

/// A client of one Firecracker's API socket. Each request uses its own
/// connection, so the client holds no connection state.
#[derive(Debug, Clone)]
pub struct FirecrackerClient {
    socket: PathBuf,
    timeout: Duration,
}

impl FirecrackerClient {
    pub fn new(socket: impl Into<PathBuf>) -> FirecrackerClient {
        FirecrackerClient {
            socket: socket.into(),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// The same client with another per-request timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> FirecrackerClient {
        self.timeout = timeout;
        self
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Sends `req`. `Ok(None)` for a `204`; `Ok(Some(body))` for a `200`
    /// with a JSON body.
    pub async fn send(&self, req: &FcRequest) -> Result<Option<Value>, FirecrackerError> {
        match tokio::time::timeout(self.timeout, self.exchange(req)).await {
            Ok(result) => result,
            Err(_) => Err(FirecrackerError::Timeout {
                path: req.path.clone(),
                timeout: self.timeout,
            }),
        }
    }

    /// `GET /`: the instance's id, state and version.
    pub async fn describe(&self) -> Result<InstanceInfo, FirecrackerError> {
        let req = plan::describe_request();
        let body = self.send(&req).await?;
        serde_json::from_value(body.unwrap_or(Value::Null)).map_err(|e| {
            FirecrackerError::Protocol {
                path: req.path.clone(),
                message: format!("answer is not an instance info: {e}"),
            }
        })
    }

    async fn exchange(&self, req: &FcRequest) -> Result<Option<Value>, FirecrackerError> {
        let path = &req.path;
        let protocol = |message: String| FirecrackerError::Protocol {
            path: path.clone(),
            message,
        };
        let stream = UnixStream::connect(&self.socket).await.map_err(|source| {
            FirecrackerError::Connect {
                path: self.socket.clone(),
                source,
            }
        })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| protocol(e.to_string()))?;
        let request = http_request(req).map_err(|e| protocol(e.to_string()))?;
        // The connection future does the I/O; drive it alongside the
        // response. If it finishes first (the peer closed after answering),
        // the response may still be complete, so wait for that.
        let response = async {
            let resp = sender.send_request(request).await?;
            let status = resp.status();
            let body = resp.into_body().collect().await?.to_bytes();
            Ok::<_, hyper::Error>((status, body))
        };
        let mut response = std::pin::pin!(response);
        let mut conn = std::pin::pin!(conn);
        let (status, body) = tokio::select! {
            biased;
            r = &mut response => r,
            c = &mut conn => match c {
                Ok(()) => response.await,
                Err(e) => Err(e),
            },
        }
        .map_err(|e| protocol(e.to_string()))?;
        interpret(path, status, &body)
    }
}

/// Sends the boot plan for `cfg` in order, stopping at the first request
/// Firecracker does not accept.
pub async fn configure_and_start(
    client: &FirecrackerClient,
    cfg: &FirecrackerBootConfig,
) -> Result<(), BootError> {
    let reqs = plan::boot_requests(cfg)?;
    let total = reqs.len();
    for (i, req) in reqs.into_iter().enumerate() {
        if let Err(source) = client.send(&req).await {
            return Err(BootError::Request {
                step: i + 1,
                total,
                method: req.method,
                path: req.path,
                source,
            });
        }
    }
    Ok(())
}

/// Removes the API socket and the vsock socket a previous Firecracker left
/// behind (it does not unlink them on `SIGTERM`, and binding them again
/// fails). Missing files are fine; a file that exists but is not a socket
/// is left alone and reported, since it is not Firecracker's.
pub fn remove_stale_sockets(api_sock: &Path, vsock_uds: &Path) -> io::Result<()> {
    for path in [api_sock, vsock_uds] {
        match std::fs::symlink_metadata(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
            Ok(meta) if meta.file_type().is_socket() => match std::fs::remove_file(path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            },
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!(
                        "{} exists and is not a socket; not removing it",
                        path.display()
                    ),
                ))
            }
        }
    }
    Ok(())
}

fn http_request(req: &FcRequest) -> Result<Request<Full<Bytes>>, hyper::http::Error> {
    let method = match req.method {
        Method::Get => hyper::Method::GET,
        Method::Put => hyper::Method::PUT,
        Method::Patch => hyper::Method::PATCH,
    };
    let builder = Request::builder()
        .method(method)
        .uri(req.path.as_str())
        .header(HOST, "localhost")
        .header(ACCEPT, "application/json");
    match &req.body {
        None => builder.body(Full::new(Bytes::new())),
        Some(body) => builder
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.to_string()))),
    }
}

/// Firecracker's answer as a result.
fn interpret(
    path: &str,
    status: StatusCode,
    body: &[u8],
) -> Result<Option<Value>, FirecrackerError> {
    let json = || -> Option<Value> { serde_json::from_slice(body).ok() };
    if status.is_success() {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        return json().map(Some).ok_or_else(|| FirecrackerError::Protocol {
            path: path.to_string(),
            message: format!("status {} with a body that is not json", status.as_u16()),
        });
    }
    match json()
        .as_ref()
        .and_then(|v| v.get("fault_message")?.as_str())
    {
        Some(message) => Err(FirecrackerError::Fault {
            path: path.to_string(),
            message: message.to_string(),
        }),
        None => Err(FirecrackerError::Unexpected {
            path: path.to_string(),
            status: status.as_u16(),
        }),
    }
}

fn humanize(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn answers_are_interpreted() {
        assert_eq!(interpret("/x", StatusCode::NO_CONTENT, b"").unwrap(), None);
        assert_eq!(
            interpret("/", StatusCode::OK, br#"{"state":"Running"}"#).unwrap(),
            Some(json!({"state": "Running"}))
        );
        let e = interpret("/x", StatusCode::BAD_REQUEST, br#"{"fault_message":"no"}"#);
        assert!(
            matches!(&e, Err(FirecrackerError::Fault { path, message }) if path == "/x" && message == "no"),
            "{e:?}"
        );
        let e = interpret("/x", StatusCode::NOT_FOUND, b"");
        assert!(
            matches!(e, Err(FirecrackerError::Unexpected { status: 404, .. })),
            "{e:?}"
        );
        let e = interpret("/x", StatusCode::OK, b"<html>");
        assert!(matches!(e, Err(FirecrackerError::Protocol { .. })), "{e:?}");
    }

    #[test]
    fn messages_are_lowercase_one_liners() {
        let errs = [
            FirecrackerError::Connect {
                path: "/run/fc.sock".into(),
                source: io::Error::from(io::ErrorKind::NotFound),
            },
            FirecrackerError::Timeout {
                path: "/actions".into(),
                timeout: Duration::from_millis(1500),
            },
            FirecrackerError::Unexpected {
                path: "/".into(),
                status: 500,
            },
        ];
        for e in errs {
            let m = e.to_string();
            assert!(!m.contains('\n'), "{m}");
            assert!(m.starts_with(|c: char| c.is_lowercase()), "{m}");
        }
    }
}
