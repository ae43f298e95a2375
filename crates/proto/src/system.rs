//! Daemon-level resources: health and shutdown.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Body of `GET /v1/health`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Health {
    pub version: String,
    /// The commit the daemon was built from (`unknown` outside git).
    #[serde(default)]
    pub commit: String,
    pub pid: u32,
    pub state_dir: String,
    pub uptime_ms: u64,
    /// The VMMs this host has, with their versions.
    #[serde(default)]
    pub vmms: Vec<VmmVersion>,
}

/// A VMM binary and what it says its version is (`None`: not installed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct VmmVersion {
    /// `qemu` or `firecracker`.
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// Body of `POST /v1/shutdown`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ShutdownAccepted {
    pub shutting_down: bool,
}
