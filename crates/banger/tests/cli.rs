//! The CLI as a user runs it, against a real bangerd under a temporary
//! root: outputs, `--json`, exit codes (0 ok, 1 failed, 2 usage or bad
//! input) and the hint when the daemon is down.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn banger(root: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_banger"))
        .arg("--root")
        .arg(root)
        .args(args)
        .output()
        .unwrap()
}

fn bangerd_built() -> PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_banger")).with_file_name("bangerd");
    assert!(
        path.exists(),
        "bangerd is not built next to banger: run `cargo test --workspace`"
    );
    path
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn version_answers_without_a_daemon() {
    let root = tempfile::tempdir().unwrap();
    let out = banger(root.path(), &["version"]);
    let (shown, _) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{shown}");
    assert!(shown.starts_with("banger "), "{shown}");
    assert!(
        shown.contains("\nbangerd: bangerd is not running at "),
        "{shown}"
    );
}

#[test]
fn daemon_down_is_one_clear_error_with_a_hint() {
    let root = tempfile::tempdir().unwrap();
    let out = banger(root.path(), &["vm", "ls"]);
    let (_, err) = text(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        err.starts_with("error: bangerd is not running at "),
        "{err}"
    );
    assert!(
        err.contains("hint: start it with `banger daemon start`"),
        "{err}"
    );
}

#[test]
fn usage_errors_exit_2() {
    let root = tempfile::tempdir().unwrap();
    assert_eq!(
        banger(root.path(), &["vm", "frobnicate"]).status.code(),
        Some(2)
    );
    assert_eq!(
        banger(root.path(), &["vm", "create", "--vcpus", "many"])
            .status
            .code(),
        Some(2)
    );
    // Found by the CLI before any request: the same one line, a hint, 2.
    let out = banger(root.path(), &["vm", "exec", "web"]);
    let (_, err) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.starts_with("error: exec needs a command") && err.contains("\nhint: "),
        "{err}"
    );
}

#[test]
fn a_session_from_start_to_stop() {
    bangerd_built();
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("etc/banger")).unwrap();
    std::fs::write(
        root.path().join("etc/banger/config.toml"),
        "default_image = \"base\"\n[network]\nenabled = false\n",
    )
    .unwrap();

    let out = banger(root.path(), &["daemon", "start"]);
    assert!(out.status.success(), "{:?}", text(&out));
    register_base(root.path());

    let out = banger(
        root.path(),
        &[
            "vm",
            "create",
            "--name",
            "web",
            "--no-start",
            "--memory",
            "256",
        ],
    );
    assert!(out.status.success(), "{:?}", text(&out));
    assert!(
        text(&out).0.starts_with("created web ("),
        "{:?}",
        text(&out)
    );

    // A copy into a VM that is not running ends with the daemon's answer,
    // though it comes while the client is still sending a large archive.
    let big = root.path().join("big.bin");
    std::fs::write(&big, vec![7u8; 32 << 20]).unwrap();
    let out = banger(
        root.path(),
        &["vm", "cp", big.to_str().unwrap(), "web:/root"],
    );
    let (_, err) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("it must be running"), "{err}");

    // Versions: the CLI's and the daemon's, built from one commit, and
    // the host's VMMs (each named, with its version or as not installed).
    let out = banger(root.path(), &["version"]);
    let (shown, _) = text(&out);
    assert!(out.status.success(), "{shown}");
    let commit = env!("BANGER_COMMIT");
    assert!(
        shown.starts_with(&format!(
            "banger {} ({commit})\nbangerd {} ({commit}), pid ",
            env!("CARGO_PKG_VERSION"),
            env!("CARGO_PKG_VERSION")
        )),
        "{shown}"
    );
    assert!(shown.contains("\nqemu 7."), "{shown}");
    assert!(shown.contains("\nfirecracker "), "{shown}");
    let out = banger(root.path(), &["version", "--json"]);
    let versions: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(versions["bangerd"]["commit"], commit);

    let out = banger(root.path(), &["vm", "ls"]);
    let (table, _) = text(&out);
    assert!(table.starts_with("NAME"), "{table}");
    assert!(
        table
            .lines()
            .nth(1)
            .unwrap()
            .starts_with("web   stopped  172.29.0.2"),
        "{table}"
    );

    let out = banger(root.path(), &["vm", "show", "web", "--json"]);
    let vm: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (vm["name"].as_str(), vm["memory_mib"].as_u64()),
        (Some("web"), Some(256))
    );

    for (args, code, needle) in [
        (
            &["vm", "create", "--name", "Web!", "--no-start"][..],
            2,
            "invalid name",
        ),
        (
            &["vm", "create", "--name", "web", "--no-start"][..],
            1,
            "vm name already exists: web",
        ),
        (
            &["vm", "create", "--disk", "10Q", "--no-start"][..],
            2,
            "invalid size \"10Q\"",
        ),
        (&["vm", "show", "nope"][..], 1, "no vm named \"nope\""),
        (
            &["vm", "create", "--ip", "10.9.9.9", "--no-start"][..],
            2,
            "address 10.9.9.9 is outside the bridge prefix 172.29.0.0/24",
        ),
        (
            &["vm", "create", "--ip", "172.29.0.2", "--no-start"][..],
            1,
            "address 172.29.0.2 is taken by vm web",
        ),
    ] {
        let out = banger(root.path(), args);
        let (_, err) = text(&out);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
        // Progress lines of the stages that ran may come first; the error
        // is one line, and the hint the last.
        let lines: Vec<&str> = err.lines().collect();
        let at = lines
            .iter()
            .position(|l| l.starts_with("error: "))
            .unwrap_or_else(|| panic!("{args:?}: {err}"));
        assert!(lines[at].contains(needle), "{args:?}: {err}");
        assert_eq!(lines.len(), at + 2, "{args:?}: {err}");
        assert!(lines[at + 1].starts_with("hint: "), "{args:?}: {err}");
    }

    // --json prints the record and nothing else, on either stream.
    let out = banger(
        root.path(),
        &[
            "vm",
            "create",
            "--name",
            "db",
            "--ip",
            "172.29.0.40",
            "--no-start",
            "--json",
        ],
    );
    let (json, err) = text(&out);
    assert_eq!((out.status.code(), err.as_str()), (Some(0), ""), "{json}");
    let db: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(db["guest_ip"], "172.29.0.40");
    assert!(banger(root.path(), &["vm", "rm", "db"]).status.success());

    // An ssh_config stanza that trusts only banger's own known_hosts.
    let out = banger(root.path(), &["ssh-config"]);
    let (stanza, _) = text(&out);
    let state = root.path().join("var/lib/banger/ssh");
    for line in [
        "Host *.vm".to_string(),
        format!("IdentityFile {}", state.join("id_ed25519").display()),
        format!("UserKnownHostsFile {}", state.join("known_hosts").display()),
        "StrictHostKeyChecking yes".to_string(),
    ] {
        assert!(
            stanza.lines().any(|l| l.trim() == line),
            "{line} in {stanza}"
        );
    }

    let out = banger(root.path(), &["image", "rm", "base"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).1.contains("image base is in use by vm web"),
        "{:?}",
        text(&out)
    );

    assert!(banger(root.path(), &["vm", "rm", "web"]).status.success());
    let out = banger(root.path(), &["image", "rm", "base"]);
    assert_eq!(text(&out).0, "removed base\n");
    let out = banger(root.path(), &["vm", "ls", "--json"]);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list["vms"].as_array().unwrap().len(), 0);

    let out = banger(root.path(), &["daemon", "stop"]);
    assert!(out.status.success(), "{:?}", text(&out));
    assert!(!root.path().join("run/banger/bangerd.sock").exists());
}

/// `banger image register base` with relative paths (the CLI makes them
/// absolute), a real ext4 rootfs and a stand-in ELF kernel; then the image
/// commands a user would look with.
fn register_base(root: &Path) {
    let files = root.join("files");
    std::fs::create_dir_all(files.join("tree/root")).unwrap();
    std::fs::write(files.join("tree/root/.profile"), "x\n").unwrap();
    let mut kernel = b"\x7fELF\x02\x01\x01".to_vec();
    kernel.resize(4096, 0);
    std::fs::write(files.join("vmlinux"), kernel).unwrap();
    // An initramfs of its own: register takes the files as they are.
    std::fs::write(files.join("initrd"), b"070701 stand-in initramfs").unwrap();
    let status = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-d", "tree", "rootfs.ext4", "16M"])
        .current_dir(&files)
        .status()
        .unwrap();
    assert!(status.success());
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_banger"))
            .arg("--root")
            .arg(root)
            .args(args)
            .current_dir(&files)
            .output()
            .unwrap()
    };
    let out = run(&[
        "image",
        "register",
        "base",
        "--kernel",
        "vmlinux",
        "--initrd",
        "initrd",
        "--rootfs",
        "rootfs.ext4",
    ]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout} {stderr}");
    assert!(stdout.starts_with("registered base ("), "{stdout}");
    // Not a terminal: one plain line per stage on stderr, then the total.
    assert!(
        stderr.contains("  copy ") && stderr.contains("  total "),
        "{stderr}"
    );

    let out = run(&["image", "ls"]);
    let (table, _) = text(&out);
    assert!(table.starts_with("NAME  SOURCE"), "{table}");
    assert!(
        table.lines().nth(1).unwrap().starts_with("base  register"),
        "{table}"
    );

    let out = run(&["image", "show", "base"]);
    let (shown, _) = text(&out);
    assert!(
        shown.contains("work seed:") && shown.contains("sha256:"),
        "{shown}"
    );

    let out = run(&["image", "ls", "--catalog", "--json"]);
    let catalog: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(catalog["entries"][0]["name"], "debian-bookworm");

    let out = run(&[
        "image", "register", "other", "--kernel", "vmlinux", "--rootfs", "vmlinux",
    ]);
    assert_eq!(out.status.code(), Some(2), "{:?}", text(&out));
    let (_, err) = text(&out);
    assert!(
        err.starts_with("error: rootfs ") && err.contains("is not an ext4 image"),
        "{err}"
    );
    assert!(err.lines().nth(1).unwrap().starts_with("hint: "), "{err}");
    let out = run(&["image", "rm", "no-such-image"]);
    assert_eq!(out.status.code(), Some(1));
}
