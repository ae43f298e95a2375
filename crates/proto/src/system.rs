//! Daemon-level resources: health and shutdown.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Body of `GET /v1/health`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Health {
    pub version: String,
    pub pid: u32,
    pub state_dir: String,
    pub uptime_ms: u64,
}

/// Body of `POST /v1/shutdown`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ShutdownAccepted {
    pub shutting_down: bool,
}
