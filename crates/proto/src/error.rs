//! The one error body every failing API call returns.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Machine-readable class of an error; each maps to one HTTP status in
/// bangerd and one exit code in the CLI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request breaks the API description: malformed JSON, a wrong
    /// type, a value outside its pattern or range (400).
    InvalidInput,
    /// The request is well formed but cannot be carried out as asked: a
    /// named file of the wrong kind, an address outside the bridge,
    /// fields that exclude each other (422).
    Unprocessable,
    /// The caller may not do this: a path inside banger's own
    /// directories, a file it may not write (403).
    Forbidden,
    /// The named VM, image or file does not exist (a file the caller may
    /// not read is reported the same way) (404).
    NotFound,
    /// The request conflicts with current state, e.g. a name is taken (409).
    Conflict,
    /// The operation is not available on this host or build (501).
    Unsupported,
    /// Something failed inside the daemon or on the host (500).
    Internal,
    /// A server banger fetches from (a registry, a bundle's host, the
    /// Debian mirror) could not be reached or failed (502).
    Upstream,
}

/// `{"error": {...}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ApiError {
    pub error: ErrorBody,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub code: ErrorCode,
    /// One line, lowercase, no trailing period.
    pub message: String,
    /// What the user can do about it, when there is something.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>, hint: Option<String>) -> Self {
        ApiError {
            error: ErrorBody {
                code,
                message: message.into(),
                hint,
            },
        }
    }
}
