//! Log setup. Policy: `info` records each request (with its operation id),
//! each operation and each named stage with its wall time; `warn` records
//! failed operations; `error` only what an operator must look at. Set
//! `BANGER_LOG` (an `EnvFilter`) to change levels, `--log-format json` for
//! machine-readable lines. Colours only on a terminal and without
//! `NO_COLOR`.

use tracing_subscriber::EnvFilter;

/// The default filter: `info`, without dependencies' noise. netlink's
/// route parser warns on every link dump that a newer kernel's
/// `IFLA_INET6_CONF` is longer than it knows (harmless: banger reads no
/// IPv6 settings).
pub const DEFAULT_FILTER: &str = "info,netlink_packet_route=error";

pub fn init(json: bool) {
    let filter =
        EnvFilter::try_from_env("BANGER_LOG").unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_default_filter_parses_and_quiets_netlink() {
        let filter = tracing_subscriber::EnvFilter::new(super::DEFAULT_FILTER);
        let text = filter.to_string();
        assert!(text.contains("netlink_packet_route=error"), "{text}");
    }
}
