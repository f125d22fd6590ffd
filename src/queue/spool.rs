//! Spool files: the content of messages too large to keep in memory (past `[limits] spool_threshold_kib`), in
//! data_dir/spool. A message arriving over SMTP is written to `tmp.*` as it arrives; before its 250 the
//! file is fsynced and renamed to its queue ID, and the queue's writer fsyncs the folder (once for all the
//! messages of its group) before it commits the rows that name them. The row keeps the header section; the file keeps the whole message as received, and the row
//! says where the part after the header section starts.
//!
//! Invariants, for crashes: no queue row without its file (the file is durable before the row is
//! committed); a file without a row (a crash between the two, or after the row was deleted) is removed at
//! the next start (`sweep`), as is every `tmp.*`.

use super::QueueId;
use super::body::{Body, CHUNK};
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// The spool folder.
#[derive(Debug, Clone)]
pub struct Spool {
    dir: Arc<PathBuf>,
}

impl Spool {
    /// Opens (making it, mode 0750) data_dir/spool.
    pub fn open(data_dir: &Path) -> io::Result<Spool> {
        let dir = data_dir.join("spool");
        if !dir.is_dir() {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .mode(0o750)
                .recursive(true)
                .create(&dir)?;
            File::open(data_dir)?.sync_all()?;
        }
        Ok(Spool { dir: Arc::new(dir) })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn path_of(&self, id: QueueId) -> PathBuf {
        self.dir.join(id.to_string())
    }

    /// A new spool file for a message starting to arrive.
    pub fn writer(&self) -> io::Result<SpoolWriter> {
        use std::os::unix::fs::OpenOptionsExt;
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = self.dir.join(format!("tmp.{}.{n}", std::process::id()));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .read(true)
            .create_new(true)
            .mode(0o640)
            .open(&path)?;
        Ok(SpoolWriter {
            file: Some(file),
            path,
            len: 0,
            lines: 0,
            finished: false,
        })
    }

    /// Opens a committed message's tail.
    pub fn open_tail(&self, id: QueueId, offset: u64, len: u64, lines: u64) -> io::Result<Tail> {
        let path = self.path_of(id);
        let file = File::open(&path)?;
        let have = file.metadata()?.len();
        if have < offset + len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "spool file {} has {have} octets, the queue expects {}",
                    path.display(),
                    offset + len
                ),
            ));
        }
        Ok(Tail {
            file,
            path: std::sync::Mutex::new(path),
            offset,
            len,
            lines,
            transient: AtomicBool::new(false),
        })
    }

    /// Makes the folder's entries durable (blocking): the names of files just committed.
    pub fn sync(&self) -> io::Result<()> {
        File::open(&*self.dir)?.sync_all()
    }

    /// Removes the files of messages the queue no longer has (blocking). Errors other than "already gone"
    /// are logged: a file left behind is removed by the next start's sweep.
    pub fn remove(&self, ids: &[QueueId]) {
        for id in ids {
            let path = self.path_of(*id);
            if let Err(e) = std::fs::remove_file(&path)
                && e.kind() != io::ErrorKind::NotFound
            {
                tracing::warn!(path = %path.display(), error = %e, "spool: cannot remove a finished message's file");
            }
        }
    }

    /// At start, before any session: removes `tmp.*` files and every file whose queue ID `keep` rejects.
    /// Returns how many were removed.
    pub fn sweep(&self, keep: impl Fn(QueueId) -> bool) -> io::Result<usize> {
        let mut removed = 0;
        for entry in std::fs::read_dir(&*self.dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let orphan = match QueueId::parse(&name) {
                Some(id) => !keep(id),
                None => name.starts_with("tmp."),
            };
            if orphan {
                match std::fs::remove_file(entry.path()) {
                    Ok(()) => removed += 1,
                    Err(e) => {
                        tracing::warn!(path = %entry.path().display(), error = %e, "spool: cannot remove an orphan file")
                    }
                }
            }
        }
        Ok(removed)
    }
}

/// A spool file being written while its message arrives. Dropped unfinished, the file is removed.
#[derive(Debug)]
pub struct SpoolWriter {
    file: Option<File>,
    path: PathBuf,
    len: u64,
    lines: u64,
    /// The file now belongs to the [`Tail`] made of it.
    finished: bool,
}

impl SpoolWriter {
    /// Appends decoded content (on the blocking pool: a write may wait for the disk).
    pub async fn write(&mut self, chunk: Vec<u8>) -> io::Result<()> {
        if chunk.is_empty() {
            return Ok(());
        }
        let mut file = self
            .file
            .take()
            .ok_or_else(|| io::Error::other("spool file already failed"))?;
        let n = chunk.len() as u64;
        let lines = super::body::memchr_count(&chunk);
        let (file, result) = tokio::task::spawn_blocking(move || {
            let r = file.write_all(&chunk);
            (file, r)
        })
        .await
        .map_err(io::Error::other)?;
        result?;
        self.file = Some(file);
        self.len += n;
        self.lines += lines;
        Ok(())
    }

    /// Appends the rest, makes the file durable, and reads the header section back: the message as a
    /// [`Body`] whose tail is this file (still under its temporary name until [`Tail::commit`]).
    /// `max_header` bounds the read-back (the session refused longer header sections).
    pub async fn finish(mut self, rest: Vec<u8>, max_header: usize) -> io::Result<Body> {
        self.write(rest).await?;
        let file = self
            .file
            .take()
            .ok_or_else(|| io::Error::other("spool file already failed"))?;
        // From here the Tail owns the file's removal (this writer's Drop removes it on an error).
        let path = self.path.clone();
        let (len, lines) = (self.len, self.lines);
        let read = tokio::task::spawn_blocking(move || -> io::Result<(File, Vec<u8>)> {
            file.sync_data()?;
            // The header section is usually a few KiB: read that much, more only while no empty line
            // ends it, up to the limit the session enforced.
            let limit = (len as usize).min(max_header.saturating_add(2));
            let mut want = limit.min(16 * 1024);
            let mut prefix = Vec::new();
            loop {
                prefix.resize(want, 0);
                file.read_exact_at(&mut prefix, 0)?;
                if want == limit || crate::message::header_len(&prefix) < want {
                    break;
                }
                want = (want * 4).min(limit);
            }
            let head_len = crate::message::header_block(&prefix).len();
            prefix.truncate(head_len);
            prefix.shrink_to_fit();
            Ok((file, prefix))
        })
        .await
        .map_err(io::Error::other)??;
        let (file, head) = read;
        let head_lines = super::body::memchr_count(&head);
        if head.len() as u64 == len {
            // All header: nothing worth a file (this writer's Drop removes it).
            return Ok(Body::memory(head));
        }
        self.finished = true;
        let tail = Tail {
            file,
            path: std::sync::Mutex::new(path),
            offset: head.len() as u64,
            len: len - head.len() as u64,
            lines: lines - head_lines,
            transient: AtomicBool::new(true),
        };
        Ok(Body {
            head,
            tail: Some(Arc::new(tail)),
        })
    }
}

impl Drop for SpoolWriter {
    fn drop(&mut self) {
        if !self.finished {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The part of a message after its header section, in a spool file.
#[derive(Debug)]
pub struct Tail {
    file: File,
    path: std::sync::Mutex<PathBuf>,
    /// Where the tail starts in the file.
    pub offset: u64,
    pub len: u64,
    /// Line ends (CRLF) in the tail.
    pub lines: u64,
    /// Not yet committed under a queue ID: removed when dropped.
    transient: AtomicBool,
}

impl Tail {
    pub fn path(&self) -> PathBuf {
        self.path.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Calls `f` with the tail in chunks of at most [`CHUNK`] octets (blocking).
    pub fn for_each_chunk(&self, f: &mut dyn FnMut(&[u8]) -> io::Result<()>) -> io::Result<()> {
        let mut buf = vec![0u8; CHUNK.min(self.len as usize)];
        let mut at = 0u64;
        while at < self.len {
            let n = ((self.len - at) as usize).min(buf.len());
            self.file.read_exact_at(&mut buf[..n], self.offset + at)?;
            f(&buf[..n])?;
            at += n as u64;
        }
        Ok(())
    }

    /// Reads `buf.len()` octets of the tail from `at` (blocking).
    pub fn read_at(&self, at: u64, buf: &mut [u8]) -> io::Result<()> {
        if at + buf.len() as u64 > self.len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "read past the end of a spooled tail",
            ));
        }
        self.file.read_exact_at(buf, self.offset + at)
    }

    /// The tail memory-mapped, read-only.
    pub fn map(&self) -> io::Result<memmap2::Mmap> {
        // SAFETY: spool files are tern's own (mode 0640 in a 0750 folder), never written after `finish`
        // and never truncated; a file removed while mapped stays readable until unmapped.
        unsafe {
            memmap2::MmapOptions::new()
                .offset(self.offset)
                .len(self.len as usize)
                .map(&self.file)
        }
    }

    /// The tail mapped with the empty line before it (the last two octets of the header section as
    /// received): the shape DKIM signing takes the body in (a part with no header fields). `None` when
    /// the file has no CRLF there.
    pub fn map_from_empty_line(&self) -> io::Result<Option<memmap2::Mmap>> {
        if self.offset < 2 {
            return Ok(None);
        }
        // SAFETY: as in `map`.
        let map = unsafe {
            memmap2::MmapOptions::new()
                .offset(self.offset - 2)
                .len(self.len as usize + 2)
                .map(&self.file)?
        };
        Ok(map.starts_with(b"\r\n").then_some(map))
    }

    /// The whole file (header section as received, then the tail) mapped: what the inbound checks read,
    /// before intake rewrites the header section.
    pub fn map_whole(&self) -> io::Result<memmap2::Mmap> {
        // SAFETY: as in `map`.
        unsafe {
            memmap2::MmapOptions::new()
                .len((self.offset + self.len) as usize)
                .map(&self.file)
        }
    }

    /// Gives the file its queue ID's name (blocking). From here the queue owns the file; the queue's
    /// writer fsyncs the folder once for its group of messages before it commits their rows
    /// ([`Spool::sync`]), so the name is durable before anything names it.
    pub fn commit(&self, spool: &Spool, id: QueueId) -> io::Result<()> {
        let to = spool.path_of(id);
        let mut path = self.path.lock().unwrap_or_else(|p| p.into_inner());
        std::fs::rename(&*path, &to)?;
        *path = to;
        self.transient.store(false, Ordering::Release);
        Ok(())
    }

    /// A second name for the same content, for a message tern makes from this one (a Sieve redirect):
    /// a hard link under a temporary name, committed like a new arrival.
    pub fn link(&self, spool: &Spool) -> io::Result<Tail> {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let to = spool.dir().join(format!("tmp.{}.{n}", std::process::id()));
        std::fs::hard_link(self.path(), &to)?;
        Ok(Tail {
            file: File::open(&to)?,
            path: std::sync::Mutex::new(to),
            offset: self.offset,
            len: self.len,
            lines: self.lines,
            transient: AtomicBool::new(true),
        })
    }
}

impl Drop for Tail {
    fn drop(&mut self) {
        if self.transient.load(Ordering::Acquire) {
            let _ = std::fs::remove_file(self.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(body_octets: usize) -> Vec<u8> {
        let mut m = b"Subject: big\r\nFrom: a@b.test\r\n\r\n".to_vec();
        while m.len() < body_octets {
            m.extend_from_slice(b"0123456789abcdef\r\n");
        }
        m
    }

    #[tokio::test]
    async fn a_spooled_message_splits_at_its_header_section_and_commits_under_its_id() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let m = message(300_000);
        let mut w = spool.writer().unwrap();
        w.write(m[..100_000].to_vec()).await.unwrap();
        let body = w.finish(m[100_000..].to_vec(), 1 << 20).await.unwrap();
        assert_eq!(body.head, b"Subject: big\r\nFrom: a@b.test\r\n\r\n");
        assert_eq!(body.len(), m.len());
        assert_eq!(
            body.lines(),
            m.iter().filter(|&&b| b == b'\n').count() as u64
        );
        assert_eq!(body.to_vec().unwrap(), m);
        let tail = body.tail.clone().unwrap();
        let tmp = tail.path();
        assert!(
            tmp.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("tmp.")
        );
        let id = super::super::IdGenerator::after(None).next(1_700_000_000_000_000);
        tail.commit(&spool, id).unwrap();
        assert!(!tmp.exists());
        drop(body);
        drop(tail);
        // Committed: dropping it leaves the file; the queue reopens it.
        let again = spool.open_tail(id, 33, m.len() as u64 - 33, 0).unwrap();
        let mut back = Vec::new();
        again
            .for_each_chunk(&mut |c| {
                back.extend_from_slice(c);
                Ok(())
            })
            .unwrap();
        assert_eq!(back, &m[33..]);
        // A truncated file is refused, not read short.
        assert!(spool.open_tail(id, 33, m.len() as u64, 0).is_err());
        // The sweep keeps what the queue names and removes the rest.
        std::fs::write(spool.dir().join("tmp.1.2"), b"x").unwrap();
        let other = super::super::IdGenerator::after(Some(id)).next(1_800_000_000_000_000);
        std::fs::write(spool.path_of(other), b"x").unwrap();
        assert_eq!(spool.sweep(|i| i == id).unwrap(), 2);
        assert!(spool.path_of(id).exists());
        assert!(!spool.path_of(other).exists());
    }

    #[tokio::test]
    async fn an_unfinished_or_uncommitted_file_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let mut w = spool.writer().unwrap();
        w.write(message(70_000)).await.unwrap();
        drop(w);
        let mut w = spool.writer().unwrap();
        w.write(message(70_000)).await.unwrap();
        let body = w.finish(Vec::new(), 1 << 20).await.unwrap();
        assert!(body.tail.is_some());
        drop(body);
        assert_eq!(std::fs::read_dir(spool.dir()).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn crlf_becomes_lf_across_chunk_edges() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        // A CRLF exactly on the 64 KiB chunk edge.
        let mut m = b"S: x\r\n\r\n".to_vec();
        while m.len() < CHUNK + 8 - 1 {
            m.push(b'a');
        }
        m.extend_from_slice(b"\r\nend\r\n");
        m.extend_from_slice(&message(200_000)[33..]);
        let mut w = spool.writer().unwrap();
        w.write(m.clone()).await.unwrap();
        let body = w.finish(Vec::new(), 1 << 20).await.unwrap();
        let mut out = Vec::new();
        crate::mailbox::write_lf(body.tail.as_ref().unwrap(), &mut out).unwrap();
        let want: Vec<u8> = String::from_utf8(m[body.head.len()..].to_vec())
            .unwrap()
            .replace("\r\n", "\n")
            .into_bytes();
        assert_eq!(out, want);
    }
}
