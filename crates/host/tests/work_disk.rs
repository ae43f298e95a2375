//! Work disks on real ext4 images: a clone of a seed keeps the seed's
//! files, reaches the requested size and leaves the seed alone; a fresh
//! disk is an empty ext4 of that size; neither writes its journal out.

use std::path::Path;
use std::process::Command;

use banger_host::disks::work::{clone_from_seed, make_fresh, WorkDiskError};
use banger_host::image::ext4;

fn debugfs(image: &Path, request: &str) -> String {
    let out = Command::new("debugfs")
        .args(["-R", request])
        .arg(image)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The filesystem's superblock and journal, as `dumpe2fs -h` prints them.
fn header(image: &Path) -> String {
    let out = Command::new("dumpe2fs")
        .arg("-h")
        .arg(image)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Block count x block size, as the filesystem itself says.
fn fs_bytes(image: &Path) -> u64 {
    let text = header(image);
    let field = |name: &str| -> u64 {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split(':').nth(1))
            .map(|v| v.trim().parse().unwrap())
            .unwrap()
    };
    field("Block count") * field("Block size")
}

#[tokio::test]
async fn a_clone_has_the_seed_files_at_the_new_size() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("root");
    std::fs::create_dir_all(tree.join(".ssh")).unwrap();
    std::fs::write(tree.join(".bashrc"), "PS1='vm$ '\n").unwrap();
    let seed = dir.path().join("seed.ext4");
    ext4::make_work_seed(&tree, &seed).await.unwrap();
    let seed_before = std::fs::read(&seed).unwrap();

    let disk = dir.path().join("root.ext4");
    clone_from_seed(&seed, &disk, 2 << 30).await.unwrap();
    assert_eq!(std::fs::metadata(&disk).unwrap().len(), 2 << 30);
    assert_eq!(fs_bytes(&disk), 2 << 30);
    assert_eq!(debugfs(&disk, "cat /.bashrc"), "PS1='vm$ '\n");
    assert!(debugfs(&disk, "ls -l /").contains(".ssh"));
    assert_eq!(
        std::fs::read(&seed).unwrap(),
        seed_before,
        "the seed is untouched"
    );
    // Sparse: far less on disk than its size.
    let used = allocated(&disk);
    assert!(used < 200 << 20, "{used} bytes used");

    let small = dir.path().join("small.ext4");
    let err = clone_from_seed(&seed, &small, 1 << 20).await.unwrap_err();
    assert!(matches!(err, WorkDiskError::TooSmall { .. }), "{err}");
    assert!(!small.exists());
}

#[tokio::test]
async fn a_fresh_disk_is_an_empty_ext4() {
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("root.ext4");
    make_fresh(&disk, 1 << 30).await.unwrap();
    assert!(ext4::is_ext4(&disk).unwrap());
    assert_eq!(fs_bytes(&disk), 1 << 30);
    assert!(debugfs(&disk, "ls /").contains("lost+found"));
}

/// Bytes a file holds on disk.
fn allocated(path: &Path) -> u64 {
    std::os::unix::fs::MetadataExt::blocks(&std::fs::metadata(path).unwrap()) * 512
}

fn fsck_clean(image: &Path) -> bool {
    Command::new("e2fsck")
        .arg("-fn")
        .arg(image)
        .output()
        .unwrap()
        .status
        .success()
}

#[tokio::test]
async fn fresh_filesystems_leave_their_journal_unwritten_and_are_clean() {
    let dir = tempfile::tempdir().unwrap();
    // A system disk's size: its journal is 64 MiB.
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(tree.join("upper/etc")).unwrap();
    std::fs::write(tree.join("upper/etc/hostname"), "vm\n").unwrap();
    let system = dir.path().join("system.cow");
    ext4::make_from_dir(&tree, &system, Some(4 << 30), "banger-system")
        .await
        .unwrap();
    let work = dir.path().join("root.ext4");
    make_fresh(&work, 4 << 30).await.unwrap();
    for disk in [&system, &work] {
        assert!(fsck_clean(disk), "{}", disk.display());
        let header = header(disk);
        assert!(header.contains("Total journal size:       64M"), "{header}");
        let used = allocated(disk);
        assert!(used < 16 << 20, "{}: {used} bytes on disk", disk.display());
    }
}
