//! A message's content as the queue holds it: the header section in memory (it is what intake rewrites
//! and what every stage parses), and for a message above the spool threshold the rest in a spool file
//! (`spool::Tail`), read in chunks or mapped, never copied whole into memory per stage.

use super::spool::Tail;
use std::io;
use std::sync::Arc;

/// Chunk size for reading a spooled tail.
pub const CHUNK: usize = 64 * 1024;

/// The message, CRLF line endings: `head` then (when spooled) the tail.
#[derive(Debug, Clone, Default)]
pub struct Body {
    /// The whole message, or for a spooled one its header section up to and including the empty line.
    pub head: Vec<u8>,
    pub tail: Option<Arc<Tail>>,
}

impl Body {
    pub fn memory(bytes: Vec<u8>) -> Body {
        Body {
            head: bytes,
            tail: None,
        }
    }

    /// Octets of the whole message.
    pub fn len(&self) -> usize {
        self.head.len() + self.tail.as_ref().map_or(0, |t| t.len as usize)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Octets held in memory (what a job costs beside its reading buffer).
    pub fn in_memory(&self) -> usize {
        self.head.len()
    }

    /// Line ends (CRLF) in the whole message.
    pub fn lines(&self) -> u64 {
        memchr_count(&self.head) + self.tail.as_ref().map_or(0, |t| t.lines)
    }

    /// Calls `f` with the message in order, in chunks of at most [`CHUNK`] octets of the tail (blocking:
    /// call it from the blocking pool).
    pub fn for_each_chunk(&self, mut f: impl FnMut(&[u8]) -> io::Result<()>) -> io::Result<()> {
        f(&self.head)?;
        if let Some(t) = &self.tail {
            t.for_each_chunk(&mut f)?;
        }
        Ok(())
    }

    /// The first `max` octets of the message at most (blocking), in memory.
    pub fn prefix(&self, max: usize) -> io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(self.len().min(max));
        self.for_each_chunk(|c| {
            let room = max - out.len();
            out.extend_from_slice(&c[..c.len().min(room)]);
            if out.len() >= max {
                Err(io::Error::other(Stop))
            } else {
                Ok(())
            }
        })
        .or_else(|e| {
            if e.get_ref().is_some_and(|i| i.is::<Stop>()) {
                Ok(())
            } else {
                Err(e)
            }
        })?;
        Ok(out)
    }

    /// The whole message in memory (blocking). Only for what cannot work otherwise, within a budget.
    pub fn to_vec(&self) -> io::Result<Vec<u8>> {
        self.prefix(usize::MAX)
    }

    /// The message as a list of slices (the tail memory-mapped): for DKIM signing, which hashes it in one
    /// pass. The mapping's pages are the page cache's, not copies.
    pub fn map(&self) -> io::Result<Mapped<'_>> {
        Ok(Mapped {
            head: &self.head,
            tail: match &self.tail {
                Some(t) => Some(t.map()?),
                None => None,
            },
        })
    }
}

/// [`Body::map`]'s view.
pub struct Mapped<'a> {
    pub head: &'a [u8],
    pub tail: Option<memmap2::Mmap>,
}

impl Mapped<'_> {
    pub fn parts(&self) -> impl Iterator<Item = &[u8]> {
        std::iter::once(self.head).chain(self.tail.as_deref())
    }
}

#[derive(Debug)]
struct Stop;
impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("enough")
    }
}
impl std::error::Error for Stop {}

/// LF octets in `b`.
pub fn memchr_count(b: &[u8]) -> u64 {
    memchr::memchr_iter(b'\n', b).count() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_of_memory_body() {
        let b = Body::memory(b"Subject: x\r\n\r\nhello\r\n".to_vec());
        assert_eq!(b.prefix(9).unwrap(), b"Subject: ");
        assert_eq!(b.to_vec().unwrap(), b.head);
        assert_eq!(b.lines(), 3);
        assert_eq!(b.len(), 21);
    }
}
