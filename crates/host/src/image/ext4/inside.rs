//! Reading an untrusted ext4 image inside itself. Every path, and every
//! symbolic link on it, is resolved within the image by an in-process
//! read-only parser (`ext4-view`, written for untrusted images), never by
//! the host's filesystem: no byte of an image is followed on the host.
//!
//! What comes out onto the host is only what banger makes itself, in a
//! directory that did not exist: directories, regular files and (when
//! asked) links written as links, each name a single component created
//! exclusively (`O_EXCL`, `O_NOFOLLOW`), so two entries of one name are
//! refused instead of the second writing through the first. Owners are
//! kept, set-id bits dropped, devices, pipes and sockets left out. Every
//! copy is bounded: its bytes by the image's own size (hard links and
//! links resolved to one file cannot multiply it), its entries and depth
//! by constants.

use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ext4_view::{Ext4, Ext4Error as ViewError, FileType, Metadata};

/// Entries one copy may make.
pub const MAX_ENTRIES: u64 = 1 << 20;
/// Directories one copy may descend.
pub const MAX_DEPTH: usize = 128;

#[derive(Debug, thiserror::Error)]
pub enum InsideError {
    #[error("{image} is not an ext4 image banger can read: {detail}")]
    Open { image: String, detail: String },
    #[error("cannot read {path} inside the image: {detail}")]
    Read { path: String, detail: String },
    /// The image holds what no honest filesystem does, or more than a
    /// copy may take.
    #[error("the image is refused: {0}")]
    Refused(String),
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: String,
        source: io::Error,
    },
}

/// What a tree copy does with a symbolic link it meets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Links {
    /// Writes it as a link with the same target (for a tree that goes
    /// back into a guest filesystem, where the guest resolves it).
    Keep,
    /// Resolves it inside the image: a link to a regular file becomes a
    /// copy of that file, any other link is left out (for a tree the
    /// host reads, such as kernel modules).
    Resolve,
}

/// An ext4 image opened for reading.
pub struct Ext4Image {
    fs: Ext4,
    /// The image file's length: no copy out of it may write more.
    size: u64,
}

impl std::fmt::Debug for Ext4Image {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ext4Image")
            .field("size", &self.size)
            .finish()
    }
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> InsideError + 'a {
    move |source| InsideError::Io {
        action,
        path: path.display().to_string(),
        source,
    }
}

fn read_err(path: impl std::fmt::Display) -> impl FnOnce(ViewError) -> InsideError {
    move |err| InsideError::Read {
        path: path.to_string(),
        detail: err.to_string(),
    }
}

fn is_missing(err: &ViewError) -> bool {
    matches!(err, ViewError::NotFound)
}

/// Where a copy stands against its bounds, and its buffer.
struct Budget {
    bytes: u64,
    entries: u64,
    buffer: Vec<u8>,
}

impl Budget {
    fn new(bytes: u64) -> Self {
        Budget {
            bytes,
            entries: 0,
            buffer: vec![0u8; 256 << 10],
        }
    }
}

impl Budget {
    fn entry(&mut self) -> Result<(), InsideError> {
        self.entries += 1;
        if self.entries > MAX_ENTRIES {
            return Err(InsideError::Refused(format!(
                "it holds more than {MAX_ENTRIES} entries to copy"
            )));
        }
        Ok(())
    }
}

impl Ext4Image {
    pub fn open(image: &Path) -> Result<Self, InsideError> {
        let file = File::open(image).map_err(io_err("open", image))?;
        let size = file.metadata().map_err(io_err("read", image))?.len();
        claims_fit(&file, size).map_err(|detail| InsideError::Open {
            image: image.display().to_string(),
            detail,
        })?;
        let fs = Ext4::load(Box::new(file)).map_err(|err| InsideError::Open {
            image: image.display().to_string(),
            detail: err.to_string(),
        })?;
        Ok(Ext4Image { fs, size })
    }

    /// Whether `path` names something, links followed inside the image.
    pub fn exists(&self, path: &str) -> Result<bool, InsideError> {
        match self.fs.metadata(path) {
            Ok(_) => Ok(true),
            Err(err) if is_missing(&err) || matches!(err, ViewError::NotADirectory) => Ok(false),
            Err(err) => Err(read_err(path)(err)),
        }
    }

    /// The names in directory `dir` (links on its path followed inside
    /// the image) whose own type is `kind`, sorted; none when `dir` is
    /// missing. Names that are not UTF-8 are left out.
    pub fn names(&self, dir: &str, kind: FileType) -> Result<Vec<String>, InsideError> {
        let entries = match self.fs.read_dir(dir) {
            Ok(entries) => entries,
            Err(err) if is_missing(&err) || matches!(err, ViewError::NotADirectory) => {
                return Ok(Vec::new())
            }
            Err(err) => return Err(read_err(dir)(err)),
        };
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(read_err(dir))?;
            let Ok(name) = entry.file_name().as_str().map(str::to_string) else {
                continue;
            };
            if name == "." || name == ".." {
                continue;
            }
            if entry.file_type().map_err(read_err(dir))? == kind {
                names.push(name);
            }
            if names.len() as u64 > MAX_ENTRIES {
                return Err(InsideError::Refused(format!(
                    "{dir} holds more than {MAX_ENTRIES} entries"
                )));
            }
        }
        names.sort();
        Ok(names)
    }

    /// Copies the regular file `inside` (links followed inside the
    /// image) to `out`, a new file, refusing one of more than `max` bytes.
    pub fn copy_file(&self, inside: &str, out: &Path, max: u64) -> Result<u64, InsideError> {
        let meta = self.fs.metadata(inside).map_err(read_err(inside))?;
        if !meta.file_type().is_regular_file() {
            return Err(InsideError::Refused(format!(
                "{inside} is not a regular file"
            )));
        }
        if meta.len() > max {
            return Err(InsideError::Refused(format!(
                "{inside} is larger than {max} bytes"
            )));
        }
        let mut budget = Budget::new(max);
        self.write_file(inside, &meta, out, &mut budget)?;
        Ok(meta.len())
    }

    /// Copies directory `inside` (links on its path followed inside the
    /// image) to `out`, which must not exist; an image without it gives
    /// an empty directory. Returns the entries made.
    pub fn copy_tree(&self, inside: &str, out: &Path, links: Links) -> Result<u64, InsideError> {
        let top = match self.fs.canonicalize(inside) {
            Ok(top) => Some(top),
            Err(err) if is_missing(&err) => None,
            Err(err) => return Err(read_err(inside)(err)),
        };
        let top = match top {
            Some(top) if self.fs.metadata(&top).map_err(read_err(inside))?.is_dir() => top,
            Some(_) => return Err(InsideError::Refused(format!("{inside} is not a directory"))),
            None => {
                make_dir(out)?;
                return Ok(0);
            }
        };
        let mut budget = Budget::new(self.size);
        make_dir(out)?;
        // Directories get their modes once filled, deepest first.
        let mut dirs: Vec<(PathBuf, Metadata)> = Vec::new();
        let mut stack = vec![(top, out.to_path_buf(), 0usize)];
        while let Some((dir, host_dir, depth)) = stack.pop() {
            let shown = dir.display().to_string();
            let mut seen = std::collections::HashSet::new();
            for entry in self.fs.read_dir(&dir).map_err(read_err(&shown))? {
                let entry = entry.map_err(read_err(&shown))?;
                let name = entry.file_name();
                if name == "." || name == ".." {
                    continue;
                }
                budget.entry()?;
                // A path names one entry: a second of the same name would
                // be read (and written) through the first.
                if !seen.insert(name.as_ref().to_vec()) {
                    return Err(InsideError::Refused(format!(
                        "it holds two entries named {} in {shown}",
                        name.display()
                    )));
                }
                let host = host_dir.join(OsStr::from_bytes(name.as_ref()));
                let path = entry.path();
                let meta = entry.metadata().map_err(read_err(path.display()))?;
                let taken = || {
                    InsideError::Refused(format!(
                        "it holds two entries named {} in {shown}",
                        name.display()
                    ))
                };
                let kind = meta.file_type();
                if kind.is_dir() {
                    if depth + 1 > MAX_DEPTH {
                        return Err(InsideError::Refused(format!(
                            "{} is more than {MAX_DEPTH} directories deep",
                            path.display()
                        )));
                    }
                    make_dir(&host).map_err(|e| if exists_error(&e) { taken() } else { e })?;
                    dirs.push((host.clone(), meta));
                    stack.push((path, host, depth + 1));
                } else if kind.is_regular_file() {
                    let shown_path = path.display().to_string();
                    self.write_file(&shown_path, &meta, &host, &mut budget)
                        .map_err(|e| if exists_error(&e) { taken() } else { e })?;
                } else if kind.is_symlink() {
                    match links {
                        Links::Keep => {
                            let target =
                                self.fs.read_link(&path).map_err(read_err(path.display()))?;
                            std::os::unix::fs::symlink(OsStr::from_bytes(target.as_ref()), &host)
                                .map_err(|e| match e.kind() {
                                io::ErrorKind::AlreadyExists => taken(),
                                _ => io_err("make", &host)(e),
                            })?;
                            chown(&host, &meta)?;
                        }
                        Links::Resolve => {
                            let Ok(target) = self.fs.canonicalize(&path) else {
                                continue;
                            };
                            let Ok(target_meta) = self.fs.metadata(&target) else {
                                continue;
                            };
                            if target_meta.file_type().is_regular_file() {
                                let shown_target = target.display().to_string();
                                self.write_file(&shown_target, &target_meta, &host, &mut budget)
                                    .map_err(|e| if exists_error(&e) { taken() } else { e })?;
                            }
                        }
                    }
                }
                // Devices, pipes and sockets are not made on the host.
            }
        }
        for (host, meta) in dirs.into_iter().rev() {
            chown(&host, &meta)?;
            set_mode(&host, meta.mode())?;
        }
        Ok(budget.entries)
    }

    /// Writes the regular file at `inside` to the new file `out`.
    fn write_file(
        &self,
        inside: &str,
        meta: &Metadata,
        out: &Path,
        budget: &mut Budget,
    ) -> Result<(), InsideError> {
        let mut source = self.fs.open(inside).map_err(read_err(inside))?;
        if !source.metadata().file_type().is_regular_file() {
            return Err(InsideError::Refused(format!(
                "{inside} changed type while it was read"
            )));
        }
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(out)
            .map_err(io_err("create", out))?;
        loop {
            let n = source
                .read(&mut budget.buffer)
                .map_err(|e| InsideError::Read {
                    path: inside.to_string(),
                    detail: e.to_string(),
                })?;
            if n == 0 {
                break;
            }
            budget.bytes = budget.bytes.checked_sub(n as u64).ok_or_else(|| {
                InsideError::Refused(format!(
                    "copying {inside} would write more than the image holds"
                ))
            })?;
            file.write_all(&budget.buffer[..n])
                .map_err(io_err("write", out))?;
        }
        std::os::unix::fs::fchown(&file, Some(meta.uid()), Some(meta.gid()))
            .map_err(io_err("chown", out))?;
        // Set-id bits never leave an image.
        file.set_permissions(std::fs::Permissions::from_mode(
            u32::from(meta.mode()) & 0o1777,
        ))
        .map_err(io_err("chmod", out))?;
        Ok(())
    }
}

/// Refuses a superblock whose sizes claim more than the file holds:
/// `ext4-view` sizes its tables by those claims before it reads them (a
/// fuzzed image asked for 19 GB of block group descriptors), so they
/// are bounded here first. Only these fields are read (offsets in the
/// superblock, which starts at byte 1024): blocks count (low at 0x04,
/// high at 0x150 with the 64-bit feature), log block size (0x18), blocks
/// per group (0x20), incompatible features (0x60), descriptor size (0xfe).
fn claims_fit(file: &File, size: u64) -> Result<(), String> {
    use std::os::unix::fs::FileExt;
    let mut block = [0u8; 1024];
    file.read_exact_at(&mut block, 1024)
        .map_err(|_| "it is too small to hold a superblock".to_string())?;
    let u32_at =
        |at: usize| u32::from_le_bytes([block[at], block[at + 1], block[at + 2], block[at + 3]]);
    let u16_at = |at: usize| u16::from_le_bytes([block[at], block[at + 1]]);
    const INCOMPAT_64BIT: u32 = 0x80;
    let wide = u32_at(0x60) & INCOMPAT_64BIT != 0;
    let blocks = u64::from(u32_at(0x04))
        | if wide {
            u64::from(u32_at(0x150)) << 32
        } else {
            0
        };
    let log = u32_at(0x18);
    if log > 6 {
        return Err(format!(
            "its block size (1024 << {log}) is not one ext4 uses"
        ));
    }
    let block_size = 1024u64 << log;
    let per_group = u64::from(u32_at(0x20));
    if per_group == 0 {
        return Err("it claims no blocks per group".into());
    }
    let claimed = blocks.saturating_mul(block_size);
    if claimed > size {
        return Err(format!(
            "its filesystem claims {claimed} bytes, more than the {size} the file holds"
        ));
    }
    let desc_size = if wide {
        u64::from(u16_at(0xfe)).max(32)
    } else {
        32
    };
    if blocks.div_ceil(per_group).saturating_mul(desc_size) > size {
        return Err("its block group table is larger than the file".into());
    }
    Ok(())
}

fn exists_error(err: &InsideError) -> bool {
    matches!(err, InsideError::Io { source, .. } if source.kind() == io::ErrorKind::AlreadyExists)
}

fn make_dir(path: &Path) -> Result<(), InsideError> {
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(path)
        .map_err(io_err("make", path))
}

fn chown(path: &Path, meta: &Metadata) -> Result<(), InsideError> {
    std::os::unix::fs::lchown(path, Some(meta.uid()), Some(meta.gid()))
        .map_err(io_err("chown", path))
}

fn set_mode(path: &Path, mode: u16) -> Result<(), InsideError> {
    std::fs::set_permissions(
        path,
        std::fs::Permissions::from_mode(u32::from(mode) & 0o1777),
    )
    .map_err(io_err("chmod", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An ext4 image of `tree` (no metadata checksums, so a test can
    /// patch a directory entry as an attacker would).
    fn image_of(tree: &Path, out: &Path) {
        let status = std::process::Command::new("mkfs.ext4")
            .args(["-q", "-F", "-O", "^metadata_csum", "-d"])
            .arg(tree)
            .arg(out)
            .arg("16M")
            .status()
            .expect("mkfs.ext4 runs (apt-get install e2fsprogs)");
        assert!(status.success());
    }

    /// Renames directory entry `from` to `to` (same length) in the image's
    /// bytes: one patched name, as the attacker's one byte.
    fn rename_entry(image: &Path, from: &str, to: &str) {
        let mut bytes = std::fs::read(image).unwrap();
        let at = bytes
            .windows(from.len())
            .position(|w| w == from.as_bytes())
            .unwrap();
        bytes[at..at + to.len()].copy_from_slice(to.as_bytes());
        std::fs::write(image, bytes).unwrap();
    }

    #[test]
    fn a_second_entry_of_one_name_never_writes_through_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        let tree = dir.path().join("tree/lib/modules/6.1.0-evil");
        std::fs::create_dir_all(&tree).unwrap();
        let (link, file) = ("payload-entry-name-1", "payload-entry-name-2");
        std::os::unix::fs::symlink(&victim, tree.join(link)).unwrap();
        std::fs::write(tree.join(file), "* * * * * root sh -c id\n").unwrap();
        let image = dir.path().join("evil.ext4");
        image_of(&dir.path().join("tree"), &image);
        rename_entry(&image, file, link);
        let fs = Ext4Image::open(&image).unwrap();
        let modules = "/lib/modules/6.1.0-evil";
        assert_eq!(fs.names(modules, FileType::Symlink).unwrap(), [link]);
        assert_eq!(fs.names(modules, FileType::Regular).unwrap(), [link]);

        let kept = fs.copy_tree(modules, &dir.path().join("kept"), Links::Keep);
        let err = kept.expect_err("two entries of one name are refused");
        assert_eq!(
            err.to_string(),
            format!("the image is refused: it holds two entries named {link} in {modules}")
        );
        let resolved = fs.copy_tree(modules, &dir.path().join("resolved"), Links::Resolve);
        assert_eq!(resolved.unwrap_err().to_string(), err.to_string());
        assert!(!victim.exists(), "nothing is written through the link");
    }

    #[test]
    fn links_resolve_inside_the_image_and_set_id_bits_stay_behind() {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("tree");
        let kernel = tree.join("lib/modules/6.1.0-test/kernel");
        std::fs::create_dir_all(&kernel).unwrap();
        std::fs::create_dir_all(tree.join("etc")).unwrap();
        std::fs::write(tree.join("etc/shadow"), "the image's own\n").unwrap();
        std::os::unix::fs::symlink("/etc/shadow", kernel.join("a.ko")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", kernel.join("gone.ko")).unwrap();
        std::os::unix::fs::symlink("/etc", kernel.join("dir.ko")).unwrap();
        std::fs::write(kernel.join("b.ko"), "module\n").unwrap();
        std::fs::set_permissions(kernel.join("b.ko"), PermissionsExt::from_mode(0o4755)).unwrap();
        let image = dir.path().join("rootfs.ext4");
        image_of(&tree, &image);
        let fs = Ext4Image::open(&image).unwrap();

        let out = dir.path().join("out");
        fs.copy_tree("/lib/modules/6.1.0-test", &out, Links::Resolve)
            .unwrap();
        let a = out.join("kernel/a.ko");
        assert!(std::fs::symlink_metadata(&a).unwrap().is_file());
        assert_eq!(std::fs::read_to_string(&a).unwrap(), "the image's own\n");
        assert!(!out.join("kernel/gone.ko").exists());
        assert!(std::fs::symlink_metadata(out.join("kernel/dir.ko")).is_err());
        let mode = std::fs::metadata(out.join("kernel/b.ko"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o755);

        let kept = dir.path().join("kept");
        fs.copy_tree("/lib/modules/6.1.0-test", &kept, Links::Keep)
            .unwrap();
        assert_eq!(
            std::fs::read_link(kept.join("kernel/a.ko")).unwrap(),
            Path::new("/etc/shadow")
        );
        // A missing directory is an empty one; a file is not a directory.
        fs.copy_tree("/root", &dir.path().join("empty"), Links::Keep)
            .unwrap();
        assert_eq!(
            std::fs::read_dir(dir.path().join("empty")).unwrap().count(),
            0
        );
        assert!(fs
            .copy_tree("/etc/shadow", &dir.path().join("f"), Links::Keep)
            .is_err());
        fs.copy_file(
            "/lib/modules/6.1.0-test/kernel/a.ko",
            &dir.path().join("k"),
            1 << 20,
        )
        .unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("k")).unwrap(),
            "the image's own\n"
        );
        let big = fs.copy_file("/etc/shadow", &dir.path().join("k2"), 4);
        assert!(big.unwrap_err().to_string().contains("larger than 4 bytes"));
    }

    #[test]
    fn links_to_one_file_cannot_copy_more_than_the_image_holds() {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("tree/m");
        std::fs::create_dir_all(&tree).unwrap();
        // 4 MiB that do not compress, then 8 links to it: 36 MiB out of a
        // 16 MiB image.
        let noise: Vec<u8> = (0..4u32 << 20)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        std::fs::write(tree.join("big.ko"), noise).unwrap();
        for i in 0..8 {
            std::os::unix::fs::symlink("big.ko", tree.join(format!("l{i}.ko"))).unwrap();
        }
        let image = dir.path().join("bomb.ext4");
        image_of(&dir.path().join("tree"), &image);
        let fs = Ext4Image::open(&image).unwrap();
        let err = fs
            .copy_tree("/m", &dir.path().join("out"), Links::Resolve)
            .unwrap_err();
        assert!(
            err.to_string().contains("more than the image holds"),
            "{err}"
        );
    }

    #[test]
    fn what_is_not_ext4_is_refused_in_one_line() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk");
        std::fs::write(&junk, vec![7u8; 8192]).unwrap();
        let err = Ext4Image::open(&junk).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("{} is not an ext4 image", junk.display())),
            "{err}"
        );
        assert!(!err.contains('\n'));
    }
}
