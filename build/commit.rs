//! Build script of `banger` and `bangerd`: the commit they are built from
//! (`BANGER_COMMIT` for `banger version`): the environment's when a
//! packager sets it, else `git rev-parse`, else `unknown`.

fn main() {
    println!("cargo:rerun-if-env-changed=BANGER_COMMIT");
    println!("cargo:rerun-if-changed=../../.git/HEAD");
    println!("cargo:rerun-if-changed=../../.git/refs/heads");
    let commit = std::env::var("BANGER_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| {
            std::process::Command::new("git")
                .args(["rev-parse", "--short=12", "HEAD"])
                .output()
                .ok()
                .filter(|out| out.status.success())
                .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_string())
        })
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=BANGER_COMMIT={commit}");
}
