//! Running a command in a VM over the API: `POST /v1/vms/{vm}/exec`
//! answers with one `ExecEvent` per line (`application/x-ndjson`) as the
//! command runs, ending with `exit` or `error`.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::rules::Base64;

/// Body of `POST /v1/vms/{vm}/exec`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecRequest {
    /// The command and its arguments (no shell).
    #[schema(min_items = 1)]
    pub argv: Vec<String>,
    /// Bytes for the command's stdin; stdin is closed after them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin: Option<Base64>,
    /// Run as this user (`NAME`, `UID`, `NAME:GROUP`, `UID:GID`) instead
    /// of the image's (an OCI image's `User`, else root).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ExecEvent {
    /// Output on stdout, base64.
    Stdout { data: String },
    /// Output on stderr, base64.
    Stderr { data: String },
    /// The command ended: its exit code, or the signal that ended it.
    Exit {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        code: Option<i32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        signal: Option<i32>,
    },
    /// The command could not run to its end.
    Error { error: ApiError },
}

/// What a client sends on `GET /v1/vms/{vm}/terminal` once the connection
/// is upgraded (`Upgrade: tcp`, as Docker's attach): one JSON object per
/// line, `start` first. The daemon answers with `ExecEvent` lines
/// (`stdout` only: a terminal has one output), ending with `exit` or
/// `error`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum TerminalInput {
    /// Runs `argv` (empty: the image's command, else `/bin/sh`) on a
    /// terminal of this size.
    Start {
        #[serde(default)]
        argv: Vec<String>,
        rows: u16,
        cols: u16,
        /// Run as this user instead of the image's.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user: Option<String>,
    },
    /// Typed bytes, base64.
    Stdin { data: String },
    /// The window changed size.
    Resize { rows: u16, cols: u16 },
}
