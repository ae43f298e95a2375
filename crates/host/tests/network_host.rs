//! The network's host side on real kernel objects, inside a network
//! namespace the test makes and removes: the bridge and the warm TAP pool
//! (take, give back, refill), banger's nft table as NAT is toggled, DNS
//! answers over real UDP, and 20 take/give-back cycles that leave nothing.

use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::AsFd;
use std::process::Command;
use std::time::{Duration, Instant};

use banger_host::net::{NetConfig, Network};
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, RecordType};

struct Ns(String);

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn ip(ns: &str, args: &[&str]) -> String {
    let out = Command::new("ip")
        .arg("-n")
        .arg(ns)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn nft_table(ns: &str) -> String {
    let out = Command::new("ip")
        .args([
            "netns", "exec", ns, "nft", "list", "table", "inet", "bgtest",
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Makes namespace `bgt-TAG-PID` (lo up, an uplink with the default route), or None under no privileges
/// (a failure under CI=true).
fn namespace(tag: &str) -> Option<Ns> {
    // Tests run side by side in one process: each its own namespace.
    let name = format!("bgt-{tag}-{}", std::process::id());
    let _ = Command::new("ip").args(["netns", "del", &name]).status();
    if !Command::new("ip")
        .args(["netns", "add", &name])
        .status()
        .is_ok_and(|s| s.success())
    {
        let why = "cannot create a network namespace (needs root and iproute2)";
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{why}");
        eprintln!("not run: {why}");
        return None;
    }
    let ns = Ns(name);
    ip(&ns.0, &["link", "set", "lo", "up"]);
    ip(
        &ns.0,
        &["link", "add", "up0", "type", "veth", "peer", "name", "up0p"],
    );
    ip(&ns.0, &["addr", "add", "10.66.0.1/24", "dev", "up0"]);
    ip(&ns.0, &["link", "set", "up0", "up"]);
    ip(&ns.0, &["link", "set", "up0p", "up"]);
    ip(&ns.0, &["route", "add", "default", "via", "10.66.0.2"]);
    Some(ns)
}

/// Runs `f` on a thread that entered the namespace, on its own runtime.
fn inside<R: Send>(ns: &str, f: impl FnOnce() -> R + Send) -> R {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let file = std::fs::File::open(format!("/var/run/netns/{ns}")).unwrap();
                nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
                f()
            })
            .join()
            .unwrap()
    })
}

/// Runs `work` to its end on a runtime of this thread's own.
fn block_on<T>(work: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(work)
}

fn config() -> NetConfig {
    NetConfig {
        bridge: "bgt0".into(),
        gateway: "172.30.5.1".parse().unwrap(),
        prefix: 24,
        pool_prefix: "tap-pool-".into(),
        vm_prefix: "bg-".into(),
        pool_size: 2,
        table: "bgtest".into(),
        host_dns: Some("127.0.0.1:53".parse().unwrap()),
        upstream: vec![],
        uplink: None,
        link_local_allow: vec![],
    }
}

async fn ask(server: SocketAddr, name: &str, kind: RecordType) -> Message {
    let mut query = Message::new();
    query
        .set_id(9)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query);
    query.add_query(Query::query(Name::from_ascii(name).unwrap(), kind));
    let socket = tokio::net::UdpSocket::bind("0.0.0.0:0").await.unwrap();
    socket
        .send_to(&query.to_vec().unwrap(), server)
        .await
        .unwrap();
    let mut buffer = vec![0u8; 1500];
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), socket.recv_from(&mut buffer))
        .await
        .expect("the dns server answers")
        .unwrap();
    Message::from_vec(&buffer[..n]).unwrap()
}

async fn wait_idle(net: &Network, want: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while net.idle().len() != want {
        assert!(Instant::now() < deadline, "pool stayed at {:?}", net.idle());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn bridge_pool_nat_and_dns_in_a_namespace() {
    let Some(ns) = namespace("host") else {
        return;
    };
    let name = ns.0.clone();
    inside(&name, || {
        block_on(async {
            let net = Network::start(config()).await.unwrap();
            assert_eq!(net.uplink(), Some("up0"), "the default route's interface");
            let links = ip(&name, &["-o", "link", "show", "master", "bgt0"]);
            assert!(
                links.contains("tap-pool-0") && links.contains("tap-pool-1"),
                "{links}"
            );
            assert_eq!(
                std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")
                    .unwrap()
                    .trim(),
                "1"
            );

            // A VM takes a pool device (renamed, still on the bridge); the
            // pool refills; giving it back keeps the pool at its size.
            let tap = net.take_tap("0123456789abcdef").await.unwrap();
            assert_eq!(tap, "bg-0123456789ab");
            let links = ip(&name, &["-o", "link", "show", "master", "bgt0"]);
            assert!(links.contains("bg-0123456789ab"), "{links}");
            wait_idle(&net, 2).await;
            net.return_tap("0123456789abcdef").await.unwrap();
            assert_eq!(net.idle().len(), 2);
            assert!(!ip(&name, &["-o", "link", "show"]).contains("bg-"));

            // NAT rules appear and disappear as toggled.
            let guest: Ipv4Addr = "172.30.5.7".parse().unwrap();
            net.set_nat(guest, true).await.unwrap();
            assert!(
                nft_table(&name).contains("ip saddr 172.30.5.7 masquerade"),
                "{}",
                nft_table(&name)
            );
            net.set_nat(guest, false).await.unwrap();
            assert!(
                !nft_table(&name).contains("masquerade"),
                "{}",
                nft_table(&name)
            );

            // DNS over real UDP, on the bridge address and on loopback.
            net.dns().set("web", guest);
            for server in ["172.30.5.1:53", "127.0.0.1:53"] {
                let server: SocketAddr = server.parse().unwrap();
                let answer = ask(server, "web.vm.", RecordType::A).await;
                assert_eq!(answer.answers()[0].data(), Some(&RData::A(A(guest))));
                let ptr = ask(server, "7.5.30.172.in-addr.arpa.", RecordType::PTR).await;
                assert_eq!(ptr.answers().len(), 1);
                let missing = ask(server, "nope.vm.", RecordType::A).await;
                assert_eq!(missing.response_code(), ResponseCode::NXDomain);
            }
            net.dns().remove("web");

            // 20 VMs' worth of take / nat / dns and back leave nothing.
            for i in 0..20u8 {
                let id = format!("{i:02x}{}", "c".repeat(14));
                let ip: Ipv4Addr = Ipv4Addr::new(172, 30, 5, 10 + i);
                net.take_tap(&id).await.unwrap();
                net.dns().set(&format!("vm{i}"), ip);
                net.set_nat(ip, true).await.unwrap();
                net.dns().remove(&format!("vm{i}"));
                net.set_nat(ip, false).await.unwrap();
                net.return_tap(&id).await.unwrap();
            }
            wait_idle(&net, 2).await;
            assert!(net.stray_vm_links(&[]).await.unwrap().is_empty());
            assert!(net.dns().records().is_empty());
            assert!(net.nat().is_empty());
            assert!(!nft_table(&name).contains("masquerade"));
            let taps = ip(&name, &["-o", "link", "show"])
                .matches("tap-pool-")
                .count();
            assert_eq!(taps, 2, "the pool did not grow");
        });
    });
}

/// A namespace of its own, with `lo` up.
fn side(name: &str) -> Ns {
    let _ = Command::new("ip").args(["netns", "del", name]).status();
    assert!(Command::new("ip")
        .args(["netns", "add", name])
        .status()
        .unwrap()
        .success());
    ip(name, &["link", "set", "lo", "up"]);
    Ns(name.to_string())
}

/// A TCP listener on `addr` inside `ns`, accepting until the test ends.
fn listen_in(ns: &str, addr: SocketAddr) {
    let ns = ns.to_string();
    let (ready, bound) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let file = std::fs::File::open(format!("/var/run/netns/{ns}")).unwrap();
        nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let listener = std::net::TcpListener::bind(addr).unwrap();
        ready.send(()).unwrap();
        for connection in listener.incoming() {
            drop(connection);
        }
    });
    bound
        .recv_timeout(Duration::from_secs(5))
        .expect("the listener is up");
}

/// Whether a TCP connection from inside `from` reaches `to` within 1 s.
fn reaches(from: &str, to: SocketAddr) -> bool {
    inside(from, || {
        std::net::TcpStream::connect_timeout(&to, Duration::from_secs(1)).is_ok()
    })
}

/// A query from inside `ns` to `server`: its answer, or None after 2 s.
fn try_ask(ns: &str, server: SocketAddr) -> Option<ResponseCode> {
    inside(ns, || {
        block_on(async {
            let mut query = Message::new();
            query
                .set_id(3)
                .set_message_type(MessageType::Query)
                .set_op_code(OpCode::Query);
            query.add_query(Query::query(
                Name::from_ascii("example.com.").unwrap(),
                RecordType::A,
            ));
            let socket = tokio::net::UdpSocket::bind("0.0.0.0:0").await.unwrap();
            socket
                .send_to(&query.to_vec().unwrap(), server)
                .await
                .ok()?;
            let mut buffer = vec![0u8; 1500];
            let (n, _) =
                tokio::time::timeout(Duration::from_secs(2), socket.recv_from(&mut buffer))
                    .await
                    .ok()?
                    .ok()?;
            Some(Message::from_vec(&buffer[..n]).ok()?.response_code())
        })
    })
}

/// A host between two networks (`a` and `b`, each a namespace of its
/// own): forwarding banger turned on does not route between them, at
/// the first start and after a restart; a LAN neighbour gets nothing
/// from banger's DNS; a host that forwarded before keeps routing.
#[test]
fn forwarding_banger_turned_on_carries_only_the_bridge() {
    let Some(router) = namespace("fwd") else {
        return;
    };
    let name = router.0.clone();
    let (a, b) = (side(&format!("{name}-a")), side(&format!("{name}-b")));
    for (peer, net) in [(&a.0, "10.71.0"), (&b.0, "10.72.0")] {
        let (here, there) = (format!("v{}", &net[3..5]), format!("p{}", &net[3..5]));
        ip(
            &name,
            &["link", "add", &here, "type", "veth", "peer", "name", &there],
        );
        ip(&name, &["link", "set", &there, "netns", peer]);
        ip(
            &name,
            &["addr", "add", &format!("{net}.1/24"), "dev", &here],
        );
        ip(&name, &["link", "set", &here, "up"]);
        ip(
            peer,
            &["addr", "add", &format!("{net}.2/24"), "dev", &there],
        );
        ip(peer, &["link", "set", &there, "up"]);
        ip(
            peer,
            &["route", "add", "default", "via", &format!("{net}.1")],
        );
    }
    let forwarding = |on: &str| {
        inside(&name, || {
            std::fs::write("/proc/sys/net/ipv4/ip_forward", on).unwrap()
        })
    };
    // The control: with forwarding on, the host routes a to b.
    let server: SocketAddr = "10.72.0.2:9000".parse().unwrap();
    listen_in(&b.0, server);
    forwarding("1");
    assert!(reaches(&a.0, server), "the test's own routing works");
    forwarding("0");
    let start = || {
        inside(&name, || {
            block_on(async {
                let net = Network::start(config()).await.unwrap();
                net.owns_forwarding()
            })
        })
    };
    assert!(start(), "banger turned forwarding on");
    assert!(!reaches(&a.0, server), "the host routes a to b");
    assert!(nft_table(&name).contains("banger turned forwarding on"));
    assert_eq!(
        try_ask(&a.0, "172.30.5.1:53".parse().unwrap()),
        None,
        "dns for a neighbour"
    );
    assert!(start(), "a restart knows banger turned it on");
    assert!(
        !reaches(&a.0, server),
        "the host routes a to b after a restart"
    );
    // A host that forwarded before banger came keeps routing.
    let dropped = Command::new("ip")
        .args([
            "netns", "exec", &name, "nft", "delete", "table", "inet", "bgtest",
        ])
        .status()
        .unwrap();
    assert!(dropped.success());
    assert!(!start(), "forwarding was the host's");
    assert!(reaches(&a.0, server), "the host's own routing is kept");
}
