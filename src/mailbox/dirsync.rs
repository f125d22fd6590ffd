//! Group syncs for blocking callers. When many deliveries write into the same folder at once (every SMTP
//! session delivering to one busy mailbox), one fsync of the folder makes all of their names durable, and
//! with `[store] sync = "filesystem"` one syncfs(2) makes all of their files durable. A caller whose write
//! happened before a sync *started* is covered by it; one that arrives while a sync is running waits for
//! the next, which the first of the waiters runs for all of them.

use std::collections::HashMap;
use std::fs::File;
use std::hash::Hash;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};

#[derive(Default)]
struct Round {
    /// Syncs started and finished, counted from 1.
    started: u64,
    finished: u64,
    running: bool,
    /// The last failed sync and its error: every caller it was to cover gets the error.
    failed: Option<(u64, std::io::ErrorKind, String)>,
    /// Callers waiting or syncing; the entry goes when the last one leaves.
    users: usize,
}

/// Syncs shared by key: callers of the same key share the runs of `op`.
pub struct Syncs<K> {
    keys: Mutex<HashMap<K, Round>>,
    done: Condvar,
}

impl<K> Default for Syncs<K> {
    fn default() -> Self {
        Syncs {
            keys: Mutex::new(HashMap::new()),
            done: Condvar::new(),
        }
    }
}

impl<K: Hash + Eq + Clone> Syncs<K> {
    /// Returns once a run of `op` for `key` that started after this call began has completed (its
    /// error, if it failed). Every caller of a key must pass the same operation.
    pub fn sync(&self, key: &K, op: &dyn Fn() -> std::io::Result<()>) -> std::io::Result<()> {
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        let f = keys.entry(key.clone()).or_default();
        f.users += 1;
        // A sync running now may have started before our write: the next one is ours.
        let needed = f.started + 1;
        let result = loop {
            let f = keys.get_mut(key).expect("entry held by users");
            if f.finished >= needed {
                break match &f.failed {
                    Some((at, kind, msg)) if *at >= needed => {
                        Err(std::io::Error::new(*kind, msg.clone()))
                    }
                    _ => Ok(()),
                };
            }
            if !f.running {
                f.running = true;
                f.started += 1;
                let this = f.started;
                drop(keys);
                let r = op();
                keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
                let f = keys.get_mut(key).expect("entry held by users");
                f.running = false;
                f.finished = this;
                if let Err(e) = &r {
                    f.failed = Some((this, e.kind(), e.to_string()));
                }
                self.done.notify_all();
                continue;
            }
            keys = self.done.wait(keys).unwrap_or_else(|p| p.into_inner());
        };
        let f = keys.get_mut(key).expect("entry held by users");
        f.users -= 1;
        if f.users == 0 && !f.running {
            keys.remove(key);
        }
        result
    }
}

/// Folders: one fsync of a folder for every caller that linked a file into it meanwhile.
#[derive(Default)]
pub struct DirSync {
    syncs: Syncs<PathBuf>,
}

impl DirSync {
    /// Returns once a fsync of `dir` that started after this call began has completed.
    pub fn sync(&self, dir: &Path) -> std::io::Result<()> {
        self.syncs.sync(&dir.to_path_buf(), &|| {
            File::open(dir).and_then(|d| d.sync_all())
        })
    }
}

/// Whole filesystems: one syncfs(2) for every caller that wrote a file on it meanwhile. Each filesystem
/// is synced through a descriptor opened the first time it is seen and kept: syncfs reports a writeback
/// error that happened anywhere on the filesystem since the previous call on that descriptor (Linux 5.8
/// and later), so no error between two rounds goes unreported; it fails the whole round.
#[derive(Default)]
pub struct FileSystems {
    open: Mutex<HashMap<u64, Arc<File>>>,
    syncs: Syncs<u64>,
}

impl FileSystems {
    /// Returns once a syncfs of the filesystem holding `dir` that started after this call began has
    /// completed: every file written and every name made on it before the call is on stable storage.
    pub fn sync(&self, dir: &Path) -> std::io::Result<()> {
        let dev = std::fs::metadata(dir)?.dev();
        let fd = {
            let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
            match open.get(&dev) {
                Some(fd) => fd.clone(),
                None => {
                    let fd = Arc::new(File::open(dir)?);
                    open.insert(dev, fd.clone());
                    fd
                }
            }
        };
        self.syncs.sync(&dev, &|| {
            use std::os::fd::AsRawFd;
            // SAFETY: the descriptor is open for as long as `fd` lives, which outlasts the call.
            if unsafe { libc::syncfs(fd.as_raw_fd()) } == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::{DirSync, FileSystems};
    use std::sync::Arc;

    #[test]
    fn concurrent_callers_share_syncs_and_all_return() {
        let dir = tempfile::tempdir().unwrap();
        let sync = Arc::new(DirSync::default());
        let threads: Vec<_> = (0..16)
            .map(|_| {
                let (sync, path) = (sync.clone(), dir.path().to_path_buf());
                std::thread::spawn(move || {
                    for _ in 0..20 {
                        sync.sync(&path).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        // Every entry is gone once no one uses it.
        assert!(sync.syncs.keys.lock().unwrap().is_empty());
    }

    #[test]
    fn a_failed_sync_is_reported_to_the_caller() {
        let sync = DirSync::default();
        let missing = std::path::Path::new("/nonexistent-tern-test/dir");
        assert!(sync.sync(missing).is_err());
        assert!(sync.syncs.keys.lock().unwrap().is_empty());
    }

    #[test]
    fn a_filesystem_sync_covers_files_written_before_it() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let fs = Arc::new(FileSystems::default());
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let (fs, path) = (fs.clone(), dir.path().to_path_buf());
                std::thread::spawn(move || {
                    for n in 0..10 {
                        let mut f = std::fs::File::create(path.join(format!("{i}-{n}"))).unwrap();
                        f.write_all(b"x").unwrap();
                        fs.sync(&path).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        // One descriptor for the one filesystem, and no round left behind.
        assert_eq!(fs.open.lock().unwrap().len(), 1);
        assert!(fs.syncs.keys.lock().unwrap().is_empty());
        assert!(
            fs.sync(std::path::Path::new("/nonexistent-tern-test"))
                .is_err()
        );
    }
}
