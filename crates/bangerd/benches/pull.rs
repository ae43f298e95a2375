//! Benchmark: `image pull` of an OCI image from a registry on this host
//! to a ready image, against doing the same by hand with the standard
//! tools as the floor: `skopeo copy` to an OCI directory, the layers
//! extracted in order with GNU tar (umoci 0.4 reads no zstd),
//! `mkfs.ext4 -d`. The image is a Debian userland (bookworm minbase with
//! its cloud kernel and python3, from `mmdebstrap`) split into three
//! layers (base gzip, kernel zstd, python gzip); a second image shares
//! the first two and adds one, and its pull is measured for time and
//! bytes downloaded. Both sides start each run with nothing cached.
//! banger does more than the floor (an initramfs for the kernel, the
//! agent put in, a work seed, digests of every artifact): the ratio says
//! what that costs.
//!
//! cargo bench-pull -- [--runs N]
//! (an alias of `cargo bench -p bangerd --bench pull --`)

use banger_testkit as support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use sha2::{Digest, Sha256};

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(bytes))
}

fn runs() -> usize {
    let raw: Vec<String> = std::env::args().collect();
    raw.iter()
        .position(|a| a == "--runs")
        .and_then(|i| raw.get(i + 1))
        .map(|n| n.parse().expect("--runs N"))
        .unwrap_or(3)
}

fn run(command: &mut Command) {
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The Debian tree, made once and kept under target/.
fn debian_tree() -> PathBuf {
    let tree = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/bench-pull-tree");
    if !tree.join("usr/bin/python3").exists() {
        let _ = std::fs::remove_dir_all(&tree);
        eprintln!("making the Debian tree with mmdebstrap (once)...");
        run(Command::new("mmdebstrap")
            .args([
                "--variant=minbase",
                "--include=linux-image-cloud-amd64,python3",
                "bookworm",
            ])
            .arg(&tree));
    }
    tree
}

/// A tar of the entries of `tree` that `pick` keeps (parents included).
fn layer_tar(tree: &Path, pick: &dyn Fn(&str) -> bool) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    builder.follow_symlinks(false);
    // umoci does not read GNU sparse entries.
    builder.sparse(false);
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let full = tree.join(&rel);
        let meta = std::fs::symlink_metadata(&full).unwrap();
        let name = rel.to_string_lossy().into_owned();
        // Files, directories and links (device nodes are left to devtmpfs).
        let plain = meta.is_file() || meta.is_dir() || meta.file_type().is_symlink();
        let keep = plain && !name.is_empty() && (pick(&name) || meta.is_dir());
        if keep {
            builder
                .append_path_with_name(&full, &rel)
                .unwrap_or_else(|e| panic!("{}: {e}", rel.display()));
        }
        if meta.is_dir() {
            for entry in std::fs::read_dir(&full).unwrap() {
                stack.push(rel.join(entry.unwrap().file_name()));
            }
        }
    }
    builder.into_inner().unwrap()
}

struct Layout {
    dir: PathBuf,
}

impl Layout {
    fn blob(&self, bytes: &[u8]) -> (String, u64) {
        let digest = sha256(bytes);
        std::fs::write(
            self.dir
                .join("blobs/sha256")
                .join(digest.trim_start_matches("sha256:")),
            bytes,
        )
        .unwrap();
        (digest, bytes.len() as u64)
    }

    fn layer(&self, tar: &[u8], zstd: bool) -> serde_json::Value {
        let (bytes, media) = if zstd {
            (
                zstd::encode_all(tar, 3).unwrap(),
                "application/vnd.oci.image.layer.v1.tar+zstd",
            )
        } else {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            enc.write_all(tar).unwrap();
            (
                enc.finish().unwrap(),
                "application/vnd.oci.image.layer.v1.tar+gzip",
            )
        };
        let (digest, size) = self.blob(&bytes);
        serde_json::json!({"mediaType": media, "digest": digest, "size": size, "diff": sha256(tar)})
    }

    fn image(&self, layers: &[serde_json::Value]) -> serde_json::Value {
        let config = serde_json::json!({
            "architecture": "amd64", "os": "linux",
            "config": {"Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"], "Cmd": ["python3"]},
            "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| l["diff"].clone()).collect::<Vec<_>>()},
        });
        let (config_digest, config_size) = self.blob(&serde_json::to_vec(&config).unwrap());
        let descriptors: Vec<serde_json::Value> = layers
            .iter()
            .map(|l| serde_json::json!({"mediaType": l["mediaType"], "digest": l["digest"], "size": l["size"]}))
            .collect();
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size},
            "layers": descriptors,
        });
        let (digest, size) = self.blob(&serde_json::to_vec(&manifest).unwrap());
        serde_json::json!({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest, "size": size})
    }
}

/// Makes the two images and pushes them to the registry at `at`.
fn make_images(work: &Path, at: &str) -> (u64, u64) {
    let tree = debian_tree();
    let layout = Layout {
        dir: work.join("layout"),
    };
    std::fs::create_dir_all(layout.dir.join("blobs/sha256")).unwrap();
    std::fs::write(
        layout.dir.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let kernel = |p: &str| p.starts_with("boot") || p.starts_with("usr/lib/modules");
    let python = |p: &str| p.contains("python3");
    let base = layout.layer(&layer_tar(&tree, &|p| !kernel(p) && !python(p)), false);
    let kern = layout.layer(&layer_tar(&tree, &|p| kernel(p)), true);
    let py = layout.layer(&layer_tar(&tree, &|p| python(p) && !kernel(p)), false);
    let extra = layout.layer(
        &layer_tar(&tree, &|p| p.starts_with("usr/share/doc")),
        false,
    );
    let first = layout.image(&[base.clone(), kern.clone(), py.clone()]);
    let second = layout.image(&[base.clone(), kern.clone(), extra.clone()]);
    let mut tags = Vec::new();
    for (tag, descriptor) in [("first", &first), ("second", &second)] {
        let mut entry = descriptor.clone();
        entry["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": tag});
        tags.push(entry);
    }
    std::fs::write(
        layout.dir.join("index.json"),
        serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "manifests": tags})).unwrap(),
    )
    .unwrap();
    for tag in ["first", "second"] {
        run(Command::new("skopeo")
            .args([
                "copy",
                "--quiet",
                "--preserve-digests",
                "--dest-tls-verify=false",
            ])
            .arg(format!("oci:{}:{tag}", layout.dir.display()))
            .arg(format!("docker://{at}/bench:{tag}")));
    }
    let size = |l: &serde_json::Value| l["size"].as_u64().unwrap();
    (
        size(&base) + size(&kern) + size(&py),
        size(&base) + size(&kern) + size(&extra),
    )
}

/// The floor: skopeo copy, tar -x of each layer, mkfs.ext4 -d.
/// Milliseconds.
fn floor(work: &Path, at: &str, tag: &str) -> f64 {
    let dir = work.join("floor");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let t = Instant::now();
    run(Command::new("skopeo")
        .args(["copy", "--quiet", "--src-tls-verify=false"])
        .arg(format!("docker://{at}/bench:{tag}"))
        .arg(format!("oci:{}:{tag}", dir.join("oci").display())));
    // The layers in order with GNU tar (umoci 0.4 reads no zstd).
    let oci = dir.join("oci");
    let blob = |digest: &str| {
        oci.join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:"))
    };
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(oci.join("index.json")).unwrap()).unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(blob(index["manifests"][0]["digest"].as_str().unwrap())).unwrap(),
    )
    .unwrap();
    let rootfs = dir.join("rootfs");
    std::fs::create_dir_all(&rootfs).unwrap();
    for layer in manifest["layers"].as_array().unwrap() {
        let media = layer["mediaType"].as_str().unwrap();
        let unzip = if media.ends_with("zstd") {
            "--zstd"
        } else {
            "--gzip"
        };
        run(Command::new("tar")
            .args(["-x", unzip, "--numeric-owner", "-p", "--xattrs", "-f"])
            .arg(blob(layer["digest"].as_str().unwrap()))
            .arg("-C")
            .arg(&rootfs));
    }
    let bytes: u64 = String::from_utf8(
        Command::new("du")
            .args(["-sb"])
            .arg(&rootfs)
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .split_whitespace()
    .next()
    .unwrap()
    .parse()
    .unwrap();
    let size_mib = (bytes + bytes / 5 + (64 << 20)) >> 20;
    run(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-d"])
        .arg(&rootfs)
        .arg(dir.join("rootfs.ext4"))
        .arg(format!("{size_mib}M")));
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    let _ = std::fs::remove_dir_all(&dir);
    ms
}

/// One pull through the daemon: milliseconds, bytes downloaded, and the
/// milliseconds of each stage.
async fn pull(socket: &Path, source: &str, name: &str) -> (f64, u64, Vec<(String, f64)>) {
    let t = Instant::now();
    let body = serde_json::json!({"source": source, "name": name}).to_string();
    let (status, events) = support::call_ndjson(socket, "/v1/images/pull", &body).await;
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    assert_eq!(status, 200);
    let last = events.last().unwrap();
    assert_eq!(last["type"], "image", "{last}");
    let downloaded = events
        .iter()
        .filter_map(|e| e["line"].as_str())
        .filter_map(|l| l.strip_prefix("downloaded "))
        .filter_map(|l| l.split(' ').next())
        .filter_map(|n| n.parse::<u64>().ok())
        .sum();
    let starts: Vec<(String, f64)> = events
        .iter()
        .filter(|e| e["type"] == "stage")
        .map(|e| {
            let stage = e["stage"].as_str().unwrap();
            // Per-layer stages are summed as one.
            let stage = if stage.starts_with("layer ") {
                "layers"
            } else {
                stage
            };
            (stage.to_string(), e["elapsed_ms"].as_f64().unwrap())
        })
        .collect();
    let mut stages: Vec<(String, f64)> = Vec::new();
    for (i, (stage, start)) in starts.iter().enumerate() {
        let end = starts.get(i + 1).map_or(ms, |next| next.1);
        match stages.last_mut() {
            Some(last) if &last.0 == stage => last.1 += end - start,
            _ => stages.push((stage.clone(), end - start)),
        }
    }
    (ms, downloaded, stages)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

#[tokio::main]
async fn main() {
    let runs = runs();
    let guest = PathBuf::from(std::env::var("BANGER_GUEST_BINARY").unwrap_or_else(|_| {
        format!(
            "{}/../../target/guest/x86_64-unknown-linux-gnu/release/banger-guest",
            env!("CARGO_MANIFEST_DIR")
        )
    }));
    assert!(guest.is_file(), "no guest binary: run scripts/build-guest");
    let work = tempfile::tempdir().unwrap();
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let at = format!("127.0.0.1:{port}");
    let registry_dir = work.path().join("registry");
    std::fs::create_dir_all(&registry_dir).unwrap();
    std::fs::write(
        registry_dir.join("config.yml"),
        format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {at}\n",
            registry_dir.join("data").display()
        ),
    )
    .unwrap();
    let mut registry = Command::new("docker-registry")
        .arg("serve")
        .arg(registry_dir.join("config.yml"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("docker-registry (apt-get install docker-registry)");
    std::thread::sleep(std::time::Duration::from_millis(500));
    let (first_bytes, second_bytes) = make_images(work.path(), &at);

    let root = work.path().join("banger");
    let config = root.join("etc/banger/config.toml");
    std::fs::create_dir_all(config.parent().unwrap()).unwrap();
    std::fs::write(
        &config,
        format!(
            "guest_binary = \"{}\"\n[network]\nenabled = false\n",
            guest.display()
        ),
    )
    .unwrap();
    let loaded = bangerd::config::Config::load(&bangerd::config::Overrides {
        root: Some(root.clone()),
        config: Some(config),
        ..Default::default()
    })
    .unwrap();
    let socket = loaded.socket.clone();
    let daemon = bangerd::server::start(loaded).await.unwrap();

    let (mut banger_ms, mut floor_ms, mut second_ms) = (Vec::new(), Vec::new(), Vec::new());
    let mut second_downloaded = 0;
    let mut first_downloaded = 0;
    let mut first_stages = Vec::new();
    for _ in 0..runs {
        let (ms, bytes, stages) = pull(&socket, &format!("{at}/bench:first"), "first").await;
        banger_ms.push(ms);
        first_downloaded = bytes;
        first_stages = stages;
        let (ms, bytes, _) = pull(&socket, &format!("{at}/bench:second"), "second").await;
        second_ms.push(ms);
        second_downloaded = bytes;
        for name in ["first", "second"] {
            let (status, _) =
                support::call(&socket, "DELETE", &format!("/v1/images/{name}"), None).await;
            assert_eq!(status, 200);
        }
        floor_ms.push(floor(work.path(), &at, "first"));
    }
    let (b, f, s) = (
        median(&mut banger_ms),
        median(&mut floor_ms),
        median(&mut second_ms),
    );
    let mib = |n: u64| n as f64 / (1 << 20) as f64;
    println!("\npull of a {:.0} MiB three-layer image from a registry on this host (median of {runs}; nothing cached at the start of each run)\n", mib(first_bytes));
    println!("| path | ms | ratio to floor |");
    println!("|---|---:|---:|");
    println!("| floor: skopeo copy + tar -x per layer + mkfs.ext4 -d | {f:.0} | 1.00 |");
    println!(
        "| banger image pull (to a bootable image) | {b:.0} | {:.2} |",
        b / f
    );
    println!(
        "| banger image pull, second image on the same base | {s:.0} | {:.2} |",
        s / f
    );
    println!("\n| image | compressed size MiB | downloaded MiB |");
    println!("|---|---:|---:|");
    println!(
        "| first | {:.1} | {:.1} |",
        mib(first_bytes),
        mib(first_downloaded)
    );
    println!(
        "| second (shares 2 of 3 layers) | {:.1} | {:.1} |",
        mib(second_bytes),
        mib(second_downloaded)
    );
    println!("\n| stage of the last first-image pull | ms |");
    println!("|---|---:|");
    for (stage, ms) in &first_stages {
        println!("| {stage} | {ms:.0} |");
    }
    let _ = daemon.shutdown.send(true);
    let _ = daemon.task.await;
    let _ = registry.kill();
    let _ = registry.wait();
}
