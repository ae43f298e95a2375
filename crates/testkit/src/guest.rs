//! The static guest binary (banger-init and banger-agent) that tests put
//! into the images they build.

use std::path::PathBuf;

/// BANGER_GUEST_BINARY, or scripts/build-guest's output; `None` with the
/// reason printed when it is not there (a failure under CI=true).
pub fn guest_binary() -> Option<PathBuf> {
    let path = std::env::var_os("BANGER_GUEST_BINARY")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../target/guest/x86_64-unknown-linux-gnu/release/banger-guest")
        });
    crate::require(
        path.is_file(),
        &format!(
            "no guest binary at {} (run scripts/build-guest)",
            path.display()
        ),
    )?;
    Some(path)
}
