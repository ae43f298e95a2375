//! VM resources as they cross the API.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::rules::{DiskBytes, GuestPath, HostPath, MemoryMib, Name, Port, SshPublicKey, Vcpus};

/// A host directory mounted in the guest (QEMU VMs; served over virtiofs
/// with the rights of the user who created the VM).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Mount {
    /// An existing directory on the host.
    pub host_dir: HostPath,
    /// Where it appears in the guest (made if missing).
    pub guest_dir: GuestPath,
    /// The guest may not write to it.
    #[serde(default)]
    pub read_only: bool,
}

impl std::str::FromStr for Mount {
    type Err = String;

    /// `HOST_DIR:GUEST_DIR[:ro]`.
    fn from_str(text: &str) -> Result<Self, String> {
        let bad =
            || format!("bad mount {text:?}: write HOST_DIR:GUEST_DIR[:ro] with absolute paths");
        let parts: Vec<&str> = text.split(':').collect();
        let (host, guest, read_only) = match parts.as_slice() {
            [host, guest] => (*host, *guest, false),
            [host, guest, "ro"] => (*host, *guest, true),
            [host, guest, "rw"] => (*host, *guest, false),
            _ => return Err(bad()),
        };
        Ok(Mount {
            host_dir: HostPath::try_from(host).map_err(|e| e.to_string())?,
            guest_dir: GuestPath::try_from(guest).map_err(|e| e.to_string())?,
            read_only,
        })
    }
}

/// A transport protocol of a published port.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
}

/// A host port forwarded to a port of the VM's guest address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PortForward {
    /// The host address to listen on; 127.0.0.1 when absent (a port is
    /// reachable from other hosts only on a non-loopback address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = Ipv4)]
    pub host_ip: Option<std::net::Ipv4Addr>,
    pub host_port: Port,
    pub guest_port: Port,
    #[serde(default)]
    pub protocol: Protocol,
}

impl std::str::FromStr for PortForward {
    type Err = String;

    /// `[HOST_IP:]HOST_PORT:GUEST_PORT[/tcp|/udp]`, as `docker run -p`.
    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || {
            format!("bad port forward {text:?}: write [HOST_IP:]HOST_PORT:GUEST_PORT[/tcp|/udp]")
        };
        let (rest, protocol) = match text.rsplit_once('/') {
            Some((rest, "tcp")) => (rest, Protocol::Tcp),
            Some((rest, "udp")) => (rest, Protocol::Udp),
            Some(_) => return Err(bad()),
            None => (text, Protocol::Tcp),
        };
        let parts: Vec<&str> = rest.split(':').collect();
        let (host_ip, host_port, guest_port) = match parts.as_slice() {
            [host, guest] => (None, *host, *guest),
            [ip, host, guest] => (Some(ip.parse().map_err(|_| bad())?), *host, *guest),
            _ => return Err(bad()),
        };
        let port = |p: &str| {
            let n: u64 = p.parse().map_err(|_| bad())?;
            Port::try_from(n).map_err(|e| e.to_string())
        };
        Ok(PortForward {
            host_ip,
            host_port: port(host_port)?,
            guest_port: port(guest_port)?,
            protocol,
        })
    }
}

impl std::fmt::Display for PortForward {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(ip) = self.host_ip {
            write!(f, "{ip}:")?;
        }
        let protocol = match self.protocol {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        };
        write!(
            f,
            "{}:{}/{protocol}",
            self.host_port.get(),
            self.guest_port.get()
        )
    }
}

/// Body of `GET /v1/vms/{vm}/ports`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PortList {
    pub ports: Vec<PortForward>,
}

/// Lifecycle state of a VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum VmState {
    Created,
    Starting,
    Running,
    Stopping,
    Stopped,
    Failed,
}

impl VmState {
    pub fn as_str(self) -> &'static str {
        match self {
            VmState::Created => "created",
            VmState::Starting => "starting",
            VmState::Running => "running",
            VmState::Stopping => "stopping",
            VmState::Stopped => "stopped",
            VmState::Failed => "failed",
        }
    }
}

/// Body of `POST /v1/vms`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VmCreateRequest {
    /// Generated (two words) when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<Name>,
    /// Image name or id; the configured default image when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vcpus: Option<Vcpus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mib: Option<MemoryMib>,
    /// Size of the `/root` work disk in bytes; the configured default
    /// when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub work_disk_bytes: Option<DiskBytes>,
    /// Size of the per-VM system overlay disk in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_disk_bytes: Option<DiskBytes>,
    #[serde(default)]
    pub nat: bool,
    /// Reserve and record the VM without booting it.
    #[serde(default)]
    pub no_start: bool,
    /// A guest address inside the bridge prefix; the next free one when
    /// absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(format = Ipv4)]
    pub guest_ip: Option<String>,
    /// Remove the VM when its boot fails instead of keeping it `failed`.
    #[serde(default)]
    pub remove_on_failure: bool,
    /// Start from this snapshot where it was, instead of booting: its
    /// image and shape (sizes other than its own are refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<Name>,
    /// Boot even when the image has a warm template of this shape.
    #[serde(default)]
    pub cold: bool,
    /// Host ports forwarded to the guest while it runs; a host port and
    /// protocol belong to one VM.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub publish: Vec<PortForward>,
    /// Host directories mounted in the guest (QEMU only), kept across
    /// restarts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<Mount>,
    /// Public keys the guest accepts for root besides the daemon's (the
    /// CLI offers its caller's own).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(max_items = 8)]
    pub ssh_keys: Vec<SshPublicKey>,
}

/// Body of `POST /v1/vms/{vm}/ssh-keys`: public keys to let into the VM
/// (at once when it runs, and at every start).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VmSshKeysRequest {
    #[schema(min_items = 1, max_items = 8)]
    pub keys: Vec<SshPublicKey>,
}

/// Wall time of one named stage of an operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StageTiming {
    pub name: String,
    pub elapsed_ms: u64,
}

/// A VM as the API reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Vm {
    pub id: String,
    pub name: String,
    pub image_id: String,
    pub image_name: String,
    pub state: VmState,
    pub vcpus: u32,
    pub memory_mib: u32,
    pub work_disk_bytes: u64,
    pub system_disk_bytes: u64,
    pub nat: bool,
    pub guest_ip: String,
    pub vsock_cid: u32,
    pub dns_name: String,
    /// RFC 3339, UTC.
    pub created_at: String,
    /// RFC 3339, UTC.
    pub updated_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Stage timings of the last create or start.
    #[serde(default)]
    pub stages: Vec<StageTiming>,
    /// Stage timings of the create (a later start does not change them).
    #[serde(default)]
    pub create_stages: Vec<StageTiming>,
    /// `qemu` or `firecracker`.
    pub vmm: String,
    /// Published ports.
    #[serde(default)]
    pub ports: Vec<PortForward>,
    /// Shared folders.
    #[serde(default)]
    pub mounts: Vec<Mount>,
}

/// Body of `GET /v1/vms`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct VmList {
    pub vms: Vec<Vm>,
}

/// Body of `PATCH /v1/vms/{vm}`: settings to change; absent ones stay.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VmUpdateRequest {
    /// Outbound NAT; applied at once to a running VM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nat: Option<bool>,
}

/// Body of `POST /v1/vms/{vm}/snapshot`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VmSnapshotRequest {
    /// `VM-xxxxxx` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<Name>,
}

/// Body of `POST /v1/vms/{vm}/promote`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VmPromoteRequest {
    /// The new image's name.
    pub name: Name,
    /// Give the image no work seed: its VMs' `/root` starts empty instead
    /// of as this VM's.
    #[serde(default)]
    pub no_work: bool,
}

/// Body of `POST /v1/vms/{vm}/fork`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VmForkRequest {
    /// How many running copies (1 when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<crate::rules::ForkCount>,
    /// The copy's name, or `NAME-1`.. for several; `VM-xxxx` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<Name>,
    /// Outbound NAT for the copies; the source's setting when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nat: Option<bool>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_forwards_in_the_docker_forms() {
        let f: PortForward = "8080:80".parse().unwrap();
        assert_eq!((f.host_ip, f.protocol), (None, Protocol::Tcp));
        assert_eq!(f.to_string(), "8080:80/tcp");
        let f: PortForward = "0.0.0.0:5353:53/udp".parse().unwrap();
        assert_eq!(f.to_string(), "0.0.0.0:5353:53/udp");
        for bad in [
            "80",
            "a:80",
            "1:2:3:4",
            "8080:80/sctp",
            "x.y:1:2",
            ":80",
            "0:80",
            "8080:70000",
        ] {
            assert!(bad.parse::<PortForward>().is_err(), "{bad}");
        }
    }
}
