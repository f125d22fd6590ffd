//! IMAP4rev2 (RFC 9051) and IMAP4rev1 (RFC 3501), sans I/O: the command grammar (`parse`), the framing
//! of commands with their literals (`Framer`), the responses' building blocks, MIME structure for FETCH
//! (`mime`), SEARCH matching (`search`) and a session's view of its selected folder (`view`). The listener
//! in `access::imap` drives these over the mailbox index.

pub mod mime;
pub mod parse;
pub mod response;
pub mod search;
pub mod sort;
pub mod thread;
pub mod utf7;
pub mod view;

/// Why a command could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("{0}")]
    Bad(String),
    #[error("unknown command {0:?}")]
    Unknown(String),
    #[error("only UTF-8 and US-ASCII searches are supported")]
    BadCharset,
}

/// What the framer found in the bytes received so far.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// A whole command: its line with the literals in place, without the final CRLF.
    Command(Vec<u8>),
    /// A synchronising literal was announced and may be sent: answer `+ ...`.
    Continue,
    /// A line or command over the limits; the tag, when it could be read, for a tagged BAD.
    TooLong(Option<String>),
    /// A literal over the literal limit was refused before it was sent (synchronising) or skipped.
    LiteralTooBig(Option<String>, u64),
}

/// Collects commands from the byte stream: lines, and literals announced as `{n}`, `{n+}` or `~{n}`.
/// Memory is bounded by the limits whatever the client sends: an over-long line is skipped to its end,
/// a non-synchronising literal over the limit is read and dropped.
#[derive(Debug)]
pub struct Framer {
    buf: Vec<u8>,
    command: Vec<u8>,
    /// Octets of literal still to come into `command`.
    literal: usize,
    /// Octets to drop (a refused non-synchronising literal), then report.
    skip: usize,
    skipping_line: bool,
    refused: Option<(Option<String>, u64)>,
    pub max_line: usize,
    pub max_literal: usize,
}

fn tag_of(command: &[u8]) -> Option<String> {
    let end = command.iter().position(|&b| b == b' ')?;
    let tag = std::str::from_utf8(&command[..end]).ok()?;
    (!tag.is_empty() && tag.len() <= 64 && tag.bytes().all(|b| b > 0x20 && b < 0x7f && b != b'+'))
        .then(|| tag.to_string())
}

/// `{123}` / `{123+}` / `~{123}` at the end of a line: (length, synchronising).
fn literal_at_end(line: &[u8]) -> Option<(u64, bool)> {
    let l = line.strip_suffix(b"}")?;
    let (l, sync) = match l.strip_suffix(b"+") {
        Some(x) => (x, false),
        None => (l, true),
    };
    let open = l.iter().rposition(|&b| b == b'{')?;
    let digits = &l[open + 1..];
    if digits.is_empty() || digits.len() > 12 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some((std::str::from_utf8(digits).ok()?.parse().ok()?, sync))
}

impl Framer {
    pub fn new(max_line: usize, max_literal: usize) -> Framer {
        Framer {
            buf: Vec::new(),
            command: Vec::new(),
            literal: 0,
            skip: 0,
            skipping_line: false,
            refused: None,
            max_line,
            max_literal,
        }
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Octets received and not yet framed.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// A line by itself (IDLE's DONE, a SASL response), when no command is being collected.
    pub fn line(&mut self) -> Option<Result<Vec<u8>, ()>> {
        let nl = self.buf.iter().position(|&b| b == b'\n');
        match nl {
            Some(i) => {
                let mut line: Vec<u8> = self.buf.drain(..=i).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                if line.len() > self.max_line {
                    return Some(Err(()));
                }
                Some(Ok(line))
            }
            None if self.buf.len() > self.max_line => {
                self.buf.clear();
                Some(Err(()))
            }
            None => None,
        }
    }

    pub fn next(&mut self) -> Option<Frame> {
        loop {
            if self.skip > 0 {
                let n = self.skip.min(self.buf.len());
                self.buf.drain(..n);
                self.skip -= n;
                if self.skip > 0 {
                    return None;
                }
                // The rest of the command's line follows the literal: drop it too.
                self.skipping_line = true;
            }
            if self.literal > 0 {
                let n = self.literal.min(self.buf.len());
                self.command.extend(self.buf.drain(..n));
                self.literal -= n;
                if self.literal > 0 {
                    return None;
                }
            }
            let nl = self.buf.iter().position(|&b| b == b'\n');
            let Some(i) = nl else {
                if self.buf.len() > self.max_line {
                    let tag = if self.skipping_line {
                        None
                    } else {
                        tag_of(&self.command).or_else(|| tag_of(&self.buf))
                    };
                    self.buf.clear();
                    if !self.skipping_line {
                        self.skipping_line = true;
                        self.command.clear();
                        return Some(Frame::TooLong(tag));
                    }
                }
                return None;
            };
            let mut line: Vec<u8> = self.buf.drain(..=i).collect();
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            if self.skipping_line {
                self.skipping_line = false;
                if let Some((tag, n)) = self.refused.take() {
                    return Some(Frame::LiteralTooBig(tag, n));
                }
                continue;
            }
            if line.len() > self.max_line
                || self.command.len() + line.len() > self.max_line + self.max_literal
            {
                let tag = tag_of(&self.command).or_else(|| tag_of(&line));
                self.command.clear();
                return Some(Frame::TooLong(tag));
            }
            self.command.extend_from_slice(&line);
            match literal_at_end(&line) {
                Some((n, sync)) => {
                    let tag = tag_of(&self.command);
                    if n > self.max_literal as u64 {
                        self.command.clear();
                        if sync {
                            // Refused before the client sends it.
                            return Some(Frame::LiteralTooBig(tag, n));
                        }
                        self.skip = n as usize;
                        self.refused = Some((tag, n));
                        continue;
                    }
                    self.command.extend_from_slice(b"\r\n");
                    self.literal = n as usize;
                    if sync {
                        return Some(Frame::Continue);
                    }
                }
                None => return Some(Frame::Command(std::mem::take(&mut self.command))),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(input: &[u8], step: usize) -> Vec<Frame> {
        let mut f = Framer::new(100, 50);
        let mut out = Vec::new();
        for chunk in input.chunks(step) {
            f.push(chunk);
            while let Some(fr) = f.next() {
                out.push(fr);
            }
        }
        out
    }

    #[test]
    fn literals_in_any_split() {
        let input = b"a LOGIN {5}\r\nalice {3+}\r\nxyz\r\nb NOOP\r\n";
        for step in 1..input.len() {
            assert_eq!(
                frames(input, step),
                vec![
                    Frame::Continue,
                    Frame::Command(b"a LOGIN {5}\r\nalice {3+}\r\nxyz".to_vec()),
                    Frame::Command(b"b NOOP".to_vec()),
                ],
                "step {step}"
            );
        }
    }

    #[test]
    fn limits_hold() {
        let mut long = b"a NOOP ".to_vec();
        long.extend(std::iter::repeat_n(b'x', 500));
        long.extend_from_slice(b"\r\nb NOOP\r\n");
        assert_eq!(
            frames(&long, 7),
            vec![
                Frame::TooLong(Some("a".into())),
                Frame::Command(b"b NOOP".to_vec())
            ]
        );
        assert_eq!(
            frames(b"a APPEND x {51}\r\nb NOOP\r\n", 3),
            vec![
                Frame::LiteralTooBig(Some("a".into()), 51),
                Frame::Command(b"b NOOP".to_vec())
            ]
        );
        let mut skip = b"a APPEND x {60+}\r\n".to_vec();
        skip.extend(std::iter::repeat_n(b'y', 60));
        skip.extend_from_slice(b"\r\nb NOOP\r\n");
        assert_eq!(
            frames(&skip, 5),
            vec![
                Frame::LiteralTooBig(Some("a".into()), 60),
                Frame::Command(b"b NOOP".to_vec())
            ]
        );
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever a client sends, in whatever pieces: frames within the limits, and a parse or an error.
        #[test]
        fn framer_and_parser_never_panic(data in proptest::collection::vec(any::<u8>(), 0..2000), step in 1usize..64) {
            let mut f = Framer::new(256, 512);
            for chunk in data.chunks(step) {
                f.push(chunk);
                while let Some(frame) = f.next() {
                    if let Frame::Command(raw) = frame {
                        prop_assert!(raw.len() <= 256 + 512 + 2);
                        let _ = parse::command(&raw);
                    }
                }
                prop_assert!(f.buffered() <= 256 + step + 512);
            }
        }

        /// Any message: structure, envelope, sections and the binary re-encoding never panic.
        #[test]
        fn mime_never_panics(data in proptest::collection::vec(any::<u8>(), 0..3000)) {
            let e = mime::parse(&data);
            let mut out = Vec::new();
            e.structure(true, &mut out, 0);
            mime::envelope(&mime::fields(e.header), &mut out);
            for path in [&[1][..], &[1, 1], &[2, 1, 3]] {
                if let Some(p) = e.part(path) {
                    let _ = p.decoded();
                }
            }
            let _ = mime::encode_binary(&data);
            let _ = search::Text::of(&data);
        }
    }
}
