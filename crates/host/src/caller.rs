//! The API's caller and the host files it names. The daemon runs as root;
//! a caller (a member of the socket's group) is not. Every file a request
//! names is opened with the caller's rights: on a thread of its own whose
//! file-system identity (`setfsuid`/`setfsgid`, which Linux keeps per
//! thread) is the caller's user and primary group, so the kernel, not a
//! racy check, decides what the caller may read or make. A file opened
//! that way stays open while the daemon works on it; the daemon reaches it
//! through `/proc/PID/fd/N`, never again through the caller's path, which
//! the caller could swap for a link in between.
//!
//! Supplementary groups are not the caller's: the daemon drops its own at
//! start (`drop_supplementary_groups`), so a file readable only through a
//! group the caller is in besides its primary one is refused.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::unistd::{Gid, Uid};

/// What went wrong with a file a caller named.
#[derive(Debug, thiserror::Error)]
pub enum CallerError {
    #[error("cannot open {path}: {}", why(.source))]
    Open { path: String, source: io::Error },
    #[error("{path} is not a regular file")]
    NotAFile { path: String },
    #[error("{path} is not a directory")]
    NotADirectory { path: String },
    #[error("{path} exists")]
    Exists { path: String },
    #[error("cannot create {path}: {}", why(.source))]
    Create { path: String, source: io::Error },
    #[error("cannot publish {path}: {}", why(.source))]
    Publish { path: String, source: io::Error },
}

impl CallerError {
    pub fn hint(&self) -> &'static str {
        match self {
            CallerError::Open { .. } | CallerError::NotAFile { .. } => {
                "the daemon opens files with your rights: name a regular file you can read"
            }
            CallerError::NotADirectory { .. } => {
                "name a directory you can read (to share one file, share its directory)"
            }
            CallerError::Exists { .. } => "pick a new file name, or remove the old file",
            CallerError::Create { .. } | CallerError::Publish { .. } => {
                "the daemon writes with your rights: name a new file in a directory you can write"
            }
        }
    }
}

/// An I/O error in the words a caller expects (`no such file`, not
/// `No such file or directory (os error 2)`).
fn why(err: &io::Error) -> String {
    match err.kind() {
        io::ErrorKind::NotFound => "no such file".into(),
        io::ErrorKind::PermissionDenied => "permission denied".into(),
        io::ErrorKind::AlreadyExists => "it exists".into(),
        _ => err.to_string(),
    }
}

/// Who is on the other end of an API connection (`SO_PEERCRED`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
}

impl Caller {
    pub const ROOT: Caller = Caller { uid: 0, gid: 0 };

    pub fn is_root(&self) -> bool {
        self.uid == 0
    }

    /// Runs `work` with the caller's file-system identity: on a new thread
    /// (which ends with it) unless the caller is root.
    pub fn with_rights<T: Send>(
        &self,
        work: impl FnOnce() -> io::Result<T> + Send,
    ) -> io::Result<T> {
        if self.is_root() {
            return work();
        }
        let (uid, gid) = (Uid::from_raw(self.uid), Gid::from_raw(self.gid));
        std::thread::scope(|scope| {
            scope
                .spawn(move || {
                    nix::unistd::setfsgid(gid);
                    nix::unistd::setfsuid(uid);
                    // Both calls return the previous value: asking again
                    // tells whether the switch took.
                    if nix::unistd::setfsuid(uid) != uid || nix::unistd::setfsgid(gid) != gid {
                        return Err(io::Error::new(
                            io::ErrorKind::PermissionDenied,
                            "cannot take on the caller's identity",
                        ));
                    }
                    work()
                })
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("a caller's file operation panicked")))
        })
    }

    /// Whether `path` names something the caller can see (a link counts;
    /// a path in a directory the caller may not search does not: its
    /// existence is not the caller's to learn).
    pub fn sees(&self, path: &Path) -> bool {
        self.with_rights(|| path.symlink_metadata()).is_ok()
    }

    /// Opens `path` for reading with the caller's rights, without
    /// blocking on a fifo or taking a terminal.
    fn open(&self, path: &Path) -> Result<File, CallerError> {
        self.with_rights(|| {
            OpenOptions::new()
                .read(true)
                .custom_flags(nix::libc::O_NONBLOCK | nix::libc::O_NOCTTY)
                .open(path)
        })
        .map_err(|source| CallerError::Open {
            path: path.display().to_string(),
            source,
        })
    }

    /// Checks that `path` is a directory the caller can open; returns
    /// its device and inode numbers.
    pub fn check_dir(&self, path: &Path) -> Result<(u64, u64), CallerError> {
        use std::os::unix::fs::MetadataExt;
        let shown = path.display().to_string();
        let dir = self.open(path)?;
        match dir.metadata() {
            Ok(meta) if meta.is_dir() => Ok((meta.dev(), meta.ino())),
            Ok(_) => Err(CallerError::NotADirectory { path: shown }),
            Err(source) => Err(CallerError::Open {
                path: shown,
                source,
            }),
        }
    }

    /// Opens a regular file the caller can read. A fifo or device is
    /// refused without blocking on it.
    pub fn open_read(&self, path: &Path) -> Result<HeldFile, CallerError> {
        let shown = path.display().to_string();
        let file = self.open(path)?;
        match file.metadata() {
            Ok(meta) if meta.is_file() => Ok(HeldFile {
                file,
                shown: path.to_path_buf(),
            }),
            Ok(_) => Err(CallerError::NotAFile { path: shown }),
            Err(source) => Err(CallerError::Open {
                path: shown,
                source,
            }),
        }
    }

    /// Makes `out` the caller's new file: written as `out.partial` (never
    /// an existing file or a link there), published by `NewFile::publish`.
    pub fn create_new(&self, out: &Path) -> Result<NewFile, CallerError> {
        let shown = out.display().to_string();
        if self.sees(out) {
            return Err(CallerError::Exists { path: shown });
        }
        let mut name = out.as_os_str().to_owned();
        name.push(".partial");
        let partial = PathBuf::from(name);
        let file = self
            .with_rights(|| {
                OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o644)
                    .open(&partial)
            })
            .map_err(|source| CallerError::Create {
                path: partial.display().to_string(),
                source,
            })?;
        Ok(NewFile {
            caller: *self,
            out: out.to_path_buf(),
            partial,
            file,
            published: false,
        })
    }
}

/// Drops the daemon's supplementary groups (root's need none), so that a
/// thread acting for a caller has only the caller's user and group.
pub fn drop_supplementary_groups() -> nix::Result<()> {
    if Uid::effective().is_root() {
        nix::unistd::setgroups(&[])?;
    }
    Ok(())
}

/// A caller's file, open for reading.
#[derive(Debug)]
pub struct HeldFile {
    file: File,
    shown: PathBuf,
}

impl HeldFile {
    /// A path to the open file that any process of the daemon's user can
    /// open (tools run on it); valid while this is alive.
    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!(
            "/proc/{}/fd/{}",
            std::process::id(),
            self.file.as_raw_fd()
        ))
    }

    /// The path the caller gave.
    pub fn shown(&self) -> &Path {
        &self.shown
    }
}

/// A caller's new file, whole under its name only once published;
/// removed when dropped unpublished.
#[derive(Debug)]
pub struct NewFile {
    caller: Caller,
    out: PathBuf,
    partial: PathBuf,
    file: File,
    published: bool,
}

impl NewFile {
    /// The file to write into.
    pub fn file(&self) -> io::Result<File> {
        self.file.try_clone()
    }

    pub fn out(&self) -> &Path {
        &self.out
    }

    /// Gives the written file its name (refused if that name was taken
    /// meanwhile) once its bytes are on disk.
    pub fn publish(mut self) -> Result<(), CallerError> {
        let err = |source| CallerError::Publish {
            path: self.out.display().to_string(),
            source,
        };
        self.file.sync_all().map_err(err)?;
        let (partial, out) = (&self.partial, &self.out);
        self.caller
            .with_rights(|| {
                nix::fcntl::renameat2(
                    None,
                    partial,
                    None,
                    out,
                    nix::fcntl::RenameFlags::RENAME_NOREPLACE,
                )
                .map_err(io::Error::from)?;
                if let Some(dir) = out.parent() {
                    File::open(dir)?.sync_all()?;
                }
                Ok(())
            })
            .map_err(err)?;
        self.published = true;
        Ok(())
    }
}

impl Drop for NewFile {
    fn drop(&mut self) {
        if !self.published {
            let partial = &self.partial;
            let _ = self.caller.with_rights(|| std::fs::remove_file(partial));
        }
    }
}

#[cfg(test)]
mod tests;
