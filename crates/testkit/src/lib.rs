//! What banger's tests and benchmarks share, in one place: the tools
//! check that fails under `CI=true` (`require`), the guest binary, a
//! network namespace per test, the real daemon under a test root (in
//! process or as a process), API calls over its socket, the default
//! image built once per run and linked into each test root, VM helpers
//! (exec, wait for a state, logs on failure) and OCI images pushed to a
//! real registry.
//!
//! A suite names it `support` (`use banger_testkit as support;`).

pub mod ci;
pub mod daemon;
pub mod guest;
pub mod http;
pub mod image;
pub mod logs;
pub mod netns;
pub mod registry;
pub mod vm;

pub use ci::require;
pub use daemon::{
    bangerd_binary, open_to_vm_users, seed_image, spawn_daemon, vm_daemon, wait_for_socket,
    write_config, write_config_with, TestDaemon, VmDaemon,
};
pub use guest::guest_binary;
pub use http::{
    abandon_call, abandon_stream, call, call_json, call_ndjson, call_stream, get_stream, try_call,
    STREAM_DEADLINE,
};
pub use image::{build_default_image, mmdebstrap};
pub use logs::{print_logs, Cleanup};
pub use netns::{in_netns, NetNs};
pub use vm::{exec, sh, wait_state};
