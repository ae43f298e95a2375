//! Firecracker VMM driver. Today only the plan layer: the typed API
//! request bodies (`api`) and the pure functions that turn a VM's boot
//! config into the ordered requests and the `--config-file` JSON (`plan`).
//! No processes or sockets yet. `spec/firecracker-api.yaml` is the vendored
//! official API description (v1.16.1) that `spec_tests` checks every
//! request against.

pub mod api;
pub mod plan;

#[cfg(test)]
mod spec_tests;

pub use api::{FcRequest, Method};
pub use plan::{
    boot_requests, config_file, describe_request, stop_request, DriveConfig, FirecrackerBootConfig,
    PlanError, VsockConfig,
};
