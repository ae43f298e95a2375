//! Image resolution: turning the image a create asks for into a recorded
//! image. May be slow (a resolver may auto-pull from the catalog), so it
//! never runs under a global lock.

use std::sync::Arc;

use async_trait::async_trait;

use crate::image::Image;
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ResolveError {
    #[error("unknown image {0:?}")]
    Unknown(String),
    #[error("image {name:?} could not be fetched: {reason}")]
    Fetch { name: String, reason: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[async_trait]
pub trait ImageResolver: Send + Sync {
    async fn resolve(&self, id_or_name: &str) -> Result<Image, ResolveError>;

    /// Like `resolve`, telling `progress` about slow work (an auto-pull).
    async fn resolve_watched(
        &self,
        id_or_name: &str,
        _progress: &dyn crate::progress::Progress,
    ) -> Result<Image, ResolveError> {
        self.resolve(id_or_name).await
    }
}

/// Resolves only images already in the store.
pub struct StoredImages {
    store: Arc<dyn Store>,
}

impl StoredImages {
    pub fn new(store: Arc<dyn Store>) -> Self {
        StoredImages { store }
    }
}

#[async_trait]
impl ImageResolver for StoredImages {
    async fn resolve(&self, id_or_name: &str) -> Result<Image, ResolveError> {
        self.store
            .find_image(id_or_name)?
            .ok_or_else(|| ResolveError::Unknown(id_or_name.to_string()))
    }
}
