//! SSH into VMs with OpenSSH, without prompts and without loosening the
//! user's own known_hosts: the daemon keeps a keypair (`ssh/id_ed25519`
//! under the state directory) whose public key, with any keys from the
//! config, every guest accepts for root; each VM gets its own host key,
//! made on the host at its first start and put into its system disk, and
//! recorded in banger's own known_hosts (`ssh/known_hosts`) under
//! `NAME.vm` and its address. The capability waits for sshd's banner
//! (`ssh_ready`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use banger_core::capability::{Capability, CapabilityError, GuestConfig, VmContext};
use banger_core::service::access::{GUEST_SSH_KEYS_FILE, VM_SSH_KEYS_FILE};
use tokio::io::AsyncReadExt;
use tokio::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum SshError {
    #[error("ssh-keygen failed for {path}: {detail}")]
    Keygen { path: String, detail: String },
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: String,
        source: std::io::Error,
    },
}

/// How long a booted guest may take to answer on port 22.
pub const SSH_READY_TIMEOUT: Duration = Duration::from_secs(120);
const HOST_KEY: &str = "ssh_host_ed25519_key";

async fn keygen(path: &Path, comment: &str) -> Result<(), SshError> {
    if path.exists() {
        return Ok(());
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| SshError::Io {
            action: "create",
            path: dir.display().to_string(),
            source,
        })?;
    }
    let out = Command::new(crate::tools::find_tool("ssh-keygen").unwrap_or("ssh-keygen".into()))
        .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
        .arg(path)
        .output()
        .await
        .map_err(|e| SshError::Keygen {
            path: path.display().to_string(),
            detail: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(SshError::Keygen {
            path: path.display().to_string(),
            detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}

fn read(path: &Path) -> Result<String, SshError> {
    std::fs::read_to_string(path).map_err(|source| SshError::Io {
        action: "read",
        path: path.display().to_string(),
        source,
    })
}

/// The daemon's keys and known_hosts.
#[derive(Debug, Clone)]
pub struct SshKeys {
    dir: PathBuf,
    public: String,
    /// More public keys guests accept (from the config).
    extra: Vec<String>,
    /// Serialises known_hosts rewrites: parallel starts must not lose
    /// each other's entries.
    known_hosts_lock: Arc<Mutex<()>>,
}

impl SshKeys {
    /// Makes the daemon's keypair under `dir` when it has none.
    pub async fn ensure(dir: &Path, extra: Vec<String>) -> Result<SshKeys, SshError> {
        let identity = dir.join("id_ed25519");
        keygen(&identity, "banger").await?;
        let public = read(&dir.join("id_ed25519.pub"))?.trim().to_string();
        Ok(SshKeys {
            dir: dir.to_path_buf(),
            public,
            extra,
            known_hosts_lock: Arc::default(),
        })
    }

    pub fn identity(&self) -> PathBuf {
        self.dir.join("id_ed25519")
    }

    pub fn known_hosts(&self) -> PathBuf {
        self.dir.join("known_hosts")
    }

    /// Replaces the known_hosts entry of `name` (and `addr`) with `key`.
    pub fn record_host(&self, name: &str, addr: &str, key: Option<&str>) -> Result<(), SshError> {
        let _guard = self
            .known_hosts_lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let path = self.known_hosts();
        let old = std::fs::read_to_string(&path).unwrap_or_default();
        let tag = format!("{name}.vm,");
        let mut lines: Vec<String> = old
            .lines()
            .filter(|l| !l.starts_with(&tag) && !l.starts_with(&format!("{addr} ")))
            .map(String::from)
            .collect();
        if let Some(key) = key {
            lines.push(format!("{name}.vm,{addr} {key}"));
        }
        let mut text = lines.join("\n");
        if !text.is_empty() {
            text.push('\n');
        }
        let tmp = self.dir.join(".known_hosts.tmp");
        // Readable by everyone: ssh run by any user checks host keys
        // against it (public keys only).
        std::fs::write(&tmp, text)
            .and_then(|()| {
                std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o644))
            })
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|source| SshError::Io {
                action: "write",
                path: path.display().to_string(),
                source,
            })
    }
}

/// The SSH capability.
pub struct SshCapability {
    keys: Arc<SshKeys>,
    ready_timeout: Duration,
}

impl SshCapability {
    pub fn new(keys: Arc<SshKeys>) -> Self {
        SshCapability {
            keys,
            ready_timeout: SSH_READY_TIMEOUT,
        }
    }

    /// How long `post_start` waits for sshd (tests shorten it).
    pub fn with_ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = timeout;
        self
    }
}

fn err(message: impl std::fmt::Display) -> CapabilityError {
    CapabilityError {
        capability: "ssh",
        message: message.to_string(),
    }
}

/// The public half of a host key, `ssh-ed25519 AAAA...` without comment.
fn key_of(public_line: &str) -> String {
    public_line
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

#[async_trait]
impl Capability for SshCapability {
    fn name(&self) -> &'static str {
        "ssh"
    }

    fn prepare_stage(&self) -> &'static str {
        "ssh_keys"
    }

    async fn preflight(&self, ctx: &VmContext) -> Result<(), CapabilityError> {
        keygen(&ctx.vm_dir.join(HOST_KEY), &format!("{}.vm", ctx.vm.name))
            .await
            .map_err(err)
    }

    fn guest_config(&self, ctx: &VmContext, config: &mut GuestConfig) {
        let key = ctx.vm_dir.join(HOST_KEY);
        let private = std::fs::read_to_string(&key).unwrap_or_default();
        let public = std::fs::read_to_string(key.with_extension("pub")).unwrap_or_default();
        config.add_file(&format!("/etc/ssh/{HOST_KEY}"), private, 0o600);
        config.add_file(&format!("/etc/ssh/{HOST_KEY}.pub"), public, 0o644);
        let mut authorized = vec![self.keys.public.clone()];
        authorized.extend(self.keys.extra.iter().cloned());
        config.add_file(
            "/etc/ssh/banger_authorized_keys",
            authorized.join("\n") + "\n",
            0o644,
        );
        // The keys of the users let into this VM (its creator's, and
        // those `vm ssh` added).
        let users = std::fs::read_to_string(ctx.vm_dir.join(VM_SSH_KEYS_FILE)).unwrap_or_default();
        config.add_file(GUEST_SSH_KEYS_FILE, users, 0o644);
        config.add_file(
            "/etc/ssh/sshd_config.d/banger.conf",
            format!(
                "HostKey /etc/ssh/{HOST_KEY}\nAuthorizedKeysFile .ssh/authorized_keys /etc/ssh/banger_authorized_keys {GUEST_SSH_KEYS_FILE}\nPermitRootLogin prohibit-password\nPasswordAuthentication no\nUseDNS no\n"
            ),
            0o644,
        );
    }

    async fn post_start(&self, ctx: &VmContext) -> Result<(), CapabilityError> {
        let public = std::fs::read_to_string(ctx.vm_dir.join(HOST_KEY).with_extension("pub"))
            .map_err(err)?;
        let addr = ctx.vm.guest_ip.to_string();
        self.keys
            .record_host(&ctx.vm.name, &addr, Some(&key_of(&public)))
            .map_err(err)?;
        // An image without sshd (a small userland) is ready with its agent.
        let rootfs = ctx.image.rootfs_path.clone();
        let has_sshd = tokio::task::spawn_blocking(move || {
            crate::image::userland::probe::has_file(&rootfs, SSHD).unwrap_or(true)
        })
        .await
        .unwrap_or(true);
        if !has_sshd {
            return Ok(());
        }
        wait_banner(
            SocketAddr::new(ctx.vm.guest_ip.into(), 22),
            self.ready_timeout,
        )
        .await
        .map_err(|e| {
            let console = crate::agent::link::serial_tail(&ctx.vm_dir.join("serial.log"));
            err(format!("{e}; {console}"))
        })
    }

    fn ready_stage(&self) -> Option<&'static str> {
        Some("ssh_ready")
    }

    async fn remove(&self, ctx: &VmContext) {
        let _ = self
            .keys
            .record_host(&ctx.vm.name, &ctx.vm.guest_ip.to_string(), None);
    }
}

/// Where an image's sshd is; an image without it is not waited for.
const SSHD: &str = "/usr/sbin/sshd";

/// Waits until `addr` answers with an SSH banner.
pub async fn wait_banner(addr: SocketAddr, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Ok(mut stream)) =
            tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr)).await
        {
            let mut banner = [0u8; 4];
            if let Ok(Ok(_)) =
                tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut banner)).await
            {
                if &banner == b"SSH-" {
                    return Ok(());
                }
            }
        }
        if Instant::now() > deadline {
            return Err(format!("sshd at {addr} did not answer within {timeout:?}"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keys_are_made_once_and_known_hosts_kept_per_vm() {
        let dir = tempfile::tempdir().unwrap();
        let keys = SshKeys::ensure(dir.path(), vec![]).await.unwrap();
        assert!(keys.public.starts_with("ssh-ed25519 "), "{}", keys.public);
        let again = SshKeys::ensure(dir.path(), vec![]).await.unwrap();
        assert_eq!(again.public, keys.public, "not made again");
        keys.record_host("web", "172.29.0.2", Some("ssh-ed25519 AAAA1"))
            .unwrap();
        keys.record_host("db", "172.29.0.3", Some("ssh-ed25519 AAAA2"))
            .unwrap();
        keys.record_host("web", "172.29.0.2", Some("ssh-ed25519 AAAA3"))
            .unwrap();
        let text = std::fs::read_to_string(keys.known_hosts()).unwrap();
        assert_eq!(
            text,
            "db.vm,172.29.0.3 ssh-ed25519 AAAA2\nweb.vm,172.29.0.2 ssh-ed25519 AAAA3\n"
        );
        keys.record_host("db", "172.29.0.3", None).unwrap();
        let text = std::fs::read_to_string(keys.known_hosts()).unwrap();
        assert_eq!(text, "web.vm,172.29.0.2 ssh-ed25519 AAAA3\n");
    }

    #[test]
    fn parallel_records_keep_every_entry() {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Runtime::new().unwrap();
        let keys = rt.block_on(SshKeys::ensure(dir.path(), vec![])).unwrap();
        std::thread::scope(|scope| {
            for i in 0..16 {
                let keys = keys.clone();
                scope.spawn(move || {
                    keys.record_host(
                        &format!("vm{i}"),
                        &format!("172.29.0.{}", i + 2),
                        Some("ssh-ed25519 AAAA"),
                    )
                    .unwrap()
                });
            }
        });
        let text = std::fs::read_to_string(keys.known_hosts()).unwrap();
        assert_eq!(text.lines().count(), 16, "{text}");
        for i in 0..16 {
            assert!(text.contains(&format!("vm{i}.vm,")), "vm{i} lost: {text}");
        }
    }

    fn context(dir: &Path) -> VmContext {
        use banger_core::image::Image;
        use banger_core::spec::VmSpec;
        use banger_core::vm::{Vm, VmState};
        VmContext {
            vm: Vm {
                id: "0123456789abcdef".into(),
                name: "web".into(),
                image_id: "img".into(),
                image_name: "debian".into(),
                state: VmState::Starting,
                spec: VmSpec {
                    vcpus: 1,
                    memory_mib: 256,
                    work_disk_bytes: 1 << 30,
                    system_disk_bytes: 1 << 30,
                    nat: false,
                    ports: Vec::new(),
                    mounts: Vec::new(),
                },
                // TEST-NET-1: nothing answers there.
                guest_ip: "192.0.2.1".parse().unwrap(),
                vsock_cid: 3,
                created_at_ms: 0,
                updated_at_ms: 0,
                last_error: None,
                stages: vec![],
                create_stages: vec![],
                vmm: "qemu".into(),
                handle: None,
            },
            image: Image {
                id: "img".into(),
                name: "debian".into(),
                source: "register".into(),
                kernel_path: dir.join("kernel"),
                vmlinux_path: None,
                initrd_path: None,
                rootfs_path: dir.join("rootfs.ext4"),
                work_seed_path: None,
                manifest: None,
                created_at_ms: 0,
                parent_id: None,
                layers: Vec::new(),
            },
            vm_dir: dir.to_path_buf(),
            run_dir: dir.to_path_buf(),
            restore_from: None,
        }
    }

    #[tokio::test]
    async fn an_sshd_that_never_answers_shows_the_guest_console() {
        let dir = tempfile::tempdir().unwrap();
        let keys = Arc::new(
            SshKeys::ensure(&dir.path().join("ssh"), vec![])
                .await
                .unwrap(),
        );
        let ctx = context(dir.path());
        std::fs::write(
            dir.path().join("serial.log"),
            "booting\nsshd.service: failed with result exit-code\n",
        )
        .unwrap();
        let ssh = SshCapability::new(keys.clone()).with_ready_timeout(Duration::from_millis(300));
        ssh.preflight(&ctx).await.unwrap();
        let message = ssh.post_start(&ctx).await.unwrap_err().to_string();
        assert!(
            message.starts_with("ssh: sshd at 192.0.2.1:22 did not answer"),
            "{message}"
        );
        assert!(message.contains("sshd.service: failed"), "{message}");
        assert!(!message.contains('\n'), "one line: {message}");
        // The host key was recorded before the wait, and is dropped on remove.
        let known = std::fs::read_to_string(keys.known_hosts()).unwrap();
        assert!(
            known.starts_with("web.vm,192.0.2.1 ssh-ed25519 "),
            "{known}"
        );
        ssh.remove(&ctx).await;
        assert_eq!(std::fs::read_to_string(keys.known_hosts()).unwrap(), "");
    }
}
