//! `banger snapshot ...`, `banger vm snapshot`, `banger vm fork` and
//! `banger image warm`: saved machines and the VMs that start from them.

use anyhow::Result;
use banger_proto::snapshot::{ForkResult, Snapshot, SnapshotList};
use banger_proto::vm::{VmForkRequest, VmSnapshotRequest};
use clap::Subcommand;

use crate::client::{checked, Client};
use crate::output::{self, col, say, wide, Format, OutputArgs};
use crate::vm::path_segment;

#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// List snapshots (an image's warm template is one too).
    #[command(alias = "list")]
    Ls {
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Show one snapshot.
    Show {
        /// Snapshot name or id.
        snapshot: String,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Remove snapshots and their files.
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true)]
        snapshots: Vec<String>,
    },
}

pub async fn run(client: &Client, command: SnapshotCommand) -> Result<()> {
    match command {
        SnapshotCommand::Ls { output } => {
            let list: SnapshotList = client.get("/v1/snapshots").await?;
            let rows: Vec<Vec<String>> = list
                .snapshots
                .iter()
                .map(|s| {
                    vec![
                        s.name.clone(),
                        kind(s).into(),
                        s.source_vm.clone().unwrap_or_else(|| "-".into()),
                        s.image_name.clone(),
                        s.vcpus.to_string(),
                        format!("{}M", s.memory_mib),
                        output::size(s.disk_bytes),
                        s.id.clone(),
                        s.vmm.clone(),
                        if s.nat { "on" } else { "off" }.to_string(),
                        s.created_at.clone(),
                    ]
                })
                .collect();
            output::list(
                &output,
                &list,
                &[
                    col("NAME"),
                    col("KIND"),
                    col("FROM VM"),
                    col("IMAGE"),
                    col("VCPUS"),
                    col("MEMORY"),
                    col("ON DISK"),
                    col("ID"),
                    wide("VMM"),
                    wide("NAT"),
                    wide("CREATED"),
                ],
                &rows,
            )?;
        }
        SnapshotCommand::Show { snapshot, output } => {
            let snapshot: Snapshot = client
                .get(&format!("/v1/snapshots/{}", path_segment(&snapshot)))
                .await?;
            if output.format() == Format::Json {
                return output::json(&snapshot);
            }
            show(&snapshot);
        }
        SnapshotCommand::Rm { snapshots } => {
            for name in snapshots {
                let snapshot: Snapshot = client
                    .delete(&format!("/v1/snapshots/{}", path_segment(&name)))
                    .await?;
                say!("removed {}", snapshot.name);
            }
        }
    }
    Ok(())
}

/// `banger vm snapshot VM [--name S]`.
pub async fn take(client: &Client, vm: &str, name: Option<String>, json: bool) -> Result<()> {
    let request = VmSnapshotRequest {
        name: name.map(checked).transpose()?,
    };
    let snapshot: Snapshot = client
        .post(&format!("/v1/vms/{}/snapshot", path_segment(vm)), &request)
        .await?;
    if json {
        return output::json(&snapshot);
    }
    output::made(&snapshot.name, || {
        format!(
            "saved {} as snapshot {} ({} on disk); start vms from it with `banger vm create --from {}`",
            vm,
            snapshot.name,
            output::size(snapshot.disk_bytes),
            snapshot.name
        )
    });
    Ok(())
}

/// `banger vm fork VM [--count K] [--name N]`.
pub async fn fork(
    client: &Client,
    vm: &str,
    (count, name, nat): (Option<u32>, Option<String>, Option<bool>),
    json: bool,
) -> Result<()> {
    let request = VmForkRequest {
        count: count.map(|c| checked(u64::from(c))).transpose()?,
        name: name.map(checked).transpose()?,
        nat,
    };
    let made: ForkResult = client
        .post(&format!("/v1/vms/{}/fork", path_segment(vm)), &request)
        .await?;
    if json {
        return output::json(&made);
    }
    for copy in &made.vms {
        output::made(&copy.name, || {
            format!(
                "forked {} ({}, {})",
                copy.name, copy.guest_ip, copy.dns_name
            )
        });
    }
    Ok(())
}

/// `banger image warm IMAGE`.
pub async fn warm(client: &Client, image: &str) -> Result<()> {
    let snapshot: Snapshot = client
        .post(&format!("/v1/images/{}/warm", path_segment(image)), &())
        .await?;
    say!(
        "{} is warm: creates of {} vcpus and {}M restore template {}",
        snapshot.image_name,
        snapshot.vcpus,
        snapshot.memory_mib,
        snapshot.name
    );
    Ok(())
}

fn kind(s: &Snapshot) -> &'static str {
    use banger_proto::snapshot::SnapshotKind;
    match s.kind {
        SnapshotKind::User => "user",
        SnapshotKind::Template => "template",
        SnapshotKind::Fork => "fork",
    }
}

fn show(s: &Snapshot) {
    let rows = [
        ("name", s.name.clone()),
        ("id", s.id.clone()),
        ("kind", kind(s).into()),
        ("from vm", s.source_vm.clone().unwrap_or_else(|| "-".into())),
        ("image", s.image_name.clone()),
        ("vmm", s.vmm.clone()),
        ("vcpus", s.vcpus.to_string()),
        ("memory", format!("{}M", s.memory_mib)),
        ("work disk", output::size(s.work_disk_bytes)),
        ("system disk", output::size(s.system_disk_bytes)),
        (
            "memory file",
            if s.memory_file {
                "shared copy-on-write"
            } else {
                "in the state"
            }
            .into(),
        ),
        ("on disk", output::size(s.disk_bytes)),
        ("created", s.created_at.clone()),
    ];
    for (key, value) in rows {
        println!("{key:<12} {value}");
    }
}
