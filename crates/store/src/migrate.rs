//! Embedded schema migrations, applied in order on open.

use rusqlite::Connection;

/// Every migration, oldest first; `user_version` counts those applied.
pub const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/0001_init.sql"),
    include_str!("../migrations/0002_vm_vmm.sql"),
    include_str!("../migrations/0003_image_artifacts.sql"),
    include_str!("../migrations/0004_vm_handle.sql"),
    include_str!("../migrations/0005_vm_create_stages.sql"),
    include_str!("../migrations/0006_snapshots.sql"),
    include_str!("../migrations/0007_image_layers.sql"),
    include_str!("../migrations/0008_vm_ports.sql"),
    include_str!("../migrations/0009_vm_mounts.sql"),
];

/// Applies the migrations this database has not seen. Returns the new
/// schema version, or the version found when it is newer than this build.
pub(crate) fn migrate(conn: &mut Connection) -> Result<usize, MigrateError> {
    let current: usize = conn.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    if current > MIGRATIONS.len() {
        return Err(MigrateError::TooNew {
            found: current,
            known: MIGRATIONS.len(),
        });
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(current) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", index + 1)?;
        tx.commit()?;
    }
    Ok(MIGRATIONS.len())
}

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("database schema version {found} is newer than this banger knows ({known})")]
    TooNew { found: usize, known: usize },
    #[error(transparent)]
    Sql(#[from] rusqlite::Error),
}
