//! Wiring what boots VMs: the VMM driver the daemon selected, the agent
//! link, and the capabilities in their order (system disk, work disk).
//! A host without the selected VMM's binary gets no runtime: the daemon
//! still serves records and says why VMs cannot start.

use std::sync::Arc;

use banger_core::capability::Capability;
use banger_core::service::Runtime;
use banger_core::vmm::Vmm;
use banger_host::accel::{tsc_khz, KvmFacts, KvmPaths};
use banger_host::agent::link::HostAgentLink;
use banger_host::disks::system::SystemDisk;
use banger_host::disks::work::WorkDisk;
use banger_host::firecracker::driver::FirecrackerDriver;
use banger_host::qemu::driver::QemuDriver;
use banger_host::qemu::plan::{AgentTransport, QemuConfig};
use banger_host::tools::find_tool;

/// TCG translation cache per VM, MiB.
const TCG_TB_SIZE_MIB: u32 = 64;

/// The runtime for VMM `kind`, or `None` with the reason logged.
pub fn build(kind: &str) -> Option<Runtime> {
    let accel = KvmFacts::probe(&KvmPaths::default()).accel();
    let vmm: Arc<dyn Vmm> = match kind {
        "firecracker" => {
            let Some(binary) = find_tool("firecracker") else {
                tracing::warn!("no firecracker binary: vms cannot start");
                return None;
            };
            Arc::new(FirecrackerDriver::new(binary, accel))
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
            }))
        }
    };
    let capabilities: Vec<Arc<dyn Capability>> = vec![Arc::new(SystemDisk), Arc::new(WorkDisk)];
    Some(Runtime {
        vmm,
        agents: Arc::new(HostAgentLink::new()),
        capabilities,
    })
}
