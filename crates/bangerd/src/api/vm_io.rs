//! `/v1/vms/{vm}/exec` and `/v1/vms/{vm}/logs`: a command's output and
//! the guest console, streamed as they come.

use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use banger_core::agent::ExecChunk;
use banger_core::vm::VmState;
use banger_core::ServiceError;
use banger_proto::error::{ApiError, ErrorCode};
use banger_proto::exec::{ExecEvent, ExecRequest};
use banger_proto::progress::NDJSON;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use utoipa::IntoParams;

use super::error::HttpError;
use super::json::ApiJson;
use super::params::{ApiPath, ApiQuery};
use super::AppState;

/// Decodes what `rules::BASE64_PATTERN` admits: padded standard base64,
/// whatever the unused bits of the last symbol.
const STDIN_B64: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
);

/// Output chunks held for a client that reads slower than the guest
/// writes (each at most an agent line: 64 KiB of output).
const EXEC_DEPTH: usize = 16;

#[utoipa::path(post, path = "/v1/vms/{vm}/exec", tag = "vms", request_body = ExecRequest,
    params(("vm" = String, Path, description = "VM name or id")),
    responses(
        (status = 200, description = "The command's output as it comes, one event per line",
            body = ExecEvent, content_type = "application/x-ndjson"),
        (status = 400, description = "The body breaks the schema", body = ApiError),
        (status = 404, description = "No such VM", body = ApiError),
        (status = 409, description = "The VM is not running", body = ApiError),
        (status = 422, description = "The command is empty", body = ApiError),
        (status = 501, description = "This daemon cannot run VMs", body = ApiError)))]
pub async fn exec(
    State(state): State<AppState>,
    ApiPath(vm): ApiPath<String>,
    ApiJson(request): ApiJson<ExecRequest>,
) -> Result<Response, HttpError> {
    // No argv is against the schema (400); an empty command is well
    // formed but names nothing to run.
    let code = match request.argv.first() {
        None => Some(ErrorCode::InvalidInput),
        Some(command) if command.is_empty() => Some(ErrorCode::Unprocessable),
        Some(_) => None,
    };
    if let Some(code) = code {
        return Err(HttpError::new(
            code,
            "exec needs a command",
            Some("give the command after --, like `banger vm exec web -- uname -a`"),
        ));
    }
    // The type checked the alphabet and padding, as its pattern says.
    let stdin = match request.stdin.as_ref().map(|s| STDIN_B64.decode(s.as_str())) {
        Some(Ok(bytes)) => Some(bytes),
        Some(Err(_)) => {
            return Err(HttpError::new(
                ErrorCode::InvalidInput,
                "stdin is not base64",
                None,
            ))
        }
        None => None,
    };
    let found = state.banger.find_vm(&vm)?;
    if found.state != VmState::Running {
        return Err(ServiceError::NotRunning {
            name: found.name,
            state: found.state.as_str(),
        }
        .into());
    }
    // Bounded both ways: output waits for the client to read it.
    let (chunks_tx, mut chunks) = mpsc::channel::<ExecChunk>(EXEC_DEPTH);
    let (lines_tx, lines) = mpsc::channel::<ExecEvent>(EXEC_DEPTH);
    let banger = state.banger.clone();
    tokio::spawn(async move {
        let forward = lines_tx.clone();
        let pump = tokio::spawn(async move {
            while let Some(chunk) = chunks.recv().await {
                let event = match chunk {
                    ExecChunk::Stdout(b) => ExecEvent::Stdout {
                        data: B64.encode(b),
                    },
                    ExecChunk::Stderr(b) => ExecEvent::Stderr {
                        data: B64.encode(b),
                    },
                    ExecChunk::Exit { code, signal } => ExecEvent::Exit { code, signal },
                };
                if forward.send(event).await.is_err() {
                    return;
                }
            }
        });
        let ran = banger
            .exec(&found.id, request.argv, (stdin, request.user), chunks_tx)
            .await;
        let _ = pump.await;
        if let Err(err) = ran {
            let _ = lines_tx
                .send(ExecEvent::Error {
                    error: HttpError::from(err).0,
                })
                .await;
        }
    });
    let body = ReceiverStream::new(lines).map(|event| {
        let mut line = serde_json::to_vec(&event).unwrap_or_default();
        line.push(b'\n');
        Ok::<_, std::convert::Infallible>(line)
    });
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, NDJSON)],
        Body::from_stream(body),
    )
        .into_response())
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogsQuery {
    /// Keep the stream open and send new console output as it comes,
    /// until the VM stops.
    #[serde(default)]
    follow: bool,
}

#[utoipa::path(get, path = "/v1/vms/{vm}/logs", tag = "vms",
    params(("vm" = String, Path, description = "VM name or id"), LogsQuery),
    responses(
        (status = 200, description = "The guest console of the last boot", body = String,
            content_type = "text/plain"),
        (status = 400, description = "A parameter is malformed (`follow` takes true or false)", body = ApiError),
        (status = 404, description = "No such VM", body = ApiError)))]
pub async fn logs(
    State(state): State<AppState>,
    ApiPath(vm): ApiPath<String>,
    ApiQuery(query): ApiQuery<LogsQuery>,
) -> Result<Response, HttpError> {
    let vm = state.banger.find_vm(&vm)?;
    let path = state.banger.serial_log(&vm);
    let (tx, rx) = mpsc::channel::<Vec<u8>>(16);
    let banger = state.banger.clone();
    tokio::spawn(async move {
        let Ok(mut file) = tokio::fs::File::open(&path).await else {
            return;
        };
        let mut offset = 0u64;
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            let n = file.read(&mut buffer).await.unwrap_or(0);
            if n > 0 {
                offset += n as u64;
                if tx.send(buffer[..n].to_vec()).await.is_err() {
                    return;
                }
                continue;
            }
            if !query.follow {
                return;
            }
            let active = banger
                .find_vm(&vm.id)
                .map(|v| v.state.is_active())
                .unwrap_or(false);
            if !active {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            // A restart starts a fresh log: read it from the top.
            let len = tokio::fs::metadata(&path)
                .await
                .map(|m| m.len())
                .unwrap_or(0);
            if len < offset {
                offset = 0;
                let _ = file.seek(std::io::SeekFrom::Start(0)).await;
            }
        }
    });
    let body =
        tokio_stream::wrappers::ReceiverStream::new(rx).map(Ok::<_, std::convert::Infallible>);
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        Body::from_stream(body),
    )
        .into_response())
}
