//! Framing of ManageSieve commands: lines and the literals announced at their ends (RFC 5804 section 4).
//!
//! A client's literal is `{n+}` followed by CRLF and n octets (`literal-c2s`); the server never answers it,
//! ManageSieve having no continuation response. `{n}` is the grammar's `literal-s2c`, the form the server
//! sends: a client that sends it cannot be waiting for anything either, so its octets follow at once and it
//! is framed the same way (refusing it would leave its octets to be read as commands).
//!
//! Memory is bounded whatever the client sends: a line over `max_line` is dropped to its end, and a literal
//! over its limit is counted off as it arrives, never buffered. Either way the whole command (its further
//! lines and literals included) is consumed before the refusal is reported, so that the next command starts
//! in step.

/// Octets kept of a line being dropped, enough to see a literal announced at its end (`{4294967295+}`).
const TAIL: usize = 16;

/// Why a command was consumed without being collected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// A line over the line limit.
    LineTooLong,
    /// A literal over its limit: the script limit for PUTSCRIPT and CHECKSCRIPT (`script`), the line limit
    /// for any other string.
    LiteralTooBig {
        script: bool,
        size: u64,
        limit: usize,
    },
}

/// What the framer found in the bytes received so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A whole command: its lines joined by CRLF with the literals in place, without the final CRLF.
    Command(Vec<u8>),
    /// A command that was dropped, now wholly consumed.
    Refused(Refused),
    /// A literal length that is not a 32-bit number (RFC 5804 section 4: `number`): the stream cannot be
    /// followed any further.
    Lost(String),
}

#[derive(Debug)]
pub struct Framer {
    buf: Vec<u8>,
    command: Vec<u8>,
    /// Whether the command being collected is PUTSCRIPT or CHECKSCRIPT.
    script: bool,
    /// Octets of literal still to come into `command`.
    literal: usize,
    /// Octets of a refused literal still to drop.
    skip: u64,
    /// The command is being dropped; reported when it ends.
    dropping: Option<Refused>,
    /// The last octets of a line being dropped.
    tail: Vec<u8>,
    max_line: usize,
    max_script: usize,
}

/// `{123}` or `{123+}` at the end of a line: `Some(Ok(length))`, or `Some(Err(digits))` for a length that is
/// not a 32-bit number.
pub(super) fn literal_at_end(line: &[u8]) -> Option<Result<u32, String>> {
    let l = line.strip_suffix(b"}")?;
    let l = l.strip_suffix(b"+").unwrap_or(l);
    let open = l.iter().rposition(|&b| b == b'{')?;
    let digits = &l[open + 1..];
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    // Only ASCII digits here, so this is text.
    let text = String::from_utf8_lossy(digits).into_owned();
    Some(text.parse::<u32>().map_err(|_| text))
}

/// The command verb of a line, upper-cased: the octets before the first space.
fn verb(line: &[u8]) -> Vec<u8> {
    let end = line.iter().position(|&b| b == b' ').unwrap_or(line.len());
    line[..end].to_ascii_uppercase()
}

impl Framer {
    pub fn new(max_line: usize, max_script: usize) -> Framer {
        Framer {
            buf: Vec::new(),
            command: Vec::new(),
            script: false,
            literal: 0,
            skip: 0,
            dropping: None,
            tail: Vec::new(),
            max_line,
            max_script,
        }
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Forgets everything received (STARTTLS: nothing sent before the handshake is read after it).
    pub fn clear(&mut self) {
        *self = Framer::new(self.max_line, self.max_script);
    }

    fn keep_tail(&mut self, bytes: &[u8]) {
        self.tail.extend_from_slice(bytes);
        if self.tail.len() > TAIL {
            self.tail.drain(..self.tail.len() - TAIL);
        }
    }

    /// Drops the command from here on, reporting `why` once its end is reached.
    fn drop_command(&mut self, why: Refused) {
        self.command.clear();
        self.literal = 0;
        if self.dropping.is_none() {
            self.dropping = Some(why);
        }
    }

    pub fn next_frame(&mut self) -> Option<Frame> {
        loop {
            if self.skip > 0 {
                let n = self
                    .buf
                    .len()
                    .min(usize::try_from(self.skip).unwrap_or(usize::MAX));
                self.buf.drain(..n);
                self.skip -= n as u64;
                if self.skip > 0 {
                    return None;
                }
            }
            if self.literal > 0 {
                let n = self.literal.min(self.buf.len());
                self.command.extend(self.buf.drain(..n));
                self.literal -= n;
                if self.literal > 0 {
                    return None;
                }
            }
            let Some(lf) = self.buf.iter().position(|&b| b == b'\n') else {
                if self.dropping.is_some() {
                    let rest = std::mem::take(&mut self.buf);
                    self.keep_tail(&rest);
                } else if self.buf.len() > self.max_line {
                    self.drop_command(Refused::LineTooLong);
                    let rest = std::mem::take(&mut self.buf);
                    self.keep_tail(&rest);
                }
                return None;
            };
            let mut line: Vec<u8> = self.buf.drain(..=lf).collect();
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            if self.dropping.is_none() && line.len() > self.max_line {
                self.drop_command(Refused::LineTooLong);
            }
            if self.dropping.is_some() {
                self.keep_tail(&line);
                let mut tail = std::mem::take(&mut self.tail);
                // A CR that came before the LF in an earlier read.
                if tail.last() == Some(&b'\r') {
                    tail.pop();
                }
                match literal_at_end(&tail) {
                    Some(Ok(n)) => self.skip = u64::from(n),
                    Some(Err(digits)) => return Some(Frame::Lost(digits)),
                    None => return self.dropping.take().map(Frame::Refused),
                }
                continue;
            }
            if self.command.is_empty() {
                self.script = matches!(verb(&line).as_slice(), b"PUTSCRIPT" | b"CHECKSCRIPT");
            }
            self.command.extend_from_slice(&line);
            match literal_at_end(&line) {
                None => return Some(Frame::Command(std::mem::take(&mut self.command))),
                Some(Err(digits)) => return Some(Frame::Lost(digits)),
                Some(Ok(n)) => {
                    let limit = if self.script {
                        self.max_script
                    } else {
                        self.max_line
                    };
                    // The command as a whole: its lines and at most one script.
                    let total = self.command.len() as u64 + u64::from(n);
                    if u64::from(n) > limit as u64
                        || total > (self.max_line + self.max_script) as u64
                    {
                        self.drop_command(Refused::LiteralTooBig {
                            script: self.script,
                            size: u64::from(n),
                            limit,
                        });
                        self.skip = u64::from(n);
                        continue;
                    }
                    self.command.extend_from_slice(b"\r\n");
                    // u32 fits in usize on the 32- and 64-bit targets tern builds for.
                    self.literal = n as usize;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(input: &[u8], step: usize) -> Vec<Frame> {
        let mut f = Framer::new(40, 20);
        let mut out = Vec::new();
        for chunk in input.chunks(step) {
            f.push(chunk);
            while let Some(fr) = f.next_frame() {
                out.push(fr);
            }
        }
        out
    }

    #[test]
    fn literals_in_any_split() {
        let input =
            b"PUTSCRIPT \"a\" {5+}\r\nkeep;\r\nPUTSCRIPT {1}\r\nb {3+}\r\nx\r\n\r\nNOOP\r\n";
        for step in 1..input.len() {
            assert_eq!(
                frames(input, step),
                vec![
                    Frame::Command(b"PUTSCRIPT \"a\" {5+}\r\nkeep;".to_vec()),
                    Frame::Command(b"PUTSCRIPT {1}\r\nb {3+}\r\nx\r\n".to_vec()),
                    Frame::Command(b"NOOP".to_vec()),
                ],
                "step {step}"
            );
        }
    }

    #[test]
    fn a_script_over_the_limit_is_skipped_not_kept() {
        let script = "x".repeat(25);
        let input = format!("PUTSCRIPT \"a\" {{25+}}\r\n{script}\r\nNOOP\r\n");
        for step in 1..input.len() {
            assert_eq!(
                frames(input.as_bytes(), step),
                vec![
                    Frame::Refused(Refused::LiteralTooBig {
                        script: true,
                        size: 25,
                        limit: 20
                    }),
                    Frame::Command(b"NOOP".to_vec()),
                ],
                "step {step}"
            );
        }
        let mut f = Framer::new(40, 20);
        f.push(b"PUTSCRIPT \"a\" {4000000000+}\r\n");
        f.push(&vec![b'x'; 100_000]);
        assert_eq!(f.next_frame(), None);
        assert!(f.buf.is_empty() && f.command.is_empty());
    }

    #[test]
    fn other_strings_are_held_to_the_line_limit() {
        let name = "n".repeat(41);
        let input = format!("GETSCRIPT {{41+}}\r\n{name}\r\nNOOP\r\n");
        assert_eq!(
            frames(input.as_bytes(), 3),
            vec![
                Frame::Refused(Refused::LiteralTooBig {
                    script: false,
                    size: 41,
                    limit: 40
                }),
                Frame::Command(b"NOOP".to_vec()),
            ]
        );
    }

    #[test]
    fn a_long_line_is_dropped_with_the_literal_it_announces() {
        let long = "y".repeat(60);
        let input = format!("NOOP \"{long}\" {{4+}}\r\nNOOP\r\nLOGOUT\r\n");
        for step in 1..input.len() {
            assert_eq!(
                frames(input.as_bytes(), step),
                vec![
                    Frame::Refused(Refused::LineTooLong),
                    Frame::Command(b"LOGOUT".to_vec()),
                ],
                "step {step}"
            );
        }
    }

    #[test]
    fn a_length_beyond_32_bits_loses_the_stream() {
        assert_eq!(
            frames(b"PUTSCRIPT \"a\" {99999999999+}\r\n", 5),
            vec![Frame::Lost("99999999999".into())]
        );
        assert_eq!(literal_at_end(b"x {12}"), Some(Ok(12)));
        assert_eq!(literal_at_end(b"x {+}"), None);
        assert_eq!(literal_at_end(b"x \"{1a}\""), None);
    }
}
