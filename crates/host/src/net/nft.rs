//! banger's nftables table, as a pure function of what should be true
//! (`ruleset`), applied in one atomic `nft -f` transaction that deletes
//! and rebuilds only banger's own table (`apply`), so nothing of other
//! tools is touched and no half-state is ever visible.
//!
//! What the table says:
//! - input from the bridge: guests may reach the DNS server on the bridge
//!   address and answer connections the host opened; nothing else on the
//!   host (so a service listening on all addresses stays private);
//! - forward: guest to guest is allowed (a LAN); a guest with NAT may go
//!   out of the uplink and get the replies; other guests may not leave;
//! - forward: no guest reaches link-local addresses (169.254.0.0/16, where
//!   clouds serve instance metadata and credentials) unless the config
//!   allows the address;
//! - input from anywhere but the bridge and loopback: nothing reaches the
//!   DNS server on the bridge address (no open resolver for the LAN);
//! - forward, when banger turned forwarding on: nothing that is not the
//!   bridge's (the host does not start routing between its other
//!   interfaces because banger is there); a host that forwarded before
//!   keeps its own policy;
//! - postrouting: masquerade the NAT guests out of the uplink.
//!
//! And a `bridge` table of the same name, where frames cross the bridge:
//! each VM's device is pinned to the VM's MAC and address (ethernet
//! source, ARP sender and IPv4 source must all be the VM's); any other
//! frame from a port of banger's bridge is dropped, so a guest cannot
//! speak as another guest, poison ARP, or get out through another guest's
//! NAT. Other bridges of the host (docker's, libvirt's) are left alone.

use std::net::Ipv4Addr;
use std::process::Stdio;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("cannot run nft: {0}")]
    Spawn(std::io::Error),
    #[error("nft refused the ruleset: {0}")]
    Refused(String),
}

/// Everything the table depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NftPlan {
    pub table: String,
    pub bridge: String,
    pub gateway: Ipv4Addr,
    /// Where NAT traffic leaves; no NAT rules without one.
    pub uplink: Option<String>,
    /// Guests with NAT on, sorted.
    pub nat: Vec<Ipv4Addr>,
    /// Each running VM's device with the MAC and address it may use.
    pub pins: Vec<Pin>,
    /// Link-local addresses guests may reach anyway.
    pub link_local_allow: Vec<ipnet::Ipv4Net>,
    /// Name prefixes of banger's bridge ports (`bg-`, `tap-pool-`): their
    /// unpinned frames are dropped, other bridges' are not touched.
    pub port_prefixes: Vec<String>,
    /// banger turned forwarding on: forwarded traffic that is not the
    /// bridge's is dropped (the host did not route before banger came).
    pub own_forwarding: bool,
}

/// The comment on the rule that keeps forwarding to the bridge's traffic:
/// a later start finds it and knows banger turned forwarding on.
pub const FORWARDING_MARK: &str = "banger turned forwarding on";

/// A bridge port and who may speak through it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pin {
    pub ifname: String,
    pub mac: String,
    pub ip: Ipv4Addr,
}

/// Where clouds put instance metadata (and more): never reached by a
/// guest unless allowed.
pub const LINK_LOCAL: &str = "169.254.0.0/16";

/// The nft script that replaces banger's table with the plan.
pub fn ruleset(plan: &NftPlan) -> String {
    let NftPlan {
        table,
        bridge,
        gateway,
        ..
    } = plan;
    let mut nat_ips = plan.nat.clone();
    nat_ips.sort();
    nat_ips.dedup();
    let mut out = String::new();
    // Make sure it exists so the delete cannot fail, then rebuild it.
    out.push_str(&format!(
        "table inet {table} {{}}\ndelete table inet {table}\n"
    ));
    out.push_str(&format!("table inet {table} {{\n"));
    out.push_str("  chain input {\n    type filter hook input priority filter; policy accept;\n");
    out.push_str(&format!(
        "    iifname \"{bridge}\" ct state established,related accept\n"
    ));
    out.push_str(&format!(
        "    iifname \"{bridge}\" ip daddr {gateway} udp dport 53 accept\n"
    ));
    out.push_str(&format!(
        "    iifname \"{bridge}\" ip daddr {gateway} tcp dport 53 accept\n"
    ));
    out.push_str(&format!(
        "    iifname \"{bridge}\" icmp type echo-request accept\n"
    ));
    out.push_str(&format!("    iifname \"{bridge}\" drop\n"));
    // The DNS server is the bridge's: the host asks it on loopback, nobody
    // else at all.
    for proto in ["udp", "tcp"] {
        out.push_str(&format!(
            "    iifname != {{ \"{bridge}\", \"lo\" }} ip daddr {gateway} {proto} dport 53 drop\n"
        ));
    }
    out.push_str("  }\n");
    out.push_str(
        "  chain forward {\n    type filter hook forward priority filter; policy accept;\n",
    );
    out.push_str(&format!(
        "    iifname \"{bridge}\" oifname \"{bridge}\" accept\n"
    ));
    if plan.link_local_allow.is_empty() {
        out.push_str(&format!(
            "    iifname \"{bridge}\" ip daddr {LINK_LOCAL} drop\n"
        ));
    } else {
        let allowed: Vec<String> = plan
            .link_local_allow
            .iter()
            .map(|n| n.to_string())
            .collect();
        out.push_str(&format!(
            "    iifname \"{bridge}\" ip daddr {LINK_LOCAL} ip daddr != {{ {} }} drop\n",
            allowed.join(", ")
        ));
    }
    if let Some(uplink) = &plan.uplink {
        for ip in &nat_ips {
            out.push_str(&format!(
                "    iifname \"{bridge}\" oifname \"{uplink}\" ip saddr {ip} accept\n"
            ));
            out.push_str(&format!(
                "    iifname \"{uplink}\" oifname \"{bridge}\" ip daddr {ip} ct state established,related accept\n"
            ));
        }
    }
    out.push_str(&format!("    iifname \"{bridge}\" drop\n"));
    out.push_str(&format!("    oifname \"{bridge}\" drop\n"));
    if plan.own_forwarding {
        out.push_str(&format!("    drop comment \"{FORWARDING_MARK}\"\n"));
    }
    out.push_str("  }\n");
    if let Some(uplink) = &plan.uplink {
        out.push_str(
            "  chain postrouting {\n    type nat hook postrouting priority srcnat; policy accept;\n",
        );
        for ip in &nat_ips {
            out.push_str(&format!(
                "    oifname \"{uplink}\" ip saddr {ip} masquerade\n"
            ));
        }
        out.push_str("  }\n");
    }
    out.push_str("}\n");
    out.push_str(&pins(table, &plan.port_prefixes, &plan.pins));
    out
}

/// The bridge table: frames from a port of banger's (by its name's
/// prefix; this kernel may lack `meta ibrname`) pass only with its VM's
/// MAC and address; everything else from those ports (an idle device, a
/// spoofer, IPv6, which banger does not give guests) is dropped.
fn pins(table: &str, prefixes: &[String], pins: &[Pin]) -> String {
    let mut pins = pins.to_vec();
    pins.sort();
    let mut out = format!("table bridge {table} {{}}\ndelete table bridge {table}\n");
    out.push_str(&format!("table bridge {table} {{\n"));
    out.push_str(
        "  chain prerouting {\n    type filter hook prerouting priority filter; policy accept;\n",
    );
    for Pin { ifname, mac, ip } in &pins {
        out.push_str(&format!(
            "    iifname \"{ifname}\" ether saddr {mac} arp htype 1 arp ptype ip arp saddr ether {mac} arp saddr ip {ip} accept\n"
        ));
        out.push_str(&format!(
            "    iifname \"{ifname}\" ether saddr {mac} ip saddr {ip} accept\n"
        ));
    }
    for prefix in prefixes {
        out.push_str(&format!("    iifname \"{prefix}*\" drop\n"));
    }
    out.push_str("  }\n}\n");
    out
}

/// The script that removes banger's tables (nothing else).
pub fn teardown(table: &str) -> String {
    format!(
        "table inet {table} {{}}\ndelete table inet {table}\ntable bridge {table} {{}}\ndelete table bridge {table}\n"
    )
}

/// Whether banger's table (from an earlier start) holds the forwarding
/// mark: banger turned forwarding on then.
pub async fn owns_forwarding(table: &str) -> bool {
    let listed = Command::new(crate::tools::find_tool("nft").unwrap_or("nft".into()))
        .args(["list", "chain", "inet", table, "forward"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await;
    listed.is_ok_and(|out| {
        out.status.success()
            && String::from_utf8_lossy(&out.stdout)
                .contains(&format!("comment \"{FORWARDING_MARK}\""))
    })
}

/// Runs an nft script as one transaction.
pub async fn apply(script: &str) -> Result<(), NftError> {
    let mut child = Command::new(crate::tools::find_tool("nft").unwrap_or("nft".into()))
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(NftError::Spawn)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .await
            .map_err(NftError::Spawn)?;
    }
    let out = child.wait_with_output().await.map_err(NftError::Spawn)?;
    if !out.status.success() {
        let text = String::from_utf8_lossy(&out.stderr);
        let first: Vec<&str> = text.lines().take(3).collect();
        return Err(NftError::Refused(first.join(" | ")));
    }
    Ok(())
}

/// Chains of other tables that drop forwarded traffic (docker, ufw,
/// firewalld): by policy, or by an unconditional `drop`/`reject` rule as
/// firewalld ends its forward chain with. They would silently break NAT.
/// Reads `nft list ruleset` text.
pub fn forward_drop_chains(listing: &str, own_table: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut table = String::new();
    let mut chain = String::new();
    let mut forward = false;
    for line in listing.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("table ") {
            table = rest.trim_end_matches('{').trim().to_string();
            forward = false;
        } else if let Some(rest) = line.strip_prefix("chain ") {
            chain = rest.trim_end_matches('{').trim().to_string();
            forward = false;
        } else if table.ends_with(&format!(" {own_table}")) {
            continue;
        } else if line.contains("hook forward") {
            forward = true;
            if line.contains("policy drop") {
                found.push(format!("{table} chain {chain}"));
            }
        } else if forward
            && (line == "drop" || line.starts_with("reject"))
            && !found.contains(&format!("{table} chain {chain}"))
        {
            found.push(format!("{table} chain {chain} (final {line})"));
        }
    }
    found
}

/// `nft list table inet TABLE` (empty when there is none).
pub async fn list_table(table: &str) -> Result<String, NftError> {
    let out = Command::new(crate::tools::find_tool("nft").unwrap_or("nft".into()))
        .args(["list", "table", "inet", table])
        .output()
        .await
        .map_err(NftError::Spawn)?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Addresses a table listing masquerades.
pub fn masqueraded(listing: &str) -> Vec<Ipv4Addr> {
    listing
        .lines()
        .filter(|l| l.contains("masquerade"))
        .filter_map(|l| {
            let rest = l.split("ip saddr ").nth(1)?;
            rest.split_whitespace().next()?.parse().ok()
        })
        .collect()
}

/// The whole ruleset, as `nft list ruleset` prints it.
pub async fn list_ruleset() -> Result<String, NftError> {
    let out = Command::new(crate::tools::find_tool("nft").unwrap_or("nft".into()))
        .args(["list", "ruleset"])
        .output()
        .await
        .map_err(NftError::Spawn)?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(nat: Vec<Ipv4Addr>, uplink: Option<&str>) -> NftPlan {
        NftPlan {
            table: "banger".into(),
            bridge: "banger0".into(),
            gateway: "172.29.0.1".parse().unwrap(),
            uplink: uplink.map(String::from),
            nat,
            pins: vec![Pin {
                ifname: "bg-0123".into(),
                mac: "06:00:ac:1d:00:03".into(),
                ip: "172.29.0.3".parse().unwrap(),
            }],
            link_local_allow: vec![],
            own_forwarding: true,
            port_prefixes: vec!["bg-".into(), "tap-pool-".into()],
        }
    }

    #[test]
    fn ruleset_snapshot() {
        let text = ruleset(&plan(vec!["172.29.0.3".parse().unwrap()], Some("eth0")));
        assert_eq!(
            text,
            "table inet banger {}\n\
             delete table inet banger\n\
             table inet banger {\n\
             \x20 chain input {\n\
             \x20   type filter hook input priority filter; policy accept;\n\
             \x20   iifname \"banger0\" ct state established,related accept\n\
             \x20   iifname \"banger0\" ip daddr 172.29.0.1 udp dport 53 accept\n\
             \x20   iifname \"banger0\" ip daddr 172.29.0.1 tcp dport 53 accept\n\
             \x20   iifname \"banger0\" icmp type echo-request accept\n\
             \x20   iifname \"banger0\" drop\n\
             \x20   iifname != { \"banger0\", \"lo\" } ip daddr 172.29.0.1 udp dport 53 drop\n\
             \x20   iifname != { \"banger0\", \"lo\" } ip daddr 172.29.0.1 tcp dport 53 drop\n\
             \x20 }\n\
             \x20 chain forward {\n\
             \x20   type filter hook forward priority filter; policy accept;\n\
             \x20   iifname \"banger0\" oifname \"banger0\" accept\n\
             \x20   iifname \"banger0\" ip daddr 169.254.0.0/16 drop\n\
             \x20   iifname \"banger0\" oifname \"eth0\" ip saddr 172.29.0.3 accept\n\
             \x20   iifname \"eth0\" oifname \"banger0\" ip daddr 172.29.0.3 ct state established,related accept\n\
             \x20   iifname \"banger0\" drop\n\
             \x20   oifname \"banger0\" drop\n\
             \x20   drop comment \"banger turned forwarding on\"\n\
             \x20 }\n\
             \x20 chain postrouting {\n\
             \x20   type nat hook postrouting priority srcnat; policy accept;\n\
             \x20   oifname \"eth0\" ip saddr 172.29.0.3 masquerade\n\
             \x20 }\n\
             }\n\
             table bridge banger {}\n\
             delete table bridge banger\n\
             table bridge banger {\n\
             \x20 chain prerouting {\n\
             \x20   type filter hook prerouting priority filter; policy accept;\n\
             \x20   iifname \"bg-0123\" ether saddr 06:00:ac:1d:00:03 arp htype 1 arp ptype ip arp saddr ether 06:00:ac:1d:00:03 arp saddr ip 172.29.0.3 accept\n\
             \x20   iifname \"bg-0123\" ether saddr 06:00:ac:1d:00:03 ip saddr 172.29.0.3 accept\n\
             \x20   iifname \"bg-*\" drop\n\
             \x20   iifname \"tap-pool-*\" drop\n\
             \x20 }\n\
             }\n"
        );
    }

    #[test]
    fn allowed_link_local_addresses_are_let_through() {
        let mut p = plan(vec![], None);
        p.link_local_allow = vec!["169.254.169.254/32".parse().unwrap()];
        let text = ruleset(&p);
        assert!(
            text.contains("ip daddr 169.254.0.0/16 ip daddr != { 169.254.169.254/32 } drop"),
            "{text}"
        );
    }

    /// The scripts are real nft: checked by `nft -c` where nft runs.
    #[test]
    fn nft_accepts_the_scripts() {
        let Some(nft) = crate::tools::find_tool("nft") else {
            assert!(std::env::var("CI").as_deref() != Ok("true"), "no nft");
            eprintln!("not run: no nft");
            return;
        };
        let mut p = plan(vec!["172.29.0.3".parse().unwrap()], Some("eth0"));
        p.link_local_allow = vec!["169.254.169.254/32".parse().unwrap()];
        for script in [ruleset(&p), teardown("banger")] {
            let mut child = std::process::Command::new(&nft)
                .args(["-c", "-f", "-"])
                .stdin(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(script.as_bytes())
                .unwrap();
            let out = child.wait_with_output().unwrap();
            if !out.status.success() && !nix::unistd::Uid::effective().is_root() {
                assert!(
                    std::env::var("CI").as_deref() != Ok("true"),
                    "nft -c needs root"
                );
                eprintln!("not run: nft -c needs root");
                return;
            }
            assert!(
                out.status.success(),
                "{}\n{script}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    #[test]
    fn no_uplink_means_no_nat_rules() {
        let text = ruleset(&plan(vec!["172.29.0.3".parse().unwrap()], None));
        // The inet table; the bridge table pins the address whatever NAT.
        let text = text.split("table bridge").next().unwrap();
        assert!(
            !text.contains("masquerade") && !text.contains("172.29.0.3"),
            "{text}"
        );
    }

    #[test]
    fn finds_other_tools_forward_drop_policies() {
        let listing = "table ip filter {\n\tchain FORWARD {\n\t\ttype filter hook forward priority filter; policy drop;\n\t}\n}\ntable inet banger {\n\tchain forward {\n\t\ttype filter hook forward priority filter; policy drop;\n\t}\n}\n";
        assert_eq!(
            forward_drop_chains(listing, "banger"),
            ["ip filter chain FORWARD"]
        );
        // firewalld: policy accept, then an unconditional reject.
        let firewalld = "table inet firewalld {\n\tchain filter_FORWARD {\n\t\ttype filter hook forward priority filter + 10; policy accept;\n\t\tct state established,related accept\n\t\tiifname \"lo\" accept\n\t\treject with icmpx admin-prohibited\n\t}\n\tchain filter_INPUT {\n\t\ttype filter hook input priority filter + 10; policy accept;\n\t\treject with icmpx admin-prohibited\n\t}\n}\n";
        assert_eq!(
            forward_drop_chains(firewalld, "banger"),
            ["inet firewalld chain filter_FORWARD (final reject with icmpx admin-prohibited)"]
        );
    }
}
