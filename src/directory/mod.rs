//! Users of the local domains and their argon2id password hashes, in data_dir/tern.db (SQLite).
//!
//! Addresses are stored lower-cased, so lookups are case-insensitive as users expect. Hashing and
//! verification run on the blocking pool, never on the async workers.

pub mod aliases;
pub mod aliases_file;
mod recent;
pub mod schemes;

use crate::config::SenderPolicy;
use crate::smtp::{Domain, Mailbox};
use argon2::{Argon2, PasswordHasher};
use sqlx::{Row, SqlitePool};
use std::path::Path;
use thiserror::Error;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("src/directory/migrations");

#[derive(Debug, Error)]
pub enum DirectoryError {
    #[error("user database {path}: {source}")]
    Open { path: String, source: sqlx::Error },
    #[error("user database: {0}")]
    Query(#[from] sqlx::Error),
    #[error("{0:?} is not a valid address for a local user")]
    BadAddress(String),
    #[error("{address:?}: domain {domain:?} is not one of [domains] local")]
    NotLocal { address: String, domain: String },
    #[error("{0} already exists")]
    Exists(String),
    #[error("{0}")]
    BadAlias(String),
    #[error("password hashing failed: {0}")]
    Hash(String),
}

/// A user's own overrides of the [submission] settings; `None` means the global value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserSettings {
    pub sender_policy: Option<SenderPolicy>,
    pub max_messages_per_hour: Option<u32>,
    pub max_recipients: Option<usize>,
    pub max_message_size: Option<usize>,
}

/// A user's quota: (bytes, messages), `None` for no limit at all.
pub type Quota = Option<(Option<u64>, Option<u64>)>;

/// One row of `tern user list`.
#[derive(Debug, Clone)]
pub struct User {
    pub address: String,
    pub has_password: bool,
    pub created_at: i64,
    pub disabled: bool,
}

/// What a login attempt comes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Login {
    Valid,
    /// Unknown user, no password, or the wrong one.
    Invalid,
    /// The right password for a disabled account (only then is the account's state told).
    Disabled,
}

#[derive(Clone)]
pub struct Directory {
    pool: SqlitePool,
    /// Password checks running at once (argon2id takes ~19 MiB and a core's worth of time each).
    checks: std::sync::Arc<tokio::sync::Semaphore>,
    logins: std::sync::Arc<LoginCache>,
    /// Recipient lookups, while tern.db is unchanged.
    users: std::sync::Arc<recent::Recent<Option<(Mailbox, Quota, bool)>>>,
    /// A connection held open for the directory's life, never used: SQLite removes tern.db-shm when the
    /// last connection closes and builds it anew from a fixed header, which `users` must not mistake for
    /// an unchanged database; while this one is open, no other process's close can remove it.
    _index_holder: std::sync::Arc<std::sync::Mutex<sqlx::SqliteConnection>>,
}

/// Passwords verified lately: address → (the stored hash it was checked against, a keyed digest of the
/// password, until when). Never the password itself; the key is made at each start.
struct LoginCache {
    ttl: std::time::Duration,
    key: ring::hmac::Key,
    entries:
        std::sync::Mutex<std::collections::HashMap<String, (String, Vec<u8>, std::time::Instant)>>,
}

/// Entries past this are dropped (expired ones first, then all): memory is bounded whatever the logins.
const LOGIN_CACHE_ENTRIES: usize = 100_000;

impl LoginCache {
    fn new(ttl: std::time::Duration) -> LoginCache {
        let rng = ring::rand::SystemRandom::new();
        let key = ring::hmac::Key::generate(ring::hmac::HMAC_SHA256, &rng).unwrap_or_else(|_| {
            ring::hmac::Key::new(
                ring::hmac::HMAC_SHA256,
                &crate::clock::unix_micros().to_be_bytes(),
            )
        });
        LoginCache {
            ttl,
            key,
            entries: std::sync::Mutex::new(std::collections::HashMap::new()),
        }
    }

    fn digest(&self, address: &str, password: &str) -> Vec<u8> {
        let mut ctx = ring::hmac::Context::with_key(&self.key);
        ctx.update(address.as_bytes());
        ctx.update(&[0]);
        ctx.update(password.as_bytes());
        ctx.sign().as_ref().to_vec()
    }

    fn hit(&self, address: &str, hash: &str, password: &str) -> bool {
        if self.ttl.is_zero() {
            return false;
        }
        let digest = self.digest(address, password);
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.get(address).is_some_and(|(h, d, until)| {
            h == hash
                && d.len() == digest.len()
                && d.iter().zip(&digest).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
                && *until > std::time::Instant::now()
        })
    }

    fn remember(&self, address: &str, hash: &str, password: &str) {
        if self.ttl.is_zero() {
            return;
        }
        let digest = self.digest(address, password);
        let now = std::time::Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= LOGIN_CACHE_ENTRIES {
            entries.retain(|_, (_, _, until)| *until > now);
            if entries.len() >= LOGIN_CACHE_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(
            address.to_string(),
            (hash.to_string(), digest, now + self.ttl),
        );
    }
}

/// Password checks at once, unless configured (`[auth] parallel_checks`).
pub const DEFAULT_PARALLEL_CHECKS: usize = 4;

/// An argon2id hash of a random password, made once: checked for unknown users and users without a
/// password, so that a wrong password costs the same time whether or not the account exists.
fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| {
        let secret: [u8; 16] = rand::random();
        Argon2::default()
            .hash_password(&secret)
            .map(|h| h.to_string())
            .unwrap_or_default()
    })
}

/// The database file under data_dir.
pub fn database_path(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join("tern.db")
}

impl Directory {
    pub async fn open(data_dir: &Path) -> Result<Directory, DirectoryError> {
        let path = database_path(data_dir);
        let pool = crate::db::open(&path, &MIGRATOR, 4)
            .await
            .map_err(|source| DirectoryError::Open {
                path: path.display().to_string(),
                source,
            })?;
        let holder = pool
            .acquire()
            .await
            .map_err(|e| DirectoryError::Open {
                path: path.display().to_string(),
                source: e,
            })?
            .detach();
        Ok(Directory {
            users: std::sync::Arc::new(recent::Recent::new(&path)),
            _index_holder: std::sync::Arc::new(std::sync::Mutex::new(holder)),
            pool,
            checks: std::sync::Arc::new(tokio::sync::Semaphore::new(DEFAULT_PARALLEL_CHECKS)),
            logins: std::sync::Arc::new(LoginCache::new(std::time::Duration::ZERO)),
        })
    }

    /// Whether this password was verified for this user lately and the user's hash has not changed since:
    /// a login that needs no argon2id check, and so no slot among the attempts in progress. Never for a
    /// disabled account (its login goes the long way and is refused with its state).
    pub async fn verified_lately(&self, address: &str, password: &str) -> bool {
        if self.logins.ttl.is_zero() {
            return false;
        }
        let row: Option<(Option<String>, i64)> =
            sqlx::query_as("SELECT password_hash, disabled FROM users WHERE address = ?")
                .bind(address.to_lowercase())
                .fetch_optional(&self.pool)
                .await
                .ok()
                .flatten();
        match row {
            Some((Some(h), 0)) => self.logins.hit(&address.to_lowercase(), &h, password),
            _ => false,
        }
    }

    /// Remembers verified passwords for `ttl` (zero: never).
    pub fn with_login_cache(mut self, ttl: std::time::Duration) -> Directory {
        self.logins = std::sync::Arc::new(LoginCache::new(ttl));
        self
    }

    /// Bounds the password checks that run at once; others wait their turn.
    pub fn with_parallel_checks(mut self, n: usize) -> Directory {
        self.checks = std::sync::Arc::new(tokio::sync::Semaphore::new(n.max(1)));
        self
    }

    /// Parses and checks an address for a new user: a plain dot-atom local part that is safe as a folder name.
    pub fn parse_user_address(
        address: &str,
        local_domains: &[Domain],
    ) -> Result<Mailbox, DirectoryError> {
        let m = Mailbox::parse(&address.to_lowercase(), true)
            .map_err(|_| DirectoryError::BadAddress(address.into()))?;
        let local = m.local_part();
        if local.starts_with('"')
            || local.contains('/')
            || local.contains('\\')
            || local.starts_with('.')
        {
            return Err(DirectoryError::BadAddress(address.into()));
        }
        if !local_domains.contains(m.domain()) {
            return Err(DirectoryError::NotLocal {
                address: address.into(),
                domain: m.domain().to_string(),
            });
        }
        Ok(m)
    }

    pub async fn add_user(
        &self,
        address: &Mailbox,
        password: Option<String>,
    ) -> Result<(), DirectoryError> {
        let hash = match password {
            Some(pw) => Some(hash_password(pw).await?),
            None => None,
        };
        let key = address.to_string().to_lowercase();
        let result =
            sqlx::query("INSERT INTO users (address, password_hash, created_at) VALUES (?, ?, ?)")
                .bind(&key)
                .bind(hash)
                .bind(crate::clock::unix_now() as i64)
                .execute(&self.pool)
                .await;
        match result {
            Ok(_) => Ok(()),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                Err(DirectoryError::Exists(key))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Replaces a user's password hash (argon2id), or removes it (`None`: no login); returns whether the
    /// user exists. Logins remembered for the old password no longer match (they are keyed by the hash).
    pub async fn set_password(
        &self,
        address: &str,
        password: Option<String>,
    ) -> Result<bool, DirectoryError> {
        let hash = match password {
            Some(pw) => Some(hash_password(pw).await?),
            None => None,
        };
        let r = sqlx::query("UPDATE users SET password_hash = ? WHERE address = ?")
            .bind(hash)
            .bind(address.to_lowercase())
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    /// Disables or enables an account; returns whether the user exists.
    pub async fn set_disabled(
        &self,
        address: &str,
        disabled: bool,
    ) -> Result<bool, DirectoryError> {
        let r = sqlx::query("UPDATE users SET disabled = ? WHERE address = ?")
            .bind(i64::from(disabled))
            .bind(address.to_lowercase())
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    /// Removes a user; returns whether one existed. The mailbox on disk is left for the administrator.
    pub async fn delete_user(&self, address: &str) -> Result<bool, DirectoryError> {
        let r = sqlx::query("DELETE FROM users WHERE address = ?")
            .bind(address.to_lowercase())
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    pub async fn list_users(&self) -> Result<Vec<User>, DirectoryError> {
        let rows = sqlx::query(
            "SELECT address, password_hash IS NOT NULL, created_at, disabled FROM users ORDER BY address",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| User {
                address: r.get(0),
                has_password: r.get(1),
                created_at: r.get(2),
                disabled: r.get::<i64, _>(3) != 0,
            })
            .collect())
    }

    /// The canonical mailbox of a local user, if the address names one (case-insensitively).
    /// The canonical mailbox of a local user and its quota (bytes, messages), in one query.
    pub async fn lookup_with_quota(
        &self,
        address: &Mailbox,
    ) -> Result<Option<(Mailbox, Quota, bool)>, DirectoryError> {
        let key = address.to_string().to_lowercase();
        let (known, stamp) = self.users.get(&key);
        if let Some(found) = known {
            return Ok(found);
        }
        let row: Option<(String, Option<i64>, Option<i64>, i64)> = sqlx::query_as(
            "SELECT address, quota_bytes, quota_messages, disabled FROM users WHERE address = ?",
        )
        .bind(&key)
        .fetch_optional(&self.pool)
        .await?;
        let found = row.and_then(|(a, b, m, disabled)| {
            let q = (b.map(|v| v.max(0) as u64), m.map(|v| v.max(0) as u64));
            let quota = (q.0.is_some() || q.1.is_some()).then_some(q);
            Mailbox::parse(&a, true)
                .ok()
                .map(|m| (m, quota, disabled != 0))
        });
        self.users.put(key, found.clone(), stamp);
        Ok(found)
    }

    pub async fn lookup(&self, address: &Mailbox) -> Result<Option<Mailbox>, DirectoryError> {
        let key = address.to_string().to_lowercase();
        let found: Option<String> =
            sqlx::query_scalar("SELECT address FROM users WHERE address = ?")
                .bind(&key)
                .fetch_optional(&self.pool)
                .await?;
        Ok(found.and_then(|a| Mailbox::parse(&a, true).ok()))
    }

    /// A user's overrides, or `None` if there is no such user.
    pub async fn settings(&self, address: &str) -> Result<Option<UserSettings>, DirectoryError> {
        let row = sqlx::query(
            "SELECT sender_policy, max_messages_per_hour, max_recipients, max_message_size FROM users WHERE address = ?",
        )
        .bind(address.to_lowercase())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| UserSettings {
            sender_policy: r
                .get::<Option<String>, _>(0)
                .and_then(|p| match p.as_str() {
                    "own" => Some(SenderPolicy::Own),
                    "any" => Some(SenderPolicy::Any),
                    _ => None,
                }),
            max_messages_per_hour: r
                .get::<Option<i64>, _>(1)
                .map(|v| v.clamp(0, u32::MAX as i64) as u32),
            max_recipients: r.get::<Option<i64>, _>(2).map(|v| v.max(0) as usize),
            max_message_size: r.get::<Option<i64>, _>(3).map(|v| v.max(0) as usize),
        }))
    }

    /// Changes the overrides given (a `Some`); returns false if there is no such user.
    pub async fn update_settings(
        &self,
        address: &str,
        s: &UserSettings,
    ) -> Result<bool, DirectoryError> {
        let key = address.to_lowercase();
        let mut tx = self.pool.begin().await?;
        let exists: Option<String> =
            sqlx::query_scalar("SELECT address FROM users WHERE address = ?")
                .bind(&key)
                .fetch_optional(&mut *tx)
                .await?;
        if exists.is_none() {
            return Ok(false);
        }
        if let Some(p) = s.sender_policy {
            let p = match p {
                SenderPolicy::Own => "own",
                SenderPolicy::Any => "any",
            };
            sqlx::query("UPDATE users SET sender_policy = ? WHERE address = ?")
                .bind(p)
                .bind(&key)
                .execute(&mut *tx)
                .await?;
        }
        if let Some(n) = s.max_messages_per_hour {
            sqlx::query("UPDATE users SET max_messages_per_hour = ? WHERE address = ?")
                .bind(i64::from(n))
                .bind(&key)
                .execute(&mut *tx)
                .await?;
        }
        if let Some(n) = s.max_recipients {
            sqlx::query("UPDATE users SET max_recipients = ? WHERE address = ?")
                .bind(n as i64)
                .bind(&key)
                .execute(&mut *tx)
                .await?;
        }
        if let Some(n) = s.max_message_size {
            sqlx::query("UPDATE users SET max_message_size = ? WHERE address = ?")
                .bind(n as i64)
                .bind(&key)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// A user's quota (bytes, messages); `None` for no limit on either.
    pub async fn quota(
        &self,
        address: &str,
    ) -> Result<Option<(Option<u64>, Option<u64>)>, DirectoryError> {
        let row: Option<(Option<i64>, Option<i64>)> =
            sqlx::query_as("SELECT quota_bytes, quota_messages FROM users WHERE address = ?")
                .bind(address.to_lowercase())
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.and_then(|(b, m)| {
            let q = (b.map(|v| v.max(0) as u64), m.map(|v| v.max(0) as u64));
            (q.0.is_some() || q.1.is_some()).then_some(q)
        }))
    }

    /// Every user with a quota: address → (bytes, messages).
    pub async fn quotas(
        &self,
    ) -> Result<std::collections::HashMap<String, (Option<u64>, Option<u64>)>, DirectoryError> {
        let rows: Vec<(String, Option<i64>, Option<i64>)> = sqlx::query_as(
            "SELECT address, quota_bytes, quota_messages FROM users WHERE quota_bytes IS NOT NULL OR quota_messages IS NOT NULL",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(a, b, m)| (a, (b.map(|v| v.max(0) as u64), m.map(|v| v.max(0) as u64))))
            .collect())
    }

    /// Sets a user's quota; `0` removes that limit. Returns false if there is no such user.
    pub async fn set_quota(
        &self,
        address: &str,
        bytes: Option<u64>,
        messages: Option<u64>,
    ) -> Result<bool, DirectoryError> {
        let key = address.to_lowercase();
        let mut changed = 0;
        if let Some(b) = bytes {
            let v = (b > 0).then_some(b as i64);
            changed += sqlx::query("UPDATE users SET quota_bytes = ? WHERE address = ?")
                .bind(v)
                .bind(&key)
                .execute(&self.pool)
                .await?
                .rows_affected();
        }
        if let Some(m) = messages {
            let v = (m > 0).then_some(m as i64);
            changed += sqlx::query("UPDATE users SET quota_messages = ? WHERE address = ?")
                .bind(v)
                .bind(&key)
                .execute(&self.pool)
                .await?
                .rows_affected();
        }
        if bytes.is_none() && messages.is_none() {
            return self.lookup_key(&key).await;
        }
        Ok(changed > 0)
    }

    async fn lookup_key(&self, key: &str) -> Result<bool, DirectoryError> {
        let found: Option<String> =
            sqlx::query_scalar("SELECT address FROM users WHERE address = ?")
                .bind(key)
                .fetch_optional(&self.pool)
                .await?;
        Ok(found.is_some())
    }

    /// Checks a password against the stored hash; false for unknown users and users without a password,
    /// after the same work as for a real account (a dummy hash is checked), so timing tells nothing. At most
    /// `parallel_checks` run at once, on the blocking pool.
    pub async fn verify_password(
        &self,
        address: &str,
        password: String,
    ) -> Result<bool, DirectoryError> {
        Ok(self.login(address, password).await? == Login::Valid)
    }

    /// As [`Self::verify_password`], telling a disabled account apart when its password is right.
    pub async fn login(&self, address: &str, password: String) -> Result<Login, DirectoryError> {
        let row: Option<(Option<String>, i64)> =
            sqlx::query_as("SELECT password_hash, disabled FROM users WHERE address = ?")
                .bind(address.to_lowercase())
                .fetch_optional(&self.pool)
                .await?;
        let disabled = row.as_ref().is_some_and(|(_, d)| *d != 0);
        let (hash, real) = match row {
            Some((Some(h), _)) => (h, true),
            _ => (dummy_hash().to_string(), false),
        };
        let address = address.to_lowercase();
        let verdict = |ok: bool| match (ok && real, disabled) {
            (true, false) => Login::Valid,
            (true, true) => Login::Disabled,
            (false, _) => Login::Invalid,
        };
        if real && self.logins.hit(&address, &hash, &password) {
            return Ok(verdict(true));
        }
        let _permit = self
            .checks
            .acquire()
            .await
            .map_err(|e| DirectoryError::Hash(e.to_string()))?;
        let (ok, rehash, hash, password) = tokio::task::spawn_blocking(move || {
            let (ok, rehash) = schemes::verify(&hash, password.as_bytes());
            (ok, rehash, hash, password)
        })
        .await
        .map_err(|e| DirectoryError::Hash(e.to_string()))?;
        if ok && real && !disabled {
            // An imported (Dovecot) hash is replaced by argon2id now that the password is known; only if
            // nobody changed it meanwhile.
            let hash = if rehash {
                self.rehash(&address, &hash, &password)
                    .await
                    .unwrap_or(hash)
            } else {
                hash
            };
            self.logins.remember(&address, &hash, &password);
        }
        Ok(verdict(ok))
    }

    async fn rehash(&self, address: &str, old: &str, password: &str) -> Option<String> {
        let new = match hash_password(password.to_string()).await {
            Ok(h) => h,
            Err(e) => {
                tracing::error!(user = %crate::log::Escaped(address), error = %e, "cannot re-hash an imported password");
                return None;
            }
        };
        let r = sqlx::query(
            "UPDATE users SET password_hash = ? WHERE address = ? AND password_hash = ?",
        )
        .bind(&new)
        .bind(address)
        .bind(old)
        .execute(&self.pool)
        .await;
        match r {
            Ok(r) if r.rows_affected() == 1 => {
                tracing::info!(user = %crate::log::Escaped(address), "imported password hash replaced by argon2id");
                Some(new)
            }
            Ok(_) => None,
            Err(e) => {
                tracing::error!(user = %crate::log::Escaped(address), error = %e, "cannot store the re-hashed password");
                None
            }
        }
    }

    /// Stores a hash made elsewhere (Dovecot's `{SHA512-CRYPT}`, `{BLF-CRYPT}`..., checked by
    /// [`schemes::import`]) for a user, adding the user if missing; returns whether the user was added.
    pub async fn import_hash(&self, address: &Mailbox, hash: &str) -> Result<bool, DirectoryError> {
        let stored = schemes::import(hash).map_err(|e| DirectoryError::Hash(e.to_string()))?;
        let key = address.to_string().to_lowercase();
        let r = sqlx::query("UPDATE users SET password_hash = ? WHERE address = ?")
            .bind(&stored)
            .bind(&key)
            .execute(&self.pool)
            .await?;
        if r.rows_affected() > 0 {
            return Ok(false);
        }
        sqlx::query("INSERT INTO users (address, password_hash, created_at) VALUES (?, ?, ?)")
            .bind(&key)
            .bind(&stored)
            .bind(crate::clock::unix_now() as i64)
            .execute(&self.pool)
            .await?;
        Ok(true)
    }
}

/// argon2id with the crate's recommended parameters and a random salt, as a PHC string.
async fn hash_password(password: String) -> Result<String, DirectoryError> {
    tokio::task::spawn_blocking(move || {
        Argon2::default()
            .hash_password(password.as_bytes())
            .map(|h| h.to_string())
            .map_err(|e| DirectoryError::Hash(e.to_string()))
    })
    .await
    .map_err(|e| DirectoryError::Hash(e.to_string()))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn users_round_trip_with_argon2id_hashes() {
        let dir = tempfile::tempdir().unwrap();
        let d = Directory::open(dir.path()).await.unwrap();
        let domains = [Domain::parse("example.test", false).unwrap()];
        let alice = Directory::parse_user_address("Alice@Example.test", &domains).unwrap();
        d.add_user(&alice, Some("s3cret".into())).await.unwrap();
        assert!(matches!(
            d.add_user(&alice, None).await,
            Err(DirectoryError::Exists(_))
        ));
        let probe = Mailbox::parse("ALICE@example.test", false).unwrap();
        assert_eq!(
            d.lookup(&probe).await.unwrap().unwrap().to_string(),
            "alice@example.test"
        );
        assert!(
            d.verify_password("alice@example.test", "s3cret".into())
                .await
                .unwrap()
        );
        assert!(
            !d.verify_password("alice@example.test", "wrong".into())
                .await
                .unwrap()
        );
        let hash: String = sqlx::query_scalar("SELECT password_hash FROM users")
            .fetch_one(&d.pool)
            .await
            .unwrap();
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(d.delete_user("alice@example.test").await.unwrap());
        assert!(d.lookup(&probe).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_remembered_lookup_ends_with_any_commit_from_another_connection() {
        let dir = tempfile::tempdir().unwrap();
        // Made by a process that has gone (`tern user add` before the daemon starts): the daemon opens
        // an index built anew, which no commit has touched yet, and lookups are remembered all the same.
        let domains = [Domain::parse("example.test", false).unwrap()];
        let carol = Directory::parse_user_address("carol@example.test", &domains).unwrap();
        {
            let seed = Directory::open(dir.path()).await.unwrap();
            seed.add_user(&carol, None).await.unwrap();
            seed.pool.close().await;
        }
        let d = Directory::open(dir.path()).await.unwrap();
        assert!(d.lookup_with_quota(&carol).await.unwrap().is_some());
        assert!(d.users.get("carol@example.test").0.is_some());
        // Another pool on the same file: what `tern user` in another process is.
        let other = Directory::open(dir.path()).await.unwrap();
        let alice = Directory::parse_user_address("alice@example.test", &domains).unwrap();
        d.add_user(&alice, None).await.unwrap();
        let first = d.lookup_with_quota(&alice).await.unwrap().unwrap();
        assert!(!first.2);
        // Remembered: the second lookup is answered without a query.
        assert!(d.users.get("alice@example.test").0.is_some());
        other
            .set_disabled("alice@example.test", true)
            .await
            .unwrap();
        assert!(d.users.get("alice@example.test").0.is_none());
        assert!(d.lookup_with_quota(&alice).await.unwrap().unwrap().2);
        other
            .set_quota("alice@example.test", Some(1000), None)
            .await
            .unwrap();
        assert_eq!(
            d.lookup_with_quota(&alice).await.unwrap().unwrap().1,
            Some((Some(1000), None))
        );
        // An unknown address is remembered too, until a commit adds it.
        let bob = Directory::parse_user_address("bob@example.test", &domains).unwrap();
        assert!(d.lookup_with_quota(&bob).await.unwrap().is_none());
        other.add_user(&bob, None).await.unwrap();
        assert!(d.lookup_with_quota(&bob).await.unwrap().is_some());
    }

    #[tokio::test]
    async fn the_login_cache_follows_the_stored_hash() {
        let dir = tempfile::tempdir().unwrap();
        let d = Directory::open(dir.path())
            .await
            .unwrap()
            .with_login_cache(std::time::Duration::from_secs(60));
        let domains = [Domain::parse("example.test", false).unwrap()];
        let alice = Directory::parse_user_address("alice@example.test", &domains).unwrap();
        d.add_user(&alice, Some("first".into())).await.unwrap();
        assert!(!d.verified_lately("alice@example.test", "first").await);
        assert!(
            d.verify_password("alice@example.test", "first".into())
                .await
                .unwrap()
        );
        assert!(d.verified_lately("ALICE@example.test", "first").await);
        assert!(!d.verified_lately("alice@example.test", "other").await);
        // Wrong passwords are never remembered.
        assert!(
            !d.verify_password("alice@example.test", "other".into())
                .await
                .unwrap()
        );
        assert!(!d.verified_lately("alice@example.test", "other").await);
        // A new password (a new hash) ends the old one's entry at once.
        d.delete_user("alice@example.test").await.unwrap();
        d.add_user(&alice, Some("second".into())).await.unwrap();
        assert!(!d.verified_lately("alice@example.test", "first").await);
        assert!(
            !d.verify_password("alice@example.test", "first".into())
                .await
                .unwrap()
        );
        let entries = d.logins.entries.lock().unwrap();
        assert!(entries.values().all(|(_, digest, _)| digest.len() == 32));
        assert!(!format!("{:?}", entries.keys()).contains("first"));
    }

    #[test]
    fn user_addresses_must_be_local_and_safe_as_folder_names() {
        let domains = [Domain::parse("example.test", false).unwrap()];
        assert!(matches!(
            Directory::parse_user_address("a@other.test", &domains),
            Err(DirectoryError::NotLocal { .. })
        ));
        assert!(Directory::parse_user_address("a/b@example.test", &domains).is_err());
        assert!(Directory::parse_user_address("\"a b\"@example.test", &domains).is_err());
    }
}
