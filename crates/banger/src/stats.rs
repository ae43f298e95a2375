//! `banger vm stats [VM...]`: what VMs use on the host. Two readings of
//! `GET /v1/vms/{vm}/stats` a second apart give the CPU rate; the rest
//! is the second reading.

use std::time::Duration;

use anyhow::Result;
use banger_proto::stats::VmStats;
use banger_proto::vm::{VmList, VmState};
use serde::Serialize;

use crate::client::Client;
use crate::output::{self, col, wide, OutputArgs};
use crate::vm::path_segment;

/// Between the two readings.
const INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, Serialize)]
struct StatsList {
    vms: Vec<StatsRow>,
}

#[derive(Debug, Serialize)]
struct StatsRow {
    #[serde(flatten)]
    stats: VmStats,
    /// CPU used between the readings, in percent of one host core.
    #[serde(skip_serializing_if = "Option::is_none")]
    cpu_percent: Option<f64>,
}

pub async fn run(client: &Client, vms: Vec<String>, output: OutputArgs) -> Result<()> {
    let names = if vms.is_empty() {
        let list: VmList = client.get("/v1/vms").await?;
        list.vms
            .into_iter()
            .filter(|vm| vm.state == VmState::Running)
            .map(|vm| vm.id)
            .collect()
    } else {
        vms
    };
    let first = read(client, &names).await?;
    tokio::time::sleep(INTERVAL).await;
    let second = read(client, &names).await?;
    let list = StatsList {
        vms: first
            .into_iter()
            .zip(second)
            .map(|(before, now)| StatsRow {
                cpu_percent: cpu_percent(&before, &now),
                stats: now,
            })
            .collect(),
    };
    let rows: Vec<Vec<String>> = list.vms.iter().map(row).collect();
    output::list(
        &output,
        &list,
        &[
            col("NAME"),
            col("STATE"),
            col("CPU"),
            col("MEMORY"),
            col("DISK"),
            col("NET IN"),
            col("NET OUT"),
            wide("CPU TIME"),
            wide("MEMORY PSS"),
            wide("SYSTEM DISK"),
            wide("WORK DISK"),
            wide("ID"),
        ],
        &rows,
    )
}

async fn read(client: &Client, names: &[String]) -> Result<Vec<VmStats>> {
    let mut all = Vec::with_capacity(names.len());
    for name in names {
        all.push(
            client
                .get(&format!("/v1/vms/{}/stats", path_segment(name)))
                .await?,
        );
    }
    Ok(all)
}

fn cpu_percent(before: &VmStats, now: &VmStats) -> Option<f64> {
    let used = now.cpu_ns?.checked_sub(before.cpu_ns?)?;
    let wall_ms = now.sampled_at_ms - before.sampled_at_ms;
    (wall_ms > 0).then(|| used as f64 / (wall_ms as f64 * 1e6) * 100.0)
}

fn row(r: &StatsRow) -> Vec<String> {
    let s = &r.stats;
    let bytes = |b: Option<u64>| b.map(output::size).unwrap_or_else(|| "-".into());
    vec![
        s.name.clone(),
        s.state.as_str().to_string(),
        r.cpu_percent
            .map(|p| format!("{p:.1}%"))
            .unwrap_or_else(|| "-".into()),
        format!("{} / {}M", bytes(s.memory_rss_bytes), s.memory_mib),
        output::size(s.system_disk_bytes + s.work_disk_bytes),
        bytes(s.net_rx_bytes),
        bytes(s.net_tx_bytes),
        s.cpu_ns
            .map(|ns| format!("{:.1}s", ns as f64 / 1e9))
            .unwrap_or_else(|| "-".into()),
        bytes(s.memory_pss_bytes),
        output::size(s.system_disk_bytes),
        output::size(s.work_disk_bytes),
        s.id.clone(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(cpu_ns: Option<u64>, at: i64) -> VmStats {
        VmStats {
            id: "i".into(),
            name: "box".into(),
            state: VmState::Running,
            vcpus: 2,
            memory_mib: 1024,
            sampled_at_ms: at,
            cpu_ns,
            memory_rss_bytes: Some(300 << 20),
            memory_pss_bytes: None,
            system_disk_bytes: 1 << 20,
            work_disk_bytes: 2 << 20,
            net_rx_bytes: Some(10),
            net_tx_bytes: Some(20),
        }
    }

    #[test]
    fn cpu_is_the_time_used_over_the_wall_time() {
        let p = cpu_percent(&reading(Some(0), 1000), &reading(Some(1_500_000_000), 2000));
        assert_eq!(p, Some(150.0), "one and a half cores");
        assert_eq!(
            cpu_percent(&reading(None, 1000), &reading(Some(1), 2000)),
            None
        );
        assert_eq!(
            cpu_percent(&reading(Some(5), 1000), &reading(Some(1), 2000)),
            None,
            "a restart between the readings"
        );
    }
}
