//! Benchmark: taking a kernel's modules out of a userland's ext4 image,
//! as register does before it makes the initramfs: read inside the image
//! by the in-process reader (`ext4::inside`, what banger does) versus
//! `debugfs rdump` (what it did before, which followed the image's links
//! on the host), interleaved, on a synthetic modules tree shaped like
//! Debian's cloud kernel's (2000 modules of 16 KiB in nested directories,
//! a few links).
//!
//! cargo bench -p banger-host --bench image_read -- [RUNS]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use banger_host::image::ext4::{Ext4Image, Links};

const RELEASE: &str = "6.1.0-bench-amd64";

fn tree(root: &Path) {
    let modules = root.join("lib/modules").join(RELEASE);
    let mut seed: u32 = 7;
    for i in 0..2000u32 {
        let dir = modules.join(format!("kernel/drivers/d{}/s{}", i % 40, i % 7));
        std::fs::create_dir_all(&dir).unwrap();
        let bytes: Vec<u8> = (0..16 * 1024)
            .map(|_| {
                seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                (seed >> 16) as u8
            })
            .collect();
        std::fs::write(dir.join(format!("m{i}.ko")), bytes).unwrap();
    }
    std::fs::write(modules.join("modules.dep"), "kernel/drivers/d0/s0/m0.ko:\n").unwrap();
    std::os::unix::fs::symlink("/usr/src/linux-headers", modules.join("build")).unwrap();
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn main() {
    let runs: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(10);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("tree");
    tree(&root);
    let image = dir.path().join("rootfs.ext4");
    let made = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-d"])
        .arg(&root)
        .arg(&image)
        .arg("256M")
        .status()
        .expect("mkfs.ext4 (apt-get install e2fsprogs)");
    assert!(made.success());
    let inside = format!("/lib/modules/{RELEASE}");
    let (mut reader, mut rdump) = (Vec::new(), Vec::new());
    for run in 0..runs {
        for step in 0..2 {
            let out = dir.path().join(format!("out-{run}-{step}"));
            std::fs::create_dir(&out).unwrap();
            let t = Instant::now();
            if (run + step) % 2 == 0 {
                Ext4Image::open(&image)
                    .unwrap()
                    .copy_tree(&inside, &out.join(RELEASE), Links::Resolve)
                    .unwrap();
                reader.push(t.elapsed());
            } else {
                let ok = Command::new("debugfs")
                    .arg("-R")
                    .arg(format!("rdump {inside} {}", out.display()))
                    .arg(&image)
                    .stderr(std::process::Stdio::null())
                    .status()
                    .unwrap()
                    .success();
                assert!(ok);
                rdump.push(t.elapsed());
            }
            std::fs::remove_dir_all(&out).unwrap();
        }
    }
    let (a, b) = (median(reader), median(rdump));
    println!("Modules out of an ext4 ({runs} runs each, interleaved, median; 2000 files, 31 MiB):");
    println!();
    println!("| method | ms | ratio |");
    println!("| --- | ---: | ---: |");
    println!(
        "| in-image reader (ext4-view, links resolved inside) | {:.1} | {:.2} |",
        a.as_secs_f64() * 1000.0,
        a.as_secs_f64() / b.as_secs_f64()
    );
    println!(
        "| debugfs rdump (before; followed links on the host) | {:.1} | 1.00 |",
        b.as_secs_f64() * 1000.0
    );
}
