//! Group commit for blocking callers: deliveries that arrive while a commit runs wait and go together in
//! the next one, which the first of them runs for all. One SMTP session delivering its message then costs
//! a share of one transaction (and of its fsync) instead of a transaction of its own.

use std::collections::HashMap;
use std::sync::{Condvar, Mutex};

struct State<T, R> {
    /// Items not yet taken by a commit, with their tickets (every ticket from `taken` on).
    waiting: Vec<(u64, T)>,
    /// `None`: the commit that took the item panicked.
    done: HashMap<u64, Option<R>>,
    /// The next ticket; tickets below `taken` belong to a commit that started.
    next: u64,
    taken: u64,
    /// Commits started, counted from 1; while `running`, the last of them is the one running.
    commits: u64,
    running: bool,
    /// Callers asleep on each of `Group::turns` (see there).
    sleepers: [usize; 2],
    /// Times a caller woke up, for the tests that keep wake-ups proportional to items.
    #[cfg(test)]
    wakes: u64,
}

pub struct Group<T, R> {
    state: Mutex<State<T, R>>,
    /// Commit n's callers sleep on `turns[n % 2]`: those of the running commit wait for its results,
    /// those of the next one for their turn to run it. A finished commit wakes all of its own callers
    /// and one of the next commit's, who runs it; no caller is woken for someone else's commit.
    turns: [Condvar; 2],
}

impl<T, R> Default for Group<T, R> {
    fn default() -> Self {
        Group {
            state: Mutex::new(State {
                waiting: Vec::new(),
                done: HashMap::new(),
                next: 0,
                taken: 0,
                commits: 0,
                running: false,
                sleepers: [0, 0],
                #[cfg(test)]
                wakes: 0,
            }),
            turns: [Condvar::new(), Condvar::new()],
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
                s.commits += 1;
                let this = s.commits;
                s.taken = s.next;
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
                // (A notify costs a system call even with no one asleep: only when someone is.)
                let (mine, next) = ((this % 2) as usize, ((this + 1) % 2) as usize);
                if s.sleepers[mine] > 0 {
                    self.turns[mine].notify_all();
                }
                if !s.waiting.is_empty() && s.sleepers[next] > 0 {
                    self.turns[next].notify_one();
                }
                continue;
            }
            // A commit is running: this item is in it, or in the one after.
            let commit_of_item = if ticket < s.taken {
                s.commits
            } else {
                s.commits + 1
            };
            let turn = (commit_of_item % 2) as usize;
            s.sleepers[turn] += 1;
            s = self.turns[turn].wait(s).unwrap_or_else(|p| p.into_inner());
            s.sleepers[turn] -= 1;
            #[cfg(test)]
            {
                s.wakes += 1;
            }
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
        let s = group.state.lock().unwrap();
        assert!(s.done.is_empty());
        // Each caller wakes for its own commit's results, or to run the next commit (and now and then
        // spuriously): not once for every commit that finishes while it waits.
        // (Waking everyone at every commit's end made it about two a caller.)
        assert!(s.wakes <= 400 + 100, "{} wake-ups for 400 items", s.wakes);
    }
}
