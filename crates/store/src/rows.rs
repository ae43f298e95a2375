//! Conversion between records and table rows.

use std::net::Ipv4Addr;

use banger_core::image::Image;
use banger_core::spec::VmSpec;
use banger_core::store::StoreError;
use banger_core::vm::{Stage, Vm, VmState};
use banger_core::vmm::VmmHandle;
use rusqlite::Row;

pub(crate) const IMAGE_COLUMNS: &str =
    "id, name, source, kernel_path, initrd_path, rootfs_path, work_seed_path, created_at_ms, \
     vmlinux_path, manifest, parent_id, layers";

pub(crate) const VM_COLUMNS: &str = "id, name, image_id, image_name, state, vcpus, memory_mib, \
     work_disk_bytes, system_disk_bytes, nat, guest_ip, vsock_cid, created_at_ms, updated_at_ms, \
     last_error, stages, vmm, vmm_pid, vmm_start_ticks, control_socket, agent_socket, \
     create_stages, ports, mounts";

pub(crate) fn image_from_row(row: &Row<'_>) -> rusqlite::Result<Image> {
    Ok(Image {
        id: row.get(0)?,
        name: row.get(1)?,
        source: row.get(2)?,
        kernel_path: row.get::<_, String>(3)?.into(),
        initrd_path: row.get::<_, Option<String>>(4)?.map(Into::into),
        rootfs_path: row.get::<_, String>(5)?.into(),
        work_seed_path: row.get::<_, Option<String>>(6)?.map(Into::into),
        created_at_ms: row.get(7)?,
        vmlinux_path: row.get::<_, Option<String>>(8)?.map(Into::into),
        manifest: match row.get::<_, Option<String>>(9)? {
            Some(text) => Some(serde_json::from_str(&text).map_err(|e| {
                rusqlite::Error::FromSqlConversionFailure(9, rusqlite::types::Type::Text, e.into())
            })?),
            None => None,
        },
        parent_id: row.get(10)?,
        layers: {
            let text: String = row.get(11)?;
            let paths: Vec<String> = serde_json::from_str(&text).map_err(|e| {
                rusqlite::Error::FromSqlConversionFailure(11, rusqlite::types::Type::Text, e.into())
            })?;
            paths.into_iter().map(Into::into).collect()
        },
    })
}

/// The layers column: a JSON array of paths, bottom first.
pub(crate) fn encode_layers(image: &Image) -> String {
    let paths: Vec<String> = image
        .layers
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    serde_json::Value::from(paths).to_string()
}

/// The manifest column: JSON, or NULL for records without one.
pub(crate) fn encode_manifest(image: &Image) -> Result<Option<String>, StoreError> {
    image
        .manifest
        .as_ref()
        .map(serde_json::to_string)
        .transpose()
        .map_err(|e| StoreError::Corrupt(format!("cannot encode manifest: {e}")))
}

/// A VM row as stored, before its text fields are checked.
pub(crate) struct RawVm {
    vm: Vm,
    state: String,
    guest_ip: String,
    stages: String,
    create_stages: String,
    ports: String,
    mounts: String,
}

pub(crate) fn vm_from_row(row: &Row<'_>) -> rusqlite::Result<RawVm> {
    Ok(RawVm {
        vm: Vm {
            id: row.get(0)?,
            name: row.get(1)?,
            image_id: row.get(2)?,
            image_name: row.get(3)?,
            state: VmState::Created,
            spec: VmSpec {
                vcpus: row.get(5)?,
                memory_mib: row.get(6)?,
                work_disk_bytes: row.get::<_, i64>(7)? as u64,
                system_disk_bytes: row.get::<_, i64>(8)? as u64,
                nat: row.get(9)?,
                ports: Vec::new(),
                mounts: Vec::new(),
            },
            guest_ip: Ipv4Addr::UNSPECIFIED,
            vsock_cid: row.get(11)?,
            created_at_ms: row.get(12)?,
            updated_at_ms: row.get(13)?,
            last_error: row.get(14)?,
            stages: Vec::new(),
            create_stages: Vec::new(),
            vmm: row.get(16)?,
            handle: match (
                row.get::<_, Option<u32>>(17)?,
                row.get::<_, Option<i64>>(18)?,
                row.get::<_, Option<String>>(19)?,
                row.get::<_, Option<String>>(20)?,
            ) {
                (Some(pid), Some(ticks), Some(control), Some(agent)) => Some(VmmHandle {
                    kind: row.get(16)?,
                    pid,
                    start_ticks: ticks as u64,
                    control_socket: control.into(),
                    agent_socket: agent.into(),
                }),
                _ => None,
            },
        },
        state: row.get(4)?,
        guest_ip: row.get(10)?,
        stages: row.get(15)?,
        create_stages: row.get(21)?,
        ports: row.get(22)?,
        mounts: row.get(23)?,
    })
}

impl RawVm {
    pub(crate) fn check(self) -> Result<Vm, StoreError> {
        let mut vm = self.vm;
        vm.state = VmState::parse(&self.state).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        vm.guest_ip = self.guest_ip.parse().map_err(|_| {
            StoreError::Corrupt(format!(
                "vm {} has guest address {:?}",
                vm.id, self.guest_ip
            ))
        })?;
        vm.stages = decode_stages(&self.stages).ok_or_else(|| {
            StoreError::Corrupt(format!("vm {} has stages {:?}", vm.id, self.stages))
        })?;
        vm.create_stages = decode_stages(&self.create_stages).ok_or_else(|| {
            StoreError::Corrupt(format!(
                "vm {} has create stages {:?}",
                vm.id, self.create_stages
            ))
        })?;
        vm.spec.ports = serde_json::from_str(&self.ports).map_err(|e| {
            StoreError::Corrupt(format!("vm {} has ports {:?}: {e}", vm.id, self.ports))
        })?;
        vm.spec.mounts = serde_json::from_str(&self.mounts).map_err(|e| {
            StoreError::Corrupt(format!("vm {} has mounts {:?}: {e}", vm.id, self.mounts))
        })?;
        Ok(vm)
    }
}

/// Stages as `name=ms` pairs separated by commas (stage names are plain
/// identifiers).
pub(crate) fn encode_stages(stages: &[Stage]) -> String {
    stages
        .iter()
        .map(|s| format!("{}={}", s.name, s.elapsed_ms))
        .collect::<Vec<_>>()
        .join(",")
}

fn decode_stages(text: &str) -> Option<Vec<Stage>> {
    if text.is_empty() {
        return Some(Vec::new());
    }
    text.split(',')
        .map(|pair| {
            let (name, ms) = pair.split_once('=')?;
            Some(Stage {
                name: name.to_string(),
                elapsed_ms: ms.parse().ok()?,
            })
        })
        .collect()
}
