//! `/v1/verify`: finds banger-owned host objects (VMM processes, VM
//! links, nft rules, DNS records, sockets, files, snapshot files) that
//! no live VM or snapshot owns.
//! Idle pool devices are listed as capacity; VMMs running as root as
//! warnings.

use std::collections::HashSet;
use std::os::unix::fs::FileTypeExt;

use axum::extract::State;
use axum::Json;
use banger_proto::verify::{Leak, VerifyReport};

use super::error::HttpError;
use super::AppState;

fn leak(kind: &str, name: impl Into<String>, detail: impl Into<String>) -> Leak {
    Leak {
        kind: kind.into(),
        name: name.into(),
        detail: detail.into(),
    }
}

#[utoipa::path(get, path = "/v1/verify", tag = "system",
    responses((status = 200, description = "What is left over; empty leaks when clean", body = VerifyReport)))]
pub async fn verify(State(state): State<AppState>) -> Result<Json<VerifyReport>, HttpError> {
    let vms = state.banger.list_vms()?;
    let known: HashSet<String> = vms.iter().map(|v| v.id.clone()).collect();
    let live: Vec<&banger_core::vm::Vm> = vms.iter().filter(|v| v.handle.is_some()).collect();
    let live_ids: Vec<String> = live.iter().map(|v| v.id.clone()).collect();
    let mut leaks = Vec::new();
    let mut warnings = Vec::new();

    for (pid, id) in banger_host::shares::banger_virtiofsds(&state.banger.settings().run_dir) {
        if !live_ids.contains(&id) {
            leaks.push(leak(
                "process",
                format!("pid {pid}"),
                format!("a virtiofsd of vm {id}, which is not running"),
            ));
        }
    }
    let served = state.ports.served();
    for vm in &live {
        let forwarded = served.get(&vm.id).cloned().unwrap_or_default();
        for port in vm.spec.ports.iter().filter(|p| !forwarded.contains(p)) {
            leaks.push(leak(
                "port",
                port.to_string(),
                format!("published by vm {}, which runs, but not forwarded", vm.name),
            ));
        }
    }
    for (id, forwards) in &served {
        if !live_ids.contains(id) {
            for port in forwards {
                leaks.push(leak(
                    "port",
                    port.to_string(),
                    format!("forwarded for vm {id}, which is not running"),
                ));
            }
        }
    }
    let jail_base = &state.jail_base;
    for (id, dir) in banger_host::firecracker::jail::jails(jail_base) {
        if !live_ids.contains(&id) {
            leaks.push(leak(
                "jail",
                dir.display().to_string(),
                format!("the firecracker jail of vm {id}, which is not running"),
            ));
        }
    }
    for (pid, id) in banger_host::process::banger_vmms(&state.banger.settings().run_dir, jail_base)
    {
        if live_ids.contains(&id) {
            if banger_host::process::euid(pid) == Some(0) {
                warnings.push(leak(
                    "root_vmm",
                    format!("pid {pid}"),
                    format!("the vmm of vm {id} runs as root"),
                ));
            }
        } else {
            leaks.push(leak(
                "process",
                format!("pid {pid}"),
                format!("a vmm of vm {id}, which is not running"),
            ));
        }
    }
    let run_vms = state.banger.settings().run_dir.join("vms");
    if let Ok(dirs) = std::fs::read_dir(&run_vms) {
        for dir in dirs.flatten() {
            let id = dir.file_name().to_string_lossy().into_owned();
            if live_ids.contains(&id) {
                continue;
            }
            for file in std::fs::read_dir(dir.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                if file.file_type().is_ok_and(|t| t.is_socket()) {
                    leaks.push(leak(
                        "socket",
                        file.path().display().to_string(),
                        format!("vm {id} is not running"),
                    ));
                }
            }
        }
    }
    let snapshots: HashSet<String> = state
        .banger
        .list_snapshots()?
        .into_iter()
        .map(|s| s.id)
        .collect();
    let snapshots_dir = &state.banger.settings().snapshots_dir;
    if let Ok(dirs) = std::fs::read_dir(snapshots_dir) {
        for dir in dirs.flatten() {
            let name = dir.file_name().to_string_lossy().into_owned();
            let staging = name == ".staging"
                && std::fs::read_dir(dir.path()).is_ok_and(|mut d| d.next().is_some());
            if staging || (name != ".staging" && !snapshots.contains(&name)) {
                leaks.push(leak(
                    "snapshot_files",
                    dir.path().display().to_string(),
                    "snapshot files no snapshot owns",
                ));
            }
        }
    }
    for id in &snapshots {
        if !snapshots_dir
            .join(id)
            .join(banger_core::snapshot::STATE_FILE)
            .is_file()
        {
            leaks.push(leak(
                "snapshot",
                id.clone(),
                "a snapshot whose saved machine is missing",
            ));
        }
    }
    if let Ok(dirs) = std::fs::read_dir(&state.banger.settings().vms_dir) {
        for dir in dirs.flatten() {
            let id = dir.file_name().to_string_lossy().into_owned();
            if !known.contains(&id) {
                leaks.push(leak(
                    "file",
                    dir.path().display().to_string(),
                    "no vm has this id",
                ));
            }
        }
    }
    let images = state
        .images
        .list()
        .map_err(banger_core::ServiceError::from)?;
    let image_ids: HashSet<String> = images.iter().map(|i| i.id.clone()).collect();
    if let Ok(dirs) = std::fs::read_dir(state.state_dir.join("images")) {
        for dir in dirs.flatten() {
            let name = dir.file_name().to_string_lossy().into_owned();
            if !name.starts_with('.') && !image_ids.contains(&name) {
                leaks.push(leak(
                    "file",
                    dir.path().display().to_string(),
                    "no image has this id",
                ));
            }
        }
    }

    let mut capacity = Vec::new();
    if let Some(net) = &state.network {
        capacity = net.idle();
        for name in net.stray_vm_links(&live_ids).await.unwrap_or_default() {
            leaks.push(leak("link", name, "a vm device no running vm owns"));
        }
        let live_names: Vec<&str> = live.iter().map(|v| v.name.as_str()).collect();
        for (name, ip) in net.dns().records() {
            if !live_names.contains(&name.as_str()) {
                leaks.push(leak(
                    "dns",
                    format!("{name}.vm"),
                    format!("{ip}: no running vm has this name"),
                ));
            }
        }
        let nat_live: Vec<std::net::Ipv4Addr> = live
            .iter()
            .filter(|v| v.spec.nat)
            .map(|v| v.guest_ip)
            .collect();
        let listing = banger_host::net::nft::list_table(&net.config().table)
            .await
            .unwrap_or_default();
        for ip in banger_host::net::nft::masqueraded(&listing) {
            if !nat_live.contains(&ip) {
                leaks.push(leak(
                    "nft",
                    format!("masquerade {ip}"),
                    "no running vm with nat has this address",
                ));
            }
        }
    }
    Ok(Json(VerifyReport {
        leaks,
        capacity,
        warnings,
    }))
}
