//! A JSON body extractor whose failures are API errors (400 with the
//! standard body), not axum's plain-text rejections. Every request body
//! is a JSON object: any other top-level value is refused, also where the
//! body type would take it (a sequence for a struct).

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
        let bad = |message: String| {
            HttpError::new(
                ErrorCode::InvalidInput,
                message,
                Some("send a JSON body as described in api/openapi.json"),
            )
        };
        let value = match axum::Json::<serde_json::Value>::from_request(req, state).await {
            Ok(axum::Json(value)) => value,
            Err(rejection) => return Err(bad(rejection_message(&rejection))),
        };
        if !value.is_object() {
            return Err(bad(format!(
                "invalid request body: expected a json object, not {}",
                kind_of(&value)
            )));
        }
        serde_json::from_value(value)
            .map(ApiJson)
            .map_err(|err| bad(lowercase_sentences(&format!("invalid request body: {err}"))))
    }
}

fn kind_of(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
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
pub(super) fn lowercase_sentences(text: &str) -> String {
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
