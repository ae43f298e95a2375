//! Publishing a file so that a crash cannot leave a half-written one
//! under its final name: its bytes reach the disk (`fsync`) before the
//! rename, and the rename reaches it (`fsync` of the directory) before
//! anyone is told. A VM's disks are published this way; a file found
//! under its final name is whole, and one of zero length (a file system
//! that lost the data anyway) is never taken for a disk.

use std::fs::File;
use std::path::Path;

/// Renames `partial` to `to` once its bytes are on disk, and makes the
/// rename durable.
pub fn publish(partial: &Path, to: &Path) -> std::io::Result<()> {
    File::open(partial)?.sync_all()?;
    std::fs::rename(partial, to)?;
    if let Some(dir) = to.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Whether a published file is there and not empty.
pub fn present(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.len() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_published_file_is_whole_and_an_empty_one_is_not_present() {
        let dir = tempfile::tempdir().unwrap();
        let (partial, disk) = (dir.path().join(".d.partial"), dir.path().join("d"));
        std::fs::write(&partial, b"bytes").unwrap();
        publish(&partial, &disk).unwrap();
        assert!(!partial.exists());
        assert_eq!(std::fs::read(&disk).unwrap(), b"bytes");
        assert!(present(&disk));
        std::fs::write(&disk, b"").unwrap();
        assert!(!present(&disk), "a zero-length disk is made again");
        assert!(!present(&dir.path().join("missing")));
    }
}
