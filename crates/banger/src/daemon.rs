//! `banger daemon start|stop|status`. The CLI never starts the daemon on
//! its own: `start` is explicit, and other commands say how when it is down.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use banger_proto::system::{Health, ShutdownAccepted};
use clap::Subcommand;

use crate::client::Client;
use crate::output::{self, say};

#[derive(Debug, Subcommand)]
pub enum DaemonCommand {
    /// Start bangerd in the background (logs next to its socket).
    Start,
    /// Stop bangerd gracefully; running VMs keep running.
    Stop,
    /// Is bangerd up, and which one.
    Status {
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(client: &Client, command: DaemonCommand, root: Option<&Path>) -> Result<()> {
    match command {
        DaemonCommand::Status { json } => {
            let health: Health = client.get("/v1/health").await?;
            if json {
                return output::json(&health);
            }
            println!(
                "bangerd {} running (pid {}, up {}s, state in {})",
                health.version,
                health.pid,
                health.uptime_ms / 1000,
                health.state_dir
            );
        }
        DaemonCommand::Stop => {
            let health: Health = client.get("/v1/health").await?;
            let _: ShutdownAccepted = client.post("/v1/shutdown", &()).await?;
            let deadline = Instant::now() + Duration::from_secs(30);
            while client.socket().exists() && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            say!("bangerd stopped (was pid {})", health.pid);
        }
        DaemonCommand::Start => start(client, root).await?,
    }
    Ok(())
}

async fn start(client: &Client, root: Option<&Path>) -> Result<()> {
    if let Ok(health) = client.get::<Health>("/v1/health").await {
        say!("bangerd is already running (pid {})", health.pid);
        return Ok(());
    }
    let binary = bangerd_binary();
    let socket = client.socket().to_path_buf();
    let run_dir = socket
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    std::fs::create_dir_all(&run_dir)
        .with_context(|| format!("cannot create {}", run_dir.display()))?;
    let log_path = run_dir.join("bangerd.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)?;
    let mut command = Command::new(&binary);
    command.arg("--socket").arg(&socket);
    if let Some(root) = root {
        command.arg("--root").arg(root);
    }
    use std::os::unix::process::CommandExt;
    let mut child = command
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("cannot run {}", binary.display()))?;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(health) = client.get::<Health>("/v1/health").await {
            say!(
                "bangerd started (pid {}, log {})",
                health.pid,
                log_path.display()
            );
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            bail!(
                "bangerd exited at start ({status}); see {}",
                log_path.display()
            );
        }
        if Instant::now() > deadline {
            bail!(
                "bangerd did not answer within 15s; see {}",
                log_path.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `bangerd` next to this binary when there is one, else from `$PATH`.
fn bangerd_binary() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("bangerd")))
        .filter(|path| path.exists())
        .unwrap_or_else(|| PathBuf::from("bangerd"))
}
