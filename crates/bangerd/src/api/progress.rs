//! Long operations over HTTP. With `Accept: application/x-ndjson` the
//! operation runs in a task and its progress streams back one event per
//! line, ending with the result or the error; when the client goes away
//! (Ctrl-C) the operation is dropped, which cancels it and removes its
//! staging. Without that header the handler waits and answers with the
//! result as plain JSON.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use banger_core::image::Image;
use banger_core::images::ImageError;
use banger_core::progress::{LogProgress, Progress};
use banger_core::ServiceError;
use banger_proto::progress::{ProgressEvent, NDJSON};
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_stream::StreamExt;

use super::convert;
use super::error::HttpError;

/// Byte counts are sent at most this often.
const BYTES_EVERY: Duration = Duration::from_millis(200);

/// Sends progress into the response stream.
struct ChannelProgress {
    tx: mpsc::UnboundedSender<ProgressEvent>,
    started: Instant,
    last_bytes: Mutex<Option<Instant>>,
}

impl ChannelProgress {
    fn elapsed_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }
}

impl Progress for ChannelProgress {
    fn stage(&self, name: &str) {
        tracing::info!(stage = name, "progress");
        let _ = self.tx.send(ProgressEvent::Stage {
            stage: name.to_string(),
            elapsed_ms: self.elapsed_ms(),
        });
    }

    fn bytes(&self, done: u64, total: Option<u64>) {
        let mut last = self.last_bytes.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let due = last.is_none_or(|t| now.duration_since(t) >= BYTES_EVERY);
        if due || Some(done) == total {
            *last = Some(now);
            let _ = self.tx.send(ProgressEvent::Bytes { done, total });
        }
    }

    fn note(&self, line: &str) {
        let _ = self.tx.send(ProgressEvent::Note {
            line: line.to_string(),
        });
    }
}

/// An operation that makes an image, given where to report progress.
pub type ImageOp<E = ImageError> = Box<
    dyn FnOnce(Arc<dyn Progress>) -> Pin<Box<dyn Future<Output = Result<Image, E>> + Send>> + Send,
>;

/// Does the client want a progress stream?
pub fn wants_stream(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains(NDJSON))
}

/// Runs an image operation, streamed or not (see the module header).
pub async fn run_image_op<E: Into<ServiceError> + Send + 'static>(
    headers: &HeaderMap,
    ok_status: StatusCode,
    op: ImageOp<E>,
) -> Result<Response, HttpError> {
    if !wants_stream(headers) {
        let image = op(Arc::new(LogProgress)).await.map_err(Into::into)?;
        return Ok((ok_status, Json(convert::image(&image))).into_response());
    }
    let (tx, rx) = mpsc::unbounded_channel();
    let progress = Arc::new(ChannelProgress {
        tx: tx.clone(),
        started: Instant::now(),
        last_bytes: Mutex::new(None),
    });
    tokio::spawn(async move {
        let started = progress.started;
        let work = op(progress);
        tokio::select! {
            result = work => {
                let elapsed_ms = started.elapsed().as_millis() as u64;
                let event = match result {
                    Ok(image) => ProgressEvent::Image { image: Box::new(convert::image(&image)), elapsed_ms },
                    Err(err) => ProgressEvent::Error {
                        error: HttpError::from(err.into()).0,
                        elapsed_ms,
                    },
                };
                let _ = tx.send(event);
            }
            _ = tx.closed() => {
                tracing::warn!("client went away: operation cancelled");
            }
        }
    });
    Ok(stream_response(rx))
}

fn stream_response(rx: mpsc::UnboundedReceiver<ProgressEvent>) -> Response {
    let lines = UnboundedReceiverStream::new(rx).map(|event| {
        let mut line = serde_json::to_vec(&event).unwrap_or_default();
        line.push(b'\n');
        Ok::<_, std::convert::Infallible>(line)
    });
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, NDJSON)],
        Body::from_stream(lines),
    )
        .into_response()
}

/// `vm create` with a progress stream. The create runs to its end even if
/// the client goes away (Ctrl-C); then the half-wanted VM is removed, so
/// nothing is left half-made.
pub fn stream_create(
    banger: Arc<banger_core::Banger>,
    params: banger_core::spec::CreateParams,
    warmer: Option<Arc<crate::warm::Warmer>>,
) -> Response {
    let (tx, rx) = mpsc::unbounded_channel();
    let progress = Arc::new(ChannelProgress {
        tx: tx.clone(),
        started: Instant::now(),
        last_bytes: Mutex::new(None),
    });
    tokio::spawn(async move {
        let started = progress.started;
        let result = banger.create_vm_watched(params, Some(progress)).await;
        let elapsed_ms = started.elapsed().as_millis() as u64;
        if let (Ok(vm), Some(warmer)) = (&result, &warmer) {
            warmer.after_create(vm);
        }
        if tx.is_closed() {
            // Made (running or failed) but nobody waits for it: remove it.
            let abandoned = match &result {
                Ok(vm) => Some(vm.id.clone()),
                Err(ServiceError::Boot { name, .. }) => Some(name.clone()),
                Err(_) => None,
            };
            if let Some(vm) = abandoned {
                tracing::warn!(vm = %vm, "client went away during create: removing the vm");
                if let Err(err) = banger.delete_vm(&vm, true).await {
                    tracing::warn!(vm = %vm, error = %err, "cannot remove the abandoned vm");
                }
            }
            return;
        }
        let event = match result {
            Ok(vm) => ProgressEvent::Vm {
                vm: Box::new(convert::vm(&vm)),
                elapsed_ms,
            },
            Err(err) => ProgressEvent::Error {
                error: HttpError::from(err).0,
                elapsed_ms,
            },
        };
        let _ = tx.send(event);
    });
    stream_response(rx)
}
