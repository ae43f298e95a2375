//! `GET /v1/events`: lifecycle events as they happen, one JSON object
//! per line, until the client goes away or the daemon shuts down. A
//! reader that falls more than `EVENTS_BUFFERED` events behind gets a
//! `lagged` event saying how many it missed, then the newest ones.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use banger_proto::event::Event;
use banger_proto::progress::NDJSON;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;

use super::AppState;

#[utoipa::path(get, path = "/v1/events", tag = "system",
    responses((status = 200, description = "Lifecycle events as they happen, one per line: VMs created, changing state and removed; images and snapshots created and removed. The stream ends when the daemon shuts down",
        body = Event, content_type = "application/x-ndjson")))]
pub async fn events(State(state): State<AppState>) -> Response {
    let mut events = state.events.subscribe();
    let mut shutdown = state.shutdown.subscribe();
    let publisher = state.events.clone();
    let (tx, rx) = mpsc::channel::<Vec<u8>>(16);
    tokio::spawn(async move {
        loop {
            let event = tokio::select! {
                received = events.recv() => match received {
                    Ok(event) => event,
                    Err(RecvError::Lagged(missed)) => publisher.lagged(missed),
                    Err(RecvError::Closed) => return,
                },
                _ = shutdown.wait_for(|stop| *stop) => return,
                // The client went away.
                _ = tx.closed() => return,
            };
            let Ok(mut line) = serde_json::to_vec(&event) else {
                continue;
            };
            line.push(b'\n');
            if tx.send(line).await.is_err() {
                return;
            }
        }
    });
    let body =
        tokio_stream::StreamExt::map(tokio_stream::wrappers::ReceiverStream::new(rx), |line| {
            Ok::<_, std::convert::Infallible>(line)
        });
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, NDJSON)],
        Body::from_stream(body),
    )
        .into_response()
}
