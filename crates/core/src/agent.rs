//! The flows' view of the guest agent: wait until it answers after boot,
//! ask it to power the guest off, run a command. `banger-host` speaks the
//! protocol; unit tests use fakes.

use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;

use crate::vmm::VmmHandle;

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum AgentLinkError {
    #[error("the guest agent did not answer within {0:?}")]
    NotReady(Duration),
    #[error("the guest agent: {0}")]
    Failed(String),
    /// A copy's guest side failed; `kind` as `banger_copy::CopyError`.
    #[error("{message}")]
    Copy {
        kind: String,
        path: Option<String>,
        message: String,
    },
}

/// What the agent said when it answered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentReady {
    pub hostname: String,
    /// Kernel start to banger-init, and banger-init to the image's init.
    pub init_start_ms: Option<u64>,
    pub switch_root_ms: Option<u64>,
    /// Kernel start to the agent's answer.
    pub uptime_ms: u64,
}

/// How a command runs in the guest. Commands in a VM of an OCI image get
/// the image's environment, working directory and user; otherwise the
/// agent's defaults (root, `/`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecContext {
    pub env: std::collections::BTreeMap<String, String>,
    pub cwd: Option<String>,
    pub user: Option<String>,
}

impl ExecContext {
    /// The context an OCI image's config asks for.
    pub fn from_container(config: &banger_proto::image::ContainerConfig) -> Self {
        ExecContext {
            env: config
                .env
                .iter()
                .filter_map(|entry| entry.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            cwd: config.working_dir.clone(),
            user: config.user.clone(),
        }
    }
}

/// What a terminal's client sends while its command runs (`vm exec -it`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TerminalInput {
    Data(Vec<u8>),
    Resize { rows: u16, cols: u16 },
}

/// A piece of a command's output, or its end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecChunk {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    Exit {
        code: Option<i32>,
        signal: Option<i32>,
    },
}

#[async_trait]
pub trait AgentLink: Send + Sync {
    /// Waits until the agent of the VM behind `handle` answers; the error
    /// of a guest that never does carries the end of `serial_log`.
    async fn wait_ready(
        &self,
        handle: &VmmHandle,
        serial_log: &std::path::Path,
        timeout: Duration,
    ) -> Result<AgentReady, AgentLinkError>;

    /// Asks the guest to power off; returns once the agent agreed.
    async fn shutdown(&self, handle: &VmmHandle, timeout: Duration) -> Result<(), AgentLinkError>;

    /// Runs `argv` in the guest, sending its output to `out` as it comes;
    /// the last chunk is `Exit`.
    async fn exec(
        &self,
        handle: &VmmHandle,
        argv: Vec<String>,
        context: ExecContext,
        stdin: Option<Vec<u8>>,
        out: mpsc::Sender<ExecChunk>,
    ) -> Result<(), AgentLinkError>;

    /// Gives a guest restored from a snapshot its own identity (clock,
    /// entropy, machine-id, files, hostname, MAC and address).
    async fn identity(
        &self,
        _handle: &VmmHandle,
        _identity: banger_proto::agent::Identity,
    ) -> Result<(), AgentLinkError> {
        Err(AgentLinkError::Failed(
            "this agent link cannot change a guest's identity".into(),
        ))
    }

    /// Runs `argv` on a new terminal of `size` (rows, columns) in the
    /// guest: `input` carries keystrokes and window sizes (its end hangs
    /// the terminal up), `out` gets the output, the last chunk `Exit`.
    async fn terminal(
        &self,
        _handle: &VmmHandle,
        _argv: Vec<String>,
        _context: ExecContext,
        _size: (u16, u16),
        _input: mpsc::Receiver<TerminalInput>,
        _out: mpsc::Sender<ExecChunk>,
    ) -> Result<(), AgentLinkError> {
        Err(AgentLinkError::Failed(
            "this agent link has no terminals".into(),
        ))
    }

    /// Unpacks the `vm cp` archive arriving on `data` at `path` in the
    /// guest, owned as `owner` says; an error on `data` abandons it.
    async fn copy_in(
        &self,
        _handle: &VmmHandle,
        _path: String,
        _owner: CopyOwner,
        _data: mpsc::Receiver<Result<Vec<u8>, String>>,
    ) -> Result<(), AgentLinkError> {
        Err(AgentLinkError::Failed("this agent link cannot copy".into()))
    }

    /// Packs `path` in the guest and sends the archive to `out` as it
    /// comes; returns once all of it was sent.
    async fn copy_out(
        &self,
        _handle: &VmmHandle,
        _path: String,
        _out: mpsc::Sender<Vec<u8>>,
    ) -> Result<(), AgentLinkError> {
        Err(AgentLinkError::Failed("this agent link cannot copy".into()))
    }
}

/// Who owns the files a copy writes into a guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CopyOwner {
    /// The numeric owners the archive records (`vm cp -a`).
    Keep,
    /// This guest user (`NAME`, `UID`, `NAME:GROUP`); root when `None`.
    User(Option<String>),
}
