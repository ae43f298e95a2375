//! Shared folders: a host directory mounted in the guest
//! (`--mount HOST_DIR:GUEST_DIR[:ro]`), served to a QEMU VM over virtiofs
//! with the rights of the user who created the VM. The guest side is a
//! kernel command line key banger-init reads (`banger.shares=`), so guest
//! paths are plain: absolute, without whitespace, `:` or `,`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedFolder {
    pub host_dir: PathBuf,
    pub guest_dir: String,
    pub read_only: bool,
    /// Whose rights the folder is served with: the creator's.
    pub uid: u32,
    pub gid: u32,
    /// The directory the creator named, as it was when the VM was made:
    /// every start serves exactly it, or refuses (a folder replaced by
    /// another or by a link is not followed). `None` for VMs made before
    /// it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<FolderIdentity>,
}

/// A directory's device and inode numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FolderIdentity {
    pub dev: u64,
    pub ino: u64,
}

/// Shared folders one VM may have.
pub const MAX_SHARES: usize = 8;
const GUEST_DIR_MAX: usize = 256;

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum MountError {
    #[error("guest directory {0:?} must be absolute, not /, without spaces, `:` or `,`")]
    GuestDir(String),
    #[error("host directory {0:?} must be an absolute path")]
    HostDir(String),
    #[error("guest directory {0} is mounted twice")]
    Twice(String),
    #[error("a vm has at most {MAX_SHARES} shared folders")]
    TooMany,
}

impl SharedFolder {
    /// The virtiofs tag of the `index`th folder.
    pub fn tag(index: usize) -> String {
        format!("banger{index}")
    }
}

/// Checks a list of shared folders' paths.
pub fn check(shares: &[SharedFolder]) -> Result<(), MountError> {
    if shares.len() > MAX_SHARES {
        return Err(MountError::TooMany);
    }
    let mut seen = std::collections::HashSet::new();
    for share in shares {
        let guest = &share.guest_dir;
        let plain = guest.starts_with('/')
            && guest.len() > 1
            && guest.len() <= GUEST_DIR_MAX
            && !guest.contains(|c: char| c.is_whitespace() || c == ':' || c == ',')
            && !guest.split('/').any(|part| part == "..");
        if !plain {
            return Err(MountError::GuestDir(guest.clone()));
        }
        if !share.host_dir.is_absolute() {
            return Err(MountError::HostDir(share.host_dir.display().to_string()));
        }
        if !seen.insert(guest.trim_end_matches('/')) {
            return Err(MountError::Twice(guest.clone()));
        }
    }
    Ok(())
}

/// The `banger.shares=` value: `TAG:GUEST_DIR[:ro]`, comma-separated.
pub fn cmdline(shares: &[SharedFolder]) -> String {
    let each: Vec<String> = shares
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let ro = if s.read_only { ":ro" } else { "" };
            format!("{}:{}{ro}", SharedFolder::tag(i), s.guest_dir)
        })
        .collect();
    format!("banger.shares={}", each.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn share(host: &str, guest: &str, read_only: bool) -> SharedFolder {
        SharedFolder {
            identity: None,
            host_dir: host.into(),
            guest_dir: guest.into(),
            read_only,
            uid: 0,
            gid: 0,
        }
    }

    #[test]
    fn guest_dirs_are_plain_absolute_paths() {
        assert!(check(&[share("/src", "/srv/code", false)]).is_ok());
        for bad in ["rel", "/", "/a b", "/a:b", "/a,b", "/a/../etc"] {
            assert!(
                matches!(
                    check(&[share("/src", bad, false)]),
                    Err(MountError::GuestDir(_))
                ),
                "{bad}"
            );
        }
        assert!(matches!(
            check(&[share("src", "/x", false)]),
            Err(MountError::HostDir(_))
        ));
        assert!(matches!(
            check(&[share("/a", "/x", false), share("/b", "/x/", true)]),
            Err(MountError::Twice(_))
        ));
    }

    #[test]
    fn the_command_line_names_tags_dirs_and_modes() {
        let shares = [share("/a", "/srv/a", false), share("/b", "/srv/b", true)];
        assert_eq!(
            cmdline(&shares),
            "banger.shares=banger0:/srv/a,banger1:/srv/b:ro"
        );
    }
}
