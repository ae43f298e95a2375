//! The VM record and its state machine: which state changes are allowed.

use std::net::Ipv4Addr;

use crate::spec::VmSpec;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VmState {
    /// Reserved: name, address and CID are claimed; nothing exists on the host.
    Created,
    Starting,
    Running,
    Stopping,
    Stopped,
    Failed,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StateError {
    #[error("unknown vm state {0:?}")]
    Unknown(String),
    #[error("vm is {from}, it cannot become {to}")]
    Transition {
        from: &'static str,
        to: &'static str,
    },
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

    pub fn parse(text: &str) -> Result<Self, StateError> {
        Ok(match text {
            "created" => VmState::Created,
            "starting" => VmState::Starting,
            "running" => VmState::Running,
            "stopping" => VmState::Stopping,
            "stopped" => VmState::Stopped,
            "failed" => VmState::Failed,
            other => return Err(StateError::Unknown(other.to_string())),
        })
    }

    /// The allowed transitions; everything else is a bug or a bad request.
    pub fn can_become(self, to: VmState) -> bool {
        use VmState::*;
        matches!(
            (self, to),
            (Created, Starting | Stopped | Failed)
                | (Stopped | Failed, Starting)
                | (Starting, Running | Failed | Stopping)
                | (Running, Stopping | Stopped | Failed)
                | (Stopping, Stopped | Failed)
        )
    }

    /// True while a VMM process may exist for the VM.
    pub fn is_active(self) -> bool {
        matches!(
            self,
            VmState::Starting | VmState::Running | VmState::Stopping
        )
    }
}

/// Wall time of one named stage of an operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    pub name: String,
    pub elapsed_ms: u64,
}

/// A VM as banger records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vm {
    pub id: String,
    pub name: String,
    pub image_id: String,
    pub image_name: String,
    pub state: VmState,
    pub spec: VmSpec,
    pub guest_ip: Ipv4Addr,
    pub vsock_cid: u32,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub last_error: Option<String>,
    /// Stage timings of the last create or start.
    pub stages: Vec<Stage>,
    /// Stage timings of the create (kept when later starts overwrite
    /// `stages`).
    pub create_stages: Vec<Stage>,
    /// `qemu` or `firecracker`: the VMM this VM runs under.
    pub vmm: String,
    /// The running VMM, while there may be one.
    pub handle: Option<crate::vmm::VmmHandle>,
}

impl Vm {
    /// A stopped VM record of the smallest shape (unit tests).
    #[cfg(test)]
    pub(crate) fn sample(name: &str, image_id: &str) -> Vm {
        Vm {
            id: format!("vm-{name}"),
            name: name.into(),
            image_id: image_id.into(),
            image_name: "dev".into(),
            state: VmState::Stopped,
            spec: crate::spec::VmSpec {
                vcpus: 1,
                memory_mib: 256,
                work_disk_bytes: 1 << 30,
                system_disk_bytes: 1 << 30,
                nat: false,
                ports: Vec::new(),
                mounts: Vec::new(),
            },
            guest_ip: "172.29.0.2".parse().unwrap(),
            vsock_cid: 3,
            created_at_ms: 0,
            updated_at_ms: 0,
            last_error: None,
            stages: vec![],
            create_stages: vec![],
            vmm: "qemu".into(),
            handle: None,
        }
    }

    /// Moves to `to` if the state machine allows it.
    pub fn transition(&mut self, to: VmState, now_ms: i64) -> Result<(), StateError> {
        if !self.state.can_become(to) {
            return Err(StateError::Transition {
                from: self.state.as_str(),
                to: to.as_str(),
            });
        }
        self.state = to;
        self.updated_at_ms = now_ms;
        Ok(())
    }

    /// The VM's DNS name.
    pub fn dns_name(&self) -> String {
        format!("{}.vm", self.name)
    }
}

/// A fresh random VM id: 16 lowercase hex digits.
pub fn new_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

#[cfg(test)]
mod tests {
    use super::VmState::*;
    use super::*;

    #[test]
    fn state_machine() {
        assert!(Created.can_become(Stopped));
        assert!(Created.can_become(Starting));
        assert!(Stopped.can_become(Starting));
        assert!(!Stopped.can_become(Running));
        assert!(!Running.can_become(Created));
        for s in [Created, Starting, Running, Stopping, Stopped, Failed] {
            assert_eq!(VmState::parse(s.as_str()).unwrap(), s);
        }
        assert!(VmState::parse("zombie").is_err());
    }

    #[test]
    fn ids_are_hex() {
        let id = new_id();
        assert_eq!(id.len(), 16);
        assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
    }
}
