//! The shape of a doctor report: named checks that pass, warn or fail.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckStatus {
    Pass,
    Warn,
    Fail,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub name: String,
    pub status: CheckStatus,
    pub detail: String,
    pub hint: Option<String>,
}

impl Check {
    pub fn pass(name: &str, detail: impl Into<String>) -> Self {
        Check {
            name: name.into(),
            status: CheckStatus::Pass,
            detail: detail.into(),
            hint: None,
        }
    }

    pub fn warn(name: &str, detail: impl Into<String>, hint: impl Into<String>) -> Self {
        Check {
            name: name.into(),
            status: CheckStatus::Warn,
            detail: detail.into(),
            hint: Some(hint.into()),
        }
    }

    pub fn fail(name: &str, detail: impl Into<String>, hint: impl Into<String>) -> Self {
        Check {
            name: name.into(),
            status: CheckStatus::Fail,
            detail: detail.into(),
            hint: Some(hint.into()),
        }
    }
}

/// The default image: present with a work seed (pass), present without one
/// (warn: every VM's `/root` starts empty, without the image's dotfiles),
/// absent but in the
/// catalog (pass: the first create fetches it), absent and unknown (fail).
pub fn default_image_check(
    name: &str,
    found: Option<&crate::image::Image>,
    in_catalog: bool,
) -> Check {
    let check = "default image";
    match (found, in_catalog) {
        (Some(image), _) if image.work_seed_path.is_some() => {
            Check::pass(check, format!("{name} is on this host, with a work seed"))
        }
        (Some(_), _) => Check::warn(
            check,
            format!(
                "{name} has no work seed: new vms get an empty /root, made from scratch, instead of the image's /root"
            ),
            format!("re-register it with --work-seed, or pull it again: banger image rm {name} && banger image pull {name}"),
        ),
        (None, true) => Check::pass(
            check,
            format!("{name} is not on this host yet: the first create fetches it from the catalog"),
        ),
        (None, false) => Check::fail(
            check,
            format!("{name} is not on this host and not in the catalog"),
            "set default_image in the config to an image from `banger image ls` or `banger image ls --catalog`",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::Image;

    #[test]
    fn default_image_states() {
        let mut image = Image {
            id: "i".into(),
            name: "deb".into(),
            source: "build".into(),
            kernel_path: "/k".into(),
            vmlinux_path: None,
            initrd_path: None,
            rootfs_path: "/r".into(),
            work_seed_path: Some("/s".into()),
            manifest: None,
            created_at_ms: 0,
            parent_id: None,
            layers: Vec::new(),
        };
        assert_eq!(
            default_image_check("deb", Some(&image), false).status,
            CheckStatus::Pass
        );
        image.work_seed_path = None;
        let warn = default_image_check("deb", Some(&image), true);
        assert_eq!(warn.status, CheckStatus::Warn);
        assert!(warn.detail.contains("empty /root"));
        assert_eq!(
            default_image_check("deb", None, true).status,
            CheckStatus::Pass
        );
        assert_eq!(
            default_image_check("deb", None, false).status,
            CheckStatus::Fail
        );
    }
}
