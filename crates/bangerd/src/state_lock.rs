//! One daemon per state directory: an exclusive `flock` on
//! `STATE/bangerd.lock`, taken before anything in the state is touched
//! (stale staging cleaned, VMs reconciled, orphan VMMs killed), held until
//! the process ends. A second daemon on the same state stops there,
//! naming the pid that holds it.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::Path;

use anyhow::{bail, Context, Result};
use nix::fcntl::{Flock, FlockArg};

/// The lock file's name inside the state directory.
pub const LOCK_FILE: &str = "bangerd.lock";

/// Takes the state directory's lock, or says who holds it.
pub fn lock(state_dir: &Path) -> Result<Flock<File>> {
    let path = state_dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(mut locked) => {
            locked.set_len(0)?;
            locked.rewind()?;
            write!(locked, "{}", std::process::id())?;
            locked.sync_all()?;
            Ok(locked)
        }
        Err((mut file, _)) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            bail!(
                "another bangerd (pid {}) uses the state directory {}; stop it first (banger daemon stop), or give this one another --root",
                if holder.is_empty() { "unknown" } else { holder },
                state_dir.display()
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_naming_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let held = lock(dir.path()).unwrap();
        let err = lock(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        drop(held);
        lock(dir.path()).unwrap();
    }
}
