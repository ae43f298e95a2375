//! `bangerd`: parse flags, load config, serve until told to stop.

use std::path::PathBuf;

use anyhow::{Context, Result};
use banger_proto::paths::{ENV_CONFIG, ENV_ROOT, ENV_SOCKET};
use bangerd::config::{Config, Overrides};
use clap::{CommandFactory, Parser, ValueEnum};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// The banger daemon: owns VM state, host networking and the API socket.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Prefix for every default path (config, state, runtime), for tests
    /// and side-by-side installs.
    #[arg(long, env = ENV_ROOT)]
    root: Option<PathBuf>,
    /// Config file [default: /etc/banger/config.toml].
    #[arg(long, env = ENV_CONFIG)]
    config: Option<PathBuf>,
    /// API socket [default: /run/banger/bangerd.sock].
    #[arg(long, env = ENV_SOCKET)]
    socket: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Print the OpenAPI document of the API and exit.
    #[arg(long)]
    print_openapi: bool,
    /// Write the man page bangerd.8 into DIR and exit (for packaging).
    #[arg(long, hide = true, value_name = "DIR")]
    man: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> Result<()> {
    // Disks (a guest's host key is on its system disk), consoles and the
    // database are root's alone; the socket and known_hosts are opened
    // up explicitly.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    // A thread acting for a caller has the caller's user and group only.
    banger_host::caller::drop_supplementary_groups()?;
    let args = Args::parse();
    if args.print_openapi {
        print!("{}", bangerd::api::openapi_json());
        return Ok(());
    }
    if let Some(dir) = args.man {
        let page = std::fs::create_dir_all(&dir)
            .and_then(|()| {
                clap_mangen::Man::new(Args::command())
                    .section("8")
                    .generate_to(&dir)
            })
            .with_context(|| format!("cannot write bangerd.8 into {}", dir.display()))?;
        println!("{}", page.display());
        return Ok(());
    }
    bangerd::logging::init(matches!(args.log_format, LogFormat::Json));
    let config = Config::load(&Overrides {
        root: args.root,
        config: args.config,
        socket: args.socket,
    })?;
    let running = bangerd::server::start(config).await?;
    let mut finished = running.shutdown.subscribe();
    tokio::select! {
        signalled = bangerd::server::signalled() => signalled?,
        _ = finished.wait_for(|stop| *stop) => {}
    }
    let _ = running.shutdown.send(true);
    running.task.await??;
    Ok(())
}
