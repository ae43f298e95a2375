//! The VM commands as a user types them, against a real bangerd booting a
//! real VM under QEMU: image pull, then (in a network namespace of the
//! test's own) create, exec with the command's exit status, logs, stop,
//! start, rm.

use std::path::{Path, PathBuf};

use banger_testkit::{guest_binary, require};
use std::process::{Command, Output};

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

/// Stops the daemon, kills anything left under the root, and removes the
/// network namespace the daemon ran in.
struct Cleanup {
    root: PathBuf,
    netns: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = banger(&self.root, &["daemon", "stop"]);
        let _ = Command::new("pkill")
            .arg("-9")
            .arg("-f")
            .arg(self.root.display().to_string())
            .status();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .status();
    }
}

#[test]
fn create_exec_logs_stop_start_rm() {
    let Some(guest) = guest_binary() else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    // The daemon owns a bridge, taps and nft rules: give it a namespace.
    let netns = format!("bgt-cli-{}", std::process::id());
    let made = Command::new("ip")
        .args(["netns", "add", &netns])
        .status()
        .map(|s| s.success());
    if require(
        made.ok() == Some(true),
        "cannot create a network namespace (needs root and iproute2)",
    )
    .is_none()
    {
        return;
    }
    Command::new("ip")
        .args(["-n", &netns, "link", "set", "lo", "up"])
        .status()
        .unwrap();
    let _cleanup = Cleanup {
        root: root.path().to_path_buf(),
        netns: netns.clone(),
    };
    std::fs::create_dir_all(root.path().join("etc/banger")).unwrap();
    let config = root.path().join("etc/banger/config.toml");
    // First the image, by a daemon here, where the Debian mirror is
    // reachable (with no network of its own).
    std::fs::write(
        &config,
        format!(
            "guest_binary = \"{}\"\n[network]\nenabled = false\n",
            guest.display()
        ),
    )
    .unwrap();
    assert!(banger(root.path(), &["daemon", "start"]).status.success());
    let out = banger(root.path(), &["image", "pull", "debian-bookworm"]);
    assert!(out.status.success(), "{:?}", text(&out));
    assert!(banger(root.path(), &["daemon", "stop"]).status.success());
    std::fs::write(
        &config,
        format!(
            "guest_binary = \"{}\"\n[vm_defaults]\nmemory_mib = 512\n",
            guest.display()
        ),
    )
    .unwrap();
    let out = Command::new("ip")
        .args(["netns", "exec", &netns])
        .arg(env!("CARGO_BIN_EXE_banger"))
        .arg("--root")
        .arg(root.path())
        .args(["daemon", "start"])
        .output()
        .unwrap();
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
    // A VM's disks (its system disk holds its SSH host key) and console
    // are root's alone.
    use std::os::unix::fs::PermissionsExt;
    // Its own directory, by its id (`created web (ID, ...)`): a warm
    // template's VM may be beside it.
    let id = stdout["created web (".len()..]
        .split(',')
        .next()
        .unwrap()
        .to_string();
    let vm_dir = root.path().join("var/lib/banger/vms").join(&id);
    for file in ["system.cow", "root.ext4", "serial.log"] {
        let mode = std::fs::metadata(vm_dir.join(file))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "{file} is {mode:o}");
    }
    let known_hosts = root.path().join("var/lib/banger/ssh/known_hosts");
    let mode = std::fs::metadata(known_hosts).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o644, "ssh run by any user reads known_hosts");

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
    // A command that is not there: 127 and the reason, as in a shell.
    let out = banger(root.path(), &["vm", "exec", "web", "--", "no-such-tool"]);
    assert_eq!(out.status.code(), Some(127), "{:?}", text(&out));
    assert!(
        text(&out).1.contains("cannot run no-such-tool"),
        "{:?}",
        text(&out)
    );
    // -i: our input is the command's, up to 1 MiB; more is refused (exit 2).
    let with_input = |bytes: Vec<u8>| {
        use std::io::Write;
        let mut child = Command::new(env!("CARGO_BIN_EXE_banger"))
            .arg("--root")
            .arg(root.path())
            .args(["vm", "exec", "-i", "web", "--", "sha256sum"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        // The CLI may refuse before it has read everything.
        let _ = stdin.write_all(&bytes);
        drop(stdin);
        child.wait_with_output().unwrap()
    };
    let input: Vec<u8> = (0..1u32 << 20).map(|i| (i % 251) as u8).collect();
    let out = with_input(input.clone());
    assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
    let expected = Command::new("sha256sum")
        .stdin(
            std::fs::File::open({
                let path = root.path().join("input");
                std::fs::write(&path, &input).unwrap();
                path
            })
            .unwrap(),
        )
        .output()
        .unwrap();
    assert_eq!(text(&out).0, text(&expected).0);
    let out = with_input(vec![0; (1 << 20) + 1]);
    assert_eq!(out.status.code(), Some(2), "{:?}", text(&out));
    assert!(
        text(&out).1.contains("larger than 1 MiB"),
        "{:?}",
        text(&out)
    );

    let out = banger(root.path(), &["vm", "logs", "web"]);
    let (console, _) = text(&out);
    assert!(
        console.contains("banger.hostname=web"),
        "the console shows the kernel command line"
    );

    // SSH, from inside the namespace where the guest's address is.
    let in_ns = |args: &[&str]| {
        Command::new("ip")
            .args(["netns", "exec", &netns])
            .arg(env!("CARGO_BIN_EXE_banger"))
            .arg("--root")
            .arg(root.path())
            .args(args)
            .output()
            .unwrap()
    };
    let out = in_ns(&[
        "vm",
        "ssh",
        "web",
        "--",
        "sh",
        "-c",
        "echo $(hostname) 'has it''s quotes'",
    ]);
    assert_eq!(text(&out).0, "web has its quotes\n", "{:?}", text(&out));
    let out = in_ns(&[
        "vm", "run", "--rm", "--name", "once", "--", "sh", "-c", "exit 4",
    ]);
    assert_eq!(out.status.code(), Some(4), "{:?}", text(&out));
    let (_, err) = text(&out);
    assert!(
        err.contains("ssh_ready") && err.contains("removed once"),
        "{err}"
    );
    let out = banger(root.path(), &["vm", "show", "once"]);
    assert_eq!(out.status.code(), Some(1), "--rm removed it");

    // `logs -f` follows the console until the vm stops.
    let mut follow = Command::new(env!("CARGO_BIN_EXE_banger"))
        .arg("--root")
        .arg(root.path())
        .args(["vm", "logs", "-f", "web"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(
        follow.try_wait().unwrap().is_none(),
        "logs -f keeps following"
    );
    let out = banger(root.path(), &["vm", "stop", "web"]);
    assert_eq!(text(&out).0, "stopped web\n");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while follow.try_wait().unwrap().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "logs -f did not end when the vm stopped"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let followed = follow.wait_with_output().unwrap();
    assert!(followed.status.success(), "{:?}", text(&followed));
    let (console, _) = text(&followed);
    assert!(console.contains("banger.hostname=web"), "{console}");
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
    // show keeps the create's stages apart from the last start's.
    let out = banger(root.path(), &["vm", "show", "web"]);
    let (shown, _) = text(&out);
    let create = shown
        .lines()
        .find(|l| l.starts_with("create:"))
        .unwrap_or("");
    let start = shown
        .lines()
        .find(|l| l.starts_with("last start:"))
        .unwrap_or("");
    assert!(create.contains("reserve_vm"), "{shown}");
    assert!(
        start.contains("agent_ready") && !start.contains("reserve_vm"),
        "{shown}"
    );
    let out = banger(root.path(), &["vm", "rm", "web"]);
    assert_eq!(out.status.code(), Some(1), "a running vm needs --force");
    let out = banger(root.path(), &["vm", "rm", "--force", "web"]);
    assert_eq!(text(&out).0, "removed web\n");
    let out = banger(root.path(), &["vm", "ls", "--json"]);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(list["vms"].as_array().unwrap().is_empty());
}
