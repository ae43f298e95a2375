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

#[cfg(test)]
mod tests {
    #[test]
    fn finds_sh_and_not_nonsense() {
        assert!(super::find_tool("sh").is_some());
        assert!(super::find_tool("no-such-tool-banger").is_none());
    }
}
