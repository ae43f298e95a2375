//! Image operations through the API against real files: register (real
//! ext4 made with mkfs.ext4, a stand-in ELF kernel), export to a bundle,
//! pull it back from a path and over a real HTTP server on 127.0.0.1
//! (whole, truncated, with a wrong digest), progress streams, removal.

use banger_testkit as support;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};
use support::TestDaemon;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

/// A small ext4 image holding `files` (path, contents).
fn ext4_with(dir: &Path, name: &str, files: &[(&str, &str)]) -> PathBuf {
    let tree = dir.join(format!("{name}-tree"));
    for (path, contents) in files {
        let path = tree.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, contents).unwrap();
    }
    std::fs::create_dir_all(&tree).unwrap();
    let image = dir.join(format!("{name}.ext4"));
    let status = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-d"])
        .arg(&tree)
        .arg(&image)
        .arg("32M")
        .status()
        .expect("mkfs.ext4 runs (apt-get install e2fsprogs)");
    assert!(status.success());
    image
}

/// Stands in for a vmlinux: ELF magic is what register checks.
fn fake_vmlinux(dir: &Path) -> PathBuf {
    let path = dir.join("vmlinux");
    let mut bytes = b"\x7fELF\x02\x01\x01".to_vec();
    bytes.resize(4096, 0);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// An initramfs of the test's own: with one, register takes the files as
/// they are (without, it makes the rootfs bootable, which these stand-in
/// root filesystems are not).
fn own_initrd(dir: &Path) -> PathBuf {
    let path = dir.join("initrd");
    std::fs::write(&path, b"070701 stand-in initramfs").unwrap();
    path
}

async fn register(daemon: &TestDaemon, dir: &Path, name: &str) -> Value {
    let rootfs = ext4_with(
        dir,
        "rootfs",
        &[
            ("root/.profile", "echo hi\n"),
            ("etc/os-release", "ID=test\n"),
        ],
    );
    let body = json!({
        "name": name,
        "kernel": fake_vmlinux(dir),
        "initrd": own_initrd(dir),
        "rootfs": rootfs,
    })
    .to_string();
    let (status, image) = daemon
        .call("POST", "/v1/images/register", Some(&body))
        .await;
    assert_eq!(status, 201, "{image}");
    image
}

fn staging_is_empty(daemon: &TestDaemon) -> bool {
    let staging = daemon.config.state_dir.join("images/.staging");
    std::fs::read_dir(staging)
        .map(|d| d.count() == 0)
        .unwrap_or(true)
}

#[tokio::test]
async fn register_makes_a_work_seed_and_a_manifest() {
    let daemon = TestDaemon::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let image = register(&daemon, tmp.path(), "reg").await;
    assert_eq!(image["source"], "register");
    let seed = image["work_seed_path"]
        .as_str()
        .expect("a work seed was made");
    // The seed holds the rootfs's /root.
    let out = Command::new("debugfs")
        .args(["-R", "cat /.profile", seed])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "echo hi\n");
    let roles: Vec<&str> = image["manifest"]["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["role"].as_str().unwrap())
        .collect();
    assert_eq!(
        roles,
        ["kernel", "vmlinux", "initrd", "rootfs", "work_seed"]
    );
    assert!(
        image["vmlinux_path"].is_string(),
        "an ELF kernel is its own vmlinux"
    );
    let (status, shown) = daemon.call("GET", "/v1/images/reg", None).await;
    assert_eq!((status, &shown), (200, &image));
    assert!(staging_is_empty(&daemon));
    daemon.stop().await;
}

#[tokio::test]
async fn register_refuses_bad_files_and_changes_nothing() {
    let daemon = TestDaemon::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let not_ext4 = tmp.path().join("rootfs.img");
    std::fs::write(&not_ext4, vec![0u8; 8192]).unwrap();
    let kernel = fake_vmlinux(tmp.path());
    let not_kernel = tmp.path().join("random");
    std::fs::write(&not_kernel, b"hello, not a kernel").unwrap();
    let rootfs = ext4_with(tmp.path(), "ok", &[("root/.profile", "x")]);
    // A userland with a shell and systemd but no kernel and no modules.
    let userland = ext4_with(
        tmp.path(),
        "userland",
        &[("bin/sh", "#!"), ("lib/systemd/systemd", "\x7fELF")],
    );
    let cases = [
        (
            json!({"name": "x", "kernel": kernel, "rootfs": not_ext4}),
            "is not an ext4 image",
            422,
        ),
        (
            json!({"name": "x", "kernel": not_kernel, "rootfs": rootfs}),
            "not a kernel",
            422,
        ),
        (
            json!({"name": "x", "kernel": "/nonexistent/k", "rootfs": rootfs}),
            "no such file",
            404,
        ),
        (
            json!({"name": "x", "kernel": "relative/k", "rootfs": rootfs}),
            "a path on the daemon's host is absolute",
            400,
        ),
        (
            json!({"name": "Bad", "kernel": kernel, "rootfs": rootfs}),
            "invalid name",
            400,
        ),
        // Without an initrd of its own the rootfs must be bootable.
        (
            json!({"name": "x", "kernel": kernel, "rootfs": rootfs}),
            "the rootfs has neither /bin/sh nor /sbin/init",
            422,
        ),
        (
            json!({"name": "x", "kernel": kernel, "rootfs": userland}),
            "has no kernel modules",
            422,
        ),
        // No kernel of its own: the default image's (here the seeded
        // stand-in, whose kernel does not say its release) would be taken.
        (
            json!({"name": "x", "rootfs": userland}),
            "the kernel of image base does not say its release",
            422,
        ),
        (
            json!({"name": "x", "initrd": kernel, "rootfs": userland}),
            "an initrd of your own needs its kernel",
            422,
        ),
        (
            json!({"name": "x", "kernel": kernel, "kernel_from": "base", "rootfs": userland}),
            "either a kernel or kernel_from",
            422,
        ),
        // Any other file as an initrd (a root-only one, say) would be
        // copied into the image and handed out by an export.
        (
            json!({"name": "x", "kernel": kernel, "initrd": userland, "rootfs": userland}),
            "is not an initramfs",
            422,
        ),
    ];
    for (body, expected, code) in cases {
        let (status, err) = daemon
            .call("POST", "/v1/images/register", Some(&body.to_string()))
            .await;
        assert_eq!(status, code, "{body}: {err}");
        let message = err["error"]["message"].as_str().unwrap();
        assert!(message.contains(expected), "{message}");
        assert!(err["error"]["hint"].is_string(), "{err}");
    }
    let (_, list) = daemon.call("GET", "/v1/images", None).await;
    assert_eq!(
        list["images"].as_array().unwrap().len(),
        1,
        "only the seeded image"
    );
    assert!(staging_is_empty(&daemon));
    daemon.stop().await;
}

/// Serves `bytes` once per connection as an HTTP/1.1 response that claims
/// `claimed_len` bytes; sending fewer makes a truncated download.
async fn serve(bytes: Vec<u8>, claimed_len: usize) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
            let bytes = bytes.clone();
            tokio::spawn(async move {
                let mut request = [0u8; 4096];
                let _ = tokio::io::AsyncReadExt::read(&mut conn, &mut request).await;
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {claimed_len}\r\ncontent-type: application/octet-stream\r\nconnection: close\r\n\r\n"
                );
                let _ = conn.write_all(head.as_bytes()).await;
                let _ = conn.write_all(&bytes).await;
                let _ = conn.shutdown().await;
            });
        }
    });
    format!("http://{addr}/bundle.tar.zst")
}

fn sha256_hex(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn export_then_pull_from_a_path_and_over_http() {
    let daemon = TestDaemon::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let original = register(&daemon, tmp.path(), "orig").await;
    let bundle = tmp.path().join("orig.tar.zst");
    let body = json!({ "file": bundle }).to_string();
    let (status, _) = daemon
        .call("POST", "/v1/images/orig/export", Some(&body))
        .await;
    assert_eq!(status, 200);
    let (status, err) = daemon
        .call("POST", "/v1/images/orig/export", Some(&body))
        .await;
    assert_eq!(status, 409, "an existing file is not overwritten: {err}");

    // banger's own state is not a place to write to or read from, even
    // through a link.
    let state = daemon.config.state_dir.clone();
    let link = tmp.path().join("state-link");
    std::os::unix::fs::symlink(&state, &link).unwrap();
    for file in [state.join("x.tar.zst"), link.join("banger.db")] {
        let body = json!({ "file": file }).to_string();
        let (status, err) = daemon
            .call("POST", "/v1/images/orig/export", Some(&body))
            .await;
        assert_eq!(status, 403, "{file:?}: {err}");
        let message = err["error"]["message"].as_str().unwrap();
        assert!(message.contains("inside banger's own"), "{message}");
    }
    let rootfs = original["rootfs_path"].as_str().unwrap();
    let body = json!({ "name": "stolen", "kernel_from": "orig", "rootfs": rootfs }).to_string();
    let (status, err) = daemon
        .call("POST", "/v1/images/register", Some(&body))
        .await;
    assert_eq!(status, 403, "{err}");

    // From a path, under a new name: the same artifacts.
    let body = json!({ "source": bundle, "name": "copy" }).to_string();
    let (status, copy) = daemon.call("POST", "/v1/images/pull", Some(&body)).await;
    assert_eq!(status, 201, "{copy}");
    assert_eq!(copy["source"], "pull");
    assert_eq!(
        copy["manifest"]["artifacts"],
        original["manifest"]["artifacts"]
    );

    // Over HTTP with the right digest.
    let bytes = std::fs::read(&bundle).unwrap();
    let digest = sha256_hex(&bundle);
    let url = serve(bytes.clone(), bytes.len()).await;
    let body = json!({ "source": url, "name": "web", "sha256": digest }).to_string();
    let (status, web) = daemon.call("POST", "/v1/images/pull", Some(&body)).await;
    assert_eq!(status, 201, "{web}");
    assert_eq!(
        web["manifest"]["artifacts"],
        original["manifest"]["artifacts"]
    );

    // A wrong digest and a truncated body fail and leave nothing.
    let body = json!({ "source": url, "name": "wrong", "sha256": "0".repeat(64) }).to_string();
    let (status, err) = daemon.call("POST", "/v1/images/pull", Some(&body)).await;
    assert_eq!(status, 500, "{err}");
    assert!(
        err["error"]["message"].as_str().unwrap().contains("sha256"),
        "{err}"
    );
    let cut = serve(bytes[..bytes.len() / 2].to_vec(), bytes.len()).await;
    let body = json!({ "source": cut, "name": "cut" }).to_string();
    let (status, err) = daemon.call("POST", "/v1/images/pull", Some(&body)).await;
    assert_eq!(status, 502, "the server's fault: {err}");
    for gone in ["wrong", "cut"] {
        let (status, _) = daemon
            .call("GET", &format!("/v1/images/{gone}"), None)
            .await;
        assert_eq!(status, 404, "{gone} was not recorded");
    }
    assert!(staging_is_empty(&daemon));

    // Without a name the bundle's own name is used, and it is taken now.
    let body = json!({ "source": bundle }).to_string();
    let (status, err) = daemon.call("POST", "/v1/images/pull", Some(&body)).await;
    assert_eq!(status, 409, "{err}");
    assert!(staging_is_empty(&daemon));
    daemon.stop().await;
}

#[tokio::test]
async fn progress_streams_end_with_the_image_and_rm_refuses_images_in_use() {
    let daemon = TestDaemon::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let rootfs = ext4_with(tmp.path(), "rootfs", &[("root/.profile", "x")]);
    let body = json!({ "name": "streamed", "kernel": fake_vmlinux(tmp.path()),
                       "initrd": own_initrd(tmp.path()), "rootfs": rootfs })
    .to_string();
    let lines = support::call_stream(&daemon.socket(), "/v1/images/register", &body).await;
    let stages: Vec<&str> = lines
        .iter()
        .filter(|l| l["type"] == "stage")
        .map(|l| l["stage"].as_str().unwrap())
        .collect();
    assert_eq!(stages, ["copy", "work_seed", "digest", "publish"]);
    let last = lines.last().unwrap();
    assert_eq!(last["type"], "image", "{last}");
    assert_eq!(last["image"]["name"], "streamed");

    let create = r#"{"name":"user","image":"streamed","no_start":true}"#;
    let (status, _) = daemon.call("POST", "/v1/vms", Some(create)).await;
    assert_eq!(status, 201);
    let (status, err) = daemon.call("DELETE", "/v1/images/streamed", None).await;
    assert_eq!(status, 409);
    assert_eq!(
        err["error"]["message"],
        "image streamed is in use by vm user"
    );
    let dir = Path::new(last["image"]["rootfs_path"].as_str().unwrap())
        .parent()
        .unwrap()
        .to_path_buf();
    assert!(dir.exists());
    daemon.call("DELETE", "/v1/vms/user", None).await;
    let (status, _) = daemon.call("DELETE", "/v1/images/streamed", None).await;
    assert_eq!(status, 200);
    assert!(!dir.exists(), "the image's files are gone");
    daemon.stop().await;
}

#[tokio::test]
async fn stale_staging_is_removed_at_start() {
    let root = tempfile::tempdir().unwrap();
    support::write_config(root.path());
    let leftover = root
        .path()
        .join("var/lib/banger/images/.staging/build-123-deadbeef");
    std::fs::create_dir_all(&leftover).unwrap();
    std::fs::write(leftover.join("rootfs.ext4"), b"half").unwrap();
    let daemon = TestDaemon::start_in(root).await;
    assert!(!leftover.exists());
    daemon.stop().await;
}

#[tokio::test]
async fn create_auto_pulls_a_catalog_bundle_once() {
    // A bundle to serve, made by a first daemon.
    let tmp = tempfile::tempdir().unwrap();
    let maker = TestDaemon::start().await;
    register(&maker, tmp.path(), "src").await;
    let bundle = tmp.path().join("src.tar.zst");
    let body = json!({ "file": bundle }).to_string();
    let (status, _) = maker
        .call("POST", "/v1/images/src/export", Some(&body))
        .await;
    assert_eq!(status, 200);
    maker.stop().await;
    let bytes = std::fs::read(&bundle).unwrap();
    let url = serve(bytes.clone(), bytes.len()).await;

    // A daemon whose catalog lists it and whose default image it is.
    let root = tempfile::tempdir().unwrap();
    let etc = root.path().join("etc/banger");
    std::fs::create_dir_all(&etc).unwrap();
    let catalog = etc.join("catalog.toml");
    std::fs::write(
        &catalog,
        format!(
            "[[image]]\nname = \"served\"\ndescription = \"test bundle\"\nurl = \"{url}\"\nsha256 = \"{}\"\n",
            sha256_hex(&bundle)
        ),
    )
    .unwrap();
    support::write_config_with(
        root.path(),
        &format!(
            "default_image = \"served\"\ncatalog = \"{}\"\n",
            catalog.display()
        ),
    );
    let daemon = TestDaemon::start_in(root).await;
    let (_, entries) = daemon.call("GET", "/v1/catalog", None).await;
    let served = entries["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "served")
        .unwrap()
        .clone();
    assert_eq!(
        (served["kind"].as_str(), served["local"].as_bool()),
        (Some("bundle"), Some(false))
    );

    let creates = (0..3).map(|i| {
        let body = format!(r#"{{"name":"vm{i}","no_start":true}}"#);
        let socket = daemon.socket();
        async move { support::call(&socket, "POST", "/v1/vms", Some(&body)).await }
    });
    for (status, vm) in futures_join(creates).await {
        assert_eq!(status, 201, "{vm}");
        assert_eq!(vm["image_name"], "served");
    }
    let (_, list) = daemon.call("GET", "/v1/images", None).await;
    let pulled: Vec<&Value> = list["images"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["name"] == "served")
        .collect();
    assert_eq!(pulled.len(), 1, "pulled once for three creates");
    assert_eq!(pulled[0]["source"], "pull");
    daemon.stop().await;
}

/// Runs futures concurrently on this task's runtime.
async fn futures_join<F: std::future::Future + Send + 'static>(
    futures: impl Iterator<Item = F>,
) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for handle in handles {
        out.push(handle.await.unwrap());
    }
    out
}

#[tokio::test]
async fn register_can_leave_out_the_work_seed() {
    let daemon = TestDaemon::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let rootfs = ext4_with(tmp.path(), "rootfs", &[("root/.profile", "x")]);
    let kernel = fake_vmlinux(tmp.path());
    let initrd = own_initrd(tmp.path());
    let body = json!({ "name": "bare", "kernel": kernel, "initrd": initrd, "rootfs": rootfs, "no_work_seed": true })
        .to_string();
    let (status, image) = daemon
        .call("POST", "/v1/images/register", Some(&body))
        .await;
    assert_eq!(status, 201, "{image}");
    assert!(image.get("work_seed_path").is_none(), "{image}");
    let both = json!({
        "name": "both", "kernel": kernel, "initrd": initrd, "rootfs": rootfs,
        "work_seed": rootfs, "no_work_seed": true
    })
    .to_string();
    let (status, _) = daemon
        .call("POST", "/v1/images/register", Some(&both))
        .await;
    assert_eq!(status, 422);
    daemon.stop().await;
}

/// A member of the socket's group who is not root, running the CLI: the
/// daemon opens every file it names with the member's rights, so what the
/// member cannot read or write on the host it cannot reach through banger.
#[tokio::test]
async fn a_group_member_reaches_only_its_own_files() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    if !nix::unistd::Uid::effective().is_root() {
        let why = "the member test needs root (it runs the cli as another user)";
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{why}");
        eprintln!("skipped: {why}");
        return;
    }
    let mode = |path: &Path, mode: u32| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap()
    };
    // The socket's group is one that exists everywhere; the member has it
    // as its primary group, as `newgrp banger` would.
    let group = nix::unistd::Group::from_name("nogroup").unwrap().unwrap();
    let (uid, gid) = (64_321u32, group.gid.as_raw());
    let root = tempfile::tempdir().unwrap();
    support::write_config_with(root.path(), "socket_group = \"nogroup\"\n");
    mode(root.path(), 0o711);
    let daemon = TestDaemon::start_bare(root).await;
    let tmp = tempfile::tempdir().unwrap();
    mode(tmp.path(), 0o711);
    register(&daemon, tmp.path(), "orig").await;

    // The member: a home of its own, the cli where it can run it.
    let home = tmp.path().join("home");
    std::fs::create_dir(&home).unwrap();
    let cli = tmp.path().join("banger");
    std::fs::copy(
        Path::new(env!("CARGO_BIN_EXE_bangerd")).with_file_name("banger"),
        &cli,
    )
    .unwrap();
    mode(&cli, 0o755);
    let member = |args: &[&str]| {
        let mut cmd = tokio::process::Command::new(&cli);
        cmd.args(args)
            .env("HOME", &home)
            .env("BANGER_SOCKET", daemon.socket())
            .env("NO_COLOR", "1")
            .uid(uid)
            .gid(gid);
        async move {
            // The daemon runs on this test's runtime: wait without blocking it.
            let out = cmd.output().await.unwrap();
            let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
            (out.status.code(), text(&out.stdout), text(&out.stderr))
        }
    };
    let image_count = || {
        let store = banger_store::SqliteStore::open(&daemon.config.database()).unwrap();
        banger_core::store::Store::list_images(&store)
            .unwrap()
            .len()
    };

    // It reaches the daemon at all (socket 0660 in group, directory 0711).
    let (code, out, err) = member(&["image", "ls"]).await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("orig"), "{out}");

    // Its own files: registered, and exported to a file that is its own.
    let kernel = fake_vmlinux(&home);
    let initrd = own_initrd(&home);
    let rootfs = ext4_with(&home, "mine", &[("etc/os-release", "ID=mine\n")]);
    std::os::unix::fs::chown(&home, Some(uid), Some(gid)).unwrap();
    for file in std::fs::read_dir(&home).unwrap() {
        std::os::unix::fs::lchown(file.unwrap().path(), Some(uid), Some(gid)).unwrap();
    }
    mode(&home, 0o700);
    let path = |p: &Path| p.to_str().unwrap().to_string();
    let (k, i, r) = (path(&kernel), path(&initrd), path(&rootfs));
    let (code, out, err) = member(&[
        "image", "register", "mine", "--kernel", &k, "--initrd", &i, "--rootfs", &r,
    ])
    .await;
    assert_eq!(code, Some(0), "{out}{err}");
    let bundle = home.join("mine.tar.zst");
    let (code, out, err) = member(&["image", "export", "mine", &path(&bundle)]).await;
    assert_eq!(code, Some(0), "{out}{err}");
    let meta = std::fs::metadata(&bundle).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (uid, gid));
    let images = image_count();

    // A root-only file is refused as a missing one is: nothing tells it
    // exists, nothing is read, nothing is recorded.
    let closed = tmp.path().join("closed");
    std::fs::create_dir(&closed).unwrap();
    mode(&closed, 0o700);
    let shadow = closed.join("shadow");
    std::fs::write(&shadow, b"root:$y$secret\n").unwrap();
    let mut refusals = Vec::new();
    for initrd in [path(&shadow), path(&closed.join("missing"))] {
        let (code, out, err) = member(&[
            "image", "register", "stolen", "--kernel", &k, "--initrd", &initrd, "--rootfs", &r,
        ])
        .await;
        // Not found (1): missing and unreadable look the same.
        assert_eq!(code, Some(1), "{out}{err}");
        assert!(err.contains("permission denied"), "{err}");
        refusals.push(err.replace(&initrd, "PATH"));
    }
    assert_eq!(refusals[0], refusals[1]);
    let (code, _, err) = member(&["image", "pull", &path(&shadow), "--name", "stolen"]).await;
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("permission denied"), "{err}");

    // Nor does an export tell it: a file it cannot see is refused as a
    // missing one is (not "exists").
    let mut refusals = Vec::new();
    for out in [path(&shadow), path(&closed.join("missing"))] {
        let (code, _, err) = member(&["image", "export", "orig", &out]).await;
        assert_eq!(code, Some(1), "{err}");
        assert!(err.contains("permission denied"), "{err}");
        refusals.push(err.replace(&out, "PATH"));
    }
    assert_eq!(refusals[0], refusals[1]);
    assert_eq!(std::fs::read(&shadow).unwrap(), b"root:$y$secret\n");

    // No export where it may not write, none into banger's state.
    let roots = tmp.path().join("roots");
    std::fs::create_dir(&roots).unwrap();
    mode(&roots, 0o755);
    let (code, _, err) =
        member(&["image", "export", "orig", &path(&roots.join("x.tar.zst"))]).await;
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("permission denied"), "{err}");
    assert_eq!(std::fs::read_dir(&roots).unwrap().count(), 0);
    let inside = daemon.config.state_dir.join("x.tar.zst");
    let (code, _, err) = member(&["image", "export", "orig", &path(&inside)]).await;
    assert_eq!(code, Some(1), "{err}");
    assert!(!inside.exists());

    // A link planted where the partial bundle goes is not written through,
    // even in a directory everyone may write to.
    let shared = tmp.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    mode(&shared, 0o1777);
    let victim = shared.join("victim");
    std::fs::write(&victim, b"root's file").unwrap();
    std::os::unix::fs::symlink(&victim, shared.join("out.tar.zst.partial")).unwrap();
    let (code, _, err) = member(&[
        "image",
        "export",
        "orig",
        &path(&shared.join("out.tar.zst")),
    ])
    .await;
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(std::fs::read(&victim).unwrap(), b"root's file");
    assert!(!shared.join("out.tar.zst").exists());

    // Ports only root may publish: off loopback, below 1024. The member
    // has a key of its own already (ssh-keygen needs a passwd entry).
    let keys = home.join(".config/banger");
    std::fs::create_dir_all(&keys).unwrap();
    let made = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(keys.join("id_ed25519"))
        .status()
        .unwrap();
    assert!(made.success());
    for path in [
        home.join(".config"),
        keys.clone(),
        keys.join("id_ed25519"),
        keys.join("id_ed25519.pub"),
    ] {
        std::os::unix::fs::lchown(path, Some(uid), Some(gid)).unwrap();
    }
    for (publish, why) in [
        ("0.0.0.0:8080:80", "only root may publish on 0.0.0.0"),
        ("80:80", "only root may publish host port 80 (below 1024)"),
    ] {
        let (code, _, err) = member(&[
            "vm",
            "create",
            "--name",
            "web",
            "--image",
            "mine",
            "--no-start",
            "-p",
            publish,
        ])
        .await;
        assert_eq!(code, Some(1), "{publish}: {err}");
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines.len(), 2, "{err}");
        assert!(lines[0].contains(why), "{publish}: {err}");
        assert!(lines[1].contains("publish_addresses"), "{err}");
    }
    let (status, vms) = daemon.call("GET", "/v1/vms", None).await;
    assert_eq!(
        (status, vms["vms"].as_array().unwrap().len()),
        (200, 0),
        "{vms}"
    );

    // Sources only root may pull from: plain http, this host's addresses
    // (the daemon would fetch them as root).
    for (source, host) in [
        ("http://127.0.0.1:9/x.tar.zst", "127.0.0.1:9"),
        ("http://bundles.example/x.tar.zst", "bundles.example"),
        ("https://localhost:8443/x.tar.zst", "localhost:8443"),
        ("127.0.0.1:5000/repo:tag", "127.0.0.1:5000"),
    ] {
        let (code, _, err) = member(&["image", "pull", source, "--name", "fetched"]).await;
        assert_eq!(code, Some(1), "{source}: {err}");
        assert!(
            err.contains(&format!("only root may pull from {host}")),
            "{source}: {err}"
        );
        assert!(err.contains("member_sources"), "{err}");
    }

    assert_eq!(image_count(), images);
    assert!(staging_is_empty(&daemon));
    daemon.stop().await;
}

#[tokio::test]
async fn a_dynamically_linked_guest_binary_is_refused_before_any_image_is_made() {
    // `true` is dynamically linked: as a VM's init it would find no loader.
    let dynamic = ["/usr/bin/true", "/bin/true"]
        .into_iter()
        .find(|p| Path::new(p).is_file())
        .expect("coreutils' true");
    let root = tempfile::tempdir().unwrap();
    support::write_config_with(
        root.path(),
        &format!("default_image = \"base\"\nguest_binary = \"{dynamic}\"\n"),
    );
    let daemon = TestDaemon::start_in(root).await;
    let (status, err) = daemon
        .call("POST", "/v1/images/build", Some(r#"{"name":"mine"}"#))
        .await;
    assert_eq!(status, 501, "{err}");
    let message = err["error"]["message"].as_str().unwrap();
    assert!(message.contains("is dynamically linked"), "{message}");
    assert!(
        err["error"]["hint"]
            .as_str()
            .unwrap()
            .contains("scripts/build-guest"),
        "{err}"
    );
    let (_, report) = daemon.call("GET", "/v1/doctor", None).await;
    let check = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "guest binary")
        .unwrap_or_else(|| panic!("no guest binary check: {report}"))
        .clone();
    assert_eq!(check["status"], "warn", "{check}");
    let (_, list) = daemon.call("GET", "/v1/images", None).await;
    assert_eq!(list["images"].as_array().unwrap().len(), 1, "{list}");
    assert!(staging_is_empty(&daemon));
    daemon.stop().await;
}

/// mkfs.ext4 of `tree` without metadata checksums, so the test can
/// patch a directory entry as an attacker would (one byte).
fn crafted_ext4(tree: &Path, image: &Path, rename: Option<(&str, &str)>) {
    let status = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-O", "^metadata_csum", "-d"])
        .arg(tree)
        .arg(image)
        .arg("32M")
        .status()
        .expect("mkfs.ext4 runs (apt-get install e2fsprogs)");
    assert!(status.success());
    if let Some((from, to)) = rename {
        let mut bytes = std::fs::read(image).unwrap();
        let at = bytes.windows(from.len()).position(|w| w == from.as_bytes());
        let at = at.expect("the entry's name is in the image");
        bytes[at..at + to.len()].copy_from_slice(to.as_bytes());
        std::fs::write(image, bytes).unwrap();
    }
}

/// A registered rootfs is read inside itself: the image of issue 34 (a
/// link to a host path and a second entry of the same name under
/// `/lib/modules/REL`, which `debugfs rdump` wrote through the link as
/// root) is refused with nothing written outside staging, and a module
/// that links to a host file gets the image's file of that path into
/// the initramfs, never the host's. busybox-static stands in for the
/// guest binary (a static ELF; nothing boots here).
#[tokio::test]
async fn a_hostile_rootfs_never_reaches_the_host() {
    let root = tempfile::tempdir().unwrap();
    support::write_config_with(root.path(), "guest_binary = \"/bin/busybox\"\n");
    let daemon = TestDaemon::start_in(root).await;
    let tmp = tempfile::tempdir().unwrap();
    let images_before = daemon.call("GET", "/v1/images", None).await.1["images"]
        .as_array()
        .unwrap()
        .len();
    let userland = |tree: &Path, release: &str| {
        let modules = tree.join("lib/modules").join(release);
        std::fs::create_dir_all(&modules).unwrap();
        std::fs::create_dir_all(tree.join("bin")).unwrap();
        std::fs::write(tree.join("bin/sh"), "").unwrap();
        modules
    };

    // The link and the file of one name: the daemon must not write the
    // file's bytes to the link's host path.
    let victim = tmp.path().join("cron.d-job");
    let tree = tmp.path().join("evil");
    let modules = userland(&tree, "6.1.0-evil");
    let (link, file) = ("payload-entry-name-1", "payload-entry-name-2");
    std::os::unix::fs::symlink(&victim, modules.join(link)).unwrap();
    std::fs::write(modules.join(file), "* * * * * root id > /tmp/owned\n").unwrap();
    let evil = tmp.path().join("evil.ext4");
    crafted_ext4(&tree, &evil, Some((file, link)));
    let body = json!({"name": "evil", "kernel": fake_vmlinux(tmp.path()), "rootfs": evil});
    let (status, err) = daemon
        .call("POST", "/v1/images/register", Some(&body.to_string()))
        .await;
    assert_eq!(status, 422, "{err}");
    let message = err["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("two entries named {link}")),
        "{message}"
    );
    assert!(!message.contains('\n'));
    assert!(
        err["error"]["hint"].as_str().unwrap().contains("e2fsck"),
        "{err}"
    );
    assert!(
        !victim.exists(),
        "the daemon wrote through the image's link"
    );
    assert!(staging_is_empty(&daemon));

    // A module that is a link to a host file the image also holds.
    let secret = tmp.path().join("host-secret");
    std::fs::write(&secret, "HOST SECRET BYTES").unwrap();
    let tree = tmp.path().join("linking");
    let modules = userland(&tree, "6.1.0-test");
    let in_image = tree.join(secret.strip_prefix("/").unwrap());
    std::fs::create_dir_all(in_image.parent().unwrap()).unwrap();
    std::fs::write(&in_image, "the image's own module").unwrap();
    std::fs::create_dir_all(modules.join("kernel")).unwrap();
    std::os::unix::fs::symlink(&secret, modules.join("kernel/virtio_blk.ko")).unwrap();
    std::fs::write(modules.join("modules.dep"), "kernel/virtio_blk.ko:\n").unwrap();
    let builtin: String = banger_host::image::modules::GUEST_MODULES
        .iter()
        .filter(|m| **m != "virtio_blk")
        .map(|m| format!("kernel/{m}.ko\n"))
        .collect();
    std::fs::write(modules.join("modules.builtin"), builtin).unwrap();
    let linking = tmp.path().join("linking.ext4");
    crafted_ext4(&tree, &linking, None);
    let body = json!({"name": "linking", "kernel": fake_vmlinux(tmp.path()), "rootfs": linking});
    let (status, image) = daemon
        .call("POST", "/v1/images/register", Some(&body.to_string()))
        .await;
    assert_eq!(status, 201, "{image}");
    let initrd = image["initrd_path"].as_str().unwrap();
    let files = banger_host::image::initramfs::list(Path::new(initrd)).unwrap();
    let module = files
        .iter()
        .find(|(name, _)| name.ends_with("virtio_blk.ko"))
        .unwrap_or_else(|| {
            panic!(
                "no module in {:?}",
                files.iter().map(|f| &f.0).collect::<Vec<_>>()
            )
        });
    assert_eq!(module.1, b"the image's own module");
    let host_bytes = b"HOST SECRET BYTES";
    assert!(files
        .iter()
        .all(|(_, data)| !data.windows(host_bytes.len()).any(|w| w == host_bytes)));

    // modules.dep naming a file outside its tree is refused.
    std::fs::write(
        modules.join("modules.dep"),
        "kernel/../../../../../../etc/shadow.ko:\n",
    )
    .unwrap();
    let escaping = tmp.path().join("escaping.ext4");
    crafted_ext4(&tree, &escaping, None);
    let body = json!({"name": "escaping", "kernel": fake_vmlinux(tmp.path()), "rootfs": escaping});
    let (status, err) = daemon
        .call("POST", "/v1/images/register", Some(&body.to_string()))
        .await;
    assert_eq!(status, 422, "{err}");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("modules.dep names"),
        "{err}"
    );
    assert!(staging_is_empty(&daemon));
    let (_, list) = daemon.call("GET", "/v1/images", None).await;
    assert_eq!(
        list["images"].as_array().unwrap().len(),
        images_before + 1,
        "{list}"
    );
    daemon.stop().await;
}
