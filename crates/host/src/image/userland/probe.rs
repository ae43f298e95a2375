//! What a root filesystem holds that decides whether banger can boot it:
//! the kernel module trees, a shell or an init, systemd, sshd. Read from
//! an ext4 image inside itself (`ext4::inside`: nothing mounted, every
//! link resolved within the image), and judged by a pure function that
//! refuses, with a hint, what would only boot into a panic.

use std::path::Path;

use ext4_view::FileType;

use crate::image::ext4::inside::{Ext4Image, InsideError as Ext4Inside};

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
    #[error(transparent)]
    Inside(#[from] Ext4Inside),
}

/// Whether the ext4 image at `image` holds `path` (symbolic links
/// followed inside the image).
pub fn has_file(image: &Path, path: &str) -> Result<bool, ProbeError> {
    Ok(Ext4Image::open(image)?.exists(path)?)
}

impl RootfsFacts {
    /// Reads the facts of the ext4 image at `image`.
    pub fn probe_ext4(image: &Path) -> Result<RootfsFacts, ProbeError> {
        let fs = Ext4Image::open(image)?;
        let exists = |path: &str| fs.exists(path);
        let mut kernels: Vec<String> = fs
            .names("/boot", FileType::Regular)?
            .into_iter()
            .filter_map(|name| name.strip_prefix("vmlinuz-").map(str::to_string))
            .collect();
        kernels.sort();
        Ok(RootfsFacts {
            module_versions: fs.names("/lib/modules", FileType::Directory)?,
            kernels,
            has_shell: exists("/bin/sh")?,
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
