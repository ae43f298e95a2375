//! `/v1/health`, `/v1/doctor`, `/v1/shutdown`.

use axum::extract::State;
use axum::Json;
use banger_core::doctor::default_image_check;
use banger_host::doctor::{report, HostFacts};
use banger_proto::doctor::DoctorReport;
use banger_proto::system::{Health, ShutdownAccepted, VmmVersion};

use super::convert;
use super::error::HttpError;
use super::AppState;

#[utoipa::path(get, path = "/v1/health", tag = "system",
    responses((status = 200, description = "The daemon is up", body = Health)))]
pub async fn health(State(state): State<AppState>) -> Json<Health> {
    Json(Health {
        version: env!("CARGO_PKG_VERSION").to_string(),
        commit: env!("BANGER_COMMIT").to_string(),
        pid: std::process::id(),
        state_dir: state.state_dir.display().to_string(),
        uptime_ms: state.started.elapsed().as_millis() as u64,
        vmms: vmm_versions().await,
    })
}

/// The VMMs' versions, asked once (a VMM upgraded under a running
/// daemon shows after its restart).
async fn vmm_versions() -> Vec<VmmVersion> {
    static ASKED: tokio::sync::OnceCell<Vec<VmmVersion>> = tokio::sync::OnceCell::const_new();
    ASKED
        .get_or_init(|| async {
            tokio::task::spawn_blocking(|| {
                [
                    ("qemu", "qemu-system-x86_64"),
                    ("firecracker", "firecracker"),
                ]
                .into_iter()
                .map(|(name, program)| VmmVersion {
                    name: name.to_string(),
                    version: banger_host::tools::version_of(program),
                })
                .collect()
            })
            .await
            .unwrap_or_default()
        })
        .await
        .clone()
}

#[utoipa::path(get, path = "/v1/doctor", tag = "system",
    responses((status = 200, description = "Host checks; failures are in the body, not the status", body = DoctorReport)))]
pub async fn doctor(State(state): State<AppState>) -> Result<Json<DoctorReport>, HttpError> {
    let (root, vmm, guest) = (
        state.state_dir.clone(),
        state.vmm,
        state.guest_binary.clone(),
    );
    let mut checks = tokio::task::spawn_blocking(move || {
        report(&HostFacts::gather(&root, vmm).with_guest_binary(&guest))
    })
    .await
    .map_err(|e| {
        HttpError::new(
            banger_proto::error::ErrorCode::Internal,
            format!("doctor failed: {e}"),
            None,
        )
    })?;
    let default = &state.banger.settings().defaults.image;
    let found = state.images.find(default).ok();
    let in_catalog = state.images.catalog().find(default).is_some();
    checks.push(default_image_check(default, found.as_ref(), in_catalog));
    checks.push(vmm_identity_check(
        state.banger.vmm_kind(),
        state.vmm_uid_base,
    ));
    checks.extend(network_checks(&state).await);
    Ok(Json(DoctorReport {
        checks: checks.into_iter().map(convert::check).collect(),
    }))
}

#[utoipa::path(post, path = "/v1/shutdown", tag = "system",
    responses((status = 202, description = "The daemon stops after answering", body = ShutdownAccepted)))]
pub async fn shutdown(
    State(state): State<AppState>,
) -> (axum::http::StatusCode, Json<ShutdownAccepted>) {
    tracing::info!("shutdown requested over the api");
    let _ = state.shutdown.send(true);
    (
        axum::http::StatusCode::ACCEPTED,
        Json(ShutdownAccepted {
            shutting_down: true,
        }),
    )
}

/// The network's checks: its uplink, and other firewalls whose forward
/// chains drop by policy (docker, ufw, firewalld), which silently break NAT.
/// Whether VMMs run as root: QEMU drops to a user per VM unless the
/// config says otherwise; Firecracker does when its jailer is there.
fn vmm_identity_check(kind: Option<&str>, uid_base: Option<u32>) -> banger_core::doctor::Check {
    use banger_core::doctor::Check;
    let jailer = banger_host::tools::find_tool("jailer").is_some();
    match (kind, uid_base) {
        (Some("firecracker"), Some(base)) if jailer => Check::pass(
            "vmm user",
            format!("each vm's firecracker runs jailed as its own user (from uid {base})"),
        ),
        (Some("qemu"), Some(base)) => Check::pass(
            "vmm user",
            format!("each vm's qemu runs as its own user (from uid {base}) under a seccomp sandbox"),
        ),
        (Some("qemu"), None) => Check::warn(
            "vmm user",
            "qemu runs as root (vmm_uid_base = 0)",
            "remove vmm_uid_base from the config so each vm's qemu runs as its own user",
        ),
        (Some(kind), _) => Check::warn(
            "vmm user",
            format!("{kind} runs as root"),
            "a vmm escape would be root on the host: put firecracker's jailer in $PATH, or use vmm = \"qemu\"",
        ),
        (None, _) => Check::pass("vmm user", "no vmm: no vm runs"),
    }
}

async fn network_checks(state: &AppState) -> Vec<banger_core::doctor::Check> {
    use banger_core::doctor::Check;
    let Some(net) = &state.network else {
        return vec![Check::warn(
            "network",
            "disabled in the config: vms boot without a nic",
            "set [network] enabled = true to give vms addresses, dns and nat",
        )];
    };
    let cfg = net.config();
    let mut checks = vec![Check::pass(
        "network",
        format!("bridge {} at {}/{}", cfg.bridge, cfg.gateway, cfg.prefix),
    )];
    checks.push(match net.uplink() {
        Some(uplink) => Check::pass("uplink", format!("nat goes out of {uplink}")),
        None => Check::warn(
            "uplink",
            "no default route: vms with nat cannot reach the outside",
            "add a default route, or set [network] uplink in the config",
        ),
    });
    let listing = banger_host::net::nft::list_ruleset()
        .await
        .unwrap_or_default();
    let drops = banger_host::net::nft::forward_drop_chains(&listing, &cfg.table);
    checks.push(if drops.is_empty() {
        Check::pass("forwarding", "no other firewall drops forwarded traffic by policy")
    } else {
        Check::warn(
            "forwarding",
            format!("{} drop forwarded traffic by policy: vms with nat cannot get out", drops.join(", ")),
            format!(
                "let {bridge} through them, e.g. iptables -I FORWARD -i {bridge} -j ACCEPT && iptables -I FORWARD -o {bridge} -j ACCEPT",
                bridge = cfg.bridge
            ),
        )
    });
    checks
}

#[utoipa::path(get, path = "/v1/ssh", tag = "system",
    responses((status = 200, description = "How to ssh into vms", body = banger_proto::ssh::SshSettings)))]
pub async fn ssh(State(state): State<AppState>) -> Json<banger_proto::ssh::SshSettings> {
    Json(banger_proto::ssh::SshSettings {
        user: "root".into(),
        identity_file: state.ssh.identity().display().to_string(),
        known_hosts_file: state.ssh.known_hosts().display().to_string(),
    })
}
