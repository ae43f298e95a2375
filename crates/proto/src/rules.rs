//! What the API accepts, stated once. Each checked value is a type here
//! whose deserialization runs the check and whose schema in
//! `api/openapi.json` states the same pattern, length or range, built
//! from the same constants: the document and the daemon cannot drift.
//! A value that breaks a rule is refused with 400 before any handler runs.

use std::fmt;
use std::sync::LazyLock;

use regex::Regex;
use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
use utoipa::openapi::{RefOr, Schema};

/// VM and image names: they become DNS labels (`NAME.vm`).
pub const NAME_PATTERN: &str = "^[a-z][a-z0-9-]{0,62}$";
pub const NAME_MAX: usize = 63;
/// A sha256 digest in hex (either case).
pub const SHA256_PATTERN: &str = "^[0-9a-fA-F]{64}$";
/// An absolute path on the daemon's host, without NUL bytes.
pub const HOST_PATH_PATTERN: &str = "^/[^\\x00]*$";
pub const HOST_PATH_MAX: usize = 4096;
/// A Debian suite (`bookworm`, `trixie`, `sid`).
pub const SUITE_PATTERN: &str = "^[a-z]{1,32}$";
/// A Debian package name.
pub const PACKAGE_PATTERN: &str = "^[a-z0-9][a-z0-9+.-]{1,127}$";
/// Standard base64 with padding.
pub const BASE64_PATTERN: &str = "^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$";

/// An OpenSSH public key line: a key type sshd accepts, the key in
/// base64, an optional comment of printable characters.
pub const SSH_PUBLIC_KEY_PATTERN: &str = "^(?:ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp256|ecdsa-sha2-nistp384|ecdsa-sha2-nistp521|sk-ssh-ed25519@openssh\\.com|sk-ecdsa-sha2-nistp256@openssh\\.com) [A-Za-z0-9+/]+={0,3}(?: [\\x20-\\x7e]*)?$";
pub const SSH_PUBLIC_KEY_MAX: usize = 8192;
/// Public keys one request may offer.
pub const SSH_KEYS_MAX: usize = 8;

/// One component of an OCI repository path (the distribution grammar).
const OCI_COMPONENT: &str = "[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*";
/// A registry host: has a dot or a port, or is `localhost`.
const OCI_DOMAIN: &str = "(?:(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)+|localhost)(?::[0-9]{1,5})?|[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?:[0-9]{1,5})";
const OCI_TAG: &str = "[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}";

/// What `image pull` takes: an http(s) or file URL, an absolute path to a
/// bundle, or a catalog name or OCI reference (`docker://` optional).
pub static PULL_SOURCE_PATTERN: LazyLock<String> = LazyLock::new(|| {
    format!(
        "^(?:https?://[^\\s]+|file:///[^\\s]*|/[^\\x00]*|(?:docker://)?(?:{OCI_DOMAIN}/)?{OCI_COMPONENT}(?:/{OCI_COMPONENT})*(?::{OCI_TAG})?(?:@sha256:[0-9a-f]{{64}})?)$"
    )
});
pub const PULL_SOURCE_MAX: usize = 2048;

pub const VCPUS_MIN: u32 = 1;
pub const VCPUS_MAX: u32 = 64;
pub const MEMORY_MIB_MIN: u32 = 64;
pub const MEMORY_MIB_MAX: u32 = 256 * 1024;
pub const DISK_BYTES_MIN: u64 = 64 << 20;
pub const DISK_BYTES_MAX: u64 = 16 << 40;
pub const FORK_COUNT_MIN: u32 = 1;
pub const FORK_COUNT_MAX: u32 = 16;

/// A value that breaks its rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {value:?}: {rule}")]
pub struct RuleError {
    pub what: &'static str,
    pub value: String,
    pub rule: String,
}

fn compiled(pattern: &str) -> Regex {
    Regex::new(pattern).expect("rule patterns compile")
}

/// A string type checked against a pattern and a length.
macro_rules! checked_string {
    ($(#[$doc:meta])* $name:ident, $what:literal, $pattern:expr, $max:expr, $rule:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Checks `text` against the rule.
            pub fn check(text: &str) -> Result<(), RuleError> {
                static RE: LazyLock<Regex> = LazyLock::new(|| compiled(&$pattern));
                if text.len() <= $max && RE.is_match(text) {
                    Ok(())
                } else {
                    Err(RuleError {
                        what: $what,
                        value: text.chars().take(80).collect(),
                        rule: $rule.into(),
                    })
                }
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_inner(self) -> String {
                self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = RuleError;
            fn try_from(text: String) -> Result<Self, RuleError> {
                Self::check(&text)?;
                Ok($name(text))
            }
        }

        impl TryFrom<&str> for $name {
            type Error = RuleError;
            fn try_from(text: &str) -> Result<Self, RuleError> {
                Self::try_from(text.to_string())
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl utoipa::PartialSchema for $name {
            fn schema() -> RefOr<Schema> {
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some($pattern.to_string()))
                    .max_length(Some($max))
                    .description(Some($rule))
                    .into()
            }
        }

        impl utoipa::ToSchema for $name {}
    };
}

checked_string!(
    /// A VM or image name.
    Name, "name", NAME_PATTERN, NAME_MAX,
    "names are 1-63 characters of a-z, 0-9 and '-', starting with a letter"
);
checked_string!(
    /// A sha256 digest, hex.
    Sha256, "sha256", SHA256_PATTERN, 64, "a sha256 digest is 64 hex digits"
);
checked_string!(
    /// An absolute path on the daemon's host.
    HostPath, "path", HOST_PATH_PATTERN, HOST_PATH_MAX,
    "a path on the daemon's host is absolute (starts with /)"
);
checked_string!(
    /// An absolute path inside a VM.
    GuestPath, "guest path", HOST_PATH_PATTERN, HOST_PATH_MAX,
    "a path in a vm is absolute (starts with /)"
);
checked_string!(
    /// A Debian suite.
    Suite, "debian suite", SUITE_PATTERN, 32, "a suite is lowercase letters, like bookworm"
);
checked_string!(
    /// A Debian package name.
    Package, "debian package name", PACKAGE_PATTERN, 128,
    "package names are lowercase letters, digits and + . -, at least 2"
);
checked_string!(
    /// An OpenSSH public key (`ssh-ed25519 AAAA... comment`).
    SshPublicKey, "ssh public key", SSH_PUBLIC_KEY_PATTERN, SSH_PUBLIC_KEY_MAX,
    "an OpenSSH public key line: TYPE BASE64 [COMMENT], of type ssh-ed25519, ssh-rsa or ecdsa-sha2-nistp256/384/521 (or their sk- forms), on one line"
);
checked_string!(
    /// Bytes, base64 (standard alphabet, padded).
    Base64, "base64", BASE64_PATTERN, usize::MAX, "standard base64 with padding"
);
checked_string!(
    /// Where `image pull` takes an image from.
    PullSourceText, "image source", *PULL_SOURCE_PATTERN, PULL_SOURCE_MAX,
    "a catalog name, an OCI reference (lowercase repository, optional :tag and @sha256:digest), an http(s):// or file:// url, or an absolute path"
);

/// A number type checked against a range.
macro_rules! checked_number {
    ($(#[$doc:meta])* $name:ident, $int:ty, $what:literal, $min:expr, $max:expr, $unit:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(try_from = "serde_json::Number", into = "u64")]
        pub struct $name($int);

        impl $name {
            pub const MIN: $int = $min;
            pub const MAX: $int = $max;

            /// Checks `value` against the range.
            pub fn check(value: u64) -> Result<$int, RuleError> {
                match <$int>::try_from(value) {
                    Ok(v) if (Self::MIN..=Self::MAX).contains(&v) => Ok(v),
                    _ => Err(RuleError {
                        what: $what,
                        value: value.to_string(),
                        rule: format!("use {} to {}{}", Self::MIN, Self::MAX, $unit),
                    }),
                }
            }

            pub fn get(self) -> $int {
                self.0
            }
        }

        impl TryFrom<u64> for $name {
            type Error = RuleError;
            fn try_from(value: u64) -> Result<Self, RuleError> {
                Self::check(value).map($name)
            }
        }

        /// JSON Schema's integers include `2.0`: whole numbers written
        /// with a fraction are taken too.
        impl TryFrom<serde_json::Number> for $name {
            type Error = RuleError;
            fn try_from(number: serde_json::Number) -> Result<Self, RuleError> {
                let whole = number.as_u64().or_else(|| {
                    number
                        .as_f64()
                        .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f <= u64::MAX as f64)
                        .map(|f| f as u64)
                });
                match whole {
                    Some(value) => Self::try_from(value),
                    None => Err(RuleError {
                        what: $what,
                        value: number.to_string(),
                        rule: format!("use a whole number from {} to {}", Self::MIN, Self::MAX),
                    }),
                }
            }
        }

        impl From<$name> for u64 {
            fn from(value: $name) -> u64 {
                value.0.into()
            }
        }

        impl utoipa::PartialSchema for $name {
            fn schema() -> RefOr<Schema> {
                let format = if std::mem::size_of::<$int>() == 4 {
                    KnownFormat::Int32
                } else {
                    KnownFormat::Int64
                };
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .format(Some(SchemaFormat::KnownFormat(format)))
                    .minimum(Some(Self::MIN as f64))
                    .maximum(Some(Self::MAX as f64))
                    .into()
            }
        }

        impl utoipa::ToSchema for $name {}
    };
}

checked_number!(
    /// Virtual CPUs of a VM.
    Vcpus, u32, "vcpu count", VCPUS_MIN, VCPUS_MAX, ""
);
checked_number!(
    /// Memory of a VM, MiB.
    MemoryMib, u32, "memory", MEMORY_MIB_MIN, MEMORY_MIB_MAX, " MiB"
);
checked_number!(
    /// A disk's size in bytes.
    DiskBytes, u64, "disk size", DISK_BYTES_MIN, DISK_BYTES_MAX, " bytes"
);
checked_number!(
    /// A TCP or UDP port.
    Port, u16, "port", 1, 65535, ""
);
checked_number!(
    /// How many copies one fork makes.
    ForkCount, u32, "fork count", FORK_COUNT_MIN, FORK_COUNT_MAX, ""
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["a", "web-1", "x23", &"a".repeat(63)] {
            assert!(Name::check(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "1a",
            "-a",
            "Abc",
            "a_b",
            "a.b",
            " a",
            "a\n",
            &"a".repeat(64),
        ] {
            assert!(Name::check(bad).is_err(), "{bad:?}");
        }
        let err = Name::try_from("Web").unwrap_err().to_string();
        assert!(err.starts_with("invalid name \"Web\": names are"), "{err}");
    }

    #[test]
    fn pull_sources() {
        for ok in [
            "debian-bookworm",
            "debian:bookworm",
            "docker://alpine:3.20",
            "ghcr.io/org/app:v1.2",
            "127.0.0.1:5000/repo/x@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "localhost/x",
            "registry:5000/a_b/c__d",
            "https://example.com/b.tar.zst",
            "file:///tmp/b.tar.zst",
            "/tmp/b.tar.zst",
        ] {
            assert!(PullSourceText::check(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "Not An Image Reference",
            "UPPER/case",
            "a//b",
            "ftp://x",
            "relative.tar.zst/",
            "x@sha256:short",
            "a:",
        ] {
            assert!(PullSourceText::check(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn ranges() {
        assert!(Vcpus::check(0).is_err());
        assert_eq!(Vcpus::check(64).unwrap(), 64);
        assert!(Vcpus::check(1 << 33).is_err());
        assert!(MemoryMib::check(63).is_err());
        assert!(DiskBytes::check(DISK_BYTES_MAX + 1).is_err());
        let err = Vcpus::try_from(0u64).unwrap_err().to_string();
        assert_eq!(err, "invalid vcpu count \"0\": use 1 to 64");
        let whole: Vcpus = serde_json::from_str("2.0").unwrap();
        assert_eq!(whole.get(), 2);
        assert!(serde_json::from_str::<Vcpus>("2.5").is_err());
        assert!(serde_json::from_str::<Vcpus>("-1").is_err());
    }

    #[test]
    fn base64_is_what_decoders_take() {
        for ok in ["", "QQ==", "QUI=", "QUJD"] {
            assert!(Base64::check(ok).is_ok(), "{ok}");
        }
        for bad in ["Q", "QQ", "QQ=", "QUJD=", "Q!=="] {
            assert!(Base64::check(bad).is_err(), "{bad}");
        }
    }
}
