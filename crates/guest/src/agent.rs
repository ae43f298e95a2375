//! The agent's protocol handler (`banger_proto::agent`), generic over the
//! stream so the same code serves a vsock connection, a virtio-serial
//! port, or a socketpair in tests. Requests run concurrently; their
//! replies are written one line at a time by a single writer task.

use std::collections::{HashMap, HashSet};
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use banger_proto::agent::{BootTimes, Op, Reply, ReplyBody, Request, PROTOCOL_VERSION};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

use crate::terminal::{self, TermInput, Terminals};

/// What the agent does to power off; replaced in tests.
pub type PowerOff = Arc<dyn Fn(bool) + Send + Sync>;

/// Facts the hello reply carries.
#[derive(Clone)]
pub struct AgentContext {
    /// Where banger-init left its timings.
    pub boot_times: std::path::PathBuf,
    pub power_off: PowerOff,
    /// Where a restored guest's new identity goes.
    pub identity: crate::identity::Target,
}

impl AgentContext {
    /// The real guest: timings from `/run/banger`, power off for real.
    pub fn guest() -> Self {
        AgentContext {
            boot_times: "/run/banger/boot-times.json".into(),
            power_off: Arc::new(power_off),
            identity: crate::identity::Target {
                root: "/".into(),
                live: true,
            },
        }
    }
}

/// Reads requests from `reader` and writes replies to `writer` until the
/// reader ends.
pub async fn serve<R, W>(reader: R, writer: W, ctx: AgentContext) -> std::io::Result<()>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (tx, mut rx) = mpsc::unbounded_channel::<Reply>();
    // Bulk output (archives going out) waits here for the host to read.
    let (data_tx, mut data_rx) = mpsc::channel::<Reply>(DATA_DEPTH);
    // The commands and copies being served, by request id: taken in by
    // the request loop before it reads the next line, let go by the
    // writer once their last reply is on the stream, so an answer to
    // `status` never comes before a request's own end.
    let served: Arc<Mutex<HashSet<u64>>> = Arc::default();
    let written = served.clone();
    let writer_task = tokio::spawn(async move {
        let mut writer = writer;
        loop {
            let reply = tokio::select! {
                biased;
                reply = rx.recv() => match reply {
                    Some(reply) => reply,
                    None => break,
                },
                Some(reply) = data_rx.recv() => reply,
            };
            let mut line = serde_json::to_vec(&reply).unwrap_or_default();
            line.push(b'\n');
            if writer.write_all(&line).await.is_err() || writer.flush().await.is_err() {
                break;
            }
            if is_last(&reply.body) {
                lock(&written).remove(&reply.id);
            }
        }
    });
    let running: Arc<Mutex<HashMap<u64, u32>>> = Arc::default();
    let terminals: Terminals = Arc::default();
    let copies: crate::copy::Copies = Arc::default();
    // Large reads: a serial port's reads each cross to a blocking thread,
    // and copies arrive as lines of hundreds of KiB.
    // Lines as bytes: one that is not a request (not even UTF-8, as a line
    // a host broke off can be) is answered, and the stream goes on.
    let mut lines = BufReader::with_capacity(READ_BUFFER, reader).split(b'\n');
    while let Some(line) = lines.next_segment().await? {
        if line.trim_ascii().is_empty() {
            continue;
        }
        let request: Request = match serde_json::from_slice(&line) {
            Ok(request) => request,
            Err(err) => {
                let id = serde_json::from_slice::<serde_json::Value>(&line)
                    .ok()
                    .and_then(|v| v.get("id").and_then(|id| id.as_u64()))
                    .unwrap_or(0);
                let _ = tx.send(Reply {
                    id,
                    body: ReplyBody::Error {
                        message: format!("bad request: {err}"),
                    },
                });
                continue;
            }
        };
        // Chunks are taken here, in order; the rest runs on its own.
        if let Op::Chunk { target, data } = &request.op {
            if let Some(body) = crate::copy::chunk(request.id, *target, data, &copies) {
                let _ = tx.send(Reply {
                    id: request.id,
                    body,
                });
            }
            continue;
        }
        if let Op::Cancel { target } = &request.op {
            let body = crate::copy::cancel(*target, &copies);
            let _ = tx.send(Reply {
                id: request.id,
                body,
            });
            continue;
        }
        if matches!(
            request.op,
            Op::Exec { .. } | Op::Pty { .. } | Op::CopyIn { .. } | Op::CopyOut { .. }
        ) {
            lock(&served).insert(request.id);
        }
        if let Op::CopyIn {
            path,
            keep_owners,
            user,
        } = request.op
        {
            let owner = copy_owner(keep_owners, user);
            crate::copy::start_copy_in(request.id, path, owner, &copies, tx.clone());
            continue;
        }
        if let Op::CopyOut { path } = request.op {
            tokio::spawn(crate::copy::copy_out(request.id, path, data_tx.clone()));
            continue;
        }
        // Answered here, after every earlier request was taken in.
        if let Op::Status { target } = request.op {
            let running = lock(&served).contains(&target);
            let _ = tx.send(Reply {
                id: request.id,
                body: ReplyBody::Status { running },
            });
            continue;
        }
        // A terminal takes input from here on: keystrokes right behind
        // its request wait for the command instead of being refused.
        let opened =
            matches!(request.op, Op::Pty { .. }).then(|| terminal::open(&terminals, request.id));
        let (tx, running, ctx) = (tx.clone(), running.clone(), ctx.clone());
        let terminals = terminals.clone();
        tokio::spawn(async move { handle(request, opened, tx, running, terminals, ctx).await });
    }
    drop(tx);
    drop(data_tx);
    let _ = writer_task.await;
    Ok(())
}

/// Whether `body` ends its request: a command's exit, a copy's outcome,
/// or a refusal.
fn is_last(body: &ReplyBody) -> bool {
    matches!(
        body,
        ReplyBody::Exit { .. }
            | ReplyBody::Ok
            | ReplyBody::Error { .. }
            | ReplyBody::CopyFailed { .. }
    )
}

/// A lock whose holder panicked is still taken: what it guards stays
/// consistent (single inserts and removals).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Bytes the request reader asks the stream for at once.
const READ_BUFFER: usize = 512 * 1024;

/// Replies of bulk output waiting for the host.
const DATA_DEPTH: usize = 8;

/// Who owns what a copy writes: the archive's owners, a user of this
/// guest, or root.
fn copy_owner(keep: bool, user: Option<String>) -> Result<banger_copy::Owner, String> {
    use banger_copy::Owner;
    match (keep, user) {
        (true, _) => Ok(Owner::Keep),
        (false, None) => Ok(Owner::Set(0, 0)),
        (false, Some(spec)) => crate::user::resolve(&spec, Path::new("/"))
            .map(|run_as| Owner::Set(run_as.uid, run_as.gid))
            .map_err(|e| e.to_string()),
    }
}

async fn handle(
    request: Request,
    opened: Option<terminal::Opened>,
    tx: mpsc::UnboundedSender<Reply>,
    running: Arc<Mutex<HashMap<u64, u32>>>,
    terminals: Terminals,
    ctx: AgentContext,
) {
    let id = request.id;
    let reply = |body| {
        let _ = tx.send(Reply { id, body });
    };
    match request.op {
        Op::Hello { version } if version != PROTOCOL_VERSION => reply(ReplyBody::Error {
            message: format!(
                "protocol version {version} is not spoken here: this agent speaks {PROTOCOL_VERSION}"
            ),
        }),
        Op::Hello { .. } => {
            wait_booted(&ctx).await;
            reply(hello(&ctx))
        }
        Op::Exec {
            argv,
            env,
            cwd,
            user,
            stdin,
        } => {
            wait_init_settled().await;
            let how = How { env, cwd, user };
            exec(id, argv, how, stdin, &tx, &running).await
        }
        Op::Pty {
            argv,
            env,
            cwd,
            user,
            rows,
            cols,
        } => {
            wait_init_settled().await;
            let how = How { env, cwd, user };
            let opened = opened.unwrap_or_else(|| terminal::open(&terminals, id));
            terminal::run(id, argv, how, (rows, cols), &tx, &running, opened).await
        }
        Op::Input { target, data } => match B64.decode(data) {
            Ok(bytes) => reply(delivered(&terminals, target, TermInput::Data(bytes))),
            Err(err) => reply(ReplyBody::Error {
                message: format!("input is not base64: {err}"),
            }),
        },
        Op::Resize { target, rows, cols } => reply(delivered(
            &terminals,
            target,
            TermInput::Resize { rows, cols },
        )),
        Op::Signal { target, signal } => {
            let pid = lock(&running).get(&target).copied();
            match (pid, nix::sys::signal::Signal::try_from(signal)) {
                (Some(pid), Ok(sig)) => {
                    let result = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig);
                    reply(match result {
                        Ok(()) => ReplyBody::Ok,
                        Err(err) => ReplyBody::Error {
                            message: format!("cannot signal request {target}: {err}"),
                        },
                    })
                }
                (None, _) => reply(ReplyBody::Error {
                    message: format!("no running exec with id {target}"),
                }),
                (_, Err(_)) => reply(ReplyBody::Error {
                    message: format!("unknown signal {signal}"),
                }),
            }
        }
        Op::Identity(identity) => {
            reply(match crate::identity::apply(&identity, &ctx.identity).await {
                Ok(()) => ReplyBody::Ok,
                Err(err) => ReplyBody::Error {
                    message: err.to_string(),
                },
            })
        }
        Op::Chunk { .. }
        | Op::Cancel { .. }
        | Op::CopyIn { .. }
        | Op::CopyOut { .. }
        | Op::Status { .. } => reply(ReplyBody::Error {
            message: "copies and status are taken by the request loop".into(),
        }),
        Op::Shutdown { reboot } => {
            reply(ReplyBody::Ok);
            // Give the reply a moment to leave before the guest goes.
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            (ctx.power_off)(reboot);
        }
    }
}

/// The answer to input for a terminal: none open under that id is an
/// error.
fn delivered(terminals: &Terminals, target: u64, input: TermInput) -> ReplyBody {
    if terminal::deliver(terminals, target, input) {
        ReplyBody::Ok
    } else {
        ReplyBody::Error {
            message: format!("no open terminal with id {target}"),
        }
    }
}

/// How long a hello waits for banger-init to finish the boot.
const BOOTING_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// banger-init starts the agent before it has mounted the work disk and
/// set the network, with `booting` beside the boot timings until it has:
/// the agent says hello (the host's sign that the VM is ready) only after.
async fn wait_booted(ctx: &AgentContext) {
    let marker = ctx.boot_times.with_file_name(BOOTING_MARKER);
    let deadline = tokio::time::Instant::now() + BOOTING_WAIT;
    while marker.exists() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

/// How long a command waits for the image's init to take over.
const INIT_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Whether PID 1 is past the early window: banger-init (its `/init` is
/// deleted from the initramfs) has executed the image's init, and
/// systemd, if that is it, listens on `/run/systemd/private`, where
/// `systemctl` reaches it (it has loaded its units by then).
pub fn init_settled(pid1_exe: &str, systemd_running: bool) -> bool {
    if pid1_exe.starts_with("/init") {
        return false;
    }
    let name = pid1_exe
        .trim_end_matches(" (deleted)")
        .rsplit('/')
        .next()
        .unwrap_or("");
    name != "systemd" || systemd_running
}

/// The agent answers before the image's init runs (see `wait_booted`);
/// commands wait (at most `INIT_WAIT`) until it has taken over, so that
/// `systemctl` and friends work in the first command of a fresh VM.
async fn wait_init_settled() {
    static SETTLED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    use std::sync::atomic::Ordering;
    let deadline = tokio::time::Instant::now() + INIT_WAIT;
    while !SETTLED.load(Ordering::Relaxed) {
        let exe = std::fs::read_link("/proc/1/exe")
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        if init_settled(&exe, Path::new("/run/systemd/private").exists())
            || tokio::time::Instant::now() > deadline
        {
            SETTLED.store(true, Ordering::Relaxed);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// The file banger-init keeps beside the boot timings while it boots.
pub const BOOTING_MARKER: &str = "booting";

fn hello(ctx: &AgentContext) -> ReplyBody {
    let uptime_ms = std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|t| {
            t.split_whitespace()
                .next()
                .and_then(|s| s.parse::<f64>().ok())
        })
        .map_or(0, |s| (s * 1000.0) as u64);
    let boot: Option<BootTimes> = std::fs::read(&ctx.boot_times)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    ReplyBody::Hello {
        version: PROTOCOL_VERSION,
        agent_version: env!("CARGO_PKG_VERSION").into(),
        hostname: nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default(),
        uptime_ms,
        boot,
    }
}

/// How a command runs: environment, working directory, user.
pub struct How {
    pub env: std::collections::BTreeMap<String, String>,
    pub cwd: Option<String>,
    pub user: Option<String>,
}

/// `How` resolved in this guest.
pub struct Prepared {
    pub env: std::collections::BTreeMap<String, String>,
    pub cwd: Option<String>,
    pub run_as: Option<crate::user::RunAs>,
}

impl How {
    /// Resolves the user (its home becomes `HOME` unless set).
    pub fn prepare(self) -> Result<Prepared, String> {
        let How { mut env, cwd, user } = self;
        let run_as = match user {
            Some(spec) => {
                let run_as =
                    crate::user::resolve(&spec, Path::new("/")).map_err(|e| e.to_string())?;
                if let Some(home) = &run_as.home {
                    env.entry("HOME".into()).or_insert_with(|| home.clone());
                }
                Some(run_as)
            }
            None => None,
        };
        Ok(Prepared { env, cwd, run_as })
    }
}

async fn exec(
    id: u64,
    argv: Vec<String>,
    how: How,
    stdin: Option<String>,
    tx: &mpsc::UnboundedSender<Reply>,
    running: &Arc<Mutex<HashMap<u64, u32>>>,
) {
    let send = |body| {
        let _ = tx.send(Reply { id, body });
    };
    let Some((program, args)) = argv.split_first() else {
        return send(ReplyBody::Error {
            message: "exec needs a command".into(),
        });
    };
    let input = match stdin.as_deref().map(|s| B64.decode(s)) {
        Some(Ok(bytes)) => Some(bytes),
        Some(Err(err)) => {
            return send(ReplyBody::Error {
                message: format!("stdin is not base64: {err}"),
            })
        }
        None => None,
    };
    let How { mut env, cwd, user } = how;
    let mut command = tokio::process::Command::new(program);
    if let Some(spec) = user {
        match crate::user::resolve(&spec, Path::new("/")) {
            Ok(run_as) => {
                command.uid(run_as.uid).gid(run_as.gid);
                if let Some(home) = run_as.home {
                    env.entry("HOME".into()).or_insert(home);
                }
            }
            Err(err) => {
                return send(ReplyBody::Error {
                    message: err.to_string(),
                })
            }
        }
    }
    command
        .args(args)
        .envs(env)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(dir) = cwd {
        command.current_dir(dir);
    }
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(err) => {
            for body in not_started(program, &err, false) {
                send(body);
            }
            return;
        }
    };
    if let Some(pid) = child.id() {
        lock(running).insert(id, pid);
    }
    if let (Some(bytes), Some(mut pipe)) = (input, child.stdin.take()) {
        tokio::spawn(async move {
            let _ = pipe.write_all(&bytes).await;
        });
    }
    let out = pump(child.stdout.take(), id, tx.clone(), true);
    let err = pump(child.stderr.take(), id, tx.clone(), false);
    let (_, _, status) = tokio::join!(out, err, child.wait());
    lock(running).remove(&id);
    send(exit_reply(status, program))
}

/// The replies of a command that could not be started. One that is not
/// there or cannot be run ends as a shell's would (`vm ssh` runs through
/// one): the reason on its error output (on a terminal, its one output,
/// the line ended as a terminal ends it), exit 127 or 126; anything else
/// is refused.
pub fn not_started(program: &str, err: &std::io::Error, on_terminal: bool) -> Vec<ReplyBody> {
    let message = format!("cannot run {program}: {err}");
    let code = match err.kind() {
        std::io::ErrorKind::NotFound => 127,
        std::io::ErrorKind::PermissionDenied => 126,
        _ => return vec![ReplyBody::Error { message }],
    };
    let said = match on_terminal {
        true => ReplyBody::Stdout {
            data: B64.encode(format!("{message}\r\n")),
        },
        false => ReplyBody::Stderr {
            data: B64.encode(format!("{message}\n")),
        },
    };
    vec![
        said,
        ReplyBody::Exit {
            code: Some(code),
            signal: None,
        },
    ]
}

/// The last reply of a command: how it ended.
pub fn exit_reply(status: std::io::Result<std::process::ExitStatus>, program: &str) -> ReplyBody {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Ok(status) => ReplyBody::Exit {
            code: status.code(),
            signal: status.signal(),
        },
        Err(err) => ReplyBody::Error {
            message: format!("lost {program}: {err}"),
        },
    }
}

/// Forwards a pipe as stdout or stderr chunks.
async fn pump<R: AsyncRead + Unpin>(
    pipe: Option<R>,
    id: u64,
    tx: mpsc::UnboundedSender<Reply>,
    stdout: bool,
) {
    let Some(mut pipe) = pipe else { return };
    let mut buffer = vec![0u8; 32 * 1024];
    loop {
        match pipe.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let data = B64.encode(&buffer[..n]);
                let body = if stdout {
                    ReplyBody::Stdout { data }
                } else {
                    ReplyBody::Stderr { data }
                };
                let _ = tx.send(Reply { id, body });
            }
        }
    }
}

/// Powers the guest off or reboots it: through systemd when it runs (a
/// systemd still loading its units does not answer `systemctl` yet: asked
/// again, for up to `INIT_WAIT`), directly otherwise.
pub fn power_off(reboot: bool) {
    if Path::new("/run/systemd/system").exists() {
        let verb = if reboot { "reboot" } else { "poweroff" };
        let deadline = std::time::Instant::now() + INIT_WAIT;
        while std::time::Instant::now() < deadline {
            let asked = std::process::Command::new("systemctl")
                .arg(verb)
                .stderr(Stdio::null())
                .status();
            if asked.is_ok_and(|status| status.success()) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }
    nix::unistd::sync();
    let mode = if reboot {
        nix::sys::reboot::RebootMode::RB_AUTOBOOT
    } else {
        nix::sys::reboot::RebootMode::RB_POWER_OFF
    };
    let _ = nix::sys::reboot::reboot(mode);
}

use std::path::Path;

#[cfg(test)]
mod tests {
    use super::init_settled;

    #[test]
    fn init_settles_once_the_image_init_runs_and_systemd_is_up() {
        assert!(!init_settled("/init (deleted)", false), "banger-init");
        assert!(!init_settled("/init", true), "banger-init");
        assert!(!init_settled("/usr/lib/systemd/systemd", false));
        assert!(init_settled("/usr/lib/systemd/systemd", true));
        assert!(init_settled("/usr/bin/tini", false), "another init");
        assert!(init_settled("", false), "unreadable: do not wait");
    }
}
