//! `/metrics`: the Prometheus text format (`crate::metrics`), read at
//! each scrape from the daemon's records and its network.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use super::images::image_error;
use super::AppState;
use crate::metrics::Scrape;

/// The exposition format's media type.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

#[utoipa::path(get, path = "/metrics", tag = "system",
    responses((status = 200, description = "Metrics in the Prometheus text format: operations and stages (histograms), VMs by state, the TAP pool, image and snapshot bytes, DNS queries",
        body = String, content_type = "text/plain")))]
pub async fn metrics(State(state): State<AppState>) -> Result<Response, super::error::HttpError> {
    let mut scrape = Scrape::default();
    let mut states = std::collections::BTreeMap::<&'static str, i64>::new();
    for vm in state.banger.list_vms()? {
        *states.entry(vm.state.as_str()).or_default() += 1;
    }
    scrape.vms_by_state = states
        .into_iter()
        .map(|(s, n)| (s.to_string(), n))
        .collect();
    for image in state.images.list().map_err(image_error)? {
        let bytes: u64 = image
            .manifest
            .iter()
            .flat_map(|m| &m.artifacts)
            .map(|a| a.bytes)
            .sum();
        scrape.image_bytes.push((image.name, bytes as i64));
    }
    for snapshot in state.banger.list_snapshots()? {
        scrape
            .snapshot_bytes
            .push((snapshot.name, snapshot.disk_bytes as i64));
    }
    if let Some(network) = &state.network {
        scrape.pool_idle = Some(network.idle().len() as i64);
        scrape.dns_queries = Some(network.dns().queries());
    }
    scrape.refused_connections = state.ports.refused_connections();
    let text = state.metrics.render(&scrape);
    Ok((StatusCode::OK, [(header::CONTENT_TYPE, TEXT_FORMAT)], text).into_response())
}
