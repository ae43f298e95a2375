//! Downloads against real servers on 127.0.0.1: an axum server for good
//! answers and 404s, a raw TCP server for a body cut short, a closed port,
//! and local files.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Mutex;

use banger_core::progress::{NoProgress, Progress};
use banger_host::image::download::{self, DownloadError, FetchReport};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Deterministic bytes.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Serves `payload` at `/bundle.tar.zst`; every other path is a 404.
async fn serve(payload: Vec<u8>) -> SocketAddr {
    let app = axum::Router::new().route(
        "/bundle.tar.zst",
        axum::routing::get(move || {
            let payload = payload.clone();
            async move { payload }
        }),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// Answers every request with `Content-Length: declared`, sends `sent`
/// bytes of body and closes the connection.
async fn serve_cut_short(declared: usize, sent: usize) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut chunk = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&chunk[..n]),
                    }
                }
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\
                     Content-Length: {declared}\r\nConnection: close\r\n\r\n"
                );
                socket.write_all(head.as_bytes()).await.unwrap();
                socket.write_all(&noise(sent, 3)).await.unwrap();
                socket.shutdown().await.unwrap();
            });
        }
    });
    addr
}

#[derive(Default)]
struct Recorder {
    bytes: Mutex<Vec<(u64, Option<u64>)>>,
}

impl Progress for Recorder {
    fn stage(&self, _name: &str) {}
    fn bytes(&self, done: u64, total: Option<u64>) {
        self.bytes.lock().unwrap().push((done, total));
    }
}

fn assert_plain_message(message: &str) {
    assert!(!message.contains('\n'), "{message}");
    assert!(!message.ends_with('.'), "{message}");
    assert!(!message.chars().next().unwrap().is_uppercase(), "{message}");
}

fn assert_gone(path: &Path) {
    assert!(!path.exists(), "{} was left behind", path.display());
}

#[tokio::test]
async fn an_http_download_is_streamed_hashed_and_reported() {
    let payload = noise(3 << 20, 1);
    let expected = sha256(&payload);
    let addr = serve(payload.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("bundle");
    let progress = Recorder::default();
    let url = format!("http://{addr}/bundle.tar.zst");

    let report = download::fetch(&url, &dest, Some(&expected.to_uppercase()), &progress)
        .await
        .unwrap();
    assert_eq!(
        report,
        FetchReport {
            bytes: payload.len() as u64,
            sha256: expected.clone(),
        }
    );
    assert_eq!(std::fs::read(&dest).unwrap(), payload);
    let bytes = progress.bytes.lock().unwrap().clone();
    let total = payload.len() as u64;
    assert!(bytes.len() >= 3, "{bytes:?}");
    assert!(bytes.windows(2).all(|w| w[0].0 <= w[1].0), "{bytes:?}");
    assert!(bytes.iter().all(|(_, t)| *t == Some(total)), "{bytes:?}");
    assert_eq!(*bytes.last().unwrap(), (total, Some(total)));

    // Without an expected digest the report still carries it.
    let again = dir.path().join("again");
    let report = download::fetch(&url, &again, None, &NoProgress)
        .await
        .unwrap();
    assert_eq!(report.sha256, expected);
}

#[tokio::test]
async fn a_wrong_sha256_is_a_mismatch_and_leaves_no_file() {
    let payload = noise(100_000, 2);
    let addr = serve(payload.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("bundle");
    let url = format!("http://{addr}/bundle.tar.zst");
    let wrong = "ab".repeat(32);

    let err = download::fetch(&url, &dest, Some(&wrong), &NoProgress)
        .await
        .unwrap_err();
    assert!(matches!(err, DownloadError::Digest { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "sha256 mismatch for {url}: expected {wrong}, got {}",
            sha256(&payload)
        )
    );
    assert_gone(&dest);
}

#[tokio::test]
async fn a_body_cut_short_is_truncated_and_leaves_no_file() {
    let addr = serve_cut_short(100_000, 40_000).await;
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("bundle");
    let url = format!("http://{addr}/bundle.tar.zst");

    let err = download::fetch(&url, &dest, None, &NoProgress)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            DownloadError::Truncated {
                done: 40_000,
                total: 100_000,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!("the download of {url} was cut short after 40000 of 100000 bytes")
    );
    assert_gone(&dest);
}

#[tokio::test]
async fn a_404_is_a_status_error_naming_it() {
    let addr = serve(b"x".to_vec()).await;
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("bundle");
    let url = format!("http://{addr}/missing.tar.zst");

    let err = download::fetch(&url, &dest, None, &NoProgress)
        .await
        .unwrap_err();
    assert!(
        matches!(err, DownloadError::Status { code: 404, .. }),
        "{err:?}"
    );
    assert_eq!(err.to_string(), format!("{url} answered 404 not found"));
    assert_gone(&dest);
}

#[tokio::test]
async fn a_closed_port_is_a_connection_error() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("bundle");
    let url = format!("http://127.0.0.1:{port}/bundle.tar.zst");

    let err = download::fetch(&url, &dest, None, &NoProgress)
        .await
        .unwrap_err();
    assert!(matches!(err, DownloadError::Connect { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.starts_with(&format!("cannot reach {url}: ")),
        "{message}"
    );
    assert!(message.contains("connection refused"), "{message}");
    assert_plain_message(&message);
    assert_gone(&dest);
}

#[tokio::test]
async fn file_urls_and_local_paths_are_copied_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source bundle.tar.zst");
    let payload = noise((2 << 20) + 123, 4);
    std::fs::write(&source, &payload).unwrap();
    let expected = sha256(&payload);

    let url = reqwest::Url::from_file_path(&source).unwrap().to_string();
    assert!(url.starts_with("file:///") && url.contains("%20"), "{url}");
    let dest = dir.path().join("from-url");
    let progress = Recorder::default();
    let report = download::fetch(&url, &dest, Some(&expected), &progress)
        .await
        .unwrap();
    assert_eq!(report.bytes, payload.len() as u64);
    assert_eq!(report.sha256, expected);
    assert_eq!(std::fs::read(&dest).unwrap(), payload);
    let total = payload.len() as u64;
    assert_eq!(
        *progress.bytes.lock().unwrap().last().unwrap(),
        (total, Some(total))
    );

    let plain = dir.path().join("from-path");
    let report = download::fetch(source.to_str().unwrap(), &plain, None, &NoProgress)
        .await
        .unwrap();
    assert_eq!(report.sha256, expected);
    assert_eq!(std::fs::read(&plain).unwrap(), payload);

    let wrong = dir.path().join("wrong");
    let err = download::fetch(&url, &wrong, Some(&"0".repeat(64)), &NoProgress)
        .await
        .unwrap_err();
    assert!(matches!(err, DownloadError::Digest { .. }), "{err:?}");
    assert_gone(&wrong);

    let missing = dir.path().join("missing");
    let err = download::fetch(
        dir.path().join("nope").to_str().unwrap(),
        &missing,
        None,
        &NoProgress,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, DownloadError::Read { .. }), "{err:?}");
    assert!(err.to_string().starts_with("cannot read "), "{err}");
    assert_gone(&missing);

    // Copying a file onto itself would destroy it: refused, source kept.
    let err = download::fetch(source.to_str().unwrap(), &source, None, &NoProgress)
        .await
        .unwrap_err();
    assert!(matches!(err, DownloadError::Write { .. }), "{err:?}");
    assert_eq!(std::fs::read(&source).unwrap(), payload);
}

#[tokio::test]
async fn bad_urls_and_digests_are_refused_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("bundle");
    let err = download::fetch("ftp://example.org/x", &dest, None, &NoProgress)
        .await
        .unwrap_err();
    assert!(matches!(err, DownloadError::BadUrl { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "cannot fetch ftp://example.org/x: unsupported scheme: use http, https or file"
    );
    let err = download::fetch(
        "http://127.0.0.1:9/x",
        &dest,
        Some("not-a-digest"),
        &NoProgress,
    )
    .await
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "expected sha256 \"not-a-digest\" is not 64 hex digits"
    );
    assert_gone(&dest);
}
