//! Benchmark: working with a VM like a local machine, each against its
//! baseline in one run: `vm cp` of one file in each direction against
//! `scp` of the same file to the same VM; a published TCP port's
//! throughput against a connection to the guest's address; reading a file
//! from a shared folder against reading it from the work disk (the
//! guest's page cache dropped before each read). One VM of the default
//! image (2 vcpus, 1 GiB) in a network namespace of the benchmark's own.
//!
//! cargo bench-workbench -- [--runs N] [--mib M] [--json FILE]
//! (an alias of `cargo bench -p bangerd --bench workbench --`)

use banger_testkit as support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use serde_json::{json, Value};

struct Args {
    runs: usize,
    mib: u64,
    json: PathBuf,
}

fn args() -> Args {
    let mut args = Args {
        runs: 3,
        mib: 256,
        json: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/bench-workbench.json"),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--runs" => args.runs = it.next().and_then(|v| v.parse().ok()).expect("--runs N"),
            "--mib" => args.mib = it.next().and_then(|v| v.parse().ok()).expect("--mib M"),
            "--json" => args.json = it.next().map(PathBuf::from).expect("--json FILE"),
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    args
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// Wall milliseconds of a command that must succeed. Awaited, not
/// blocked on: the daemon it talks to runs on this same runtime.
async fn timed(command: &mut tokio::process::Command) -> f64 {
    let t = Instant::now();
    let out = command.output().await.unwrap();
    assert!(
        out.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    t.elapsed().as_secs_f64() * 1000.0
}

/// Runs `script` in the VM and returns its stdout (it must succeed).
async fn sh(socket: &Path, script: &str) -> String {
    let body = json!({ "argv": ["sh", "-c", script] }).to_string();
    let (status, events) = support::call_ndjson(socket, "/v1/vms/wb/exec", &body).await;
    assert_eq!(status, 200, "{events:?}");
    let mut out = Vec::new();
    for event in &events {
        if event["type"] == "stdout" {
            use base64::Engine;
            out.extend(
                base64::engine::general_purpose::STANDARD
                    .decode(event["data"].as_str().unwrap())
                    .unwrap(),
            );
        }
    }
    assert!(
        events.iter().any(|e| e["type"] == "exit" && e["code"] == 0),
        "{script}: {events:?}"
    );
    String::from_utf8_lossy(&out).into_owned()
}

/// Milliseconds to read `addr` to its end; checks the byte count.
async fn drain(addr: &str, bytes: u64) -> f64 {
    use tokio::io::AsyncReadExt;
    let t = Instant::now();
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut got = 0u64;
    loop {
        let n = conn.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        got += n as u64;
    }
    assert_eq!(got, bytes, "{addr}");
    t.elapsed().as_secs_f64() * 1000.0
}

async fn bench(root: &Path, guest: &Path, a: &Args) -> Value {
    let config = root.join("etc/banger/bench.toml");
    std::fs::create_dir_all(config.parent().unwrap()).unwrap();
    std::fs::write(
        &config,
        format!(
            "guest_binary = \"{}\"\nwarm_templates = false\n[vm_defaults]\nmemory_mib = 1024\nvcpus = 2\nwork_disk_size = \"2G\"\n",
            guest.display()
        ),
    )
    .unwrap();
    let (running, socket) = support::daemon::serve(root, config).await;
    let shared = root.join("shared");
    std::fs::create_dir_all(&shared).unwrap();
    let file = shared.join("blob.bin");
    assert!(Command::new("head")
        .args(["-c", &format!("{}M", a.mib)])
        .arg("/dev/urandom")
        .stdout(std::fs::File::create(&file).unwrap())
        .status()
        .unwrap()
        .success());
    let bytes = a.mib << 20;
    let body = json!({
        "name": "wb",
        "publish": [{ "host_port": 18090, "guest_port": 9000 }],
        "mounts": [{ "host_dir": shared.display().to_string(), "guest_dir": "/srv/shared" }],
    });
    let (status, vm) = support::call(&socket, "POST", "/v1/vms", Some(&body.to_string())).await;
    assert_eq!(status, 201, "{vm}");
    let ip = vm["guest_ip"].as_str().unwrap().to_string();
    let cli = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/release/banger");
    let cli = if cli.is_file() {
        cli
    } else {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/debug/banger")
    };
    assert!(cli.is_file(), "build the cli first (cargo build -p banger)");
    let key = root.join("var/lib/banger/ssh/id_ed25519");
    let ssh_opts = [
        "-q",
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "LogLevel=ERROR",
    ];
    let back = root.join("back.bin");
    // A sender of the file on guest port 9000, one copy per connection.
    sh(
        &socket,
        "cp /srv/shared/blob.bin /root/blob.bin && sync && \
         nohup perl -MIO::Socket::INET -e '$s = IO::Socket::INET->new(LocalPort => 9000, Listen => 8, ReuseAddr => 1) or die; \
           $SIG{CHLD} = \"IGNORE\"; while ($c = $s->accept) { if (!fork) { open STDOUT, \">&\", $c; exec \"cat\", \"/root/blob.bin\" } close $c }' \
           >/dev/null 2>&1 &",
    )
    .await;
    let mut r: std::collections::BTreeMap<&str, Vec<f64>> = Default::default();
    for run in 0..a.runs {
        eprintln!("run {} of {} ...", run + 1, a.runs);
        let into = format!("wb:/root/cp-{run}.bin");
        r.entry("cp_in").or_default().push(
            timed(
                tokio::process::Command::new(&cli)
                    .arg("--root")
                    .arg(root)
                    .args(["vm", "cp"])
                    .arg(&file)
                    .arg(&into),
            )
            .await,
        );
        let _ = std::fs::remove_file(&back);
        r.entry("cp_out").or_default().push(
            timed(
                tokio::process::Command::new(&cli)
                    .arg("--root")
                    .arg(root)
                    .args(["vm", "cp", "wb:/root/blob.bin"])
                    .arg(&back),
            )
            .await,
        );
        r.entry("scp_in").or_default().push(
            timed(
                tokio::process::Command::new("scp")
                    .args(ssh_opts)
                    .arg("-i")
                    .arg(&key)
                    .arg(&file)
                    .arg(format!("root@{ip}:/root/scp-{run}.bin")),
            )
            .await,
        );
        let _ = std::fs::remove_file(&back);
        r.entry("scp_out").or_default().push(
            timed(
                tokio::process::Command::new("scp")
                    .args(ssh_opts)
                    .arg("-i")
                    .arg(&key)
                    .arg(format!("root@{ip}:/root/blob.bin"))
                    .arg(&back),
            )
            .await,
        );
        sh(
            &socket,
            &format!("rm -f /root/cp-{run}.bin /root/scp-{run}.bin"),
        )
        .await;
        r.entry("port_direct")
            .or_default()
            .push(drain(&format!("{ip}:9000"), bytes).await);
        r.entry("port_published")
            .or_default()
            .push(drain("127.0.0.1:18090", bytes).await);
        for (key, path) in [
            ("read_work", "/root/blob.bin"),
            ("read_shared", "/srv/shared/blob.bin"),
        ] {
            let ns = sh(
                &socket,
                &format!(
                    "sync; echo 3 > /proc/sys/vm/drop_caches; a=$(date +%s%N); cat {path} > /dev/null; b=$(date +%s%N); echo $(( (b - a) / 1000000 ))"
                ),
            )
            .await;
            r.entry(key).or_default().push(ns.trim().parse().unwrap());
        }
    }
    let (status, _) = support::call(&socket, "DELETE", "/v1/vms/wb?force=true", None).await;
    assert_eq!(status, 200);
    support::daemon::shut_down(running).await;
    let mut report = json!({ "mib": a.mib, "runs": a.runs });
    for (key, samples) in r {
        report[key] = json!({ "p50_ms": median(&samples), "samples_ms": samples });
    }
    report
}

fn main() {
    let a = args();
    let guest = support::guest_binary().expect("the guest binary");
    let root = tempfile::tempdir().unwrap();
    // The image is built here, where the Debian mirror is reachable.
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(support::build_default_image(root.path(), &guest));
    let ns = support::NetNs::new("workbench").expect("a network namespace");
    let _cleanup = support::Cleanup(root.path().to_path_buf());
    let report = support::in_netns(&ns, || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(bench(root.path(), &guest, &a))
    });
    let f = |key: &str| report[key]["p50_ms"].as_f64().unwrap_or(f64::NAN);
    let mib = a.mib as f64;
    println!("## working with a vm");
    println!();
    println!(
        "Method: one VM of the default image (2 vcpus, 1 GiB) with a published port and a shared folder, in a network namespace; {} runs, p50 of each. A {} MiB random file: `banger vm cp` (the CLI packs or unpacks, the archive streams through the daemon and the agent) against `scp` with the daemon's key, in each direction; a guest process sending the file (perl accepting, cat writing) read to its end through 127.0.0.1:18090 (the published port) against the guest's own address; `cat` of the file to /dev/null in the guest from the shared folder (virtiofs) against the work disk, after `drop_caches`.",
        a.runs, a.mib
    );
    println!();
    println!("| what | p50 ms | MiB/s | ratio |");
    println!("| --- | ---: | ---: | ---: |");
    let row = |label: &str, key: &str, base: &str| {
        println!(
            "| {label} | {:.0} | {:.1} | {:.2} |",
            f(key),
            mib / (f(key) / 1000.0),
            f(key) / f(base)
        );
    };
    row("scp host to vm", "scp_in", "scp_in");
    row("vm cp host to vm", "cp_in", "scp_in");
    row("scp vm to host", "scp_out", "scp_out");
    row("vm cp vm to host", "cp_out", "scp_out");
    row("tcp to the guest's address", "port_direct", "port_direct");
    row(
        "tcp through the published port",
        "port_published",
        "port_direct",
    );
    row("read from the work disk", "read_work", "read_work");
    row("read from the shared folder", "read_shared", "read_work");
    println!();
    println!("(ratio: time against the row above it; below 1 is faster)");
    std::fs::write(&a.json, serde_json::to_string_pretty(&report).unwrap()).unwrap();
    println!("json: {}", a.json.display());
}
