//! Bundles: one image as a `.tar.zst` (a plain `.tar` is read too, told
//! apart by the zstd magic) holding `manifest.json` first and then the
//! artifacts, flat, nothing else. `export` writes one, checking every
//! artifact against the manifest as it streams; `unpack` reads one into a
//! staging directory, refusing anything the manifest does not list (paths,
//! links, devices, extra, repeated or oversized entries), hashing each
//! artifact as it writes it (sparsely: runs of zeros become holes) and
//! writing `manifest.json` last, only once everything matched.
//!
//! Progress: byte counts only (of the artifacts for `export`, of the
//! bundle file for `unpack`); the caller names the stage. Dropping either
//! future stops the blocking work at its next read and removes what it
//! wrote.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use banger_core::progress::Progress;
use banger_proto::image::Manifest;
use sha2::{Digest, Sha256};

use super::digest::{self, DigestError, BUFFER, MANIFEST_FILE};

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: String,
        source: io::Error,
    },
    /// The bundle ends inside an entry.
    #[error("the bundle is truncated: {file} stops after {done} of {total} bytes")]
    Truncated { file: String, done: u64, total: u64 },
    /// The archive or its compression cannot be read; `place` says where
    /// (`in kernel after 4096 of 8192 bytes`, `after kernel`, ...).
    #[error("the bundle is truncated or damaged {place}: {reason}")]
    Damaged { place: String, reason: String },
    #[error("the bundle lacks {file}: it is truncated or incomplete")]
    Missing { file: String },
    /// Something a bundle written by banger never holds.
    #[error("not a banger bundle: {0}")]
    Foreign(String),
    /// A bad manifest, or an artifact whose size or sha256 is not the
    /// manifest's (the message starts with the file name).
    #[error(transparent)]
    Digest(#[from] DigestError),
    #[error("cancelled")]
    Cancelled,
    #[error("bundle worker failed: {0}")]
    Worker(String),
}

const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
const ZSTD_LEVEL: i32 = 3;
/// `ustar` (POSIX and GNU headers alike) at this offset of a tar header.
const TAR_MAGIC: &[u8] = b"ustar";
const TAR_MAGIC_AT: usize = 257;
const TAR_BLOCK: usize = 512;
/// Longest text of a foreign error kept in a message.
const REASON_LIMIT: usize = 160;
/// A manifest is a few hundred bytes; refuse to buffer anything silly.
const MANIFEST_LIMIT: u64 = 1 << 20;
/// Progress is reported at most once per this many bytes.
const REPORT_EVERY: u64 = 1 << 20;
/// Granularity of hole detection when writing artifacts.
const HOLE_BLOCK: usize = 4096;

type Reporter = Box<dyn FnMut(u64) + Send>;

/// What blocking work gets: the cancel flag and the byte-count sink.
struct Job {
    cancelled: Arc<AtomicBool>,
    report: Reporter,
}

/// Sets its flag when dropped, telling blocking work to stop.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Counts (and optionally hashes) the bytes read through it, reports the
/// count now and then, and fails once cancelled.
struct Tap<R, F> {
    inner: R,
    done: u64,
    reported: u64,
    report: F,
    cancelled: Arc<AtomicBool>,
    hasher: Option<Sha256>,
}

impl<R: Read, F: FnMut(u64)> Tap<R, F> {
    fn new(inner: R, report: F, cancelled: Arc<AtomicBool>, hash: bool) -> Self {
        Tap {
            inner,
            done: 0,
            reported: 0,
            report,
            cancelled,
            hasher: hash.then(Sha256::new),
        }
    }
}

impl<R: Read, F: FnMut(u64)> Read for Tap<R, F> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.cancelled.load(Ordering::Relaxed) {
            return Err(io::Error::other("cancelled"));
        }
        let n = self.inner.read(buf)?;
        if let Some(hasher) = &mut self.hasher {
            hasher.update(&buf[..n]);
        }
        self.done += n as u64;
        if n == 0 || self.done - self.reported >= REPORT_EVERY {
            self.reported = self.done;
            (self.report)(self.done);
        }
        Ok(n)
    }
}

/// Runs blocking work on the blocking pool, relaying its byte counts to
/// `progress` (and `total` of `total` once it succeeds); dropping the
/// future cancels the work at its next read.
async fn run_blocking<T: Send + 'static>(
    progress: &dyn Progress,
    total: Option<u64>,
    work: impl FnOnce(Job) -> Result<T, BundleError> + Send + 'static,
) -> Result<T, BundleError> {
    let cancelled = Arc::new(AtomicBool::new(false));
    let _guard = CancelOnDrop(cancelled.clone());
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
    let report: Reporter = Box::new(move |n| {
        let _ = tx.send(n);
    });
    let handle = tokio::task::spawn_blocking(move || work(Job { cancelled, report }));
    while let Some(done) = rx.recv().await {
        progress.bytes(done, total);
    }
    let result = handle
        .await
        .map_err(|e| BundleError::Worker(e.to_string()))?;
    if let (Ok(_), Some(total)) = (&result, total) {
        progress.bytes(total, Some(total));
    }
    result
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl Fn(io::Error) -> BundleError + 'a {
    move |source| BundleError::Io {
        action,
        path: path.display().to_string(),
        source,
    }
}

/// An error's text fit for a one-line message: lowercase first letter,
/// anything but printable ASCII (binary junk quoted by a parser) as `?`,
/// cut after `REASON_LIMIT` characters.
fn one_line(err: &dyn std::fmt::Display) -> String {
    let text = err.to_string();
    let mut out = String::new();
    for (i, c) in text.chars().enumerate() {
        if i == REASON_LIMIT {
            out.push_str(" (cut)");
            break;
        }
        match c {
            c if i == 0 => out.push(c.to_ascii_lowercase()),
            ' '..='~' => out.push(c),
            _ => out.push('?'),
        }
    }
    while out.ends_with('.') {
        out.pop();
    }
    out
}

/// Writes a bundle of the image in `image_dir` (its `manifest.json` and
/// the artifacts it lists) into `out`, a new file its caller publishes
/// (`caller::NewFile`) once this succeeded; `shown` names it in errors.
/// Every artifact is checked against the manifest while it streams, so a
/// damaged image is never exported. The bytes are on disk when it returns.
pub async fn export(
    image_dir: &Path,
    out: File,
    shown: &Path,
    progress: &dyn Progress,
) -> Result<(), BundleError> {
    let manifest = digest::read_manifest(image_dir)?;
    digest::check_manifest(&manifest)?;
    let total: u64 = manifest.artifacts.iter().map(|a| a.bytes).sum();
    let (dir, shown) = (image_dir.to_path_buf(), shown.to_path_buf());
    run_blocking(progress, Some(total), move |job| {
        write_bundle(&dir, &manifest, out, &shown, job)
    })
    .await
}

fn write_bundle(
    dir: &Path,
    manifest: &Manifest,
    file: File,
    out: &Path,
    job: Job,
) -> Result<(), BundleError> {
    let Job {
        cancelled,
        mut report,
    } = job;
    let write_err = |e: io::Error| {
        if cancelled.load(Ordering::Relaxed) {
            BundleError::Cancelled
        } else {
            io_err("write", out)(e)
        }
    };
    let mut encoder = zstd::Encoder::new(file, ZSTD_LEVEL).map_err(write_err)?;
    encoder.include_checksum(true).map_err(write_err)?;
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get().min(8) as u32);
    // Without multithreading support zstd still compresses, on this thread.
    let _ = encoder.multithread(workers);
    let mut tar = tar::Builder::new(encoder);

    let mut text = serde_json::to_vec_pretty(manifest).map_err(|e| write_err(e.into()))?;
    text.push(b'\n');
    tar.append_data(&mut header(text.len() as u64), MANIFEST_FILE, &text[..])
        .map_err(write_err)?;

    let mut sent = 0u64;
    for artifact in &manifest.artifacts {
        let path = dir.join(&artifact.file);
        let mismatch = |message: String| {
            BundleError::Digest(DigestError::Mismatch {
                file: artifact.file.clone(),
                message,
            })
        };
        let file = File::open(&path).map_err(io_err("read", &path))?;
        let meta = file.metadata().map_err(io_err("read", &path))?;
        if !meta.is_file() {
            return Err(mismatch("not a regular file".into()));
        }
        if meta.len() != artifact.bytes {
            return Err(mismatch(format!(
                "{} bytes, the manifest says {}",
                meta.len(),
                artifact.bytes
            )));
        }
        let (done, hasher) = {
            let mut reader = Tap::new(
                BufReader::with_capacity(BUFFER, file).take(artifact.bytes),
                |n| report(sent + n),
                cancelled.clone(),
                true,
            );
            tar.append_data(&mut header(artifact.bytes), &artifact.file, &mut reader)
                .map_err(write_err)?;
            (reader.done, reader.hasher)
        };
        if done != artifact.bytes {
            return Err(mismatch(format!(
                "shrank to {done} bytes while being read, the manifest says {}",
                artifact.bytes
            )));
        }
        let got = digest::hex(&hasher.unwrap_or_default().finalize());
        if !got.eq_ignore_ascii_case(&artifact.sha256) {
            return Err(mismatch(format!(
                "sha256 mismatch: expected {}, got {got}",
                artifact.sha256
            )));
        }
        sent += artifact.bytes;
    }
    let encoder = tar.into_inner().map_err(write_err)?;
    let file = encoder.finish().map_err(write_err)?;
    file.sync_all().map_err(write_err)?;
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

/// Reads the bundle file `bundle` into `staging` (an existing directory
/// that holds none of the artifact names) and returns its manifest, which
/// is written there as `manifest.json` only once every artifact matched
/// it. On an error the artifacts written so far are removed again; the
/// caller still owns (and removes) `staging` itself.
pub async fn unpack(
    bundle: &Path,
    staging: &Path,
    progress: &dyn Progress,
) -> Result<Manifest, BundleError> {
    let total = std::fs::metadata(bundle)
        .map_err(io_err("read", bundle))?
        .len();
    let (bundle, staging) = (bundle.to_path_buf(), staging.to_path_buf());
    run_blocking(progress, Some(total), move |job| {
        let mut created = Vec::new();
        let result = read_bundle(&bundle, &staging, job, &mut created);
        if result.is_err() {
            for path in created {
                let _ = std::fs::remove_file(path);
            }
        }
        result
    })
    .await
}

fn read_bundle(
    bundle: &Path,
    staging: &Path,
    job: Job,
    created: &mut Vec<PathBuf>,
) -> Result<Manifest, BundleError> {
    let Job { cancelled, report } = job;
    let damaged = |place: String, e: io::Error| {
        if cancelled.load(Ordering::Relaxed) {
            BundleError::Cancelled
        } else {
            BundleError::Damaged {
                place,
                reason: one_line(&e),
            }
        }
    };

    let mut file = File::open(bundle).map_err(io_err("read", bundle))?;
    let mut magic = Vec::with_capacity(ZSTD_MAGIC.len());
    (&mut file)
        .take(ZSTD_MAGIC.len() as u64)
        .read_to_end(&mut magic)
        .map_err(io_err("read", bundle))?;
    if magic.is_empty() {
        return Err(BundleError::Foreign("it is empty".into()));
    }
    file.seek(SeekFrom::Start(0))
        .map_err(io_err("read", bundle))?;
    let zstd = magic == ZSTD_MAGIC;
    let tap = Tap::new(
        BufReader::with_capacity(BUFFER, file),
        report,
        cancelled.clone(),
        false,
    );
    let mut reader: Box<dyn Read> = if zstd {
        Box::new(zstd::Decoder::new(tap).map_err(|e| damaged("at its start".into(), e))?)
    } else {
        Box::new(tap)
    };
    // Look at the first tar header before the tar reader does, so that
    // junk gets a plain answer rather than a parse error quoting it.
    let mut block = vec![0u8; TAR_BLOCK];
    if let Err(e) = reader.read_exact(&mut block) {
        return Err(if e.kind() == io::ErrorKind::UnexpectedEof && !zstd {
            BundleError::Foreign("it is too short to be a tar archive".into())
        } else {
            damaged("at its start".into(), e)
        });
    }
    if &block[TAR_MAGIC_AT..TAR_MAGIC_AT + TAR_MAGIC.len()] != TAR_MAGIC {
        return Err(BundleError::Foreign(
            if zstd {
                "it is zstd-compressed but holds no tar archive"
            } else {
                "it is neither zstd-compressed nor a tar archive"
            }
            .into(),
        ));
    }
    let reader = io::Cursor::new(block).chain(reader);
    let mut archive = tar::Archive::new(reader);
    let mut entries = archive
        .entries()
        .map_err(|e| damaged("at its start".into(), e))?;

    // The manifest, first.
    let mut first = match entries.next() {
        None => return Err(BundleError::Foreign("it holds nothing".into())),
        Some(entry) => entry.map_err(|e| damaged("at its start".into(), e))?,
    };
    if entry_name(&first)? != MANIFEST_FILE {
        return Err(BundleError::Foreign(format!(
            "{MANIFEST_FILE} is not its first entry"
        )));
    }
    let size = first.size();
    if size > MANIFEST_LIMIT {
        return Err(BundleError::Foreign(format!(
            "{MANIFEST_FILE} is {size} bytes, too large"
        )));
    }
    let mut text = Vec::new();
    first
        .read_to_end(&mut text)
        .map_err(|e| damaged(format!("in {MANIFEST_FILE}"), e))?;
    if text.len() as u64 != size {
        return Err(BundleError::Truncated {
            file: MANIFEST_FILE.into(),
            done: text.len() as u64,
            total: size,
        });
    }
    let manifest = digest::parse_manifest(&text, Path::new(MANIFEST_FILE))?;
    digest::check_manifest(&manifest)?;

    // Then exactly the artifacts it lists, each once.
    let mut seen = HashSet::new();
    let mut previous = MANIFEST_FILE.to_string();
    for entry in entries {
        let mut entry = entry.map_err(|e| damaged(format!("after {previous}"), e))?;
        let name = entry_name(&entry)?;
        let Some(artifact) = manifest.artifacts.iter().find(|a| a.file == name) else {
            return Err(BundleError::Foreign(format!("unexpected entry {name:?}")));
        };
        if !seen.insert(name.clone()) {
            return Err(BundleError::Foreign(format!("{name} appears twice")));
        }
        let size = entry.size();
        if size != artifact.bytes {
            return Err(BundleError::Foreign(format!(
                "{name} is {size} bytes, the manifest says {}",
                artifact.bytes
            )));
        }
        let path = staging.join(&name);
        let mut out = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(io_err("create", &path))?;
        created.push(path.clone());

        let mut hasher = Sha256::new();
        let mut buffer = vec![0u8; BUFFER];
        let mut written = 0u64;
        loop {
            let n = match entry.read(&mut buffer) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(damaged(
                        format!("in {name} after {written} of {size} bytes"),
                        e,
                    ))
                }
            };
            hasher.update(&buffer[..n]);
            write_sparse(&mut out, &buffer[..n]).map_err(io_err("write", &path))?;
            written += n as u64;
        }
        if written != artifact.bytes {
            return Err(BundleError::Truncated {
                file: name,
                done: written,
                total: artifact.bytes,
            });
        }
        out.set_len(written).map_err(io_err("write", &path))?;
        out.sync_all().map_err(io_err("write", &path))?;
        let got = digest::hex(&hasher.finalize());
        if !got.eq_ignore_ascii_case(&artifact.sha256) {
            return Err(BundleError::Digest(DigestError::Mismatch {
                file: name,
                message: format!("sha256 mismatch: expected {}, got {got}", artifact.sha256),
            }));
        }
        previous = name;
    }
    if let Some(missing) = manifest.artifacts.iter().find(|a| !seen.contains(&a.file)) {
        return Err(BundleError::Missing {
            file: missing.file.clone(),
        });
    }
    digest::write_manifest(staging, &manifest)?;
    created.push(staging.join(MANIFEST_FILE));
    Ok(manifest)
}

/// Writes `data` at the file's position, seeking over 4 KiB blocks that
/// are all zeros instead of writing them (the file must be new, so what is
/// skipped reads back as zeros; the caller sets the final length).
fn write_sparse(out: &mut File, data: &[u8]) -> io::Result<()> {
    let is_zero = |block: &[u8]| block[0] == 0 && block.iter().fold(0u8, |a, &b| a | b) == 0;
    let mut start = 0;
    let mut blocks = data.chunks(HOLE_BLOCK).peekable();
    while let Some(block) = blocks.next() {
        let zero = is_zero(block);
        let mut len = block.len();
        while let Some(next) = blocks.next_if(|next| is_zero(next) == zero) {
            len += next.len();
        }
        if zero {
            out.seek(SeekFrom::Current(len as i64))?;
        } else {
            out.write_all(&data[start..start + len])?;
        }
        start += len;
    }
    Ok(())
}

/// The entry's name when it is a regular file at the top level.
fn entry_name<R: Read>(entry: &tar::Entry<'_, R>) -> Result<String, BundleError> {
    let path = entry
        .path()
        .map_err(|e| BundleError::Foreign(format!("bad entry name: {}", one_line(&e))))?
        .into_owned();
    let shown = path.display().to_string();
    let mut components = path.components();
    let name = match (components.next(), components.next()) {
        (Some(Component::Normal(name)), None) => name.to_str().map(str::to_owned),
        _ => None,
    };
    let Some(name) = name else {
        return Err(BundleError::Foreign(format!(
            "entry {shown:?} is not a plain file name"
        )));
    };
    if !entry.header().entry_type().is_file() {
        return Err(BundleError::Foreign(format!(
            "entry {shown:?} is not a regular file"
        )));
    }
    Ok(name)
}
