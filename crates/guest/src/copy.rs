//! `vm cp` in the guest: archives unpacked at a path (`CopyIn`, fed by
//! `Chunk` requests) and paths packed into archives (`CopyOut`), both
//! through `banger-copy` on a blocking thread. Chunks are answered when
//! the unpacker takes them, so a host keeps at most its `COPY_WINDOW` in
//! flight (the agent holds up to `COPY_SLOTS`); an archive going out waits for the host to
//! read it (the bounded data channel of `agent::serve`).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use banger_copy::{CopyError, Owner, UnpackOptions};
use banger_proto::agent::{Reply, ReplyBody, COPY_CHUNK, COPY_SLOTS};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use tokio::sync::mpsc;

/// An open `CopyIn`: where its chunks go (chunk id, bytes), and whether
/// the host abandoned it.
pub struct OpenCopy {
    chunks: mpsc::Sender<(u64, Vec<u8>)>,
    cancelled: Arc<AtomicBool>,
}

/// Open `CopyIn`s by request id.
pub type Copies = Arc<Mutex<HashMap<u64, OpenCopy>>>;

fn failed(err: &CopyError) -> ReplyBody {
    ReplyBody::CopyFailed {
        kind: err.kind().into(),
        path: err.path().map(str::to_string),
        message: err.to_string(),
    }
}

/// Starts unpacking at `path`; answers request `id` when done.
pub fn start_copy_in(
    id: u64,
    path: String,
    owner: Result<Owner, String>,
    copies: &Copies,
    tx: mpsc::UnboundedSender<Reply>,
) {
    let owner = match owner {
        Ok(owner) => owner,
        Err(message) => {
            let _ = tx.send(Reply {
                id,
                body: ReplyBody::Error { message },
            });
            return;
        }
    };
    let (chunks_tx, chunks) = mpsc::channel(COPY_SLOTS);
    let cancelled = Arc::new(AtomicBool::new(false));
    let open = OpenCopy {
        chunks: chunks_tx,
        cancelled: cancelled.clone(),
    };
    copies
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(id, open);
    let copies = copies.clone();
    tokio::task::spawn_blocking(move || {
        let reader = ChunkReader {
            chunks,
            acks: tx.clone(),
            cancelled,
            current: Vec::new(),
            at: 0,
        };
        let done = banger_copy::unpack(
            reader,
            &PathBuf::from(&path),
            UnpackOptions { owner, top: None },
        );
        copies.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
        let body = match done {
            Ok(_) => ReplyBody::Ok,
            Err(err) => failed(&err),
        };
        let _ = tx.send(Reply { id, body });
    });
}

/// Hands chunk `id` of copy `target` to its unpacker (an empty one ends
/// the archive). Runs in the request loop, so chunks keep their order.
pub fn chunk(id: u64, target: u64, data: &str, copies: &Copies) -> Option<ReplyBody> {
    let bytes = match B64.decode(data) {
        Ok(bytes) => bytes,
        Err(err) => {
            return Some(ReplyBody::Error {
                message: format!("chunk is not base64: {err}"),
            })
        }
    };
    let mut open = copies.lock().unwrap_or_else(|e| e.into_inner());
    if bytes.is_empty() {
        open.remove(&target);
        return Some(ReplyBody::Ok);
    }
    let Some(sender) = open.get(&target).map(|copy| &copy.chunks) else {
        return Some(ReplyBody::Error {
            message: format!("no open copy with id {target}"),
        });
    };
    match sender.try_send((id, bytes)) {
        // Answered by the unpacker when it takes the bytes.
        Ok(()) => None,
        Err(mpsc::error::TrySendError::Full(_)) => Some(ReplyBody::Error {
            message: format!("more than {COPY_SLOTS} chunks in flight for copy {target}"),
        }),
        Err(mpsc::error::TrySendError::Closed(_)) => Some(ReplyBody::Error {
            message: format!("copy {target} has ended"),
        }),
    }
}

/// Abandons copy `target`: its unpacker reads an error next.
pub fn cancel(target: u64, copies: &Copies) -> ReplyBody {
    let open = copies
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&target);
    match open {
        Some(copy) => {
            copy.cancelled.store(true, Ordering::SeqCst);
            ReplyBody::Ok
        }
        None => ReplyBody::Error {
            message: format!("no open copy with id {target}"),
        },
    }
}

/// The archive as the unpacker reads it; answers each chunk as taken.
struct ChunkReader {
    chunks: mpsc::Receiver<(u64, Vec<u8>)>,
    acks: mpsc::UnboundedSender<Reply>,
    cancelled: Arc<AtomicBool>,
    current: Vec<u8>,
    at: usize,
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.current.len() {
            match self.chunks.blocking_recv() {
                Some((id, bytes)) => {
                    let _ = self.acks.send(Reply {
                        id,
                        body: ReplyBody::Ok,
                    });
                    self.current = bytes;
                    self.at = 0;
                }
                None if self.cancelled.load(Ordering::SeqCst) => {
                    return Err(std::io::Error::other("the host abandoned the copy"))
                }
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len() - self.at);
        buf[..n].copy_from_slice(&self.current[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Packs `path` and sends it as request `id`'s output through `data`,
/// which waits for the host to read.
pub async fn copy_out(id: u64, path: String, data: mpsc::Sender<Reply>) {
    let (bytes_tx, mut bytes) = mpsc::channel::<Vec<u8>>(2);
    let packer = tokio::task::spawn_blocking(move || {
        let writer = ChunkWriter {
            out: bytes_tx,
            buffer: Vec::with_capacity(COPY_CHUNK),
        };
        banger_copy::pack(&PathBuf::from(&path), writer)
            .and_then(|mut w| w.flush().map_err(|e| CopyError::Io(path.clone(), e)))
    });
    while let Some(chunk) = bytes.recv().await {
        let body = ReplyBody::Stdout {
            data: B64.encode(chunk),
        };
        if data.send(Reply { id, body }).await.is_err() {
            return;
        }
    }
    let body = match packer.await {
        Ok(Ok(_)) => ReplyBody::Exit {
            code: Some(0),
            signal: None,
        },
        Ok(Err(err)) => failed(&err),
        Err(err) => ReplyBody::Error {
            message: format!("the packer failed: {err}"),
        },
    };
    let _ = data.send(Reply { id, body }).await;
}

struct ChunkWriter {
    out: mpsc::Sender<Vec<u8>>,
    buffer: Vec<u8>,
}

impl Write for ChunkWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = buf.len().min(COPY_CHUNK - self.buffer.len());
        self.buffer.extend_from_slice(&buf[..n]);
        if self.buffer.len() == COPY_CHUNK {
            self.flush()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let full = std::mem::replace(&mut self.buffer, Vec::with_capacity(COPY_CHUNK));
        self.out
            .blocking_send(full)
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the host went away"))
    }
}
