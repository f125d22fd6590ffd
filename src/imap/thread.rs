//! THREAD=REFERENCES (RFC 5256 3): messages linked into trees by Message-ID, References and In-Reply-To,
//! empty (dummy) parents pruned, siblings in date order, and root threads with the same base subject
//! gathered together. Bounded: the containers are the messages plus their references (capped per message
//! in `SortData`), a walk up a parent chain stops after `MAX_WALK` steps (a link it cannot check is not
//! made), and a thread deeper than `MAX_DEPTH` is cut there, its deeper part a thread of its own, so that
//! no mailbox (whoever wrote its References fields) can make this run long or recurse deep.

use super::sort::SortData;
use std::collections::HashMap;

const MAX_WALK: usize = 4096;
const MAX_DEPTH: usize = 1000;

/// One node: a message, or a dummy for a referenced message that is not in the set.
struct Container {
    /// Index into the items.
    message: Option<usize>,
    parent: Option<usize>,
    children: Vec<usize>,
}

struct Forest<'a> {
    items: &'a [SortData],
    nodes: Vec<Container>,
}

impl<'a> Forest<'a> {
    fn new_node(&mut self, message: Option<usize>) -> usize {
        self.nodes.push(Container {
            message,
            parent: None,
            children: Vec::new(),
        });
        self.nodes.len() - 1
    }

    /// Whether `a` is `b` or one of its ancestors.
    fn is_ancestor(&self, a: usize, b: usize) -> bool {
        let mut at = Some(b);
        for _ in 0..MAX_WALK {
            match at {
                Some(x) if x == a => return true,
                Some(x) => at = self.nodes[x].parent,
                None => return false,
            }
        }
        true
    }

    fn unlink(&mut self, child: usize) {
        if let Some(p) = self.nodes[child].parent.take() {
            self.nodes[p].children.retain(|c| *c != child);
        }
    }

    fn link(&mut self, parent: usize, child: usize) {
        self.unlink(child);
        self.nodes[child].parent = Some(parent);
        self.nodes[parent].children.push(child);
    }

    /// The date a node sorts by: its message's, or for a dummy its first child's (children sorted first).
    fn date(&self, n: usize) -> (i64, u32) {
        match self.nodes[n].message {
            Some(i) => (self.items[i].date, self.items[i].seq),
            None => self.nodes[n]
                .children
                .first()
                .map_or((i64::MAX, u32::MAX), |c| self.date(*c)),
        }
    }

    fn sort_children(&mut self, n: usize, depth: usize) {
        if depth > MAX_DEPTH + 2 {
            return;
        }
        let children = self.nodes[n].children.clone();
        for c in &children {
            self.sort_children(*c, depth + 1);
        }
        let mut sorted = children;
        sorted.sort_by_key(|c| self.date(*c));
        self.nodes[n].children = sorted;
    }

    /// The subject a root thread is gathered by: its message's, or a dummy's first child's.
    fn subject(&self, n: usize) -> Option<(&'a str, bool)> {
        let items: &'a [SortData] = self.items;
        let i = match self.nodes[n].message {
            Some(i) => i,
            None => self.nodes[n]
                .children
                .first()
                .and_then(|c| self.nodes[*c].message)?,
        };
        let d = &items[i];
        Some((d.subject.as_str(), d.reply))
    }

    fn write(&self, n: usize, uid: bool, out: &mut String, depth: usize) {
        if depth > MAX_DEPTH + 2 {
            return;
        }
        let children = &self.nodes[n].children;
        match self.nodes[n].message {
            Some(i) => {
                let d = &self.items[i];
                out.push_str(&(if uid { d.uid } else { d.seq }).to_string());
                match children.len() {
                    0 => {}
                    1 => {
                        out.push(' ');
                        self.write(children[0], uid, out, depth + 1);
                    }
                    _ => {
                        out.push(' ');
                        for c in children {
                            out.push('(');
                            self.write(*c, uid, out, depth + 1);
                            out.push(')');
                        }
                    }
                }
            }
            None => {
                for c in children {
                    out.push('(');
                    self.write(*c, uid, out, depth + 1);
                    out.push(')');
                }
            }
        }
    }
}

/// The THREAD=REFERENCES answer for these messages: `(1 2 (3)(4))(5)`, by sequence number or UID.
pub fn references(items: &[SortData], uid: bool) -> String {
    let mut f = Forest {
        items,
        nodes: Vec::with_capacity(items.len() * 2),
    };
    let mut by_id: HashMap<&str, usize> = HashMap::new();
    // (1) Containers for messages and what they reference.
    for (i, item) in items.iter().enumerate() {
        // A message without a Message-ID, or with one seen already, stands alone under its own key.
        let own = match item.message_id.as_deref() {
            Some(id) => match by_id.get(id).copied() {
                Some(n) if f.nodes[n].message.is_none() => {
                    f.nodes[n].message = Some(i);
                    n
                }
                Some(_) => f.new_node(Some(i)),
                None => {
                    let n = f.new_node(Some(i));
                    by_id.insert(id, n);
                    n
                }
            },
            None => f.new_node(Some(i)),
        };
        // (1B) each reference the parent of the next, where neither link exists and no loop comes of it.
        let mut prev: Option<usize> = None;
        for r in &item.references {
            let n = match by_id.get(r.as_str()).copied() {
                Some(n) => n,
                None => {
                    let n = f.new_node(None);
                    by_id.insert(r.as_str(), n);
                    n
                }
            };
            if let Some(p) = prev
                && p != n
                && f.nodes[n].parent.is_none()
                && !f.is_ancestor(n, p)
            {
                f.link(p, n);
            }
            prev = Some(n);
        }
        // (1C) the last reference is the message's parent, replacing what an earlier message implied.
        match prev {
            Some(p) if p != own && !f.is_ancestor(own, p) => f.link(p, own),
            _ => f.unlink(own),
        }
    }
    // Threads cut at MAX_DEPTH (everything below recurses at most that deep).
    let mut stack: Vec<(usize, usize)> = (0..f.nodes.len())
        .filter(|n| f.nodes[*n].parent.is_none())
        .map(|n| (n, 0))
        .collect();
    while let Some((n, depth)) = stack.pop() {
        let depth = if depth >= MAX_DEPTH {
            f.unlink(n);
            0
        } else {
            depth
        };
        for c in f.nodes[n].children.clone() {
            stack.push((c, depth + 1));
        }
    }
    // (2) The root set.
    let mut roots: Vec<usize> = (0..f.nodes.len())
        .filter(|n| f.nodes[*n].parent.is_none())
        .collect();
    // (3) Dummies pruned: gone when childless, replaced by their children, except that a root dummy keeps
    // two or more children.
    let mut pruned_roots = Vec::new();
    for r in roots.drain(..) {
        prune(&mut f, r, true, &mut pruned_roots, 0);
    }
    let mut roots = pruned_roots;
    // (4) Siblings by date.
    for r in &roots {
        f.sort_children(*r, 0);
    }
    roots.sort_by_key(|r| f.date(*r));
    // (5) Root threads with the same base subject gathered.
    let mut table: HashMap<String, usize> = HashMap::new();
    for r in &roots {
        let Some((subject, reply)) = f.subject(*r) else {
            continue;
        };
        if subject.is_empty() {
            continue;
        }
        match table.get(subject).copied() {
            None => {
                table.insert(subject.to_string(), *r);
            }
            Some(t) => {
                let t_dummy = f.nodes[t].message.is_none();
                let t_reply = f.subject(t).is_some_and(|s| s.1);
                let dummy = f.nodes[*r].message.is_none();
                if !t_dummy && (dummy || (t_reply && !reply)) {
                    table.insert(subject.to_string(), *r);
                }
            }
        }
    }
    let mut merged: Vec<usize> = Vec::new();
    for r in roots {
        let Some((subject, reply)) = f.subject(r) else {
            merged.push(r);
            continue;
        };
        let Some(t) = table.get(subject).copied().filter(|_| !subject.is_empty()) else {
            merged.push(r);
            continue;
        };
        if t == r {
            merged.push(r);
            continue;
        }
        let t_dummy = f.nodes[t].message.is_none();
        let dummy = f.nodes[r].message.is_none();
        let t_reply = f.subject(t).is_some_and(|s| s.1);
        if t_dummy && dummy {
            for c in f.nodes[r].children.clone() {
                f.link(t, c);
            }
        } else if t_dummy || (reply && !t_reply) {
            f.link(t, r);
        } else {
            // Siblings under a new dummy, which takes the table's place (and the thread's in the list).
            let d = f.new_node(None);
            f.link(d, t);
            f.link(d, r);
            table.insert(subject.to_string(), d);
            for m in merged.iter_mut() {
                if *m == t {
                    *m = d;
                }
            }
        }
    }
    // (6) Threads (and siblings, which the merge may have added to) in date order.
    for r in &merged {
        f.sort_children(*r, 0);
    }
    merged.sort_by_key(|r| f.date(*r));
    let mut out = String::new();
    for r in merged {
        out.push('(');
        f.write(r, uid, &mut out, 0);
        out.push(')');
    }
    out
}

/// RFC 5256 3 (3): keeps `n` if it holds a message (pruning below it), else hands its children up.
fn prune(f: &mut Forest<'_>, n: usize, root: bool, out: &mut Vec<usize>, depth: usize) {
    if depth > MAX_DEPTH + 2 {
        return;
    }
    let children = std::mem::take(&mut f.nodes[n].children);
    let mut kept = Vec::new();
    for c in children {
        prune(f, c, false, &mut kept, depth + 1);
    }
    let dummy = f.nodes[n].message.is_none();
    if dummy && (kept.is_empty() || !root || kept.len() == 1) {
        // Gone, its children promoted to its level.
        for c in &kept {
            f.nodes[*c].parent = None;
        }
        // (At the root, the one child is a root itself.)
        out.extend(kept);
        return;
    }
    for c in &kept {
        f.nodes[*c].parent = Some(n);
    }
    f.nodes[n].children = kept;
    out.push(n);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(seq: u32, id: &str, refs: &[&str], subject: &str, date: i64) -> SortData {
        let (subject, reply) = super::super::sort::base_subject_of(subject);
        SortData {
            seq,
            uid: seq + 100,
            arrival: date,
            size: 1,
            date,
            from: String::new(),
            to: String::new(),
            cc: String::new(),
            display_from: String::new(),
            display_to: String::new(),
            subject,
            reply,
            message_id: (!id.is_empty()).then(|| id.to_string()),
            references: refs.iter().map(|r| r.to_string()).collect(),
        }
    }

    #[test]
    fn replies_nest_under_their_parents() {
        let items = vec![
            msg(1, "a", &[], "hello", 10),
            msg(2, "b", &["a"], "Re: hello", 20),
            msg(3, "c", &["a"], "Re: hello", 30),
            msg(4, "d", &["a", "b"], "Re: hello", 40),
            msg(5, "e", &[], "other", 5),
        ];
        assert_eq!(references(&items, false), "(5)(1 (2 4)(3))");
        assert_eq!(references(&items, true), "(105)(101 (102 104)(103))");
    }

    #[test]
    fn a_missing_parent_becomes_a_dummy_only_when_it_joins_several() {
        // The root is not in the set: its two replies hang under a dummy.
        let items = vec![
            msg(1, "b", &["a"], "Re: x", 20),
            msg(2, "c", &["a"], "Re: x", 30),
        ];
        assert_eq!(references(&items, false), "((1)(2))");
        // One reply to a missing message: the dummy goes, the reply is a root.
        let items = vec![msg(1, "b", &["a"], "Re: y", 20), msg(2, "z", &[], "q", 1)];
        assert_eq!(references(&items, false), "(2)(1)");
    }

    #[test]
    fn same_subject_roots_are_gathered() {
        // No references at all, but "Re: topic" belongs under "topic".
        let items = vec![
            msg(1, "p", &[], "topic", 10),
            msg(2, "q", &[], "Re: topic", 20),
            msg(3, "r", &[], "unrelated", 15),
        ];
        assert_eq!(references(&items, false), "(1 2)(3)");
        // Two originals with one subject become siblings under a dummy.
        let items = vec![msg(1, "p", &[], "topic", 10), msg(2, "q", &[], "topic", 20)];
        assert_eq!(references(&items, false), "((1)(2))");
    }

    #[test]
    fn loops_duplicates_and_missing_ids_are_survived() {
        let items = vec![
            msg(1, "a", &["b"], "s", 10),
            msg(2, "b", &["a"], "s2", 20),
            msg(3, "a", &[], "dup", 30),
            msg(4, "", &["a"], "noid", 40),
            msg(5, "self", &["self"], "selfref", 50),
        ];
        let out = references(&items, false);
        for n in 1..=5 {
            assert!(out.contains(&n.to_string()), "{n} missing from {out}");
        }
        assert_eq!(out.matches('(').count(), out.matches(')').count());
    }

    #[test]
    fn deep_chains_are_bounded() {
        let ids: Vec<String> = (0..3000).map(|i| format!("m{i}")).collect();
        let items: Vec<SortData> = (0..3000)
            .map(|i| {
                let refs: Vec<&str> = if i == 0 {
                    vec![]
                } else {
                    vec![ids[i - 1].as_str()]
                };
                msg(i as u32 + 1, &ids[i], &refs, "chain", i as i64)
            })
            .collect();
        let out = references(&items, false);
        // Cut every MAX_DEPTH + 1 messages; the pieces share a subject and are gathered under a dummy;
        // none is lost.
        assert!(out.starts_with("((1 2 3 "), "{}", &out[..20]);
        assert!(out.ends_with(" 3000))"));
        assert_eq!(out.matches('(').count(), 4);
        let numbers: Vec<u32> = out
            .split(|c: char| !c.is_ascii_digit())
            .filter_map(|n| n.parse().ok())
            .collect();
        assert_eq!(numbers, (1..=3000).collect::<Vec<u32>>());
    }
}
