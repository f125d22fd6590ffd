//! Where users' scripts live (sieve.db under the data folder): at most one active script per user, each
//! checked by compiling it before it is stored, and compiled programs cached per user until the script
//! changes. Also what vacation (replies sent, per sender and handle) and the duplicate test remember.

use super::{CompileError, ast::Program};
use sqlx::{Row, SqlitePool};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use thiserror::Error;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("src/sieve/migrations");

/// Longest script name, in characters.
pub const MAX_NAME: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptInfo {
    pub name: String,
    pub active: bool,
}

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("no script {0:?}")]
    NotFound(String),
    #[error("script {0:?} already exists")]
    Exists(String),
    #[error("script {0:?} is active")]
    Active(String),
    #[error("{0:?} is not a valid script name")]
    BadName(String),
    #[error("{0}")]
    Compile(CompileError),
    #[error("too many scripts (at most {0})")]
    TooManyScripts(usize),
    #[error("script too large (at most {0} octets)")]
    TooLarge(usize),
    #[error("script storage: {0}")]
    Storage(String),
}

fn db(e: sqlx::Error) -> StoreError {
    StoreError::Storage(e.to_string())
}

/// RFC 5804 section 1.6: not empty, no control characters, no line or paragraph separators; and no `/`,
/// so that a name can never become a path.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.chars().count() <= MAX_NAME
        && !name
            .chars()
            .any(|c| c.is_control() || c == '\u{2028}' || c == '\u{2029}' || c == '/' || c == '\\')
}

/// Limits on what a user may store.
#[derive(Debug, Clone, Copy)]
pub struct Quota {
    pub max_scripts: usize,
    pub max_script_bytes: usize,
    pub max_redirects: usize,
}

#[derive(Clone)]
pub struct ScriptStore {
    pool: SqlitePool,
    quota: Quota,
    /// user → (version of the active script, its program).
    cache: Arc<Mutex<HashMap<String, Compiled>>>,
    /// user → (when last looked up, the active script's version or none): one lookup per user per
    /// `RECHECK` whatever the traffic. Changes made through this store are seen at once; changes made
    /// by another process (`tern sieve`) within `RECHECK`.
    recent: Arc<Mutex<HashMap<String, Looked>>>,
    /// (user, script) → (digest of its text, program): included scripts.
    included: Arc<Mutex<HashMap<(String, String), Included>>>,
}

/// A compiled included script and the digest of the text it was compiled from.
type Included = (String, Arc<Program>);

/// A compiled active script and the version it was compiled from.
type Compiled = (i64, Arc<Program>);
/// When the active script's version was looked up, and what it was (none: no active script).
type Looked = (std::time::Instant, Option<i64>);

/// How long the active script's version, once looked up, is taken as current.
const RECHECK: std::time::Duration = std::time::Duration::from_secs(1);

impl ScriptStore {
    pub async fn open(data_dir: &Path, quota: Quota) -> Result<ScriptStore, StoreError> {
        let pool = crate::db::open(&data_dir.join("sieve.db"), &MIGRATOR, 4)
            .await
            .map_err(db)?;
        Ok(ScriptStore {
            pool,
            quota,
            cache: Arc::new(Mutex::new(HashMap::new())),
            recent: Arc::new(Mutex::new(HashMap::new())),
            included: Arc::new(Mutex::new(HashMap::new())),
        })
    }

    pub fn max_script_bytes(&self) -> usize {
        self.quota.max_script_bytes
    }

    pub fn max_redirects(&self) -> usize {
        self.quota.max_redirects
    }

    pub async fn list(&self, user: &str) -> Result<Vec<ScriptInfo>, StoreError> {
        let user = &user.to_lowercase();
        let rows = sqlx::query("SELECT name, active FROM scripts WHERE user = ? ORDER BY name")
            .bind(user)
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        Ok(rows
            .iter()
            .map(|r| ScriptInfo {
                name: r.get(0),
                active: r.get::<i64, _>(1) != 0,
            })
            .collect())
    }

    pub async fn get(&self, user: &str, name: &str) -> Result<String, StoreError> {
        let user = &user.to_lowercase();
        sqlx::query("SELECT source FROM scripts WHERE user = ? AND name = ?")
            .bind(user)
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?
            .map(|r| r.get(0))
            .ok_or_else(|| StoreError::NotFound(name.to_string()))
    }

    /// Compiles a script without storing it (CHECKSCRIPT).
    pub fn check(&self, source: &str) -> Result<(), StoreError> {
        if source.len() > self.quota.max_script_bytes {
            return Err(StoreError::TooLarge(self.quota.max_script_bytes));
        }
        super::compile(source)
            .map(|_| ())
            .map_err(StoreError::Compile)
    }

    pub async fn have_space(&self, user: &str, name: &str, size: usize) -> Result<(), StoreError> {
        let user = &user.to_lowercase();
        if !valid_name(name) {
            return Err(StoreError::BadName(name.to_string()));
        }
        if size > self.quota.max_script_bytes {
            return Err(StoreError::TooLarge(self.quota.max_script_bytes));
        }
        let scripts = self.list(user).await?;
        if !scripts.iter().any(|s| s.name == name) && scripts.len() >= self.quota.max_scripts {
            return Err(StoreError::TooManyScripts(self.quota.max_scripts));
        }
        Ok(())
    }

    /// Stores a script (replacing one of that name) once it compiles.
    pub async fn put(&self, user: &str, name: &str, source: &str) -> Result<(), StoreError> {
        let user = &user.to_lowercase();
        self.have_space(user, name, source.len()).await?;
        self.check(source)?;
        sqlx::query(
            "INSERT INTO scripts (user, name, source, active, version) VALUES (?, ?, ?, 0, ?) \
             ON CONFLICT (user, name) DO UPDATE SET source = excluded.source, version = excluded.version",
        )
        .bind(user)
        .bind(name)
        .bind(source)
        .bind(version())
        .execute(&self.pool)
        .await
        .map_err(db)?;
        self.forget(user);
        Ok(())
    }

    /// Makes `name` the active script, or none.
    pub async fn set_active(&self, user: &str, name: Option<&str>) -> Result<(), StoreError> {
        let user = &user.to_lowercase();
        let mut tx = self.pool.begin().await.map_err(db)?;
        if let Some(n) = name {
            let found = sqlx::query("SELECT 1 FROM scripts WHERE user = ? AND name = ?")
                .bind(user)
                .bind(n)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db)?;
            if found.is_none() {
                return Err(StoreError::NotFound(n.to_string()));
            }
        }
        sqlx::query("UPDATE scripts SET active = 0 WHERE user = ? AND active = 1")
            .bind(user)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        if let Some(n) = name {
            sqlx::query("UPDATE scripts SET active = 1, version = ? WHERE user = ? AND name = ?")
                .bind(version())
                .bind(user)
                .bind(n)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
        }
        tx.commit().await.map_err(db)?;
        self.forget(user);
        Ok(())
    }

    /// Deletes a script; the active one cannot be (RFC 5804 section 2.10).
    pub async fn delete(&self, user: &str, name: &str) -> Result<(), StoreError> {
        let user = &user.to_lowercase();
        let row = sqlx::query("SELECT active FROM scripts WHERE user = ? AND name = ?")
            .bind(user)
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        match row {
            None => return Err(StoreError::NotFound(name.to_string())),
            Some(r) if r.get::<i64, _>(0) != 0 => return Err(StoreError::Active(name.to_string())),
            Some(_) => {}
        }
        sqlx::query("DELETE FROM scripts WHERE user = ? AND name = ? AND active = 0")
            .bind(user)
            .bind(name)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }

    pub async fn rename(&self, user: &str, from: &str, to: &str) -> Result<(), StoreError> {
        let user = &user.to_lowercase();
        if !valid_name(to) {
            return Err(StoreError::BadName(to.to_string()));
        }
        let mut tx = self.pool.begin().await.map_err(db)?;
        let exists = |n: &str| {
            sqlx::query("SELECT 1 FROM scripts WHERE user = ? AND name = ?")
                .bind(user.to_string())
                .bind(n.to_string())
        };
        if exists(from)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?
            .is_none()
        {
            return Err(StoreError::NotFound(from.to_string()));
        }
        if from != to
            && exists(to)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db)?
                .is_some()
        {
            return Err(StoreError::Exists(to.to_string()));
        }
        sqlx::query("UPDATE scripts SET name = ?, version = ? WHERE user = ? AND name = ?")
            .bind(to)
            .bind(version())
            .bind(user)
            .bind(from)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        self.forget(user);
        Ok(())
    }

    /// The user's scripts changed elsewhere (another process): look them up again.
    pub fn changed(&self, user: &str) {
        self.forget(&user.to_lowercase());
    }

    fn forget(&self, user: &str) {
        if let Ok(mut c) = self.cache.lock() {
            c.remove(user);
        }
        if let Ok(mut r) = self.recent.lock() {
            r.remove(user);
        }
    }

    /// The user's active script, compiled (once per change of the script).
    pub async fn active(&self, user: &str) -> Result<Option<Arc<Program>>, StoreError> {
        let user = &user.to_lowercase();
        let known = self
            .recent
            .lock()
            .ok()
            .and_then(|r| r.get(user).copied())
            .filter(|(at, _)| at.elapsed() < RECHECK)
            .map(|(_, v)| v);
        let version = match known {
            Some(v) => v,
            None => {
                let v = sqlx::query("SELECT version FROM scripts WHERE user = ? AND active = 1")
                    .bind(user)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(db)?
                    .map(|row| row.get::<i64, _>(0));
                if let Ok(mut r) = self.recent.lock() {
                    if r.len() > 100_000 {
                        r.clear();
                    }
                    r.insert(user.to_string(), (std::time::Instant::now(), v));
                }
                v
            }
        };
        let Some(version) = version else {
            return Ok(None);
        };
        if let Ok(c) = self.cache.lock()
            && let Some((v, p)) = c.get(user)
            && *v == version
        {
            return Ok(Some(p.clone()));
        }
        let row = sqlx::query("SELECT source, version FROM scripts WHERE user = ? AND active = 1")
            .bind(user)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        let Some(row) = row else { return Ok(None) };
        let source: String = row.get(0);
        let version: i64 = row.get(1);
        let program = Arc::new(super::compile(&source).map_err(StoreError::Compile)?);
        if let Ok(mut c) = self.cache.lock() {
            if c.len() > 10_000 {
                c.clear();
            }
            c.insert(user.to_string(), (version, program.clone()));
        }
        Ok(Some(program))
    }

    /// A personal script by name, compiled, for `include :personal`; compiled once per version of its
    /// text (a script may include another many times per message).
    pub async fn personal(
        &self,
        user: &str,
        name: &str,
    ) -> Result<Option<Arc<Program>>, StoreError> {
        let user = &user.to_lowercase();
        let source = match self.get(user, name).await {
            Ok(source) => source,
            Err(StoreError::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        let key = (user.clone(), name.to_string());
        let digest = super::vacation::digest(&[&source]);
        if let Ok(c) = self.included.lock()
            && let Some((d, p)) = c.get(&key)
            && *d == digest
        {
            return Ok(Some(p.clone()));
        }
        let program = Arc::new(super::compile(&source).map_err(StoreError::Compile)?);
        if let Ok(mut c) = self.included.lock() {
            if c.len() > 10_000 {
                c.clear();
            }
            c.insert(key, (digest, program.clone()));
        }
        Ok(Some(program))
    }

    /// Records a vacation reply to `sender` unless one was sent within its period; true when the reply
    /// is due (and now recorded: a reply is sent at most once per period, even across a crash).
    pub async fn claim_vacation(
        &self,
        user: &str,
        handle: &str,
        sender: &str,
        seconds: u64,
        now: i64,
    ) -> Result<bool, StoreError> {
        let user = &user.to_lowercase();
        let expires = now.saturating_add(i64::try_from(seconds).unwrap_or(i64::MAX / 2));
        let r = sqlx::query(
            "INSERT INTO vacation_sent (user, handle, sender, expires) VALUES (?, ?, ?, ?) \
             ON CONFLICT (user, handle, sender) DO UPDATE SET expires = excluded.expires \
             WHERE vacation_sent.expires <= ?",
        )
        .bind(user)
        .bind(handle)
        .bind(sender.to_ascii_lowercase())
        .bind(expires)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(r.rows_affected() == 1)
    }

    /// Gives back a vacation claim whose reply could not be queued.
    pub async fn release_vacation(
        &self,
        user: &str,
        handle: &str,
        sender: &str,
    ) -> Result<(), StoreError> {
        let user = &user.to_lowercase();
        sqlx::query("DELETE FROM vacation_sent WHERE user = ? AND handle = ? AND sender = ?")
            .bind(user)
            .bind(handle)
            .bind(sender.to_ascii_lowercase())
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }

    pub async fn seen(&self, user: &str, key: &str, now: i64) -> Result<bool, StoreError> {
        let user = &user.to_lowercase();
        Ok(
            sqlx::query("SELECT 1 FROM duplicates WHERE user = ? AND key = ? AND expires > ?")
                .bind(user)
                .bind(key)
                .bind(now)
                .fetch_optional(&self.pool)
                .await
                .map_err(db)?
                .is_some(),
        )
    }

    /// Remembers duplicate keys after a delivery; old entries are dropped on the way.
    pub async fn remember(
        &self,
        user: &str,
        keys: &[(String, u64)],
        now: i64,
    ) -> Result<(), StoreError> {
        let user = &user.to_lowercase();
        let mut tx = self.pool.begin().await.map_err(db)?;
        for (k, secs) in keys {
            sqlx::query(
                "INSERT INTO duplicates (user, key, expires) VALUES (?, ?, ?) \
                 ON CONFLICT (user, key) DO UPDATE SET expires = excluded.expires",
            )
            .bind(user)
            .bind(k)
            .bind(now.saturating_add(i64::try_from(*secs).unwrap_or(0)))
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        }
        sqlx::query("DELETE FROM duplicates WHERE expires <= ?")
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        sqlx::query("DELETE FROM vacation_sent WHERE expires <= ?")
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)
    }
}

/// A version stamp that changes with every write (microseconds; two writes in one microsecond to one
/// user's script would share it, which only delays a recompile by one change).
fn version() -> i64 {
    i64::try_from(crate::clock::unix_micros()).unwrap_or(i64::MAX)
}
