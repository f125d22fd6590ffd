//! Queue IDs: unique, sortable by arrival, and short enough for a log line.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

/// Microseconds since the Unix epoch, made strictly increasing within a process; shown as 14 hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueueId(u64);

impl QueueId {
    pub fn parse(s: &str) -> Option<QueueId> {
        if s.len() == 14 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
            u64::from_str_radix(s, 16).ok().map(QueueId)
        } else {
            None
        }
    }

    /// Arrival time in Unix seconds.
    pub fn unix_secs(self) -> u64 {
        self.0 / 1_000_000
    }
}

impl fmt::Display for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:014X}", self.0)
    }
}

/// Hands out IDs that never repeat, even within one microsecond or after the clock steps back.
#[derive(Debug, Default)]
pub struct IdGenerator {
    last: AtomicU64,
}

impl IdGenerator {
    /// Starts above every ID already in the queue.
    pub fn after(existing_max: Option<QueueId>) -> IdGenerator {
        IdGenerator {
            last: AtomicU64::new(existing_max.map_or(0, |q| q.0)),
        }
    }

    pub fn next(&self, now_micros: u64) -> QueueId {
        let mut prev = self.last.load(Ordering::Relaxed);
        loop {
            let next = now_micros.max(prev + 1);
            match self
                .last
                .compare_exchange_weak(prev, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return QueueId(next),
                Err(p) => prev = p,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_sortable_and_round_trip() {
        let g = IdGenerator::after(None);
        let a = g.next(1_700_000_000_000_000);
        let b = g.next(1_700_000_000_000_000);
        let c = g.next(1_600_000_000_000_000);
        assert!(a < b && b < c);
        assert!(a.to_string() < b.to_string() && b.to_string() < c.to_string());
        assert_eq!(QueueId::parse(&c.to_string()), Some(c));
        assert_eq!(a.to_string().len(), 14);
        assert_eq!(a.unix_secs(), 1_700_000_000);
    }
}
