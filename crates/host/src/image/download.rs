//! Downloads over HTTP(S): streamed to a file, hashed on the way, with
//! progress; a short body, a bad status or a digest mismatch is an error
//! and leaves no file behind.

use std::path::Path;
use std::time::Duration;

use banger_core::progress::Progress;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::digest::hex;

#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error("cannot reach {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("{url} answered {status}")]
    Status { url: String, status: u16 },
    #[error("the download of {url} was cut short after {done} of {total} bytes")]
    Truncated {
        url: String,
        done: u64,
        total: String,
    },
    #[error("sha256 mismatch for {url}: expected {expected}, got {got}")]
    Digest {
        url: String,
        expected: String,
        got: String,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
}

/// What was downloaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchReport {
    pub bytes: u64,
    pub sha256: String,
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// No byte for this long: give up (a total timeout would fail big images).
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Removes the file unless disarmed.
struct RemoveOnDrop<'a>(Option<&'a Path>);

impl Drop for RemoveOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(path) = self.0 {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Downloads `url` to `dest`, checking `expected_sha256` when given.
pub async fn fetch(
    url: &str,
    dest: &Path,
    expected_sha256: Option<&str>,
    progress: &dyn Progress,
) -> Result<FetchReport, DownloadError> {
    let client = reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .read_timeout(IDLE_TIMEOUT)
        .user_agent(concat!("banger/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| DownloadError::Connect {
            url: url.into(),
            reason: e.to_string(),
        })?;
    let response = client
        .get(url)
        .send()
        .await
        .map_err(|e| DownloadError::Connect {
            url: url.into(),
            reason: root_cause(&e),
        })?;
    let status = response.status();
    if !status.is_success() {
        return Err(DownloadError::Status {
            url: url.into(),
            status: status.as_u16(),
        });
    }
    let total = response.content_length();
    let write_err = |source| DownloadError::Write {
        path: dest.display().to_string(),
        source,
    };
    let mut guard = RemoveOnDrop(Some(dest));
    let mut file = tokio::fs::File::create(dest).await.map_err(write_err)?;
    let mut hasher = Sha256::new();
    let mut done = 0u64;
    let mut body = response.bytes_stream();
    let truncated = |done: u64| DownloadError::Truncated {
        url: url.into(),
        done,
        total: total.map_or("unknown".into(), |t| t.to_string()),
    };
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|_| truncated(done))?;
        hasher.update(&chunk);
        file.write_all(&chunk).await.map_err(write_err)?;
        done += chunk.len() as u64;
        progress.bytes(done, total);
    }
    if total.is_some_and(|t| t != done) {
        return Err(truncated(done));
    }
    file.sync_all().await.map_err(write_err)?;
    let got = hex(&hasher.finalize());
    if let Some(expected) = expected_sha256 {
        if !got.eq_ignore_ascii_case(expected) {
            return Err(DownloadError::Digest {
                url: url.into(),
                expected: expected.to_lowercase(),
                got,
            });
        }
    }
    guard.0 = None;
    Ok(FetchReport {
        bytes: done,
        sha256: got,
    })
}

/// The innermost error's text (reqwest wraps the useful part).
fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut current = err;
    while let Some(next) = current.source() {
        current = next;
    }
    current.to_string().to_lowercase()
}
