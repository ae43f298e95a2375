//! Where an archive's top-level entry lands, decided from what exists at
//! the destination (as `docker cp`): an existing directory receives it
//! under its own name; otherwise it takes the destination's name in the
//! destination's parent, which must exist.

use std::path::{Path, PathBuf};

use crate::CopyError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Landing {
    /// The directory the entries are unpacked into.
    pub dir: PathBuf,
    /// The name the top-level entry takes there; its own when `None`.
    pub rename: Option<String>,
    /// The destination is an existing non-directory: a directory may not
    /// replace it.
    pub onto_file: bool,
}

impl Landing {
    pub fn decide(dest: &Path) -> Result<Landing, CopyError> {
        let shown = || dest.display().to_string();
        match std::fs::metadata(dest) {
            Ok(meta) if meta.is_dir() => {
                return Ok(Landing {
                    dir: dest.to_path_buf(),
                    rename: None,
                    onto_file: false,
                })
            }
            Ok(_) if dest.as_os_str().to_string_lossy().ends_with('/') => {
                return Err(CopyError::NotADirectory(shown()))
            }
            Ok(_) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                if dest.as_os_str().to_string_lossy().ends_with('/') {
                    return Err(CopyError::NotFound(shown()));
                }
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotADirectory => {
                // `file/` or `file/x`: the file is what is not a directory.
                let text = dest.display().to_string();
                let file = match text.strip_suffix('/') {
                    Some(dir) => dir.to_string(),
                    None => dest.parent().unwrap_or(dest).display().to_string(),
                };
                return Err(CopyError::NotADirectory(file));
            }
            Err(err) => return Err(CopyError::io(dest, err)),
        }
        let exists = std::fs::symlink_metadata(dest).is_ok();
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| CopyError::NotFound(shown()))?;
        let parent = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        match std::fs::metadata(&parent) {
            Ok(meta) if meta.is_dir() => Ok(Landing {
                dir: parent,
                rename: Some(name),
                onto_file: exists,
            }),
            Ok(_) => Err(CopyError::NotADirectory(parent.display().to_string())),
            Err(_) => Err(CopyError::NotFound(parent.display().to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lands_in_a_directory_or_as_the_new_name() {
        let dir = tempfile::tempdir().unwrap();
        let into = Landing::decide(dir.path()).unwrap();
        assert_eq!((into.dir.as_path(), into.rename), (dir.path(), None));
        let new = Landing::decide(&dir.path().join("new")).unwrap();
        assert_eq!(new.rename.as_deref(), Some("new"));
        assert!(!new.onto_file);
        std::fs::write(dir.path().join("file"), "x").unwrap();
        let onto = Landing::decide(&dir.path().join("file")).unwrap();
        assert!(onto.onto_file);
        assert!(matches!(
            Landing::decide(&dir.path().join("missing/x")),
            Err(CopyError::NotFound(p)) if p.ends_with("missing")
        ));
        let file = dir.path().join("file").display().to_string();
        for dest in [format!("{file}/x"), format!("{file}/")] {
            assert!(matches!(
                Landing::decide(Path::new(&dest)),
                Err(CopyError::NotADirectory(p)) if p == file
            ));
        }
    }
}
