//! `/v1/health`, `/v1/doctor`, `/v1/shutdown`.

use axum::extract::State;
use axum::Json;
use banger_core::doctor::default_image_check;
use banger_host::doctor::{report, HostFacts};
use banger_proto::doctor::DoctorReport;
use banger_proto::system::{Health, ShutdownAccepted};

use super::convert;
use super::error::HttpError;
use super::AppState;

#[utoipa::path(get, path = "/v1/health", tag = "system",
    responses((status = 200, description = "The daemon is up", body = Health)))]
pub async fn health(State(state): State<AppState>) -> Json<Health> {
    Json(Health {
        version: env!("CARGO_PKG_VERSION").to_string(),
        pid: std::process::id(),
        state_dir: state.state_dir.display().to_string(),
        uptime_ms: state.started.elapsed().as_millis() as u64,
    })
}

#[utoipa::path(get, path = "/v1/doctor", tag = "system",
    responses((status = 200, description = "Host checks; failures are in the body, not the status", body = DoctorReport)))]
pub async fn doctor(State(state): State<AppState>) -> Result<Json<DoctorReport>, HttpError> {
    let (root, vmm, guest) = (
        state.state_dir.clone(),
        state.vmm,
        state.guest_binary.clone(),
    );
    let mut checks = tokio::task::spawn_blocking(move || {
        report(&HostFacts::gather(&root, vmm).with_guest_binary(&guest))
    })
    .await
    .map_err(|e| {
        HttpError::new(
            banger_proto::error::ErrorCode::Internal,
            format!("doctor failed: {e}"),
            None,
        )
    })?;
    let default = &state.banger.settings().defaults.image;
    let found = state.images.find(default).ok();
    let in_catalog = state.images.catalog().find(default).is_some();
    checks.push(default_image_check(default, found.as_ref(), in_catalog));
    Ok(Json(DoctorReport {
        checks: checks.into_iter().map(convert::check).collect(),
    }))
}

#[utoipa::path(post, path = "/v1/shutdown", tag = "system",
    responses((status = 202, description = "The daemon stops after answering", body = ShutdownAccepted)))]
pub async fn shutdown(
    State(state): State<AppState>,
) -> (axum::http::StatusCode, Json<ShutdownAccepted>) {
    tracing::info!("shutdown requested over the api");
    let _ = state.shutdown.send(true);
    (
        axum::http::StatusCode::ACCEPTED,
        Json(ShutdownAccepted {
            shutting_down: true,
        }),
    )
}
