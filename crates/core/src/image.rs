//! The image record: the artifacts a VM boots from, where they live, and
//! the manifest they were made with.

use std::path::PathBuf;

use banger_proto::image::{ArtifactRole, Manifest};

/// An image as banger records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub id: String,
    pub name: String,
    /// `build`, `pull` or `register`.
    pub source: String,
    /// The kernel as made or given (a bzImage for Debian kernels).
    pub kernel_path: PathBuf,
    /// The ELF kernel, when the image has one.
    pub vmlinux_path: Option<PathBuf>,
    pub initrd_path: Option<PathBuf>,
    pub rootfs_path: PathBuf,
    pub work_seed_path: Option<PathBuf>,
    /// `manifest.json` as written when the image was made (absent only for
    /// records made before manifests existed).
    pub manifest: Option<Manifest>,
    pub created_at_ms: i64,
    /// A promoted image: the image it stands on (which cannot be removed
    /// while this one exists).
    pub parent_id: Option<String>,
    /// Read-only layers over `rootfs_path`, bottom first: the parent's,
    /// then its own. Empty for an image that is one rootfs.
    pub layers: Vec<PathBuf>,
}

impl Image {
    /// The record of an image published into `dir` with `manifest`.
    pub fn from_manifest(
        id: String,
        name: String,
        source: String,
        dir: &std::path::Path,
        manifest: Manifest,
        created_at_ms: i64,
    ) -> Image {
        let path = |role: ArtifactRole| {
            manifest
                .artifacts
                .iter()
                .any(|a| a.role == role)
                .then(|| dir.join(role.file_name()))
        };
        Image {
            kernel_path: dir.join(ArtifactRole::Kernel.file_name()),
            vmlinux_path: path(ArtifactRole::Vmlinux),
            initrd_path: path(ArtifactRole::Initrd),
            rootfs_path: dir.join(ArtifactRole::Rootfs.file_name()),
            work_seed_path: path(ArtifactRole::WorkSeed),
            id,
            name,
            source,
            layers: manifest
                .artifacts
                .iter()
                .filter(|a| a.role == ArtifactRole::Layer)
                .map(|a| dir.join(&a.file))
                .collect(),
            manifest: Some(manifest),
            created_at_ms,
            parent_id: None,
        }
    }

    /// Bytes of all artifacts (apparent size), when the manifest is known.
    pub fn size_bytes(&self) -> Option<u64> {
        self.manifest
            .as_ref()
            .map(|m| m.artifacts.iter().map(|a| a.bytes).sum())
    }
}
