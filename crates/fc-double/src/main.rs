//! `firecracker-double`: a TEST DOUBLE of the `firecracker` binary, for
//! the driver's process-level tests on hosts where Firecracker cannot run.
//! It takes Firecracker's `--api-sock` and `--id`, serves the API on the
//! socket (every request validated against the official API description),
//! and boots nothing. Like Firecracker, it exits when the guest is asked
//! to stop (`SendCtrlAltDel`) or on SIGTERM, and leaves its socket behind.

use std::path::PathBuf;
use std::time::Duration;

use banger_host::firecracker::FirecrackerDouble;
use clap::Parser;

#[derive(Debug, Parser)]
struct Args {
    #[arg(long)]
    api_sock: PathBuf,
    #[arg(long)]
    id: Option<String>,
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
