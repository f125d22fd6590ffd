//! The client side of SMTP without I/O: reading replies from bytes, the server's EHLO capabilities, the
//! MAIL and RCPT command lines with their ESMTP and DSN parameters, and DATA dot-stuffing. `outbound/`
//! drives these over a socket.

use super::reply::{EnhancedCode, Reply};

/// Accumulates bytes and yields complete (possibly multi-line) replies.
#[derive(Debug, Default)]
pub struct ReplyParser {
    buf: Vec<u8>,
    lines: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyError(pub String);

/// Longest reply line accepted from a server (RFC 5321 4.5.3.1.5 says 512).
const MAX_REPLY_LINE: usize = 4096;
/// Most lines in one reply.
const MAX_REPLY_LINES: usize = 128;

impl ReplyParser {
    pub fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete reply, if one is buffered.
    pub fn next_reply(&mut self) -> Result<Option<Reply>, ReplyError> {
        loop {
            let Some(lf) = self.buf.iter().position(|&b| b == b'\n') else {
                if self.buf.len() > MAX_REPLY_LINE {
                    return Err(ReplyError("reply line too long".into()));
                }
                return Ok(None);
            };
            let raw: Vec<u8> = self.buf.drain(..=lf).collect();
            let line = String::from_utf8_lossy(&raw)
                .trim_end_matches(['\r', '\n'])
                .to_string();
            let code_ok = line.len() >= 3 && line.as_bytes()[..3].iter().all(u8::is_ascii_digit);
            if !code_ok || (line.len() > 3 && !matches!(line.as_bytes()[3], b' ' | b'-')) {
                return Err(ReplyError(format!("malformed reply line {line:?}")));
            }
            let last = line.len() == 3 || line.as_bytes()[3] == b' ';
            self.lines.push(line);
            if self.lines.len() > MAX_REPLY_LINES {
                return Err(ReplyError("reply has too many lines".into()));
            }
            if last {
                let lines = std::mem::take(&mut self.lines);
                return Ok(Some(parse_lines(lines)?));
            }
        }
    }
}

fn parse_enhanced(text: &str) -> Option<(EnhancedCode, &str)> {
    let (code, rest) = text.split_once(' ').unwrap_or((text, ""));
    let mut parts = code.split('.');
    let class: u8 = parts.next()?.parse().ok()?;
    let subject: u16 = parts.next()?.parse().ok()?;
    let detail: u16 = parts.next()?.parse().ok()?;
    if parts.next().is_some() || !matches!(class, 2 | 4 | 5) {
        return None;
    }
    Some((EnhancedCode(class, subject, detail), rest))
}

fn parse_lines(lines: Vec<String>) -> Result<Reply, ReplyError> {
    let code: u16 = lines[0][..3]
        .parse()
        .map_err(|_| ReplyError("bad reply code".into()))?;
    let texts: Vec<&str> = lines.iter().map(|l| l.get(4..).unwrap_or("")).collect();
    let enhanced = parse_enhanced(texts[0])
        .map(|(e, _)| e)
        .filter(|e| u16::from(e.0) == code / 100);
    let lines = texts
        .iter()
        .map(|t| match (enhanced, parse_enhanced(t)) {
            (Some(_), Some((_, rest))) => rest.to_string(),
            _ => t.to_string(),
        })
        .collect();
    Ok(Reply {
        code,
        enhanced,
        lines,
    })
}

/// What a server said it supports in its EHLO reply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    pub starttls: bool,
    pub pipelining: bool,
    pub size: Option<usize>,
    pub eightbitmime: bool,
    pub smtputf8: bool,
    pub dsn: bool,
    pub chunking: bool,
    pub enhanced_status_codes: bool,
    /// SASL mechanisms offered (`AUTH PLAIN LOGIN`), upper-cased.
    pub auth: Vec<String>,
}

impl Capabilities {
    pub fn from_ehlo(reply: &Reply) -> Capabilities {
        let mut c = Capabilities::default();
        for line in reply.lines.iter().skip(1) {
            let mut words = line.split_whitespace();
            let keyword = words.next().unwrap_or("").to_ascii_uppercase();
            match keyword.as_str() {
                "STARTTLS" => c.starttls = true,
                "AUTH" => c.auth = words.map(|w| w.to_ascii_uppercase()).collect(),
                "PIPELINING" => c.pipelining = true,
                "SIZE" => c.size = words.next().and_then(|n| n.parse().ok()).filter(|n| *n > 0),
                "8BITMIME" => c.eightbitmime = true,
                "SMTPUTF8" => c.smtputf8 = true,
                "DSN" => c.dsn = true,
                "CHUNKING" => c.chunking = true,
                "ENHANCEDSTATUSCODES" => c.enhanced_status_codes = true,
                _ => {}
            }
        }
        c
    }
}

/// The envelope parameters of a queued message, as the client passes them on.
#[derive(Debug, Clone, Default)]
pub struct MailOptions<'a> {
    pub size: usize,
    pub eight_bit: bool,
    pub smtputf8: bool,
    pub ret: Option<&'a str>,
    pub envid: Option<&'a str>,
}

/// `MAIL FROM:<...>` with the parameters the server supports.
pub fn mail_command(reverse_path: &str, caps: &Capabilities, o: &MailOptions<'_>) -> String {
    let mut cmd = format!("MAIL FROM:<{reverse_path}>");
    if caps.size.is_some() {
        cmd.push_str(&format!(" SIZE={}", o.size));
    }
    if o.eight_bit && caps.eightbitmime {
        cmd.push_str(" BODY=8BITMIME");
    }
    if o.smtputf8 && caps.smtputf8 {
        cmd.push_str(" SMTPUTF8");
    }
    if caps.dsn {
        if let Some(ret) = o.ret {
            cmd.push_str(&format!(" RET={ret}"));
        }
        if let Some(envid) = o.envid {
            cmd.push_str(&format!(" ENVID={envid}"));
        }
    }
    cmd.push_str("\r\n");
    cmd
}

/// `RCPT TO:<...>` with NOTIFY and ORCPT when the server supports DSN.
pub fn rcpt_command(
    forward_path: &str,
    caps: &Capabilities,
    notify: Option<&str>,
    orcpt: Option<&str>,
) -> String {
    let mut cmd = format!("RCPT TO:<{forward_path}>");
    if caps.dsn {
        if let Some(n) = notify {
            cmd.push_str(&format!(" NOTIFY={n}"));
        }
        if let Some(o) = orcpt {
            cmd.push_str(&format!(" ORCPT={o}"));
        }
    }
    cmd.push_str("\r\n");
    cmd
}

/// The message dot-stuffed (RFC 5321 4.5.2) and terminated with `.CRLF`.
pub fn dot_stuff(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + body.len() / 64 + 5);
    let mut s = DotStuffer::default();
    s.push(body, &mut out);
    s.finish(&mut out);
    out
}

/// Dot-stuffing for a message given in pieces (a spooled one streams from disk): the same output as
/// [`dot_stuff`] on the pieces joined.
#[derive(Debug)]
pub struct DotStuffer {
    at_line_start: bool,
    /// The last two octets written, for the final CRLF.
    last: [u8; 2],
    any: bool,
}

impl Default for DotStuffer {
    fn default() -> Self {
        DotStuffer {
            at_line_start: true,
            last: [0; 2],
            any: false,
        }
    }
}

impl DotStuffer {
    pub fn push(&mut self, piece: &[u8], out: &mut Vec<u8>) {
        for &b in piece {
            if self.at_line_start && b == b'.' {
                out.push(b'.');
            }
            out.push(b);
            self.at_line_start = b == b'\n';
            self.last = [self.last[1], b];
            self.any = true;
        }
    }

    /// The end: a CRLF if the message did not end with one, then `.CRLF`.
    pub fn finish(self, out: &mut Vec<u8>) {
        if self.any && self.last != *b"\r\n" {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn dot_stuffing_in_pieces_matches_the_whole() {
        let msg = b"a\r\n.b\r\n..\r\n.\r\nend";
        let whole = super::dot_stuff(msg);
        for split in 0..=msg.len() {
            for split2 in split..=msg.len() {
                let mut s = super::DotStuffer::default();
                let mut out = Vec::new();
                s.push(&msg[..split], &mut out);
                s.push(&msg[split..split2], &mut out);
                s.push(&msg[split2..], &mut out);
                s.finish(&mut out);
                assert_eq!(out, whole, "split at {split} and {split2}");
            }
        }
        assert_eq!(super::dot_stuff(b""), b".\r\n");
        assert_eq!(super::dot_stuff(b"x\r\n"), b"x\r\n.\r\n");
    }

    use super::*;

    #[test]
    fn replies_split_anywhere_and_enhanced_codes_parsed() {
        let input = b"250-mx.peer.test Hello\r\n250-SIZE 1000\r\n250-STARTTLS\r\n250 DSN\r\n550 5.1.1 <x@y>: no such user\r\n";
        for split in 0..input.len() {
            let mut p = ReplyParser::default();
            p.feed(&input[..split]);
            let mut replies = Vec::new();
            while let Some(r) = p.next_reply().unwrap() {
                replies.push(r);
            }
            p.feed(&input[split..]);
            while let Some(r) = p.next_reply().unwrap() {
                replies.push(r);
            }
            assert_eq!(replies.len(), 2);
            let caps = Capabilities::from_ehlo(&replies[0]);
            assert_eq!(caps.size, Some(1000));
            assert!(caps.starttls && caps.dsn && !caps.chunking);
            assert_eq!(replies[1].code, 550);
            assert_eq!(replies[1].enhanced, Some(EnhancedCode(5, 1, 1)));
            assert_eq!(replies[1].lines[0], "<x@y>: no such user");
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut p = ReplyParser::default();
        p.feed(b"hello\r\n");
        assert!(p.next_reply().is_err());
        let mut p = ReplyParser::default();
        p.feed(&[b'2'; 10_000]);
        assert!(p.next_reply().is_err());
    }

    #[test]
    fn commands_carry_only_supported_parameters() {
        let mut caps = Capabilities {
            size: Some(10),
            eightbitmime: true,
            ..Default::default()
        };
        let o = MailOptions {
            size: 5,
            eight_bit: true,
            smtputf8: false,
            ret: Some("HDRS"),
            envid: Some("X"),
        };
        assert_eq!(
            mail_command("a@b", &caps, &o),
            "MAIL FROM:<a@b> SIZE=5 BODY=8BITMIME\r\n"
        );
        caps.dsn = true;
        assert_eq!(
            mail_command("", &caps, &o),
            "MAIL FROM:<> SIZE=5 BODY=8BITMIME RET=HDRS ENVID=X\r\n"
        );
        assert_eq!(
            rcpt_command("c@d", &caps, Some("FAILURE"), None),
            "RCPT TO:<c@d> NOTIFY=FAILURE\r\n"
        );
    }

    #[test]
    fn dot_stuffing() {
        assert_eq!(
            dot_stuff(b".a\r\nb\r\n..c\r\n"),
            b"..a\r\nb\r\n...c\r\n.\r\n"
        );
        assert_eq!(dot_stuff(b"no newline"), b"no newline\r\n.\r\n");
        assert_eq!(dot_stuff(b""), b".\r\n");
    }
}
