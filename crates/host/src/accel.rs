//! Is KVM usable here, and which accelerator should QEMU use?
//!
//! A `/dev/kvm` backed by the nested "PVM" hypervisor (`kvm_pvm` module)
//! hangs stock guest kernels, so it counts as unusable: QEMU then runs
//! with TCG (software emulation).

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};

/// What the host says about KVM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvmFacts {
    pub device_exists: bool,
    /// `Ok` when `/dev/kvm` opens read-write; the error text otherwise.
    pub device_open: Result<(), String>,
    /// `/sys/module/kvm_pvm` exists.
    pub pvm: bool,
}

/// The accelerator a VM will run with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    /// Software emulation, with the reason KVM was not used.
    Tcg {
        reason: String,
    },
}

/// Where to look; overridable so tests can point at a fake tree.
#[derive(Debug, Clone)]
pub struct KvmPaths {
    pub device: PathBuf,
    pub sys_module: PathBuf,
}

impl Default for KvmPaths {
    fn default() -> Self {
        KvmPaths {
            device: "/dev/kvm".into(),
            sys_module: "/sys/module".into(),
        }
    }
}

impl KvmFacts {
    pub fn probe(paths: &KvmPaths) -> Self {
        let device_exists = paths.device.exists();
        let device_open = if device_exists {
            OpenOptions::new()
                .read(true)
                .write(true)
                .open(&paths.device)
                .map(drop)
                .map_err(|e| e.to_string())
        } else {
            Err("no such device".to_string())
        };
        KvmFacts {
            device_exists,
            device_open,
            pvm: is_dir(&paths.sys_module.join("kvm_pvm")),
        }
    }

    /// The accelerator these facts allow.
    pub fn accel(&self) -> Accel {
        if !self.device_exists {
            return Accel::Tcg {
                reason: "/dev/kvm does not exist".into(),
            };
        }
        if let Err(err) = &self.device_open {
            return Accel::Tcg {
                reason: format!("/dev/kvm cannot be opened: {err}"),
            };
        }
        if self.pvm {
            return Accel::Tcg {
                reason: "/dev/kvm is the nested PVM hypervisor, which hangs stock kernels".into(),
            };
        }
        Accel::Kvm
    }
}

fn is_dir(path: &Path) -> bool {
    path.is_dir()
}

/// The host's TSC rate in kHz, from `/proc/cpuinfo` (`cpu MHz` of the
/// first CPU). Guests under TCG need it on their command line
/// (`tsc_early_khz=`) or may hang calibrating their clock.
pub fn tsc_khz() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    parse_cpu_mhz(&text)
}

fn parse_cpu_mhz(cpuinfo: &str) -> Option<u64> {
    let line = cpuinfo.lines().find(|l| l.starts_with("cpu MHz"))?;
    let mhz: f64 = line.split(':').nth(1)?.trim().parse().ok()?;
    (mhz > 0.0).then(|| (mhz * 1000.0).round() as u64)
}

#[cfg(test)]
mod tsc_tests {
    #[test]
    fn reads_cpu_mhz() {
        let text = "processor\t: 0\ncpu MHz\t\t: 2600.000\ncache size\t: 1 MB\n";
        assert_eq!(super::parse_cpu_mhz(text), Some(2_600_000));
        assert_eq!(super::parse_cpu_mhz("nothing"), None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(device_exists: bool, open: bool, pvm: bool) -> KvmFacts {
        KvmFacts {
            device_exists,
            device_open: if open {
                Ok(())
            } else {
                Err("permission denied".into())
            },
            pvm,
        }
    }

    #[test]
    fn chooses_kvm_only_when_usable() {
        assert_eq!(facts(true, true, false).accel(), Accel::Kvm);
        assert!(matches!(
            facts(false, false, false).accel(),
            Accel::Tcg { .. }
        ));
        assert!(
            matches!(facts(true, false, false).accel(), Accel::Tcg { reason } if reason.contains("permission"))
        );
        assert!(
            matches!(facts(true, true, true).accel(), Accel::Tcg { reason } if reason.contains("PVM"))
        );
    }

    #[test]
    fn probes_a_fake_tree() {
        let dir = tempfile::tempdir().unwrap();
        let paths = KvmPaths {
            device: dir.path().join("kvm"),
            sys_module: dir.path().join("module"),
        };
        std::fs::write(&paths.device, b"").unwrap();
        std::fs::create_dir_all(paths.sys_module.join("kvm_pvm")).unwrap();
        let probed = KvmFacts::probe(&paths);
        assert!(probed.device_exists && probed.device_open.is_ok() && probed.pvm);
    }
}
