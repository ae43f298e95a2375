//! `firecracker_check FIRECRACKER IMAGE_DIR [--assume-kvm]`: runs the
//! Firecracker driver's lifecycle against the binary at FIRECRACKER with a
//! banger image's kernel, initrd and rootfs, on a TAP device it makes and
//! removes, and prints which steps the binary accepted (see
//! `banger_host::firecracker::check`; `scripts/firecracker-check` runs it).
//! Exits 1 when a step failed, 2 on bad arguments. Run as root.

use std::path::PathBuf;
use std::process::ExitCode;

use banger_host::accel::{Accel, KvmFacts, KvmPaths};
use banger_host::firecracker::check::{run, table, CheckSetup};

const TAP: &str = "bgfc-check0";

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let assume_kvm = args.iter().any(|a| a == "--assume-kvm");
    let paths: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    let [firecracker, image] = paths[..] else {
        eprintln!("error: usage: firecracker_check FIRECRACKER IMAGE_DIR [--assume-kvm]");
        eprintln!("hint: IMAGE_DIR is a banger image directory (see `banger image show NAME`)");
        return ExitCode::from(2);
    };
    let accel = if assume_kvm {
        Accel::Kvm
    } else {
        KvmFacts::probe(&KvmPaths::default()).accel()
    };
    let version = std::process::Command::new(firecracker)
        .arg("--version")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .to_string()
        })
        .unwrap_or_else(|e| format!("does not run: {e}"));
    println!("firecracker: {firecracker} ({version})");
    println!("image: {image}");
    println!("accelerator: {accel:?}");
    let made = std::process::Command::new("ip")
        .args(["tuntap", "add", "dev", TAP, "mode", "tap"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !made {
        eprintln!("error: cannot make the tap device {TAP}");
        eprintln!("hint: run as root, with iproute2; remove a leftover with `ip link del {TAP}`");
        return ExitCode::from(1);
    }
    let work = std::env::temp_dir().join(format!("banger-fc-check-{}", std::process::id()));
    let setup = CheckSetup {
        firecracker: PathBuf::from(firecracker),
        image: PathBuf::from(image),
        work: work.clone(),
        tap: TAP.into(),
        accel,
    };
    let steps = run(&setup).await;
    let _ = std::process::Command::new("ip")
        .args(["link", "del", TAP])
        .status();
    let _ = std::fs::remove_dir_all(&work);
    print!("{}", table(&steps));
    let failed = steps.iter().filter(|s| !s.ok).count();
    println!("{} steps, {failed} not accepted", steps.len());
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
