//! `vm cp`'s guest side as the flows see it: an archive unpacked at, or
//! packed from, a path in a running VM. The host side (packing and
//! unpacking host files) is the client's, done with its caller's rights;
//! the daemon only carries the archive between it and the agent.

use tokio::sync::mpsc;

use super::{Banger, ErrorKind, ServiceError};
use crate::agent::{AgentLinkError, CopyOwner};

impl Banger {
    /// Unpacks the archive arriving on `data` at `path` in a running VM:
    /// owned by the numeric owners it records when `keep_owners`, else by
    /// the VM's user (an OCI image's, or root).
    pub async fn copy_in(
        &self,
        id_or_name: &str,
        path: &str,
        keep_owners: bool,
        data: mpsc::Receiver<Result<Vec<u8>, String>>,
    ) -> Result<(), ServiceError> {
        let (runtime, vm, handle) = self.running_vm(id_or_name)?;
        check_path(&vm.name, path)?;
        let owner = if keep_owners {
            CopyOwner::Keep
        } else {
            CopyOwner::User(self.exec_context(&vm)?.0.user)
        };
        let copied = runtime
            .agents
            .copy_in(&handle, path.to_string(), owner, data)
            .await;
        copied.map_err(|err| copy_error(&vm.name, path, err))
    }

    /// Packs `path` in a running VM and sends the archive to `out`.
    pub async fn copy_out(
        &self,
        id_or_name: &str,
        path: &str,
        out: mpsc::Sender<Vec<u8>>,
    ) -> Result<(), ServiceError> {
        let (runtime, vm, handle) = self.running_vm(id_or_name)?;
        check_path(&vm.name, path)?;
        let copied = runtime
            .agents
            .copy_out(&handle, path.to_string(), out)
            .await;
        copied.map_err(|err| copy_error(&vm.name, path, err))
    }
}

fn check_path(vm: &str, path: &str) -> Result<(), ServiceError> {
    if path.starts_with('/') {
        return Ok(());
    }
    Err(ServiceError::Copy {
        vm: vm.to_string(),
        kind: "relative".into(),
        path: path.to_string(),
        message: String::new(),
    })
}

fn copy_error(vm: &str, asked: &str, err: AgentLinkError) -> ServiceError {
    match err {
        AgentLinkError::Copy {
            kind,
            path,
            message,
        } => ServiceError::Copy {
            vm: vm.to_string(),
            kind,
            path: path.unwrap_or_else(|| asked.to_string()),
            message,
        },
        other => ServiceError::Runtime {
            name: vm.to_string(),
            message: other.to_string(),
        },
    }
}

/// The one-line message of a failed copy, naming the guest side.
pub(super) fn describe(vm: &str, kind: &str, path: &str, message: &str) -> String {
    match kind {
        "not_found" => format!("no such file in {vm}:{path}"),
        "not_a_directory" => format!("not a directory in {vm}:{path}"),
        "conflict" => format!("{vm}:{path} is a file: a directory cannot replace it"),
        "relative" => format!("{vm}:{path} is not an absolute path"),
        "bad_archive" => format!("{vm} refused the copy: {message}"),
        _ => format!("cannot copy in {vm}: {message}"),
    }
}

pub(super) fn kind(kind: &str) -> ErrorKind {
    match kind {
        "not_found" => ErrorKind::NotFound,
        "conflict" => ErrorKind::Conflict,
        "relative" | "bad_archive" => ErrorKind::InvalidInput,
        _ => ErrorKind::Unprocessable,
    }
}

pub(super) fn hint(vm: &str, kind: &str, path: &str) -> Option<String> {
    let parent = match path.rsplit_once('/') {
        Some(("", _)) | None => "/",
        Some((parent, _)) => parent,
    };
    Some(match kind {
        "not_found" | "not_a_directory" => {
            format!("look with `banger vm exec {vm} -- ls -la {parent}`")
        }
        "conflict" => format!("copy to another path, or remove {vm}:{path} first"),
        "relative" => format!("write it from the guest's root, like {vm}:/root/{path}"),
        _ => return None,
    })
}
