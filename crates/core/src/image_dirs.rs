//! The image directory tree under the state directory:
//!
//! ```text
//! images/<id>/            a published image (kernel, vmlinux, initrd,
//!                         rootfs.ext4, work-seed.ext4, manifest.json)
//! images/.staging/<op>/   work in progress of one build, pull or register
//! images/.trash/<id>/     a deleted image on its way out
//! ```
//!
//! Slow work happens in a staging directory that nobody else looks at;
//! publication is one `rename` into `images/<id>`, so no reader ever sees
//! a partial image. A `Staging` removes its directory when dropped unless
//! it was published, so a failed or cancelled operation leaves nothing.

use std::io;
use std::path::{Path, PathBuf};

use rand::Rng;

#[derive(Debug, thiserror::Error)]
pub enum ImageDirsError {
    #[error("cannot prepare {path}: {source}")]
    Create { path: String, source: io::Error },
    #[error("cannot publish {from} as {to}: {source}")]
    Publish {
        from: String,
        to: String,
        source: io::Error,
    },
    #[error("cannot remove {path}: {source}")]
    Remove { path: String, source: io::Error },
}

const STAGING: &str = ".staging";
const TRASH: &str = ".trash";

/// The `images/` directory.
#[derive(Debug, Clone)]
pub struct ImageDirs {
    root: PathBuf,
}

impl ImageDirs {
    pub fn new(root: PathBuf) -> Self {
        ImageDirs { root }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where a published image lives.
    pub fn image_dir(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }

    /// A fresh, empty staging directory for one operation.
    pub fn stage(&self, op: &str) -> Result<Staging, ImageDirsError> {
        let suffix: u32 = rand::rng().random();
        let dir = self
            .root
            .join(STAGING)
            .join(format!("{op}-{}-{suffix:08x}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|source| ImageDirsError::Create {
            path: dir.display().to_string(),
            source,
        })?;
        Ok(Staging {
            dir,
            published: false,
        })
    }

    /// Removes what crashed or killed operations left in staging and
    /// trash. Called once at daemon start, before anything is staged.
    pub fn clean_stale(&self) -> Vec<PathBuf> {
        let mut removed = Vec::new();
        for sub in [STAGING, TRASH] {
            let Ok(entries) = std::fs::read_dir(self.root.join(sub)) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                match crate::tree_removal::remove_tree(&path) {
                    Ok(left) if left.is_empty() => removed.push(path),
                    Ok(left) => {
                        tracing::warn!(dir = %path.display(), mounts = ?left, "stale staging holds mount points: left in place")
                    }
                    Err(err) => {
                        tracing::warn!(dir = %path.display(), error = %err, "cannot remove stale staging")
                    }
                }
            }
        }
        removed
    }

    /// Moves a published image out of the way (fast; under the image lock)
    /// so `purge` can delete its files later without the lock.
    pub fn retire(&self, id: &str) -> Result<Option<PathBuf>, ImageDirsError> {
        let from = self.image_dir(id);
        if !from.exists() {
            return Ok(None);
        }
        let trash = self.root.join(TRASH);
        std::fs::create_dir_all(&trash).map_err(|source| ImageDirsError::Create {
            path: trash.display().to_string(),
            source,
        })?;
        let to = trash.join(id);
        std::fs::rename(&from, &to).map_err(|source| ImageDirsError::Publish {
            from: from.display().to_string(),
            to: to.display().to_string(),
            source,
        })?;
        Ok(Some(to))
    }

    /// Deletes a retired image's files.
    pub fn purge(path: &Path) -> Result<(), ImageDirsError> {
        let left =
            crate::tree_removal::remove_tree(path).map_err(|source| ImageDirsError::Remove {
                path: path.display().to_string(),
                source,
            })?;
        if !left.is_empty() {
            tracing::warn!(dir = %path.display(), mounts = ?left, "mount points left in place");
        }
        Ok(())
    }
}

/// `fsync`s every file in `dir` (image directories are flat) and `dir`.
fn sync_dir(dir: &Path) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            std::fs::File::open(entry.path())?.sync_all()?;
        }
    }
    std::fs::File::open(dir)?.sync_all()
}

/// A staging directory owned by one operation; removed on drop unless
/// published.
#[derive(Debug)]
pub struct Staging {
    dir: PathBuf,
    published: bool,
}

impl Staging {
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Renames the staging directory to `to` (which must not exist), its
    /// files on disk first (`fsync`) and the rename after, so a crash
    /// never leaves a published image with half its bytes.
    pub fn publish(mut self, to: &Path) -> Result<(), ImageDirsError> {
        let failed = |source| ImageDirsError::Publish {
            from: self.dir.display().to_string(),
            to: to.display().to_string(),
            source,
        };
        sync_dir(&self.dir).map_err(failed)?;
        std::fs::rename(&self.dir, to).map_err(failed)?;
        if let Some(parent) = to.parent() {
            std::fs::File::open(parent)
                .and_then(|dir| dir.sync_all())
                .map_err(failed)?;
        }
        self.published = true;
        Ok(())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.published {
            // Never through a mount point a killed tool left behind.
            match crate::tree_removal::remove_tree(&self.dir) {
                Ok(left) if left.is_empty() => {}
                Ok(left) => {
                    tracing::warn!(dir = %self.dir.display(), mounts = ?left, "staging holds mount points: left for the next daemon start")
                }
                Err(err) => {
                    tracing::warn!(dir = %self.dir.display(), error = %err, "cannot remove staging directory")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropped_staging_is_removed_and_published_staging_moves() {
        let tmp = std::env::temp_dir().join(format!("banger-dirs-{}", std::process::id()));
        let dirs = ImageDirs::new(tmp.clone());
        let staging = dirs.stage("pull").unwrap();
        let path = staging.path().to_path_buf();
        std::fs::write(path.join("rootfs.ext4"), b"x").unwrap();
        drop(staging);
        assert!(!path.exists());

        let staging = dirs.stage("build").unwrap();
        std::fs::write(staging.path().join("kernel"), b"k").unwrap();
        let dest = dirs.image_dir("abc");
        staging.publish(&dest).unwrap();
        assert_eq!(std::fs::read(dest.join("kernel")).unwrap(), b"k");

        let leftover = dirs.stage("crashed").unwrap();
        let leftover_path = leftover.path().to_path_buf();
        std::mem::forget(leftover);
        assert_eq!(dirs.clean_stale(), vec![leftover_path.clone()]);
        assert!(!leftover_path.exists());

        let retired = dirs.retire("abc").unwrap().unwrap();
        assert!(!dest.exists());
        ImageDirs::purge(&retired).unwrap();
        assert!(!retired.exists());
        std::fs::remove_dir_all(tmp).unwrap();
    }
}
