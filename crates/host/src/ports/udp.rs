//! A published UDP port: each host peer gets its own socket connected to
//! the guest's port, so replies find their way back; a peer quiet for
//! `IDLE` is forgotten, and at most `MAX_PEERS` are kept.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

const IDLE: Duration = Duration::from_secs(60);
const MAX_PEERS: usize = 256;
const MAX_DATAGRAM: usize = 65_536;

pub fn serve(socket: std::net::UdpSocket, guest: SocketAddr) -> std::io::Result<JoinHandle<()>> {
    socket.set_nonblocking(true)?;
    let socket = Arc::new(UdpSocket::from_std(socket)?);
    Ok(tokio::spawn(async move {
        let peers: Arc<Mutex<HashMap<SocketAddr, Arc<UdpSocket>>>> = Arc::default();
        let mut sessions = tokio::task::JoinSet::new();
        let mut buffer = vec![0u8; MAX_DATAGRAM];
        loop {
            let Ok((n, peer)) = socket.recv_from(&mut buffer).await else {
                continue;
            };
            while sessions.try_join_next().is_some() {}
            let upstream = {
                let mut known = peers.lock().await;
                match known.get(&peer) {
                    Some(upstream) => upstream.clone(),
                    None if known.len() >= MAX_PEERS => continue,
                    None => {
                        let Ok(upstream) = UdpSocket::bind("0.0.0.0:0").await else {
                            continue;
                        };
                        if upstream.connect(guest).await.is_err() {
                            continue;
                        }
                        let upstream = Arc::new(upstream);
                        known.insert(peer, upstream.clone());
                        let (socket, peers, reply) =
                            (socket.clone(), peers.clone(), upstream.clone());
                        sessions.spawn(async move {
                            let mut buffer = vec![0u8; MAX_DATAGRAM];
                            while let Ok(Ok(n)) =
                                tokio::time::timeout(IDLE, reply.recv(&mut buffer)).await
                            {
                                let _ = socket.send_to(&buffer[..n], peer).await;
                            }
                            peers.lock().await.remove(&peer);
                        });
                        upstream
                    }
                }
            };
            let _ = upstream.send(&buffer[..n]).await;
        }
    }))
}
