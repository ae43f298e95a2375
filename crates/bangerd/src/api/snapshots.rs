//! Snapshots: take one of a running VM, fork a running VM, list, show
//! and remove them, and make an image's warm template. A VM starts from
//! a snapshot through `POST /v1/vms` with `from`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use banger_proto::error::ApiError;
use banger_proto::snapshot::{ForkResult, Snapshot, SnapshotList};
use banger_proto::vm::{VmForkRequest, VmSnapshotRequest};

use super::convert;
use super::error::HttpError;
use super::json::ApiJson;
use super::params::ApiPath;
use super::vms::to_completion;
use super::AppState;

#[utoipa::path(post, path = "/v1/vms/{vm}/snapshot", tag = "snapshots",
    request_body = VmSnapshotRequest,
    params(("vm" = String, Path, description = "VM name or id")),
    responses(
        (status = 201, description = "The snapshot; the VM runs on", body = Snapshot),
        (status = 400, description = "The body breaks the schema", body = ApiError),
        (status = 404, description = "No such VM", body = ApiError),
        (status = 409, description = "The VM is not running, or the name is taken", body = ApiError),
        (status = 500, description = "The VM could not be saved (a full disk); nothing was kept", body = ApiError),
        (status = 501, description = "This daemon's VMM cannot save VMs", body = ApiError)))]
pub async fn snapshot_vm(
    State(state): State<AppState>,
    ApiPath(vm): ApiPath<String>,
    ApiJson(request): ApiJson<VmSnapshotRequest>,
) -> Result<(StatusCode, Json<Snapshot>), HttpError> {
    let banger = state.banger.clone();
    let name = request.name.map(String::from);
    let snapshot = to_completion(async move { banger.snapshot_vm(&vm, name).await }).await?;
    Ok((StatusCode::CREATED, Json(convert::snapshot(&snapshot))))
}

#[utoipa::path(post, path = "/v1/vms/{vm}/fork", tag = "snapshots",
    request_body = VmForkRequest,
    params(("vm" = String, Path, description = "VM name or id")),
    responses(
        (status = 201, description = "The running copies", body = ForkResult),
        (status = 400, description = "The body breaks the schema", body = ApiError),
        (status = 404, description = "No such VM", body = ApiError),
        (status = 409, description = "The VM is not running, or a name is taken, or no address is free", body = ApiError),
        (status = 422, description = "The copies' names would be too long", body = ApiError),
        (status = 500, description = "A copy failed to start; none is kept", body = ApiError),
        (status = 501, description = "This daemon's VMM cannot save VMs", body = ApiError)))]
pub async fn fork_vm(
    State(state): State<AppState>,
    ApiPath(vm): ApiPath<String>,
    ApiJson(request): ApiJson<VmForkRequest>,
) -> Result<(StatusCode, Json<ForkResult>), HttpError> {
    let banger = state.banger.clone();
    let count = request.count.map_or(1, |c| c.get());
    let name = request.name.map(String::from);
    let vms =
        to_completion(async move { banger.fork_vm(&vm, count, name, request.nat).await }).await?;
    Ok((
        StatusCode::CREATED,
        Json(ForkResult {
            vms: vms.iter().map(convert::vm).collect(),
        }),
    ))
}

#[utoipa::path(get, path = "/v1/snapshots", tag = "snapshots",
    responses((status = 200, description = "Every snapshot", body = SnapshotList)))]
pub async fn list_snapshots(
    State(state): State<AppState>,
) -> Result<Json<SnapshotList>, HttpError> {
    let snapshots = state.banger.list_snapshots()?;
    Ok(Json(SnapshotList {
        snapshots: snapshots.iter().map(convert::snapshot).collect(),
    }))
}

#[utoipa::path(get, path = "/v1/snapshots/{snapshot}", tag = "snapshots",
    params(("snapshot" = String, Path, description = "Snapshot name or id")),
    responses(
        (status = 200, description = "The snapshot", body = Snapshot),
        (status = 400, description = "The path is not valid UTF-8", body = ApiError),
        (status = 404, description = "No such snapshot", body = ApiError)))]
pub async fn show_snapshot(
    State(state): State<AppState>,
    ApiPath(snapshot): ApiPath<String>,
) -> Result<Json<Snapshot>, HttpError> {
    Ok(Json(convert::snapshot(
        &state.banger.find_snapshot(&snapshot)?,
    )))
}

#[utoipa::path(delete, path = "/v1/snapshots/{snapshot}", tag = "snapshots",
    params(("snapshot" = String, Path, description = "Snapshot name or id")),
    responses(
        (status = 200, description = "The snapshot as it was; its files are gone", body = Snapshot),
        (status = 400, description = "The path is not valid UTF-8", body = ApiError),
        (status = 404, description = "No such snapshot", body = ApiError)))]
pub async fn delete_snapshot(
    State(state): State<AppState>,
    ApiPath(snapshot): ApiPath<String>,
) -> Result<Json<Snapshot>, HttpError> {
    let banger = state.banger.clone();
    let snapshot = to_completion(async move { banger.delete_snapshot(&snapshot).await }).await?;
    Ok(Json(convert::snapshot(&snapshot)))
}

#[utoipa::path(post, path = "/v1/images/{image}/warm", tag = "snapshots",
    params(("image" = String, Path, description = "Image name or id")),
    responses(
        (status = 201, description = "The image's new warm template", body = Snapshot),
        (status = 400, description = "The path is not valid UTF-8", body = ApiError),
        (status = 404, description = "No such image", body = ApiError),
        (status = 500, description = "The template's VM failed to boot or save", body = ApiError),
        (status = 501, description = "This daemon's VMM cannot save VMs", body = ApiError)))]
pub async fn warm_image(
    State(state): State<AppState>,
    ApiPath(image): ApiPath<String>,
) -> Result<(StatusCode, Json<Snapshot>), HttpError> {
    let banger = state.banger.clone();
    let snapshot = to_completion(async move { banger.warm_image(&image).await }).await?;
    Ok((StatusCode::CREATED, Json(convert::snapshot(&snapshot))))
}
