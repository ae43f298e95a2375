//! Packs a file, link or directory tree as a tar stream under its own
//! name: links stay links, modes, owners and modification times are kept.

use std::io::Write;
use std::path::Path;

use crate::CopyError;

/// Writes `src` (not following it if it is a link) as a tar stream to
/// `out` and returns `out` once the archive is finished.
pub fn pack<W: Write>(src: &Path, out: W) -> Result<W, CopyError> {
    let shown = || src.display().to_string();
    let meta = std::fs::symlink_metadata(src).map_err(|e| CopyError::io(src, e))?;
    let name = top_name(src).ok_or_else(|| {
        CopyError::BadArchive(format!(
            "{} has no name to copy it by; name a file or directory",
            shown()
        ))
    })?;
    let mut builder = tar::Builder::new(out);
    builder.follow_symlinks(false);
    builder.mode(tar::HeaderMode::Complete);
    let packed = if meta.is_dir() {
        builder.append_dir_all(&name, src)
    } else {
        builder.append_path_with_name(src, &name)
    };
    packed.map_err(|e| CopyError::io(src, e))?;
    builder.into_inner().map_err(|e| CopyError::io(src, e))
}

/// The name a source is packed under: its last component (`dir/.` and
/// `dir/` are `dir`). The side that unpacks a copy it asked for expects
/// exactly this name.
pub fn top_name(src: &Path) -> Option<String> {
    let absolute = if src.is_absolute() {
        src.to_path_buf()
    } else {
        std::env::current_dir().ok()?.join(src)
    };
    let mut parts: Vec<String> = Vec::new();
    for part in absolute.components() {
        match part {
            std::path::Component::Normal(p) => parts.push(p.to_string_lossy().into_owned()),
            std::path::Component::ParentDir => {
                parts.pop();
            }
            _ => {}
        }
    }
    parts.pop()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_of_sources() {
        assert_eq!(top_name(Path::new("/a/b")).as_deref(), Some("b"));
        assert_eq!(top_name(Path::new("/a/b/")).as_deref(), Some("b"));
        assert_eq!(top_name(Path::new("/a/b/.")).as_deref(), Some("b"));
        assert_eq!(top_name(Path::new("/a/b/..")).as_deref(), Some("a"));
        assert_eq!(top_name(Path::new("/")), None);
    }

    #[test]
    fn a_missing_source_is_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let err = pack(&dir.path().join("gone"), Vec::new()).unwrap_err();
        assert_eq!(err.kind(), "not_found");
    }
}
