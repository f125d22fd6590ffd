//! Mailbox stores: where final delivery writes. Maildir now; the store is chosen by `[store] kind`.
//!
//! Calls are blocking (file I/O and fsync) and are made from the blocking pool by `local/`. A store must make
//! a delivery durable before it reports success, and must be idempotent for deliveries marked `check_existing`
//! (a retry after a crash must not leave a second copy).

pub mod dirsync;
pub mod group;
pub mod index;
pub mod maildir;
pub mod mbox;
pub mod sqlite;

use crate::smtp::Mailbox;
use std::sync::Arc;
use thiserror::Error;

#[derive(Debug, Error)]
#[error("{path}: {op}: {source}")]
pub struct MailboxError {
    pub path: String,
    pub op: &'static str,
    pub source: std::io::Error,
}

/// Whether `name` may be one component of a path under the mail folder: not empty, not `.`/`..` nor
/// starting with a dot, and without `/`, `\`, quotes, brackets or control characters.
pub fn safe_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('.')
        && !name
            .chars()
            .any(|c| c.is_control() || matches!(c, '/' | '\\' | '"' | '[' | ']' | '\0'))
}

/// A uid from a name that may be anything (a foreign Maildir file): kept when it is short printable ASCII,
/// else a digest of it, so it stays stable and unique.
pub fn uid_of(name: &str) -> String {
    if !name.is_empty() && name.len() <= 70 && name.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        return name.to_string();
    }
    let d = ring::digest::digest(&ring::digest::SHA256, name.as_bytes());
    d.as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// One copy of a message for one mailbox.
#[derive(Debug)]
pub struct Delivery {
    pub mailbox: Mailbox,
    /// A folder of the mailbox (`Junk`), or `None` for the inbox.
    pub folder: Option<String>,
    /// Unique and stable across attempts for this (message, recipient): the basis of the file name.
    pub unique: String,
    /// Headers written before the message (Return-Path:, Received:), LF line endings.
    pub prefix: Vec<u8>,
    /// The message, LF line endings, shared by all recipients of a message (of a spooled message, its
    /// header section: the tail follows).
    pub body: Arc<Vec<u8>>,
    /// The rest of a spooled message, in its spool file with CRLF line ends: written after `body`,
    /// converted to LF as it streams.
    pub tail: Option<Arc<crate::queue::spool::Tail>>,
    /// An earlier attempt may have completed: look for it before writing.
    pub check_existing: bool,
    /// Flags and keywords the copy is stored with (Sieve's imap4flags); none for plain delivery.
    pub flags: index::Flags,
}

impl Delivery {
    /// Octets of the copy as stored (LF line ends) and its line count.
    pub fn stored_size(&self) -> (u64, u64) {
        let lines = crate::queue::body::memchr_count(&self.prefix)
            + crate::queue::body::memchr_count(&self.body);
        let size = (self.prefix.len() + self.body.len()) as u64;
        match &self.tail {
            // Every line end of a spooled tail is CRLF (SMTP refuses bare CR and LF).
            Some(t) => (size + t.len - t.lines, lines + t.lines),
            None => (size, lines),
        }
    }

    /// Writes the copy: prefix, body, then the tail with LF line ends, in chunks (blocking).
    pub fn write_to(&self, out: &mut dyn std::io::Write) -> std::io::Result<()> {
        if self.tail.is_none() {
            // One write call for a small message.
            let mut all = Vec::with_capacity(self.prefix.len() + self.body.len());
            all.extend_from_slice(&self.prefix);
            all.extend_from_slice(&self.body);
            return out.write_all(&all);
        }
        out.write_all(&self.prefix)?;
        out.write_all(&self.body)?;
        if let Some(t) = &self.tail {
            write_lf(t, out)?;
        }
        Ok(())
    }
}

/// Streams a spooled tail with CRLF turned into LF (a CR split from its LF by a chunk edge included).
pub fn write_lf(
    tail: &crate::queue::spool::Tail,
    out: &mut dyn std::io::Write,
) -> std::io::Result<()> {
    let mut held_cr = false;
    let mut buf = Vec::with_capacity(crate::queue::body::CHUNK);
    tail.for_each_chunk(&mut |chunk: &[u8]| {
        buf.clear();
        if held_cr {
            if chunk.first() != Some(&b'\n') {
                buf.push(b'\r');
            }
            held_cr = false;
        }
        // Runs up to each CR are copied whole; a CR before LF is dropped.
        let mut from = 0;
        for at in memchr::memchr_iter(b'\r', chunk) {
            buf.extend_from_slice(&chunk[from..at]);
            match chunk.get(at + 1) {
                Some(b'\n') => {}
                Some(_) => buf.push(b'\r'),
                None => held_cr = true,
            }
            from = at + 1;
        }
        buf.extend_from_slice(&chunk[from..]);
        out.write_all(&buf)
    })?;
    if held_cr {
        out.write_all(b"\r")?;
    }
    Ok(())
}

/// What a mailbox holds, for quotas.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub bytes: u64,
    pub messages: u64,
}

impl Usage {
    /// Whether one more message of `size` octets would pass `quota` (bytes, messages).
    pub fn exceeds(&self, quota: (Option<u64>, Option<u64>), size: u64) -> bool {
        quota.0.is_some_and(|b| self.bytes + size > b)
            || quota.1.is_some_and(|m| self.messages + 1 > m)
    }
}

/// One folder of a mailbox, for `tern mailbox list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FolderInfo {
    /// `INBOX`, or the folder's name (`Junk`).
    pub name: String,
    pub messages: u64,
    pub bytes: u64,
}

/// A stored message with what a mail client sees of it, for export and import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// `INBOX` or a folder name.
    pub folder: String,
    /// Maildir flag letters (D draft, F flagged, P passed, R replied, S seen, T trashed), sorted.
    pub flags: String,
    /// IMAP keywords ($Junk, $Label1...).
    pub keywords: Vec<String>,
    /// Not yet seen by any client (Maildir's new/).
    pub recent: bool,
    /// Unix seconds.
    pub internal_date: u64,
    /// The message as stored (LF line endings).
    pub body: Vec<u8>,
}

impl StoredMessage {
    /// Its flags and keywords as the mailbox index has them (Maildir's P, passed, has no IMAP flag).
    pub fn index_flags(&self) -> index::Flags {
        use index::flag;
        let mut system = 0;
        for c in self.flags.chars() {
            system |= match c {
                'D' => flag::DRAFT,
                'F' => flag::FLAGGED,
                'R' => flag::ANSWERED,
                'S' => flag::SEEN,
                'T' => flag::DELETED,
                _ => 0,
            };
        }
        index::Flags {
            system,
            keywords: self.keywords.clone(),
        }
    }
}

/// One message of a folder as a reader (POP3) sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Stable and unique within the mailbox, printable ASCII of at most 70 octets (a POP3 UIDL).
    pub uid: String,
    /// Octets with CRLF line endings (what POP3 sends).
    pub size: u64,
}

pub trait MailboxStore: Send + Sync {
    /// The messages of a folder (`INBOX` or a folder name), oldest first.
    fn entries(&self, mailbox: &Mailbox, folder: &str) -> Result<Vec<Entry>, MailboxError>;

    /// One message of a folder by its uid, as stored; `None` when it is gone.
    fn read(
        &self,
        mailbox: &Mailbox,
        folder: &str,
        uid: &str,
    ) -> Result<Option<Vec<u8>>, MailboxError>;

    /// Removes these messages from a folder, durably; uids that are already gone are not an error.
    fn remove(&self, mailbox: &Mailbox, folder: &str, uids: &[String]) -> Result<(), MailboxError>;

    /// Delivers each item; the result at index i belongs to item i. Successes are durable.
    fn deliver(&self, items: &[Delivery]) -> Vec<Result<(), MailboxError>>;

    /// Octets and messages in a mailbox, all folders together.
    fn usage(&self, mailbox: &Mailbox) -> Result<Usage, MailboxError>;

    /// The mailbox's folders with their sizes.
    fn folders(&self, mailbox: &Mailbox) -> Result<Vec<FolderInfo>, MailboxError>;

    /// Every message of the mailbox, folder by folder, oldest first.
    fn for_each(
        &self,
        mailbox: &Mailbox,
        f: &mut dyn FnMut(StoredMessage) -> Result<(), MailboxError>,
    ) -> Result<(), MailboxError>;

    /// Appends messages as they are (folders, flags and dates kept); durable when it returns.
    fn import(&self, mailbox: &Mailbox, messages: &[StoredMessage]) -> Result<(), MailboxError>;

    /// The mailbox index (UIDs, flags, MODSEQ) over this store, for IMAP.
    fn index(&self) -> Option<&dyn index::MailIndex> {
        None
    }
}

/// The store `[store] kind` names.
pub async fn open(
    cfg: &crate::config::Config,
) -> Result<std::sync::Arc<dyn MailboxStore>, MailboxError> {
    Ok(match cfg.store {
        crate::config::StoreKind::Maildir => {
            std::sync::Arc::new(maildir::Maildir::new(cfg.data_dir.join("mail")))
        }
        crate::config::StoreKind::Sqlite => std::sync::Arc::new(
            sqlite::SqliteStore::open(&cfg.data_dir, cfg.blob_threshold)
                .await
                .map_err(|e| {
                    other_error(
                        &cfg.data_dir.join("mailboxes.db").display().to_string(),
                        "open",
                        e,
                    )
                })?,
        ),
    })
}

/// Reads a Maildir (with its Maildir++ folders) from disk, for import.
pub fn read_maildir(dir: &std::path::Path) -> Result<Vec<StoredMessage>, MailboxError> {
    let probe = maildir::Maildir::new(dir.to_path_buf());
    let mut out = Vec::new();
    probe.for_each_at(dir, &mut |m| {
        out.push(m);
        Ok(())
    })?;
    Ok(out)
}

/// A message with CRLF line endings: each LF not already after a CR gets one (what IMAP sends).
pub fn crlf(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + message.len() / 32);
    let mut prev = 0u8;
    for &b in message {
        if b == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        prev = b;
    }
    out
}

/// The length `crlf` would return, without the copy.
pub fn crlf_len(message: &[u8]) -> u64 {
    let mut n = message.len() as u64;
    let mut prev = 0u8;
    for &b in message {
        if b == b'\n' && prev != b'\r' {
            n += 1;
        }
        prev = b;
    }
    n
}

/// A message with LF line endings, as Maildir files keep it.
pub fn lf(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len());
    let mut i = 0;
    while i < message.len() {
        if message[i] == b'\r' && message.get(i + 1) == Some(&b'\n') {
            i += 1;
            continue;
        }
        out.push(message[i]);
        i += 1;
    }
    out
}

/// An I/O error in a mailbox operation, quoting the path.
pub fn io_error(path: &std::path::Path, op: &'static str, source: std::io::Error) -> MailboxError {
    MailboxError {
        path: path.display().to_string(),
        op,
        source,
    }
}

/// A storage error that is not about one file (SQLite).
pub fn other_error(what: &str, op: &'static str, e: impl std::fmt::Display) -> MailboxError {
    MailboxError {
        path: what.to_string(),
        op,
        source: std::io::Error::other(e.to_string()),
    }
}
