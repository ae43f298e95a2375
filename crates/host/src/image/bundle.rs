//! Bundles: one image as a `.tar.zst` (plain `.tar` is read too) holding
//! `manifest.json` first and then the artifacts, flat, nothing else.
//! `export` writes one; `unpack` reads one into a staging directory,
//! refusing anything the manifest does not list (paths, links, extra or
//! oversized entries) and checking every size and sha256 as it writes.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use banger_core::progress::Progress;
use banger_proto::image::Manifest;
use sha2::{Digest, Sha256};

use super::digest::{self, DigestError, MANIFEST_FILE};

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: String,
        source: io::Error,
    },
    #[error("the bundle is truncated or damaged: {0}")]
    Damaged(String),
    #[error("the bundle is not banger's: {0}")]
    Foreign(String),
    #[error(transparent)]
    Digest(#[from] DigestError),
    #[error("cancelled")]
    Cancelled,
}

const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
const MANIFEST_LIMIT: u64 = 1 << 20;
const ZSTD_LEVEL: i32 = 3;

/// Sets its flag when dropped, telling blocking work to stop.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Counts bytes through a reader, reports them, and stops on cancel.
struct Counting<R, F> {
    inner: R,
    done: u64,
    report: F,
    cancelled: Arc<AtomicBool>,
}

impl<R: Read, F: FnMut(u64)> Read for Counting<R, F> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.cancelled.load(Ordering::Relaxed) {
            return Err(io::Error::new(io::ErrorKind::Interrupted, "cancelled"));
        }
        let n = self.inner.read(buf)?;
        self.done += n as u64;
        (self.report)(self.done);
        Ok(n)
    }
}

/// Runs blocking work on the blocking pool, relaying its byte counts to
/// `progress`; dropping the future cancels the work at its next read.
async fn blocking<T: Send + 'static>(
    progress: &dyn Progress,
    total: Option<u64>,
    work: impl FnOnce(Arc<AtomicBool>, Box<dyn FnMut(u64) + Send>) -> Result<T, BundleError>
        + Send
        + 'static,
) -> Result<T, BundleError> {
    let cancelled = Arc::new(AtomicBool::new(false));
    let _guard = CancelOnDrop(cancelled.clone());
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
    let report: Box<dyn FnMut(u64) + Send> = Box::new(move |n| {
        let _ = tx.send(n);
    });
    let handle = tokio::task::spawn_blocking(move || work(cancelled, report));
    while let Some(done) = rx.recv().await {
        progress.bytes(done, total);
    }
    handle
        .await
        .map_err(|e| BundleError::Damaged(format!("worker failed: {e}")))?
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl Fn(io::Error) -> BundleError + 'a {
    move |source| BundleError::Io {
        action,
        path: path.display().to_string(),
        source,
    }
}

/// Writes a bundle of the image in `image_dir` to `out` (through
/// `out.partial` and a rename; nothing is left on failure).
pub async fn export(
    image_dir: &Path,
    out: &Path,
    progress: &dyn Progress,
) -> Result<(), BundleError> {
    let manifest = digest::read_manifest(image_dir)?;
    let total: u64 = manifest.artifacts.iter().map(|a| a.bytes).sum();
    let (dir, out) = (image_dir.to_path_buf(), out.to_path_buf());
    blocking(progress, Some(total), move |cancelled, report| {
        let partial = PathBuf::from(format!("{}.partial", out.display()));
        let result = write_bundle(&dir, &manifest, &partial, cancelled, report)
            .and_then(|()| std::fs::rename(&partial, &out).map_err(io_err("rename", &out)));
        if result.is_err() {
            let _ = std::fs::remove_file(&partial);
        }
        result
    })
    .await
}

fn write_bundle(
    dir: &Path,
    manifest: &Manifest,
    out: &Path,
    cancelled: Arc<AtomicBool>,
    mut report: Box<dyn FnMut(u64) + Send>,
) -> Result<(), BundleError> {
    let file = File::create(out).map_err(io_err("create", out))?;
    let mut encoder = zstd::Encoder::new(file, ZSTD_LEVEL).map_err(io_err("compress", out))?;
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    encoder
        .multithread(workers)
        .map_err(io_err("compress", out))?;
    let mut tar = tar::Builder::new(encoder);
    let manifest_path = dir.join(MANIFEST_FILE);
    let text = std::fs::read(&manifest_path).map_err(io_err("read", &manifest_path))?;
    tar.append_data(&mut header(text.len() as u64), MANIFEST_FILE, &text[..])
        .map_err(io_err("write", out))?;
    let mut sent = 0u64;
    for artifact in &manifest.artifacts {
        let path = dir.join(&artifact.file);
        let file = File::open(&path).map_err(io_err("read", &path))?;
        let counting = Counting {
            inner: BufReader::with_capacity(1 << 20, file),
            done: 0,
            report: |n| report(sent + n),
            cancelled: cancelled.clone(),
        };
        tar.append_data(&mut header(artifact.bytes), &artifact.file, counting)
            .map_err(|e| match e.kind() {
                io::ErrorKind::Interrupted => BundleError::Cancelled,
                _ => io_err("write", out)(e),
            })?;
        sent += artifact.bytes;
    }
    let encoder = tar.into_inner().map_err(io_err("write", out))?;
    let file = encoder.finish().map_err(io_err("write", out))?;
    file.sync_all().map_err(io_err("write", out))?;
    Ok(())
}

/// A plain header: regular file, 0644, root, time zero (reproducible).
fn header(size: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_size(size);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_entry_type(tar::EntryType::Regular);
    header
}

/// Reads the bundle at `bundle` into `staging` (an empty directory) and
/// returns its manifest, written there as `manifest.json`, once every
/// artifact matched it.
pub async fn unpack(
    bundle: &Path,
    staging: &Path,
    progress: &dyn Progress,
) -> Result<Manifest, BundleError> {
    let total = std::fs::metadata(bundle)
        .map_err(io_err("read", bundle))?
        .len();
    let (bundle, staging) = (bundle.to_path_buf(), staging.to_path_buf());
    blocking(progress, Some(total), move |cancelled, report| {
        read_bundle(&bundle, &staging, cancelled, report)
    })
    .await
}

fn read_bundle(
    bundle: &Path,
    staging: &Path,
    cancelled: Arc<AtomicBool>,
    report: Box<dyn FnMut(u64) + Send>,
) -> Result<Manifest, BundleError> {
    let mut file = File::open(bundle).map_err(io_err("read", bundle))?;
    let mut magic = [0u8; 4];
    let sniffed = file.read(&mut magic).map_err(io_err("read", bundle))?;
    drop(file);
    let file = File::open(bundle).map_err(io_err("read", bundle))?;
    let counting = Counting {
        inner: BufReader::with_capacity(1 << 20, file),
        done: 0,
        report,
        cancelled,
    };
    let reader: Box<dyn Read> = if sniffed == 4 && magic == ZSTD_MAGIC {
        Box::new(zstd::Decoder::new(counting).map_err(io_err("decompress", bundle))?)
    } else {
        Box::new(counting)
    };
    let damaged = |e: io::Error| match e.kind() {
        io::ErrorKind::Interrupted => BundleError::Cancelled,
        _ => BundleError::Damaged(e.to_string()),
    };
    let mut archive = tar::Archive::new(reader);
    let mut entries = archive.entries().map_err(damaged)?;

    let first = entries
        .next()
        .ok_or_else(|| BundleError::Foreign("it is empty".into()))?
        .map_err(damaged)?;
    if entry_name(&first)? != MANIFEST_FILE {
        return Err(BundleError::Foreign(format!(
            "{MANIFEST_FILE} is not its first entry"
        )));
    }
    if first.header().size().map_err(damaged)? > MANIFEST_LIMIT {
        return Err(BundleError::Foreign(format!(
            "{MANIFEST_FILE} is too large"
        )));
    }
    let mut text = Vec::new();
    let mut first = first;
    first.read_to_end(&mut text).map_err(damaged)?;
    let manifest = digest::parse_manifest(&text, Path::new(MANIFEST_FILE))?;
    digest::check_manifest(&manifest)?;

    let mut seen = HashSet::new();
    for entry in entries {
        let mut entry = entry.map_err(damaged)?;
        let name = entry_name(&entry)?;
        let Some(artifact) = manifest.artifacts.iter().find(|a| a.file == name) else {
            return Err(BundleError::Foreign(format!("unexpected entry {name:?}")));
        };
        if !seen.insert(name.clone()) {
            return Err(BundleError::Foreign(format!("{name} appears twice")));
        }
        let size = entry.header().size().map_err(damaged)?;
        if size != artifact.bytes {
            return Err(BundleError::Foreign(format!(
                "{name} is {size} bytes, the manifest says {}",
                artifact.bytes
            )));
        }
        let path = staging.join(&name);
        let mut out = File::create(&path).map_err(io_err("create", &path))?;
        let mut hasher = Sha256::new();
        let mut buffer = vec![0u8; 1 << 20];
        let mut written = 0u64;
        loop {
            let n = entry.read(&mut buffer).map_err(damaged)?;
            if n == 0 {
                break;
            }
            hasher.update(&buffer[..n]);
            out.write_all(&buffer[..n])
                .map_err(io_err("write", &path))?;
            written += n as u64;
        }
        if written != artifact.bytes {
            return Err(BundleError::Damaged(format!(
                "{name} ends after {written} of {} bytes",
                artifact.bytes
            )));
        }
        let got = digest::hex(&hasher.finalize());
        if !got.eq_ignore_ascii_case(&artifact.sha256) {
            return Err(BundleError::Digest(DigestError::Mismatch {
                file: name,
                message: format!("sha256 mismatch: expected {}, got {got}", artifact.sha256),
            }));
        }
    }
    if let Some(missing) = manifest.artifacts.iter().find(|a| !seen.contains(&a.file)) {
        return Err(BundleError::Damaged(format!("{} is missing", missing.file)));
    }
    digest::write_manifest(staging, &manifest)?;
    Ok(manifest)
}

/// The entry's name when it is a plain file at the top level.
fn entry_name<R: Read>(entry: &tar::Entry<'_, R>) -> Result<String, BundleError> {
    let path = entry
        .path()
        .map_err(|e| BundleError::Foreign(format!("bad entry name: {e}")))?
        .into_owned();
    let shown = path.display().to_string();
    let mut components = path.components();
    let name = match (components.next(), components.next()) {
        (Some(Component::Normal(name)), None) => name.to_string_lossy().into_owned(),
        _ => {
            return Err(BundleError::Foreign(format!(
                "entry {shown:?} is not a plain file name"
            )))
        }
    };
    if !entry.header().entry_type().is_file() {
        return Err(BundleError::Foreign(format!(
            "entry {shown:?} is not a regular file"
        )));
    }
    Ok(name)
}
