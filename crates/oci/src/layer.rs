//! One layer applied to a root filesystem tree, as the OCI image spec
//! says: entries in order, `.wh.NAME` removes NAME from the layers below,
//! `.wh..wh..opq` empties its directory of what the layers below put
//! there; owners, modes (setuid included), mtimes, xattrs, hard links,
//! symbolic links, fifos and device nodes kept.
//!
//! Nothing is written outside the tree: an entry with a `..` component
//! is refused, an absolute path is taken relative to the tree, and an
//! entry (or a hard link's target) whose parent directories pass through
//! a symbolic link is refused: the link could point anywhere on the host,
//! and images built from a real filesystem never need it.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Component, Path, PathBuf};

use tar::{Archive, EntryType};

use crate::error::OciError;
use crate::registry::Compression;

const WHITEOUT: &str = ".wh.";
const OPAQUE: &str = ".wh..wh..opq";

/// What a layer held.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LayerStats {
    pub entries: u64,
    pub file_bytes: u64,
    pub whiteouts: u64,
}

/// Applies the layer blob at `blob` to `tree`. `layer` names it in errors.
pub fn apply(
    blob: &Path,
    compression: Compression,
    tree: &Path,
    layer: &str,
) -> Result<LayerStats, OciError> {
    let file = File::open(blob).map_err(|e| OciError::io("open", blob, e))?;
    let reader: Box<dyn Read> = match compression {
        Compression::None => Box::new(BufReader::new(file)),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(BufReader::new(file))),
        Compression::Zstd => {
            Box::new(zstd::Decoder::new(file).map_err(|e| OciError::io("decompress", blob, e))?)
        }
    };
    apply_tar(reader, tree, layer)
}

/// Applies an uncompressed layer stream to `tree`.
pub fn apply_tar(reader: impl Read, tree: &Path, layer: &str) -> Result<LayerStats, OciError> {
    let unsafe_layer = |reason: String| OciError::UnsafeLayer {
        layer: layer.to_string(),
        reason,
    };
    let bad = |reason: String| OciError::Malformed {
        what: format!("layer {layer}"),
        reason,
    };
    let mut archive = Archive::new(reader);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
    archive.set_preserve_mtime(true);
    archive.set_unpack_xattrs(true);
    let mut stats = LayerStats::default();
    // Paths this layer made: an opaque directory keeps them.
    let mut made: HashSet<PathBuf> = HashSet::new();
    for entry in archive.entries().map_err(|e| bad(e.to_string()))? {
        let mut entry = entry.map_err(|e| bad(e.to_string()))?;
        let raw = entry.path().map_err(|e| bad(e.to_string()))?.into_owned();
        let rel = relative(&raw).map_err(&unsafe_layer)?;
        let Some(name) = rel.file_name().map(|n| n.to_string_lossy().into_owned()) else {
            continue; // the root itself
        };
        let parent = rel.parent().unwrap_or(Path::new("")).to_path_buf();
        ensure_parents(tree, &parent, &mut made).map_err(unsafe_layer)?;
        stats.entries += 1;
        if name == OPAQUE {
            stats.whiteouts += 1;
            let dir = tree.join(&parent);
            let children = std::fs::read_dir(&dir).map_err(|e| OciError::io("list", &dir, e))?;
            for child in children.flatten() {
                let child_rel = parent.join(child.file_name());
                if !made.contains(&child_rel) {
                    remove(&child.path())?;
                }
            }
            continue;
        }
        if let Some(hidden) = name.strip_prefix(WHITEOUT) {
            stats.whiteouts += 1;
            if hidden.is_empty() || hidden == "." || hidden == ".." {
                return Err(unsafe_layer(format!("bad whiteout {}", raw.display())));
            }
            remove(&tree.join(&parent).join(hidden))?;
            continue;
        }
        let dest = tree.join(&rel);
        let kind = entry.header().entry_type();
        match std::fs::symlink_metadata(&dest) {
            Ok(meta) if meta.is_dir() && kind.is_dir() => {}
            Ok(_) => remove(&dest)?,
            Err(_) => {}
        }
        match kind {
            EntryType::Link => {
                let target = entry
                    .link_name()
                    .map_err(|e| bad(e.to_string()))?
                    .ok_or_else(|| bad(format!("hard link {} has no target", raw.display())))?;
                let target_rel = relative(&target).map_err(&unsafe_layer)?;
                check_no_links(tree, target_rel.parent().unwrap_or(Path::new("")))
                    .map_err(unsafe_layer)?;
                let source = tree.join(&target_rel);
                std::fs::hard_link(&source, &dest).map_err(|e| {
                    bad(format!(
                        "hard link {} to {}: {e}",
                        raw.display(),
                        target.display()
                    ))
                })?;
            }
            EntryType::Char | EntryType::Block => {
                make_device(&entry, &dest).map_err(|e| OciError::io("make device", &dest, e))?;
            }
            EntryType::Regular
            | EntryType::Continuous
            | EntryType::GNUSparse
            | EntryType::Directory
            | EntryType::Symlink
            | EntryType::Fifo => {
                if kind.is_file() || kind.is_gnu_sparse() || kind == EntryType::Continuous {
                    stats.file_bytes += entry.size();
                }
                entry
                    .unpack(&dest)
                    .map_err(|e| OciError::io("write", &dest, e))?;
            }
            other => {
                tracing::debug!(entry = %raw.display(), kind = ?other, "layer entry of a kind not unpacked");
                continue;
            }
        }
        made.insert(rel);
    }
    Ok(stats)
}

/// The entry path relative to the tree: `.` and leading `/` dropped, `..`
/// refused.
fn relative(path: &Path) -> Result<PathBuf, String> {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
            Component::ParentDir => {
                return Err(format!(
                    "the entry {} climbs out of the tree with ..",
                    path.display()
                ))
            }
        }
    }
    Ok(out)
}

/// Makes the parent directories of an entry (root-owned, 0755, as tar
/// does) and refuses a parent that is a symbolic link or not a directory.
fn ensure_parents(tree: &Path, parent: &Path, made: &mut HashSet<PathBuf>) -> Result<(), String> {
    let mut at = PathBuf::new();
    for part in parent.components() {
        at.push(part);
        let full = tree.join(&at);
        match std::fs::symlink_metadata(&full) {
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(format!(
                    "an entry writes through the symbolic link /{}",
                    at.display()
                ))
            }
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => return Err(format!("/{} is not a directory", at.display())),
            Err(_) => {
                // 0755 whatever the umask, as tar and container runtimes do.
                use std::os::unix::fs::PermissionsExt;
                std::fs::create_dir(&full)
                    .and_then(|()| {
                        std::fs::set_permissions(&full, std::fs::Permissions::from_mode(0o755))
                    })
                    .map_err(|e| format!("cannot make /{}: {e}", at.display()))?;
                made.insert(at.clone());
            }
        }
    }
    Ok(())
}

/// Refuses a path whose directories pass through a symbolic link.
fn check_no_links(tree: &Path, dir: &Path) -> Result<(), String> {
    let mut at = PathBuf::new();
    for part in dir.components() {
        at.push(part);
        if let Ok(meta) = std::fs::symlink_metadata(tree.join(&at)) {
            if meta.file_type().is_symlink() {
                return Err(format!(
                    "a hard link points through the symbolic link /{}",
                    at.display()
                ));
            }
        }
    }
    Ok(())
}

/// Removes a file, a link or a whole directory; a missing one is fine.
fn remove(path: &Path) -> Result<(), OciError> {
    let result = match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(_) => return Ok(()),
    };
    result.map_err(|e| OciError::io("remove", path, e))
}

fn make_device(entry: &tar::Entry<'_, impl Read>, dest: &Path) -> std::io::Result<()> {
    use nix::sys::stat::{makedev, mknod, Mode, SFlag};
    let header = entry.header();
    let kind = if header.entry_type() == EntryType::Char {
        SFlag::S_IFCHR
    } else {
        SFlag::S_IFBLK
    };
    let major = header.device_major()?.unwrap_or(0);
    let minor = header.device_minor()?.unwrap_or(0);
    let mode = header.mode()? & 0o7777;
    mknod(
        dest,
        kind,
        Mode::from_bits_truncate(mode),
        makedev(major.into(), minor.into()),
    )?;
    let uid = header.uid()? as u32;
    let gid = header.gid()? as u32;
    std::os::unix::fs::lchown(dest, Some(uid), Some(gid))?;
    Ok(())
}

#[cfg(test)]
mod tests;
