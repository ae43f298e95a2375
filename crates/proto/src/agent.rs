//! The agent protocol between bangerd and `banger-agent` in the guest:
//! newline-delimited JSON over one byte stream (a vsock connection or a
//! virtio-serial port), every message carrying the id of the request it
//! belongs to, so one stream carries many requests at once. The host
//! speaks first (`hello`) and checks the version.
//!
//! Host -> guest: `Request`. Guest -> host: `Reply`. An `exec` is answered
//! by any number of `stdout`/`stderr` chunks and then one `exit`; every
//! other request by one reply; anything the agent cannot do by `error`.
//! A host waiting long in silence asks whether its request still runs
//! (`status`), so a request lost with a restarting agent ends.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Version of this protocol; `hello` must match it.
pub const PROTOCOL_VERSION: u32 = 1;
/// The vsock port the agent listens on.
pub const VSOCK_PORT: u32 = 1024;
/// `Chunk` requests of one copy a host keeps in flight without an answer.
pub const COPY_WINDOW: usize = 16;
/// Unanswered chunks an agent holds for one copy: more than any host's
/// window, so a host built with a larger one still fits an older agent.
pub const COPY_SLOTS: usize = 64;
/// Most archive bytes one `Chunk` carries (before base64).
pub const COPY_CHUNK: usize = 192 * 1024;
/// Name of the agent's virtio-serial port.
pub const SERIAL_PORT_NAME: &str = "org.banger.agent";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub id: u64,
    #[serde(flatten)]
    pub op: Op,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    Hello {
        version: u32,
    },
    Exec {
        argv: Vec<String>,
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        env: BTreeMap<String, String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cwd: Option<String>,
        /// `NAME`, `UID`, `NAME:GROUP` or `UID:GID`; root when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user: Option<String>,
        /// Bytes for the command's stdin (base64); stdin is closed after.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stdin: Option<String>,
    },
    /// Runs `argv` on a new pseudo-terminal of `rows` x `cols` (`vm exec
    /// -it`); its output comes as `Stdout` replies, its end as `Exit`.
    Pty {
        argv: Vec<String>,
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        env: BTreeMap<String, String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cwd: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user: Option<String>,
        rows: u16,
        cols: u16,
    },
    /// Bytes (base64) typed into the terminal of request `target`.
    Input {
        target: u64,
        data: String,
    },
    /// A new window size for the terminal of request `target`.
    Resize {
        target: u64,
        rows: u16,
        cols: u16,
    },
    /// Sends `signal` to the process of exec request `target`.
    Signal {
        target: u64,
        signal: i32,
    },
    /// Whether exec or terminal request `target` is still served here
    /// (answered by `status`): a request this agent never got, or got
    /// before it restarted, is not.
    Status {
        target: u64,
    },
    /// Powers the guest off (or reboots it), after replying.
    Shutdown {
        #[serde(default)]
        reboot: bool,
    },
    /// Starts unpacking a `vm cp` archive (tar) at `path`. Its bytes follow
    /// as `Chunk` requests naming this one, each answered `Ok` once the
    /// unpacker took it (the sender keeps at most `COPY_WINDOW` unanswered);
    /// an empty `Chunk` ends it. Answered `Ok` once all is written, or
    /// `CopyFailed`.
    CopyIn {
        path: String,
        /// Keep the numeric owners the archive records.
        #[serde(default)]
        keep_owners: bool,
        /// Who owns what is written unless `keep_owners` (root if absent).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user: Option<String>,
    },
    /// Bytes (base64) of the archive of `CopyIn` request `target`.
    Chunk {
        target: u64,
        data: String,
    },
    /// Abandons `CopyIn` request `target` (its archive broke off): its
    /// unpacker fails; what it wrote so far stays.
    Cancel {
        target: u64,
    },
    /// Packs `path` (a file, link or directory tree) as a tar archive sent
    /// as `Stdout` replies, ended by `Exit` with code 0; or `CopyFailed`.
    CopyOut {
        path: String,
    },
    /// Makes a guest restored from a snapshot a machine of its own before
    /// anything else reaches it: answered once everything is applied.
    Identity(Identity),
}

/// The new identity of a restored guest, as the daemon decided it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// The host's wall clock (milliseconds since the Unix epoch) when sent.
    pub time_ms: u64,
    /// Fresh random bytes (base64) mixed into the kernel's pool, which is
    /// then reseeded: two guests from one snapshot draw different bytes.
    pub entropy: String,
    /// `/etc/machine-id`: 32 lowercase hex digits.
    pub machine_id: String,
    /// The `banger.*` kernel command line keys this VM would boot with
    /// (hostname, address, gateway).
    pub cmdline: String,
    /// The NIC's new MAC address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// Files of the guest config (hostname, hosts, resolver, SSH host
    /// keys...), written in place of the snapshot's.
    pub files: Vec<IdentityFile>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityFile {
    pub path: String,
    pub contents: String,
    pub mode: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    pub id: u64,
    #[serde(flatten)]
    pub body: ReplyBody,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ReplyBody {
    Hello {
        version: u32,
        agent_version: String,
        hostname: String,
        /// Milliseconds since the guest kernel started.
        uptime_ms: u64,
        /// The init's own timings (`/run/banger/boot-times.json`), if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        boot: Option<BootTimes>,
    },
    Stdout {
        /// base64
        data: String,
    },
    Stderr {
        data: String,
    },
    Exit {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        code: Option<i32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        signal: Option<i32>,
    },
    Ok,
    /// The answer to `status`.
    Status {
        running: bool,
    },
    Error {
        message: String,
    },
    /// A copy's guest side failed: `kind` is `not_found`,
    /// `not_a_directory`, `conflict`, `io` or `bad_archive`.
    CopyFailed {
        kind: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        path: Option<String>,
        message: String,
    },
}

/// Milliseconds since the kernel started (CLOCK_BOOTTIME) at the points
/// banger-init records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootTimes {
    /// banger-init began.
    pub init_start_ms: u64,
    /// Modules loaded.
    pub modules_ms: u64,
    /// Root, overlay and work disk mounted, network set.
    pub mounted_ms: u64,
    /// Right before the image's init was executed.
    pub switch_root_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_shapes() {
        let exec = Request {
            id: 7,
            op: Op::Exec {
                argv: vec!["uname".into(), "-r".into()],
                env: BTreeMap::new(),
                cwd: None,
                user: None,
                stdin: None,
            },
        };
        assert_eq!(
            serde_json::to_string(&exec).unwrap(),
            r#"{"id":7,"op":"exec","argv":["uname","-r"]}"#
        );
        let exit: Reply = serde_json::from_str(r#"{"id":7,"type":"exit","code":3}"#).unwrap();
        assert_eq!(
            exit.body,
            ReplyBody::Exit {
                code: Some(3),
                signal: None
            }
        );
        let hello: Request = serde_json::from_str(r#"{"id":1,"op":"hello","version":1}"#).unwrap();
        assert_eq!(hello.op, Op::Hello { version: 1 });
    }
}
