//! Default locations shared by the daemon and the CLI, and how a root
//! override (`--root` / `BANGER_ROOT`) moves them, so tests and side-by-side
//! installs never touch the host's real state.

use std::path::{Path, PathBuf};

pub const ENV_ROOT: &str = "BANGER_ROOT";
pub const ENV_CONFIG: &str = "BANGER_CONFIG";
pub const ENV_SOCKET: &str = "BANGER_SOCKET";

/// The default paths under an optional root prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefaultPaths {
    pub config: PathBuf,
    pub state_dir: PathBuf,
    pub run_dir: PathBuf,
}

impl DefaultPaths {
    pub fn under(root: Option<&Path>) -> Self {
        let at = |p: &str| match root {
            Some(root) => root.join(p.trim_start_matches('/')),
            None => PathBuf::from(p),
        };
        DefaultPaths {
            config: at("/etc/banger/config.toml"),
            state_dir: at("/var/lib/banger"),
            run_dir: at("/run/banger"),
        }
    }

    pub fn socket(&self) -> PathBuf {
        self.run_dir.join("bangerd.sock")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_moves_everything() {
        let d = DefaultPaths::under(Some(Path::new("/tmp/t")));
        assert_eq!(d.config, Path::new("/tmp/t/etc/banger/config.toml"));
        assert_eq!(d.socket(), Path::new("/tmp/t/run/banger/bangerd.sock"));
        assert_eq!(
            DefaultPaths::under(None).state_dir,
            Path::new("/var/lib/banger")
        );
    }
}
