//! `config.toml`: every setting optional, every path overridable. Resolution
//! order for each path: command-line flag, environment, config file,
//! default (moved under `--root` when one is given).

use std::path::{Path, PathBuf};

use banger_core::addr::{AddrError, BridgeNet};
use banger_core::catalog::{Catalog, EMBEDDED};
use banger_core::size::{parse_size, SizeError};
use banger_core::spec::{SpecDefaults, MAX_VCPUS, MIN_MEMORY_MIB};
use banger_host::qemu::plan::TcgThreads;
use banger_host::vmm_select::{SelectError, VmmPreference};
use banger_proto::paths::DefaultPaths;
use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("bad config {path}: {message}")]
    Parse { path: String, message: String },
    #[error("bad config {path}: {source}")]
    Bridge { path: String, source: AddrError },
    #[error("bad config {path}: vm_defaults: {source}")]
    Size { path: String, source: SizeError },
    #[error("bad config {path}: {source}")]
    Vmm { path: String, source: SelectError },
    #[error("bad config {path}: vm_defaults: {message}")]
    Defaults { path: String, message: String },
    #[error("bad config {path}: catalog: {message}")]
    Catalog { path: String, message: String },
    #[error("bad config {path}: network: {message}")]
    Network { path: String, message: String },
}

/// The file as written. Unknown keys are errors, so typos do not pass.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    state_dir: Option<PathBuf>,
    run_dir: Option<PathBuf>,
    socket: Option<PathBuf>,
    socket_group: Option<String>,
    bridge_address: Option<String>,
    default_image: Option<String>,
    /// `auto`, `firecracker` or `qemu`.
    vmm: Option<String>,
    /// The static guest binary (banger-init + banger-agent) put into images.
    guest_binary: Option<PathBuf>,
    /// A TOML file of extra catalog entries (same form as the embedded one).
    catalog: Option<PathBuf>,
    /// Debian mirror for image builds.
    debian_mirror: Option<String>,
    /// Public keys every guest accepts for root, besides the daemon's own.
    ssh_authorized_keys: Option<Vec<String>>,
    /// OCI registries (`HOST[:PORT]`) spoken to over plain HTTP; those on
    /// this host always are.
    insecure_registries: Option<Vec<String>>,
    /// The most a VM's console log (`serial.log`) may hold; past it the
    /// oldest half goes.
    console_log_max: Option<String>,
    /// Where the user ids VMMs run as start (`vm_uid`); 0 runs them as
    /// root.
    vmm_uid_base: Option<u32>,
    /// Make an image's warm template in the background after its first
    /// cold create (default true).
    warm_templates: Option<bool>,
    /// Under TCG (no usable KVM): `multi`, a host thread per vCPU, or
    /// `single`, one thread running every vCPU in turn.
    tcg_threads: Option<TcgThreads>,
    /// Host addresses members of the socket group may publish ports on,
    /// besides loopback (root may publish on any).
    publish_addresses: Option<Vec<std::net::Ipv4Addr>>,
    /// Whether members may publish host ports below 1024.
    publish_privileged: Option<bool>,
    /// Sources (`HOST[:PORT]`) members may pull from over plain HTTP or
    /// on this host's own addresses (root may pull from any).
    member_sources: Option<Vec<String>>,
    #[serde(default)]
    vm_defaults: VmDefaultsFile,
    #[serde(default)]
    network: NetworkFile,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct NetworkFile {
    /// Give VMs a network (bridge, tap, dns, nat); true by default.
    enabled: Option<bool>,
    bridge: Option<String>,
    tap_pool_size: Option<usize>,
    /// The interface NAT goes out of; the default route's when absent.
    uplink: Option<String>,
    /// Where the host asks for NAME.vm, `ADDRESS:PORT`; "" for nowhere.
    host_dns: Option<String>,
    /// Servers other names are forwarded to; /etc/resolv.conf's by default.
    upstream_dns: Option<Vec<String>>,
    nft_table: Option<String>,
    /// Link-local addresses or prefixes (`169.254.169.254/32`) guests may
    /// reach; all of 169.254.0.0/16 is closed to them otherwise.
    link_local_allow: Option<Vec<String>>,
}

/// The network as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkSettings {
    pub enabled: bool,
    pub bridge: String,
    pub pool_size: usize,
    pub uplink: Option<String>,
    pub host_dns: Option<std::net::SocketAddr>,
    /// None: read /etc/resolv.conf at start.
    pub upstream: Option<Vec<std::net::SocketAddr>>,
    pub nft_table: String,
    pub link_local_allow: Vec<ipnet::Ipv4Net>,
}

pub const DEFAULT_HOST_DNS: &str = "127.29.0.1:53";

fn ssh_keys(keys: Option<&[String]>, shown: &str) -> Result<Vec<String>, ConfigError> {
    let keys = keys.unwrap_or_default();
    for key in keys {
        let kind = key.split_whitespace().next().unwrap_or("");
        if !(kind.starts_with("ssh-") || kind.starts_with("ecdsa-") || kind.starts_with("sk-"))
            || key.split_whitespace().count() < 2
            || key.contains('\n')
        {
            return Err(ConfigError::Parse {
                path: shown.to_string(),
                message: format!("ssh_authorized_keys: {key:?} is not a public key line"),
            });
        }
    }
    Ok(keys.to_vec())
}

fn network_settings(file: &NetworkFile, shown: &str) -> Result<NetworkSettings, ConfigError> {
    let bad = |message: String| ConfigError::Network {
        path: shown.to_string(),
        message,
    };
    let ifname = |what: &str, name: &str| {
        if name.is_empty() || name.len() > 15 || name.contains(['/', ' ']) {
            Err(bad(format!(
                "{what} {name:?} is not an interface name (1-15 characters, no / or spaces)"
            )))
        } else {
            Ok(())
        }
    };
    let bridge = file.bridge.clone().unwrap_or_else(|| "banger0".into());
    ifname("bridge", &bridge)?;
    if let Some(uplink) = &file.uplink {
        ifname("uplink", uplink)?;
    }
    let table = file.nft_table.clone().unwrap_or_else(|| "banger".into());
    if table.is_empty()
        || !table
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(bad(format!(
            "nft_table {table:?} must be letters, digits, - and _"
        )));
    }
    let host_dns = match file.host_dns.as_deref().unwrap_or(DEFAULT_HOST_DNS) {
        "" => None,
        text => Some(
            text.parse()
                .map_err(|_| bad(format!("host_dns {text:?} is not ADDRESS:PORT")))?,
        ),
    };
    let upstream = match &file.upstream_dns {
        None => None,
        Some(list) => Some(
            list.iter()
                .map(|s| {
                    s.parse::<std::net::IpAddr>()
                        .map(|ip| std::net::SocketAddr::new(ip, 53))
                        .or_else(|_| s.parse())
                        .map_err(|_| bad(format!("upstream_dns {s:?} is not an address")))
                })
                .collect::<Result<_, _>>()?,
        ),
    };
    Ok(NetworkSettings {
        enabled: file.enabled.unwrap_or(true),
        bridge,
        pool_size: file.tap_pool_size.unwrap_or(4),
        uplink: file.uplink.clone(),
        host_dns,
        upstream,
        nft_table: table,
        link_local_allow: file
            .link_local_allow
            .iter()
            .flatten()
            .map(|text| {
                let net = text
                    .parse::<ipnet::Ipv4Net>()
                    .or_else(|_| text.parse::<std::net::Ipv4Addr>().map(ipnet::Ipv4Net::from))
                    .map_err(|_| {
                        bad(format!(
                            "link_local_allow {text:?} is not an address or prefix"
                        ))
                    })?;
                let link_local: ipnet::Ipv4Net = banger_host::net::nft::LINK_LOCAL.parse().unwrap();
                if link_local.contains(&net) {
                    Ok(net.trunc())
                } else {
                    Err(bad(format!(
                        "link_local_allow {text:?} is not inside {link_local}"
                    )))
                }
            })
            .collect::<Result<_, _>>()?,
    })
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct VmDefaultsFile {
    vcpus: Option<u32>,
    memory_mib: Option<u32>,
    work_disk_size: Option<String>,
    system_disk_size: Option<String>,
}

/// Overrides from the command line or environment.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub root: Option<PathBuf>,
    pub config: Option<PathBuf>,
    pub socket: Option<PathBuf>,
}

/// The resolved configuration the daemon runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub config_path: PathBuf,
    pub state_dir: PathBuf,
    pub run_dir: PathBuf,
    pub socket: PathBuf,
    pub socket_group: String,
    pub bridge: BridgeNet,
    pub defaults: SpecDefaults,
    pub vmm: VmmPreference,
    pub guest_binary: PathBuf,
    pub catalog: Catalog,
    pub debian_mirror: Option<String>,
    pub network: NetworkSettings,
    pub ssh_authorized_keys: Vec<String>,
    pub insecure_registries: Vec<String>,
    pub console_log_max: u64,
    /// `None`: VMMs run as root.
    pub vmm_uid_base: Option<u32>,
    pub warm_templates: bool,
    pub tcg_threads: TcgThreads,
    /// What members may publish (`publish_addresses`, `publish_privileged`).
    pub publish: PublishPolicy,
    /// Plain-HTTP and this host's sources members may pull from.
    pub member_sources: Vec<String>,
}

/// The host ports a caller other than root may publish: on loopback and
/// the addresses listed, at 1024 and above unless `privileged`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublishPolicy {
    pub addresses: Vec<std::net::Ipv4Addr>,
    pub privileged: bool,
}

impl PublishPolicy {
    /// Why `forward` is not the member's to publish, if it is not.
    pub fn refusal(&self, forward: &banger_core::ports::PortForward) -> Option<String> {
        let ip = forward.host_ip;
        if !ip.is_loopback() && !self.addresses.contains(&ip) {
            return Some(format!(
                "only root may publish on {ip}: members publish on loopback addresses{}",
                if self.addresses.is_empty() {
                    String::new()
                } else {
                    let listed: Vec<String> =
                        self.addresses.iter().map(|a| a.to_string()).collect();
                    format!(" and {}", listed.join(", "))
                }
            ));
        }
        if forward.host_port < 1024 && !self.privileged {
            return Some(format!(
                "only root may publish host port {} (below 1024)",
                forward.host_port
            ));
        }
        None
    }
}

/// The first user id a VM's QEMU may run as: 0x70000000, above the
/// ranges systemd hands to containers and below 2^31, which some tools
/// mishandle. No account needs to exist for these ids.
pub const DEFAULT_VMM_UID_BASE: u32 = 0x7000_0000;

fn vmm_uid_base(
    value: Option<u32>,
    bridge: &BridgeNet,
    shown: &str,
) -> Result<Option<u32>, ConfigError> {
    let bad = |message: String| ConfigError::Parse {
        path: shown.to_string(),
        message,
    };
    match value.unwrap_or(DEFAULT_VMM_UID_BASE) {
        0 => Ok(None),
        base if !(65_536..=u32::MAX - 0x1_0000).contains(&base) => Err(bad(format!(
            "vmm_uid_base {base} must leave room for 65536 ids above 65535 (0 runs vmms as root)"
        ))),
        _ if bridge.prefix_len() < 16 => Err(bad(format!(
            "vmm_uid_base needs a bridge prefix of /16 or longer (the low 16 bits of an address name its vm), not /{}",
            bridge.prefix_len()
        ))),
        base => Ok(Some(base)),
    }
}

pub const DEFAULT_BRIDGE: &str = "172.29.0.1/24";

impl Config {
    pub fn database(&self) -> PathBuf {
        self.state_dir.join("banger.db")
    }

    /// Where jailed Firecrackers' chroots live: on the state's filesystem,
    /// so image and VM files reach them by hard link.
    pub fn jail_base(&self) -> PathBuf {
        self.state_dir.join("jail")
    }

    /// Loads the config file (absent is fine) and applies the overrides.
    pub fn load(overrides: &Overrides) -> Result<Config, ConfigError> {
        let defaults = DefaultPaths::under(overrides.root.as_deref());
        let config_path = overrides.config.clone().unwrap_or(defaults.config.clone());
        let file = read_file(&config_path)?;
        let shown = config_path.display().to_string();
        let run_dir = file.run_dir.clone().unwrap_or(defaults.run_dir.clone());
        let socket = overrides
            .socket
            .clone()
            .or(file.socket.clone())
            .unwrap_or_else(|| run_dir.join("bangerd.sock"));
        let bridge_text = file.bridge_address.as_deref().unwrap_or(DEFAULT_BRIDGE);
        let bridge = BridgeNet::parse(bridge_text).map_err(|source| ConfigError::Bridge {
            path: shown.clone(),
            source,
        })?;
        let vmm = file
            .vmm
            .as_deref()
            .unwrap_or("auto")
            .parse()
            .map_err(|source| ConfigError::Vmm {
                path: shown.clone(),
                source,
            })?;
        let catalog = load_catalog(file.catalog.as_deref(), &shown)?;
        Ok(Config {
            vmm,
            guest_binary: file
                .guest_binary
                .clone()
                .unwrap_or_else(default_guest_binary),
            catalog,
            debian_mirror: file.debian_mirror.clone(),
            network: network_settings(&file.network, &shown)?,
            ssh_authorized_keys: ssh_keys(file.ssh_authorized_keys.as_deref(), &shown)?,
            insecure_registries: file.insecure_registries.clone().unwrap_or_default(),
            console_log_max: match &file.console_log_max {
                Some(text) => parse_size(text).map_err(|source| ConfigError::Size {
                    path: shown.to_string(),
                    source,
                })?,
                None => banger_host::console::DEFAULT_MAX,
            },
            state_dir: file.state_dir.clone().unwrap_or(defaults.state_dir),
            run_dir,
            socket,
            socket_group: file.socket_group.clone().unwrap_or_else(|| "banger".into()),
            vmm_uid_base: vmm_uid_base(file.vmm_uid_base, &bridge, &shown)?,
            warm_templates: file.warm_templates.unwrap_or(true),
            tcg_threads: file.tcg_threads.unwrap_or_default(),
            publish: PublishPolicy {
                addresses: file.publish_addresses.clone().unwrap_or_default(),
                privileged: file.publish_privileged.unwrap_or(false),
            },
            member_sources: file.member_sources.clone().unwrap_or_default(),
            bridge,
            defaults: spec_defaults(&file, &shown)?,
            config_path,
        })
    }
}

/// The embedded catalog, plus the entries of `extra` when given.
fn load_catalog(extra: Option<&Path>, shown: &str) -> Result<Catalog, ConfigError> {
    let bad = |message: String| ConfigError::Catalog {
        path: shown.to_string(),
        message,
    };
    let embedded = Catalog::parse(EMBEDDED, "embedded catalog").map_err(|e| bad(e.to_string()))?;
    let Some(extra) = extra else {
        return Ok(embedded);
    };
    let text = std::fs::read_to_string(extra)
        .map_err(|e| bad(format!("cannot read {}: {e}", extra.display())))?;
    let more =
        Catalog::parse(&text, &extra.display().to_string()).map_err(|e| bad(e.to_string()))?;
    Ok(embedded.merged(more))
}

/// `banger-guest` beside the running binary when it is there, else the
/// installed location.
fn default_guest_binary() -> PathBuf {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join(GUEST_BINARY)));
    let installed = PathBuf::from("/usr/lib/banger").join(GUEST_BINARY);
    match beside {
        Some(path) if path.exists() || !installed.exists() => path,
        _ => installed,
    }
}

/// File name of the static guest binary.
pub const GUEST_BINARY: &str = "banger-guest";

fn read_file(path: &Path) -> Result<ConfigFile, ConfigError> {
    let shown = path.display().to_string();
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(ConfigFile::default()),
        Err(source) => {
            return Err(ConfigError::Read {
                path: shown,
                source,
            })
        }
    };
    toml::from_str(&text).map_err(|err| ConfigError::Parse {
        path: shown,
        message: err.message().to_string(),
    })
}

fn spec_defaults(file: &ConfigFile, shown: &str) -> Result<SpecDefaults, ConfigError> {
    let mut defaults = SpecDefaults::default();
    let vm = &file.vm_defaults;
    let bad = |message: String| ConfigError::Defaults {
        path: shown.to_string(),
        message,
    };
    if let Some(image) = &file.default_image {
        defaults.image = image.clone();
    }
    if let Some(vcpus) = vm.vcpus {
        if vcpus == 0 || vcpus > MAX_VCPUS {
            return Err(bad(format!("vcpus must be 1 to {MAX_VCPUS}")));
        }
        defaults.vcpus = vcpus;
    }
    if let Some(memory) = vm.memory_mib {
        if memory < MIN_MEMORY_MIB {
            return Err(bad(format!("memory_mib must be at least {MIN_MEMORY_MIB}")));
        }
        defaults.memory_mib = memory;
    }
    let size = |text: &str| {
        parse_size(text).map_err(|source| ConfigError::Size {
            path: shown.to_string(),
            source,
        })
    };
    if let Some(text) = &vm.work_disk_size {
        defaults.work_disk_bytes = size(text)?;
    }
    if let Some(text) = &vm.system_disk_size {
        defaults.system_disk_bytes = size(text)?;
    }
    Ok(defaults)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_with(text: &str) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("etc/banger/config.toml");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        Config::load(&Overrides {
            root: Some(dir.path().into()),
            ..Default::default()
        })
    }

    #[test]
    fn absent_file_means_defaults_under_the_root() {
        let cfg = Config::load(&Overrides {
            root: Some("/tmp/r".into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(cfg.socket, Path::new("/tmp/r/run/banger/bangerd.sock"));
        assert_eq!(cfg.database(), Path::new("/tmp/r/var/lib/banger/banger.db"));
        assert_eq!(cfg.bridge.to_string(), DEFAULT_BRIDGE);
        assert_eq!(cfg.vmm_uid_base, Some(DEFAULT_VMM_UID_BASE));
    }

    #[test]
    fn vmm_uid_base_zero_means_root() {
        assert_eq!(load_with("vmm_uid_base = 0").unwrap().vmm_uid_base, None);
        let cfg = load_with("vmm_uid_base = 100000\nbridge_address = \"10.0.0.1/8\"");
        assert!(cfg.unwrap_err().to_string().contains("/16 or longer"));
        let cfg = load_with("vmm_uid_base = 0\nbridge_address = \"10.0.0.1/8\"").unwrap();
        assert_eq!(cfg.vmm_uid_base, None);
    }

    #[test]
    fn file_values_apply_and_flags_win() {
        let cfg = load_with(
            "bridge_address = \"10.9.0.1/24\"\ndefault_image = \"alpine\"\nvmm = \"qemu\"\nsocket = \"/x.sock\"\n[vm_defaults]\nvcpus = 4\nwork_disk_size = \"2G\"\n",
        )
        .unwrap();
        assert_eq!(cfg.bridge.gateway().to_string(), "10.9.0.1");
        assert_eq!(cfg.defaults.image, "alpine");
        assert_eq!(cfg.vmm, VmmPreference::Qemu);
        assert_eq!(cfg.defaults.vcpus, 4);
        assert_eq!(cfg.defaults.work_disk_bytes, 2 << 30);
        assert_eq!(cfg.socket, Path::new("/x.sock"));
        let cfg = Config::load(&Overrides {
            socket: Some("/y.sock".into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(cfg.socket, Path::new("/y.sock"));
    }

    #[test]
    fn bad_files_are_one_line_errors() {
        for text in [
            "bogus = 1",
            "bridge_address = \"nope\"",
            "[vm_defaults]\nvcpus = 0",
            "vmm = \"xen\"",
            "[vm_defaults]\nwork_disk_size = \"10Q\"",
            "catalog = \"/nonexistent/catalog.toml\"",
            "[network]\nbridge = \"a/b\"",
            "ssh_authorized_keys = [\"not a key\"]",
            "[network]\nhost_dns = \"nope\"",
            "[network]\nnft_table = \"x y\"",
            "vmm_uid_base = 1000",
            "[network]\nlink_local_allow = [\"10.0.0.1\"]",
            "[network]\nlink_local_allow = [\"nope\"]",
            "vmm_uid_base = 4294967290",
            "vmm_uid_base = -1",
            "bridge_address = \"10.0.0.1/8\"",
        ] {
            let err = load_with(text).unwrap_err().to_string();
            assert!(
                err.starts_with("bad config ") && !err.contains('\n'),
                "{err}"
            );
        }
    }

    /// packaging/config.toml, the package's conffile: commented, it
    /// means the defaults; every `#key = value` it shows is a real key,
    /// and those it gives as defaults are the defaults.
    #[test]
    fn the_packaged_config_shows_real_keys_and_the_defaults() {
        let text = include_str!("../../../packaging/config.toml");
        let dir = tempfile::tempdir().unwrap();
        let load = |text: &str| {
            let path = dir.path().join("config.toml");
            std::fs::write(&path, text).unwrap();
            Config::load(&Overrides {
                config: Some(path),
                ..Default::default()
            })
            .unwrap()
        };
        let commented = load(text);
        // `#key` and `#[section]` are settings; `# ` starts prose. The
        // catalog's example names a file that is not there.
        let uncommented: String = text
            .lines()
            .filter_map(|line| line.strip_prefix('#'))
            .filter(|rest| {
                !rest.is_empty() && !rest.starts_with(' ') && !rest.starts_with("catalog")
            })
            .map(|rest| format!("{rest}\n"))
            .collect();
        assert!(
            uncommented.contains("[network]\nenabled = true"),
            "{uncommented}"
        );
        let shown = load(&uncommented);
        assert_eq!(shown.state_dir, commented.state_dir);
        assert_eq!(shown.run_dir, commented.run_dir);
        assert_eq!(shown.socket, commented.socket);
        assert_eq!(shown.socket_group, commented.socket_group);
        assert_eq!(shown.bridge.to_string(), commented.bridge.to_string());
        assert_eq!(shown.defaults, commented.defaults);
        assert_eq!(shown.vmm, commented.vmm);
        assert_eq!(shown.console_log_max, commented.console_log_max);
        assert_eq!(shown.vmm_uid_base, commented.vmm_uid_base);
        assert_eq!(shown.warm_templates, commented.warm_templates);
        assert_eq!(shown.tcg_threads, commented.tcg_threads);
        assert_eq!(shown.publish, commented.publish);
        assert_eq!(shown.member_sources, commented.member_sources);
        let (a, b) = (&shown.network, &commented.network);
        assert_eq!(
            (a.enabled, &a.bridge, a.pool_size, a.host_dns, &a.nft_table),
            (b.enabled, &b.bridge, b.pool_size, b.host_dns, &b.nft_table)
        );
        assert_eq!(commented.socket, Path::new("/run/banger/bangerd.sock"));
    }
}
