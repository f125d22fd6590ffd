//! The Sendmail milter protocol, version 6 (what libmilter and Postfix speak), without I/O: the commands the
//! MTA sends, encoded as packets (4-octet length, command octet, data), and the filter's replies decoded from
//! a byte stream under a size limit. `edit` applies the header changes a filter asks for at end of message.

pub mod edit;

use thiserror::Error;

pub const VERSION: u32 = 6;

/// What the MTA lets the filter change (SMFIF_*).
pub mod actions {
    pub const ADDHDRS: u32 = 0x01;
    pub const CHGBODY: u32 = 0x02;
    pub const ADDRCPT: u32 = 0x04;
    pub const DELRCPT: u32 = 0x08;
    pub const CHGHDRS: u32 = 0x10;
    pub const QUARANTINE: u32 = 0x20;
    pub const CHGFROM: u32 = 0x40;
    pub const ADDRCPT_PAR: u32 = 0x80;
    pub const SETSYMLIST: u32 = 0x100;
    /// Everything tern applies.
    pub const ALL: u32 =
        ADDHDRS | CHGBODY | ADDRCPT | DELRCPT | CHGHDRS | QUARANTINE | CHGFROM | ADDRCPT_PAR;
}

/// Protocol steps the filter may skip or not answer (SMFIP_*).
pub mod protocol {
    pub const NOCONNECT: u32 = 0x1;
    pub const NOHELO: u32 = 0x2;
    pub const NOMAIL: u32 = 0x4;
    pub const NORCPT: u32 = 0x8;
    pub const NOBODY: u32 = 0x10;
    pub const NOHDRS: u32 = 0x20;
    pub const NOEOH: u32 = 0x40;
    pub const NR_HDR: u32 = 0x80;
    pub const NOUNKNOWN: u32 = 0x100;
    pub const NODATA: u32 = 0x200;
    pub const SKIP: u32 = 0x400;
    pub const RCPT_REJ: u32 = 0x800;
    pub const NR_CONN: u32 = 0x1000;
    pub const NR_HELO: u32 = 0x2000;
    pub const NR_MAIL: u32 = 0x4000;
    pub const NR_RCPT: u32 = 0x8000;
    pub const NR_DATA: u32 = 0x10000;
    pub const NR_UNKN: u32 = 0x20000;
    pub const NR_EOH: u32 = 0x40000;
    pub const NR_BODY: u32 = 0x80000;
    /// The steps tern offers to leave out or leave unanswered (not HDR_LEADSPC: values are sent without
    /// the space after the colon, as Postfix does).
    pub const OFFERED: u32 = NOCONNECT
        | NOHELO
        | NOMAIL
        | NORCPT
        | NOBODY
        | NOHDRS
        | NOEOH
        | NR_HDR
        | NOUNKNOWN
        | NODATA
        | SKIP
        | NR_CONN
        | NR_HELO
        | NR_MAIL
        | NR_RCPT
        | NR_DATA
        | NR_UNKN
        | NR_EOH
        | NR_BODY;
}

/// Body chunks sent to a filter are at most this long (libmilter's MILTER_CHUNK_SIZE).
pub const BODY_CHUNK: usize = 65_535;

/// The stage a macro set belongs to: the command code it precedes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Connect,
    Helo,
    Mail,
    Rcpt,
    Data,
    Eoh,
    Eom,
}

impl Stage {
    fn code(self) -> u8 {
        match self {
            Stage::Connect => b'C',
            Stage::Helo => b'H',
            Stage::Mail => b'M',
            Stage::Rcpt => b'R',
            Stage::Data => b'T',
            Stage::Eoh => b'N',
            Stage::Eom => b'E',
        }
    }
}

/// The client's address as SMFIC_CONNECT carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Family {
    Inet(std::net::SocketAddr),
    Unknown,
}

/// What the MTA sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    OptNeg {
        version: u32,
        actions: u32,
        protocol: u32,
    },
    Macros(Stage, Vec<(String, String)>),
    Connect {
        hostname: String,
        family: Family,
    },
    Helo(String),
    /// The reverse-path in angle brackets, then ESMTP parameters.
    Mail(Vec<String>),
    Rcpt(Vec<String>),
    Data,
    Header(String, String),
    Eoh,
    Body(Vec<u8>),
    BodyEob,
    Abort,
    Quit,
}

fn push_str(out: &mut Vec<u8>, s: &str) {
    // A NUL would end the string early at the filter: it never reaches it.
    out.extend(s.bytes().filter(|b| *b != 0));
    out.push(0);
}

impl Command {
    /// The packet: length (command octet and data), command octet, data.
    pub fn encode(&self) -> Vec<u8> {
        let mut data = Vec::new();
        let code = match self {
            Command::OptNeg {
                version,
                actions,
                protocol,
            } => {
                data.extend(version.to_be_bytes());
                data.extend(actions.to_be_bytes());
                data.extend(protocol.to_be_bytes());
                b'O'
            }
            Command::Macros(stage, pairs) => {
                data.push(stage.code());
                for (k, v) in pairs {
                    push_str(&mut data, k);
                    push_str(&mut data, v);
                }
                b'D'
            }
            Command::Connect { hostname, family } => {
                push_str(&mut data, hostname);
                match family {
                    Family::Inet(addr) => {
                        data.push(if addr.is_ipv4() { b'4' } else { b'6' });
                        data.extend(addr.port().to_be_bytes());
                        push_str(&mut data, &addr.ip().to_string());
                    }
                    Family::Unknown => data.push(b'U'),
                }
                b'C'
            }
            Command::Helo(h) => {
                push_str(&mut data, h);
                b'H'
            }
            Command::Mail(args) | Command::Rcpt(args) => {
                for a in args {
                    push_str(&mut data, a);
                }
                if matches!(self, Command::Mail(_)) {
                    b'M'
                } else {
                    b'R'
                }
            }
            Command::Data => b'T',
            Command::Header(name, value) => {
                push_str(&mut data, name);
                push_str(&mut data, value);
                b'L'
            }
            Command::Eoh => b'N',
            Command::Body(chunk) => {
                data.extend_from_slice(chunk);
                b'B'
            }
            Command::BodyEob => b'E',
            Command::Abort => b'A',
            Command::Quit => b'Q',
        };
        let mut out = Vec::with_capacity(5 + data.len());
        out.extend(((data.len() + 1) as u32).to_be_bytes());
        out.push(code);
        out.extend(data);
        out
    }
}

/// What the filter answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    OptNeg {
        version: u32,
        actions: u32,
        protocol: u32,
    },
    Accept,
    Continue,
    Discard,
    Reject,
    Tempfail,
    /// SMFIR_SKIP: no more body chunks.
    Skip,
    /// SMFIR_REPLYCODE: "550 5.7.1 text".
    ReplyCode(String),
    Progress,
    Quarantine(String),
    ConnFail,
    Shutdown,
    AddHeader(String, String),
    /// Insert at this position of the header section (0: first).
    InsHeader(u32, String, String),
    /// Change the index-th (from 1) field of this name; an empty value deletes it.
    ChgHeader(u32, String, String),
    AddRcpt(String),
    AddRcptPar(String, String),
    DelRcpt(String),
    ChgFrom(String, String),
    ReplBody(Vec<u8>),
    /// SMFIR_SETSYMLIST: macros wanted at a stage (answered at negotiation; tern sends its own set).
    SetSymList(u32, String),
}

impl Response {
    /// Whether this ends the filter's answer to a command (the rest are modifications or progress).
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            Response::OptNeg { .. }
                | Response::Accept
                | Response::Continue
                | Response::Discard
                | Response::Reject
                | Response::Tempfail
                | Response::Skip
                | Response::ReplyCode(_)
                | Response::ConnFail
                | Response::Shutdown
        )
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum MilterError {
    #[error("filter sent a packet of {0} octets, over the limit")]
    TooLong(usize),
    #[error("filter sent an empty packet")]
    Empty,
    #[error("filter sent an unknown reply {0:?}")]
    Unknown(char),
    #[error("filter sent a malformed {0:?} reply")]
    Malformed(char),
}

/// Splits the filter's byte stream into replies.
#[derive(Debug)]
pub struct Decoder {
    buf: Vec<u8>,
    max: usize,
}

fn strings(data: &[u8]) -> Vec<String> {
    let mut parts: Vec<String> = data
        .split(|b| *b == 0)
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect();
    // The final NUL leaves an empty last piece.
    if data.last() == Some(&0) {
        parts.pop();
    }
    parts
}

fn u32_at(data: &[u8], at: usize) -> Option<u32> {
    data.get(at..at + 4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

impl Decoder {
    /// `max`: the longest packet accepted (a REPLBODY chunk, a header).
    pub fn new(max: usize) -> Decoder {
        Decoder {
            buf: Vec::new(),
            max,
        }
    }

    pub fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete reply, if there is one.
    pub fn next(&mut self) -> Result<Option<Response>, MilterError> {
        let Some(len) = u32_at(&self.buf, 0) else {
            return Ok(None);
        };
        let len = len as usize;
        if len == 0 {
            return Err(MilterError::Empty);
        }
        if len > self.max {
            return Err(MilterError::TooLong(len));
        }
        if self.buf.len() < 4 + len {
            return Ok(None);
        }
        let packet: Vec<u8> = self.buf.drain(..4 + len).skip(4).collect();
        let (code, data) = (packet[0], &packet[1..]);
        let c = code as char;
        let bad = || MilterError::Malformed(c);
        let s = strings(data);
        let one = |i: usize| s.get(i).cloned().ok_or_else(bad);
        Ok(Some(match code {
            b'O' => Response::OptNeg {
                version: u32_at(data, 0).ok_or_else(bad)?,
                actions: u32_at(data, 4).ok_or_else(bad)?,
                protocol: u32_at(data, 8).ok_or_else(bad)?,
            },
            b'a' => Response::Accept,
            b'c' => Response::Continue,
            b'd' => Response::Discard,
            b'r' => Response::Reject,
            b't' => Response::Tempfail,
            b's' => Response::Skip,
            b'p' => Response::Progress,
            b'f' => Response::ConnFail,
            b'4' => Response::Shutdown,
            b'y' => Response::ReplyCode(one(0)?),
            b'q' => Response::Quarantine(s.first().cloned().unwrap_or_default()),
            b'h' => Response::AddHeader(one(0)?, s.get(1).cloned().unwrap_or_default()),
            b'i' | b'm' => {
                let index = u32_at(data, 0).ok_or_else(bad)?;
                let rest = strings(&data[4..]);
                let name = rest.first().cloned().ok_or_else(bad)?;
                let value = rest.get(1).cloned().unwrap_or_default();
                if code == b'i' {
                    Response::InsHeader(index, name, value)
                } else {
                    Response::ChgHeader(index, name, value)
                }
            }
            b'+' => Response::AddRcpt(one(0)?),
            b'2' => Response::AddRcptPar(one(0)?, s.get(1).cloned().unwrap_or_default()),
            b'-' => Response::DelRcpt(one(0)?),
            b'e' => Response::ChgFrom(one(0)?, s.get(1).cloned().unwrap_or_default()),
            b'b' => Response::ReplBody(data.to_vec()),
            b'l' => Response::SetSymList(
                u32_at(data, 0).ok_or_else(bad)?,
                strings(data.get(4..).unwrap_or(&[]))
                    .first()
                    .cloned()
                    .unwrap_or_default(),
            ),
            _ => return Err(MilterError::Unknown(c)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_length_prefixed_with_nul_terminated_strings() {
        assert_eq!(
            Command::Helo("mx.test".into()).encode(),
            b"\x00\x00\x00\x09Hmx.test\x00"
        );
        let c = Command::Connect {
            hostname: "[192.0.2.1]".into(),
            family: Family::Inet("192.0.2.1:2525".parse().unwrap()),
        }
        .encode();
        assert_eq!(&c[4..], b"C[192.0.2.1]\x004\x09\xdd192.0.2.1\x00");
        assert_eq!(
            Command::Header("Sub\0ject".into(), "x".into()).encode(),
            b"\x00\x00\x00\x0bLSubject\x00x\x00"
        );
        assert_eq!(Command::Abort.encode(), b"\x00\x00\x00\x01A");
    }

    #[test]
    fn replies_decode_across_reads_and_are_bounded() {
        let mut d = Decoder::new(1024);
        d.feed(b"\x00\x00\x00\x0ey550 5.7.1 no");
        assert_eq!(d.next(), Ok(None));
        d.feed(b"\x00\x00\x00\x00\x01c");
        assert_eq!(
            d.next(),
            Ok(Some(Response::ReplyCode("550 5.7.1 no".into())))
        );
        assert_eq!(d.next(), Ok(Some(Response::Continue)));
        assert_eq!(d.next(), Ok(None));
        d.feed(b"\x00\x00\x00\x0am\x00\x00\x00\x01X-A\x00\x00");
        assert_eq!(
            d.next(),
            Ok(Some(Response::ChgHeader(1, "X-A".into(), String::new())))
        );
        d.feed(b"\x00\x10\x00\x00b");
        assert_eq!(d.next(), Err(MilterError::TooLong(0x100000)));
        let mut d = Decoder::new(1024);
        d.feed(b"\x00\x00\x00\x01Z");
        assert_eq!(d.next(), Err(MilterError::Unknown('Z')));
        let mut d = Decoder::new(1024);
        d.feed(b"\x00\x00\x00\x03O\x00\x00");
        assert_eq!(d.next(), Err(MilterError::Malformed('O')));
    }

    /// A bounded fuzz run inside `cargo test` (the libFuzzer target `milter_replies` goes further): valid
    /// replies of every kind, mutated, truncated and fed in random pieces, through the decoder and the
    /// header edits. Never a panic, at most one incomplete packet buffered, and no change that gives the
    /// header section a line that is neither a field nor a continuation.
    #[test]
    fn mutated_reply_streams_never_panic_and_stay_bounded() {
        fn packet(code: u8, data: &[u8]) -> Vec<u8> {
            let mut p = ((data.len() + 1) as u32).to_be_bytes().to_vec();
            p.push(code);
            p.extend_from_slice(data);
            p
        }
        let valid: Vec<Vec<u8>> = vec![
            packet(b'c', b""),
            packet(b'a', b""),
            packet(b'r', b""),
            packet(b't', b""),
            packet(b'd', b""),
            packet(b's', b""),
            packet(b'p', b""),
            packet(b'y', b"550 5.7.1 go away\0"),
            packet(b'q', b"spam\0"),
            packet(b'h', b"X-Spam\0yes\0"),
            packet(b'i', b"\0\0\0\x01X-First\0v\r\n evil\0"),
            packet(b'm', b"\0\0\0\x01Subject\0new\r\nBcc: x\0"),
            packet(b'+', b"<a@b.test>\0"),
            packet(b'-', b"<a@b.test>\0"),
            packet(b'e', b"<c@d.test>\0SIZE=1\0"),
            packet(b'b', b"new body\r\n"),
            packet(b'O', &[0, 0, 0, 6, 0, 0, 1, 0xff, 0, 0, 0, 0]),
        ];
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut rand = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        const MAX: usize = 4096;
        let (mut decoded, mut refused) = (0, 0);
        for _ in 0..20_000 {
            let mut stream = Vec::new();
            for _ in 0..(rand() % 6) {
                stream.extend_from_slice(&valid[(rand() as usize) % valid.len()]);
            }
            for _ in 0..(rand() % 4) {
                if stream.is_empty() {
                    break;
                }
                let at = (rand() as usize) % stream.len();
                match rand() % 3 {
                    0 => stream[at] = rand() as u8,
                    1 => stream.truncate(at),
                    _ => stream.insert(at, rand() as u8),
                }
            }
            let mut d = Decoder::new(MAX);
            let mut fields = edit::fields(b"Subject: x\r\nFrom: a@b.test\r\n");
            let mut named: Vec<String> = vec!["subject".into(), "from".into()];
            let piece = 1 + (rand() as usize) % 64;
            'stream: for chunk in stream.chunks(piece) {
                d.feed(chunk);
                loop {
                    match d.next() {
                        Ok(Some(r)) => {
                            decoded += 1;
                            if let Response::AddHeader(n, _)
                            | Response::InsHeader(_, n, _)
                            | Response::ChgHeader(_, n, _) = &r
                            {
                                named.push(n.to_ascii_lowercase());
                            }
                            let change = match r {
                                Response::AddHeader(n, v) => edit::Change::Add(n, v),
                                Response::InsHeader(i, n, v) => edit::Change::Insert(i, n, v),
                                Response::ChgHeader(i, n, v) => edit::Change::Change(i, n, v),
                                _ => continue,
                            };
                            edit::apply(&mut fields, &change);
                        }
                        Ok(None) => break,
                        Err(_) => {
                            refused += 1;
                            break 'stream;
                        }
                    }
                }
                assert!(d.buf.len() < 4 + MAX + 1, "{} octets buffered", d.buf.len());
            }
            let out = edit::render(&fields);
            for line in out.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                assert!(
                    !line.is_empty()
                        && !line.contains(&b'\r')
                        && (line[0] == b' ' || line[0] == b'\t' || line.contains(&b':')),
                    "{:?}",
                    String::from_utf8_lossy(line)
                );
                // A field line names the original fields or one a change named: never one smuggled in
                // a value (the seeds carry "\r\nBcc: x" and "\r\n evil").
                if line[0] != b' ' && line[0] != b'\t' {
                    let name = String::from_utf8_lossy(
                        &line[..line.iter().position(|b| *b == b':').unwrap()],
                    )
                    .to_ascii_lowercase();
                    assert!(
                        named.contains(&name),
                        "{name:?} in {:?}",
                        String::from_utf8_lossy(&out)
                    );
                }
            }
        }
        // The run reached both sides: replies decoded, and mutations refused.
        assert!(decoded > 20_000 && refused > 1_000, "{decoded} {refused}");
    }
}
