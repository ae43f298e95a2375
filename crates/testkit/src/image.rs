//! Images for tests. The catalog's default image (`debian-bookworm`:
//! mmdebstrap from the Debian mirror, the cloud kernel, the initramfs)
//! is built once per run, into `target/testkit/`, the way a fresh host
//! gets it: a daemon with no image takes a create, finds the image in
//! its catalog and builds it. Each test root then gets the image as that
//! build left it (its files linked, its record written with this root's
//! paths), in a second rather than a build's minute; the create's answer
//! is kept for the test of the build itself (`image_build.rs`).

use std::fs::File;
use std::hash::{Hash, Hasher};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use banger_core::image::Image;
use banger_core::store::Store;
use banger_store::SqliteStore;
use bangerd::config::{Config, Overrides};
use nix::fcntl::{Flock, FlockArg};
use serde_json::{json, Value};

use crate::http::call;

/// The default image's name in the catalog.
pub const DEFAULT_IMAGE: &str = "debian-bookworm";

/// Puts the catalog's default image into the state under `root` (whose
/// config, if any, is already written), building it first when this run
/// has not yet; returns its record there.
pub async fn build_default_image(root: &Path, guest: &Path) -> Image {
    let cache = built(guest).await;
    install(&cache, root)
}

/// How the build went: the status and answer of the create that made it
/// (`status`, `vm`), and the images the daemon listed before (`before`).
pub async fn default_image_build(guest: &Path) -> Value {
    let cache = built(guest).await;
    serde_json::from_slice(&std::fs::read(cache.join("build.json")).unwrap()).unwrap()
}

/// The cache root holding the built default image, built now if this
/// run has not yet.
async fn built(guest: &Path) -> PathBuf {
    let cache = cache_root(guest);
    let parent = cache.parent().unwrap();
    std::fs::create_dir_all(parent).unwrap();
    // One builder at a time, across test binaries and the tests in one.
    let lock = File::create(parent.join("lock")).unwrap();
    let _held = Flock::lock(lock, FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .unwrap();
    if !cache.join("build.json").exists() {
        for old in std::fs::read_dir(parent).unwrap().flatten() {
            if old.file_type().unwrap().is_dir() {
                std::fs::remove_dir_all(old.path()).unwrap();
            }
        }
        std::fs::create_dir_all(&cache).unwrap();
        let answer = build_into(&cache, guest).await;
        std::fs::write(cache.join("build.json"), answer.to_string()).unwrap();
    }
    cache
}

/// `target/testkit/default-image-KEY`: KEY names the bangerd and guest
/// binaries this run built, so a rebuilt daemon or guest builds again.
fn cache_root(guest: &Path) -> PathBuf {
    let bangerd = crate::daemon::bangerd_binary();
    let mut key = std::collections::hash_map::DefaultHasher::new();
    for binary in [bangerd.as_path(), guest] {
        let meta = std::fs::metadata(binary).unwrap();
        (binary, meta.len(), meta.mtime(), meta.mtime_nsec()).hash(&mut key);
    }
    // target/PROFILE/bangerd -> target/testkit
    let target = bangerd.parent().and_then(Path::parent).unwrap();
    target
        .join("testkit")
        .join(format!("default-image-{:016x}", key.finish()))
}

/// Builds the default image into the state under `cache` as a fresh
/// host does, with a daemon in this (host) namespace, where the Debian
/// mirror is reachable: a create of a VM (not started) on a daemon with
/// no image.
async fn build_into(cache: &Path, guest: &Path) -> Value {
    let config_path = cache.join("etc/banger/config.toml");
    std::fs::create_dir_all(config_path.parent().unwrap()).unwrap();
    // The socket's path short whatever the checkout's (108 bytes at most).
    let run = tempfile::tempdir().unwrap();
    std::fs::write(
        &config_path,
        format!(
            "guest_binary = \"{}\"\nsocket = \"{}\"\nwarm_templates = false\n[network]\nenabled = false\n",
            guest.display(),
            run.path().join("bangerd.sock").display()
        ),
    )
    .unwrap();
    let (running, socket) = crate::daemon::serve(cache, config_path).await;
    let (_, before) = call(&socket, "GET", "/v1/images", None).await;
    eprintln!("building the default image once for this run ...");
    let started = std::time::Instant::now();
    // Bounded like every stream: a build that hangs fails the test (and
    // every test waiting on the lock) instead of holding the run.
    let (status, vm) = tokio::time::timeout(
        crate::http::STREAM_DEADLINE,
        call(
            &socket,
            "POST",
            "/v1/vms",
            Some(r#"{"name":"first","no_start":true}"#),
        ),
    )
    .await
    .unwrap_or_else(|_| {
        panic!(
            "the default image's build took over {:?}",
            crate::http::STREAM_DEADLINE
        )
    });
    eprintln!(
        "the default image took {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(
        status, 201,
        "the create that builds the default image: {vm}"
    );
    crate::daemon::shut_down(running).await;
    json!({ "before": before, "status": status, "vm": vm })
}

/// The state directory and database of the daemon under `root`.
fn state_of(root: &Path) -> (PathBuf, PathBuf) {
    let config = Config::load(&Overrides {
        root: Some(root.into()),
        ..Default::default()
    })
    .unwrap();
    (config.state_dir.clone(), config.database())
}

/// Links the cached image's files into `root`'s state and records the
/// image there with those paths, as the pull recorded it in the cache.
fn install(cache: &Path, root: &Path) -> Image {
    let (from, from_db) = state_of(cache);
    let (to, to_db) = state_of(root);
    let mut image = SqliteStore::open(&from_db)
        .unwrap()
        .find_image(DEFAULT_IMAGE)
        .unwrap()
        .expect("the cache holds the default image");
    let dir = from.join("images").join(&image.id);
    link_tree(&dir, &to.join("images").join(&image.id));
    let moved = |path: &Path| to.join(path.strip_prefix(&from).unwrap());
    image.kernel_path = moved(&image.kernel_path);
    image.rootfs_path = moved(&image.rootfs_path);
    image.vmlinux_path = image.vmlinux_path.as_deref().map(moved);
    image.initrd_path = image.initrd_path.as_deref().map(moved);
    image.work_seed_path = image.work_seed_path.as_deref().map(moved);
    image.layers = image.layers.iter().map(|p| moved(p)).collect();
    SqliteStore::open(&to_db)
        .unwrap()
        .upsert_image(&image)
        .unwrap();
    image
}

/// Recreates the tree `from` at `to`: directories with their modes,
/// files hard-linked (copied when `to` is on another filesystem).
fn link_tree(from: &Path, to: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(to).unwrap();
    let mode = std::fs::metadata(from).unwrap().permissions().mode();
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(mode)).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            link_tree(&entry.path(), &target);
        } else if std::fs::hard_link(entry.path(), &target).is_err() {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// `mmdebstrap --variant=minbase --include=INCLUDE bookworm TARGET` (a
/// directory, or a tar by its name); false with the reason printed when
/// the mirror is out of reach (a failure under CI=true).
pub fn mmdebstrap(include: &str, target: &Path) -> bool {
    let out = std::process::Command::new("mmdebstrap")
        .arg("--variant=minbase")
        .arg(format!("--include={include}"))
        .arg("bookworm")
        .arg(target)
        .output()
        .expect("mmdebstrap runs (apt-get install mmdebstrap)");
    let why = format!(
        "mmdebstrap failed (is the Debian mirror reachable?): {}",
        String::from_utf8_lossy(&out.stderr)
            .lines()
            .last()
            .unwrap_or("")
    );
    crate::require(out.status.success(), &why).is_some()
}
