//! `/v1/vms/{vm}/files`: `vm cp`'s archives (tar) in and out of a running
//! VM, streamed both ways: an archive going in waits for the guest to
//! take it (the agent's chunk window), one coming out for the client to
//! read it. The client packs and unpacks host files itself, with its own
//! rights; the daemon never touches them.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use banger_proto::error::{ApiError, ErrorCode};
use banger_proto::rules::GuestPath;
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use utoipa::IntoParams;

use super::error::HttpError;
use super::params::{ApiPath, ApiQuery};
use super::AppState;

/// A copy's archive as the API description states it: bytes.
#[derive(utoipa::ToSchema)]
#[schema(value_type = String, format = Binary)]
#[allow(dead_code)]
pub struct TarArchive(Vec<u8>);

/// The media type of a copy's archive.
pub const TAR: &str = "application/x-tar";
/// Pieces of an archive held between the client and the guest.
const DEPTH: usize = 4;
/// How much of a refused archive is still read (and dropped) before the
/// refusal is answered, and for how long.
const DRAIN_LIMIT: usize = 64 << 20;
const DRAIN_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FilesQuery {
    /// Where in the VM: an existing directory receives the archive's
    /// top entry under its own name, another path names it.
    path: GuestPath,
    /// Keep the numeric owners the archive records (else the VM user's).
    #[serde(default)]
    keep_owners: bool,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FileQuery {
    /// The file, link or directory in the VM to pack.
    path: GuestPath,
}

#[utoipa::path(put, path = "/v1/vms/{vm}/files", tag = "vms",
    params(("vm" = String, Path, description = "VM name or id"), FilesQuery),
    request_body(content = TarArchive, content_type = "application/octet-stream",
        description = "A tar archive whose entries share one top-level name"),
    responses(
        (status = 204, description = "Everything is written in the VM"),
        (status = 400, description = "A parameter is malformed, or the archive is refused", body = ApiError),
        (status = 404, description = "No such VM, or no such directory in it", body = ApiError),
        (status = 409, description = "The VM is not running, or a directory would replace a file", body = ApiError),
        (status = 422, description = "The guest could not write it (not a directory, permissions, space)", body = ApiError),
        (status = 501, description = "This daemon cannot run VMs", body = ApiError)))]
pub async fn copy_in(
    State(state): State<AppState>,
    ApiPath(vm): ApiPath<String>,
    ApiQuery(query): ApiQuery<FilesQuery>,
    body: Body,
) -> Result<StatusCode, HttpError> {
    let (tx, rx) = mpsc::channel::<Result<Vec<u8>, String>>(DEPTH);
    let mut feed = tokio::spawn(async move {
        let mut frames = body.into_data_stream();
        let mut dropped = 0usize;
        while let Some(frame) = frames.next().await {
            let bytes = match frame {
                Ok(bytes) => bytes,
                // A body that breaks off abandons the copy in the guest.
                Err(e) => {
                    let _ = tx.send(Err(e.to_string())).await;
                    return;
                }
            };
            if tx.is_closed() {
                // The copy ended early (refused): the rest is read and
                // dropped, up to a bound, so the answer comes after it.
                dropped += bytes.len();
                if dropped > DRAIN_LIMIT {
                    return;
                }
            } else {
                let _ = tx.send(Ok(bytes.to_vec())).await;
            }
        }
    });
    let copied = state
        .banger
        .copy_in(&vm, query.path.as_str(), query.keep_owners, rx)
        .await;
    if copied.is_err() {
        // A client still sending when the answer comes and the connection
        // closes sees its write fail, not the answer.
        let _ = tokio::time::timeout(DRAIN_WAIT, &mut feed).await;
    }
    feed.abort();
    copied?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/v1/vms/{vm}/files", tag = "vms",
    params(("vm" = String, Path, description = "VM name or id"), FileQuery),
    responses(
        (status = 200, description = "A tar archive of the path under its own name, as it is packed",
            body = TarArchive, content_type = "application/x-tar"),
        (status = 400, description = "A parameter is malformed", body = ApiError),
        (status = 404, description = "No such VM, or no such file in it", body = ApiError),
        (status = 409, description = "The VM is not running", body = ApiError),
        (status = 422, description = "The guest could not read it", body = ApiError),
        (status = 501, description = "This daemon cannot run VMs", body = ApiError)))]
pub async fn copy_out(
    State(state): State<AppState>,
    ApiPath(vm): ApiPath<String>,
    ApiQuery(query): ApiQuery<FileQuery>,
) -> Result<Response, HttpError> {
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(DEPTH);
    let banger = state.banger.clone();
    let copy = tokio::spawn(async move { banger.copy_out(&vm, query.path.as_str(), tx).await });
    let lost = |e: tokio::task::JoinError| {
        HttpError::new(ErrorCode::Internal, format!("the copy failed: {e}"), None)
    };
    // The status waits for the first piece: a path the guest cannot pack
    // is an error answer, not a broken archive.
    let first = rx.recv().await;
    if first.is_none() {
        // Nothing came: the copy's end says why (an empty archive is
        // not something the guest sends).
        copy.await.map_err(lost)??;
        return Err(HttpError::new(
            ErrorCode::Internal,
            "the guest sent no archive",
            None,
        ));
    }
    let (body_tx, body) = mpsc::channel::<Result<Vec<u8>, std::io::Error>>(DEPTH);
    tokio::spawn(async move {
        let mut next = first;
        while let Some(bytes) = next {
            if body_tx.send(Ok(bytes)).await.is_err() {
                copy.abort();
                return;
            }
            next = rx.recv().await;
        }
        // A failure after the first piece breaks the stream: the client
        // sees a truncated archive, never a whole-looking one.
        let end = match copy.await {
            Ok(Ok(())) => return,
            Ok(Err(err)) => err.to_string(),
            Err(err) => err.to_string(),
        };
        let _ = body_tx.send(Err(std::io::Error::other(end))).await;
    });
    let stream = ReceiverStream::new(body);
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, TAR)],
        Body::from_stream(stream),
    )
        .into_response())
}
