//! `banger version`: this CLI's version and commit, and, when bangerd
//! answers, the daemon's and its host's VMMs'.

use anyhow::Result;
use banger_proto::system::Health;
use serde::Serialize;

use crate::client::Client;
use crate::output;

#[derive(Debug, Serialize)]
struct Versions {
    banger: String,
    commit: String,
    /// `None` when the daemon does not answer.
    bangerd: Option<Health>,
}

pub async fn run(client: &Client, json: bool) -> Result<()> {
    let daemon = client.get::<Health>("/v1/health").await;
    let versions = Versions {
        banger: env!("CARGO_PKG_VERSION").to_string(),
        commit: env!("BANGER_COMMIT").to_string(),
        bangerd: daemon.as_ref().ok().cloned(),
    };
    if json {
        return output::json(&versions);
    }
    println!("banger {} ({})", versions.banger, versions.commit);
    match (&versions.bangerd, daemon) {
        (Some(health), _) => {
            println!(
                "bangerd {} ({}), pid {}",
                health.version, health.commit, health.pid
            );
            for vmm in &health.vmms {
                match &vmm.version {
                    Some(version) => println!("{} {version}", vmm.name),
                    None => println!("{} not installed", vmm.name),
                }
            }
        }
        (None, Err(err)) => println!("bangerd: {err}"),
        (None, Ok(_)) => {}
    }
    Ok(())
}
