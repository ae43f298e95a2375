//! The image flows: build, pull, register, export, delete, and fetching a
//! catalog image on first use (auto-pull). The slow part of every mutation
//! runs unlocked in a staging directory of its own; publication is the
//! only step under the image lock: re-check the name, rename staging into
//! place, record the row. Of two publishers of one name exactly one wins
//! and the loser's staging is removed.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use banger_proto::image::Manifest;
use tokio::sync::Mutex;

use crate::catalog::{BundleSource, Catalog, Recipe};
use crate::clock::Clock;
use crate::image::Image;
use crate::image_dirs::{ImageDirs, ImageDirsError};
use crate::image_maker::{ImageKernel, ImageMaker, ImageRequest, MakeError};
use crate::locks::VmLocks;
use crate::names::{validate_name, NameError};
use crate::operation::Operation;
use crate::progress::{LogProgress, Progress};
use crate::resolve::{ImageResolver, ResolveError};
use crate::snapshot::SnapshotKind;
use crate::store::{Store, StoreError};
use crate::vm::new_id;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error(transparent)]
    Name(#[from] NameError),
    #[error("image name already exists: {0}")]
    NameTaken(String),
    #[error("no image named {0:?}")]
    NotFound(String),
    #[error("unknown image {0:?}: it is not on this host and not in the catalog")]
    NotInCatalog(String),
    #[error("image {image} is in use by {users}")]
    InUse { image: String, users: String },
    #[error("{0} already exists")]
    ExportTarget(String),
    #[error(transparent)]
    Make(#[from] MakeError),
    #[error(transparent)]
    Dirs(#[from] ImageDirsError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Where a pull gets its image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PullSource {
    /// A catalog entry, by name.
    Catalog(String),
    /// A bundle URL (`http(s)://`, `file://`) or a local bundle path.
    Url { url: String, sha256: Option<String> },
    /// An OCI image reference (Docker's rules), and the image whose
    /// kernel boots it when it has none (the default image's otherwise).
    Oci {
        reference: String,
        kernel_from: Option<String>,
        /// Whose registry credentials it is pulled with.
        auth: crate::image_maker::RegistryAuth,
    },
}

impl PullSource {
    /// Which kind of source `what` is:
    /// - `docker://REF` is an OCI reference;
    /// - `http://`, `https://` and `file://` URLs, absolute and `./` paths
    ///   and names ending in `.tar.zst` are bundles;
    /// - a catalog entry's name is that entry;
    /// - anything else is an OCI reference (`debian:bookworm`,
    ///   `ghcr.io/org/app`, a bare `alpine` meaning docker.io/library).
    pub fn parse(what: &str, sha256: Option<String>, catalog: &Catalog) -> PullSource {
        // Relative paths are the client's to make absolute.
        let bundle = ["http://", "https://", "file://", "/"]
            .iter()
            .any(|p| what.starts_with(p));
        let oci = || PullSource::Oci {
            reference: what.to_string(),
            kernel_from: None,
            auth: Default::default(),
        };
        if what.starts_with("docker://") {
            oci()
        } else if bundle {
            PullSource::Url {
                url: what.to_string(),
                sha256,
            }
        } else if catalog.find(what).is_some() {
            PullSource::Catalog(what.to_string())
        } else {
            oci()
        }
    }
}

/// The image half of the internal API.
pub struct Images {
    store: Arc<dyn Store>,
    maker: Arc<dyn ImageMaker>,
    dirs: ImageDirs,
    catalog: Catalog,
    clock: Arc<dyn Clock>,
    /// Held only to publish or delete: a rename and a row.
    publish_lock: Mutex<()>,
    /// One fetch per catalog name at a time, so concurrent first uses of an
    /// image wait for one pull instead of racing several.
    fetch_locks: VmLocks,
    /// The default image: its kernel boots userlands that have none.
    default_image: String,
}

impl Images {
    pub fn new(
        store: Arc<dyn Store>,
        maker: Arc<dyn ImageMaker>,
        dirs: ImageDirs,
        catalog: Catalog,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Images {
            store,
            maker,
            dirs,
            catalog,
            clock,
            publish_lock: Mutex::new(()),
            fetch_locks: VmLocks::default(),
            default_image: crate::spec::SpecDefaults::default().image,
        }
    }

    /// Sets the default image (whose kernel boots userlands without one).
    pub fn with_default_image(mut self, name: &str) -> Self {
        self.default_image = name.to_string();
        self
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    pub fn list(&self) -> Result<Vec<Image>, ImageError> {
        Ok(self.store.list_images()?)
    }

    pub fn find(&self, id_or_name: &str) -> Result<Image, ImageError> {
        self.store
            .find_image(id_or_name)?
            .ok_or_else(|| ImageError::NotFound(id_or_name.to_string()))
    }

    /// Builds an image from a recipe.
    pub async fn build(
        &self,
        name: &str,
        recipe: crate::catalog::BuildRecipe,
        progress: &dyn Progress,
    ) -> Result<Image, ImageError> {
        self.make(Some(name), ImageRequest::Build(recipe), progress)
            .await
    }

    /// Registers image files from this host.
    pub async fn register(
        &self,
        name: &str,
        files: crate::image_maker::RegisterFiles,
        progress: &dyn Progress,
    ) -> Result<Image, ImageError> {
        self.make(Some(name), ImageRequest::Register(files), progress)
            .await
    }

    /// The kernel of image `id_or_name` for a register that boots with
    /// it: paths, and the release its manifest records.
    pub fn kernel_of(&self, id_or_name: &str) -> Result<ImageKernel, ImageError> {
        let image = self.find(id_or_name)?;
        Ok(ImageKernel {
            image: image.name.clone(),
            kernel: image.kernel_path.clone(),
            vmlinux: image.vmlinux_path.clone(),
            rootfs: image.rootfs_path.clone(),
            release: image
                .manifest
                .as_ref()
                .and_then(|m| m.kernel_version.clone()),
        })
    }

    /// Pulls a catalog image or a bundle. `name` overrides the catalog
    /// name or the bundle's own.
    pub async fn pull(
        &self,
        source: PullSource,
        name: Option<&str>,
        progress: &dyn Progress,
    ) -> Result<Image, ImageError> {
        let request = self.pull_request(&source)?;
        let name = match &source {
            PullSource::Catalog(entry) => Some(name.unwrap_or(entry)),
            PullSource::Url { .. } | PullSource::Oci { .. } => name,
        };
        self.make(name, request, progress).await
    }

    /// The common shape of every mutation that adds an image.
    async fn make(
        &self,
        name: Option<&str>,
        request: ImageRequest,
        progress: &dyn Progress,
    ) -> Result<Image, ImageError> {
        self.make_in(name, request, None, progress).await
    }

    /// A directory for slow work on a new image; removed when dropped
    /// unless published.
    pub fn stage(&self, op: &str) -> Result<crate::image_dirs::Staging, ImageError> {
        Ok(self.dirs.stage(op)?)
    }

    /// Makes an image from `request` in `staging` (made by `stage`, with
    /// what the request says is there already) or a fresh directory.
    pub async fn make_in(
        &self,
        name: Option<&str>,
        request: ImageRequest,
        staging: Option<crate::image_dirs::Staging>,
        progress: &dyn Progress,
    ) -> Result<Image, ImageError> {
        let kind = match request {
            ImageRequest::Build(_) => "image.build",
            ImageRequest::Bundle(_) | ImageRequest::Oci(_) => "image.pull",
            ImageRequest::Register(_) => "image.register",
            ImageRequest::Promote(_) => "image.promote",
        };
        let mut op = Operation::begin(kind);
        let result = self
            .make_phases(&mut op, name, request, staging, progress)
            .await;
        op.finish(
            result
                .as_ref()
                .map(|_| ())
                .map_err(|e| e as &dyn std::fmt::Display),
        );
        result
    }

    async fn make_phases(
        &self,
        op: &mut Operation,
        name: Option<&str>,
        request: ImageRequest,
        staging: Option<crate::image_dirs::Staging>,
        progress: &dyn Progress,
    ) -> Result<Image, ImageError> {
        self.precheck(name, &request)?;
        let staging = match staging {
            Some(staging) => staging,
            None => self.dirs.stage(request.source())?,
        };
        let manifest = self
            .maker
            .make(name.unwrap_or(""), &request, staging.path(), progress)
            .await?;
        op.stage("make");
        let name = match name {
            Some(name) => name.to_string(),
            None => {
                validate_name(&manifest.name)?;
                manifest.name.clone()
            }
        };
        progress.stage("publish");
        let image = self
            .publish(
                &name,
                (request.source(), request.parent_id()),
                staging,
                manifest,
            )
            .await?;
        op.stage("publish");
        tracing::info!(image = %image.name, id = %image.id, source = %image.source, "image published");
        Ok(image)
    }

    /// What can be refused before any slow work: the name and the quick
    /// checks of the request. Publication re-checks the name.
    pub fn precheck(&self, name: Option<&str>, request: &ImageRequest) -> Result<(), ImageError> {
        if let Some(name) = name {
            validate_name(name)?;
            self.ensure_free(name)?;
        }
        self.maker.check(request)?;
        Ok(())
    }

    /// The request a pull source stands for; an unknown catalog name is
    /// refused here.
    pub fn pull_request(&self, source: &PullSource) -> Result<ImageRequest, ImageError> {
        match source {
            PullSource::Catalog(entry) => {
                let found = self
                    .catalog
                    .find(entry)
                    .ok_or_else(|| ImageError::NotInCatalog(entry.clone()))?;
                Ok(match &found.recipe {
                    Recipe::Build(recipe) => ImageRequest::Build(recipe.clone()),
                    Recipe::Bundle(bundle) => ImageRequest::Bundle(bundle.clone()),
                })
            }
            PullSource::Url { url, sha256 } => Ok(ImageRequest::Bundle(BundleSource {
                url: url.clone(),
                sha256: sha256.clone(),
            })),
            PullSource::Oci {
                reference,
                kernel_from,
                auth,
            } => Ok(ImageRequest::Oci(crate::image_maker::OciSource {
                reference: reference.clone(),
                kernel: self.kernel_fallback(kernel_from.as_deref())?,
                auth: *auth,
            })),
        }
    }

    /// The kernel a pulled or registered userland without its own boots
    /// with: `kernel_from`'s, else the default image's when it is here.
    pub fn kernel_fallback(
        &self,
        kernel_from: Option<&str>,
    ) -> Result<crate::image_maker::KernelChoice, ImageError> {
        use crate::image_maker::KernelChoice;
        Ok(match kernel_from {
            Some(image) => KernelChoice::Image(self.kernel_of(image)?),
            None => KernelChoice::Rootfs {
                fallback: self.kernel_of(&self.default_image).ok(),
            },
        })
    }

    /// Frees cached pull data no image references.
    pub fn prune(&self) -> Result<banger_proto::image::PruneReport, ImageError> {
        let referenced: Vec<String> = self
            .store
            .list_images()?
            .into_iter()
            .filter_map(|image| image.manifest.and_then(|m| m.oci))
            .flat_map(|oci| oci.layers)
            .collect();
        let report = self.maker.prune(&referenced)?;
        if report.blobs > 0 {
            tracing::info!(
                blobs = report.blobs,
                bytes = report.bytes,
                "pruned cached layers"
            );
        }
        Ok(report)
    }

    pub fn ensure_free(&self, name: &str) -> Result<(), ImageError> {
        match self.store.find_image(name)? {
            Some(_) => Err(ImageError::NameTaken(name.to_string())),
            None => Ok(()),
        }
    }

    /// The only locked step: milliseconds.
    async fn publish(
        &self,
        name: &str,
        (source, parent_id): (&str, Option<&str>),
        staging: crate::image_dirs::Staging,
        manifest: Manifest,
    ) -> Result<Image, ImageError> {
        let _lock = self.publish_lock.lock().await;
        // On a lost race `staging` is dropped here, which removes it.
        self.ensure_free(name)?;
        if let Some(parent) = parent_id {
            // Removed while the child was made: the child goes too.
            self.find(parent)?;
        }
        let id = new_id();
        let dir = self.dirs.image_dir(&id);
        staging.publish(&dir)?;
        let mut image = Image::from_manifest(
            id,
            name.to_string(),
            source.to_string(),
            &dir,
            manifest,
            self.clock.now_ms(),
        );
        image.parent_id = parent_id.map(String::from);
        if let Err(err) = self.store.upsert_image(&image) {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(err.into());
        }
        Ok(image)
    }

    /// Removes an image no VM uses. Only the lookup, the check, the row
    /// and a rename happen under the lock; the files go afterwards.
    pub async fn delete(&self, id_or_name: &str) -> Result<Image, ImageError> {
        let (image, retired) = {
            let _lock = self.publish_lock.lock().await;
            let image = self.find(id_or_name)?;
            let snapshots: Vec<_> = self
                .store
                .list_snapshots()?
                .into_iter()
                .filter(|s| s.image_id == image.id)
                .collect();
            let children: Vec<String> = self
                .store
                .list_images()?
                .into_iter()
                .filter(|child| child.parent_id.as_deref() == Some(image.id.as_str()))
                .map(|child| format!("image {}", child.name))
                .collect();
            let users: Vec<String> = self
                .store
                .list_vms()?
                .into_iter()
                .filter(|vm| vm.image_id == image.id)
                .map(|vm| format!("vm {}", vm.name))
                .chain(children)
                .chain(
                    snapshots
                        .iter()
                        .filter(|s| s.kind != SnapshotKind::Template)
                        .map(|s| format!("snapshot {}", s.name)),
                )
                .collect();
            if !users.is_empty() {
                return Err(ImageError::InUse {
                    image: image.name.clone(),
                    users: users.join(", "),
                });
            }
            // Its warm template goes with it (the files at the next
            // `Banger::clean_snapshot_dirs`).
            for template in &snapshots {
                self.store.delete_snapshot(&template.id)?;
            }
            // The row first: the schema refuses it if a VM appeared meanwhile.
            self.store.delete_image(&image.id)?;
            let retired = self.dirs.retire(&image.id)?;
            (image, retired)
        };
        if let Some(path) = retired {
            if let Err(err) = ImageDirs::purge(&path) {
                tracing::warn!(error = %err, "image files remain; they go at the next daemon start");
            }
        }
        if image.manifest.as_ref().is_some_and(|m| m.oci.is_some()) {
            if let Err(err) = self.prune() {
                tracing::warn!(error = %err, "cached layers remain; image prune frees them");
            }
        }
        tracing::info!(image = %image.name, id = %image.id, "image removed");
        Ok(image)
    }

    /// Writes a bundle of an image into `out`, a new file (see
    /// `ImageMaker::export`).
    pub async fn export(
        &self,
        id_or_name: &str,
        out: std::fs::File,
        shown: &Path,
        progress: &dyn Progress,
    ) -> Result<Image, ImageError> {
        let image = self.find(id_or_name)?;
        let dir: PathBuf = self.dirs.image_dir(&image.id);
        self.maker.export(&dir, out, shown, progress).await?;
        Ok(image)
    }

    /// A recorded image, or the catalog entry of that name pulled now.
    pub async fn resolve_or_fetch(
        &self,
        name: &str,
        progress: &dyn Progress,
    ) -> Result<Image, ImageError> {
        if let Some(image) = self.store.find_image(name)? {
            return Ok(image);
        }
        if self.catalog.find(name).is_none() {
            return Err(ImageError::NotInCatalog(name.to_string()));
        }
        let _fetching = self.fetch_locks.lock(name).await;
        // Someone else may have fetched it while we waited.
        if let Some(image) = self.store.find_image(name)? {
            return Ok(image);
        }
        tracing::info!(
            image = name,
            "image not on this host: pulling it from the catalog"
        );
        progress.stage("auto_pull_image");
        self.pull(PullSource::Catalog(name.to_string()), None, progress)
            .await
    }
}

#[async_trait]
impl ImageResolver for Images {
    async fn resolve(&self, id_or_name: &str) -> Result<Image, ResolveError> {
        self.resolve_watched(id_or_name, &LogProgress).await
    }

    async fn resolve_watched(
        &self,
        id_or_name: &str,
        progress: &dyn Progress,
    ) -> Result<Image, ResolveError> {
        match self.resolve_or_fetch(id_or_name, progress).await {
            Ok(image) => Ok(image),
            Err(ImageError::NotInCatalog(name)) | Err(ImageError::NotFound(name)) => {
                Err(ResolveError::Unknown(name))
            }
            Err(ImageError::Store(err)) => Err(ResolveError::Store(err)),
            Err(err) => Err(ResolveError::Fetch {
                name: id_or_name.to_string(),
                reason: err.to_string(),
            }),
        }
    }
}

#[cfg(test)]
mod tests;
