//! The `banger.*` keys of the kernel command line, which tell banger-init
//! what to mount and how to set the network:
//!
//! | key | meaning | default |
//! | --- | --- | --- |
//! | `banger.root` | the image rootfs (ext4, mounted read-only) | `/dev/vda` |
//! | `banger.layers` | a promoted image's layers over the rootfs, top first, comma-separated: ext4 disks whose `upper/` join the overlay's lower directories | none |
//! | `banger.system` | the VM's system disk: ext4 with `upper/` and `work/` for the overlay | `/dev/vdb` |
//! | `banger.work` | the work disk, mounted on `/root` | `/dev/vdc` |
//! | `banger.ip` | `ADDRESS/PREFIX` of eth0 | none (no network) |
//! | `banger.gw` | default gateway | none |
//! | `banger.hostname` | the hostname | none |
//! | `banger.agent` | `vsock` or `serial` | `serial` |
//! | `banger.init` | the image's init | `/sbin/init` |
//! | `banger.early` | `off`: start none of the image's early services | `on` |

use std::net::Ipv4Addr;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CmdlineError {
    #[error("bad {key}={value}: {why}")]
    Bad {
        key: &'static str,
        value: String,
        why: &'static str,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentTransport {
    Vsock,
    Serial,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootConfig {
    pub root: String,
    /// Read-only layers over `root`, top first.
    pub layers: Vec<String>,
    pub system: Option<String>,
    pub work: Option<String>,
    pub ip: Option<(Ipv4Addr, u8)>,
    pub gateway: Option<Ipv4Addr>,
    pub hostname: Option<String>,
    pub agent: AgentTransport,
    pub init: String,
    /// Whether the image's early services (`early`) are started.
    pub early: bool,
    /// Shared folders to mount: (virtiofs tag, guest directory, read-only).
    pub shares: Vec<Share>,
}

/// A shared folder of `banger.shares=TAG:DIR[:ro],...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Share {
    pub tag: String,
    pub dir: String,
    pub read_only: bool,
}

impl BootConfig {
    /// Reads the `banger.*` keys of a command line; others are ignored.
    pub fn parse(cmdline: &str) -> Result<BootConfig, CmdlineError> {
        let mut cfg = BootConfig {
            root: "/dev/vda".into(),
            layers: Vec::new(),
            system: Some("/dev/vdb".into()),
            work: Some("/dev/vdc".into()),
            ip: None,
            gateway: None,
            hostname: None,
            agent: AgentTransport::Serial,
            init: "/sbin/init".into(),
            early: true,
            shares: Vec::new(),
        };
        for word in cmdline.split_whitespace() {
            let Some((key, value)) = word.split_once('=') else {
                continue;
            };
            let bad = |key: &'static str, why: &'static str| CmdlineError::Bad {
                key,
                value: value.to_string(),
                why,
            };
            let device = |value: &str| (value != "none").then(|| value.to_string());
            match key {
                "banger.root" => cfg.root = value.to_string(),
                "banger.layers" => {
                    cfg.layers = value.split(',').map(str::to_string).collect();
                    if cfg.layers.iter().any(|l| !l.starts_with("/dev/")) {
                        return Err(bad(
                            "banger.layers",
                            "expected /dev/ paths, comma-separated",
                        ));
                    }
                }
                "banger.system" => cfg.system = device(value),
                "banger.work" => cfg.work = device(value),
                "banger.ip" => {
                    let (addr, prefix) = value
                        .split_once('/')
                        .ok_or_else(|| bad("banger.ip", "expected ADDRESS/PREFIX"))?;
                    let addr = addr
                        .parse()
                        .map_err(|_| bad("banger.ip", "not an ipv4 address"))?;
                    let prefix: u8 = prefix
                        .parse()
                        .ok()
                        .filter(|p| *p <= 32)
                        .ok_or_else(|| bad("banger.ip", "prefix must be 0 to 32"))?;
                    cfg.ip = Some((addr, prefix));
                }
                "banger.gw" => {
                    cfg.gateway = Some(
                        value
                            .parse()
                            .map_err(|_| bad("banger.gw", "not an ipv4 address"))?,
                    )
                }
                "banger.hostname" => cfg.hostname = Some(value.to_string()),
                "banger.agent" => {
                    cfg.agent = match value {
                        "vsock" => AgentTransport::Vsock,
                        "serial" => AgentTransport::Serial,
                        _ => return Err(bad("banger.agent", "expected vsock or serial")),
                    }
                }
                "banger.init" => cfg.init = value.to_string(),
                "banger.shares" => {
                    for item in value.split(',') {
                        let share = match item.split(':').collect::<Vec<_>>().as_slice() {
                            [tag, dir] => Share {
                                tag: tag.to_string(),
                                dir: dir.to_string(),
                                read_only: false,
                            },
                            [tag, dir, "ro"] => Share {
                                tag: tag.to_string(),
                                dir: dir.to_string(),
                                read_only: true,
                            },
                            _ => {
                                return Err(bad(
                                    "banger.shares",
                                    "expected TAG:DIR[:ro], comma-separated",
                                ))
                            }
                        };
                        if !share.dir.starts_with('/') || share.tag.is_empty() {
                            return Err(bad("banger.shares", "directories are absolute"));
                        }
                        cfg.shares.push(share);
                    }
                }
                "banger.early" => {
                    cfg.early = match value {
                        "on" => true,
                        "off" => false,
                        _ => return Err(bad("banger.early", "expected on or off")),
                    }
                }
                _ => {}
            }
        }
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_banger_keys_and_ignores_the_rest() {
        let cfg = BootConfig::parse(
            "console=ttyS0 banger.root=/dev/vda banger.system=/dev/vdb banger.work=none \
             banger.ip=172.29.0.2/24 banger.gw=172.29.0.1 banger.hostname=web banger.agent=vsock quiet",
        )
        .unwrap();
        assert_eq!(cfg.root, "/dev/vda");
        assert_eq!(cfg.work, None);
        assert_eq!(cfg.ip, Some(("172.29.0.2".parse().unwrap(), 24)));
        assert_eq!(cfg.gateway, Some("172.29.0.1".parse().unwrap()));
        assert_eq!(cfg.hostname.as_deref(), Some("web"));
        assert_eq!(cfg.agent, AgentTransport::Vsock);
        assert_eq!(cfg.init, "/sbin/init");
        assert!(cfg.early);
        assert!(!BootConfig::parse("banger.early=off").unwrap().early);
        let shares = BootConfig::parse("banger.shares=banger0:/srv/a,banger1:/b:ro")
            .unwrap()
            .shares;
        assert_eq!(
            shares,
            vec![
                Share {
                    tag: "banger0".into(),
                    dir: "/srv/a".into(),
                    read_only: false
                },
                Share {
                    tag: "banger1".into(),
                    dir: "/b".into(),
                    read_only: true
                }
            ]
        );
    }

    #[test]
    fn bad_values_are_errors() {
        for line in [
            "banger.ip=1.2.3.4",
            "banger.ip=1.2.3.4/40",
            "banger.gw=x",
            "banger.agent=tcp",
            "banger.early=no",
            "banger.shares=x",
            "banger.shares=t:rel",
            "banger.shares=t:/a:rw",
        ] {
            assert!(BootConfig::parse(line).is_err(), "{line}");
        }
    }
}
