//! The agent's virtio-serial port, open for the agent's whole life.
//!
//! The guest kernel throws away what the host sent to a port that is
//! closed, or that closes before it is read. An agent that closed the
//! port when the host went away (a daemon restarting) and opened it again
//! lost any request the next daemon sent in the moment between its
//! connection and that close: QEMU still saw the port open and handed the
//! bytes over, and that caller waited for ever. So the port is opened
//! once and a relay thread copies it into a pipe the agent reads: a read
//! of 0 bytes (no host connected) is waited out, and the next host's
//! bytes follow on the same stream. A line the old host broke off is
//! ended there, so it cannot swallow the next host's first request (the
//! broken line fails to parse and is answered as a bad request).

use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

/// How often a port with no host connected is read again.
pub const HOST_GONE_POLL: Duration = Duration::from_millis(25);

/// Opens `port` for the agent: a reader fed by the relay thread, and a
/// writer on the port itself.
pub fn open(port: &Path) -> std::io::Result<(tokio::fs::File, tokio::fs::File)> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(port)?;
    let writer = file.try_clone()?;
    let (pipe_out, pipe_in) = std::io::pipe()?;
    let name = port.display().to_string();
    std::thread::Builder::new()
        .name("port-relay".into())
        .spawn(move || {
            if let Err(err) = relay(file, pipe_in, HOST_GONE_POLL) {
                eprintln!("banger-agent: reading {name} failed: {err}");
            }
        })?;
    let reader = std::fs::File::from(std::os::fd::OwnedFd::from(pipe_out));
    Ok((
        tokio::fs::File::from_std(reader),
        tokio::fs::File::from_std(writer),
    ))
}

/// Copies `port` into `out` until either fails. A read of 0 bytes means
/// no host is connected: it is tried again after `poll`, and a line the
/// host left unfinished is ended first.
pub fn relay(mut port: impl Read, mut out: impl Write, poll: Duration) -> std::io::Result<()> {
    let mut buffer = vec![0u8; 64 * 1024];
    let mut mid_line = false;
    loop {
        match port.read(&mut buffer) {
            Ok(0) => {
                if mid_line {
                    out.write_all(b"\n")?;
                    mid_line = false;
                }
                std::thread::sleep(poll);
            }
            Ok(n) => {
                out.write_all(&buffer[..n])?;
                mid_line = buffer[n - 1] != b'\n';
            }
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// A port that hands out these reads in turn (an empty one is a host
    /// gone), then fails.
    struct Port(VecDeque<&'static [u8]>);

    impl Read for Port {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let Some(next) = self.0.pop_front() else {
                return Err(std::io::ErrorKind::BrokenPipe.into());
            };
            buf[..next.len()].copy_from_slice(next);
            Ok(next.len())
        }
    }

    fn relayed(reads: &[&'static [u8]]) -> (String, std::io::ErrorKind) {
        let mut out = Vec::new();
        let port = Port(reads.iter().copied().collect());
        let err = relay(port, &mut out, Duration::ZERO).unwrap_err();
        (String::from_utf8(out).unwrap(), err.kind())
    }

    #[test]
    fn a_host_going_away_does_not_end_the_stream() {
        let (out, end) = relayed(&[b"{\"id\":1}\n", b"", b"", b"{\"id\":2}\n"]);
        assert_eq!(out, "{\"id\":1}\n{\"id\":2}\n");
        assert_eq!(
            end,
            std::io::ErrorKind::BrokenPipe,
            "only a failed read ends it"
        );
    }

    #[test]
    fn a_line_the_old_host_broke_off_ends_before_the_next_host_speaks() {
        let (out, _) = relayed(&[b"{\"id\":1,\"op\"", b"", b"{\"id\":2}\n"]);
        assert_eq!(out, "{\"id\":1,\"op\"\n{\"id\":2}\n");
        let (out, _) = relayed(&[b"{\"id\":", b"1}\n", b"", b"{\"id\":2}\n"]);
        assert_eq!(
            out, "{\"id\":1}\n{\"id\":2}\n",
            "a whole line is left alone"
        );
    }
}
