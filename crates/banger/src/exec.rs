//! `banger vm exec`: streams a command's stdout and stderr to ours and
//! gives back its exit status (128 + N when a signal ended it, as shells
//! do).

use std::io::Write;

use anyhow::{anyhow, Result};
use banger_proto::exec::{ExecEvent, ExecRequest};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;

use crate::client::{Client, ClientError};
use crate::vm::path_segment;

pub async fn run(
    client: &Client,
    vm: &str,
    argv: Vec<String>,
    user: Option<String>,
) -> Result<i32> {
    let request = ExecRequest {
        argv,
        stdin: None,
        user,
    };
    let mut status: Option<i32> = None;
    let mut failure: Option<anyhow::Error> = None;
    let (mut out, mut err) = (std::io::stdout(), std::io::stderr());
    client
        .post_lines(
            &format!("/v1/vms/{}/exec", path_segment(vm)),
            &request,
            |line| {
                match serde_json::from_slice::<ExecEvent>(line)? {
                    ExecEvent::Stdout { data } => {
                        out.write_all(&B64.decode(data)?)?;
                        out.flush()?;
                    }
                    ExecEvent::Stderr { data } => {
                        err.write_all(&B64.decode(data)?)?;
                        err.flush()?;
                    }
                    ExecEvent::Exit { code, signal } => {
                        status = Some(code.unwrap_or(128 + signal.unwrap_or(0)));
                        return Ok(false);
                    }
                    ExecEvent::Error { error } => {
                        failure = Some(ClientError::Api(error).into());
                        return Ok(false);
                    }
                }
                Ok(true)
            },
        )
        .await?;
    if let Some(failure) = failure {
        return Err(failure);
    }
    status.ok_or_else(|| anyhow!("the command's output ended without its exit status"))
}
