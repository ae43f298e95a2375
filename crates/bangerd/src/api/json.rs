//! A JSON body extractor whose failures are API errors (400 with the
//! standard body), not axum's plain-text rejections.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use banger_proto::error::ErrorCode;
use serde::de::DeserializeOwned;

use super::error::HttpError;

pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = HttpError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => Err(HttpError::new(
                ErrorCode::InvalidInput,
                rejection_message(&rejection),
                Some("send a JSON body as described in api/openapi.json"),
            )),
        }
    }
}

fn rejection_message(rejection: &JsonRejection) -> String {
    let text = match rejection {
        JsonRejection::JsonDataError(e) => format!("invalid request body: {}", e.body_text()),
        JsonRejection::JsonSyntaxError(e) => format!("malformed json: {}", e.body_text()),
        JsonRejection::MissingJsonContentType(_) => {
            "request body must have content-type application/json".to_string()
        }
        other => format!("unreadable request body: {}", other.body_text()),
    };
    let text = text.replace('\n', " ");
    lowercase_sentences(&text)
}

/// Lowercases the first letter after each ": " (axum's texts are sentences).
fn lowercase_sentences(text: &str) -> String {
    text.split(": ")
        .map(|part| {
            let mut chars = part.chars();
            match chars.next() {
                Some(first) if chars.clone().next().is_some_and(|c| c.is_lowercase()) => {
                    first.to_lowercase().chain(chars).collect()
                }
                _ => part.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join(": ")
}
