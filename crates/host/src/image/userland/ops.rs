//! Changes to a userland as values: write a file, make a symbolic link,
//! remove an entry. One list of them (the agent and the lean systemd
//! set-up, `super::inject`) is carried out on a directory tree (image
//! builds) or inside an ext4 image without mounting it (`debugfs -w`:
//! registered root filesystems keep every owner, mode, xattr and hard
//! link they had).

use std::path::{Path, PathBuf};

/// One change; paths are absolute inside the userland.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TreeOp {
    /// A regular file, made or replaced, owned by root; its parent
    /// directories are made (mode 0755) where missing.
    Write {
        path: String,
        contents: Contents,
        mode: u32,
    },
    /// A symbolic link, made or replaced.
    Link { path: String, target: String },
    /// A file or link removed when present.
    Remove { path: String },
}

/// What a written file holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Contents {
    Text(String),
    /// The bytes of a host file (the guest binary).
    HostFile(PathBuf),
}

#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not an absolute path without `..`")]
    BadPath { path: String },
    #[error("debugfs failed: {0}")]
    Debugfs(String),
}

fn io<'a>(action: &'static str, path: &'a Path) -> impl Fn(std::io::Error) -> OpsError + 'a {
    move |source| OpsError::Io {
        action,
        path: path.display().to_string(),
        source,
    }
}

/// The op's path split into its components (absolute, no `.`/`..`, no
/// whitespace or quotes, which debugfs's command language cannot carry).
fn components(path: &str) -> Result<Vec<&str>, OpsError> {
    let bad = || OpsError::BadPath { path: path.into() };
    let rest = path.strip_prefix('/').ok_or_else(bad)?;
    let parts: Vec<&str> = rest.split('/').collect();
    let clean = |p: &&str| {
        !p.is_empty()
            && *p != "."
            && *p != ".."
            && !p
                .chars()
                .any(|c| c.is_whitespace() || c == '"' || c == '\'')
    };
    if parts.iter().all(clean) {
        Ok(parts)
    } else {
        Err(bad())
    }
}

impl TreeOp {
    pub fn path(&self) -> &str {
        match self {
            TreeOp::Write { path, .. } | TreeOp::Link { path, .. } | TreeOp::Remove { path } => {
                path
            }
        }
    }
}

/// Carries the ops out on the directory `tree`. Parent directories are
/// resolved inside the tree only: a component that is a symbolic link
/// (`/lib -> usr/lib`) is followed relative to the tree's root, never
/// to the host's.
pub fn apply_to_dir(tree: &Path, ops: &[TreeOp]) -> Result<(), OpsError> {
    use std::os::unix::fs::PermissionsExt;
    for op in ops {
        let parts = components(op.path())?;
        let (name, parents) = parts.split_last().ok_or(OpsError::BadPath {
            path: op.path().into(),
        })?;
        let parent = resolve_dir(tree, parents, matches!(op, TreeOp::Remove { .. }))?;
        let Some(parent) = parent else { continue };
        let at = parent.join(name);
        if let Ok(meta) = std::fs::symlink_metadata(&at) {
            if !meta.is_dir() {
                std::fs::remove_file(&at).map_err(io("remove", &at))?;
            }
        }
        match op {
            TreeOp::Write { contents, mode, .. } => {
                match contents {
                    Contents::Text(text) => std::fs::write(&at, text).map_err(io("write", &at))?,
                    Contents::HostFile(from) => {
                        std::fs::copy(from, &at).map_err(io("copy", from))?;
                    }
                }
                std::fs::set_permissions(&at, std::fs::Permissions::from_mode(*mode))
                    .map_err(io("chmod", &at))?;
            }
            TreeOp::Link { target, .. } => {
                std::os::unix::fs::symlink(target, &at).map_err(io("link", &at))?
            }
            TreeOp::Remove { .. } => {}
        }
    }
    Ok(())
}

/// The host directory of `parents` inside `tree`, following symbolic
/// links inside the tree; made where missing unless `existing_only`
/// (then `None` when it is not there).
fn resolve_dir(
    tree: &Path,
    parents: &[&str],
    existing_only: bool,
) -> Result<Option<PathBuf>, OpsError> {
    let mut current = tree.to_path_buf();
    let mut pending: Vec<String> = parents.iter().rev().map(|p| p.to_string()).collect();
    let mut hops = 0;
    while let Some(part) = pending.pop() {
        let next = current.join(&part);
        match std::fs::symlink_metadata(&next) {
            Ok(meta) if meta.file_type().is_symlink() => {
                hops += 1;
                let target = std::fs::read_link(&next).map_err(io("read", &next))?;
                let text = target.display().to_string();
                if hops > 32 {
                    return Err(OpsError::BadPath { path: text });
                }
                // Absolute links start again at the tree's root.
                if text.starts_with('/') {
                    current = tree.to_path_buf();
                }
                for piece in text.split('/').rev().filter(|p| !p.is_empty() && *p != ".") {
                    if piece == ".." {
                        return Err(OpsError::BadPath { path: text });
                    }
                    pending.push(piece.to_string());
                }
            }
            Ok(meta) if meta.is_dir() => current = next,
            Ok(_) => {
                return Err(OpsError::BadPath {
                    path: next.display().to_string(),
                })
            }
            Err(_) if existing_only => return Ok(None),
            Err(_) => {
                std::fs::create_dir(&next).map_err(io("create", &next))?;
                current = next;
            }
        }
    }
    Ok(Some(current))
}

/// The debugfs script that carries the ops out inside an ext4 image.
/// debugfs follows symbolic links in the parent components itself, in
/// the image; `mkdir` of an existing directory and `rm` of a missing
/// entry only print an error, and the script goes on.
pub fn debugfs_script(ops: &[TreeOp]) -> Result<String, OpsError> {
    let mut script = String::new();
    let mut made: std::collections::BTreeSet<String> = Default::default();
    for op in ops {
        let parts = components(op.path())?;
        let path = op.path();
        if !matches!(op, TreeOp::Remove { .. }) {
            for depth in 1..parts.len() {
                let dir = format!("/{}", parts[..depth].join("/"));
                if made.insert(dir.clone()) {
                    script.push_str(&format!("mkdir {dir}\n"));
                }
            }
        }
        script.push_str(&format!("rm {path}\n"));
        match op {
            TreeOp::Write { mode, .. } => {
                script.push_str(&format!("write {{src}} {path}\n"));
                script.push_str(&format!("sif {path} mode 0{:o}\n", 0o100000 | mode));
                script.push_str(&format!("sif {path} uid 0\nsif {path} gid 0\n"));
            }
            TreeOp::Link { target, .. } => {
                if target.chars().any(|c| c.is_whitespace() || c == '"') {
                    return Err(OpsError::BadPath {
                        path: target.clone(),
                    });
                }
                script.push_str(&format!("symlink {path} {target}\n"));
            }
            TreeOp::Remove { .. } => {}
        }
    }
    Ok(script)
}

/// Carries the ops out inside the ext4 image `image` (which must have
/// room for them); file contents are staged in `scratch`, a directory
/// under the image's. The image is someone else's filesystem: debugfs
/// runs unprivileged (`ext4::tools`), reading only what is staged.
pub async fn apply_to_ext4(image: &Path, ops: &[TreeOp], scratch: &Path) -> Result<(), OpsError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(scratch).map_err(io("create", scratch))?;
    let base = image.parent().unwrap_or(Path::new("."));
    let relative = scratch
        .strip_prefix(base)
        .map_err(|_| OpsError::BadPath {
            path: scratch.display().to_string(),
        })?
        .to_path_buf();
    // Readable by the tools' user: the directories on the way and the
    // files staged in them.
    let mut dir = base.to_path_buf();
    for part in relative.components() {
        dir.push(part);
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
            .map_err(io("open", &dir))?;
    }
    let mut script = String::new();
    for (index, op) in ops.iter().enumerate() {
        let mut one = debugfs_script(std::slice::from_ref(op))?;
        if let TreeOp::Write { contents, .. } = op {
            let name = format!("op-{index}");
            let file = scratch.join(&name);
            match contents {
                Contents::Text(text) => std::fs::write(&file, text).map_err(io("write", &file))?,
                Contents::HostFile(from) => {
                    std::fs::copy(from, &file).map_err(io("copy", from))?;
                }
            }
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644))
                .map_err(io("open", &file))?;
            let shown = relative.join(&name).display().to_string();
            if shown.chars().any(|c| c.is_whitespace() || c == '"') {
                return Err(OpsError::BadPath { path: shown });
            }
            one = one.replace("{src}", &shown);
        }
        script.push_str(&one);
    }
    let file = scratch.join("debugfs.cmds");
    std::fs::write(&file, &script).map_err(io("write", &file))?;
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644))
        .map_err(io("open", &file))?;
    let cmds = relative.join("debugfs.cmds").into_os_string();
    let out = crate::image::ext4::tools::run_unprivileged(
        "debugfs",
        &["-w".into(), "-f".into(), cmds],
        image,
        &[],
    )
    .await
    .map_err(io("run debugfs on", image))?;
    if !out.status.success() {
        return Err(OpsError::Debugfs(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ops() -> Vec<TreeOp> {
        vec![
            TreeOp::Write {
                path: "/etc/banger/early".into(),
                contents: Contents::Text("agent\n".into()),
                mode: 0o644,
            },
            TreeOp::Link {
                path: "/lib/systemd/system/x.service".into(),
                target: "/dev/null".into(),
            },
            TreeOp::Remove {
                path: "/etc/gone".into(),
            },
        ]
    }

    #[test]
    fn a_tree_gets_the_ops_through_its_own_symlinks() {
        let tree = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tree.path().join("usr/lib")).unwrap();
        // An absolute link inside the tree must not lead to the host's /usr.
        std::os::unix::fs::symlink("/usr/lib", tree.path().join("lib")).unwrap();
        std::fs::create_dir_all(tree.path().join("etc")).unwrap();
        std::fs::write(tree.path().join("etc/gone"), "x").unwrap();
        apply_to_dir(tree.path(), &ops()).unwrap();
        assert_eq!(
            std::fs::read_to_string(tree.path().join("etc/banger/early")).unwrap(),
            "agent\n"
        );
        assert_eq!(
            std::fs::read_link(tree.path().join("usr/lib/systemd/system/x.service")).unwrap(),
            Path::new("/dev/null")
        );
        assert!(!tree.path().join("etc/gone").exists());
    }

    #[test]
    fn paths_that_could_leave_the_tree_are_refused() {
        for path in ["relative/x", "/etc/../x", "/etc/a b", "/etc//x"] {
            let op = TreeOp::Remove { path: path.into() };
            assert!(
                matches!(
                    debugfs_script(std::slice::from_ref(&op)),
                    Err(OpsError::BadPath { .. })
                ),
                "{path}"
            );
            let tree = tempfile::tempdir().unwrap();
            assert!(apply_to_dir(tree.path(), &[op]).is_err(), "{path}");
        }
        let tree = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("../..", tree.path().join("up")).unwrap();
        let op = TreeOp::Write {
            path: "/up/x".into(),
            contents: Contents::Text(String::new()),
            mode: 0o644,
        };
        assert!(apply_to_dir(tree.path(), &[op]).is_err());
    }

    #[test]
    fn the_debugfs_script_makes_parents_and_sets_modes() {
        let script = debugfs_script(&ops()).unwrap();
        assert_eq!(
            script,
            "mkdir /etc\nmkdir /etc/banger\nrm /etc/banger/early\nwrite {src} /etc/banger/early\nsif /etc/banger/early mode 0100644\nsif /etc/banger/early uid 0\nsif /etc/banger/early gid 0\n\
             mkdir /lib\nmkdir /lib/systemd\nmkdir /lib/systemd/system\nrm /lib/systemd/system/x.service\nsymlink /lib/systemd/system/x.service /dev/null\n\
             rm /etc/gone\n"
        );
    }

    #[tokio::test]
    async fn an_ext4_image_gets_the_ops_and_keeps_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("tree");
        std::fs::create_dir_all(tree.join("etc")).unwrap();
        std::fs::create_dir_all(tree.join("usr/bin")).unwrap();
        std::fs::write(tree.join("etc/gone"), "x").unwrap();
        let suid = tree.join("usr/bin/su");
        std::fs::write(&suid, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&suid, std::os::unix::fs::PermissionsExt::from_mode(0o4755))
            .unwrap();
        let image = dir.path().join("rootfs.ext4");
        crate::image::ext4::make_from_dir(&tree, &image, Some(64 << 20), "test")
            .await
            .unwrap();
        let mut all = ops();
        let guest = dir.path().join("guest-binary");
        std::fs::write(&guest, b"\x7fELF").unwrap();
        all.push(TreeOp::Write {
            path: "/usr/local/sbin/banger-agent".into(),
            contents: Contents::HostFile(guest),
            mode: 0o755,
        });
        apply_to_ext4(&image, &all, &dir.path().join("scratch"))
            .await
            .unwrap();
        let out = dir.path().join("out");
        let dumped = out.join("etc");
        std::fs::create_dir_all(&out).unwrap();
        crate::image::ext4::copy_tree_out(&image, "/etc", &dumped, crate::image::ext4::Links::Keep)
            .await
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(dumped.join("banger/early")).unwrap(),
            "agent\n"
        );
        assert!(!dumped.join("gone").exists());
        let stat = |path: &str| {
            let out = std::process::Command::new("debugfs")
                .arg("-R")
                .arg(format!("stat {path}"))
                .arg(&image)
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        assert!(
            stat("/usr/local/sbin/banger-agent").contains("Mode:  0755"),
            "{}",
            stat("/usr/local/sbin/banger-agent")
        );
        assert!(stat("/usr/bin/su").contains("Mode:  04755"), "setuid kept");
        assert!(stat("/lib/systemd/system/x.service").contains("Type: symlink"));
    }
}
