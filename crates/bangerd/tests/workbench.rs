//! A VM used like a local machine, with one real VM under QEMU through a
//! real bangerd and the real CLI: shared folders seen both ways (a host
//! edit in the guest, a guest file on the host, `:ro` refusing writes,
//! a link resolving inside the guest, no device node or set-id file from
//! guest root), kept across a restart, refused when they cannot be
//! served or became a link; `vm cp` round trips (content, modes,
//! links, owners) both ways; a server in the guest answers through a
//! published port, after a VM restart and after a daemon restart; two
//! VMs cannot publish one host port, nor take one another program holds;
//! bad paths are refused naming their side; `verify` stays clean.

use banger_testkit as support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

/// Runs the CLI against `root`: (exit code, stdout, stderr).
fn cli(root: &Path, args: &[&str]) -> (i32, String, String) {
    let bin = Path::new(env!("CARGO_BIN_EXE_bangerd")).with_file_name("banger");
    let out = std::process::Command::new(bin)
        .arg("--root")
        .arg(root)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// An unprivileged member of the socket's group (`nobody` in `nogroup`,
/// a user ssh can look up), with a home of its own and the CLI where it
/// may run it; its commands run in the VMs' namespace.
struct Member<'a> {
    ns: &'a support::NetNs,
    root: std::path::PathBuf,
    home: std::path::PathBuf,
    _dir: tempfile::TempDir,
    gid: u32,
}

impl<'a> Member<'a> {
    fn new(ns: &'a support::NetNs, root: &Path) -> Member<'a> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
        let home = dir.path().join("home");
        std::fs::create_dir(&home).unwrap();
        let gid = nix::unistd::Group::from_name("nogroup")
            .unwrap()
            .unwrap()
            .gid
            .as_raw();
        std::os::unix::fs::chown(&home, Some(65534), Some(gid)).unwrap();
        let bin = dir.path().join("banger");
        std::fs::copy(
            Path::new(env!("CARGO_BIN_EXE_bangerd")).with_file_name("banger"),
            &bin,
        )
        .unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        Member {
            ns,
            root: root.to_path_buf(),
            home,
            _dir: dir,
            gid,
        }
    }

    /// Runs `argv` as the member (`banger` is its copy of the CLI, on
    /// the test's root).
    fn run(&self, argv: &[&str]) -> (i32, String, String) {
        let bin = self.home.with_file_name("banger");
        let mut command = self.ns.command("setpriv");
        command
            .args([
                "--reuid=65534",
                &format!("--regid={}", self.gid),
                "--clear-groups",
            ])
            .arg("env")
            .arg(format!("HOME={}", self.home.display()))
            .arg("NO_COLOR=1");
        if argv[0] == "banger" {
            command
                .arg(&bin)
                .arg("--root")
                .arg(&self.root)
                .args(&argv[1..]);
        } else {
            command.args(argv);
        }
        let out = command.output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

/// What a TCP connection to `port` on 127.0.0.1 in `ns` reads, retried
/// until it reads something (at most `tries` times, a second apart).
async fn fetch(ns: &support::NetNs, port: u16, tries: u32) -> String {
    let script = format!("exec 3<>/dev/tcp/127.0.0.1/{port} && timeout 10 cat <&3");
    for _ in 0..tries {
        let out = ns.command("bash").args(["-c", &script]).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if !text.is_empty() {
            return text;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    String::new()
}

/// A greeter on guest port 8000, run by systemd (so it comes back after
/// a restart): perl is in every Debian minbase.
const GREETER: &str = r#"mkdir -p /opt/greet
cat > /opt/greet/greet.pl <<'PL'
use IO::Socket::INET;
my $s = IO::Socket::INET->new(LocalPort => 8000, Listen => 5, ReuseAddr => 1) or die "listen: $!";
while (my $c = $s->accept) { print $c "hello from the guest\n"; close $c; }
PL
cat > /etc/systemd/system/greet.service <<'UNIT'
[Unit]
Description=greeter
[Service]
ExecStart=/usr/bin/perl /opt/greet/greet.pl
[Install]
WantedBy=multi-user.target
UNIT
systemctl enable --now greet.service 2>&1"#;

/// A guest server on port 8001 that accepts every connection and holds
/// it (perl, started detached).
const FLOOD_SINK: &str = "setsid perl -MIO::Socket::INET -e '$s = IO::Socket::INET->new(LocalPort => 8001, Listen => 4096, ReuseAddr => 1) or die; push @k, $c while $c = $s->accept' </dev/null >/dev/null 2>&1 &";

/// 2000 idle connections to 127.0.0.1:18083, held until killed.
const FLOOD: &str = "import resource, socket, time
resource.setrlimit(resource.RLIMIT_NOFILE, (8192, 8192))
held = [socket.create_connection(('127.0.0.1', 18083)) for _ in range(2000)]
print(len(held), 'open', flush=True)
time.sleep(120)";

#[tokio::test(flavor = "multi_thread")]
async fn files_ports_and_folders_move_between_host_and_vm() {
    let Some(guest) = support::guest_binary() else {
        return;
    };
    let Some(ns) = support::NetNs::new("workbench") else {
        return;
    };
    let daemon = support::vm_daemon(
        &ns,
        &guest,
        "warm_templates = false\nsocket_group = \"nogroup\"\n",
        true,
    )
    .await;
    let (root, socket) = (daemon.root.path().to_path_buf(), daemon.socket.clone());
    let mut process = daemon.process;
    let call = |method: &'static str, path: &str, body: Option<Value>| {
        let (socket, path) = (socket.clone(), path.to_string());
        async move { support::call_json(&socket, method, &path, body).await }
    };

    // Shared folders: refused up front when they cannot be served.
    let host = tempfile::tempdir().unwrap();
    let shared = host.path().join("shared");
    let frozen = host.path().join("frozen");
    for dir in [&shared, &frozen] {
        std::fs::create_dir(dir).unwrap();
    }
    std::fs::write(shared.join("from-host.txt"), "written on the host\n").unwrap();
    std::fs::write(frozen.join("keep.txt"), "read only\n").unwrap();
    std::os::unix::fs::symlink("/etc", shared.join("etc-link")).unwrap();
    let shared_arg = format!("{}:/srv/share", shared.display());
    for (mount, code, words) in [
        ("rel/dir:/srv/x".to_string(), 2, "absolute"),
        (
            format!("{}/nope:/srv/x", host.path().display()),
            1,
            "no such file",
        ),
        (
            format!("{}/keep.txt:/srv/x", frozen.display()),
            2,
            "not a directory",
        ),
        (
            format!("{}:/srv/a b", shared.display()),
            2,
            "guest directory",
        ),
    ] {
        let (got, _, err) = cli(
            &root,
            &[
                "vm",
                "create",
                "--name",
                "bad",
                "--no-start",
                "--mount",
                &mount,
            ],
        );
        assert_eq!(got, code, "{mount}: {err}");
        assert!(err.contains(words), "{mount}: {err}");
    }
    let (status, vms) = call("GET", "/v1/vms", None).await;
    assert_eq!(
        (status, vms["vms"].as_array().unwrap().len()),
        (200, 0),
        "{vms}"
    );

    // One VM for everything: a published port and two shared folders.
    let (code, _, err) = cli(
        &root,
        &[
            "vm",
            "create",
            "--name",
            "box",
            "--publish",
            "18080:8000",
            "--mount",
            &shared_arg,
            "--mount",
            &format!("{}:/srv/ro:ro", frozen.display()),
        ],
    );
    assert_eq!(code, 0, "{err}");
    let (status, vm) = call("GET", "/v1/vms/box", None).await;
    assert_eq!(status, 200, "{vm}");
    assert_eq!(vm["ports"][0]["host_ip"], "127.0.0.1", "{vm}");
    assert_eq!(vm["mounts"][1]["read_only"], true, "{vm}");

    // --- Shared folders both ways; the guest stays inside them.
    let (code, out, err) = support::sh(
        &socket,
        "box",
        "cat /srv/share/from-host.txt && echo 'written in the guest' > /srv/share/from-guest.txt && \
         cat /srv/ro/keep.txt && (touch /srv/ro/x 2>/dev/null && echo WROTE || echo refused) && \
         cat /srv/share/etc-link/hostname",
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out, "written on the host\nread only\nrefused\nbox\n",
        "the link resolves in the guest's own /etc, not the host's"
    );
    assert_eq!(
        std::fs::read_to_string(shared.join("from-guest.txt")).unwrap(),
        "written in the guest\n"
    );
    assert!(!frozen.join("x").exists());
    // Guest root makes no device node and no set-id file in a folder
    // that root's vm serves.
    let (_, out, err) = support::sh(
        &socket,
        "box",
        "cd /srv/share && touch suid && (chmod u+s suid 2>/dev/null && echo SETUID || echo refused) && \
         (mknod null c 1 3 2>/dev/null && echo DEVICE || echo refused) && rm suid",
    )
    .await;
    assert_eq!(out, "refused\nrefused\n", "{err}");
    assert!(!shared.join("null").exists());
    std::fs::write(shared.join("from-host.txt"), "edited on the host\n").unwrap();
    let mut seen = String::new();
    for _ in 0..20 {
        seen = support::sh(&socket, "box", "cat /srv/share/from-host.txt")
            .await
            .1;
        if seen == "edited on the host\n" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(seen, "edited on the host\n");
    let (status, err) = call("POST", "/v1/vms/box/snapshot", Some(json!({}))).await;
    assert_eq!(status, 422, "a vm with shared folders is not saved: {err}");

    // --- vm cp: a tree in, and back out.
    let tree = host.path().join("tree");
    std::fs::create_dir_all(tree.join("sub")).unwrap();
    let big: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(tree.join("sub/big.bin"), &big).unwrap();
    std::fs::write(tree.join("run.sh"), "#!/bin/sh\necho ran\n").unwrap();
    std::fs::set_permissions(tree.join("run.sh"), std::fs::Permissions::from_mode(0o750)).unwrap();
    std::os::unix::fs::symlink("sub/big.bin", tree.join("link")).unwrap();
    std::fs::write(tree.join("owned"), "mine").unwrap();
    nix::unistd::chown(&tree.join("owned"), Some(1234.into()), Some(2345.into())).unwrap();
    let tree_arg = tree.display().to_string();
    let (code, _, err) = cli(&root, &["vm", "cp", &tree_arg, "box:/root"]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = support::sh(
        &socket,
        "box",
        "cd /root/tree && sha256sum sub/big.bin | cut -d' ' -f1 && stat -c %a run.sh && \
         readlink link && stat -c %u:%g owned && ./run.sh",
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let sha = |bytes: &[u8]| {
        use std::io::Write;
        let mut child = std::process::Command::new("sha256sum")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(bytes).unwrap();
        let out = child.wait_with_output().unwrap();
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .unwrap()
            .to_string()
    };
    let digest = sha(&big);
    assert_eq!(
        out,
        format!("{digest}\n750\nsub/big.bin\n0:0\nran\n"),
        "content, mode, link, the vm user's owner, still runs"
    );
    // -a keeps numeric owners.
    let owned = tree.join("owned").display().to_string();
    let (code, _, err) = cli(&root, &["vm", "cp", "-a", &owned, "box:/root/kept"]);
    assert_eq!(code, 0, "{err}");
    let (_, out, _) = support::sh(&socket, "box", "stat -c %u:%g /root/kept").await;
    assert_eq!(out, "1234:2345\n");
    // Back out, under a new name.
    let back = host.path().join("back");
    let back_arg = back.display().to_string();
    let (code, _, err) = cli(&root, &["vm", "cp", "box:/root/tree", &back_arg]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        sha(&std::fs::read(back.join("sub/big.bin")).unwrap()),
        digest
    );
    assert_eq!(
        std::fs::metadata(back.join("run.sh")).unwrap().mode() & 0o777,
        0o750
    );
    assert_eq!(
        std::fs::read_link(back.join("link")).unwrap(),
        Path::new("sub/big.bin")
    );
    // A file from the guest into an existing directory.
    let (code, _, err) = cli(&root, &["vm", "cp", "box:/etc/hostname", &back_arg]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        std::fs::read_to_string(back.join("hostname")).unwrap(),
        "box\n"
    );
    // Bad paths: named with their side, nothing written.
    let (code, _, err) = cli(&root, &["vm", "cp", "box:/etc/nope", &back_arg]);
    assert_eq!(code, 1);
    assert!(err.contains("no such file in box:/etc/nope"), "{err}");
    let missing = host.path().join("missing").display().to_string();
    let (code, _, err) = cli(&root, &["vm", "cp", &missing, "box:/root"]);
    assert_eq!(code, 1);
    assert!(
        err.contains(&format!("no such file on the host: {missing}")),
        "{err}"
    );
    let (code, _, err) = cli(&root, &["vm", "cp", &tree_arg, "box:/nodir/x"]);
    assert_eq!(code, 1);
    assert!(err.contains("no such file in box:/nodir"), "{err}");
    let (code, _, err) = cli(&root, &["vm", "cp", &tree_arg, "box:root"]);
    assert_eq!(code, 2, "a relative guest path: {err}");
    let (code, _, err) = cli(&root, &["vm", "cp", &tree_arg, &back_arg]);
    assert_eq!(code, 2, "no vm side: {err}");

    // --- Ports: a server in the guest through 127.0.0.1:18080.
    let (code, _, err) = support::sh(&socket, "box", GREETER).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(fetch(&ns, 18080, 20).await, "hello from the guest\n");
    // One VM per host port; another program's port is refused.
    let (status, err) = call(
        "POST",
        "/v1/vms",
        Some(json!({"name": "other", "no_start": true,
                    "publish": [{"host_port": 18080, "guest_port": 80}]})),
    )
    .await;
    assert_eq!(status, 409, "{err}");
    assert!(err["error"]["message"]
        .as_str()
        .unwrap()
        .contains("published by vm box"));
    let mut holder = ns
        .command("perl")
        .args([
            "-MIO::Socket::INET",
            "-e",
            "my $s = IO::Socket::INET->new(LocalAddr => '127.0.0.1:18081', Listen => 1) or die; sleep 120",
        ])
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (code, _, err) = cli(&root, &["vm", "port", "add", "box", "18081:8000"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("in use by another program"), "{err}");
    let _ = holder.kill();
    let _ = holder.wait();
    // Live add and rm.
    let (code, out, err) = cli(&root, &["vm", "port", "add", "box", "18082:8000"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("127.0.0.1:18082:8000/tcp"), "{out}");
    assert_eq!(fetch(&ns, 18082, 5).await, "hello from the guest\n");
    let (code, _, err) = cli(&root, &["vm", "port", "rm", "box", "18082"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(fetch(&ns, 18082, 1).await, "", "removed: nothing listens");
    // A flood of idle connections: a guest server that holds every
    // connection, 2000 clients that hold theirs; the relays take what the
    // vm's bound allows, the rest are closed at once and counted, and
    // the API answers meanwhile.
    let (code, _, err) = support::sh(&socket, "box", FLOOD_SINK).await;
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = cli(&root, &["vm", "port", "add", "box", "18083:8001"]);
    assert_eq!(code, 0, "{err}");
    let mut flood = ns.command("python3");
    flood
        .args(["-c", FLOOD])
        .stdout(std::process::Stdio::piped());
    let mut flood = tokio::process::Command::from(flood)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines =
        tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(flood.stdout.take().unwrap()));
    let ready = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await
        .expect("2000 connections open within a minute")
        .unwrap()
        .unwrap_or_default();
    assert_eq!(ready.trim(), "2000 open", "{ready}");
    let listed = tokio::time::timeout(Duration::from_secs(1), call("GET", "/v1/vms", None)).await;
    let (status, vms) = listed.expect("vm ls answers within a second under the flood");
    assert_eq!(status, 200, "{vms}");
    // The daemon takes the queued connections at its pace: some are
    // refused (counted) and its descriptors stay within the vm's bound
    // (two a relayed connection) and what it holds besides.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let refused = loop {
        let (_, metrics) = support::call(&socket, "GET", "/metrics", None).await;
        let refused: u64 = metrics
            .as_str()
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("banger_port_connections_refused_total "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("no refusal count in {metrics}"));
        if refused > 0 || std::time::Instant::now() > deadline {
            break refused;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(refused > 0, "no connection was refused");
    let fds = std::fs::read_dir(format!("/proc/{}/fd", process.id()))
        .unwrap()
        .count();
    assert!(fds <= 2 * 1024 + 512, "the daemon holds {fds} descriptors");
    let _ = flood.kill().await;
    let (code, _, err) = cli(&root, &["vm", "port", "rm", "box", "18083"]);
    assert_eq!(code, 0, "{err}");
    // A member of the socket's group with no key of its own: `vm ssh`
    // makes its key, lets it into the VM and logs in with it; plain ssh
    // with the `ssh-config` stanza too; its `vm create` offers the key.
    let member = Member::new(&ns, &root);
    let (code, out, err) = member.run(&["banger", "vm", "ssh", "box", "--", "id", "-u"]);
    assert_eq!((code, out.as_str()), (0, "0\n"), "{err}");
    let public =
        std::fs::read_to_string(member.home.join(".config/banger/id_ed25519.pub")).unwrap();
    let (_, vm) = call("GET", "/v1/vms/box", None).await;
    let vm_dir = root
        .join("var/lib/banger/vms")
        .join(vm["id"].as_str().unwrap());
    let kept = std::fs::read_to_string(vm_dir.join("ssh_keys")).unwrap();
    assert_eq!(
        kept.trim(),
        public.trim(),
        "the member's key is kept with the vm"
    );
    let (code, stanza, err) = member.run(&["banger", "ssh-config"]);
    assert_eq!(code, 0, "{err}");
    assert!(stanza.contains(".config/banger/id_ed25519"), "{stanza}");
    let config = member.home.join("ssh_config");
    std::fs::write(&config, &stanza).unwrap();
    let ip = vm["guest_ip"].as_str().unwrap();
    let (code, out, err) = member.run(&[
        "ssh",
        "-F",
        config.to_str().unwrap(),
        "-o",
        &format!("HostName={ip}"),
        "-o",
        "BatchMode=yes",
        "box.vm",
        "id -un",
    ]);
    assert_eq!(
        (code, out.as_str()),
        (0, "root\n"),
        "plain ssh box.vm: {err}"
    );
    let (code, _, err) = member.run(&["banger", "vm", "create", "--no-start", "--name", "mine"]);
    assert_eq!(code, 0, "{err}");
    let (_, mine) = call("GET", "/v1/vms/mine", None).await;
    let mine_dir = root
        .join("var/lib/banger/vms")
        .join(mine["id"].as_str().unwrap());
    assert_eq!(
        std::fs::read_to_string(mine_dir.join("ssh_keys"))
            .unwrap()
            .trim(),
        public.trim(),
        "offered at create"
    );
    let (code, _, err) = member.run(&["banger", "vm", "rm", "mine"]);
    assert_eq!(code, 0, "{err}");
    // Root's own files stay root's.
    let daemon_key = root.join("var/lib/banger/ssh/id_ed25519");
    let meta = std::fs::metadata(&daemon_key).unwrap();
    assert_eq!(
        (meta.uid(), meta.mode() & 0o077),
        (0, 0),
        "the daemon's key"
    );
    let (code, _, _) = member.run(&["cat", daemon_key.to_str().unwrap()]);
    assert_ne!(code, 0, "the member cannot read the daemon's key");
    // A key that is not one is refused before anything is kept.
    let (status, err) = call(
        "POST",
        "/v1/vms/box/ssh-keys",
        Some(json!({"keys": ["ssh-dss AAAAB3 old"]})),
    )
    .await;
    assert_eq!(status, 400, "{err}");

    // What it uses, as `vm stats` reads it; the list conventions.
    let (code, out, err) = cli(&root, &["vm", "stats", "box", "--json"]);
    assert_eq!(code, 0, "{err}");
    let stats: Value = serde_json::from_str(&out).unwrap();
    let box_stats = &stats["vms"][0];
    assert_eq!(box_stats["name"], "box", "{stats}");
    for counter in [
        "cpu_ns",
        "memory_rss_bytes",
        "memory_pss_bytes",
        "net_rx_bytes",
        "net_tx_bytes",
        "work_disk_bytes",
        "system_disk_bytes",
    ] {
        assert!(
            box_stats[counter].as_u64().unwrap_or(0) > 0,
            "{counter}: {stats}"
        );
    }
    assert!(box_stats["cpu_percent"].as_f64().is_some(), "{stats}");
    let (code, out, err) = cli(&root, &["vm", "stats", "-o", "wide"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("NAME") && out.contains("MEMORY PSS") && out.contains("\nbox "),
        "{out}"
    );
    let (code, out, _) = cli(&root, &["-q", "vm", "ls"]);
    assert_eq!((code, out.as_str()), (0, "box\n"), "--quiet: the names");
    let (_, wide, _) = cli(&root, &["vm", "ls", "-o", "wide"]);
    assert!(wide.contains("VMM") && wide.contains("qemu"), "{wide}");

    // A folder swapped for a link while the VM is stopped is not served.
    let (status, err) = call("POST", "/v1/vms/box/stop", None).await;
    assert_eq!(status, 200, "{err}");
    let moved = host.path().join("moved");
    std::fs::rename(&shared, &moved).unwrap();
    std::os::unix::fs::symlink(&moved, &shared).unwrap();
    let (code, _, err) = cli(&root, &["vm", "start", "box"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("is no longer the folder this vm was made with"),
        "{err}"
    );
    std::fs::remove_file(&shared).unwrap();
    std::fs::rename(&moved, &shared).unwrap();
    let (status, err) = call("POST", "/v1/vms/box/start", None).await;
    assert_eq!(status, 200, "{err}");

    // After a VM restart, and a daemon restart; events as they happen.
    let bin = Path::new(env!("CARGO_BIN_EXE_bangerd")).with_file_name("banger");
    let events = std::process::Command::new(&bin)
        .arg("--root")
        .arg(&root)
        .args(["events", "--json"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Subscribed well before the restart begins.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (status, err) = call("POST", "/v1/vms/box/restart", None).await;
    assert_eq!(status, 200, "{err}");
    let (code, out, err) = member.run(&["banger", "vm", "ssh", "box", "--", "id", "-u"]);
    assert_eq!(
        (code, out.as_str()),
        (0, "0\n"),
        "the member's key is in the guest after a start: {err}"
    );
    assert_eq!(fetch(&ns, 18080, 30).await, "hello from the guest\n");
    let (_, out, _) = support::sh(&socket, "box", "cat /srv/share/from-guest.txt").await;
    assert_eq!(out, "written in the guest\n", "the folder is mounted again");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(process.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let _ = process.wait();
    assert_eq!(fetch(&ns, 18080, 1).await, "", "the daemon is down");
    let out = events.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the events stream ended with the daemon"
    );
    let seen: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .filter(|e| e["name"] == "box")
        .map(|e| e["action"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        seen,
        ["stopping", "stopped", "starting", "running"],
        "the restart, as it happened"
    );
    process = support::spawn_daemon(&ns, &root);
    support::wait_for_socket(&socket).await;
    assert_eq!(fetch(&ns, 18080, 10).await, "hello from the guest\n");
    let (status, report) = call("GET", "/v1/verify", None).await;
    assert_eq!((status, &report["leaks"]), (200, &json!([])), "{report}");

    // Removed with the VM.
    let (status, err) = call("DELETE", "/v1/vms/box?force=true", None).await;
    assert_eq!(status, 200, "{err}");
    assert_eq!(fetch(&ns, 18080, 1).await, "");
    let (status, report) = call("GET", "/v1/verify", None).await;
    assert_eq!((status, &report["leaks"]), (200, &json!([])), "{report}");
    let _ = process.kill();
    let _ = process.wait();
    // Dependencies' noise stays below the default level.
    let log = std::fs::read_to_string(root.join("bangerd.log")).unwrap();
    assert!(log.contains("vm removed"), "the log is the daemon's");
    assert!(
        !log.contains("IFLA_INET6_CONF"),
        "netlink's noise is logged"
    );
}
