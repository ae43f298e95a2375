//! A network namespace per test: daemons that touch the network run in
//! one, so bridges, TAPs, nftables tables and sockets go with it.

use std::os::fd::AsFd;
use std::process::Command;

/// A network namespace of the test's own, removed (with every link, nft
/// table and socket in it) when dropped. Daemons that touch the network
/// run inside one.
pub struct NetNs {
    pub name: String,
}

impl NetNs {
    /// A fresh namespace with `lo` up, or `None` with the reason printed
    /// (a failure under CI=true).
    pub fn new(tag: &str) -> Option<NetNs> {
        let name = format!("bgt-{tag}-{}", std::process::id());
        // One left by an earlier process of this pid, if any.
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(std::process::Stdio::null())
            .status();
        let made = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        crate::require(
            made,
            "cannot create a network namespace (needs root and iproute2)",
        )?;
        let ns = NetNs { name };
        ns.run(&["ip", "link", "set", "lo", "up"]);
        Some(ns)
    }

    /// A command that runs inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name, program]);
        command
    }

    /// Runs a command inside the namespace; panics when it fails.
    pub fn run(&self, argv: &[&str]) -> String {
        let out = self.command(argv[0]).args(&argv[1..]).output().unwrap();
        assert!(
            out.status.success(),
            "{argv:?} in {}: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Runs `work` on a thread that entered `ns` (its child processes are in
/// it too): for synchronous code such as benchmarks, where the daemon
/// runs in process.
pub fn in_netns<T: Send>(ns: &NetNs, work: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let file = std::fs::File::open(format!("/var/run/netns/{}", ns.name)).unwrap();
                nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
                work()
            })
            .join()
    })
    .unwrap()
}
