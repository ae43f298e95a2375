//! Finding the host tools banger shells out to.

use std::env;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

/// Directories searched after `$PATH`: root's tools live in sbin, which a
/// non-login environment may leave out.
const EXTRA_DIRS: &[&str] = &[
    "/usr/local/sbin",
    "/usr/local/bin",
    "/usr/sbin",
    "/usr/bin",
    "/sbin",
    "/bin",
];

/// The full path of executable `name`, if any.
pub fn find_tool(name: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH").unwrap_or_default();
    env::split_paths(&path)
        .chain(EXTRA_DIRS.iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| {
            candidate
                .metadata()
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

/// What `PROGRAM --version` prints first, trimmed to its version: the
/// first word that starts with a digit (`QEMU emulator version 7.2.19
/// (Debian 1:7.2+dfsg-7+deb12u16)` gives `7.2.19`), else the whole line;
/// `None` when the program is not installed or does not answer.
pub fn version_of(program: &str) -> Option<String> {
    let path = find_tool(program)?;
    let out = std::process::Command::new(path)
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().next()?.trim();
    Some(version_word(line).unwrap_or(line).to_string())
}

fn version_word(line: &str) -> Option<&str> {
    line.split_whitespace()
        .map(|w| w.trim_start_matches('v'))
        .find(|w| w.starts_with(|c: char| c.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn versions_are_the_first_numeric_word() {
        assert_eq!(
            super::version_word("QEMU emulator version 7.2.19 (Debian 1:7.2+dfsg-7+deb12u16)"),
            Some("7.2.19")
        );
        assert_eq!(super::version_word("Firecracker v1.16.1"), Some("1.16.1"));
        assert_eq!(super::version_word("no digits"), None);
    }

    #[test]
    fn finds_sh_and_not_nonsense() {
        assert!(super::find_tool("sh").is_some());
        assert!(super::find_tool("no-such-tool-banger").is_none());
    }
}
