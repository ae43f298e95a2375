//! SSH into VMs with the user's OpenSSH: `vm ssh`, `vm run`'s shell, and
//! `ssh-config` for plain `ssh NAME.vm`. Host keys are checked against
//! banger's own known_hosts (never the user's), strictly.

use std::process::Command;

use anyhow::{Context, Result};
use banger_proto::ssh::SshSettings;
use banger_proto::vm::Vm;

use crate::client::Client;

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
    let settings: SshSettings = client.get("/v1/ssh").await?;
    let _interrupts = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .context("cannot take over ctrl-c")?;
    let status = command(&settings, vm, command_line)
        .status()
        .context("cannot run ssh (apt-get install openssh-client)")?;
    Ok(status.code().unwrap_or(255))
}

/// `banger ssh-config`: a stanza for ~/.ssh/config.
pub async fn config(client: &Client) -> Result<()> {
    let settings: SshSettings = client.get("/v1/ssh").await?;
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
