//! The API client: HTTP/1.1 over the daemon's unix socket.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use banger_proto::error::ApiError;
use banger_proto::progress::{ProgressEvent, NDJSON};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Bytes, Frame};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::net::UnixStream;

/// A failure the daemon reported, or the daemon being unreachable.
#[derive(Debug)]
pub enum ClientError {
    NotRunning {
        socket: PathBuf,
        reason: String,
    },
    Api(ApiError),
    /// The daemon went away while it answered (killed, crashed).
    WentAway {
        path: String,
        reason: String,
    },
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::NotRunning { socket, reason } => {
                write!(
                    f,
                    "bangerd is not running at {} ({reason})",
                    socket.display()
                )
            }
            ClientError::Api(err) => write!(f, "{}", err.error.message),
            ClientError::WentAway { path, reason } => {
                write!(f, "bangerd went away while answering {path} ({reason})")
            }
        }
    }
}

impl std::error::Error for ClientError {}

/// The longest line a streamed answer may hold.
const MAX_LINE: usize = 1 << 20;

pub struct Client {
    socket: PathBuf,
}

impl Client {
    pub fn new(socket: PathBuf) -> Self {
        Client { socket }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.call(Method::GET, path, None::<&()>).await
    }

    pub async fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T> {
        self.call(Method::POST, path, Some(body)).await
    }

    pub async fn patch<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T> {
        self.call(Method::PATCH, path, Some(body)).await
    }

    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.call(Method::DELETE, path, None::<&()>).await
    }

    /// POSTs a long operation asking for a progress stream; hands every
    /// event to `on_event` and returns the final one (`image` or `error`
    /// turned into an `Err`). A daemon that refuses the request up front
    /// answers with a plain error body, handled like any call.
    pub async fn post_stream<B: Serialize>(
        &self,
        path: &str,
        body: &B,
        mut on_event: impl FnMut(&ProgressEvent),
    ) -> Result<ProgressEvent> {
        let mut last: Option<Result<ProgressEvent>> = None;
        self.post_lines(path, body, |line| {
            let event: ProgressEvent = serde_json::from_slice(line)
                .with_context(|| format!("unexpected progress line from bangerd to {path}"))?;
            match event {
                ProgressEvent::Error { error, .. } => {
                    last = Some(Err(ClientError::Api(error).into()));
                    Ok(false)
                }
                ProgressEvent::Image { .. } | ProgressEvent::Vm { .. } => {
                    last = Some(Ok(event));
                    Ok(false)
                }
                other => {
                    on_event(&other);
                    Ok(true)
                }
            }
        })
        .await?;
        last.unwrap_or_else(|| {
            Err(ClientError::WentAway {
                path: path.to_string(),
                reason: "the stream ended without a result".into(),
            }
            .into())
        })
    }

    /// POSTs and hands each line of a streamed answer to `on_line`
    /// (which returns false to stop reading).
    pub async fn post_lines<B: Serialize>(
        &self,
        path: &str,
        body: &B,
        on_line: impl FnMut(&[u8]) -> Result<bool>,
    ) -> Result<()> {
        self.lines(Method::POST, path, Some(body), on_line).await
    }

    /// GETs and hands each line of a streamed answer to `on_line`
    /// (`/v1/events`), until the daemon ends it or `on_line` says stop.
    pub async fn get_lines(
        &self,
        path: &str,
        on_line: impl FnMut(&[u8]) -> Result<bool>,
    ) -> Result<()> {
        self.lines(Method::GET, path, None::<&()>, on_line).await
    }

    async fn lines<B: Serialize>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
        mut on_line: impl FnMut(&[u8]) -> Result<bool>,
    ) -> Result<()> {
        let response = self.send(method, path, body, true).await?;
        let status = response.status();
        if !status.is_success() {
            let bytes = response.into_body().collect().await?.to_bytes();
            return Err(error_answer(status, &bytes, path));
        }
        let mut body = response.into_body();
        let mut buffer: Vec<u8> = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| ClientError::WentAway {
                path: path.to_string(),
                reason: e.to_string(),
            })?;
            let Some(data) = frame.data_ref() else {
                continue;
            };
            buffer.extend_from_slice(data);
            while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buffer.drain(..=end).collect();
                if !on_line(&line)? {
                    return Ok(());
                }
            }
            if buffer.len() > MAX_LINE {
                anyhow::bail!("bangerd sent {path} a line over {MAX_LINE} bytes");
            }
        }
        Ok(())
    }

    /// GETs and hands the answer's bytes to `on_bytes` as they arrive.
    pub async fn get_stream(&self, path: &str, mut on_bytes: impl FnMut(&[u8])) -> Result<()> {
        let response = self.send(Method::GET, path, None::<&()>, false).await?;
        let status = response.status();
        if !status.is_success() {
            let bytes = response.into_body().collect().await?.to_bytes();
            return Err(error_answer(status, &bytes, path));
        }
        let mut body = response.into_body();
        while let Some(frame) = body.frame().await {
            let frame = frame.context("bangerd dropped the stream")?;
            if let Some(data) = frame.data_ref() {
                on_bytes(data);
            }
        }
        Ok(())
    }

    /// GETs a stream and returns its body once the answer is a success.
    pub async fn get_body(&self, path: &str) -> Result<hyper::body::Incoming> {
        let response = self.send(Method::GET, path, None::<&()>, false).await?;
        let status = response.status();
        if !status.is_success() {
            let bytes = response.into_body().collect().await?.to_bytes();
            return Err(error_answer(status, &bytes, path));
        }
        Ok(response.into_body())
    }

    /// PUTs the bytes arriving on `body` as they come (`content_type`),
    /// and returns once the daemon answered; an error on `body` breaks
    /// the upload off.
    pub async fn put_stream(
        &self,
        path: &str,
        content_type: &str,
        body: tokio::sync::mpsc::Receiver<std::io::Result<Vec<u8>>>,
    ) -> Result<()> {
        use tokio_stream::StreamExt;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(self.connect().await?)
            .await
            .context("cannot talk to bangerd")?;
        tokio::spawn(conn);
        let frames = tokio_stream::wrappers::ReceiverStream::new(body)
            .map(|piece| piece.map(|bytes| Frame::data(Bytes::from(bytes))));
        let request = Request::builder()
            .method(Method::PUT)
            .uri(format!("http://bangerd{path}"))
            .header("host", "bangerd")
            .header("content-type", content_type)
            .header("accept", "application/json")
            .body(StreamBody::new(frames))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| ClientError::WentAway {
                path: path.to_string(),
                reason: e.to_string(),
            })?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let bytes = response.into_body().collect().await?.to_bytes();
        Err(error_answer(status, &bytes, path))
    }

    async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T> {
        let response = self.send(method, path, body, false).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        if status.is_success() {
            return serde_json::from_slice(&body)
                .with_context(|| format!("unexpected answer from bangerd to {path}"));
        }
        Err(error_answer(status, &body, path))
    }

    /// POSTs asking to turn the connection into a stream of its own
    /// (`Upgrade: tcp`); returns it once the daemon agreed.
    pub async fn upgrade(&self, path: &str) -> Result<hyper::upgrade::Upgraded> {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(self.connect().await?)
            .await
            .context("cannot talk to bangerd")?;
        tokio::spawn(conn.with_upgrades());
        let request = Request::builder()
            .method(Method::POST)
            .uri(format!("http://bangerd{path}"))
            .header("host", "bangerd")
            .header("connection", "Upgrade")
            .header("upgrade", "tcp")
            .body(Full::new(Bytes::new()))?;
        let response = sender
            .send_request(request)
            .await
            .context("bangerd dropped the request")?;
        let status = response.status();
        if status != hyper::StatusCode::SWITCHING_PROTOCOLS {
            let bytes = response.into_body().collect().await?.to_bytes();
            return Err(error_answer(status, &bytes, path));
        }
        hyper::upgrade::on(response)
            .await
            .context("bangerd did not hand the connection over")
    }

    async fn connect(&self) -> Result<TokioIo<UnixStream>> {
        let stream_conn =
            UnixStream::connect(&self.socket)
                .await
                .map_err(|e| ClientError::NotRunning {
                    socket: self.socket.clone(),
                    reason: match e.kind() {
                        std::io::ErrorKind::NotFound => "no socket".to_string(),
                        std::io::ErrorKind::ConnectionRefused => {
                            "nothing listens on the socket".to_string()
                        }
                        kind => kind.to_string().to_lowercase(),
                    },
                })?;
        Ok(TokioIo::new(stream_conn))
    }

    async fn send<B: Serialize>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
        stream: bool,
    ) -> Result<hyper::Response<hyper::body::Incoming>> {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(self.connect().await?)
            .await
            .context("cannot talk to bangerd")?;
        tokio::spawn(conn);
        let bytes = match body {
            Some(body) => serde_json::to_vec(body)?,
            None => Vec::new(),
        };
        let request = Request::builder()
            .method(method)
            .uri(format!("http://bangerd{path}"))
            .header("host", "bangerd")
            .header("content-type", "application/json")
            .header("accept", if stream { NDJSON } else { "application/json" })
            .body(Full::new(Bytes::from(bytes)))?;
        sender
            .send_request(request)
            .await
            .context("bangerd dropped the request")
    }
}

/// The error a failed call answered with.
fn error_answer(status: hyper::StatusCode, body: &[u8], path: &str) -> anyhow::Error {
    match serde_json::from_slice::<ApiError>(body) {
        Ok(err) => ClientError::Api(err).into(),
        Err(_) => anyhow::anyhow!(
            "bangerd answered {} to {path}",
            status
                .canonical_reason()
                .map(str::to_lowercase)
                .unwrap_or_else(|| status.to_string())
        ),
    }
}

/// Bad usage or input found by the CLI itself: reported as the daemon
/// reports its own (one line, the hint, exit code 2).
pub fn bad_input(message: impl Into<String>, hint: &str) -> anyhow::Error {
    ClientError::Api(ApiError::new(
        banger_proto::error::ErrorCode::InvalidInput,
        message,
        Some(hint.to_string()),
    ))
    .into()
}

/// A value the API checks by its type, checked here first so that bad
/// input is refused as the daemon would (same words, exit code 2) without
/// a round trip.
pub fn checked<T, V>(value: V) -> anyhow::Result<T>
where
    T: TryFrom<V, Error = banger_proto::rules::RuleError>,
{
    T::try_from(value)
        .map_err(|err| bad_input(err.to_string(), "see --help for the accepted values"))
}
