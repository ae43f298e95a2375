//! The one place where banger errors become HTTP statuses and error bodies.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use banger_core::service::ErrorKind;
use banger_core::ServiceError;
use banger_proto::error::{ApiError, ErrorCode};

/// An error on its way out of a handler.
#[derive(Debug)]
pub struct HttpError(pub ApiError);

impl HttpError {
    pub fn new(code: ErrorCode, message: impl Into<String>, hint: Option<&str>) -> Self {
        HttpError(ApiError::new(code, message, hint.map(String::from)))
    }
}

/// Error class to HTTP status: the whole mapping.
pub fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::InvalidInput => StatusCode::BAD_REQUEST,
        ErrorCode::Unprocessable => StatusCode::UNPROCESSABLE_ENTITY,
        ErrorCode::Forbidden => StatusCode::FORBIDDEN,
        ErrorCode::NotFound => StatusCode::NOT_FOUND,
        ErrorCode::Conflict => StatusCode::CONFLICT,
        ErrorCode::Unsupported => StatusCode::NOT_IMPLEMENTED,
        ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        ErrorCode::Upstream => StatusCode::BAD_GATEWAY,
    }
}

fn code_of(kind: ErrorKind) -> ErrorCode {
    match kind {
        ErrorKind::InvalidInput => ErrorCode::InvalidInput,
        ErrorKind::Unprocessable => ErrorCode::Unprocessable,
        ErrorKind::Forbidden => ErrorCode::Forbidden,
        ErrorKind::NotFound => ErrorCode::NotFound,
        ErrorKind::Conflict => ErrorCode::Conflict,
        ErrorKind::Unsupported => ErrorCode::Unsupported,
        ErrorKind::Internal => ErrorCode::Internal,
        ErrorKind::Upstream => ErrorCode::Upstream,
    }
}

impl From<ServiceError> for HttpError {
    fn from(err: ServiceError) -> Self {
        let code = code_of(err.kind());
        if code == ErrorCode::Internal {
            tracing::error!(error = %err, "internal error");
        }
        HttpError(ApiError::new(code, err.to_string(), err.hint()))
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        (status_of(self.0.error.code), Json(self.0)).into_response()
    }
}

pub async fn not_found_route(uri: axum::http::Uri) -> HttpError {
    HttpError::new(
        ErrorCode::NotFound,
        format!("no such api route: {}", uri.path()),
        Some("this daemon may be older than the cli: compare `banger --version` and `bangerd --version`"),
    )
}
