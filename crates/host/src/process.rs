//! Processes banger started: is a pid still the process we started (pid
//! plus its start time, so a recycled pid does not fool us, and any of
//! its threads still running), and signals.

use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// State letter and start time (clock ticks since boot) of `pid`, from
/// `/proc/PID/stat`; `None` when there is no such process.
pub fn stat(pid: u32) -> Option<(char, u64)> {
    stat_at(&Path::new("/proc").join(pid.to_string()).join("stat"))
}

/// A live thread of `pid`: its leader when it runs, else another thread
/// still running (a leader that exits before its other threads is a
/// zombie while they run on, holding every descriptor of the process).
pub fn live_thread(pid: u32) -> Option<u32> {
    let running = |stat: Option<(char, u64)>| matches!(stat, Some((s, _)) if s != 'Z' && s != 'X');
    // The common case costs one read: the leader runs.
    if running(stat(pid)) {
        return Some(pid);
    }
    let tasks = Path::new("/proc").join(pid.to_string()).join("task");
    std::fs::read_dir(&tasks)
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok())
        .find(|tid| *tid != pid && running(stat_at(&tasks.join(tid.to_string()).join("stat"))))
}

fn stat_at(path: &Path) -> Option<(char, u64)> {
    let text = std::fs::read_to_string(path).ok()?;
    // The command name (field 2) may hold spaces and parentheses: the
    // fields we want follow the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    let start_ticks = fields.get(19)?.parse().ok()?;
    Some((state, start_ticks))
}

/// The effective user id `pid` runs as (`/proc/PID/status`).
pub fn euid(pid: u32) -> Option<u32> {
    let text =
        std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("status")).ok()?;
    let line = text.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// Start time of `pid` in clock ticks since boot.
pub fn start_ticks(pid: u32) -> Option<u64> {
    stat(pid).map(|(_, ticks)| ticks)
}

/// True while `pid` is the process that started at `start_ticks` and any
/// of its threads runs: a process is gone only when none is left (a
/// zombie leader whose vCPU thread still sits in the kernel holds the
/// TAP, the disks and the sockets).
pub fn alive(pid: u32, start_ticks: u64) -> bool {
    matches!(stat(pid), Some((_, ticks)) if ticks == start_ticks) && live_thread(pid).is_some()
}

/// Sends `signal` to the process if it is still the one we mean.
pub fn signal(pid: u32, start_ticks: u64, signal: Signal) {
    if alive(pid, start_ticks) {
        let _ = kill(Pid::from_raw(pid as i32), signal);
    }
}

/// Waits until the process is gone; true if it went within `limit`.
pub async fn wait_gone(pid: u32, start_ticks: u64, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while alive(pid, start_ticks) {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

/// Every live process (one with a running thread) with its command line.
pub fn command_lines() -> Vec<(u32, Vec<String>)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        // A zombie leader has no command line: a live thread's is the
        // process's.
        let Some(tid) = live_thread(pid) else {
            continue;
        };
        let Ok(raw) = std::fs::read(
            entry
                .path()
                .join("task")
                .join(tid.to_string())
                .join("cmdline"),
        ) else {
            continue;
        };
        let args = raw
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        found.push((pid, args));
    }
    found
}

/// Running VMMs started by the banger whose runtime directory is
/// `run_dir` and whose jails are under `jails`: (pid, vm id), found by the
/// name QEMU is given (`-name banger-<id>`) or Firecracker's `--id <id>`,
/// and by a socket path under `run_dir` on their command line, or, for a
/// jailed Firecracker (whose paths are the chroot's), by its jail
/// `jails/EXEC_NAME/<id>` (another daemon's VMs are not ours).
pub fn banger_vmms(run_dir: &Path, jails: &Path) -> Vec<(u32, String)> {
    let ours = format!("{}/", run_dir.display().to_string().trim_end_matches('/'));
    let mut found = Vec::new();
    for (pid, args) in command_lines() {
        if !args.iter().any(|a| names_dir(a, &ours)) {
            if let Some(id) = jailed_firecracker(&args, jails) {
                found.push((pid, id));
            }
            continue;
        }
        for pair in args.windows(2) {
            let id = match (pair[0].as_str(), &pair[1]) {
                ("-name", name) => name.strip_prefix("banger-").map(String::from),
                ("--id", id) if args[0].ends_with("firecracker") => Some(id.clone()),
                _ => None,
            };
            if let Some(id) = id {
                found.push((pid, id));
            }
        }
    }
    found
}

/// The VM id of a Firecracker command line whose jail is under `jails`.
fn jailed_firecracker(args: &[String], jails: &Path) -> Option<String> {
    let exec_name = Path::new(args.first()?).file_name()?.to_str()?;
    if !exec_name.contains("firecracker") {
        return None;
    }
    let id = args
        .windows(2)
        .find(|pair| pair[0] == "--id")
        .map(|pair| pair[1].clone())?;
    let valid = !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    (valid && jails.join(exec_name).join(&id).is_dir()).then_some(id)
}

/// Whether a command-line argument names a path under `dir` (ending in
/// `/`): the path starts the argument or follows `=`, `:` or `,` (as in
/// `path=...`, `unix:...`), so `/run/banger/` does not match inside
/// another daemon's `/tmp/x/run/banger/`.
pub fn names_dir(arg: &str, dir: &str) -> bool {
    arg.match_indices(dir)
        .any(|(at, _)| at == 0 || matches!(arg.as_bytes()[at - 1], b'=' | b':' | b',' | b' '))
}

/// Kills (the process groups of) this banger's VMMs whose VM is not in
/// `live`: left by a daemon that died between spawning a VMM and recording
/// it. Returns what it killed.
pub fn kill_orphan_vmms(run_dir: &Path, jails: &Path, live: &[String]) -> Vec<(u32, String)> {
    let orphans: Vec<(u32, String)> = banger_vmms(run_dir, jails)
        .into_iter()
        .filter(|(_, id)| !live.contains(id))
        .collect();
    for (pid, _) in &orphans {
        // Each VMM leads its own process group; the process alone if not.
        let _ = kill(Pid::from_raw(-(*pid as i32)), Signal::SIGKILL)
            .or_else(|_| kill(Pid::from_raw(*pid as i32), Signal::SIGKILL));
    }
    orphans
}

/// Removes the sockets (never other files) in `run_dir/vms/<id>/` of VMs
/// not in `live`: a VMM killed with SIGKILL (by a crash, or as an orphan)
/// leaves its QMP and agent sockets behind. Returns what it removed.
pub fn remove_stale_sockets(run_dir: &Path, live: &[String]) -> Vec<std::path::PathBuf> {
    use std::os::unix::fs::FileTypeExt;
    let mut removed = Vec::new();
    let Ok(dirs) = std::fs::read_dir(run_dir.join("vms")) else {
        return removed;
    };
    for dir in dirs.flatten() {
        if live.contains(&dir.file_name().to_string_lossy().into_owned()) {
            continue;
        }
        for file in std::fs::read_dir(dir.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            if file.file_type().is_ok_and(|t| t.is_socket())
                && std::fs::remove_file(file.path()).is_ok()
            {
                removed.push(file.path());
            }
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_sockets_of_vms_not_live_go_and_nothing_else() {
        let run = tempfile::tempdir().unwrap();
        let (dead, live) = (run.path().join("vms/dead"), run.path().join("vms/live"));
        std::fs::create_dir_all(&dead).unwrap();
        std::fs::create_dir_all(&live).unwrap();
        let _a = std::os::unix::net::UnixListener::bind(dead.join("qmp.sock")).unwrap();
        let _b = std::os::unix::net::UnixListener::bind(live.join("qmp.sock")).unwrap();
        std::fs::write(dead.join("notes"), b"kept").unwrap();
        let removed = remove_stale_sockets(run.path(), &["live".into()]);
        assert_eq!(removed, [dead.join("qmp.sock")]);
        assert!(dead.join("notes").exists() && live.join("qmp.sock").exists());
    }

    #[test]
    fn a_jailed_firecracker_is_known_by_its_jail() {
        let jails = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(jails.path().join("firecracker/0123abcd")).unwrap();
        let args = |argv: &[&str]| argv.iter().map(|a| a.to_string()).collect::<Vec<_>>();
        let ours = args(&[
            "/usr/bin/firecracker",
            "--api-sock",
            "/api.sock",
            "--id",
            "0123abcd",
        ]);
        assert_eq!(
            jailed_firecracker(&ours, jails.path()),
            Some("0123abcd".to_string())
        );
        // No jail of that id here (another daemon's), not firecracker, a
        // path in the id.
        for other in [
            args(&["/usr/bin/firecracker", "--id", "ffff0000"]),
            args(&["/usr/bin/qemu-system-x86_64", "--id", "0123abcd"]),
            args(&["/usr/bin/firecracker", "--id", "../firecracker/0123abcd"]),
        ] {
            assert_eq!(jailed_firecracker(&other, jails.path()), None, "{other:?}");
        }
    }

    #[test]
    fn a_run_dir_matches_only_itself() {
        let ours = "/run/banger/";
        assert!(names_dir("unix:/run/banger/vms/a/qmp.sock,server=on", ours));
        assert!(names_dir("path=/run/banger/vms/a/agent.sock", ours));
        assert!(names_dir("/run/banger/vms/a/fc.sock", ours));
        assert!(!names_dir("unix:/tmp/x/run/banger/vms/a/qmp.sock", ours));
        assert!(!names_dir("path=/run/banger2/vms/a", ours));
    }

    /// A process that looks like a VMM of banger's: `-name banger-ID` and a
    /// socket path under `run_dir` on its command line.
    fn fake_vmm(run_dir: &Path, id: &str) -> std::process::Child {
        use std::os::unix::process::CommandExt;
        // Debian's python3 itself: a wrapper such as a pyenv shim forks
        // subshells that carry the same command line.
        std::process::Command::new("/usr/bin/python3")
            .args(["-c", "import time; time.sleep(60)", "-name"])
            .arg(format!("banger-{id}"))
            .arg(run_dir.join("vms").join(id).join("qmp.sock"))
            .process_group(0)
            .spawn()
            .unwrap()
    }

    #[tokio::test]
    async fn only_this_daemons_orphans_are_found_and_killed() {
        let ours = tempfile::tempdir().unwrap();
        let theirs = tempfile::tempdir().unwrap();
        let mut live = fake_vmm(ours.path(), "live1");
        let mut orphan = fake_vmm(ours.path(), "orphan1");
        let mut other = fake_vmm(theirs.path(), "other1");
        // Until one scan sees exactly both: a process still starting can
        // be missed by a scan (seen once in CI).
        let expected = [
            (live.id(), "live1".to_string()),
            (orphan.id(), "orphan1".to_string()),
        ];
        let deadline = Instant::now() + Duration::from_secs(10);
        let found = loop {
            let mut found = banger_vmms(ours.path(), &ours.path().join("jail"));
            found.sort_by(|a, b| a.1.cmp(&b.1));
            if found == expected || Instant::now() > deadline {
                break found;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(found, expected);
        let killed = kill_orphan_vmms(
            ours.path(),
            &ours.path().join("jail"),
            &["live1".to_string()],
        );
        assert_eq!(killed, [(orphan.id(), "orphan1".to_string())]);
        assert!(
            orphan.wait().unwrap().code().is_none(),
            "killed by a signal"
        );
        assert!(live.try_wait().unwrap().is_none(), "the live one runs on");
        assert!(
            other.try_wait().unwrap().is_none(),
            "another daemon's vmm is not ours"
        );
        for child in [&mut live, &mut other] {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    #[tokio::test]
    async fn tracks_a_process_by_pid_and_start_time() {
        let mut child = tokio::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id().unwrap();
        let ticks = start_ticks(pid).unwrap();
        assert!(alive(pid, ticks));
        assert!(
            !alive(pid, ticks + 1),
            "another start time is another process"
        );
        signal(pid, ticks, Signal::SIGKILL);
        child.wait().await.unwrap();
        assert!(wait_gone(pid, ticks, Duration::from_secs(5)).await);
        assert!(stat(u32::MAX).is_none());
    }

    /// A real process whose leader exits while another thread runs on
    /// (python's main thread calls pthread_exit): alive until the last
    /// thread ends, and gone after.
    #[test]
    fn a_process_is_alive_while_any_thread_runs() {
        let script = "import ctypes, threading, time\n\
                      t = threading.Thread(target=time.sleep, args=(2,))\n\
                      t.start()\n\
                      ctypes.CDLL(None).pthread_exit(None)\n";
        let mut child = std::process::Command::new("python3")
            .args(["-c", script])
            .spawn()
            .expect("python3 runs");
        let pid = child.id();
        let ticks = start_ticks(pid).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !matches!(stat(pid), Some(('Z', _))) {
            assert!(Instant::now() < deadline, "the leader never exited");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(
            alive(pid, ticks),
            "a zombie leader whose thread runs is alive"
        );
        while alive(pid, ticks) {
            assert!(Instant::now() < deadline, "the thread never ended");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(live_thread(pid).is_none());
        child.wait().unwrap();
    }
}
