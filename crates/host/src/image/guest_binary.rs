//! The guest binary's fitness check: it becomes `/init` of every VM's
//! initramfs, where no dynamic loader and no library exist, so it must be
//! a statically linked x86-64 ELF executable. A dynamically linked one
//! (a plain `cargo build` of the workspace puts one beside `bangerd`)
//! would make every VM of the images it went into panic at boot with
//! "No working init found"; it is refused before any image is made.

use std::path::Path;

use goblin::elf::header::{EM_X86_64, ET_DYN, ET_EXEC};
use goblin::elf::Elf;

/// A guest binary larger than this is not read (the real one is a few MiB).
const MAX_BYTES: u64 = 256 << 20;

#[derive(Debug, thiserror::Error)]
pub enum GuestBinaryError {
    #[error("the guest binary {path} is missing")]
    Missing { path: String },
    #[error("cannot read the guest binary {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("the guest binary {path} is larger than 256 MiB")]
    TooLarge { path: String },
    #[error("the guest binary {path} is not an elf executable")]
    NotElf { path: String },
    #[error("the guest binary {path} is not built for x86-64 (elf machine {machine})")]
    Machine { path: String, machine: u16 },
    #[error("the guest binary {path} is dynamically linked (it needs {interpreter}), and a vm's init has no libraries")]
    Dynamic { path: String, interpreter: String },
}

/// What to do about any of these errors.
pub const HINT: &str =
    "build the static one with scripts/build-guest, or set guest_binary in the config to its path";

/// Checks that `path` can be a VM's init: present, x86-64, static.
pub fn check(path: &Path) -> Result<(), GuestBinaryError> {
    let shown = path.display().to_string();
    let meta = match std::fs::metadata(path) {
        Ok(meta) if meta.is_file() => meta,
        Ok(_) => return Err(GuestBinaryError::Missing { path: shown }),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            return Err(GuestBinaryError::Missing { path: shown })
        }
        Err(source) => {
            return Err(GuestBinaryError::Read {
                path: shown,
                source,
            })
        }
    };
    if meta.len() > MAX_BYTES {
        return Err(GuestBinaryError::TooLarge { path: shown });
    }
    let bytes = std::fs::read(path).map_err(|source| GuestBinaryError::Read {
        path: shown.clone(),
        source,
    })?;
    fitness(&bytes, shown)
}

/// The check on the file's bytes.
fn fitness(bytes: &[u8], path: String) -> Result<(), GuestBinaryError> {
    let elf = match Elf::parse(bytes) {
        Ok(elf) if matches!(elf.header.e_type, ET_EXEC | ET_DYN) => elf,
        _ => return Err(GuestBinaryError::NotElf { path }),
    };
    if elf.header.e_machine != EM_X86_64 {
        return Err(GuestBinaryError::Machine {
            path,
            machine: elf.header.e_machine,
        });
    }
    if let Some(interpreter) = elf.interpreter {
        return Err(GuestBinaryError::Dynamic {
            path,
            interpreter: interpreter.to_string(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dynamic_executable_is_refused_with_its_interpreter() {
        // This test binary itself is a dynamically linked x86-64 program.
        let me = std::env::current_exe().unwrap();
        match check(&me) {
            Err(GuestBinaryError::Dynamic { interpreter, .. }) => {
                assert!(interpreter.contains("ld-linux"), "{interpreter}")
            }
            other => panic!("expected a dynamic refusal, got {other:?}"),
        }
    }

    #[test]
    fn an_executable_for_another_machine_is_refused() {
        let mut bytes = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        // e_machine: EM_AARCH64.
        bytes[18..20].copy_from_slice(&183u16.to_le_bytes());
        assert!(matches!(
            fitness(&bytes, "x".into()),
            Err(GuestBinaryError::Machine { machine: 183, .. })
        ));
    }

    #[test]
    fn a_missing_file_or_one_that_is_not_elf_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("banger-guest");
        assert!(matches!(
            check(&missing),
            Err(GuestBinaryError::Missing { .. })
        ));
        assert!(matches!(
            check(dir.path()),
            Err(GuestBinaryError::Missing { .. })
        ));
        std::fs::write(&missing, b"#!/bin/sh\necho not elf\n").unwrap();
        assert!(matches!(
            check(&missing),
            Err(GuestBinaryError::NotElf { .. })
        ));
    }

    #[test]
    fn the_static_guest_binary_passes() {
        // scripts/build-guest's output, which the e2e tests need anyway.
        let Some(path) = std::env::var_os("BANGER_GUEST_BINARY") else {
            assert!(
                std::env::var_os("CI").is_none(),
                "BANGER_GUEST_BINARY is not set: run scripts/build-guest"
            );
            eprintln!("skipped: BANGER_GUEST_BINARY is not set (scripts/build-guest)");
            return;
        };
        check(Path::new(&path)).unwrap();
    }
}
