//! VM helpers over the API: run a command in a guest (every stream read
//! within `STREAM_DEADLINE`) and wait for a VM's state.

use std::path::Path;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde_json::{json, Value};

use crate::http::{call, call_stream, STREAM_DEADLINE};

/// Polls a VM until its state is `state` (at most `STREAM_DEADLINE`).
pub async fn wait_state(socket: &Path, vm: &str, state: &str) -> Value {
    let deadline = Instant::now() + STREAM_DEADLINE;
    loop {
        let (_, found) = call(socket, "GET", &format!("/v1/vms/{vm}"), None).await;
        if found["state"] == state {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "{vm} never became {state}: {found}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Runs `sh -c script` in the VM: (exit code, stdout, stderr).
pub async fn sh(socket: &Path, vm: &str, script: &str) -> (i64, String, String) {
    exec(socket, vm, &json!({ "argv": ["sh", "-c", script] })).await
}

/// Runs an exec request body in the VM: (exit code, stdout, stderr).
pub async fn exec(socket: &Path, vm: &str, body: &Value) -> (i64, String, String) {
    let script = body["argv"].to_string();
    let lines = call_stream(socket, &format!("/v1/vms/{vm}/exec"), &body.to_string()).await;
    let (mut out, mut err, mut code) = (Vec::new(), Vec::new(), None);
    for line in &lines {
        match line["type"].as_str().unwrap() {
            "stdout" => out.extend(B64.decode(line["data"].as_str().unwrap()).unwrap()),
            "stderr" => err.extend(B64.decode(line["data"].as_str().unwrap()).unwrap()),
            "exit" => code = line["code"].as_i64(),
            other => panic!("exec {script:?} on {vm}: {other}: {line}"),
        }
    }
    (
        code.unwrap_or_else(|| panic!("no exit for {script:?}: {lines:?}")),
        String::from_utf8_lossy(&out).into_owned(),
        String::from_utf8_lossy(&err).into_owned(),
    )
}
