//! The end of a log a guest or a VMM writes (the console, `vmm.log`), for
//! error messages. Such a file can be as large as the guest made it and
//! hold any bytes: only its last `WINDOW` bytes are read, invalid UTF-8
//! is replaced, and control characters (terminal escapes) are shown as
//! `?`, so nothing a guest writes can grow the daemon or reach a user's
//! terminal as a command.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// Bytes read from the end of the file.
const WINDOW: u64 = 64 * 1024;

/// The last `n` non-empty lines of the file at `path` (none when it
/// cannot be read).
pub fn tail(path: &Path, n: usize) -> Vec<String> {
    let Ok(mut file) = std::fs::File::open(path) else {
        return Vec::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(WINDOW);
    if file.seek(SeekFrom::Start(start)).is_err() {
        return Vec::new();
    }
    let mut bytes = Vec::with_capacity((len - start) as usize);
    if file.take(WINDOW).read_to_end(&mut bytes).is_err() {
        return Vec::new();
    }
    let text = String::from_utf8_lossy(&bytes);
    let mut lines: Vec<&str> = text.split('\n').collect();
    if start > 0 && !lines.is_empty() {
        // The first line was cut by the window.
        lines.remove(0);
    }
    let kept: Vec<String> = lines
        .into_iter()
        .map(|line| {
            line.chars()
                .map(|c| if c.is_control() && c != '\t' { '?' } else { c })
                .collect::<String>()
        })
        .map(|line| line.trim_end_matches('?').to_string())
        .filter(|line| !line.trim().is_empty())
        .collect();
    kept[kept.len().saturating_sub(n)..].to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_end_is_read_and_any_bytes_are_shown_safely() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("serial.log");
        let mut bytes = vec![b'x'; 4 << 20];
        bytes.extend_from_slice(b"\n\xff\xfebad utf8\r\n\x1b[2Jclear screen\n\nlast line\n");
        std::fs::write(&log, &bytes).unwrap();
        assert_eq!(
            tail(&log, 3),
            ["\u{fffd}\u{fffd}bad utf8", "?[2Jclear screen", "last line"]
        );
        assert!(tail(&dir.path().join("missing"), 3).is_empty());
        std::fs::write(&log, "one\ntwo\n").unwrap();
        assert_eq!(tail(&log, 5), ["one", "two"]);
    }
}
