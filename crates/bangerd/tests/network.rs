//! Guest networking end to end, with real VMs: the daemon runs in one
//! network namespace (the "host"), a second namespace joined to it by a
//! veth pair stands in for the outside and serves HTTP. A guest resolves
//! another VM as NAME.vm and reaches it; with NAT it reaches the outside,
//! without NAT it cannot, and turning NAT on applies live; a guest cannot
//! reach other host services on the bridge address; the host resolves
//! NAME.vm on its loopback DNS address; no guest reaches link-local
//! metadata; a guest speaking with another's address gets nothing out
//! and poisons no ARP cache; after removal `verify` is clean and the pool
//! devices are back.

use banger_testkit as support;

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde_json::json;
use support::NetNs;

/// Kills what runs under the root and in the namespaces, even on failure.
struct Cleanup(Vec<Child>, PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::process::Command::new("pkill")
            .arg("-9")
            .arg("-f")
            .arg(self.1.display().to_string())
            .status();
    }
}

/// verify finds no leak, the pool is whole, and no vm device or nat
/// rule is left.
async fn assert_nothing_left(socket: &std::path::Path, host: &NetNs) {
    let (_, report) = support::call(socket, "GET", "/v1/verify", None).await;
    assert_eq!(report["leaks"], json!([]), "{report}");
    assert_eq!(report["capacity"].as_array().unwrap().len(), 2, "{report}");
    let links = host.run(&["ip", "-o", "link", "show"]);
    assert!(!links.contains("bg-"), "{links}");
    let tables = host.run(&["nft", "list", "table", "inet", "banger"]);
    assert!(!tables.contains("masquerade"), "{tables}");
    let pins = host.run(&["nft", "list", "table", "bridge", "banger"]);
    assert!(!pins.contains("ether saddr"), "no device is pinned: {pins}");
}

/// The response code banger's DNS gives the guest for `example.com`
/// (one raw query over bash's /dev/udp; the image has no DNS tools).
const DNS_RCODE: &str = r#"ns=$(awk '/^nameserver/{print $2; exit}' /etc/resolv.conf)
exec 3<>/dev/udp/$ns/53
printf '\000\001\001\000\000\001\000\000\000\000\000\000\007example\003com\000\000\001\000\001' >&3
flags=$(timeout 8 head -c 4 <&3 | od -An -tu1 | awk '{print $4}')
echo $(( flags % 16 ))"#;

async fn sh(socket: &Path, vm: &str, script: &str) -> (i64, String) {
    let body = json!({ "argv": ["bash", "-c", script] }).to_string();
    let lines = support::call_stream(socket, &format!("/v1/vms/{vm}/exec"), &body).await;
    let mut out = Vec::new();
    let mut code = None;
    for line in &lines {
        match line["type"].as_str().unwrap() {
            "stdout" | "stderr" => out.extend(B64.decode(line["data"].as_str().unwrap()).unwrap()),
            "exit" => code = line["code"].as_i64(),
            _ => panic!("exec {script:?} on {vm}: {line}"),
        }
    }
    (
        code.unwrap_or(-1),
        String::from_utf8_lossy(&out).into_owned(),
    )
}

/// An HTTP GET over bash's /dev/tcp, first line of the answer, 5 s limit.
fn http_get(host: &str, port: u16) -> String {
    format!(
        "timeout 5 bash -c 'exec 3<>/dev/tcp/{host}/{port}; printf \"GET / HTTP/1.0\\r\\n\\r\\n\" >&3; head -1 <&3'"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn guests_resolve_each_other_and_nat_decides_who_gets_out() {
    let Some(guest) = support::guest_binary() else {
        return;
    };
    let Some(host) = NetNs::new("nethost") else {
        return;
    };
    let Some(outside) = NetNs::new("netout") else {
        return;
    };
    // The outside: 10.77.0.2 behind a veth pair, serving HTTP.
    host.run(&[
        "ip",
        "link",
        "add",
        "up0",
        "type",
        "veth",
        "peer",
        "name",
        "out0",
        "netns",
        &outside.name,
    ]);
    host.run(&["ip", "addr", "add", "10.77.0.1/24", "dev", "up0"]);
    host.run(&["ip", "link", "set", "up0", "up"]);
    host.run(&["ip", "route", "add", "default", "via", "10.77.0.2"]);
    outside.run(&["ip", "addr", "add", "10.77.0.2/24", "dev", "out0"]);
    outside.run(&["ip", "link", "set", "out0", "up"]);
    // Where clouds serve instance metadata, behind the uplink as there.
    outside.run(&["ip", "addr", "add", "169.254.169.254/32", "dev", "out0"]);
    // Counts what reaches the outside on port 8081 (nothing listens).
    outside.run(&["nft", "add", "table", "inet", "count"]);
    outside.run(&[
        "nft",
        "add chain inet count in { type filter hook input priority 0; }",
    ]);
    outside.run(&["nft", "add rule inet count in tcp dport 8081 counter"]);
    let reached_8081 = || {
        let listing = outside.run(&["nft", "list", "chain", "inet", "count", "in"]);
        let packets = listing.split("packets ").nth(1).unwrap();
        packets
            .split_whitespace()
            .next()
            .unwrap()
            .parse::<u64>()
            .unwrap()
    };
    let root = tempfile::tempdir().unwrap();
    let server = outside
        .command("python3")
        .args(["-m", "http.server", "8080", "--bind", "0.0.0.0"])
        .current_dir(root.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 serves http in the outside namespace");
    // A host service the guests must not reach.
    let private = host
        .command("python3")
        .args(["-m", "http.server", "9999", "--bind", "0.0.0.0"])
        .current_dir(root.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut cleanup = Cleanup(vec![server, private], root.path().to_path_buf());

    support::build_default_image(root.path(), &guest).await;
    std::fs::create_dir_all(root.path().join("etc/banger")).unwrap();
    std::fs::write(
        root.path().join("etc/banger/config.toml"),
        format!(
            "guest_binary = \"{}\"\nwarm_templates = false\n[vm_defaults]\nmemory_mib = 512\nwork_disk_size = \"1G\"\n[network]\ntap_pool_size = 2\nupstream_dns = []\n",
            guest.display()
        ),
    )
    .unwrap();
    let daemon = host
        .command(env!("CARGO_BIN_EXE_bangerd"))
        .arg("--root")
        .arg(root.path())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(root.path().join("bangerd.log")).unwrap())
        .spawn()
        .unwrap();
    cleanup.0.push(daemon);
    let socket = root.path().join("run/banger/bangerd.sock");
    let deadline = Instant::now() + Duration::from_secs(30);
    while tokio::net::UnixStream::connect(&socket).await.is_err() {
        assert!(Instant::now() < deadline, "bangerd did not come up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let links = host.run(&["ip", "-o", "link", "show"]);
    assert!(
        links.contains("banger0") && links.contains("tap-pool-0") && links.contains("tap-pool-1"),
        "{links}"
    );

    let (status, a) = support::call(
        &socket,
        "POST",
        "/v1/vms",
        Some(r#"{"name":"a","nat":true}"#),
    )
    .await;
    assert_eq!(status, 201, "{a}");
    let (status, b) = support::call(&socket, "POST", "/v1/vms", Some(r#"{"name":"b"}"#)).await;
    assert_eq!(status, 201, "{b}");
    let (a_ip, b_ip) = (
        a["guest_ip"].as_str().unwrap().to_string(),
        b["guest_ip"].as_str().unwrap().to_string(),
    );

    // Names resolve between guests, and guests reach each other (b's sshd).
    // Retried like the port below: a lookup under emulation may time out.
    let (code, out) = sh(
        &socket,
        "a",
        "for i in $(seq 1 20); do getent hosts b.vm && exit 0; sleep 0.5; done; exit 2",
    )
    .await;
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with(&b_ip), "{out}");
    let reach = "for i in $(seq 1 100); do timeout 2 bash -c 'echo > /dev/tcp/b.vm/22' 2>/dev/null && exit 0; sleep 0.3; done; exit 1";
    assert_eq!(sh(&socket, "a", reach).await.0, 0, "a reaches b's ssh port");

    // NAT decides who gets out; turning it on applies live.
    let (code, out) = sh(&socket, "a", &http_get("10.77.0.2", 8080)).await;
    assert_eq!((code, out.trim()), (0, "HTTP/1.0 200 OK"), "a has nat");
    let (code, _) = sh(&socket, "b", &http_get("10.77.0.2", 8080)).await;
    assert_ne!(code, 0, "b has no nat and must not get out");
    // Nor through recursion: banger's DNS answers b's outside names
    // REFUSED (its neighbours' names resolved above); a's are forwarded.
    let (code, out) = sh(&socket, "b", DNS_RCODE).await;
    assert_eq!((code, out.trim()), (0, "5"), "b's outside name is refused");
    let (code, out) = sh(&socket, "a", DNS_RCODE).await;
    assert_eq!(code, 0, "{out}");
    assert_ne!(
        out.trim(),
        "5",
        "a has nat: its outside names are forwarded"
    );
    let tables = host.run(&["nft", "list", "table", "inet", "banger"]);
    assert!(
        tables.contains(&format!("ip saddr {a_ip} masquerade")),
        "{tables}"
    );
    assert!(
        !tables.contains(&format!("ip saddr {b_ip} masquerade")),
        "{tables}"
    );
    let (status, _) = support::call(&socket, "PATCH", "/v1/vms/b", Some(r#"{"nat":true}"#)).await;
    assert_eq!(status, 200);
    let (code, out) = sh(&socket, "b", &http_get("10.77.0.2", 8080)).await;
    assert_eq!((code, out.trim()), (0, "HTTP/1.0 200 OK"), "b has nat now");
    let (status, _) = support::call(&socket, "PATCH", "/v1/vms/b", Some(r#"{"nat":false}"#)).await;
    assert_eq!(status, 200);
    let tables = host.run(&["nft", "list", "table", "inet", "banger"]);
    assert!(
        !tables.contains(&format!("ip saddr {b_ip} masquerade")),
        "{tables}"
    );

    // No guest reaches link-local metadata, not even one with NAT.
    let (code, _) = sh(&socket, "a", &http_get("169.254.169.254", 8080)).await;
    assert_ne!(code, 0, "169.254.169.254 is closed to guests");

    // b (no NAT) speaking as a (NAT) gets nothing out and does not teach
    // the host that a's address is at b's MAC.
    let spoof = format!(
        "ip addr add {a_ip}/32 dev eth0 && perl -MIO::Socket::INET -e 'IO::Socket::INET->new(PeerAddr => \"10.77.0.2\", PeerPort => 8081, LocalAddr => \"{a_ip}\", Proto => \"tcp\", Timeout => 3)'; ip addr del {a_ip}/32 dev eth0"
    );
    let (code, out) = sh(&socket, "b", &spoof).await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(reached_8081(), 0, "a spoofed packet got out");
    let b_mac = format!(
        "06:00:{}",
        b_ip.split('.')
            .map(|o| format!("{:02x}", o.parse::<u8>().unwrap()))
            .collect::<Vec<_>>()
            .join(":")
    );
    let neigh = host.run(&["ip", "neigh", "show", &a_ip]);
    assert!(!neigh.contains(&b_mac), "arp poisoned: {neigh}");
    // The same connection from a itself gets there (the counter works).
    let honest = "perl -MIO::Socket::INET -e 'IO::Socket::INET->new(PeerAddr => \"10.77.0.2\", PeerPort => 8081, Proto => \"tcp\", Timeout => 3)'";
    assert_eq!(sh(&socket, "a", honest).await.0, 0);
    assert!(
        reached_8081() > 0,
        "a's own connection must reach the outside"
    );
    assert_eq!(
        sh(&socket, "b", reach.replace("b.vm", "a.vm").as_str())
            .await
            .0,
        0
    );
    let bridge_table = host.run(&["nft", "list", "table", "bridge", "banger"]);
    assert!(bridge_table.contains(&b_mac), "{bridge_table}");

    // Guests reach the DNS server on the bridge address but no other host
    // service there.
    let (code, _) = sh(&socket, "a", &http_get("172.29.0.1", 9999)).await;
    assert_ne!(code, 0, "a host service on the bridge address is private");
    let (code, _) = sh(&socket, "a", &http_get("10.77.0.1", 9999)).await;
    assert_ne!(code, 0, "and so it is on the host's other addresses");

    // The host resolves NAME.vm on its loopback DNS address.
    let netns_etc = PathBuf::from("/etc/netns").join(&host.name);
    std::fs::create_dir_all(&netns_etc).unwrap();
    std::fs::write(netns_etc.join("resolv.conf"), "nameserver 127.29.0.1\n").unwrap();
    let resolved = host.run(&["getent", "hosts", "a.vm"]);
    let _ = std::fs::remove_dir_all(&netns_etc);
    assert!(resolved.starts_with(&a_ip), "{resolved}");

    let (_, report) = support::call(&socket, "GET", "/v1/verify", None).await;
    assert_eq!(report["leaks"], json!([]), "{report}");
    for vm in ["a", "b"] {
        let (status, _) =
            support::call(&socket, "DELETE", &format!("/v1/vms/{vm}?force=true"), None).await;
        assert_eq!(status, 200);
    }
    assert_nothing_left(&socket, &host).await;

    // A client that goes away mid-create (Ctrl-C) leaves nothing: the
    // daemon finishes the boot, then removes the vm nobody waits for.
    let first = support::abandon_stream(&socket, "/v1/vms", r#"{"name":"gone","nat":true}"#).await;
    assert_eq!(first["type"], "stage", "{first}");
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let (_, list) = support::call(&socket, "GET", "/v1/vms", None).await;
        let (_, report) = support::call(&socket, "GET", "/v1/verify", None).await;
        if list["vms"] == json!([]) && report["leaks"] == json!([]) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the abandoned create was not removed: {list} {report}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Twenty create/rm cycles, with and without nat, leave nothing behind.
    let cycles = Instant::now();
    for i in 0..20 {
        let body = format!(r#"{{"name":"cycle","nat":{}}}"#, i % 2 == 0);
        let (status, vm) = support::call(&socket, "POST", "/v1/vms", Some(&body)).await;
        assert_eq!(status, 201, "cycle {i}: {vm}");
        let (status, out) =
            support::call(&socket, "DELETE", "/v1/vms/cycle?force=true", None).await;
        assert_eq!(status, 200, "cycle {i}: {out}");
    }
    eprintln!("20 create/rm cycles: {:?}", cycles.elapsed());
    assert_nothing_left(&socket, &host).await;
    let known = std::fs::read_to_string(root.path().join("var/lib/banger/ssh/known_hosts"))
        .unwrap_or_default();
    assert_eq!(known, "", "no host key of a removed vm is trusted");
}
