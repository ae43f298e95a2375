//! The system call filter every virtiofsd runs under, whoever made the
//! VM: a guest may create, change and remove files in its shared folder,
//! but never make a device node or a file with a set-user-ID or
//! set-group-ID bit (a root-served folder would otherwise take setuid-root
//! binaries from guest root). The calls that could are answered `EPERM`;
//! `openat2`, whose mode the filter cannot see, answers `ENOSYS`, so
//! virtiofsd falls back to `openat`, whose mode it can. The filter is
//! installed in the child before virtiofsd starts (`crate::sandbox`) and
//! stacks under virtiofsd's own.

use std::collections::BTreeMap;

use nix::libc;
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule,
};

const SET_ID: [u64; 2] = [libc::S_ISUID as u64, libc::S_ISGID as u64];
const DEVICES: [u64; 2] = [libc::S_IFCHR as u64, libc::S_IFBLK as u64];

#[derive(Debug, thiserror::Error)]
#[error("cannot build the shared folder filter: {0}")]
pub struct FilterError(String);

fn failed(err: impl std::fmt::Display) -> FilterError {
    FilterError(err.to_string())
}

/// `arg & mask == value` on the 32-bit argument `index`.
fn masked(index: u8, mask: u64, value: u64) -> Result<SeccompCondition, FilterError> {
    SeccompCondition::new(
        index,
        SeccompCmpArgLen::Dword,
        SeccompCmpOp::MaskedEq(mask),
        value,
    )
    .map_err(failed)
}

/// One rule per bit of `bits` set in the mode argument `mode_index`,
/// each also requiring `and` (for `O_CREAT` on opens).
fn any_bit(
    mode_index: u8,
    bits: &[u64],
    and: Option<(u8, u64)>,
) -> Result<Vec<SeccompRule>, FilterError> {
    bits.iter()
        .map(|&bit| {
            let mut conditions = vec![masked(mode_index, bit, bit)?];
            if let Some((index, flag)) = and {
                conditions.push(masked(index, flag, flag)?);
            }
            SeccompRule::new(conditions).map_err(failed)
        })
        .collect()
}

/// A file type of `types` in the mode argument `mode_index`.
fn file_type(mode_index: u8, types: &[u64]) -> Result<Vec<SeccompRule>, FilterError> {
    types
        .iter()
        .map(|&kind| {
            SeccompRule::new(vec![masked(mode_index, libc::S_IFMT as u64, kind)?]).map_err(failed)
        })
        .collect()
}

fn program(rules: BTreeMap<i64, Vec<SeccompRule>>, errno: i32) -> Result<BpfProgram, FilterError> {
    let arch = std::env::consts::ARCH.try_into().map_err(failed)?;
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(errno as u32),
        arch,
    )
    .map_err(failed)?;
    filter.try_into().map_err(failed)
}

/// The filter's programs, to install in this order.
pub fn programs() -> Result<Vec<BpfProgram>, FilterError> {
    let created = Some((1, libc::O_CREAT as u64));
    let created_at = Some((2, libc::O_CREAT as u64));
    let refused: BTreeMap<i64, Vec<SeccompRule>> = [
        (libc::SYS_chmod, any_bit(1, &SET_ID, None)?),
        (libc::SYS_fchmod, any_bit(1, &SET_ID, None)?),
        (libc::SYS_fchmodat, any_bit(2, &SET_ID, None)?),
        (libc::SYS_fchmodat2, any_bit(2, &SET_ID, None)?),
        (libc::SYS_creat, any_bit(1, &SET_ID, None)?),
        (libc::SYS_open, any_bit(2, &SET_ID, created)?),
        (libc::SYS_openat, any_bit(3, &SET_ID, created_at)?),
        (libc::SYS_mknod, file_type(1, &DEVICES)?),
        (libc::SYS_mknodat, file_type(2, &DEVICES)?),
    ]
    .into_iter()
    .collect();
    let hidden: BTreeMap<i64, Vec<SeccompRule>> =
        [(libc::SYS_openat2, Vec::new())].into_iter().collect();
    Ok(vec![
        program(refused, libc::EPERM)?,
        program(hidden, libc::ENOSYS)?,
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `args` under the filter in `dir`: whether it succeeded.
    fn confined(dir: &std::path::Path, args: &[&str]) -> bool {
        let held = std::fs::File::open(dir).unwrap();
        let mut command = std::process::Command::new(args[0]);
        command.args(&args[1..]).stderr(std::process::Stdio::null());
        crate::sandbox::confine(
            &mut command,
            crate::sandbox::Confinement {
                dir: Some(std::os::fd::AsRawFd::as_raw_fd(&held)),
                programs: programs().unwrap(),
            },
        );
        command.status().unwrap().success()
    }

    #[test]
    fn set_id_bits_and_device_nodes_are_refused_and_the_rest_works() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        // Relative paths: the child starts in the held directory.
        assert!(confined(dir.path(), &["touch", "plain"]));
        assert!(confined(dir.path(), &["chmod", "0755", "plain"]));
        assert!(!confined(dir.path(), &["chmod", "u+s", "plain"]));
        assert!(!confined(dir.path(), &["chmod", "g+s", "plain"]));
        let mode = std::fs::metadata(dir.path().join("plain"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o755);
        assert!(confined(dir.path(), &["mkfifo", "fifo"]));
        assert!(!confined(dir.path(), &["mknod", "null", "c", "1", "3"]));
        assert!(!confined(dir.path(), &["mknod", "disk", "b", "7", "0"]));
        assert!(!dir.path().join("null").exists() && !dir.path().join("disk").exists());
        // Python's os.open creates with the mode given: a set-id create.
        let create = "import os; os.close(os.open('made', os.O_CREAT | os.O_WRONLY, 0o4755))";
        assert!(!confined(dir.path(), &["python3", "-c", create]));
        assert!(!dir.path().join("made").exists());
    }
}
