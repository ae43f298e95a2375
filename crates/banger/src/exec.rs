//! `banger vm exec`: streams a command's stdout and stderr to ours and
//! gives back its exit status (128 + N when a signal ended it, as shells
//! do). With `-i` our input, read to its end (at most `MAX_STDIN`), is the
//! command's.

use std::io::Write;

use anyhow::{anyhow, Result};
use banger_proto::exec::{ExecEvent, ExecRequest};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;

use crate::client::{Client, ClientError};
use crate::vm::path_segment;

/// The most input `exec -i` sends: the request carries it whole.
pub const MAX_STDIN: u64 = 1 << 20;

/// Our input to its end, when it is at most `MAX_STDIN` bytes.
fn read_stdin() -> Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::io::stdin()
        .lock()
        .take(MAX_STDIN + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| anyhow!("cannot read the input: {e}"))?;
    if bytes.len() as u64 > MAX_STDIN {
        // Bad input: exit 2, with what to do instead.
        return Err(crate::client::bad_input(
            "the input is larger than 1 MiB, the most exec -i sends",
            "copy files with `banger vm cp`, or stream with `banger vm ssh VM -- CMD`",
        ));
    }
    Ok(bytes)
}

pub async fn run(
    client: &Client,
    vm: &str,
    argv: Vec<String>,
    user: Option<String>,
    interactive: bool,
) -> Result<i32> {
    let stdin = match interactive {
        true => Some(banger_proto::rules::Base64::try_from(
            B64.encode(read_stdin()?),
        )?),
        false => None,
    };
    let request = ExecRequest { argv, stdin, user };
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
