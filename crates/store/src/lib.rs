//! banger-store: the one SQLite file that holds all of banger's state.
//! The only crate that speaks SQL. WAL mode, foreign keys on, schema from
//! the embedded migrations in `migrations/`, applied in order and recorded
//! in `PRAGMA user_version`.

mod migrate;
mod rows;
mod sqlite;

pub use migrate::MIGRATIONS;
pub use sqlite::{OpenError, SqliteStore};
