//! A QMP client: JSON lines over QEMU's control socket. Connect, read the
//! greeting, negotiate (`qmp_capabilities`), then `execute` commands,
//! skipping the asynchronous events QEMU interleaves. A file descriptor
//! goes to QEMU with `getfd` as `SCM_RIGHTS` on the command's own bytes
//! (how a snapshot's state file reaches a QEMU that runs as another user
//! in a sandbox that may not open files or spawn processes).

use std::io::IoSlice;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    #[error("cannot reach qmp at {path}: {source}")]
    Connect {
        path: String,
        source: std::io::Error,
    },
    #[error("qmp i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("qmp closed the connection")]
    Closed,
    #[error("qmp did not answer within {0:?}")]
    Timeout(Duration),
    #[error("qmp sent something unexpected: {0}")]
    Protocol(String),
    #[error("qmp refused {command}: {desc}")]
    Refused { command: String, desc: String },
}

pub struct Qmp {
    lines: tokio::io::Lines<BufReader<OwnedReadHalf>>,
    writer: OwnedWriteHalf,
    timeout: Duration,
}

impl Qmp {
    /// Connects and negotiates capabilities.
    pub async fn connect(path: &Path, timeout: Duration) -> Result<Qmp, QmpError> {
        let stream = UnixStream::connect(path)
            .await
            .map_err(|source| QmpError::Connect {
                path: path.display().to_string(),
                source,
            })?;
        let (read, writer) = stream.into_split();
        let mut qmp = Qmp {
            lines: BufReader::new(read).lines(),
            writer,
            timeout,
        };
        let greeting = qmp.next_message().await?;
        if greeting.get("QMP").is_none() {
            return Err(QmpError::Protocol(greeting.to_string()));
        }
        qmp.execute("qmp_capabilities", None).await?;
        Ok(qmp)
    }

    async fn next_message(&mut self) -> Result<Value, QmpError> {
        let line = tokio::time::timeout(self.timeout, self.lines.next_line())
            .await
            .map_err(|_| QmpError::Timeout(self.timeout))??
            .ok_or(QmpError::Closed)?;
        serde_json::from_str(&line).map_err(|_| QmpError::Protocol(line))
    }

    /// Runs one command and returns its `return` value.
    pub async fn execute(
        &mut self,
        command: &str,
        arguments: Option<Value>,
    ) -> Result<Value, QmpError> {
        let line = request_line(command, arguments);
        self.writer.write_all(line.as_bytes()).await?;
        self.answer(command).await
    }

    /// `getfd`: hands `fd` to QEMU under `name`, for a later `fd:NAME`.
    pub async fn send_fd(&mut self, name: &str, fd: BorrowedFd<'_>) -> Result<(), QmpError> {
        use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
        let line = request_line("getfd", Some(json!({ "fdname": name })));
        let stream: &UnixStream = self.writer.as_ref();
        let fds = [fd.as_raw_fd()];
        let mut sent = 0;
        while sent < line.len() {
            stream.writable().await?;
            let bytes = &line.as_bytes()[sent..];
            // The descriptor rides on the first byte only.
            let rights = [ControlMessage::ScmRights(&fds)];
            let cmsgs: &[ControlMessage] = if sent == 0 { &rights } else { &[] };
            match stream.try_io(tokio::io::Interest::WRITABLE, || {
                sendmsg::<()>(
                    stream.as_raw_fd(),
                    &[IoSlice::new(bytes)],
                    cmsgs,
                    MsgFlags::MSG_NOSIGNAL,
                    None,
                )
                .map_err(std::io::Error::from)
            }) {
                Ok(n) => sent += n,
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(err) => return Err(err.into()),
            }
        }
        self.answer("getfd").await.map(|_| ())
    }

    async fn answer(&mut self, command: &str) -> Result<Value, QmpError> {
        loop {
            let message = self.next_message().await?;
            if message.get("event").is_some() {
                continue;
            }
            if let Some(value) = message.get("return") {
                return Ok(value.clone());
            }
            if let Some(error) = message.get("error") {
                return Err(QmpError::Refused {
                    command: command.into(),
                    desc: error["desc"].as_str().unwrap_or("no description").into(),
                });
            }
            return Err(QmpError::Protocol(message.to_string()));
        }
    }

    /// Waits for a migration (out or in) to end: `completed`, else the
    /// reason it failed. Polls `query-migrate` until `within` is over.
    pub async fn wait_migration(&mut self, within: Duration) -> Result<(), QmpError> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let info = self.execute("query-migrate", None).await?;
            match info["status"].as_str() {
                Some("completed") => return Ok(()),
                Some("failed") | Some("cancelled") => {
                    return Err(QmpError::Refused {
                        command: "migrate".into(),
                        desc: info["error-desc"]
                            .as_str()
                            .unwrap_or("the migration failed")
                            .into(),
                    })
                }
                _ => {}
            }
            if tokio::time::Instant::now() > deadline {
                return Err(QmpError::Timeout(within));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `query-status`: QEMU's run state (`running`, `paused`, `shutdown`...).
    pub async fn status(&mut self) -> Result<String, QmpError> {
        let value = self.execute("query-status", None).await?;
        value["status"]
            .as_str()
            .map(String::from)
            .ok_or_else(|| QmpError::Protocol(value.to_string()))
    }
}

fn request_line(command: &str, arguments: Option<Value>) -> String {
    let mut request = json!({ "execute": command });
    if let Some(arguments) = arguments {
        request["arguments"] = arguments;
    }
    let mut line = request.to_string();
    line.push('\n');
    line
}
