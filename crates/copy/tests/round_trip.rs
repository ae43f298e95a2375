//! Pack and unpack on real directories: content, modes, links, landing
//! rules, and archives that try to leave the destination.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use banger_copy::{pack, unpack, CopyError, Owner, UnpackOptions};

const AS_UNPACKER: UnpackOptions = UnpackOptions {
    owner: Owner::Unpacker,
    top: None,
};

fn tree(root: &Path) {
    std::fs::create_dir_all(root.join("sub/deeper")).unwrap();
    std::fs::write(root.join("a.txt"), "alpha").unwrap();
    std::fs::write(root.join("sub/deeper/run.sh"), "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(
        root.join("sub/deeper/run.sh"),
        std::fs::Permissions::from_mode(0o750),
    )
    .unwrap();
    std::os::unix::fs::symlink("../a.txt", root.join("sub/link")).unwrap();
    std::fs::create_dir(root.join("locked")).unwrap();
    std::fs::write(root.join("locked/inside"), "x").unwrap();
    std::fs::set_permissions(root.join("locked"), std::fs::Permissions::from_mode(0o555)).unwrap();
}

#[test]
fn a_tree_round_trips_with_modes_and_links() {
    let src = tempfile::tempdir().unwrap();
    let dst = tempfile::tempdir().unwrap();
    tree(&src.path().join("proj"));
    let bytes = pack(&src.path().join("proj"), Vec::new()).unwrap();
    // Into an existing directory: under its own name.
    unpack(&bytes[..], dst.path(), AS_UNPACKER).unwrap();
    let out = dst.path().join("proj");
    assert_eq!(std::fs::read_to_string(out.join("a.txt")).unwrap(), "alpha");
    let run = std::fs::metadata(out.join("sub/deeper/run.sh")).unwrap();
    assert_eq!(run.mode() & 0o777, 0o750);
    assert_eq!(
        std::fs::read_link(out.join("sub/link")).unwrap(),
        Path::new("../a.txt")
    );
    assert_eq!(
        std::fs::metadata(out.join("locked")).unwrap().mode() & 0o777,
        0o555
    );
    assert_eq!(
        std::fs::read_to_string(out.join("locked/inside")).unwrap(),
        "x"
    );
    // Under a new name: the destination's.
    unpack(&bytes[..], &dst.path().join("renamed"), AS_UNPACKER).unwrap();
    assert!(dst.path().join("renamed/sub/deeper/run.sh").exists());
    // Again onto itself: replaced in place.
    unpack(&bytes[..], dst.path(), AS_UNPACKER).unwrap();
    for dir in [
        out.join("locked"),
        dst.path().join("renamed/locked"),
        src.path().join("proj/locked"),
    ] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

#[test]
fn a_file_lands_as_named_and_a_directory_never_onto_a_file() {
    let src = tempfile::tempdir().unwrap();
    let dst = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("f"), "one").unwrap();
    let file = pack(&src.path().join("f"), Vec::new()).unwrap();
    unpack(&file[..], &dst.path().join("g"), AS_UNPACKER).unwrap();
    assert_eq!(
        std::fs::read_to_string(dst.path().join("g")).unwrap(),
        "one"
    );
    // A link at the destination is replaced, not written through.
    let victim = dst.path().join("victim");
    std::fs::write(&victim, "keep").unwrap();
    std::os::unix::fs::symlink(&victim, dst.path().join("h")).unwrap();
    unpack(&file[..], &dst.path().join("h"), AS_UNPACKER).unwrap();
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
    assert_eq!(
        std::fs::read_to_string(dst.path().join("h")).unwrap(),
        "one"
    );
    std::fs::create_dir(src.path().join("d")).unwrap();
    let dir = pack(&src.path().join("d"), Vec::new()).unwrap();
    let err = unpack(&dir[..], &dst.path().join("g"), AS_UNPACKER).unwrap_err();
    assert!(matches!(err, CopyError::DirectoryOntoFile(_)), "{err}");
}

#[test]
fn owners_are_kept_or_set() {
    if !nix::unistd::geteuid().is_root() {
        panic!("this test changes owners: run it as root");
    }
    let src = tempfile::tempdir().unwrap();
    let dst = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("f"), "x").unwrap();
    nix::unistd::chown(&src.path().join("f"), Some(1234.into()), Some(2345.into())).unwrap();
    let bytes = pack(&src.path().join("f"), Vec::new()).unwrap();
    let keep = UnpackOptions {
        owner: Owner::Keep,
        top: None,
    };
    unpack(&bytes[..], &dst.path().join("kept"), keep).unwrap();
    let kept = std::fs::metadata(dst.path().join("kept")).unwrap();
    assert_eq!((kept.uid(), kept.gid()), (1234, 2345));
    let set = UnpackOptions {
        owner: Owner::Set(77, 88),
        top: None,
    };
    unpack(&bytes[..], &dst.path().join("set"), set).unwrap();
    let set = std::fs::metadata(dst.path().join("set")).unwrap();
    assert_eq!((set.uid(), set.gid()), (77, 88));
}

/// A hostile archive: raw headers with names `pack` never writes.
fn archive(entries: &[(&str, tar::EntryType, &str)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, kind, link) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(*kind);
        header.set_mode(0o644);
        header.set_size(if kind.is_file() { 1 } else { 0 });
        {
            let raw = header.as_old_mut();
            raw.name[..name.len()].copy_from_slice(name.as_bytes());
            raw.linkname[..link.len()].copy_from_slice(link.as_bytes());
        }
        header.set_cksum();
        let data: &[u8] = if kind.is_file() { b"x" } else { b"" };
        builder.append(&header, data).unwrap();
    }
    builder.into_inner().unwrap()
}

#[test]
fn hostile_archives_write_nothing_outside() {
    use tar::EntryType::{Directory, Link, Regular, Symlink};
    let dst = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let into = dst.path().join("in");
    std::fs::create_dir(&into).unwrap();
    let cases: Vec<Vec<(&str, tar::EntryType, &str)>> = vec![
        vec![("top", Directory, ""), ("top/../../escape", Regular, "")],
        vec![("/abs", Regular, "")],
        vec![("top", Directory, ""), ("other", Regular, "")],
        vec![("top", Directory, ""), ("top/hard", Link, "/etc/passwd")],
    ];
    for entries in cases {
        let err = unpack(&archive(&entries)[..], &into, AS_UNPACKER).unwrap_err();
        assert_eq!(err.kind(), "bad_archive", "{entries:?}: {err}");
    }
    // A link, then a file through it.
    let through = outside.path().display().to_string();
    let entries = [
        ("top", Directory, ""),
        ("top/l", Symlink, through.as_str()),
        ("top/l/owned", Regular, ""),
    ];
    let err = unpack(&archive(&entries)[..], &into, AS_UNPACKER).unwrap_err();
    assert_eq!(err.kind(), "bad_archive", "{err}");
    assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
    assert!(!dst.path().join("escape").exists());
    assert_eq!(
        unpack(&b""[..], &into, AS_UNPACKER).unwrap_err().kind(),
        "bad_archive"
    );
}
