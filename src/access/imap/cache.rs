//! The parsed structure of messages IMAP clients fetched (ENVELOPE, BODY, BODYSTRUCTURE), kept so that a
//! mail client listing a folder again costs no read and no parse. A message's content never changes under
//! one UIDVALIDITY and UID, so an entry is never stale; the cache is bounded in bytes (`[access]
//! imap_structure_cache_mb`) and drops its oldest entries first.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

/// What FETCH renders from a message's MIME structure.
#[derive(Debug)]
pub struct Structure {
    pub envelope: Vec<u8>,
    pub body: Vec<u8>,
    pub bodystructure: Vec<u8>,
}

impl Structure {
    /// Renders the three from a parsed message.
    pub fn of(entity: &crate::imap::mime::Entity<'_>) -> Structure {
        let mut envelope = Vec::new();
        crate::imap::mime::envelope(&crate::imap::mime::fields(entity.header), &mut envelope);
        let mut body = Vec::new();
        entity.structure(false, &mut body, 0);
        let mut bodystructure = Vec::new();
        entity.structure(true, &mut bodystructure, 0);
        Structure {
            envelope,
            body,
            bodystructure,
        }
    }

    fn cost(&self, key: &Key) -> usize {
        self.envelope.len()
            + self.body.len()
            + self.bodystructure.len()
            + key.0.len()
            + key.1.len()
            + 128
    }
}

/// (mailbox, folder, UIDVALIDITY, UID, size): the size guards against a folder replaced behind tern's
/// back by another with the same UIDVALIDITY.
pub type Key = (String, String, u32, u32, u64);

#[derive(Default)]
struct Inner {
    map: HashMap<Key, Arc<Structure>>,
    order: VecDeque<Key>,
    bytes: usize,
}

pub struct StructureCache {
    limit: usize,
    inner: Mutex<Inner>,
}

impl StructureCache {
    pub fn new(limit: usize) -> StructureCache {
        StructureCache {
            limit,
            inner: Mutex::new(Inner::default()),
        }
    }

    pub fn get(&self, key: &Key) -> Option<Arc<Structure>> {
        if self.limit == 0 {
            return None;
        }
        self.lock().map.get(key).cloned()
    }

    pub fn insert(&self, key: Key, s: Arc<Structure>) {
        let cost = s.cost(&key);
        if cost > self.limit / 4 {
            return;
        }
        let mut inner = self.lock();
        if inner.map.contains_key(&key) {
            return;
        }
        while inner.bytes + cost > self.limit {
            let Some(old) = inner.order.pop_front() else {
                break;
            };
            if let Some(gone) = inner.map.remove(&old) {
                inner.bytes -= gone.cost(&old);
            }
        }
        inner.bytes += cost;
        inner.order.push_back(key.clone());
        inner.map.insert(key, s);
    }

    /// Bytes held now.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_in_bytes_oldest_out_first() {
        let raw = b"From: a@b.test\r\nSubject: s\r\n\r\nhello\r\n";
        let entity = crate::imap::mime::parse(raw);
        let cache = StructureCache::new(4096);
        let key = |uid| {
            (
                "alice@example.test".to_string(),
                "INBOX".to_string(),
                7,
                uid,
                40,
            )
        };
        for uid in 0..100 {
            cache.insert(key(uid), Arc::new(Structure::of(&entity)));
            assert!(cache.bytes() <= 4096);
        }
        assert!(cache.get(&key(0)).is_none());
        let last = cache.get(&key(99)).expect("the newest is kept");
        assert!(
            last.envelope
                .starts_with(b"(NIL \"s\" ((NIL NIL \"a\" \"b.test\"))")
        );
        assert!(last.bodystructure.starts_with(b"(\"TEXT\" \"PLAIN\""));
        // Off: nothing kept.
        let off = StructureCache::new(0);
        off.insert(key(1), Arc::new(Structure::of(&entity)));
        assert!(off.get(&key(1)).is_none());
    }
}
