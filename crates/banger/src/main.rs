//! `banger`: the command line. Talks only to bangerd's API.
//!
//! Exit codes: 0 ok, 1 the operation failed, 2 bad usage or input.

mod client;
mod copy;
mod daemon;
mod doctor;
mod events;
mod exec;
mod generate;
mod image;
mod output;
mod progress;
mod snapshot;
mod ssh;
mod stats;
mod terminal;
mod verify;
mod version;
mod visible;
mod vm;

use std::path::PathBuf;
use std::process::ExitCode;

use banger_proto::error::ErrorCode;
use banger_proto::paths::{DefaultPaths, ENV_ROOT, ENV_SOCKET};
use clap::{Parser, Subcommand};

use crate::client::{Client, ClientError};

/// Fast, disposable-yet-persistent Linux microVMs.
#[derive(Debug, Parser)]
#[command(version, propagate_version = true)]
struct Cli {
    /// bangerd's API socket [default: /run/banger/bangerd.sock].
    #[arg(long, global = true, env = ENV_SOCKET)]
    socket: Option<PathBuf>,
    /// Prefix of every default path, as given to bangerd.
    #[arg(long, global = true, env = ENV_ROOT)]
    root: Option<PathBuf>,
    /// Print only what scripts need: the names a list holds or a command
    /// made; no progress, no confirmations (errors still go to stderr).
    #[arg(long, short, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Manage VMs.
    #[command(subcommand)]
    Vm(vm::VmCommand),
    /// Manage images.
    #[command(subcommand)]
    Image(image::ImageCommand),
    /// Manage snapshots (saved machines VMs start from without a boot).
    #[command(subcommand)]
    Snapshot(snapshot::SnapshotCommand),
    /// Check this host for what banger needs.
    Doctor {
        #[arg(long)]
        json: bool,
    },
    /// Print an ssh_config stanza so plain `ssh NAME.vm` works.
    SshConfig,
    /// List host objects banger made that no live VM owns; exit 1 on any.
    Verify {
        #[arg(long)]
        json: bool,
    },
    /// Start, stop or check bangerd.
    #[command(subcommand)]
    Daemon(daemon::DaemonCommand),
    /// This CLI's version and commit, bangerd's, and the host's VMMs'.
    Version {
        #[arg(long)]
        json: bool,
    },
    /// Follow lifecycle events as they happen (VMs created, changing
    /// state and removed; images and snapshots made and removed).
    Events {
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    #[command(flatten)]
    Generate(generate::GenerateCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start: {err}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => report(&err),
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let socket = cli
        .socket
        .unwrap_or_else(|| DefaultPaths::under(cli.root.as_deref()).socket());
    let client = Client::new(socket);
    output::set_quiet(cli.quiet);
    match cli.command {
        Command::Vm(command) => vm::run(&client, command).await,
        Command::Image(command) => image::run(&client, command).await,
        Command::Snapshot(command) => snapshot::run(&client, command).await,
        Command::Doctor { json } => doctor::run(&client, json).await,
        Command::Verify { json } => verify::run(&client, json).await,
        Command::SshConfig => ssh::config(&client).await,
        Command::Version { json } => version::run(&client, json).await,
        Command::Events { json } => events::run(&client, json).await,
        Command::Daemon(command) => daemon::run(&client, command, cli.root.as_deref()).await,
        Command::Generate(command) => generate::run(command),
    }
}

/// Prints the error (one line, then a hint when there is one) and picks
/// the exit code: the one mapping from errors to exit codes.
fn report(err: &anyhow::Error) -> ExitCode {
    let (hint, code) = match err.downcast_ref::<ClientError>() {
        Some(ClientError::NotRunning { .. }) => (
            Some(
                "start it with `banger daemon start` (as root), or `systemctl start bangerd` where the package is installed"
                    .to_string(),
            ),
            1,
        ),
        Some(ClientError::Api(api)) => {
            let code = match api.error.code {
                ErrorCode::InvalidInput | ErrorCode::Unprocessable => 2,
                _ => 1,
            };
            (api.error.hint.clone(), code)
        }
        Some(ClientError::WentAway { .. }) => (
            Some(
                "see its log (bangerd.log beside its socket) and start it again with `banger daemon start`; a vm it was booting is then marked failed"
                    .to_string(),
            ),
            1,
        ),
        None => (None, 1),
    };
    eprintln!("error: {}", format!("{err:#}").replace('\n', " "));
    if let Some(hint) = hint {
        eprintln!("hint: {hint}");
    }
    ExitCode::from(code)
}
