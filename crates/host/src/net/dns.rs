//! The DNS server for `NAME.vm`: answers A queries for VM names and PTR
//! queries for their addresses from an in-memory table (set when a VM
//! starts, removed when it stops), and forwards everything else to the
//! upstream servers unchanged. UDP, on the bridge address (for guests) and
//! on a loopback address (for the host). Messages are parsed and built
//! with hickory-proto; the loop itself is a tokio UDP socket.
//!
//! Only the bridge's network and the host are served (a LAN neighbour
//! gets nothing, even if a packet gets past the firewall), and only the
//! host and guests with NAT get other names forwarded: a guest without
//! NAT is answered REFUSED, so recursion is no way out of an isolated VM.
//!
//! Guests are not trusted: banger's own names are answered inline (no
//! task, no socket), and at most `MAX_FORWARDS` forwarded queries are in
//! flight (each holds a socket for up to the upstream timeout); queries
//! beyond that are dropped, as a busy resolver does, so a flooding guest
//! costs bounded memory and descriptors and other guests' names still
//! resolve. A forwarded query's socket is connected to its upstream (the
//! kernel drops datagrams from anyone else) and only a response with the
//! query's id and question is taken.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, PTR};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::net::UdpSocket;

/// The zone banger answers for.
pub const ZONE: &str = "vm";
/// TTL of banger's answers: short, VMs come and go.
const TTL: u32 = 5;
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(3);
/// Forwarded queries in flight at once.
pub const MAX_FORWARDS: usize = 64;

/// Who asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Client {
    /// The host, or a guest with NAT: every name.
    Host,
    /// A guest without NAT: banger's names only (other names REFUSED).
    Isolated,
    /// Anyone else (a LAN neighbour): no answer at all.
    Stranger,
}

/// What to do with one query.
enum Handling {
    /// Answered here (None: garbage, dropped).
    Local(Option<Vec<u8>>),
    /// For the upstream servers.
    Forward(Message),
}

#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("cannot listen for dns on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

#[derive(Debug)]
pub struct DnsServer {
    records: RwLock<HashMap<String, Ipv4Addr>>,
    upstream: Vec<SocketAddr>,
    /// Who is served at all: the bridge's network (and loopback).
    clients: ipnet::Ipv4Net,
    /// Guests whose other names are forwarded (those with NAT); the rest
    /// get banger's names only.
    recursive: RwLock<std::collections::HashSet<Ipv4Addr>>,
    /// Queries answered or forwarded (garbage not counted).
    queries: std::sync::atomic::AtomicU64,
}

impl DnsServer {
    /// A server for the guests of `clients` (the bridge's network) and
    /// the host (loopback, and the bridge's own address), forwarding
    /// other names to `upstream` for the host and for guests with NAT.
    pub fn new(upstream: Vec<SocketAddr>, clients: ipnet::Ipv4Net) -> Arc<DnsServer> {
        Arc::new(DnsServer {
            records: RwLock::default(),
            upstream,
            clients,
            recursive: RwLock::default(),
            queries: Default::default(),
        })
    }

    /// The guests whose other names are forwarded: those with NAT (a
    /// guest without it has no way out, and recursion would be one).
    pub fn set_recursive(&self, guests: impl IntoIterator<Item = Ipv4Addr>) {
        *self.recursive.write().unwrap_or_else(|e| e.into_inner()) = guests.into_iter().collect();
    }

    /// Who `peer` is to this server.
    fn client(&self, peer: std::net::IpAddr) -> Client {
        let std::net::IpAddr::V4(ip) = peer else {
            return if peer.is_loopback() {
                Client::Host
            } else {
                Client::Stranger
            };
        };
        if ip.is_loopback() || ip == self.clients.addr() {
            Client::Host
        } else if !self.clients.contains(&ip) {
            Client::Stranger
        } else if self
            .recursive
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&ip)
        {
            Client::Host
        } else {
            Client::Isolated
        }
    }

    /// Queries served since start (`/metrics`).
    pub fn queries(&self) -> u64 {
        self.queries.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// `NAME.vm` now resolves to `ip`.
    pub fn set(&self, name: &str, ip: Ipv4Addr) {
        self.records
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_ascii_lowercase(), ip);
    }

    pub fn remove(&self, name: &str) {
        self.records
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&name.to_ascii_lowercase());
    }

    pub fn records(&self) -> HashMap<String, Ipv4Addr> {
        self.records
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Binds `addr` and answers queries there until the task is dropped.
    pub async fn listen(
        self: &Arc<Self>,
        addr: SocketAddr,
    ) -> Result<tokio::task::JoinHandle<()>, DnsError> {
        let socket = UdpSocket::bind(addr)
            .await
            .map_err(|source| DnsError::Bind { addr, source })?;
        let server = self.clone();
        let forwards = Arc::new(tokio::sync::Semaphore::new(MAX_FORWARDS));
        Ok(tokio::spawn(async move {
            let socket = Arc::new(socket);
            let mut buffer = vec![0u8; 4096];
            let mut dropped: u64 = 0;
            loop {
                let Ok((n, peer)) = socket.recv_from(&mut buffer).await else {
                    continue;
                };
                let query = &buffer[..n];
                let request = match server.handle(peer.ip(), query) {
                    Handling::Local(Some(answer)) => {
                        let _ = socket.send_to(&answer, peer).await;
                        continue;
                    }
                    Handling::Local(None) => continue,
                    Handling::Forward(request) => request,
                };
                let Ok(permit) = forwards.clone().try_acquire_owned() else {
                    dropped += 1;
                    if dropped.is_power_of_two() {
                        tracing::warn!(
                            dropped,
                            "dns: too many forwarded queries in flight, dropping"
                        );
                    }
                    continue;
                };
                let query = query.to_vec();
                let (server, socket) = (server.clone(), socket.clone());
                tokio::spawn(async move {
                    if let Some(answer) = server.forward(&request, &query).await {
                        let _ = socket.send_to(&answer, peer).await;
                    }
                    drop(permit);
                });
            }
        }))
    }

    /// The reply to one query message from `peer` (None for garbage and
    /// strangers, which are dropped).
    pub async fn answer(&self, peer: std::net::IpAddr, query: &[u8]) -> Option<Vec<u8>> {
        let handling = self.handle(peer, query);
        if !matches!(handling, Handling::Local(None)) {
            self.queries
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        match handling {
            Handling::Local(answer) => answer,
            Handling::Forward(request) => self.forward(&request, query).await,
        }
    }

    /// Answers banger's own names here; the rest is for the upstreams,
    /// when the client may recurse.
    fn handle(&self, peer: std::net::IpAddr, query: &[u8]) -> Handling {
        let client = self.client(peer);
        if client == Client::Stranger {
            return Handling::Local(None);
        }
        let Ok(request) = Message::from_vec(query) else {
            return Handling::Local(None);
        };
        Handling::Local(match self.local(&request) {
            Ok(answer) => answer,
            Err(()) if client == Client::Isolated => reply(&request, ResponseCode::Refused, vec![]),
            Err(()) => return Handling::Forward(request),
        })
    }

    /// The answer to a query about banger's names; `Err` for other names.
    fn local(&self, request: &Message) -> Result<Option<Vec<u8>>, ()> {
        if request.message_type() != MessageType::Query || request.op_code() != OpCode::Query {
            return Ok(reply(request, ResponseCode::NotImp, vec![]));
        }
        let Some(question) = request.queries().first().cloned() else {
            return Ok(None);
        };
        let name = question.name().to_lowercase();
        if let Some(vm) = vm_name(&name) {
            let found = self
                .records
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .get(&vm)
                .copied();
            return Ok(match (found, question.query_type()) {
                (None, _) => reply(request, ResponseCode::NXDomain, vec![]),
                (Some(ip), RecordType::A | RecordType::ANY) => reply(
                    request,
                    ResponseCode::NoError,
                    vec![Record::from_rdata(name.clone(), TTL, RData::A(A(ip)))],
                ),
                // The name exists, but has no record of that type.
                (Some(_), _) => reply(request, ResponseCode::NoError, vec![]),
            });
        }
        if question.query_type() == RecordType::PTR {
            if let Some(ip) = reverse_ip(&name) {
                let records = self.records.read().unwrap_or_else(|e| e.into_inner());
                if let Some((vm, _)) = records.iter().find(|(_, a)| **a == ip) {
                    let Ok(target) = Name::from_ascii(format!("{vm}.{ZONE}.")) else {
                        return Ok(None);
                    };
                    return Ok(reply(
                        request,
                        ResponseCode::NoError,
                        vec![Record::from_rdata(
                            name.clone(),
                            TTL,
                            RData::PTR(PTR(target)),
                        )],
                    ));
                }
            }
        }
        Err(())
    }

    async fn forward(&self, request: &Message, query: &[u8]) -> Option<Vec<u8>> {
        for upstream in &self.upstream {
            let bind: SocketAddr = if upstream.is_ipv4() {
                "0.0.0.0:0".parse().ok()?
            } else {
                "[::]:0".parse().ok()?
            };
            let Ok(socket) = UdpSocket::bind(bind).await else {
                continue;
            };
            // Connected: the kernel drops datagrams from anyone else.
            if socket.connect(upstream).await.is_err() || socket.send(query).await.is_err() {
                continue;
            }
            let deadline = tokio::time::Instant::now() + UPSTREAM_TIMEOUT;
            let mut buffer = vec![0u8; 4096];
            while let Ok(Ok(n)) = tokio::time::timeout_at(deadline, socket.recv(&mut buffer)).await
            {
                if answers(request, &buffer[..n]) {
                    return Some(buffer[..n].to_vec());
                }
            }
        }
        reply(request, ResponseCode::ServFail, vec![])
    }
}

/// Whether `bytes` is a response to `request`: its id and its question.
fn answers(request: &Message, bytes: &[u8]) -> bool {
    match Message::from_vec(bytes) {
        Ok(response) => {
            response.message_type() == MessageType::Response
                && response.id() == request.id()
                && response.queries() == request.queries()
        }
        Err(_) => false,
    }
}

/// `web` for `web.vm.`; None outside the zone.
fn vm_name(name: &Name) -> Option<String> {
    let text = name.to_ascii();
    let text = text.trim_end_matches('.');
    let label = text.strip_suffix(&format!(".{ZONE}"))?;
    (!label.is_empty() && !label.contains('.')).then(|| label.to_string())
}

/// `5.0.29.172.in-addr.arpa.` -> 172.29.0.5.
fn reverse_ip(name: &Name) -> Option<Ipv4Addr> {
    let text = name.to_ascii();
    let digits = text.trim_end_matches('.').strip_suffix(".in-addr.arpa")?;
    let mut octets: Vec<u8> = digits
        .split('.')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    if octets.len() != 4 {
        return None;
    }
    octets.reverse();
    Some(Ipv4Addr::new(octets[0], octets[1], octets[2], octets[3]))
}

fn reply(request: &Message, code: ResponseCode, answers: Vec<Record>) -> Option<Vec<u8>> {
    let mut response = Message::new();
    response
        .set_id(request.id())
        .set_message_type(MessageType::Response)
        .set_op_code(request.op_code())
        .set_recursion_desired(request.recursion_desired())
        .set_recursion_available(true)
        .set_authoritative(code != ResponseCode::ServFail)
        .set_response_code(code);
    response.add_queries(request.queries().to_vec());
    response.add_answers(answers);
    response.to_vec().ok()
}

/// Upstream servers from a resolv.conf text, leaving out `skip` (banger's
/// own addresses, so it never forwards to itself).
pub fn upstream_from_resolv_conf(text: &str, skip: &[Ipv4Addr]) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|a| a.trim().parse::<std::net::IpAddr>().ok())
        .filter(|ip| match ip {
            std::net::IpAddr::V4(v4) => !skip.contains(v4),
            _ => true,
        })
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

#[cfg(test)]
mod tests {
    use hickory_proto::op::Query;

    use super::*;

    const HOST: std::net::IpAddr = std::net::IpAddr::V4(Ipv4Addr::LOCALHOST);

    fn bridge() -> ipnet::Ipv4Net {
        "172.29.0.1/24".parse().unwrap()
    }

    fn query(name: &str, kind: RecordType) -> Vec<u8> {
        let mut message = Message::new();
        message
            .set_id(77)
            .set_message_type(MessageType::Query)
            .set_op_code(OpCode::Query)
            .set_recursion_desired(true);
        message.add_query(Query::query(Name::from_ascii(name).unwrap(), kind));
        message.to_vec().unwrap()
    }

    async fn ask(server: &DnsServer, name: &str, kind: RecordType) -> Message {
        Message::from_vec(&server.answer(HOST, &query(name, kind)).await.unwrap()).unwrap()
    }

    #[tokio::test]
    async fn answers_vm_names_and_their_addresses() {
        let server = DnsServer::new(vec![], bridge());
        server.set("Web", "172.29.0.5".parse().unwrap());
        let a = ask(&server, "web.vm.", RecordType::A).await;
        assert_eq!(a.id(), 77);
        assert_eq!(a.response_code(), ResponseCode::NoError);
        assert_eq!(
            a.answers()[0].data(),
            Some(&RData::A(A("172.29.0.5".parse().unwrap())))
        );
        let ptr = ask(&server, "5.0.29.172.in-addr.arpa.", RecordType::PTR).await;
        assert_eq!(
            ptr.answers()[0].data(),
            Some(&RData::PTR(PTR(Name::from_ascii("web.vm.").unwrap())))
        );
        let aaaa = ask(&server, "web.vm.", RecordType::AAAA).await;
        assert_eq!(
            (aaaa.response_code(), aaaa.answers().len()),
            (ResponseCode::NoError, 0)
        );
        let missing = ask(&server, "db.vm.", RecordType::A).await;
        assert_eq!(missing.response_code(), ResponseCode::NXDomain);
        server.remove("web");
        let gone = ask(&server, "web.vm.", RecordType::A).await;
        assert_eq!(gone.response_code(), ResponseCode::NXDomain);
    }

    #[tokio::test]
    async fn other_names_go_upstream_or_fail_cleanly() {
        let server = DnsServer::new(vec![], bridge());
        let out = ask(&server, "example.com.", RecordType::A).await;
        assert_eq!(out.response_code(), ResponseCode::ServFail);
        assert!(server.answer(HOST, b"not dns").await.is_none());
    }

    /// A stand-in upstream resolver on loopback: answers every A query
    /// with 192.0.2.7, keeping the query's id.
    async fn stub_upstream() -> SocketAddr {
        stub_upstream_forging(false).await
    }

    /// As `stub_upstream`; with `forge`, each answer is preceded by one
    /// with another id and 198.51.100.66 (what a spoofer races to send).
    async fn stub_upstream_forging(forge: bool) -> SocketAddr {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = [0u8; 512];
            while let Ok((len, from)) = socket.recv_from(&mut buf).await {
                let query = Message::from_vec(&buf[..len]).unwrap();
                if forge {
                    let mut forged = Message::new();
                    forged
                        .set_id(query.id().wrapping_add(1))
                        .set_message_type(MessageType::Response)
                        .set_op_code(OpCode::Query);
                    forged.add_queries(query.queries().to_vec());
                    forged.add_answer(Record::from_rdata(
                        query.queries()[0].name().clone(),
                        60,
                        RData::A(A("198.51.100.66".parse().unwrap())),
                    ));
                    socket
                        .send_to(&forged.to_vec().unwrap(), from)
                        .await
                        .unwrap();
                }
                let mut reply = Message::new();
                reply
                    .set_id(query.id())
                    .set_message_type(MessageType::Response)
                    .set_op_code(OpCode::Query)
                    .set_response_code(ResponseCode::NoError);
                reply.add_queries(query.queries().to_vec());
                let name = query.queries()[0].name().clone();
                reply.add_answer(Record::from_rdata(
                    name,
                    60,
                    RData::A(A("192.0.2.7".parse().unwrap())),
                ));
                socket
                    .send_to(&reply.to_vec().unwrap(), from)
                    .await
                    .unwrap();
            }
        });
        addr
    }

    #[tokio::test]
    async fn other_names_are_forwarded_to_the_upstream_and_back() {
        let upstream = stub_upstream().await;
        let server = DnsServer::new(vec![upstream], bridge());
        server.set("web", "172.29.0.5".parse().unwrap());
        let out = ask(&server, "example.com.", RecordType::A).await;
        assert_eq!((out.id(), out.response_code()), (77, ResponseCode::NoError));
        assert_eq!(
            out.answers()[0].data(),
            Some(&RData::A(A("192.0.2.7".parse().unwrap())))
        );
        // Its own zone never goes upstream.
        let vm = ask(&server, "web.vm.", RecordType::A).await;
        assert_eq!(
            vm.answers()[0].data(),
            Some(&RData::A(A("172.29.0.5".parse().unwrap())))
        );
    }

    #[test]
    fn upstreams_skip_our_own_addresses() {
        let text = "# x\nnameserver 172.29.0.1\nnameserver 10.0.0.2\nsearch vm\n";
        let skip = ["172.29.0.1".parse().unwrap()];
        assert_eq!(
            upstream_from_resolv_conf(text, &skip),
            vec!["10.0.0.2:53".parse().unwrap()]
        );
    }

    #[tokio::test]
    async fn an_upstream_reply_with_another_id_is_not_taken() {
        let server = DnsServer::new(vec![stub_upstream_forging(true).await], bridge());
        let out = ask(&server, "example.com.", RecordType::A).await;
        assert_eq!(out.answers().len(), 1);
        assert_eq!(
            out.answers()[0].data(),
            Some(&RData::A(A("192.0.2.7".parse().unwrap())))
        );
    }

    fn open_fds() -> usize {
        std::fs::read_dir("/proc/self/fd").unwrap().count()
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_flood_of_forwards_stays_bounded_and_vm_names_still_resolve() {
        // An upstream that never answers: every forward waits its timeout.
        let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let server = DnsServer::new(vec![silent.local_addr().unwrap()], bridge());
        server.set("web", Ipv4Addr::new(172, 29, 0, 2));
        let addr: SocketAddr = {
            let probe = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap()
        };
        let _task = server.listen(addr).await.unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        client.connect(addr).await.unwrap();
        let before = open_fds();
        let mut most = before;
        for i in 0..2000u16 {
            let mut q = Message::from_vec(&query("example.com.", RecordType::A)).unwrap();
            q.set_id(i);
            client.send(&q.to_vec().unwrap()).await.unwrap();
            if i % 100 == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
                most = most.max(open_fds());
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        most = most.max(open_fds());
        // 64 forwards in flight, and room for what other tests open.
        assert!(
            most <= before + 120,
            "{most} descriptors open, {before} before the flood"
        );
        // banger's own names are answered while the forwards wait.
        let mut q = Message::from_vec(&query("web.vm.", RecordType::A)).unwrap();
        q.set_id(9999);
        client.send(&q.to_vec().unwrap()).await.unwrap();
        let mut buf = [0u8; 512];
        let answer = loop {
            let n = tokio::time::timeout(Duration::from_secs(2), client.recv(&mut buf))
                .await
                .expect("web.vm is answered during the flood")
                .unwrap();
            let m = Message::from_vec(&buf[..n]).unwrap();
            if m.id() == 9999 {
                break m;
            }
        };
        assert_eq!(
            answer.answers()[0].data(),
            Some(&RData::A(A(Ipv4Addr::new(172, 29, 0, 2))))
        );
    }

    #[tokio::test]
    async fn strangers_get_nothing_and_guests_without_nat_only_banger_names() {
        let server = DnsServer::new(vec![], bridge());
        server.set("web", "172.29.0.5".parse().unwrap());
        let from = |ip: &str| -> std::net::IpAddr { ip.parse().unwrap() };
        let outside = query("example.com.", RecordType::A);
        let ours = query("web.vm.", RecordType::A);
        // A LAN neighbour: no answer, not even for banger's names.
        for stranger in ["192.168.1.20", "172.29.1.5", "::1"] {
            let peer = from(stranger);
            let answer = server.answer(peer, &ours).await;
            assert_eq!(answer.is_some(), peer.is_loopback(), "{stranger}");
        }
        let code =
            |bytes: Option<Vec<u8>>| Message::from_vec(&bytes.unwrap()).unwrap().response_code();
        // A guest without NAT: its neighbours' names, no recursion.
        let guest = from("172.29.0.9");
        assert_eq!(
            code(server.answer(guest, &ours).await),
            ResponseCode::NoError
        );
        assert_eq!(
            code(server.answer(guest, &outside).await),
            ResponseCode::Refused
        );
        // With NAT (and the host, from the bridge's own address): forwarded
        // (no upstreams here, so SERVFAIL).
        server.set_recursive(["172.29.0.9".parse().unwrap()]);
        assert_eq!(
            code(server.answer(guest, &outside).await),
            ResponseCode::ServFail
        );
        let gateway = from("172.29.0.1");
        assert_eq!(
            code(server.answer(gateway, &outside).await),
            ResponseCode::ServFail
        );
        server.set_recursive([]);
        assert_eq!(
            code(server.answer(guest, &outside).await),
            ResponseCode::Refused
        );
    }
}
