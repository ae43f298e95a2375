//! A published TCP port: each accepted connection is relayed to the
//! guest's port both ways until either side closes, while it holds a
//! slot of the `limits`; one past them is closed at once.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use super::limits::RelayLimits;

/// How long a connection to the guest may take.
const CONNECT_WAIT: Duration = Duration::from_secs(5);

pub fn serve(
    listener: std::net::TcpListener,
    guest: SocketAddr,
    vm: String,
    limits: Arc<RelayLimits>,
) -> std::io::Result<JoinHandle<()>> {
    listener.set_nonblocking(true)?;
    let listener = TcpListener::from_std(listener)?;
    Ok(tokio::spawn(async move {
        // Relays end with the forward: they are this task's children.
        let mut relays = tokio::task::JoinSet::new();
        loop {
            let (mut client, _) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of descriptors, say: wait rather than spin.
                    tracing::debug!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            while relays.try_join_next().is_some() {}
            let Some(slot) = limits.take(&vm) else {
                drop(client);
                continue;
            };
            relays.spawn(async move {
                let _slot = slot;
                let connected = tokio::time::timeout(CONNECT_WAIT, TcpStream::connect(guest)).await;
                let Ok(Ok(mut upstream)) = connected else {
                    return;
                };
                let _ = client.set_nodelay(true);
                let _ = upstream.set_nodelay(true);
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            });
        }
    }))
}
