//! Live progress of long operations. A client that sends
//! `Accept: application/x-ndjson` to a long operation (image build, pull,
//! register, export, vm create) gets one `ProgressEvent` per line as the
//! work goes, ending with exactly one `image`, `vm` or `error` event.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::image::Image;
use crate::vm::Vm;

/// The media type of progress streams.
pub const NDJSON: &str = "application/x-ndjson";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ProgressEvent {
    /// A stage began; `elapsed_ms` counts from the start of the operation.
    Stage { stage: String, elapsed_ms: u64 },
    /// Bytes done within the current stage.
    Bytes {
        done: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        total: Option<u64>,
    },
    /// A line of detail.
    Note { line: String },
    /// The operation ended with this image.
    Image { image: Box<Image>, elapsed_ms: u64 },
    /// The operation ended with this VM.
    Vm { vm: Box<Vm>, elapsed_ms: u64 },
    /// The operation failed.
    Error { error: ApiError, elapsed_ms: u64 },
}
