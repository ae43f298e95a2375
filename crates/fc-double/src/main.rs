//! `firecracker-double`: a TEST DOUBLE of the `firecracker` binary, for
//! the driver's process-level tests on hosts where Firecracker cannot run.
//! It takes Firecracker's `--api-sock` and `--id`, serves the API on the
//! socket (every request validated against the official API description),
//! and boots nothing. Like Firecracker, it exits when the guest is asked
//! to stop (`SendCtrlAltDel`) or on SIGTERM, and leaves its socket behind.

use std::path::PathBuf;
use std::time::Duration;

use banger_host::firecracker::plan::CONFIG_FILE_SECTIONS;
use banger_host::firecracker::{FcRequest, FirecrackerClient, FirecrackerDouble};
use clap::Parser;
use serde_json::{json, Value};

#[derive(Debug, Parser)]
struct Args {
    #[arg(long)]
    api_sock: PathBuf,
    #[arg(long)]
    id: Option<String>,
    /// Configure and start from this JSON, as `firecracker --config-file`.
    #[arg(long)]
    config_file: Option<PathBuf>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args = Args::parse();
    let double = match FirecrackerDouble::spawn(&args.api_sock).await {
        Ok(double) => double,
        Err(err) => {
            eprintln!(
                "firecracker-double: cannot serve {}: {err}",
                args.api_sock.display()
            );
            std::process::exit(1);
        }
    };
    println!(
        "firecracker-double {}: a test double serving the api on {}; it boots nothing",
        args.id.as_deref().unwrap_or("anonymous-instance"),
        args.api_sock.display()
    );
    if let Some(path) = &args.config_file {
        if let Err(err) = apply_config_file(&args.api_sock, path).await {
            eprintln!("firecracker-double: config file {}: {err}", path.display());
            std::process::exit(1);
        }
    }
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(err) => {
            eprintln!("firecracker-double: no sigterm handler: {err}");
            std::process::exit(1);
        }
    };
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = tokio::time::sleep(Duration::from_millis(20)) => {
                if double.stopped() {
                    break;
                }
            }
        }
    }
    // Exit without removing the socket, as Firecracker does.
    std::process::exit(0);
}

/// Replays a `--config-file` document as the API requests it stands for,
/// each validated by the double like any other request, then starts.
async fn apply_config_file(
    api_sock: &std::path::Path,
    path: &std::path::Path,
) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let doc: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    for required in ["boot-source", "drives"] {
        if doc.get(required).is_none() {
            return Err(format!("missing {required}"));
        }
    }
    let mut requests = Vec::new();
    for (key, path) in CONFIG_FILE_SECTIONS {
        if let Some(body) = doc.get(key) {
            requests.push(FcRequest::put(path, body));
        }
    }
    for (key, id) in [("drives", "drive_id"), ("network-interfaces", "iface_id")] {
        for item in doc.get(key).and_then(Value::as_array).into_iter().flatten() {
            let id = item.get(id).and_then(Value::as_str).unwrap_or_default();
            requests.push(FcRequest::put(format!("/{key}/{id}"), item));
        }
    }
    requests.push(FcRequest::put(
        "/actions",
        &json!({"action_type": "InstanceStart"}),
    ));
    let client = FirecrackerClient::new(api_sock);
    for request in &requests {
        client.send(request).await.map_err(|e| e.to_string())?;
    }
    Ok(())
}
