//! Registry credentials from the files docker and podman write: the
//! first of `$REGISTRY_AUTH_FILE`, `$XDG_RUNTIME_DIR/containers/auth.json`,
//! `~/.config/containers/auth.json`, `$DOCKER_CONFIG/config.json` and
//! `~/.docker/config.json` (of the daemon's user, or `user_files` of the
//! user a pull is for) that names the registry. Only inline `auth` entries are read; credential helpers are
//! not run. Without an entry the pull is anonymous (bearer tokens are
//! still fetched when the registry asks for them).

use std::path::{Path, PathBuf};

use base64::Engine;
use serde::Deserialize;

use crate::error::OciError;

/// Largest credentials file read.
const MAX_FILE: u64 = 1 << 20;

/// A user name and password (or token) for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, ***)", self.username)
    }
}

#[derive(Deserialize)]
struct AuthFile {
    #[serde(default)]
    auths: std::collections::BTreeMap<String, AuthEntry>,
}

#[derive(Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
}

/// The files looked at, in order, for this process's environment.
pub fn default_files() -> Vec<PathBuf> {
    let env = |name: &str| std::env::var_os(name).map(PathBuf::from);
    let mut files = Vec::new();
    if let Some(file) = env("REGISTRY_AUTH_FILE") {
        files.push(file);
    }
    if let Some(dir) = env("XDG_RUNTIME_DIR") {
        files.push(dir.join("containers/auth.json"));
    }
    let home = env("HOME");
    if let Some(home) = &home {
        files.push(home.join(".config/containers/auth.json"));
    }
    if let Some(dir) = env("DOCKER_CONFIG") {
        files.push(dir.join("config.json"));
    }
    if let Some(home) = &home {
        files.push(home.join(".docker/config.json"));
    }
    files
}

/// The files looked at for the user `uid` whose home is `home` (what
/// podman and docker write for it, without its environment).
pub fn user_files(home: &Path, uid: u32) -> Vec<PathBuf> {
    vec![
        PathBuf::from(format!("/run/user/{uid}/containers/auth.json")),
        home.join(".config/containers/auth.json"),
        home.join(".docker/config.json"),
    ]
}

/// The keys a registry may be filed under.
fn keys(registry: &str) -> Vec<String> {
    let mut keys = vec![
        registry.to_string(),
        format!("https://{registry}"),
        format!("http://{registry}"),
    ];
    if registry == "docker.io" {
        keys.extend([
            "https://index.docker.io/v1/".to_string(),
            "index.docker.io".to_string(),
            "registry-1.docker.io".to_string(),
        ]);
    }
    keys
}

/// The credentials for `registry` in the first of `files` that has them.
pub fn find(registry: &str, files: &[PathBuf]) -> Result<Option<Credentials>, OciError> {
    for file in files {
        if let Some(found) = find_in(registry, file)? {
            return Ok(Some(found));
        }
    }
    Ok(None)
}

fn find_in(registry: &str, file: &Path) -> Result<Option<Credentials>, OciError> {
    let bad = |reason: String| OciError::Credentials {
        path: file.display().to_string(),
        reason,
    };
    let meta = match std::fs::metadata(file) {
        Ok(meta) => meta,
        Err(_) => return Ok(None),
    };
    if meta.len() > MAX_FILE {
        return Err(bad("it is larger than 1 MiB".into()));
    }
    let text = std::fs::read(file).map_err(|e| bad(e.to_string()))?;
    let parsed: AuthFile = serde_json::from_slice(&text).map_err(|e| bad(e.to_string()))?;
    for key in keys(registry) {
        let Some(entry) = parsed.auths.get(&key) else {
            continue;
        };
        let Some(encoded) = &entry.auth else {
            continue;
        };
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map_err(|e| bad(format!("the auth of {key}: {e}")))?;
        let decoded =
            String::from_utf8(decoded).map_err(|_| bad(format!("the auth of {key}: not text")))?;
        let (username, password) = decoded
            .split_once(':')
            .ok_or_else(|| bad(format!("the auth of {key} is not USER:PASSWORD")))?;
        return Ok(Some(Credentials {
            username: username.to_string(),
            password: password.to_string(),
        }));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(user_pass: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(user_pass)
    }

    #[test]
    fn the_first_file_naming_the_registry_wins() {
        let dir = tempfile::tempdir().unwrap();
        let podman = dir.path().join("auth.json");
        let docker = dir.path().join("config.json");
        std::fs::write(
            &podman,
            format!(r#"{{"auths":{{"ghcr.io":{{"auth":"{}"}}}}}}"#, auth("a:b")),
        )
        .unwrap();
        std::fs::write(
            &docker,
            format!(
                r#"{{"auths":{{"https://index.docker.io/v1/":{{"auth":"{}"}},"ghcr.io":{{"auth":"{}"}}}},"credsStore":"x"}}"#,
                auth("hub:pw:with:colons"),
                auth("c:d")
            ),
        )
        .unwrap();
        let files = vec![dir.path().join("missing.json"), podman, docker];
        let ghcr = find("ghcr.io", &files).unwrap().unwrap();
        assert_eq!((ghcr.username.as_str(), ghcr.password.as_str()), ("a", "b"));
        let hub = find("docker.io", &files).unwrap().unwrap();
        assert_eq!(hub.password, "pw:with:colons");
        assert_eq!(find("quay.io", &files).unwrap(), None);
        assert!(!format!("{hub:?}").contains("pw"));
    }

    #[test]
    fn a_broken_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.json");
        std::fs::write(&file, r#"{"auths":{"r":{"auth":"!!"}}}"#).unwrap();
        let err = find("r", &[file]).unwrap_err().to_string();
        assert!(err.contains("config.json"), "{err}");
    }
}
