//! Digests and manifests: the sha256 of artifact files (streamed through a
//! large buffer), `manifest.json` written atomically and read back, the
//! manifest's own rules (known file names, no role twice, a kernel and a
//! rootfs, a format this build reads), and the check that a directory holds
//! exactly what its manifest says. Everything here blocks: async callers
//! run it through `tokio::task::spawn_blocking` (or use `verify_async`).

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use banger_proto::image::{Artifact, ArtifactRole, Manifest, MANIFEST_FORMAT, MAX_LAYERS};
use sha2::{Digest, Sha256};

/// File name of the manifest in an image directory and in a bundle.
pub const MANIFEST_FILE: &str = "manifest.json";

#[derive(Debug, thiserror::Error)]
pub enum DigestError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: String, source: io::Error },
    #[error("bad manifest {path}: {message}")]
    Manifest { path: String, message: String },
    #[error("manifest format {found} is newer than this banger reads ({known}): upgrade banger")]
    TooNew { found: u64, known: u32 },
    /// An artifact that is not what the manifest says (missing, size,
    /// digest, not a regular file).
    #[error("{file}: {message}")]
    Mismatch { file: String, message: String },
    #[error("digest worker failed: {0}")]
    Worker(String),
}

/// Read size for hashing: big enough that a 1 GiB rootfs is a thousand
/// reads, not a hundred thousand.
pub const BUFFER: usize = 1 << 20;

/// Lowercase hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    out
}

/// Whether `text` is a sha256 in hex (64 hex digits, either case).
pub fn is_sha256_hex(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Byte count and lowercase hex sha256 of everything `reader` yields.
pub fn sha256_reader(mut reader: impl Read) -> io::Result<(u64, String)> {
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; BUFFER];
    let mut bytes = 0u64;
    loop {
        let n = match reader.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buffer[..n]);
        bytes += n as u64;
    }
    Ok((bytes, hex(&hasher.finalize())))
}

fn read_err(path: &Path) -> impl Fn(io::Error) -> DigestError + '_ {
    move |source| DigestError::Read {
        path: path.display().to_string(),
        source,
    }
}

/// Byte count and lowercase hex sha256 of a file.
pub fn sha256_file_len(path: &Path) -> Result<(u64, String), DigestError> {
    let file = File::open(path).map_err(read_err(path))?;
    sha256_reader(file).map_err(read_err(path))
}

/// Lowercase hex sha256 of a file.
pub fn sha256_file(path: &Path) -> Result<String, DigestError> {
    Ok(sha256_file_len(path)?.1)
}

/// The artifact entry of `dir/<role's file>`: its size and digest (the
/// size is what was hashed, so the two always agree).
pub fn describe(dir: &Path, role: ArtifactRole) -> Result<Artifact, DigestError> {
    describe_file(dir, role, role.file_name())
}

/// The artifact entry of `dir/file` in `role` (a layer's `layer-N.ext4`).
pub fn describe_file(dir: &Path, role: ArtifactRole, file: &str) -> Result<Artifact, DigestError> {
    let path = dir.join(file);
    let meta = std::fs::metadata(&path).map_err(read_err(&path))?;
    if !meta.is_file() {
        return Err(DigestError::Mismatch {
            file: file.into(),
            message: "not a regular file".into(),
        });
    }
    let (bytes, sha256) = sha256_file_len(&path)?;
    Ok(Artifact {
        role,
        file: file.to_string(),
        bytes,
        sha256,
    })
}

/// Writes `dir/manifest.json` (pretty JSON) through a temporary file and a
/// rename, so a reader never sees half of it.
pub fn write_manifest(dir: &Path, manifest: &Manifest) -> Result<(), DigestError> {
    let path = dir.join(MANIFEST_FILE);
    let tmp = dir.join(format!(".{MANIFEST_FILE}.{}.tmp", std::process::id()));
    let write_err = |source| DigestError::Write {
        path: path.display().to_string(),
        source,
    };
    let mut text = serde_json::to_vec_pretty(manifest).map_err(|e| write_err(e.into()))?;
    text.push(b'\n');
    let result = (|| {
        let mut file = File::create(&tmp)?;
        file.write_all(&text)?;
        file.sync_all()?;
        std::fs::rename(&tmp, &path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(write_err(e));
    }
    Ok(())
}

/// Parses manifest text, refusing a format newer than this build's before
/// anything else (a newer writer may have added fields this one refuses).
/// `origin` names the text in errors.
pub fn parse_manifest(text: &[u8], origin: &Path) -> Result<Manifest, DigestError> {
    let bad = |e: serde_json::Error| DigestError::Manifest {
        path: origin.display().to_string(),
        message: e.to_string(),
    };
    let value: serde_json::Value = serde_json::from_slice(text).map_err(bad)?;
    if let Some(found) = value.get("format").and_then(|f| f.as_u64()) {
        if found > u64::from(MANIFEST_FORMAT) {
            return Err(DigestError::TooNew {
                found,
                known: MANIFEST_FORMAT,
            });
        }
    }
    serde_json::from_value(value).map_err(bad)
}

/// Reads `dir/manifest.json`. Only parses it: `verify` checks it.
pub fn read_manifest(dir: &Path) -> Result<Manifest, DigestError> {
    let path = dir.join(MANIFEST_FILE);
    let text = std::fs::read(&path).map_err(read_err(&path))?;
    parse_manifest(&text, &path)
}

/// The manifest's own rules: a format this build reads, every file named
/// after its role (layers `layer-N.ext4`, bottom first), no other role
/// twice, well-formed digests, a kernel and a rootfs.
pub fn check_manifest(manifest: &Manifest) -> Result<(), DigestError> {
    let bad = |message: String| DigestError::Manifest {
        path: MANIFEST_FILE.into(),
        message,
    };
    if manifest.format > MANIFEST_FORMAT {
        return Err(DigestError::TooNew {
            found: u64::from(manifest.format),
            known: MANIFEST_FORMAT,
        });
    }
    let mut seen = HashSet::new();
    let mut layers = 0;
    for artifact in &manifest.artifacts {
        // Layers are numbered bottom first, in the order they are listed.
        if artifact.role == ArtifactRole::Layer {
            if artifact.file != ArtifactRole::layer_file(layers) {
                return Err(bad(format!(
                    "layer {:?} must be named {}",
                    artifact.file,
                    ArtifactRole::layer_file(layers)
                )));
            }
            layers += 1;
            if layers > MAX_LAYERS {
                return Err(bad(format!("more than {MAX_LAYERS} layers")));
            }
            if !is_sha256_hex(&artifact.sha256) {
                return Err(bad(format!("{} has a malformed sha256", artifact.file)));
            }
            continue;
        }
        if artifact.file != artifact.role.file_name() {
            return Err(bad(format!(
                "artifact {:?} must be named {}",
                artifact.file,
                artifact.role.file_name()
            )));
        }
        if !seen.insert(artifact.role) {
            return Err(bad(format!("{} is listed twice", artifact.file)));
        }
        if !is_sha256_hex(&artifact.sha256) {
            return Err(bad(format!("{} has a malformed sha256", artifact.file)));
        }
    }
    for required in [ArtifactRole::Kernel, ArtifactRole::Rootfs] {
        if !seen.contains(&required) {
            return Err(bad(format!("no {} artifact", required.file_name())));
        }
    }
    Ok(())
}

/// Checks the manifest's rules, then that `dir` holds every artifact of
/// `manifest` as a regular file with its exact size and digest. Files the
/// manifest does not list are not looked at.
pub fn verify(dir: &Path, manifest: &Manifest) -> Result<(), DigestError> {
    check_manifest(manifest)?;
    for artifact in &manifest.artifacts {
        let path: PathBuf = dir.join(&artifact.file);
        let mismatch = |message: String| DigestError::Mismatch {
            file: artifact.file.clone(),
            message,
        };
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(mismatch("missing".into()))
            }
            Err(e) => return Err(read_err(&path)(e)),
        };
        if !meta.is_file() {
            return Err(mismatch("not a regular file".into()));
        }
        if meta.len() != artifact.bytes {
            return Err(mismatch(format!(
                "{} bytes, the manifest says {}",
                meta.len(),
                artifact.bytes
            )));
        }
        let (bytes, got) = sha256_file_len(&path)?;
        if bytes != artifact.bytes {
            return Err(mismatch(format!(
                "{bytes} bytes, the manifest says {}",
                artifact.bytes
            )));
        }
        if !got.eq_ignore_ascii_case(&artifact.sha256) {
            return Err(mismatch(format!(
                "sha256 mismatch: expected {}, got {got}",
                artifact.sha256
            )));
        }
    }
    Ok(())
}

/// `verify` on the blocking pool.
pub async fn verify_async(dir: &Path, manifest: &Manifest) -> Result<(), DigestError> {
    let (dir, manifest) = (dir.to_path_buf(), manifest.clone());
    tokio::task::spawn_blocking(move || verify(&dir, &manifest))
        .await
        .map_err(|e| DigestError::Worker(e.to_string()))?
}

/// `sha256_file` on the blocking pool.
pub async fn sha256_file_async(path: &Path) -> Result<String, DigestError> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || sha256_file(&path))
        .await
        .map_err(|e| DigestError::Worker(e.to_string()))?
}

#[cfg(test)]
mod tests {
    use banger_proto::image::Origin;

    use super::*;

    fn manifest(dir: &Path) -> Manifest {
        std::fs::write(dir.join("kernel"), b"kernel bytes").unwrap();
        std::fs::write(dir.join("rootfs.ext4"), b"rootfs bytes").unwrap();
        Manifest {
            format: MANIFEST_FORMAT,
            name: "t".into(),
            kernel_version: None,
            oci: None,
            sshd: None,
            lineage: Vec::new(),
            origin: Origin {
                method: "register".into(),
                from: "test".into(),
                packages: vec![],
                banger_version: "0".into(),
                made_at: "1970-01-01T00:00:00Z".into(),
            },
            artifacts: vec![
                describe(dir, ArtifactRole::Kernel).unwrap(),
                describe(dir, ArtifactRole::Rootfs).unwrap(),
            ],
        }
    }

    #[test]
    fn known_digest() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), b"abc").unwrap();
        assert_eq!(
            sha256_file_len(&dir.path().join("f")).unwrap(),
            (
                3,
                "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad".into()
            )
        );
        assert_eq!(hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
    }

    #[test]
    fn a_manifest_round_trips_and_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let m = manifest(dir.path());
        write_manifest(dir.path(), &m).unwrap();
        assert_eq!(read_manifest(dir.path()).unwrap(), m);
        verify(dir.path(), &m).unwrap();
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(!names.iter().any(|n| n.ends_with(".tmp")), "{names:?}");
    }

    #[test]
    fn changed_missing_and_misnamed_artifacts_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let m = manifest(dir.path());
        std::fs::write(dir.path().join("rootfs.ext4"), b"rootfs bytez").unwrap();
        let err = verify(dir.path(), &m).unwrap_err().to_string();
        assert!(err.starts_with("rootfs.ext4: sha256 mismatch"), "{err}");
        std::fs::write(dir.path().join("rootfs.ext4"), b"rootfs").unwrap();
        let err = verify(dir.path(), &m).unwrap_err().to_string();
        assert_eq!(err, "rootfs.ext4: 6 bytes, the manifest says 12");
        std::fs::remove_file(dir.path().join("rootfs.ext4")).unwrap();
        assert_eq!(
            verify(dir.path(), &m).unwrap_err().to_string(),
            "rootfs.ext4: missing"
        );
        let mut renamed = manifest(dir.path());
        renamed.artifacts[0].file = "../kernel".into();
        assert!(verify(dir.path(), &renamed)
            .unwrap_err()
            .to_string()
            .contains("must be named kernel"));
        let mut twice = manifest(dir.path());
        twice.artifacts.push(twice.artifacts[0].clone());
        assert!(verify(dir.path(), &twice)
            .unwrap_err()
            .to_string()
            .contains("twice"));
        let mut no_rootfs = manifest(dir.path());
        no_rootfs.artifacts.pop();
        assert!(verify(dir.path(), &no_rootfs)
            .unwrap_err()
            .to_string()
            .contains("no rootfs.ext4"));
        let mut no_kernel = manifest(dir.path());
        no_kernel.artifacts.remove(0);
        assert!(verify(dir.path(), &no_kernel)
            .unwrap_err()
            .to_string()
            .contains("no kernel"));
    }

    #[test]
    fn a_symlinked_artifact_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let m = manifest(dir.path());
        let real = dir.path().join("real");
        std::fs::rename(dir.path().join("kernel"), &real).unwrap();
        std::os::unix::fs::symlink(&real, dir.path().join("kernel")).unwrap();
        assert_eq!(
            verify(dir.path(), &m).unwrap_err().to_string(),
            "kernel: not a regular file"
        );
    }

    #[test]
    fn a_newer_format_is_refused_with_advice() {
        let text = br#"{"format": 99, "name": "x"}"#;
        let err = parse_manifest(text, Path::new("m"))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "manifest format 99 is newer than this banger reads (1): upgrade banger"
        );
        let dir = tempfile::tempdir().unwrap();
        let mut m = manifest(dir.path());
        m.format = MANIFEST_FORMAT + 1;
        assert!(verify(dir.path(), &m)
            .unwrap_err()
            .to_string()
            .contains("upgrade banger"));
    }
}
