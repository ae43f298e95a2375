//! `banger doctor`: the daemon's host checks, as a pass/warn/fail list.

use anyhow::{bail, Result};
use banger_proto::doctor::{CheckStatus, DoctorReport};

use crate::client::Client;
use crate::output;

pub async fn run(client: &Client, json: bool) -> Result<()> {
    let report: DoctorReport = client.get("/v1/doctor").await?;
    if json {
        output::json(&report)?;
    } else {
        for check in &report.checks {
            let mark = match check.status {
                CheckStatus::Pass => "pass",
                CheckStatus::Warn => "WARN",
                CheckStatus::Fail => "FAIL",
            };
            println!("{mark}  {:<26} {}", check.name, check.detail);
            if let (Some(hint), false) = (&check.hint, check.status == CheckStatus::Pass) {
                println!("      {:<26} hint: {hint}", "");
            }
        }
    }
    if report.has_failures() {
        let failed = report
            .checks
            .iter()
            .filter(|c| c.status == CheckStatus::Fail)
            .count();
        bail!("{failed} doctor check(s) failed");
    }
    Ok(())
}
