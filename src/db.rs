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
    let pool = SqlitePoolOptions::new()
        .max_connections(max_connections)
        .connect_with(options)
        .await?;
    migrator.run(&pool).await?;
    Ok(pool)
}
