//! Benchmark: building the default image, stage by stage, and making a
//! new VM's 8 GiB work disk by cloning the image's work seed versus
//! building it from scratch.
//!
//! cargo bench -p banger-host --bench image_build -- [RUNS]
//!
//! Needs the Debian mirror and a guest binary (BANGER_GUEST_BINARY, or
//! the one scripts/build-guest makes). Prints markdown tables.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use banger_core::catalog::BuildRecipe;
use banger_core::image_maker::{ImageMaker, ImageRequest};
use banger_core::progress::Progress;
use banger_host::disks::work::{clone_from_seed, make_fresh};
use banger_host::image::ext4;
use banger_host::image::maker::HostImageMaker;

/// Records when each stage began.
#[derive(Default)]
struct Stages(Mutex<Vec<(String, Instant)>>);

impl Progress for Stages {
    fn stage(&self, name: &str) {
        self.0
            .lock()
            .unwrap()
            .push((name.to_string(), Instant::now()));
    }
}

fn guest_binary() -> PathBuf {
    std::env::var_os("BANGER_GUEST_BINARY")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../target/guest/x86_64-unknown-linux-gnu/release/banger-guest")
        })
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

#[tokio::main]
async fn main() {
    let runs: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(10);
    let guest = guest_binary();
    if !guest.is_file() {
        eprintln!(
            "no guest binary at {}: run scripts/build-guest or set BANGER_GUEST_BINARY",
            guest.display()
        );
        std::process::exit(1);
    }
    let nproc = std::thread::available_parallelism().map_or(1, |n| n.get());
    let dir = tempfile::tempdir().unwrap();
    let staging = dir.path().join("image");
    std::fs::create_dir_all(&staging).unwrap();

    println!("## image build");
    println!();
    println!(
        "Method: one `HostImageMaker` build of debian bookworm (the catalog's default recipe) \
         into a temporary directory; wall time per stage. Host: {nproc} cores."
    );
    println!();
    let maker = HostImageMaker::new(guest, None);
    let stages = Stages::default();
    let request = ImageRequest::Build(BuildRecipe {
        suite: "bookworm".into(),
        packages: vec![],
    });
    let started = Instant::now();
    let manifest = maker
        .make("bench", &request, &staging, &stages)
        .await
        .expect("build failed");
    let ended = Instant::now();
    let marks = stages.0.lock().unwrap().clone();
    println!("| stage | seconds |");
    println!("| --- | ---: |");
    for (i, (name, at)) in marks.iter().enumerate() {
        let next = marks.get(i + 1).map_or(ended, |(_, t)| *t);
        println!("| {name} | {:.2} |", (next - *at).as_secs_f64());
    }
    println!("| **total** | **{:.2}** |", (ended - started).as_secs_f64());
    println!();
    println!("| artifact | bytes |");
    println!("| --- | ---: |");
    for a in &manifest.artifacts {
        println!("| {} | {} |", a.file, a.bytes);
    }
    println!();

    let seed = staging.join("work-seed.ext4");
    let tree = dir.path().join("t");
    std::fs::create_dir_all(&tree).unwrap();
    let tree = tree.join("root");
    ext4::copy_tree_out(
        &staging.join("rootfs.ext4"),
        "/root",
        &tree,
        ext4::Links::Keep,
    )
    .await
    .unwrap();
    let size: u64 = 8 << 30;
    let mut clone = Vec::new();
    let mut empty = Vec::new();
    let mut scratch = Vec::new();
    for run in 0..runs {
        let disk = dir.path().join(format!("disk-{run}.ext4"));
        // Interleaved; the order rotates each run.
        for step in 0..3 {
            let t = Instant::now();
            match (run + step) % 3 {
                0 => {
                    clone_from_seed(&seed, &disk, size).await.unwrap();
                    clone.push(t.elapsed());
                }
                1 => {
                    make_fresh(&disk, size).await.unwrap();
                    empty.push(t.elapsed());
                }
                _ => {
                    ext4::make_from_dir(&tree, &disk, Some(size), "banger-work")
                        .await
                        .unwrap();
                    scratch.push(t.elapsed());
                }
            }
            let _ = std::fs::remove_file(&disk);
        }
    }
    let (c, e, s) = (median(clone), median(empty), median(scratch));
    println!("## work disk for a new vm (8 GiB)");
    println!();
    println!(
        "Method: {runs} interleaved runs of each, median wall time. Clone: sparse copy of the \
         image's work seed ({} bytes) + e2fsck -fy + resize2fs to 8 GiB. Empty: a sparse \
         8 GiB file + mkfs.ext4 (what an image without a seed gets: no dotfiles). Scratch with \
         /root: mkfs.ext4 -d of the rootfs's /root tree into a sparse 8 GiB file.",
        std::fs::metadata(&seed).unwrap().len()
    );
    println!();
    println!("| method | median ms |");
    println!("| --- | ---: |");
    println!("| clone seed + resize | {} |", ms(c));
    println!("| empty mkfs | {} |", ms(e));
    println!("| scratch with /root | {} |", ms(s));
    println!();
    println!(
        "ratios to clone: empty {:.2}, scratch with /root {:.2}",
        e.as_secs_f64() / c.as_secs_f64(),
        s.as_secs_f64() / c.as_secs_f64()
    );
}
