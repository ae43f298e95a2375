//! `vm exec -it` in the guest: a command on a new pseudo-terminal (its
//! session leader, the terminal its controlling tty), so the line
//! discipline turns Ctrl-C and Ctrl-\ typed on the host into SIGINT and
//! SIGQUIT for the foreground process group, as on a local terminal.
//! Input and window sizes arrive as their own requests naming the
//! session, taken in from the moment the session's request is (`open`);
//! output goes back as `Stdout` replies, the end as `Exit`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use banger_proto::agent::{Reply, ReplyBody};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::agent::How;

/// What the host sends to a running terminal.
#[derive(Debug)]
pub enum TermInput {
    Data(Vec<u8>),
    Resize { rows: u16, cols: u16 },
}

/// The open terminals, by the id of the request that started them.
pub type Terminals = Arc<Mutex<HashMap<u64, mpsc::UnboundedSender<TermInput>>>>;

/// Hands `input` to the terminal of request `target`; false when there
/// is none.
pub fn deliver(terminals: &Terminals, target: u64, input: TermInput) -> bool {
    let open = terminals.lock().unwrap_or_else(|e| e.into_inner());
    open.get(&target).is_some_and(|tx| tx.send(input).is_ok())
}

/// A terminal's input, taken in as soon as its request is: keystrokes
/// sent right behind the request (typed before the command started)
/// wait here for the command instead of being refused. Dropping it
/// closes the terminal to further input.
pub struct Opened {
    input: mpsc::UnboundedReceiver<TermInput>,
    registration: Registration,
}

/// The terminal's entry in `Terminals`, removed when dropped.
struct Registration {
    terminals: Terminals,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.terminals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
    }
}

/// Opens the input of the terminal request `id` will start.
pub fn open(terminals: &Terminals, id: u64) -> Opened {
    let (tx, input) = mpsc::unbounded_channel();
    terminals
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(id, tx);
    Opened {
        input,
        registration: Registration {
            terminals: terminals.clone(),
            id,
        },
    }
}

/// Output once the command ended: read what is left for this long.
const DRAIN: Duration = Duration::from_millis(200);

/// Runs `argv` on a new terminal of `rows` x `cols` until it exits.
pub async fn run(
    id: u64,
    argv: Vec<String>,
    how: How,
    (rows, cols): (u16, u16),
    tx: &mpsc::UnboundedSender<Reply>,
    running: &Arc<Mutex<HashMap<u64, u32>>>,
    opened: Opened,
) {
    let send = |body| {
        let _ = tx.send(Reply { id, body });
    };
    let fail = |message: String| {
        let _ = tx.send(Reply {
            id,
            body: ReplyBody::Error { message },
        });
    };
    let Some((program, args)) = argv.split_first() else {
        return fail("exec needs a command".into());
    };
    let prepared = match how.prepare() {
        Ok(prepared) => prepared,
        Err(message) => return fail(message),
    };
    let (pty, pts) = match pty_process::open() {
        Ok(pair) => pair,
        Err(err) => return fail(format!("cannot open a terminal: {err}")),
    };
    let _ = pty.resize(pty_process::Size::new(rows, cols));
    let mut env = prepared.env;
    env.entry("TERM".into())
        .or_insert_with(|| "xterm-256color".into());
    let mut command = pty_process::Command::new(program)
        .args(args)
        .envs(env)
        .kill_on_drop(true);
    if let Some(dir) = prepared.cwd {
        command = command.current_dir(dir);
    }
    if let Some(run_as) = prepared.run_as {
        command = command.uid(run_as.uid).gid(run_as.gid);
    }
    let mut child = match command.spawn(pts) {
        Ok(child) => child,
        Err(err) => {
            let err = match err {
                pty_process::Error::Io(err) => err,
                other => std::io::Error::other(other.to_string()),
            };
            for body in crate::agent::not_started(program, &err, true) {
                send(body);
            }
            return;
        }
    };
    if let Some(pid) = child.id() {
        running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, pid);
    }
    let Opened {
        mut input,
        registration,
    } = opened;
    let (mut reader, mut writer) = pty.into_split();
    let mut buf = vec![0u8; 16 * 1024];
    let mut status = None;
    let mut drain_until = None;
    loop {
        let drain = async {
            match drain_until {
                Some(when) => tokio::time::sleep_until(when).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            read = reader.read(&mut buf) => match read {
                // EIO once every holder of the terminal has closed it.
                Ok(0) | Err(_) => break,
                Ok(n) => send(ReplyBody::Stdout { data: B64.encode(&buf[..n]) }),
            },
            Some(message) = input.recv() => match message {
                TermInput::Data(bytes) => {
                    let _ = writer.write_all(&bytes).await;
                }
                TermInput::Resize { rows, cols } => {
                    let _ = writer.resize(pty_process::Size::new(rows, cols));
                }
            },
            waited = child.wait(), if status.is_none() => {
                status = Some(waited);
                drain_until = Some(tokio::time::Instant::now() + DRAIN);
            }
            () = drain => break,
        }
    }
    drop(registration);
    let status = match status {
        Some(status) => status,
        None => child.wait().await,
    };
    running
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&id);
    send(crate::agent::exit_reply(status, program));
}
