//! The guest console's size cap. A guest can write to its console
//! without end; its `serial.log` would fill the state disk. The VMM
//! appends to the file (QEMU's `append=on`, Firecracker's stdout opened
//! for appending), so the daemon can drop the oldest part in place while
//! the VMM writes on: `trim` collapses whole blocks off the front with
//! `fallocate(FALLOC_FL_COLLAPSE_RANGE)` (ext4, xfs), else copies the
//! newest half to the front and truncates. What is kept is the newest
//! half of the cap; lines cut at the new start are the price.

use std::io::{Read, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;

/// The default cap of a console log.
pub const DEFAULT_MAX: u64 = 16 << 20;

/// Cuts the file at `path` down to about `max / 2` of its newest bytes
/// when it has grown past `max`; returns the bytes dropped (0: nothing to
/// do, or no file).
pub fn trim(path: &Path, max: u64) -> std::io::Result<u64> {
    let mut file = match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
    {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(err) => return Err(err),
    };
    let meta = file.metadata()?;
    let len = meta.len();
    if len <= max {
        return Ok(0);
    }
    let block = meta.blksize().max(4096);
    let cut = (len - max / 2) / block * block;
    if cut == 0 {
        return Ok(0);
    }
    let collapsed = nix::fcntl::fallocate(
        file.as_raw_fd(),
        nix::fcntl::FallocateFlags::FALLOC_FL_COLLAPSE_RANGE,
        0,
        cut as i64,
    );
    if collapsed.is_ok() {
        return Ok(cut);
    }
    // No collapse here (tmpfs, some file systems): move the newest part
    // to the front and cut the rest.
    let keep = len - cut;
    file.seek(SeekFrom::Start(cut))?;
    let mut newest = Vec::with_capacity(keep as usize);
    (&mut file).take(keep).read_to_end(&mut newest)?;
    file.write_all_at(&newest, 0)?;
    file.set_len(newest.len() as u64)?;
    Ok(cut)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_past_its_cap_keeps_its_newest_half() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("serial.log");
        let mut text = String::new();
        for i in 0..200_000 {
            text.push_str(&format!("line {i}\n"));
        }
        std::fs::write(&log, &text).unwrap();
        let before = text.len() as u64;
        let max = 512 * 1024;
        let cut = trim(&log, max).unwrap();
        let after = std::fs::read(&log).unwrap();
        assert_eq!(after.len() as u64, before - cut);
        assert!(after.len() as u64 <= max / 2 + 8192, "{}", after.len());
        assert!(after.ends_with(b"line 199999\n"));
        // What stayed is the end of what was there.
        assert_eq!(&after[..], &text.as_bytes()[cut as usize..]);
        assert_eq!(trim(&log, max).unwrap(), 0, "under the cap: untouched");
        assert_eq!(trim(&dir.path().join("missing"), max).unwrap(), 0);
    }
}
