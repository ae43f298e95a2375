//! Who is calling: the peer credentials of the API connection, taken by
//! the kernel when the client connected (`SO_PEERCRED`), and the files a
//! request names, opened with that caller's rights (`banger_host::caller`).

use axum::extract::connect_info::{ConnectInfo, Connected};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::serve::IncomingStream;
use banger_host::caller::{Caller, CallerError, HeldFile};
use banger_proto::error::ErrorCode;
use tokio::net::UnixListener;

use super::error::HttpError;

/// The connection's peer, as the server records it per connection.
#[derive(Debug, Clone, Copy)]
pub struct Peer(Option<Caller>);

impl Connected<IncomingStream<'_, UnixListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, UnixListener>) -> Self {
        Peer(stream.io().peer_cred().ok().map(|cred| Caller {
            uid: cred.uid(),
            gid: cred.gid(),
        }))
    }
}

/// The caller of a request. A request whose peer is unknown is refused:
/// the daemon never guesses someone's rights.
#[derive(Debug, Clone, Copy)]
pub struct ApiCaller(pub Caller);

impl<S: Send + Sync> FromRequestParts<S> for ApiCaller {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, HttpError> {
        match parts.extensions.get::<ConnectInfo<Peer>>() {
            Some(ConnectInfo(Peer(Some(caller)))) => Ok(ApiCaller(*caller)),
            _ => Err(HttpError::new(
                ErrorCode::Internal,
                "cannot tell who is calling: the connection has no peer credentials",
                Some("call the daemon over its unix socket"),
            )),
        }
    }
}

/// A caller-file error as the API answers it: a file the caller cannot
/// open is not found (missing and unreadable look the same), one of the
/// wrong kind unprocessable, a target that exists a conflict, a file it
/// may not create forbidden (not found when its directory is missing).
pub fn refused(err: CallerError) -> HttpError {
    let code = match &err {
        CallerError::Open { .. } => ErrorCode::NotFound,
        CallerError::NotAFile { .. } | CallerError::NotADirectory { .. } => {
            ErrorCode::Unprocessable
        }
        CallerError::Exists { .. } => ErrorCode::Conflict,
        CallerError::Create { source, .. } | CallerError::Publish { source, .. } => {
            use std::io::ErrorKind as Io;
            match source.kind() {
                Io::NotFound => ErrorCode::NotFound,
                Io::AlreadyExists => ErrorCode::Conflict,
                Io::PermissionDenied | Io::ReadOnlyFilesystem => ErrorCode::Forbidden,
                _ => ErrorCode::Unprocessable,
            }
        }
    };
    HttpError::new(code, err.to_string(), Some(err.hint()))
}

/// Files opened for one request, kept open until its work ends.
#[derive(Debug, Default)]
pub struct Held(Vec<HeldFile>);

impl Held {
    /// Opens `path` (already checked by `host_path`) as `caller` and
    /// returns the path the daemon reads it through.
    pub fn open(
        &mut self,
        caller: Caller,
        path: std::path::PathBuf,
    ) -> Result<std::path::PathBuf, HttpError> {
        let held = caller.open_read(&path).map_err(refused)?;
        let through = held.path();
        self.0.push(held);
        Ok(through)
    }

    /// Each held path with the path the caller gave.
    pub fn shown(&self) -> Vec<(std::path::PathBuf, std::path::PathBuf)> {
        self.0
            .iter()
            .map(|held| (held.path(), held.shown().to_path_buf()))
            .collect()
    }
}
