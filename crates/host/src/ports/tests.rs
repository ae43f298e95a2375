//! The relays over real loopback sockets: a TCP echo reached through a
//! forward, a UDP echo with two peers each getting their own replies, and
//! a host port another socket holds refused as in use.

use std::net::{Ipv4Addr, SocketAddr};

use banger_core::ports::{PortForward, Protocol};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{bind, tcp, udp, PortsError, Socket};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn forward(port: u16, protocol: Protocol) -> PortForward {
    PortForward {
        host_ip: Ipv4Addr::LOCALHOST,
        host_port: port,
        guest_port: 1,
        protocol,
    }
}

#[tokio::test]
async fn tcp_connections_reach_the_guest_port_both_ways() {
    let echo = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let guest = echo.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = echo.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = conn.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    let port = free_port();
    let Ok(Socket::Tcp(listener)) = bind(&forward(port, Protocol::Tcp)) else {
        panic!("bound");
    };
    let limits = std::sync::Arc::new(super::RelayLimits::with_total(64));
    let relay = tcp::serve(listener, guest, "vm".into(), limits).unwrap();
    let payload: Vec<u8> = (0..1_000_000u32).map(|i| i as u8).collect();
    let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let (mut r, mut w) = conn.split();
    let send = async {
        w.write_all(&payload).await.unwrap();
        w.shutdown().await.unwrap();
    };
    let mut back = Vec::new();
    let (_, read) = tokio::join!(send, r.read_to_end(&mut back));
    read.unwrap();
    assert_eq!(back, payload);
    // Taken while served; free again once the forward ends.
    assert!(matches!(
        bind(&forward(port, Protocol::Tcp)),
        Err(PortsError::InUse { .. })
    ));
    relay.abort();
    let _ = relay.await;
    assert!(bind(&forward(port, Protocol::Tcp)).is_ok());
}

#[tokio::test]
async fn udp_peers_get_their_own_replies() {
    let echo = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let guest = echo.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        while let Ok((n, from)) = echo.recv_from(&mut buf).await {
            let _ = echo.send_to(&buf[..n], from).await;
        }
    });
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let Ok(Socket::Udp(socket)) = bind(&forward(port, Protocol::Udp)) else {
        panic!("bound");
    };
    let relay = udp::serve(socket, guest).unwrap();
    let target: SocketAddr = ([127, 0, 0, 1], port).into();
    let a = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let b = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for _ in 0..3 {
        a.send_to(b"from a", target).await.unwrap();
        b.send_to(b"from b", target).await.unwrap();
        let mut buf = [0u8; 64];
        let wait = std::time::Duration::from_secs(5);
        let n = tokio::time::timeout(wait, a.recv(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&buf[..n], b"from a");
        let n = tokio::time::timeout(wait, b.recv(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&buf[..n], b"from b");
    }
    relay.abort();
}

#[test]
fn an_address_not_on_this_host_is_named() {
    let mut far = forward(free_port(), Protocol::Tcp);
    far.host_ip = Ipv4Addr::new(192, 0, 2, 1);
    assert!(matches!(bind(&far), Err(PortsError::NoSuchAddress(_))));
}
