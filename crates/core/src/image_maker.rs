//! The host side of making images, as the image flows see it: turn a
//! request (build recipe, bundle, files to register) into artifacts and a
//! manifest inside a staging directory, and write bundles. `banger-host`
//! implements it with real tools; unit tests use fakes.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use banger_proto::image::Manifest;

use crate::catalog::{BuildRecipe, BundleSource};
use crate::progress::Progress;

/// Which kernel a registered rootfs boots with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelChoice {
    /// A kernel file given by the user (its modules in the rootfs).
    File(PathBuf),
    /// The rootfs's own (`/boot/vmlinuz-*` with its modules), else the
    /// kernel of `fallback` (the default image, when it is on this host).
    Rootfs { fallback: Option<ImageKernel> },
    /// The kernel of another image (`--kernel-from`), its modules from
    /// that image's rootfs.
    Image(ImageKernel),
}

/// An image's kernel, as register needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageKernel {
    pub image: String,
    pub kernel: PathBuf,
    pub vmlinux: Option<PathBuf>,
    /// The image's rootfs, which holds the kernel's modules.
    pub rootfs: PathBuf,
    /// The kernel release, when the image's manifest records it.
    pub release: Option<String>,
}

/// Files given to `image register`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterFiles {
    pub kernel: KernelChoice,
    pub initrd: Option<PathBuf>,
    pub rootfs: PathBuf,
    pub work_seed: Option<PathBuf>,
    /// Make no work seed when none is given: VMs' `/root` starts empty.
    pub no_work_seed: bool,
    /// How files held open for a caller (`/proc/PID/fd/N`) are named in
    /// messages and records: the paths the caller gave.
    pub shown: Vec<(PathBuf, PathBuf)>,
}

impl RegisterFiles {
    /// `path` as the user named it.
    pub fn show(&self, path: &Path) -> String {
        self.shown
            .iter()
            .find(|(held, _)| held == path)
            .map_or(path, |(_, given)| given)
            .display()
            .to_string()
    }
}

/// An OCI image to pull from a registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OciSource {
    /// The reference as the user wrote it.
    pub reference: String,
    /// The kernel it boots with: its own, else this fallback's.
    pub kernel: KernelChoice,
    /// Whose registry credentials the pull uses.
    pub auth: RegistryAuth,
}

/// Whose registry credentials a pull uses: a caller's own, never another's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RegistryAuth {
    /// The daemon's (root's pulls, the catalog's images).
    #[default]
    Daemon,
    /// This user's credential files, read with its rights.
    User { uid: u32, gid: u32 },
}

/// A VM promoted to an image over the image it runs: its system disk
/// and work disk, already copied into the staging directory (as
/// `layer_file` and, unless none is wanted, `work-seed.ext4`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromoteFiles {
    /// The VM's name, for the image's origin.
    pub vm: String,
    pub parent_id: String,
    pub parent_name: String,
    /// The parent's directory and manifest: its artifacts (but its work
    /// seed) become the new image's by hard link.
    pub parent_dir: PathBuf,
    pub parent_manifest: Manifest,
    /// The new layer's file in staging (`layer-N.ext4`, N the number of
    /// the parent's layers).
    pub layer_file: String,
    /// Guest paths removed from the new layer: what makes a machine
    /// itself (host keys, machine-id, hostname, banger's per-VM files,
    /// the random seed). VMs from the image get their own.
    pub scrub: Vec<String>,
}

/// What an image is made from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageRequest {
    Build(BuildRecipe),
    Bundle(BundleSource),
    Register(RegisterFiles),
    Oci(OciSource),
    Promote(Box<PromoteFiles>),
}

impl ImageRequest {
    /// The `source` recorded for the image.
    pub fn source(&self) -> &'static str {
        match self {
            ImageRequest::Build(_) => "build",
            ImageRequest::Bundle(_) | ImageRequest::Oci(_) => "pull",
            ImageRequest::Register(_) => "register",
            ImageRequest::Promote(_) => "promote",
        }
    }

    /// The image a new one stands on, when it does.
    pub fn parent_id(&self) -> Option<&str> {
        match self {
            ImageRequest::Promote(files) => Some(&files.parent_id),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum MakeError {
    /// The request itself is wrong (a missing file, not ext4, not a kernel).
    #[error("{message}")]
    Invalid {
        message: String,
        hint: Option<String>,
    },
    /// The work failed (a tool, a download, a digest).
    #[error("{message}")]
    Failed {
        message: String,
        hint: Option<String>,
    },
    /// A server the work fetches from could not be reached or failed.
    #[error("{message}")]
    Upstream {
        message: String,
        hint: Option<String>,
    },
    /// This host cannot make images at all (a tool or the guest binary
    /// is missing): nothing about the request could change that.
    #[error("{message}")]
    Unavailable {
        message: String,
        hint: Option<String>,
    },
}

impl MakeError {
    pub fn invalid(message: impl Into<String>, hint: Option<&str>) -> Self {
        MakeError::Invalid {
            message: message.into(),
            hint: hint.map(String::from),
        }
    }

    pub fn upstream(message: impl Into<String>, hint: Option<&str>) -> Self {
        MakeError::Upstream {
            message: message.into(),
            hint: hint.map(String::from),
        }
    }

    pub fn unavailable(message: impl Into<String>, hint: Option<&str>) -> Self {
        MakeError::Unavailable {
            message: message.into(),
            hint: hint.map(String::from),
        }
    }

    pub fn failed(message: impl Into<String>, hint: Option<&str>) -> Self {
        MakeError::Failed {
            message: message.into(),
            hint: hint.map(String::from),
        }
    }

    pub fn hint(&self) -> Option<&str> {
        match self {
            MakeError::Invalid { hint, .. }
            | MakeError::Failed { hint, .. }
            | MakeError::Upstream { hint, .. }
            | MakeError::Unavailable { hint, .. } => hint.as_deref(),
        }
    }
}

#[async_trait]
pub trait ImageMaker: Send + Sync {
    /// Quick checks of a request before any slow work (files exist, are of
    /// the right kind, the tools are there).
    fn check(&self, request: &ImageRequest) -> Result<(), MakeError>;

    /// Makes the artifacts for `request` inside `staging` (an empty
    /// directory), writes `staging/manifest.json` and returns it. May take
    /// minutes; may be cancelled by dropping the future, after which the
    /// caller removes `staging`.
    async fn make(
        &self,
        name: &str,
        request: &ImageRequest,
        staging: &Path,
        progress: &dyn Progress,
    ) -> Result<Manifest, MakeError>;

    /// Writes a bundle of the image in `image_dir` into `out`, a new file
    /// (`shown` names it in errors); its bytes are on disk when this
    /// returns. Whoever made the file publishes or removes it.
    async fn export(
        &self,
        image_dir: &Path,
        out: std::fs::File,
        shown: &Path,
        progress: &dyn Progress,
    ) -> Result<(), MakeError>;

    /// Frees cached pull data (OCI layers) that no image references;
    /// `referenced` are the layer digests of every image on the host.
    fn prune(&self, _referenced: &[String]) -> Result<banger_proto::image::PruneReport, MakeError> {
        Ok(Default::default())
    }
}
