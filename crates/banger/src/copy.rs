//! `banger vm cp SRC DST`: one side `VM:/path`, the other a host path.
//! The host side is packed or unpacked here, with the caller's own
//! rights (the daemon never touches host files for a copy); the archive
//! streams through the daemon to the guest agent, piece by piece, with
//! the bytes moved shown on a terminal.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use banger_copy::{CopyError, Owner, UnpackOptions};
use banger_proto::error::{ApiError, ErrorCode};
use http_body_util::BodyExt;
use tokio::sync::mpsc;

use crate::client::{Client, ClientError};
use crate::vm::path_segment;

/// The media type an archive is uploaded as (the API reads the bytes).
const UPLOAD: &str = "application/octet-stream";
/// Pieces of the archive between the packer and the connection.
const DEPTH: usize = 4;
const PIECE: usize = 256 * 1024;

/// One side of a copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Side {
    Host(PathBuf),
    Vm { vm: String, path: String },
}

impl Side {
    /// `VM:PATH` names a path in a VM (as `docker cp`); anything else,
    /// and anything starting with `/` or `.`, is a host path.
    pub fn parse(arg: &str) -> Side {
        match arg.split_once(':') {
            Some((vm, path)) if !vm.is_empty() && !vm.contains('/') && !arg.starts_with('.') => {
                Side::Vm {
                    vm: vm.to_string(),
                    path: path.to_string(),
                }
            }
            _ => Side::Host(PathBuf::from(arg)),
        }
    }
}

fn refused(code: ErrorCode, message: String, hint: &str) -> anyhow::Error {
    ClientError::Api(ApiError::new(code, message, Some(hint.to_string()))).into()
}

/// The host side's failure in the CLI's words.
fn host_error(err: CopyError) -> anyhow::Error {
    match err {
        CopyError::NotFound(path) => refused(
            ErrorCode::NotFound,
            format!("no such file on the host: {path}"),
            "check the path with `ls -la`",
        ),
        CopyError::NotADirectory(path) => refused(
            ErrorCode::Unprocessable,
            format!("not a directory on the host: {path}"),
            "copy into a directory, or name the new file",
        ),
        CopyError::DirectoryOntoFile(path) => refused(
            ErrorCode::Conflict,
            format!("{path} is a file on the host: a directory cannot replace it"),
            "copy to another path, or remove the file first",
        ),
        other => anyhow::anyhow!("on the host: {other}"),
    }
}

pub async fn run(client: &Client, src: &str, dst: &str, archive: bool) -> Result<()> {
    match (Side::parse(src), Side::parse(dst)) {
        (Side::Host(from), Side::Vm { vm, path }) => {
            copy_in(client, &from, &vm, &path, archive).await
        }
        (Side::Vm { vm, path }, Side::Host(to)) => copy_out(client, &vm, &path, &to, archive).await,
        _ => Err(refused(
            ErrorCode::InvalidInput,
            "vm cp copies between the host and a vm: one side is VM:/path, the other a host path"
                .into(),
            "like `banger vm cp ./site web:/srv` or `banger vm cp web:/var/log/syslog .`",
        )),
    }
}

async fn copy_in(client: &Client, from: &Path, vm: &str, path: &str, keep: bool) -> Result<()> {
    crate::client::checked::<banger_proto::rules::GuestPath, _>(path.to_string())?;
    // Refused here first: nothing is sent for a source that is not there.
    std::fs::symlink_metadata(from)
        .map_err(|_| host_error(CopyError::NotFound(from.display().to_string())))?;
    let url = format!(
        "/v1/vms/{}/files?path={}&keep_owners={keep}",
        path_segment(vm),
        path_segment(path)
    );
    let (tx, rx) = mpsc::channel::<std::io::Result<Vec<u8>>>(DEPTH);
    let progress = Progress::new("sent");
    let meter = progress.clone();
    let from_owned = from.to_path_buf();
    let packer = tokio::task::spawn_blocking(move || {
        let writer = PieceWriter {
            out: tx.clone(),
            buffer: Vec::with_capacity(PIECE),
            meter,
        };
        let packed = banger_copy::pack(&from_owned, writer).and_then(|mut w| {
            w.flush()
                .map_err(|e| CopyError::Io(from_owned.display().to_string(), e))
        });
        if let Err(err) = &packed {
            // Breaks the upload off: the guest must not take a cut
            // archive for a whole one.
            let _ = tx.blocking_send(Err(std::io::Error::other(err.to_string())));
        }
        packed
    });
    let sent = client.put_stream(&url, UPLOAD, rx).await;
    let packed = packer.await.context("the packer failed")?;
    progress.done();
    // The daemon's answer first: a packer cut off by it only broke a pipe.
    sent?;
    packed.map_err(host_error)?;
    Ok(())
}

async fn copy_out(client: &Client, vm: &str, path: &str, to: &Path, keep: bool) -> Result<()> {
    crate::client::checked::<banger_proto::rules::GuestPath, _>(path.to_string())?;
    let owner = if keep { Owner::Keep } else { Owner::Unpacker };
    // The guest may send only what was asked for, under its own name.
    let top = banger_copy::top_name(Path::new(path)).ok_or_else(|| {
        refused(
            ErrorCode::Unprocessable,
            format!("{vm}:{path} has no name to copy it by"),
            "name a file or directory in the vm",
        )
    })?;
    // Refused here first: nothing is fetched for a place that is not there.
    banger_copy::Landing::decide(to).map_err(host_error)?;
    let url = format!(
        "/v1/vms/{}/files?path={}",
        path_segment(vm),
        path_segment(path)
    );
    let mut body = client.get_body(&url).await?;
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(DEPTH);
    let to_owned = to.to_path_buf();
    let unpacker = tokio::task::spawn_blocking(move || {
        let reader = PieceReader {
            pieces: rx,
            current: Vec::new(),
            at: 0,
        };
        banger_copy::unpack(
            reader,
            &to_owned,
            UnpackOptions {
                owner,
                top: Some(top),
            },
        )
    });
    let progress = Progress::new("received");
    let mut broke = None;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Some(data) = frame.data_ref() {
                    progress.add(data.len() as u64);
                    let (piece, sender) = (data.to_vec(), tx.clone());
                    let taken = tokio::task::spawn_blocking(move || sender.send(piece)).await;
                    if !matches!(taken, Ok(Ok(()))) {
                        break;
                    }
                }
            }
            Err(err) => {
                broke = Some(err.to_string());
                break;
            }
        }
    }
    drop(tx);
    progress.done();
    let unpacked = unpacker.await.context("the unpacker failed")?;
    if let Some(reason) = broke {
        anyhow::bail!(
            "the copy from {vm}:{path} broke off ({reason}); what arrived is in {}",
            to.display()
        );
    }
    unpacked.map_err(|err| match err {
        CopyError::BadArchive(why) => refused(
            ErrorCode::Upstream,
            format!("refused what {vm} sent for {path}: {why}"),
            "the vm's side of the copy sent what was not asked for: nothing past the refused entry was written; treat the vm as untrusted",
        ),
        err => host_error(err),
    })?;
    Ok(())
}

/// The packer's output, in pieces, to the connection.
struct PieceWriter {
    out: mpsc::Sender<std::io::Result<Vec<u8>>>,
    buffer: Vec<u8>,
    meter: Progress,
}

impl Write for PieceWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = buf.len().min(PIECE - self.buffer.len());
        self.buffer.extend_from_slice(&buf[..n]);
        if self.buffer.len() == PIECE {
            self.flush()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let piece = std::mem::replace(&mut self.buffer, Vec::with_capacity(PIECE));
        self.meter.add(piece.len() as u64);
        self.out.blocking_send(Ok(piece)).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::BrokenPipe, "bangerd stopped reading")
        })
    }
}

/// The connection's pieces, as the unpacker reads them.
struct PieceReader {
    pieces: std::sync::mpsc::Receiver<Vec<u8>>,
    current: Vec<u8>,
    at: usize,
}

impl Read for PieceReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.current.len() {
            match self.pieces.recv() {
                Ok(piece) => {
                    self.current = piece;
                    self.at = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len() - self.at);
        buf[..n].copy_from_slice(&self.current[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Bytes moved, shown on stderr when it is a terminal.
#[derive(Clone)]
struct Progress {
    bar: Option<indicatif::ProgressBar>,
}

impl Progress {
    fn new(verb: &'static str) -> Self {
        use std::io::IsTerminal;
        let shown = std::io::stderr().is_terminal() && !crate::output::quiet();
        let bar = shown.then(|| {
            let bar = indicatif::ProgressBar::new_spinner();
            let style = indicatif::ProgressStyle::with_template(&format!(
                "{{spinner}} {verb} {{bytes}} ({{bytes_per_sec}})"
            ))
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner());
            bar.set_style(style);
            bar.enable_steady_tick(std::time::Duration::from_millis(200));
            bar
        });
        Progress { bar }
    }

    fn add(&self, bytes: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(bytes);
        }
    }

    fn done(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Side;
    use std::path::PathBuf;

    #[test]
    fn sides() {
        let vm = |vm: &str, path: &str| Side::Vm {
            vm: vm.into(),
            path: path.into(),
        };
        assert_eq!(Side::parse("web:/etc/x"), vm("web", "/etc/x"));
        assert_eq!(Side::parse("web:rel"), vm("web", "rel"));
        assert_eq!(Side::parse("/a:b"), Side::Host(PathBuf::from("/a:b")));
        assert_eq!(Side::parse("./a:b"), Side::Host(PathBuf::from("./a:b")));
        assert_eq!(Side::parse("dir/a:b"), Side::Host(PathBuf::from("dir/a:b")));
        assert_eq!(Side::parse("file"), Side::Host(PathBuf::from("file")));
    }
}
