//! Log setup. Policy: `info` records each request (with its operation id),
//! each operation and each named stage with its wall time; `warn` records
//! failed operations; `error` only what an operator must look at. Set
//! `BANGER_LOG` (an `EnvFilter`) to change levels, `--log-format json` for
//! machine-readable lines.

use tracing_subscriber::EnvFilter;

pub fn init(json: bool) {
    let filter = EnvFilter::try_from_env("BANGER_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
