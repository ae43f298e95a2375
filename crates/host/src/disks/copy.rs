//! Copies of disk images that cost what the disk holds, not its size: a
//! reflink where the filesystem shares extents (btrfs, XFS), otherwise
//! the data extents only (`SEEK_DATA`/`SEEK_HOLE` and `copy_file_range`),
//! leaving holes as holes. The copy is a new file (never an overwrite),
//! synced before it is reported done.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
#[error("cannot copy {from} to {to}: {source}")]
pub struct CopyError {
    from: String,
    to: String,
    source: std::io::Error,
}

/// Copies `from` into the new file `to` (sparse); a `to` this call made
/// is removed again when the copy fails, an existing one is left alone.
pub fn sparse_copy(from: &Path, to: &Path) -> Result<(), CopyError> {
    let failed = |source| CopyError {
        from: from.display().to_string(),
        to: to.display().to_string(),
        source,
    };
    // A reflink makes the file itself, whole or not at all.
    match reflink_copy::reflink(from, to) {
        Ok(()) => return sync(to).map_err(failed),
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => return Err(failed(err)),
        Err(_) => {}
    }
    let target = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(to)
        .map_err(failed)?;
    let result = File::open(from).and_then(|source| {
        let len = source.metadata()?.len();
        target.set_len(len)?;
        copy_extents(&source, &target, len)?;
        target.sync_all()
    });
    if result.is_err() {
        let _ = std::fs::remove_file(to);
    }
    result.map_err(failed)
}

fn sync(path: &Path) -> std::io::Result<()> {
    File::open(path)?.sync_all()
}

/// `sparse_copy` off the async runtime.
pub async fn sparse_copy_async(from: &Path, to: &Path) -> Result<(), CopyError> {
    let (from, to) = (from.to_path_buf(), to.to_path_buf());
    let (shown_from, shown_to) = (from.display().to_string(), to.display().to_string());
    tokio::task::spawn_blocking(move || sparse_copy(&from, &to))
        .await
        .map_err(|e| CopyError {
            from: shown_from,
            to: shown_to,
            source: std::io::Error::other(e.to_string()),
        })?
}

fn copy_extents(source: &File, target: &File, len: u64) -> std::io::Result<()> {
    use nix::unistd::{lseek, Whence};
    let mut offset: i64 = 0;
    while (offset as u64) < len {
        let data = match lseek(source.as_raw_fd(), offset, Whence::SeekData) {
            Ok(at) => at,
            // No data after `offset`: the rest is a hole.
            Err(nix::errno::Errno::ENXIO) => break,
            Err(err) => return Err(err.into()),
        };
        let hole = lseek(source.as_raw_fd(), data, Whence::SeekHole)?;
        let mut at = data;
        while at < hole {
            let (mut off_in, mut off_out) = (at, at);
            let copied = nix::fcntl::copy_file_range(
                source,
                Some(&mut off_in),
                target,
                Some(&mut off_out),
                (hole - at) as usize,
            )?;
            if copied == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the source shrank while it was copied",
                ));
            }
            at += copied as i64;
        }
        offset = hole;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::{Seek, SeekFrom, Write};
    use std::os::unix::fs::MetadataExt;

    use super::*;

    #[test]
    fn a_sparse_file_copies_whole_and_stays_sparse() {
        let dir = tempfile::tempdir().unwrap();
        let (from, to) = (dir.path().join("disk"), dir.path().join("copy"));
        let mut file = File::create(&from).unwrap();
        file.set_len(256 << 20).unwrap();
        for (at, byte) in [(0u64, 1u8), (100 << 20, 2), ((256 << 20) - 4096, 3)] {
            file.seek(SeekFrom::Start(at)).unwrap();
            file.write_all(&[byte; 4096]).unwrap();
        }
        drop(file);
        sparse_copy(&from, &to).unwrap();
        assert_eq!(std::fs::read(&from).unwrap(), std::fs::read(&to).unwrap());
        let used = std::fs::metadata(&to).unwrap().blocks() * 512;
        assert!(used < 4 << 20, "the copy takes {used} bytes");
        // Never over an existing file.
        let err = sparse_copy(&from, &to).unwrap_err().to_string();
        assert!(err.contains("exists"), "{err}");
        assert!(to.exists(), "the existing file stays");
    }
}
