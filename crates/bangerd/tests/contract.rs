//! The committed API description is the contract: schemathesis, a client
//! generator's fuzzer, runs every check it has against a real daemon from
//! `api/openapi.json` alone (fixed seed, bounded examples, the stateful
//! links the document declares) and must find no failure.
//!
//! The daemon under test has no network and no usable VMM (it prefers
//! Firecracker, which this host lacks), so every boot answers its
//! documented 501, and its Debian mirror is a closed local port (builds
//! answer 502). Requests reach it through `socat` run as an unprivileged
//! member of the socket's group, so paths the fuzzer names are opened
//! with that member's rights, never root's.

use banger_testkit as support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use support::TestDaemon;

/// The member the fuzzer's requests come from.
const MEMBER_UID: u32 = 64_322;
/// Examples per operation and phase (the 40).
const EXAMPLES: &str = "40";
const SEED: &str = "20261203";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Where `scripts/install-deps` puts schemathesis.
fn schemathesis() -> PathBuf {
    std::env::var_os("BANGER_SCHEMATHESIS")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/tools/schemathesis/bin/st"))
}

fn not_run(why: &str) {
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{why}");
    eprintln!("not run: {why}");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_contract_failure() {
    if !nix::unistd::Uid::effective().is_root() {
        return not_run("the contract test needs root (requests come from another user)");
    }
    let st = schemathesis();
    if !st.exists() {
        return not_run(&format!(
            "no schemathesis at {} (scripts/install-deps installs it)",
            st.display()
        ));
    }
    if which("socat").is_none() {
        return not_run("no socat (scripts/install-deps installs it)");
    }
    let group = nix::unistd::Group::from_name("nogroup").unwrap().unwrap();
    let root = tempfile::tempdir().unwrap();
    let etc = root.path().join("etc/banger");
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::write(
        etc.join("config.toml"),
        "default_image = \"base\"\nsocket_group = \"nogroup\"\nvmm = \"firecracker\"\nguest_binary = \"/nonexistent/banger-guest\"\n\
         [network]\nenabled = false\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let daemon = TestDaemon::start_in(root).await;

    let port = free_port();
    let mut forward = tokio::process::Command::new("socat")
        .arg(format!("TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork"))
        .arg(format!("UNIX-CONNECT:{}", daemon.socket().display()))
        .uid(MEMBER_UID)
        .gid(group.gid.as_raw())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    wait_listening(port).await;

    let report = tempfile::tempdir().unwrap();
    let run = tokio::process::Command::new(&st)
        .current_dir(report.path())
        .env("SCHEMATHESIS_HOOKS", "")
        .arg("--config-file")
        .arg(repo().join("api/schemathesis.toml"))
        .arg("run")
        .arg(repo().join("api/openapi.json"))
        .args(["--url", &format!("http://127.0.0.1:{port}")])
        .args([
            "--checks",
            "all",
            "--seed",
            SEED,
            "--max-examples",
            EXAMPLES,
        ])
        .args(["--workers", "1", "--exclude-path", "/v1/shutdown"])
        // A stream that ends only with the daemon; the openapi test checks
        // every event it carries against the schema.
        .args(["--exclude-path", "/v1/events"])
        .args(["--no-color", "--output-truncate", "false"])
        .output();
    let out = tokio::time::timeout(Duration::from_secs(900), run)
        .await
        .expect("schemathesis ran longer than 15 minutes")
        .unwrap();
    let _ = forward.kill().await;
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    println!("{text}");
    // The daemon is whole after the run.
    let (status, _) = daemon.call("GET", "/v1/health", None).await;
    assert_eq!(status, 200, "the daemon answers after the run");
    daemon.stop().await;
    assert!(
        out.status.success(),
        "schemathesis found contract failures (see above)"
    );
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|path| Path::new(path).exists())
    })
}

async fn wait_listening(port: u16) {
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("socat never listened on {port}");
}
