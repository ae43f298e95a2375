//! `banger-guest`: `minit` (banger's small init of a userland without
//! one) when called `banger-init`, `init` (of the initramfs) when it is
//! PID 1 or called `init`, `banger-agent` when called so;
//! `banger-guest init|agent` otherwise.
//!
//! `banger-agent` alone serves in the foreground; `--pidfile FILE` forks
//! it into the background with its pid in `FILE` (how banger-init starts
//! it early, and what a `Type=forking` unit expects); `adopt FILE -- CMD`
//! is the `ExecStart=` of units whose service banger-init may have
//! started early (see `banger_guest::early`).

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
    let role = if name == "banger-init" {
        "minit"
    } else if std::process::id() == 1 || name == "init" {
        "init"
    } else if name == "banger-agent" {
        "agent"
    } else {
        args.get(1).map(String::as_str).unwrap_or("")
    };
    match role {
        "init" => banger_guest::init::run(),
        "minit" => banger_guest::minit::run(),
        "agent" => match agent_command(&args[1..]) {
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

/// The agent's own arguments (after its name, or after `agent`).
fn agent_command(args: &[String]) -> Result<()> {
    let args = match args.first().map(String::as_str) {
        Some("agent") => &args[1..],
        _ => args,
    };
    match args.first().map(String::as_str) {
        None => agent(),
        Some("--pidfile") => {
            let file = args.get(1).context("--pidfile needs a file")?;
            background(Path::new(file))
        }
        Some("adopt") => {
            let file = args.get(1).context("adopt needs a pid file")?;
            let command = match args.get(2).map(String::as_str) {
                Some("--") => &args[3..],
                _ => anyhow::bail!("usage: banger-agent adopt PIDFILE -- COMMAND..."),
            };
            banger_guest::early::adopt(Path::new(file), command, banger_guest::early::ADOPT_WAIT)
                .map_err(anyhow::Error::from)
        }
        Some(other) => anyhow::bail!(
            "unknown argument {other}: use banger-agent [--pidfile FILE | adopt PIDFILE -- COMMAND...]"
        ),
    }
}

/// Starts the agent again as a child in a process group of its own,
/// writes the child's pid to `file` and returns: the parent then exits 0
/// and the child, reparented to PID 1, serves.
fn background(file: &Path) -> Result<()> {
    use std::os::unix::process::CommandExt;
    if let Some(parent) = file.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let exe = std::env::current_exe().context("cannot find the agent's own binary")?;
    let child = std::process::Command::new(exe)
        .arg0("banger-agent")
        .stdin(std::process::Stdio::null())
        .process_group(0)
        .spawn()
        .context("cannot start the agent in the background")?;
    let partial = file.with_extension("pid.partial");
    std::fs::write(&partial, format!("{}\n", child.id()))
        .and_then(|()| std::fs::rename(&partial, file))
        .with_context(|| format!("cannot write {}", file.display()))?;
    std::process::exit(0)
}

fn agent() -> Result<()> {
    // A session of its own when started in the background (already one
    // under systemd: then this fails, harmlessly).
    let _ = nix::unistd::setsid();
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

/// The port is one stream, kept open while the host comes and goes
/// (`banger_guest::port`); it is opened again only if reading it failed.
async fn serve_serial() -> Result<()> {
    let sys = Path::new("/sys/class/virtio-ports");
    loop {
        let Some(port) = find_serial_port(sys, SERIAL_PORT_NAME) else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        match banger_guest::port::open(&port) {
            Ok((reader, writer)) => {
                if let Err(err) = serve(reader, writer, AgentContext::guest()).await {
                    eprintln!("banger-agent: serving {} failed: {err}", port.display());
                }
            }
            Err(err) => eprintln!("banger-agent: cannot open {}: {err}", port.display()),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
