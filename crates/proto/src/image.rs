//! Image resources as they cross the API.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::rules::{HostPath, Name, Package, PullSourceText, Sha256, Suite};

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
    /// The ELF kernel (Firecracker; QEMU boots it through PVH).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vmlinux_path: Option<String>,
    /// `uname -r` of the kernel, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_version: Option<String>,
    /// Apparent size of all artifacts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
    /// The manifest the image was made with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<Manifest>,
    /// RFC 3339, UTC.
    pub created_at: String,
    /// A promoted image's lineage, nearest first: the image it was
    /// promoted from, that one's parent, and so on (names).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lineage: Vec<String>,
    /// Read-only layers over the rootfs, bottom first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub layer_paths: Vec<String>,
}

/// Body of `POST /v1/images/build`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImageBuildRequest {
    pub name: Name,
    /// Debian suite; `bookworm` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suite: Option<Suite>,
    /// Debian packages beyond the base set.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub packages: Vec<Package>,
}

/// Body of `POST /v1/images/pull`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImagePullRequest {
    /// A catalog name, an OCI image reference (`debian:bookworm`,
    /// `ghcr.io/org/app:tag`, `docker://...`, `HOST:PORT/repo@sha256:...`),
    /// a bundle URL (`http(s)://`, `file://`) or the absolute path of a
    /// bundle on the daemon's host.
    pub source: PullSourceText,
    /// The name to record; by default the catalog name, the bundle's own,
    /// or the OCI repository's last component and tag (`debian-bookworm`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<Name>,
    /// Expected sha256 of the bundle file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<Sha256>,
    /// OCI images: the image whose kernel (and modules) the new image boots
    /// with when it has no kernel of its own; the default image when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_from: Option<String>,
}

/// Body of `POST /v1/images/prune`'s answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PruneReport {
    /// Cached OCI layers removed (no image references them).
    pub blobs: u64,
    pub bytes: u64,
}

/// Body of `POST /v1/images/register`: absolute paths on the daemon's host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImageRegisterRequest {
    pub name: Name,
    /// A bzImage or an ELF vmlinux, its modules in the rootfs. Absent: the
    /// rootfs's own kernel (`/boot/vmlinuz-*` with its modules), else
    /// `kernel_from`'s, else the default image's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<HostPath>,
    /// An image whose kernel (and modules) the new image boots with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_from: Option<String>,
    /// An initramfs of the user's own (needs `kernel`); without one,
    /// banger makes the rootfs bootable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd: Option<HostPath>,
    /// An ext4 image.
    pub rootfs: HostPath,
    /// An ext4 image for new VMs' `/root`; made from the rootfs's `/root`
    /// when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub work_seed: Option<HostPath>,
    /// Make no work seed: new VMs' `/root` starts empty.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_work_seed: bool,
}

/// Body of `POST /v1/images/{image}/export`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImageExportRequest {
    /// The bundle to write (`.tar.zst`); must not exist.
    pub file: HostPath,
}

/// One entry of the image catalog.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CatalogEntry {
    pub name: String,
    pub description: String,
    /// `build` (made on this host) or `bundle` (downloaded).
    pub kind: String,
    /// The Debian suite, or the bundle URL.
    pub from: String,
    /// Whether an image of this name is on this host.
    pub local: bool,
}

/// Body of `GET /v1/catalog`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CatalogList {
    pub entries: Vec<CatalogEntry>,
}

/// Body of `GET /v1/images`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ImageList {
    pub images: Vec<Image>,
}

/// Version of the `manifest.json` format written by this build.
pub const MANIFEST_FORMAT: u32 = 1;

/// `manifest.json`: what an image directory (or a bundle) holds, with the
/// size and sha256 of every artifact. Written when an image is made,
/// checked when one is pulled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// `MANIFEST_FORMAT` of the writer.
    pub format: u32,
    /// The image name it was made as.
    pub name: String,
    /// `uname -r` of the kernel, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_version: Option<String>,
    /// How it was made.
    pub origin: Origin,
    pub artifacts: Vec<Artifact>,
    /// Pulled from an OCI registry: what and how it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oci: Option<OciImage>,
    /// Whether the userland has sshd (`vm run` opens its shell over SSH,
    /// else on a terminal through the agent); absent when not known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sshd: Option<bool>,
    /// A promoted image: the images it stands on, nearest first (the one
    /// it was promoted from, that one's parent, ...), by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lineage: Vec<String>,
}

/// The OCI image an image was pulled from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OciImage {
    /// The full reference (`docker.io/library/debian:bookworm`).
    pub reference: String,
    /// The digest of the linux/amd64 manifest.
    pub digest: String,
    /// The layers' digests, bottom first (cached by digest on the host).
    pub layers: Vec<String>,
    pub config: ContainerConfig,
}

/// How an OCI image's author meant its process to run. `vm exec` runs
/// commands with its environment, working directory and user; `vm run`
/// without a command runs its entrypoint and command.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ContainerConfig {
    /// `NAME=VALUE` entries.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub entrypoint: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cmd: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// `USER`, `UID`, `USER:GROUP` or `UID:GID`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// How an image was made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Origin {
    /// `build`, `pull` or `register`.
    pub method: String,
    /// Build: the Debian suite. Pull: the URL. Register: the source paths.
    pub from: String,
    /// Build: the extra packages asked for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub packages: Vec<String>,
    /// Version of banger that made it.
    pub banger_version: String,
    /// RFC 3339, UTC.
    pub made_at: String,
}

/// The most layers an image may have over its rootfs (each one is a disk
/// of the VM, and promote costs one more).
pub const MAX_LAYERS: usize = 8;

/// The role of one artifact of an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ArtifactRole {
    /// The kernel as given or as packaged (a bzImage for Debian kernels).
    Kernel,
    /// The uncompressed ELF kernel (Firecracker; QEMU's PVH boot).
    Vmlinux,
    Initrd,
    Rootfs,
    WorkSeed,
    /// A read-only layer over the rootfs (a promoted VM's changes), named
    /// `layer-N.ext4`, bottom first; an image may have several.
    Layer,
}

impl ArtifactRole {
    /// The file name of this role inside an image directory.
    pub fn file_name(self) -> &'static str {
        match self {
            ArtifactRole::Kernel => "kernel",
            ArtifactRole::Vmlinux => "vmlinux",
            ArtifactRole::Initrd => "initrd",
            ArtifactRole::Rootfs => "rootfs.ext4",
            ArtifactRole::WorkSeed => "work-seed.ext4",
            ArtifactRole::Layer => "layer-N.ext4",
        }
    }

    /// The file name of an image's `index`th layer (bottom first).
    pub fn layer_file(index: usize) -> String {
        format!("layer-{index}.ext4")
    }

    /// The roles of which an image has at most one.
    pub const ALL: [ArtifactRole; 5] = [
        ArtifactRole::Kernel,
        ArtifactRole::Vmlinux,
        ArtifactRole::Initrd,
        ArtifactRole::Rootfs,
        ArtifactRole::WorkSeed,
    ];
}

/// One file of an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Artifact {
    pub role: ArtifactRole,
    /// File name inside the image directory (`ArtifactRole::file_name`).
    pub file: String,
    pub bytes: u64,
    /// Lowercase hex.
    pub sha256: String,
}
