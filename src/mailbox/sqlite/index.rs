//! The mailbox index over the SQLite store: folders carry UIDVALIDITY, UIDNEXT and HIGHESTMODSEQ, messages
//! their UID, system flags (Maildir letters), keywords and MODSEQ; expunges are kept in `expunged` for
//! QRESYNC. Every change is one transaction, committed (synchronous = FULL) before the call returns.

use super::{NewMessage, SqliteStore, db_err, folder_name, user_key};
use crate::mailbox::index::{
    self as idx, FlagOp, Flags, FolderEntry, IndexError, MailIndex, MessageMeta, Snapshot,
    StoreResult, Stored, flag,
};
use crate::smtp::Mailbox;
use sqlx::{Connection, Row};
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// Expunges remembered per folder for QRESYNC.
const EXPUNGES_KEPT: i64 = 10_000;

const LETTERS: [(u8, char); 5] = [
    (flag::DRAFT, 'D'),
    (flag::FLAGGED, 'F'),
    (flag::ANSWERED, 'R'),
    (flag::SEEN, 'S'),
    (flag::DELETED, 'T'),
];

fn flags_of(letters: &str, keywords: &str) -> Flags {
    let mut f = Flags::default();
    for c in letters.chars() {
        if let Some((bit, _)) = LETTERS.iter().find(|(_, l)| *l == c) {
            f.system |= bit;
        }
    }
    f.keywords = keywords
        .split(' ')
        .filter(|k| !k.is_empty())
        .map(str::to_string)
        .collect();
    f
}

/// Maildir letters of the system flags (what `tern mailbox export` writes), and the keywords.
fn columns_of(f: &Flags) -> (String, String) {
    (flag_letters(f), f.keywords.join(" "))
}

/// The Maildir letters of the system flags, as the flags column keeps them.
pub fn flag_letters(f: &Flags) -> String {
    LETTERS
        .iter()
        .filter(|(bit, _)| f.system & bit != 0)
        .map(|(_, c)| *c)
        .collect()
}

impl SqliteStore {
    /// The folder's id, UIDVALIDITY, UIDNEXT and HIGHESTMODSEQ.
    async fn folder(
        &self,
        user: &str,
        name: &str,
    ) -> Result<Option<(i64, i64, i64, i64)>, IndexError> {
        let row = sqlx::query(
            "SELECT id, uidvalidity, uidnext, highestmodseq FROM folders WHERE user = ? AND name = ?",
        )
        .bind(user)
        .bind(name)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(row.map(|r| (r.get(0), r.get(1), r.get(2), r.get(3))))
    }

    async fn folder_or_err(
        &self,
        user: &str,
        name: &str,
    ) -> Result<(i64, i64, i64, i64), IndexError> {
        self.folder(user, name)
            .await?
            .ok_or_else(|| IndexError::NoFolder(name.to_string()))
    }

    /// INBOX and the default folders, subscribed, on the first look at a mailbox.
    async fn ensure_defaults(&self, user: &str) -> Result<(), IndexError> {
        if self.folder(user, "INBOX").await?.is_some()
            && sqlx::query("SELECT 1 FROM subscriptions WHERE user = ? LIMIT 1")
                .bind(user)
                .fetch_optional(&self.pool)
                .await
                .map_err(db_err)?
                .is_some()
        {
            return Ok(());
        }
        let mut conn = self.write_lock().await?;
        let mut tx = conn.begin().await.map_err(db_err)?;
        let names = std::iter::once("INBOX").chain(idx::DEFAULT_FOLDERS.iter().map(|(n, _)| *n));
        for name in names {
            sqlx::query("INSERT OR IGNORE INTO folders (user, name, uidvalidity, uidnext) VALUES (?, ?, ?, 1)")
                .bind(user)
                .bind(name)
                .bind(idx::new_uidvalidity() as i64)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
            sqlx::query("INSERT OR IGNORE INTO subscriptions (user, name) VALUES (?, ?)")
                .bind(user)
                .bind(name)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
        }
        tx.commit().await.map_err(db_err)?;
        Ok(())
    }

    fn forget_snapshot(&self, folder_id: i64) {
        self.snapshots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&folder_id);
    }
}

impl MailIndex for SqliteStore {
    fn list(&self, mailbox: &Mailbox) -> Result<Vec<FolderEntry>, IndexError> {
        let user = user_key(mailbox);
        self.block_on(async {
            self.ensure_defaults(&user).await?;
            let rows = sqlx::query(
                "SELECT f.name, s.name IS NOT NULL FROM folders f LEFT JOIN subscriptions s ON s.user = f.user AND s.name = f.name \
                 WHERE f.user = ? ORDER BY f.name <> 'INBOX', f.name",
            )
            .bind(&user)
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
            let mut out: Vec<FolderEntry> = rows
                .iter()
                .map(|r| {
                    let name: String = r.get(0);
                    FolderEntry {
                        special_use: idx::special_use_of(&name),
                        subscribed: r.get(1),
                        exists: true,
                        name,
                    }
                })
                .collect();
            let subs = sqlx::query("SELECT name FROM subscriptions WHERE user = ? AND name NOT IN (SELECT name FROM folders WHERE user = ?)")
                .bind(&user)
                .bind(&user)
                .fetch_all(&self.pool)
                .await
                .map_err(db_err)?;
            for r in subs {
                out.push(FolderEntry {
                    name: r.get(0),
                    subscribed: true,
                    special_use: None,
                    exists: false,
                });
            }
            Ok(out)
        })
    }

    fn create(&self, mailbox: &Mailbox, name: &str) -> Result<(), IndexError> {
        let name = idx::folder_name(name)?;
        let user = user_key(mailbox);
        self.block_on(async {
            self.ensure_defaults(&user).await?;
            let done = sqlx::query("INSERT OR IGNORE INTO folders (user, name, uidvalidity, uidnext) VALUES (?, ?, ?, 1)")
                .bind(&user)
                .bind(&name)
                .bind(idx::new_uidvalidity() as i64)
                .execute(&self.pool)
                .await
                .map_err(db_err)?;
            if done.rows_affected() == 0 {
                return Err(IndexError::Exists(name));
            }
            Ok(())
        })
    }

    fn delete(&self, mailbox: &Mailbox, name: &str) -> Result<(), IndexError> {
        let name = idx::folder_name(name)?;
        if name == "INBOX" {
            return Err(IndexError::Refused("INBOX cannot be deleted"));
        }
        let user = user_key(mailbox);
        let id = self.block_on(async {
            let (id, ..) = self.folder_or_err(&user, &name).await?;
            // Messages and expunge records go with the folder (ON DELETE CASCADE); blobs stay, as other
            // messages may share them.
            sqlx::query("DELETE FROM folders WHERE id = ?")
                .bind(id)
                .execute(&self.pool)
                .await
                .map_err(db_err)?;
            Ok::<_, IndexError>(id)
        })?;
        self.forget_snapshot(id);
        self.notifier.notify(mailbox);
        Ok(())
    }

    fn rename(&self, mailbox: &Mailbox, from: &str, to: &str) -> Result<(), IndexError> {
        let from = idx::folder_name(from)?;
        let to = idx::folder_name(to)?;
        if to == "INBOX" {
            return Err(IndexError::Exists(to));
        }
        let user = user_key(mailbox);
        if from == "INBOX" {
            return crate::mailbox::index::rename_inbox(self, mailbox, &to);
        }
        self.block_on(async {
            self.folder_or_err(&user, &from).await?;
            if self.folder(&user, &to).await?.is_some() {
                return Err(IndexError::Exists(to.clone()));
            }
            let mut conn = self.write_lock().await?;
            let mut tx = conn.begin().await.map_err(db_err)?;
            let below = format!("{from}{}", idx::DELIMITER);
            let rows = sqlx::query("SELECT id, name FROM folders WHERE user = ? AND (name = ? OR substr(name, 1, ?) = ?)")
                .bind(&user)
                .bind(&from)
                .bind(below.len() as i64)
                .bind(&below)
                .fetch_all(&mut *tx)
                .await
                .map_err(db_err)?;
            for r in rows {
                let (id, name): (i64, String) = (r.get(0), r.get(1));
                let renamed = format!("{to}{}", &name[from.len()..]);
                sqlx::query("UPDATE folders SET name = ? WHERE id = ?")
                    .bind(&renamed)
                    .bind(id)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err)?;
                sqlx::query("UPDATE subscriptions SET name = ? WHERE user = ? AND name = ?")
                    .bind(&renamed)
                    .bind(&user)
                    .bind(&name)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err)?;
            }
            tx.commit().await.map_err(db_err)?;
            Ok(())
        })
    }

    fn subscribe(&self, mailbox: &Mailbox, name: &str, on: bool) -> Result<(), IndexError> {
        let name = idx::folder_name(name)?;
        let user = user_key(mailbox);
        self.block_on(async {
            self.ensure_defaults(&user).await?;
            let q = if on {
                "INSERT OR IGNORE INTO subscriptions (user, name) VALUES (?, ?)"
            } else {
                "DELETE FROM subscriptions WHERE user = ? AND name = ?"
            };
            sqlx::query(q)
                .bind(&user)
                .bind(&name)
                .execute(&self.pool)
                .await
                .map_err(db_err)?;
            Ok(())
        })
    }

    fn snapshot(
        &self,
        mailbox: &Mailbox,
        folder: &str,
        claim_recent: bool,
    ) -> Result<Arc<Snapshot>, IndexError> {
        let user = user_key(mailbox);
        let name = folder_name(folder);
        self.block_on(async {
            if name == "INBOX" {
                self.ensure_defaults(&user).await?;
            }
            let (id, validity, uidnext, highest) = self.folder_or_err(&user, &name).await?;
            let mut claimed = Vec::new();
            if claim_recent {
                let mut conn = self.write_lock().await?;
                let rows = sqlx::query("UPDATE messages SET recent = 0 WHERE folder_id = ? AND recent = 1 RETURNING uid")
                    .bind(id)
                    .fetch_all(&mut **conn)
                    .await
                    .map_err(db_err)?;
                claimed = rows.iter().map(|r| r.get::<i64, _>(0) as u32).collect();
                claimed.sort();
                if !claimed.is_empty() {
                    self.claims.fetch_add(1, Ordering::SeqCst);
                }
            }
            let claims_before = self.claims.load(Ordering::SeqCst);
            // Nothing taken: the shared snapshot serves, when the folder has not changed since it was read.
            // A session that claims sees as \Recent only what it claimed: what arrived since is the next
            // claim's.
            let claimer = claim_recent;
            let unclaimed = |snap: Arc<Snapshot>| {
                if claimer && !snap.recent.is_empty() {
                    let mut own = (*snap).clone();
                    own.recent.clear();
                    Arc::new(own)
                } else {
                    snap
                }
            };
            let claim_recent = !claimed.is_empty();
            if !claim_recent
                && let Some((h, n, snap)) = self
                    .snapshots
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(&id)
                && *h == highest
                && *n == uidnext
            {
                return Ok(unclaimed(snap.clone()));
            }
            let rows = sqlx::query(
                "SELECT uid, flags, keywords, modseq, internal_date, isize, recent, body, blob FROM messages WHERE folder_id = ? ORDER BY uid",
            )
            .bind(id)
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
            let mut messages = Vec::with_capacity(rows.len());
            let mut recent = Vec::new();
            for r in rows {
                let uid = r.get::<i64, _>(0) as u32;
                let size = match r.get::<Option<i64>, _>(5) {
                    Some(s) => s.max(0) as u64,
                    None => crate::mailbox::crlf_len(&self.read_body(r.get(7), r.get(8))?),
                };
                if r.get::<bool, _>(6) {
                    recent.push(uid);
                }
                messages.push(MessageMeta {
                    uid,
                    flags: flags_of(&r.get::<String, _>(1), &r.get::<String, _>(2)),
                    modseq: r.get::<i64, _>(3).max(1) as u64,
                    internal_date: r.get(4),
                    size,
                });
            }
            let snap = Arc::new(Snapshot {
                uidvalidity: validity as u32,
                uidnext: uidnext as u32,
                highest_modseq: highest.max(1) as u64,
                messages,
                recent: if claim_recent { claimed.clone() } else { recent },
            });
            if claim_recent {
                // The shared copy no longer has those as \Recent.
                self.forget_snapshot(id);
                return Ok(snap);
            }
            let mut shared = self.snapshots.lock().unwrap_or_else(|p| p.into_inner());
            if self.claims.load(Ordering::SeqCst) == claims_before {
                shared.insert(id, (highest, uidnext, snap.clone()));
            }
            drop(shared);
            Ok(unclaimed(snap))
        })
    }

    fn read(
        &self,
        mailbox: &Mailbox,
        folder: &str,
        uid: u32,
    ) -> Result<Option<Vec<u8>>, IndexError> {
        let user = user_key(mailbox);
        let name = folder_name(folder);
        let row = self.block_on(async {
            sqlx::query(
                "SELECT m.body, m.blob FROM messages m JOIN folders f ON f.id = m.folder_id WHERE f.user = ? AND f.name = ? AND m.uid = ?",
            )
            .bind(&user)
            .bind(&name)
            .bind(uid as i64)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)
        })?;
        match row {
            Some(r) => Ok(Some(crate::mailbox::crlf(
                &self.read_body(r.get(0), r.get(1))?,
            ))),
            None => Ok(None),
        }
    }

    fn store(
        &self,
        mailbox: &Mailbox,
        folder: &str,
        uids: &[u32],
        op: FlagOp,
        flags: &Flags,
        unchanged_since: Option<u64>,
    ) -> Result<StoreResult, IndexError> {
        let user = user_key(mailbox);
        let name = folder_name(folder);
        let result = self.block_on(async {
            let mut conn = self.write_lock().await?;
            // IMMEDIATE: the write lock first, so the counters read are the ones this transaction
            // updates (another process, `tern mailbox import`, could commit in between otherwise).
            let mut tx = conn
                .begin_with("BEGIN IMMEDIATE")
                .await
                .map_err(db_err)?;
            let (id, mut highest) = folder_in(&mut tx, &user, &name).await?;
            let mut out = StoreResult::default();
            for &uid in uids {
                let Some(r) = sqlx::query("SELECT flags, keywords, modseq FROM messages WHERE folder_id = ? AND uid = ?")
                    .bind(id)
                    .bind(uid as i64)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(db_err)?
                else {
                    continue;
                };
                let current = flags_of(&r.get::<String, _>(0), &r.get::<String, _>(1));
                let modseq = r.get::<i64, _>(2) as u64;
                if unchanged_since.is_some_and(|u| modseq > u) {
                    out.modified.push(uid);
                    continue;
                }
                let mut next = current.clone();
                match op {
                    FlagOp::Replace => next = flags.clone(),
                    FlagOp::Add => next.add(flags),
                    FlagOp::Remove => next.remove(flags),
                }
                if next.same_as(&current) {
                    out.stored.push(Stored { uid, flags: current, modseq });
                    continue;
                }
                highest += 1;
                let (letters, keywords) = columns_of(&next);
                sqlx::query("UPDATE messages SET flags = ?, keywords = ?, modseq = ? WHERE folder_id = ? AND uid = ?")
                    .bind(letters)
                    .bind(keywords)
                    .bind(highest)
                    .bind(id)
                    .bind(uid as i64)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err)?;
                out.stored.push(Stored { uid, flags: next, modseq: highest as u64 });
            }
            sqlx::query("UPDATE folders SET highestmodseq = ? WHERE id = ?")
                .bind(highest)
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
            tx.commit().await.map_err(db_err)?;
            Ok::<_, IndexError>(out)
        })?;
        self.notifier.notify(mailbox);
        Ok(result)
    }

    fn append(
        &self,
        mailbox: &Mailbox,
        folder: &str,
        messages: Vec<idx::NewMessage>,
    ) -> Result<(u32, Vec<u32>), IndexError> {
        let user = user_key(mailbox);
        let name = folder_name(folder);
        let (_, validity, _, _) = self.block_on(self.folder_or_err(&user, &name))?;
        let rows: Vec<NewMessage> = messages
            .into_iter()
            .map(|m| {
                let (letters, keywords) = columns_of(&m.flags);
                NewMessage {
                    user: user.clone(),
                    folder: name.clone(),
                    key: format!(
                        "append.{}.{}",
                        crate::clock::unix_micros(),
                        APPENDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                    ),
                    date: m.internal_date.max(0) as u64,
                    flags: letters,
                    keywords,
                    // New to every session: the first to look takes it as \\Recent.
                    recent: true,
                    body: crate::mailbox::lf(&m.body),
                    streamed: None,
                }
            })
            .collect();
        let placed = self.block_on(self.append(rows))?;
        self.notifier.notify(mailbox);
        Ok((
            validity as u32,
            placed.into_iter().flatten().map(|(_, uid)| uid).collect(),
        ))
    }

    fn expunge(&self, mailbox: &Mailbox, folder: &str, uids: &[u32]) -> Result<(), IndexError> {
        let user = user_key(mailbox);
        let name = folder_name(folder);
        self.block_on(async {
            let mut conn = self.write_lock().await?;
            // IMMEDIATE: the write lock first, so the counters read are the ones this transaction
            // updates (another process, `tern mailbox import`, could commit in between otherwise).
            let mut tx = conn.begin_with("BEGIN IMMEDIATE").await.map_err(db_err)?;
            let (id, mut highest) = folder_in(&mut tx, &user, &name).await?;
            for &uid in uids {
                let gone = sqlx::query("DELETE FROM messages WHERE folder_id = ? AND uid = ?")
                    .bind(id)
                    .bind(uid as i64)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err)?;
                if gone.rows_affected() == 0 {
                    continue;
                }
                highest += 1;
                sqlx::query("INSERT INTO expunged (folder_id, uid, modseq) VALUES (?, ?, ?)")
                    .bind(id)
                    .bind(uid as i64)
                    .bind(highest)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err)?;
            }
            sqlx::query("UPDATE folders SET highestmodseq = ? WHERE id = ?")
                .bind(highest)
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
            sqlx::query("DELETE FROM expunged WHERE folder_id = ? AND modseq <= ?")
                .bind(id)
                .bind(highest - EXPUNGES_KEPT)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
            tx.commit().await.map_err(db_err)?;
            Ok::<_, IndexError>(())
        })?;
        self.notifier.notify(mailbox);
        Ok(())
    }

    fn vanished_since(
        &self,
        mailbox: &Mailbox,
        folder: &str,
        modseq: u64,
    ) -> Result<Vec<u32>, IndexError> {
        let user = user_key(mailbox);
        let name = folder_name(folder);
        self.block_on(async {
            let (id, ..) = self.folder_or_err(&user, &name).await?;
            let rows = sqlx::query(
                "SELECT DISTINCT uid FROM expunged WHERE folder_id = ? AND modseq > ? ORDER BY uid",
            )
            .bind(id)
            .bind(modseq as i64)
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
            Ok(rows.iter().map(|r| r.get::<i64, _>(0) as u32).collect())
        })
    }

    fn watch(&self, mailbox: &Mailbox) -> tokio::sync::watch::Receiver<u64> {
        self.notifier.subscribe(mailbox)
    }
}

static APPENDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A folder's id and HIGHESTMODSEQ, read inside the transaction that will change them.
async fn folder_in(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    user: &str,
    name: &str,
) -> Result<(i64, i64), IndexError> {
    let row = sqlx::query("SELECT id, highestmodseq FROM folders WHERE user = ? AND name = ?")
        .bind(user)
        .bind(name)
        .fetch_optional(&mut **tx)
        .await
        .map_err(db_err)?;
    row.map(|r| (r.get(0), r.get(1)))
        .ok_or_else(|| IndexError::NoFolder(name.to_string()))
}
