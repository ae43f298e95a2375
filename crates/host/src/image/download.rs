//! Downloads: an `http://` or `https://` URL (reqwest, rustls), a
//! `file://` URL or a plain local path, streamed to a file and hashed on
//! the way, with byte progress. Timeouts bound connecting (15 s) and
//! silence (60 s without a byte), never the whole transfer: images are
//! big. A refused connection, a bad status, a body cut short, a stall and
//! a digest mismatch are distinct errors, and every error (or dropping the
//! future) leaves no file at the destination.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use banger_core::progress::Progress;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::digest::{hex, is_sha256_hex, BUFFER};

#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error("cannot fetch {url}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("expected sha256 {0:?} is not 64 hex digits")]
    BadSha256(String),
    #[error("cannot reach {url}: {reason}")]
    Connect { url: String, reason: String },
    /// A non-2xx answer; `status` is the code and its reason phrase.
    #[error("{url} answered {status}")]
    Status {
        url: String,
        code: u16,
        status: String,
    },
    #[error("the download of {url} was cut short after {done} of {total} bytes")]
    Truncated { url: String, done: u64, total: u64 },
    #[error(
        "the download of {url} stalled: nothing received for {idle_secs} s after {done} bytes"
    )]
    Stalled {
        url: String,
        done: u64,
        idle_secs: u64,
    },
    /// The body failed and its length was not announced.
    #[error("the download of {url} failed after {done} bytes: {reason}")]
    Interrupted {
        url: String,
        done: u64,
        reason: String,
    },
    #[error("sha256 mismatch for {url}: expected {expected}, got {got}")]
    Digest {
        url: String,
        expected: String,
        got: String,
    },
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: String, source: io::Error },
    #[error("download worker failed: {0}")]
    Worker(String),
}

/// What was downloaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchReport {
    pub bytes: u64,
    /// Lowercase hex.
    pub sha256: String,
}

pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// No byte for this long: give up (a total timeout would fail big images).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Progress is reported at most once per this many bytes.
const REPORT_EVERY: u64 = 1 << 20;

/// Removes the file unless disarmed.
struct RemoveOnDrop(Option<PathBuf>);

impl RemoveOnDrop {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Sets its flag when dropped, telling blocking work to stop.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Where `fetch` reads from.
enum Source {
    Http,
    Local(PathBuf),
}

fn source_of(url: &str) -> Result<Source, DownloadError> {
    let bad = |reason: &str| DownloadError::BadUrl {
        url: url.into(),
        reason: reason.into(),
    };
    let lower = url.to_ascii_lowercase();
    if lower.starts_with("http://") || lower.starts_with("https://") {
        Ok(Source::Http)
    } else if lower.starts_with("file:") {
        let parsed = reqwest::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
        let path = parsed
            .to_file_path()
            .map_err(|()| bad("not a path on this host"))?;
        Ok(Source::Local(path))
    } else if url.contains("://") {
        Err(bad("unsupported scheme: use http, https or file"))
    } else if url.is_empty() {
        Err(bad("empty url"))
    } else {
        Ok(Source::Local(PathBuf::from(url)))
    }
}

/// Downloads `url` (`http://`, `https://`, `file://` or a local path) to
/// `dest`, checking `expected_sha256` (hex, either case) when given.
/// Reports `bytes(done, total)` on `progress` (the caller names the
/// stage). On any error, and when the future is dropped, `dest` is
/// removed.
pub async fn fetch(
    url: &str,
    dest: &Path,
    expected_sha256: Option<&str>,
    progress: &dyn Progress,
) -> Result<FetchReport, DownloadError> {
    if let Some(expected) = expected_sha256 {
        if !is_sha256_hex(expected) {
            return Err(DownloadError::BadSha256(expected.into()));
        }
    }
    let (guard, report) = match source_of(url)? {
        Source::Http => fetch_http(url, dest, progress).await?,
        Source::Local(path) => copy_local(&path, dest, progress).await?,
    };
    if let Some(expected) = expected_sha256 {
        if !report.sha256.eq_ignore_ascii_case(expected) {
            return Err(DownloadError::Digest {
                url: url.into(),
                expected: expected.to_ascii_lowercase(),
                got: report.sha256,
            });
        }
    }
    guard.disarm();
    Ok(report)
}

fn write_err(dest: &Path) -> impl Fn(io::Error) -> DownloadError + '_ {
    move |source| DownloadError::Write {
        path: dest.display().to_string(),
        source,
    }
}

async fn fetch_http(
    url: &str,
    dest: &Path,
    progress: &dyn Progress,
) -> Result<(RemoveOnDrop, FetchReport), DownloadError> {
    let client = reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .read_timeout(IDLE_TIMEOUT)
        .user_agent(concat!("banger/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| DownloadError::Connect {
            url: url.into(),
            reason: root_cause(&e),
        })?;
    let response = client.get(url).send().await.map_err(|e| {
        if e.is_builder() {
            DownloadError::BadUrl {
                url: url.into(),
                reason: root_cause(&e),
            }
        } else if e.is_timeout() {
            DownloadError::Connect {
                url: url.into(),
                reason: "timed out".into(),
            }
        } else {
            DownloadError::Connect {
                url: url.into(),
                reason: root_cause(&e),
            }
        }
    })?;
    let status = response.status();
    if !status.is_success() {
        let phrase = status.canonical_reason().unwrap_or("").to_ascii_lowercase();
        return Err(DownloadError::Status {
            url: url.into(),
            code: status.as_u16(),
            status: format!("{} {phrase}", status.as_u16()).trim().to_string(),
        });
    }
    let total = response.content_length();

    let file = tokio::fs::File::create(dest)
        .await
        .map_err(write_err(dest))?;
    let guard = RemoveOnDrop(Some(dest.to_path_buf()));
    let mut out = tokio::io::BufWriter::with_capacity(BUFFER, file);
    let mut hasher = Sha256::new();
    let mut done = 0u64;
    let mut reported = 0u64;
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = match chunk {
            Ok(chunk) => chunk,
            Err(e) if e.is_timeout() => {
                return Err(DownloadError::Stalled {
                    url: url.into(),
                    done,
                    idle_secs: IDLE_TIMEOUT.as_secs(),
                })
            }
            Err(e) => {
                return Err(match total {
                    Some(total) => DownloadError::Truncated {
                        url: url.into(),
                        done,
                        total,
                    },
                    None => DownloadError::Interrupted {
                        url: url.into(),
                        done,
                        reason: root_cause(&e),
                    },
                })
            }
        };
        hasher.update(&chunk);
        out.write_all(&chunk).await.map_err(write_err(dest))?;
        done += chunk.len() as u64;
        if done - reported >= REPORT_EVERY {
            reported = done;
            progress.bytes(done, total);
        }
    }
    if let Some(total) = total.filter(|&t| t != done) {
        return Err(DownloadError::Truncated {
            url: url.into(),
            done,
            total,
        });
    }
    out.flush().await.map_err(write_err(dest))?;
    out.get_mut().sync_all().await.map_err(write_err(dest))?;
    progress.bytes(done, total.or(Some(done)));
    Ok((
        guard,
        FetchReport {
            bytes: done,
            sha256: hex(&hasher.finalize()),
        },
    ))
}

/// Copies a local file with the same hashing and progress, on the
/// blocking pool.
async fn copy_local(
    source: &Path,
    dest: &Path,
    progress: &dyn Progress,
) -> Result<(RemoveOnDrop, FetchReport), DownloadError> {
    let read_err = |source_err| DownloadError::Read {
        path: source.display().to_string(),
        source: source_err,
    };
    let input = File::open(source).map_err(read_err)?;
    let meta = input.metadata().map_err(read_err)?;
    if !meta.is_file() {
        return Err(read_err(io::Error::other("not a regular file")));
    }
    if let Ok(dest_meta) = std::fs::metadata(dest) {
        use std::os::unix::fs::MetadataExt;
        if (dest_meta.dev(), dest_meta.ino()) == (meta.dev(), meta.ino()) {
            return Err(write_err(dest)(io::Error::other("it is the source itself")));
        }
    }
    let total = meta.len();
    let output = File::create(dest).map_err(write_err(dest))?;
    let guard = RemoveOnDrop(Some(dest.to_path_buf()));

    let cancelled = Arc::new(AtomicBool::new(false));
    let _cancel = CancelOnDrop(cancelled.clone());
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
    let (source_path, dest_path) = (source.to_path_buf(), dest.to_path_buf());
    let handle = tokio::task::spawn_blocking(move || {
        copy_hashing(input, output, &cancelled, |done| {
            let _ = tx.send(done);
        })
        .map_err(|(side, e)| match side {
            Side::Read => DownloadError::Read {
                path: source_path.display().to_string(),
                source: e,
            },
            Side::Write => DownloadError::Write {
                path: dest_path.display().to_string(),
                source: e,
            },
        })
    });
    while let Some(done) = rx.recv().await {
        progress.bytes(done, Some(total));
    }
    let report = handle
        .await
        .map_err(|e| DownloadError::Worker(e.to_string()))??;
    progress.bytes(report.bytes, Some(report.bytes.max(total)));
    Ok((guard, report))
}

enum Side {
    Read,
    Write,
}

fn copy_hashing(
    mut input: File,
    mut output: File,
    cancelled: &AtomicBool,
    mut report: impl FnMut(u64),
) -> Result<FetchReport, (Side, io::Error)> {
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; BUFFER];
    let mut done = 0u64;
    let mut reported = 0u64;
    loop {
        if cancelled.load(Ordering::Relaxed) {
            return Err((Side::Read, io::Error::other("cancelled")));
        }
        let n = match input.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err((Side::Read, e)),
        };
        hasher.update(&buffer[..n]);
        output
            .write_all(&buffer[..n])
            .map_err(|e| (Side::Write, e))?;
        done += n as u64;
        if done - reported >= REPORT_EVERY {
            reported = done;
            report(done);
        }
    }
    output.sync_all().map_err(|e| (Side::Write, e))?;
    Ok(FetchReport {
        bytes: done,
        sha256: hex(&hasher.finalize()),
    })
}

/// The innermost error's text, lowercased (reqwest wraps the useful part).
fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut current = err;
    while let Some(next) = current.source() {
        current = next;
    }
    current.to_string().to_lowercase()
}
