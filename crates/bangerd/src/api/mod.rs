//! The HTTP API: one route table, generated together with its OpenAPI
//! document from the handler annotations, so the two cannot drift. The
//! committed copy lives in `api/openapi.json` at the repository root.

mod access;
mod caller;
pub use caller::Peer;
mod convert;
pub mod error;
mod events;
mod files;
mod images;
mod json;
mod links;
mod metrics;
mod params;
mod ports;
mod progress;
mod snapshots;
mod stats;
mod system;
mod terminal;
mod trace;
mod verify;
mod vm_io;
mod vms;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use banger_core::Banger;
use tokio::sync::watch;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub banger: Arc<Banger>,
    pub network: Option<Arc<banger_host::net::Network>>,
    pub ssh: Arc<banger_host::ssh::SshKeys>,
    pub images: Arc<banger_core::images::Images>,
    pub state_dir: std::path::PathBuf,
    pub run_dir: std::path::PathBuf,
    /// Where jailed Firecrackers' chroots live (`Config::jail_base`).
    pub jail_base: std::path::PathBuf,
    pub vmm: banger_host::vmm_select::VmmPreference,
    pub guest_binary: std::path::PathBuf,
    /// Where VMM user ids start; `None`: VMMs run as root.
    pub vmm_uid_base: Option<u32>,
    pub started: Instant,
    /// Set to true to begin a graceful shutdown.
    pub shutdown: watch::Sender<bool>,
    /// Makes warm templates after cold creates (`warm_templates`).
    pub warmer: Option<Arc<crate::warm::Warmer>>,
    /// The published ports being forwarded.
    pub ports: Arc<banger_host::ports::PortsCapability>,
    /// What callers other than root may publish.
    pub publish: crate::config::PublishPolicy,
    /// Plain-HTTP and this host's sources members may pull from.
    pub member_sources: Vec<String>,
    /// Registries spoken to over plain HTTP (`insecure_registries`).
    pub insecure_registries: Vec<String>,
    /// What `/metrics` counts.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// What `/v1/events` streams.
    pub events: Arc<banger_core::events::Events>,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "bangerd",
        description = "The banger daemon's API, served as JSON over a unix socket.",
        license(name = "Apache-2.0")
    ),
    tags(
        (name = "vms", description = "Virtual machines"),
        (name = "images", description = "Images VMs boot from"),
        (name = "snapshots", description = "Saved machines new VMs start from without a boot"),
        (name = "system", description = "The daemon and its host")
    )
)]
struct ApiDoc;

/// The route table and the OpenAPI document it implements.
pub fn router() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let (router, doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(vms::list_vms, vms::create_vm))
        .routes(routes!(vms::show_vm, vms::delete_vm, vms::update_vm))
        .routes(routes!(vms::start_vm))
        .routes(routes!(vms::stop_vm))
        .routes(routes!(vms::restart_vm))
        .routes(routes!(vm_io::exec))
        .routes(routes!(terminal::terminal))
        .routes(routes!(vm_io::logs))
        .routes(routes!(stats::vm_stats))
        .routes(routes!(access::authorize_ssh_keys))
        .routes(routes!(files::copy_in, files::copy_out))
        .routes(routes!(ports::list_ports, ports::add_port))
        .routes(routes!(ports::remove_port))
        .routes(routes!(snapshots::snapshot_vm))
        .routes(routes!(snapshots::fork_vm))
        .routes(routes!(snapshots::list_snapshots))
        .routes(routes!(
            snapshots::show_snapshot,
            snapshots::delete_snapshot
        ))
        .routes(routes!(snapshots::warm_image))
        .routes(routes!(images::list_images))
        .routes(routes!(images::show_image, images::delete_image))
        .routes(routes!(images::build_image))
        .routes(routes!(images::pull_image))
        .routes(routes!(images::register_image))
        .routes(routes!(images::prune_images))
        .routes(routes!(images::export_image))
        .routes(routes!(images::promote_vm))
        .routes(routes!(images::catalog))
        .routes(routes!(system::health))
        .routes(routes!(metrics::metrics))
        .routes(routes!(events::events))
        .routes(routes!(system::doctor))
        .routes(routes!(system::shutdown))
        .routes(routes!(verify::verify))
        .routes(routes!(system::ssh))
        .split_for_parts();
    let router = router
        .fallback(error::not_found_route)
        .layer(axum::middleware::from_fn(trace::per_request));
    (router, doc)
}

/// The OpenAPI document as committed (pretty JSON, trailing newline).
pub fn openapi_json() -> String {
    let (_, doc) = router();
    let mut value = serde_json::to_value(&doc).unwrap_or_default();
    links::add(&mut value);
    let mut text = serde_json::to_string_pretty(&value).unwrap_or_default();
    text.push('\n');
    text
}

pub fn app(state: AppState) -> Router {
    router().0.with_state(state)
}
