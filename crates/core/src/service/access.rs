//! Who may SSH into a VM besides the daemon: the public keys of the
//! users who made it (`vm create`/`vm run` offer the caller's key) or
//! were let in (`vm ssh` offers it), kept in the VM's directory
//! (`ssh_keys`). The ssh capability puts them in the guest at every
//! start; a running guest gets them at once through its agent.

use std::path::Path;

use tokio::sync::mpsc;

use super::{Banger, ServiceError};
use crate::agent::ExecChunk;
use crate::vm::{Vm, VmState};

/// In a VM's directory: one public key per line.
pub const VM_SSH_KEYS_FILE: &str = "ssh_keys";
/// Where the guest's sshd reads them (besides the daemon's own keys).
pub const GUEST_SSH_KEYS_FILE: &str = "/etc/ssh/banger_user_keys";
/// Keys one VM keeps at most.
pub const MAX_VM_SSH_KEYS: usize = 64;

impl Banger {
    /// Lets `keys` into a VM: kept for its next starts and, when it runs,
    /// in the guest at once. Keys it already has change nothing.
    pub async fn authorize_ssh_keys(
        &self,
        id_or_name: &str,
        keys: &[String],
    ) -> Result<Vm, ServiceError> {
        let id = self.find_vm(id_or_name)?.id;
        let _lock = self.vm_locks.lock(&id).await;
        let vm = self.find_vm(&id)?;
        let Some(all) = add_keys(&self.vm_dir(&vm), &vm.name, keys)? else {
            return Ok(vm);
        };
        if vm.state == VmState::Running {
            self.push_keys(&vm, all).await?;
        }
        Ok(vm)
    }

    /// Writes the guest's key file through its agent (`tee`, as root).
    async fn push_keys(&self, vm: &Vm, all: String) -> Result<(), ServiceError> {
        let (runtime, vm, handle) = self.running_vm(&vm.id)?;
        let mut context = self.exec_context(&vm)?.0;
        context.user = Some("root".into());
        let (tx, mut rx) = mpsc::channel(16);
        let argv = vec!["tee".to_string(), GUEST_SSH_KEYS_FILE.to_string()];
        let ran = runtime
            .agents
            .exec(&handle, argv, context, Some(all.into_bytes()), tx);
        let mut exit = None;
        let mut stderr = Vec::new();
        let collect = async {
            while let Some(chunk) = rx.recv().await {
                match chunk {
                    ExecChunk::Exit { code, .. } => exit = code,
                    ExecChunk::Stderr(bytes) if stderr.len() < 4096 => stderr.extend(bytes),
                    _ => {}
                }
            }
        };
        let (ran, ()) = tokio::join!(ran, collect);
        let failed = |message: String| ServiceError::Runtime {
            name: vm.name.clone(),
            message: format!("cannot let the key in: {message}"),
        };
        ran.map_err(|e| failed(e.to_string()))?;
        match exit {
            Some(0) => Ok(()),
            _ => Err(failed(format!(
                "tee {GUEST_SSH_KEYS_FILE} failed: {}",
                String::from_utf8_lossy(&stderr).trim()
            ))),
        }
    }
}

/// Adds the keys `dir` does not hold yet; the whole file when it changed.
pub(super) fn add_keys(
    dir: &Path,
    vm: &str,
    keys: &[String],
) -> Result<Option<String>, ServiceError> {
    let path = dir.join(VM_SSH_KEYS_FILE);
    let io = |e: std::io::Error| ServiceError::Runtime {
        name: vm.to_string(),
        message: format!("cannot keep its ssh keys in {}: {e}", path.display()),
    };
    let old = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(io(e)),
    };
    let mut lines: Vec<String> = old.lines().map(String::from).collect();
    let mut changed = false;
    for key in keys {
        let key = key.trim();
        if !key.is_empty() && !lines.iter().any(|l| l == key) {
            lines.push(key.to_string());
            changed = true;
        }
    }
    if !changed {
        return Ok(None);
    }
    if lines.len() > MAX_VM_SSH_KEYS {
        return Err(ServiceError::Refused(crate::capability::Refusal {
            message: format!("vm {vm} already lets in {MAX_VM_SSH_KEYS} ssh keys"),
            hint: "recreate the vm to start from none".into(),
        }));
    }
    let text = lines.join("\n") + "\n";
    std::fs::create_dir_all(dir).map_err(io)?;
    let tmp = dir.join(".ssh_keys.tmp");
    std::fs::write(&tmp, &text)
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(io)?;
    Ok(Some(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_kept_once_each_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let a = "ssh-ed25519 AAAAC3a alice@host".to_string();
        let b = "ssh-ed25519 AAAAC3b bob@host".to_string();
        let all = add_keys(dir.path(), "box", std::slice::from_ref(&a))
            .unwrap()
            .unwrap();
        assert_eq!(all, format!("{a}\n"));
        assert_eq!(
            add_keys(dir.path(), "box", std::slice::from_ref(&a)).unwrap(),
            None
        );
        let all = add_keys(dir.path(), "box", &[b.clone(), a.clone()])
            .unwrap()
            .unwrap();
        assert_eq!(all, format!("{a}\n{b}\n"));
        let many: Vec<String> = (0..MAX_VM_SSH_KEYS)
            .map(|i| format!("ssh-ed25519 AAAA{i}"))
            .collect();
        assert!(matches!(
            add_keys(dir.path(), "box", &many),
            Err(ServiceError::Refused(_))
        ));
        assert_eq!(
            std::fs::read_to_string(dir.path().join(VM_SSH_KEYS_FILE)).unwrap(),
            format!("{a}\n{b}\n"),
            "a refused add changes nothing"
        );
    }
}
