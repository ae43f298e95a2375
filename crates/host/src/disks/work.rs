//! The work disk (`root.ext4`, mounted on `/root` in the guest): a sparse
//! copy of the image's work seed grown to the requested size
//! (`e2fsck -fy` then `resize2fs`), or, for an image without a seed, a
//! fresh ext4 made from scratch.

use std::path::Path;
use std::process::Stdio;

use tokio::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum WorkDiskError {
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("{tool} failed on {path}: {detail}")]
    Tool {
        tool: &'static str,
        path: String,
        detail: String,
    },
    #[error("the work disk cannot be {want} bytes: the seed alone is {seed} bytes")]
    TooSmall { want: u64, seed: u64 },
}

async fn run(tool: &'static str, path: &Path, command: &mut Command) -> Result<(), WorkDiskError> {
    let out = command
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| WorkDiskError::Tool {
            tool,
            path: path.display().to_string(),
            detail: format!("cannot run it: {e}"),
        })?;
    // e2fsck exits 1 when it fixed something, which a fresh copy may need.
    let ok = out.status.success() || (tool == "e2fsck" && out.status.code() == Some(1));
    if !ok {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(3).collect();
        return Err(WorkDiskError::Tool {
            tool,
            path: path.display().to_string(),
            detail: format!("{} ({})", out.status, tail.join(" | ")),
        });
    }
    Ok(())
}

/// Clones `seed` to `out` (sparse) and grows it to `size` bytes.
pub async fn clone_from_seed(seed: &Path, out: &Path, size: u64) -> Result<(), WorkDiskError> {
    let seed_size = std::fs::metadata(seed)
        .map_err(|source| WorkDiskError::Io {
            action: "read",
            path: seed.display().to_string(),
            source,
        })?
        .len();
    if size < seed_size {
        return Err(WorkDiskError::TooSmall {
            want: size,
            seed: seed_size,
        });
    }
    let result = async {
        run(
            "cp",
            out,
            Command::new("cp")
                .arg("--sparse=always")
                .arg("--")
                .arg(seed)
                .arg(out),
        )
        .await?;
        run("e2fsck", out, Command::new("e2fsck").arg("-fy").arg(out)).await?;
        run(
            "resize2fs",
            out,
            Command::new("resize2fs")
                .arg(out)
                .arg(format!("{}K", size / 1024)),
        )
        .await
    }
    .await;
    if result.is_err() {
        let _ = std::fs::remove_file(out);
    }
    result
}

/// Makes `out`, a fresh empty ext4 of `size` bytes (sparse), labelled
/// `banger-work`.
pub async fn make_fresh(out: &Path, size: u64) -> Result<(), WorkDiskError> {
    let io = |action| {
        move |source| WorkDiskError::Io {
            action,
            path: out.display().to_string(),
            source,
        }
    };
    let file = std::fs::File::create(out).map_err(io("create"))?;
    file.set_len(size).map_err(io("size"))?;
    drop(file);
    let result = run(
        "mkfs.ext4",
        out,
        Command::new("mkfs.ext4")
            .args(["-q", "-F", "-L", "banger-work", "-E", "root_owner=0:0"])
            .arg(out),
    )
    .await;
    if result.is_err() {
        let _ = std::fs::remove_file(out);
    }
    result
}
