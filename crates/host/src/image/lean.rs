//! The lean guest: how a built image's systemd is set up so that a VM
//! answers as soon as its root filesystem and network are up, and
//! systemd's own boot costs as little as it can while staying a normal
//! Debian (systemd is PID 1, units and `apt-get install` work).
//!
//! - Early services (`/etc/banger/early`, read by banger-init): the agent
//!   and sshd start right after the switch root, before systemd; their
//!   units (`banger-agent.service`, `ssh.service`) adopt them by pid file,
//!   so systemd supervises, reloads and restarts them as usual. Neither
//!   unit waits for anything (`DefaultDependencies=no`), so a service
//!   that banger-init did not start comes up in systemd's first batch.
//! - Units that serve no purpose in a banger VM are masked (`MASKED`),
//!   generators likewise (`MASKED_GENERATORS`); each says why.
//! - The journal stays in memory (no flush to disk at boot).
//!
//! Users undo any of it in a VM with `systemctl unmask UNIT`, or for an
//! image by removing the link (`/etc/systemd/system/UNIT`). All of it is
//! one list of changes (`ops`), carried out on a built tree or inside a
//! registered ext4 image alike.

use std::path::Path;

use super::userland::ops::{Contents, TreeOp};

/// A unit or generator turned off, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Masked {
    pub name: &'static str,
    pub why: &'static str,
}

const fn masked(name: &'static str, why: &'static str) -> Masked {
    Masked { name, why }
}

const NO_UDEV: &str = "no udev: banger-init loads the modules the VM needs, devtmpfs makes the device nodes, nothing is hot-plugged";

/// Units linked to `/dev/null` in `/etc/systemd/system`.
pub const MASKED: &[Masked] = &[
    masked("systemd-udevd.service", NO_UDEV),
    masked("systemd-udevd-control.socket", NO_UDEV),
    masked("systemd-udevd-kernel.socket", NO_UDEV),
    masked("systemd-udev-trigger.service", "udev coldplug: no udev"),
    masked("systemd-udev-settle.service", "waits for udev: no udev"),
    masked(
        "getty.target",
        "no console logins: VMs are reached by SSH and the agent, `vm logs` shows the console",
    ),
    masked("getty-static.service", "console gettys: none"),
    masked(
        "e2scrub_reap.service",
        "cleans up LVM scrub snapshots: banger's disks are plain ext4",
    ),
    masked("e2scrub_all.timer", "scrubs LVM volumes: none"),
    masked(
        "modprobe@.service",
        "loads configfs, dm_mod, drm, efi_pstore, fuse and loop at boot: the kernel loads each on first use",
    ),
    masked(
        "systemd-journal-flush.service",
        "moves the journal to disk at boot: it stays in memory (Storage=volatile)",
    ),
    masked(
        "sys-kernel-debug.mount",
        "debugfs: `mount -t debugfs none /sys/kernel/debug` when needed",
    ),
    masked(
        "sys-kernel-tracing.mount",
        "tracefs: `mount -t tracefs none /sys/kernel/tracing` when needed",
    ),
    masked(
        "apt-daily.timer",
        "no package list refresh behind the user's back (it fires at first boot)",
    ),
    masked(
        "apt-daily-upgrade.timer",
        "no unattended upgrades behind the user's back",
    ),
    masked(
        "dpkg-db-backup.timer",
        "a daily backup of dpkg's database, which fires at first boot",
    ),
    masked(
        "fstrim.timer",
        "a weekly trim, which fires at first boot: `fstrim -a` gives freed blocks back to the host",
    ),
];

/// Generators linked to `/dev/null` in `/etc/systemd/system-generators`.
pub const MASKED_GENERATORS: &[Masked] = &[
    masked(
        "systemd-getty-generator",
        "a serial getty bound to a device unit that, without udev, never appears",
    ),
    masked(
        "systemd-gpt-auto-generator",
        "probes the disks for GPT partitions: the root is an overlay",
    ),
    masked("systemd-hibernate-resume-generator", "no hibernation"),
    masked(
        "systemd-cryptsetup-generator",
        "no encrypted volumes on banger's disks",
    ),
    masked("systemd-integritysetup-generator", "no integrity volumes"),
    masked("systemd-veritysetup-generator", "no verity volumes"),
];

/// Where the agent lives in the rootfs.
pub const AGENT_PATH: &str = "usr/local/sbin/banger-agent";

/// The early services banger-init starts (`banger_guest::early`).
pub const EARLY_LIST: &str = "# banger-init starts these right after switching root; their units adopt them
# name  pid file               run dir    command
agent   /run/banger/agent.pid  -          /usr/local/sbin/banger-agent --pidfile /run/banger/agent.pid
sshd    /run/sshd.pid          /run/sshd  /usr/sbin/sshd -D
";

/// Where banger's small init lives in a userland without an init system.
pub const SMALL_INIT: &str = "/usr/local/sbin/banger-init";

/// The changes that put the agent and banger's small init (PID 1:
/// `banger_guest::minit`) into a userland without an init system; sshd,
/// when the userland has one, starts with the agent.
pub fn small_init_ops(guest_binary: &Path, sshd: bool) -> Vec<TreeOp> {
    let early: String = EARLY_LIST
        .lines()
        .filter(|line| sshd || !line.starts_with("sshd"))
        .map(|line| format!("{line}\n"))
        .collect();
    vec![
        TreeOp::Write {
            path: format!("/{AGENT_PATH}"),
            contents: Contents::HostFile(guest_binary.to_path_buf()),
            mode: 0o755,
        },
        // Its name makes the guest binary the small init.
        TreeOp::Link {
            path: SMALL_INIT.into(),
            target: "banger-agent".into(),
        },
        TreeOp::Write {
            path: "/etc/banger/init".into(),
            contents: Contents::Text(format!("{SMALL_INIT}\n")),
            mode: 0o644,
        },
        TreeOp::Write {
            path: "/etc/banger/early".into(),
            contents: Contents::Text(early),
            mode: 0o644,
        },
    ]
}

const AGENT_UNIT: &str = "[Unit]
Description=banger guest agent
DefaultDependencies=no

[Service]
Type=forking
PIDFile=/run/banger/agent.pid
ExecStart=/usr/local/sbin/banger-agent adopt /run/banger/agent.pid -- /usr/local/sbin/banger-agent --pidfile /run/banger/agent.pid
Restart=always
RestartSec=1

[Install]
WantedBy=multi-user.target
";

/// VMs get their ssh host keys from the host; this makes them in a VM
/// that was given none, so sshd never starts without keys.
const SSH_KEYS_UNIT: &str = "[Unit]
Description=make ssh host keys when the vm was given none
DefaultDependencies=no
Before=ssh.service
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A

[Install]
WantedBy=multi-user.target
";

/// Debian's `ssh.service`, replaced whole: no ordering after the network
/// (banger-init set it up), no `sshd -t` before every start, and the
/// sshd that banger-init started adopted by its pid file.
const SSH_UNIT: &str = "[Unit]
Description=OpenBSD Secure Shell server (started early by banger-init)
Documentation=man:sshd(8) man:sshd_config(5)
DefaultDependencies=no
After=banger-ssh-keys.service
Conflicts=shutdown.target
Before=shutdown.target
ConditionPathExists=!/etc/ssh/sshd_not_to_be_run

[Service]
EnvironmentFile=-/etc/default/ssh
Type=forking
PIDFile=/run/sshd.pid
ExecStart=/usr/local/sbin/banger-agent adopt /run/sshd.pid -- /usr/sbin/sshd -D $SSHD_OPTS
ExecReload=/usr/sbin/sshd -t
ExecReload=/bin/kill -HUP $MAINPID
KillMode=process
Restart=on-failure
RestartPreventExitStatus=255
RuntimeDirectory=sshd
RuntimeDirectoryMode=0755
RuntimeDirectoryPreserve=yes

[Install]
WantedBy=multi-user.target
Alias=sshd.service
";

const JOURNALD_CONF: &str = "# banger: the journal stays in memory; `vm logs` keeps the console
[Journal]
Storage=volatile
";

/// The changes that put the agent (the guest binary at `guest_binary`)
/// into a Debian systemd userland and set it up the lean way.
pub fn ops(guest_binary: &Path) -> Vec<TreeOp> {
    let text = |path: &str, contents: &str, mode: u32| TreeOp::Write {
        path: path.into(),
        contents: Contents::Text(contents.into()),
        mode,
    };
    let link = |path: String, target: &str| TreeOp::Link {
        path,
        target: target.into(),
    };
    let mut ops = vec![
        TreeOp::Write {
            path: format!("/{AGENT_PATH}"),
            contents: Contents::HostFile(guest_binary.to_path_buf()),
            mode: 0o755,
        },
        text("/etc/banger/early", EARLY_LIST, 0o644),
    ];
    for (name, unit) in [
        ("banger-agent.service", AGENT_UNIT),
        ("banger-ssh-keys.service", SSH_KEYS_UNIT),
        ("ssh.service", SSH_UNIT),
    ] {
        ops.push(text(&format!("{UNITS}/{name}"), unit, 0o644));
        ops.push(link(
            format!("{UNITS}/multi-user.target.wants/{name}"),
            &format!("{UNITS}/{name}"),
        ));
    }
    ops.push(link(
        format!("{UNITS}/sshd.service"),
        &format!("{UNITS}/ssh.service"),
    ));
    for unit in MASKED {
        ops.push(link(format!("{UNITS}/{}", unit.name), "/dev/null"));
        for wants in ["multi-user", "timers", "sysinit"] {
            ops.push(TreeOp::Remove {
                path: format!("{UNITS}/{wants}.target.wants/{}", unit.name),
            });
        }
    }
    for generator in MASKED_GENERATORS {
        ops.push(link(
            format!("/etc/systemd/system-generators/{}", generator.name),
            "/dev/null",
        ));
    }
    ops.push(text(
        "/etc/systemd/journald.conf.d/banger.conf",
        JOURNALD_CONF,
        0o644,
    ));
    ops
}

const UNITS: &str = "/etc/systemd/system";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_are_written_enabled_and_the_masked_ones_point_at_dev_null() {
        let tree = tempfile::tempdir().unwrap();
        let units = tree.path().join("etc/systemd/system");
        // What Debian's own packages enabled.
        std::fs::create_dir_all(units.join("timers.target.wants")).unwrap();
        std::os::unix::fs::symlink(
            "/lib/systemd/system/apt-daily.timer",
            units.join("timers.target.wants/apt-daily.timer"),
        )
        .unwrap();
        std::os::unix::fs::symlink(
            "/lib/systemd/system/ssh.service",
            units.join("sshd.service"),
        )
        .unwrap();
        let guest = tree.path().join("guest");
        std::fs::write(&guest, b"\x7fELF").unwrap();
        let ops = ops(&guest);
        super::super::userland::ops::apply_to_dir(tree.path(), &ops).unwrap();
        // twice: the same tree
        super::super::userland::ops::apply_to_dir(tree.path(), &ops).unwrap();
        assert_eq!(
            std::fs::read(tree.path().join(AGENT_PATH)).unwrap(),
            b"\x7fELF"
        );

        for name in [
            "banger-agent.service",
            "ssh.service",
            "banger-ssh-keys.service",
        ] {
            assert_eq!(
                std::fs::read_link(units.join("multi-user.target.wants").join(name)).unwrap(),
                Path::new("/etc/systemd/system").join(name)
            );
        }
        assert_eq!(
            std::fs::read_link(units.join("sshd.service")).unwrap(),
            Path::new("/etc/systemd/system/ssh.service")
        );
        for unit in MASKED {
            assert_eq!(
                std::fs::read_link(units.join(unit.name)).unwrap(),
                Path::new("/dev/null"),
                "{}",
                unit.name
            );
        }
        assert!(!units.join("timers.target.wants/apt-daily.timer").exists());
        for generator in MASKED_GENERATORS {
            let at = tree
                .path()
                .join("etc/systemd/system-generators")
                .join(generator.name);
            assert_eq!(std::fs::read_link(at).unwrap(), Path::new("/dev/null"));
        }
        let early = std::fs::read_to_string(tree.path().join("etc/banger/early")).unwrap();
        assert!(early.contains("/usr/sbin/sshd"));
    }

    #[test]
    fn the_early_services_are_the_ones_the_units_adopt() {
        let ssh = SSH_UNIT
            .lines()
            .find(|l| l.starts_with("PIDFile="))
            .unwrap();
        let agent = AGENT_UNIT
            .lines()
            .find(|l| l.starts_with("PIDFile="))
            .unwrap();
        for pid_file in [ssh, agent].map(|l| l.trim_start_matches("PIDFile=")) {
            assert!(
                EARLY_LIST
                    .lines()
                    .any(|l| l.split_whitespace().nth(1) == Some(pid_file)),
                "{pid_file} is not in the early list"
            );
        }
        for unit in [SSH_UNIT, AGENT_UNIT] {
            assert!(unit.contains("DefaultDependencies=no"));
            assert!(!unit.contains("After=local-fs.target"));
            assert!(!unit.contains("After=network"));
            assert!(!unit.contains("ExecStartPre"));
        }
    }

    #[test]
    fn a_userland_without_an_init_gets_the_small_one_and_sshd_only_when_it_has_it() {
        let guest = Path::new("/g");
        let early = |ops: &[TreeOp]| {
            ops.iter()
                .find_map(|op| match op {
                    TreeOp::Write {
                        path,
                        contents: Contents::Text(text),
                        ..
                    } if path == "/etc/banger/early" => Some(text.clone()),
                    _ => None,
                })
                .unwrap()
        };
        assert!(!early(&small_init_ops(guest, false)).contains("sshd"));
        assert!(early(&small_init_ops(guest, true)).contains("/usr/sbin/sshd -D"));
        assert!(small_init_ops(guest, false).contains(&TreeOp::Link {
            path: SMALL_INIT.into(),
            target: "banger-agent".into()
        }));
    }

    #[test]
    fn every_masked_unit_says_why() {
        for m in MASKED.iter().chain(MASKED_GENERATORS) {
            assert!(!m.why.is_empty() && !m.why.ends_with('.'), "{}", m.name);
        }
    }
}
