//! Query string and path extractors whose failures are API errors (400
//! with the standard body, documented on every operation that has
//! parameters), not axum's plain-text rejections.

use axum::extract::{FromRequestParts, Path, Query};
use axum::http::request::Parts;
use banger_proto::error::ErrorCode;
use serde::de::DeserializeOwned;

use super::error::HttpError;
use super::json::lowercase_sentences;

/// A query string (`?force=true`).
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, HttpError> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(value)) => Ok(ApiQuery(value)),
            Err(rejection) => Err(bad(
                &rejection.body_text(),
                "flags take true or false, once each",
            )),
        }
    }
}

/// Path parameters (`/v1/vms/{vm}`).
pub struct ApiPath<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, HttpError> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(ApiPath(value)),
            Err(rejection) => Err(bad(
                &rejection.body_text(),
                "percent-encode names in the path as UTF-8",
            )),
        }
    }
}

/// axum's rejection text as a one-line 400.
fn bad(text: &str, hint: &str) -> HttpError {
    HttpError::new(
        ErrorCode::InvalidInput,
        lowercase_sentences(&text.replace('\n', " ")),
        Some(hint),
    )
}
