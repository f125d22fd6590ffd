//! A session's view of its selected folder: message sequence numbers, what it has told the client, and the
//! untagged responses that bring the client up to date with a newer snapshot of the folder (RFC 9051 7.5).

use crate::mailbox::index::{Flags, Snapshot};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

pub struct View {
    pub folder: String,
    pub read_only: bool,
    pub uidvalidity: u32,
    /// UIDs by sequence number - 1; ascending.
    pub uids: Vec<u32>,
    /// The folder as last reported to the client.
    pub shown: Arc<Snapshot>,
    /// Flags this session has reported since `shown` (its own STOREs), so they are not reported twice.
    own: HashMap<u32, (Flags, u64)>,
    pub recent: HashSet<u32>,
    /// UIDs saved by SEARCH RETURN (SAVE), ascending.
    pub saved: Vec<u32>,
    /// Keywords announced in FLAGS.
    pub keywords: Vec<String>,
}

/// What an update tells the client.
pub struct Update {
    pub lines: Vec<u8>,
}

/// How a session reports changes.
#[derive(Debug, Clone, Copy, Default)]
pub struct Report {
    /// EXPUNGE/VANISHED may be sent now (not during FETCH, STORE or SEARCH by sequence number).
    pub expunges: bool,
    pub condstore: bool,
    pub qresync: bool,
    /// IMAP4rev1 sessions get RECENT.
    pub rev1: bool,
}

impl View {
    pub fn new(folder: String, read_only: bool, snap: Arc<Snapshot>) -> View {
        View {
            folder,
            read_only,
            uidvalidity: snap.uidvalidity,
            uids: snap.messages.iter().map(|m| m.uid).collect(),
            recent: snap.recent.iter().copied().collect(),
            shown: snap,
            own: HashMap::new(),
            saved: Vec::new(),
            keywords: Vec::new(),
        }
        .with_keywords()
    }

    fn with_keywords(mut self) -> View {
        let shown = self.shown.clone();
        for m in &shown.messages {
            self.learn(&m.flags);
        }
        self
    }

    fn learn(&mut self, flags: &Flags) -> bool {
        let mut new = false;
        for k in &flags.keywords {
            if !self.keywords.iter().any(|x| x.eq_ignore_ascii_case(k)) {
                self.keywords.push(k.clone());
                new = true;
            }
        }
        new
    }

    /// The FLAGS and PERMANENTFLAGS lines.
    pub fn flags_lines(&self) -> Vec<u8> {
        let kw: String = self.keywords.iter().map(|k| format!(" {k}")).collect();
        let mut out = format!("* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft{kw})\r\n");
        if self.read_only {
            out.push_str("* OK [PERMANENTFLAGS ()] read-only\r\n");
        } else {
            out.push_str(&format!(
                "* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft{kw} \\*)] flags permitted\r\n"
            ));
        }
        out.into_bytes()
    }

    /// FLAGS again when these flags bring keywords the client has not been told of.
    pub fn announce(&mut self, flags: &Flags) -> Vec<u8> {
        if self.learn(flags) {
            self.flags_lines()
        } else {
            Vec::new()
        }
    }

    pub fn seq_of(&self, uid: u32) -> Option<u32> {
        self.uids.binary_search(&uid).ok().map(|i| i as u32 + 1)
    }

    pub fn uid_of(&self, seq: u32) -> Option<u32> {
        self.uids.get(seq.checked_sub(1)? as usize).copied()
    }

    pub fn exists(&self) -> u32 {
        self.uids.len() as u32
    }

    /// Notes flags this session reported itself.
    pub fn reported(&mut self, uid: u32, flags: Flags, modseq: u64) {
        self.own.insert(uid, (flags, modseq));
    }

    /// Brings the view to `snap`, returning the untagged responses for the client.
    pub fn update(&mut self, snap: Arc<Snapshot>, how: Report) -> Update {
        let mut out = Vec::new();
        if Arc::ptr_eq(&snap, &self.shown) {
            return Update { lines: out };
        }
        // Expunges: UIDs shown to the client that are gone.
        if how.expunges {
            let gone: Vec<u32> = self
                .uids
                .iter()
                .copied()
                .filter(|u| snap.get(*u).is_none())
                .collect();
            if !gone.is_empty() {
                if how.qresync {
                    out.extend_from_slice(format!("* VANISHED {}\r\n", uid_set(&gone)).as_bytes());
                    self.uids.retain(|u| snap.get(*u).is_some());
                } else {
                    for u in gone.iter().rev() {
                        if let Ok(i) = self.uids.binary_search(u) {
                            self.uids.remove(i);
                            out.extend_from_slice(format!("* {} EXPUNGE\r\n", i + 1).as_bytes());
                        }
                    }
                }
                for u in &gone {
                    self.recent.remove(u);
                    self.own.remove(u);
                }
                self.saved.retain(|u| snap.get(*u).is_some());
            }
        }
        let mut learned = false;
        for m in &snap.messages {
            learned |= self.learn(&m.flags);
        }
        if learned {
            out.extend_from_slice(&self.flags_lines());
        }
        // Flag changes of messages the client knows.
        for m in &snap.messages {
            let Some(seq) = self.seq_of(m.uid) else {
                continue;
            };
            let before = self
                .own
                .get(&m.uid)
                .cloned()
                .or_else(|| self.shown.get(m.uid).map(|o| (o.flags.clone(), o.modseq)));
            let Some((flags, modseq)) = before else {
                continue;
            };
            if flags.same_as(&m.flags) && (modseq == m.modseq || !how.condstore) {
                continue;
            }
            let mut line = format!("* {seq} FETCH (FLAGS ").into_bytes();
            super::response::flag_list(
                &mut line,
                &m.flags,
                how.rev1 && self.recent.contains(&m.uid),
            );
            if how.condstore {
                line.extend_from_slice(format!(" UID {} MODSEQ ({})", m.uid, m.modseq).as_bytes());
            }
            line.extend_from_slice(b")\r\n");
            out.extend_from_slice(&line);
        }
        // New messages.
        let last = self.uids.last().copied().unwrap_or(0);
        let fresh: Vec<u32> = snap
            .messages
            .iter()
            .map(|m| m.uid)
            .filter(|u| *u > last)
            .collect();
        if !fresh.is_empty() {
            let known: HashSet<u32> = snap.recent.iter().copied().collect();
            for u in &fresh {
                if known.contains(u) {
                    self.recent.insert(*u);
                }
            }
            self.uids.extend(fresh);
            out.extend_from_slice(format!("* {} EXISTS\r\n", self.uids.len()).as_bytes());
            if how.rev1 {
                out.extend_from_slice(format!("* {} RECENT\r\n", self.recent.len()).as_bytes());
            }
        }
        // Ghosts (expunged, not yet reported) keep the old snapshot's data until they are reported.
        let ghosts = self.uids.iter().any(|u| snap.get(*u).is_none());
        if !ghosts {
            self.shown = snap;
        } else {
            let mut merged = (*snap).clone();
            // Looked up in `snap`, not in `merged`: ghosts are pushed unsorted, and a binary search over
            // them would miss live messages and add them twice (with their old MODSEQ).
            for u in &self.uids {
                if snap.get(*u).is_none()
                    && let Some(old) = self.shown.get(*u)
                {
                    let mut old = old.clone();
                    // What this session reported last, if it reported since: a ghost must not go back to
                    // older flags or an older MODSEQ.
                    if let Some((flags, modseq)) = self.own.get(u) {
                        old.flags = flags.clone();
                        old.modseq = *modseq;
                    }
                    merged.messages.push(old);
                }
            }
            merged.messages.sort_by_key(|m| m.uid);
            self.shown = Arc::new(merged);
        }
        self.own.clear();
        Update { lines: out }
    }
}

/// `1:3,7,9:10` from ascending UIDs.
pub fn uid_set(uids: &[u32]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < uids.len() {
        let start = uids[i];
        let mut end = start;
        while i + 1 < uids.len() && uids[i + 1] == end + 1 {
            i += 1;
            end = uids[i];
        }
        if !out.is_empty() {
            out.push(',');
        }
        if start == end {
            out.push_str(&start.to_string());
        } else {
            out.push_str(&format!("{start}:{end}"));
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mailbox::index::{MessageMeta, flag};

    fn snap(uids: &[(u32, u8, u64)]) -> Arc<Snapshot> {
        Arc::new(Snapshot {
            uidvalidity: 7,
            uidnext: 100,
            highest_modseq: uids.iter().map(|x| x.2).max().unwrap_or(1),
            messages: uids
                .iter()
                .map(|&(uid, f, modseq)| MessageMeta {
                    uid,
                    flags: Flags {
                        system: f,
                        keywords: vec![],
                    },
                    modseq,
                    internal_date: 0,
                    size: 1,
                })
                .collect(),
            recent: vec![],
        })
    }

    #[test]
    fn ghosts_never_shadow_live_messages() {
        let old: Vec<(u32, u8, u64)> = (1..=20).map(|u| (u, 0, u as u64)).collect();
        let mut v = View::new("INBOX".into(), false, snap(&old));
        // 1-10 expunged elsewhere (not reportable now), 11-20 changed.
        let new: Vec<(u32, u8, u64)> = (11..=20).map(|u| (u, flag::SEEN, 100 + u as u64)).collect();
        v.update(
            snap(&new),
            Report {
                condstore: true,
                ..Default::default()
            },
        );
        assert_eq!(v.uids.len(), 20);
        assert_eq!(v.shown.messages.len(), 20);
        for u in 11..=20 {
            assert_eq!(
                v.shown.get(u).map(|m| m.modseq),
                Some(100 + u as u64),
                "uid {u}"
            );
        }
        for u in 1..=10 {
            assert_eq!(
                v.shown.get(u).map(|m| m.modseq),
                Some(u as u64),
                "ghost {u}"
            );
        }
    }

    #[test]
    fn expunges_flags_and_new_mail() {
        let mut v = View::new(
            "INBOX".into(),
            false,
            snap(&[(1, 0, 1), (2, 0, 2), (3, 0, 3)]),
        );
        let how = Report {
            expunges: true,
            ..Default::default()
        };
        let u = v.update(snap(&[(1, 0, 1), (3, flag::SEEN, 5), (4, 0, 6)]), how);
        assert_eq!(
            String::from_utf8(u.lines).unwrap(),
            "* 2 EXPUNGE\r\n* 2 FETCH (FLAGS (\\Seen))\r\n* 3 EXISTS\r\n"
        );
        assert_eq!(v.uids, vec![1, 3, 4]);
        // Without expunges allowed, the gone message stays a ghost with its number.
        let u = v.update(snap(&[(1, 0, 1), (4, 0, 6)]), Report::default());
        assert!(u.lines.is_empty());
        assert_eq!(v.uids, vec![1, 3, 4]);
        let u = v.update(
            snap(&[(1, 0, 1), (4, 0, 6)]),
            Report {
                qresync: true,
                expunges: true,
                ..Default::default()
            },
        );
        assert_eq!(u.lines, b"* VANISHED 3\r\n");
        // A message this session stored and another expunged before it could be told keeps, as a
        // ghost, what was reported for it last.
        let mut v = View::new("INBOX".into(), false, snap(&[(1, 0, 1), (2, 0, 2)]));
        v.reported(
            2,
            Flags {
                system: flag::SEEN,
                keywords: vec![],
            },
            9,
        );
        v.update(
            snap(&[(1, 0, 1)]),
            Report {
                condstore: true,
                ..Default::default()
            },
        );
        assert_eq!(v.uids, vec![1, 2]);
        let ghost = v.shown.get(2).unwrap();
        assert_eq!(v.shown.messages.len(), 2);
        assert_eq!((ghost.modseq, ghost.flags.system), (9, flag::SEEN));
        assert_eq!(uid_set(&[1, 2, 3, 5, 7, 8]), "1:3,5,7:8");
    }
}
