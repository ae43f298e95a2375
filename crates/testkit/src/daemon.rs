//! The real daemon under a test root: served in process (`TestDaemon`,
//! `serve`) or as a `bangerd` process in a network namespace
//! (`spawn_daemon`, `VmDaemon`), with the config files tests write.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use banger_core::image::Image;
use banger_core::store::Store;
use banger_store::SqliteStore;
use bangerd::config::{Config, Overrides};
use serde_json::Value;

use crate::http::call;
use crate::image::build_default_image;
use crate::logs::Cleanup;
use crate::netns::NetNs;

pub struct TestDaemon {
    pub root: tempfile::TempDir,
    pub config: Config,
    pub running: Option<bangerd::server::Running>,
}

impl TestDaemon {
    /// A daemon whose store already holds an image named `base`.
    pub async fn start() -> TestDaemon {
        let root = tempfile::tempdir().unwrap();
        write_config(root.path());
        TestDaemon::start_in(root).await
    }

    /// Like `start`, in a root the caller prepared (with its config).
    pub async fn start_in(root: tempfile::TempDir) -> TestDaemon {
        TestDaemon::start_with(root, true).await
    }

    /// A daemon in a prepared root whose store holds no image.
    pub async fn start_bare(root: tempfile::TempDir) -> TestDaemon {
        TestDaemon::start_with(root, false).await
    }

    async fn start_with(root: tempfile::TempDir, seed: bool) -> TestDaemon {
        let config = Config::load(&Overrides {
            root: Some(root.path().into()),
            ..Default::default()
        })
        .unwrap();
        std::fs::create_dir_all(&config.state_dir).unwrap();
        if seed {
            seed_image(&config.database(), "base");
        }
        let running = bangerd::server::start(config.clone()).await.unwrap();
        TestDaemon {
            root,
            config,
            running: Some(running),
        }
    }

    pub fn socket(&self) -> PathBuf {
        self.config.socket.clone()
    }

    pub async fn call(&self, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
        call(&self.socket(), method, path, body).await
    }

    pub async fn stop(mut self) {
        if let Some(running) = self.running.take() {
            let _ = running.shutdown.send(true);
            running.task.await.unwrap().unwrap();
        }
    }
}

/// A config whose default image is the seeded `base`.
pub fn write_config(root: &Path) {
    write_config_with(root, "default_image = \"base\"\n");
}

/// A config of `top` (top-level keys, each line ended) with the network
/// off.
pub fn write_config_with(root: &Path, top: &str) {
    let dir = root.join("etc/banger");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("config.toml"),
        format!("{top}[network]\nenabled = false\n"),
    )
    .unwrap();
}

pub fn seed_image(db: &Path, name: &str) {
    let store = SqliteStore::open(db).unwrap();
    store
        .upsert_image(&Image {
            id: format!("img-{name}"),
            name: name.into(),
            source: "register".into(),
            kernel_path: "/images/kernel".into(),
            initrd_path: None,
            rootfs_path: "/images/rootfs.ext4".into(),
            work_seed_path: Some("/images/work-seed.ext4".into()),
            vmlinux_path: None,
            manifest: None,
            created_at_ms: 1,
            parent_id: None,
            layers: Vec::new(),
        })
        .unwrap();
}

/// Opens a test root as `/` and `/var/lib` are (0711 and 0755), so each
/// VM's QEMU, running as the VM's own user, reaches its own disks in the
/// state directory (a snapshot's save and restore open them again).
pub fn open_to_vm_users(root: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(root.join("var/lib")).unwrap();
    for (dir, mode) in [("", 0o711), ("var", 0o755), ("var/lib", 0o755)] {
        std::fs::set_permissions(root.join(dir), std::fs::Permissions::from_mode(mode)).unwrap();
    }
}

/// The `bangerd` binary cargo built beside the running test or benchmark
/// (`target/PROFILE/bangerd`).
pub fn bangerd_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join("bangerd"))
        .unwrap();
    assert!(
        bin.is_file(),
        "no bangerd at {} (cargo build -p bangerd)",
        bin.display()
    );
    bin
}

/// A real bangerd process under `root`, inside the namespace; its log in
/// `root/bangerd.log`.
pub fn spawn_daemon(ns: &NetNs, root: &Path) -> std::process::Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(root.join("bangerd.log"))
        .unwrap();
    ns.command(&bangerd_binary().display().to_string())
        .env(
            "BANGER_LOG",
            "info,netlink_packet_route=error,banger_host::agent=debug",
        )
        .arg("--root")
        .arg(root)
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

/// Waits (at most 30 s) until the daemon's socket answers.
pub async fn wait_for_socket(socket: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while tokio::net::UnixStream::connect(socket).await.is_err() {
        assert!(Instant::now() < deadline, "bangerd did not come up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A real bangerd serving a test root of its own in a network
/// namespace: VMs of 512 MiB with a 1G work disk; fields drop in order,
/// so whatever it started is killed before its root goes.
pub struct VmDaemon {
    pub cleanup: Cleanup,
    pub root: tempfile::TempDir,
    pub socket: PathBuf,
    pub process: std::process::Child,
}

/// The config of a root whose daemon boots VMs with `guest`: the
/// top-level lines (and tables) `top`, then VMs of 512 MiB with a 1G work
/// disk and the `[vm_defaults]` lines `defaults`; each line ended.
pub fn write_vm_config(root: &Path, guest: &Path, top: &str, defaults: &str) {
    let etc = root.join("etc/banger");
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::write(
        etc.join("config.toml"),
        format!(
            "guest_binary = \"{}\"\n{top}[vm_defaults]\nmemory_mib = 512\nwork_disk_size = \"1G\"\n{defaults}",
            guest.display()
        ),
    )
    .unwrap();
}

/// Starts a `VmDaemon` in `ns` whose config adds the top-level lines
/// `extra`, with the default image built first when `build`.
pub async fn vm_daemon(ns: &NetNs, guest: &Path, extra: &str, build: bool) -> VmDaemon {
    let root = tempfile::tempdir().unwrap();
    let cleanup = Cleanup(root.path().to_path_buf());
    open_to_vm_users(root.path());
    write_vm_config(root.path(), guest, extra, "");
    if build {
        build_default_image(root.path(), guest).await;
    }
    let socket = root.path().join("run/banger/bangerd.sock");
    let process = spawn_daemon(ns, root.path());
    wait_for_socket(&socket).await;
    VmDaemon {
        cleanup,
        root,
        socket,
        process,
    }
}

/// An in-process daemon under `root` with the config file `config`: it
/// and its socket (benchmarks serve this way).
pub async fn serve(root: &Path, config: PathBuf) -> (bangerd::server::Running, PathBuf) {
    let config = Config::load(&Overrides {
        root: Some(root.into()),
        config: Some(config),
        ..Default::default()
    })
    .unwrap();
    let socket = config.socket.clone();
    (bangerd::server::start(config).await.unwrap(), socket)
}

/// Stops a daemon `serve` started and waits until it is gone.
pub async fn shut_down(running: bangerd::server::Running) {
    let _ = running.shutdown.send(true);
    let _ = running.task.await;
}
