//! `/v1/vms/{vm}/terminal`: `vm exec -it`. The request asks to upgrade
//! the connection (`Upgrade: tcp`, as Docker's attach does); after `101
//! Switching Protocols` both sides send JSON lines: the client a `start`
//! then keystrokes and window sizes (`TerminalInput`), the daemon the
//! terminal's output and its end (`ExecEvent`). Lines from the client
//! are read with a length cap; output waits for a slow client
//! (bounded channels), so neither side can grow the daemon.

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use banger_core::agent::{ExecChunk, TerminalInput as Typed};
use banger_core::vm::VmState;
use banger_core::ServiceError;
use banger_proto::error::{ApiError, ErrorCode};
use banger_proto::exec::{ExecEvent, TerminalInput};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hyper_util::rt::TokioIo;
use tokio::io::{
    AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader,
};
use tokio::sync::mpsc;

use super::error::HttpError;
use super::params::ApiPath;
use super::AppState;

/// Longest line a client may send (a base64 chunk of typed bytes).
const MAX_LINE: u64 = 256 * 1024;
/// Chunks in flight each way.
const DEPTH: usize = 64;

/// The one protocol a terminal connection upgrades to.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
enum TerminalProtocol {
    #[schema(rename = "tcp")]
    Tcp,
}

#[utoipa::path(post, path = "/v1/vms/{vm}/terminal", tag = "vms",
    params(("vm" = String, Path, description = "VM name or id"),
        ("Connection" = String, Header, pattern = "^[Uu]pgrade$",
            description = "`Upgrade`"),
        ("Upgrade" = inline(TerminalProtocol), Header,
            description = "`tcp`: the connection becomes the terminal's")),
    responses(
        (status = 101, description = "The connection now carries `TerminalInput` lines in and `ExecEvent` lines out",
            body = ExecEvent, content_type = "application/x-ndjson"),
        (status = 400, description = "The request does not ask for an upgrade to `tcp`, or the path is not valid UTF-8", body = ApiError),
        (status = 404, description = "No such VM", body = ApiError),
        (status = 409, description = "The VM is not running", body = ApiError),
        (status = 501, description = "This daemon cannot run VMs", body = ApiError)))]
pub async fn terminal(
    State(state): State<AppState>,
    ApiPath(vm): ApiPath<String>,
    mut request: Request,
) -> Result<Response, HttpError> {
    let value = |name| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    };
    // Exactly what the schema states.
    let asks = matches!(value(header::CONNECTION), "Upgrade" | "upgrade");
    if !asks || value(header::UPGRADE) != "tcp" {
        return Err(HttpError::new(
            ErrorCode::InvalidInput,
            "a terminal needs the connection: send Connection: Upgrade and Upgrade: tcp",
            Some("use `banger vm exec -it VM`"),
        ));
    }
    let found = state.banger.find_vm(&vm)?;
    if found.state != VmState::Running {
        return Err(ServiceError::NotRunning {
            name: found.name,
            state: found.state.as_str(),
        }
        .into());
    }
    let upgrading = hyper::upgrade::on(&mut request);
    let banger = state.banger.clone();
    tokio::spawn(async move {
        let upgraded = match upgrading.await {
            Ok(upgraded) => upgraded,
            Err(err) => {
                tracing::debug!(error = %err, "terminal upgrade failed");
                return;
            }
        };
        let (reader, writer) = tokio::io::split(TokioIo::new(upgraded));
        serve(banger, found.id, BufReader::new(reader), writer).await;
    });
    let mut response = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("tcp"));
    Ok(response)
}

/// Reads one line of at most `MAX_LINE` bytes; `None` at the end or on
/// a line too long.
async fn next_line(reader: &mut (impl AsyncBufRead + Unpin)) -> Option<TerminalInput> {
    let mut line = Vec::new();
    let read = (&mut *reader)
        .take(MAX_LINE)
        .read_until(b'\n', &mut line)
        .await
        .ok()?;
    if read == 0 || !line.ends_with(b"\n") {
        return None;
    }
    serde_json::from_slice(&line).ok()
}

async fn send(writer: &mut (impl AsyncWrite + Unpin), event: &ExecEvent) -> bool {
    let mut line = serde_json::to_vec(event).unwrap_or_default();
    line.push(b'\n');
    writer.write_all(&line).await.is_ok() && writer.flush().await.is_ok()
}

async fn serve(
    banger: std::sync::Arc<banger_core::Banger>,
    vm: String,
    mut reader: impl AsyncBufRead + Unpin + Send + 'static,
    mut writer: impl AsyncWrite + Unpin + Send + 'static,
) {
    let refuse = |message: &str| ExecEvent::Error {
        error: ApiError::new(
            ErrorCode::InvalidInput,
            message,
            Some(
                "send a start line first: {\"type\":\"start\",\"argv\":[],\"rows\":24,\"cols\":80}"
                    .into(),
            ),
        ),
    };
    let (argv, user, size) = match next_line(&mut reader).await {
        Some(TerminalInput::Start {
            argv,
            rows,
            cols,
            user,
        }) => (argv, user, (rows.max(1), cols.max(1))),
        _ => {
            send(
                &mut writer,
                &refuse("the terminal did not start with a start line"),
            )
            .await;
            return;
        }
    };
    let (typed_tx, typed_rx) = mpsc::channel::<Typed>(DEPTH);
    let (out_tx, mut out_rx) = mpsc::channel::<ExecChunk>(DEPTH);
    let running = tokio::spawn(async move {
        banger
            .terminal(&vm, (argv, user), size, typed_rx, out_tx)
            .await
    });
    // Keystrokes from the client go in while output goes out; the input
    // side ends (hanging the terminal up) when the client closes.
    let input = tokio::spawn(async move {
        while let Some(line) = next_line(&mut reader).await {
            let typed = match line {
                TerminalInput::Stdin { data } => match B64.decode(data) {
                    Ok(bytes) => Typed::Data(bytes),
                    Err(_) => break,
                },
                TerminalInput::Resize { rows, cols } => Typed::Resize {
                    rows: rows.max(1),
                    cols: cols.max(1),
                },
                TerminalInput::Start { .. } => break,
            };
            if typed_tx.send(typed).await.is_err() {
                break;
            }
        }
    });
    while let Some(chunk) = out_rx.recv().await {
        let event = match chunk {
            ExecChunk::Stdout(b) | ExecChunk::Stderr(b) => ExecEvent::Stdout {
                data: B64.encode(b),
            },
            ExecChunk::Exit { code, signal } => ExecEvent::Exit { code, signal },
        };
        if !send(&mut writer, &event).await {
            break;
        }
    }
    input.abort();
    if let Ok(Err(err)) = running.await {
        send(
            &mut writer,
            &ExecEvent::Error {
                error: HttpError::from(err).0,
            },
        )
        .await;
    }
    let _ = writer.shutdown().await;
}
