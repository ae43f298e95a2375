//! ext4 images without mounting anything: recognise one by its superblock
//! magic, make one from a directory tree (`mkfs.ext4 -d`), copy files and
//! directories out of one read inside the image (`inside`), and make the
//! small work seed every VM's `/root` disk is cloned from.

pub mod inside;
pub mod tools;

use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::process::Command;

pub use ext4_view::FileType;
pub use inside::{Ext4Image, InsideError, Links};

#[derive(Debug, thiserror::Error)]
pub enum Ext4Error {
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: String,
        source: io::Error,
    },
    #[error("{tool} failed: {detail}")]
    Tool { tool: &'static str, detail: String },
    #[error(transparent)]
    Inside(#[from] InsideError),
}

/// Superblock at 1024, magic 0xEF53 at offset 56 of it.
const MAGIC_OFFSET: u64 = 1024 + 56;
/// Size of a work seed unless its contents need more.
pub const WORK_SEED_BYTES: u64 = 256 << 20;
const MIB: u64 = 1 << 20;

/// Is the file at `path` an ext2/3/4 filesystem image?
pub fn is_ext4(path: &Path) -> io::Result<bool> {
    let mut file = std::fs::File::open(path)?;
    if file.metadata()?.len() < MAGIC_OFFSET + 2 {
        return Ok(false);
    }
    file.seek(SeekFrom::Start(MAGIC_OFFSET))?;
    let mut magic = [0u8; 2];
    file.read_exact(&mut magic)?;
    Ok(magic == [0x53, 0xef])
}

/// Apparent bytes (rounded up to 4 KiB blocks) and entries under `dir`.
fn tree_usage(dir: &Path) -> io::Result<(u64, u64)> {
    let mut bytes = 0u64;
    let mut entries = 0u64;
    let mut stack: Vec<PathBuf> = vec![dir.to_path_buf()];
    while let Some(current) = stack.pop() {
        for entry in std::fs::read_dir(&current)? {
            let entry = entry?;
            let meta = entry.metadata()?;
            entries += 1;
            bytes += meta.len().div_ceil(4096) * 4096;
            if meta.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    Ok((bytes, entries))
}

/// `tree_usage` of `dir`, on a blocking thread.
async fn usage(dir: &Path) -> Result<(u64, u64), Ext4Error> {
    let owned = dir.to_path_buf();
    tokio::task::spawn_blocking(move || tree_usage(&owned))
        .await
        .map_err(|e| Ext4Error::Tool {
            tool: "du",
            detail: e.to_string(),
        })?
        .map_err(|source| Ext4Error::Io {
            action: "walk",
            path: dir.display().to_string(),
            source,
        })
}

/// `mkfs.ext4 -E` for a filesystem made in a fresh sparse file: root owns
/// `/`, and the journal is left unwritten. The file reads as zeros until
/// written, which is what a zeroed journal holds, so writing it out (64
/// MiB for a 4 GiB system disk) only made every copy of the disk (a
/// warm create's, a snapshot's, a promote's) read those zeros again.
pub const FRESH_FILE_EXTENDED: &str = "root_owner=0:0,lazy_journal_init=1";

/// A size that holds the tree with room to spare: +20% and 64 MiB,
/// rounded up to a MiB.
pub fn size_for(tree_bytes: u64) -> u64 {
    let want = tree_bytes + tree_bytes / 5 + 64 * MIB;
    want.div_ceil(MIB) * MIB
}

/// The last three lines of a tool's stderr, on one line.
fn last_lines(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let tail: Vec<&str> = text.lines().rev().take(3).collect();
    tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
}

async fn run(tool: &'static str, command: &mut Command) -> Result<String, Ext4Error> {
    let out = command
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| Ext4Error::Tool {
            tool,
            detail: format!("cannot run it: {e}"),
        })?;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        return Err(Ext4Error::Tool {
            tool,
            detail: format!("{} ({})", out.status, last_lines(&out.stderr)),
        });
    }
    Ok(stderr)
}

/// Copies the regular file `inside` (like `/boot/vmlinuz-6.1.0-9-amd64`,
/// links followed inside the image) out of the image to the new file
/// `out`, refusing one of more than `max` bytes.
pub async fn copy_file_out(
    image: &Path,
    inside: &str,
    out: &Path,
    max: u64,
) -> Result<u64, Ext4Error> {
    let (image, inside, out) = (image.to_path_buf(), inside.to_string(), out.to_path_buf());
    blocking(move || Ext4Image::open(&image)?.copy_file(&inside, &out, max)).await
}

/// Copies directory `inside` (like `/root`) of the image out to `out`,
/// which must not exist (see `inside::Ext4Image::copy_tree`); an image
/// without it gives an empty directory.
pub async fn copy_tree_out(
    image: &Path,
    inside: &str,
    out: &Path,
    links: Links,
) -> Result<u64, Ext4Error> {
    let (image, inside, out) = (image.to_path_buf(), inside.to_string(), out.to_path_buf());
    blocking(move || Ext4Image::open(&image)?.copy_tree(&inside, &out, links)).await
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, InsideError> + Send + 'static,
) -> Result<T, Ext4Error> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Ext4Error::Tool {
            tool: "ext4 reader",
            detail: e.to_string(),
        })?
        .map_err(Ext4Error::Inside)
}

/// Grows the ext4 image at `image` by `extra` bytes (`e2fsck -fy`, which
/// `resize2fs` wants first and which exits 1 when it fixed something,
/// then `resize2fs`); the file stays sparse.
pub async fn grow(image: &Path, extra: u64) -> Result<(), Ext4Error> {
    let size = std::fs::metadata(image)
        .map_err(|source| Ext4Error::Io {
            action: "read",
            path: image.display().to_string(),
            source,
        })?
        .len();
    // The image is someone else's: checked and grown unprivileged.
    let out = tools::run_unprivileged("e2fsck", &["-fy".into()], image, &[])
        .await
        .map_err(|e| Ext4Error::Tool {
            tool: "e2fsck",
            detail: format!("cannot run it: {e}"),
        })?;
    if !matches!(out.status.code(), Some(0 | 1)) {
        return Err(Ext4Error::Tool {
            tool: "e2fsck",
            detail: format!("{} on {}", out.status, image.display()),
        });
    }
    let want = (size + extra).div_ceil(MIB) * MIB;
    let out = tools::run_unprivileged(
        "resize2fs",
        &[],
        image,
        &[format!("{}K", want / 1024).into()],
    )
    .await
    .map_err(|e| Ext4Error::Tool {
        tool: "resize2fs",
        detail: format!("cannot run it: {e}"),
    })?;
    if !out.status.success() {
        return Err(Ext4Error::Tool {
            tool: "resize2fs",
            detail: format!("{} ({})", out.status, last_lines(&out.stderr)),
        });
    }
    Ok(())
}

/// Makes `out`, an ext4 image holding the tree under `dir` (owners and
/// modes kept). `size` defaults to `size_for` the tree; the file is sparse.
pub async fn make_from_dir(
    dir: &Path,
    out: &Path,
    size: Option<u64>,
    label: &str,
) -> Result<u64, Ext4Error> {
    let (tree_bytes, entries) = usage(dir).await?;
    let size = size.unwrap_or_else(|| size_for(tree_bytes));
    let file = std::fs::File::create(out).map_err(|source| Ext4Error::Io {
        action: "create",
        path: out.display().to_string(),
        source,
    })?;
    file.set_len(size).map_err(|source| Ext4Error::Io {
        action: "size",
        path: out.display().to_string(),
        source,
    })?;
    drop(file);
    // Enough inodes for the tree and as many files again.
    let inodes = (entries * 2 + 4096).to_string();
    run(
        "mkfs.ext4",
        Command::new("mkfs.ext4")
            .args([
                "-q",
                "-F",
                "-L",
                label,
                "-N",
                &inodes,
                "-E",
                FRESH_FILE_EXTENDED,
                "-d",
            ])
            .arg(dir)
            .arg(out),
    )
    .await?;
    Ok(size)
}

/// Makes the work seed: an ext4 of `WORK_SEED_BYTES` (more when the tree
/// needs it) holding `root_dir`'s contents, labelled `banger-work`.
pub async fn make_work_seed(root_dir: &Path, out: &Path) -> Result<u64, Ext4Error> {
    let (tree_bytes, _) = usage(root_dir).await?;
    let size = size_for(tree_bytes).max(WORK_SEED_BYTES);
    make_from_dir(root_dir, out, Some(size), "banger-work").await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_leave_room() {
        assert_eq!(size_for(0), 64 * MIB);
        assert_eq!(size_for(100 * MIB), 184 * MIB);
    }

    #[test]
    fn small_and_foreign_files_are_not_ext4() {
        let dir = tempfile::tempdir().unwrap();
        let tiny = dir.path().join("tiny");
        std::fs::write(&tiny, b"x").unwrap();
        assert!(!is_ext4(&tiny).unwrap());
        let zeros = dir.path().join("zeros");
        std::fs::write(&zeros, vec![0u8; 4096]).unwrap();
        assert!(!is_ext4(&zeros).unwrap());
    }
}
