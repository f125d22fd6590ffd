//! Group fsync of folders: when many deliveries link files into the same folder at once (every SMTP
//! session delivering to one busy mailbox), one fsync of the folder makes all of their names durable. A
//! caller whose link happened before a sync *started* is covered by it; one that arrives while a sync is
//! running waits for the next, which the first of the waiters runs for all of them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};

#[derive(Default)]
struct Folder {
    /// Syncs started and finished, counted from 1.
    started: u64,
    finished: u64,
    running: bool,
    /// The last failed sync and its error: every caller it was to cover gets the error.
    failed: Option<(u64, std::io::ErrorKind, String)>,
    /// Callers waiting or syncing; the entry goes when the last one leaves.
    users: usize,
    /// Callers waiting for sync n sleep on `turns[n % 2]`: a finished sync wakes those it covers and one
    /// of those waiting for the next, who runs it; no one wakes for another folder's sync, or for a
    /// sync that does not cover them.
    turns: Arc<[Condvar; 2]>,
    sleepers: [usize; 2],
}

#[derive(Default)]
pub struct DirSync {
    folders: Mutex<HashMap<PathBuf, Folder>>,
    /// Times a caller woke up, for the test that keeps wake-ups proportional to callers.
    #[cfg(test)]
    wakes: std::sync::atomic::AtomicU64,
}

impl DirSync {
    /// Returns once a fsync of `dir` that started after this call began has completed.
    pub fn sync(&self, dir: &Path) -> std::io::Result<()> {
        let mut folders = self.folders.lock().unwrap_or_else(|p| p.into_inner());
        let f = folders.entry(dir.to_path_buf()).or_default();
        f.users += 1;
        // A sync running now may have read the folder before our link: the next one is ours.
        let needed = f.started + 1;
        let result = loop {
            let f = folders.get_mut(dir).expect("entry held by users");
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
                drop(folders);
                let r = std::fs::File::open(dir).and_then(|d| d.sync_all());
                folders = self.folders.lock().unwrap_or_else(|p| p.into_inner());
                let f = folders.get_mut(dir).expect("entry held by users");
                f.running = false;
                f.finished = this;
                if let Err(e) = &r {
                    f.failed = Some((this, e.kind(), e.to_string()));
                }
                // (A notify costs a system call even with no one asleep: only when someone is.)
                let (covered, next) = ((this % 2) as usize, ((this + 1) % 2) as usize);
                if f.sleepers[covered] > 0 {
                    f.turns[covered].notify_all();
                }
                if f.sleepers[next] > 0 {
                    f.turns[next].notify_one();
                }
                continue;
            }
            // A sync is running: `needed` is that one or the next.
            let turn = (needed % 2) as usize;
            f.sleepers[turn] += 1;
            let turns = f.turns.clone();
            folders = turns[turn].wait(folders).unwrap_or_else(|p| p.into_inner());
            folders.get_mut(dir).expect("entry held by users").sleepers[turn] -= 1;
            #[cfg(test)]
            self.wakes
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        };
        let f = folders.get_mut(dir).expect("entry held by users");
        f.users -= 1;
        if f.users == 0 && !f.running {
            folders.remove(dir);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::DirSync;
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
        assert!(sync.folders.lock().unwrap().is_empty());
        // A caller wakes for the sync that covers it, or to run the next one: not at every sync's end.
        let wakes = sync.wakes.load(std::sync::atomic::Ordering::Relaxed);
        assert!(wakes <= 320 + 80, "{wakes} wake-ups for 320 calls");
    }

    #[test]
    fn a_failed_sync_is_reported_to_the_caller() {
        let sync = DirSync::default();
        let missing = std::path::Path::new("/nonexistent-tern-test/dir");
        assert!(sync.sync(missing).is_err());
        assert!(sync.folders.lock().unwrap().is_empty());
    }
}
