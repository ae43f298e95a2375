//! A guest restored from a snapshot becomes a machine of its own
//! (`Op::Identity`): the wall clock from the host, fresh entropy mixed
//! into the kernel's pool and the pool reseeded, a new machine-id, the
//! VM's guest config files (hostname, hosts, resolver, SSH host keys)
//! written over the snapshot's, the hostname, and the NIC's MAC and
//! address. sshd is left running: OpenSSH re-executes itself for every
//! connection and reads the host key then, so the next connection gets
//! the new one (a restart would cost most of a warm create). Files go
//! under `root` so tests can look at them; the rest touches the kernel
//! only when `live`. The files (written, then flushed once) and the
//! name and network are done side by side.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use banger_proto::agent::Identity;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;

use crate::cmdline::BootConfig;

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("bad identity: {0}")]
    Bad(String),
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("{what}: {source}")]
    Kernel {
        what: &'static str,
        source: nix::Error,
    },
    #[error(transparent)]
    Net(#[from] crate::netconfig::NetError),
}

/// Where and how an identity is applied.
#[derive(Debug, Clone)]
pub struct Target {
    /// The guest's `/` (a scratch directory in tests).
    pub root: PathBuf,
    /// Set the clock, the pool, the hostname and the network for real.
    pub live: bool,
}

/// Applies `identity`; the clock and the entropy come first, so nothing
/// after them runs on the snapshot's time or random state.
pub async fn apply(identity: &Identity, target: &Target) -> Result<(), IdentityError> {
    let entropy = B64
        .decode(&identity.entropy)
        .map_err(|e| IdentityError::Bad(format!("entropy: {e}")))?;
    if entropy.len() < 32 || entropy.len() > 512 {
        return Err(IdentityError::Bad(format!(
            "entropy of {} bytes: 32 to 512 are taken",
            entropy.len()
        )));
    }
    if identity.machine_id.len() != 32
        || !identity
            .machine_id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(IdentityError::Bad(
            "machine-id: 32 lowercase hex digits".into(),
        ));
    }
    let boot =
        BootConfig::parse(&identity.cmdline).map_err(|e| IdentityError::Bad(e.to_string()))?;
    for file in &identity.files {
        relative(&file.path)?;
    }
    let began = std::time::Instant::now();
    if target.live {
        set_clock(identity.time_ms)?;
        reseed(&entropy)?;
    }
    let entropy_ms = began.elapsed().as_millis();
    // The files (disk) and the name and network (kernel) touch nothing of
    // each other: done side by side.
    let files = {
        let root = target.root.clone();
        let mut files: Vec<(String, Vec<u8>, u32)> = identity
            .files
            .iter()
            .map(|f| (f.path.clone(), f.contents.clone().into_bytes(), f.mode))
            .collect();
        files.push((
            "/etc/machine-id".into(),
            format!("{}\n", identity.machine_id).into_bytes(),
            0o444,
        ));
        tokio::task::spawn_blocking(move || {
            for (path, contents, mode) in &files {
                write_file(&root, path, contents, *mode)?;
            }
            // One flush for them all: the create is reported only after.
            sync_filesystem(&root)?;
            Ok::<_, IdentityError>(began.elapsed().as_millis())
        })
    };
    let kernel = async {
        if target.live {
            if let Some(name) = &boot.hostname {
                nix::unistd::sethostname(name).map_err(|source| IdentityError::Kernel {
                    what: "sethostname",
                    source,
                })?;
            }
            if let Some(address) = boot.ip {
                crate::netconfig::readdress("eth0", identity.mac.as_deref(), address, boot.gateway)
                    .await?;
            }
        }
        Ok::<_, IdentityError>(began.elapsed().as_millis())
    };
    let (files, kernel) = tokio::join!(files, kernel);
    let files_ms = files.map_err(|e| IdentityError::Bad(format!("file writer: {e}")))??;
    let kernel_ms = kernel?;
    if target.live {
        eprintln!(
            "banger-agent: new identity: clock and entropy {entropy_ms} ms, files {files_ms} ms, name and network {kernel_ms} ms"
        );
    }
    Ok(())
}

/// Flushes the filesystem `root` is on (`syncfs`).
fn sync_filesystem(root: &Path) -> Result<(), IdentityError> {
    use std::os::fd::AsRawFd;
    let failed = |source: std::io::Error| IdentityError::Write {
        path: root.display().to_string(),
        source,
    };
    let dir = std::fs::File::open(root).map_err(failed)?;
    nix::unistd::syncfs(dir.as_raw_fd()).map_err(|e| failed(e.into()))
}

/// Writes `contents` to `root`+`path` through a temporary file and a
/// rename, so a reader never sees half a file; parents are made 0755.
/// Not flushed: the caller flushes the filesystem once.
fn write_file(root: &Path, path: &str, contents: &[u8], mode: u32) -> Result<(), IdentityError> {
    let target = root.join(relative(path)?);
    let failed = |source| IdentityError::Write {
        path: path.to_string(),
        source,
    };
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent).map_err(failed)?;
    }
    let mut temp = target.clone().into_os_string();
    temp.push(".banger-identity");
    let temp = PathBuf::from(temp);
    let _ = std::fs::remove_file(&temp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&temp)
        .map_err(failed)?;
    file.write_all(contents).map_err(failed)?;
    file.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(failed)?;
    std::fs::rename(&temp, &target).map_err(failed)
}

/// An absolute path with plain components only, made relative.
fn relative(path: &str) -> Result<&Path, IdentityError> {
    let relative = Path::new(path.trim_start_matches('/'));
    if !path.starts_with('/')
        || relative.as_os_str().is_empty()
        || relative
            .components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)))
    {
        return Err(IdentityError::Bad(format!("file path {path:?}")));
    }
    Ok(relative)
}

fn set_clock(time_ms: u64) -> Result<(), IdentityError> {
    let now = nix::sys::time::TimeSpec::new(
        (time_ms / 1000) as i64,
        ((time_ms % 1000) * 1_000_000) as i64,
    );
    nix::time::clock_settime(nix::time::ClockId::CLOCK_REALTIME, now).map_err(|source| {
        IdentityError::Kernel {
            what: "clock_settime",
            source,
        }
    })
}

/// `RNDADDENTROPY` with the bytes credited, then `RNDRESEEDCRNG`: the
/// kernel's generator is keyed anew from a pool the snapshot never saw.
/// The one `unsafe` of the project: these are ioctls no crate wraps, and
/// writing to `/dev/urandom` mixes bytes in without reseeding, so two
/// restored copies would go on drawing the same bytes for a minute.
#[allow(unsafe_code)]
fn reseed(entropy: &[u8]) -> Result<(), IdentityError> {
    use std::os::fd::AsRawFd;
    const RNDADDENTROPY: nix::libc::c_ulong = 0x4008_5203;
    const RNDRESEEDCRNG: nix::libc::c_ulong = 0x5207;
    let random = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/random")
        .map_err(|source| IdentityError::Write {
            path: "/dev/random".into(),
            source,
        })?;
    // struct rand_pool_info { int entropy_count; int buf_size; __u32 buf[]; }
    let mut info: Vec<u8> = Vec::with_capacity(8 + entropy.len());
    info.extend(((entropy.len() * 8) as i32).to_ne_bytes());
    info.extend((entropy.len() as i32).to_ne_bytes());
    info.extend(entropy);
    let kernel = |what, rc: i32| {
        if rc < 0 {
            Err(IdentityError::Kernel {
                what,
                source: nix::Error::last(),
            })
        } else {
            Ok(())
        }
    };
    // SAFETY: `info` is a complete rand_pool_info of the size it states,
    // alive for the call; RNDRESEEDCRNG takes no argument.
    kernel("RNDADDENTROPY", unsafe {
        nix::libc::ioctl(random.as_raw_fd(), RNDADDENTROPY, info.as_ptr())
    })?;
    kernel("RNDRESEEDCRNG", unsafe {
        nix::libc::ioctl(random.as_raw_fd(), RNDRESEEDCRNG)
    })
}

#[cfg(test)]
mod tests {
    use banger_proto::agent::IdentityFile;

    use super::*;

    fn identity() -> Identity {
        Identity {
            time_ms: 1_800_000_000_000,
            entropy: B64.encode([7u8; 64]),
            machine_id: "0123456789abcdef0123456789abcdef".into(),
            cmdline: "banger.hostname=fork-1 banger.ip=172.29.0.9/24 banger.gw=172.29.0.1".into(),
            mac: Some("06:00:ac:1d:00:09".into()),
            files: vec![
                IdentityFile {
                    path: "/etc/hostname".into(),
                    contents: "fork-1\n".into(),
                    mode: 0o644,
                },
                IdentityFile {
                    path: "/etc/ssh/ssh_host_ed25519_key".into(),
                    contents: "secret\n".into(),
                    mode: 0o600,
                },
            ],
        }
    }

    #[tokio::test]
    async fn files_and_machine_id_replace_the_snapshots() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        std::fs::write(dir.path().join("etc/hostname"), "source\n").unwrap();
        let target = Target {
            root: dir.path().into(),
            live: false,
        };
        apply(&identity(), &target).await.unwrap();
        let read = |p: &str| std::fs::read_to_string(dir.path().join(p)).unwrap();
        assert_eq!(read("etc/hostname"), "fork-1\n");
        assert_eq!(read("etc/machine-id"), "0123456789abcdef0123456789abcdef\n");
        let key = std::fs::metadata(dir.path().join("etc/ssh/ssh_host_ed25519_key")).unwrap();
        assert_eq!(key.permissions().mode() & 0o777, 0o600);
        assert_eq!(read("etc/ssh/ssh_host_ed25519_key"), "secret\n");
    }

    #[tokio::test]
    async fn bad_identities_change_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let target = Target {
            root: dir.path().into(),
            live: false,
        };
        let mut short = identity();
        short.entropy = B64.encode([1u8; 8]);
        let mut id = identity();
        id.machine_id = "../../etc".into();
        let mut escape = identity();
        escape.files[1].path = "/etc/../../outside".into();
        for (bad, why) in [
            (short, "entropy"),
            (id, "machine-id"),
            (escape, "file path"),
        ] {
            let err = apply(&bad, &target).await.unwrap_err().to_string();
            assert!(err.contains(why), "{err}");
        }
        assert!(!dir.path().join("etc/hostname").exists());
        assert!(!dir.path().join("outside").exists());
    }
}
