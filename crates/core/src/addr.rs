//! Guest address arithmetic: which addresses of the bridge prefix a VM may
//! take, and the vsock CID derived from a guest address.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AddrError {
    #[error(
        "invalid bridge address {0:?}: expected an IPv4 address with prefix, like 172.29.0.1/24"
    )]
    BadBridge(String),
    #[error("bridge prefix {0} is too small for guests: use a prefix of /29 or shorter")]
    PrefixTooSmall(Ipv4Net),
    #[error("no free guest address left in {0}")]
    Exhausted(Ipv4Net),
}

/// The host bridge: its own address (the guests' gateway) and its prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BridgeNet {
    net: Ipv4Net,
}

impl BridgeNet {
    pub fn parse(text: &str) -> Result<Self, AddrError> {
        let net: Ipv4Net = text
            .trim()
            .parse()
            .map_err(|_| AddrError::BadBridge(text.to_string()))?;
        if net.prefix_len() > 29 {
            return Err(AddrError::PrefixTooSmall(net));
        }
        let gateway = net.addr();
        if gateway == net.network() || gateway == net.broadcast() {
            return Err(AddrError::BadBridge(text.to_string()));
        }
        Ok(BridgeNet { net })
    }

    /// The bridge's own address, the guests' gateway and DNS server.
    pub fn gateway(&self) -> Ipv4Addr {
        self.net.addr()
    }

    pub fn prefix_len(&self) -> u8 {
        self.net.prefix_len()
    }

    /// The network (`172.29.0.0/24`).
    pub fn network(&self) -> Ipv4Net {
        self.net.trunc()
    }

    /// True when `ip` may be given to a guest: inside the prefix and not the
    /// network, broadcast or gateway address.
    pub fn is_guest_addr(&self, ip: Ipv4Addr) -> bool {
        self.net.contains(&ip)
            && ip != self.net.network()
            && ip != self.net.broadcast()
            && ip != self.gateway()
    }

    /// The lowest guest address not in `used`. Freed addresses are reused.
    pub fn next_free(&self, used: &HashSet<Ipv4Addr>) -> Result<Ipv4Addr, AddrError> {
        self.net
            .hosts()
            .find(|ip| self.is_guest_addr(*ip) && !used.contains(ip))
            .ok_or(AddrError::Exhausted(self.network()))
    }
}

impl std::fmt::Display for BridgeNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.net)
    }
}

/// The vsock CID of a guest: the guest address read as a 32-bit number.
/// Unique per address, and never one of the reserved CIDs 0-2 or `u32::MAX`
/// for any address a bridge prefix can hand out.
pub fn vsock_cid(ip: Ipv4Addr) -> u32 {
    u32::from(ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skips_network_gateway_and_broadcast() {
        let bridge = BridgeNet::parse("10.0.0.1/29").unwrap();
        let mut used = HashSet::new();
        let mut got = vec![];
        while let Ok(ip) = bridge.next_free(&used) {
            used.insert(ip);
            got.push(ip.to_string());
        }
        assert_eq!(
            got,
            ["10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"]
        );
        assert_eq!(
            bridge.next_free(&used),
            Err(AddrError::Exhausted(bridge.network()))
        );
    }

    #[test]
    fn gateway_in_the_middle_is_skipped_and_freed_addresses_are_reused() {
        let bridge = BridgeNet::parse("10.0.0.3/29").unwrap();
        let used: HashSet<_> = ["10.0.0.1", "10.0.0.2"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(bridge.next_free(&used).unwrap().to_string(), "10.0.0.4");
        let used: HashSet<_> = ["10.0.0.2"].iter().map(|s| s.parse().unwrap()).collect();
        assert_eq!(bridge.next_free(&used).unwrap().to_string(), "10.0.0.1");
    }

    #[test]
    fn rejects_bad_bridges() {
        assert!(matches!(
            BridgeNet::parse("nope"),
            Err(AddrError::BadBridge(_))
        ));
        assert!(matches!(
            BridgeNet::parse("10.0.0.0/24"),
            Err(AddrError::BadBridge(_))
        ));
        assert!(matches!(
            BridgeNet::parse("10.0.0.1/30"),
            Err(AddrError::PrefixTooSmall(_))
        ));
    }

    #[test]
    fn cids_are_distinct_and_not_reserved() {
        let a = vsock_cid("172.29.0.2".parse().unwrap());
        let b = vsock_cid("172.29.0.3".parse().unwrap());
        assert_ne!(a, b);
        assert!(a > 2 && a != u32::MAX);
    }
}
