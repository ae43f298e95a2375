//! What a root filesystem holds that decides whether banger can boot it:
//! the kernel module trees, a shell or an init, systemd, sshd. Read from
//! an ext4 image with `debugfs` (nothing mounted, so a hostile image
//! meets only a userspace parser), and judged by a pure function that
//! refuses, with a hint, what would only boot into a panic.

use std::path::Path;
use std::process::Command;

/// Facts about a root filesystem.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RootfsFacts {
    /// The directories of `/lib/modules` (kernel releases).
    pub module_versions: Vec<String>,
    /// The releases of the kernels in `/boot` (`vmlinuz-RELEASE`).
    pub kernels: Vec<String>,
    pub has_shell: bool,
    pub has_init: bool,
    pub has_systemd: bool,
    pub has_sshd: bool,
}

/// The init a userland boots with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitKind {
    /// Its own systemd, set up the lean way.
    Systemd,
    /// banger's small init (no init system in the userland).
    Small,
}

/// Why a root filesystem cannot be made bootable, and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Unbootable {
    pub message: String,
    pub hint: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("cannot read {path} with debugfs: {detail}")]
    Debugfs { path: String, detail: String },
}

fn debugfs(image: &Path, request: &str) -> Result<(String, String), ProbeError> {
    let out = Command::new("debugfs")
        .arg("-R")
        .arg(request)
        .arg(image)
        .output()
        .map_err(|e| ProbeError::Debugfs {
            path: image.display().to_string(),
            detail: e.to_string(),
        })?;
    Ok((
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// Whether the ext4 image at `image` holds `path` (symbolic links in
/// its parents followed inside the image).
pub fn has_file(image: &Path, path: &str) -> Result<bool, ProbeError> {
    let (out, err) = debugfs(image, &format!("stat {path}"))?;
    if out.contains("Inode:") {
        Ok(true)
    } else if err.contains("File not found") {
        Ok(false)
    } else {
        Err(ProbeError::Debugfs {
            path: image.display().to_string(),
            detail: err.lines().last().unwrap_or("no answer").to_string(),
        })
    }
}

impl RootfsFacts {
    /// Reads the facts of the ext4 image at `image`.
    pub fn probe_ext4(image: &Path) -> Result<RootfsFacts, ProbeError> {
        let exists = |path: &str| has_file(image, path);
        // Fails here, once, for a file debugfs cannot open.
        let has_shell = exists("/bin/sh")?;
        let (listing, _) = debugfs(image, "ls -p /lib/modules")?;
        let (boot, _) = debugfs(image, "ls -p /boot")?;
        Ok(RootfsFacts {
            module_versions: parse_dir_listing(&listing),
            kernels: parse_kernels(&boot),
            has_shell,
            has_init: exists("/sbin/init")?,
            has_systemd: exists("/lib/systemd/systemd")?,
            has_sshd: exists("/usr/sbin/sshd")?,
        })
    }

    /// The newest kernel of the rootfs's own `/boot` that has its modules.
    pub fn own_kernel(&self) -> Option<String> {
        self.kernels
            .iter()
            .rev()
            .find(|release| self.module_versions.contains(release))
            .cloned()
    }

    /// The init a userland boots with, or its refusal whatever the
    /// kernel: no shell and no init.
    pub fn userland(&self) -> Result<InitKind, Unbootable> {
        let refuse = |message: &str, hint: &str| Unbootable {
            message: message.into(),
            hint: hint.into(),
        };
        if !self.has_shell && !self.has_init {
            return Err(refuse(
                "the rootfs has neither /bin/sh nor /sbin/init",
                "give the root filesystem of a Linux userland",
            ));
        }
        if self.has_systemd {
            Ok(InitKind::Systemd)
        } else if self.has_shell {
            Ok(InitKind::Small)
        } else {
            Err(refuse(
                "the rootfs has an init but no systemd and no /bin/sh",
                "give a userland with systemd, or with /bin/sh for banger's own small init",
            ))
        }
    }

    /// The kernel release whose modules go into the initramfs, or why
    /// there is none. `kernel_release` is the given kernel's, when its
    /// format tells it (a bzImage does; an ELF vmlinux does not).
    pub fn bootable(&self, kernel_release: Option<&str>) -> Result<String, Unbootable> {
        self.userland()?;
        self.modules_for(kernel_release)
    }

    /// The release of the rootfs's modules that a kernel boots with.
    pub fn modules_for(&self, kernel_release: Option<&str>) -> Result<String, Unbootable> {
        let refuse = |message: String, hint: &str| Unbootable {
            message,
            hint: hint.into(),
        };
        let found = if self.module_versions.is_empty() {
            "none".to_string()
        } else {
            self.module_versions.join(", ")
        };
        match kernel_release {
            Some(release) if self.module_versions.iter().any(|v| v == release) => {
                Ok(release.to_string())
            }
            Some(release) => Err(refuse(
                format!(
                    "the rootfs has no modules for kernel {release} (/lib/modules/{release}; found: {found})"
                ),
                "give the kernel whose modules the rootfs holds, or install that kernel's modules in the rootfs",
            )),
            None => match self.module_versions.as_slice() {
                [only] => Ok(only.clone()),
                [] => Err(refuse(
                    "the rootfs has no kernel modules (/lib/modules is empty)".into(),
                    "install the kernel's modules in the rootfs (Debian: its linux-image package)",
                )),
                _ => Err(refuse(
                    format!("the rootfs has modules of several kernels ({found}) and the kernel does not say which it is"),
                    "give the kernel as a bzImage (vmlinuz), whose header names its release",
                )),
            },
        }
    }
}

/// Kernel releases from a `debugfs ls -p /boot` listing: regular files
/// named `vmlinuz-RELEASE`, sorted.
fn parse_kernels(listing: &str) -> Vec<String> {
    let mut releases: Vec<String> = listing
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split('/').collect();
            (fields.len() >= 7 && fields[2].starts_with("10"))
                .then(|| fields[5].strip_prefix("vmlinuz-").map(str::to_string))
                .flatten()
        })
        .collect();
    releases.sort();
    releases
}

/// Directory names from `debugfs ls -p` output (`/ino/mode/uid/gid/name/size/`).
fn parse_dir_listing(listing: &str) -> Vec<String> {
    let mut names: Vec<String> = listing
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split('/').collect();
            // ["", ino, mode, uid, gid, name, size, ""]
            (fields.len() >= 7 && fields[2].starts_with("04"))
                .then(|| fields[5].to_string())
                .filter(|name| name != "." && name != "..")
        })
        .collect();
    names.sort();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    fn debian() -> RootfsFacts {
        RootfsFacts {
            module_versions: vec!["6.1.0-57-cloud-amd64".into()],
            kernels: vec!["6.1.0-57-cloud-amd64".into()],
            has_shell: true,
            has_init: true,
            has_systemd: true,
            has_sshd: true,
        }
    }

    #[test]
    fn a_listing_gives_its_directories() {
        let listing = "/882/040755/0/0/.//\n/766/040755/0/0/..//\n/883/040755/0/0/6.1.0-57-cloud-amd64//\n/884/100644/0/0/stray-file/12/\n\n";
        assert_eq!(parse_dir_listing(listing), ["6.1.0-57-cloud-amd64"]);
        let boot = "/13/040755/0/0/.//\n/15/100644/0/0/config-6.1.0-57-cloud-amd64/123137/\n/16/100644/0/0/vmlinuz-6.1.0-57-cloud-amd64/14190528/\n/17/120777/0/0/vmlinuz-link/9/\n";
        assert_eq!(parse_kernels(boot), ["6.1.0-57-cloud-amd64"]);
    }

    #[test]
    fn the_own_kernel_is_the_newest_with_modules() {
        let facts = RootfsFacts {
            kernels: vec!["6.1.0-1".into(), "6.1.0-2".into(), "6.1.0-3".into()],
            module_versions: vec!["6.1.0-1".into(), "6.1.0-2".into()],
            ..debian()
        };
        assert_eq!(facts.own_kernel().as_deref(), Some("6.1.0-2"));
        let none = RootfsFacts {
            kernels: vec![],
            ..debian()
        };
        assert_eq!(none.own_kernel(), None);
    }

    #[test]
    fn the_kernel_release_picks_the_modules() {
        assert_eq!(
            debian().bootable(Some("6.1.0-57-cloud-amd64")).unwrap(),
            "6.1.0-57-cloud-amd64"
        );
        assert_eq!(debian().bootable(None).unwrap(), "6.1.0-57-cloud-amd64");
        let err = debian().bootable(Some("6.1.0-9-amd64")).unwrap_err();
        assert_eq!(
            err.message,
            "the rootfs has no modules for kernel 6.1.0-9-amd64 (/lib/modules/6.1.0-9-amd64; found: 6.1.0-57-cloud-amd64)"
        );
        let two = RootfsFacts {
            module_versions: vec!["a".into(), "b".into()],
            ..debian()
        };
        assert!(two.bootable(None).unwrap_err().hint.contains("bzImage"));
        let none = RootfsFacts {
            module_versions: vec![],
            ..debian()
        };
        assert!(none
            .bootable(None)
            .unwrap_err()
            .message
            .contains("no kernel modules"));
    }

    #[test]
    fn no_shell_and_no_init_are_refused_and_no_systemd_means_the_small_init() {
        let empty = RootfsFacts::default();
        assert_eq!(
            empty.bootable(None).unwrap_err().message,
            "the rootfs has neither /bin/sh nor /sbin/init"
        );
        let busybox = RootfsFacts {
            has_systemd: false,
            ..debian()
        };
        assert_eq!(busybox.userland().unwrap(), InitKind::Small);
        assert_eq!(debian().userland().unwrap(), InitKind::Systemd);
        let odd = RootfsFacts {
            has_systemd: false,
            has_shell: false,
            ..debian()
        };
        assert!(odd.userland().unwrap_err().hint.contains("small init"));
    }

    #[tokio::test]
    async fn facts_are_read_from_an_ext4_image() {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("tree");
        for d in [
            "usr/bin",
            "usr/lib/modules/6.1.0-test/kernel",
            "usr/lib/systemd",
            "sbin",
        ] {
            std::fs::create_dir_all(tree.join(d)).unwrap();
        }
        std::os::unix::fs::symlink("usr/bin", tree.join("bin")).unwrap();
        std::os::unix::fs::symlink("usr/lib", tree.join("lib")).unwrap();
        std::fs::write(tree.join("usr/bin/dash"), "").unwrap();
        std::os::unix::fs::symlink("dash", tree.join("usr/bin/sh")).unwrap();
        std::fs::write(tree.join("usr/lib/systemd/systemd"), "").unwrap();
        let image = dir.path().join("rootfs.ext4");
        crate::image::ext4::make_from_dir(&tree, &image, Some(32 << 20), "test")
            .await
            .unwrap();
        let facts = RootfsFacts::probe_ext4(&image).unwrap();
        assert_eq!(
            facts,
            RootfsFacts {
                module_versions: vec!["6.1.0-test".into()],
                kernels: vec![],
                has_shell: true,
                has_init: false,
                has_systemd: true,
                has_sshd: false,
            }
        );
    }
}
