//! Published ports, forwarded in user space: the daemon listens on the
//! host address and port and relays each TCP connection, or each UDP
//! peer's datagrams, to the guest's address. User space (not DNAT)
//! because the default host address is loopback, which the kernel routes
//! to a bridge only with `route_localnet` (opening every interface's
//! 127/8 to forwarding), and because the README's benchmark measures
//! what the relay costs against a direct connection.
//!
//! `PortsCapability` binds a VM's ports before its VMM starts (a port in
//! use fails the start before anything runs), after a daemon restart for
//! VMs that still run, and on `vm port add/rm` (`config_changed`); it
//! closes them on stop and removal. Binding is the clash check against
//! other programs; banger's own VMs are checked by the core.

mod limits;
mod tcp;
mod udp;

pub use limits::{raise_nofile, RelayLimits};

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Mutex;

use async_trait::async_trait;
use banger_core::capability::{Capability, CapabilityError, Refusal, VmContext};
use banger_core::doctor::Check;
use banger_core::ports::{PortForward, Protocol};
use banger_core::spec::VmSpec;
use tokio::task::JoinHandle;

/// One forward being served; `close` ends it.
struct Open {
    forward: PortForward,
    task: JoinHandle<()>,
}

impl Open {
    /// Ends the forward; returns once its socket is closed (a task only
    /// drops what it holds when it is next polled after the abort).
    async fn close(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

pub struct PortsCapability {
    /// Whether VMs are on banger's network (else nothing to forward to).
    network: bool,
    limits: std::sync::Arc<RelayLimits>,
    open: Mutex<HashMap<String, Vec<Open>>>,
}

#[derive(Debug, thiserror::Error)]
pub enum PortsError {
    #[error("host port {port}/{protocol} on {ip} is in use by another program")]
    InUse {
        ip: Ipv4Addr,
        port: u16,
        protocol: &'static str,
    },
    #[error("host address {0} is not an address of this host")]
    NoSuchAddress(Ipv4Addr),
    #[error("cannot listen on {ip}:{port}/{protocol}: {source}")]
    Bind {
        ip: Ipv4Addr,
        port: u16,
        protocol: &'static str,
        source: std::io::Error,
    },
}

impl PortsError {
    fn hint(&self) -> String {
        match self {
            PortsError::InUse { port, .. } => {
                format!("pick another host port (`ss -lntup 'sport = :{port}'` shows who has it)")
            }
            PortsError::NoSuchAddress(_) => {
                "leave the host address out (127.0.0.1), or use one `ip -4 addr` lists, or 0.0.0.0"
                    .into()
            }
            PortsError::Bind { .. } => "pick another host port".into(),
        }
    }
}

/// Binds `forward`'s host side.
fn bind(forward: &PortForward) -> Result<Socket, PortsError> {
    let addr = SocketAddr::V4(SocketAddrV4::new(forward.host_ip, forward.host_port));
    let protocol = forward.protocol.as_str();
    let bound = match forward.protocol {
        Protocol::Tcp => std::net::TcpListener::bind(addr).map(Socket::Tcp),
        Protocol::Udp => std::net::UdpSocket::bind(addr).map(Socket::Udp),
    };
    bound.map_err(|source| match source.kind() {
        std::io::ErrorKind::AddrInUse => PortsError::InUse {
            ip: forward.host_ip,
            port: forward.host_port,
            protocol,
        },
        std::io::ErrorKind::AddrNotAvailable => PortsError::NoSuchAddress(forward.host_ip),
        _ => PortsError::Bind {
            ip: forward.host_ip,
            port: forward.host_port,
            protocol,
            source,
        },
    })
}

/// Binds `forward` and starts relaying it to `guest_ip`.
fn serve(
    forward: &PortForward,
    guest_ip: Ipv4Addr,
    vm: &str,
    limits: &std::sync::Arc<RelayLimits>,
) -> Result<JoinHandle<()>, CapabilityError> {
    let socket = bind(forward).map_err(|err| CapabilityError {
        capability: "ports",
        message: format!("{err}; {}", err.hint()),
    })?;
    let guest = SocketAddr::V4(SocketAddrV4::new(guest_ip, forward.guest_port));
    let task = match socket {
        Socket::Tcp(listener) => tcp::serve(listener, guest, vm.to_string(), limits.clone()),
        Socket::Udp(socket) => udp::serve(socket, guest),
    };
    task.map_err(|e| CapabilityError {
        capability: "ports",
        message: format!("cannot serve {forward}: {e}"),
    })
}

enum Socket {
    Tcp(std::net::TcpListener),
    Udp(std::net::UdpSocket),
}

impl PortsCapability {
    /// `limits` bounds the TCP connections relayed at once.
    pub fn new(network: bool, limits: RelayLimits) -> Self {
        PortsCapability {
            network,
            limits: std::sync::Arc::new(limits),
            open: Mutex::default(),
        }
    }

    /// Whether banger serves this host port now (for any VM).
    fn serving(&self, forward: &PortForward) -> bool {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.values()
            .flatten()
            .any(|o| o.forward.key() == forward.key() && o.forward.host_ip == forward.host_ip)
    }

    /// Serves every forward of `ctx`'s VM not served yet and closes those
    /// it no longer has; all or nothing for the new ones.
    async fn reconcile(&self, ctx: &VmContext) -> Result<(), CapabilityError> {
        let wanted = &ctx.vm.spec.ports;
        let gone: Vec<Open> = {
            let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
            let serving = open.entry(ctx.vm.id.clone()).or_default();
            let (keep, gone) = std::mem::take(serving)
                .into_iter()
                .partition(|o| wanted.contains(&o.forward));
            *serving = keep;
            gone
        };
        for open in gone {
            open.close().await;
        }
        let serving: Vec<PortForward> = {
            let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
            open.get(&ctx.vm.id)
                .map(|list| list.iter().map(|o| o.forward).collect())
                .unwrap_or_default()
        };
        let mut started = Vec::new();
        let mut failed = None;
        for forward in wanted.iter().filter(|f| !serving.contains(f)) {
            match serve(forward, ctx.vm.guest_ip, &ctx.vm.id, &self.limits) {
                Ok(task) => {
                    tracing::info!(vm = %ctx.vm.name, %forward, "port published");
                    started.push(Open {
                        forward: *forward,
                        task,
                    });
                }
                Err(err) => {
                    failed = Some(err);
                    break;
                }
            }
        }
        if let Some(err) = failed {
            // All or nothing: what this call opened closes again.
            for open in started {
                open.close().await;
            }
            return Err(err);
        }
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.entry(ctx.vm.id.clone()).or_default().extend(started);
        Ok(())
    }

    async fn close(&self, vm_id: &str) {
        let gone = self
            .open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(vm_id);
        for open in gone.into_iter().flatten() {
            open.close().await;
        }
    }

    /// The forwards served now, by VM id (for `verify`).
    /// TCP connections refused since start: past a VM's or the daemon's
    /// bound.
    pub fn refused_connections(&self) -> u64 {
        self.limits.refused()
    }

    pub fn served(&self) -> HashMap<String, Vec<PortForward>> {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.iter()
            .map(|(id, list)| (id.clone(), list.iter().map(|o| o.forward).collect()))
            .collect()
    }
}

#[async_trait]
impl Capability for PortsCapability {
    fn name(&self) -> &'static str {
        "ports"
    }

    fn prepare_stage(&self) -> &'static str {
        "ports"
    }

    fn serves(&self, vm: &banger_core::vm::Vm) -> bool {
        !vm.spec.ports.is_empty()
    }

    /// Refuses ports without a network, and host ports another program
    /// holds (those banger serves already are this VM's: the core checked
    /// its other VMs).
    fn check_spec(&self, spec: &VmSpec) -> Result<(), Refusal> {
        if spec.ports.is_empty() {
            return Ok(());
        }
        if !self.network {
            return Err(Refusal {
                message: "published ports need banger's network, which is disabled here".into(),
                hint: "enable [network] in the config, or use `banger vm cp` and `vm exec`".into(),
            });
        }
        for forward in &spec.ports {
            if self.serving(forward) {
                continue;
            }
            if let Err(err) = bind(forward) {
                return Err(Refusal {
                    message: err.to_string(),
                    hint: err.hint(),
                });
            }
        }
        Ok(())
    }

    async fn prepare_host(
        &self,
        ctx: &VmContext,
        _config: &banger_core::capability::GuestConfig,
    ) -> Result<(), CapabilityError> {
        let result = self.reconcile(ctx).await;
        if result.is_err() {
            self.close(&ctx.vm.id).await;
        }
        result
    }

    async fn cleanup(&self, ctx: &VmContext) {
        self.close(&ctx.vm.id).await;
    }

    async fn readopt(&self, ctx: &VmContext) -> Result<(), CapabilityError> {
        self.reconcile(ctx).await
    }

    async fn config_changed(&self, ctx: &VmContext) -> Result<(), CapabilityError> {
        self.reconcile(ctx).await
    }

    async fn remove(&self, ctx: &VmContext) {
        self.close(&ctx.vm.id).await;
        self.limits.forget(&ctx.vm.id);
    }

    fn doctor(&self) -> Vec<Check> {
        Vec::new()
    }
}

#[cfg(test)]
mod tests;
