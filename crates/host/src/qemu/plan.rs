//! The QEMU command line as a pure function of a `MachineSpec` and the
//! host's choices (accelerator, TSC rate, agent channel): `-M microvm`
//! with virtio-mmio devices, a QMP socket, the guest console to a file.
//! Built and tested here alone; the driver only executes it.

use std::path::PathBuf;

use banger_core::vmm::MachineSpec;

use crate::accel::Accel;

/// Name of the agent's virtio-serial port inside the guest
/// (`/dev/virtio-ports/org.banger.agent`).
pub const AGENT_PORT: &str = "org.banger.agent";
/// QMP socket name in the VM's runtime directory.
pub const QMP_SOCKET: &str = "qmp.sock";

/// How the agent is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentTransport {
    /// vhost-vsock (needs `/dev/vhost-vsock` on the host).
    Vsock,
    /// A virtio-serial port backed by a unix socket (works everywhere).
    Serial,
}

impl AgentTransport {
    /// The value of `banger.agent=` on the kernel command line.
    pub fn cmdline_value(self) -> &'static str {
        match self {
            AgentTransport::Vsock => "vsock",
            AgentTransport::Serial => "serial",
        }
    }
}

/// Host-side choices that shape the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QemuConfig {
    pub binary: PathBuf,
    pub accel: Accel,
    /// The host TSC rate: under TCG the guest kernel needs it
    /// (`tsc_early_khz=`) or it may hang calibrating.
    pub tsc_khz: Option<u64>,
    pub agent: AgentTransport,
    /// TCG translation cache in MiB (QEMU's default costs about 100 MiB
    /// of RSS per VM at no boot-time gain).
    pub tcg_tb_size_mib: u32,
    /// How TCG runs the vCPUs.
    pub tcg_threads: TcgThreads,
    /// Where each VM's own user id starts (`vm_uid`); `None` leaves QEMU
    /// running as root.
    pub uid_base: Option<u32>,
}

/// How TCG runs a VM's vCPUs (`-accel tcg,thread=`): `multi`, a host
/// thread per vCPU (parallel, but QEMU 7.2's multi-threaded TCG can
/// leave a guest's vCPUs spinning when it patches its own code), or
/// `single`, one thread running each vCPU in turn.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TcgThreads {
    #[default]
    Multi,
    Single,
}

impl TcgThreads {
    /// QEMU's word for it.
    pub fn as_str(self) -> &'static str {
        match self {
            TcgThreads::Multi => "multi",
            TcgThreads::Single => "single",
        }
    }
}

/// The QEMU sandbox: no obsolete calls, no new processes, no resource
/// control. `elevateprivileges` stays `allow` because QEMU 7.2 installs
/// its filter before it drops to `-runas` (with `deny` its own drop is
/// killed); after the drop the real, effective and saved ids are all the
/// VM's and no_new_privs is set, so there is no way back to root.
pub const SANDBOX: &str =
    "on,obsolete=deny,elevateprivileges=allow,spawn=deny,resourcecontrol=deny";

/// The user (and group) id a VM's QEMU runs as: the base plus the low 16
/// bits of its agent CID, which is its address, unique among the VMs of
/// a bridge prefix of /16 or longer and the same on every boot. QEMU
/// opens the disks, the TAP, the console log and its sockets as root,
/// then drops to it; no file needs to be that user's.
pub fn vm_uid(base: u32, vsock_cid: u32) -> u32 {
    base + (vsock_cid & 0xffff)
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    #[error("drive id {0:?} is not usable: ids are letters, digits and '_'")]
    DriveId(String),
    #[error("vcpus must be 1 to 255, not {0}")]
    Vcpus(u32),
    #[error("the kernel command line may not contain a newline")]
    Cmdline,
}

/// The kernel command line: the spec's, plus what this VMM needs.
pub fn kernel_cmdline(spec: &MachineSpec, cfg: &QemuConfig) -> String {
    let mut parts = vec![
        "console=ttyS0".to_string(),
        "reboot=t".to_string(),
        "panic=-1".to_string(),
        "cryptomgr.notests".to_string(),
    ];
    if let (Accel::Tcg { .. }, Some(khz)) = (&cfg.accel, cfg.tsc_khz) {
        parts.push(format!("tsc_early_khz={khz}"));
    }
    if let Accel::Tcg { .. } = &cfg.accel {
        // Kernel memory accounting turns on a static key in the slab
        // allocator when systemd makes its first memory cgroup; QEMU 7.2's
        // multi-threaded TCG can leave another vCPU running the unpatched
        // code of that site forever (both vCPUs in soft lockup). Without
        // kmem accounting the key is never flipped.
        parts.push("cgroup.memory=nokmem".to_string());
    }
    parts.push(format!("banger.agent={}", cfg.agent.cmdline_value()));
    if !spec.cmdline.is_empty() {
        parts.push(spec.cmdline.clone());
    }
    parts.join(" ")
}

/// The id of the microvm machine's own RAM, which QEMU's migration
/// stream names.
const RAM_ID: &str = "microvm.ram";

/// Every argument after the binary.
pub fn qemu_args(spec: &MachineSpec, cfg: &QemuConfig) -> Result<Vec<String>, PlanError> {
    if spec.vcpus == 0 || spec.vcpus > 255 {
        return Err(PlanError::Vcpus(spec.vcpus));
    }
    if spec.cmdline.contains('\n') {
        return Err(PlanError::Cmdline);
    }
    let path = |p: &std::path::Path| p.display().to_string();
    let mut args: Vec<String> = Vec::new();
    let mut push = |items: &[&str]| args.extend(items.iter().map(|s| s.to_string()));
    push(&["-name", &format!("banger-{}", spec.vm_id)]);
    let machine = "microvm,x-option-roms=off,pit=off,pic=off,isa-serial=on,rtc=on";
    // A backend of our own is named as the machine's own RAM: a migration
    // stream names the RAM it carries, and a VM restored from a memory
    // file must save into one a plain machine (a fork's) takes.
    let backend = match &spec.memory_file {
        // A vhost-user backend maps guest memory: it must be shareable.
        None if !spec.shares.is_empty() => Some(("memory-backend-memfd", "share=on".to_string())),
        None => None,
        Some(memory) => Some((
            "memory-backend-file",
            format!(
                "mem-path={},share={}",
                escape(&path(&memory.path)),
                if memory.shared { "on" } else { "off" }
            ),
        )),
    };
    match backend {
        None => push(&["-M", machine]),
        Some((kind, rest)) => push(&[
            "-M",
            &format!("{machine},memory-backend={RAM_ID}"),
            "-object",
            &format!("{kind},id={RAM_ID},size={}M,{rest}", spec.memory_mib),
        ]),
    }
    match &cfg.accel {
        Accel::Kvm => push(&["-accel", "kvm", "-cpu", "host"]),
        Accel::Tcg { .. } => push(&[
            "-accel",
            &format!(
                "tcg,thread={},tb-size={}",
                cfg.tcg_threads.as_str(),
                cfg.tcg_tb_size_mib
            ),
            "-cpu",
            "max",
        ]),
    }
    push(&[
        "-smp",
        &spec.vcpus.to_string(),
        "-m",
        &format!("{}M", spec.memory_mib),
    ]);
    push(&["-nodefaults", "-no-user-config", "-nographic", "-no-reboot"]);
    if let Some(base) = cfg.uid_base {
        let uid = vm_uid(base, spec.agent.vsock_cid);
        push(&["-runas", &format!("{uid}:{uid}"), "-sandbox", SANDBOX]);
    }
    push(&["-kernel", &path(&spec.kernel)]);
    if let Some(initrd) = &spec.initrd {
        push(&["-initrd", &path(initrd)]);
    }
    push(&["-append", &kernel_cmdline(spec, cfg)]);
    let serial = spec.vm_dir.join("serial.log");
    push(&[
        "-chardev",
        &format!("file,id=console,path={},append=on", path(&serial)),
        "-serial",
        "chardev:console",
    ]);
    for drive in &spec.drives {
        if drive.id.is_empty()
            || !drive
                .id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(PlanError::DriveId(drive.id.clone()));
        }
        let mut opts = format!(
            "id={},file={},format=raw,if=none,cache=none,aio=threads,discard=unmap",
            drive.id,
            escape(&path(&drive.path))
        );
        if drive.read_only {
            opts.push_str(",read-only=on");
        }
        push(&[
            "-drive",
            &opts,
            "-device",
            &format!("virtio-blk-device,drive={}", drive.id),
        ]);
    }
    if let Some(nic) = &spec.nic {
        push(&[
            "-netdev",
            &format!("tap,id=net0,ifname={},script=no,downscript=no", nic.tap),
            "-device",
            &format!("virtio-net-device,netdev=net0,mac={}", nic.mac),
        ]);
    }
    for (i, share) in spec.shares.iter().enumerate() {
        push(&[
            "-chardev",
            &format!("socket,id=fs{i},path={}", escape(&path(&share.socket))),
            "-device",
            &format!(
                "vhost-user-fs-device,chardev=fs{i},tag={}",
                escape(&share.tag)
            ),
        ]);
    }
    match cfg.agent {
        AgentTransport::Vsock => push(&[
            "-device",
            &format!("vhost-vsock-device,guest-cid={}", spec.agent.vsock_cid),
        ]),
        AgentTransport::Serial => push(&[
            "-device",
            "virtio-serial-device",
            "-chardev",
            &format!(
                "socket,id=agent,path={},server=on,wait=off",
                escape(&path(&spec.agent.socket))
            ),
            "-device",
            &format!("virtserialport,chardev=agent,name={AGENT_PORT}"),
        ]),
    }
    push(&["-device", "virtio-rng-device"]);
    let qmp = spec.run_dir.join(QMP_SOCKET);
    push(&[
        "-qmp",
        &format!("unix:{},server=on,wait=off", escape(&path(&qmp))),
    ]);
    Ok(args)
}

/// The command line of a QEMU that waits for a saved machine (given
/// later over QMP with `migrate-incoming`) instead of booting.
pub fn restore_args(spec: &MachineSpec, cfg: &QemuConfig) -> Result<Vec<String>, PlanError> {
    let mut args = qemu_args(spec, cfg)?;
    args.extend(["-incoming".to_string(), "defer".to_string()]);
    Ok(args)
}

/// QEMU option values separate with `,`; a literal comma is doubled.
fn escape(value: &str) -> String {
    value.replace(',', ",,")
}

#[cfg(test)]
mod tests {
    use banger_core::vmm::{AgentChannel, DriveSpec, NicSpec};

    use super::*;

    fn spec() -> MachineSpec {
        MachineSpec {
            vm_id: "0123456789abcdef".into(),
            vcpus: 2,
            memory_mib: 512,
            kernel: "/img/vmlinux".into(),
            initrd: Some("/img/initrd".into()),
            cmdline: "banger.root=/dev/vda banger.ip=172.29.0.2/24".into(),
            drives: vec![
                DriveSpec {
                    id: "rootfs".into(),
                    path: "/img/rootfs.ext4".into(),
                    read_only: true,
                },
                DriveSpec {
                    id: "work".into(),
                    path: "/vms/a,b/root.ext4".into(),
                    read_only: false,
                },
            ],
            nic: Some(NicSpec {
                tap: "tap-pool-0".into(),
                mac: "06:00:ac:1d:00:02".into(),
            }),
            agent: AgentChannel {
                vsock_cid: 2887581698,
                socket: "/run/banger/vms/0123/agent.sock".into(),
            },
            vm_dir: "/vms/0123".into(),
            run_dir: "/run/banger/vms/0123".into(),
            memory_file: None,
            shares: Vec::new(),
        }
    }

    fn tcg() -> QemuConfig {
        QemuConfig {
            binary: "/usr/bin/qemu-system-x86_64".into(),
            accel: Accel::Tcg {
                reason: "pvm".into(),
            },
            tsc_khz: Some(2_600_000),
            agent: AgentTransport::Serial,
            tcg_tb_size_mib: 64,
            tcg_threads: TcgThreads::Multi,
            uid_base: Some(1_879_048_192),
        }
    }

    #[test]
    fn tcg_command_line_snapshot() {
        let args = qemu_args(&spec(), &tcg()).unwrap();
        let expected = [
            "-name banger-0123456789abcdef",
            "-M microvm,x-option-roms=off,pit=off,pic=off,isa-serial=on,rtc=on",
            "-accel tcg,thread=multi,tb-size=64 -cpu max",
            "-smp 2 -m 512M",
            "-nodefaults -no-user-config -nographic -no-reboot",
            // 2887581698 is 172.29.0.2: its low 16 bits are 2.
            "-runas 1879048194:1879048194 -sandbox on,obsolete=deny,elevateprivileges=allow,spawn=deny,resourcecontrol=deny",
            "-kernel /img/vmlinux -initrd /img/initrd",
            "-append console=ttyS0 reboot=t panic=-1 cryptomgr.notests tsc_early_khz=2600000 cgroup.memory=nokmem banger.agent=serial banger.root=/dev/vda banger.ip=172.29.0.2/24",
            "-chardev file,id=console,path=/vms/0123/serial.log,append=on -serial chardev:console",
            "-drive id=rootfs,file=/img/rootfs.ext4,format=raw,if=none,cache=none,aio=threads,discard=unmap,read-only=on -device virtio-blk-device,drive=rootfs",
            "-drive id=work,file=/vms/a,,b/root.ext4,format=raw,if=none,cache=none,aio=threads,discard=unmap -device virtio-blk-device,drive=work",
            "-netdev tap,id=net0,ifname=tap-pool-0,script=no,downscript=no -device virtio-net-device,netdev=net0,mac=06:00:ac:1d:00:02",
            "-device virtio-serial-device -chardev socket,id=agent,path=/run/banger/vms/0123/agent.sock,server=on,wait=off -device virtserialport,chardev=agent,name=org.banger.agent",
            "-device virtio-rng-device",
            "-qmp unix:/run/banger/vms/0123/qmp.sock,server=on,wait=off",
        ]
        .join(" ");
        // -append's value is one argument even though it has spaces.
        let append = args.iter().position(|a| a == "-append").unwrap();
        assert!(args[append + 1].starts_with("console=ttyS0 "));
        assert_eq!(args.join(" "), expected);
    }

    #[test]
    fn kvm_uses_the_host_cpu_no_tsc_hint_and_vsock_when_asked() {
        let mut cfg = tcg();
        cfg.accel = Accel::Kvm;
        cfg.agent = AgentTransport::Vsock;
        let mut s = spec();
        s.initrd = None;
        s.nic = None;
        let args = qemu_args(&s, &cfg).unwrap().join(" ");
        assert!(args.contains("-accel kvm -cpu host"), "{args}");
        assert!(!args.contains("tsc_early_khz"), "{args}");
        assert!(
            !args.contains("-initrd") && !args.contains("-netdev"),
            "{args}"
        );
        assert!(
            args.contains("-device vhost-vsock-device,guest-cid=2887581698"),
            "{args}"
        );
        assert!(args.contains("banger.agent=vsock"), "{args}");
    }

    #[test]
    fn memory_files_and_restores() {
        let mut s = spec();
        s.memory_file = Some(banger_core::vmm::MemoryFile {
            path: "/snap/a,b/memory".into(),
            shared: false,
        });
        let args = restore_args(&s, &tcg()).unwrap().join(" ");
        assert!(
            args.contains("-M microvm,x-option-roms=off,pit=off,pic=off,isa-serial=on,rtc=on,memory-backend=microvm.ram -object memory-backend-file,id=microvm.ram,size=512M,mem-path=/snap/a,,b/memory,share=off"),
            "{args}"
        );
        assert!(args.ends_with(" -incoming defer"), "{args}");
        s.memory_file.as_mut().unwrap().shared = true;
        let args = qemu_args(&s, &tcg()).unwrap().join(" ");
        assert!(args.contains(",share=on"), "{args}");
        assert!(!args.contains("-incoming"), "{args}");
    }

    #[test]
    fn shared_folders_get_shared_memory_and_a_vhost_user_device_each() {
        let mut s = spec();
        for (i, dir) in ["/run/vm/fs/0.sock", "/run/vm/fs/1,x.sock"]
            .iter()
            .enumerate()
        {
            s.shares.push(banger_core::vmm::ShareSpec {
                tag: format!("banger{i}"),
                socket: dir.into(),
            });
        }
        let args = qemu_args(&s, &tcg()).unwrap().join(" ");
        assert!(
            args.contains(
                ",memory-backend=microvm.ram -object memory-backend-memfd,id=microvm.ram,size=512M,share=on"
            ),
            "{args}"
        );
        assert!(
            args.contains("-chardev socket,id=fs0,path=/run/vm/fs/0.sock -device vhost-user-fs-device,chardev=fs0,tag=banger0"),
            "{args}"
        );
        assert!(args.contains("path=/run/vm/fs/1,,x.sock"), "{args}");
    }

    #[test]
    fn without_a_uid_base_qemu_stays_root_and_unsandboxed() {
        let mut cfg = tcg();
        cfg.uid_base = None;
        let args = qemu_args(&spec(), &cfg).unwrap().join(" ");
        assert!(
            !args.contains("-runas") && !args.contains("-sandbox"),
            "{args}"
        );
    }

    #[test]
    fn vm_uids_differ_by_address() {
        let base = 1_879_048_192;
        let a = vm_uid(base, u32::from(std::net::Ipv4Addr::new(172, 29, 0, 2)));
        let b = vm_uid(base, u32::from(std::net::Ipv4Addr::new(172, 29, 0, 3)));
        let c = vm_uid(base, u32::from(std::net::Ipv4Addr::new(10, 7, 255, 254)));
        assert_eq!((a, b, c), (base + 2, base + 3, base + 0xfffe));
    }

    #[test]
    fn bad_specs_are_refused() {
        let mut s = spec();
        s.drives[0].id = "root fs".into();
        assert_eq!(
            qemu_args(&s, &tcg()),
            Err(PlanError::DriveId("root fs".into()))
        );
        let mut s = spec();
        s.vcpus = 0;
        assert_eq!(qemu_args(&s, &tcg()), Err(PlanError::Vcpus(0)));
        let mut s = spec();
        s.cmdline = "a\nb".into();
        assert_eq!(qemu_args(&s, &tcg()), Err(PlanError::Cmdline));
    }
}
