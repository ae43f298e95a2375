//! Snapshot flows over the lifecycle fakes: the pause/save/resume order,
//! a restore that takes a new identity instead of booting, refusals that
//! change nothing, a failed save that leaves nothing, forks, and warm
//! templates chosen only for the shape they were made in.

use super::lifecycle_tests::{
    booting, booting_memory_apart, events, named, FakeCap, Log, SLOW_STATE, STALE_STATE,
};
use super::*;
use crate::snapshot::SnapshotKind;

fn disk(log: &Log) -> FakeCap {
    FakeCap::new("disk", log)
}

fn snapshot_files(b: &Banger) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(&b.settings().snapshots_dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[tokio::test]
async fn a_snapshot_pauses_saves_resumes_and_a_vm_from_it_restores_with_a_new_identity() {
    let log = Log::default();
    let b = booting(vec![disk(&log)], &log);
    b.create_vm(named("src")).await.unwrap();
    log.lock().unwrap().clear();
    let snapshot = b.snapshot_vm("src", Some("s1".into())).await.unwrap();
    assert_eq!(
        events(&log),
        ["vmm.pause", "disk.save", "vmm.save", "vmm.resume"]
    );
    assert_eq!(snapshot.kind, SnapshotKind::User);
    assert_eq!(snapshot.source_vm.as_deref(), Some("src"));
    assert!(!snapshot.memory_file);
    let dir = b.snapshot_dir(&snapshot.id);
    assert!(dir.join("state").is_file() && dir.join("disk").is_file());

    log.lock().unwrap().clear();
    let copy = b
        .create_vm(CreateParams {
            from: Some("s1".into()),
            ..named("copy")
        })
        .await
        .unwrap();
    let seen = events(&log);
    assert_eq!(seen[..2], ["disk.prepare", "disk.from_snapshot saved=true"]);
    assert_eq!(seen[2], "vmm.restore memory_file=None state=true");
    assert!(
        seen[3].starts_with("agent.identity banger.root=/dev/vda banger.hostname=copy"),
        "{seen:?}"
    );
    assert!(!seen.iter().any(|e| e == "vmm.start"), "{seen:?}");
    let stages: Vec<_> = copy.create_stages.iter().map(|s| s.name.as_str()).collect();
    assert!(
        stages.contains(&"vmm_restore") && stages.contains(&"identity"),
        "{stages:?}"
    );
    assert_eq!(copy.spec.vcpus, snapshot.vcpus);
    assert_ne!(copy.guest_ip, b.find_vm("src").unwrap().guest_ip);

    // Two restores get different machine-ids.
    b.create_vm(CreateParams {
        from: Some("s1".into()),
        ..named("copy2")
    })
    .await
    .unwrap();
    let ids: Vec<String> = events(&log)
        .iter()
        .filter(|e| e.starts_with("agent.identity"))
        .map(|e| e.rsplit(' ').next().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 2);
    assert_ne!(ids[0], ids[1]);

    let removed = b.delete_snapshot("s1").await.unwrap();
    assert!(!b.snapshot_dir(&removed.id).exists());
    assert!(b.list_snapshots().unwrap().is_empty());
}

#[tokio::test]
async fn bad_snapshot_requests_are_refused_and_change_nothing() {
    let log = Log::default();
    let b = booting(vec![disk(&log)], &log);
    b.create_vm(CreateParams {
        no_start: true,
        ..named("idle")
    })
    .await
    .unwrap();
    let err = b.snapshot_vm("idle", None).await.unwrap_err();
    assert!(matches!(err, ServiceError::NotRunning { .. }), "{err}");
    let err = b.snapshot_vm("nope", None).await.unwrap_err();
    assert!(matches!(err, ServiceError::VmNotFound(_)), "{err}");

    b.create_vm(named("src")).await.unwrap();
    b.snapshot_vm("src", Some("s1".into())).await.unwrap();
    let err = b.snapshot_vm("src", Some("s1".into())).await.unwrap_err();
    assert!(matches!(err, ServiceError::SnapshotNameTaken(_)), "{err}");
    let err = b.snapshot_vm("src", Some("Bad".into())).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);

    let err = b
        .create_vm(CreateParams {
            from: Some("missing".into()),
            ..named("x")
        })
        .await
        .unwrap_err();
    assert!(matches!(err, ServiceError::SnapshotNotFound(_)), "{err}");
    let err = b
        .create_vm(CreateParams {
            from: Some("s1".into()),
            vcpus: Some(4),
            ..named("x")
        })
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unprocessable);
    assert!(err.to_string().contains("its vcpus is 2, not 4"), "{err}");
    assert!(b.find_vm("x").is_err(), "no vm was recorded");
    assert_eq!(b.list_snapshots().unwrap().len(), 1);
}

#[tokio::test]
async fn a_save_that_fails_records_nothing_leaves_no_files_and_resumes_the_vm() {
    let log = Log::default();
    let mut full = disk(&log);
    full.fail_save = true;
    let b = booting(vec![full], &log);
    b.create_vm(named("src")).await.unwrap();
    log.lock().unwrap().clear();
    let err = b.snapshot_vm("src", Some("s1".into())).await.unwrap_err();
    assert!(err.to_string().contains("no space left"), "{err}");
    assert_eq!(events(&log), ["vmm.pause", "disk.save", "vmm.resume"]);
    assert!(b.list_snapshots().unwrap().is_empty());
    assert_eq!(snapshot_files(&b), [".staging"]);
    assert!(
        std::fs::read_dir(b.settings().snapshots_dir.join(".staging"))
            .unwrap()
            .next()
            .is_none(),
        "no staging left"
    );
    assert_eq!(b.find_vm("src").unwrap().state, VmState::Running);
}

#[tokio::test]
async fn a_fork_makes_running_copies_and_drops_its_snapshot() {
    let log = Log::default();
    let b = booting(vec![disk(&log)], &log);
    b.create_vm(named("src")).await.unwrap();
    let copies = b.fork_vm("src", 3, Some("web".into()), None).await.unwrap();
    let names: Vec<_> = copies.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, ["web-1", "web-2", "web-3"]);
    let mut ips: Vec<_> = copies.iter().map(|v| v.guest_ip).collect();
    ips.push(b.find_vm("src").unwrap().guest_ip);
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), 4, "every copy has its own address");
    assert!(copies.iter().all(|v| v.state == VmState::Running));
    assert!(b.list_snapshots().unwrap().is_empty());
    assert_eq!(snapshot_files(&b), [".staging"]);

    // A name taken refuses the fork before anything is made.
    let before = b.list_vms().unwrap().len();
    let err = b
        .fork_vm("src", 2, Some("web".into()), None)
        .await
        .unwrap_err();
    assert!(matches!(err, ServiceError::NameTaken(_)), "{err}");
    let err = b
        .fork_vm("src", 1, Some("src".into()), None)
        .await
        .unwrap_err();
    assert!(matches!(err, ServiceError::NameTaken(_)), "{err}");
    assert_eq!(b.list_vms().unwrap().len(), before);
    let err = b.fork_vm("src", 0, None, None).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
}

#[tokio::test]
async fn a_warm_template_serves_creates_of_its_shape_only() {
    let log = Log::default();
    let b = booting(vec![disk(&log)], &log);
    let template = b.warm_image("base").await.unwrap();
    assert_eq!(template.kind, SnapshotKind::Template);
    assert!(template.memory_file);
    assert_eq!(template.source_vm, None);
    assert!(
        b.list_vms().unwrap().is_empty(),
        "the template's vm is gone"
    );
    let seen = events(&log);
    assert!(
        seen.contains(&"vmm.start".to_string()) && !seen.contains(&"vmm.resume".to_string()),
        "{seen:?}"
    );
    // Saved only once the guest's boot has settled.
    let at = |e: &str| seen.iter().position(|s| s == e);
    let settled = at("agent.exec systemctl is-system-running --wait");
    assert!(settled.is_some() && settled < at("vmm.pause"), "{seen:?}");

    log.lock().unwrap().clear();
    let warm = b.create_vm(named("warm")).await.unwrap();
    assert!(
        events(&log).contains(&"vmm.restore memory_file=Some(false) state=true".to_string()),
        "{:?}",
        events(&log)
    );
    assert!(warm.create_stages.iter().any(|s| s.name == "vmm_restore"));

    for params in [
        CreateParams {
            cold: true,
            ..named("cold")
        },
        CreateParams {
            vcpus: Some(1),
            ..named("other-shape")
        },
    ] {
        log.lock().unwrap().clear();
        let vm = b.create_vm(params).await.unwrap();
        assert!(
            vm.create_stages.iter().any(|s| s.name == "vmm_start"),
            "{}: {:?}",
            vm.name,
            events(&log)
        );
    }
    // A second warm replaces the first.
    let again = b.warm_image("base").await.unwrap();
    assert_ne!(again.id, template.id);
    assert_eq!(b.list_snapshots().unwrap().len(), 1);
    assert!(!b.snapshot_dir(&template.id).exists());
}

#[tokio::test]
async fn a_template_that_no_longer_restores_is_dropped_and_the_create_boots() {
    let log = Log::default();
    let b = booting(vec![disk(&log)], &log);
    let template = b.warm_image("base").await.unwrap();
    // Saved by another QEMU: its machine does not load any more.
    std::fs::write(
        b.snapshot_dir(&template.id)
            .join(crate::snapshot::STATE_FILE),
        STALE_STATE,
    )
    .unwrap();
    log.lock().unwrap().clear();
    let vm = b.create_vm(named("web")).await.unwrap();
    assert_eq!(vm.state, VmState::Running);
    assert_eq!(vm.last_error, None);
    let stages: Vec<&str> = vm.create_stages.iter().map(|s| s.name.as_str()).collect();
    let at = |name: &str| stages.iter().position(|s| *s == name);
    assert!(
        at("template_dropped").is_some() && at("template_dropped") < at("vmm_start"),
        "{stages:?}"
    );
    // The disks the restore began from the template went before the boot
    // made its own.
    let seen = events(&log);
    let at = |e: &str| seen.iter().position(|s| s == e);
    assert!(at("vmm.restore failed") < at("disk.remove"), "{seen:?}");
    assert!(at("disk.remove") < at("vmm.start"), "{seen:?}");
    assert!(b.list_snapshots().unwrap().is_empty());
    assert!(!b.snapshot_dir(&template.id).exists());
    // A create of a snapshot the user asked for fails as it did.
    let snapshot = b.snapshot_vm("web", Some("s1".into())).await.unwrap();
    std::fs::write(
        b.snapshot_dir(&snapshot.id)
            .join(crate::snapshot::STATE_FILE),
        STALE_STATE,
    )
    .unwrap();
    let params = CreateParams {
        from: Some("s1".into()),
        ..named("copy")
    };
    let err = b.create_vm(params).await.unwrap_err();
    assert!(err.to_string().contains("does not load"), "{err}");
    assert!(b.find_snapshot("s1").is_ok());
}

#[tokio::test]
async fn vms_start_from_one_snapshot_together_and_its_removal_waits_for_them() {
    let log = Log::default();
    let b = booting(vec![disk(&log)], &log);
    b.create_vm(named("src")).await.unwrap();
    let snapshot = b.snapshot_vm("src", Some("s1".into())).await.unwrap();
    let state = b
        .snapshot_dir(&snapshot.id)
        .join(crate::snapshot::STATE_FILE);
    std::fs::write(&state, SLOW_STATE).unwrap();
    log.lock().unwrap().clear();
    let from = |name: &str| CreateParams {
        from: Some("s1".into()),
        ..named(name)
    };
    let (a, c, removed) = tokio::join!(b.create_vm(from("a")), b.create_vm(from("c")), async {
        // Both restores are under way.
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        b.delete_snapshot("s1").await
    });
    a.unwrap();
    c.unwrap();
    removed.unwrap();
    let restores: Vec<String> = events(&log)
        .into_iter()
        .filter(|e| e.starts_with("vmm.restore slow"))
        .collect();
    assert_eq!(
        restores,
        [
            "vmm.restore slow began",
            "vmm.restore slow began",
            "vmm.restore slow ended state=true",
            "vmm.restore slow ended state=true",
        ],
        "two restores at once, the snapshot kept until both ended"
    );
    assert!(!state.exists());
    assert!(b.list_snapshots().unwrap().is_empty());
}

#[tokio::test]
async fn a_vmm_that_keeps_memory_apart_saves_it_beside_the_state_and_restores_from_it() {
    let log = Log::default();
    let b = booting_memory_apart(vec![disk(&log)], &log);
    // Its template is a cold boot whose save writes the memory file.
    let template = b.warm_image("base").await.unwrap();
    assert!(template.memory_file);
    assert!(
        events(&log).contains(&"vmm.start".to_string()),
        "{:?}",
        events(&log)
    );
    let dir = b.settings().snapshots_dir.join(&template.id);
    assert!(dir.join(crate::snapshot::MEMORY_FILE).is_file());
    log.lock().unwrap().clear();
    b.create_vm(named("warm")).await.unwrap();
    assert!(
        events(&log).contains(&"vmm.restore memory_file=Some(false) state=true".to_string()),
        "{:?}",
        events(&log)
    );

    // A user snapshot holds its memory in that file too, and a create
    // from it maps it.
    let snapshot = b.snapshot_vm("warm", Some("s1".into())).await.unwrap();
    assert!(snapshot.memory_file);
    log.lock().unwrap().clear();
    b.create_vm(CreateParams {
        from: Some("s1".into()),
        ..named("copy")
    })
    .await
    .unwrap();
    assert!(
        events(&log).contains(&"vmm.restore memory_file=Some(false) state=true".to_string()),
        "{:?}",
        events(&log)
    );
}

#[tokio::test]
async fn a_template_a_killed_daemon_was_making_leaves_no_vm_at_the_next_start() {
    let log = Log::default();
    let b = booting(vec![disk(&log)], &log);
    // What a kill during `image warm` leaves: the template's VM, and its
    // staging naming it.
    let vm = b.create_vm(named("warm-0a1b2c")).await.unwrap();
    let staging = b.settings().snapshots_dir.join(".staging").join("abc");
    std::fs::create_dir_all(&staging).unwrap();
    std::fs::write(staging.join(super::templates::TEMPLATE_VM), &vm.id).unwrap();
    let kept = b.create_vm(named("web")).await.unwrap();
    b.clean_snapshot_dirs().await.unwrap();
    let names: Vec<String> = b.list_vms().unwrap().into_iter().map(|v| v.name).collect();
    assert_eq!(names, [kept.name]);
    assert!(!staging.exists());
    assert!(
        events(&log)
            .iter()
            .any(|e| e.starts_with("vmm.kill") || e.starts_with("vmm.stop")),
        "{:?}",
        events(&log)
    );
}
