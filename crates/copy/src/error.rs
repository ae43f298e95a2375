//! What a copy's side can fail with; `kind` names the class for the
//! other side of the wire.

#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("no such file or directory: {0}")]
    NotFound(String),
    #[error("not a directory: {0}")]
    NotADirectory(String),
    #[error("cannot copy a directory onto the file {0}")]
    DirectoryOntoFile(String),
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    #[error("the archive is not acceptable: {0}")]
    BadArchive(String),
}

impl CopyError {
    /// `not_found`, `not_a_directory`, `conflict`, `io` or `bad_archive`.
    pub fn kind(&self) -> &'static str {
        match self {
            CopyError::NotFound(_) => "not_found",
            CopyError::NotADirectory(_) => "not_a_directory",
            CopyError::DirectoryOntoFile(_) => "conflict",
            CopyError::Io(..) => "io",
            CopyError::BadArchive(_) => "bad_archive",
        }
    }

    /// The path the error is about, if it names one.
    pub fn path(&self) -> Option<&str> {
        match self {
            CopyError::NotFound(p)
            | CopyError::NotADirectory(p)
            | CopyError::DirectoryOntoFile(p)
            | CopyError::Io(p, _) => Some(p),
            CopyError::BadArchive(_) => None,
        }
    }

    pub(crate) fn io(path: &std::path::Path, err: std::io::Error) -> Self {
        let shown = path.display().to_string();
        match err.kind() {
            std::io::ErrorKind::NotFound => CopyError::NotFound(shown),
            _ => CopyError::Io(shown, err),
        }
    }
}
