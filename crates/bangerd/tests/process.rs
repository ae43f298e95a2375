//! The daemon as a process: it serves on a 0660 socket, refuses a second
//! instance, and stops cleanly on SIGTERM, removing its socket and keeping
//! its records.

use banger_testkit as support;

use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

fn spawn(root: &std::path::Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_bangerd"))
        .arg("--root")
        .arg(root)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

async fn wait_for_socket(socket: &std::path::Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while tokio::net::UnixStream::connect(socket).await.is_err() {
        assert!(Instant::now() < deadline, "bangerd did not come up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn serves_refuses_a_twin_and_stops_on_sigterm() {
    let root = tempfile::tempdir().unwrap();
    support::write_config(root.path());
    let socket = root.path().join("run/banger/bangerd.sock");
    let mut daemon = spawn(root.path());
    wait_for_socket(&socket).await;
    assert_eq!(
        std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777,
        0o660
    );
    support::seed_image(&root.path().join("var/lib/banger/banger.db"), "base");
    let (status, _) = support::call(
        &socket,
        "POST",
        "/v1/vms",
        Some(r#"{"name":"kept","no_start":true}"#),
    )
    .await;
    assert_eq!(status, 201);

    // A pull of the live daemon's in its slow step: the twin must not
    // clean it up as stale.
    let staging = root.path().join("var/lib/banger/images/.staging/pull-live");
    std::fs::create_dir_all(&staging).unwrap();
    let twin = Command::new(env!("CARGO_BIN_EXE_bangerd"))
        .arg("--root")
        .arg(root.path())
        .output()
        .unwrap();
    assert!(
        !twin.status.success(),
        "a second daemon on the same state must refuse to start"
    );
    let said = String::from_utf8_lossy(&twin.stderr);
    assert!(
        said.contains(&format!("another bangerd (pid {})", daemon.id())),
        "{said}"
    );
    assert!(staging.is_dir(), "the live daemon's staging is left alone");

    // What the daemon makes is root's alone; only the way to known_hosts
    // is open.
    let state = root.path().join("var/lib/banger");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&state), 0o711);
    assert_eq!(mode(&state.join("ssh")), 0o711);
    assert_eq!(mode(&state.join("ssh/id_ed25519")) & 0o077, 0);
    assert_eq!(mode(&state.join("banger.db")) & 0o077, 0);

    kill(Pid::from_raw(daemon.id() as i32), Signal::SIGTERM).unwrap();
    let status = daemon.wait().unwrap();
    assert!(status.success(), "bangerd exited with {status}");
    assert!(!socket.exists(), "socket left behind");

    let mut again = spawn(root.path());
    wait_for_socket(&socket).await;
    let (status, vm) = support::call(&socket, "GET", "/v1/vms/kept", None).await;
    assert_eq!(status, 200, "{vm}");
    kill(Pid::from_raw(again.id() as i32), Signal::SIGTERM).unwrap();
    assert!(again.wait().unwrap().success());
}
