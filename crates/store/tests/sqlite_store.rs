//! The SQLite store on a real database file.

use std::net::Ipv4Addr;
use std::path::Path;

use banger_core::image::Image;
use banger_core::spec::VmSpec;
use banger_core::store::{Store, StoreError};
use banger_core::vm::{Stage, Vm, VmState};
use banger_store::SqliteStore;

fn image(id: &str, name: &str) -> Image {
    Image {
        id: id.into(),
        name: name.into(),
        source: "register".into(),
        kernel_path: "/img/kernel".into(),
        initrd_path: Some("/img/initrd".into()),
        rootfs_path: "/img/rootfs.ext4".into(),
        work_seed_path: None,
        vmlinux_path: None,
        manifest: None,
        created_at_ms: 1,
        parent_id: None,
        layers: Vec::new(),
    }
}

fn vm(id: &str, name: &str, ip: &str) -> Vm {
    let guest_ip: Ipv4Addr = ip.parse().unwrap();
    Vm {
        id: id.into(),
        name: name.into(),
        image_id: "i1".into(),
        image_name: "base".into(),
        state: VmState::Created,
        spec: VmSpec {
            vcpus: 2,
            memory_mib: 512,
            work_disk_bytes: 8 << 30,
            system_disk_bytes: 4 << 30,
            nat: true,
            ports: Vec::new(),
            mounts: Vec::new(),
        },
        guest_ip,
        vsock_cid: u32::from(guest_ip),
        created_at_ms: 10,
        updated_at_ms: 10,
        last_error: None,
        stages: vec![Stage {
            name: "reserve_vm".into(),
            elapsed_ms: 3,
        }],
        create_stages: vec![Stage {
            name: "resolve_image".into(),
            elapsed_ms: 7,
        }],
        vmm: "firecracker".into(),
        handle: None,
    }
}

fn open(dir: &Path) -> SqliteStore {
    let store = SqliteStore::open(&dir.join("banger.db")).unwrap();
    store.upsert_image(&image("i1", "base")).unwrap();
    store
}

#[test]
fn round_trips_records_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let original = vm("v1", "web", "172.29.0.2");
    {
        let store = open(dir.path());
        store.insert_vm(&original).unwrap();
    }
    let store = SqliteStore::open(&dir.path().join("banger.db")).unwrap();
    assert_eq!(store.find_vm("web").unwrap().unwrap(), original);
    assert_eq!(store.find_vm("v1").unwrap().unwrap(), original);
    assert_eq!(store.list_vms().unwrap(), vec![original.clone()]);
    assert_eq!(
        store.find_image("base").unwrap().unwrap(),
        image("i1", "base")
    );
    assert!(store.find_vm("nope").unwrap().is_none());
}

#[test]
fn names_and_addresses_are_unique_in_the_schema() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.insert_vm(&vm("v1", "web", "172.29.0.2")).unwrap();
    assert_eq!(
        store.insert_vm(&vm("v2", "web", "172.29.0.3")),
        Err(StoreError::NameTaken {
            kind: "vm",
            name: "web".into()
        })
    );
    assert_eq!(
        store.insert_vm(&vm("v3", "db", "172.29.0.2")),
        Err(StoreError::AddressTaken("172.29.0.2".parse().unwrap()))
    );
    assert_eq!(
        store.upsert_image(&image("i2", "base")),
        Err(StoreError::NameTaken {
            kind: "image",
            name: "base".into()
        })
    );
    assert_eq!(store.list_vms().unwrap().len(), 1);
}

#[test]
fn update_delete_and_used_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut v = vm("v1", "web", "172.29.0.2");
    store.insert_vm(&v).unwrap();
    store.insert_vm(&vm("v2", "db", "172.29.0.3")).unwrap();
    v.state = VmState::Failed;
    v.last_error = Some("boom".into());
    store.update_vm(&v).unwrap();
    assert_eq!(store.find_vm("web").unwrap().unwrap(), v);
    assert_eq!(store.used_guest_ips().unwrap().len(), 2);
    store.delete_vm("v1").unwrap();
    assert!(store.find_vm("web").unwrap().is_none());
    let used = store.used_guest_ips().unwrap();
    assert!(used.contains(&"172.29.0.3".parse().unwrap()) && used.len() == 1);
    assert!(matches!(
        store.update_vm(&v),
        Err(StoreError::Missing { .. })
    ));
}

#[test]
fn images_in_use_cannot_vanish_under_a_vm() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.insert_vm(&vm("v1", "web", "172.29.0.2")).unwrap();
    assert!(store.delete_image("i1").is_err());
    assert!(store.find_image("i1").unwrap().is_some());
}

#[test]
fn uses_wal_and_refuses_a_newer_schema() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("banger.db");
    drop(SqliteStore::open(&path).unwrap());
    let conn = rusqlite::Connection::open(&path).unwrap();
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    conn.pragma_update(None, "user_version", 99).unwrap();
    drop(conn);
    let err = SqliteStore::open(&path).unwrap_err().to_string();
    assert!(err.contains("newer than this banger knows"), "{err}");
}

#[test]
fn an_older_database_is_migrated_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("banger.db");
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch(banger_store::MIGRATIONS[0]).unwrap();
    conn.pragma_update(None, "user_version", 1).unwrap();
    conn.execute_batch(
        "INSERT INTO images (id, name, source, kernel_path, rootfs_path, created_at_ms)
           VALUES ('i1', 'base', 'register', '/k', '/r', 1);
         INSERT INTO vms (id, name, image_id, image_name, state, vcpus, memory_mib,
           work_disk_bytes, system_disk_bytes, nat, guest_ip, vsock_cid, created_at_ms,
           updated_at_ms) VALUES ('v1', 'old', 'i1', 'base', 'stopped', 1, 256, 1, 1, 0,
           '172.29.0.2', 2887581698, 1, 1);",
    )
    .unwrap();
    drop(conn);
    let store = SqliteStore::open(&path).unwrap();
    let vm = store.find_vm("old").unwrap().unwrap();
    assert_eq!((vm.vmm.as_str(), vm.state), ("qemu", VmState::Stopped));
}

#[test]
fn an_image_manifest_and_vmlinux_round_trip() {
    use banger_proto::image::{Artifact, ArtifactRole, Manifest, Origin};
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut made = image("i2", "built");
    made.vmlinux_path = Some("/img/vmlinux".into());
    made.manifest = Some(Manifest {
        format: 1,
        name: "built".into(),
        kernel_version: Some("6.1.0-28-cloud-amd64".into()),
        oci: None,
        sshd: None,
        lineage: Vec::new(),
        origin: Origin {
            method: "build".into(),
            from: "bookworm".into(),
            packages: vec!["curl".into()],
            banger_version: "0.1.0".into(),
            made_at: "2026-01-01T00:00:00Z".into(),
        },
        artifacts: vec![Artifact {
            role: ArtifactRole::Rootfs,
            file: "rootfs.ext4".into(),
            bytes: 42,
            sha256: "a".repeat(64),
        }],
    });
    store.upsert_image(&made).unwrap();
    drop(store);
    let store = SqliteStore::open(&dir.path().join("banger.db")).unwrap();
    assert_eq!(store.find_image("built").unwrap().unwrap(), made);
    assert_eq!(
        store.find_image("i2").unwrap().unwrap().size_bytes(),
        Some(42)
    );
}

#[test]
fn a_running_vmms_handle_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut running = vm("v9", "run", "172.29.0.9");
    store.insert_vm(&running).unwrap();
    running.handle = Some(banger_core::vmm::VmmHandle {
        kind: "firecracker".into(),
        pid: 4242,
        start_ticks: 123_456_789,
        control_socket: "/run/banger/vms/v9/qmp.sock".into(),
        agent_socket: "/run/banger/vms/v9/agent.sock".into(),
    });
    store.update_vm(&running).unwrap();
    drop(store);
    let store = SqliteStore::open(&dir.path().join("banger.db")).unwrap();
    assert_eq!(store.find_vm("run").unwrap().unwrap(), running);
    running.handle = None;
    store.update_vm(&running).unwrap();
    assert_eq!(store.find_vm("run").unwrap().unwrap().handle, None);
}
