//! OCI images made by the tests themselves, and a real registry to push
//! them to: layers are tar streams written entry by entry (so a test can
//! make hostile ones), compressed with gzip, zstd or not at all, stored
//! in an OCI image layout, pushed with `skopeo` to Debian's
//! `docker-registry` (the CNCF distribution server) on 127.0.0.1 of the
//! test's network namespace.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tar::EntryType;

use crate::NetNs;

pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(bytes))
}

/// One tar entry.
#[derive(Debug, Clone)]
pub struct Entry {
    path: String,
    kind: EntryType,
    mode: u32,
    uid: u64,
    gid: u64,
    data: Vec<u8>,
    link: String,
}

impl Entry {
    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = mode;
        self
    }

    pub fn owner(mut self, uid: u64, gid: u64) -> Self {
        self.uid = uid;
        self.gid = gid;
        self
    }
}

pub fn file(path: &str, data: &[u8]) -> Entry {
    Entry {
        path: path.into(),
        kind: EntryType::Regular,
        mode: 0o644,
        uid: 0,
        gid: 0,
        data: data.to_vec(),
        link: String::new(),
    }
}

pub fn dir(path: &str) -> Entry {
    Entry {
        kind: EntryType::Directory,
        mode: 0o755,
        ..file(path, b"")
    }
}

pub fn symlink(path: &str, target: &str) -> Entry {
    Entry {
        kind: EntryType::Symlink,
        mode: 0o777,
        link: target.into(),
        ..file(path, b"")
    }
}

pub fn hardlink(path: &str, target: &str) -> Entry {
    Entry {
        kind: EntryType::Link,
        link: target.into(),
        ..file(path, b"")
    }
}

/// Hides `name` of the layers below, in `dir`.
pub fn whiteout(dir: &str, name: &str) -> Entry {
    file(&format!("{dir}/.wh.{name}"), b"")
}

/// Hides everything the layers below have in `dir`.
pub fn opaque(dir: &str) -> Entry {
    file(&format!("{dir}/.wh..wh..opq"), b"")
}

/// A tar stream of `entries`; names are written raw (`..` included).
pub fn tar(entries: &[Entry]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for e in entries {
        let mut header = tar::Header::new_gnu();
        assert!(e.path.len() < 100 && e.link.len() < 100);
        header.as_old_mut().name[..e.path.len()].copy_from_slice(e.path.as_bytes());
        header.set_entry_type(e.kind);
        header.set_mode(e.mode);
        header.set_uid(e.uid);
        header.set_gid(e.gid);
        header.set_size(e.data.len() as u64);
        header.set_mtime(1_700_000_000);
        header.as_old_mut().linkname[..e.link.len()].copy_from_slice(e.link.as_bytes());
        header.set_cksum();
        builder.append(&header, &e.data[..]).unwrap();
    }
    builder.into_inner().unwrap()
}

/// A busybox userland: the static binary, applets as links, users root
/// and app (1000).
pub fn busybox_base() -> Vec<Entry> {
    let busybox = std::fs::read("/bin/busybox")
        .expect("busybox-static is installed (apt-get install busybox-static)");
    let mut entries = vec![
        dir("bin/"),
        file("bin/busybox", &busybox).mode(0o755),
        dir("etc/"),
        file(
            "etc/passwd",
            b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n",
        ),
        file("etc/group", b"root:x:0:\napp:x:1000:\n"),
        dir("home/"),
        dir("home/app/").owner(1000, 1000),
    ];
    for applet in [
        "sh", "cat", "ls", "id", "stat", "sleep", "grep", "pwd", "test", "env", "mount", "uname",
        "dd",
    ] {
        entries.push(symlink(&format!("bin/{applet}"), "busybox"));
    }
    entries
}

#[derive(Debug, Clone, Copy)]
pub enum Z {
    Tar,
    Gzip,
    Zstd,
}

/// An OCI image layout directory.
pub struct Layout {
    pub dir: PathBuf,
    tags: Vec<Value>,
}

impl Layout {
    pub fn new(dir: &Path) -> Layout {
        std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        let layout = Layout {
            dir: dir.to_path_buf(),
            tags: Vec::new(),
        };
        layout.write_index();
        layout
    }

    /// Stores a blob; returns its digest and size.
    pub fn blob(&self, bytes: &[u8]) -> (String, u64) {
        let digest = sha256(bytes);
        let hex = digest.trim_start_matches("sha256:");
        std::fs::write(self.dir.join("blobs/sha256").join(hex), bytes).unwrap();
        (digest, bytes.len() as u64)
    }

    /// The path of a stored blob.
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        self.dir
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:"))
    }

    /// A layer blob; returns its descriptor and its diff id.
    pub fn layer(&self, tar_bytes: &[u8], z: Z) -> (Value, String) {
        let (bytes, media_type) = match z {
            Z::Tar => (tar_bytes.to_vec(), "application/vnd.oci.image.layer.v1.tar"),
            Z::Gzip => {
                let mut enc =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                enc.write_all(tar_bytes).unwrap();
                (
                    enc.finish().unwrap(),
                    "application/vnd.oci.image.layer.v1.tar+gzip",
                )
            }
            Z::Zstd => (
                zstd::encode_all(tar_bytes, 3).unwrap(),
                "application/vnd.oci.image.layer.v1.tar+zstd",
            ),
        };
        let (digest, size) = self.blob(&bytes);
        (
            json!({"mediaType": media_type, "digest": digest, "size": size}),
            sha256(tar_bytes),
        )
    }

    /// An image manifest of `layers` (already stored) and a config with
    /// `run` as its `config` section; returns the manifest's descriptor
    /// with its platform.
    pub fn image(&self, layers: &[(Value, String)], run: Value, arch: &str) -> Value {
        let config = json!({
            "architecture": arch,
            "os": "linux",
            "config": run,
            "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| l.1.clone()).collect::<Vec<_>>()},
        });
        self.image_with_config(layers, serde_json::to_vec(&config).unwrap(), arch)
    }

    /// As `image`, with config bytes of the caller's.
    pub fn image_with_config(
        &self,
        layers: &[(Value, String)],
        config: Vec<u8>,
        arch: &str,
    ) -> Value {
        let (config_digest, config_size) = self.blob(&config);
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size},
            "layers": layers.iter().map(|l| l.0.clone()).collect::<Vec<_>>(),
        });
        let (digest, size) = self.blob(&serde_json::to_vec(&manifest).unwrap());
        json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest,
            "size": size,
            "platform": {"architecture": arch, "os": "linux"},
        })
    }

    /// An index of `manifests`; returns its descriptor.
    pub fn index(&self, manifests: &[Value]) -> Value {
        let index = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": manifests,
        });
        let (digest, size) = self.blob(&serde_json::to_vec(&index).unwrap());
        json!({"mediaType": "application/vnd.oci.image.index.v1+json", "digest": digest, "size": size})
    }

    /// Names `descriptor` `tag` in the layout.
    pub fn tag(&mut self, tag: &str, descriptor: &Value) {
        let mut entry = descriptor.clone();
        entry["annotations"] = json!({"org.opencontainers.image.ref.name": tag});
        self.tags.push(entry);
        self.write_index();
    }

    fn write_index(&self) {
        let index = json!({"schemaVersion": 2, "manifests": self.tags});
        std::fs::write(
            self.dir.join("index.json"),
            serde_json::to_vec(&index).unwrap(),
        )
        .unwrap();
    }

    /// Pushes `tag` to `target` (`HOST:PORT/REPO:TAG`) with skopeo, in `ns`.
    pub fn push(&self, ns: &NetNs, tag: &str, target: &str) {
        let out = ns
            .command("skopeo")
            .args([
                "copy",
                "--quiet",
                "--all",
                "--preserve-digests",
                "--dest-tls-verify=false",
            ])
            .arg(format!("oci:{}:{tag}", self.dir.display()))
            .arg(format!("docker://{target}"))
            .output()
            .expect("skopeo runs (apt-get install skopeo)");
        assert!(
            out.status.success(),
            "skopeo copy {tag} {target}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Debian's `docker-registry` serving a temporary directory on
/// 127.0.0.1 of a namespace; stopped when dropped.
pub struct Registry {
    child: std::process::Child,
    pub port: u16,
    pub data: PathBuf,
}

impl Registry {
    pub fn start(ns: &NetNs, dir: &Path, port: u16) -> Registry {
        let data = dir.join("data");
        std::fs::create_dir_all(&data).unwrap();
        let config = dir.join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
                data.display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("registry.log")).unwrap();
        let child = ns
            .command("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("docker-registry runs (apt-get install docker-registry)");
        let registry = Registry { child, port, data };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let answered = ns
                .command("busybox")
                .args(["wget", "-q", "-O", "/dev/null"])
                .arg(format!("http://127.0.0.1:{port}/v2/"))
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if answered {
                break;
            }
            assert!(Instant::now() < deadline, "the registry did not come up");
            std::thread::sleep(Duration::from_millis(100));
        }
        registry
    }

    /// Where the registry keeps the bytes of a blob.
    pub fn blob_data(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.data
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// Puts an image manifest of `layout` (and its config and layers)
    /// straight into the registry's storage as `repo:tag`: how a test
    /// serves what the registry would refuse on push (a config over the
    /// size limits of skopeo and banger alike). The registry's on-disk
    /// layout: blobs by digest, links from the repository.
    pub fn plant(&self, layout: &Layout, repo: &str, tag: &str, manifest: &Value) {
        let v2 = self.data.join("docker/registry/v2");
        let put = |path: PathBuf, bytes: &[u8]| {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, bytes).unwrap();
        };
        let digest = manifest["digest"].as_str().unwrap();
        let body: Value =
            serde_json::from_slice(&std::fs::read(layout.blob_path(digest)).unwrap()).unwrap();
        let repo_dir = v2.join("repositories").join(repo);
        let mut blobs: Vec<String> = vec![body["config"]["digest"].as_str().unwrap().into()];
        for layer in body["layers"].as_array().unwrap() {
            blobs.push(layer["digest"].as_str().unwrap().into());
        }
        for blob in blobs.iter().chain([&digest.to_string()]) {
            let hex = blob.trim_start_matches("sha256:");
            put(
                self.blob_data(blob),
                &std::fs::read(layout.blob_path(blob)).unwrap(),
            );
            if blob != digest {
                put(
                    repo_dir.join("_layers/sha256").join(hex).join("link"),
                    blob.as_bytes(),
                );
            }
        }
        let hex = digest.trim_start_matches("sha256:");
        let manifests = repo_dir.join("_manifests");
        put(
            manifests.join("revisions/sha256").join(hex).join("link"),
            digest.as_bytes(),
        );
        put(
            manifests.join("tags").join(tag).join("current/link"),
            digest.as_bytes(),
        );
        put(
            manifests
                .join("tags")
                .join(tag)
                .join("index/sha256")
                .join(hex)
                .join("link"),
            digest.as_bytes(),
        );
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}
