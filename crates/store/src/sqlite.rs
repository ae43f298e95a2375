//! `SqliteStore`: the `Store` trait on one SQLite file.

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use banger_core::image::Image;
use banger_core::snapshot::Snapshot;
use banger_core::store::{Store, StoreError};
use banger_core::vm::Vm;
use rusqlite::{params, params_from_iter, Connection, ErrorCode, OptionalExtension};

use crate::migrate::{migrate, MigrateError};
use crate::rows::{
    encode_layers, encode_manifest, encode_stages, image_from_row, vm_from_row, IMAGE_COLUMNS,
    VM_COLUMNS,
};

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot open state database {path}: {source}")]
    Open {
        path: String,
        source: rusqlite::Error,
    },
    #[error("cannot prepare state database {path}: {source}")]
    Migrate { path: String, source: MigrateError },
}

/// One connection behind a mutex: every call is a few milliseconds, and
/// SQLite serialises writers anyway.
#[derive(Debug)]
pub struct SqliteStore {
    conn: Mutex<Connection>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and migrates it.
    pub fn open(path: &Path) -> Result<Self, OpenError> {
        let shown = path.display().to_string();
        let open_err = |source| OpenError::Open {
            path: shown.clone(),
            source,
        };
        let mut conn = Connection::open(path).map_err(open_err)?;
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(open_err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open_err)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(open_err)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(open_err)?;
        migrate(&mut conn).map_err(|source| OpenError::Migrate {
            path: shown.clone(),
            source,
        })?;
        Ok(SqliteStore {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn decode_snapshot(record: &str) -> Result<Snapshot, StoreError> {
    serde_json::from_str(record).map_err(|e| StoreError::Corrupt(format!("snapshot record: {e}")))
}

fn backend(err: rusqlite::Error) -> StoreError {
    StoreError::Backend(err.to_string())
}

/// Maps a unique-constraint failure to the field that clashed.
fn insert_error(
    err: rusqlite::Error,
    kind: &'static str,
    name: &str,
    ip: Option<Ipv4Addr>,
) -> StoreError {
    if let rusqlite::Error::SqliteFailure(code, Some(message)) = &err {
        if code.code == ErrorCode::ConstraintViolation {
            if message.contains(".name") {
                return StoreError::NameTaken {
                    kind,
                    name: name.to_string(),
                };
            }
            if let (Some(ip), true) = (
                ip,
                message.contains(".guest_ip") || message.contains(".vsock_cid"),
            ) {
                return StoreError::AddressTaken(ip);
            }
        }
    }
    backend(err)
}

impl Store for SqliteStore {
    fn upsert_image(&self, image: &Image) -> Result<(), StoreError> {
        let path = |p: &Path| p.display().to_string();
        self.conn()
            .execute(
                &format!(
                    "INSERT INTO images ({IMAGE_COLUMNS})
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
                     ON CONFLICT(id) DO UPDATE SET name = excluded.name, source = excluded.source,
                       kernel_path = excluded.kernel_path, initrd_path = excluded.initrd_path,
                       rootfs_path = excluded.rootfs_path, work_seed_path = excluded.work_seed_path,
                       vmlinux_path = excluded.vmlinux_path, manifest = excluded.manifest,
                       parent_id = excluded.parent_id, layers = excluded.layers"
                ),
                params![
                    image.id,
                    image.name,
                    image.source,
                    path(&image.kernel_path),
                    image.initrd_path.as_deref().map(path),
                    path(&image.rootfs_path),
                    image.work_seed_path.as_deref().map(path),
                    image.created_at_ms,
                    image.vmlinux_path.as_deref().map(path),
                    encode_manifest(image)?,
                    image.parent_id,
                    encode_layers(image),
                ],
            )
            .map_err(|e| insert_error(e, "image", &image.name, None))?;
        Ok(())
    }

    fn find_image(&self, id_or_name: &str) -> Result<Option<Image>, StoreError> {
        self.conn()
            .query_row(
                &format!(
                    "SELECT {IMAGE_COLUMNS} FROM images WHERE id = ?1 OR name = ?1
                     ORDER BY id = ?1 DESC LIMIT 1"
                ),
                [id_or_name],
                image_from_row,
            )
            .optional()
            .map_err(backend)
    }

    fn list_images(&self) -> Result<Vec<Image>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(&format!("SELECT {IMAGE_COLUMNS} FROM images ORDER BY name"))
            .map_err(backend)?;
        let rows = stmt.query_map([], image_from_row).map_err(backend)?;
        rows.collect::<Result<_, _>>().map_err(backend)
    }

    fn delete_image(&self, id: &str) -> Result<(), StoreError> {
        self.conn()
            .execute("DELETE FROM images WHERE id = ?1", [id])
            .map_err(backend)?;
        Ok(())
    }

    fn insert_vm(&self, vm: &Vm) -> Result<(), StoreError> {
        self.conn()
            .execute(
                &format!(
                    "INSERT INTO vms ({VM_COLUMNS}) VALUES
                     (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17,
                      ?18, ?19, ?20, ?21, ?22, ?23, ?24)"
                ),
                params_from_iter(vm_params(vm)),
            )
            .map_err(|e| insert_error(e, "vm", &vm.name, Some(vm.guest_ip)))?;
        Ok(())
    }

    fn update_vm(&self, vm: &Vm) -> Result<(), StoreError> {
        let changed = self
            .conn()
            .execute(
                "UPDATE vms SET name = ?2, image_id = ?3, image_name = ?4, state = ?5, vcpus = ?6,
                   memory_mib = ?7, work_disk_bytes = ?8, system_disk_bytes = ?9, nat = ?10,
                   guest_ip = ?11, vsock_cid = ?12, created_at_ms = ?13, updated_at_ms = ?14,
                   last_error = ?15, stages = ?16, vmm = ?17, vmm_pid = ?18,
                   vmm_start_ticks = ?19, control_socket = ?20, agent_socket = ?21,
                   create_stages = ?22, ports = ?23, mounts = ?24
                 WHERE id = ?1",
                params_from_iter(vm_params(vm)),
            )
            .map_err(|e| insert_error(e, "vm", &vm.name, Some(vm.guest_ip)))?;
        if changed == 0 {
            return Err(StoreError::Missing {
                kind: "vm",
                id: vm.id.clone(),
            });
        }
        Ok(())
    }

    fn find_vm(&self, id_or_name: &str) -> Result<Option<Vm>, StoreError> {
        let raw = self
            .conn()
            .query_row(
                &format!(
                    "SELECT {VM_COLUMNS} FROM vms WHERE id = ?1 OR name = ?1
                     ORDER BY id = ?1 DESC LIMIT 1"
                ),
                [id_or_name],
                vm_from_row,
            )
            .optional()
            .map_err(backend)?;
        raw.map(|raw| raw.check()).transpose()
    }

    fn list_vms(&self) -> Result<Vec<Vm>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(&format!(
                "SELECT {VM_COLUMNS} FROM vms ORDER BY created_at_ms, name"
            ))
            .map_err(backend)?;
        let rows = stmt.query_map([], vm_from_row).map_err(backend)?;
        rows.map(|raw| raw.map_err(backend)?.check()).collect()
    }

    fn delete_vm(&self, id: &str) -> Result<(), StoreError> {
        self.conn()
            .execute("DELETE FROM vms WHERE id = ?1", [id])
            .map_err(backend)?;
        Ok(())
    }

    fn used_guest_ips(&self) -> Result<HashSet<Ipv4Addr>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT guest_ip FROM vms").map_err(backend)?;
        let rows = stmt
            .query_map([], |row| row.get::<_, String>(0))
            .map_err(backend)?;
        rows.map(|ip| {
            let ip = ip.map_err(backend)?;
            ip.parse()
                .map_err(|_| StoreError::Corrupt(format!("guest address {ip:?}")))
        })
        .collect()
    }

    fn insert_snapshot(&self, snapshot: &Snapshot) -> Result<(), StoreError> {
        let record = serde_json::to_string(snapshot)
            .map_err(|e| StoreError::Corrupt(format!("cannot encode snapshot: {e}")))?;
        self.conn()
            .execute(
                "INSERT INTO snapshots (id, name, image_id, record) VALUES (?1, ?2, ?3, ?4)",
                params![snapshot.id, snapshot.name, snapshot.image_id, record],
            )
            .map_err(|e| insert_error(e, "snapshot", &snapshot.name, None))?;
        Ok(())
    }

    fn find_snapshot(&self, id_or_name: &str) -> Result<Option<Snapshot>, StoreError> {
        let record: Option<String> = self
            .conn()
            .query_row(
                "SELECT record FROM snapshots WHERE id = ?1 OR name = ?1
                 ORDER BY id = ?1 DESC LIMIT 1",
                [id_or_name],
                |row| row.get(0),
            )
            .optional()
            .map_err(backend)?;
        record.as_deref().map(decode_snapshot).transpose()
    }

    fn list_snapshots(&self) -> Result<Vec<Snapshot>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare("SELECT record FROM snapshots ORDER BY name")
            .map_err(backend)?;
        let rows = stmt
            .query_map([], |row| row.get::<_, String>(0))
            .map_err(backend)?;
        rows.map(|row| decode_snapshot(&row.map_err(backend)?))
            .collect()
    }

    fn delete_snapshot(&self, id: &str) -> Result<(), StoreError> {
        self.conn()
            .execute("DELETE FROM snapshots WHERE id = ?1", [id])
            .map_err(backend)?;
        Ok(())
    }
}

fn vm_params(vm: &Vm) -> Vec<Box<dyn rusqlite::ToSql + '_>> {
    vec![
        Box::new(&vm.id),
        Box::new(&vm.name),
        Box::new(&vm.image_id),
        Box::new(&vm.image_name),
        Box::new(vm.state.as_str()),
        Box::new(vm.spec.vcpus),
        Box::new(vm.spec.memory_mib),
        Box::new(vm.spec.work_disk_bytes as i64),
        Box::new(vm.spec.system_disk_bytes as i64),
        Box::new(vm.spec.nat),
        Box::new(vm.guest_ip.to_string()),
        Box::new(vm.vsock_cid),
        Box::new(vm.created_at_ms),
        Box::new(vm.updated_at_ms),
        Box::new(&vm.last_error),
        Box::new(encode_stages(&vm.stages)),
        Box::new(&vm.vmm),
        Box::new(vm.handle.as_ref().map(|h| h.pid)),
        Box::new(vm.handle.as_ref().map(|h| h.start_ticks as i64)),
        Box::new(
            vm.handle
                .as_ref()
                .map(|h| h.control_socket.display().to_string()),
        ),
        Box::new(
            vm.handle
                .as_ref()
                .map(|h| h.agent_socket.display().to_string()),
        ),
        Box::new(encode_stages(&vm.create_stages)),
        Box::new(serde_json::to_string(&vm.spec.ports).unwrap_or_else(|_| "[]".into())),
        Box::new(serde_json::to_string(&vm.spec.mounts).unwrap_or_else(|_| "[]".into())),
    ]
}
