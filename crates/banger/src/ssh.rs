//! SSH into VMs with the user's OpenSSH: `vm ssh`, `vm run`'s shell, and
//! `ssh-config` for plain `ssh NAME.vm`. Host keys are checked against
//! banger's own known_hosts (never the user's), strictly. Root uses the
//! daemon's key; every other user their own (`~/.ssh/id_ed25519`,
//! `id_ecdsa` or `id_rsa`, else one banger makes in
//! `~/.config/banger/id_ed25519`), which the CLI offers to the VMs it
//! creates and lets into a VM before `vm ssh`.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result};
use banger_proto::ssh::SshSettings;
use banger_proto::vm::{Vm, VmSshKeysRequest};

use crate::client::{checked, Client};
use crate::vm::path_segment;

/// A user's own key pair.
#[derive(Debug, Clone)]
pub struct OwnKey {
    pub private: PathBuf,
    /// The `.pub` line.
    pub public: String,
}

/// The caller's own key (made on first use when it has none); `None`
/// for root, which uses the daemon's.
pub fn own_key() -> Result<Option<OwnKey>> {
    let uid = std::fs::metadata("/proc/self")
        .context("cannot tell who runs banger (/proc/self)")?
        .uid();
    if uid == 0 {
        return Ok(None);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .context("HOME is not set: banger looks for your ssh key under it")?;
    for name in ["id_ed25519", "id_ecdsa", "id_rsa"] {
        let private = home.join(".ssh").join(name);
        if let Ok(public) = std::fs::read_to_string(private.with_extension("pub")) {
            if private.exists() {
                return Ok(Some(OwnKey {
                    private,
                    public: public.trim().to_string(),
                }));
            }
        }
    }
    let dir = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| home.join(".config"))
        .join("banger");
    let private = dir.join("id_ed25519");
    if !private.exists() {
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot make {} for your ssh key", dir.display()))?;
        let made = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "banger", "-f"])
            .arg(&private)
            .output()
            .context("cannot run ssh-keygen (apt-get install openssh-client)")?;
        if !made.status.success() {
            anyhow::bail!(
                "ssh-keygen could not make {}: {}",
                private.display(),
                String::from_utf8_lossy(&made.stderr).trim()
            );
        }
    }
    let public = std::fs::read_to_string(private.with_extension("pub"))
        .with_context(|| format!("cannot read {}.pub", private.display()))?;
    Ok(Some(OwnKey {
        private,
        public: public.trim().to_string(),
    }))
}

/// The ssh settings for this caller: its own key in place of the daemon's.
async fn settings(client: &Client, own: Option<&OwnKey>) -> Result<SshSettings> {
    let mut settings: SshSettings = client.get("/v1/ssh").await?;
    if let Some(own) = own {
        settings.identity_file = own.private.display().to_string();
    }
    Ok(settings)
}

/// The ssh command for `vm`, running `command` (a login shell when empty).
pub fn command(settings: &SshSettings, vm: &Vm, command: &[String]) -> Command {
    let mut ssh = Command::new("ssh");
    ssh.arg("-i")
        .arg(&settings.identity_file)
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", settings.known_hosts_file))
        .args(["-o", "StrictHostKeyChecking=yes"])
        .args(["-o", "IdentitiesOnly=yes"])
        .args(["-o", "LogLevel=ERROR"])
        .arg("-o")
        .arg(format!("HostKeyAlias={}", vm.dns_name))
        .arg(format!("{}@{}", settings.user, vm.guest_ip));
    if command.is_empty() {
        ssh.arg("-t");
    } else {
        // ssh hands the remote shell one string: quote each word so the
        // guest runs exactly this argv.
        let words: Vec<String> = command.iter().map(|w| shell_quote(w)).collect();
        ssh.arg("--").arg(words.join(" "));
    }
    ssh
}

/// `word` as one POSIX shell word.
fn shell_quote(word: &str) -> String {
    if !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c))
    {
        return word.to_string();
    }
    format!("'{}'", word.replace('\'', "'\\''"))
}

/// Runs ssh into `vm` and returns its exit status. Ctrl-C belongs to ssh
/// (and the guest) while it runs: banger itself ignores it, so what comes
/// after (`vm run --rm`) still happens.
pub async fn run(client: &Client, vm: &Vm, command_line: &[String]) -> Result<i32> {
    let own = own_key()?;
    if let Some(own) = &own {
        let request = VmSshKeysRequest {
            keys: vec![checked(own.public.clone())?],
        };
        let _: Vm = client
            .post(
                &format!("/v1/vms/{}/ssh-keys", path_segment(&vm.name)),
                &request,
            )
            .await?;
    }
    let settings = settings(client, own.as_ref()).await?;
    let _interrupts = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .context("cannot take over ctrl-c")?;
    let status = command(&settings, vm, command_line)
        .status()
        .context("cannot run ssh (apt-get install openssh-client)")?;
    Ok(status.code().unwrap_or(255))
}

/// `banger ssh-config`: a stanza for ~/.ssh/config.
pub async fn config(client: &Client) -> Result<()> {
    let settings = settings(client, own_key()?.as_ref()).await?;
    println!("# banger vms: add to ~/.ssh/config, then `ssh NAME.vm`");
    println!("Host *.vm");
    println!("    User {}", settings.user);
    println!("    IdentityFile {}", settings.identity_file);
    println!("    IdentitiesOnly yes");
    println!("    UserKnownHostsFile {}", settings.known_hosts_file);
    println!("    StrictHostKeyChecking yes");
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn words_survive_the_remote_shell() {
        assert_eq!(super::shell_quote("uname"), "uname");
        assert_eq!(super::shell_quote("echo $HOME; x"), "'echo $HOME; x'");
        assert_eq!(super::shell_quote("it's"), "'it'\\''s'");
        assert_eq!(super::shell_quote(""), "''");
    }
}
