//! Test support: the doubles' paths, real TAP devices, fake kernels and
//! the VM spec the driver tests start.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use banger_core::vmm::{AgentChannel, DriveSpec, MachineSpec, NicSpec};

pub fn jailer_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_jailer-double"))
}

pub fn double_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_firecracker-double"))
}

/// A real TAP device, removed when dropped.
pub struct Tap(pub String);

impl Tap {
    pub fn new() -> Tap {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "fcd{}-{}",
            std::process::id() % 100_000,
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        let made = std::process::Command::new("ip")
            .args(["tuntap", "add", "dev", &name, "mode", "tap"])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !made {
            let why = "cannot make a tap device (needs root and iproute2)";
            assert!(std::env::var("CI").as_deref() != Ok("true"), "{why}");
            panic!("{why}");
        }
        Tap(name)
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.0])
            .status();
    }
}

/// A fake kernel: an ELF header and the guest the double should play.
pub fn kernel(path: &Path, guest: &str) {
    let mut bytes = b"\x7fELF\x02\x01\x01rest-of-a-kernel\n".to_vec();
    bytes.extend_from_slice(format!("double-guest: {guest}\n").as_bytes());
    std::fs::write(path, bytes).unwrap();
}

/// A VM spec in `dir` whose NIC is `tap` and whose guest obeys.
pub fn spec_on(dir: &Path, tap: &Tap) -> MachineSpec {
    let mut spec = spec(dir);
    spec.nic.as_mut().unwrap().tap = tap.0.clone();
    spec
}

pub fn spec(dir: &Path) -> MachineSpec {
    let images = dir.join("image");
    std::fs::create_dir_all(&images).unwrap();
    kernel(&images.join("vmlinux"), "obeys");
    std::fs::write(images.join("initrd"), b"initramfs").unwrap();
    for disk in ["rootfs.ext4", "system.cow", "root.ext4"] {
        std::fs::write(images.join(disk), vec![0u8; 4096]).unwrap();
    }
    let drive = |id: &str, file: &str, read_only| DriveSpec {
        id: id.into(),
        path: images.join(file),
        read_only,
    };
    MachineSpec {
        vm_id: "0123456789abcdef".into(),
        vcpus: 2,
        memory_mib: 512,
        kernel: images.join("vmlinux"),
        initrd: Some(images.join("initrd")),
        cmdline: "console=ttyS0 reboot=k panic=1".into(),
        drives: vec![
            drive("rootfs", "rootfs.ext4", true),
            drive("system", "system.cow", false),
            drive("work", "root.ext4", false),
        ],
        nic: Some(NicSpec {
            tap: "tap-pool-0".into(),
            mac: "02:fc:00:00:00:02".into(),
        }),
        agent: AgentChannel {
            vsock_cid: 2887581698,
            socket: dir.join("run/vsock.sock"),
        },
        vm_dir: dir.join("vm"),
        run_dir: dir.join("run"),
        memory_file: None,
        shares: Vec::new(),
    }
}
