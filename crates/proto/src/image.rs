//! Image resources as they cross the API.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// An image: kernel, optional initramfs, read-only rootfs and work seed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Image {
    pub id: String,
    pub name: String,
    /// Where it came from: `build`, `pull`, `register`.
    pub source: String,
    pub kernel_path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd_path: Option<String>,
    pub rootfs_path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub work_seed_path: Option<String>,
    /// RFC 3339, UTC.
    pub created_at: String,
}

/// Body of `GET /v1/images`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ImageList {
    pub images: Vec<Image>,
}
