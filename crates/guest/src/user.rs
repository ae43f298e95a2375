//! Who a command runs as: an OCI image's `User` (`NAME`, `UID`,
//! `NAME:GROUP`, `UID:GID`) resolved against the guest's `/etc/passwd`
//! and `/etc/group`, the way container runtimes do: a name must exist, a
//! number need not (its group is then 0), and the home directory comes
//! from the passwd entry.

use std::path::Path;

/// A resolved user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    pub uid: u32,
    pub gid: u32,
    pub home: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UserError {
    #[error("no user {0:?} in /etc/passwd")]
    NoUser(String),
    #[error("no group {0:?} in /etc/group")]
    NoGroup(String),
}

/// Largest passwd or group file read.
const MAX_FILE: u64 = 4 << 20;

fn read(path: &Path) -> String {
    match std::fs::metadata(path) {
        Ok(meta) if meta.len() <= MAX_FILE => std::fs::read_to_string(path).unwrap_or_default(),
        _ => String::new(),
    }
}

/// Resolves `spec` against the files under `root` (`/` in the guest).
pub fn resolve(spec: &str, root: &Path) -> Result<RunAs, UserError> {
    resolve_in(
        spec,
        &read(&root.join("etc/passwd")),
        &read(&root.join("etc/group")),
    )
}

/// Resolves `spec` against the text of a passwd and a group file.
pub fn resolve_in(spec: &str, passwd: &str, group: &str) -> Result<RunAs, UserError> {
    let (user, group_spec) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let entry = passwd.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        (f.len() >= 7 && (f[0] == user || f[2] == user)).then(|| {
            (
                f[2].parse::<u32>().ok(),
                f[3].parse::<u32>().ok(),
                f[5].to_string(),
            )
        })
    });
    let (uid, primary_gid, home) = match (entry, user.parse::<u32>()) {
        (Some((Some(uid), gid, home)), _) => (uid, gid.unwrap_or(0), Some(home)),
        (_, Ok(uid)) => (uid, 0, None),
        _ => return Err(UserError::NoUser(user.to_string())),
    };
    let gid = match group_spec {
        None => primary_gid,
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => group
                .lines()
                .find_map(|line| {
                    let f: Vec<&str> = line.split(':').collect();
                    (f.len() >= 3 && f[0] == g)
                        .then(|| f[2].parse::<u32>().ok())
                        .flatten()
                })
                .ok_or_else(|| UserError::NoGroup(g.to_string()))?,
        },
    };
    Ok(RunAs { uid, gid, home })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n";
    const GROUP: &str = "root:x:0:\napp:x:1000:\nstaff:x:50:app\n";

    #[test]
    fn names_numbers_and_groups_resolve_like_container_runtimes() {
        let r = |s| resolve_in(s, PASSWD, GROUP);
        assert_eq!(
            r("app").unwrap(),
            RunAs {
                uid: 1000,
                gid: 1000,
                home: Some("/home/app".into())
            }
        );
        assert_eq!(r("1000").unwrap().home.as_deref(), Some("/home/app"));
        assert_eq!(r("app:staff").unwrap().gid, 50);
        assert_eq!(
            r("4242:7").unwrap(),
            RunAs {
                uid: 4242,
                gid: 7,
                home: None
            }
        );
        assert_eq!(r("4242").unwrap().gid, 0);
        assert_eq!(r("nobody"), Err(UserError::NoUser("nobody".into())));
        assert_eq!(r("app:wheel"), Err(UserError::NoGroup("wheel".into())));
    }
}
