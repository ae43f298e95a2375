//! `/v1/vms/{vm}/ports`: a VM's published ports, listed, added and
//! removed; live when it runs, kept with it across restarts.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use banger_proto::error::{ApiError, ErrorCode};
use banger_proto::rules::Port;
use banger_proto::vm::{PortForward, PortList, Protocol};
use serde::Deserialize;
use utoipa::IntoParams;

use super::convert;
use super::error::HttpError;
use super::json::ApiJson;
use super::params::{ApiPath, ApiQuery};
use super::vms::to_completion;
use super::AppState;

/// Refuses the forwards a caller other than root may not publish
/// (`publish_addresses`, `publish_privileged`): 403, before anything is
/// stored or bound.
pub fn may_publish(
    state: &AppState,
    caller: &banger_host::caller::Caller,
    forwards: &[banger_core::ports::PortForward],
) -> Result<(), HttpError> {
    if caller.is_root() {
        return Ok(());
    }
    match forwards.iter().find_map(|f| state.publish.refusal(f)) {
        None => Ok(()),
        Some(why) => Err(HttpError::new(
            ErrorCode::Forbidden,
            why,
            Some("publish on 127.0.0.1 at port 1024 or above, or ask root to list the address in publish_addresses (or set publish_privileged) in bangerd's config"),
        )),
    }
}

fn list(ports: &[banger_core::ports::PortForward]) -> PortList {
    PortList {
        ports: ports.iter().map(convert::port).collect(),
    }
}

#[utoipa::path(get, path = "/v1/vms/{vm}/ports", tag = "vms",
    params(("vm" = String, Path, description = "VM name or id")),
    responses(
        (status = 200, description = "The VM's published ports", body = PortList),
        (status = 404, description = "No such VM", body = ApiError)))]
pub async fn list_ports(
    State(state): State<AppState>,
    ApiPath(vm): ApiPath<String>,
) -> Result<Json<PortList>, HttpError> {
    Ok(Json(list(&state.banger.ports(&vm)?)))
}

#[utoipa::path(post, path = "/v1/vms/{vm}/ports", tag = "vms", request_body = PortForward,
    params(("vm" = String, Path, description = "VM name or id")),
    responses(
        (status = 201, description = "Published (forwarded at once if the VM runs); all its ports", body = PortList),
        (status = 400, description = "The body breaks the schema", body = ApiError),
        (status = 403, description = "Only root may publish on that host address or below port 1024", body = ApiError),
        (status = 404, description = "No such VM", body = ApiError),
        (status = 409, description = "A VM publishes that host port already", body = ApiError),
        (status = 422, description = "The host cannot serve it (another program has the port, no such host address, no network)", body = ApiError),
        (status = 500, description = "The forward could not be started", body = ApiError)))]
pub async fn add_port(
    State(state): State<AppState>,
    super::caller::ApiCaller(caller): super::caller::ApiCaller,
    ApiPath(vm): ApiPath<String>,
    ApiJson(forward): ApiJson<PortForward>,
) -> Result<(StatusCode, Json<PortList>), HttpError> {
    let banger = state.banger.clone();
    let forward = convert::port_forward(&forward);
    may_publish(&state, &caller, std::slice::from_ref(&forward))?;
    let ports = to_completion(async move { banger.add_port(&vm, forward).await }).await?;
    Ok((StatusCode::CREATED, Json(list(&ports))))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RemoveQuery {
    /// The published port's protocol.
    #[serde(default)]
    protocol: Protocol,
}

#[utoipa::path(delete, path = "/v1/vms/{vm}/ports/{port}", tag = "vms",
    params(("vm" = String, Path, description = "VM name or id"),
        ("port" = u16, Path, minimum = 1, maximum = 65535, description = "The published host port"),
        RemoveQuery),
    responses(
        (status = 200, description = "No longer published; the VM's remaining ports", body = PortList),
        (status = 400, description = "A parameter is malformed", body = ApiError),
        (status = 404, description = "No such VM, or it does not publish that port", body = ApiError)))]
pub async fn remove_port(
    State(state): State<AppState>,
    ApiPath((vm, port)): ApiPath<(String, u16)>,
    ApiQuery(query): ApiQuery<RemoveQuery>,
) -> Result<Json<PortList>, HttpError> {
    let port = Port::try_from(u64::from(port)).map_err(|e| {
        HttpError::new(
            banger_proto::error::ErrorCode::InvalidInput,
            e.to_string(),
            Some("see its ports with `banger vm port ls VM`"),
        )
    })?;
    let banger = state.banger.clone();
    let protocol = match query.protocol {
        Protocol::Tcp => banger_core::ports::Protocol::Tcp,
        Protocol::Udp => banger_core::ports::Protocol::Udp,
    };
    let ports =
        to_completion(async move { banger.remove_port(&vm, port.get(), protocol).await }).await?;
    Ok(Json(list(&ports)))
}
