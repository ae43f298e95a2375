//! `/v1/vms`: create, list, show, remove.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use banger_proto::error::{ApiError, ErrorCode};
use banger_proto::vm::{Vm, VmCreateRequest, VmList, VmUpdateRequest};
use serde::Deserialize;
use utoipa::IntoParams;

use super::convert;
use super::error::HttpError;
use super::json::ApiJson;
use super::params::{ApiPath, ApiQuery};
use super::AppState;

#[utoipa::path(get, path = "/v1/vms", tag = "vms",
    responses((status = 200, description = "Every VM", body = VmList)))]
pub async fn list_vms(State(state): State<AppState>) -> Result<Json<VmList>, HttpError> {
    let vms = state.banger.list_vms()?;
    Ok(Json(VmList {
        vms: vms.iter().map(convert::vm).collect(),
    }))
}

#[utoipa::path(post, path = "/v1/vms", tag = "vms", request_body = VmCreateRequest,
    responses(
        (status = 201, description = "The VM was created", body = Vm),
        (status = 200, description = "Progress stream (`Accept: application/x-ndjson`), ending with the VM",
            body = banger_proto::progress::ProgressEvent, content_type = "application/x-ndjson"),
        (status = 400, description = "The body breaks the schema", body = ApiError),
        (status = 403, description = "Only root may publish on that host address or below port 1024", body = ApiError),
        (status = 404, description = "No such image, no such snapshot to start from, or no shared folder you can open", body = ApiError),
        (status = 409, description = "The name, the address or a published host port is taken, or no address is free", body = ApiError),
        (status = 422, description = "The address is outside the bridge, the host cannot serve a setting (nat without an uplink, a port another program holds, a shared folder under firecracker or without virtiofsd), a shared folder is not a directory, or the snapshot cannot start this VM (another shape or VMM, no_start)", body = ApiError),
        (status = 501, description = "Booting is not available", body = ApiError),
        (status = 500, description = "Host or store failure", body = ApiError)))]
pub async fn create_vm(
    State(state): State<AppState>,
    super::caller::ApiCaller(caller): super::caller::ApiCaller,
    headers: axum::http::HeaderMap,
    ApiJson(request): ApiJson<VmCreateRequest>,
) -> Result<axum::response::Response, HttpError> {
    use axum::response::IntoResponse;
    super::access::check_count(&request.ssh_keys)?;
    let mut params = convert::create_params(request);
    super::ports::may_publish(&state, &caller, &params.ports)?;
    // Shared folders are the caller's: checked and served with its rights.
    for share in &mut params.mounts {
        let host_dir = share.host_dir.clone();
        let (dev, ino) = tokio::task::spawn_blocking(move || caller.check_dir(&host_dir))
            .await
            .map_err(|e| HttpError::new(ErrorCode::Internal, e.to_string(), None))?
            .map_err(super::caller::refused)?;
        share.uid = caller.uid;
        share.gid = caller.gid;
        share.identity = Some(banger_core::mounts::FolderIdentity { dev, ino });
    }
    if super::progress::wants_stream(&headers) {
        // Refuse bad input with its own status before the stream starts.
        params
            .validate(&state.banger.settings().defaults)
            .map_err(banger_core::ServiceError::from)?;
        return Ok(super::progress::stream_create(
            state.banger.clone(),
            params,
            state.warmer.clone(),
        ));
    }
    let vm = state.banger.create_vm(params).await?;
    if let Some(warmer) = &state.warmer {
        warmer.after_create(&vm);
    }
    Ok((StatusCode::CREATED, Json(convert::vm(&vm))).into_response())
}

#[utoipa::path(get, path = "/v1/vms/{vm}", tag = "vms",
    params(("vm" = String, Path, description = "VM name or id")),
    responses(
        (status = 200, description = "The VM", body = Vm),
        (status = 400, description = "The path is not valid UTF-8", body = ApiError),
        (status = 404, description = "No such VM", body = ApiError)))]
pub async fn show_vm(
    State(state): State<AppState>,
    ApiPath(vm): ApiPath<String>,
) -> Result<Json<Vm>, HttpError> {
    Ok(Json(convert::vm(&state.banger.find_vm(&vm)?)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeleteQuery {
    /// Remove the VM even if it may still run.
    #[serde(default)]
    force: bool,
}

#[utoipa::path(delete, path = "/v1/vms/{vm}", tag = "vms",
    params(("vm" = String, Path, description = "VM name or id"), DeleteQuery),
    responses(
        (status = 200, description = "The VM as it was when removed", body = Vm),
        (status = 400, description = "A parameter is malformed (`force` takes true or false)", body = ApiError),
        (status = 404, description = "No such VM", body = ApiError),
        (status = 409, description = "The VM may still run", body = ApiError)))]
pub async fn delete_vm(
    State(state): State<AppState>,
    ApiPath(vm): ApiPath<String>,
    ApiQuery(query): ApiQuery<DeleteQuery>,
) -> Result<Json<Vm>, HttpError> {
    let banger = state.banger.clone();
    let vm = to_completion(async move { banger.delete_vm(&vm, query.force).await }).await?;
    Ok(Json(convert::vm(&vm)))
}

#[utoipa::path(post, path = "/v1/vms/{vm}/start", tag = "vms",
    params(("vm" = String, Path, description = "VM name or id")),
    responses(
        (status = 200, description = "The VM runs and its agent answered", body = Vm),
        (status = 400, description = "The path is not valid UTF-8", body = ApiError),
        (status = 404, description = "No such VM", body = ApiError),
        (status = 409, description = "The VM is already active", body = ApiError),
        (status = 500, description = "The VM failed to start; it is now failed", body = ApiError),
        (status = 501, description = "This daemon cannot boot VMs", body = ApiError)))]
pub async fn start_vm(
    State(state): State<AppState>,
    ApiPath(vm): ApiPath<String>,
) -> Result<Json<Vm>, HttpError> {
    let banger = state.banger.clone();
    let vm = to_completion(async move { banger.start_vm(&vm).await }).await?;
    Ok(Json(convert::vm(&vm)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StopQuery {
    /// Kill at once instead of asking the guest to power off.
    #[serde(default)]
    force: bool,
}

#[utoipa::path(post, path = "/v1/vms/{vm}/stop", tag = "vms",
    params(("vm" = String, Path, description = "VM name or id"), StopQuery),
    responses(
        (status = 200, description = "The VM is stopped", body = Vm),
        (status = 400, description = "A parameter is malformed (`force` takes true or false)", body = ApiError),
        (status = 404, description = "No such VM", body = ApiError),
        (status = 409, description = "The VM is not running", body = ApiError),
        (status = 500, description = "The VMM could not be stopped", body = ApiError),
        (status = 501, description = "This daemon cannot run VMs", body = ApiError)))]
pub async fn stop_vm(
    State(state): State<AppState>,
    ApiPath(vm): ApiPath<String>,
    ApiQuery(query): ApiQuery<StopQuery>,
) -> Result<Json<Vm>, HttpError> {
    let banger = state.banger.clone();
    let vm = to_completion(async move { banger.stop_vm(&vm, query.force).await }).await?;
    Ok(Json(convert::vm(&vm)))
}

#[utoipa::path(post, path = "/v1/vms/{vm}/restart", tag = "vms",
    params(("vm" = String, Path, description = "VM name or id")),
    responses(
        (status = 200, description = "The VM runs again", body = Vm),
        (status = 400, description = "The path is not valid UTF-8", body = ApiError),
        (status = 404, description = "No such VM", body = ApiError),
        (status = 409, description = "Another lifecycle step holds the VM", body = ApiError),
        (status = 500, description = "The VM failed to start; it is now failed", body = ApiError),
        (status = 501, description = "This daemon cannot boot VMs", body = ApiError)))]
pub async fn restart_vm(
    State(state): State<AppState>,
    ApiPath(vm): ApiPath<String>,
) -> Result<Json<Vm>, HttpError> {
    let banger = state.banger.clone();
    let vm = to_completion(async move { banger.restart_vm(&vm).await }).await?;
    Ok(Json(convert::vm(&vm)))
}

#[utoipa::path(patch, path = "/v1/vms/{vm}", tag = "vms", request_body = VmUpdateRequest,
    params(("vm" = String, Path, description = "VM name or id")),
    responses(
        (status = 200, description = "The VM with the new settings (live when it runs)", body = Vm),
        (status = 400, description = "The body breaks the schema", body = ApiError),
        (status = 404, description = "No such VM", body = ApiError),
        (status = 422, description = "The host cannot serve the setting (nat without an uplink)", body = ApiError),
        (status = 500, description = "The change could not be applied", body = ApiError)))]
pub async fn update_vm(
    State(state): State<AppState>,
    ApiPath(vm): ApiPath<String>,
    ApiJson(request): ApiJson<VmUpdateRequest>,
) -> Result<Json<Vm>, HttpError> {
    let mut found = state.banger.find_vm(&vm)?;
    if let Some(nat) = request.nat {
        let banger = state.banger.clone();
        let id = found.id.clone();
        found = to_completion(async move { banger.set_nat(&id, nat).await }).await?;
    }
    Ok(Json(convert::vm(&found)))
}

/// Runs a lifecycle step on a task of its own and waits for it: a client
/// that goes away (Ctrl-C, a dropped connection) drops this wait, never
/// the step, so no VM is left half-started or half-stopped.
pub(super) async fn to_completion<T: Send + 'static>(
    step: impl std::future::Future<Output = Result<T, banger_core::ServiceError>> + Send + 'static,
) -> Result<T, HttpError> {
    match tokio::spawn(step).await {
        Ok(result) => result.map_err(HttpError::from),
        Err(join) => Err(HttpError::new(
            banger_proto::error::ErrorCode::Internal,
            format!("the step failed: {join}"),
            None,
        )),
    }
}
