//! Quota usage of a Maildir from its Maildir++ `maildirsize` file, kept as Dovecot's quota keeps it.

use super::Maildir;
use crate::mailbox::MailboxError;
use crate::smtp::Mailbox;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;

/// The sum of a `maildirsize` file's lines after the quota line; `None` when it is damaged.
fn parse_maildirsize(text: &str) -> Option<crate::mailbox::Usage> {
    let mut lines = text.lines();
    lines.next()?;
    let (mut bytes, mut count) = (0i64, 0i64);
    for line in lines {
        let mut f = line.split_whitespace();
        bytes = bytes.checked_add(f.next()?.parse().ok()?)?;
        count = count.checked_add(f.next()?.parse().ok()?)?;
    }
    (bytes >= 0 && count >= 0).then_some(crate::mailbox::Usage {
        bytes: bytes as u64,
        messages: count as u64,
    })
}

impl Maildir {
    /// A mailbox's usage from its Maildir++ `maildirsize` file (which Dovecot's quota keeps too): the sum
    /// of its lines, without a directory scan. The file is made by a scan when missing, and made again when
    /// it has grown past 5120 octets or is older than 15 minutes (files other programs removed drift it).
    pub(super) fn usage_of(
        &self,
        mailbox: &Mailbox,
    ) -> Result<crate::mailbox::Usage, MailboxError> {
        let root = self.path_of(mailbox)?;
        let file = root.join("maildirsize");
        if let Ok(meta) = fs::metadata(&file) {
            let fresh = meta
                .modified()
                .ok()
                .and_then(|m| m.elapsed().ok())
                .is_some_and(|age| age < std::time::Duration::from_secs(900));
            if meta.len() <= 5120
                && fresh
                && let Ok(text) = fs::read_to_string(&file)
                && let Some(usage) = parse_maildirsize(&text)
            {
                return Ok(usage);
            }
        }
        let usage = self.scan_usage(&root);
        if root.is_dir() {
            // Written whole under a temporary name, then renamed: readers see the old or the new file.
            let tmp = root.join(format!("maildirsize.{}.tmp", std::process::id()));
            let text = format!("0S,0C\n{} {}\n", usage.bytes, usage.messages);
            if fs::write(&tmp, text)
                .and_then(|_| fs::rename(&tmp, &file))
                .is_err()
            {
                let _ = fs::remove_file(&tmp);
            }
        }
        Ok(usage)
    }

    /// Adds a delivery (or, negative, a removal) to the mailbox's `maildirsize`, if it keeps one. One
    /// O_APPEND write: lines from parallel deliveries do not mix.
    pub(super) fn account(&self, root: &Path, bytes: i64, count: i64) {
        let file = root.join("maildirsize");
        if let Ok(mut f) = OpenOptions::new().append(true).open(&file) {
            let _ = f.write_all(format!("{bytes} {count}\n").as_bytes());
        }
    }

    fn scan_usage(&self, root: &Path) -> crate::mailbox::Usage {
        let root = root.to_path_buf();
        let mut usage = crate::mailbox::Usage::default();
        let mut dirs = vec![root.clone()];
        if let Ok(entries) = fs::read_dir(&root) {
            dirs.extend(
                entries
                    .flatten()
                    .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
                    .map(|e| e.path()),
            );
        }
        for dir in dirs {
            for sub in ["new", "cur"] {
                let Ok(entries) = fs::read_dir(dir.join(sub)) else {
                    continue;
                };
                for e in entries.flatten() {
                    usage.messages += 1;
                    usage.bytes += e.metadata().map(|m| m.len()).unwrap_or(0);
                }
            }
        }
        usage
    }
}
