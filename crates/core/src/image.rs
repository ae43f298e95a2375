//! The image record: the artifacts a VM boots from.

use std::path::PathBuf;

/// An image as banger records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub id: String,
    pub name: String,
    /// `build`, `pull` or `register`.
    pub source: String,
    pub kernel_path: PathBuf,
    pub initrd_path: Option<PathBuf>,
    pub rootfs_path: PathBuf,
    pub work_seed_path: Option<PathBuf>,
    pub created_at_ms: i64,
}
