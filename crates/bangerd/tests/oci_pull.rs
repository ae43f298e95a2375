//! OCI images from a real registry (Debian's `docker-registry`, on
//! 127.0.0.1 of the test's namespace), made by the test as OCI layouts
//! and pushed with `skopeo`:
//!
//! - a Debian userland with its own kernel (one uncompressed layer from
//!   `mmdebstrap`), which boots with that kernel;
//! - a busybox image behind a two-platform index, of a gzip, a zstd and an
//!   uncompressed layer with a whiteout, an opaque directory, a hard link,
//!   a setuid file and files of uid 1000, and a config (env, working
//!   directory, user) that `vm exec` applies;
//! - a second image on the same base, which downloads only its own layer;
//! - bad inputs, each refused with a hint, leaving no image, no staging
//!   and only verified blobs in the layer cache.

use banger_testkit as support;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};
use support::registry::{
    busybox_base, dir, file, hardlink, opaque, sha256, symlink, tar, whiteout, Layout, Registry, Z,
};

/// A Debian userland with the cloud kernel, as one tar (`None` with the
/// reason when the mirror is out of reach: a failure under CI=true).
fn debian_tar(dir: &Path) -> Option<Vec<u8>> {
    let out = dir.join("debian.tar");
    support::mmdebstrap("linux-image-cloud-amd64", &out).then(|| std::fs::read(&out).unwrap())
}

/// Runs the CLI on a real terminal (`script` gives it a PTY): once its
/// output shows `wait_for`, types `keys`; returns the exit status and
/// what the terminal showed.
fn on_terminal(root: &Path, args: &[&str], wait_for: &str, keys: &[u8]) -> (i32, String) {
    use std::io::{Read, Write};
    let cli = Path::new(env!("CARGO_BIN_EXE_bangerd")).with_file_name("banger");
    assert!(cli.is_file(), "the banger cli is built beside bangerd");
    let quote = |s: &str| format!("'{}'", s.replace('\'', "'\\''"));
    let mut line = format!(
        "{} --root {}",
        quote(&cli.display().to_string()),
        quote(&root.display().to_string())
    );
    for arg in args {
        line.push(' ');
        line.push_str(&quote(arg));
    }
    let mut child = Command::new("script")
        .args(["-q", "-e", "-c", &line, "/dev/null"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("script runs (util-linux)");
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut stdout = child.stdout.take().unwrap();
    let sink = seen.clone();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    let shown = || String::from_utf8_lossy(&seen.lock().unwrap()).into_owned();
    let deadline = std::time::Instant::now() + support::STREAM_DEADLINE;
    while !shown().contains(wait_for) {
        assert!(
            std::time::Instant::now() < deadline,
            "never showed {wait_for:?}: {}",
            shown()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(keys).unwrap();
    stdin.flush().unwrap();
    let status = child.wait().unwrap();
    drop(stdin);
    reader.join().unwrap();
    (status.code().unwrap_or(-1), shown())
}

/// Pulls with a progress stream: the final event and the stage names.
async fn pull(socket: &Path, body: Value) -> (Value, Vec<String>) {
    let events = support::call_stream(socket, "/v1/images/pull", &body.to_string()).await;
    let stages = events
        .iter()
        .filter(|e| e["type"] == "stage")
        .map(|e| e["stage"].as_str().unwrap().to_string())
        .collect();
    (events.last().unwrap().clone(), stages)
}

/// A pull that must fail: its error, after checking that it left nothing.
async fn refused(socket: &Path, state: &Path, body: Value) -> Value {
    let images_before = support::call(socket, "GET", "/v1/images", None).await.1["images"]
        .as_array()
        .unwrap()
        .len();
    let (last, _) = pull(socket, body.clone()).await;
    assert_eq!(last["type"], "error", "{body} gave {last}");
    let error = last["error"]["error"].clone();
    let message = error["message"].as_str().unwrap();
    assert!(!message.contains('\n'), "one line: {message}");
    assert!(error["hint"].is_string(), "{error}");
    let images_after = support::call(socket, "GET", "/v1/images", None).await.1["images"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(images_before, images_after, "no image recorded for {body}");
    let staging: Vec<PathBuf> = std::fs::read_dir(state.join("images/.staging"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(staging.is_empty(), "staging left: {staging:?}");
    cache_holds_only_verified_blobs(state);
    error
}

fn cache_holds_only_verified_blobs(state: &Path) {
    for entry in std::fs::read_dir(state.join("oci/blobs/sha256")).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        assert!(!name.starts_with('.'), "download leftover {name}");
        let bytes = std::fs::read(entry.path()).unwrap();
        assert_eq!(sha256(&bytes), format!("sha256:{name}"), "unverified blob");
    }
}

fn cached(state: &Path, digest: &str) -> bool {
    state
        .join("oci/blobs/sha256")
        .join(digest.trim_start_matches("sha256:"))
        .is_file()
}

#[tokio::test(flavor = "multi_thread")]
async fn oci_images_pull_from_a_registry_and_boot() {
    let Some(guest) = support::guest_binary() else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let _cleanup = support::Cleanup(root.path().to_path_buf());
    let Some(debian) = debian_tar(root.path()) else {
        return;
    };
    let Some(ns) = support::NetNs::new("oci") else {
        return;
    };
    let mut registry = Registry::start(&ns, &root.path().join("registry"), 5000);
    let at = |repo: &str| format!("127.0.0.1:{}/{repo}", registry.port);

    // The images, as OCI layouts.
    let mut layout = Layout::new(&root.path().join("layout"));
    let debian_layer = layout.layer(&debian, Z::Tar);
    let debian_image = layout.image(
        &[debian_layer],
        json!({"Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"], "Cmd": ["bash"]}),
        "amd64",
    );
    layout.tag("debian", &debian_image);

    let mut base = busybox_base();
    base.extend([
        dir("etc/app/"),
        file("etc/app/gone", b"lower"),
        file("etc/app/kept", b"lower"),
        dir("srv/"),
        dir("srv/data/"),
        file("srv/data/old", b"lower"),
        file("usr-bin-su", b"#!/bin/sh\n").mode(0o4755),
        file("home/app/notes", b"mine")
            .owner(1000, 1000)
            .mode(0o600),
    ]);
    let l1 = layout.layer(&tar(&base), Z::Gzip);
    let l2 = layout.layer(
        &tar(&[
            whiteout("etc/app", "gone"),
            opaque("srv/data"),
            file("srv/data/new", b"upper"),
            hardlink("srv/su-link", "usr-bin-su"),
        ]),
        Z::Zstd,
    );
    // opt/ and opt/tool/ have no entries of their own: made 0755.
    let l3 = layout.layer(
        &tar(&[
            file("srv/hello", b"hello\n"),
            file("opt/tool/run", b"tool\n"),
        ]),
        Z::Tar,
    );
    let run = json!({
        "Env": ["PATH=/bin", "GREETING=hi there"],
        "WorkingDir": "/srv",
        "User": "app",
        "Cmd": ["/bin/sh"],
    });
    let amd64 = layout.image(&[l1.clone(), l2.clone(), l3.clone()], run.clone(), "amd64");
    let arm_layer = layout.layer(&tar(&[file("arm", b"arm")]), Z::Gzip);
    let arm64 = layout.image(&[arm_layer], run.clone(), "arm64");
    let multi = layout.index(&[arm64.clone(), amd64]);
    layout.tag("multi", &multi);
    let arm_only = layout.index(&[arm64]);
    layout.tag("armonly", &arm_only);
    let l4 = layout.layer(&tar(&[file("srv/more", b"more\n")]), Z::Gzip);
    let more = layout.image(&[l1.clone(), l2.clone(), l4.clone()], run.clone(), "amd64");
    layout.tag("more", &more);

    // Hostile or broken ones.
    let escape = layout.layer(&tar(&[file("../../escaped", b"x")]), Z::Gzip);
    let escape = layout.image(&[l1.clone(), escape], run.clone(), "amd64");
    layout.tag("escape", &escape);
    let through = layout.layer(
        &tar(&[symlink("etc/evil", "/etc"), file("etc/evil/owned", b"x")]),
        Z::Gzip,
    );
    let through = layout.image(&[l1.clone(), through], run.clone(), "amd64");
    layout.tag("through", &through);
    let big_config =
        json!({"architecture": "amd64", "os": "linux", "padding": "x".repeat(5 << 20)});
    let big = layout.image_with_config(
        std::slice::from_ref(&l1),
        serde_json::to_vec(&big_config).unwrap(),
        "amd64",
    );
    layout.tag("bigconfig", &big);
    let corrupt = layout.layer(&tar(&[file("c", &[7u8; 300_000])]), Z::Tar);
    let corrupt_image = layout.image(&[l1.clone(), corrupt.clone()], run.clone(), "amd64");
    layout.tag("corrupt", &corrupt_image);
    let short = layout.layer(&tar(&[file("s", &[9u8; 300_000])]), Z::Tar);
    let short_image = layout.image(&[l1.clone(), short.clone()], run.clone(), "amd64");
    layout.tag("short", &short_image);

    for (tag, repo) in [
        ("debian", "debian:bookworm"),
        ("multi", "busy:multi"),
        ("armonly", "busy:armonly"),
        ("more", "busy:more"),
        ("escape", "bad:escape"),
        ("through", "bad:through"),
        ("corrupt", "bad:corrupt"),
        ("short", "bad:short"),
    ] {
        layout.push(&ns, tag, &at(repo));
    }
    registry.plant(&layout, "bad", "bigconfig", &big);
    // The registry serves what its disk holds: flip bytes of one blob,
    // cut another short.
    let digest_of = |layer: &(Value, String)| layer.0["digest"].as_str().unwrap().to_string();
    let mut flipped = std::fs::read(registry.blob_data(&digest_of(&corrupt))).unwrap();
    flipped[1000] ^= 0xff;
    std::fs::write(registry.blob_data(&digest_of(&corrupt)), flipped).unwrap();
    let whole = std::fs::read(registry.blob_data(&digest_of(&short))).unwrap();
    std::fs::write(
        registry.blob_data(&digest_of(&short)),
        &whole[..whole.len() / 2],
    )
    .unwrap();

    let etc = root.path().join("etc/banger");
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::write(
        etc.join("config.toml"),
        format!(
            "guest_binary = \"{}\"\nwarm_templates = false\nconsole_log_max = \"256K\"\n[vm_defaults]\nmemory_mib = 512\nwork_disk_size = \"1G\"\n",
            guest.display()
        ),
    )
    .unwrap();
    let socket = root.path().join("run/banger/bangerd.sock");
    let state = root.path().join("var/lib/banger");
    let mut daemon = support::spawn_daemon(&ns, root.path());
    support::wait_for_socket(&socket).await;

    // A Debian userland with a kernel: its own kernel boots it.
    // (Not named debian-bookworm, the default image: the default image's
    // kernel is the fallback for images without one, tried below.)
    let (debian_img, _) = pull(
        &socket,
        json!({"source": at("debian:bookworm"), "name": "deb-kernel"}),
    )
    .await;
    assert_eq!(debian_img["type"], "image", "{debian_img}");
    let debian_img = &debian_img["image"];
    assert_eq!(debian_img["name"], "deb-kernel");
    let from = debian_img["manifest"]["origin"]["from"].as_str().unwrap();
    assert!(from.contains("its own kernel 6."), "{from}");
    let oci = &debian_img["manifest"]["oci"];
    assert_eq!(oci["digest"], debian_image["digest"]);
    assert_eq!(oci["config"]["cmd"], json!(["bash"]));

    // The busybox image: the index resolves to amd64, every layer kind.
    let (busy, stages) = pull(
        &socket,
        json!({"source": format!("docker://{}", at("busy:multi")), "kernel_from": "deb-kernel"}),
    )
    .await;
    assert_eq!(busy["type"], "image", "{busy}");
    let busy = &busy["image"];
    assert_eq!(busy["name"], "busy-multi");
    assert_eq!(busy["manifest"]["oci"]["config"]["user"], "app");
    assert_eq!(
        busy["manifest"]["oci"]["layers"].as_array().unwrap().len(),
        3
    );
    let layer_stages: Vec<&String> = stages.iter().filter(|s| s.starts_with("layer ")).collect();
    assert_eq!(layer_stages.len(), 3, "{stages:?}");
    assert!(
        !layer_stages.iter().any(|s| s.ends_with("cached")),
        "{stages:?}"
    );

    // Without a kernel of its own and none named, the default image's is
    // taken: here there is none, so the pull says so.
    let err = refused(
        &socket,
        &state,
        json!({"source": format!("docker://{}", at("busy:multi")), "name": "nokernel"}),
    )
    .await;
    assert!(
        err["message"].as_str().unwrap().contains("no kernel"),
        "{err}"
    );

    // A second image on the same base downloads only its own layer.
    let (more_img, stages) = pull(
        &socket,
        json!({"source": at("busy:more"), "name": "more", "kernel_from": "deb-kernel"}),
    )
    .await;
    assert_eq!(more_img["type"], "image", "{more_img}");
    let layer_stages: Vec<&String> = stages.iter().filter(|s| s.starts_with("layer ")).collect();
    assert!(layer_stages[0].ends_with("cached") && layer_stages[1].ends_with("cached"));
    assert!(!layer_stages[2].ends_with("cached"), "{stages:?}");

    // Bad input: each refused with a hint, nothing left behind.
    let with_kernel =
        |source: String| json!({"source": source, "name": "bad", "kernel_from": "deb-kernel"});
    for (source, says) in [
        (at("busy:nosuchtag"), "not found"),
        (at("nosuchrepo:1"), "not found"),
        ("127.0.0.1:5999/busy:multi".to_string(), "cannot reach"),
        (at("busy:armonly"), "linux/arm64"),
        (at("bad:bigconfig"), "larger than the limit"),
        (at("bad:escape"), "climbs out of the tree"),
        (at("bad:through"), "symbolic link /etc/evil"),
        (at("bad:corrupt"), "digest mismatch"),
        (at("bad:short"), "cut short"),
    ] {
        let err = refused(&socket, &state, with_kernel(source.clone())).await;
        let message = err["message"].as_str().unwrap();
        assert!(message.contains(says), "{source}: {message}");
    }
    assert!(!root.path().join("escaped").exists());
    let body = json!({"source": at("busy:multi"), "name": "more"}).to_string();
    let (status, err) = support::call(&socket, "POST", "/v1/images/pull", Some(&body)).await;
    assert_eq!(status, 409, "{err}");
    let body = json!({"source": "Bad Ref"}).to_string();
    let (status, err) = support::call(&socket, "POST", "/v1/images/pull", Some(&body)).await;
    assert_eq!(status, 400, "{err}");
    assert!(err["error"]["hint"].is_string(), "{err}");

    // A VM of the busybox image: the layers are what they said, and
    // commands run as the config says.
    let (status, vm) = support::call(
        &socket,
        "POST",
        "/v1/vms",
        Some(r#"{"name":"bb","image":"busy-multi"}"#),
    )
    .await;
    assert_eq!(status, 201, "{vm}");
    let (code, out, err) = support::sh(
        &socket,
        "bb",
        "id -u; id -g; pwd; echo \"$GREETING\"; echo $HOME; \
         test -e /etc/app/gone && echo gone-is-there; cat /etc/app/kept; \
         ls /srv/data; cat /srv/hello; \
         stat -c '%a %u' /usr-bin-su; stat -c '%i' /usr-bin-su /srv/su-link | sort -u | wc -l; \
         stat -c '%u %g %a' /home/app/notes; cat /opt/tool/run; stat -c %a / /opt; \
         cat /proc/1/comm",
    )
    .await;
    assert_eq!(code, 0, "{out} {err}");
    assert_eq!(
        out,
        "1000\n1000\n/srv\nhi there\n/home/app\nlowernew\nhello\n4755 0\n1\n1000 1000 600\ntool\n755\n755\nbanger-init\n"
    );
    // A guest writing its console without end: the log keeps under its
    // cap (256K in this config) and the VM goes on working.
    let (_, bb) = support::call(&socket, "GET", "/v1/vms/bb", None).await;
    let serial = state
        .join("vms")
        .join(bb["id"].as_str().unwrap())
        .join("serial.log");
    let body = json!({
        "argv": ["sh", "-c", "dd if=/dev/zero bs=64k count=16 2>/dev/null > /dev/console"],
        "user": "root",
    });
    let (code, _, err) = support::exec(&socket, "bb", &body).await;
    assert_eq!(code, 0, "{err}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::fs::metadata(&serial).unwrap().len() > 256 * 1024 {
        assert!(
            std::time::Instant::now() < deadline,
            "the console log stays past its cap"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    // The flood did arrive (1 MiB of zeros went in; the newest stayed).
    let zeros = std::fs::read(&serial)
        .unwrap()
        .iter()
        .filter(|b| **b == 0)
        .count();
    assert!(
        zeros >= 64 * 1024,
        "only {zeros} of the flood's bytes in the log"
    );
    let (code, out, _) = support::sh(&socket, "bb", "echo still").await;
    assert_eq!((code, out.as_str()), (0, "still\n"));

    // exec -it: a terminal in the guest; Ctrl-C typed here interrupts
    // the command there, and its exit status comes back.
    let root_path = root.path().to_path_buf();
    let (code, shown) = tokio::task::spawn_blocking(move || {
        on_terminal(
            &root_path,
            &[
                "vm",
                "exec",
                "-it",
                "bb",
                "--",
                "sh",
                "-c",
                "trap 'echo got-int; exit 42' INT; tty; echo ready; while :; do sleep 1; done",
            ],
            "ready",
            b"\x03",
        )
    })
    .await
    .unwrap();
    assert_eq!(code, 42, "{shown}");
    assert!(
        shown.contains("/dev/pts/") && shown.contains("got-int"),
        "{shown}"
    );
    let (status, _) = support::call(&socket, "DELETE", "/v1/vms/bb?force=true", None).await;
    assert_eq!(status, 200);

    // The Debian one boots its own kernel; it has no sshd, so `vm run`
    // gives its terminal through the agent.
    let root_path = root.path().to_path_buf();
    let release = debian_img["kernel_version"].as_str().unwrap().to_string();
    let wait_for = release.clone();
    let (code, shown) = tokio::task::spawn_blocking(move || {
        on_terminal(
            &root_path,
            &[
                "vm",
                "run",
                "--image",
                "deb-kernel",
                "--name",
                "deb",
                "--rm",
                "--",
                "sh",
                "-c",
                "grep -c bookworm /etc/os-release; uname -r; read line; exit $line",
            ],
            &wait_for,
            b"5\r",
        )
    })
    .await
    .unwrap();
    assert_eq!(code, 5, "{shown}");
    assert!(shown.contains(&release), "{shown}");
    let (_, vms) = support::call(&socket, "GET", "/v1/vms", None).await;
    assert_eq!(
        vms["vms"].as_array().map(Vec::len),
        Some(0),
        "--rm removed it: {vms}"
    );

    // Removing an image frees the layers only it used.
    let l4_digest = digest_of(&l4);
    assert!(cached(&state, &l4_digest));
    let (status, _) = support::call(&socket, "DELETE", "/v1/images/more", None).await;
    assert_eq!(status, 200);
    assert!(
        !cached(&state, &l4_digest),
        "the layer only more used is freed"
    );
    assert!(cached(&state, &digest_of(&l1)), "shared layers stay");
    let (status, report) = support::call(&socket, "POST", "/v1/images/prune", None).await;
    assert_eq!(
        (status, report["blobs"].as_u64()),
        (200, Some(0)),
        "{report}"
    );

    registry.stop();
    let _ = daemon.kill();
    let _ = daemon.wait();
}
