//! The fresh-host story, for real: a daemon with no images gets a create
//! for its default image, finds it in the embedded catalog and builds it
//! (mmdebstrap from the Debian mirror, the cloud kernel, the initramfs,
//! the agent, rootfs and work seed). That build is the one every VM test
//! of the run uses (the test kit makes it once, whichever test comes
//! first, and keeps the create's answer): this test checks what it made.
//! Needs the static guest binary from `scripts/build-guest` and the
//! Debian mirror.

use banger_testkit as support;

use std::process::Command;

use support::TestDaemon;

fn debugfs(image: &str, command: &str) -> String {
    let out = Command::new("debugfs")
        .args(["-R", command, image])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn first_create_builds_the_default_image_from_the_catalog() {
    let Some(guest) = support::guest_binary() else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let etc = root.path().join("etc/banger");
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::write(
        etc.join("config.toml"),
        format!(
            "guest_binary = \"{}\"\n[network]\nenabled = false\n",
            guest.display()
        ),
    )
    .unwrap();
    // The build: a daemon with no image listed none, then the create
    // found the default image in the catalog and built it.
    let build = support::image::default_image_build(&guest).await;
    assert!(
        build["before"]["images"].as_array().unwrap().is_empty(),
        "{build}"
    );
    assert_eq!(build["status"], 201, "{build}");
    assert_eq!(build["vm"]["image_name"], "debian-bookworm");

    // What it made, in a daemon of this test's own.
    support::build_default_image(root.path(), &guest).await;
    let daemon = TestDaemon::start_bare(root).await;
    let (status, image) = daemon.call("GET", "/v1/images/debian-bookworm", None).await;
    assert_eq!(status, 200);
    assert_eq!(image["source"], "build");
    let version = image["kernel_version"].as_str().unwrap();
    assert!(
        version.starts_with("6.1") && version.ends_with("cloud-amd64"),
        "{version}"
    );
    let roles: Vec<&str> = image["manifest"]["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["role"].as_str().unwrap())
        .collect();
    assert_eq!(
        roles,
        ["kernel", "vmlinux", "initrd", "rootfs", "work_seed"]
    );

    let vmlinux = std::fs::read(image["vmlinux_path"].as_str().unwrap()).unwrap();
    assert_eq!(&vmlinux[..4], b"\x7fELF");
    let rootfs = image["rootfs_path"].as_str().unwrap();
    assert!(debugfs(rootfs, "stat /usr/local/sbin/banger-agent").contains("Mode:  0755"));
    assert!(
        debugfs(rootfs, "ls -l /etc/systemd/system/multi-user.target.wants")
            .contains("banger-agent.service")
    );
    assert!(debugfs(rootfs, "ls -l /usr/sbin").contains("sshd"));

    let (_, doctor) = daemon.call("GET", "/v1/doctor", None).await;
    let check = doctor["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "default image")
        .unwrap()
        .clone();
    assert_eq!(check["status"], "pass", "{check}");
    daemon.stop().await;
}
