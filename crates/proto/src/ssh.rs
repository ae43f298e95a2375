//! `GET /v1/ssh`: what a client needs to run OpenSSH into VMs.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SshSettings {
    pub user: String,
    /// The daemon's private key, which every guest accepts.
    pub identity_file: String,
    /// banger's known_hosts: every VM's host key under `NAME.vm` and its
    /// address.
    pub known_hosts_file: String,
}
