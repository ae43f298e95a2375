//! Published ports: a host address and port forwarded to a port of a
//! VM's guest address (`--publish [HOST_IP:]HOST_PORT:GUEST_PORT[/PROTO]`).
//! A host port and protocol belong to one VM at a time, whatever the
//! host address: the clash rule is simple and holds across restarts.

use std::fmt;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PortForward {
    pub host_ip: Ipv4Addr,
    pub host_port: u16,
    pub guest_port: u16,
    pub protocol: Protocol,
}

/// The host address a publish binds when it names none: loopback, so a
/// port reaches other hosts only when asked for.
pub const DEFAULT_HOST_IP: Ipv4Addr = Ipv4Addr::LOCALHOST;

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum PortError {
    #[error("host port {port}/{protocol} is published twice")]
    Twice { port: u16, protocol: &'static str },
    #[error("host port {port}/{protocol} is published by vm {by}")]
    Taken {
        port: u16,
        protocol: &'static str,
        by: String,
    },
    #[error("vm {vm} publishes no host port {port}/{protocol}")]
    NotPublished {
        vm: String,
        port: u16,
        protocol: &'static str,
    },
}

impl PortForward {
    /// The key two forwards clash on.
    pub fn key(&self) -> (u16, Protocol) {
        (self.host_port, self.protocol)
    }
}

impl fmt::Display for PortForward {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}/{}",
            self.host_ip,
            self.host_port,
            self.guest_port,
            self.protocol.as_str()
        )
    }
}

/// Refuses a list that publishes one host port twice.
pub fn check_distinct(forwards: &[PortForward]) -> Result<(), PortError> {
    let mut seen = std::collections::HashSet::new();
    for forward in forwards {
        if !seen.insert(forward.key()) {
            return Err(PortError::Twice {
                port: forward.host_port,
                protocol: forward.protocol.as_str(),
            });
        }
    }
    Ok(())
}

/// Refuses `forwards` of VM `vm_id` when another VM publishes one of
/// their host ports (running or not: its ports come back with it).
pub fn check_free(
    vms: &[crate::vm::Vm],
    vm_id: &str,
    forwards: &[PortForward],
) -> Result<(), PortError> {
    for other in vms.iter().filter(|v| v.id != vm_id) {
        for forward in forwards {
            if other.spec.ports.iter().any(|p| p.key() == forward.key()) {
                return Err(PortError::Taken {
                    port: forward.host_port,
                    protocol: forward.protocol.as_str(),
                    by: other.name.clone(),
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forward(ip: [u8; 4], host_port: u16, guest_port: u16, protocol: Protocol) -> PortForward {
        PortForward {
            host_ip: ip.into(),
            host_port,
            guest_port,
            protocol,
        }
    }

    #[test]
    fn one_host_port_per_protocol_whatever_the_address() {
        let a = forward([127, 0, 0, 1], 8080, 80, Protocol::Tcp);
        let b = forward([0, 0, 0, 0], 8080, 81, Protocol::Tcp);
        let udp = forward([127, 0, 0, 1], 8080, 80, Protocol::Udp);
        assert_eq!(a.to_string(), "127.0.0.1:8080:80/tcp");
        assert!(check_distinct(&[a, udp]).is_ok());
        assert!(matches!(
            check_distinct(&[a, b]),
            Err(PortError::Twice { port: 8080, .. })
        ));
    }
}
