//! A published TCP port: each accepted connection is relayed to the
//! guest's port both ways until either side closes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

/// Connections one forward relays at once; more wait to be accepted.
const MAX_CONNECTIONS: usize = 1024;
/// How long a connection to the guest may take.
const CONNECT_WAIT: Duration = Duration::from_secs(5);

pub fn serve(
    listener: std::net::TcpListener,
    guest: SocketAddr,
) -> std::io::Result<JoinHandle<()>> {
    listener.set_nonblocking(true)?;
    let listener = TcpListener::from_std(listener)?;
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    Ok(tokio::spawn(async move {
        // Relays end with the forward: they are this task's children.
        let mut relays = tokio::task::JoinSet::new();
        loop {
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            let (mut client, _) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(err) => {
                    tracing::debug!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            while relays.try_join_next().is_some() {}
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
