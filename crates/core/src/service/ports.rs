//! Published ports as the flows see them: checked against every other
//! VM's under the create lock (a host port and protocol belong to one
//! VM), stored with the VM, and applied live by the capabilities
//! (`config_changed`) when it runs.

use super::{Banger, ServiceError};
use crate::ports::{check_distinct, check_free, PortError, PortForward, Protocol};
use crate::spec::SpecError;
use crate::vm::{Vm, VmState};

impl Banger {
    /// A VM's published ports.
    pub fn ports(&self, id_or_name: &str) -> Result<Vec<PortForward>, ServiceError> {
        Ok(self.find_vm(id_or_name)?.spec.ports)
    }

    /// Publishes one more host port of a VM (forwarded at once if it runs).
    pub async fn add_port(
        &self,
        id_or_name: &str,
        forward: PortForward,
    ) -> Result<Vec<PortForward>, ServiceError> {
        self.change_ports(id_or_name, |vm, ports| {
            ports.push(forward);
            check_distinct(ports).map_err(|err| match err {
                PortError::Twice { port, protocol } => PortError::Taken {
                    port,
                    protocol,
                    by: vm.to_string(),
                },
                other => other,
            })
        })
        .await
    }

    /// Stops publishing a host port of a VM.
    pub async fn remove_port(
        &self,
        id_or_name: &str,
        host_port: u16,
        protocol: Protocol,
    ) -> Result<Vec<PortForward>, ServiceError> {
        self.change_ports(id_or_name, |vm, ports| {
            let before = ports.len();
            ports.retain(|p| p.key() != (host_port, protocol));
            if ports.len() == before {
                return Err(PortError::NotPublished {
                    vm: vm.to_string(),
                    port: host_port,
                    protocol: protocol.as_str(),
                });
            }
            Ok(())
        })
        .await
    }

    async fn change_ports(
        &self,
        id_or_name: &str,
        change: impl FnOnce(&str, &mut Vec<PortForward>) -> Result<(), PortError>,
    ) -> Result<Vec<PortForward>, ServiceError> {
        let id = self.find_vm(id_or_name)?.id;
        // Other VMs' ports may not change under this check.
        let _create_lock = self.create_lock.lock().await;
        let _lock = self.vm_locks.lock(&id).await;
        let mut vm = self.find_vm(&id)?;
        let mut spec = vm.spec.clone();
        change(&vm.name, &mut spec.ports).map_err(SpecError::from)?;
        check_free(&self.store.list_vms()?, &vm.id, &spec.ports).map_err(SpecError::from)?;
        self.check_spec(&spec)?;
        vm.spec = spec;
        vm.updated_at_ms = self.clock.now_ms();
        self.store.update_vm(&vm)?;
        self.apply_config(&vm).await?;
        Ok(vm.spec.ports)
    }

    /// Tells the capabilities of a running VM that its settings changed.
    pub(super) async fn apply_config(&self, vm: &Vm) -> Result<(), ServiceError> {
        if vm.state != VmState::Running {
            return Ok(());
        }
        let Some(runtime) = self.runtime.clone() else {
            return Ok(());
        };
        let image = self.image_of(vm)?;
        let ctx = self.context(vm, &image);
        for cap in &runtime.capabilities {
            cap.config_changed(&ctx)
                .await
                .map_err(|e| ServiceError::Runtime {
                    name: vm.name.clone(),
                    message: e.to_string(),
                })?;
        }
        Ok(())
    }
}
