//! Lifecycle events: what `GET /v1/events` streams, one JSON object per
//! line, as things happen (VMs changing state, images and snapshots
//! coming and going).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// What an event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventObject {
    Vm,
    Image,
    Snapshot,
    /// The stream itself: `lagged` when this reader missed events.
    Stream,
}

impl EventObject {
    pub fn as_str(self) -> &'static str {
        match self {
            EventObject::Vm => "vm",
            EventObject::Image => "image",
            EventObject::Snapshot => "snapshot",
            EventObject::Stream => "stream",
        }
    }
}

/// One thing that happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Event {
    /// RFC 3339, UTC.
    pub at: String,
    pub object: EventObject,
    /// `created`, `removed`, `updated`, or a VM's new state (`starting`,
    /// `running`, `stopping`, `stopped`, `failed`); `lagged` for the stream.
    pub action: String,
    /// The object's id (empty for the stream).
    pub id: String,
    /// The object's name (empty for the stream).
    pub name: String,
    /// For `lagged`: how many events this reader missed by reading slowly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missed: Option<u64>,
}
