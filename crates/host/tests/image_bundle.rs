//! Bundles end to end: a fake image directory exported and unpacked back,
//! and hand-made bundles that are damaged, truncated or hostile.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use banger_core::progress::{NoProgress, Progress};
use banger_host::caller::Caller;
use banger_host::image::bundle::{self, BundleError};
use banger_host::image::digest::{self, DigestError};
use banger_proto::image::{ArtifactRole, Manifest, Origin, MANIFEST_FORMAT};

/// Exports as the daemon does for a caller: into a new file, published
/// only when the export succeeded (dropped, and so removed, otherwise).
async fn export_to(image: &Path, out: &Path, progress: &dyn Progress) -> Result<(), BundleError> {
    let new = Caller::ROOT.create_new(out).unwrap();
    bundle::export(image, new.file().unwrap(), out, progress).await?;
    new.publish().unwrap();
    Ok(())
}

/// Deterministic bytes that do not compress.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

/// A small image: every role, one file of odd size, one with holes and a
/// trailing run of zeros, one all zeros.
fn fake_image(dir: &Path) -> Manifest {
    std::fs::create_dir_all(dir).unwrap();
    let mut rootfs = vec![0u8; 64 * 1024];
    rootfs[..4096].copy_from_slice(&noise(4096, 1));
    rootfs[40_000..40_100].copy_from_slice(&noise(100, 2));
    let files: [(ArtifactRole, Vec<u8>); 5] = [
        (ArtifactRole::Kernel, noise(4096, 3)),
        (ArtifactRole::Vmlinux, noise(8192, 4)),
        (ArtifactRole::Initrd, noise(3000, 5)),
        (ArtifactRole::Rootfs, rootfs),
        (ArtifactRole::WorkSeed, vec![0u8; 16 * 1024]),
    ];
    for (role, bytes) in &files {
        std::fs::write(dir.join(role.file_name()), bytes).unwrap();
    }
    let manifest = Manifest {
        format: MANIFEST_FORMAT,
        name: "fake".into(),
        kernel_version: Some("6.1.0-test".into()),
        oci: None,
        sshd: None,
        lineage: Vec::new(),
        origin: Origin {
            method: "build".into(),
            from: "debian bookworm".into(),
            packages: vec!["curl".into()],
            banger_version: "0.1.0".into(),
            made_at: "2024-01-01T00:00:00Z".into(),
        },
        artifacts: files
            .iter()
            .map(|(role, _)| digest::describe(dir, *role).unwrap())
            .collect(),
    };
    digest::write_manifest(dir, &manifest).unwrap();
    manifest
}

/// One entry of a hand-made bundle; the name is written raw into the
/// header, so `..` and absolute paths get through.
struct Entry {
    name: String,
    data: Vec<u8>,
    kind: tar::EntryType,
    link: Option<&'static str>,
}

fn file(name: &str, data: Vec<u8>) -> Entry {
    Entry {
        name: name.into(),
        data,
        kind: tar::EntryType::Regular,
        link: None,
    }
}

fn manifest_entry(manifest: &Manifest) -> Entry {
    let mut text = serde_json::to_vec_pretty(manifest).unwrap();
    text.push(b'\n');
    file("manifest.json", text)
}

/// The manifest and every artifact of `image`, in manifest order.
fn good_entries(image: &Path, manifest: &Manifest) -> Vec<Entry> {
    let mut entries = vec![manifest_entry(manifest)];
    for artifact in &manifest.artifacts {
        entries.push(file(
            &artifact.file,
            std::fs::read(image.join(&artifact.file)).unwrap(),
        ));
    }
    entries
}

fn write_bundle(path: &Path, entries: &[Entry], compress: bool) {
    let mut raw = Vec::new();
    {
        let mut builder = tar::Builder::new(&mut raw);
        for entry in entries {
            let mut header = tar::Header::new_gnu();
            let name = entry.name.as_bytes();
            header.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name);
            header.set_size(entry.data.len() as u64);
            header.set_mode(0o644);
            header.set_entry_type(entry.kind);
            if let Some(link) = entry.link {
                header.set_link_name(link).unwrap();
            }
            header.set_cksum();
            builder.append(&header, &entry.data[..]).unwrap();
        }
        builder.finish().unwrap();
    }
    let bytes = if compress {
        zstd::encode_all(&raw[..], 3).unwrap()
    } else {
        raw
    };
    std::fs::write(path, bytes).unwrap();
}

fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

/// A fresh empty staging directory under `root`.
fn staging(root: &Path, name: &str) -> PathBuf {
    let dir = root.join(name);
    std::fs::create_dir(&dir).unwrap();
    dir
}

/// One line, lowercase first letter, no trailing period.
fn assert_plain_message(message: &str) {
    assert!(!message.contains('\n'), "{message}");
    assert!(!message.ends_with('.'), "{message}");
    let first = message.chars().next().unwrap();
    assert!(!first.is_uppercase(), "{message}");
}

#[derive(Default)]
struct Recorder {
    bytes: Mutex<Vec<(u64, Option<u64>)>>,
}

impl Progress for Recorder {
    fn stage(&self, _name: &str) {}
    fn bytes(&self, done: u64, total: Option<u64>) {
        self.bytes.lock().unwrap().push((done, total));
    }
}

impl Recorder {
    fn assert_counts_up_to(&self, total: u64) {
        let bytes = self.bytes.lock().unwrap();
        assert!(!bytes.is_empty());
        assert!(bytes.windows(2).all(|w| w[0].0 <= w[1].0), "{bytes:?}");
        assert!(bytes.iter().all(|(_, t)| *t == Some(total)), "{bytes:?}");
        assert_eq!(bytes.last().unwrap().0, total);
    }
}

#[tokio::test]
async fn export_then_unpack_gives_back_the_same_image() {
    let root = tempfile::tempdir().unwrap();
    let image = root.path().join("image");
    let manifest = fake_image(&image);
    let out = root.path().join("fake.tar.zst");

    let exporting = Recorder::default();
    export_to(&image, &out, &exporting).await.unwrap();
    exporting.assert_counts_up_to(manifest.artifacts.iter().map(|a| a.bytes).sum());
    assert_eq!(listing(root.path()), ["fake.tar.zst", "image"]);
    let bytes = std::fs::read(&out).unwrap();
    assert_eq!(bytes[..4], [0x28, 0xb5, 0x2f, 0xfd], "zstd magic");

    // Manifest first, then the artifacts, flat, nothing else.
    let decoded = zstd::decode_all(&bytes[..]).unwrap();
    let mut archive = tar::Archive::new(&decoded[..]);
    let names: Vec<String> = archive
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    let mut expected = vec!["manifest.json".to_string()];
    expected.extend(manifest.artifacts.iter().map(|a| a.file.clone()));
    assert_eq!(names, expected);

    let staged = staging(root.path(), "staging");
    let unpacking = Recorder::default();
    let got = bundle::unpack(&out, &staged, &unpacking).await.unwrap();
    unpacking.assert_counts_up_to(bytes.len() as u64);
    assert_eq!(got, manifest);
    assert_eq!(digest::read_manifest(&staged).unwrap(), manifest);
    digest::verify(&staged, &manifest).unwrap();
    assert_eq!(listing(&staged), listing(&image));
    // Runs of zeros were written as holes.
    use std::os::unix::fs::MetadataExt;
    let seed = std::fs::metadata(staged.join("work-seed.ext4")).unwrap();
    assert_eq!(seed.len(), 16 * 1024);
    assert!(seed.blocks() * 512 < seed.len(), "{} blocks", seed.blocks());
    for name in listing(&image) {
        assert_eq!(
            std::fs::read(staged.join(&name)).unwrap(),
            std::fs::read(image.join(&name)).unwrap(),
            "{name}"
        );
    }
}

#[tokio::test]
async fn a_plain_tar_bundle_is_read_too() {
    let root = tempfile::tempdir().unwrap();
    let image = root.path().join("image");
    let manifest = fake_image(&image);
    let tar_file = root.path().join("fake.tar");
    write_bundle(&tar_file, &good_entries(&image, &manifest), false);
    let staged = staging(root.path(), "staging");
    let got = bundle::unpack(&tar_file, &staged, &NoProgress)
        .await
        .unwrap();
    assert_eq!(got, manifest);
    digest::verify(&staged, &manifest).unwrap();
}

#[tokio::test]
async fn a_flipped_byte_is_a_digest_error_naming_the_file_and_nothing_stays() {
    let root = tempfile::tempdir().unwrap();
    let image = root.path().join("image");
    let manifest = fake_image(&image);
    let mut entries = good_entries(&image, &manifest);
    let rootfs = entries
        .iter_mut()
        .find(|e| e.name == "rootfs.ext4")
        .unwrap();
    rootfs.data[1000] ^= 0x01;
    let bad = root.path().join("bad.tar.zst");
    write_bundle(&bad, &entries, true);

    let staged = staging(root.path(), "staging");
    let err = bundle::unpack(&bad, &staged, &NoProgress)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, BundleError::Digest(DigestError::Mismatch { file, .. }) if file == "rootfs.ext4"),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(
        message.starts_with("rootfs.ext4: sha256 mismatch: expected "),
        "{message}"
    );
    assert_plain_message(&message);
    // Nothing in staging looks like an image: no manifest, no artifacts.
    assert!(listing(&staged).is_empty(), "{:?}", listing(&staged));
    assert!(digest::read_manifest(&staged).is_err());
    assert!(digest::verify(&staged, &manifest).is_err());
}

#[tokio::test]
async fn a_truncated_bundle_is_a_clean_error() {
    let root = tempfile::tempdir().unwrap();
    let image = root.path().join("image");
    let manifest = fake_image(&image);
    let whole = root.path().join("fake.tar.zst");
    export_to(&image, &whole, &NoProgress).await.unwrap();
    let bytes = std::fs::read(&whole).unwrap();
    let plain = root.path().join("fake.tar");
    write_bundle(&plain, &good_entries(&image, &manifest), false);
    let plain_bytes = std::fs::read(&plain).unwrap();

    let cuts = [
        (&bytes, bytes.len() / 4),
        (&bytes, bytes.len() / 2),
        (&bytes, bytes.len() * 3 / 4),
        (&plain_bytes, plain_bytes.len() / 2),
        (&plain_bytes, 700),
    ];
    for (i, (source, cut)) in cuts.into_iter().enumerate() {
        let cut_file = root.path().join(format!("cut-{i}"));
        std::fs::write(&cut_file, &source[..cut]).unwrap();
        let staged = staging(root.path(), &format!("staging-{i}"));
        let err = bundle::unpack(&cut_file, &staged, &NoProgress)
            .await
            .unwrap_err();
        let message = err.to_string();
        assert!(message.contains("truncated"), "cut {i}: {message}");
        assert_plain_message(&message);
        assert!(
            listing(&staged).is_empty(),
            "cut {i}: {:?}",
            listing(&staged)
        );
    }

    // Cut inside an artifact of a plain tar: the file and the counts are
    // named.
    let cut_file = root.path().join("cut-in-kernel");
    let manifest_len = serde_json::to_vec_pretty(&manifest).unwrap().len() + 1;
    // manifest header, its body padded to 512, the kernel's header
    let kernel_start = 512 + manifest_len.div_ceil(512) * 512 + 512;
    std::fs::write(&cut_file, &plain_bytes[..kernel_start + 1000]).unwrap();
    let staged = staging(root.path(), "staging-kernel");
    let err = bundle::unpack(&cut_file, &staged, &NoProgress)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "the bundle is truncated: kernel stops after 1000 of 4096 bytes"
    );
}

#[tokio::test]
async fn a_compressed_bundle_cut_inside_an_artifact_names_it() {
    let root = tempfile::tempdir().unwrap();
    let image = root.path().join("image");
    let mut manifest = fake_image(&image);
    // A rootfs that does not compress and spans many zstd blocks.
    std::fs::write(image.join("rootfs.ext4"), noise(2 << 20, 7)).unwrap();
    for artifact in &mut manifest.artifacts {
        *artifact = digest::describe(&image, artifact.role).unwrap();
    }
    digest::write_manifest(&image, &manifest).unwrap();
    let whole = root.path().join("big.tar.zst");
    export_to(&image, &whole, &NoProgress).await.unwrap();
    let bytes = std::fs::read(&whole).unwrap();
    let cut_file = root.path().join("big-cut.tar.zst");
    std::fs::write(&cut_file, &bytes[..bytes.len() / 2]).unwrap();
    let staged = staging(root.path(), "staging");
    let err = bundle::unpack(&cut_file, &staged, &NoProgress)
        .await
        .unwrap_err();
    let message = err.to_string();
    assert!(
        message.starts_with("the bundle is truncated or damaged in rootfs.ext4 after "),
        "{message}"
    );
    assert!(message.contains(" of 2097152 bytes: "), "{message}");
    assert_plain_message(&message);
    assert!(listing(&staged).is_empty(), "{:?}", listing(&staged));
}

#[tokio::test]
async fn a_missing_artifact_is_named() {
    let root = tempfile::tempdir().unwrap();
    let image = root.path().join("image");
    let manifest = fake_image(&image);
    let entries: Vec<Entry> = good_entries(&image, &manifest)
        .into_iter()
        .filter(|e| e.name != "rootfs.ext4")
        .collect();
    let bad = root.path().join("bad.tar.zst");
    write_bundle(&bad, &entries, true);
    let staged = staging(root.path(), "staging");
    let err = bundle::unpack(&bad, &staged, &NoProgress)
        .await
        .unwrap_err();
    assert!(matches!(&err, BundleError::Missing { file } if file == "rootfs.ext4"));
    assert_eq!(
        err.to_string(),
        "the bundle lacks rootfs.ext4: it is truncated or incomplete"
    );
    assert!(listing(&staged).is_empty());
}

#[tokio::test]
async fn unsafe_and_unexpected_entries_are_refused() {
    let root = tempfile::tempdir().unwrap();
    let image = root.path().join("image");
    let manifest = fake_image(&image);
    let hostile: Vec<(&str, Entry, &str)> = vec![
        (
            "parent",
            file("../evil", b"x".to_vec()),
            "\"../evil\" is not a plain file name",
        ),
        (
            "absolute",
            file(&format!("{}/evil", root.path().display()), b"x".to_vec()),
            "is not a plain file name",
        ),
        (
            "nested",
            file("sub/kernel", b"x".to_vec()),
            "is not a plain file name",
        ),
        (
            "unexpected",
            file("evil", b"x".to_vec()),
            "unexpected entry \"evil\"",
        ),
        (
            "second manifest",
            manifest_entry(&manifest),
            "unexpected entry \"manifest.json\"",
        ),
        (
            "symlink",
            Entry {
                name: "initrd".into(),
                data: vec![],
                kind: tar::EntryType::Symlink,
                link: Some("/etc/passwd"),
            },
            "\"initrd\" is not a regular file",
        ),
        (
            "hard link",
            Entry {
                name: "initrd".into(),
                data: vec![],
                kind: tar::EntryType::Link,
                link: Some("kernel"),
            },
            "\"initrd\" is not a regular file",
        ),
        (
            "device",
            Entry {
                name: "initrd".into(),
                data: vec![],
                kind: tar::EntryType::Char,
                link: None,
            },
            "\"initrd\" is not a regular file",
        ),
        (
            "directory",
            Entry {
                name: "initrd".into(),
                data: vec![],
                kind: tar::EntryType::Directory,
                link: None,
            },
            "\"initrd\" is not a regular file",
        ),
        (
            "duplicate",
            file("kernel", std::fs::read(image.join("kernel")).unwrap()),
            "kernel appears twice",
        ),
        (
            "oversized",
            file("initrd", noise(3001, 5)),
            "initrd is 3001 bytes, the manifest says 3000",
        ),
    ];
    for (i, (what, bad_entry, expected)) in hostile.into_iter().enumerate() {
        // manifest, kernel, the hostile entry, then the rest.
        let mut entries = good_entries(&image, &manifest);
        let rest = entries.split_off(2);
        entries.push(bad_entry);
        entries.extend(rest.into_iter().filter(|e| e.name != "initrd"));
        let bad = root.path().join(format!("bad-{i}.tar.zst"));
        write_bundle(&bad, &entries, true);
        let staged = staging(root.path(), &format!("staging-{i}"));
        let err = bundle::unpack(&bad, &staged, &NoProgress)
            .await
            .unwrap_err();
        assert!(matches!(err, BundleError::Foreign(_)), "{what}: {err:?}");
        let message = err.to_string();
        assert!(
            message.starts_with("not a banger bundle: "),
            "{what}: {message}"
        );
        assert!(message.contains(expected), "{what}: {message}");
        assert_plain_message(&message);
        assert!(listing(&staged).is_empty(), "{what}");
        assert!(!root.path().join("evil").exists(), "{what}");
    }
}

#[tokio::test]
async fn the_manifest_must_come_first() {
    let root = tempfile::tempdir().unwrap();
    let image = root.path().join("image");
    let manifest = fake_image(&image);
    let mut entries = good_entries(&image, &manifest);
    entries.swap(0, 1);
    let bad = root.path().join("bad.tar.zst");
    write_bundle(&bad, &entries, true);
    let staged = staging(root.path(), "staging");
    let err = bundle::unpack(&bad, &staged, &NoProgress)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "not a banger bundle: manifest.json is not its first entry"
    );
    assert!(listing(&staged).is_empty());
}

#[tokio::test]
async fn a_bundle_from_a_newer_banger_asks_for_an_upgrade() {
    let root = tempfile::tempdir().unwrap();
    let image = root.path().join("image");
    let mut manifest = fake_image(&image);
    manifest.format = MANIFEST_FORMAT + 1;
    let bad = root.path().join("new.tar.zst");
    write_bundle(&bad, &good_entries(&image, &manifest), true);
    let staged = staging(root.path(), "staging");
    let err = bundle::unpack(&bad, &staged, &NoProgress)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("upgrade banger"), "{err}");
}

#[tokio::test]
async fn empty_and_foreign_files_are_refused() {
    let root = tempfile::tempdir().unwrap();
    let empty = root.path().join("empty");
    std::fs::write(&empty, b"").unwrap();
    let staged = staging(root.path(), "staging");
    let err = bundle::unpack(&empty, &staged, &NoProgress)
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "not a banger bundle: it is empty");

    let junk = root.path().join("junk");
    std::fs::write(&junk, noise(5000, 9)).unwrap();
    let err = bundle::unpack(&junk, &staged, &NoProgress)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "not a banger bundle: it is neither zstd-compressed nor a tar archive"
    );

    // A zstd stream of junk: not tar inside.
    let not_tar = root.path().join("not-tar");
    std::fs::write(&not_tar, zstd::encode_all(&noise(5000, 11)[..], 3).unwrap()).unwrap();
    let err = bundle::unpack(&not_tar, &staged, &NoProgress)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "not a banger bundle: it is zstd-compressed but holds no tar archive"
    );

    // zstd magic, then junk; a tar whose second header is junk: the
    // decoder's or parser's complaint, kept to one printable line.
    let mut bad_zstd = vec![0x28, 0xb5, 0x2f, 0xfd];
    bad_zstd.extend(noise(5000, 10));
    let image = root.path().join("image");
    let manifest = fake_image(&image);
    let mut tar_junk = Vec::new();
    let tar_path = root.path().join("good.tar");
    write_bundle(&tar_path, &good_entries(&image, &manifest), false);
    let good = std::fs::read(&tar_path).unwrap();
    let manifest_len = serde_json::to_vec_pretty(&manifest).unwrap().len() + 1;
    let second_header = 512 + manifest_len.div_ceil(512) * 512;
    tar_junk.extend_from_slice(&good[..second_header]);
    tar_junk.extend(noise(2048, 12));
    for (name, bytes) in [("bad-zstd", bad_zstd), ("tar-junk", tar_junk)] {
        let path = root.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let err = bundle::unpack(&path, &staged, &NoProgress)
            .await
            .unwrap_err();
        assert!(
            matches!(err, BundleError::Damaged { .. }),
            "{name}: {err:?}"
        );
        let message = err.to_string();
        assert_plain_message(&message);
        assert!(
            message.chars().all(|c| c == ' ' || c.is_ascii_graphic()),
            "{name}: {message}"
        );
        assert!(message.len() < 300, "{name}: {message}");
    }
    assert!(listing(&staged).is_empty());

    let missing = bundle::unpack(&root.path().join("nope"), &staged, &NoProgress)
        .await
        .unwrap_err();
    assert!(missing.to_string().starts_with("cannot read "), "{missing}");
}

#[tokio::test]
async fn export_refuses_a_damaged_image_and_leaves_nothing() {
    let root = tempfile::tempdir().unwrap();
    let image = root.path().join("image");
    fake_image(&image);
    let mut rootfs = std::fs::OpenOptions::new()
        .write(true)
        .open(image.join("rootfs.ext4"))
        .unwrap();
    rootfs.write_all(b"X").unwrap();
    drop(rootfs);
    let out = root.path().join("fake.tar.zst");
    let err = export_to(&image, &out, &NoProgress).await.unwrap_err();
    assert!(
        err.to_string()
            .starts_with("rootfs.ext4: sha256 mismatch: expected "),
        "{err}"
    );
    assert_eq!(listing(root.path()), ["image"]);

    std::fs::write(image.join("kernel"), b"short").unwrap();
    let err = export_to(&image, &out, &NoProgress).await.unwrap_err();
    assert_eq!(err.to_string(), "kernel: 5 bytes, the manifest says 4096");
    assert_eq!(listing(root.path()), ["image"]);
}
