//! `banger-guest`: `init` when it is PID 1 or called `init`,
//! `banger-agent` when called so; `banger-guest init|agent` otherwise.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use banger_guest::agent::{serve, AgentContext};
use banger_guest::channel::find_serial_port;
use banger_guest::cmdline::{AgentTransport, BootConfig};
use banger_proto::agent::{SERIAL_PORT_NAME, VSOCK_PORT};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let name = args
        .first()
        .and_then(|a| Path::new(a).file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let role = if std::process::id() == 1 || name == "init" {
        "init"
    } else if name == "banger-agent" {
        "agent"
    } else {
        args.get(1).map(String::as_str).unwrap_or("")
    };
    match role {
        "init" => banger_guest::init::run(),
        "agent" => match agent() {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("banger-agent: {err:#}");
                ExitCode::from(1)
            }
        },
        _ => {
            eprintln!("usage: banger-guest init|agent (or run it as /init or banger-agent)");
            ExitCode::from(2)
        }
    }
}

fn agent() -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    runtime.block_on(async {
        let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
        let transport = BootConfig::parse(&cmdline)
            .map(|c| c.agent)
            .unwrap_or(AgentTransport::Serial);
        match transport {
            AgentTransport::Vsock => serve_vsock().await,
            AgentTransport::Serial => serve_serial().await,
        }
    })
}

async fn serve_vsock() -> Result<()> {
    let addr = tokio_vsock::VsockAddr::new(tokio_vsock::VMADDR_CID_ANY, VSOCK_PORT);
    let mut listener = tokio_vsock::VsockListener::bind(addr).context("cannot listen on vsock")?;
    loop {
        let (stream, _) = listener.accept().await.context("vsock accept failed")?;
        let (reader, writer) = tokio::io::split(stream);
        tokio::spawn(serve(reader, writer, AgentContext::guest()));
    }
}

/// The port is one stream; when the host side goes away the read ends,
/// and the port is opened again.
async fn serve_serial() -> Result<()> {
    let sys = Path::new("/sys/class/virtio-ports");
    loop {
        let Some(port) = find_serial_port(sys, SERIAL_PORT_NAME) else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let file = tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&port)
            .await
            .with_context(|| format!("cannot open {}", port.display()))?;
        let writer = file.try_clone().await.context("cannot clone the port")?;
        let _ = serve(file, writer, AgentContext::guest()).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
