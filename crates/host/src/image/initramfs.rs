//! The initramfs banger boots with: a gzip-compressed newc cpio holding
//! `/init` (the guest binary), the kernel modules the guest needs before
//! its root is mounted under `/lib/modules/<version>/`, and
//! `/etc/banger/modules`, the list of those files in load order that the
//! guest init reads: groups separated by a blank line, each loaded
//! concurrently (a reader that skips blank lines still gets a valid
//! order).

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use flate2::write::GzEncoder;
use flate2::Compression;

#[derive(Debug, thiserror::Error)]
pub enum InitramfsError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: String, source: io::Error },
    #[error("module {0} is compressed in a way banger cannot unpack")]
    Compressed(String),
}

/// Where the module list lives inside the initramfs.
pub const MODULE_LIST: &str = "etc/banger/modules";

/// What goes into the initramfs.
#[derive(Debug, Clone)]
pub struct InitramfsSpec {
    /// The static guest binary, installed as `/init`.
    pub init: PathBuf,
    /// Kernel release (`uname -r`).
    pub version: String,
    /// The `lib/modules/<version>` directory the modules come from.
    pub modules_dir: PathBuf,
    /// Module files relative to `modules_dir`, in groups that load at
    /// the same time, in load order (`modules::groups`).
    pub modules: Vec<Vec<PathBuf>>,
}

fn read(path: &Path) -> Result<Vec<u8>, InitramfsError> {
    std::fs::read(path).map_err(|source| InitramfsError::Read {
        path: path.display().to_string(),
        source,
    })
}

/// A module, compressed or not, is at most this large.
const MAX_MODULE_BYTES: u64 = 256 << 20;

/// A module file's bytes: a regular file under `dir`, opened without
/// following a link at its name, read up to `MAX_MODULE_BYTES`.
fn read_module(dir: &Path, relative: &Path) -> Result<Vec<u8>, InitramfsError> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(relative);
    let failed = |source| InitramfsError::Read {
        path: path.display().to_string(),
        source,
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(&path)
        .map_err(failed)?;
    if !file.metadata().map_err(failed)?.is_file() {
        return Err(failed(io::Error::other("not a regular file")));
    }
    bounded(file, &path.display().to_string())
}

/// All of `input`, refused past `MAX_MODULE_BYTES` (a module that
/// decompresses without end is refused, not held).
fn bounded(input: impl Read, shown: &str) -> Result<Vec<u8>, InitramfsError> {
    let mut bytes = Vec::new();
    input
        .take(MAX_MODULE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| InitramfsError::Read {
            path: shown.to_string(),
            source,
        })?;
    if bytes.len() as u64 > MAX_MODULE_BYTES {
        return Err(InitramfsError::Read {
            path: shown.to_string(),
            source: io::Error::other(format!("larger than {MAX_MODULE_BYTES} bytes")),
        });
    }
    Ok(bytes)
}

/// A module's bytes, uncompressed, and its name inside the initramfs.
fn module_bytes(dir: &Path, relative: &Path) -> Result<(String, Vec<u8>), InitramfsError> {
    let shown = relative.display().to_string();
    let raw = read_module(dir, relative)?;
    let file = relative
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    if let Some(stem) = file.strip_suffix(".zst") {
        let decoder =
            zstd::stream::Decoder::new(&raw[..]).map_err(|source| InitramfsError::Read {
                path: shown.clone(),
                source,
            })?;
        return Ok((stem.to_string(), bounded(decoder, &shown)?));
    }
    if let Some(stem) = file.strip_suffix(".gz") {
        let decoder = flate2::read::GzDecoder::new(&raw[..]);
        return Ok((stem.to_string(), bounded(decoder, &shown)?));
    }
    if !file.ends_with(".ko") {
        return Err(InitramfsError::Compressed(shown));
    }
    Ok((file, raw))
}

fn entry(
    out: &mut impl Write,
    name: &str,
    mode: u32,
    ino: &mut u32,
    data: &[u8],
) -> io::Result<()> {
    *ino += 1;
    let mut writer = cpio::newc::Builder::new(name)
        .ino(*ino)
        .mode(mode)
        .uid(0)
        .gid(0)
        .nlink(if mode & 0o040000 != 0 { 2 } else { 1 })
        .write(out, data.len() as u32);
    writer.write_all(data)?;
    writer.finish()?;
    Ok(())
}

/// Writes the initramfs to `out`; returns the module names in load order.
pub fn write(spec: &InitramfsSpec, out: &Path) -> Result<Vec<String>, InitramfsError> {
    let write_err = |source| InitramfsError::Write {
        path: out.display().to_string(),
        source,
    };
    let init = read(&spec.init)?;
    let mut modules = Vec::new();
    for (group, files) in spec.modules.iter().enumerate() {
        for relative in files {
            modules.push((group, module_bytes(&spec.modules_dir, relative)?));
        }
    }
    let file = File::create(out).map_err(write_err)?;
    let mut gz = GzEncoder::new(BufWriter::new(file), Compression::fast());
    let mut ino = 0;
    let dir_mode = 0o040755;
    let module_dir = format!("lib/modules/{}", spec.version);
    let mut dirs = vec![
        "dev".to_string(),
        "proc".into(),
        "sys".into(),
        "run".into(),
        "mnt".into(),
        "etc".into(),
        "etc/banger".into(),
        "lib".into(),
        "lib/modules".into(),
    ];
    dirs.push(module_dir.clone());
    for dir in &dirs {
        entry(&mut gz, dir, dir_mode, &mut ino, &[]).map_err(write_err)?;
    }
    entry(&mut gz, "init", 0o100755, &mut ino, &init).map_err(write_err)?;
    let mut list = String::new();
    let mut names = Vec::new();
    let mut last_group = 0;
    for (group, (file, bytes)) in &modules {
        // A blank line starts the next group.
        if *group != last_group {
            list.push('\n');
            last_group = *group;
        }
        let path = format!("{module_dir}/{file}");
        entry(&mut gz, &path, 0o100644, &mut ino, bytes).map_err(write_err)?;
        list.push('/');
        list.push_str(&path);
        list.push('\n');
        names.push(file.trim_end_matches(".ko").to_string());
    }
    entry(&mut gz, MODULE_LIST, 0o100644, &mut ino, list.as_bytes()).map_err(write_err)?;
    cpio::newc::trailer(&mut gz).map_err(write_err)?;
    let mut inner = gz.finish().map_err(write_err)?;
    inner.flush().map_err(write_err)?;
    inner
        .into_inner()
        .map_err(|e| write_err(e.into_error()))?
        .sync_all()
        .map_err(write_err)?;
    Ok(names)
}

/// Names and contents of the files in an initramfs written by `write`
/// (for tests and `doctor`-style checks).
pub fn list(path: &Path) -> Result<Vec<(String, Vec<u8>)>, InitramfsError> {
    let raw = read(path)?;
    let mut reader: Box<dyn Read> = Box::new(flate2::read::GzDecoder::new(&raw[..]));
    let mut files = Vec::new();
    loop {
        let mut entry = cpio::NewcReader::new(reader).map_err(|source| InitramfsError::Read {
            path: path.display().to_string(),
            source,
        })?;
        if entry.entry().is_trailer() {
            break;
        }
        let name = entry.entry().name().to_string();
        let mut data = Vec::new();
        entry
            .read_to_end(&mut data)
            .map_err(|source| InitramfsError::Read {
                path: path.display().to_string(),
                source,
            })?;
        files.push((name, data));
        reader = Box::new(entry.finish().map_err(|source| InitramfsError::Read {
            path: path.display().to_string(),
            source,
        })?);
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_init_modules_and_their_list() {
        let dir = tempfile::tempdir().unwrap();
        let modules_dir = dir.path().join("lib/modules/6.1.0-test");
        std::fs::create_dir_all(modules_dir.join("kernel/a")).unwrap();
        std::fs::write(modules_dir.join("kernel/a/one.ko"), b"module one").unwrap();
        let zst = zstd::stream::encode_all(&b"module two"[..], 3).unwrap();
        std::fs::write(modules_dir.join("kernel/a/two.ko.zst"), zst).unwrap();
        let init = dir.path().join("guest");
        std::fs::write(&init, b"\x7fELF guest").unwrap();
        let spec = InitramfsSpec {
            init,
            version: "6.1.0-test".into(),
            modules_dir,
            modules: vec![
                vec!["kernel/a/one.ko".into()],
                vec!["kernel/a/two.ko.zst".into()],
            ],
        };
        let out = dir.path().join("initrd");
        assert_eq!(write(&spec, &out).unwrap(), ["one", "two"]);
        let files = list(&out).unwrap();
        let get = |name: &str| {
            files
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, d)| d.clone())
        };
        assert_eq!(get("init").unwrap(), b"\x7fELF guest");
        assert_eq!(get("lib/modules/6.1.0-test/two.ko").unwrap(), b"module two");
        assert_eq!(
            String::from_utf8(get(MODULE_LIST).unwrap()).unwrap(),
            "/lib/modules/6.1.0-test/one.ko\n\n/lib/modules/6.1.0-test/two.ko\n"
        );
        assert!(get("dev").is_some() && get("proc").is_some());
    }
}
