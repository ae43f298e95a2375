//! banger-init: PID 1 of the initramfs (see `cmdline` for its inputs).
//!
//! devtmpfs, proc and sysfs; the modules listed in `/etc/banger/modules`
//! (finit_module, in order); the image rootfs read-only on `/lower`; the
//! VM's system disk on `/system` (a tmpfs when there is none) giving the
//! overlay's `upper/` and `work/`; the overlay on `/newroot`; a tmpfs on
//! `/newroot/run` (kept by systemd) with `/run/banger/boot-times.json`;
//! the work disk on `/newroot/root`; hostname; `lo` and `eth0`; then
//! `/dev`, `/proc`, `/sys` move over, the initramfs files are deleted and
//! the root switches to `/newroot`; the image's early services (the agent,
//! sshd: `early`) are started, and the image's init is executed.
//! Any failure prints `banger-init: ...` on the console and powers off,
//! so the VMM exits instead of hanging.

use std::ffi::CString;
use std::fs::File;
use std::path::Path;
use std::time::{Duration, Instant};

use banger_proto::agent::BootTimes;
use nix::kmod::{finit_module, ModuleInitFlags};
use nix::mount::{mount, MsFlags};

use crate::cmdline::{AgentTransport, BootConfig, CmdlineError};

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("cannot mount {what} on {target}: {source}")]
    Mount {
        what: String,
        target: String,
        source: nix::Error,
    },
    #[error("cannot load module {path}: {source}")]
    Module { path: String, source: nix::Error },
    #[error("device {0} did not appear within {1:?}")]
    NoDevice(String, Duration),
    #[error(transparent)]
    Cmdline(#[from] CmdlineError),
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("network: {0}")]
    Net(#[from] crate::netconfig::NetError),
    #[error("cannot switch root: {0}")]
    Switch(nix::Error),
    #[error("cannot execute {init}: {source}")]
    Exec { init: String, source: nix::Error },
}

const MODULE_LIST: &str = "/etc/banger/modules";
/// Where an image without an init system names the init to execute
/// (banger's small one), in the new root.
const IMAGE_INIT: &str = "/etc/banger/init";
/// Where the boot timings and the booting marker live in the new root.
const BOOT_DIR: &str = "/run/banger";
const DEVICE_WAIT: Duration = Duration::from_secs(10);

/// Milliseconds since the kernel started.
pub fn boottime_ms() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
        .map(|t| t.tv_sec() as u64 * 1000 + t.tv_nsec() as u64 / 1_000_000)
        .unwrap_or(0)
}

fn mount_fs(
    source: &str,
    target: &str,
    fstype: &str,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<(), InitError> {
    std::fs::create_dir_all(target).map_err(|source| InitError::Io {
        action: "create",
        path: target.into(),
        source,
    })?;
    match mount(Some(source), target, Some(fstype), flags, data) {
        Ok(()) | Err(nix::Error::EBUSY) => Ok(()),
        Err(err) => Err(InitError::Mount {
            what: format!("{source} ({fstype})"),
            target: target.into(),
            source: err,
        }),
    }
}

fn move_mount(from: &str, to: &str) -> Result<(), InitError> {
    std::fs::create_dir_all(to).map_err(|source| InitError::Io {
        action: "create",
        path: to.into(),
        source,
    })?;
    mount(Some(from), to, None::<&str>, MsFlags::MS_MOVE, None::<&str>).map_err(|source| {
        InitError::Mount {
            what: from.into(),
            target: to.into(),
            source,
        }
    })
}

/// Whether a module is needed by this boot: the vsock modules only when
/// the agent speaks vsock, virtiofs (and fuse) only with shared folders
/// (their loading costs tens of milliseconds under emulation).
pub fn module_wanted(path: &str, agent: AgentTransport, shares: bool) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    let vsock = name.starts_with("vsock") || name.starts_with("vmw_vsock");
    let virtiofs = name.starts_with("virtiofs") || name.starts_with("fuse");
    (agent == AgentTransport::Vsock || !vsock) && (shares || !virtiofs)
}

/// Loads every module the list names that `wanted` keeps, a group (lines
/// up to a blank line) at a time, the modules of a group concurrently;
/// an already loaded one is fine.
pub fn load_modules(list: &Path, wanted: impl Fn(&str) -> bool) -> Result<usize, InitError> {
    let text = match std::fs::read_to_string(list) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(source) => {
            return Err(InitError::Io {
                action: "read",
                path: list.display().to_string(),
                source,
            })
        }
    };
    // Groups are separated by blank lines; a group loads concurrently.
    let mut groups: Vec<Vec<&str>> = vec![Vec::new()];
    for line in text.lines().map(str::trim) {
        match groups.last_mut() {
            Some(group) if line.is_empty() && !group.is_empty() => groups.push(Vec::new()),
            Some(group) if !line.is_empty() && wanted(line) => group.push(line),
            _ => {}
        }
    }
    let mut loaded = 0;
    for group in groups {
        let results: Vec<Result<bool, InitError>> = std::thread::scope(|scope| {
            let handles: Vec<_> = group
                .iter()
                .map(|path| scope.spawn(move || load_module(path)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or(Ok(false)))
                .collect()
        });
        for result in results {
            loaded += usize::from(result?);
        }
    }
    Ok(loaded)
}

/// Loads one module file; `false` when it was loaded already.
fn load_module(path: &str) -> Result<bool, InitError> {
    let file = File::open(path).map_err(|source| InitError::Io {
        action: "open",
        path: path.into(),
        source,
    })?;
    match finit_module(&file, &CString::default(), ModuleInitFlags::empty()) {
        Ok(()) => Ok(true),
        Err(nix::Error::EEXIST) => Ok(false),
        Err(source) => Err(InitError::Module {
            path: path.into(),
            source,
        }),
    }
}

fn wait_for(device: &str) -> Result<(), InitError> {
    let deadline = Instant::now() + DEVICE_WAIT;
    while !Path::new(device).exists() {
        if Instant::now() > deadline {
            return Err(InitError::NoDevice(device.into(), DEVICE_WAIT));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

/// Everything up to the exec; returns the init to execute.
fn prepare() -> Result<String, InitError> {
    mount_fs("devtmpfs", "/dev", "devtmpfs", MsFlags::MS_NOSUID, None)?;
    mount_fs(
        "proc",
        "/proc",
        "proc",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None,
    )?;
    mount_fs(
        "sysfs",
        "/sys",
        "sysfs",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None,
    )?;
    let mut times = BootTimes {
        init_start_ms: boottime_ms(),
        ..BootTimes::default()
    };
    let cmdline = std::fs::read_to_string("/proc/cmdline").map_err(|source| InitError::Io {
        action: "read",
        path: "/proc/cmdline".into(),
        source,
    })?;
    let cfg = BootConfig::parse(&cmdline)?;
    let shares = !cfg.shares.is_empty();
    load_modules(Path::new(MODULE_LIST), |m| {
        module_wanted(m, cfg.agent, shares)
    })?;
    times.modules_ms = boottime_ms();

    wait_for(&cfg.root)?;
    mount_fs(&cfg.root, "/lower", "ext4", MsFlags::MS_RDONLY, None)?;
    // A promoted image's layers, top first, over the rootfs: each one's
    // `upper/` (the system disk of the VM it was promoted from, whiteouts
    // and opaque directories included) is a lower directory.
    let mut lower = Vec::new();
    for (i, layer) in cfg.layers.iter().enumerate() {
        let at = format!("/layers/{i}");
        wait_for(layer)?;
        mount_fs(layer, &at, "ext4", MsFlags::MS_RDONLY, Some("noload"))?;
        lower.push(format!("{at}/upper"));
    }
    lower.push("/lower".to_string());
    let overlay = format!(
        "lowerdir={},upperdir=/system/upper,workdir=/system/work",
        lower.join(":")
    );
    match &cfg.system {
        Some(system) => {
            wait_for(system)?;
            mount_fs(system, "/system", "ext4", MsFlags::empty(), None)?;
        }
        None => mount_fs(
            "tmpfs",
            "/system",
            "tmpfs",
            MsFlags::empty(),
            Some("mode=0755"),
        )?,
    }
    for dir in ["/system/upper", "/system/work"] {
        std::fs::create_dir_all(dir).map_err(|source| InitError::Io {
            action: "create",
            path: dir.into(),
            source,
        })?;
    }
    mount_fs(
        "overlay",
        "/newroot",
        "overlay",
        MsFlags::empty(),
        Some(overlay.as_str()),
    )?;
    mount_fs(
        "tmpfs",
        "/newroot/run",
        "tmpfs",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=0755"),
    )?;
    if let Some(name) = &cfg.hostname {
        let _ = nix::unistd::sethostname(name);
    }
    for dir in ["/dev", "/proc", "/sys"] {
        move_mount(dir, &format!("/newroot{dir}"))?;
    }
    for path in ["/init", "/lib", "/etc"] {
        let _ = std::fs::remove_dir_all(path).or_else(|_| std::fs::remove_file(path));
    }
    std::env::set_current_dir("/newroot").map_err(|source| InitError::Io {
        action: "enter",
        path: "/newroot".into(),
        source,
    })?;
    mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
        .map_err(InitError::Switch)?;
    nix::unistd::chroot(".").map_err(InitError::Switch)?;
    std::env::set_current_dir("/").map_err(|source| InitError::Io {
        action: "enter",
        path: "/".into(),
        source,
    })?;

    // A userland run by banger's small init gets its mounts now, before
    // the agent may answer (a terminal needs /dev/pts at once).
    if Path::new(IMAGE_INIT).exists() {
        crate::minit::mount_all();
    }

    // The image's early services start now, in the new root, while the
    // work disk and the network are set up; the agent holds its hello
    // until the marker is gone.
    let booting = Path::new(BOOT_DIR).join(crate::agent::BOOTING_MARKER);
    let _ = std::fs::create_dir_all(BOOT_DIR);
    let _ = std::fs::write(&booting, b"");
    let early = if cfg.early {
        crate::early::start_all(Path::new(crate::early::EARLY_LIST))
    } else {
        Vec::new()
    };

    if let Some(work) = &cfg.work {
        wait_for(work)?;
        mount_fs(work, "/root", "ext4", MsFlags::empty(), None)?;
    }
    for share in &cfg.shares {
        let flags = if share.read_only {
            MsFlags::MS_RDONLY
        } else {
            MsFlags::empty()
        };
        mount_fs(&share.tag, &share.dir, "virtiofs", flags, None)?;
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| InitError::Io {
            action: "start",
            path: "netlink runtime".into(),
            source,
        })?;
    runtime.block_on(crate::netconfig::configure(
        "eth0",
        cfg.ip,
        cfg.gateway,
        Duration::from_secs(5),
    ))?;
    drop(runtime);
    times.mounted_ms = boottime_ms();
    times.switch_root_ms = boottime_ms();
    if let Ok(json) = serde_json::to_vec(&times) {
        let _ = std::fs::write(Path::new(BOOT_DIR).join("boot-times.json"), json);
    }
    let _ = std::fs::remove_file(&booting);
    crate::early::wait_ready(early, crate::early::READY_WAIT);
    // A userland without an init system names banger's small one.
    if let Some(init) = std::fs::read_to_string(IMAGE_INIT)
        .ok()
        .map(|text| text.trim().to_string())
        .filter(|init| init.starts_with('/'))
    {
        return Ok(init);
    }
    Ok(cfg.init)
}

/// Runs as PID 1; never returns.
pub fn run() -> ! {
    let error = match prepare() {
        Ok(init) => {
            let program = CString::new(init.clone()).unwrap_or_default();
            let err = nix::unistd::execv(&program, std::slice::from_ref(&program)).unwrap_err();
            InitError::Exec { init, source: err }
        }
        Err(err) => err,
    };
    eprintln!("banger-init: {error}");
    power_off()
}

/// Flushes and powers the machine off (PID 1 must never exit).
pub fn power_off() -> ! {
    nix::unistd::sync();
    let _ = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_POWER_OFF);
    loop {
        std::thread::sleep(Duration::from_secs(60));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_module_list_loads_nothing() {
        assert_eq!(
            load_modules(Path::new("/nonexistent/modules"), |_| true).unwrap(),
            0
        );
    }

    #[test]
    fn a_listed_module_that_is_not_there_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let list = dir.path().join("modules");
        std::fs::write(&list, "/nonexistent/virtio_blk.ko\n").unwrap();
        let err = load_modules(&list, |_| true).unwrap_err().to_string();
        assert!(
            err.starts_with("cannot open /nonexistent/virtio_blk.ko"),
            "{err}"
        );
    }
}
