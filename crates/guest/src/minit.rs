//! banger's small init, PID 1 of a userland that has no init system of
//! its own (a busybox or container root filesystem): banger-init executes
//! it (`/usr/local/sbin/banger-init`, named in the image's
//! `/etc/banger/init`) after it has started the image's early services
//! (the agent, and sshd when the image has one). It mounts what programs
//! expect beyond `/dev`, `/proc`, `/sys` and `/run` (`/dev/pts`,
//! `/dev/shm`, `/tmp`), reaps every orphan, and on SIGTERM, SIGINT or
//! SIGPWR ends all processes (TERM, then KILL after a grace), syncs and
//! powers off.

use std::time::{Duration, Instant};

use nix::mount::{mount, MsFlags};
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

/// How long processes get between SIGTERM and SIGKILL at power-off.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// The mounts this init adds: (source, target, fstype, flags, data).
pub const MOUNTS: &[(&str, &str, &str, &str)] = &[
    (
        "devpts",
        "/dev/pts",
        "devpts",
        "mode=0620,ptmxmode=0666,gid=5",
    ),
    ("tmpfs", "/dev/shm", "tmpfs", "mode=1777"),
    ("tmpfs", "/tmp", "tmpfs", "mode=1777"),
];

/// Mounts `MOUNTS` (an existing mount is left as it is). banger-init
/// calls it too, before the agent may answer, so a terminal asked for
/// right after boot finds `/dev/pts`.
pub fn mount_all() {
    let mounted = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    for (source, target, fstype, data) in MOUNTS {
        if is_mounted(&mounted, target) {
            continue;
        }
        let _ = std::fs::create_dir_all(target);
        if let Err(err) = mount(
            Some(*source),
            *target,
            Some(*fstype),
            MsFlags::MS_NOSUID,
            Some(*data),
        ) {
            if err != nix::Error::EBUSY {
                eprintln!("banger-init: cannot mount {target}: {err}");
            }
        }
    }
}

/// Whether `/proc/self/mounts` text lists `target` as a mount point.
fn is_mounted(mounts: &str, target: &str) -> bool {
    mounts
        .lines()
        .any(|line| line.split_whitespace().nth(1) == Some(target))
}

/// Reaps every child that has ended; returns how many.
pub fn reap() -> usize {
    let mut reaped = 0;
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => return reaped,
            Ok(_) => reaped += 1,
        }
    }
}

/// The signals this init acts on; blocked, and taken with `sigwait`.
fn signals() -> SigSet {
    let mut set = SigSet::empty();
    for signal in [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGPWR,
        Signal::SIGUSR2,
    ] {
        set.add(signal);
    }
    set
}

/// Ends every process but this one, gracefully first, then powers off.
fn power_off() -> ! {
    let _ = kill(Pid::from_raw(-1), Signal::SIGTERM);
    let deadline = Instant::now() + STOP_GRACE;
    while Instant::now() < deadline {
        reap();
        // No child left: everyone is gone.
        if matches!(
            waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)),
            Err(nix::Error::ECHILD)
        ) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = kill(Pid::from_raw(-1), Signal::SIGKILL);
    reap();
    crate::init::power_off()
}

/// Runs as PID 1; never returns.
pub fn run() -> ! {
    let set = signals();
    if let Err(err) = set.thread_block() {
        eprintln!("banger-init: cannot block signals: {err}");
    }
    mount_all();
    loop {
        match set.wait() {
            Ok(Signal::SIGCHLD) => {
                reap();
            }
            Ok(_) => power_off(),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mounts_are_the_ones_programs_expect() {
        let targets: Vec<&str> = MOUNTS.iter().map(|m| m.1).collect();
        assert_eq!(targets, ["/dev/pts", "/dev/shm", "/tmp"]);
        let mounts = "devpts /dev/pts devpts rw 0 0\ntmpfs /tmpx tmpfs rw 0 0\n";
        assert!(is_mounted(mounts, "/dev/pts") && !is_mounted(mounts, "/tmp"));
    }
}
