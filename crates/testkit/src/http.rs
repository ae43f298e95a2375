//! API calls over the daemon's unix socket: one request and its JSON
//! answer, progress streams (NDJSON) read to their end within a
//! deadline, long-lived streams, and calls abandoned midway (what Ctrl-C
//! in the CLI does).

use std::path::Path;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::UnixStream;

/// Sends a request and goes away before the answer (what Ctrl-C in the
/// CLI does to a lifecycle call).
pub async fn abandon_call(socket: &Path, method: &str, path: &str, vm: &str) {
    use tokio::io::AsyncWriteExt;
    let mut stream = UnixStream::connect(socket).await.unwrap();
    let head = format!("{method} {path} HTTP/1.1\r\nhost: bangerd\r\ncontent-length: 0\r\n\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    // Goes away once the step has begun (the VM left `running`).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, found) = call(socket, "GET", &format!("/v1/vms/{vm}"), None).await;
        if found["state"] != "running" || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(stream);
}

/// One request; returns the status and the JSON body (`Null` when empty).
pub async fn call(socket: &Path, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
    try_call(socket, method, path, body)
        .await
        .unwrap_or_else(|err| panic!("{method} {path}: {err}"))
}

/// One request, or why it got no answer (the daemon went away).
pub async fn try_call(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> Result<(u16, Value), String> {
    let stream = UnixStream::connect(socket)
        .await
        .map_err(|e| e.to_string())?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let request = Request::builder()
        .method(Method::from_bytes(method.as_bytes()).unwrap())
        .uri(format!("http://bangerd{path}"))
        .header("host", "bangerd")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.unwrap_or("").to_string())))
        .unwrap();
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let bytes = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    let value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
    };
    Ok((status, value))
}

/// GETs a stream that ends when the daemon does (`/v1/events`): the head
/// is read before this returns, so the stream sees everything after;
/// the task gives status, content type and the whole body.
pub async fn get_stream(
    socket: &Path,
    path: &str,
) -> tokio::task::JoinHandle<(u16, String, String)> {
    let request = Request::builder()
        .method(Method::GET)
        .uri(format!("http://bangerd{path}"))
        .header("host", "bangerd")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = send(socket, request).await;
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    tokio::spawn(async move {
        let bytes = tokio::time::timeout(STREAM_DEADLINE, response.into_body().collect())
            .await
            .expect("the stream ends")
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        (
            status,
            content_type,
            String::from_utf8_lossy(&bytes).into_owned(),
        )
    })
}

/// Sends `request` on a connection of its own; the response once its
/// head is in.
async fn send(
    socket: &Path,
    request: Request<Full<Bytes>>,
) -> hyper::Response<hyper::body::Incoming> {
    let stream = UnixStream::connect(socket).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender.send_request(request).await.unwrap()
}

/// POSTs asking for a progress stream, whatever the status; the
/// response once its head is in.
async fn post_ndjson(
    socket: &Path,
    path: &str,
    body: &str,
) -> hyper::Response<hyper::body::Incoming> {
    let request = Request::builder()
        .method(Method::POST)
        .uri(format!("http://bangerd{path}"))
        .header("host", "bangerd")
        .header("content-type", "application/json")
        .header("accept", "application/x-ndjson")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    send(socket, request).await
}

/// POSTs asking for a progress stream; the response once its head is in
/// (a 200 with an NDJSON body).
async fn post_stream(
    socket: &Path,
    path: &str,
    body: &str,
) -> hyper::Response<hyper::body::Incoming> {
    let response = post_ndjson(socket, path, body).await;
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(response.headers()["content-type"], "application/x-ndjson");
    response
}

/// The longest a stream (a create, a pull, an exec in a guest) may take
/// in a test: generous under emulation, but a hung guest fails the test
/// instead of holding CI.
pub const STREAM_DEADLINE: Duration = Duration::from_secs(600);

/// POSTs asking for a progress stream; returns every event line.
pub async fn call_stream(socket: &Path, path: &str, body: &str) -> Vec<Value> {
    let response = post_stream(socket, path, body).await;
    let bytes = tokio::time::timeout(STREAM_DEADLINE, response.into_body().collect())
        .await
        .unwrap_or_else(|_| panic!("{path} {body}: no end within {STREAM_DEADLINE:?}"))
        .unwrap()
        .to_bytes();
    String::from_utf8_lossy(&bytes)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// Starts a progress stream, reads its first event, and goes away (what
/// Ctrl-C in the CLI does); returns that event.
pub async fn abandon_stream(socket: &Path, path: &str, body: &str) -> Value {
    let response = post_stream(socket, path, body).await;
    let mut body = response.into_body();
    let frame = body.frame().await.unwrap().unwrap();
    let first = frame.into_data().unwrap();
    // Dropping the body closes the connection.
    drop(body);
    serde_json::from_slice(first.split(|b| *b == b'\n').next().unwrap()).unwrap()
}

/// `call` with an optional JSON body.
pub async fn call_json(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let body = body.map(|b| b.to_string());
    call(socket, method, path, body.as_deref()).await
}

/// A POST asking for a progress stream whatever its status: the status
/// and every event line that parses (benchmarks time it whole).
pub async fn call_ndjson(socket: &Path, path: &str, body: &str) -> (u16, Vec<Value>) {
    let response = post_ndjson(socket, path, body).await;
    let status = response.status().as_u16();
    let bytes = tokio::time::timeout(STREAM_DEADLINE, response.into_body().collect())
        .await
        .unwrap_or_else(|_| panic!("{path} {body}: no end within {STREAM_DEADLINE:?}"))
        .unwrap()
        .to_bytes();
    let events = String::from_utf8_lossy(&bytes)
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect();
    (status, events)
}
