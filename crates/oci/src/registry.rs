//! One registry conversation: authenticate once (`oci-client` does the
//! bearer-token dance), fetch the manifest (a bounded read, its digest
//! checked), pick linux/amd64 from an index, fetch and parse the image
//! config (bounded), and open blob streams for the layers.

use std::time::Duration;

use futures_util::StreamExt;
use oci_client::client::{ClientConfig, ClientProtocol, SizedStream};
use oci_client::errors::OciDistributionError;
use oci_client::manifest::{OciDescriptor, OciImageIndex, OciImageManifest};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, RegistryOperation};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::auth::Credentials;
use crate::error::OciError;
use crate::reference::ImageRef;

/// Limits on what a registry may send.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// A manifest or an index (the distribution registry's own limit).
    pub manifest: u64,
    /// The image config.
    pub config: u64,
    /// One layer, compressed.
    pub layer: u64,
    /// Layers in one image.
    pub layers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            manifest: 4 << 20,
            config: 4 << 20,
            layer: 16 << 30,
            layers: 256,
        }
    }
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// No byte for this long: the registry is gone.
const READ_TIMEOUT: Duration = Duration::from_secs(60);

const INDEX_TYPES: [&str; 2] = [
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];
const MANIFEST_TYPES: [&str; 2] = [
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];

/// How a layer is compressed, from its media type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    pub fn of(media_type: &str) -> Option<Compression> {
        match media_type {
            "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.docker.image.rootfs.diff.tar" => Some(Compression::None),
            "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip" => Some(Compression::Gzip),
            "application/vnd.oci.image.layer.v1.tar+zstd" => Some(Compression::Zstd),
            _ => None,
        }
    }
}

/// The parts of an image config banger keeps.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct ImageConfigFile {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub config: Option<RunConfig>,
}

/// How the image's author meant its process to run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RunConfig {
    #[serde(default)]
    pub env: Option<Vec<String>>,
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    #[serde(default)]
    pub working_dir: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
}

/// What a reference resolves to.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The digest of the platform manifest.
    pub digest: String,
    pub layers: Vec<OciDescriptor>,
    pub config: ImageConfigFile,
}

pub struct Registry {
    client: Client,
    http: reqwest::Client,
    reference: ImageRef,
    scheme: &'static str,
    auth: RegistryAuth,
    token: Option<String>,
    limits: Limits,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Registry({})", self.reference)
    }
}

/// Turns a client error into one of ours, for `what`.
fn client_error(reference: &ImageRef, what: &str, err: OciDistributionError) -> OciError {
    match err {
        OciDistributionError::RequestError(err) => request_error(reference, what, err),
        OciDistributionError::AuthenticationFailure(detail)
        | OciDistributionError::UnauthorizedError { url: detail } => OciError::Denied {
            registry: reference.registry().to_string(),
            reference: reference.whole(),
            detail: one_line(&detail),
        },
        OciDistributionError::ServerError { code, message, .. } => {
            status_error(reference, what, code, &message)
        }
        OciDistributionError::RegistryError { envelope, .. } => {
            let detail = one_line(&format!("{envelope:?}"));
            if detail.contains("Unknown") || detail.contains("NotFound") {
                OciError::NotFound {
                    reference: reference.whole(),
                    detail,
                }
            } else {
                OciError::Status {
                    status: 0,
                    what: what.to_string(),
                    detail,
                }
            }
        }
        other => OciError::Malformed {
            what: what.to_string(),
            reason: one_line(&other.to_string()),
        },
    }
}

fn request_error(reference: &ImageRef, what: &str, err: reqwest::Error) -> OciError {
    if let Some(status) = err.status() {
        return status_error(reference, what, status.as_u16(), "");
    }
    if err.is_connect() || err.is_timeout() {
        return OciError::Unreachable {
            registry: reference.registry().to_string(),
            reason: one_line(&error_chain(&err)),
        };
    }
    OciError::Interrupted {
        what: what.to_string(),
        done: 0,
        reason: one_line(&error_chain(&err)),
    }
}

fn status_error(reference: &ImageRef, what: &str, code: u16, body: &str) -> OciError {
    match code {
        404 => OciError::NotFound {
            reference: reference.whole(),
            detail: format!("{what}: 404"),
        },
        401 | 403 => OciError::Denied {
            registry: reference.registry().to_string(),
            reference: reference.whole(),
            detail: format!("{what}: {code}"),
        },
        _ => OciError::Status {
            status: code,
            what: what.to_string(),
            detail: one_line(body),
        },
    }
}

/// An error and its sources on one line.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

fn one_line(text: &str) -> String {
    let line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    line.chars().take(300).collect()
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

impl Registry {
    /// Authenticates for pulling `reference`.
    pub async fn connect(
        reference: &ImageRef,
        insecure: &[String],
        credentials: Option<Credentials>,
        limits: Limits,
    ) -> Result<Registry, OciError> {
        let plain = reference.plain_http(insecure);
        let protocol = if plain {
            ClientProtocol::HttpsExcept(vec![reference.api_host().to_string()])
        } else {
            ClientProtocol::Https
        };
        let client = Client::new(ClientConfig {
            protocol,
            connect_timeout: Some(CONNECT_TIMEOUT),
            read_timeout: Some(READ_TIMEOUT),
            ..Default::default()
        });
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .build()
            .map_err(|e| OciError::Worker(e.to_string()))?;
        let auth = match credentials {
            Some(c) => RegistryAuth::Basic(c.username, c.password),
            None => RegistryAuth::Anonymous,
        };
        let token = client
            .auth(&reference.inner, &auth, RegistryOperation::Pull)
            .await
            .map_err(|e| client_error(reference, "authentication", e))?;
        Ok(Registry {
            client,
            http,
            reference: reference.clone(),
            scheme: if plain { "http" } else { "https" },
            auth,
            token,
            limits,
        })
    }

    /// GETs the manifest `tag_or_digest`, at most `limits.manifest`
    /// bytes; a digest asked for must be the digest of what came.
    async fn manifest_bytes(&self, tag_or_digest: &str) -> Result<(Vec<u8>, String), OciError> {
        let what = format!("the manifest {tag_or_digest}");
        let url = format!(
            "{}://{}/v2/{}/manifests/{}",
            self.scheme,
            self.reference.api_host(),
            self.reference.repository(),
            tag_or_digest
        );
        let mut request = self
            .http
            .get(&url)
            .header("Accept", [INDEX_TYPES, MANIFEST_TYPES].concat().join(", "));
        request = match (&self.token, &self.auth) {
            (Some(token), _) => request.bearer_auth(token),
            (None, RegistryAuth::Basic(user, password)) => request.basic_auth(user, Some(password)),
            _ => request,
        };
        let response = request
            .send()
            .await
            .map_err(|e| request_error(&self.reference, &what, e))?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            return Err(status_error(&self.reference, &what, status.as_u16(), &body));
        }
        let limit = self.limits.manifest;
        if response.content_length().is_some_and(|n| n > limit) {
            return Err(OciError::TooLarge { what, limit });
        }
        let mut body = Vec::new();
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| request_error(&self.reference, &what, e))?;
            if body.len() as u64 + chunk.len() as u64 > limit {
                return Err(OciError::TooLarge { what, limit });
            }
            body.extend_from_slice(&chunk);
        }
        let digest = format!("sha256:{}", sha256_hex(&body));
        if tag_or_digest.starts_with("sha256:") && tag_or_digest != digest {
            return Err(OciError::Digest {
                what,
                expected: tag_or_digest.to_string(),
                got: digest,
            });
        }
        Ok((body, digest))
    }

    /// The linux/amd64 image of the reference: its manifest's digest, its
    /// layers and its config.
    pub async fn resolve(&self) -> Result<Resolved, OciError> {
        let inner = &self.reference.inner;
        let first = inner
            .digest()
            .or(inner.tag())
            .unwrap_or("latest")
            .to_string();
        let (body, mut digest) = self.manifest_bytes(&first).await?;
        let mut manifest_body = body;
        if media_type_of(&manifest_body).is_some_and(|t| INDEX_TYPES.contains(&t.as_str()))
            || is_index(&manifest_body)
        {
            let index: OciImageIndex =
                serde_json::from_slice(&manifest_body).map_err(|e| OciError::Malformed {
                    what: "the image index".into(),
                    reason: e.to_string(),
                })?;
            let chosen = pick_platform(&index).ok_or_else(|| OciError::NoPlatform {
                reference: self.reference.whole(),
                available: platforms(&index),
            })?;
            let (body, platform_digest) = self.manifest_bytes(&chosen).await?;
            manifest_body = body;
            digest = platform_digest;
        }
        if let Some(media_type) = media_type_of(&manifest_body) {
            if !MANIFEST_TYPES.contains(&media_type.as_str()) {
                return Err(OciError::Unsupported {
                    what: "manifest type".into(),
                    media_type,
                });
            }
        }
        let manifest: OciImageManifest =
            serde_json::from_slice(&manifest_body).map_err(|e| OciError::Malformed {
                what: "the image manifest".into(),
                reason: e.to_string(),
            })?;
        if manifest.layers.len() > self.limits.layers {
            return Err(OciError::TooLarge {
                what: format!("an image of {} layers", manifest.layers.len()),
                limit: self.limits.layers as u64,
            });
        }
        for layer in &manifest.layers {
            if Compression::of(&layer.media_type).is_none() {
                return Err(OciError::Unsupported {
                    what: "layer type".into(),
                    media_type: layer.media_type.clone(),
                });
            }
            check_descriptor(layer, self.limits.layer, "a layer")?;
        }
        check_descriptor(&manifest.config, self.limits.config, "the image config")?;
        let config_bytes = self.small_blob(&manifest.config).await?;
        let config: ImageConfigFile =
            serde_json::from_slice(&config_bytes).map_err(|e| OciError::Malformed {
                what: "the image config".into(),
                reason: e.to_string(),
            })?;
        if (config.os.as_str(), config.architecture.as_str()) != ("linux", "amd64") {
            return Err(OciError::NoPlatform {
                reference: self.reference.whole(),
                available: format!("{}/{}", config.os, config.architecture),
            });
        }
        Ok(Resolved {
            digest,
            layers: manifest.layers,
            config,
        })
    }

    /// A blob small enough to hold in memory, its digest checked.
    async fn small_blob(&self, descriptor: &OciDescriptor) -> Result<Vec<u8>, OciError> {
        let what = format!("blob {}", descriptor.digest);
        let mut stream = self.blob(descriptor).await?;
        let mut body = Vec::new();
        while let Some(chunk) = stream.stream.next().await {
            let chunk = chunk.map_err(|e| OciError::Interrupted {
                what: what.clone(),
                done: body.len() as u64,
                reason: e.to_string(),
            })?;
            if body.len() + chunk.len() > descriptor.size as usize {
                return Err(OciError::TooLarge {
                    what,
                    limit: descriptor.size as u64,
                });
            }
            body.extend_from_slice(&chunk);
        }
        let got = format!("sha256:{}", sha256_hex(&body));
        if got != descriptor.digest {
            return Err(OciError::Digest {
                what,
                expected: descriptor.digest.clone(),
                got,
            });
        }
        Ok(body)
    }

    /// The bytes of a blob as they come (the caller checks size and digest).
    pub async fn blob(&self, descriptor: &OciDescriptor) -> Result<SizedStream, OciError> {
        self.client
            .pull_blob_stream(&self.reference.inner, descriptor)
            .await
            .map_err(|e| client_error(&self.reference, &format!("blob {}", descriptor.digest), e))
    }
}

/// A descriptor's digest must be sha256 and its size within `limit`.
fn check_descriptor(d: &OciDescriptor, limit: u64, what: &str) -> Result<(), OciError> {
    let hex = d.digest.strip_prefix("sha256:").unwrap_or("");
    if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(OciError::Malformed {
            what: format!("{what}'s digest {:?}", d.digest),
            reason: "banger accepts sha256 digests".into(),
        });
    }
    if d.size < 0 || d.size as u64 > limit {
        return Err(OciError::TooLarge {
            what: format!("{what} of {} bytes", d.size),
            limit,
        });
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Typed {
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<serde_json::Value>,
}

fn media_type_of(body: &[u8]) -> Option<String> {
    serde_json::from_slice::<Typed>(body).ok()?.media_type
}

/// An OCI index may leave out its media type; its `manifests` tell it.
fn is_index(body: &[u8]) -> bool {
    serde_json::from_slice::<Typed>(body).is_ok_and(|t| t.manifests.is_some())
}

/// The digest of the linux/amd64 manifest of an index.
pub fn pick_platform(index: &OciImageIndex) -> Option<String> {
    index
        .manifests
        .iter()
        .find(|entry| {
            entry
                .platform
                .as_ref()
                .is_some_and(|p| p.os == "linux" && p.architecture == "amd64")
        })
        .map(|entry| entry.digest.clone())
}

fn platforms(index: &OciImageIndex) -> String {
    let all: Vec<String> = index
        .manifests
        .iter()
        .filter_map(|e| e.platform.as_ref())
        .map(|p| format!("{}/{}", p.os, p.architecture))
        .collect();
    if all.is_empty() {
        "no platforms".into()
    } else {
        all.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_amd64_entry_of_an_index_is_picked() {
        let index: OciImageIndex = serde_json::from_str(
            r#"{"schemaVersion":2,"manifests":[
              {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:a","size":1,"platform":{"os":"linux","architecture":"arm64"}},
              {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:b","size":1,"platform":{"os":"linux","architecture":"amd64"}}]}"#,
        )
        .unwrap();
        assert_eq!(pick_platform(&index).as_deref(), Some("sha256:b"));
        let arm: OciImageIndex = serde_json::from_str(
            r#"{"schemaVersion":2,"manifests":[
              {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:a","size":1,"platform":{"os":"linux","architecture":"arm64"}}]}"#,
        )
        .unwrap();
        assert_eq!(pick_platform(&arm), None);
        assert_eq!(platforms(&arm), "linux/arm64");
    }

    #[test]
    fn layer_types_name_their_compression() {
        assert_eq!(
            Compression::of("application/vnd.oci.image.layer.v1.tar+zstd"),
            Some(Compression::Zstd)
        );
        assert_eq!(
            Compression::of("application/vnd.docker.image.rootfs.diff.tar.gzip"),
            Some(Compression::Gzip)
        );
        assert_eq!(Compression::of("application/x-foreign"), None);
    }
}
