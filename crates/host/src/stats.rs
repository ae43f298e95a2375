//! What a running VM uses on the host, read from the kernel: its VMM's
//! CPU time and memory (`/proc/PID/stat`, `smaps_rollup`), its TAP's byte
//! counters (`/sys/class/net/TAP/statistics`) and the blocks its disk
//! files hold. Readings are cumulative; rates are the reader's business.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// The VMM process's share of the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessUsage {
    /// User plus system CPU time, in nanoseconds.
    pub cpu_ns: u64,
    pub rss_bytes: u64,
    /// Proportional set size: pages shared with other VMs (a template's
    /// memory file) counted in part.
    pub pss_bytes: Option<u64>,
}

/// CPU and memory of `pid`, if it is the process that started at
/// `start_ticks` (a recycled pid is not read).
pub fn process(pid: u32, start_ticks: u64) -> Option<ProcessUsage> {
    let process = procfs::process::Process::new(i32::try_from(pid).ok()?).ok()?;
    let stat = process.stat().ok()?;
    if stat.starttime != start_ticks {
        return None;
    }
    let ticks = procfs::ticks_per_second().max(1);
    let cpu_ns = (stat.utime + stat.stime).saturating_mul(1_000_000_000) / ticks;
    let pss_bytes = process.smaps_rollup().ok().and_then(|rollup| {
        rollup
            .memory_map_rollup
            .0
            .first()
            .and_then(|map| map.extension.map.get("Pss").copied())
    });
    Some(ProcessUsage {
        cpu_ns,
        rss_bytes: stat.rss.saturating_mul(procfs::page_size()),
        pss_bytes,
    })
}

/// Bytes through a TAP device, from the guest's side: what the guest
/// received (the TAP's transmit counter) and sent (its receive counter).
pub fn tap_bytes(tap: &str) -> Option<(u64, u64)> {
    let dir = Path::new("/sys/class/net").join(tap).join("statistics");
    let read = |name: &str| -> Option<u64> {
        std::fs::read_to_string(dir.join(name))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    Some((read("tx_bytes")?, read("rx_bytes")?))
}

/// Bytes a (sparse) file holds on disk; 0 when it is not there.
pub fn allocated(path: &Path) -> u64 {
    std::fs::metadata(path)
        .map(|m| m.blocks().saturating_mul(512))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process_and_refuses_a_recycled_pid() {
        let pid = std::process::id();
        let start = crate::process::start_ticks(pid).unwrap();
        // Burn a little CPU so the reading is not zero.
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_add(i ^ (x >> 3));
        }
        std::hint::black_box(x);
        let usage = process(pid, start).unwrap();
        assert!(usage.cpu_ns > 0 && usage.rss_bytes > 0, "{usage:?}");
        assert!(usage.pss_bytes.unwrap() > 0, "{usage:?}");
        assert_eq!(process(pid, start + 1), None, "another start time");
    }

    #[test]
    fn counts_the_blocks_a_sparse_file_holds() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk");
        let file = std::fs::File::create(&path).unwrap();
        file.set_len(64 << 20).unwrap();
        assert_eq!(allocated(&path), 0, "a hole holds nothing");
        std::fs::write(&path, vec![1u8; 1 << 20]).unwrap();
        assert!(allocated(&path) >= 1 << 20);
        assert_eq!(allocated(&dir.path().join("none")), 0);
        assert_eq!(tap_bytes("lo").map(|_| ()), Some(()), "lo has counters");
    }
}
