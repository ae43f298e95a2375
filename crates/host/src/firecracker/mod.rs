//! Firecracker VMM driver: the typed API request bodies (`api`), the pure
//! functions that turn a VM's boot config into the ordered requests and
//! the `--config-file` JSON (`plan`), the vendored official API
//! description (v1.16.1, `spec/firecracker-api.yaml`) and a validator over
//! it (`spec`), the HTTP-over-unix-socket client (`client`), and a TEST
//! DOUBLE of Firecracker's API for tests (`double`, feature `test-double`),
//! the host end of hybrid vsock (`vsock`), the driver that runs
//! Firecracker processes behind the `Vmm` trait (`driver`), its pause,
//! save and restore (`snapshot`), each in a jail of its own when the
//! jailer is there (`jail`), and the lifecycle check against a real
//! binary (`check`).

pub mod api;
pub mod check;
pub mod client;
#[cfg(feature = "test-double")]
pub mod double;
pub mod driver;
pub mod exit_cause;
pub mod jail;
pub mod plan;
pub mod snapshot;
pub mod spec;
pub mod vsock;

#[cfg(test)]
mod spec_tests;

pub use api::{FcRequest, InstanceInfo, InstanceState, Method};
pub use client::{
    configure_and_start, remove_stale_sockets, BootError, FirecrackerClient, FirecrackerError,
};
#[cfg(feature = "test-double")]
pub use double::FirecrackerDouble;
pub use plan::{
    boot_requests, config_file, describe_request, stop_request, DriveConfig, FirecrackerBootConfig,
    PlanError, VsockConfig,
};
pub use spec::ApiSpec;
