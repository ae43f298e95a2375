//! Digests and manifests: the sha256 of artifact files (streamed, large
//! buffer), `manifest.json` written atomically and read back, and the
//! check that a directory holds exactly what its manifest says.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use banger_proto::image::{Artifact, ArtifactRole, Manifest, MANIFEST_FORMAT};
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
    TooNew { found: u32, known: u32 },
    #[error("{file}: {message}")]
    Mismatch { file: String, message: String },
}

const BUFFER: usize = 1 << 20;

/// Lowercase hex sha256 of a file.
pub fn sha256_file(path: &Path) -> Result<String, DigestError> {
    let read_err = |source| DigestError::Read {
        path: path.display().to_string(),
        source,
    };
    let mut file = File::open(path).map_err(read_err)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; BUFFER];
    loop {
        let n = file.read(&mut buffer).map_err(read_err)?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

/// Lowercase hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The artifact entry of `dir/<role's file>`: its size and digest.
pub fn describe(dir: &Path, role: ArtifactRole) -> Result<Artifact, DigestError> {
    let path = dir.join(role.file_name());
    let bytes = std::fs::metadata(&path)
        .map_err(|source| DigestError::Read {
            path: path.display().to_string(),
            source,
        })?
        .len();
    Ok(Artifact {
        role,
        file: role.file_name().to_string(),
        bytes,
        sha256: sha256_file(&path)?,
    })
}

/// Writes `dir/manifest.json` (pretty JSON) through a temporary file and a
/// rename, so a reader never sees half of it.
pub fn write_manifest(dir: &Path, manifest: &Manifest) -> Result<(), DigestError> {
    let path = dir.join(MANIFEST_FILE);
    let tmp = dir.join(format!(".{MANIFEST_FILE}.tmp"));
    let write_err = |source| DigestError::Write {
        path: path.display().to_string(),
        source,
    };
    let mut text = serde_json::to_vec_pretty(manifest).map_err(|e| write_err(e.into()))?;
    text.push(b'\n');
    let mut file = File::create(&tmp).map_err(write_err)?;
    file.write_all(&text).map_err(write_err)?;
    file.sync_all().map_err(write_err)?;
    std::fs::rename(&tmp, &path).map_err(write_err)?;
    Ok(())
}

/// Parses manifest text, refusing a format newer than this build's.
pub fn parse_manifest(text: &[u8], origin: &Path) -> Result<Manifest, DigestError> {
    let value: serde_json::Value =
        serde_json::from_slice(text).map_err(|e| DigestError::Manifest {
            path: origin.display().to_string(),
            message: e.to_string(),
        })?;
    if let Some(found) = value.get("format").and_then(|f| f.as_u64()) {
        if found > u64::from(MANIFEST_FORMAT) {
            return Err(DigestError::TooNew {
                found: found as u32,
                known: MANIFEST_FORMAT,
            });
        }
    }
    serde_json::from_value(value).map_err(|e| DigestError::Manifest {
        path: origin.display().to_string(),
        message: e.to_string(),
    })
}

/// Reads `dir/manifest.json`.
pub fn read_manifest(dir: &Path) -> Result<Manifest, DigestError> {
    let path = dir.join(MANIFEST_FILE);
    let text = std::fs::read(&path).map_err(|source| DigestError::Read {
        path: path.display().to_string(),
        source,
    })?;
    parse_manifest(&text, &path)
}

/// The manifest's own rules: known file names, no role twice, a kernel
/// and a rootfs.
pub fn check_manifest(manifest: &Manifest) -> Result<(), DigestError> {
    let bad = |message: String| DigestError::Manifest {
        path: MANIFEST_FILE.into(),
        message,
    };
    let mut seen = HashSet::new();
    for artifact in &manifest.artifacts {
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
        if artifact.sha256.len() != 64 || !artifact.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
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

/// Checks that `dir` holds every artifact of `manifest` with its exact
/// size and digest.
pub fn verify(dir: &Path, manifest: &Manifest) -> Result<(), DigestError> {
    check_manifest(manifest)?;
    for artifact in &manifest.artifacts {
        let path: PathBuf = dir.join(&artifact.file);
        let mismatch = |message: String| DigestError::Mismatch {
            file: artifact.file.clone(),
            message,
        };
        let bytes = match std::fs::metadata(&path) {
            Ok(meta) => meta.len(),
            Err(_) => return Err(mismatch("missing".into())),
        };
        if bytes != artifact.bytes {
            return Err(mismatch(format!(
                "{bytes} bytes, the manifest says {}",
                artifact.bytes
            )));
        }
        let got = sha256_file(&path)?;
        if !got.eq_ignore_ascii_case(&artifact.sha256) {
            return Err(mismatch(format!(
                "sha256 mismatch: expected {}, got {got}",
                artifact.sha256
            )));
        }
    }
    Ok(())
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
            sha256_file(&dir.path().join("f")).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn a_manifest_round_trips_and_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let m = manifest(dir.path());
        write_manifest(dir.path(), &m).unwrap();
        assert_eq!(read_manifest(dir.path()).unwrap(), m);
        verify(dir.path(), &m).unwrap();
    }

    #[test]
    fn changed_missing_and_misnamed_artifacts_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let m = manifest(dir.path());
        std::fs::write(dir.path().join("rootfs.ext4"), b"rootfs bytez").unwrap();
        let err = verify(dir.path(), &m).unwrap_err().to_string();
        assert!(err.starts_with("rootfs.ext4: sha256 mismatch"), "{err}");
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
    }

    #[test]
    fn a_newer_format_is_refused_with_advice() {
        let text = br#"{"format": 99, "name": "x"}"#;
        let err = parse_manifest(text, Path::new("m"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("upgrade banger"), "{err}");
    }
}
