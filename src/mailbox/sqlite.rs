//! The SQLite mailbox store (`[store] kind = "sqlite"`): data_dir/mailboxes.db (WAL, synchronous=FULL), one
//! folder table with IMAP's UIDVALIDITY and UIDNEXT, and messages with flags and internal dates. Bodies over
//! `[store] blob_threshold` go to content-addressed files in data_dir/blobs/, written and fsynced before the
//! row that names them is committed. A delivery counts once its transaction has committed.
//!
//! The store's methods are blocking like Maildir's: they run on the blocking pool and wait on sqlx there.

use super::{Delivery, FolderInfo, MailboxError, MailboxStore, StoredMessage, Usage, other_error};
use crate::smtp::Mailbox;
use sqlx::pool::PoolConnection;
use sqlx::{Connection, Row, SqlitePool};
use std::io::Write;
use std::path::{Path, PathBuf};

mod index;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("src/mailbox/migrations");

/// Makes temporary blob names unique between threads of one process.
static BLOB_COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// One message to append.
/// A folder's counters while a group of deliveries takes UIDs in it.
struct FolderState {
    id: i64,
    uidnext: i64,
    validity: i64,
    modseq: i64,
    changed: bool,
}

/// Rows per multi-row statement: 13 columns each stays far under SQLite's bound-variable limit.
const ROWS_PER_STATEMENT: usize = 500;

struct NewMessage {
    user: String,
    folder: String,
    /// Stable per delivery: a retry after a crash finds the earlier copy.
    key: String,
    date: u64,
    flags: String,
    /// Keywords, space-separated.
    keywords: String,
    recent: bool,
    body: Vec<u8>,
    /// A large copy already streamed to its blob: (name, size, vsize, isize); `body` is then empty.
    streamed: Option<(String, usize, i64, i64)>,
}

/// Counts what the mailbox index records of a message while it streams to a blob, and hashes it.
struct Counting<'a> {
    file: &'a mut std::fs::File,
    digest: ring::digest::Context,
    len: u64,
    lf: u64,
    crlf: u64,
    last: u8,
}

impl std::io::Write for Counting<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        let done = &buf[..n];
        self.digest.update(done);
        for &b in done {
            if b == b'\n' {
                self.lf += 1;
                if self.last == b'\r' {
                    self.crlf += 1;
                }
            }
            self.last = b;
        }
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

pub struct SqliteStore {
    pool: SqlitePool,
    blobs: PathBuf,
    threshold: usize,
    runtime: tokio::runtime::Handle,
    /// Folder snapshots by folder id, with the HIGHESTMODSEQ and UIDNEXT they were read at.
    snapshots: std::sync::Mutex<
        std::collections::HashMap<i64, (i64, i64, std::sync::Arc<super::index::Snapshot>)>,
    >,
    notifier: super::index::Notifier,
    /// Counts \Recent claims: a snapshot read while one was taken may still show the claimed messages as
    /// \Recent, and is not shared (two sessions must never both see a message as \Recent).
    claims: std::sync::atomic::AtomicU64,
    /// One writing transaction at a time: each reads the folder's counters (UIDNEXT, HIGHESTMODSEQ) and
    /// writes them back, so two at once would hand out the same MODSEQ, and SQLite would refuse the second
    /// upgrade from reader to writer (SQLITE_BUSY_SNAPSHOT) rather than wait. It holds the connection
    /// every write goes through ([`SqliteStore::write_lock`]).
    writer: tokio::sync::Mutex<Option<PoolConnection<sqlx::Sqlite>>>,
    /// New messages from every delivery under way, committed together.
    appends: super::group::Group<Vec<NewMessage>, Result<(), String>>,
}

fn db_err(e: sqlx::Error) -> MailboxError {
    other_error("mailboxes.db", "query", e)
}

/// Folder names as stored: INBOX in capitals, whatever the reader wrote.
fn folder_name(folder: &str) -> String {
    if folder.eq_ignore_ascii_case("INBOX") {
        "INBOX".into()
    } else {
        folder.to_string()
    }
}

fn user_key(m: &Mailbox) -> String {
    m.to_string().to_lowercase()
}

impl SqliteStore {
    pub async fn open(data_dir: &Path, threshold: usize) -> Result<SqliteStore, sqlx::Error> {
        let pool = crate::db::open(&data_dir.join("mailboxes.db"), &MIGRATOR, 4).await?;
        Ok(SqliteStore {
            pool,
            blobs: data_dir.join("blobs"),
            threshold,
            runtime: tokio::runtime::Handle::current(),
            snapshots: std::sync::Mutex::new(std::collections::HashMap::new()),
            notifier: super::index::Notifier::default(),
            claims: std::sync::atomic::AtomicU64::new(0),
            writer: tokio::sync::Mutex::new(None),
            appends: Default::default(),
        })
    }

    /// The writer lock, holding the writing connection. It is kept from one write to the next: the pool
    /// hands its idle connections out in turn, and a connection that did not make the last commit starts
    /// with its page cache dropped (re-reading every page the next insert touches).
    async fn write_lock(
        &self,
    ) -> Result<tokio::sync::MappedMutexGuard<'_, PoolConnection<sqlx::Sqlite>>, MailboxError> {
        let mut held = self.writer.lock().await;
        if held.is_none() {
            *held = Some(self.pool.acquire().await.map_err(db_err)?);
        }
        tokio::sync::MutexGuard::try_map(held, Option::as_mut)
            .map_err(|_| other_error("mailboxes.db", "connect", "no writing connection"))
    }

    fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.runtime.block_on(f)
    }

    /// Writes a body as a content-addressed file (once), fsynced with the folders that name it; returns its
    /// name. A blob already there is fsynced again before it is relied on: it may be the rename of a write
    /// whose folder fsync has not happened yet (another delivery's, still in flight, or one that failed).
    fn write_blob(&self, body: &[u8]) -> Result<String, MailboxError> {
        let digest = ring::digest::digest(&ring::digest::SHA256, body);
        let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        let dir = self.blobs.join(&hex[..2]);
        let path = dir.join(&hex);
        let sync = |p: &Path| {
            std::fs::File::open(p)
                .and_then(|f| f.sync_all())
                .map_err(|e| super::io_error(p, "fsync", e))
        };
        if std::fs::metadata(&path).is_ok_and(|m| m.len() == body.len() as u64) {
            sync(&path)?;
            sync(&dir)?;
            return Ok(hex);
        }
        let dir_existed = dir.is_dir();
        let blobs_existed = self.blobs.is_dir();
        std::fs::create_dir_all(&dir).map_err(|e| super::io_error(&dir, "mkdir", e))?;
        // A folder just made is durable once its parent is fsynced.
        if !blobs_existed && let Some(parent) = self.blobs.parent() {
            sync(parent)?;
        }
        if !dir_existed {
            sync(&self.blobs)?;
        }
        let n = BLOB_COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = dir.join(format!(".{hex}.tmp{}.{n}", std::process::id()));
        let mut f = std::fs::File::create(&tmp).map_err(|e| super::io_error(&tmp, "create", e))?;
        f.write_all(body)
            .and_then(|_| f.sync_data())
            .map_err(|e| super::io_error(&tmp, "write", e))?;
        std::fs::rename(&tmp, &path).map_err(|e| super::io_error(&path, "rename", e))?;
        sync(&dir)?;
        Ok(hex)
    }

    /// As [`Self::write_blob`] for a copy written by `content` in chunks (a spooled message): hashed as it
    /// streams to a temporary file, then renamed to its name. Returns (name, size, vsize, isize).
    fn write_blob_stream(
        &self,
        content: &dyn Fn(&mut dyn Write) -> std::io::Result<()>,
    ) -> Result<(String, usize, i64, i64), MailboxError> {
        let sync = |p: &Path| {
            std::fs::File::open(p)
                .and_then(|f| f.sync_all())
                .map_err(|e| super::io_error(p, "fsync", e))
        };
        if !self.blobs.is_dir() {
            std::fs::create_dir_all(&self.blobs)
                .map_err(|e| super::io_error(&self.blobs, "mkdir", e))?;
            if let Some(parent) = self.blobs.parent() {
                sync(parent)?;
            }
        }
        let n = BLOB_COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = self
            .blobs
            .join(format!(".stream.tmp{}.{n}", std::process::id()));
        let mut f = std::fs::File::create(&tmp).map_err(|e| super::io_error(&tmp, "create", e))?;
        let mut w = Counting {
            file: &mut f,
            digest: ring::digest::Context::new(&ring::digest::SHA256),
            len: 0,
            lf: 0,
            crlf: 0,
            last: 0,
        };
        let written = content(&mut w);
        let (len, lf, crlf, last) = (w.len, w.lf, w.crlf, w.last);
        let digest = w.digest.finish();
        let done = written.and_then(|_| f.sync_data());
        if let Err(e) = done {
            let _ = std::fs::remove_file(&tmp);
            return Err(super::io_error(&tmp, "write", e));
        }
        let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        let dir = self.blobs.join(&hex[..2]);
        let path = dir.join(&hex);
        // The same content already stored (another recipient's copy): kept, the new one dropped. The
        // temporary file never outlives an error either.
        let place = || -> Result<(), MailboxError> {
            if !dir.is_dir() {
                std::fs::create_dir_all(&dir).map_err(|e| super::io_error(&dir, "mkdir", e))?;
                sync(&self.blobs)?;
            }
            if std::fs::metadata(&path).is_ok_and(|m| m.len() == len) {
                let _ = std::fs::remove_file(&tmp);
                sync(&path)?;
            } else {
                std::fs::rename(&tmp, &path).map_err(|e| super::io_error(&path, "rename", e))?;
            }
            sync(&dir)
        };
        if let Err(e) = place() {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        let unterminated = u64::from(len > 0 && last != b'\n');
        let vsize = (len + lf - crlf + 2 * unterminated) as i64;
        let isize = (len + lf - crlf) as i64;
        Ok((hex, len as usize, vsize, isize))
    }

    fn read_body(
        &self,
        body: Option<Vec<u8>>,
        blob: Option<String>,
    ) -> Result<Vec<u8>, MailboxError> {
        match (body, blob) {
            (Some(b), _) => Ok(b),
            (None, Some(hex)) if hex.len() > 2 => {
                let path = self.blobs.join(&hex[..2]).join(&hex);
                std::fs::read(&path).map_err(|e| super::io_error(&path, "read", e))
            }
            _ => Ok(Vec::new()),
        }
    }

    /// Appends messages in one transaction; returns each one's (UIDVALIDITY, UID), or None for a message an
    /// earlier attempt already delivered.
    async fn append(
        &self,
        items: Vec<NewMessage>,
    ) -> Result<Vec<Option<(u32, u32)>>, MailboxError> {
        // Large bodies first, outside the transaction: a crash leaves at most an unreferenced blob.
        let mut prepared = Vec::with_capacity(items.len());
        for mut m in items {
            if let Some((hex, size, vsize, isize)) = m.streamed.take() {
                prepared.push((m, size, None, Some(hex), vsize, isize));
                continue;
            }
            let size = m.body.len();
            let vsize = crate::pop3::wire_size(&m.body) as i64;
            let isize = crate::mailbox::crlf_len(&m.body) as i64;
            let (inline, blob) = if size > self.threshold {
                (None, Some(self.write_blob(&m.body)?))
            } else {
                (Some(m.body.clone()), None)
            };
            prepared.push((m, size, inline, blob, vsize, isize));
        }
        let mut conn = self.write_lock().await?;
        let mut tx = conn.begin().await.map_err(db_err)?;
        // Each folder the group goes to, once: made if new (a write first, so the transaction holds the
        // write lock before it reads), then its counters, kept here as the group's messages take UIDs.
        let mut folders: std::collections::HashMap<(String, String), FolderState> =
            std::collections::HashMap::new();
        for (m, ..) in &prepared {
            let k = (m.user.clone(), m.folder.clone());
            if folders.contains_key(&k) {
                continue;
            }
            sqlx::query("INSERT OR IGNORE INTO folders (user, name, uidvalidity, uidnext) VALUES (?, ?, ?, 1)")
                .bind(&k.0)
                .bind(&k.1)
                .bind(super::index::new_uidvalidity() as i64)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
            let row = sqlx::query("SELECT id, uidnext, uidvalidity, highestmodseq FROM folders WHERE user = ? AND name = ?")
                .bind(&k.0)
                .bind(&k.1)
                .fetch_one(&mut *tx)
                .await
                .map_err(db_err)?;
            folders.insert(
                k,
                FolderState {
                    id: row.get(0),
                    uidnext: row.get(1),
                    validity: row.get(2),
                    modseq: row.get(3),
                    changed: false,
                },
            );
        }
        // Copies an earlier attempt already stored (a retry after a crash) keep their UIDs.
        let mut stored: std::collections::HashSet<String> = std::collections::HashSet::new();
        let keys: Vec<&String> = prepared.iter().map(|(m, ..)| &m.key).collect();
        for chunk in keys.chunks(ROWS_PER_STATEMENT) {
            let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
                "SELECT unique_key FROM messages WHERE unique_key IN (",
            );
            let mut list = q.separated(", ");
            for k in chunk {
                list.push_bind(k.as_str());
            }
            q.push(")");
            for row in q.build().fetch_all(&mut *tx).await.map_err(db_err)? {
                stored.insert(row.get(0));
            }
        }
        let mut placed = Vec::with_capacity(prepared.len());
        let mut rows = Vec::with_capacity(prepared.len());
        for (m, size, inline, blob, vsize, isize) in prepared {
            if !stored.insert(m.key.clone()) {
                placed.push(None);
                continue;
            }
            let Some(f) = folders.get_mut(&(m.user.clone(), m.folder.clone())) else {
                return Err(other_error(
                    "mailboxes.db",
                    "append",
                    "a folder went missing",
                ));
            };
            let uid = f.uidnext;
            f.uidnext += 1;
            f.modseq += 1;
            f.changed = true;
            placed.push(Some((f.validity as u32, uid as u32)));
            rows.push((f.id, uid, f.modseq, m, size, inline, blob, vsize, isize));
        }
        for chunk in rows.chunks(ROWS_PER_STATEMENT) {
            let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
                "INSERT INTO messages (folder_id, uid, unique_key, internal_date, size, flags, recent, body, blob, vsize, keywords, modseq, isize) ",
            );
            q.push_values(
                chunk,
                |mut row, (folder_id, uid, modseq, m, size, inline, blob, vsize, isize)| {
                    row.push_bind(*folder_id)
                        .push_bind(*uid)
                        .push_bind(m.key.as_str())
                        .push_bind(m.date as i64)
                        .push_bind(*size as i64)
                        .push_bind(m.flags.as_str())
                        .push_bind(m.recent)
                        .push_bind(inline.as_deref())
                        .push_bind(blob.as_deref())
                        .push_bind(*vsize)
                        .push_bind(m.keywords.as_str())
                        .push_bind(*modseq)
                        .push_bind(*isize);
                },
            );
            q.build().execute(&mut *tx).await.map_err(db_err)?;
        }
        for f in folders.values().filter(|f| f.changed) {
            sqlx::query("UPDATE folders SET uidnext = ?, highestmodseq = ? WHERE id = ?")
                .bind(f.uidnext)
                .bind(f.modseq)
                .bind(f.id)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
        }
        tx.commit().await.map_err(db_err)?;
        Ok(placed)
    }
}

/// The uid a reader sees: the folder's UIDVALIDITY and the message's UID, so that a folder made anew never
/// repeats one.
fn reader_uid(uidvalidity: i64, uid: i64) -> String {
    format!("{uidvalidity}.{uid}")
}

/// UIDVALIDITY and UID back from [`reader_uid`]'s form.
fn parse_reader_uid(uid: &str) -> Option<(i64, i64)> {
    let (v, n) = uid.split_once('.')?;
    Some((v.parse().ok()?, n.parse().ok()?))
}

impl Drop for SqliteStore {
    /// A pooled connection dropped goes back to its pool through a task on the runtime, and the store may
    /// go where there is none (a blocking thread, the end of a command): the writing connection is
    /// detached from the pool and closed instead.
    fn drop(&mut self) {
        if let Some(conn) = self.writer.get_mut().take() {
            drop(conn.detach());
        }
    }
}

impl MailboxStore for SqliteStore {
    fn entries(&self, mailbox: &Mailbox, folder: &str) -> Result<Vec<super::Entry>, MailboxError> {
        let rows = self.block_on(async {
            sqlx::query(
                "SELECT f.uidvalidity, m.uid, m.vsize, m.body, m.blob FROM messages m JOIN folders f ON f.id = m.folder_id \
                 WHERE f.user = ? AND f.name = ? ORDER BY m.uid",
            )
            .bind(user_key(mailbox))
            .bind(folder_name(folder))
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)
        })?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let size = match r.get::<Option<i64>, _>(2) {
                Some(v) => v.max(0) as u64,
                None => crate::pop3::wire_size(&self.read_body(r.get(3), r.get(4))?),
            };
            out.push(super::Entry {
                uid: reader_uid(r.get(0), r.get(1)),
                size,
            });
        }
        Ok(out)
    }

    fn read(
        &self,
        mailbox: &Mailbox,
        folder: &str,
        uid: &str,
    ) -> Result<Option<Vec<u8>>, MailboxError> {
        let Some((validity, n)) = parse_reader_uid(uid) else {
            return Ok(None);
        };
        let row = self.block_on(async {
            sqlx::query(
                "SELECT m.body, m.blob FROM messages m JOIN folders f ON f.id = m.folder_id \
                 WHERE f.user = ? AND f.name = ? AND f.uidvalidity = ? AND m.uid = ?",
            )
            .bind(user_key(mailbox))
            .bind(folder_name(folder))
            .bind(validity)
            .bind(n)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)
        })?;
        match row {
            Some(r) => Ok(Some(self.read_body(r.get(0), r.get(1))?)),
            None => Ok(None),
        }
    }

    fn remove(&self, mailbox: &Mailbox, folder: &str, uids: &[String]) -> Result<(), MailboxError> {
        let user = user_key(mailbox);
        let folder = folder_name(folder);
        self.block_on(async {
            let mut conn = self.write_lock().await?;
            let mut tx = conn.begin().await.map_err(db_err)?;
            for uid in uids {
                let Some((validity, n)) = parse_reader_uid(uid) else {
                    continue;
                };
                let gone = sqlx::query(
                    "DELETE FROM messages WHERE uid = ? AND folder_id = \
                     (SELECT id FROM folders WHERE user = ? AND name = ? AND uidvalidity = ?)",
                )
                .bind(n)
                .bind(&user)
                .bind(&folder)
                .bind(validity)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
                if gone.rows_affected() == 0 {
                    continue;
                }
                // An expunge like IMAP's: IMAP sessions and QRESYNC clients learn of it.
                sqlx::query(
                    "UPDATE folders SET highestmodseq = highestmodseq + 1 WHERE user = ? AND name = ? AND uidvalidity = ?",
                )
                .bind(&user)
                .bind(&folder)
                .bind(validity)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
                sqlx::query(
                    "INSERT INTO expunged (folder_id, uid, modseq) SELECT id, ?, highestmodseq FROM folders \
                     WHERE user = ? AND name = ? AND uidvalidity = ?",
                )
                .bind(n)
                .bind(&user)
                .bind(&folder)
                .bind(validity)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
            }
            tx.commit().await.map_err(db_err)
        })?;
        self.notifier.notify(mailbox);
        Ok(())
    }

    fn deliver(&self, items: &[Delivery]) -> Vec<Result<(), MailboxError>> {
        let rows = items
            .iter()
            .map(|d| {
                // A spooled copy streams to its blob (never whole in memory); the others are small
                // and assembled in memory.
                let mut streamed = None;
                let mut body = Vec::new();
                if d.tail.is_some() {
                    streamed = Some(self.write_blob_stream(&|w| d.write_to(w)));
                } else {
                    // Only memory: no I/O error is possible.
                    let _ = d.write_to(&mut body);
                }
                let folder = d.folder.clone().unwrap_or_else(|| "INBOX".into());
                (d, folder, body, streamed)
            })
            .collect::<Vec<_>>();
        if let Some(e) = rows
            .iter()
            .find_map(|r| r.3.as_ref().and_then(|s| s.as_ref().err()))
        {
            return items
                .iter()
                .map(|_| Err(other_error(&e.path, e.op, &e.source)))
                .collect();
        }
        let rows = rows
            .into_iter()
            .map(|(d, folder, body, streamed)| NewMessage {
                streamed: streamed.and_then(Result::ok),
                user: user_key(&d.mailbox),
                folder,
                key: d.unique.clone(),
                date: crate::clock::unix_now(),
                flags: index::flag_letters(&d.flags),
                keywords: d.flags.keywords.join(" "),
                recent: true,
                body,
            })
            .collect();
        // Deliveries from other sessions arriving meanwhile share the transaction.
        let committed = self.appends.submit(rows, &|groups: Vec<Vec<NewMessage>>| {
            let n = groups.len();
            match self.block_on(self.append(groups.into_iter().flatten().collect())) {
                Ok(_) => vec![Ok(()); n],
                Err(e) => vec![Err(e.to_string()); n],
            }
        });
        match committed {
            Some(Ok(())) => {
                for d in items {
                    self.notifier.notify(&d.mailbox);
                }
                items.iter().map(|_| Ok(())).collect()
            }
            Some(Err(e)) => items
                .iter()
                .map(|_| Err(other_error("mailboxes.db", "append", &e)))
                .collect(),
            None => items
                .iter()
                .map(|_| {
                    Err(other_error(
                        "mailboxes.db",
                        "append",
                        "the commit failed inside tern",
                    ))
                })
                .collect(),
        }
    }

    fn usage(&self, mailbox: &Mailbox) -> Result<Usage, MailboxError> {
        self.block_on(async {
            let row = sqlx::query(
                "SELECT COALESCE(SUM(m.size), 0), COUNT(m.id) FROM messages m JOIN folders f ON f.id = m.folder_id WHERE f.user = ?",
            )
            .bind(user_key(mailbox))
            .fetch_one(&self.pool)
            .await
            .map_err(db_err)?;
            Ok(Usage { bytes: row.get::<i64, _>(0).max(0) as u64, messages: row.get::<i64, _>(1).max(0) as u64 })
        })
    }

    fn folders(&self, mailbox: &Mailbox) -> Result<Vec<FolderInfo>, MailboxError> {
        self.block_on(async {
            let rows = sqlx::query(
                "SELECT f.name, COUNT(m.id), COALESCE(SUM(m.size), 0) FROM folders f LEFT JOIN messages m ON m.folder_id = f.id \
                 WHERE f.user = ? GROUP BY f.id ORDER BY f.name <> 'INBOX', f.name",
            )
            .bind(user_key(mailbox))
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
            Ok(rows
                .iter()
                .map(|r| FolderInfo { name: r.get(0), messages: r.get::<i64, _>(1) as u64, bytes: r.get::<i64, _>(2) as u64 })
                .collect())
        })
    }

    fn for_each(
        &self,
        mailbox: &Mailbox,
        f: &mut dyn FnMut(StoredMessage) -> Result<(), MailboxError>,
    ) -> Result<(), MailboxError> {
        let rows = self.block_on(async {
            sqlx::query(
                "SELECT f.name, m.flags, m.recent, m.internal_date, m.body, m.blob, m.keywords FROM messages m JOIN folders f ON f.id = m.folder_id \
                 WHERE f.user = ? ORDER BY f.name <> 'INBOX', f.name, m.uid",
            )
            .bind(user_key(mailbox))
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)
        })?;
        for r in rows {
            let body = self.read_body(r.get(4), r.get(5))?;
            f(StoredMessage {
                folder: r.get(0),
                flags: r.get(1),
                keywords: r
                    .get::<String, _>(6)
                    .split(' ')
                    .filter(|k| !k.is_empty())
                    .map(str::to_string)
                    .collect(),
                recent: r.get(2),
                internal_date: r.get::<i64, _>(3).max(0) as u64,
                body,
            })?;
        }
        Ok(())
    }

    fn index(&self) -> Option<&dyn super::index::MailIndex> {
        Some(self)
    }

    fn import(&self, mailbox: &Mailbox, messages: &[StoredMessage]) -> Result<(), MailboxError> {
        let user = user_key(mailbox);
        let rows = messages
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let digest = ring::digest::digest(&ring::digest::SHA256, &m.body);
                let key: String = digest
                    .as_ref()
                    .iter()
                    .take(12)
                    .map(|b| format!("{b:02x}"))
                    .collect();
                let key = format!("import.{}.{i}.{key}", crate::clock::unix_micros());
                NewMessage {
                    user: user.clone(),
                    folder: m.folder.clone(),
                    key,
                    date: m.internal_date,
                    flags: m.flags.clone(),
                    keywords: m.keywords.join(" "),
                    recent: m.recent,
                    body: m.body.clone(),
                    streamed: None,
                }
            })
            .collect();
        self.block_on(self.append(rows)).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn item(unique: &str, folder: Option<&str>) -> Delivery {
        Delivery {
            mailbox: Mailbox::parse("alice@example.test", false).unwrap(),
            folder: folder.map(str::to_string),
            unique: unique.into(),
            prefix: b"Return-Path: <a@b.test>\n".to_vec(),
            body: Arc::new(format!("Subject: {unique}\n\nhello\n").into_bytes()),
            tail: None,
            check_existing: true,
            flags: Default::default(),
        }
    }

    #[test]
    fn a_group_takes_consecutive_uids_per_folder_and_a_retried_copy_is_stored_once() {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Runtime::new().unwrap();
        let store = rt.block_on(SqliteStore::open(dir.path(), 1 << 20)).unwrap();
        assert!(
            store
                .deliver(&[item("a", None), item("b", None)])
                .iter()
                .all(Result::is_ok)
        );
        // "b" again (a retry after a crash), twice "c" in one group, and a second folder. A new folder's
        // highestmodseq starts at 1: each message takes the next.
        let r = store.deliver(&[
            item("b", None),
            item("c", None),
            item("d", Some("Junk")),
            item("c", None),
            item("e", None),
        ]);
        assert!(r.iter().all(Result::is_ok), "{r:?}");
        let rows: Vec<(String, String, i64, i64)> = rt
            .block_on(
                sqlx::query_as(
                    "SELECT m.unique_key, f.name, m.uid, m.modseq FROM messages m JOIN folders f ON f.id = m.folder_id ORDER BY m.id",
                )
                .fetch_all(&store.pool),
            )
            .unwrap();
        let rows: Vec<(&str, &str, i64, i64)> = rows
            .iter()
            .map(|(k, f, u, m)| (k.as_str(), f.as_str(), *u, *m))
            .collect();
        assert_eq!(
            rows,
            [
                ("a", "INBOX", 1, 2),
                ("b", "INBOX", 2, 3),
                ("c", "INBOX", 3, 4),
                ("d", "Junk", 1, 2),
                ("e", "INBOX", 4, 5)
            ]
        );
        let folders: Vec<(String, i64, i64)> = rt
            .block_on(
                sqlx::query_as("SELECT name, uidnext, highestmodseq FROM folders ORDER BY name")
                    .fetch_all(&store.pool),
            )
            .unwrap();
        assert_eq!(
            folders,
            [("INBOX".to_string(), 5, 5), ("Junk".to_string(), 2, 2)]
        );
    }
}
