//! What the benchmarks share: API calls over the daemon's socket.

use std::path::Path;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde_json::Value;

/// One request with `accept`; the status and the whole body.
async fn request(
    socket: &Path,
    method: &str,
    path: &str,
    body: &str,
    accept: &str,
) -> (u16, Bytes) {
    let stream = tokio::net::UnixStream::connect(socket).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let request = hyper::Request::builder()
        .method(method)
        .uri(format!("http://bangerd{path}"))
        .header("host", "bangerd")
        .header("content-type", "application/json")
        .header("accept", accept)
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, bytes)
}

/// One request; the status and the JSON body (`Null` when not JSON).
pub async fn call(socket: &Path, method: &str, path: &str, body: &str) -> (u16, Value) {
    let (status, bytes) = request(socket, method, path, body, "application/json").await;
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// A POST asking for a progress stream: the status and every event.
#[allow(dead_code)]
pub async fn call_ndjson(socket: &Path, path: &str, body: &str) -> (u16, Vec<Value>) {
    let (status, bytes) = request(socket, "POST", path, body, "application/x-ndjson").await;
    let events = String::from_utf8_lossy(&bytes)
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect();
    (status, events)
}
