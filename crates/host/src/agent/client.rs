//! `AgentClient`: requests with ids over one stream, replies routed back
//! by id, so many requests share the stream (a serial port is only one).
//! Lines that do not parse or belong to no request (left over from an
//! earlier connection to the same port) are ignored. The guest is not
//! trusted: a reply line is read up to `MAX_REPLY_LINE` bytes (a longer
//! one is skipped whole, never held), and each request's replies wait in a
//! channel of `REPLY_DEPTH`: a reader that falls behind holds the stream
//! up (the guest's writes wait) rather than growing the daemon. A
//! command or copy whose replies are silent for `PROBE_AFTER` is asked
//! after (`status`), so one the agent lost (it restarted) ends instead of
//! waiting for ever.

use banger_core::agent::ExecContext;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use banger_proto::agent::{BootTimes, Op, Reply, ReplyBody, Request, PROTOCOL_VERSION};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AgentError {
    #[error("the agent did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the agent connection closed")]
    Closed,
    #[error("the agent refused: {0}")]
    Refused(String),
    #[error("the agent sent {0} where it should not")]
    Unexpected(String),
    /// Asked after a silence, the agent did not know the request: it
    /// restarted since (the command went with it), or never got it.
    #[error("it no longer runs this command (it restarted, or never got it)")]
    Lost,
    /// A copy's guest side failed (`banger_copy::CopyError::kind`).
    #[error("{message}")]
    CopyFailed {
        kind: String,
        path: Option<String>,
        message: String,
    },
}

/// What `hello` learns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    pub agent_version: String,
    pub hostname: String,
    pub uptime_ms: u64,
    pub boot: Option<BootTimes>,
}

/// One piece of an exec's output, or its end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecEvent {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    Exit {
        code: Option<i32>,
        signal: Option<i32>,
    },
}

/// An exec's output, collected.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecOutput {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub code: Option<i32>,
    pub signal: Option<i32>,
}

/// How long a command's or copy's replies may be silent before the agent
/// is asked whether it still serves it.
pub const PROBE_AFTER: Duration = Duration::from_secs(10);
/// How long that question waits for its answer (no answer: keep waiting).
const PROBE_WAIT: Duration = Duration::from_secs(5);

/// Longest reply line read from a guest.
pub const MAX_REPLY_LINE: usize = 1 << 20;
/// Replies of one request waiting to be read.
const REPLY_DEPTH: usize = 64;

type Pending = Arc<Mutex<HashMap<u64, mpsc::Sender<ReplyBody>>>>;

/// Reads the next line of at most `max` bytes (without its newline) into
/// `line`: `Some(true)` for a line, `Some(false)` for one that was longer
/// and was skipped, `None` at the end of the stream. Never holds more
/// than `max` bytes.
pub async fn next_line<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    line: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<Option<bool>> {
    line.clear();
    let mut too_long = false;
    loop {
        let buf = reader.fill_buf().await?;
        if buf.is_empty() {
            return Ok(None);
        }
        let (part, end) = match buf.iter().position(|b| *b == b'\n') {
            Some(at) => (&buf[..at], Some(at + 1)),
            None => (buf, None),
        };
        if !too_long && line.len() + part.len() <= max {
            line.extend_from_slice(part);
        } else {
            too_long = true;
            line.clear();
        }
        let used = end.unwrap_or(buf.len());
        reader.consume(used);
        if end.is_some() {
            return Ok(Some(!too_long));
        }
    }
}

pub struct AgentClient {
    writer: mpsc::UnboundedSender<Vec<u8>>,
    pending: Pending,
    next_id: AtomicU64,
    tasks: Vec<JoinHandle<()>>,
    probe_after: Duration,
    /// Cleared when the agent does not understand `status` (older).
    probes: AtomicBool,
}

impl Drop for AgentClient {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// The replies of one request.
pub struct Replies {
    id: u64,
    rx: mpsc::Receiver<ReplyBody>,
    pending: Pending,
}

impl Drop for Replies {
    fn drop(&mut self) {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
    }
}

impl Replies {
    pub fn id(&self) -> u64 {
        self.id
    }

    pub(crate) async fn next(&mut self) -> Result<ReplyBody, AgentError> {
        self.rx.recv().await.ok_or(AgentError::Closed)
    }

    /// A reply already routed here, without waiting.
    pub(crate) fn arrived(&mut self) -> Option<ReplyBody> {
        self.rx.try_recv().ok()
    }

    /// The next event of an exec.
    pub async fn next_event(&mut self) -> Result<ExecEvent, AgentError> {
        event_of(self.next().await?)
    }
}

fn event_of(body: ReplyBody) -> Result<ExecEvent, AgentError> {
    match body {
        ReplyBody::Stdout { data } => Ok(ExecEvent::Stdout(decode(&data)?)),
        ReplyBody::Stderr { data } => Ok(ExecEvent::Stderr(decode(&data)?)),
        ReplyBody::Exit { code, signal } => Ok(ExecEvent::Exit { code, signal }),
        other => Err(refusal(other)),
    }
}

/// The error a reply that is not the expected one stands for.
pub(crate) fn refusal(body: ReplyBody) -> AgentError {
    match body {
        ReplyBody::Error { message } => AgentError::Refused(message),
        ReplyBody::CopyFailed {
            kind,
            path,
            message,
        } => AgentError::CopyFailed {
            kind,
            path,
            message,
        },
        other => AgentError::Unexpected(format!("{other:?}")),
    }
}

fn decode(data: &str) -> Result<Vec<u8>, AgentError> {
    B64.decode(data)
        .map_err(|_| AgentError::Unexpected("output that is not base64".into()))
}

impl AgentClient {
    /// Starts talking over `reader`/`writer` (two halves of one stream).
    pub fn new<R, W>(reader: R, writer: W) -> Self
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let pending: Pending = Arc::default();
        let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
        let write_task = tokio::spawn(async move {
            let mut writer = writer;
            while let Some(line) = rx.recv().await {
                if writer.write_all(&line).await.is_err() || writer.flush().await.is_err() {
                    return;
                }
            }
        });
        let routes = pending.clone();
        let read_task = tokio::spawn(async move {
            let mut reader = BufReader::new(reader);
            let mut line = Vec::new();
            while let Ok(Some(whole)) = next_line(&mut reader, &mut line, MAX_REPLY_LINE).await {
                if !whole {
                    tracing::warn!(
                        max = MAX_REPLY_LINE,
                        "skipped an over-long line from a guest agent"
                    );
                    continue;
                }
                let Ok(reply) = serde_json::from_slice::<Reply>(&line) else {
                    continue;
                };
                let route = routes
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(&reply.id)
                    .cloned();
                match route {
                    Some(route) => {
                        let _ = route.send(reply.body).await;
                    }
                    None => tracing::debug!(id = reply.id, "agent reply for no waiting request"),
                }
            }
            tracing::debug!("agent stream ended");
            // The stream ended: every waiter learns it.
            routes.lock().unwrap_or_else(|e| e.into_inner()).clear();
        });
        AgentClient {
            writer: tx,
            pending,
            // Ids start high and random-ish so a stale reply of an earlier
            // client on the same port does not match.
            next_id: AtomicU64::new(start_id()),
            tasks: vec![write_task, read_task],
            probe_after: PROBE_AFTER,
            probes: AtomicBool::new(true),
        }
    }

    /// Asks after `silence` instead of `PROBE_AFTER` (tests).
    pub fn probe_after(mut self, silence: Duration) -> Self {
        self.probe_after = silence;
        self
    }

    /// Whether the agent still serves request `target`: `None`
    /// when it cannot tell (no answer within `PROBE_WAIT`, or an agent
    /// older than the question).
    async fn still_running(&self, target: u64) -> Option<bool> {
        if !self.probes.load(Ordering::Relaxed) {
            return None;
        }
        let mut replies = self.send(Op::Status { target }).ok()?;
        match tokio::time::timeout(PROBE_WAIT, replies.next()).await {
            Ok(Ok(ReplyBody::Status { running })) => Some(running),
            Ok(Ok(_)) => {
                self.probes.store(false, Ordering::Relaxed);
                None
            }
            _ => None,
        }
    }

    /// Waits for `wait`; after each silence of `probe_after` the agent
    /// is asked whether it still serves request `target` (a command or a
    /// copy), and `None` comes back once it says it does not. Its answer
    /// comes after the request's last reply, and replies are routed in
    /// the order they came: whatever the request said before is already
    /// in its channel (`Replies::arrived`).
    pub(crate) async fn watched<T>(
        &self,
        target: u64,
        wait: impl std::future::Future<Output = T>,
    ) -> Option<T> {
        tokio::pin!(wait);
        loop {
            if let Ok(out) = tokio::time::timeout(self.probe_after, &mut wait).await {
                return Some(out);
            }
            if self.still_running(target).await == Some(false) {
                return None;
            }
        }
    }

    /// The next reply of command or copy request `replies`, asked after
    /// as `watched`; one the agent does not know ends with
    /// `AgentError::Lost`.
    pub async fn next_watched(&self, replies: &mut Replies) -> Result<ReplyBody, AgentError> {
        let id = replies.id;
        match self.watched(id, replies.next()).await {
            Some(reply) => reply,
            None => replies.arrived().ok_or(AgentError::Lost),
        }
    }

    /// The next event of command request `replies`, asked after as
    /// `next_watched`.
    pub async fn next_event(&self, replies: &mut Replies) -> Result<ExecEvent, AgentError> {
        event_of(self.next_watched(replies).await?)
    }

    /// True once the stream to the agent is gone.
    pub fn is_closed(&self) -> bool {
        self.writer.is_closed() || self.tasks.iter().any(|t| t.is_finished())
    }

    /// Sends a request; its replies come through the returned handle.
    pub fn send(&self, op: Op) -> Result<Replies, AgentError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(REPLY_DEPTH);
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, tx);
        let mut line = serde_json::to_vec(&Request { id, op }).unwrap_or_default();
        line.push(b'\n');
        self.writer.send(line).map_err(|_| AgentError::Closed)?;
        Ok(Replies {
            id,
            rx,
            pending: self.pending.clone(),
        })
    }

    /// Checks the agent is there and speaks our version.
    pub async fn hello(&self, timeout: Duration) -> Result<Hello, AgentError> {
        let mut replies = self.send(Op::Hello {
            version: PROTOCOL_VERSION,
        })?;
        let reply = tokio::time::timeout(timeout, replies.next())
            .await
            .map_err(|_| AgentError::Timeout(timeout))??;
        match reply {
            ReplyBody::Hello {
                agent_version,
                hostname,
                uptime_ms,
                boot,
                ..
            } => Ok(Hello {
                agent_version,
                hostname,
                uptime_ms,
                boot,
            }),
            ReplyBody::Error { message } => Err(AgentError::Refused(message)),
            other => Err(AgentError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Starts a command; read its output with `Replies::next_event`.
    pub fn exec(&self, argv: Vec<String>, stdin: Option<&[u8]>) -> Result<Replies, AgentError> {
        self.exec_as(argv, &ExecContext::default(), stdin)
    }

    /// Runs a command with an environment, working directory and user.
    pub fn exec_as(
        &self,
        argv: Vec<String>,
        context: &ExecContext,
        stdin: Option<&[u8]>,
    ) -> Result<Replies, AgentError> {
        self.send(Op::Exec {
            argv,
            env: context.env.clone(),
            cwd: context.cwd.clone(),
            user: context.user.clone(),
            stdin: stdin.map(|b| B64.encode(b)),
        })
    }

    /// Runs a command to its end (or `timeout`) and collects its output.
    pub async fn exec_collect(
        &self,
        argv: Vec<String>,
        timeout: Duration,
    ) -> Result<ExecOutput, AgentError> {
        let mut replies = self.exec(argv, None)?;
        let mut out = ExecOutput::default();
        let collect = async {
            loop {
                match replies.next_event().await? {
                    ExecEvent::Stdout(b) => out.stdout.extend(b),
                    ExecEvent::Stderr(b) => out.stderr.extend(b),
                    ExecEvent::Exit { code, signal } => {
                        out.code = code;
                        out.signal = signal;
                        return Ok::<(), AgentError>(());
                    }
                }
            }
        };
        tokio::time::timeout(timeout, collect)
            .await
            .map_err(|_| AgentError::Timeout(timeout))??;
        Ok(out)
    }

    /// Gives a restored guest its own identity; returns once applied.
    pub async fn identity(
        &self,
        identity: banger_proto::agent::Identity,
        timeout: Duration,
    ) -> Result<(), AgentError> {
        self.acknowledged(Op::Identity(identity), timeout).await
    }

    /// Asks the guest to power off (or reboot); returns once it agreed.
    pub async fn shutdown(&self, reboot: bool, timeout: Duration) -> Result<(), AgentError> {
        self.acknowledged(Op::Shutdown { reboot }, timeout).await
    }

    /// Sends `op`, which the agent answers with one `Ok` (or an error).
    async fn acknowledged(&self, op: Op, timeout: Duration) -> Result<(), AgentError> {
        let mut replies = self.send(op)?;
        match tokio::time::timeout(timeout, replies.next())
            .await
            .map_err(|_| AgentError::Timeout(timeout))??
        {
            ReplyBody::Ok => Ok(()),
            ReplyBody::Error { message } => Err(AgentError::Refused(message)),
            other => Err(AgentError::Unexpected(format!("{other:?}"))),
        }
    }
}

fn start_id() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as u64);
    (nanos << 20) | 1
}
