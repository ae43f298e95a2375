//! Guest networking: the bridge, the warm pool of TAP devices, banger's
//! nftables table (isolation and per-VM NAT), and the DNS server for
//! `NAME.vm`; `capability` plugs them into the VM lifecycle.
//!
//! Names tell what a link is: the bridge (`banger0` by default), idle
//! pool devices (`tap-pool-N`: capacity, not leaks), and a running VM's
//! device (`bg-` + the first 12 characters of its id), so reconcile and
//! `verify` can tell ours from others and owned from leaked.

pub mod capability;
pub mod dns;
pub mod holders;
pub mod link;
pub mod nft;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use dns::DnsServer;
use link::{LinkError, Links};
use nft::{NftPlan, Pin};

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error(transparent)]
    Nft(#[from] nft::NftError),
    #[error(transparent)]
    Dns(#[from] dns::DnsError),
    #[error("cannot turn on ip forwarding: {0}")]
    Forwarding(std::io::Error),
    #[error("bridge prefix {ours} overlaps {theirs} on {link}: set another bridge_address in the config")]
    Overlap {
        ours: String,
        theirs: String,
        link: String,
    },
    #[error("uplink {0} (uplink in [network] of the config) does not exist: name an existing interface, or leave the key out to use the default route's")]
    NoUplink(String),
}

/// The first address of another link whose prefix overlaps `gateway/prefix`.
pub fn overlap(
    bridge: &str,
    gateway: Ipv4Addr,
    prefix: u8,
    addresses: &[(String, Ipv4Addr, u8)],
) -> Option<NetError> {
    let ours = ipnet::Ipv4Net::new(gateway, prefix).ok()?.trunc();
    addresses.iter().find_map(|(link, addr, len)| {
        let theirs = ipnet::Ipv4Net::new(*addr, *len).ok()?.trunc();
        let overlaps = ours.contains(&theirs.network()) || theirs.contains(&ours.network());
        // Loopback addresses never reach the bridge.
        (link != bridge && overlaps && !addr.is_loopback()).then(|| NetError::Overlap {
            ours: ours.to_string(),
            theirs: format!("{addr}/{len}"),
            link: link.clone(),
        })
    })
}

/// How the network is laid out (from config).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetConfig {
    pub bridge: String,
    pub gateway: Ipv4Addr,
    pub prefix: u8,
    /// Prefix of idle pool devices (`tap-pool-`).
    pub pool_prefix: String,
    /// Prefix of a running VM's device (`bg-`).
    pub vm_prefix: String,
    pub pool_size: usize,
    pub table: String,
    /// Where the host asks for `NAME.vm` (a loopback address).
    pub host_dns: Option<SocketAddr>,
    /// Where other names go.
    pub upstream: Vec<SocketAddr>,
    /// The uplink for NAT; detected from the default route when absent.
    pub uplink: Option<String>,
    /// Link-local addresses (`169.254.0.0/16`) guests may reach anyway.
    pub link_local_allow: Vec<ipnet::Ipv4Net>,
}

impl NetConfig {
    /// The device name of VM `id` (at most 15 bytes, the kernel's limit).
    pub fn vm_tap(&self, id: &str) -> String {
        let room = 15usize.saturating_sub(self.vm_prefix.len());
        format!("{}{}", self.vm_prefix, &id[..id.len().min(room)])
    }
}

/// The network as the daemon runs it.
pub struct Network {
    cfg: NetConfig,
    links: Links,
    bridge_index: u32,
    idle: Mutex<Vec<String>>,
    nat: Mutex<BTreeSet<Ipv4Addr>>,
    /// Running VMs' devices, pinned to their MAC and address.
    pins: Mutex<BTreeMap<String, Pin>>,
    nft_lock: tokio::sync::Mutex<()>,
    pool_lock: tokio::sync::Mutex<()>,
    uplink: Option<String>,
    /// banger turned IPv4 forwarding on: only the bridge's traffic is
    /// forwarded.
    own_forwarding: bool,
    dns: Arc<DnsServer>,
    dns_tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// The host's IPv4 forwarding switch.
const FORWARDING: &str = "/proc/sys/net/ipv4/ip_forward";

impl Drop for Network {
    fn drop(&mut self) {
        for task in &self.dns_tasks {
            task.abort();
        }
    }
}

impl Network {
    /// Brings the network up: bridge, forwarding, pool, table, DNS.
    pub async fn start(cfg: NetConfig) -> Result<Arc<Network>, NetError> {
        let links = Links::connect()?;
        if let Some(err) = overlap(
            &cfg.bridge,
            cfg.gateway,
            cfg.prefix,
            &links.ipv4_addresses().await?,
        ) {
            return Err(err);
        }
        if let Some(uplink) = &cfg.uplink {
            if links.index(uplink).await?.is_none() {
                return Err(NetError::NoUplink(uplink.clone()));
            }
        }
        let bridge_index = links
            .ensure_bridge(&cfg.bridge, cfg.gateway, cfg.prefix)
            .await?;
        // Forwarding banger turns on (now, or at an earlier start: its
        // table says so) carries only the bridge's traffic; a host that
        // forwarded before keeps its own policy.
        let forwarding_before = std::fs::read_to_string(FORWARDING)
            .map(|v| v.trim() == "1")
            .unwrap_or(false);
        let own_forwarding = !forwarding_before || nft::owns_forwarding(&cfg.table).await;
        std::fs::write(FORWARDING, "1").map_err(NetError::Forwarding)?;
        let mut idle = Vec::new();
        for name in links.names().await? {
            if name.starts_with(&cfg.pool_prefix) {
                links.attach_up(&name, bridge_index).await?;
                idle.push(name);
            }
        }
        idle.sort();
        let uplink = match &cfg.uplink {
            Some(uplink) => Some(uplink.clone()),
            None => links.uplink().await?,
        };
        let clients = ipnet::Ipv4Net::new(cfg.gateway, cfg.prefix)
            .map_err(|e| NetError::Forwarding(std::io::Error::other(e.to_string())))?;
        let dns = DnsServer::new(cfg.upstream.clone(), clients);
        let mut dns_tasks = vec![dns.listen(SocketAddr::new(cfg.gateway.into(), 53)).await?];
        if let Some(host) = cfg.host_dns {
            dns_tasks.push(dns.listen(host).await?);
        }
        let network = Arc::new(Network {
            cfg,
            links,
            bridge_index,
            idle: Mutex::new(idle),
            nat: Mutex::default(),
            pins: Mutex::default(),
            nft_lock: tokio::sync::Mutex::new(()),
            pool_lock: tokio::sync::Mutex::new(()),
            uplink,
            own_forwarding,
            dns,
            dns_tasks,
        });
        network.apply_nft().await?;
        network.refill().await?;
        split_dns(&network.cfg).await;
        tracing::info!(bridge = %network.cfg.bridge, uplink = ?network.uplink, "network up");
        Ok(network)
    }

    pub fn config(&self) -> &NetConfig {
        &self.cfg
    }

    pub fn dns(&self) -> &Arc<DnsServer> {
        &self.dns
    }

    pub fn uplink(&self) -> Option<&str> {
        self.uplink.as_deref()
    }

    pub fn links(&self) -> &Links {
        &self.links
    }

    /// The idle pool devices.
    pub fn idle(&self) -> Vec<String> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Guests with NAT on.
    pub fn nat(&self) -> Vec<Ipv4Addr> {
        self.nat
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .copied()
            .collect()
    }

    fn plan(&self) -> NftPlan {
        NftPlan {
            port_prefixes: vec![self.cfg.vm_prefix.clone(), self.cfg.pool_prefix.clone()],
            table: self.cfg.table.clone(),
            bridge: self.cfg.bridge.clone(),
            gateway: self.cfg.gateway,
            uplink: self.uplink.clone(),
            nat: self.nat(),
            pins: self
                .pins
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .values()
                .cloned()
                .collect(),
            link_local_allow: self.cfg.link_local_allow.clone(),
            own_forwarding: self.own_forwarding,
        }
    }

    /// Lets VM `id`'s device carry frames from `ip` and its MAC only
    /// (nothing else passes a port: see `nft`).
    pub async fn pin(&self, id: &str, ip: Ipv4Addr) -> Result<(), NetError> {
        let ifname = self.cfg.vm_tap(id);
        let pin = Pin {
            ifname: ifname.clone(),
            mac: mac_for(ip),
            ip,
        };
        let changed = self
            .pins
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(ifname, pin.clone())
            != Some(pin);
        if changed {
            self.apply_nft().await?;
        }
        Ok(())
    }

    /// Drops VM `id`'s pin: its device passes nothing.
    pub async fn unpin(&self, id: &str) -> Result<(), NetError> {
        let removed = self
            .pins
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.cfg.vm_tap(id))
            .is_some();
        if removed {
            self.apply_nft().await?;
        }
        Ok(())
    }

    async fn apply_nft(&self) -> Result<(), NetError> {
        let _lock = self.nft_lock.lock().await;
        nft::apply(&nft::ruleset(&self.plan())).await?;
        Ok(())
    }

    /// Turns NAT for a guest on or off, live.
    pub async fn set_nat(&self, ip: Ipv4Addr, on: bool) -> Result<(), NetError> {
        let changed = {
            let mut nat = self.nat.lock().unwrap_or_else(|e| e.into_inner());
            if on {
                nat.insert(ip)
            } else {
                nat.remove(&ip)
            }
        };
        if changed {
            self.dns.set_recursive(self.nat());
            self.apply_nft().await?;
        }
        Ok(())
    }

    /// Whether banger turned forwarding on (and so restricts it).
    pub fn owns_forwarding(&self) -> bool {
        self.own_forwarding
    }

    /// A pool name not in use.
    async fn free_pool_name(&self) -> Result<String, NetError> {
        let names = self.links.names().await?;
        let mut n = 0;
        loop {
            let candidate = format!("{}{n}", self.cfg.pool_prefix);
            if !names.contains(&candidate) {
                return Ok(candidate);
            }
            n += 1;
        }
    }

    /// Fills the pool up to its size.
    pub async fn refill(&self) -> Result<(), NetError> {
        let _lock = self.pool_lock.lock().await;
        while self.idle.lock().unwrap_or_else(|e| e.into_inner()).len() < self.cfg.pool_size {
            let name = self.free_pool_name().await?;
            self.links.create_tap(&name).await?;
            self.links.attach_up(&name, self.bridge_index).await?;
            self.idle
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(name);
        }
        Ok(())
    }

    /// Gives VM `id` its device, from the pool when it has one; the pool
    /// refills in the background.
    pub async fn take_tap(self: &Arc<Self>, id: &str) -> Result<String, NetError> {
        let name = self.cfg.vm_tap(id);
        if self.links.index(&name).await?.is_some() {
            self.links.attach_up(&name, self.bridge_index).await?;
            return Ok(name);
        }
        let pooled = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        match pooled {
            Some(pool_name) => self.links.rename(&pool_name, &name).await?,
            None => {
                let _lock = self.pool_lock.lock().await;
                self.links.create_tap(&name).await?;
            }
        }
        self.links.attach_up(&name, self.bridge_index).await?;
        let network = self.clone();
        tokio::spawn(async move {
            if let Err(err) = network.refill().await {
                tracing::warn!(error = %err, "tap pool refill failed");
            }
        });
        Ok(name)
    }

    /// Takes VM `id`'s device back into the pool (or deletes it when the
    /// pool is full).
    pub async fn return_tap(&self, id: &str) -> Result<(), NetError> {
        let name = self.cfg.vm_tap(id);
        if self.links.index(&name).await?.is_none() {
            return Ok(());
        }
        let _lock = self.pool_lock.lock().await;
        let full = self.idle.lock().unwrap_or_else(|e| e.into_inner()).len() >= self.cfg.pool_size;
        if full {
            self.links.delete(&name).await?;
            return Ok(());
        }
        let pool_name = self.free_pool_name().await?;
        self.links.rename(&name, &pool_name).await?;
        self.links.attach_up(&pool_name, self.bridge_index).await?;
        self.idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(pool_name);
        Ok(())
    }

    /// Links of VMs (`bg-*`) whose id is not in `live`.
    pub async fn stray_vm_links(&self, live: &[String]) -> Result<Vec<String>, NetError> {
        let owned: Vec<String> = live.iter().map(|id| self.cfg.vm_tap(id)).collect();
        Ok(self
            .links
            .names()
            .await?
            .into_iter()
            .filter(|n| n.starts_with(&self.cfg.vm_prefix) && !owned.contains(n))
            .collect())
    }
}

/// With systemd-resolved on the host, sends `.vm` names to banger's DNS
/// server on the bridge (split DNS), so `ssh NAME.vm` works from the host.
/// Best effort: elsewhere the README says what to set up.
async fn split_dns(cfg: &NetConfig) {
    if !std::path::Path::new("/run/systemd/resolve").is_dir() {
        return;
    }
    let Some(resolvectl) = crate::tools::find_tool("resolvectl") else {
        return;
    };
    let gateway = cfg.gateway.to_string();
    let domain = format!("~{}", dns::ZONE);
    for args in [
        ["dns", cfg.bridge.as_str(), gateway.as_str()],
        ["domain", cfg.bridge.as_str(), domain.as_str()],
    ] {
        match tokio::process::Command::new(&resolvectl)
            .args(args)
            .output()
            .await
        {
            Ok(out) if out.status.success() => {}
            Ok(out) => tracing::warn!(
                error = %String::from_utf8_lossy(&out.stderr).trim(),
                "systemd-resolved refused split dns for .vm"
            ),
            Err(err) => tracing::warn!(error = %err, "cannot run resolvectl"),
        }
    }
    tracing::info!(bridge = %cfg.bridge, "split dns: .vm goes to banger");
}

/// A locally administered MAC derived from the guest address.
pub fn mac_for(ip: Ipv4Addr) -> String {
    let [a, b, c, d] = ip.octets();
    format!("06:00:{a:02x}:{b:02x}:{c:02x}:{d:02x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_the_kernel_limit_and_macs_are_local() {
        let cfg = NetConfig {
            bridge: "banger0".into(),
            gateway: "172.29.0.1".parse().unwrap(),
            prefix: 24,
            pool_prefix: "tap-pool-".into(),
            vm_prefix: "bg-".into(),
            pool_size: 4,
            table: "banger".into(),
            host_dns: None,
            upstream: vec![],
            uplink: None,
            link_local_allow: vec![],
        };
        assert_eq!(cfg.vm_tap("0123456789abcdef"), "bg-0123456789ab");
        assert_eq!(mac_for("172.29.0.5".parse().unwrap()), "06:00:ac:1d:00:05");
    }

    #[test]
    fn a_bridge_prefix_overlapping_another_link_is_named() {
        let gw: Ipv4Addr = "172.29.0.1".parse().unwrap();
        let host = |link: &str, addr: &str, len: u8| (link.to_string(), addr.parse().unwrap(), len);
        let clean = [
            host("lo", "127.0.0.1", 8),
            host("eth0", "10.0.2.15", 24),
            // The bridge's own addresses are ours.
            host("banger0", "172.29.0.1", 24),
        ];
        assert!(overlap("banger0", gw, 24, &clean).is_none());
        let wider = [host("eth0", "172.29.5.1", 16)];
        let err = overlap("banger0", gw, 24, &wider).unwrap().to_string();
        assert_eq!(
            err,
            "bridge prefix 172.29.0.0/24 overlaps 172.29.5.1/16 on eth0: set another bridge_address in the config"
        );
        let narrower = [host("wg0", "172.29.0.130", 25)];
        assert!(overlap("banger0", gw, 24, &narrower).is_some());
        let beside = [host("wg0", "172.29.1.1", 24)];
        assert!(overlap("banger0", gw, 24, &beside).is_none());
    }
}
