//! The doctor checks: facts are gathered from the host once
//! (`HostFacts::gather`), and the report is a pure function of them
//! (`report`), tested with made-up facts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use banger_core::doctor::Check;
use banger_core::size::format_size;

use crate::accel::{Accel, KvmFacts, KvmPaths};
use crate::tools::find_tool;
use crate::vmm_select::{select, VmmFacts, VmmPreference};

/// Below this much free space under the state root: warn.
pub const WARN_FREE_BYTES: u64 = 10 << 30;
/// Below this: fail.
pub const FAIL_FREE_BYTES: u64 = 1 << 30;

/// Tools checked, with the Debian package that provides each.
pub const TOOLS: &[(&str, &str)] = &[
    ("qemu-system-x86_64", "qemu-system-x86"),
    ("mkfs.ext4", "e2fsprogs"),
    ("e2fsck", "e2fsprogs"),
    ("resize2fs", "e2fsprogs"),
    ("ip", "iproute2"),
    ("nft", "nftables"),
];

/// Tools only image making needs: missing ones warn (VMs still run from
/// images made elsewhere).
pub const IMAGE_TOOLS: &[(&str, &str)] = &[("mmdebstrap", "mmdebstrap"), ("debugfs", "e2fsprogs")];

#[derive(Debug, Clone)]
pub struct HostFacts {
    pub euid: u32,
    pub kvm: KvmFacts,
    pub tools: BTreeMap<&'static str, Option<PathBuf>>,
    pub state_root: PathBuf,
    /// Free bytes available under the state root (or its nearest existing
    /// parent), or why it could not be read.
    pub free_bytes: Result<u64, String>,
    pub vmm: VmmPreference,
    /// The firecracker binary and what `firecracker --version` said.
    pub firecracker: Option<(PathBuf, Result<String, String>)>,
    pub jailer: Option<PathBuf>,
    pub image_tools: BTreeMap<&'static str, Option<PathBuf>>,
    /// The guest binary images are made with, and what its check found
    /// wrong, if anything.
    pub guest_binary: Option<(PathBuf, Result<(), String>)>,
}

impl HostFacts {
    pub fn gather(state_root: &Path, vmm: VmmPreference) -> Self {
        HostFacts {
            vmm,
            firecracker: find_tool("firecracker").map(|path| {
                let version = tool_version(&path);
                (path, version)
            }),
            jailer: find_tool("jailer"),
            euid: nix::unistd::geteuid().as_raw(),
            kvm: KvmFacts::probe(&KvmPaths::default()),
            tools: TOOLS
                .iter()
                .map(|(tool, _)| (*tool, find_tool(tool)))
                .collect(),
            state_root: state_root.to_path_buf(),
            free_bytes: free_bytes(state_root),
            image_tools: IMAGE_TOOLS
                .iter()
                .map(|(tool, _)| (*tool, find_tool(tool)))
                .collect(),
            guest_binary: None,
        }
    }

    /// Adds the guest binary to check.
    pub fn with_guest_binary(mut self, path: &Path) -> Self {
        let fitness = crate::image::guest_binary::check(path).map_err(|err| err.to_string());
        self.guest_binary = Some((path.to_path_buf(), fitness));
        self
    }
}

/// First line of `TOOL --version`.
impl HostFacts {
    /// What VMM selection needs from these facts.
    pub fn vmm_facts(&self) -> VmmFacts {
        VmmFacts {
            firecracker: self
                .firecracker
                .as_ref()
                .filter(|(_, version)| version.is_ok())
                .map(|(path, _)| path.clone()),
            qemu: self.tools.get("qemu-system-x86_64").cloned().flatten(),
            accel: self.kvm.accel(),
        }
    }
}

fn tool_version(path: &Path) -> Result<String, String> {
    let out = std::process::Command::new(path)
        .arg("--version")
        .output()
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout);
    match text.lines().next() {
        Some(line) if out.status.success() => Ok(line.trim().to_string()),
        _ => Err(format!("--version exited with {}", out.status)),
    }
}

fn free_bytes(path: &Path) -> Result<u64, String> {
    let existing = path
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"));
    let stat = nix::sys::statvfs::statvfs(existing).map_err(|e| e.to_string())?;
    Ok(stat.blocks_available() as u64 * stat.fragment_size() as u64)
}

/// Every check, in a stable order.
pub fn report(facts: &HostFacts) -> Vec<Check> {
    let mut checks = vec![privileges(facts.euid), kvm(&facts.kvm)];
    for (tool, package) in TOOLS {
        checks.push(match facts.tools.get(tool).cloned().flatten() {
            Some(path) => Check::pass(&format!("tool {tool}"), path.display().to_string()),
            None => Check::fail(
                &format!("tool {tool}"),
                format!("{tool} not found"),
                format!("install it: apt-get install {package}"),
            ),
        });
    }
    for (tool, package) in IMAGE_TOOLS {
        checks.push(match facts.image_tools.get(tool).cloned().flatten() {
            Some(path) => Check::pass(&format!("tool {tool}"), path.display().to_string()),
            None => Check::warn(
                &format!("tool {tool}"),
                format!("{tool} not found: `banger image build` cannot work"),
                format!("install it: apt-get install {package}"),
            ),
        });
    }
    if let Some((path, fitness)) = &facts.guest_binary {
        checks.push(match fitness {
            Ok(()) => Check::pass("guest binary", path.display().to_string()),
            Err(err) => Check::warn(
                "guest binary",
                format!("{err}: images cannot be made"),
                crate::image::guest_binary::HINT,
            ),
        });
    }
    checks.extend(firecracker(facts));
    checks.push(disk(&facts.state_root, &facts.free_bytes));
    checks
}

fn firecracker(facts: &HostFacts) -> Vec<Check> {
    let mut checks = Vec::new();
    checks.push(match &facts.firecracker {
        Some((path, Ok(version))) => Check::pass(
            "tool firecracker",
            format!("{version} at {}", path.display()),
        ),
        Some((path, Err(err))) => Check::warn(
            "tool firecracker",
            format!("{} does not run: {err}", path.display()),
            "reinstall firecracker, or remove it to use qemu",
        ),
        None => Check::warn(
            "tool firecracker",
            "firecracker not found: vms will use qemu",
            "for firecracker, put its release binary in $PATH",
        ),
    });
    checks.push(match &facts.jailer {
        Some(path) => Check::pass("tool jailer", path.display().to_string()),
        None => Check::warn(
            "tool jailer",
            "jailer not found: firecracker would run unjailed",
            "put the jailer from the same firecracker release in $PATH",
        ),
    });
    let vmm_facts = facts.vmm_facts();
    checks.push(match select(facts.vmm, &vmm_facts) {
        Ok((kind, why)) => Check::pass("vmm", format!("{} ({why})", kind.as_str())),
        Err(err) => Check::fail("vmm", err.to_string(), err.hint()),
    });
    checks
}

fn privileges(euid: u32) -> Check {
    if euid == 0 {
        Check::pass("privileges", "running as root")
    } else {
        Check::fail(
            "privileges",
            format!("running as uid {euid}, not root"),
            "bangerd manages the bridge, tap devices and nftables: run it as root",
        )
    }
}

fn kvm(facts: &KvmFacts) -> Check {
    match facts.accel() {
        Accel::Kvm => Check::pass("kvm", "/dev/kvm is usable: vms run with hardware acceleration"),
        Accel::Tcg { reason } => Check::warn(
            "kvm",
            format!("{reason}: qemu will use tcg software emulation (boots take seconds)"),
            "on a host with hardware virtualisation, load kvm_intel or kvm_amd and give access to /dev/kvm",
        ),
    }
}

fn disk(root: &Path, free: &Result<u64, String>) -> Check {
    let name = "disk space";
    match free {
        Err(err) => Check::fail(
            name,
            format!("cannot read free space under {}: {err}", root.display()),
            "check the state root path in the config",
        ),
        Ok(bytes) if *bytes < FAIL_FREE_BYTES => Check::fail(
            name,
            format!("{} free under {}", format_size(*bytes), root.display()),
            "free some space: images and work disks need several GiB",
        ),
        Ok(bytes) if *bytes < WARN_FREE_BYTES => Check::warn(
            name,
            format!("{} free under {}", format_size(*bytes), root.display()),
            "images and work disks need several GiB; free some space",
        ),
        Ok(bytes) => Check::pass(
            name,
            format!("{} free under {}", format_size(*bytes), root.display()),
        ),
    }
}

#[cfg(test)]
mod tests {
    use banger_core::doctor::CheckStatus;

    use super::*;

    fn facts() -> HostFacts {
        HostFacts {
            euid: 0,
            kvm: KvmFacts {
                device_exists: true,
                device_open: Ok(()),
                pvm: false,
            },
            tools: TOOLS
                .iter()
                .map(|(t, _)| (*t, Some(PathBuf::from(format!("/usr/bin/{t}")))))
                .collect(),
            state_root: "/var/lib/banger".into(),
            free_bytes: Ok(100 << 30),
            vmm: VmmPreference::Auto,
            firecracker: Some((
                "/usr/bin/firecracker".into(),
                Ok("Firecracker v1.16.1".into()),
            )),
            jailer: Some("/usr/bin/jailer".into()),
            image_tools: IMAGE_TOOLS
                .iter()
                .map(|(t, _)| (*t, Some(PathBuf::from(format!("/usr/bin/{t}")))))
                .collect(),
            guest_binary: Some(("/usr/lib/banger/banger-guest".into(), Ok(()))),
        }
    }

    fn status_of(checks: &[Check], name: &str) -> CheckStatus {
        checks.iter().find(|c| c.name == name).unwrap().status
    }

    #[test]
    fn healthy_host_passes_everything() {
        assert!(report(&facts())
            .iter()
            .all(|c| c.status == CheckStatus::Pass));
    }

    #[test]
    fn pvm_kvm_warns_and_names_the_consequence() {
        let mut f = facts();
        f.kvm.pvm = true;
        let checks = report(&f);
        let kvm = checks.iter().find(|c| c.name == "kvm").unwrap();
        assert_eq!(kvm.status, CheckStatus::Warn);
        assert!(
            kvm.detail.contains("PVM") && kvm.detail.contains("tcg"),
            "{}",
            kvm.detail
        );
    }

    #[test]
    fn vmm_choice_is_reported_with_its_reason() {
        let mut f = facts();
        let vmm = |f: &HostFacts| report(f).into_iter().find(|c| c.name == "vmm").unwrap();
        assert_eq!(
            vmm(&f).detail,
            "firecracker (firecracker found and kvm usable)"
        );
        f.kvm.pvm = true;
        assert!(
            vmm(&f).detail.starts_with("qemu (kvm unusable"),
            "{}",
            vmm(&f).detail
        );
        f.firecracker = None;
        f.jailer = None;
        assert_eq!(vmm(&f).detail, "qemu (no firecracker binary)");
        assert_eq!(
            status_of(&report(&f), "tool firecracker"),
            CheckStatus::Warn
        );
        f.vmm = VmmPreference::Firecracker;
        assert_eq!(vmm(&f).status, CheckStatus::Fail);
        f.vmm = VmmPreference::Auto;
        f.tools.insert("qemu-system-x86_64", None);
        assert_eq!(vmm(&f).status, CheckStatus::Fail);
    }

    #[test]
    fn missing_tools_non_root_and_full_disk_fail_with_hints() {
        let mut f = facts();
        f.euid = 1000;
        f.tools.insert("nft", None);
        f.free_bytes = Ok(100 << 20);
        let checks = report(&f);
        for name in ["privileges", "tool nft", "disk space"] {
            assert_eq!(status_of(&checks, name), CheckStatus::Fail, "{name}");
        }
        let nft = checks.iter().find(|c| c.name == "tool nft").unwrap();
        assert_eq!(
            nft.hint.as_deref(),
            Some("install it: apt-get install nftables")
        );
        f.free_bytes = Ok(5 << 30);
        assert_eq!(status_of(&report(&f), "disk space"), CheckStatus::Warn);
    }

    #[test]
    fn gathers_real_facts() {
        let dir = tempfile::tempdir().unwrap();
        let f = HostFacts::gather(&dir.path().join("not-yet"), VmmPreference::Auto);
        assert!(*f.free_bytes.as_ref().unwrap() > 0);
        assert_eq!(
            report(&f).len(),
            2 + TOOLS.len() + IMAGE_TOOLS.len() + 3 + 1
        );
        let f = f.with_guest_binary(&dir.path().join("banger-guest"));
        assert_eq!(status_of(&report(&f), "guest binary"), CheckStatus::Warn);
        // A dynamically linked one (this test program) warns too.
        let f = f.with_guest_binary(&std::env::current_exe().unwrap());
        let checks = report(&f);
        let check = checks.iter().find(|c| c.name == "guest binary").unwrap();
        assert_eq!(check.status, CheckStatus::Warn);
        assert!(
            check.detail.contains("dynamically linked"),
            "{}",
            check.detail
        );
    }

    #[test]
    fn missing_image_tools_warn_with_the_package() {
        let mut f = facts();
        f.image_tools.insert("mmdebstrap", None);
        let checks = report(&f);
        let check = checks.iter().find(|c| c.name == "tool mmdebstrap").unwrap();
        assert_eq!(check.status, CheckStatus::Warn);
        assert_eq!(
            check.hint.as_deref(),
            Some("install it: apt-get install mmdebstrap")
        );
    }
}
