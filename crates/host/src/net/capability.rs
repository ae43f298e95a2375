//! The network capability: a VM gets its TAP device from the pool, its
//! address and gateway on the kernel command line, the bridge address as
//! its DNS server, a `NAME.vm` record while it runs, and NAT when asked.
//! The device is pinned to the VM's MAC and address before the VMM starts.
//! Everything is undone on stop (the device goes back to the pool).

use std::sync::Arc;

use async_trait::async_trait;
use banger_core::capability::{Capability, CapabilityError, GuestConfig, Refusal, VmContext};
use banger_core::spec::VmSpec;
use banger_core::vmm::{MachineSpec, NicSpec};

use super::{mac_for, Network};

pub struct NetworkCapability {
    net: Arc<Network>,
}

impl NetworkCapability {
    pub fn new(net: Arc<Network>) -> Self {
        NetworkCapability { net }
    }
}

fn err(message: impl std::fmt::Display) -> CapabilityError {
    CapabilityError {
        capability: "network",
        message: message.to_string(),
    }
}

#[async_trait]
impl Capability for NetworkCapability {
    fn name(&self) -> &'static str {
        "network"
    }

    fn prepare_stage(&self) -> &'static str {
        "tap"
    }

    fn check_spec(&self, spec: &VmSpec) -> Result<(), Refusal> {
        if spec.nat && self.net.uplink().is_none() {
            return Err(Refusal {
                message: "nat needs an uplink, and this host has none (no default route)".into(),
                hint: "add a default route, or name the interface with uplink in [network] of the config"
                    .into(),
            });
        }
        Ok(())
    }

    fn guest_config(&self, ctx: &VmContext, config: &mut GuestConfig) {
        let cfg = self.net.config();
        config
            .cmdline
            .push(format!("banger.ip={}/{}", ctx.vm.guest_ip, cfg.prefix));
        config.cmdline.push(format!("banger.gw={}", cfg.gateway));
        config.add_file(
            "/etc/resolv.conf",
            format!("nameserver {}\nsearch {}\n", cfg.gateway, super::dns::ZONE),
            0o644,
        );
    }

    async fn prepare_host(
        &self,
        ctx: &VmContext,
        _config: &GuestConfig,
    ) -> Result<(), CapabilityError> {
        self.net.take_tap(&ctx.vm.id).await.map_err(err)?;
        // Pinned before the VMM starts: its first frame is already checked.
        self.net.pin(&ctx.vm.id, ctx.vm.guest_ip).await.map_err(err)
    }

    fn machine_config(&self, ctx: &VmContext, spec: &mut MachineSpec) {
        spec.nic = Some(NicSpec {
            tap: self.net.config().vm_tap(&ctx.vm.id),
            mac: mac_for(ctx.vm.guest_ip),
        });
    }

    async fn post_start(&self, ctx: &VmContext) -> Result<(), CapabilityError> {
        self.net.dns().set(&ctx.vm.name, ctx.vm.guest_ip);
        self.net
            .set_nat(ctx.vm.guest_ip, ctx.vm.spec.nat)
            .await
            .map_err(err)
    }

    async fn readopt(&self, ctx: &VmContext) -> Result<(), CapabilityError> {
        self.net
            .pin(&ctx.vm.id, ctx.vm.guest_ip)
            .await
            .map_err(err)?;
        self.post_start(ctx).await
    }

    async fn config_changed(&self, ctx: &VmContext) -> Result<(), CapabilityError> {
        self.net
            .set_nat(ctx.vm.guest_ip, ctx.vm.spec.nat)
            .await
            .map_err(err)
    }

    async fn cleanup(&self, ctx: &VmContext) {
        self.net.dns().remove(&ctx.vm.name);
        if let Err(e) = self.net.unpin(&ctx.vm.id).await {
            tracing::warn!(vm = %ctx.vm.name, error = %e, "cannot remove the device's pin");
        }
        if let Err(e) = self.net.set_nat(ctx.vm.guest_ip, false).await {
            tracing::warn!(vm = %ctx.vm.name, error = %e, "cannot remove nat rules");
        }
        if let Err(e) = self.net.return_tap(&ctx.vm.id).await {
            tracing::warn!(vm = %ctx.vm.name, error = %e, "cannot return the tap device");
        }
    }
}
