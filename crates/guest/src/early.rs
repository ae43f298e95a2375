//! Early services: what banger-init starts right after switching root,
//! before it executes the image's init, so that the agent and sshd answer
//! as soon as the root filesystem and the network are up instead of after
//! systemd has loaded its units. Their systemd units adopt them later by
//! pid file (`banger-agent adopt PIDFILE -- CMD`), so systemd supervises,
//! reloads and restarts them like any service.
//!
//! The image lists them in `/etc/banger/early`, one per line:
//!
//! ```text
//! # name  pid file               run dir    command
//! agent   /run/banger/agent.pid  -          /usr/local/sbin/banger-agent --pidfile /run/banger/agent.pid
//! sshd    /run/sshd.pid          /run/sshd  /usr/sbin/sshd -D
//! ```
//!
//! An image without the file starts nothing early (images built before
//! it existed boot as they always did).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where the image lists its early services.
pub const EARLY_LIST: &str = "/etc/banger/early";

/// The environment early services get: what systemd gives its services.
pub const SERVICE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EarlyError {
    #[error("{list} line {line}: {why}")]
    Parse {
        list: String,
        line: usize,
        why: &'static str,
    },
}

/// One early service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EarlyService {
    pub name: String,
    /// Where the service's pid ends up (written by the service itself).
    pub pid_file: PathBuf,
    /// A directory the service needs under `/run` (sshd's privilege
    /// separation directory), made mode 0755.
    pub run_dir: Option<PathBuf>,
    pub argv: Vec<String>,
}

/// Reads the list's text; comments and blank lines are skipped.
pub fn parse(list: &str, text: &str) -> Result<Vec<EarlyService>, EarlyError> {
    let mut services = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let bad = |why| EarlyError::Parse {
            list: list.to_string(),
            line: index + 1,
            why,
        };
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.len() < 4 {
            return Err(bad("expected: name, pid file, run dir or -, command"));
        }
        let absolute = |w: &str| w.starts_with('/');
        if !absolute(words[1]) || !absolute(words[3]) {
            return Err(bad("the pid file and the command must be absolute paths"));
        }
        let run_dir = match words[2] {
            "-" => None,
            dir if absolute(dir) => Some(PathBuf::from(dir)),
            _ => return Err(bad("the run dir must be an absolute path or -")),
        };
        services.push(EarlyService {
            name: words[0].to_string(),
            pid_file: PathBuf::from(words[1]),
            run_dir,
            argv: words[3..].iter().map(|w| w.to_string()).collect(),
        });
    }
    Ok(services)
}

/// How long banger-init waits for the early services to be up before it
/// executes the image's init anyway.
pub const READY_WAIT: Duration = Duration::from_secs(3);

/// A service started early, until it is known to be up.
#[derive(Debug)]
pub struct Launched {
    service: EarlyService,
    launcher: Child,
}

/// Starts every service of the list under the current root, each in a
/// process group of its own with a clean environment, without waiting.
/// The services stay children of PID 1 (the image's init once
/// banger-init has executed it). A service that cannot be started is
/// reported on the console and skipped (its unit starts it the ordinary
/// way later).
pub fn start_all(list: &Path) -> Vec<Launched> {
    let text = match std::fs::read_to_string(list) {
        Ok(text) => text,
        Err(_) => return Vec::new(),
    };
    let services = match parse(&list.display().to_string(), &text) {
        Ok(services) => services,
        Err(err) => {
            eprintln!("banger-init: early services: {err}");
            return Vec::new();
        }
    };
    let mut launched = Vec::new();
    for service in services {
        match start(&service) {
            Ok(launcher) => launched.push(Launched { service, launcher }),
            Err(err) => eprintln!("banger-init: cannot start {} early: {err}", service.name),
        }
    }
    launched
}

/// Waits (at most `wait` in all) until each service has written its pid
/// file or its launcher failed: sshd writes its pid file once it
/// listens, so the image's init, whose start competes for the CPU, comes
/// after. Returns the names of the services that are up.
pub fn wait_ready(launched: Vec<Launched>, wait: Duration) -> Vec<String> {
    let deadline = Instant::now() + wait;
    let mut started = Vec::new();
    for Launched {
        service,
        mut launcher,
    } in launched
    {
        loop {
            if service.pid_file.exists() {
                started.push(service.name);
                break;
            }
            // A launcher that failed leaves no pid file to wait for.
            if let Ok(Some(status)) = launcher.try_wait() {
                if !status.success() {
                    eprintln!("banger-init: {} exited early: {status}", service.name);
                    break;
                }
            }
            if Instant::now() > deadline {
                eprintln!(
                    "banger-init: {} wrote no pid file within {wait:?}",
                    service.name
                );
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    started
}

fn start(service: &EarlyService) -> std::io::Result<Child> {
    use std::os::unix::fs::DirBuilderExt;
    if let Some(dir) = &service.run_dir {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)?;
    }
    if let Some(parent) = service.pid_file.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let (program, args) = service
        .argv
        .split_first()
        .ok_or_else(|| std::io::Error::other("no command"))?;
    let mut command = Command::new(program);
    command
        .args(args)
        .env_clear()
        .env("PATH", SERVICE_PATH)
        .current_dir("/")
        .stdin(Stdio::null())
        .process_group(0);
    // Its launcher is reaped here when it has exited; a service that stays
    // in the foreground is reaped by PID 1 (systemd, once executed).
    command.spawn()
}

/// Whether `pid_file` names a live process (not a zombie).
pub fn running(pid_file: &Path) -> bool {
    let Some(pid) = std::fs::read_to_string(pid_file)
        .ok()
        .and_then(|t| t.trim().parse::<i32>().ok())
        .filter(|pid| *pid > 1)
    else {
        return false;
    };
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name's closing parenthesis.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// How long `adopt` waits for a service it started to write its pid file.
pub const ADOPT_WAIT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum AdoptError {
    #[error("adopt needs a command after --")]
    NoCommand,
    #[error("cannot start {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("{program} exited ({status}) before it wrote {pid_file}")]
    Exited {
        program: String,
        status: std::process::ExitStatus,
        pid_file: String,
    },
    #[error("{program} wrote no pid file at {pid_file} within {wait:?}")]
    NoPidFile {
        program: String,
        pid_file: String,
        wait: Duration,
    },
}

/// `banger-agent adopt PIDFILE -- CMD...`: the `ExecStart=` of a
/// `Type=forking` unit whose service banger-init may have started early.
/// When `PIDFILE` names a live process this returns at once and systemd
/// takes that process over through the unit's `PIDFile=`. Otherwise it
/// starts `CMD` (a daemon that stays in the foreground, like `sshd -D`,
/// or one that forks) and returns once `PIDFILE` names a live process,
/// which is what `Type=forking` expects of its `ExecStart=`.
pub fn adopt(pid_file: &Path, argv: &[String], wait: Duration) -> Result<(), AdoptError> {
    if running(pid_file) {
        return Ok(());
    }
    let (program, args) = argv.split_first().ok_or(AdoptError::NoCommand)?;
    // A pid file left by a process that is gone says nothing.
    let _ = std::fs::remove_file(pid_file);
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .process_group(0)
        .spawn()
        .map_err(|source| AdoptError::Spawn {
            program: program.clone(),
            source,
        })?;
    let deadline = Instant::now() + wait;
    loop {
        if running(pid_file) {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            if !status.success() {
                return Err(AdoptError::Exited {
                    program: program.clone(),
                    status,
                    pid_file: pid_file.display().to_string(),
                });
            }
        }
        if Instant::now() > deadline {
            return Err(AdoptError::NoPidFile {
                program: program.clone(),
                pid_file: pid_file.display().to_string(),
                wait,
            });
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An executable shell script `svc.sh` in `dir` with `body` after the
    /// `#!/bin/sh` line.
    fn script(dir: &Path, body: &str) -> PathBuf {
        let path = dir.join("svc.sh");
        std::fs::write(&path, format!("#!/bin/sh\n{body}")).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        path
    }

    #[test]
    fn the_list_is_read_with_comments_and_run_dirs() {
        let text = "# name pid dir command\n\nagent /run/banger/agent.pid - /usr/local/sbin/banger-agent --pidfile /run/banger/agent.pid\nsshd /run/sshd.pid /run/sshd /usr/sbin/sshd # privsep dir\n";
        let services = parse("early", text).unwrap();
        assert_eq!(services.len(), 2);
        assert_eq!(services[0].name, "agent");
        assert_eq!(services[0].run_dir, None);
        assert_eq!(
            services[0].argv,
            [
                "/usr/local/sbin/banger-agent",
                "--pidfile",
                "/run/banger/agent.pid"
            ]
        );
        assert_eq!(services[1].pid_file, Path::new("/run/sshd.pid"));
        assert_eq!(services[1].run_dir.as_deref(), Some(Path::new("/run/sshd")));
        assert_eq!(services[1].argv, ["/usr/sbin/sshd"]);
    }

    #[test]
    fn start_all_waits_for_pid_files_not_for_failed_launchers() {
        let dir = tempfile::tempdir().unwrap();
        let pid = dir.path().join("svc.pid");
        let list = dir.path().join("early");
        let script = script(
            dir.path(),
            &format!("sleep 0.2\necho $$ > {}\n", pid.display()),
        );
        std::fs::write(
            &list,
            format!(
                "svc {} - {}\nfails /run/none.pid - /bin/false\n",
                pid.display(),
                script.display()
            ),
        )
        .unwrap();
        let t = Instant::now();
        assert_eq!(
            wait_ready(start_all(&list), Duration::from_secs(20)),
            ["svc"]
        );
        assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    }

    #[test]
    fn adopt_keeps_a_live_service_and_starts_a_missing_one() {
        let dir = tempfile::tempdir().unwrap();
        let pid = dir.path().join("svc.pid");
        let marker = dir.path().join("started");
        // A foreground daemon that writes its pid file, like `sshd -D`.
        let script = script(
            dir.path(),
            &format!(
                "touch {}\nsleep 0.2\necho $$ > {}\nexec sleep 30\n",
                marker.display(),
                pid.display()
            ),
        );
        let argv = vec![script.display().to_string()];
        // A stale pid file does not count.
        std::fs::write(&pid, "999999999\n").unwrap();
        adopt(&pid, &argv, Duration::from_secs(20)).unwrap();
        assert!(marker.exists() && running(&pid));
        let first = std::fs::read_to_string(&pid).unwrap();
        std::fs::remove_file(&marker).unwrap();
        adopt(&pid, &argv, Duration::from_secs(20)).unwrap();
        assert!(
            !marker.exists(),
            "a live service is adopted, not started again"
        );
        assert_eq!(std::fs::read_to_string(&pid).unwrap(), first);
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(first.trim().parse().unwrap()),
            nix::sys::signal::Signal::SIGKILL,
        );

        let err = adopt(
            &dir.path().join("none.pid"),
            &["/bin/false".into()],
            Duration::from_secs(20),
        )
        .unwrap_err();
        assert!(err.to_string().starts_with("/bin/false exited"), "{err}");
        assert!(matches!(
            adopt(&dir.path().join("none.pid"), &[], Duration::from_secs(1)),
            Err(AdoptError::NoCommand)
        ));
    }

    #[test]
    fn bad_lines_name_their_line() {
        let err = parse("early", "agent /run/a.pid -\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "early line 1: expected: name, pid file, run dir or -, command"
        );
        let err = parse("early", "\nsshd run/sshd.pid - /usr/sbin/sshd\n").unwrap_err();
        assert!(err.to_string().starts_with("early line 2: "), "{err}");
        let err = parse("early", "sshd /run/sshd.pid run /usr/sbin/sshd\n").unwrap_err();
        assert!(err.to_string().contains("run dir"), "{err}");
    }

    #[test]
    fn a_pid_file_counts_only_for_a_live_process() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("x.pid");
        assert!(!running(&file), "missing file");
        std::fs::write(&file, format!("{}\n", std::process::id())).unwrap();
        assert!(running(&file), "this process");
        std::fs::write(&file, "garbage").unwrap();
        assert!(!running(&file));
        let mut child = Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        std::fs::write(&file, pid.to_string()).unwrap();
        assert!(!running(&file), "a process that has exited");
    }

    #[test]
    fn started_services_run_in_their_own_process_group_with_a_clean_environment() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let run_dir = dir.path().join("run/sshd");
        let list = dir.path().join("early");
        let script = script(
            dir.path(),
            &format!(
                "echo \"$PATH $HOME $(ps -o pgid= -p $$ | tr -d ' ') $$\" > {}.tmp\nmv {0}.tmp {0}\n",
                out.display()
            ),
        );
        std::fs::write(
            &list,
            format!(
                "svc {} {} {}\nbroken /x.pid - /nonexistent/program\n",
                dir.path().join("pids/svc.pid").display(),
                run_dir.display(),
                script.display()
            ),
        )
        .unwrap();
        let t = Instant::now();
        assert_eq!(
            wait_ready(start_all(&list), Duration::from_secs(2)),
            Vec::<String>::new()
        );
        assert!(
            t.elapsed() >= Duration::from_secs(2),
            "waited for the pid file"
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while !out.exists() {
            assert!(Instant::now() < deadline, "the service never ran");
            std::thread::sleep(Duration::from_millis(10));
        }
        let text = std::fs::read_to_string(&out).unwrap();
        let words: Vec<&str> = text.split_whitespace().collect();
        assert_eq!(words[0], SERVICE_PATH);
        assert_eq!(words.len(), 3, "HOME is not passed on: {text}");
        assert_eq!(words[1], words[2], "process group leader: {text}");
        assert!(run_dir.is_dir());
        assert!(dir.path().join("pids").is_dir());
    }
}
