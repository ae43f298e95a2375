//! `HostAgentLink`: the core's `AgentLink` over real channels. QEMU VMs
//! expose the agent's virtio-serial port as a unix socket; Firecracker
//! VMs as hybrid vsock (a unix socket plus a `CONNECT` handshake). One
//! client per VM is kept and shared by all requests (a serial port is a
//! single stream), and made again when its stream breaks.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use banger_core::agent::{
    AgentLink, AgentLinkError, AgentReady, CopyOwner, ExecChunk, ExecContext, TerminalInput,
};
use banger_core::vmm::VmmHandle;
use banger_proto::agent::VSOCK_PORT;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use tokio::net::UnixStream;
use tokio::sync::mpsc;

use super::client::{AgentClient, AgentError, ExecEvent};
use crate::process;

/// How long the first hello of a booting guest is given; each unanswered
/// one doubles it up to `HELLO_WAIT_MAX`, so a ready agent is noticed
/// within a fraction of a second and a slow one is not flooded.
const HELLO_WAIT_FIRST: Duration = Duration::from_millis(200);
const HELLO_WAIT_MAX: Duration = Duration::from_secs(2);

const SERIAL_TAIL_LINES: usize = 15;

#[derive(Default)]
pub struct HostAgentLink {
    clients: Mutex<HashMap<PathBuf, Arc<AgentClient>>>,
}

fn failed(err: impl std::fmt::Display) -> AgentLinkError {
    AgentLinkError::Failed(err.to_string())
}

impl HostAgentLink {
    pub fn new() -> Self {
        HostAgentLink::default()
    }

    async fn connect(handle: &VmmHandle) -> Result<AgentClient, AgentLinkError> {
        let stream = match handle.kind.as_str() {
            "firecracker" => crate::firecracker::vsock::connect(
                &handle.agent_socket,
                VSOCK_PORT,
                Duration::from_secs(2),
            )
            .await
            .map_err(failed)?,
            _ => UnixStream::connect(&handle.agent_socket)
                .await
                .map_err(|e| {
                    failed(format!(
                        "cannot reach {}: {e}",
                        handle.agent_socket.display()
                    ))
                })?,
        };
        let (reader, writer) = stream.into_split();
        Ok(AgentClient::new(reader, writer))
    }

    /// The VM's client, connected now if there is none or it broke.
    async fn client(&self, handle: &VmmHandle) -> Result<Arc<AgentClient>, AgentLinkError> {
        let existing = self
            .clients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&handle.agent_socket)
            .cloned();
        if let Some(client) = existing.filter(|c| !c.is_closed()) {
            return Ok(client);
        }
        let client = Arc::new(Self::connect(handle).await?);
        tracing::debug!(agent = %handle.agent_socket.display(), "agent connected");
        self.clients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(handle.agent_socket.clone(), client.clone());
        Ok(client)
    }

    fn forget(&self, handle: &VmmHandle) {
        self.clients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&handle.agent_socket);
    }
}

/// The last lines of the guest console, for errors.
pub(crate) fn serial_tail(path: &Path) -> String {
    let lines = crate::log_tail::tail(path, SERIAL_TAIL_LINES);
    if lines.is_empty() {
        "the guest console is empty".into()
    } else {
        format!("last console lines: {}", lines.join(" | "))
    }
}

#[async_trait]
impl AgentLink for HostAgentLink {
    async fn wait_ready(
        &self,
        handle: &VmmHandle,
        serial_log: &Path,
        timeout: Duration,
    ) -> Result<AgentReady, AgentLinkError> {
        let deadline = Instant::now() + timeout;
        let mut hello_wait = HELLO_WAIT_FIRST;
        loop {
            if !process::alive(handle.pid, handle.start_ticks) {
                self.forget(handle);
                return Err(AgentLinkError::Failed(format!(
                    "the vmm exited during boot; {}",
                    serial_tail(serial_log)
                )));
            }
            if Instant::now() > deadline {
                self.forget(handle);
                return Err(AgentLinkError::Failed(format!(
                    "the guest agent did not answer within {timeout:?}; {}",
                    serial_tail(serial_log)
                )));
            }
            let client = match self.client(handle).await {
                Ok(client) => client,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            match client.hello(hello_wait).await {
                Ok(hello) => {
                    return Ok(AgentReady {
                        hostname: hello.hostname,
                        init_start_ms: hello.boot.map(|b| b.init_start_ms),
                        switch_root_ms: hello.boot.map(|b| b.switch_root_ms),
                        uptime_ms: hello.uptime_ms,
                    })
                }
                // Not answering yet: ask again soon, then less often.
                Err(AgentError::Timeout(_)) => hello_wait = (hello_wait * 2).min(HELLO_WAIT_MAX),
                Err(AgentError::Closed) => {
                    self.forget(handle);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(err) => return Err(failed(err)),
            }
        }
    }

    async fn shutdown(&self, handle: &VmmHandle, timeout: Duration) -> Result<(), AgentLinkError> {
        let client = self.client(handle).await?;
        let result = client.shutdown(false, timeout).await.map_err(failed);
        self.forget(handle);
        result
    }

    async fn identity(
        &self,
        handle: &VmmHandle,
        identity: banger_proto::agent::Identity,
    ) -> Result<(), AgentLinkError> {
        let client = self.client(handle).await?;
        client
            .identity(identity, Duration::from_secs(30))
            .await
            .map_err(failed)
    }

    async fn exec(
        &self,
        handle: &VmmHandle,
        argv: Vec<String>,
        context: ExecContext,
        stdin: Option<Vec<u8>>,
        out: mpsc::Sender<ExecChunk>,
    ) -> Result<(), AgentLinkError> {
        let client = self.client(handle).await?;
        let mut replies = client
            .exec_as(argv, &context, stdin.as_deref())
            .map_err(failed)?;
        let id = replies.id();
        tracing::debug!(id, agent = %handle.agent_socket.display(), "agent exec sent");
        loop {
            let event = match client.next_event(&mut replies).await {
                Ok(event) => event,
                Err(AgentError::Closed) => {
                    tracing::debug!(id, "agent exec lost its stream");
                    self.forget(handle);
                    return Err(failed("the guest agent went away"));
                }
                Err(err) => return Err(failed(err)),
            };
            let chunk = match event {
                ExecEvent::Stdout(b) => ExecChunk::Stdout(b),
                ExecEvent::Stderr(b) => ExecChunk::Stderr(b),
                ExecEvent::Exit { code, signal } => {
                    tracing::debug!(id, ?code, ?signal, "agent exec ended");
                    let _ = out.send(ExecChunk::Exit { code, signal }).await;
                    return Ok(());
                }
            };
            // Bounded: a reader slower than the guest's output holds the
            // guest back, it does not grow the daemon.
            if out.send(chunk).await.is_err() {
                // Nobody listens any more: stop the command.
                let _ = client.send(banger_proto::agent::Op::Signal {
                    target: replies.id(),
                    signal: 9,
                });
                return Ok(());
            }
        }
    }

    async fn terminal(
        &self,
        handle: &VmmHandle,
        argv: Vec<String>,
        context: ExecContext,
        (rows, cols): (u16, u16),
        mut input: mpsc::Receiver<TerminalInput>,
        out: mpsc::Sender<ExecChunk>,
    ) -> Result<(), AgentLinkError> {
        use banger_proto::agent::Op;
        let client = self.client(handle).await?;
        let mut replies = client
            .send(Op::Pty {
                argv,
                env: context.env,
                cwd: context.cwd,
                user: context.user,
                rows,
                cols,
            })
            .map_err(failed)?;
        let target = replies.id();
        let mut hung_up = false;
        loop {
            tokio::select! {
                event = client.next_event(&mut replies) => {
                    let chunk = match event {
                        Ok(ExecEvent::Stdout(b)) | Ok(ExecEvent::Stderr(b)) => ExecChunk::Stdout(b),
                        Ok(ExecEvent::Exit { code, signal }) => {
                            let _ = out.send(ExecChunk::Exit { code, signal }).await;
                            return Ok(());
                        }
                        Err(AgentError::Closed) => {
                            self.forget(handle);
                            return Err(failed("the guest agent went away"));
                        }
                        Err(err) => return Err(failed(err)),
                    };
                    if out.send(chunk).await.is_err() {
                        // Nobody reads any more: end the command.
                        let _ = client.send(Op::Signal { target, signal: 9 });
                        return Ok(());
                    }
                }
                typed = input.recv(), if !hung_up => {
                    // Answers to input are not waited for: the terminal's
                    // output is the answer.
                    let sent = match typed {
                        Some(TerminalInput::Data(bytes)) => client.send(Op::Input {
                            target,
                            data: B64.encode(bytes),
                        }),
                        Some(TerminalInput::Resize { rows, cols }) => {
                            client.send(Op::Resize { target, rows, cols })
                        }
                        None => {
                            // The client went away: hang the terminal up.
                            hung_up = true;
                            client.send(Op::Signal { target, signal: 1 })
                        }
                    };
                    sent.map_err(failed)?;
                }
            }
        }
    }

    async fn copy_in(
        &self,
        handle: &VmmHandle,
        path: String,
        owner: CopyOwner,
        data: mpsc::Receiver<Result<Vec<u8>, String>>,
    ) -> Result<(), AgentLinkError> {
        let client = self.client(handle).await?;
        let (keep, user) = match owner {
            CopyOwner::Keep => (true, None),
            CopyOwner::User(user) => (false, user),
        };
        let copied = client.copy_in(path, keep, user, data).await;
        copied.map_err(|err| self.copy_error(handle, err))
    }

    async fn copy_out(
        &self,
        handle: &VmmHandle,
        path: String,
        out: mpsc::Sender<Vec<u8>>,
    ) -> Result<(), AgentLinkError> {
        let client = self.client(handle).await?;
        let mut replies = client.copy_out(path).map_err(failed)?;
        loop {
            match client.next_event(&mut replies).await {
                Ok(ExecEvent::Stdout(bytes)) => {
                    if out.send(bytes).await.is_err() {
                        return Ok(());
                    }
                }
                Ok(ExecEvent::Exit { .. }) => return Ok(()),
                Ok(ExecEvent::Stderr(_)) => {}
                Err(err) => return Err(self.copy_error(handle, err)),
            }
        }
    }
}

impl HostAgentLink {
    fn copy_error(&self, handle: &VmmHandle, err: AgentError) -> AgentLinkError {
        match err {
            AgentError::CopyFailed {
                kind,
                path,
                message,
            } => AgentLinkError::Copy {
                kind,
                path,
                message,
            },
            AgentError::Closed => {
                self.forget(handle);
                failed("the guest agent went away")
            }
            other => failed(other),
        }
    }
}
