//! Removing a directory tree banger owns without leaving it: a mount
//! point inside it (a bind mount or a `proc`, `sysfs` or `tmpfs` a killed
//! tool such as `mmdebstrap` left in a staging tree) is not entered, so
//! removal can never delete the host's files behind it. What was left is
//! returned, and the tree's own directories above it stay too.

use std::collections::HashSet;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The mount points of this process's mount namespace.
fn mount_points() -> HashSet<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|field| PathBuf::from(unescape(field)))
        .collect()
}

/// mountinfo writes space, tab, newline and backslash as `\ooo`.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|d| {
            let d = std::str::from_utf8(d).ok()?;
            u8::from_str_radix(d, 8).ok()
        });
        match (bytes[i], octal) {
            (b'\\', Some(byte)) => {
                out.push(byte);
                i += 4;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Removes `root` and everything under it on its own filesystem, entering
/// no mount point; returns the mount points it left (empty when all of
/// `root` went). A missing `root` is nothing to do.
pub fn remove_tree(root: &Path) -> io::Result<Vec<PathBuf>> {
    let meta = match std::fs::symlink_metadata(root) {
        Ok(meta) => meta,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(err),
    };
    if !meta.is_dir() {
        std::fs::remove_file(root)?;
        return Ok(Vec::new());
    }
    let mounts = mount_points();
    let mut left = Vec::new();
    remove_dir(root, meta.dev(), &mounts, &mut left)?;
    Ok(left)
}

/// Empties and removes `dir`; false when something had to stay.
fn remove_dir(
    dir: &Path,
    dev: u64,
    mounts: &HashSet<PathBuf>,
    left: &mut Vec<PathBuf>,
) -> io::Result<bool> {
    let mut all = true;
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let meta = std::fs::symlink_metadata(&path)?;
        if meta.is_dir() {
            if meta.dev() != dev || mounts.contains(&path) {
                left.push(path);
                all = false;
            } else if !remove_dir(&path, dev, mounts, left)? {
                all = false;
            }
        } else {
            std::fs::remove_file(&path)?;
        }
    }
    if all {
        std::fs::remove_dir(dir)?;
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn mountinfo_escapes_are_read() {
        assert_eq!(unescape(r"/tmp/a\040b\134c"), r"/tmp/a b\c");
        assert_eq!(unescape("/plain"), "/plain");
    }

    #[test]
    fn a_plain_tree_goes_whole() {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("staging");
        std::fs::create_dir_all(tree.join("a/b")).unwrap();
        std::fs::write(tree.join("a/b/f"), "x").unwrap();
        std::os::unix::fs::symlink("/etc", tree.join("a/link")).unwrap();
        assert!(remove_tree(&tree).unwrap().is_empty());
        assert!(!tree.exists());
        assert!(Path::new("/etc/hostname").exists() || Path::new("/etc").is_dir());
        assert!(remove_tree(&tree).unwrap().is_empty(), "missing is fine");
    }

    fn mount(args: &[&str]) -> bool {
        Command::new("mount")
            .args(args)
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    #[test]
    fn mount_points_left_in_a_tree_are_not_entered() {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("staging");
        let host = dir.path().join("host-files");
        std::fs::create_dir_all(tree.join("root/dev/shm")).unwrap();
        std::fs::create_dir_all(tree.join("root/proc")).unwrap();
        std::fs::create_dir_all(&host).unwrap();
        std::fs::write(host.join("precious"), "keep").unwrap();
        std::fs::write(tree.join("root/file"), "x").unwrap();
        // What mmdebstrap leaves when killed: a bind mount of a host
        // directory (same filesystem) and a tmpfs.
        let bind = tree.join("root/dev/shm");
        let tmpfs = tree.join("root/proc");
        let mounted = mount(&["--bind", &host.to_string_lossy(), &bind.to_string_lossy()])
            && mount(&["-t", "tmpfs", "none", &tmpfs.to_string_lossy()]);
        if !mounted {
            let why = "cannot mount (needs root)";
            assert!(std::env::var("CI").as_deref() != Ok("true"), "{why}");
            eprintln!("not run: {why}");
            return;
        }
        std::fs::write(tmpfs.join("inside"), "y").unwrap();
        let left = remove_tree(&tree);
        let _ = Command::new("umount").arg(&bind).status();
        let _ = Command::new("umount").arg(&tmpfs).status();
        let mut left = left.unwrap();
        left.sort();
        assert_eq!(left, [bind, tmpfs]);
        assert_eq!(std::fs::read(host.join("precious")).unwrap(), b"keep");
        assert!(!tree.join("root/file").exists());
        // Once unmounted, the rest goes.
        assert!(remove_tree(&tree).unwrap().is_empty());
        assert!(!tree.exists());
    }
}
