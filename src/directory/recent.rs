//! Recipient lookups remembered for as long as tern.db has not changed. Every RCPT asks the directory who
//! an address is; under load that is the same few rows thousands of times a second, each a round trip to
//! sqlx's SQLite thread. An answer is kept only while the database is unchanged, and "unchanged" is read
//! from SQLite's own record: the WAL-index header at the start of tern.db-shm (the "wal-index header" of
//! SQLite's WAL file format), which every commit by any process (the daemon, `tern user`, `tern alias`)
//! rewrites before its change is visible. A change made by another process is therefore seen by the next
//! lookup, as without the cache. When the header cannot be read (no WAL index, a short read), nothing is
//! remembered and what was is dropped. The directory keeps a connection open for its life, so the index is
//! not removed and built anew (from the same fixed header) under it. Bounded: past `MAX_ENTRIES` the
//! entries are dropped.

use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Mutex;

/// The first copy of the wal-index header: version, change counter, page size, last valid frame, page
/// count, frame checksums, salts and checksum. Any commit changes it.
type Stamp = [u8; 48];

const MAX_ENTRIES: usize = 10_000;

pub(super) struct Recent<V> {
    shm: PathBuf,
    entries: Mutex<(Option<Stamp>, HashMap<String, V>)>,
}

impl<V: Clone> Recent<V> {
    /// For the database at `db` (its WAL index is `db` + "-shm").
    pub fn new(db: &std::path::Path) -> Recent<V> {
        let mut shm = db.as_os_str().to_owned();
        shm.push("-shm");
        Recent {
            shm: PathBuf::from(shm),
            entries: Mutex::new((None, HashMap::new())),
        }
    }

    /// The database's state now, read from the file each time (a file SQLite removed and made again is
    /// never read through an old handle).
    pub fn stamp(&self) -> Option<Stamp> {
        let file = std::fs::File::open(&self.shm).ok()?;
        let mut s = [0u8; 48];
        file.read_exact_at(&mut s, 0).ok()?;
        // An all-zero header is an index SQLite has not built yet. One built anew from an empty log is the
        // same every time (change counter 0): it is trusted only because the directory holds a connection
        // for its life, so the index cannot be removed and built again while it is remembered.
        (s != [0u8; 48]).then_some(s)
    }

    /// The answer remembered for `key`, if the database is as it was when it was remembered; the stamp
    /// read now, to hand to [`Self::put`] after a lookup.
    pub fn get(&self, key: &str) -> (Option<V>, Option<Stamp>) {
        let Some(now) = self.stamp() else {
            // Nothing remembered can be trusted once the index is gone or new.
            if let Ok(mut e) = self.entries.lock() {
                e.0 = None;
                e.1.clear();
            }
            return (None, None);
        };
        let Ok(mut e) = self.entries.lock() else {
            return (None, Some(now));
        };
        if e.0 != Some(now) {
            e.0 = Some(now);
            e.1.clear();
            return (None, Some(now));
        }
        (e.1.get(key).cloned(), Some(now))
    }

    /// Remembers what a lookup that started at `before` found, if nothing was committed since.
    pub fn put(&self, key: String, value: V, before: Option<Stamp>) {
        let Some(before) = before else { return };
        if self.stamp() != Some(before) {
            return;
        }
        let Ok(mut e) = self.entries.lock() else {
            return;
        };
        if e.0 != Some(before) {
            return;
        }
        if e.1.len() >= MAX_ENTRIES {
            e.1.clear();
        }
        e.1.insert(key, value);
    }
}
