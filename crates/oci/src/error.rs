//! What can go wrong in a pull, each with a hint for the user.

#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error("bad image reference {text:?}: {reason}")]
    BadReference { text: String, reason: String },
    #[error("cannot reach registry {registry}: {reason}")]
    Unreachable { registry: String, reason: String },
    #[error("{reference}: not found in the registry ({detail})")]
    NotFound { reference: String, detail: String },
    #[error("registry {registry} refused access to {reference}: {detail}")]
    Denied {
        registry: String,
        reference: String,
        detail: String,
    },
    #[error("registry answered {status} for {what}: {detail}")]
    Status {
        status: u16,
        what: String,
        detail: String,
    },
    #[error("{what} is larger than the limit of {limit} bytes")]
    TooLarge { what: String, limit: u64 },
    #[error("{what}: digest mismatch, expected {expected}, got {got}")]
    Digest {
        what: String,
        expected: String,
        got: String,
    },
    #[error("{what} was cut short after {done} of {total} bytes")]
    Truncated { what: String, done: u64, total: u64 },
    #[error("{what} failed after {done} bytes: {reason}")]
    Interrupted {
        what: String,
        done: u64,
        reason: String,
    },
    #[error("{what} is not valid: {reason}")]
    Malformed { what: String, reason: String },
    #[error("{reference} has no linux/amd64 image (it has {available})")]
    NoPlatform {
        reference: String,
        available: String,
    },
    #[error("unsupported {what} {media_type:?}")]
    Unsupported { what: String, media_type: String },
    #[error("layer {layer}: {reason}")]
    UnsafeLayer { layer: String, reason: String },
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("bad credentials file {path}: {reason}")]
    Credentials { path: String, reason: String },
    #[error("worker failed: {0}")]
    Worker(String),
}

impl OciError {
    pub fn io(action: &'static str, path: &std::path::Path, source: std::io::Error) -> Self {
        OciError::Io {
            action,
            path: path.display().to_string(),
            source,
        }
    }

    /// What the user can do about it.
    pub fn hint(&self) -> Option<&'static str> {
        Some(match self {
            OciError::BadReference { .. } => {
                "write NAME[:TAG], REGISTRY/REPO[:TAG] or REPO@sha256:DIGEST"
            }
            OciError::Unreachable { .. } => {
                "check the registry's address and that it is up; registries off this host need insecure_registries in config for plain http"
            }
            OciError::NotFound { .. } => "check the repository and tag (skopeo list-tags docker://REPO)",
            OciError::Denied { .. } => {
                "log in with docker login or podman login; banger reads their auth.json / config.json"
            }
            OciError::TooLarge { .. } => "this is not an image banger will pull",
            OciError::Digest { .. } | OciError::Truncated { .. } | OciError::Interrupted { .. } => {
                "the registry sent bad bytes: try again, and check the registry if it repeats"
            }
            OciError::NoPlatform { .. } => "banger runs linux/amd64 images: pick a tag built for it",
            OciError::Unsupported { .. } | OciError::Malformed { .. } => {
                "banger pulls OCI and Docker v2 images with tar, gzip or zstd layers"
            }
            OciError::UnsafeLayer { .. } => {
                "the image tries to write outside its root filesystem: do not use it"
            }
            OciError::Credentials { .. } => "fix or remove the credentials file",
            OciError::Status { .. } | OciError::Io { .. } | OciError::Worker(_) => return None,
        })
    }
}
