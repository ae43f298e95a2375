//! Domain records to wire types.

use banger_core::clock::rfc3339;
use banger_core::doctor::{Check, CheckStatus};
use banger_core::image::Image;
use banger_core::vm::{Vm, VmState};
use banger_proto as proto;

pub fn vm(vm: &Vm) -> proto::vm::Vm {
    proto::vm::Vm {
        id: vm.id.clone(),
        name: vm.name.clone(),
        image_id: vm.image_id.clone(),
        image_name: vm.image_name.clone(),
        state: vm_state(vm.state),
        vcpus: vm.spec.vcpus,
        memory_mib: vm.spec.memory_mib,
        work_disk_bytes: vm.spec.work_disk_bytes,
        system_disk_bytes: vm.spec.system_disk_bytes,
        nat: vm.spec.nat,
        guest_ip: vm.guest_ip.to_string(),
        vsock_cid: vm.vsock_cid,
        dns_name: vm.dns_name(),
        created_at: rfc3339(vm.created_at_ms),
        updated_at: rfc3339(vm.updated_at_ms),
        last_error: vm.last_error.clone(),
        vmm: vm.vmm.clone(),
        stages: stage_timings(&vm.stages),
        create_stages: stage_timings(&vm.create_stages),
        ports: vm.spec.ports.iter().map(port).collect(),
        mounts: vm
            .spec
            .mounts
            .iter()
            .filter_map(|m| {
                Some(proto::vm::Mount {
                    host_dir: m.host_dir.display().to_string().try_into().ok()?,
                    guest_dir: m.guest_dir.clone().try_into().ok()?,
                    read_only: m.read_only,
                })
            })
            .collect(),
    }
}

pub fn snapshot(s: &banger_core::snapshot::Snapshot) -> proto::snapshot::Snapshot {
    use banger_core::snapshot::SnapshotKind as K;
    proto::snapshot::Snapshot {
        id: s.id.clone(),
        name: s.name.clone(),
        kind: match s.kind {
            K::User => proto::snapshot::SnapshotKind::User,
            K::Template => proto::snapshot::SnapshotKind::Template,
            K::Fork => proto::snapshot::SnapshotKind::Fork,
        },
        source_vm: s.source_vm.clone(),
        image_id: s.image_id.clone(),
        image_name: s.image_name.clone(),
        vmm: s.vmm.clone(),
        vcpus: s.vcpus,
        memory_mib: s.memory_mib,
        work_disk_bytes: s.work_disk_bytes,
        system_disk_bytes: s.system_disk_bytes,
        nat: s.nat,
        memory_file: s.memory_file,
        disk_bytes: s.disk_bytes,
        created_at: rfc3339(s.created_at_ms as i64),
    }
}

fn stage_timings(stages: &[banger_core::vm::Stage]) -> Vec<proto::vm::StageTiming> {
    stages
        .iter()
        .map(|s| proto::vm::StageTiming {
            name: s.name.clone(),
            elapsed_ms: s.elapsed_ms,
        })
        .collect()
}

pub fn vm_state(state: VmState) -> proto::vm::VmState {
    match state {
        VmState::Created => proto::vm::VmState::Created,
        VmState::Starting => proto::vm::VmState::Starting,
        VmState::Running => proto::vm::VmState::Running,
        VmState::Stopping => proto::vm::VmState::Stopping,
        VmState::Stopped => proto::vm::VmState::Stopped,
        VmState::Failed => proto::vm::VmState::Failed,
    }
}

pub fn image(image: &Image) -> proto::image::Image {
    let path = |p: &std::path::Path| p.display().to_string();
    proto::image::Image {
        id: image.id.clone(),
        name: image.name.clone(),
        source: image.source.clone(),
        kernel_path: path(&image.kernel_path),
        initrd_path: image.initrd_path.as_deref().map(path),
        rootfs_path: path(&image.rootfs_path),
        work_seed_path: image.work_seed_path.as_deref().map(path),
        vmlinux_path: image.vmlinux_path.as_deref().map(path),
        kernel_version: image
            .manifest
            .as_ref()
            .and_then(|m| m.kernel_version.clone()),
        size_bytes: image.size_bytes(),
        manifest: image.manifest.clone(),
        created_at: rfc3339(image.created_at_ms),
        lineage: image
            .manifest
            .as_ref()
            .map(|m| m.lineage.clone())
            .unwrap_or_default(),
        layer_paths: image.layers.iter().map(|p| path(p)).collect(),
    }
}

pub fn check(check: Check) -> proto::doctor::DoctorCheck {
    proto::doctor::DoctorCheck {
        name: check.name,
        status: match check.status {
            CheckStatus::Pass => proto::doctor::CheckStatus::Pass,
            CheckStatus::Warn => proto::doctor::CheckStatus::Warn,
            CheckStatus::Fail => proto::doctor::CheckStatus::Fail,
        },
        detail: check.detail,
        hint: check.hint,
    }
}

pub fn create_params(req: proto::vm::VmCreateRequest) -> banger_core::spec::CreateParams {
    banger_core::spec::CreateParams {
        name: req.name.map(String::from),
        image: req.image,
        vcpus: req.vcpus.map(|v| v.get()),
        memory_mib: req.memory_mib.map(|m| m.get()),
        work_disk_bytes: req.work_disk_bytes.map(|b| b.get()),
        system_disk_bytes: req.system_disk_bytes.map(|b| b.get()),
        nat: req.nat,
        no_start: req.no_start,
        guest_ip: req.guest_ip,
        remove_on_failure: req.remove_on_failure,
        from: req.from.map(String::from),
        cold: req.cold,
        ssh_keys: req.ssh_keys.into_iter().map(String::from).collect(),
        ports: req.publish.iter().map(port_forward).collect(),
        // Whose rights they are served with is the handler's to say.
        mounts: req
            .mounts
            .iter()
            .map(|m| banger_core::mounts::SharedFolder {
                host_dir: m.host_dir.as_str().into(),
                guest_dir: m.guest_dir.as_str().into(),
                read_only: m.read_only,
                uid: u32::MAX,
                gid: u32::MAX,
                identity: None,
            })
            .collect(),
    }
}

pub fn port_forward(p: &proto::vm::PortForward) -> banger_core::ports::PortForward {
    use banger_core::ports::{PortForward, Protocol, DEFAULT_HOST_IP};
    PortForward {
        host_ip: p.host_ip.unwrap_or(DEFAULT_HOST_IP),
        host_port: p.host_port.get(),
        guest_port: p.guest_port.get(),
        protocol: match p.protocol {
            proto::vm::Protocol::Tcp => Protocol::Tcp,
            proto::vm::Protocol::Udp => Protocol::Udp,
        },
    }
}

pub fn port(p: &banger_core::ports::PortForward) -> proto::vm::PortForward {
    use banger_core::ports::Protocol;
    // Core ports are 1-65535 already: the checks cannot fail.
    let wire = |n: u16| proto::rules::Port::try_from(u64::from(n.max(1))).expect("a port");
    proto::vm::PortForward {
        host_ip: Some(p.host_ip),
        host_port: wire(p.host_port),
        guest_port: wire(p.guest_port),
        protocol: match p.protocol {
            Protocol::Tcp => proto::vm::Protocol::Tcp,
            Protocol::Udp => proto::vm::Protocol::Udp,
        },
    }
}
