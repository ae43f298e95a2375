//! The Firecracker client against `FirecrackerDouble` (a TEST DOUBLE of
//! Firecracker's API socket; nothing boots) and against raw sockets that
//! answer byte for byte like Firecracker v1.16.1.

use std::path::{Path, PathBuf};
use std::time::Duration;

use banger_host::firecracker::{
    boot_requests, configure_and_start, describe_request, remove_stale_sockets, stop_request,
    ApiSpec, BootError, DriveConfig, FcRequest, FirecrackerBootConfig, FirecrackerClient,
    FirecrackerDouble, FirecrackerError, InstanceState, Method, VsockConfig,
};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixListener;

fn config(dir: &Path) -> FirecrackerBootConfig {
    FirecrackerBootConfig {
        vcpus: 2,
        memory_mib: 512,
        kernel: dir.join("vmlinux"),
        initrd: Some(dir.join("initramfs.img")),
        boot_args: "console=ttyS0 reboot=k panic=1 pci=off".into(),
        drives: vec![
            DriveConfig {
                id: "image".into(),
                path: dir.join("image.ext4"),
                read_only: true,
            },
            DriveConfig {
                id: "overlay".into(),
                path: dir.join("overlay.ext4"),
                read_only: false,
            },
        ],
        tap: "bgtap0".into(),
        guest_mac: "06:00:0a:64:00:02".into(),
        vsock: VsockConfig {
            guest_cid: 3,
            uds_path: dir.join("vsock.sock"),
        },
        log_path: dir.join("firecracker.log"),
        metrics_path: dir.join("metrics.json"),
    }
}

struct Setup {
    dir: tempfile::TempDir,
    double: FirecrackerDouble,
    client: FirecrackerClient,
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("api.sock");
    let double = FirecrackerDouble::spawn(&sock).await.unwrap();
    let client = FirecrackerClient::new(&sock);
    Setup {
        dir,
        double,
        client,
    }
}

fn fault_of(e: FirecrackerError) -> (String, String) {
    match e {
        FirecrackerError::Fault { path, message } => (path, message),
        other => panic!("expected a fault, got {other:?}"),
    }
}

#[tokio::test]
async fn full_lifecycle() {
    let s = setup().await;
    let cfg = config(s.dir.path());
    assert_eq!(
        s.client.describe().await.unwrap().state,
        InstanceState::NotStarted
    );

    configure_and_start(&s.client, &cfg).await.unwrap();

    let spec = ApiSpec::load();
    let mut expected = vec![describe_request()];
    expected.extend(boot_requests(&cfg).unwrap());
    assert_eq!(s.double.requests(), expected);
    for ex in s.double.exchanges() {
        assert_eq!(
            spec.check_request(&ex.request),
            Ok(()),
            "{}",
            ex.request.path
        );
        assert_eq!(ex.fault, None, "{}", ex.request.path);
    }
    assert_eq!(s.double.state(), InstanceState::Running);

    let raw = s.client.send(&describe_request()).await.unwrap().unwrap();
    assert_eq!(spec.check_definition("InstanceInfo", &raw), Ok(()));
    let info = s.client.describe().await.unwrap();
    assert_eq!(info.state, InstanceState::Running);
    assert_eq!(info.vmm_version, "1.16.1");

    assert!(!s.double.stopped());
    assert_eq!(s.client.send(&stop_request()).await.unwrap(), None);
    assert!(s.double.stopped());
    assert_eq!(s.double.exchanges().last().unwrap().status, 204);
    s.double.shutdown().await.unwrap();
    assert!(!s.dir.path().join("api.sock").exists());
}

#[tokio::test]
async fn unknown_field_is_a_fault_with_the_double_message() {
    let s = setup().await;
    let req = FcRequest {
        method: Method::Put,
        path: "/machine-config".into(),
        body: Some(json!({"vcpu_count": 2, "mem_size_mib": 512, "vcpus": 2})),
    };
    let (path, message) = fault_of(s.client.send(&req).await.unwrap_err());
    assert_eq!(path, "/machine-config");
    assert!(message.contains("unknown field vcpus"), "{message}");
    let recorded = s.double.exchanges();
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].status, 400);
    assert_eq!(recorded[0].fault.as_deref(), Some(message.as_str()));
    assert_eq!(recorded[0].request, req);
}

#[tokio::test]
async fn unknown_path_is_a_fault() {
    let s = setup().await;
    let req = FcRequest::put("/drive/image", &json!({}));
    let (_, message) = fault_of(s.client.send(&req).await.unwrap_err());
    assert_eq!(
        message,
        "Invalid request method and/or path: PUT drive/image."
    );
}

#[tokio::test]
async fn missing_socket_is_a_connect_error_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("nobody-home.sock");
    let err = FirecrackerClient::new(&sock)
        .send(&describe_request())
        .await
        .unwrap_err();
    match &err {
        FirecrackerError::Connect { path, .. } => assert_eq!(path, &sock),
        other => panic!("expected connect error, got {other:?}"),
    }
    assert!(
        err.to_string().contains(&sock.display().to_string()),
        "{err}"
    );
}

#[tokio::test]
async fn second_instance_start_is_a_fault() {
    let s = setup().await;
    configure_and_start(&s.client, &config(s.dir.path()))
        .await
        .unwrap();
    let start = boot_requests(&config(s.dir.path())).unwrap().pop().unwrap();
    let (path, message) = fault_of(s.client.send(&start).await.unwrap_err());
    assert_eq!(path, "/actions");
    assert!(
        message.contains("not supported after starting"),
        "{message}"
    );
    assert_eq!(s.double.state(), InstanceState::Running);
}

#[tokio::test]
async fn boot_stops_at_the_first_refused_request() {
    let s = setup().await;
    let cfg = config(s.dir.path());
    configure_and_start(&s.client, &cfg).await.unwrap();
    let sent_before = s.double.requests().len();
    // Everything is pre-boot-only now, so the very first request fails.
    let err = configure_and_start(&s.client, &cfg).await.unwrap_err();
    match &err {
        BootError::Request {
            step,
            total,
            path,
            source,
            ..
        } => {
            assert_eq!((*step, *total), (1, 8));
            assert_eq!(path, "/metrics");
            assert!(
                matches!(source, FirecrackerError::Fault { .. }),
                "{source:?}"
            );
        }
        other => panic!("expected a request error, got {other:?}"),
    }
    assert!(err.to_string().contains("put /metrics"), "{err}");
    assert_eq!(s.double.requests().len(), sent_before + 1);
}

#[tokio::test]
async fn start_without_boot_source_and_stop_before_start_are_faults() {
    let s = setup().await;
    let (_, message) = fault_of(s.client.send(&stop_request()).await.unwrap_err());
    assert!(message.contains("before starting"), "{message}");
    let start = boot_requests(&config(s.dir.path())).unwrap().pop().unwrap();
    let (_, message) = fault_of(s.client.send(&start).await.unwrap_err());
    assert_eq!(
        message,
        "Start microvm error: Cannot start microvm without kernel configuration."
    );
    assert_eq!(s.double.state(), InstanceState::NotStarted);
}

#[tokio::test]
async fn the_double_answers_in_firecrackers_words_and_shows_its_config() {
    let s = setup().await;
    let (_, message) = fault_of(s.client.send(&FcRequest::get("/nope")).await.unwrap_err());
    assert_eq!(message, "Invalid request method and/or path: GET nope.");
    let cfg = config(s.dir.path());
    configure_and_start(&s.client, &cfg).await.unwrap();
    let machine = s
        .client
        .send(&FcRequest::get("/machine-config"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(machine["vcpu_count"], 2);
    let whole = s
        .client
        .send(&FcRequest::get("/vm/config"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(whole["drives"].as_array().unwrap().len(), 2);
    assert_eq!(whole["network-interfaces"][0]["host_dev_name"], "bgtap0");
    let spec = ApiSpec::load();
    assert_eq!(spec.check_definition("FullVmConfiguration", &whole), Ok(()));
}

#[tokio::test]
async fn a_kernel_that_cannot_load_fails_instance_start_with_the_cause() {
    let s = setup().await;
    let cfg = config(s.dir.path());
    std::fs::write(&cfg.kernel, b"\x7fELF\ndouble-guest: fails-to-boot\n").unwrap();
    let err = configure_and_start(&s.client, &cfg).await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("Start microvm error: Cannot load kernel"),
        "{text}"
    );
    assert_eq!(s.double.state(), InstanceState::NotStarted);
}

#[tokio::test]
async fn remove_stale_sockets_removes_leftovers() {
    let dir = tempfile::tempdir().unwrap();
    let api = dir.path().join("api.sock");
    let vsock = dir.path().join("vsock.sock");
    // A bound-then-dropped listener leaves its socket file, as a killed
    // Firecracker does.
    drop(std::os::unix::net::UnixListener::bind(&api).unwrap());
    drop(std::os::unix::net::UnixListener::bind(&vsock).unwrap());
    assert!(api.exists() && vsock.exists());
    remove_stale_sockets(&api, &vsock).unwrap();
    assert!(!api.exists() && !vsock.exists());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    // Nothing there: fine. A regular file: not ours, left alone.
    remove_stale_sockets(&api, &vsock).unwrap();
    std::fs::write(&api, b"x").unwrap();
    assert!(remove_stale_sockets(&api, &vsock).is_err());
    assert!(api.exists());
    // After removal the path can be bound again.
    std::fs::remove_file(&api).unwrap();
    drop(std::os::unix::net::UnixListener::bind(&api).unwrap());
    remove_stale_sockets(&api, &vsock).unwrap();
    let double = FirecrackerDouble::spawn(&api).await.unwrap();
    double.shutdown().await.unwrap();
}

/// Serves one connection on `sock`, answering each request with the next
/// of `answers` verbatim, and returns the raw requests it read.
fn raw_server(sock: PathBuf, answers: Vec<String>) -> tokio::task::JoinHandle<Vec<String>> {
    let listener = UnixListener::bind(&sock).unwrap();
    tokio::spawn(async move {
        let mut seen = Vec::new();
        for answer in answers {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let mut req = Vec::new();
            // Read until the headers and the content-length body are in.
            loop {
                let n = conn.read(&mut buf).await.unwrap();
                req.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&req).to_string();
                if let Some(end) = text.find("\r\n\r\n") {
                    let len = text
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap())
                        })
                        .unwrap_or(0);
                    if req.len() >= end + 4 + len {
                        break;
                    }
                }
                assert!(n > 0, "client closed early");
            }
            seen.push(String::from_utf8(req).unwrap());
            conn.write_all(answer.as_bytes()).await.unwrap();
            // Keep the connection open (Firecracker uses keep-alive) until
            // the client hangs up.
            let _ = conn.read(&mut buf).await;
        }
        seen
    })
}

#[tokio::test]
async fn client_reads_firecracker_answers_without_reason_phrase() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("api.sock");
    let fault = r#"{"fault_message":"Invalid request method and/or path: PUT /nope."}"#;
    let fault_answer = format!(
        "HTTP/1.1 400 \r\nServer: Firecracker API\r\nConnection: keep-alive\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{fault}",
        fault.len()
    );
    let server = raw_server(
        sock.clone(),
        vec![
            "HTTP/1.1 204 \r\nServer: Firecracker API\r\nConnection: keep-alive\r\n\r\n".into(),
            fault_answer,
        ],
    );
    let client = FirecrackerClient::new(&sock);
    let req = boot_requests(&config(dir.path())).unwrap().remove(1);
    assert_eq!(client.send(&req).await.unwrap(), None);
    let (path, message) = fault_of(
        client
            .send(&FcRequest::put("/nope", &json!({})))
            .await
            .unwrap_err(),
    );
    assert_eq!(path, "/nope");
    assert_eq!(message, "Invalid request method and/or path: PUT /nope.");

    let seen = server.await.unwrap();
    assert!(
        seen[0].starts_with("PUT /machine-config HTTP/1.1\r\n"),
        "{}",
        seen[0]
    );
    assert!(seen[0]
        .to_ascii_lowercase()
        .contains("content-type: application/json"));
    let body = seen[0].split("\r\n\r\n").nth(1).unwrap();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(body).unwrap(),
        req.body.unwrap()
    );
}

#[tokio::test]
async fn silent_server_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("api.sock");
    // Accepts connections (the kernel backlog does) but never answers.
    let _listener = UnixListener::bind(&sock).unwrap();
    let client = FirecrackerClient::new(&sock).with_timeout(Duration::from_millis(200));
    let err = client.send(&describe_request()).await.unwrap_err();
    assert!(
        matches!(&err, FirecrackerError::Timeout { path, .. } if path == "/"),
        "{err:?}"
    );
}
