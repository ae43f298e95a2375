//! What a user asks for when creating a VM (`CreateParams`), the validated
//! machine shape it becomes (`VmSpec`), and the limits that sit between.

use crate::names::{validate_name, NameError};
use crate::size::{format_size, SizeError};

// The API states the same limits (`banger_proto::rules`).
pub use banger_proto::rules::{
    DISK_BYTES_MAX as MAX_DISK_BYTES, DISK_BYTES_MIN as MIN_DISK_BYTES,
    MEMORY_MIB_MAX as MAX_MEMORY_MIB, MEMORY_MIB_MIN as MIN_MEMORY_MIB, VCPUS_MAX as MAX_VCPUS,
};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    #[error(transparent)]
    Name(#[from] NameError),
    #[error(transparent)]
    Size(#[from] SizeError),
    #[error("invalid vcpu count {0}: use 1 to {MAX_VCPUS}")]
    Vcpus(u32),
    #[error("invalid memory {0} MiB: use {MIN_MEMORY_MIB} to {MAX_MEMORY_MIB} MiB")]
    Memory(u32),
    #[error(
        "invalid {what} size {}: use {} to {}",
        format_size(*.bytes),
        format_size(MIN_DISK_BYTES),
        format_size(MAX_DISK_BYTES)
    )]
    DiskSize { what: &'static str, bytes: u64 },
    #[error("invalid guest address {0:?}: expected an IPv4 address like 172.29.0.10")]
    Address(String),
    #[error("invalid count {count}: use 1 to {max}")]
    Count { count: u32, max: u32 },
    #[error(transparent)]
    Ports(#[from] crate::ports::PortError),
    #[error(transparent)]
    Mounts(#[from] crate::mounts::MountError),
}

/// The raw create request, as it arrives from a front-end.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CreateParams {
    pub name: Option<String>,
    pub image: Option<String>,
    pub vcpus: Option<u32>,
    pub memory_mib: Option<u32>,
    pub work_disk_bytes: Option<u64>,
    pub system_disk_bytes: Option<u64>,
    pub nat: bool,
    pub no_start: bool,
    /// A guest address of the bridge prefix; the next free one when absent.
    pub guest_ip: Option<String>,
    /// Remove the VM again when its boot fails (`vm run --rm`), instead
    /// of keeping it `failed` for inspection.
    pub remove_on_failure: bool,
    /// Start from this snapshot (its image and shape) instead of booting.
    pub from: Option<String>,
    /// Boot even when the image has a warm template that fits.
    pub cold: bool,
    /// Host ports forwarded to the guest (`--publish`).
    pub ports: Vec<crate::ports::PortForward>,
    /// Host directories shared with the guest (`--mount`).
    pub mounts: Vec<crate::mounts::SharedFolder>,
    /// Public keys the guest accepts for root besides the daemon's (the
    /// creator's own).
    pub ssh_keys: Vec<String>,
}

/// Defaults applied where a request is silent (from config).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecDefaults {
    pub image: String,
    pub vcpus: u32,
    pub memory_mib: u32,
    pub work_disk_bytes: u64,
    pub system_disk_bytes: u64,
}

impl Default for SpecDefaults {
    fn default() -> Self {
        SpecDefaults {
            image: "debian-bookworm".to_string(),
            vcpus: 2,
            memory_mib: 1024,
            work_disk_bytes: 8 << 30,
            system_disk_bytes: 4 << 30,
        }
    }
}

/// The validated machine shape of a VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmSpec {
    pub vcpus: u32,
    pub memory_mib: u32,
    pub work_disk_bytes: u64,
    pub system_disk_bytes: u64,
    pub nat: bool,
    /// Host ports forwarded to the guest while it runs.
    pub ports: Vec<crate::ports::PortForward>,
    /// Host directories mounted in the guest.
    pub mounts: Vec<crate::mounts::SharedFolder>,
}

/// A create request after validation: the optional name, the image to
/// resolve and the machine shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidatedCreate {
    pub name: Option<String>,
    pub image: String,
    pub spec: VmSpec,
    pub no_start: bool,
    pub guest_ip: Option<std::net::Ipv4Addr>,
    pub ssh_keys: Vec<String>,
}

impl CreateParams {
    /// Checks every field; nothing is touched before this passes.
    pub fn validate(&self, defaults: &SpecDefaults) -> Result<ValidatedCreate, SpecError> {
        let name = match self.name.as_deref() {
            None => None,
            Some(name) => {
                validate_name(name)?;
                Some(name.to_string())
            }
        };
        let vcpus = self.vcpus.unwrap_or(defaults.vcpus);
        if vcpus == 0 || vcpus > MAX_VCPUS {
            return Err(SpecError::Vcpus(vcpus));
        }
        let memory_mib = self.memory_mib.unwrap_or(defaults.memory_mib);
        if !(MIN_MEMORY_MIB..=MAX_MEMORY_MIB).contains(&memory_mib) {
            return Err(SpecError::Memory(memory_mib));
        }
        let work_disk_bytes =
            disk_size("work disk", self.work_disk_bytes, defaults.work_disk_bytes)?;
        let system_disk_bytes = disk_size(
            "system disk",
            self.system_disk_bytes,
            defaults.system_disk_bytes,
        )?;
        crate::ports::check_distinct(&self.ports)?;
        crate::mounts::check(&self.mounts)?;
        let image = match self.image.as_deref().map(str::trim) {
            None | Some("") => defaults.image.clone(),
            Some(image) => image.to_string(),
        };
        Ok(ValidatedCreate {
            name,
            image,
            spec: VmSpec {
                vcpus,
                memory_mib,
                work_disk_bytes,
                system_disk_bytes,
                nat: self.nat,
                ports: self.ports.clone(),
                mounts: self.mounts.clone(),
            },
            no_start: self.no_start,
            ssh_keys: self.ssh_keys.clone(),
            guest_ip: match self.guest_ip.as_deref() {
                None => None,
                Some(text) => Some(
                    text.parse()
                        .map_err(|_| SpecError::Address(text.to_string()))?,
                ),
            },
        })
    }
}

fn disk_size(what: &'static str, bytes: Option<u64>, default: u64) -> Result<u64, SpecError> {
    let bytes = bytes.unwrap_or(default);
    if !(MIN_DISK_BYTES..=MAX_DISK_BYTES).contains(&bytes) {
        return Err(SpecError::DiskSize { what, bytes });
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(params: CreateParams) -> Result<ValidatedCreate, SpecError> {
        params.validate(&SpecDefaults::default())
    }

    #[test]
    fn defaults_fill_silence() {
        let v = check(CreateParams::default()).unwrap();
        assert_eq!(v.image, "debian-bookworm");
        assert_eq!(v.name, None);
        assert_eq!(v.spec.vcpus, 2);
        assert_eq!(v.spec.work_disk_bytes, 8 << 30);
    }

    #[test]
    fn rejects_bad_values() {
        let bad = [
            CreateParams {
                name: Some("Bad_Name".into()),
                ..Default::default()
            },
            CreateParams {
                vcpus: Some(0),
                ..Default::default()
            },
            CreateParams {
                vcpus: Some(1000),
                ..Default::default()
            },
            CreateParams {
                memory_mib: Some(32),
                ..Default::default()
            },
            CreateParams {
                work_disk_bytes: Some(17 << 40),
                ..Default::default()
            },
            CreateParams {
                system_disk_bytes: Some(1024),
                ..Default::default()
            },
            CreateParams {
                name: Some(String::new()),
                ..Default::default()
            },
        ];
        for params in bad {
            assert!(check(params.clone()).is_err(), "{params:?}");
        }
    }

    #[test]
    fn messages_are_one_lowercase_line() {
        let err = check(CreateParams {
            work_disk_bytes: Some(1 << 20),
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
        assert_eq!(err, "invalid work disk size 1M: use 64M to 16T");
        let err = check(CreateParams {
            memory_mib: Some(10),
            ..Default::default()
        })
        .unwrap_err();
        assert!(err.to_string().starts_with("invalid memory 10 MiB"));
    }
}
