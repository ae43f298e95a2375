//! `vm cp` over the agent: an archive sent in `Chunk`s with at most
//! `COPY_WINDOW` unanswered (the guest answers a chunk when its unpacker
//! takes it, so a slow guest disk holds the sender back), and an archive
//! read back as a command's output. Waits on the guest are asked after
//! (`AgentClient::watched`) like a command's.

use std::collections::VecDeque;

use banger_proto::agent::{Op, ReplyBody, COPY_CHUNK, COPY_WINDOW};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use tokio::sync::mpsc;

use super::client::{refusal, AgentClient, AgentError, Replies};

impl AgentClient {
    /// Unpacks the archive arriving on `data` at `path` in the guest;
    /// returns once all of it is written (or the guest refused it). An
    /// error on `data` abandons the copy: the guest's unpacker fails.
    pub async fn copy_in(
        &self,
        path: String,
        keep_owners: bool,
        user: Option<String>,
        mut data: mpsc::Receiver<Result<Vec<u8>, String>>,
    ) -> Result<(), AgentError> {
        let mut copy = self.send(Op::CopyIn {
            path,
            keep_owners,
            user,
        })?;
        let target = copy.id();
        // A copy dropped midway (its client went away) is abandoned in
        // the guest too, not left waiting for chunks.
        let mut unfinished = Unfinished {
            client: self,
            target,
            armed: true,
        };
        let mut acks: VecDeque<Replies> = VecDeque::new();
        // Ends when the input ends, or the guest stopped taking chunks
        // (its answer to the copy says why).
        'input: loop {
            let bytes = tokio::select! {
                bytes = data.recv() => bytes,
                end = copy.next() => return settled(end),
            };
            let bytes = match bytes {
                None => break,
                Some(Ok(bytes)) => bytes,
                Some(Err(broke)) => {
                    unfinished.armed = false;
                    let _ = self.send(Op::Cancel { target })?;
                    let _ = copy.next().await;
                    return Err(AgentError::CopyFailed {
                        kind: "bad_archive".into(),
                        path: None,
                        message: format!("the archive broke off: {broke}"),
                    });
                }
            };
            for piece in bytes.chunks(COPY_CHUNK) {
                while acks.len() >= COPY_WINDOW {
                    let mut ack = acks.pop_front().expect("a full window");
                    let waited = self.watched(target, async {
                        tokio::select! {
                            taken = ack.next() => Ok(taken),
                            end = copy.next() => Err(end),
                        }
                    });
                    let taken = match waited.await {
                        Some(Ok(taken)) => taken?,
                        Some(Err(end)) => return settled(end),
                        // The agent no longer serves the copy.
                        None => match copy.arrived() {
                            Some(end) => return settled(Ok(end)),
                            None => ack.arrived().ok_or(AgentError::Lost)?,
                        },
                    };
                    if taken != ReplyBody::Ok {
                        break 'input;
                    }
                }
                acks.push_back(self.send(Op::Chunk {
                    target,
                    data: B64.encode(piece),
                })?);
            }
        }
        let _end = self.send(Op::Chunk {
            target,
            data: String::new(),
        })?;
        unfinished.armed = false;
        drop(acks);
        settled(self.next_watched(&mut copy).await)
    }

    /// Starts packing `path` in the guest: the archive comes as `Stdout`
    /// events of the returned replies, its end as `Exit`.
    pub fn copy_out(&self, path: String) -> Result<Replies, AgentError> {
        self.send(Op::CopyOut { path })
    }
}

/// Sends `Cancel` for a copy still taking chunks when it is dropped.
struct Unfinished<'a> {
    client: &'a AgentClient,
    target: u64,
    armed: bool,
}

impl Drop for Unfinished<'_> {
    fn drop(&mut self) {
        if self.armed {
            let _ = self.client.send(Op::Cancel {
                target: self.target,
            });
        }
    }
}

fn settled(end: Result<ReplyBody, AgentError>) -> Result<(), AgentError> {
    match end? {
        ReplyBody::Ok => Ok(()),
        other => Err(refusal(other)),
    }
}
