//! `GET /v1/verify`: banger-owned host objects that no live VM owns.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One object that should not be there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Leak {
    /// `process`, `link`, `nft`, `dns`, `socket`, `file`, `port`, `jail`.
    pub kind: String,
    pub name: String,
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct VerifyReport {
    pub leaks: Vec<Leak>,
    /// Idle pool devices: capacity, not leaks.
    pub capacity: Vec<String>,
    /// What is not a leak but weakens the host: `root_vmm` (a VM's VMM
    /// runs as root).
    #[serde(default)]
    pub warnings: Vec<Leak>,
}
