//! Who holds a TAP device: the processes with a tun descriptor attached
//! to it (`/proc/PID/fdinfo/FD` says `iff:` and the device's name). A
//! VMM whose last thread has not left yet still holds its TAP, and a
//! second VMM opening it fails (`EBUSY`): a start waits a moment for the
//! TAP to be free, and otherwise names who holds it.

use std::path::Path;
use std::time::{Duration, Instant};

/// The processes holding `tap`: (pid, command name).
pub fn holders(tap: &str) -> Vec<(u32, String)> {
    let want = format!("iff:\t{tap}");
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        // Only tun descriptors are read further (a link is cheap to read,
        // fdinfo less so).
        let holds = fds.flatten().any(|fd| {
            std::fs::read_link(fd.path()).is_ok_and(|target| target == Path::new("/dev/net/tun"))
                && std::fs::read_to_string(entry.path().join("fdinfo").join(fd.file_name()))
                    .is_ok_and(|info| info.lines().any(|line| line.trim_end() == want))
        });
        if holds {
            let comm =
                std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("comm"))
                    .map(|c| c.trim().to_string())
                    .unwrap_or_default();
            found.push((pid, comm));
        }
    }
    found
}

/// Waits up to `limit` for no process to hold `tap`; else says who does.
pub async fn wait_free(tap: &str, limit: Duration) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    loop {
        let held = holders(tap);
        if held.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            let who: Vec<String> = held
                .iter()
                .map(|(pid, comm)| format!("pid {pid} ({comm})"))
                .collect();
            return Err(format!(
                "tap {tap} is held by {}: another vmm has not let it go; stop that process, or check `banger verify`",
                who.join(", ")
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real TAP held by a real process (python, through /dev/net/tun),
    /// in a network namespace of the test's own.
    #[tokio::test]
    async fn a_held_tap_names_its_holder_and_frees_when_it_goes() {
        let ns = format!("bgt-holders-{}", std::process::id());
        let made = std::process::Command::new("ip")
            .args(["netns", "add", &ns])
            .status();
        if !made.is_ok_and(|s| s.success()) {
            let why = "cannot create a network namespace (needs root and iproute2)";
            assert!(std::env::var("CI").as_deref() != Ok("true"), "{why}");
            eprintln!("not run: {why}");
            return;
        }
        let script = "import fcntl, os, struct, sys, time\n\
                      fd = os.open('/dev/net/tun', os.O_RDWR)\n\
                      fcntl.ioctl(fd, 0x400454ca, struct.pack('16sH', b'bgt-held0', 0x1002))\n\
                      print('held', flush=True)\n\
                      time.sleep(30)\n";
        let mut holder = std::process::Command::new("ip")
            .args(["netns", "exec", &ns, "python3", "-c", script])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(holder.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        assert_eq!(line.trim(), "held");
        let held = holders("bgt-held0");
        assert_eq!(held.len(), 1, "{held:?}");
        assert_eq!(held[0].1, "python3");
        let err = wait_free("bgt-held0", Duration::from_millis(100))
            .await
            .unwrap_err();
        assert!(
            err.contains(&format!("pid {} (python3)", held[0].0)),
            "{err}"
        );
        holder.kill().unwrap();
        holder.wait().unwrap();
        wait_free("bgt-held0", Duration::from_secs(5))
            .await
            .unwrap();
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &ns])
            .status();
    }
}
