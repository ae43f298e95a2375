//! Verified blobs by digest: `DIR/sha256/HEX`, shared between images. A
//! blob enters only after its bytes matched its digest and size while
//! they streamed (into a `.partial-` file that any failure, or dropping
//! the download, removes). Blobs a pull is using are pinned; `prune`
//! removes every blob that no image references and no pull has pinned.

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use banger_core::progress::Progress;
use futures_util::StreamExt;
use oci_client::manifest::OciDescriptor;
use sha2::{Digest, Sha256};

use crate::error::OciError;
use crate::registry::Registry;

/// Progress is reported at most once per this many bytes.
const PROGRESS_STEP: u64 = 1 << 20;

#[derive(Debug)]
pub struct BlobCache {
    dir: PathBuf,
    pins: Mutex<BTreeMap<String, usize>>,
}

/// Keeps blobs from `prune` while it lives.
#[derive(Debug)]
pub struct Pins {
    cache: Arc<BlobCache>,
    digests: Vec<String>,
}

impl Drop for Pins {
    fn drop(&mut self) {
        let mut pins = self.cache.pins.lock().unwrap_or_else(|e| e.into_inner());
        for digest in &self.digests {
            if let Some(count) = pins.get_mut(digest) {
                *count -= 1;
                if *count == 0 {
                    pins.remove(digest);
                }
            }
        }
    }
}

/// A `.partial-` file removed unless kept.
struct Partial(Option<PathBuf>);

impl Drop for Partial {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// What `prune` freed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    pub blobs: u64,
    pub bytes: u64,
}

fn hex_of(digest: &str) -> Option<&str> {
    let hex = digest.strip_prefix("sha256:")?;
    (hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))).then_some(hex)
}

impl BlobCache {
    /// The cache under `dir` (made when missing).
    pub fn open(dir: &Path) -> Result<Arc<BlobCache>, OciError> {
        let blobs = dir.join("sha256");
        std::fs::create_dir_all(&blobs).map_err(|e| OciError::io("create", &blobs, e))?;
        Ok(Arc::new(BlobCache {
            dir: blobs,
            pins: Mutex::new(BTreeMap::new()),
        }))
    }

    /// Where the blob `digest` is (or would be).
    pub fn path(&self, digest: &str) -> Option<PathBuf> {
        hex_of(digest).map(|hex| self.dir.join(hex))
    }

    pub fn has(&self, digest: &str) -> bool {
        self.path(digest).is_some_and(|p| p.is_file())
    }

    /// Pins `digests` until the returned guard drops.
    pub fn pin(self: &Arc<Self>, digests: &[String]) -> Pins {
        let mut pins = self.pins.lock().unwrap_or_else(|e| e.into_inner());
        for digest in digests {
            *pins.entry(digest.clone()).or_default() += 1;
        }
        Pins {
            cache: self.clone(),
            digests: digests.to_vec(),
        }
    }

    /// Makes sure the blob of `descriptor` is in the cache: downloads it
    /// from `registry` unless it is there. Returns the bytes downloaded.
    pub async fn fetch(
        &self,
        registry: &Registry,
        descriptor: &OciDescriptor,
        progress: &dyn Progress,
    ) -> Result<u64, OciError> {
        let digest = &descriptor.digest;
        let final_path = self.path(digest).ok_or_else(|| OciError::Malformed {
            what: format!("digest {digest:?}"),
            reason: "banger accepts sha256 digests".into(),
        })?;
        let total = descriptor.size.max(0) as u64;
        if final_path.is_file() {
            progress.bytes(total, Some(total));
            return Ok(0);
        }
        let what = format!("layer {digest}");
        let partial_path = self.dir.join(format!(
            ".partial-{}-{:08x}",
            hex_of(digest).unwrap_or("x"),
            rand::random::<u32>()
        ));
        let mut partial = Partial(Some(partial_path.clone()));
        let mut file = std::fs::File::create(&partial_path)
            .map_err(|e| OciError::io("create", &partial_path, e))?;
        let mut stream = registry.blob(descriptor).await?;
        let mut hasher = Sha256::new();
        let mut done = 0u64;
        let mut reported = 0u64;
        progress.bytes(0, Some(total));
        while let Some(chunk) = stream.stream.next().await {
            let chunk = match chunk {
                Ok(chunk) => chunk,
                // oci-client checks the digest too: say it our way below.
                Err(_) if done == total => break,
                // The connection ended (or the registry went away) early.
                Err(e) if done < total => {
                    tracing::debug!(error = %e, done, total, "blob stream ended early");
                    return Err(OciError::Truncated { what, done, total });
                }
                Err(e) => {
                    return Err(OciError::Interrupted {
                        what,
                        done,
                        reason: e.to_string(),
                    })
                }
            };
            done += chunk.len() as u64;
            if done > total {
                return Err(OciError::TooLarge { what, limit: total });
            }
            hasher.update(&chunk);
            file.write_all(&chunk)
                .map_err(|e| OciError::io("write", &partial_path, e))?;
            if done - reported >= PROGRESS_STEP {
                reported = done;
                progress.bytes(done, Some(total));
            }
        }
        if done < total {
            return Err(OciError::Truncated { what, done, total });
        }
        let got = format!("sha256:{:x}", hasher.finalize());
        if &got != digest {
            return Err(OciError::Digest {
                what,
                expected: digest.clone(),
                got,
            });
        }
        file.sync_all()
            .map_err(|e| OciError::io("sync", &partial_path, e))?;
        std::fs::rename(&partial_path, &final_path)
            .map_err(|e| OciError::io("publish", &final_path, e))?;
        partial.0 = None;
        progress.bytes(done, Some(total));
        Ok(done)
    }

    /// Removes every blob not in `keep` and not pinned, and leftovers of
    /// downloads that no pull holds.
    pub fn prune(&self, keep: &HashSet<String>) -> Result<Pruned, OciError> {
        let pins = self.pins.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let pinned = |hex: &str| pins.contains_key(&format!("sha256:{hex}"));
        let mut pruned = Pruned::default();
        let entries =
            std::fs::read_dir(&self.dir).map_err(|e| OciError::io("list", &self.dir, e))?;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let hex = name
                .strip_prefix(".partial-")
                .and_then(|rest| rest.split('-').next())
                .unwrap_or(&name)
                .to_string();
            if pinned(&hex) || keep.contains(&format!("sha256:{hex}")) && !name.starts_with('.') {
                continue;
            }
            let bytes = entry.metadata().map(|m| m.len()).unwrap_or(0);
            if std::fs::remove_file(entry.path()).is_ok() {
                pruned.blobs += 1;
                pruned.bytes += bytes;
            }
        }
        Ok(pruned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prune_keeps_referenced_and_pinned_blobs() {
        let dir = tempfile::tempdir().unwrap();
        let cache = BlobCache::open(dir.path()).unwrap();
        let digest = |c: char| format!("sha256:{}", c.to_string().repeat(64));
        for c in ['a', 'b', 'c'] {
            std::fs::write(cache.path(&digest(c)).unwrap(), "x").unwrap();
        }
        std::fs::write(
            dir.path()
                .join(format!("sha256/.partial-{}-0", "d".repeat(64))),
            "y",
        )
        .unwrap();
        let pins = cache.pin(&[digest('b')]);
        let keep: HashSet<String> = [digest('a')].into();
        let pruned = cache.prune(&keep).unwrap();
        assert_eq!(pruned, Pruned { blobs: 2, bytes: 2 });
        assert!(cache.has(&digest('a')) && cache.has(&digest('b')) && !cache.has(&digest('c')));
        drop(pins);
        cache.prune(&keep).unwrap();
        assert!(cache.has(&digest('a')) && !cache.has(&digest('b')));
        assert_eq!(cache.path("sha256:../../etc"), None);
    }
}
