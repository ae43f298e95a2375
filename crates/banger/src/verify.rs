//! `banger verify`: lists banger-owned host objects no live VM owns;
//! fails (exit 1) when there is any.

use anyhow::{bail, Result};
use banger_proto::verify::VerifyReport;

use crate::client::Client;
use crate::output;

pub async fn run(client: &Client, json: bool) -> Result<()> {
    let report: VerifyReport = client.get("/v1/verify").await?;
    if json {
        output::json(&report)?;
    } else {
        if !report.leaks.is_empty() {
            let rows: Vec<Vec<String>> = report
                .leaks
                .iter()
                .map(|l| vec![l.kind.clone(), l.name.clone(), l.detail.clone()])
                .collect();
            output::table(&["KIND", "OBJECT", "WHY"], &rows);
        }
        for w in &report.warnings {
            eprintln!("warning: {}: {}", w.name, w.detail);
        }
        println!(
            "{} leaked object(s); {} idle pool device(s){}",
            report.leaks.len(),
            report.capacity.len(),
            if report.capacity.is_empty() {
                String::new()
            } else {
                format!(" ({})", report.capacity.join(", "))
            }
        );
    }
    if !report.leaks.is_empty() {
        bail!("banger left {} object(s) behind", report.leaks.len());
    }
    Ok(())
}
