//! SQLite pools: WAL journal, `synchronous = FULL` (a commit is on stable storage when it returns), a busy
//! timeout so that `tern user` commands and the daemon can share a database, and embedded migrations.

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{SqlitePool, migrate::Migrator};
use std::path::Path;
use std::time::Duration;

/// Opens (creating if needed) the database at `path` and brings its schema up to date.
pub async fn open(
    path: &Path,
    migrator: &Migrator,
    max_connections: u32,
) -> Result<SqlitePool, sqlx::Error> {
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(10));
    // One connection stays open for the pool's life: the WAL index (-shm) then lives as long as the process
    // (SQLite removes it when the last connection closes, and a new one starts over from a fixed header,
    // which `directory::recent` must be able to trust as changing with every commit).
    let pool = SqlitePoolOptions::new()
        .max_connections(max_connections)
        .min_connections(1)
        .idle_timeout(None)
        .max_lifetime(None)
        .connect_with(options)
        .await?;
    migrator.run(&pool).await?;
    Ok(pool)
}
