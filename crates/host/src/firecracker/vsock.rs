//! The host side of Firecracker's hybrid vsock: the guest's vsock ports
//! are reached through the unix socket at the device's `uds_path`. The
//! host connects, writes `CONNECT <port>\n`, and Firecracker answers
//! `OK <host_port>\n` once a guest listener accepted; from then on the
//! stream carries the guest connection. When nothing listens in the guest,
//! Firecracker closes the stream or says nothing at all, so every step has
//! a deadline.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::time::timeout;

/// Longest acknowledgement line accepted (`OK 4294967295\n` is 14 bytes).
const MAX_ACK: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum VsockError {
    #[error("cannot reach the vsock socket {path}: {source}")]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no answer from the guest on vsock port {port} within {waited:?}")]
    Timeout { port: u32, waited: Duration },
    #[error(
        "the vmm closed the vsock connection to port {port}: nothing listens there in the guest"
    )]
    Refused { port: u32 },
    #[error("unexpected answer {answer:?} to a vsock connect to port {port}")]
    BadAnswer { port: u32, answer: String },
    #[error("vsock connection to port {port} failed: {source}")]
    Io { port: u32, source: std::io::Error },
}

/// Opens a connection to guest vsock `port` through `uds_path`. The
/// returned stream is positioned after the `OK` line.
pub async fn connect(uds_path: &Path, port: u32, wait: Duration) -> Result<UnixStream, VsockError> {
    let stream = timeout(wait, UnixStream::connect(uds_path))
        .await
        .map_err(|_| VsockError::Timeout { port, waited: wait })?
        .map_err(|source| VsockError::Connect {
            path: uds_path.to_path_buf(),
            source,
        })?;
    let mut reader = BufReader::new(stream);
    let io = |source| VsockError::Io { port, source };
    reader
        .get_mut()
        .write_all(format!("CONNECT {port}\n").as_bytes())
        .await
        .map_err(io)?;
    let mut line = Vec::new();
    let read = timeout(wait, read_ack(&mut reader, &mut line))
        .await
        .map_err(|_| VsockError::Timeout { port, waited: wait })?
        .map_err(io)?;
    if read == 0 {
        return Err(VsockError::Refused { port });
    }
    let answer = String::from_utf8_lossy(&line).trim_end().to_string();
    let ok = answer
        .strip_prefix("OK ")
        .is_some_and(|n| n.parse::<u32>().is_ok());
    if !ok {
        return Err(VsockError::BadAnswer { port, answer });
    }
    // Bytes after the ack line would be lost with the buffer; Firecracker
    // sends nothing before the host writes, so the buffer is empty here.
    Ok(reader.into_inner())
}

async fn read_ack(
    reader: &mut BufReader<UnixStream>,
    line: &mut Vec<u8>,
) -> std::io::Result<usize> {
    let mut limited = AsyncReadExt::take(&mut *reader, MAX_ACK as u64);
    limited.read_until(b'\n', line).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::UnixListener;

    /// A stand-in for Firecracker's vsock multiplexer (a test double: it
    /// answers the handshake as told, and echoes afterwards).
    async fn muxer(path: &Path, answer: Option<&'static str>) {
        let listener = UnixListener::bind(path).unwrap();
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let mut reader = BufReader::new(stream);
            let mut line = String::new();
            reader.read_line(&mut line).await.unwrap();
            assert_eq!(line, "CONNECT 52\n");
            let mut stream = reader.into_inner();
            match answer {
                None => drop(stream),
                Some("") => tokio::time::sleep(Duration::from_secs(60)).await,
                Some(text) => {
                    stream.write_all(text.as_bytes()).await.unwrap();
                    let mut buf = [0u8; 5];
                    if stream.read_exact(&mut buf).await.is_ok() {
                        stream.write_all(&buf).await.unwrap();
                    }
                }
            }
        });
    }

    #[tokio::test]
    async fn handshake_then_the_stream_is_the_guest_connection() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.sock");
        muxer(&path, Some("OK 1073741824\n")).await;
        let mut stream = connect(&path, 52, Duration::from_secs(5)).await.unwrap();
        stream.write_all(b"hello").await.unwrap();
        let mut buf = [0u8; 5];
        stream.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"hello");
    }

    #[tokio::test]
    async fn a_closed_stream_means_nothing_listens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.sock");
        muxer(&path, None).await;
        let err = connect(&path, 52, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(matches!(err, VsockError::Refused { port: 52 }), "{err}");
    }

    #[tokio::test]
    async fn silence_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.sock");
        muxer(&path, Some("")).await;
        let err = connect(&path, 52, Duration::from_millis(200))
            .await
            .unwrap_err();
        assert!(matches!(err, VsockError::Timeout { .. }), "{err}");
    }

    #[tokio::test]
    async fn garbage_and_missing_sockets_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.sock");
        muxer(&path, Some("NOPE\n")).await;
        let err = connect(&path, 52, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "unexpected answer \"NOPE\" to a vsock connect to port 52"
        );
        let err = connect(&dir.path().join("missing"), 52, Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(matches!(err, VsockError::Connect { .. }), "{err}");
    }
}
