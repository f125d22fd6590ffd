//! Group commit for blocking callers: deliveries that arrive while a commit runs wait and go together in
//! the next one, which the first of them runs for all. One SMTP session delivering its message then costs
//! a share of one transaction (and of its fsync) instead of a transaction of its own.

use std::collections::HashMap;
use std::sync::{Condvar, Mutex};

struct State<T, R> {
    waiting: Vec<(u64, T)>,
    /// `None`: the commit that took the item panicked.
    done: HashMap<u64, Option<R>>,
    next: u64,
    running: bool,
}

pub struct Group<T, R> {
    state: Mutex<State<T, R>>,
    finished: Condvar,
}

impl<T, R> Default for Group<T, R> {
    fn default() -> Self {
        Group {
            state: Mutex::new(State {
                waiting: Vec::new(),
                done: HashMap::new(),
                next: 0,
                running: false,
            }),
            finished: Condvar::new(),
        }
    }
}

impl<T, R> Group<T, R> {
    /// Commits `item` with whatever else is waiting; `commit` gets the items in arrival order and returns
    /// one result per item, in the same order. Returns this item's result, or `None` if the commit that
    /// took it panicked (every item of that commit gets `None`; no one waits forever).
    pub fn submit(&self, item: T, commit: &dyn Fn(Vec<T>) -> Vec<R>) -> Option<R> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let ticket = s.next;
        s.next += 1;
        s.waiting.push((ticket, item));
        loop {
            if let Some(r) = s.done.remove(&ticket) {
                return r;
            }
            if !s.running {
                s.running = true;
                let (tickets, items): (Vec<u64>, Vec<T>) =
                    std::mem::take(&mut s.waiting).into_iter().unzip();
                drop(s);
                let count = items.len();
                let results =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| commit(items)));
                s = self.state.lock().unwrap_or_else(|p| p.into_inner());
                s.running = false;
                match results {
                    Ok(results) if results.len() == count => {
                        s.done
                            .extend(tickets.into_iter().zip(results.into_iter().map(Some)));
                    }
                    _ => s.done.extend(tickets.into_iter().map(|t| (t, None))),
                }
                self.finished.notify_all();
                continue;
            }
            s = self.finished.wait(s).unwrap_or_else(|p| p.into_inner());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Group;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn every_caller_gets_its_own_result_and_commits_are_shared() {
        let group: Arc<Group<u32, u32>> = Arc::default();
        let commits = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..8u32)
            .map(|t| {
                let (group, commits) = (group.clone(), commits.clone());
                std::thread::spawn(move || {
                    for i in 0..50u32 {
                        let item = t * 1000 + i;
                        let got = group.submit(item, &|items| {
                            commits.fetch_add(1, Ordering::Relaxed);
                            std::thread::sleep(std::time::Duration::from_micros(200));
                            items.into_iter().map(|x| x * 2).collect()
                        });
                        assert_eq!(got, Some(item * 2));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let n = commits.load(Ordering::Relaxed);
        assert!(n <= 400, "{n} commits for 400 items");
        assert!(group.state.lock().unwrap().done.is_empty());
    }
}
