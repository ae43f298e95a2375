//! Flow tests of `Banger` over the in-memory store fake.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;

use super::*;
use crate::clock::SystemClock;
use crate::memory_store::MemoryStore;
use crate::resolve::StoredImages;

pub(super) fn image(name: &str) -> Image {
    Image {
        id: format!("img-{name}"),
        name: name.to_string(),
        source: "register".into(),
        kernel_path: "/k".into(),
        vmlinux_path: None,
        initrd_path: None,
        rootfs_path: "/r".into(),
        work_seed_path: None,
        manifest: None,
        created_at_ms: 0,
        parent_id: None,
        layers: Vec::new(),
    }
}

fn settings() -> Settings {
    Settings::new(
        BridgeNet::parse("172.29.0.1/24").unwrap(),
        SpecDefaults {
            image: "base".into(),
            ..SpecDefaults::default()
        },
        "qemu",
        std::path::Path::new("/nonexistent/state"),
        std::path::Path::new("/nonexistent/run"),
    )
}

fn banger_with(resolver: impl Fn(Arc<dyn Store>) -> Arc<dyn ImageResolver>) -> Arc<Banger> {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
    store.upsert_image(&image("base")).unwrap();
    let resolver = resolver(store.clone());
    Arc::new(Banger::new(
        store,
        resolver,
        Arc::new(SystemClock),
        settings(),
    ))
}

fn banger() -> Arc<Banger> {
    banger_with(|store| Arc::new(StoredImages::new(store)))
}

fn params(name: Option<&str>) -> CreateParams {
    CreateParams {
        name: name.map(String::from),
        no_start: true,
        ..Default::default()
    }
}

#[tokio::test]
async fn create_records_a_stopped_vm_with_stage_timings() {
    let b = banger();
    let vm = b.create_vm(params(Some("web"))).await.unwrap();
    assert_eq!(vm.state, VmState::Stopped);
    assert_eq!(vm.guest_ip.to_string(), "172.29.0.2");
    assert_eq!(vm.image_name, "base");
    assert_eq!(vm.vmm, "qemu");
    let names: Vec<_> = vm.stages.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["resolve_image", "reserve_vm"]);
    assert_eq!(b.find_vm("web").unwrap(), vm);
}

#[tokio::test]
async fn same_name_twice_at_once_has_exactly_one_winner() {
    let b = banger();
    let (a, c) = tokio::join!(
        b.create_vm(params(Some("dup"))),
        b.create_vm(params(Some("dup")))
    );
    let errors: Vec<_> = [a, c].into_iter().filter_map(Result::err).collect();
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].to_string(), "vm name already exists: dup");
    assert_eq!(errors[0].kind(), ErrorKind::Conflict);
    assert_eq!(b.list_vms().unwrap().len(), 1);
}

#[tokio::test]
async fn a_taken_name_is_refused_before_the_image_is_looked_for() {
    let b = banger();
    b.create_vm(params(Some("web"))).await.unwrap();
    // An image that is not here would be built or pulled first (minutes
    // for a catalog entry): the name's conflict comes before.
    let again = CreateParams {
        image: Some("not-here".into()),
        ..params(Some("web"))
    };
    let err = b.create_vm(again).await.unwrap_err();
    assert_eq!(err.to_string(), "vm name already exists: web");
    assert_eq!(err.kind(), ErrorKind::Conflict);
}

#[tokio::test]
async fn generated_names_addresses_and_cids_are_distinct() {
    let b = banger();
    let mut tasks = vec![];
    for _ in 0..50 {
        let b = b.clone();
        tasks.push(tokio::spawn(async move {
            b.create_vm(params(None)).await.unwrap()
        }));
    }
    let mut vms = vec![];
    for task in tasks {
        vms.push(task.await.unwrap());
    }
    let names: HashSet<_> = vms.iter().map(|v| v.name.clone()).collect();
    let ips: HashSet<_> = vms.iter().map(|v| v.guest_ip).collect();
    let cids: HashSet<_> = vms.iter().map(|v| v.vsock_cid).collect();
    assert_eq!((names.len(), ips.len(), cids.len()), (50, 50, 50));
}

#[tokio::test]
async fn freed_addresses_are_reused() {
    let b = banger();
    let first = b.create_vm(params(Some("a"))).await.unwrap();
    b.create_vm(params(Some("b"))).await.unwrap();
    b.delete_vm("a", false).await.unwrap();
    let again = b.create_vm(params(Some("c"))).await.unwrap();
    assert_eq!(again.guest_ip, first.guest_ip);
}

#[tokio::test]
async fn bad_input_changes_nothing() {
    let b = banger();
    b.create_vm(params(Some("taken"))).await.unwrap();
    let bad = [
        CreateParams {
            image: Some("nope".into()),
            ..params(Some("x"))
        },
        CreateParams {
            vcpus: Some(0),
            ..params(Some("x"))
        },
        CreateParams {
            memory_mib: Some(8),
            ..params(Some("x"))
        },
        CreateParams {
            work_disk_bytes: Some(1),
            ..params(Some("x"))
        },
        params(Some("Bad!")),
        params(Some("taken")),
    ];
    for p in bad {
        let err = b.create_vm(p.clone()).await.unwrap_err();
        assert!(err.hint().is_some(), "{err} has no hint");
        assert!(!err.to_string().contains('\n'));
    }
    assert_eq!(b.list_vms().unwrap().len(), 1);
}

#[tokio::test]
async fn booting_is_refused_before_anything_is_recorded() {
    let b = banger();
    let err = b
        .create_vm(CreateParams {
            no_start: false,
            ..params(Some("x"))
        })
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unsupported);
    assert!(b.list_vms().unwrap().is_empty());
}

/// Resolves `slow` only when released; everything else at once.
struct GatedResolver {
    inner: StoredImages,
    entered: Arc<Notify>,
    release: Arc<Notify>,
}

#[async_trait]
impl ImageResolver for GatedResolver {
    async fn resolve(&self, id_or_name: &str) -> Result<Image, ResolveError> {
        if id_or_name == "slow" {
            self.entered.notify_one();
            self.release.notified().await;
            return Ok(image("slow"));
        }
        self.inner.resolve(id_or_name).await
    }
}

#[tokio::test]
async fn reservation_lock_is_not_held_while_an_image_resolves() {
    let entered = Arc::new(Notify::new());
    let release = Arc::new(Notify::new());
    let (e, r) = (entered.clone(), release.clone());
    let b = banger_with(move |store| {
        Arc::new(GatedResolver {
            inner: StoredImages::new(store),
            entered: e.clone(),
            release: r.clone(),
        })
    });

    let slow = {
        let b = b.clone();
        tokio::spawn(async move {
            b.create_vm(CreateParams {
                image: Some("slow".into()),
                ..params(Some("slow-vm"))
            })
            .await
        })
    };
    entered.notified().await;
    // The slow create sits in image resolution; a second create must get
    // through its reservation now, not after the slow one finishes.
    let fast = tokio::time::timeout(
        Duration::from_secs(10),
        b.create_vm(params(Some("fast-vm"))),
    )
    .await
    .expect("the fast create waited for the slow one's image resolution")
    .unwrap();
    assert_eq!(fast.state, VmState::Stopped);
    assert!(!slow.is_finished());
    release.notify_one();
    let slow = slow.await.unwrap().unwrap();
    assert_ne!(slow.guest_ip, fast.guest_ip);
}

#[tokio::test]
async fn delete_refuses_active_vms_without_force() {
    let b = banger();
    let mut vm = b.create_vm(params(Some("busy"))).await.unwrap();
    vm.transition(VmState::Starting, 1).unwrap();
    b.store.update_vm(&vm).unwrap();
    let err = b.delete_vm("busy", false).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict);
    assert!(err.hint().unwrap().contains("--force"));
    b.delete_vm("busy", true).await.unwrap();
    assert!(matches!(
        b.find_vm("busy"),
        Err(ServiceError::VmNotFound(_))
    ));
}
