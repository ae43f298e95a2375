//! Image references as users write them. Docker's short-name rules: a
//! first component with a `.` or a `:`, or `localhost`, is a registry;
//! otherwise the registry is docker.io and a single name is in
//! `library/`. A `docker://` prefix is accepted. Registries on this host
//! (localhost, 127.0.0.0/8, ::1) are spoken to over plain HTTP, as Docker
//! does; others only when configured as insecure.

use std::net::IpAddr;

use oci_client::Reference;

use crate::error::OciError;

/// Longest reference accepted.
const MAX_REFERENCE: usize = 512;

/// A parsed image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    pub(crate) inner: Reference,
}

impl ImageRef {
    pub fn parse(text: &str) -> Result<ImageRef, OciError> {
        let bad = |reason: &str| OciError::BadReference {
            text: text.to_string(),
            reason: reason.to_string(),
        };
        if text.len() > MAX_REFERENCE {
            return Err(bad("it is too long"));
        }
        let bare = text.strip_prefix("docker://").unwrap_or(text);
        if bare.is_empty() || bare.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad("it is empty or has spaces"));
        }
        let inner: Reference = bare.parse().map_err(|e| bad(&format!("{e}")))?;
        if !inner
            .repository()
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-' | b'/'))
        {
            return Err(bad("repository names are lowercase"));
        }
        if let Some(digest) = inner.digest() {
            let hex = digest.strip_prefix("sha256:").unwrap_or("");
            if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
                return Err(bad("a digest must be sha256: and 64 lowercase hex digits"));
            }
        }
        Ok(ImageRef { inner })
    }

    /// The full reference (`docker.io/library/debian:bookworm`).
    pub fn whole(&self) -> String {
        self.inner.whole()
    }

    /// The registry as written (`docker.io`, `127.0.0.1:5000`).
    pub fn registry(&self) -> &str {
        self.inner.registry()
    }

    /// The host the registry API is served from.
    pub fn api_host(&self) -> &str {
        self.inner.resolve_registry()
    }

    pub fn repository(&self) -> &str {
        self.inner.repository()
    }

    /// The name an image pulled from this reference gets unless the user
    /// gives one: the repository's last component and the tag (or the
    /// digest's first 12 digits), in image-name characters.
    pub fn default_name(&self) -> String {
        let last = self.repository().rsplit('/').next().unwrap_or("image");
        let suffix = match (self.inner.digest(), self.inner.tag()) {
            (Some(digest), _) => digest.trim_start_matches("sha256:")[..12].to_string(),
            (None, Some(tag)) => tag.to_string(),
            (None, None) => "latest".to_string(),
        };
        let mut name = String::new();
        for c in format!("{last}-{suffix}").chars() {
            let c = c.to_ascii_lowercase();
            let c = if c.is_ascii_alphanumeric() { c } else { '-' };
            if !(c == '-' && name.ends_with('-')) {
                name.push(c);
            }
        }
        let mut name = name.trim_matches('-').to_string();
        if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
            name.insert_str(0, "img-");
        }
        name.truncate(63);
        name.trim_end_matches('-').to_string()
    }

    /// Whether this registry is spoken to over plain HTTP: one on this
    /// host, or one named in `insecure` (as `HOST[:PORT]`).
    pub fn plain_http(&self, insecure: &[String]) -> bool {
        let registry = self.registry();
        if insecure.iter().any(|r| r == registry) {
            return true;
        }
        is_local(registry)
    }
}

/// `localhost`, 127.0.0.0/8 or ::1, with or without a port.
pub fn is_local(registry: &str) -> bool {
    let host = if let Some(rest) = registry.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        registry.split(':').next().unwrap_or("")
    };
    if host == "localhost" {
        return true;
    }
    match host.parse::<IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => false,
    }
}

impl std::fmt::Display for ImageRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.whole())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_follow_docker() {
        let r = ImageRef::parse("debian:bookworm").unwrap();
        assert_eq!(r.whole(), "docker.io/library/debian:bookworm");
        assert_eq!(r.api_host(), "index.docker.io");
        assert_eq!(r.default_name(), "debian-bookworm");
        let r = ImageRef::parse("docker://alpine").unwrap();
        assert_eq!(r.whole(), "docker.io/library/alpine:latest");
        let r = ImageRef::parse("ghcr.io/org/app:v1.2").unwrap();
        assert_eq!((r.registry(), r.repository()), ("ghcr.io", "org/app"));
        assert_eq!(r.default_name(), "app-v1-2");
        let r = ImageRef::parse("org/app").unwrap();
        assert_eq!(r.whole(), "docker.io/org/app:latest");
    }

    #[test]
    fn digests_are_checked_and_named() {
        let hex = "ab".repeat(32);
        let r = ImageRef::parse(&format!("127.0.0.1:5000/repo@sha256:{hex}")).unwrap();
        assert_eq!(r.registry(), "127.0.0.1:5000");
        assert_eq!(r.default_name(), "repo-abababababab");
        for bad in [
            "repo@sha256:abc".to_string(),
            format!("repo@sha256:{}", "AB".repeat(32)),
            String::new(),
            "a b".into(),
            "UPPER/case".into(),
            "x".repeat(600),
        ] {
            assert!(
                ImageRef::parse(&bad).is_err(),
                "{bad} {:?}",
                ImageRef::parse(&bad)
            );
        }
    }

    #[test]
    fn only_local_registries_speak_plain_http_by_default() {
        let plain = |text: &str, insecure: &[&str]| {
            let insecure: Vec<String> = insecure.iter().map(|s| s.to_string()).collect();
            ImageRef::parse(text).unwrap().plain_http(&insecure)
        };
        assert!(plain("localhost:5000/a", &[]));
        assert!(plain("127.0.0.2:5000/a", &[]));
        assert!(!plain("10.0.0.1:5000/a", &[]));
        assert!(plain("10.0.0.1:5000/a", &["10.0.0.1:5000"]));
        assert!(!plain("debian", &[]));
        assert!(!plain("localhost.example.com/a", &[]));
    }

    #[test]
    fn names_are_image_names() {
        let r = ImageRef::parse("registry.example.com/x/9lives:_Odd__Tag").unwrap();
        assert_eq!(r.default_name(), "img-9lives-odd-tag");
    }
}
