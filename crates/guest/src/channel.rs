//! Where the agent listens: the virtio-serial port named
//! `org.banger.agent` (found through sysfs, since images run without
//! udev and so without `/dev/virtio-ports/` links), or vsock port 1024.

use std::path::{Path, PathBuf};

/// The device node of the virtio-serial port called `name`, if present.
pub fn find_serial_port(sys_class: &Path, name: &str) -> Option<PathBuf> {
    let entries = std::fs::read_dir(sys_class).ok()?;
    for entry in entries.flatten() {
        let port_name = std::fs::read_to_string(entry.path().join("name")).unwrap_or_default();
        if port_name.trim() == name {
            return Some(Path::new("/dev").join(entry.file_name()));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_port_by_name() {
        let dir = tempfile::tempdir().unwrap();
        for (port, name) in [("vport0p0", ""), ("vport1p1", "org.banger.agent\n")] {
            std::fs::create_dir_all(dir.path().join(port)).unwrap();
            std::fs::write(dir.path().join(port).join("name"), name).unwrap();
        }
        assert_eq!(
            find_serial_port(dir.path(), "org.banger.agent"),
            Some(PathBuf::from("/dev/vport1p1"))
        );
        assert_eq!(find_serial_port(dir.path(), "other"), None);
    }
}
