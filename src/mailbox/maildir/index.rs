//! The mailbox index over Maildir, kept the way Dovecot keeps it so a Maildir can move between the two
//! without clients downloading everything again:
//!
//! - `dovecot-uidlist` (version 3): `3 V<uidvalidity> N<uidnext> G<guid>`, then `<uid> :<name>` per message,
//!   the name without its `:2,` info;
//! - flags in the file names (`:2,FRS` plus `a`..`z` for the keywords listed in `dovecot-keywords`);
//! - `subscriptions`: one folder name per line;
//! - and tern's own `tern-modseq` beside them: HIGHESTMODSEQ, each message's MODSEQ and recent expunges
//!   (Dovecot keeps those in its binary index files, which tern neither reads nor writes).
//!
//! Each file is replaced whole (written, fsynced, renamed, directory fsynced), so a crash leaves the old or the
//! new version. The state of a folder is cached in memory and read again from disk when `new/` or `cur/`
//! changed (another program delivered, renamed or deleted a file), so mail dropped into new/ by anyone gets
//! its UID at the next look.

use super::{Maildir, err, sync_dir};
use crate::mailbox::MailboxError;
use crate::mailbox::index::{
    FlagOp, Flags, FolderEntry, IndexError, MailIndex, NewMessage, Snapshot, StoreResult, Stored,
    flag,
};
use crate::smtp::Mailbox;
use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// Expunges remembered for QRESYNC, per folder; older ones make a client resynchronise fully.
const EXPUNGES_KEPT: usize = 10_000;
/// Folder states kept in memory; past this, idle ones are dropped (and read again when needed).
const CACHED_FOLDERS: usize = 512;

#[derive(Debug, Clone)]
struct Msg {
    /// The file name up to the `:2,` info: the stable part.
    base: String,
    /// `new` or `cur`.
    in_new: bool,
    /// Flag letters of the name that tern does not map (`P`, unknown ones), kept when it renames.
    other: String,
    flags: Flags,
    modseq: u64,
    date: i64,
    size: u64,
}

impl Msg {
    fn file_name(&self, keywords: &[String]) -> String {
        if self.in_new {
            return self.base.clone();
        }
        format!(
            "{}:2,{}",
            self.base,
            info_letters(&self.flags, &self.other, keywords)
        )
    }
}

/// The info letters for flags: system flags as Maildir letters, keywords as `a`..`z` by their index.
fn info_letters(flags: &Flags, other: &str, keywords: &[String]) -> String {
    let mut letters: Vec<char> = other.chars().collect();
    for (bit, c) in [
        (flag::DRAFT, 'D'),
        (flag::FLAGGED, 'F'),
        (flag::ANSWERED, 'R'),
        (flag::SEEN, 'S'),
        (flag::DELETED, 'T'),
    ] {
        if flags.system & bit != 0 {
            letters.push(c);
        }
    }
    for k in &flags.keywords {
        if let Some(i) = keywords.iter().position(|x| x.eq_ignore_ascii_case(k))
            && i < 26
        {
            letters.push((b'a' + i as u8) as char);
        }
    }
    letters.sort();
    letters.dedup();
    letters.into_iter().collect()
}

/// Flags and the unmapped letters of a name's info.
fn parse_info(name: &str, keywords: &[String]) -> (Flags, String) {
    let mut flags = Flags::default();
    let mut other = String::new();
    let Some((_, info)) = name.split_once(":2,") else {
        return (flags, other);
    };
    for c in info.chars() {
        match c {
            'D' => flags.system |= flag::DRAFT,
            'F' => flags.system |= flag::FLAGGED,
            'R' => flags.system |= flag::ANSWERED,
            'S' => flags.system |= flag::SEEN,
            'T' => flags.system |= flag::DELETED,
            'a'..='z' => match keywords.get((c as u8 - b'a') as usize) {
                Some(k) => flags.keywords.push(k.clone()),
                None => other.push(c),
            },
            c if c.is_ascii_uppercase() => other.push(c),
            _ => {}
        }
    }
    (flags, other)
}

fn base_of(name: &str) -> &str {
    name.split_once(':').map_or(name, |(b, _)| b)
}

#[derive(Debug, Default)]
pub(super) struct FolderState {
    loaded: bool,
    uidvalidity: u32,
    next_uid: u32,
    guid: String,
    highest_modseq: u64,
    msgs: BTreeMap<u32, Msg>,
    by_base: HashMap<String, u32>,
    /// (uid, modseq of the expunge), oldest first.
    expunged: Vec<(u32, u64)>,
    keywords: Vec<String>,
    /// Messages from this UID on are \Recent: no read-write session has seen them yet.
    recent_from: u32,
    /// Modification times of new/ and cur/ when they were last read (or last changed by this process).
    stamp: Option<(SystemTime, SystemTime)>,
    /// When new/ and cur/ were last read whole.
    scanned: Option<std::time::Instant>,
    /// `stamp` was taken after this process's own change, not by reading the folder.
    adopted: bool,
    /// Lines appended to `tern-modseq` since it was last written whole.
    journal: usize,
    snapshot: Option<Arc<Snapshot>>,
}

fn io<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(std::io::Error) -> IndexError + 'a {
    move |e| IndexError::Storage(err(path, op)(e))
}

/// Replaces a file whole: write a temporary name, fsync, rename, fsync the folder.
fn replace_file(dir: &Path, name: &str, content: &[u8]) -> Result<(), MailboxError> {
    // A name of its own per write: two writers never share (and rename away) one temporary file.
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!(".{name}.{}.{n}.tmp", std::process::id()));
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(err(&tmp, "create"))?;
    f.write_all(content).map_err(err(&tmp, "write"))?;
    f.sync_data().map_err(err(&tmp, "fsync"))?;
    drop(f);
    let target = dir.join(name);
    fs::rename(&tmp, &target).map_err(err(&target, "rename"))?;
    sync_dir(dir)
}

/// The modification times of a Maildir's new/ and cur/.
fn stamp_of(dir: &Path) -> (SystemTime, SystemTime) {
    (mtime(&dir.join("new")), mtime(&dir.join("cur")))
}

fn mtime(p: &Path) -> SystemTime {
    fs::metadata(p)
        .and_then(|m| m.modified())
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

fn unix(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

static UNIQUE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A new Maildir base name (`<secs>.M<micros>P<pid>Q<n>.tern`) with its sizes.
fn new_base(size: usize, wire: u64) -> String {
    let n = UNIQUE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let micros = crate::clock::unix_micros();
    format!(
        "{}.M{}P{}Q{n}.tern,S={size},W={wire}",
        micros / 1_000_000,
        micros % 1_000_000,
        std::process::id()
    )
}

impl FolderState {
    fn load(&mut self, dir: &Path) {
        self.loaded = true;
        self.keywords = fs::read_to_string(dir.join("dovecot-keywords"))
            .map(|t| {
                let mut k: Vec<(usize, String)> = t
                    .lines()
                    .filter_map(|l| {
                        let (i, name) = l.split_once(' ')?;
                        Some((i.parse().ok()?, name.trim().to_string()))
                    })
                    .filter(|(i, n)| *i < 26 && !n.is_empty())
                    .collect();
                k.sort();
                let mut out = Vec::new();
                for (i, n) in k {
                    while out.len() < i {
                        out.push(String::new());
                    }
                    if out.len() == i {
                        out.push(n);
                    }
                }
                out
            })
            .unwrap_or_default();
        if let Ok(text) = fs::read_to_string(dir.join("dovecot-uidlist")) {
            let mut lines = text.lines();
            if let Some(header) = lines.next() {
                let mut fields = header.split(' ');
                if fields.next() == Some("3") {
                    for f in fields {
                        match f.split_at_checked(1) {
                            Some(("V", v)) => self.uidvalidity = v.parse().unwrap_or(0),
                            Some(("N", v)) => self.next_uid = v.parse().unwrap_or(0),
                            Some(("G", v)) => self.guid = v.to_string(),
                            _ => {}
                        }
                    }
                }
            }
            for line in lines {
                let Some((head, name)) = line.split_once(" :") else {
                    continue;
                };
                let Some(uid) = head.split(' ').next().and_then(|u| u.parse::<u32>().ok()) else {
                    continue;
                };
                if uid == 0 || self.by_base.contains_key(name) {
                    continue;
                }
                self.by_base.insert(name.to_string(), uid);
                self.msgs.insert(
                    uid,
                    Msg {
                        base: name.to_string(),
                        in_new: false,
                        other: String::new(),
                        flags: Flags::default(),
                        modseq: 1,
                        date: 0,
                        size: u64::MAX,
                    },
                );
                self.next_uid = self.next_uid.max(uid + 1);
            }
        }
        if let Ok(text) = fs::read_to_string(dir.join("tern-modseq")) {
            for line in text.lines() {
                let mut f = line.split(' ');
                match (f.next(), f.next(), f.next()) {
                    (Some("M"), Some(v), None) => {
                        self.highest_modseq = v.parse().unwrap_or(0);
                    }
                    (Some("X"), Some(uid), Some(m)) => {
                        if let (Ok(uid), Ok(m)) = (uid.parse(), m.parse()) {
                            self.expunged.push((uid, m));
                        }
                    }
                    (Some(uid), Some(m), None) => {
                        if let (Ok(uid), Ok(m)) = (uid.parse::<u32>(), m.parse::<u64>())
                            && let Some(msg) = self.msgs.get_mut(&uid)
                        {
                            msg.modseq = m;
                        }
                    }
                    _ => {}
                }
            }
        }
        if self.uidvalidity == 0 {
            self.uidvalidity = crate::mailbox::index::new_uidvalidity();
            self.next_uid = 1;
        }
        self.next_uid = self.next_uid.max(1);
        self.recent_from = self.next_uid;
        if self.guid.is_empty() {
            let d = ring::digest::digest(
                &ring::digest::SHA256,
                format!("{}{}", dir.display(), crate::clock::unix_micros()).as_bytes(),
            );
            self.guid = d.as_ref()[..16]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
        }
        let top = self.msgs.values().map(|m| m.modseq).max().unwrap_or(0);
        self.highest_modseq = self.highest_modseq.max(top).max(1);
    }

    fn bump(&mut self) -> u64 {
        self.highest_modseq += 1;
        self.snapshot = None;
        self.highest_modseq
    }

    fn forget(&mut self, uid: u32) {
        if let Some(m) = self.msgs.remove(&uid) {
            self.by_base.remove(&m.base);
            let modseq = self.bump();
            self.expunged.push((uid, modseq));
        }
        if self.expunged.len() > EXPUNGES_KEPT {
            let extra = self.expunged.len() - EXPUNGES_KEPT;
            self.expunged.drain(..extra);
        }
    }

    /// Reads new/ and cur/ again when they changed since the last look. Returns whether anything changed.
    fn sync(&mut self, dir: &Path) -> Result<bool, IndexError> {
        if !self.loaded {
            self.load(dir);
        }
        let stamp = stamp_of(dir);
        let now = SystemTime::now();
        let settled = |t: SystemTime| now.duration_since(t).is_ok_and(|d| d.as_secs() >= 2);
        let scanned_lately = self
            .scanned
            .is_some_and(|t| t.elapsed() < std::time::Duration::from_secs(1));
        // The folder is read again when it changed, and, when it changed within the last moments (another
        // program may have changed it again within the same tick of the file system's clock, or between
        // this process's own change and its look at the clock), at most once a second until it settles.
        if self.stamp == Some(stamp)
            && (scanned_lately || (!self.adopted && settled(stamp.0) && settled(stamp.1)))
        {
            return Ok(false);
        }
        let mut on_disk: HashMap<String, (bool, String)> = HashMap::new();
        for (sub, in_new) in [("cur", false), ("new", true)] {
            let Ok(entries) = fs::read_dir(dir.join(sub)) else {
                continue;
            };
            for e in entries.flatten() {
                let Ok(name) = e.file_name().into_string() else {
                    continue;
                };
                if name.starts_with('.') {
                    continue;
                }
                on_disk.insert(base_of(&name).to_string(), (in_new, name));
            }
        }
        let mut changed = false;
        let gone: Vec<u32> = self
            .msgs
            .iter()
            .filter(|(_, m)| !on_disk.contains_key(&m.base))
            .map(|(u, _)| *u)
            .collect();
        for uid in gone {
            self.forget(uid);
            changed = true;
        }
        let mut fresh: Vec<(SystemTime, String, bool, String)> = Vec::new();
        for (base, (in_new, name)) in on_disk {
            match self.by_base.get(&base).copied() {
                Some(uid) => {
                    let (flags, other) = parse_info(&name, &self.keywords);
                    let needs_meta = self.msgs.get(&uid).is_some_and(|m| m.size == u64::MAX);
                    if needs_meta {
                        let path = dir.join(if in_new { "new" } else { "cur" }).join(&name);
                        let (date, size) = file_meta(&path, &name);
                        if let Some(m) = self.msgs.get_mut(&uid) {
                            m.date = date;
                            m.size = size;
                            m.in_new = in_new;
                            m.flags = flags.clone();
                            m.other = other.clone();
                        }
                        self.snapshot = None;
                    }
                    let differs = self.msgs.get(&uid).is_some_and(|m| {
                        m.in_new != in_new || !m.flags.same_as(&flags) || m.other != other
                    });
                    if differs {
                        let modseq = self.bump();
                        if let Some(m) = self.msgs.get_mut(&uid) {
                            if !m.flags.same_as(&flags) {
                                m.modseq = modseq;
                            }
                            m.in_new = in_new;
                            m.flags = flags;
                            m.other = other;
                        }
                        changed = true;
                    }
                }
                None => {
                    let path = dir.join(if in_new { "new" } else { "cur" }).join(&name);
                    fresh.push((mtime(&path), name, in_new, base));
                }
            }
        }
        fresh.sort();
        for (_, name, in_new, base) in fresh {
            let path = dir.join(if in_new { "new" } else { "cur" }).join(&name);
            let (date, size) = file_meta(&path, &name);
            let (flags, other) = parse_info(&name, &self.keywords);
            let uid = self.next_uid;
            self.next_uid += 1;
            let modseq = self.bump();
            self.by_base.insert(base.clone(), uid);
            self.msgs.insert(
                uid,
                Msg {
                    base,
                    in_new,
                    other,
                    flags,
                    modseq,
                    date,
                    size,
                },
            );
            changed = true;
        }
        if changed {
            self.persist(dir)?;
        }
        self.stamp = Some(stamp);
        self.scanned = Some(std::time::Instant::now());
        self.adopted = false;
        Ok(changed)
    }

    /// After this process changed new/ or cur/ itself (under the folder's lock, memory already up to
    /// date): the new modification times are no news. Another program's change made at the same moment
    /// is still found by the next read of the folder, at most a second later.
    fn adopt(&mut self, dir: &Path) {
        self.stamp = Some(stamp_of(dir));
        self.adopted = true;
    }

    /// Appends MODSEQs to `tern-modseq` (the last line for a UID wins when it is read), fsynced; the file
    /// is written whole again once the appended lines outnumber the messages.
    fn journal_modseqs(&mut self, dir: &Path, modseqs: &[(u32, u64)]) -> Result<(), IndexError> {
        if self.journal + modseqs.len() > (self.msgs.len() + 64).max(1024) {
            return self.persist(dir);
        }
        let path = dir.join("tern-modseq");
        let mut lines = String::with_capacity(modseqs.len() * 16);
        for (uid, m) in modseqs {
            lines.push_str(&format!("{uid} {m}\n"));
        }
        let f = fs::OpenOptions::new().append(true).open(&path);
        let mut f = match f {
            Ok(f) => f,
            // Not written yet: write it whole.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return self.persist(dir),
            Err(e) => return Err(io(&path, "open")(e)),
        };
        f.write_all(lines.as_bytes()).map_err(io(&path, "write"))?;
        f.sync_data().map_err(io(&path, "fsync"))?;
        self.journal += modseqs.len();
        self.snapshot = None;
        Ok(())
    }

    fn persist(&mut self, dir: &Path) -> Result<(), IndexError> {
        let mut list = format!(
            "3 V{} N{} G{}\n",
            self.uidvalidity, self.next_uid, self.guid
        );
        let mut modseqs = format!("M {}\n", self.highest_modseq);
        for (uid, m) in &self.msgs {
            list.push_str(&format!("{uid} :{}\n", m.base));
            modseqs.push_str(&format!("{uid} {}\n", m.modseq));
        }
        for (uid, m) in &self.expunged {
            modseqs.push_str(&format!("X {uid} {m}\n"));
        }
        // MODSEQs first: a crash between the two leaves MODSEQs ahead of the UIDs, never behind.
        replace_file(dir, "tern-modseq", modseqs.as_bytes())?;
        replace_file(dir, "dovecot-uidlist", list.as_bytes())?;
        self.journal = 0;
        self.snapshot = None;
        Ok(())
    }

    fn persist_keywords(&self, dir: &Path) -> Result<(), IndexError> {
        let text: String = self
            .keywords
            .iter()
            .enumerate()
            .filter(|(_, k)| !k.is_empty())
            .map(|(i, k)| format!("{i} {k}\n"))
            .collect();
        Ok(replace_file(dir, "dovecot-keywords", text.as_bytes())?)
    }

    fn snapshot(&mut self) -> Arc<Snapshot> {
        if let Some(s) = &self.snapshot {
            return s.clone();
        }
        let s = Arc::new(Snapshot {
            uidvalidity: self.uidvalidity,
            uidnext: self.next_uid,
            highest_modseq: self.highest_modseq,
            messages: self
                .msgs
                .iter()
                .map(|(uid, m)| crate::mailbox::index::MessageMeta {
                    uid: *uid,
                    flags: m.flags.clone(),
                    modseq: m.modseq,
                    internal_date: m.date,
                    size: if m.size == u64::MAX { 0 } else { m.size },
                })
                .collect(),
            recent: self
                .msgs
                .iter()
                .filter(|(u, m)| m.in_new || **u >= self.recent_from)
                .map(|(u, _)| *u)
                .collect(),
        });
        self.snapshot = Some(s.clone());
        s
    }

    fn path(&self, dir: &Path, m: &Msg) -> PathBuf {
        dir.join(if m.in_new { "new" } else { "cur" })
            .join(m.file_name(&self.keywords))
    }

    /// Makes sure every keyword has a letter, writing dovecot-keywords when one is added.
    fn letters_for(&mut self, dir: &Path, flags: &Flags) -> Result<(), IndexError> {
        let mut added = false;
        for k in &flags.keywords {
            if !self.keywords.iter().any(|x| x.eq_ignore_ascii_case(k)) {
                if let Some(free) = self.keywords.iter().position(String::is_empty) {
                    self.keywords[free] = k.clone();
                } else if self.keywords.len() < 26 {
                    self.keywords.push(k.clone());
                } else {
                    return Err(IndexError::Refused("too many keywords in this folder (26)"));
                }
                added = true;
            }
        }
        if added {
            self.persist_keywords(dir)?;
        }
        Ok(())
    }
}

/// A message file's internal date (mtime) and size with CRLF line endings (from `W=`, else by reading it).
fn file_meta(path: &Path, name: &str) -> (i64, u64) {
    let date = unix(mtime(path));
    let wire = base_of(name)
        .split(',')
        .find_map(|f| f.strip_prefix("W="))
        .and_then(|v| v.parse().ok());
    let size = wire.unwrap_or_else(|| {
        fs::read(path)
            .map(|b| crate::mailbox::crlf_len(&b))
            .unwrap_or(0)
    });
    (date, size)
}

impl Maildir {
    /// The Maildir of a folder: the mailbox itself for INBOX, `.Name` (Maildir++) for the others.
    fn index_dir(&self, mailbox: &Mailbox, folder: &str) -> Result<PathBuf, IndexError> {
        let root = self.path_of(mailbox)?;
        let name = crate::mailbox::index::folder_name(folder)?;
        if name == "INBOX" {
            return Ok(root);
        }
        Ok(root.join(format!(".{name}")))
    }

    /// A folder changed by this process outside the index (delivery, POP3): its state is read again at
    /// the next look.
    pub(super) fn changed_outside(&self, dir: &Path) {
        let state = self
            .states
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(dir)
            .cloned();
        if let Some(state) = state {
            state.lock().unwrap_or_else(|p| p.into_inner()).stamp = None;
        }
    }

    fn state_of(&self, dir: &Path) -> Arc<Mutex<FolderState>> {
        let mut cache = self.states.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() > CACHED_FOLDERS {
            cache.retain(|_, s| Arc::strong_count(s) > 1);
        }
        cache.entry(dir.to_path_buf()).or_default().clone()
    }

    /// Runs `f` on a folder's state, synced with the disk first. The folder must exist.
    fn with_folder<T>(
        &self,
        mailbox: &Mailbox,
        folder: &str,
        f: impl FnOnce(&Path, &mut FolderState) -> Result<T, IndexError>,
    ) -> Result<T, IndexError> {
        let dir = self.index_dir(mailbox, folder)?;
        if dir.file_name().is_some_and(|n| n != "INBOX") && !dir.join("cur").is_dir() {
            if folder.eq_ignore_ascii_case("INBOX") {
                self.ensure(&dir)?;
            } else {
                return Err(IndexError::NoFolder(folder.to_string()));
            }
        }
        let state = self.state_of(&dir);
        let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
        s.sync(&dir)?;
        f(&dir, &mut s)
    }

    fn read_subscriptions(root: &Path) -> Option<Vec<String>> {
        let text = fs::read_to_string(root.join("subscriptions")).ok()?;
        Some(
            text.lines()
                .filter(|l| !l.is_empty() && !l.starts_with("V\t"))
                .map(|l| l.split('\t').next().unwrap_or(l).to_string())
                .collect(),
        )
    }

    /// Makes the default folders on the first look at a mailbox, subscribed.
    fn ensure_defaults(&self, root: &Path) -> Result<(), IndexError> {
        self.ensure(root)?;
        if Self::read_subscriptions(root).is_some() {
            return Ok(());
        }
        let _held = self.subscriptions.lock().unwrap_or_else(|p| p.into_inner());
        if Self::read_subscriptions(root).is_some() {
            return Ok(());
        }
        let mut subs = vec!["INBOX".to_string()];
        for (name, _) in crate::mailbox::index::DEFAULT_FOLDERS {
            self.folder_at(root, name)?;
            subs.push(name.to_string());
        }
        let text: String = subs.iter().map(|s| format!("{s}\n")).collect();
        replace_file(root, "subscriptions", text.as_bytes())?;
        Ok(())
    }
}

impl MailIndex for Maildir {
    fn list(&self, mailbox: &Mailbox) -> Result<Vec<FolderEntry>, IndexError> {
        let root = self.path_of(mailbox)?;
        self.ensure_defaults(&root)?;
        let subs = Self::read_subscriptions(&root).unwrap_or_default();
        let mut out: Vec<FolderEntry> = super::folder_dirs(&root)
            .into_iter()
            .map(|(name, _)| FolderEntry {
                subscribed: subs.iter().any(|s| *s == name),
                special_use: crate::mailbox::index::special_use_of(&name),
                exists: true,
                name,
            })
            .collect();
        for s in subs {
            if !out.iter().any(|f| f.name == s) {
                out.push(FolderEntry {
                    name: s,
                    subscribed: true,
                    special_use: None,
                    exists: false,
                });
            }
        }
        Ok(out)
    }

    fn create(&self, mailbox: &Mailbox, name: &str) -> Result<(), IndexError> {
        let name = crate::mailbox::index::folder_name(name)?;
        if name == "INBOX" {
            return Err(IndexError::Exists(name));
        }
        let root = self.path_of(mailbox)?;
        self.ensure_defaults(&root)?;
        let dir = root.join(format!(".{name}"));
        if dir.join("cur").is_dir() {
            return Err(IndexError::Exists(name));
        }
        self.ensure(&dir)?;
        let marker = dir.join("maildirfolder");
        fs::File::create(&marker).map_err(io(&marker, "create"))?;
        Ok(())
    }

    fn delete(&self, mailbox: &Mailbox, name: &str) -> Result<(), IndexError> {
        let name = crate::mailbox::index::folder_name(name)?;
        if name == "INBOX" {
            return Err(IndexError::Refused("INBOX cannot be deleted"));
        }
        let root = self.path_of(mailbox)?;
        let dir = root.join(format!(".{name}"));
        if !dir.join("cur").is_dir() {
            return Err(IndexError::NoFolder(name));
        }
        // Out of sight first (one rename), then removed: a crash never leaves half a folder visible.
        let n = UNIQUE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let trash = root.join(format!("..deleted-{}-{n}", crate::clock::unix_micros()));
        fs::rename(&dir, &trash).map_err(io(&dir, "rename"))?;
        sync_dir(&root)?;
        let _ = fs::remove_dir_all(&trash);
        self.known
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&dir);
        self.states
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&dir);
        let _ = fs::remove_file(root.join("maildirsize"));
        Ok(())
    }

    fn rename(&self, mailbox: &Mailbox, from: &str, to: &str) -> Result<(), IndexError> {
        let from = crate::mailbox::index::folder_name(from)?;
        let to = crate::mailbox::index::folder_name(to)?;
        let root = self.path_of(mailbox)?;
        if to == "INBOX" {
            return Err(IndexError::Exists(to));
        }
        let target = root.join(format!(".{to}"));
        if target.join("cur").is_dir() {
            return Err(IndexError::Exists(to));
        }
        if from == "INBOX" {
            return crate::mailbox::index::rename_inbox(self, mailbox, &to);
        }
        let source = root.join(format!(".{from}"));
        if !source.join("cur").is_dir() {
            return Err(IndexError::NoFolder(from));
        }
        // The folder and every folder below it.
        let prefix = format!(".{from}.");
        let mut moves = vec![(source.clone(), target.clone())];
        if let Ok(entries) = fs::read_dir(&root) {
            for e in entries.flatten() {
                if let Some(n) = e.file_name().to_str()
                    && let Some(rest) = n.strip_prefix(&prefix)
                {
                    moves.push((e.path(), root.join(format!(".{to}.{rest}"))));
                }
            }
        }
        for (a, b) in &moves {
            fs::rename(a, b).map_err(io(a, "rename"))?;
        }
        sync_dir(&root)?;
        let mut states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        let mut known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        for (a, _) in &moves {
            states.remove(a);
            known.remove(a);
        }
        drop((states, known));
        let _held = self.subscriptions.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(subs) = Self::read_subscriptions(&root) {
            let text: String = subs
                .iter()
                .map(|s| {
                    if *s == from {
                        to.clone()
                    } else if let Some(rest) = s.strip_prefix(&format!("{from}.")) {
                        format!("{to}.{rest}")
                    } else {
                        s.clone()
                    }
                })
                .map(|s| format!("{s}\n"))
                .collect();
            replace_file(&root, "subscriptions", text.as_bytes())?;
        }
        Ok(())
    }

    fn subscribe(&self, mailbox: &Mailbox, name: &str, on: bool) -> Result<(), IndexError> {
        let name = crate::mailbox::index::folder_name(name)?;
        let root = self.path_of(mailbox)?;
        self.ensure_defaults(&root)?;
        let _held = self.subscriptions.lock().unwrap_or_else(|p| p.into_inner());
        let mut subs = Self::read_subscriptions(&root).unwrap_or_default();
        subs.retain(|s| *s != name);
        if on {
            subs.push(name);
        }
        let text: String = subs.iter().map(|s| format!("{s}\n")).collect();
        Ok(replace_file(&root, "subscriptions", text.as_bytes())?)
    }

    fn snapshot(
        &self,
        mailbox: &Mailbox,
        folder: &str,
        claim_recent: bool,
    ) -> Result<Arc<Snapshot>, IndexError> {
        self.with_folder(mailbox, folder, |dir, s| {
            let unclaimed =
                s.msgs.range(s.recent_from..).next().is_some() || s.msgs.values().any(|m| m.in_new);
            if !claim_recent || !unclaimed {
                return Ok(s.snapshot());
            }
            let mut claimed: Vec<u32> = s.msgs.range(s.recent_from..).map(|(u, _)| *u).collect();
            s.recent_from = s.next_uid;
            // new/ to cur/, as a Maildir reader does once it has seen a message.
            let uids: Vec<u32> = s
                .msgs
                .iter()
                .filter(|(_, m)| m.in_new)
                .map(|(u, _)| *u)
                .collect();
            for uid in uids {
                let Some(m) = s.msgs.get(&uid).cloned() else {
                    continue;
                };
                let from = s.path(dir, &m);
                let mut moved = m.clone();
                moved.in_new = false;
                let to = s.path(dir, &moved);
                match fs::rename(&from, &to) {
                    Ok(()) => {
                        if let Some(x) = s.msgs.get_mut(&uid) {
                            x.in_new = false;
                        }
                        claimed.push(uid);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io(&from, "rename")(e)),
                }
            }
            sync_dir(&dir.join("cur"))?;
            sync_dir(&dir.join("new"))?;
            s.adopt(dir);
            s.snapshot = None;
            claimed.sort();
            claimed.dedup();
            let mut own = (*s.snapshot()).clone();
            own.recent = claimed;
            Ok(Arc::new(own))
        })
    }

    fn read(
        &self,
        mailbox: &Mailbox,
        folder: &str,
        uid: u32,
    ) -> Result<Option<Vec<u8>>, IndexError> {
        for attempt in 0..2 {
            let path = self.with_folder(mailbox, folder, |dir, s| {
                if attempt == 1 {
                    s.stamp = None;
                    s.sync(dir)?;
                }
                Ok(s.msgs.get(&uid).map(|m| s.path(dir, m)))
            })?;
            let Some(path) = path else {
                return Ok(None);
            };
            match fs::read(&path) {
                Ok(b) => return Ok(Some(crate::mailbox::crlf(&b))),
                // Renamed by someone else since the last look: look again.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io(&path, "read")(e)),
            }
        }
        Ok(None)
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
        let result = self.with_folder(mailbox, folder, |dir, s| {
            if op != FlagOp::Remove {
                s.letters_for(dir, flags)?;
            }
            let mut out = StoreResult::default();
            let mut plan: Vec<(u32, Msg, Msg)> = Vec::new();
            for &uid in uids {
                let Some(m) = s.msgs.get(&uid).cloned() else {
                    continue;
                };
                if unchanged_since.is_some_and(|u| m.modseq > u) {
                    out.modified.push(uid);
                    continue;
                }
                let mut next = m.flags.clone();
                match op {
                    FlagOp::Replace => next = flags.clone(),
                    FlagOp::Add => next.add(flags),
                    FlagOp::Remove => next.remove(flags),
                }
                if next.same_as(&m.flags) {
                    // Nothing changes; UNCHANGEDSINCE still reports the message as stored.
                    out.stored.push(Stored {
                        uid,
                        flags: m.flags.clone(),
                        modseq: m.modseq,
                    });
                    continue;
                }
                let mut changed = m.clone();
                changed.flags = next;
                changed.in_new = false;
                plan.push((uid, m, changed));
            }
            if plan.is_empty() {
                return Ok(out);
            }
            // The new MODSEQs reach the disk before the new names: a crash between the two leaves a MODSEQ
            // raised for flags that did not change (a client looks again), never changed flags under an
            // old MODSEQ (a client resyncing with CHANGEDSINCE would miss them).
            let mut modseqs = Vec::with_capacity(plan.len());
            for (uid, _, changed) in &mut plan {
                changed.modseq = s.bump();
                modseqs.push((*uid, changed.modseq));
            }
            s.journal_modseqs(dir, &modseqs)?;
            for (uid, m, changed) in plan {
                let (from, to) = (s.path(dir, &m), s.path(dir, &changed));
                match fs::rename(&from, &to) {
                    Ok(()) => {}
                    // Gone under another program's hands: the next look at the folder expunges it.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(io(&from, "rename")(e)),
                }
                out.stored.push(Stored {
                    uid,
                    flags: changed.flags.clone(),
                    modseq: changed.modseq,
                });
                s.msgs.insert(uid, changed);
            }
            sync_dir(&dir.join("cur"))?;
            s.adopt(dir);
            out.stored.sort_by_key(|x| x.uid);
            Ok(out)
        })?;
        self.notifier.notify(mailbox);
        Ok(result)
    }

    fn append(
        &self,
        mailbox: &Mailbox,
        folder: &str,
        messages: Vec<NewMessage>,
    ) -> Result<(u32, Vec<u32>), IndexError> {
        let root = self.path_of(mailbox)?;
        let result = self.with_folder(mailbox, folder, |dir, s| {
            let mut placed = Vec::new();
            for m in &messages {
                s.letters_for(dir, &m.flags)?;
                let body = crate::mailbox::lf(&m.body);
                let wire = crate::mailbox::crlf_len(&body);
                let msg = Msg {
                    base: new_base(body.len(), wire),
                    in_new: false,
                    other: String::new(),
                    flags: m.flags.clone(),
                    modseq: 0,
                    date: m.internal_date,
                    size: wire,
                };
                let name = msg.file_name(&s.keywords);
                let tmp = dir.join("tmp").join(&name);
                let mut f = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&tmp)
                    .map_err(io(&tmp, "create"))?;
                f.write_all(&body).map_err(io(&tmp, "write"))?;
                f.sync_data().map_err(io(&tmp, "fsync"))?;
                let time = SystemTime::UNIX_EPOCH
                    + std::time::Duration::from_secs(m.internal_date.max(0) as u64);
                let _ = f.set_modified(time);
                drop(f);
                let target = dir.join("cur").join(&name);
                fs::rename(&tmp, &target).map_err(io(&target, "rename"))?;
                placed.push((msg, body.len() as i64));
            }
            sync_dir(&dir.join("cur"))?;
            let mut uids = Vec::new();
            let mut bytes = 0;
            for (mut msg, size) in placed {
                let uid = s.next_uid;
                s.next_uid += 1;
                msg.modseq = s.bump();
                s.by_base.insert(msg.base.clone(), uid);
                s.msgs.insert(uid, msg);
                uids.push(uid);
                bytes += size;
            }
            s.persist(dir)?;
            s.adopt(dir);
            Ok((s.uidvalidity, uids, bytes))
        })?;
        self.account(&root, result.2, result.1.len() as i64);
        self.notifier.notify(mailbox);
        Ok((result.0, result.1))
    }

    fn expunge(&self, mailbox: &Mailbox, folder: &str, uids: &[u32]) -> Result<(), IndexError> {
        let root = self.path_of(mailbox)?;
        let (bytes, count) = self.with_folder(mailbox, folder, |dir, s| {
            let (mut bytes, mut count) = (0i64, 0i64);
            let mut touched = false;
            for &uid in uids {
                let Some(m) = s.msgs.get(&uid).cloned() else {
                    continue;
                };
                let path = s.path(dir, &m);
                let size = fs::metadata(&path).map_or(0, |x| x.len() as i64);
                match fs::remove_file(&path) {
                    Ok(()) => {
                        bytes += size;
                        count += 1;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io(&path, "unlink")(e)),
                }
                s.forget(uid);
                touched = true;
            }
            if touched {
                sync_dir(&dir.join("cur"))?;
                sync_dir(&dir.join("new"))?;
                s.persist(dir)?;
                s.adopt(dir);
            }
            Ok((bytes, count))
        })?;
        if count > 0 {
            self.account(&root, -bytes, -count);
        }
        self.notifier.notify(mailbox);
        Ok(())
    }

    fn vanished_since(
        &self,
        mailbox: &Mailbox,
        folder: &str,
        modseq: u64,
    ) -> Result<Vec<u32>, IndexError> {
        self.with_folder(mailbox, folder, |_, s| {
            let mut v: Vec<u32> = s
                .expunged
                .iter()
                .filter(|(_, m)| *m > modseq)
                .map(|(u, _)| *u)
                .collect();
            v.sort();
            v.dedup();
            Ok(v)
        })
    }

    fn watch(&self, mailbox: &Mailbox) -> tokio::sync::watch::Receiver<u64> {
        self.notifier.subscribe(mailbox)
    }
}
