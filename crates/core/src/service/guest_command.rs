//! Short commands the daemon itself runs in a guest through its agent: a
//! promote's `sync`, a template's wait for the guest's boot to settle.
//! Bounded in time, run as root, their output dropped; the caller decides
//! what an outcome means.

use std::time::Duration;

use tokio::sync::mpsc;

use super::Runtime;
use crate::agent::{ExecChunk, ExecContext};
use crate::vmm::VmmHandle;

/// Runs `argv` in the guest behind `handle` for at most `wait`: its exit
/// code (`None`: ended by a signal), or why it did not run to its end.
pub(super) async fn run(
    runtime: &Runtime,
    handle: &VmmHandle,
    argv: &[&str],
    wait: Duration,
) -> Result<Option<i32>, String> {
    let (out, mut chunks) = mpsc::channel(16);
    let exit = async move {
        let mut code = None;
        while let Some(chunk) = chunks.recv().await {
            if let ExecChunk::Exit { code: c, .. } = chunk {
                code = c;
            }
        }
        code
    };
    let context = ExecContext {
        user: Some("0".into()),
        ..ExecContext::default()
    };
    let argv = argv.iter().map(|a| a.to_string()).collect();
    let exec = runtime.agents.exec(handle, argv, context, None, out);
    let ran = tokio::time::timeout(wait, async {
        let (ran, code) = tokio::join!(exec, exit);
        ran.map(|()| code)
    })
    .await;
    match ran {
        Ok(Ok(code)) => Ok(code),
        Ok(Err(err)) => Err(err.to_string()),
        Err(_) => Err(format!("still running after {} s", wait.as_secs())),
    }
}
