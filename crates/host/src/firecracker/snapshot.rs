//! The driver's snapshot side: pause and resume (`PATCH /vm`), a full
//! snapshot (`PUT /snapshot/create`: the state and a whole copy of the
//! memory, each in a file of its own), and a restore: a fresh Firecracker
//! given its metrics file and `PUT /snapshot/load` with the memory file
//! mapped copy-on-write, the new VM's TAP and vsock socket in place of
//! the saved ones, resumed at once.
//!
//! A loaded machine opens its disks by the paths it was saved with, so
//! those are the same for every VM: relative to the VM's directory
//! (Firecracker's working directory) or, jailed, the chroot's fixed
//! names. Jailed, the files are written and read inside the chroot and
//! moved out or linked in by the driver.

use std::path::{Path, PathBuf};

use banger_core::vmm::{MachineSpec, VmmError, VmmHandle};

use super::api::VmRunState;
use super::client::FirecrackerClient;
use super::driver::FirecrackerDriver;
use super::jail::{self, Jail};
use super::plan::{restore_requests, snapshot_create_request, vm_state_request};

/// A snapshot of a few GiB of memory is written at disk speed.
const SAVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

fn control(err: impl std::fmt::Display) -> VmmError {
    VmmError::Control(err.to_string())
}

impl FirecrackerDriver {
    /// The jail a running VM's Firecracker lies in, when jailed.
    fn jail_of(&self, handle: &VmmHandle) -> Option<Jail> {
        let jailer = self.jailer.as_ref()?;
        let dir = Jail::of_api_socket(jailer, &handle.control_socket)?;
        let uid = std::fs::metadata(
            dir.join("root")
                .join(jail::API_SOCKET.trim_start_matches('/')),
        )
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
        .ok()?;
        Some(Jail {
            root: dir.join("root"),
            dir,
            uid,
            gid: uid,
        })
    }

    pub(super) async fn set_run_state(
        &self,
        handle: &VmmHandle,
        state: VmRunState,
    ) -> Result<(), VmmError> {
        FirecrackerClient::new(&handle.control_socket)
            .send(&vm_state_request(state))
            .await
            .map(drop)
            .map_err(control)
    }

    /// Saves the paused machine: its state to `state`, its memory to
    /// `memory`, both new files.
    pub(super) async fn save_snapshot(
        &self,
        handle: &VmmHandle,
        state: &Path,
        memory: &Path,
    ) -> Result<(), VmmError> {
        for path in [state, memory] {
            if path.exists() {
                return Err(control(format!("{} exists", path.display())));
            }
        }
        let jail = self.jail_of(handle);
        let (inner_state, inner_memory) = match &jail {
            Some(jail) => {
                // Made for its user: the chroot's root is not writable to it.
                for inner in [jail::SNAPSHOT_STATE, jail::SNAPSHOT_MEMORY] {
                    jail.make_file(inner).map_err(control)?;
                }
                (
                    PathBuf::from(jail::SNAPSHOT_STATE),
                    PathBuf::from(jail::SNAPSHOT_MEMORY),
                )
            }
            None => (state.to_path_buf(), memory.to_path_buf()),
        };
        let request = snapshot_create_request(&inner_state, &inner_memory).map_err(control)?;
        let saved = FirecrackerClient::new(&handle.control_socket)
            .with_timeout(SAVE_TIMEOUT)
            .send(&request)
            .await
            .map(drop)
            .map_err(control);
        match (&jail, saved) {
            (Some(jail), Ok(())) => {
                jail.take_out(jail::SNAPSHOT_STATE, state)
                    .and_then(|()| jail.take_out(jail::SNAPSHOT_MEMORY, memory))
                    .map_err(control)?;
                Ok(())
            }
            (Some(jail), Err(err)) => {
                for inner in [jail::SNAPSHOT_STATE, jail::SNAPSHOT_MEMORY] {
                    let _ = std::fs::remove_file(jail.host_path(inner));
                }
                Err(err)
            }
            (None, outcome) => {
                if outcome.is_err() {
                    let _ = std::fs::remove_file(state);
                    let _ = std::fs::remove_file(memory);
                }
                outcome
            }
        }
    }

    /// Starts a Firecracker that takes up the machine saved in `state`
    /// (its memory in `spec.memory_file`) as `spec`'s VM.
    pub(super) async fn restore_snapshot(
        &self,
        spec: &MachineSpec,
        state: &Path,
    ) -> Result<VmmHandle, VmmError> {
        let memory = spec
            .memory_file
            .as_ref()
            .map(|m| m.path.clone())
            .ok_or_else(|| {
                VmmError::Preflight("a firecracker snapshot needs its memory file".into())
            })?;
        for path in [state, memory.as_path()] {
            if !path.is_file() {
                return Err(VmmError::Preflight(format!(
                    "{} does not exist",
                    path.display()
                )));
            }
        }
        let cfg = self.preflight(spec)?;
        let jailed = self.jailer.is_some();
        let links: Vec<(&Path, &str)> = if jailed {
            vec![
                (state, jail::SNAPSHOT_STATE),
                (memory.as_path(), jail::SNAPSHOT_MEMORY),
            ]
        } else {
            Vec::new()
        };
        let spawned = self.spawn(spec, &cfg, false, &links).await?;
        let (inner_state, inner_memory) = if jailed {
            (
                PathBuf::from(jail::SNAPSHOT_STATE),
                PathBuf::from(jail::SNAPSHOT_MEMORY),
            )
        } else {
            (state.to_path_buf(), memory.clone())
        };
        let handle = spawned.handle;
        let client = FirecrackerClient::new(&handle.control_socket);
        let restored = async {
            self.wait_for_api(&client, &handle, (&cfg.log_path, spawned.log_start))
                .await?;
            let requests = restore_requests(&spawned.seen, &inner_state, &inner_memory)
                .map_err(|e| e.to_string())?;
            for request in requests {
                client
                    .clone()
                    .with_timeout(SAVE_TIMEOUT)
                    .send(&request)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            self.confirm_running(&client).await
        }
        .await;
        self.started_or_cleaned(handle, restored, &cfg.log_path)
            .await
    }
}
