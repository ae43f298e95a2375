//! `GET /v1/vms/{vm}/stats`: what a VM uses on the host now (its VMM's
//! CPU time and memory, its disks' blocks, its NIC's bytes), read from
//! the kernel at each request (`banger_host::stats`).

use axum::extract::State;
use axum::Json;
use banger_core::capability::{SYSTEM_DISK_FILE, WORK_DISK_FILE};
use banger_core::clock::{Clock, SystemClock};
use banger_host::stats;
use banger_proto::error::ApiError;
use banger_proto::stats::VmStats;

use super::error::HttpError;
use super::params::ApiPath;
use super::AppState;

#[utoipa::path(get, path = "/v1/vms/{vm}/stats", tag = "vms",
    params(("vm" = String, Path, description = "VM name or id")),
    responses(
        (status = 200, description = "What the VM uses on the host: cumulative CPU time and memory of its VMM (while it runs), its disks' bytes on the host, its NIC's bytes", body = VmStats),
        (status = 400, description = "The path is not valid UTF-8", body = ApiError),
        (status = 404, description = "No such VM", body = ApiError)))]
pub async fn vm_stats(
    State(state): State<AppState>,
    ApiPath(vm): ApiPath<String>,
) -> Result<Json<VmStats>, HttpError> {
    let vm = state.banger.find_vm(&vm)?;
    let dir = state.banger.vm_dir(&vm);
    let usage = vm
        .handle
        .as_ref()
        .filter(|_| vm.state.is_active())
        .and_then(|h| stats::process(h.pid, h.start_ticks));
    let net = match (&state.network, &usage) {
        (Some(network), Some(_)) => stats::tap_bytes(&network.config().vm_tap(&vm.id)),
        _ => None,
    };
    Ok(Json(VmStats {
        id: vm.id.clone(),
        name: vm.name.clone(),
        state: super::convert::vm_state(vm.state),
        vcpus: vm.spec.vcpus,
        memory_mib: vm.spec.memory_mib,
        sampled_at_ms: SystemClock.now_ms(),
        cpu_ns: usage.map(|u| u.cpu_ns),
        memory_rss_bytes: usage.map(|u| u.rss_bytes),
        memory_pss_bytes: usage.and_then(|u| u.pss_bytes),
        system_disk_bytes: stats::allocated(&dir.join(SYSTEM_DISK_FILE)),
        work_disk_bytes: stats::allocated(&dir.join(WORK_DISK_FILE)),
        net_rx_bytes: net.map(|(rx, _)| rx),
        net_tx_bytes: net.map(|(_, tx)| tx),
    }))
}
