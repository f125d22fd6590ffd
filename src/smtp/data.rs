//! Message content decoders: DATA (dot-stuffed, ended by `<CRLF>.<CRLF>`, RFC 5321 4.1.1.4 and 4.5.2) and
//! BDAT chunks (RFC 3030, counted octets).
//!
//! Both refuse a bare CR or a bare LF anywhere in the content: that is what makes SMTP smuggling
//! (`<LF>.<LF>`, `<LF>.<CR><LF>`, `<CR>.<CR>` read as an end of data by some other server) impossible
//! through tern. The only end of DATA is `<CR><LF>.<CR><LF>`; a bare LF never starts a line, so a dot after
//! it is content. Both also enforce the message size and text line length limits without buffering past them.

/// Why a message body was refused; decided once the whole body has been read so the stream stays in sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentError {
    TooBig,
    LineTooLong,
    BareLf,
    BareCr,
    /// The header section (up to the first empty line) is longer than this many octets.
    HeaderTooBig(usize),
    /// The server had no memory left for it (shed by the driver); a temporary failure.
    NoMemory,
}

/// Limits shared by the DATA and BDAT readers.
#[derive(Debug, Clone, Copy)]
pub struct ContentLimits {
    pub max_size: usize,
    pub max_line: usize,
    /// Longest header section; everything that parses headers (checks, DKIM, Sieve) works within it.
    pub max_header: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pos {
    /// At the start of a line (after CRLF, or at the very start of the data).
    LineStart,
    /// A `.` was read at the start of a line.
    Dot,
    /// `.` then CR at the start of a line: an LF now ends the data.
    DotCr,
    /// Inside a line.
    InLine,
    /// A CR inside a line: an LF now ends the line.
    Cr,
}

/// Checks and accumulates content: tracks line length, bare CR/LF and the size limit.
#[derive(Debug)]
struct Sink {
    /// What was read and not yet taken by the driver ([`DataReader::take`]).
    body: Vec<u8>,
    /// Octets of the whole message so far, taken or not: the size limits count these.
    total: usize,
    limits: ContentLimits,
    line_len: usize,
    /// The empty line that ends the header section was seen.
    header_done: bool,
    error: Option<ContentError>,
}

impl Sink {
    fn new(limits: ContentLimits) -> Sink {
        Sink {
            body: Vec::with_capacity(4096),
            total: 0,
            limits,
            line_len: 0,
            header_done: false,
            error: None,
        }
    }

    fn fail(&mut self, e: ContentError) {
        if self.error.is_none() {
            self.error = Some(e);
            self.body = Vec::new();
        }
    }

    #[inline]
    fn push(&mut self, b: u8) {
        if self.error.is_some() {
            return;
        }
        if self.total >= self.limits.max_size {
            self.fail(ContentError::TooBig);
            return;
        }
        if !self.header_done && self.total >= self.limits.max_header {
            self.fail(ContentError::HeaderTooBig(self.limits.max_header));
            return;
        }
        self.body.push(b);
        self.total += 1;
    }

    /// Hands over what was read so far (nothing once the message is refused); the limits keep counting
    /// it, and the end of data returns only what came after.
    fn take(&mut self) -> Vec<u8> {
        if self.error.is_some() {
            return Vec::new();
        }
        // The same room again: a message that was large enough to take is large enough to fill it.
        let room = self.body.capacity();
        std::mem::replace(&mut self.body, Vec::with_capacity(room))
    }

    /// A run of octets inside a line (no CR or LF): the same as `count_line_octet` then `push` for each,
    /// in one step. The first limit an octet would break decides the error, in the per-octet order.
    #[inline]
    fn push_run(&mut self, run: &[u8]) {
        let line_room = self.limits.max_line.saturating_sub(self.line_len);
        self.line_len += run.len();
        if self.error.is_some() {
            return;
        }
        let size_room = self.limits.max_size.saturating_sub(self.total);
        let header_room = if self.header_done {
            usize::MAX
        } else {
            self.limits.max_header.saturating_sub(self.total)
        };
        // At one octet the line length is checked first, then the size, then the header section.
        let mut stop: Option<(usize, ContentError)> = None;
        for (room, e) in [
            (line_room, ContentError::LineTooLong),
            (size_room, ContentError::TooBig),
            (
                header_room,
                ContentError::HeaderTooBig(self.limits.max_header),
            ),
        ] {
            if room < run.len() && stop.is_none_or(|(at, _)| room < at) {
                stop = Some((room, e));
            }
        }
        let n = stop.map_or(run.len(), |(at, _)| at);
        self.body.extend_from_slice(&run[..n]);
        self.total += n;
        if let Some((_, e)) = stop {
            self.fail(e);
        }
    }

    /// A CRLF was read: an empty line ends the header section.
    #[inline]
    fn end_line(&mut self) {
        if self.line_len == 0 {
            self.header_done = true;
        }
        self.line_len = 0;
    }

    #[inline]
    fn count_line_octet(&mut self) {
        self.line_len += 1;
        if self.line_len > self.limits.max_line {
            self.fail(ContentError::LineTooLong);
        }
    }

    fn finish(self) -> Result<Vec<u8>, ContentError> {
        match self.error {
            Some(e) => Err(e),
            None => Ok(self.body),
        }
    }
}

/// Reads DATA content until `<CRLF>.<CRLF>`, removing dot-stuffing.
#[derive(Debug)]
pub struct DataReader {
    pos: Pos,
    sink: Sink,
}

impl DataReader {
    /// Octets the content buffer holds (its capacity: what it costs).
    pub fn held(&self) -> usize {
        self.sink.body.capacity()
    }

    /// Octets read and not yet taken.
    pub fn pending(&self) -> usize {
        self.sink.body.len()
    }

    /// Drops the content read so far and reads the rest without keeping it; the end of data then
    /// reports `NoMemory`.
    pub fn shed(&mut self) {
        self.sink.fail(ContentError::NoMemory);
    }

    /// Takes the decoded content read so far (the driver spools it to disk); the end of data then returns
    /// the rest.
    pub fn take(&mut self) -> Vec<u8> {
        self.sink.take()
    }

    pub fn new(limits: ContentLimits) -> DataReader {
        DataReader {
            pos: Pos::LineStart,
            sink: Sink::new(limits),
        }
    }

    /// Consumes bytes from `input`; returns how many were consumed and, when the end of data was found,
    /// the decoded message (CRLF line endings, dots unstuffed) or why it is refused.
    pub fn feed(&mut self, input: &[u8]) -> (usize, Option<Result<Vec<u8>, ContentError>>) {
        let mut i = 0;
        while i < input.len() {
            // Inside a line, everything up to the next CR or LF is content: taken in one step.
            if self.pos == Pos::InLine {
                let end = memchr::memchr2(b'\r', b'\n', &input[i..]).map_or(input.len(), |k| i + k);
                self.sink.push_run(&input[i..end]);
                i = end;
                if i == input.len() {
                    break;
                }
            }
            let b = input[i];
            i += 1;
            match (self.pos, b) {
                (Pos::LineStart, b'.') => self.pos = Pos::Dot,
                (Pos::Dot, b'\r') => self.pos = Pos::DotCr,
                (Pos::DotCr, b'\n') => {
                    let limits = self.sink.limits;
                    let sink = std::mem::replace(&mut self.sink, Sink::new(limits));
                    return (i, Some(sink.finish()));
                }
                (Pos::DotCr, _) => {
                    // `.` CR then not LF: a bare CR. The stuffed dot itself is dropped.
                    self.sink.fail(ContentError::BareCr);
                    self.pos = Pos::InLine;
                    self.octet(b);
                }
                (Pos::LineStart | Pos::InLine | Pos::Dot, _) => {
                    // RFC 5321 4.5.2: a leading dot followed by more text is removed.
                    self.pos = Pos::InLine;
                    self.octet(b);
                }
                (Pos::Cr, b'\n') => {
                    self.sink.push(b'\r');
                    self.sink.push(b'\n');
                    self.sink.end_line();
                    self.pos = Pos::LineStart;
                }
                (Pos::Cr, _) => {
                    self.sink.fail(ContentError::BareCr);
                    self.pos = Pos::InLine;
                    self.octet(b);
                }
            }
        }
        (input.len(), None)
    }

    /// An octet inside a line (state is `InLine`).
    #[inline]
    fn octet(&mut self, b: u8) {
        match b {
            b'\r' => self.pos = Pos::Cr,
            // A bare LF is content, not a line end: it never makes the next `.` an end of data.
            b'\n' => self.sink.fail(ContentError::BareLf),
            _ => {
                self.sink.count_line_octet();
                self.sink.push(b);
            }
        }
    }
}

/// Accumulates BDAT chunks (no dot-stuffing) and checks them the same way; a CRLF may span two chunks.
#[derive(Debug)]
pub struct ChunkReader {
    sink: Sink,
    after_cr: bool,
    /// Octets still to read in the current chunk.
    pub remaining: usize,
    /// Whether the current chunk was sent with LAST.
    pub last: bool,
    /// Octets of the current chunk, for its reply.
    pub chunk_size: usize,
}

impl ChunkReader {
    /// Octets the content buffer holds.
    pub fn held(&self) -> usize {
        self.sink.body.capacity()
    }

    /// As [`DataReader::shed`].
    pub fn shed(&mut self) {
        self.sink.fail(ContentError::NoMemory);
    }

    /// As [`DataReader::pending`].
    pub fn pending(&self) -> usize {
        self.sink.body.len()
    }

    /// As [`DataReader::take`].
    pub fn take(&mut self) -> Vec<u8> {
        self.sink.take()
    }

    pub fn new(limits: ContentLimits) -> ChunkReader {
        ChunkReader {
            sink: Sink::new(limits),
            after_cr: false,
            remaining: 0,
            last: false,
            chunk_size: 0,
        }
    }

    pub fn begin_chunk(&mut self, size: usize, last: bool) {
        self.remaining = size;
        self.chunk_size = size;
        self.last = last;
        if size > self.sink.limits.max_size.saturating_sub(self.sink.total) {
            // Known too big from the announced size: refuse without buffering, but still read the octets.
            self.sink.fail(ContentError::TooBig);
        }
    }

    /// Consumes up to `remaining` bytes of `input`; returns how many were consumed.
    pub fn feed(&mut self, input: &[u8]) -> usize {
        let n = input.len().min(self.remaining);
        let chunk = &input[..n];
        let mut i = 0;
        while i < n {
            if !self.after_cr {
                let end = memchr::memchr2(b'\r', b'\n', &chunk[i..]).map_or(n, |k| i + k);
                self.sink.push_run(&chunk[i..end]);
                i = end;
                if i == n {
                    break;
                }
            }
            let b = chunk[i];
            i += 1;
            match (self.after_cr, b) {
                (true, b'\n') => {
                    self.after_cr = false;
                    self.sink.push(b);
                    self.sink.end_line();
                }
                (true, _) => {
                    self.sink.fail(ContentError::BareCr);
                    self.after_cr = b == b'\r';
                }
                (false, b'\r') => {
                    self.after_cr = true;
                    self.sink.push(b);
                }
                (false, b'\n') => self.sink.fail(ContentError::BareLf),
                (false, _) => {
                    self.sink.count_line_octet();
                    self.sink.push(b);
                }
            }
        }
        self.remaining -= n;
        n
    }

    /// The refusal already decided for this message, if any.
    pub fn error(&self) -> Option<ContentError> {
        self.sink.error
    }

    pub fn size_so_far(&self) -> usize {
        self.sink.total
    }

    /// The whole message after the LAST chunk.
    pub fn finish(mut self) -> Result<Vec<u8>, ContentError> {
        if self.after_cr {
            self.sink.fail(ContentError::BareCr);
        }
        self.sink.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: ContentLimits = ContentLimits {
        max_size: 1 << 20,
        max_line: 1000,
        max_header: 1 << 20,
    };

    /// Feeds `input` split at `split` and returns (consumed, outcome).
    fn run(input: &[u8], split: usize) -> (usize, Option<Result<Vec<u8>, ContentError>>) {
        let mut r = DataReader::new(LIMITS);
        let (a, b) = input.split_at(split.min(input.len()));
        let (n, out) = r.feed(a);
        if out.is_some() {
            return (n, out);
        }
        let (m, out) = r.feed(b);
        (n + m, out)
    }

    fn all_splits(input: &[u8]) -> (usize, Option<Result<Vec<u8>, ContentError>>) {
        let first = run(input, 0);
        for split in 1..=input.len() {
            assert_eq!(
                run(input, split),
                first,
                "split at {split} of {:?}",
                String::from_utf8_lossy(input)
            );
        }
        first
    }

    #[test]
    fn ends_only_at_crlf_dot_crlf_and_unstuffs() {
        let input = b"Subject: x\r\n\r\n..leading dot\r\n.\r\nNEXT";
        let (n, out) = all_splits(input);
        assert_eq!(n, input.len() - 4);
        assert_eq!(out.unwrap().unwrap(), b"Subject: x\r\n\r\n.leading dot\r\n");
    }

    #[test]
    fn content_taken_midway_still_counts_toward_the_limits() {
        let limits = ContentLimits {
            max_size: 40,
            max_line: 1000,
            max_header: 1 << 20,
        };
        let mut r = DataReader::new(limits);
        assert_eq!(r.feed(b"Subject: x\r\n\r\n0123456789\r\n").1, None);
        let first = r.take();
        assert_eq!(first, b"Subject: x\r\n\r\n0123456789\r\n");
        assert_eq!(r.pending(), 0);
        let (_, out) = r.feed(b"abc\r\n.\r\n");
        assert_eq!(out.unwrap().unwrap(), b"abc\r\n");
        // The same size in two pieces is still too big.
        let mut r = DataReader::new(limits);
        r.feed(b"Subject: x\r\n\r\n0123456789012345678901234567\r\n");
        let _ = r.take();
        let (_, out) = r.feed(b"more\r\n.\r\n");
        assert_eq!(out.unwrap(), Err(ContentError::TooBig));
        let mut c = ChunkReader::new(limits);
        c.begin_chunk(30, false);
        c.feed(&[b'a'; 30]);
        let _ = c.take();
        assert_eq!(c.size_so_far(), 30);
        c.begin_chunk(20, true);
        assert_eq!(c.error(), Some(ContentError::TooBig));
    }

    #[test]
    fn empty_message() {
        assert_eq!(all_splits(b".\r\n").1.unwrap().unwrap(), b"");
    }

    #[test]
    fn smuggling_sequences_neither_end_nor_split_the_message() {
        for seq in [&b"\n.\n"[..], b"\n.\r\n", b"\r.\r", b"\r\n.\n", b"\r\n.\r"] {
            let mut input = b"a\r\nb".to_vec();
            input.extend_from_slice(seq);
            input.extend_from_slice(b"MAIL FROM:<x@evil.test>\r\n.\r\n");
            let (n, out) = all_splits(&input);
            assert_eq!(n, input.len(), "{seq:?} ended the data early");
            let err = out.unwrap().unwrap_err();
            assert!(
                matches!(err, ContentError::BareLf | ContentError::BareCr),
                "{seq:?}: {err:?}"
            );
        }
    }

    #[test]
    fn size_and_line_limits_do_not_buffer_past_the_limit() {
        let mut r = DataReader::new(ContentLimits {
            max_size: 10,
            max_line: 1000,
            max_header: 1 << 20,
        });
        let (_, out) = r.feed(b"0123456789abcdef\r\n.\r\n");
        assert_eq!(out.unwrap(), Err(ContentError::TooBig));
        let mut r = DataReader::new(ContentLimits {
            max_size: 100,
            max_line: 4,
            max_header: 1 << 20,
        });
        let (_, out) = r.feed(b"abcd\r\nabcde\r\n.\r\n");
        assert_eq!(out.unwrap(), Err(ContentError::LineTooLong));
    }

    #[test]
    fn header_section_is_bounded_but_the_body_is_not() {
        let limits = ContentLimits {
            max_size: 1 << 20,
            max_line: 1000,
            max_header: 64,
        };
        let mut big = b"Subject: x\r\n".repeat(10);
        big.extend_from_slice(b"\r\nbody\r\n.\r\n");
        let (_, out) = DataReader::new(limits).feed(&big);
        assert_eq!(out.unwrap(), Err(ContentError::HeaderTooBig(64)));
        let mut ok = b"Subject: x\r\n\r\n".to_vec();
        ok.extend_from_slice(&b"body line\r\n".repeat(50));
        ok.extend_from_slice(b".\r\n");
        assert!(DataReader::new(limits).feed(&ok).1.unwrap().is_ok());
        let mut c = ChunkReader::new(limits);
        c.begin_chunk(big.len() - 3, true);
        c.feed(&big[..big.len() - 3]);
        assert_eq!(c.finish(), Err(ContentError::HeaderTooBig(64)));
    }

    #[test]
    fn chunks_accept_crlf_across_a_boundary_and_refuse_bare_lf() {
        let mut c = ChunkReader::new(LIMITS);
        c.begin_chunk(3, false);
        assert_eq!(c.feed(b"ab\rEXTRA"), 3);
        c.begin_chunk(2, true);
        assert_eq!(c.feed(b"\nc"), 2);
        assert_eq!(c.finish().unwrap(), b"ab\r\nc");
        let mut c = ChunkReader::new(LIMITS);
        c.begin_chunk(4, true);
        c.feed(b"a\n.\n");
        assert_eq!(c.finish(), Err(ContentError::BareLf));
    }

    #[test]
    fn announced_chunk_over_the_limit_is_refused_without_buffering() {
        let mut c = ChunkReader::new(ContentLimits {
            max_size: 5,
            max_line: 1000,
            max_header: 1 << 20,
        });
        c.begin_chunk(1_000_000, true);
        assert_eq!(c.feed(&[b'a'; 1000]), 1000);
        assert_eq!(c.size_so_far(), 0);
        assert_eq!(c.remaining, 999_000);
    }
}
