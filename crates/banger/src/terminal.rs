//! `banger vm exec -it`: the local terminal, in raw mode, becomes the
//! guest command's: keystrokes (Ctrl-C and Ctrl-\ included, which the
//! guest's terminal turns into signals) go in, output comes back, window
//! size changes follow, and the command's exit status is ours (128 + N
//! for a signal, as shells do).

use std::io::{IsTerminal, Write};

use anyhow::{anyhow, Context, Result};
use banger_proto::exec::{ExecEvent, TerminalInput};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::signal::unix::{signal, SignalKind};

use crate::client::{Client, ClientError};
use crate::vm::path_segment;

/// Raw mode while it lives; the terminal is restored however we leave.
struct RawMode;

impl RawMode {
    fn enable() -> Result<RawMode> {
        crossterm::terminal::enable_raw_mode().context("cannot put the terminal in raw mode")?;
        Ok(RawMode)
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = crossterm::terminal::disable_raw_mode();
    }
}

fn line(input: &TerminalInput) -> Vec<u8> {
    let mut line = serde_json::to_vec(input).unwrap_or_default();
    line.push(b'\n');
    line
}

/// Runs `argv` (empty: the image's command, else /bin/sh) on a terminal
/// in `vm`; returns its exit status.
pub async fn run(
    client: &Client,
    vm: &str,
    argv: Vec<String>,
    user: Option<String>,
) -> Result<i32> {
    if !std::io::stdin().is_terminal() {
        return Err(crate::client::bad_input(
            "the input is not a terminal: -it needs one",
            "leave out -t to run without a terminal (-i alone gives the command this input)",
        ));
    }
    let (cols, rows) = crossterm::terminal::size().unwrap_or((80, 24));
    let stream = client
        .upgrade(&format!("/v1/vms/{}/terminal", path_segment(vm)))
        .await?;
    let (reader, mut writer) = tokio::io::split(TokioIo::new(stream));
    writer
        .write_all(&line(&TerminalInput::Start {
            argv,
            rows,
            cols,
            user,
        }))
        .await?;
    let raw = RawMode::enable()?;
    let (typed_tx, mut typed) = tokio::sync::mpsc::channel::<TerminalInput>(64);
    let keys = typed_tx.clone();
    tokio::spawn(async move {
        let mut stdin = tokio::io::stdin();
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdin.read(&mut buf).await {
            if n == 0 {
                break;
            }
            let data = B64.encode(&buf[..n]);
            if keys.send(TerminalInput::Stdin { data }).await.is_err() {
                break;
            }
        }
    });
    tokio::spawn(async move {
        let Ok(mut resized) = signal(SignalKind::window_change()) else {
            return;
        };
        while resized.recv().await.is_some() {
            if let Ok((cols, rows)) = crossterm::terminal::size() {
                if typed_tx
                    .send(TerminalInput::Resize { rows, cols })
                    .await
                    .is_err()
                {
                    break;
                }
            }
        }
    });
    tokio::spawn(async move {
        while let Some(input) = typed.recv().await {
            if writer.write_all(&line(&input)).await.is_err() {
                break;
            }
        }
    });
    let mut lines = BufReader::new(reader);
    let mut out = std::io::stdout();
    let mut text = Vec::new();
    let status = loop {
        text.clear();
        if lines.read_until(b'\n', &mut text).await? == 0 {
            break Err(anyhow!(
                "bangerd closed the terminal without the command's exit status"
            ));
        }
        match serde_json::from_slice::<ExecEvent>(&text)? {
            ExecEvent::Stdout { data } | ExecEvent::Stderr { data } => {
                out.write_all(&B64.decode(data)?)?;
                out.flush()?;
            }
            ExecEvent::Exit { code, signal } => break Ok(code.unwrap_or(128 + signal.unwrap_or(0))),
            ExecEvent::Error { error } => break Err(ClientError::Api(error).into()),
        }
    };
    drop(raw);
    status
}
