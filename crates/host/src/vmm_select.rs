//! Which VMM a VM runs under. Config says `auto`, `firecracker` or `qemu`;
//! `auto` takes Firecracker when its binary is found and KVM is usable
//! (Firecracker has no software emulation), and QEMU otherwise.

use std::path::PathBuf;

use crate::accel::Accel;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmmPreference {
    Auto,
    Firecracker,
    Qemu,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmmKind {
    Firecracker,
    Qemu,
}

impl VmmKind {
    pub fn as_str(self) -> &'static str {
        match self {
            VmmKind::Firecracker => "firecracker",
            VmmKind::Qemu => "qemu",
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SelectError {
    #[error("unknown vmm {0:?}: use auto, firecracker or qemu")]
    Unknown(String),
    #[error("vmm firecracker is configured but no firecracker binary was found")]
    FirecrackerMissing,
    #[error("vmm firecracker is configured but kvm is not usable: {0}")]
    NoKvm(String),
    #[error("vmm qemu is configured but qemu-system-x86_64 was not found")]
    QemuMissing,
}

impl SelectError {
    pub fn hint(&self) -> &'static str {
        match self {
            SelectError::Unknown(_) => "set vmm = \"auto\" in the config",
            SelectError::FirecrackerMissing => {
                "install firecracker into $PATH, or set vmm = \"auto\" to fall back to qemu"
            }
            SelectError::NoKvm(_) => "firecracker needs kvm; set vmm = \"auto\" or \"qemu\" here",
            SelectError::QemuMissing => "install it: apt-get install qemu-system-x86",
        }
    }
}

impl std::str::FromStr for VmmPreference {
    type Err = SelectError;

    fn from_str(text: &str) -> Result<Self, SelectError> {
        match text {
            "auto" => Ok(VmmPreference::Auto),
            "firecracker" => Ok(VmmPreference::Firecracker),
            "qemu" => Ok(VmmPreference::Qemu),
            other => Err(SelectError::Unknown(other.to_string())),
        }
    }
}

/// What selection looks at.
#[derive(Debug, Clone)]
pub struct VmmFacts {
    pub firecracker: Option<PathBuf>,
    pub qemu: Option<PathBuf>,
    pub accel: Accel,
}

/// The VMM to use, with the reason in words (for logs and doctor).
pub fn select(pref: VmmPreference, facts: &VmmFacts) -> Result<(VmmKind, String), SelectError> {
    let kvm_reason = match &facts.accel {
        Accel::Kvm => None,
        Accel::Tcg { reason } => Some(reason.clone()),
    };
    match pref {
        VmmPreference::Firecracker => {
            facts
                .firecracker
                .as_ref()
                .ok_or(SelectError::FirecrackerMissing)?;
            if let Some(reason) = kvm_reason {
                return Err(SelectError::NoKvm(reason));
            }
            Ok((VmmKind::Firecracker, "configured".into()))
        }
        VmmPreference::Qemu => {
            facts.qemu.as_ref().ok_or(SelectError::QemuMissing)?;
            Ok((VmmKind::Qemu, "configured".into()))
        }
        VmmPreference::Auto => match (&facts.firecracker, kvm_reason) {
            (Some(_), None) => Ok((
                VmmKind::Firecracker,
                "firecracker found and kvm usable".into(),
            )),
            (fc, reason) => {
                facts.qemu.as_ref().ok_or(SelectError::QemuMissing)?;
                let why = match (fc, reason) {
                    (None, _) => "no firecracker binary".to_string(),
                    (Some(_), Some(reason)) => format!("kvm unusable ({reason})"),
                    (Some(_), None) => unreachable!("handled above"),
                };
                Ok((VmmKind::Qemu, why))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(fc: bool, qemu: bool, kvm: bool) -> VmmFacts {
        VmmFacts {
            firecracker: fc.then(|| "/usr/bin/firecracker".into()),
            qemu: qemu.then(|| "/usr/bin/qemu-system-x86_64".into()),
            accel: if kvm {
                Accel::Kvm
            } else {
                Accel::Tcg {
                    reason: "pvm".into(),
                }
            },
        }
    }

    #[test]
    fn auto_prefers_firecracker_only_with_kvm() {
        let pick = |f| select(VmmPreference::Auto, &f).map(|(k, _)| k);
        assert_eq!(pick(facts(true, true, true)), Ok(VmmKind::Firecracker));
        assert_eq!(pick(facts(true, true, false)), Ok(VmmKind::Qemu));
        assert_eq!(pick(facts(false, true, true)), Ok(VmmKind::Qemu));
        assert_eq!(
            pick(facts(false, false, true)),
            Err(SelectError::QemuMissing)
        );
        let (_, why) = select(VmmPreference::Auto, &facts(true, true, false)).unwrap();
        assert_eq!(why, "kvm unusable (pvm)");
    }

    #[test]
    fn explicit_choices_are_checked_before_anything_runs() {
        assert_eq!(
            select(VmmPreference::Firecracker, &facts(false, true, true)),
            Err(SelectError::FirecrackerMissing)
        );
        assert_eq!(
            select(VmmPreference::Firecracker, &facts(true, true, false)),
            Err(SelectError::NoKvm("pvm".into()))
        );
        assert_eq!(
            select(VmmPreference::Qemu, &facts(true, false, true)),
            Err(SelectError::QemuMissing)
        );
        assert_eq!("qemu".parse(), Ok(VmmPreference::Qemu));
        assert!("xen".parse::<VmmPreference>().is_err());
    }
}
