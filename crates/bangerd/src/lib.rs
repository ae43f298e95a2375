//! bangerd: the composition root. Loads the config, opens the store, wires
//! the core to the host, and serves the API on a unix socket.

pub mod api;
pub mod config;
pub mod logging;
pub mod metrics;
pub mod runtime;
pub mod server;
pub mod state_lock;
pub mod warm;
