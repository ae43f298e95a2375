//! Benchmark, inside a network namespace it makes and removes: a VM's TAP
//! device taken from the warm pool vs created fresh (`ip tuntap` + attach),
//! and DNS queries per second answered on loopback.
//!
//! cargo bench -p banger-host --bench network -- [RUNS]

use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::AsFd;
use std::process::Command;
use std::time::{Duration, Instant};

use banger_host::net::{NetConfig, Network};
use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RecordType};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let runs: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(50);
    let ns = format!("bgt-bench-{}", std::process::id());
    let _ = Command::new("ip")
        .args(["netns", "del", &ns])
        .stderr(std::process::Stdio::null())
        .status();
    assert!(
        Command::new("ip")
            .args(["netns", "add", &ns])
            .status()
            .unwrap()
            .success(),
        "needs root"
    );
    let _ = Command::new("ip")
        .args(["-n", &ns, "link", "set", "lo", "up"])
        .status();
    let result = std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let file = std::fs::File::open(format!("/var/run/netns/{ns}")).unwrap();
                nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap()
                    .block_on(bench(runs))
            })
            .join()
    });
    let _ = Command::new("ip").args(["netns", "del", &ns]).status();
    result.unwrap();
}

async fn bench(runs: usize) {
    let net = Network::start(NetConfig {
        bridge: "bgb0".into(),
        gateway: "172.31.9.1".parse().unwrap(),
        prefix: 24,
        pool_prefix: "tap-pool-".into(),
        vm_prefix: "bg-".into(),
        pool_size: 4,
        table: "bgbench".into(),
        host_dns: Some("127.0.0.1:53".parse().unwrap()),
        upstream: vec![],
        uplink: None,
        link_local_allow: vec![],
    })
    .await
    .unwrap();
    let (mut pooled, mut fresh) = (Vec::new(), Vec::new());
    for run in 0..runs {
        let id = format!("{run:016x}");
        // Interleaved: from the pool (refilled between runs) ...
        wait_full(&net).await;
        let t = Instant::now();
        net.take_tap(&id).await.unwrap();
        pooled.push(t.elapsed());
        net.return_tap(&id).await.unwrap();
        // ... and made fresh, as an empty pool would.
        let name = format!("fresh{run}");
        let t = Instant::now();
        net.links().create_tap(&name).await.unwrap();
        let bridge = net.links().index("bgb0").await.unwrap().unwrap();
        net.links().attach_up(&name, bridge).await.unwrap();
        fresh.push(t.elapsed());
        net.links().delete(&name).await.unwrap();
    }
    let (p, f) = (median(pooled), median(fresh));
    println!("## tap device for a vm");
    println!();
    println!("Method: {runs} interleaved runs, median. Pool: `take_tap` (a rename of an idle pool device to the vm's name and up, over netlink). Fresh: `ip tuntap add` + attach to the bridge + up.");
    println!();
    println!("| method | median µs |");
    println!("| --- | ---: |");
    println!("| from the pool | {} |", p.as_micros());
    println!("| created fresh | {} |", f.as_micros());
    println!();
    println!(
        "ratio fresh / pool: {:.1}",
        f.as_secs_f64() / p.as_secs_f64()
    );

    for i in 0..100u8 {
        net.dns()
            .set(&format!("vm{i}"), Ipv4Addr::new(172, 31, 9, 10 + i));
    }
    let server: SocketAddr = "127.0.0.1:53".parse().unwrap();
    let mut query = Message::new();
    query
        .set_id(1)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query);
    query.add_query(Query::query(
        Name::from_ascii("vm42.vm.").unwrap(),
        RecordType::A,
    ));
    let bytes = query.to_vec().unwrap();
    let clients = 8;
    let per_client = 2000;
    let t = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let bytes = bytes.clone();
        tasks.push(tokio::spawn(async move {
            let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
            socket.connect(server).await.unwrap();
            let mut buffer = vec![0u8; 512];
            for _ in 0..per_client {
                socket.send(&bytes).await.unwrap();
                tokio::time::timeout(Duration::from_secs(2), socket.recv(&mut buffer))
                    .await
                    .unwrap()
                    .unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let elapsed = t.elapsed();
    let total = clients * per_client;
    println!();
    println!("## dns on loopback");
    println!();
    println!("Method: {clients} clients in one process, each sending {per_client} A queries for a VM name one after another (send, wait for the answer), 100 names in the table; one run.");
    println!();
    println!("| queries | seconds | queries per second |");
    println!("| ---: | ---: | ---: |");
    println!(
        "| {total} | {:.2} | {:.0} |",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64()
    );
}

async fn wait_full(net: &Network) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while net.idle().len() < net.config().pool_size {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
