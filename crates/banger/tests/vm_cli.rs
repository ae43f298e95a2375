//! The VM commands as a user types them, against a real bangerd booting a
//! real VM under QEMU: create (building the default image on first use),
//! exec with the command's exit status, logs, stop, start, rm.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn guest_binary() -> Option<PathBuf> {
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
        "cannot boot vms: no guest binary at {} (run scripts/build-guest)",
        path.display()
    );
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{why}");
    eprintln!("not run: {why}");
    None
}

fn banger(root: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_banger"))
        .arg("--root")
        .arg(root)
        .args(args)
        .output()
        .unwrap()
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// Stops the daemon and kills anything left under the root.
struct Cleanup(PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = banger(&self.0, &["daemon", "stop"]);
        let _ = Command::new("pkill")
            .arg("-9")
            .arg("-f")
            .arg(self.0.display().to_string())
            .status();
    }
}

#[test]
fn create_exec_logs_stop_start_rm() {
    let Some(guest) = guest_binary() else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let _cleanup = Cleanup(root.path().to_path_buf());
    std::fs::create_dir_all(root.path().join("etc/banger")).unwrap();
    std::fs::write(
        root.path().join("etc/banger/config.toml"),
        format!(
            "guest_binary = \"{}\"\n[vm_defaults]\nmemory_mib = 512\n",
            guest.display()
        ),
    )
    .unwrap();
    let out = banger(root.path(), &["daemon", "start"]);
    assert!(out.status.success(), "{:?}", text(&out));

    let out = banger(
        root.path(),
        &["vm", "create", "--name", "web", "--disk", "1G"],
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout} {stderr}");
    assert!(
        stdout.starts_with("created web (") && stdout.contains("running"),
        "{stdout}"
    );

    let out = banger(
        root.path(),
        &["vm", "exec", "web", "--", "cat", "/etc/hostname"],
    );
    assert_eq!(text(&out).0, "web\n");
    let out = banger(
        root.path(),
        &[
            "vm",
            "exec",
            "web",
            "--",
            "sh",
            "-c",
            "echo to-err >&2; exit 5",
        ],
    );
    assert_eq!(out.status.code(), Some(5));
    assert_eq!(text(&out).1, "to-err\n");

    let out = banger(root.path(), &["vm", "logs", "web"]);
    let (console, _) = text(&out);
    assert!(
        console.contains("banger.hostname=web"),
        "the console shows the kernel command line"
    );

    let out = banger(root.path(), &["vm", "stop", "web"]);
    assert_eq!(text(&out).0, "stopped web\n");
    let out = banger(root.path(), &["vm", "exec", "web", "--", "true"]);
    let (_, err) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(
        err,
        "error: vm web is stopped: it must be running\nhint: start it with `banger vm start web`\n"
    );
    let out = banger(root.path(), &["vm", "start", "web"]);
    assert!(
        text(&out).0.starts_with("started web ("),
        "{:?}",
        text(&out)
    );
    let out = banger(root.path(), &["vm", "rm", "web"]);
    assert_eq!(out.status.code(), Some(1), "a running vm needs --force");
    let out = banger(root.path(), &["vm", "rm", "--force", "web"]);
    assert_eq!(text(&out).0, "removed web\n");
    let out = banger(root.path(), &["vm", "ls", "--json"]);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(list["vms"].as_array().unwrap().is_empty());
}
