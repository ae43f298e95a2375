//! What the benchmarks share: API calls over the daemon's socket.

use std::path::Path;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde_json::Value;

/// One request with `accept`; the status and the whole body.
async fn request(
    socket: &Path,
    method: &str,
    path: &str,
    body: &str,
    accept: &str,
) -> (u16, Bytes) {
    let stream = tokio::net::UnixStream::connect(socket).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let request = hyper::Request::builder()
        .method(method)
        .uri(format!("http://bangerd{path}"))
        .header("host", "bangerd")
        .header("content-type", "application/json")
        .header("accept", accept)
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, bytes)
}

/// One request; the status and the JSON body (`Null` when not JSON).
pub async fn call(socket: &Path, method: &str, path: &str, body: &str) -> (u16, Value) {
    let (status, bytes) = request(socket, method, path, body, "application/json").await;
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// A POST asking for a progress stream: the status and every event.
#[allow(dead_code)]
pub async fn call_ndjson(socket: &Path, path: &str, body: &str) -> (u16, Vec<Value>) {
    let (status, bytes) = request(socket, "POST", path, body, "application/x-ndjson").await;
    let events = String::from_utf8_lossy(&bytes)
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect();
    (status, events)
}

/// The static guest binary the benchmarks put into images.
#[allow(dead_code)]
pub fn guest_binary() -> std::path::PathBuf {
    let guest = std::env::var_os("BANGER_GUEST_BINARY")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../target/guest/x86_64-unknown-linux-gnu/release/banger-guest")
        });
    assert!(
        guest.is_file(),
        "no guest binary at {}: run scripts/build-guest",
        guest.display()
    );
    guest
}

/// Runs `work` on a thread inside a network namespace of its own (its
/// child processes too), then kills what was started under `root` and
/// removes the namespace. Returns the namespace's name with the result.
#[allow(dead_code)]
pub fn in_netns<T: Send>(tag: &str, root: &Path, work: impl FnOnce(&str) -> T + Send) -> T {
    use std::os::fd::AsFd;
    use std::process::Command;
    let ns = format!("bgt-{tag}-{}", std::process::id());
    assert!(
        Command::new("ip")
            .args(["netns", "add", &ns])
            .status()
            .unwrap()
            .success(),
        "needs root"
    );
    let _ = Command::new("ip")
        .args(["-n", &ns, "link", "set", "lo", "up"])
        .status();
    let result = std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let file = std::fs::File::open(format!("/var/run/netns/{ns}")).unwrap();
                nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
                work(&ns)
            })
            .join()
    });
    let _ = Command::new("pkill")
        .arg("-9")
        .arg("-f")
        .arg(root.display().to_string())
        .status();
    let _ = Command::new("ip").args(["netns", "del", &ns]).status();
    result.unwrap()
}

/// An in-process daemon under `root` with `config`: it and its socket.
#[allow(dead_code)]
pub async fn daemon(
    root: &Path,
    config: std::path::PathBuf,
) -> (bangerd::server::Running, std::path::PathBuf) {
    let config = bangerd::config::Config::load(&bangerd::config::Overrides {
        root: Some(root.into()),
        config: Some(config),
        ..Default::default()
    })
    .unwrap();
    let socket = config.socket.clone();
    (bangerd::server::start(config).await.unwrap(), socket)
}

#[allow(dead_code)]
pub async fn stop(running: bangerd::server::Running) {
    let _ = running.shutdown.send(true);
    let _ = running.task.await;
}

/// Builds the default image under `root` with a daemon in the host
/// namespace (where the Debian mirror is reachable); returns its record.
#[allow(dead_code)]
pub fn build_default_image(root: &Path, guest: &Path) -> Value {
    let config = root.join("etc/banger/build.toml");
    std::fs::create_dir_all(config.parent().unwrap()).unwrap();
    std::fs::write(
        &config,
        format!(
            "guest_binary = \"{}\"\nwarm_templates = false\n[network]\nenabled = false\n",
            guest.display()
        ),
    )
    .unwrap();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let (running, socket) = daemon(root, config).await;
            eprintln!("building the default image ...");
            let (status, image) = call(
                &socket,
                "POST",
                "/v1/images/pull",
                r#"{"source":"debian-bookworm"}"#,
            )
            .await;
            assert_eq!(status, 201, "{image}");
            stop(running).await;
            image
        })
}
