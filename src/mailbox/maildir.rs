//! Maildir delivery (<https://cr.yp.to/proto/maildir.html>): write tmp/NAME, fsync it, rename it into new/,
//! fsync new/. The layout is `<data_dir>/mail/<domain>/<local-part>/{tmp,new,cur}`, which Dovecot, mutt and any
//! Maildir reader open as they are.
//!
//! A batch fsyncs each file but each `new/` folder only once, after all its renames.

use super::{Delivery, MailboxError, MailboxStore};
use crate::smtp::Mailbox;
use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

mod index;
mod quota;

pub struct Maildir {
    root: PathBuf,
    /// Maildirs known to exist, so that the common case costs no mkdir calls.
    known: Mutex<HashSet<PathBuf>>,
    /// The IMAP state of the folders looked at lately.
    states: Mutex<std::collections::HashMap<PathBuf, std::sync::Arc<Mutex<index::FolderState>>>>,
    notifier: super::index::Notifier,
    /// Held while a `subscriptions` file is read, changed and written back, so that two sessions
    /// subscribing at once (or logging in for the first time at once) do not lose each other's change.
    subscriptions: Mutex<()>,
    /// One fsync of a folder for every delivery that linked a file into it meanwhile.
    dirsync: super::dirsync::DirSync,
}

fn err<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(std::io::Error) -> MailboxError + 'a {
    move |source| MailboxError {
        path: path.display().to_string(),
        op,
        source,
    }
}

impl Maildir {
    /// Mailboxes live under `root` (data_dir/mail).
    pub fn new(root: PathBuf) -> Maildir {
        Maildir {
            root,
            known: Mutex::new(HashSet::new()),
            states: Mutex::new(std::collections::HashMap::new()),
            subscriptions: Mutex::new(()),
            dirsync: Default::default(),
            notifier: super::index::Notifier::default(),
        }
    }

    /// The Maildir of a mailbox: `<root>/<domain>/<local-part>`. Whatever the caller, a name that could
    /// leave the folder (`/`, `..`, a leading dot, quotes, backslashes, control characters, an address
    /// literal) is refused here, so no path is ever built from an unchecked address.
    pub fn path_of(&self, mailbox: &Mailbox) -> Result<PathBuf, MailboxError> {
        let local = mailbox.local_part().to_lowercase();
        let domain = mailbox.domain().as_str().to_lowercase();
        for part in [&local, &domain] {
            if !super::safe_name(part) {
                return Err(MailboxError {
                    path: format!("{}/{domain}/{local}", self.root.display()),
                    op: "resolve",
                    source: std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        format!("{part:?} is not a safe mailbox folder name"),
                    ),
                });
            }
        }
        Ok(self.root.join(domain).join(local))
    }

    /// Creates the Maildir and the folders above it, fsyncing each parent whose entries changed.
    fn ensure(&self, dir: &Path) -> Result<(), MailboxError> {
        if self.known.lock().map(|k| k.contains(dir)).unwrap_or(false) {
            return Ok(());
        }
        let mut created = Vec::new();
        let mut missing = Vec::new();
        let mut p = dir.to_path_buf();
        while !p.exists() {
            missing.push(p.clone());
            if !p.pop() {
                break;
            }
        }
        for m in missing.iter().rev() {
            match fs::create_dir(m) {
                Ok(()) => created.push(m.clone()),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(err(m, "mkdir")(e)),
            }
        }
        for sub in ["tmp", "new", "cur"] {
            let s = dir.join(sub);
            match fs::create_dir(&s) {
                Ok(()) => created.push(s),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(err(&s, "mkdir")(e)),
            }
        }
        // A new folder is durable once the folder holding its name is fsynced.
        let mut parents: Vec<PathBuf> = created
            .iter()
            .filter_map(|c| c.parent().map(Path::to_path_buf))
            .collect();
        parents.sort();
        parents.dedup();
        for parent in parents {
            sync_dir(&parent)?;
        }
        if let Ok(mut k) = self.known.lock() {
            k.insert(dir.to_path_buf());
        }
        Ok(())
    }

    /// Whether an earlier attempt already put this message into new/ or (read by the user since) cur/.
    fn already_delivered(dir: &Path, unique: &str) -> bool {
        let matches = |name: &str| {
            name.strip_prefix(unique).is_some_and(|rest| {
                rest.is_empty() || rest.starts_with(',') || rest.starts_with(':')
            })
        };
        ["new", "cur"].iter().any(|sub| {
            fs::read_dir(dir.join(sub))
                .map(|entries| {
                    entries
                        .flatten()
                        .any(|e| e.file_name().to_str().is_some_and(matches))
                })
                .unwrap_or(false)
        })
    }

    /// The Maildir++ folder `.Name` inside a mailbox (Dovecot's layout), marked with a `maildirfolder` file.
    fn folder_of(&self, mailbox: &Mailbox, folder: &str) -> Result<PathBuf, MailboxError> {
        self.folder_at(&self.path_of(mailbox)?, folder)
    }

    fn folder_at(&self, root: &Path, folder: &str) -> Result<PathBuf, MailboxError> {
        self.ensure(root)?;
        // A valid IMAP folder name (levels split by '.', as Maildir++ has them) is kept as it is, so an
        // imported hierarchy stays a hierarchy; anything else is reduced to safe characters.
        let name: String = match super::index::folder_name(folder) {
            Ok(n) if n != "INBOX" => n,
            _ => folder
                .chars()
                .filter(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | ' '))
                .collect(),
        };
        let dir = root.join(format!(".{name}"));
        self.ensure(&dir)?;
        let marker = dir.join("maildirfolder");
        if !marker.exists() {
            File::create(&marker).map_err(err(&marker, "create"))?;
        }
        Ok(dir)
    }

    fn write_one(&self, item: &Delivery) -> Result<Option<PathBuf>, MailboxError> {
        let dir = match item.folder.as_deref().filter(|f| !f.is_empty()) {
            Some(folder) => self.folder_of(&item.mailbox, folder)?,
            None => {
                let dir = self.path_of(&item.mailbox)?;
                self.ensure(&dir)?;
                dir
            }
        };
        if item.check_existing && Self::already_delivered(&dir, &item.unique) {
            return Ok(Some(dir.join("new")));
        }
        // Dovecot's W= is the size with CRLF line endings: what POP3 and IMAP report, without a read.
        let (size, lines) = item.stored_size();
        let name = format!("{},S={size},W={}", item.unique, size + lines);
        // A copy with flags goes to cur/ with them in its name (Maildir keeps flags nowhere else).
        let (sub, name) = if item.flags.system == 0 && item.flags.keywords.is_empty() {
            ("new", name)
        } else {
            let mut letters: Vec<char> = super::index::flag::NAMES
                .iter()
                .filter(|(bit, _)| item.flags.system & bit != 0)
                .filter_map(|(bit, _)| match *bit {
                    super::index::flag::DRAFT => Some('D'),
                    super::index::flag::FLAGGED => Some('F'),
                    super::index::flag::ANSWERED => Some('R'),
                    super::index::flag::SEEN => Some('S'),
                    super::index::flag::DELETED => Some('T'),
                    _ => None,
                })
                .collect();
            letters.extend(keyword_letters(&dir, &item.flags.keywords)?.chars());
            letters.sort();
            letters.dedup();
            (
                "cur",
                format!("{name}:2,{}", letters.into_iter().collect::<String>()),
            )
        };
        let new = dir.join(sub).join(&name);
        let written = size as i64;
        if write_unnamed_then_link(&dir.join(sub), &new, &|f| item.write_to(f)).is_err() {
            let tmp = dir.join("tmp").join(&name);
            let create = || {
                OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(&tmp)
            };
            let mut f = match create() {
                // The Maildir was removed while we ran (an admin's rm -r, a restore): made again, as
                // the user still exists, rather than deferring every message until a restart.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    tracing::warn!(path = %dir.display(), "maildir vanished; creating it again");
                    if let Ok(mut k) = self.known.lock() {
                        k.retain(|d| !d.starts_with(&dir) && !dir.starts_with(d));
                    }
                    self.ensure(&dir)?;
                    create()
                }
                r => r,
            }
            .map_err(err(&tmp, "create"))?;
            item.write_to(&mut f).map_err(err(&tmp, "write"))?;
            f.sync_data().map_err(err(&tmp, "fsync"))?;
            drop(f);
            fs::rename(&tmp, &new).map_err(err(&new, "rename"))?;
        }
        self.account(&self.path_of(&item.mailbox)?, written, 1);
        Ok(Some(dir.join(sub)))
    }
}

/// The unnamed-file path was not available here; use tmp/ and rename.
struct Fallback;

/// Linux O_TMPFILE: the file is written and fsynced with no name at all, then linked into new/ complete. It
/// has the atomicity of tmp/ + rename, and the slow part (allocating the inode) runs without holding the
/// lock of a shared folder. Any failure before the link falls back to tmp/ + rename.
fn write_unnamed_then_link(
    new_dir: &Path,
    target: &Path,
    content: &dyn Fn(&mut File) -> std::io::Result<()>,
) -> Result<(), Fallback> {
    use std::os::fd::AsRawFd;
    use std::os::unix::ffi::OsStrExt;
    let mut f = OpenOptions::new()
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_TMPFILE)
        .open(new_dir)
        .map_err(|_| Fallback)?;
    content(&mut f).map_err(|_| Fallback)?;
    f.sync_data().map_err(|_| Fallback)?;
    let proc_path =
        std::ffi::CString::new(format!("/proc/self/fd/{}", f.as_raw_fd())).map_err(|_| Fallback)?;
    let target_c = std::ffi::CString::new(target.as_os_str().as_bytes()).map_err(|_| Fallback)?;
    // SAFETY: both paths are valid NUL-terminated strings that outlive the call; the descriptor is open.
    let rc = unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            proc_path.as_ptr(),
            libc::AT_FDCWD,
            target_c.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    match std::io::Error::last_os_error().raw_os_error() {
        // The same name is already there: this very copy was delivered by an earlier attempt.
        Some(libc::EEXIST) => Ok(()),
        _ => Err(Fallback),
    }
}

fn sync_dir(dir: &Path) -> Result<(), MailboxError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(err(dir, "fsync"))
}

/// The Maildir of each folder of a mailbox: ("INBOX", root) and (".Name" → "Name", root/.Name).
fn folder_dirs(root: &Path) -> Vec<(String, PathBuf)> {
    let mut out = vec![("INBOX".to_string(), root.to_path_buf())];
    if let Ok(entries) = fs::read_dir(root) {
        let mut extra: Vec<(String, PathBuf)> = entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_str()?.strip_prefix('.')?.to_string();
                (e.path().join("cur").is_dir() && !name.is_empty()).then(|| (name, e.path()))
            })
            .collect();
        extra.sort();
        out.extend(extra);
    }
    out
}

/// The flag letters of a Maildir file name (`...:2,RS`).
fn flags_of(name: &str) -> String {
    let mut f: Vec<char> = name
        .rsplit_once(":2,")
        .map(|(_, f)| f.chars().filter(char::is_ascii_uppercase).collect())
        .unwrap_or_default();
    f.sort();
    f.dedup();
    f.into_iter().collect()
}

impl Maildir {
    /// Every message of the Maildir at `root` and its folders, oldest first per folder.
    pub fn for_each_at(
        &self,
        root: &Path,
        f: &mut dyn FnMut(super::StoredMessage) -> Result<(), MailboxError>,
    ) -> Result<(), MailboxError> {
        for (folder, dir) in folder_dirs(root) {
            // Keyword letters a-z, as Dovecot (and tern) record them in dovecot-keywords.
            let letters: Vec<(char, String)> = fs::read_to_string(dir.join("dovecot-keywords"))
                .unwrap_or_default()
                .lines()
                .filter_map(|l| {
                    let (i, name) = l.split_once(' ')?;
                    let i: u8 = i.parse().ok().filter(|i| *i < 26)?;
                    Some(((b'a' + i) as char, name.trim().to_string()))
                })
                .filter(|(_, n)| !n.is_empty())
                .collect();
            let mut files: Vec<(u64, String, PathBuf, bool)> = Vec::new();
            for (sub, recent) in [("cur", false), ("new", true)] {
                let Ok(entries) = fs::read_dir(dir.join(sub)) else {
                    continue;
                };
                for e in entries.flatten() {
                    let date = e
                        .metadata()
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                        .map_or(0, |d| d.as_secs());
                    files.push((
                        date,
                        e.file_name().to_string_lossy().to_string(),
                        e.path(),
                        recent,
                    ));
                }
            }
            files.sort();
            for (date, name, path, recent) in files {
                let body = fs::read(&path).map_err(err(&path, "read"))?;
                let keywords = name
                    .rsplit_once(":2,")
                    .map(|(_, f)| {
                        letters
                            .iter()
                            .filter(|(c, _)| f.contains(*c))
                            .map(|(_, k)| k.clone())
                            .collect()
                    })
                    .unwrap_or_default();
                f(super::StoredMessage {
                    folder: folder.clone(),
                    flags: flags_of(&name),
                    keywords,
                    recent,
                    internal_date: date,
                    body,
                })?;
            }
        }
        Ok(())
    }
}

static IMPORT_COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The uid part of a Maildir file name: up to the `:2,` info (and flags).
fn uid_part(name: &str) -> &str {
    name.split_once(':').map_or(name, |(u, _)| u)
}

/// The `W=` (CRLF size) in a Maildir file name, when it has one.
fn wire_size_of(name: &str) -> Option<u64> {
    uid_part(name)
        .split(',')
        .find_map(|f| f.strip_prefix("W="))
        .and_then(|v| v.parse().ok())
}

impl Maildir {
    /// The folder's Maildir: the mailbox itself for INBOX, `.Name` for a folder.
    fn folder_dir(&self, mailbox: &Mailbox, folder: &str) -> Result<PathBuf, MailboxError> {
        let root = self.path_of(mailbox)?;
        if folder.eq_ignore_ascii_case("INBOX") {
            return Ok(root);
        }
        if !super::safe_name(folder) {
            return Err(err(&root, "folder")(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{folder:?} is not a safe folder name"),
            )));
        }
        Ok(root.join(format!(".{folder}")))
    }

    /// Files of a folder (new/ and cur/) with their uid, path and modification time.
    fn files(&self, dir: &Path) -> Vec<(String, PathBuf, String, std::time::SystemTime)> {
        let mut out = Vec::new();
        for sub in ["cur", "new"] {
            let Ok(entries) = fs::read_dir(dir.join(sub)) else {
                continue;
            };
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') {
                    continue;
                }
                let mtime = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .unwrap_or(std::time::UNIX_EPOCH);
                out.push((super::uid_of(uid_part(&name)), e.path(), name, mtime));
            }
        }
        out.sort_by(|a, b| (a.3, &a.2).cmp(&(b.3, &b.2)));
        out
    }
}

impl MailboxStore for Maildir {
    fn entries(&self, mailbox: &Mailbox, folder: &str) -> Result<Vec<super::Entry>, MailboxError> {
        let dir = self.folder_dir(mailbox, folder)?;
        let mut out = Vec::new();
        for (uid, path, name, _) in self.files(&dir) {
            let size = match wire_size_of(&name) {
                Some(w) => w,
                // A file another program put there: read once to count its lines.
                None => match fs::read(&path) {
                    Ok(b) => crate::pop3::wire_size(&b),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(err(&path, "read")(e)),
                },
            };
            out.push(super::Entry { uid, size });
        }
        Ok(out)
    }

    fn read(
        &self,
        mailbox: &Mailbox,
        folder: &str,
        uid: &str,
    ) -> Result<Option<Vec<u8>>, MailboxError> {
        let dir = self.folder_dir(mailbox, folder)?;
        for (u, path, _, _) in self.files(&dir) {
            if u == uid {
                return match fs::read(&path) {
                    Ok(b) => Ok(Some(b)),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(err(&path, "read")(e)),
                };
            }
        }
        Ok(None)
    }

    fn remove(&self, mailbox: &Mailbox, folder: &str, uids: &[String]) -> Result<(), MailboxError> {
        let dir = self.folder_dir(mailbox, folder)?;
        let mut touched = Vec::new();
        let root = self.path_of(mailbox)?;
        for (u, path, _, _) in self.files(&dir) {
            if uids.contains(&u) {
                let size = fs::metadata(&path).map_or(0, |m| m.len() as i64);
                match fs::remove_file(&path) {
                    Ok(()) => {
                        self.account(&root, -size, -1);
                        touched.push(path.parent().map(Path::to_path_buf).unwrap_or_default())
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(err(&path, "unlink")(e)),
                }
            }
        }
        touched.sort();
        touched.dedup();
        for d in touched {
            if let Some(folder) = d.parent() {
                self.changed_outside(folder);
            }
            sync_dir(&d)?;
        }
        self.notifier.notify(mailbox);
        Ok(())
    }

    fn folders(&self, mailbox: &Mailbox) -> Result<Vec<super::FolderInfo>, MailboxError> {
        let mut out = Vec::new();
        for (name, dir) in folder_dirs(&self.path_of(mailbox)?) {
            let mut info = super::FolderInfo {
                name,
                messages: 0,
                bytes: 0,
            };
            for sub in ["new", "cur"] {
                let Ok(entries) = fs::read_dir(dir.join(sub)) else {
                    continue;
                };
                for e in entries.flatten() {
                    info.messages += 1;
                    info.bytes += e.metadata().map(|m| m.len()).unwrap_or(0);
                }
            }
            out.push(info);
        }
        Ok(out)
    }

    fn for_each(
        &self,
        mailbox: &Mailbox,
        f: &mut dyn FnMut(super::StoredMessage) -> Result<(), MailboxError>,
    ) -> Result<(), MailboxError> {
        self.for_each_at(&self.path_of(mailbox)?, f)
    }

    fn import(
        &self,
        mailbox: &Mailbox,
        messages: &[super::StoredMessage],
    ) -> Result<(), MailboxError> {
        self.import_at(&self.path_of(mailbox)?, messages)
    }

    fn usage(&self, mailbox: &Mailbox) -> Result<super::Usage, MailboxError> {
        self.usage_of(mailbox)
    }

    fn deliver(&self, items: &[Delivery]) -> Vec<Result<(), MailboxError>> {
        self.deliver_batch(items)
    }

    fn index(&self) -> Option<&dyn super::index::MailIndex> {
        Some(self)
    }
}

/// The letters (a-z) of these keywords in the folder's `dovecot-keywords`, adding the ones it lacks while
/// there is room (26 in all, as Dovecot has it; keywords past that are dropped).
fn keyword_letters(dir: &Path, keywords: &[String]) -> Result<String, MailboxError> {
    if keywords.is_empty() {
        return Ok(String::new());
    }
    let file = dir.join("dovecot-keywords");
    let mut slots: Vec<Option<String>> = vec![None; 26];
    for line in fs::read_to_string(&file).unwrap_or_default().lines() {
        if let Some((i, name)) = line.split_once(' ')
            && let Ok(i) = i.parse::<usize>()
            && i < 26
            && !name.trim().is_empty()
        {
            slots[i] = Some(name.trim().to_string());
        }
    }
    let mut out = String::new();
    let mut added = false;
    for k in keywords {
        let at = match slots
            .iter()
            .position(|s| s.as_deref().is_some_and(|s| s.eq_ignore_ascii_case(k)))
        {
            Some(i) => Some(i),
            None => slots.iter().position(Option::is_none).inspect(|&i| {
                slots[i] = Some(k.clone());
                added = true;
            }),
        };
        if let Some(i) = at {
            out.push((b'a' + i as u8) as char);
        }
    }
    if added {
        let text: String = slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().map(|s| format!("{i} {s}\n")))
            .collect();
        let tmp = dir.join(format!(".dovecot-keywords.{}.tmp", std::process::id()));
        fs::write(&tmp, text).map_err(err(&tmp, "write"))?;
        File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(err(&tmp, "fsync"))?;
        fs::rename(&tmp, &file).map_err(err(&file, "rename"))?;
    }
    Ok(out)
}

impl Maildir {
    /// Writes messages into the Maildir at `root` (folders as Maildir++ `.Name`), flags and dates kept.
    pub fn import_at(
        &self,
        root: &Path,
        messages: &[super::StoredMessage],
    ) -> Result<(), MailboxError> {
        let mut dirs = Vec::new();
        for m in messages {
            let dir = if m.folder == "INBOX" {
                root.to_path_buf()
            } else {
                self.folder_at(root, &m.folder)?
            };
            self.ensure(&dir)?;
            let n = IMPORT_COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let unique = format!(
                "{}.I{}_{n}.tern,S={}",
                m.internal_date,
                crate::clock::unix_micros(),
                m.body.len()
            );
            // new/ holds messages no client has seen, which have no flags yet (Maildir keeps flags in
            // cur/ names only); a message with flags goes to cur/ even if no session has looked at it.
            let (sub, name) = if m.recent && m.flags.is_empty() && m.keywords.is_empty() {
                ("new", unique)
            } else {
                let mut letters: Vec<char> = m.flags.chars().collect();
                letters.extend(keyword_letters(&dir, &m.keywords)?.chars());
                letters.sort();
                letters.dedup();
                let letters: String = letters.into_iter().collect();
                ("cur", format!("{unique}:2,{letters}"))
            };
            let tmp = dir.join("tmp").join(&name);
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(err(&tmp, "create"))?;
            file.write_all(&m.body).map_err(err(&tmp, "write"))?;
            file.sync_data().map_err(err(&tmp, "fsync"))?;
            drop(file);
            let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(m.internal_date);
            let _ = File::options()
                .write(true)
                .open(&tmp)
                .and_then(|f| f.set_modified(time));
            let target = dir.join(sub).join(&name);
            fs::rename(&tmp, &target).map_err(err(&target, "rename"))?;
            dirs.push(dir.join(sub));
        }
        dirs.sort();
        dirs.dedup();
        for d in dirs {
            sync_dir(&d)?;
        }
        // Imported messages are counted by the next scan.
        let _ = fs::remove_file(root.join("maildirsize"));
        Ok(())
    }
}

impl Maildir {
    fn deliver_batch(&self, items: &[Delivery]) -> Vec<Result<(), MailboxError>> {
        let mut results: Vec<Result<Option<PathBuf>, MailboxError>> =
            items.iter().map(|i| self.write_one(i)).collect();
        let mut dirs: Vec<PathBuf> = results
            .iter()
            .filter_map(|r| r.as_ref().ok().cloned().flatten())
            .collect();
        dirs.sort();
        dirs.dedup();
        for d in dirs {
            // IMAP sessions of this folder must read it again (not only after a second).
            if let Some(folder) = d.parent() {
                self.changed_outside(folder);
            }
            if let Err(e) = self.dirsync.sync(&d).map_err(err(&d, "fsync")) {
                // The renames into this folder are not known to be durable: report each as failed.
                for r in results.iter_mut() {
                    if matches!(r, Ok(Some(p)) if *p == d) {
                        *r = Err(MailboxError {
                            path: e.path.clone(),
                            op: e.op,
                            source: std::io::Error::new(e.source.kind(), e.source.to_string()),
                        });
                    }
                }
            }
        }
        for (item, r) in items.iter().zip(&results) {
            if r.is_ok() {
                self.notifier.notify(&item.mailbox);
            }
        }
        results.into_iter().map(|r| r.map(|_| ())).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn item(unique: &str, check: bool) -> Delivery {
        Delivery {
            mailbox: Mailbox::parse("Alice@example.test", false).unwrap(),
            folder: None,
            unique: unique.into(),
            prefix: b"Return-Path: <a@b.test>\n".to_vec(),
            body: Arc::new(b"Subject: x\n\nhello\n".to_vec()),
            tail: None,
            check_existing: check,
            flags: Default::default(),
        }
    }

    #[test]
    fn modseqs_are_journaled_and_read_back_after_a_restart() {
        use crate::mailbox::index::{FlagOp, Flags, MailIndex, NewMessage, flag};
        let dir = tempfile::tempdir().unwrap();
        let m = Mailbox::parse("alice@example.test", false).unwrap();
        let seen = Flags {
            system: flag::SEEN,
            keywords: vec![],
        };
        let (before, after) = {
            let md = Maildir::new(dir.path().join("mail"));
            let new = |n: u8| NewMessage {
                body: format!("Subject: {n}\r\n\r\nx\r\n").into_bytes(),
                flags: Flags::default(),
                internal_date: 1_700_000_000,
            };
            let (_, uids) = md.append(&m, "INBOX", vec![new(1), new(2)]).unwrap();
            let file = dir.path().join("mail/example.test/alice/tern-modseq");
            let whole = std::fs::read_to_string(&file).unwrap();
            let r = md
                .store(&m, "INBOX", &uids[..1], FlagOp::Add, &seen, None)
                .unwrap();
            // One line appended, the rest of the file untouched.
            let text = std::fs::read_to_string(&file).unwrap();
            assert_eq!(text, format!("{whole}{} {}\n", uids[0], r.stored[0].modseq));
            let before = md.snapshot(&m, "INBOX", false).unwrap();
            // Many more changes: the file is written whole again, never without bound.
            for i in 0..1100 {
                let op = if i % 2 == 0 {
                    FlagOp::Remove
                } else {
                    FlagOp::Add
                };
                md.store(&m, "INBOX", &uids[1..], op, &seen, None).unwrap();
            }
            let lines = std::fs::read_to_string(&file).unwrap().lines().count();
            assert!(lines < 1100, "{lines} lines");
            (before, md.snapshot(&m, "INBOX", false).unwrap())
        };
        assert!(after.highest_modseq > before.highest_modseq);
        // A new process reads the same UIDs, flags and MODSEQs.
        let md = Maildir::new(dir.path().join("mail"));
        let again = md.snapshot(&m, "INBOX", false).unwrap();
        assert_eq!(again.highest_modseq, after.highest_modseq);
        for (a, b) in again.messages.iter().zip(&after.messages) {
            assert_eq!((a.uid, a.modseq), (b.uid, b.modseq));
            assert!(a.flags.same_as(&b.flags));
        }
    }

    #[test]
    fn maildirsize_keeps_usage_without_a_scan() {
        let dir = tempfile::tempdir().unwrap();
        let md = Maildir::new(dir.path().join("mail"));
        assert!(md.deliver(&[item("1.Q1_0.mx", false)])[0].is_ok());
        let m = Mailbox::parse("alice@example.test", false).unwrap();
        // The first look scans and writes the file; later deliveries add a line each.
        assert_eq!(
            md.usage(&m).unwrap(),
            crate::mailbox::Usage {
                bytes: 42,
                messages: 1
            }
        );
        let file = dir.path().join("mail/example.test/alice/maildirsize");
        assert!(file.exists());
        assert!(md.deliver(&[item("1.Q2_0.mx", false)])[0].is_ok());
        assert_eq!(
            std::fs::read_to_string(&file).unwrap(),
            "0S,0C\n42 1\n42 1\n"
        );
        assert_eq!(
            md.usage(&m).unwrap(),
            crate::mailbox::Usage {
                bytes: 84,
                messages: 2
            }
        );
        let uid = md.entries(&m, "INBOX").unwrap()[0].uid.clone();
        md.remove(&m, "INBOX", &[uid]).unwrap();
        assert_eq!(
            md.usage(&m).unwrap(),
            crate::mailbox::Usage {
                bytes: 42,
                messages: 1
            }
        );
        // A damaged file is recounted.
        std::fs::write(&file, "0S\ngarbage\n").unwrap();
        assert_eq!(
            md.usage(&m).unwrap(),
            crate::mailbox::Usage {
                bytes: 42,
                messages: 1
            }
        );
    }

    #[test]
    fn unsafe_names_never_become_paths() {
        let dir = tempfile::tempdir().unwrap();
        let md = Maildir::new(dir.path().join("mail"));
        for bad in [
            "\"/../../x\"@example.test",
            "\"..\"@example.test",
            "\"a\\\\b\"@example.test",
            "\".hidden\"@example.test",
            "a@[127.0.0.1]",
        ] {
            let m = Mailbox::parse(bad, false).unwrap_or_else(|e| panic!("{bad}: {e}"));
            assert!(md.path_of(&m).is_err(), "{bad}");
            let mut d = item("1.Q1_0.mx", false);
            d.mailbox = m;
            assert!(md.deliver(&[d])[0].is_err(), "{bad}");
        }
        assert!(!dir.path().join("x\"").exists() && !dir.path().join("mail").join("x\"").exists());
    }

    #[test]
    fn a_maildir_removed_while_running_is_made_again() {
        let dir = tempfile::tempdir().unwrap();
        let md = Maildir::new(dir.path().join("mail"));
        assert!(md.deliver(&[item("1.Q1_0.mx", false)])[0].is_ok());
        fs::remove_dir_all(dir.path().join("mail/example.test/alice")).unwrap();
        let r = md.deliver(&[item("1.Q2_0.mx", false)]);
        assert!(r[0].is_ok(), "{r:?}");
        let new = dir.path().join("mail/example.test/alice/new");
        assert_eq!(fs::read_dir(&new).unwrap().count(), 1);
    }

    #[test]
    fn delivers_into_new_and_is_idempotent_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let md = Maildir::new(dir.path().join("mail"));
        let r = md.deliver(&[item("1.Q1_0.mx", false), item("1.Q2_0.mx", false)]);
        assert!(r.iter().all(Result::is_ok), "{r:?}");
        let new = dir.path().join("mail/example.test/alice/new");
        let names: Vec<_> = fs::read_dir(&new)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names.len(), 2);
        assert!(dir.path().join("mail/example.test/alice/cur").is_dir());
        assert_eq!(
            fs::read_dir(dir.path().join("mail/example.test/alice/tmp"))
                .unwrap()
                .count(),
            0
        );
        let content = fs::read(new.join("1.Q1_0.mx,S=42,W=46")).unwrap();
        assert_eq!(content, b"Return-Path: <a@b.test>\nSubject: x\n\nhello\n");
        // The user read it (moved to cur/ with flags); a retry after a crash must not deliver it again.
        fs::rename(
            new.join("1.Q1_0.mx,S=42,W=46"),
            dir.path()
                .join("mail/example.test/alice/cur/1.Q1_0.mx,S=42,W=46:2,S"),
        )
        .unwrap();
        assert!(md.deliver(&[item("1.Q1_0.mx", true)])[0].is_ok());
        assert_eq!(fs::read_dir(&new).unwrap().count(), 1);
    }
}
