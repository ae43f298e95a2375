//! Unpacks a `pack` stream at a destination (see `Landing`), trusting
//! nothing in it: entries outside the top-level name (the one asked for,
//! when the caller names it), absolute paths, `..`, hard links and
//! devices are refused; no entry is written through a link (every
//! directory on the way must be a real one); an existing file or link at
//! an entry's place is replaced, never followed; set-id bits are kept
//! only when owners are (`cp -a`).

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use crate::{CopyError, Landing};

/// Who owns what is unpacked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Owner {
    /// The numeric owners the archive records (`cp -a`).
    Keep,
    /// This user and group.
    Set(u32, u32),
    /// Whoever unpacks.
    #[default]
    Unpacker,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UnpackOptions {
    pub owner: Owner,
    /// The name the archive's one top-level entry must have: a copy out
    /// asked for one path, and the other side may not pick another
    /// (`None`: the first entry's name is the top).
    pub top: Option<String>,
}

/// Unpacks `input` at `dest`; returns the number of entries written.
pub fn unpack<R: Read>(input: R, dest: &Path, options: UnpackOptions) -> Result<u64, CopyError> {
    let landing = Landing::decide(dest)?;
    let mut archive = tar::Archive::new(input);
    archive.set_preserve_permissions(true);
    // Set-id bits are the archive's to give only with `-a`.
    let mask = if options.owner == Owner::Keep {
        0
    } else {
        0o6000
    };
    archive.set_mask(mask);
    archive.set_preserve_mtime(true);
    archive.set_preserve_ownerships(options.owner == Owner::Keep);
    archive.set_overwrite(true);
    let bad = |message: String| CopyError::BadArchive(message);
    let mut top: Option<String> = options.top.clone();
    let mut first_entry = true;
    let mut written = 0u64;
    let mut locked_dirs: Vec<(PathBuf, u32)> = Vec::new();
    let entries = archive
        .entries()
        .map_err(|e| bad(format!("not a tar stream: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| bad(format!("not a tar stream: {e}")))?;
        let path = entry
            .path()
            .map_err(|e| bad(format!("an entry's name: {e}")))?
            .into_owned();
        let mut parts = Vec::new();
        for part in path.components() {
            match part {
                Component::Normal(p) => parts.push(p.to_os_string()),
                Component::CurDir => {}
                _ => return Err(bad(format!("{} leaves the copied tree", path.display()))),
            }
        }
        let Some(first) = parts.first().map(|p| p.to_string_lossy().into_owned()) else {
            continue;
        };
        let kind = entry.header().entry_type();
        match &top {
            Some(top) if *top != first => {
                return Err(bad(format!("{} is outside {top}", path.display())));
            }
            Some(_) => {}
            None => top = Some(first.clone()),
        }
        if std::mem::take(&mut first_entry) && landing.onto_file && kind.is_dir() {
            return Err(CopyError::DirectoryOntoFile(dest.display().to_string()));
        }
        if !(kind.is_file() || kind.is_dir() || kind.is_symlink() || kind.is_fifo()) {
            return Err(bad(format!(
                "{}: hard links and devices are not copied",
                path.display()
            )));
        }
        let mut rel = PathBuf::from(landing.rename.as_deref().unwrap_or(&first));
        rel.extend(&parts[1..]);
        let target = real_parents(&landing.dir, &rel)?;
        entry
            .unpack(&target)
            .map_err(|e| CopyError::Io(target.display().to_string(), e))?;
        written += 1;
        let mode = entry.header().mode().unwrap_or(0o644) & !mask;
        if let Owner::Set(uid, gid) = options.owner {
            nix::unistd::fchownat(
                None,
                &target,
                Some(uid.into()),
                Some(gid.into()),
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .map_err(|e| CopyError::Io(target.display().to_string(), e.into()))?;
        }
        if kind.is_dir() && mode & 0o700 != 0o700 {
            set_mode(&target, mode | 0o700)?;
            locked_dirs.push((target, mode));
        }
    }
    if first_entry {
        return Err(bad("it holds nothing".into()));
    }
    for (dir, mode) in locked_dirs.into_iter().rev() {
        set_mode(&dir, mode)?;
    }
    Ok(written)
}

fn set_mode(path: &Path, mode: u32) -> Result<(), CopyError> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & 0o7777))
        .map_err(|e| CopyError::io(path, e))
}

/// `base/rel` once every directory between them is a real directory
/// (missing ones are made, 0755): a link on the way is refused.
fn real_parents(base: &Path, rel: &Path) -> Result<PathBuf, CopyError> {
    let mut at = base.to_path_buf();
    let parts: Vec<_> = rel.components().collect();
    for part in &parts[..parts.len().saturating_sub(1)] {
        at.push(part);
        match std::fs::symlink_metadata(&at) {
            Ok(meta) if meta.is_dir() => {}
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(CopyError::BadArchive(format!(
                    "{} is a link: nothing is written through it",
                    at.display()
                )))
            }
            Ok(_) => return Err(CopyError::NotADirectory(at.display().to_string())),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir(&at).map_err(|e| CopyError::io(&at, e))?;
            }
            Err(err) => return Err(CopyError::io(&at, err)),
        }
    }
    Ok(base.join(rel))
}
