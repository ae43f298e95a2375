//! What banger asks of Firecracker to boot, stop, inspect, pause, save
//! and restore a VM, as data: its command line, the ordered API requests
//! and the equivalent `--config-file`. Pure; running and sending them is
//! the driver's job.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use thiserror::Error;

use super::api::{
    to_json, ActionType, BootSource, Drive, FcRequest, InstanceActionInfo, MachineConfiguration,
    MemoryBackend, MemoryBackendType, Metrics, NetworkInterface, NetworkOverride,
    SnapshotCreateParams, SnapshotLoadParams, SnapshotType, VmRunState, VmStateChange, Vsock,
    VsockOverride,
};

/// The single-object sections of a `--config-file` document and the API
/// path each one stands for (`drives` and `network-interfaces` are lists,
/// one `PUT /{section}/{id}` per item).
pub const CONFIG_FILE_SECTIONS: [(&str, &str); 4] = [
    ("metrics", "/metrics"),
    ("machine-config", "/machine-config"),
    ("boot-source", "/boot-source"),
    ("vsock", "/vsock"),
];

/// The guest NIC's id: banger gives each VM one interface.
pub const IFACE_ID: &str = "eth0";

/// Everything needed to configure and start one microVM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirecrackerBootConfig {
    pub vcpus: u32,
    pub memory_mib: u64,
    /// Uncompressed ELF `vmlinux`.
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    pub boot_args: String,
    /// Extra block devices; the guest boots from the initramfs, so none of
    /// them is the root device.
    pub drives: Vec<DriveConfig>,
    /// Host TAP device backing the guest NIC.
    pub tap: String,
    /// Guest MAC, `aa:bb:cc:dd:ee:ff`.
    pub guest_mac: String,
    pub vsock: VsockConfig,
    pub log_path: PathBuf,
    pub metrics_path: PathBuf,
}

/// One block device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriveConfig {
    pub id: String,
    pub path: PathBuf,
    pub read_only: bool,
}

/// The vsock device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VsockConfig {
    pub guest_cid: u32,
    pub uds_path: PathBuf,
}

/// Why a config cannot be turned into requests.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum PlanError {
    #[error("path {0:?} is not valid utf-8, which the firecracker api requires")]
    NonUtf8Path(PathBuf),
    #[error("vcpu count {0} is outside firecracker's range 1..=32")]
    Vcpus(u32),
    #[error("memory size must be at least 1 mib")]
    Memory,
    #[error("vsock guest cid {0} is reserved; it must be at least 3")]
    GuestCid(u32),
    #[error("drive id {0:?} must be 1 to 64 ascii letters, digits or underscores")]
    DriveId(String),
    #[error("drive id {0:?} is used twice")]
    DuplicateDrive(String),
}

/// Firecracker's command line: its API socket, the VM id, and its log
/// from the first line (`--log-path`; without it Firecracker logs to
/// stdout, the guest's serial console, until `PUT /logger`). The driver
/// adds `--config-file` in that mode.
pub fn command_line(
    cfg: &FirecrackerBootConfig,
    api_socket: &Path,
    vm_id: &str,
) -> Result<Vec<OsString>, PlanError> {
    Ok(vec![
        "--api-sock".into(),
        api_socket.into(),
        "--id".into(),
        vm_id.into(),
        "--log-path".into(),
        utf8(&cfg.log_path)?.into(),
        "--level".into(),
        "Info".into(),
        "--show-level".into(),
    ])
}

/// The line Firecracker logs once a machine configured from a config file
/// runs (its `main.rs`); until then its API answers nothing.
pub const CONFIG_FILE_STARTED: &str =
    "Successfully started microvm that was configured from one single json";

/// The requests that configure and start a VM, in the order they are sent:
/// metrics first, then machine, boot source, drives, network, vsock, and
/// finally `InstanceStart` (the log is set on the command line).
pub fn boot_requests(cfg: &FirecrackerBootConfig) -> Result<Vec<FcRequest>, PlanError> {
    let b = Bodies::of(cfg)?;
    let mut reqs = vec![
        FcRequest::put("/metrics", &b.metrics),
        FcRequest::put("/machine-config", &b.machine),
        FcRequest::put("/boot-source", &b.boot),
    ];
    for d in &b.drives {
        reqs.push(FcRequest::put(format!("/drives/{}", d.drive_id), d));
    }
    reqs.push(FcRequest::put(
        format!("/network-interfaces/{}", b.net.iface_id),
        &b.net,
    ));
    reqs.push(FcRequest::put("/vsock", &b.vsock));
    reqs.push(action(ActionType::InstanceStart));
    Ok(reqs)
}

/// Asks the guest to shut down (Ctrl+Alt+Del; x86 only, the guest must
/// handle it). Firecracker exits when the guest reboots.
pub fn stop_request() -> FcRequest {
    action(ActionType::SendCtrlAltDel)
}

/// `PATCH /vm`: stops (`Paused`) or restarts the vCPUs.
pub fn vm_state_request(state: VmRunState) -> FcRequest {
    FcRequest::patch("/vm", &VmStateChange { state })
}

/// `PUT /snapshot/create` of a paused machine: its state to `state`, a
/// full copy of its memory to `memory` (paths as Firecracker sees them).
pub fn snapshot_create_request(state: &Path, memory: &Path) -> Result<FcRequest, PlanError> {
    Ok(FcRequest::put(
        "/snapshot/create",
        &SnapshotCreateParams {
            snapshot_type: SnapshotType::Full,
            snapshot_path: utf8(state)?,
            mem_file_path: utf8(memory)?,
        },
    ))
}

/// What a fresh Firecracker is sent to take up a saved machine as `cfg`'s
/// VM: the metrics file (one of the two things it may be given before a
/// load), then the load, with `cfg`'s TAP and vsock socket in place of
/// the saved ones, resumed at once. The saved machine's disks are opened
/// by the paths it was saved with: the driver keeps those the same for
/// every VM (relative to the VM's directory, or inside its jail).
pub fn restore_requests(
    cfg: &FirecrackerBootConfig,
    state: &Path,
    memory: &Path,
) -> Result<Vec<FcRequest>, PlanError> {
    let b = Bodies::of(cfg)?;
    Ok(vec![
        FcRequest::put("/metrics", &b.metrics),
        FcRequest::put(
            "/snapshot/load",
            &SnapshotLoadParams {
                snapshot_path: utf8(state)?,
                mem_backend: MemoryBackend {
                    backend_type: MemoryBackendType::File,
                    backend_path: utf8(memory)?,
                },
                resume_vm: true,
                network_overrides: vec![NetworkOverride {
                    iface_id: b.net.iface_id.clone(),
                    host_dev_name: b.net.host_dev_name.clone(),
                }],
                vsock_override: VsockOverride {
                    uds_path: b.vsock.uds_path.clone(),
                },
            },
        ),
    ])
}

/// `GET /`: the instance's id, state and VMM version.
pub fn describe_request() -> FcRequest {
    FcRequest::get("/")
}

/// The same configuration as [`boot_requests`] (minus the start action) in
/// the form `firecracker --config-file` reads (`FullVmConfiguration`).
pub fn config_file(cfg: &FirecrackerBootConfig) -> Result<Value, PlanError> {
    let b = Bodies::of(cfg)?;
    Ok(json!({
        "metrics": to_json(&b.metrics),
        "machine-config": to_json(&b.machine),
        "boot-source": to_json(&b.boot),
        "drives": to_json(&b.drives),
        "network-interfaces": [to_json(&b.net)],
        "vsock": to_json(&b.vsock),
    }))
}

fn action(action_type: ActionType) -> FcRequest {
    FcRequest::put("/actions", &InstanceActionInfo { action_type })
}

/// The typed bodies, built and checked once for both output forms.
struct Bodies {
    metrics: Metrics,
    machine: MachineConfiguration,
    boot: BootSource,
    drives: Vec<Drive>,
    net: NetworkInterface,
    vsock: Vsock,
}

impl Bodies {
    fn of(cfg: &FirecrackerBootConfig) -> Result<Bodies, PlanError> {
        if !(1..=32).contains(&cfg.vcpus) {
            return Err(PlanError::Vcpus(cfg.vcpus));
        }
        if cfg.memory_mib == 0 {
            return Err(PlanError::Memory);
        }
        if cfg.vsock.guest_cid < 3 {
            return Err(PlanError::GuestCid(cfg.vsock.guest_cid));
        }
        let mut drives: Vec<Drive> = Vec::with_capacity(cfg.drives.len());
        for d in &cfg.drives {
            if !valid_id(&d.id) {
                return Err(PlanError::DriveId(d.id.clone()));
            }
            if drives.iter().any(|x| x.drive_id == d.id) {
                return Err(PlanError::DuplicateDrive(d.id.clone()));
            }
            drives.push(Drive {
                drive_id: d.id.clone(),
                is_root_device: false,
                path_on_host: utf8(&d.path)?,
                is_read_only: d.read_only,
                partuuid: None,
                cache_type: None,
                io_engine: None,
            });
        }
        // Checked here too, so a bad one fails the plan, not the spawn.
        utf8(&cfg.log_path)?;
        Ok(Bodies {
            metrics: Metrics {
                metrics_path: utf8(&cfg.metrics_path)?,
            },
            machine: MachineConfiguration {
                vcpu_count: cfg.vcpus,
                mem_size_mib: cfg.memory_mib,
                smt: None,
                track_dirty_pages: None,
                huge_pages: None,
            },
            boot: BootSource {
                kernel_image_path: utf8(&cfg.kernel)?,
                boot_args: Some(cfg.boot_args.clone()),
                initrd_path: cfg.initrd.as_deref().map(utf8).transpose()?,
            },
            drives,
            net: NetworkInterface {
                iface_id: IFACE_ID.to_string(),
                host_dev_name: cfg.tap.clone(),
                guest_mac: Some(cfg.guest_mac.clone()),
                mtu: None,
            },
            vsock: Vsock {
                guest_cid: cfg.vsock.guest_cid,
                uds_path: utf8(&cfg.vsock.uds_path)?,
            },
        })
    }
}

/// Firecracker's id rule (its `validate_id`): 1..=64 of `[A-Za-z0-9_]`.
/// Also keeps the id safe to put in a URL path.
fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn utf8(p: &Path) -> Result<String, PlanError> {
    p.to_str()
        .map(str::to_string)
        .ok_or_else(|| PlanError::NonUtf8Path(p.to_path_buf()))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::firecracker::api::Method;

    pub(crate) fn sample() -> FirecrackerBootConfig {
        FirecrackerBootConfig {
            vcpus: 2,
            memory_mib: 1024,
            kernel: "/var/lib/banger/kernels/6.1/vmlinux".into(),
            initrd: Some("/var/lib/banger/kernels/6.1/initramfs.img".into()),
            boot_args: "console=ttyS0 reboot=k panic=1 pci=off".into(),
            drives: vec![
                DriveConfig {
                    id: "image".into(),
                    path: "/var/lib/banger/images/debian.ext4".into(),
                    read_only: true,
                },
                DriveConfig {
                    id: "overlay".into(),
                    path: "/var/lib/banger/vms/web1/overlay.ext4".into(),
                    read_only: false,
                },
            ],
            tap: "bgtap0".into(),
            guest_mac: "06:00:0a:64:00:02".into(),
            vsock: VsockConfig {
                guest_cid: 0x0a64_0002,
                uds_path: "/run/banger/vms/web1/vsock.sock".into(),
            },
            log_path: "/var/lib/banger/vms/web1/firecracker.log".into(),
            metrics_path: "/var/lib/banger/vms/web1/metrics.json".into(),
        }
    }

    #[test]
    fn boot_requests_are_in_order() {
        let reqs = boot_requests(&sample()).unwrap();
        let got: Vec<(Method, &str)> = reqs.iter().map(|r| (r.method, r.path.as_str())).collect();
        let put = Method::Put;
        assert_eq!(
            got,
            vec![
                (put, "/metrics"),
                (put, "/machine-config"),
                (put, "/boot-source"),
                (put, "/drives/image"),
                (put, "/drives/overlay"),
                (put, "/network-interfaces/eth0"),
                (put, "/vsock"),
                (put, "/actions"),
            ]
        );
        assert_eq!(
            reqs.last().unwrap().body,
            Some(json!({"action_type": "InstanceStart"}))
        );
    }

    #[test]
    fn bodies_carry_the_config_and_no_nulls() {
        let reqs = boot_requests(&sample()).unwrap();
        let body = |path: &str| reqs.iter().find(|r| r.path == path).unwrap().body.clone();
        assert_eq!(
            body("/machine-config"),
            Some(json!({"vcpu_count": 2, "mem_size_mib": 1024}))
        );
        assert_eq!(
            body("/drives/image"),
            Some(json!({
                "drive_id": "image",
                "is_root_device": false,
                "path_on_host": "/var/lib/banger/images/debian.ext4",
                "is_read_only": true,
            }))
        );
        assert_eq!(
            body("/network-interfaces/eth0"),
            Some(json!({
                "iface_id": "eth0",
                "host_dev_name": "bgtap0",
                "guest_mac": "06:00:0a:64:00:02",
            }))
        );
        let mut no_initrd = sample();
        no_initrd.initrd = None;
        let reqs = boot_requests(&no_initrd).unwrap();
        let boot = reqs.iter().find(|r| r.path == "/boot-source").unwrap();
        assert!(boot.body.as_ref().unwrap().get("initrd_path").is_none());
    }

    #[test]
    fn the_command_line_logs_to_the_file_from_the_first_line() {
        let args = command_line(&sample(), Path::new("/run/x/fc.sock"), "web1").unwrap();
        let args: Vec<&str> = args.iter().map(|a| a.to_str().unwrap()).collect();
        assert_eq!(
            args,
            [
                "--api-sock",
                "/run/x/fc.sock",
                "--id",
                "web1",
                "--log-path",
                "/var/lib/banger/vms/web1/firecracker.log",
                "--level",
                "Info",
                "--show-level",
            ]
        );
    }

    #[test]
    fn stop_and_describe() {
        assert_eq!(stop_request().path, "/actions");
        assert_eq!(
            stop_request().body,
            Some(json!({"action_type": "SendCtrlAltDel"}))
        );
        assert_eq!(describe_request(), FcRequest::get("/"));
        assert_eq!(describe_request().body, None);
    }

    #[test]
    fn config_file_sections_equal_request_bodies() {
        let cfg = sample();
        let file = config_file(&cfg).unwrap();
        let reqs = boot_requests(&cfg).unwrap();
        let body = |path: &str| {
            reqs.iter()
                .find(|r| r.path == path)
                .unwrap()
                .body
                .clone()
                .unwrap()
        };
        for (key, path) in CONFIG_FILE_SECTIONS {
            assert_eq!(file[key], body(path), "{key}");
        }
        assert_eq!(
            file["drives"],
            json!([body("/drives/image"), body("/drives/overlay")])
        );
        assert_eq!(
            file["network-interfaces"],
            json!([body("/network-interfaces/eth0")])
        );
        assert_eq!(file.as_object().unwrap().len(), 6);
        assert!(
            file.get("logger").is_none(),
            "the log is on the command line"
        );
    }

    #[test]
    fn bad_configs_are_refused() {
        let with = |f: &dyn Fn(&mut FirecrackerBootConfig)| {
            let mut c = sample();
            f(&mut c);
            boot_requests(&c).unwrap_err()
        };
        assert_eq!(with(&|c| c.vcpus = 0), PlanError::Vcpus(0));
        assert_eq!(with(&|c| c.vcpus = 33), PlanError::Vcpus(33));
        assert_eq!(with(&|c| c.memory_mib = 0), PlanError::Memory);
        assert_eq!(with(&|c| c.vsock.guest_cid = 2), PlanError::GuestCid(2));
        assert_eq!(
            with(&|c| c.drives[0].id = "../x".into()),
            PlanError::DriveId("../x".into())
        );
        assert_eq!(
            with(&|c| c.drives[1].id = "image".into()),
            PlanError::DuplicateDrive("image".into())
        );
    }

    #[test]
    fn non_utf8_paths_are_refused() {
        use std::ffi::OsStr;
        use std::os::unix::ffi::OsStrExt;
        let mut c = sample();
        c.kernel = PathBuf::from(OsStr::from_bytes(b"/k\xff"));
        assert!(matches!(boot_requests(&c), Err(PlanError::NonUtf8Path(_))));
    }
}
