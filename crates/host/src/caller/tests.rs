//! A caller that is not root, acting on real files: what the kernel lets
//! it do is all it can do through the daemon.

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use super::*;

/// A user and group no account has.
const MEMBER: Caller = Caller {
    uid: 64_123,
    gid: 64_123,
};

/// These tests switch identities, which needs root.
fn as_root() -> bool {
    if Uid::effective().is_root() {
        return true;
    }
    let why = "caller tests need root (they act as another user)";
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{why}");
    eprintln!("skipped: {why}");
    false
}

fn dir(mode: u32) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(mode)).unwrap();
    dir
}

#[test]
fn a_member_reads_only_what_it_may_and_cannot_tell_what_exists() {
    if !as_root() {
        return;
    }
    let secret = dir(0o700);
    let shadow = secret.path().join("shadow");
    std::fs::write(&shadow, b"root's").unwrap();
    let open = |path: &Path| MEMBER.open_read(path).unwrap_err().to_string();
    let there = open(&shadow);
    let missing = open(&secret.path().join("nothing"));
    assert!(there.ends_with(": permission denied"), "{there}");
    assert!(missing.ends_with(": permission denied"), "{missing}");

    // Readable to all once outside the closed directory, but 0600 root's.
    let open_dir = dir(0o755);
    let own = open_dir.path().join("root-only");
    std::fs::write(&own, b"root's").unwrap();
    std::fs::set_permissions(&own, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(open(&own).contains("permission denied"));

    std::fs::set_permissions(&own, std::fs::Permissions::from_mode(0o644)).unwrap();
    let held = MEMBER.open_read(&own).unwrap();
    assert_eq!(std::fs::read(held.path()).unwrap(), b"root's");
    assert_eq!(held.shown(), own);
    // The daemon keeps root's rights on its own thread.
    assert!(Caller::ROOT.open_read(&shadow).is_ok());
}

#[test]
fn a_fifo_or_a_directory_is_refused_without_blocking() {
    if !as_root() {
        return;
    }
    let open_dir = dir(0o755);
    let fifo = open_dir.path().join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o666)).unwrap();
    let err = MEMBER.open_read(&fifo).unwrap_err();
    assert!(matches!(err, CallerError::NotAFile { .. }), "{err}");
    let err = MEMBER.open_read(open_dir.path()).unwrap_err();
    assert!(matches!(err, CallerError::NotAFile { .. }), "{err}");
}

#[test]
fn a_member_makes_new_files_only_where_it_may_write() {
    if !as_root() {
        return;
    }
    let root_dir = dir(0o755);
    let err = MEMBER.create_new(&root_dir.path().join("out")).unwrap_err();
    assert!(err.to_string().contains("permission denied"), "{err}");
    assert_eq!(std::fs::read_dir(root_dir.path()).unwrap().count(), 0);

    let shared = dir(0o1777);
    let out = shared.path().join("bundle");
    let new = MEMBER.create_new(&out).unwrap();
    std::io::Write::write_all(&mut new.file().unwrap(), b"bytes").unwrap();
    new.publish().unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), b"bytes");
    let meta = std::fs::metadata(&out).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (MEMBER.uid, MEMBER.gid));
    assert!(!shared.path().join("bundle.partial").exists());

    let err = MEMBER.create_new(&out).unwrap_err();
    assert!(matches!(err, CallerError::Exists { .. }), "{err}");
}

#[test]
fn a_planted_link_is_never_written_through_and_nothing_half_made_stays() {
    if !as_root() {
        return;
    }
    let shared = dir(0o1777);
    let victim = shared.path().join("victim");
    std::fs::write(&victim, b"root's file").unwrap();
    let out = shared.path().join("out");
    std::os::unix::fs::symlink(&victim, shared.path().join("out.partial")).unwrap();
    for caller in [MEMBER, Caller::ROOT] {
        let err = caller.create_new(&out).unwrap_err();
        assert!(err.to_string().contains(".partial: it exists"), "{err}");
    }
    assert_eq!(std::fs::read(&victim).unwrap(), b"root's file");
    std::fs::remove_file(shared.path().join("out.partial")).unwrap();

    // Dropped unpublished: gone.
    drop(MEMBER.create_new(&out).unwrap());
    assert!(!shared.path().join("out.partial").exists());

    // A name taken while the file was written is not replaced.
    let new = MEMBER.create_new(&out).unwrap();
    std::fs::write(&out, b"someone else's").unwrap();
    let err = new.publish().unwrap_err();
    assert!(err.to_string().contains("out: it exists"), "{err}");
    assert_eq!(std::fs::read(&out).unwrap(), b"someone else's");
    assert!(!shared.path().join("out.partial").exists());
}
