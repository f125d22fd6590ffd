//! The mailbox index: what IMAP (and later Sieve) sees of a mailbox. Folders with UIDVALIDITY, UIDNEXT and
//! HIGHESTMODSEQ; messages with UIDs, flags, keywords, MODSEQ and internal dates; expunges remembered with their
//! MODSEQ so a client can resynchronise (RFC 7162). One trait, implemented by each store, so the protocol code
//! never touches files or SQL.
//!
//! Calls are blocking (file I/O, fsync, SQLite) and are made from the blocking pool. A call that changes state
//! returns once the change is durable.

use super::MailboxError;
use crate::smtp::Mailbox;
use std::sync::Arc;

/// System flags as bits; keywords beside them.
pub mod flag {
    pub const SEEN: u8 = 1;
    pub const ANSWERED: u8 = 2;
    pub const FLAGGED: u8 = 4;
    pub const DELETED: u8 = 8;
    pub const DRAFT: u8 = 16;
    /// The system flags with their IMAP names, in the order they are written.
    pub const NAMES: [(u8, &str); 5] = [
        (ANSWERED, "\\Answered"),
        (FLAGGED, "\\Flagged"),
        (DELETED, "\\Deleted"),
        (SEEN, "\\Seen"),
        (DRAFT, "\\Draft"),
    ];
}

/// A message's flags: system flags as bits, keywords by name (IMAP atoms, compared without case).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Flags {
    pub system: u8,
    pub keywords: Vec<String>,
}

impl Flags {
    pub fn has_keyword(&self, k: &str) -> bool {
        self.keywords.iter().any(|x| x.eq_ignore_ascii_case(k))
    }

    /// Adds the flags of `other`.
    pub fn add(&mut self, other: &Flags) {
        self.system |= other.system;
        for k in &other.keywords {
            if !self.has_keyword(k) {
                self.keywords.push(k.clone());
            }
        }
    }

    /// Removes the flags of `other`.
    pub fn remove(&mut self, other: &Flags) {
        self.system &= !other.system;
        self.keywords.retain(|k| !other.has_keyword(k));
    }

    /// The same set, whatever the order of the keywords.
    pub fn same_as(&self, other: &Flags) -> bool {
        self.system == other.system
            && self.keywords.len() == other.keywords.len()
            && self.keywords.iter().all(|k| other.has_keyword(k))
    }
}

/// One message as the index knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageMeta {
    pub uid: u32,
    pub flags: Flags,
    pub modseq: u64,
    /// Unix seconds.
    pub internal_date: i64,
    /// Octets with CRLF line endings (RFC822.SIZE).
    pub size: u64,
}

/// A folder's state at one moment. Shared (`Arc`) between the sessions that look at it: a new one is made
/// only when something changed, so an unchanged folder costs nothing to look at again.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub uidvalidity: u32,
    pub uidnext: u32,
    pub highest_modseq: u64,
    /// By ascending UID.
    pub messages: Vec<MessageMeta>,
    /// Messages that arrived since the last read-write SELECT (IMAP4rev1's \Recent).
    pub recent: Vec<u32>,
}

impl Snapshot {
    pub fn get(&self, uid: u32) -> Option<&MessageMeta> {
        self.messages
            .binary_search_by_key(&uid, |m| m.uid)
            .ok()
            .map(|i| &self.messages[i])
    }
}

/// The SPECIAL-USE attribute of a folder (RFC 6154).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpecialUse {
    Sent,
    Drafts,
    Trash,
    Junk,
    Archive,
}

impl SpecialUse {
    pub fn attribute(self) -> &'static str {
        match self {
            SpecialUse::Sent => "\\Sent",
            SpecialUse::Drafts => "\\Drafts",
            SpecialUse::Trash => "\\Trash",
            SpecialUse::Junk => "\\Junk",
            SpecialUse::Archive => "\\Archive",
        }
    }
}

/// The folders every mailbox has, with their special use: made at the first look.
pub const DEFAULT_FOLDERS: [(&str, SpecialUse); 5] = [
    ("Sent", SpecialUse::Sent),
    ("Drafts", SpecialUse::Drafts),
    ("Trash", SpecialUse::Trash),
    ("Junk", SpecialUse::Junk),
    ("Archive", SpecialUse::Archive),
];

/// The special use of a folder name, when it is one of the default folders.
pub fn special_use_of(name: &str) -> Option<SpecialUse> {
    DEFAULT_FOLDERS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, u)| *u)
}

/// The hierarchy delimiter of folder names (Maildir++'s, as Dovecot's default layout has it).
pub const DELIMITER: char = '.';

/// One folder in a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FolderEntry {
    /// `INBOX` or the folder's name with `.` between levels, as modified UTF-7 (RFC 3501 5.1.3).
    pub name: String,
    pub subscribed: bool,
    pub special_use: Option<SpecialUse>,
    /// False for a name that is subscribed but not (or no longer) a folder.
    pub exists: bool,
}

/// Why an index call was refused: each maps to an IMAP response code.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("no folder {0:?}")]
    NoFolder(String),
    #[error("folder {0:?} exists already")]
    Exists(String),
    #[error("{0:?} is not a valid folder name")]
    BadName(String),
    #[error("{0}")]
    Refused(&'static str),
    #[error("{0}")]
    Storage(#[from] MailboxError),
}

/// One flag change asked for by STORE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlagOp {
    Replace,
    Add,
    Remove,
}

/// What a STORE did to one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub uid: u32,
    pub flags: Flags,
    pub modseq: u64,
}

/// The result of a STORE: changed messages, and those left alone because they changed after
/// UNCHANGEDSINCE (RFC 7162 3.1.3).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreResult {
    pub stored: Vec<Stored>,
    pub modified: Vec<u32>,
}

/// A message to add to a folder (APPEND, COPY).
#[derive(Debug, Clone)]
pub struct NewMessage {
    /// CRLF or LF line endings: the store keeps its own form.
    pub body: Vec<u8>,
    pub flags: Flags,
    /// Unix seconds.
    pub internal_date: i64,
}

pub trait MailIndex: Send + Sync {
    /// Every folder of the mailbox, INBOX first, and the subscribed names that are not folders; the default
    /// folders are made when missing.
    fn list(&self, mailbox: &Mailbox) -> Result<Vec<FolderEntry>, IndexError>;

    fn create(&self, mailbox: &Mailbox, name: &str) -> Result<(), IndexError>;

    /// Deletes a folder and its messages (not INBOX).
    fn delete(&self, mailbox: &Mailbox, name: &str) -> Result<(), IndexError>;

    /// Renames a folder and those below it; renaming INBOX moves its messages into the new folder.
    fn rename(&self, mailbox: &Mailbox, from: &str, to: &str) -> Result<(), IndexError>;

    fn subscribe(&self, mailbox: &Mailbox, name: &str, on: bool) -> Result<(), IndexError>;

    /// The folder as it is now; messages written by other programs get their UIDs here. With `claim_recent`,
    /// the messages that are new since the last claim are handed to the caller (as \Recent) and no longer new.
    fn snapshot(
        &self,
        mailbox: &Mailbox,
        folder: &str,
        claim_recent: bool,
    ) -> Result<Arc<Snapshot>, IndexError>;

    /// The message with CRLF line endings; `None` when it has been expunged.
    fn read(
        &self,
        mailbox: &Mailbox,
        folder: &str,
        uid: u32,
    ) -> Result<Option<Vec<u8>>, IndexError>;

    /// Changes flags; with `unchanged_since`, only of messages whose MODSEQ is not above it.
    fn store(
        &self,
        mailbox: &Mailbox,
        folder: &str,
        uids: &[u32],
        op: FlagOp,
        flags: &Flags,
        unchanged_since: Option<u64>,
    ) -> Result<StoreResult, IndexError>;

    /// Adds messages; returns the folder's UIDVALIDITY and the new UIDs in order.
    fn append(
        &self,
        mailbox: &Mailbox,
        folder: &str,
        messages: Vec<NewMessage>,
    ) -> Result<(u32, Vec<u32>), IndexError>;

    /// Copies messages into another folder, flags and dates kept; returns the target's UIDVALIDITY and
    /// (source UID, new UID) pairs.
    fn copy(
        &self,
        mailbox: &Mailbox,
        from: &str,
        uids: &[u32],
        to: &str,
    ) -> Result<(u32, Vec<(u32, u32)>), IndexError> {
        let snap = self.snapshot(mailbox, from, false)?;
        let mut messages = Vec::new();
        let mut order = Vec::new();
        for &uid in uids {
            let Some(meta) = snap.get(uid) else { continue };
            if let Some(body) = self.read(mailbox, from, uid)? {
                messages.push(NewMessage {
                    body,
                    flags: meta.flags.clone(),
                    internal_date: meta.internal_date,
                });
                order.push(uid);
            }
        }
        // The target must exist even when nothing is copied.
        let (validity, new) = self.append(mailbox, to, messages)?;
        Ok((validity, order.into_iter().zip(new).collect()))
    }

    /// Removes messages for good.
    fn expunge(&self, mailbox: &Mailbox, folder: &str, uids: &[u32]) -> Result<(), IndexError>;

    /// UIDs expunged with a MODSEQ above `modseq` (QRESYNC's VANISHED (EARLIER)), ascending.
    fn vanished_since(
        &self,
        mailbox: &Mailbox,
        folder: &str,
        modseq: u64,
    ) -> Result<Vec<u32>, IndexError>;

    /// A watch that changes whenever anything in this mailbox may have changed (delivery, another session):
    /// IDLE sessions wait on it.
    fn watch(&self, mailbox: &Mailbox) -> tokio::sync::watch::Receiver<u64>;
}

/// RENAME of INBOX (RFC 9051 6.3.6): its messages move to the new folder; INBOX stays, empty.
pub fn rename_inbox(index: &dyn MailIndex, mailbox: &Mailbox, to: &str) -> Result<(), IndexError> {
    index.create(mailbox, to)?;
    let uids: Vec<u32> = index
        .snapshot(mailbox, "INBOX", false)?
        .messages
        .iter()
        .map(|m| m.uid)
        .collect();
    index.copy(mailbox, "INBOX", &uids, to)?;
    index.expunge(mailbox, "INBOX", &uids)
}

/// Change notices, per mailbox: stores bump it after each durable change, sessions wait on it.
#[derive(Default)]
pub struct Notifier {
    senders: std::sync::Mutex<std::collections::HashMap<String, tokio::sync::watch::Sender<u64>>>,
}

impl Notifier {
    pub fn key(mailbox: &Mailbox) -> String {
        mailbox.to_string().to_lowercase()
    }

    pub fn subscribe(&self, mailbox: &Mailbox) -> tokio::sync::watch::Receiver<u64> {
        let mut s = self.senders.lock().unwrap_or_else(|p| p.into_inner());
        // Forget the mailboxes nobody watches any more, so the map is bounded by the sessions.
        if s.len() > 64 {
            s.retain(|_, tx| tx.receiver_count() > 0);
        }
        s.entry(Self::key(mailbox))
            .or_insert_with(|| tokio::sync::watch::channel(0).0)
            .subscribe()
    }

    pub fn notify(&self, mailbox: &Mailbox) {
        let s = self.senders.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = s.get(&Self::key(mailbox)) {
            tx.send_modify(|n| *n = n.wrapping_add(1));
        }
    }
}

static LAST_UIDVALIDITY: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// A UIDVALIDITY for a new folder: the time, and never the same twice in a process, so a folder deleted and
/// made again within a second still tells clients that its UIDs are new.
pub fn new_uidvalidity() -> u32 {
    let now = (crate::clock::unix_now() as u32).max(1);
    let mut last = LAST_UIDVALIDITY.load(std::sync::atomic::Ordering::Relaxed);
    loop {
        let next = now.max(last.wrapping_add(1)).max(1);
        match LAST_UIDVALIDITY.compare_exchange(
            last,
            next,
            std::sync::atomic::Ordering::Relaxed,
            std::sync::atomic::Ordering::Relaxed,
        ) {
            Ok(_) => return next,
            Err(x) => last = x,
        }
    }
}

/// A name a client gave for a folder, checked: levels split by `.`, none empty, no `/`, no control
/// characters, not longer than 255 octets. INBOX (in any case) comes back as `INBOX`.
pub fn folder_name(name: &str) -> Result<String, IndexError> {
    if name.eq_ignore_ascii_case("INBOX") {
        return Ok("INBOX".into());
    }
    let bad = name.is_empty()
        || name.len() > 255
        || name.split(DELIMITER).any(|level| level.is_empty())
        || name
            .chars()
            .any(|c| c.is_control() || matches!(c, '/' | '\\' | '*' | '%'));
    if bad {
        return Err(IndexError::BadName(name.to_string()));
    }
    // INBOX's children keep INBOX's spelling.
    if let Some(rest) = name.get(..6)
        && rest.eq_ignore_ascii_case("INBOX.")
    {
        return Ok(format!("INBOX.{}", &name[6..]));
    }
    Ok(name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folder_names_are_checked() {
        assert_eq!(folder_name("inbox").unwrap(), "INBOX");
        assert_eq!(folder_name("Lists.rust").unwrap(), "Lists.rust");
        for bad in [
            "", ".x", "x.", "a..b", "a/b", "..", ".", "a\nb", "a*", "\\x",
        ] {
            assert!(folder_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn flags_compare_as_sets() {
        let a = Flags {
            system: flag::SEEN,
            keywords: vec!["$Junk".into(), "work".into()],
        };
        let mut b = Flags {
            system: flag::SEEN,
            keywords: vec!["WORK".into(), "$junk".into()],
        };
        assert!(a.same_as(&b));
        b.remove(&Flags {
            system: 0,
            keywords: vec!["Work".into()],
        });
        assert_eq!(b.keywords, vec!["$junk".to_string()]);
    }
}
