//! Per-request tracing: every request runs in a span carrying a fresh
//! operation id, which is also returned in the `x-banger-op` header.

use std::time::Instant;

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

pub async fn per_request(req: Request, next: Next) -> Response {
    let op = format!("{:08x}", rand::random::<u32>());
    let span =
        tracing::info_span!("request", op = %op, method = %req.method(), path = %req.uri().path());
    let started = Instant::now();
    let mut response = next.run(req).instrument(span.clone()).await;
    span.in_scope(|| {
        tracing::info!(
            status = response.status().as_u16(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "request done"
        )
    });
    if let Ok(value) = HeaderValue::from_str(&op) {
        response.headers_mut().insert("x-banger-op", value);
    }
    response
}
