//! `firecracker-double`: a TEST DOUBLE of the `firecracker` binary, for
//! the driver's process-level tests on hosts where Firecracker cannot run.
//! It takes Firecracker's `--api-sock`, `--id`, `--config-file`,
//! `--log-path`, `--level` and `--show-level`, serves the API on the
//! socket (every request validated against the official API description),
//! and boots nothing. What it copies from Firecracker v1.16.1:
//!
//! - its log goes to `--log-path` from the first line, else to stdout
//!   (the guest's serial console);
//! - the "guest" (see `DoubleGuest`, chosen by the kernel file) prints a
//!   line to stdout once started; one that obeys Ctrl+Alt+Del makes the
//!   process exit, a hung one does not (only a signal ends it);
//! - with `--config-file`, requests wait while the machine boots; a boot
//!   that fails while a request waits aborts the process ("VMM
//!   disconnected", exit by SIGABRT) and the cause is never logged, one
//!   that fails with none waiting ends with v1.16.1's `Error: ...` line
//!   on stderr and exits 1;
//! - its TAP is opened (`tap`): one another process holds ends a
//!   config-file start with the line v1.16.1 printed for it;
//! - snapshots: pause, resume, create of a paused machine, load on a
//!   fresh process (see the double's module docs); a failed load logs
//!   its cause and ends the process;
//! - it exits on SIGTERM and leaves its socket behind.

mod tap;

use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use banger_host::firecracker::double::DoubleGuest;
use banger_host::firecracker::plan::{CONFIG_FILE_SECTIONS, CONFIG_FILE_STARTED};
use banger_host::firecracker::{FcRequest, FirecrackerDouble};
use clap::Parser;
use serde_json::{json, Value};

#[derive(Debug, Parser)]
#[command(disable_version_flag = true)]
struct Args {
    /// Prints the version, as `firecracker --version`.
    #[arg(long)]
    version: bool,
    #[arg(long, required_unless_present = "version")]
    api_sock: Option<PathBuf>,
    #[arg(long)]
    id: Option<String>,
    /// Configure and start from this JSON, as `firecracker --config-file`.
    #[arg(long)]
    config_file: Option<PathBuf>,
    #[arg(long)]
    log_path: Option<PathBuf>,
    #[arg(long)]
    level: Option<String>,
    #[arg(long)]
    show_level: bool,
    /// Run as if chrooted here (given by `jailer-double`): every path is
    /// under it.
    #[arg(long)]
    double_root: Option<PathBuf>,
}

impl Args {
    /// Where a path Firecracker was given is on the host.
    fn resolve(&self, path: &Path) -> PathBuf {
        match &self.double_root {
            Some(root) => root.join(path.strip_prefix("/").unwrap_or(path)),
            None => path.to_path_buf(),
        }
    }
}

/// Where Firecracker's log lines go.
struct Log {
    /// `--level Off`.
    off: bool,
    file: Option<std::fs::File>,
    id: String,
    show_level: bool,
}

impl Log {
    fn line(&mut self, level: &str, text: &str) {
        if self.off {
            return;
        }
        let level = if self.show_level {
            format!(":{level}")
        } else {
            String::new()
        };
        let line = format!("[{}:main{level}] {text}\n", self.id);
        let _ = match &mut self.file {
            Some(file) => file.write_all(line.as_bytes()),
            None => std::io::stdout().write_all(line.as_bytes()),
        };
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args = Args::parse();
    if args.version {
        println!("Firecracker v1.16.1 (firecracker-double, a test double)");
        return;
    }
    let api_sock = args.resolve(&args.api_sock.clone().unwrap_or_default());
    let id = args.id.clone().unwrap_or("anonymous-instance".into());
    let file = args
        .log_path
        .as_ref()
        .map(|path| args.resolve(path))
        .map(|path| {
            // Like Firecracker, it opens the log but does not create it.
            std::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .unwrap_or_else(|err| {
                    eprintln!("firecracker-double: cannot open {}: {err}", path.display());
                    std::process::exit(1);
                })
        });
    let mut log = Log {
        off: args.level.as_deref() == Some("Off"),
        file,
        id: id.clone(),
        show_level: args.show_level,
    };
    log.line(
        "INFO",
        "Running Firecracker v1.16.1 (firecracker-double: a test double that boots nothing)",
    );
    let serve = if args.config_file.is_some() {
        FirecrackerDouble::spawn_booting(&api_sock).await
    } else {
        FirecrackerDouble::spawn(&api_sock).await
    };
    let double = match serve {
        Ok(double) => double,
        Err(err) => {
            log.line("ERROR", &format!("Failed to open the API socket: {err}"));
            std::process::exit(1);
        }
    };
    if let Some(root) = &args.double_root {
        double.set_root(root.clone());
    }
    log.line("INFO", &format!("Listening on API socket ({api_sock:?}).",));
    let mut taps: Vec<OwnedFd> = Vec::new();
    // Jailed, the jailer's own device node in the chroot.
    let tun = args.resolve(Path::new("/dev/net/tun"));
    if let Some(path) = args.config_file.as_ref().map(|p| args.resolve(p)) {
        let built = apply_config_file(&double, &path);
        // Firecracker opens its TAP while it parses the file; one another
        // process holds ends it with v1.16.1's own line.
        for name in double.taps() {
            match tap::open(&tun, &name) {
                Ok(fd) => taps.push(fd),
                Err(err) => {
                    eprintln!("Error: RunWithApi(BuildFromJson(ParseFromJson(NetDevice(CreateNetworkDevice(TapOpen(IfreqExecuteError({}, {name:?}))))))))", os_error(&err));
                    std::process::exit(1);
                }
            }
        }
        // Requests wait while the machine "boots".
        let kernel = std::fs::read_to_string(&path)
            .ok()
            .and_then(|text| serde_json::from_str::<Value>(&text).ok())
            .and_then(|doc| {
                doc["boot-source"]["kernel_image_path"]
                    .as_str()
                    .map(|k| args.resolve(Path::new(k)))
            })
            .unwrap_or_default();
        tokio::time::sleep(DoubleGuest::boot_time_of_kernel(&kernel)).await;
        if let Err(cause) = built {
            if double.waiting() > 0 {
                // What Firecracker does with a request in flight: the API
                // thread loses the VMM and the process aborts unlogged.
                eprintln!("thread 'fc_api' panicked: VMM disconnected: RecvError");
                std::process::abort();
            }
            // As v1.16.1 ends a config-file start that fails: main's error
            // in its debug form, on stderr, no log level.
            eprintln!("Error: RunWithApi(BuildFromJson(StartMicrovm({cause:?})))");
            std::process::exit(1);
        }
        double.boot_finished();
        log.line("INFO", CONFIG_FILE_STARTED);
    }
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(err) => {
            log.line("ERROR", &format!("no sigterm handler: {err}"));
            std::process::exit(1);
        }
    };
    let mut console_said = false;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = tokio::time::sleep(Duration::from_millis(20)) => {
                if taps.is_empty() && double.state() == banger_host::firecracker::InstanceState::Running {
                    // Started through the API: the TAP is held from now.
                    for name in double.taps() {
                        match tap::open(&tun, &name) {
                            Ok(fd) => taps.push(fd),
                            Err(err) => {
                                log.line("ERROR", &format!("Could not open tap {name}: {}", os_error(&err)));
                                std::process::exit(1);
                            }
                        }
                    }
                }
                if !console_said && double.state() == banger_host::firecracker::InstanceState::Running {
                    // The guest's first console line: serial output only.
                    println!("double guest {id}: booted (nothing really runs)");
                    console_said = true;
                }
                if let Some(cause) = double.fatal() {
                    // A failed snapshot load ends Firecracker after its answer.
                    log.line("ERROR", &cause);
                    std::process::exit(1);
                }
                if double.stopped()
                    && matches!(double.guest(), DoubleGuest::Obeys | DoubleGuest::SlowToLeave)
                {
                    log.line("INFO", "Vmm is stopping.");
                    break;
                }
            }
        }
    }
    // Exit without removing the socket, as Firecracker does.
    log.line("INFO", "Firecracker exiting successfully. exit_code=0");
    if double.guest() == DoubleGuest::SlowToLeave {
        tap::leave_slowly(taps, Duration::from_millis(600));
    }
    std::process::exit(0);
}

/// An OS error as Rust's debug form prints it inside Firecracker's errors.
fn os_error(err: &std::io::Error) -> String {
    let code = err.raw_os_error().unwrap_or(0);
    let message = std::io::Error::from_raw_os_error(code).to_string();
    let message = message.split(" (os error").next().unwrap_or_default();
    format!(
        "Os {{ code: {code}, kind: {:?}, message: {message:?} }}",
        err.kind()
    )
}

/// Replays a `--config-file` document as the API requests it stands for,
/// each validated by the double like any other request, then starts.
fn apply_config_file(double: &FirecrackerDouble, path: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let doc: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    for required in ["boot-source", "drives"] {
        if doc.get(required).is_none() {
            return Err(format!("missing {required}"));
        }
    }
    let mut requests = Vec::new();
    for (key, path) in CONFIG_FILE_SECTIONS {
        if let Some(body) = doc.get(key) {
            requests.push(FcRequest::put(path, body));
        }
    }
    for (key, id) in [("drives", "drive_id"), ("network-interfaces", "iface_id")] {
        for item in doc.get(key).and_then(Value::as_array).into_iter().flatten() {
            let id = item.get(id).and_then(Value::as_str).unwrap_or_default();
            requests.push(FcRequest::put(format!("/{key}/{id}"), item));
        }
    }
    requests.push(FcRequest::put(
        "/actions",
        &json!({"action_type": "InstanceStart"}),
    ));
    for request in requests {
        double.apply(request)?;
    }
    Ok(())
}
