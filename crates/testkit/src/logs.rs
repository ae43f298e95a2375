//! What a failing test leaves to read: the end of the daemon's log and
//! of each VM's console and VMM log; and the cleanup that kills whatever
//! a test started under its root, pass or fail.

use std::path::{Path, PathBuf};

/// Kills whatever the test started under its root, even when it fails;
/// a failing test first prints the end of the daemon's log and of each
/// VM's console, which go with the root.
pub struct Cleanup(pub PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        if std::thread::panicking() {
            print_logs(&self.0);
        }
        let _ = std::process::Command::new("pkill")
            .arg("-9")
            .arg("-f")
            .arg(self.0.display().to_string())
            .status();
    }
}

/// The last lines of the daemon's log and of every VM's console and VMM
/// log under `root`, on stderr.
pub fn print_logs(root: &Path) {
    let mut logs = vec![
        root.join("bangerd.log"),
        root.join("run/banger/bangerd.log"),
    ];
    if let Ok(vms) = std::fs::read_dir(root.join("var/lib/banger/vms")) {
        for vm in vms.flatten() {
            logs.push(vm.path().join("serial.log"));
            logs.push(vm.path().join("vmm.log"));
        }
    }
    for log in logs {
        let Ok(text) = std::fs::read_to_string(&log) else {
            continue;
        };
        let lines: Vec<&str> = text.lines().collect();
        let tail = &lines[lines.len().saturating_sub(80)..];
        eprintln!(
            "---- last {} lines of {}\n{}",
            tail.len(),
            log.display(),
            tail.join("\n")
        );
    }
}
