use std::os::unix::fs::{MetadataExt, PermissionsExt};

use super::*;

/// One tar entry; the name is written raw so tests can make hostile ones.
struct E<'a> {
    path: &'a str,
    kind: EntryType,
    mode: u32,
    uid: u64,
    data: &'a [u8],
    link: &'a str,
}

fn file<'a>(path: &'a str, data: &'a [u8]) -> E<'a> {
    E {
        path,
        kind: EntryType::Regular,
        mode: 0o644,
        uid: 0,
        data,
        link: "",
    }
}

fn dir(path: &str) -> E<'_> {
    E {
        kind: EntryType::Directory,
        mode: 0o755,
        ..file(path, b"")
    }
}

fn link<'a>(path: &'a str, kind: EntryType, target: &'a str) -> E<'a> {
    E {
        kind,
        mode: 0o777,
        link: target,
        ..file(path, b"")
    }
}

fn layer(entries: &[E]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for e in entries {
        let mut header = tar::Header::new_gnu();
        header.as_old_mut().name[..e.path.len()].copy_from_slice(e.path.as_bytes());
        header.set_entry_type(e.kind);
        header.set_mode(e.mode);
        header.set_uid(e.uid);
        header.set_gid(e.uid);
        header.set_size(e.data.len() as u64);
        header.set_mtime(1_700_000_000);
        if !e.link.is_empty() {
            header.as_old_mut().linkname[..e.link.len()].copy_from_slice(e.link.as_bytes());
        }
        header.set_cksum();
        builder.append(&header, e.data).unwrap();
    }
    builder.into_inner().unwrap()
}

fn apply_layer(tree: &Path, entries: &[E]) -> Result<LayerStats, OciError> {
    apply_tar(&layer(entries)[..], tree, "test")
}

#[test]
fn layers_stack_with_whiteouts_and_opaque_directories() {
    let dir_ = tempfile::tempdir().unwrap();
    let tree = dir_.path();
    apply_layer(
        tree,
        &[
            dir("etc/"),
            file("etc/gone", b"lower"),
            file("etc/kept", b"lower"),
            dir("opt/app/"),
            file("opt/app/old", b"lower"),
            dir("opt/app/sub/"),
        ],
    )
    .unwrap();
    let stats = apply_layer(
        tree,
        &[
            file("etc/.wh.gone", b""),
            file("opt/app/new", b"upper"),
            file("opt/app/.wh..wh..opq", b""),
            file("opt/app/later", b"upper"),
        ],
    )
    .unwrap();
    assert_eq!(stats.whiteouts, 2);
    assert!(!tree.join("etc/gone").exists());
    assert!(!tree.join("etc/.wh.gone").exists());
    assert_eq!(std::fs::read(tree.join("etc/kept")).unwrap(), b"lower");
    let mut left: Vec<String> = std::fs::read_dir(tree.join("opt/app"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["later", "new"]);
}

#[test]
fn owners_modes_links_and_replacements_are_kept() {
    let dir_ = tempfile::tempdir().unwrap();
    let tree = dir_.path();
    let setuid = E {
        mode: 0o4755,
        ..file("usr/bin/su", b"#!")
    };
    let owned = E {
        uid: 1000,
        mode: 0o600,
        ..file("home/user/notes", b"mine")
    };
    apply_layer(
        tree,
        &[
            setuid,
            owned,
            link("usr/bin/su2", EntryType::Link, "usr/bin/su"),
            link("etc/alt", EntryType::Symlink, "/usr/bin/su"),
            file("etc/was-a-file", b"x"),
        ],
    )
    .unwrap();
    // A later layer turns a file into a directory and a link into a file.
    apply_layer(
        tree,
        &[dir("etc/was-a-file/"), file("etc/alt", b"now a file")],
    )
    .unwrap();
    let su = std::fs::metadata(tree.join("usr/bin/su")).unwrap();
    assert_eq!(su.permissions().mode() & 0o7777, 0o4755);
    let su2 = std::fs::metadata(tree.join("usr/bin/su2")).unwrap();
    assert_eq!(su.ino(), su2.ino(), "hard link kept");
    let notes = std::fs::metadata(tree.join("home/user/notes")).unwrap();
    assert_eq!(
        (notes.uid(), notes.gid(), notes.mode() & 0o777),
        (1000, 1000, 0o600)
    );
    assert!(tree.join("etc/was-a-file").is_dir());
    assert_eq!(std::fs::read(tree.join("etc/alt")).unwrap(), b"now a file");
}

#[test]
fn nothing_is_written_outside_the_tree() {
    let base = tempfile::tempdir().unwrap();
    let tree = base.path().join("tree");
    let outside = base.path().join("outside");
    std::fs::create_dir_all(&tree).unwrap();
    std::fs::create_dir_all(&outside).unwrap();

    let err = apply_layer(&tree, &[file("../outside/x", b"escape")]).unwrap_err();
    assert!(matches!(err, OciError::UnsafeLayer { .. }), "{err}");
    assert!(err.to_string().contains(".."), "{err}");

    let target = outside.to_string_lossy().into_owned();
    let err = apply_layer(
        &tree,
        &[
            link("etc", EntryType::Symlink, &target),
            file("etc/passwd", b"root::0:0::/:/bin/sh"),
        ],
    )
    .unwrap_err();
    assert!(err.to_string().contains("symbolic link /etc"), "{err}");
    // The same through a link a lower layer planted.
    let err = apply_layer(&tree, &[file("etc/shadow", b"x")]).unwrap_err();
    assert!(matches!(err, OciError::UnsafeLayer { .. }), "{err}");

    let err = apply_layer(&tree, &[link("hl", EntryType::Link, "etc/x")]).unwrap_err();
    assert!(err.to_string().contains("symbolic link /etc"), "{err}");
    let err = apply_layer(&tree, &[link("hl", EntryType::Link, "../outside/y")]).unwrap_err();
    assert!(matches!(err, OciError::UnsafeLayer { .. }), "{err}");

    // An absolute entry path lands inside the tree.
    apply_layer(&tree, &[file("/abs", b"in")]).unwrap();
    assert_eq!(std::fs::read(tree.join("abs")).unwrap(), b"in");
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
}

#[test]
fn compressed_layers_are_read() {
    let dir_ = tempfile::tempdir().unwrap();
    let raw = layer(&[file("a", b"gz")]);
    let gz = dir_.path().join("l.gz");
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut enc, &raw).unwrap();
    std::fs::write(&gz, enc.finish().unwrap()).unwrap();
    let zst = dir_.path().join("l.zst");
    std::fs::write(
        &zst,
        zstd::encode_all(&layer(&[file("b", b"zs")])[..], 3).unwrap(),
    )
    .unwrap();
    let tree = dir_.path().join("tree");
    std::fs::create_dir(&tree).unwrap();
    apply(&gz, Compression::Gzip, &tree, "gz").unwrap();
    apply(&zst, Compression::Zstd, &tree, "zst").unwrap();
    assert_eq!(std::fs::read(tree.join("a")).unwrap(), b"gz");
    assert_eq!(std::fs::read(tree.join("b")).unwrap(), b"zs");
    let err = apply(&zst, Compression::Gzip, &tree, "zst").unwrap_err();
    assert!(err.to_string().contains("layer zst"), "{err}");
}

#[test]
fn sparse_files_are_files() {
    use std::io::{Seek, Write};
    let dir_ = tempfile::tempdir().unwrap();
    let sparse = dir_.path().join("sparse");
    let mut f = std::fs::File::create(&sparse).unwrap();
    f.set_len(8 << 20).unwrap();
    f.seek(std::io::SeekFrom::Start(4 << 20)).unwrap();
    f.write_all(b"middle").unwrap();
    drop(f);
    let mut builder = tar::Builder::new(Vec::new());
    builder.sparse(true);
    builder.append_path_with_name(&sparse, "var/disk").unwrap();
    let bytes = builder.into_inner().unwrap();
    let mut archive = tar::Archive::new(&bytes[..]);
    let first = archive.entries().unwrap().next().unwrap().unwrap();
    assert!(first.header().entry_type().is_gnu_sparse());
    drop(first);
    let tree = dir_.path().join("tree");
    std::fs::create_dir(&tree).unwrap();
    apply_tar(&bytes[..], &tree, "sparse").unwrap();
    let got = std::fs::read(tree.join("var/disk")).unwrap();
    assert_eq!(got.len(), 8 << 20);
    assert_eq!(&got[4 << 20..(4 << 20) + 6], b"middle");
}
