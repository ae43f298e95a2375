//! A whole pull: resolve the reference to the linux/amd64 image, fetch
//! each layer into the cache (a stage per layer, with bytes), then apply
//! the layers in order to an empty tree.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use banger_core::progress::Progress;

use crate::auth;
use crate::cache::{BlobCache, Pins};
use crate::error::OciError;
use crate::layer::{self, LayerStats};
use crate::reference::ImageRef;
use crate::registry::{Compression, Limits, Registry, RunConfig};

/// How pulls reach registries.
#[derive(Debug, Clone, Default)]
pub struct PullOptions {
    /// Registries (`HOST[:PORT]`) spoken to over plain HTTP besides this
    /// host's own.
    pub insecure: Vec<String>,
    /// Credentials files, in order (`auth::default_files`).
    pub auth_files: Vec<PathBuf>,
    /// Credentials found already (a caller's, read with its rights):
    /// used instead of `auth_files` when given.
    pub credentials: Option<crate::auth::Credentials>,
    pub limits: Limits,
}

/// One layer of a pulled image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PulledLayer {
    pub digest: String,
    pub size: u64,
    pub media_type: String,
}

/// What a pull made.
#[derive(Debug)]
pub struct Pulled {
    /// The full reference.
    pub reference: String,
    /// The digest of the platform manifest.
    pub digest: String,
    pub layers: Vec<PulledLayer>,
    pub config: RunConfig,
    /// Bytes downloaded (layers already cached cost none).
    pub downloaded: u64,
    pub stats: LayerStats,
    /// Keeps the layers in the cache until the image is recorded.
    pub pins: Pins,
}

fn short(digest: &str) -> &str {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    &hex[..hex.len().min(12)]
}

/// Pulls `reference` into `tree` (an empty directory).
pub async fn pull(
    reference: &ImageRef,
    cache: &Arc<BlobCache>,
    tree: &Path,
    options: &PullOptions,
    progress: &dyn Progress,
) -> Result<Pulled, OciError> {
    progress.stage("resolve");
    let credentials = match &options.credentials {
        Some(given) => Some(given.clone()),
        None => auth::find(reference.registry(), &options.auth_files)?,
    };
    let registry =
        Registry::connect(reference, &options.insecure, credentials, options.limits).await?;
    let resolved = registry.resolve().await?;
    progress.note(&format!(
        "{} is {} ({} layers)",
        reference,
        resolved.digest,
        resolved.layers.len()
    ));
    let digests: Vec<String> = resolved.layers.iter().map(|l| l.digest.clone()).collect();
    let pins = cache.pin(&digests);
    let count = resolved.layers.len();
    let mut downloaded = 0;
    for (i, descriptor) in resolved.layers.iter().enumerate() {
        let cached = if cache.has(&descriptor.digest) {
            " cached"
        } else {
            ""
        };
        progress.stage(&format!(
            "layer {}/{count} {}{cached}",
            i + 1,
            short(&descriptor.digest)
        ));
        downloaded += cache.fetch(&registry, descriptor, progress).await?;
    }
    progress.stage("unpack");
    let work: Vec<(PathBuf, Compression, String)> = resolved
        .layers
        .iter()
        .map(|d| {
            let path = cache.path(&d.digest).unwrap_or_default();
            let compression = Compression::of(&d.media_type).unwrap_or(Compression::None);
            (path, compression, short(&d.digest).to_string())
        })
        .collect();
    let tree_owned = tree.to_path_buf();
    let stats = tokio::task::spawn_blocking(move || {
        let mut total = LayerStats::default();
        for (path, compression, name) in work {
            let stats = layer::apply(&path, compression, &tree_owned, &name)?;
            total.entries += stats.entries;
            total.file_bytes += stats.file_bytes;
            total.whiteouts += stats.whiteouts;
        }
        Ok::<_, OciError>(total)
    })
    .await
    .map_err(|e| OciError::Worker(e.to_string()))??;
    Ok(Pulled {
        reference: reference.whole(),
        digest: resolved.digest,
        layers: resolved
            .layers
            .iter()
            .map(|d| PulledLayer {
                digest: d.digest.clone(),
                size: d.size.max(0) as u64,
                media_type: d.media_type.clone(),
            })
            .collect(),
        config: resolved.config.config.unwrap_or_default(),
        downloaded,
        stats,
        pins,
    })
}
