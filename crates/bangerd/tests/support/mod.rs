//! Test support: a daemon under a temporary root, served in-process, and a
//! small HTTP client over its unix socket.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use banger_core::image::Image;
use banger_core::store::Store;
use banger_store::SqliteStore;
use bangerd::config::{Config, Overrides};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::UnixStream;

pub mod oci;

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

/// Sends a request and goes away before the answer (what Ctrl-C in the
/// CLI does to a lifecycle call).
pub async fn abandon_call(socket: &Path, method: &str, path: &str, vm: &str) {
    use tokio::io::AsyncWriteExt;
    let mut stream = UnixStream::connect(socket).await.unwrap();
    let head = format!("{method} {path} HTTP/1.1\r\nhost: bangerd\r\ncontent-length: 0\r\n\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    // Goes away once the step has begun (the VM left `running`).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, found) = call(socket, "GET", &format!("/v1/vms/{vm}"), None).await;
        if found["state"] != "running" || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(stream);
}

/// Polls a VM until its state is `state` (at most `STREAM_DEADLINE`).
pub async fn wait_state(socket: &Path, vm: &str, state: &str) -> Value {
    let deadline = Instant::now() + STREAM_DEADLINE;
    loop {
        let (_, found) = call(socket, "GET", &format!("/v1/vms/{vm}"), None).await;
        if found["state"] == state {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "{vm} never became {state}: {found}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One request; returns the status and the JSON body (`Null` when empty).
pub async fn call(socket: &Path, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
    try_call(socket, method, path, body)
        .await
        .unwrap_or_else(|err| panic!("{method} {path}: {err}"))
}

/// One request, or why it got no answer (the daemon went away).
pub async fn try_call(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> Result<(u16, Value), String> {
    let stream = UnixStream::connect(socket)
        .await
        .map_err(|e| e.to_string())?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let request = Request::builder()
        .method(Method::from_bytes(method.as_bytes()).unwrap())
        .uri(format!("http://bangerd{path}"))
        .header("host", "bangerd")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.unwrap_or("").to_string())))
        .unwrap();
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let bytes = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    let value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
    };
    Ok((status, value))
}

/// GETs a stream that ends when the daemon does (`/v1/events`): the head
/// is read before this returns, so the stream sees everything after;
/// the task gives status, content type and the whole body.
pub async fn get_stream(
    socket: &Path,
    path: &str,
) -> tokio::task::JoinHandle<(u16, String, String)> {
    let request = Request::builder()
        .method(Method::GET)
        .uri(format!("http://bangerd{path}"))
        .header("host", "bangerd")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = send(socket, request).await;
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    tokio::spawn(async move {
        let bytes = tokio::time::timeout(STREAM_DEADLINE, response.into_body().collect())
            .await
            .expect("the stream ends")
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        (
            status,
            content_type,
            String::from_utf8_lossy(&bytes).into_owned(),
        )
    })
}

/// Sends `request` on a connection of its own; the response once its
/// head is in.
async fn send(
    socket: &Path,
    request: Request<Full<Bytes>>,
) -> hyper::Response<hyper::body::Incoming> {
    let stream = UnixStream::connect(socket).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender.send_request(request).await.unwrap()
}

/// POSTs asking for a progress stream; the response once its head is in.
async fn post_stream(
    socket: &Path,
    path: &str,
    body: &str,
) -> hyper::Response<hyper::body::Incoming> {
    let request = Request::builder()
        .method(Method::POST)
        .uri(format!("http://bangerd{path}"))
        .header("host", "bangerd")
        .header("content-type", "application/json")
        .header("accept", "application/x-ndjson")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let response = send(socket, request).await;
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(response.headers()["content-type"], "application/x-ndjson");
    response
}

/// The longest a stream (a create, a pull, an exec in a guest) may take
/// in a test: generous under emulation, but a hung guest fails the test
/// instead of holding CI.
pub const STREAM_DEADLINE: Duration = Duration::from_secs(600);

/// POSTs asking for a progress stream; returns every event line.
pub async fn call_stream(socket: &Path, path: &str, body: &str) -> Vec<Value> {
    let response = post_stream(socket, path, body).await;
    let bytes = tokio::time::timeout(STREAM_DEADLINE, response.into_body().collect())
        .await
        .unwrap_or_else(|_| panic!("{path} {body}: no end within {STREAM_DEADLINE:?}"))
        .unwrap()
        .to_bytes();
    String::from_utf8_lossy(&bytes)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// Starts a progress stream, reads its first event, and goes away (what
/// Ctrl-C in the CLI does); returns that event.
#[allow(dead_code)]
pub async fn abandon_stream(socket: &Path, path: &str, body: &str) -> Value {
    let response = post_stream(socket, path, body).await;
    let mut body = response.into_body();
    let frame = body.frame().await.unwrap().unwrap();
    let first = frame.into_data().unwrap();
    // Dropping the body closes the connection.
    drop(body);
    serde_json::from_slice(first.split(|b| *b == b'\n').next().unwrap()).unwrap()
}

/// A network namespace of the test's own, removed (with every link, nft
/// table and socket in it) when dropped. Daemons that touch the network
/// run inside one.
pub struct NetNs {
    pub name: String,
}

impl NetNs {
    /// A fresh namespace with `lo` up, or `None` with the reason printed
    /// (a failure under CI=true).
    pub fn new(tag: &str) -> Option<NetNs> {
        let name = format!("bgt-{tag}-{}", std::process::id());
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &name])
            .status();
        let made = std::process::Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !made {
            let why = "cannot create a network namespace (needs root and iproute2)";
            assert!(std::env::var("CI").as_deref() != Ok("true"), "{why}");
            eprintln!("not run: {why}");
            return None;
        }
        let ns = NetNs { name };
        ns.run(&["ip", "link", "set", "lo", "up"]);
        Some(ns)
    }

    /// A command that runs inside the namespace.
    pub fn command(&self, program: &str) -> std::process::Command {
        let mut command = std::process::Command::new("ip");
        command.args(["netns", "exec", &self.name, program]);
        command
    }

    /// Runs a command inside the namespace; panics when it fails.
    pub fn run(&self, argv: &[&str]) -> String {
        let out = self.command(argv[0]).args(&argv[1..]).output().unwrap();
        assert!(
            out.status.success(),
            "{argv:?} in {}: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Builds the catalog's default image into the state under `root` with a
/// daemon in this (host) namespace, where the Debian mirror is reachable;
/// daemons started later in a namespace of their own then find it.
pub async fn build_default_image(root: &Path, guest: &Path) {
    let config_path = root.join("etc/banger/build.toml");
    std::fs::create_dir_all(config_path.parent().unwrap()).unwrap();
    std::fs::write(
        &config_path,
        format!(
            "guest_binary = \"{}\"\nsocket = \"{}\"\n[network]\nenabled = false\n",
            guest.display(),
            root.join("build.sock").display()
        ),
    )
    .unwrap();
    let config = Config::load(&Overrides {
        root: Some(root.into()),
        config: Some(config_path),
        ..Default::default()
    })
    .unwrap();
    let socket = config.socket.clone();
    let running = bangerd::server::start(config).await.unwrap();
    let (status, image) = call(
        &socket,
        "POST",
        "/v1/images/pull",
        Some(r#"{"source":"debian-bookworm"}"#),
    )
    .await;
    assert_eq!(status, 201, "{image}");
    let _ = running.shutdown.send(true);
    running.task.await.unwrap().unwrap();
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

/// The static guest binary (BANGER_GUEST_BINARY, or scripts/build-guest's
/// output), or `None` with the reason printed (a failure under CI=true).
pub fn guest_binary() -> Option<PathBuf> {
    let path = std::env::var_os("BANGER_GUEST_BINARY")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../target/guest/x86_64-unknown-linux-gnu/release/banger-guest")
        });
    if path.is_file() {
        return Some(path);
    }
    let why = format!(
        "no guest binary at {} (run scripts/build-guest)",
        path.display()
    );
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{why}");
    eprintln!("not run: {why}");
    None
}

/// A real bangerd process under `root`, inside the namespace; its log in
/// `root/bangerd.log`.
pub fn spawn_daemon(ns: &NetNs, root: &Path) -> std::process::Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(root.join("bangerd.log"))
        .unwrap();
    ns.command(env!("CARGO_BIN_EXE_bangerd"))
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

/// Runs `sh -c script` in the VM: (exit code, stdout, stderr).
pub async fn sh(socket: &Path, vm: &str, script: &str) -> (i64, String, String) {
    exec(socket, vm, &json!({ "argv": ["sh", "-c", script] })).await
}

/// Runs an exec request body in the VM: (exit code, stdout, stderr).
pub async fn exec(socket: &Path, vm: &str, body: &Value) -> (i64, String, String) {
    let script = body["argv"].to_string();
    let lines = call_stream(socket, &format!("/v1/vms/{vm}/exec"), &body.to_string()).await;
    let (mut out, mut err, mut code) = (Vec::new(), Vec::new(), None);
    for line in &lines {
        match line["type"].as_str().unwrap() {
            "stdout" => out.extend(B64.decode(line["data"].as_str().unwrap()).unwrap()),
            "stderr" => err.extend(B64.decode(line["data"].as_str().unwrap()).unwrap()),
            "exit" => code = line["code"].as_i64(),
            other => panic!("exec {script:?} on {vm}: {other}: {line}"),
        }
    }
    (
        code.unwrap_or_else(|| panic!("no exit for {script:?}: {lines:?}")),
        String::from_utf8_lossy(&out).into_owned(),
        String::from_utf8_lossy(&err).into_owned(),
    )
}

/// Kills whatever the test started under its root, even when it fails;
/// a failing test first prints the end of the daemon's log and of each
/// VM's console, which go with the root.
pub struct Cleanup(pub PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        if std::thread::panicking() {
            print_logs(&self.0);
        }
        let _ = std::process::Command::new("pkill")
            .arg("-9")
            .arg("-f")
            .arg(self.0.display().to_string())
            .status();
    }
}

/// The last lines of the daemon's log and of every VM's console and VMM
/// log under `root`, on stderr.
pub fn print_logs(root: &Path) {
    let mut logs = vec![
        root.join("bangerd.log"),
        root.join("run/banger/bangerd.log"),
    ];
    if let Ok(vms) = std::fs::read_dir(root.join("var/lib/banger/vms")) {
        for vm in vms.flatten() {
            logs.push(vm.path().join("serial.log"));
            logs.push(vm.path().join("vmm.log"));
        }
    }
    for log in logs {
        let Ok(text) = std::fs::read_to_string(&log) else {
            continue;
        };
        let lines: Vec<&str> = text.lines().collect();
        let tail = &lines[lines.len().saturating_sub(80)..];
        eprintln!(
            "---- last {} lines of {}\n{}",
            tail.len(),
            log.display(),
            tail.join("\n")
        );
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
    if out.status.success() {
        return true;
    }
    let why = format!(
        "mmdebstrap failed (is the Debian mirror reachable?): {}",
        String::from_utf8_lossy(&out.stderr)
            .lines()
            .last()
            .unwrap_or("")
    );
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{why}");
    eprintln!("not run: {why}");
    false
}

/// A real bangerd serving a test root of its own in a network
/// namespace: VMs of 512 MiB with a 1G work disk; fields drop in order,
/// so whatever it started is killed before its root goes.
#[allow(dead_code)]
pub struct VmDaemon {
    pub cleanup: Cleanup,
    pub root: tempfile::TempDir,
    pub socket: PathBuf,
    pub process: std::process::Child,
}

/// Starts a `VmDaemon` in `ns` whose config adds the top-level lines
/// `extra`, with the default image built first when `build`.
#[allow(dead_code)]
pub async fn vm_daemon(ns: &NetNs, guest: &Path, extra: &str, build: bool) -> VmDaemon {
    let root = tempfile::tempdir().unwrap();
    let cleanup = Cleanup(root.path().to_path_buf());
    open_to_vm_users(root.path());
    let etc = root.path().join("etc/banger");
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::write(
        etc.join("config.toml"),
        format!(
            "guest_binary = \"{}\"\n{extra}[vm_defaults]\nmemory_mib = 512\nwork_disk_size = \"1G\"\n",
            guest.display()
        ),
    )
    .unwrap();
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

/// `call` with an optional JSON body.
#[allow(dead_code)]
pub async fn call_json(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let body = body.map(|b| b.to_string());
    call(socket, method, path, body.as_deref()).await
}
