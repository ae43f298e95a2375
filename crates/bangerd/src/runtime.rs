//! Wiring what boots VMs: the network (when enabled), the VMM driver the
//! daemon selected, the agent link, and the capabilities in their order
//! (network, system disk, work disk).
//! A host without the selected VMM's binary gets no runtime: the daemon
//! still serves records and says why VMs cannot start.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;

use banger_core::capability::Capability;
use banger_core::service::Runtime;
use banger_core::vmm::Vmm;
use banger_host::accel::{tsc_khz, KvmFacts, KvmPaths};
use banger_host::agent::link::HostAgentLink;
use banger_host::disks::system::SystemDisk;
use banger_host::disks::work::WorkDisk;
use banger_host::firecracker::driver::FirecrackerDriver;
use banger_host::firecracker::jail::JailerConfig;
use banger_host::net::capability::NetworkCapability;
use banger_host::net::dns::upstream_from_resolv_conf;
use banger_host::net::{NetConfig, Network};
use banger_host::ports::PortsCapability;
use banger_host::qemu::driver::QemuDriver;
use banger_host::qemu::plan::{AgentTransport, QemuConfig, TcgThreads};
use banger_host::shares::SharesCapability;
use banger_host::ssh::{SshCapability, SshKeys};
use banger_host::tools::find_tool;

use crate::config::Config;

/// TCG translation cache per VM, MiB.
const TCG_TB_SIZE_MIB: u32 = 64;

/// The network from config: bridge, pool, nft table, DNS. `None` when
/// disabled.
pub async fn network(config: &Config) -> anyhow::Result<Option<Arc<Network>>> {
    let settings = &config.network;
    if !settings.enabled {
        tracing::info!("network disabled in the config: vms boot without a nic");
        return Ok(None);
    }
    let gateway = config.bridge.gateway();
    let upstream = match &settings.upstream {
        Some(list) => list.clone(),
        None => {
            let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
            let mut skip = vec![gateway];
            if let Some(SocketAddr::V4(host)) = settings.host_dns {
                skip.push(*host.ip());
            }
            upstream_from_resolv_conf(&text, &skip)
        }
    };
    let net = Network::start(NetConfig {
        bridge: settings.bridge.clone(),
        gateway,
        prefix: config.bridge.prefix_len(),
        pool_prefix: "tap-pool-".into(),
        vm_prefix: "bg-".into(),
        pool_size: settings.pool_size,
        table: settings.nft_table.clone(),
        host_dns: settings.host_dns,
        upstream,
        uplink: settings.uplink.clone(),
        link_local_allow: settings.link_local_allow.clone(),
    })
    .await
    .context("cannot bring up the vm network (set [network] enabled = false in the config to run without)")?;
    Ok(Some(net))
}

/// The runtime for VMM `kind`, or `None` with the reason logged.
pub fn build(
    kind: &str,
    network: Option<Arc<Network>>,
    ssh: Option<Arc<SshKeys>>,
    vmm_uid_base: Option<u32>,
    jail_base: &std::path::Path,
    ports: Arc<PortsCapability>,
    tcg_threads: TcgThreads,
) -> Option<Runtime> {
    let accel = KvmFacts::probe(&KvmPaths::default()).accel();
    let vmm: Arc<dyn Vmm> = match kind {
        "firecracker" => {
            let Some(binary) = find_tool("firecracker") else {
                tracing::warn!("no firecracker binary: vms cannot start");
                return None;
            };
            let driver = FirecrackerDriver::new(binary, accel);
            // Jailed as the VM's own user when the jailer is there and
            // VMMs are to run as their own users.
            match (find_tool("jailer"), vmm_uid_base) {
                (Some(jailer), Some(uid_base)) => Arc::new(driver.with_jailer(JailerConfig {
                    binary: jailer,
                    chroot_base: jail_base.to_path_buf(),
                    uid_base,
                })),
                _ => {
                    tracing::warn!(
                        "firecracker runs unjailed, as root: no jailer, or vmm_uid_base = 0"
                    );
                    Arc::new(driver)
                }
            }
        }
        _ => {
            let Some(binary) = find_tool("qemu-system-x86_64") else {
                tracing::warn!(
                    "no qemu-system-x86_64: vms cannot start (apt-get install qemu-system-x86)"
                );
                return None;
            };
            Arc::new(QemuDriver::new(QemuConfig {
                binary,
                accel,
                tsc_khz: tsc_khz(),
                // No vhost-vsock needed: the serial port works everywhere.
                agent: AgentTransport::Serial,
                tcg_tb_size_mib: TCG_TB_SIZE_MIB,
                tcg_threads,
                uid_base: vmm_uid_base,
            }))
        }
    };
    let mut capabilities: Vec<Arc<dyn Capability>> = Vec::new();
    capabilities.push(ports);
    if let Some(net) = network {
        capabilities.push(Arc::new(NetworkCapability::new(net)));
        // SSH needs the guest on the network.
        if let Some(keys) = ssh {
            capabilities.push(Arc::new(SshCapability::new(keys)));
        }
    }
    capabilities.push(Arc::new(SharesCapability::new(
        kind == "qemu",
        find_tool("virtiofsd"),
    )));
    // The disks, in device order after the rootfs: vdb, vdc.
    capabilities.push(Arc::new(SystemDisk));
    capabilities.push(Arc::new(WorkDisk));
    Some(Runtime {
        vmm,
        agents: Arc::new(HostAgentLink::new()),
        capabilities,
    })
}
