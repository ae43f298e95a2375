//! Wire types of the bangerd JSON API: requests, responses and the error
//! body. No I/O lives here; this is the only crate that derives
//! `Serialize` for the API, and the OpenAPI document is generated from
//! these types (see `bangerd::api::doc`).

pub mod agent;
pub mod doctor;
pub mod error;
pub mod event;
pub mod exec;
pub mod image;
pub mod paths;
pub mod progress;
pub mod rules;
pub mod snapshot;
pub mod ssh;
pub mod stats;
pub mod system;
pub mod units;
pub mod verify;
pub mod vm;

/// Prefix of every API route.
pub const API_PREFIX: &str = "/v1";
