//! `tern sendmail`: the /usr/sbin/sendmail interface for local programs (cron, PHP's mail(), monitoring).
//!
//! Reads a message on standard input and hands it to the running daemon over its local socket
//! (`[sendmail] socket`), speaking SMTP; no password is needed, the daemon knows the caller's Unix user from
//! the socket. Errors go to standard error with sendmail's exit codes (sysexits.h).

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// sysexits.h codes, as sendmail uses them.
pub mod exit {
    pub const USAGE: u8 = 64;
    pub const DATAERR: u8 = 65;
    pub const NOUSER: u8 = 67;
    pub const UNAVAILABLE: u8 = 69;
    pub const SOFTWARE: u8 = 70;
    pub const TEMPFAIL: u8 = 75;
}

/// What sendmail is asked to do (`-b` modes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Mode {
    /// -bm (the default): read a message and queue it.
    #[default]
    Deliver,
    /// -bs: an SMTP dialogue on standard input and output (PHP frameworks use it).
    Smtp,
    /// -bp, or invoked as `mailq`: list the queue.
    Queue,
    /// -bi, or invoked as `newaliases`: read the aliases file into the alias table.
    Aliases,
    /// -bv: say whether each recipient would be accepted, send nothing.
    Verify,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    pub mode: Mode,
    /// -t: take recipients from To:, Cc: and Bcc: (Bcc: is then removed).
    pub extract_recipients: bool,
    /// -i / -oi: a line with a single dot does not end the message.
    pub ignore_dots: bool,
    /// -f: the envelope sender.
    pub sender: Option<String>,
    /// -F: the sender's full name, for a From: header if the message has none.
    pub full_name: Option<String>,
    pub recipients: Vec<String>,
}

#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

fn fail(code: u8, message: impl Into<String>) -> Failure {
    Failure {
        code,
        message: message.into(),
    }
}

/// Parses sendmail's command line; options tern has no use for (-odi, -oem, -v, -N ...) are accepted and ignored.
pub fn parse_args(args: &[String]) -> Result<Options, Failure> {
    let mut o = Options::default();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |flag: &str| -> Result<String, Failure> {
            match a.strip_prefix(flag).filter(|v| !v.is_empty()) {
                Some(v) => Ok(v.to_string()),
                None => it
                    .next()
                    .cloned()
                    .ok_or_else(|| fail(exit::USAGE, format!("option {flag} needs a value"))),
            }
        };
        match a.as_str() {
            "--" => {
                o.recipients.extend(it.by_ref().cloned());
                break;
            }
            "-t" => o.extract_recipients = true,
            "-i" | "-oi" => o.ignore_dots = true,
            s if s.starts_with("-f") || s.starts_with("-r") => {
                let flag = &s[..2];
                o.sender = Some(value(flag)?);
            }
            s if s.starts_with("-F") => o.full_name = Some(value("-F")?),
            // -bm is the default mode; -o options, delivery modes, DSN options and verbosity change nothing here.
            s if s == "-bm"
                || s.starts_with("-o")
                || s.starts_with("-d")
                || s == "-v"
                || s == "-U" => {}
            s if s.starts_with("-N")
                || s.starts_with("-R")
                || s.starts_with("-V")
                || s.starts_with("-B") =>
            {
                if s.len() == 2 {
                    it.next();
                }
            }
            "-bs" => o.mode = Mode::Smtp,
            "-bp" => o.mode = Mode::Queue,
            "-bi" => o.mode = Mode::Aliases,
            "-bv" => o.mode = Mode::Verify,
            s if s.starts_with("-b") => {
                return Err(fail(
                    exit::USAGE,
                    format!("mode {s} is not supported (-bm, -bs, -bp, -bi, -bv are)"),
                ));
            }
            s if s.starts_with('-') && s.len() > 1 => {
                return Err(fail(exit::USAGE, format!("unknown option {s}")));
            }
            r => o.recipients.push(r.to_string()),
        }
    }
    Ok(o)
}

/// Reads the message, with CRLF line endings; without `ignore_dots` a line of one dot ends it.
pub fn read_message(input: impl Read, ignore_dots: bool) -> Result<Vec<u8>, Failure> {
    let mut out = Vec::new();
    let mut reader = BufReader::new(input);
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .map_err(|e| fail(exit::DATAERR, format!("reading the message: {e}")))?;
        if n == 0 {
            break;
        }
        while line.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            line.pop();
        }
        if !ignore_dots && line == b"." {
            break;
        }
        out.extend_from_slice(&line);
        out.extend_from_slice(b"\r\n");
    }
    Ok(out)
}

use crate::message::header_len;

/// Recipients named in To:, Cc: and Bcc:, and the message without its Bcc: field.
pub fn extract_recipients(message: &[u8]) -> (Vec<String>, Vec<u8>) {
    let hl = header_len(message);
    let mut recipients = Vec::new();
    if let Some(m) = mail_parser::MessageParser::new().parse_headers(&message[..hl]) {
        for list in [m.to(), m.cc(), m.bcc()].into_iter().flatten() {
            recipients.extend(list.iter().filter_map(|a| a.address()).map(str::to_string));
        }
    }
    let mut kept = Vec::with_capacity(message.len());
    let mut in_bcc = false;
    for line in message[..hl].split_inclusive(|b| *b == b'\n') {
        let continuation = line.first().is_some_and(|b| *b == b' ' || *b == b'\t');
        if !continuation {
            in_bcc = line.len() >= 4 && line[..4].eq_ignore_ascii_case(b"bcc:");
        }
        if !in_bcc {
            kept.extend_from_slice(line);
        }
    }
    kept.extend_from_slice(&message[hl..]);
    (recipients, kept)
}

/// Adds a From: header when the message has none.
pub fn ensure_from(message: Vec<u8>, sender: &str, full_name: Option<&str>) -> Vec<u8> {
    let hl = header_len(&message);
    let has_from = mail_parser::MessageParser::new()
        .parse_headers(&message[..hl])
        .is_some_and(|m| m.from().is_some());
    if has_from {
        return message;
    }
    let from = match full_name {
        Some(name) => format!(
            "From: \"{}\" <{sender}>\r\n",
            name.replace(['"', '\\', '\r', '\n'], "")
        ),
        None => format!("From: <{sender}>\r\n"),
    };
    let mut out = from.into_bytes();
    out.extend_from_slice(&message);
    out
}

/// A synchronous SMTP client over the daemon's local socket.
struct Client {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

/// The daemon's sendmail socket, or EX_UNAVAILABLE saying where it was looked for.
fn connect_socket(socket: &Path) -> Result<UnixStream, Failure> {
    UnixStream::connect(socket).map_err(|e| {
        fail(
            exit::UNAVAILABLE,
            format!(
                "cannot reach the tern daemon at {}: {e} (is it running?)",
                socket.display()
            ),
        )
    })
}

impl Client {
    fn connect(socket: &Path) -> Result<Client, Failure> {
        let stream = connect_socket(socket)?;
        let _ = stream.set_read_timeout(Some(Duration::from_secs(600)));
        let writer = stream
            .try_clone()
            .map_err(|e| fail(exit::SOFTWARE, e.to_string()))?;
        Ok(Client {
            reader: BufReader::new(stream),
            writer,
        })
    }

    fn reply(&mut self) -> Result<(u16, String), Failure> {
        let mut text = String::new();
        loop {
            let mut line = String::new();
            let n = self
                .reader
                .read_line(&mut line)
                .map_err(|e| fail(exit::TEMPFAIL, format!("daemon: {e}")))?;
            if n == 0 {
                return Err(fail(exit::TEMPFAIL, "the daemon closed the connection"));
            }
            text.push_str(line.trim_end());
            if line.len() < 4 || line.as_bytes()[3] == b' ' {
                let code = line.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
                return Ok((code, text));
            }
            text.push(' ');
        }
    }

    fn send(&mut self, bytes: &[u8]) -> Result<(), Failure> {
        self.writer
            .write_all(bytes)
            .map_err(|e| fail(exit::TEMPFAIL, format!("daemon: {e}")))
    }

    fn command(&mut self, line: &str, expect: u16, what: &str) -> Result<String, Failure> {
        self.send(format!("{line}\r\n").as_bytes())?;
        let (code, text) = self.reply()?;
        if code == expect {
            return Ok(text);
        }
        let exit_code = match code {
            550 | 551 | 553 if what == "recipient" => exit::NOUSER,
            400..=499 => exit::TEMPFAIL,
            _ => exit::DATAERR,
        };
        Err(fail(exit_code, format!("{what} refused: {text}")))
    }
}

/// A bare local name (`root`, `www-data`) as an address at the origin domain, as Postfix's myorigin does;
/// anything with an `@` stays as it is.
pub fn qualify(name: &str, origin: &str) -> String {
    if name.contains('@') || name.is_empty() {
        name.to_string()
    } else {
        format!("{name}@{origin}")
    }
}

/// `sendmail -bs`: the SMTP dialogue of standard input and output, relayed to the daemon's socket as it is
/// (the daemon applies the same rules as to any local program).
pub fn smtp_dialogue(socket: &Path) -> Result<(), Failure> {
    let stream = connect_socket(socket)?;
    let mut to_daemon = stream
        .try_clone()
        .map_err(|e| fail(exit::SOFTWARE, e.to_string()))?;
    let pump = std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let _ = std::io::copy(&mut stdin, &mut to_daemon);
        let _ = to_daemon.shutdown(std::net::Shutdown::Write);
    });
    let mut from_daemon = stream;
    let mut stdout = std::io::stdout().lock();
    std::io::copy(&mut from_daemon, &mut stdout)
        .map_err(|e| fail(exit::TEMPFAIL, e.to_string()))?;
    let _ = stdout.flush();
    drop(pump);
    Ok(())
}

/// `sendmail -bv`: asks the daemon about each recipient (MAIL, RCPT..., RSET); one line each.
pub fn verify(socket: &Path, sender: &str, recipients: &[String]) -> Result<Vec<String>, Failure> {
    let mut c = Client::connect(socket)?;
    let (code, text) = c.reply()?;
    if code != 220 {
        return Err(fail(exit::TEMPFAIL, format!("daemon greeting: {text}")));
    }
    c.command("EHLO localhost", 250, "EHLO")?;
    c.command(&format!("MAIL FROM:<{sender}>"), 250, "sender")?;
    let mut out = Vec::new();
    for r in recipients {
        c.send(format!("RCPT TO:<{r}>\r\n").as_bytes())?;
        let (code, text) = c.reply()?;
        let verdict = if code == 250 {
            "deliverable"
        } else {
            "undeliverable"
        };
        out.push(format!("{r}... {verdict}: {text}"));
    }
    let _ = c.send(b"RSET\r\nQUIT\r\n");
    Ok(out)
}

/// Hands the message to the daemon; returns the reply that names the queue ID.
pub fn submit(
    socket: &Path,
    sender: &str,
    recipients: &[String],
    message: &[u8],
) -> Result<String, Failure> {
    if recipients.is_empty() {
        return Err(fail(
            exit::USAGE,
            "no recipients (name them, or use -t to read them from the message)",
        ));
    }
    let mut c = Client::connect(socket)?;
    let (code, text) = c.reply()?;
    if code != 220 {
        return Err(fail(exit::TEMPFAIL, format!("daemon greeting: {text}")));
    }
    c.command("EHLO localhost", 250, "EHLO")?;
    let smtputf8 = if sender.is_ascii() && recipients.iter().all(|r| r.is_ascii()) {
        ""
    } else {
        " SMTPUTF8"
    };
    c.command(
        &format!("MAIL FROM:<{sender}> BODY=8BITMIME{smtputf8}"),
        250,
        "sender",
    )?;
    for r in recipients {
        c.command(&format!("RCPT TO:<{r}>"), 250, "recipient")?;
    }
    c.command("DATA", 354, "DATA")?;
    let mut data = Vec::with_capacity(message.len() + 16);
    for line in message.split_inclusive(|b| *b == b'\n') {
        if line.first() == Some(&b'.') {
            data.push(b'.');
        }
        data.extend_from_slice(line);
    }
    if !data.ends_with(b"\r\n") && !data.is_empty() {
        data.extend_from_slice(b"\r\n");
    }
    data.extend_from_slice(b".\r\n");
    c.send(&data)?;
    let (code, text) = c.reply()?;
    let _ = c.send(b"QUIT\r\n");
    match code {
        250 => Ok(text),
        400..=499 => Err(fail(
            exit::TEMPFAIL,
            format!("message refused for now: {text}"),
        )),
        _ => Err(fail(exit::DATAERR, format!("message refused: {text}"))),
    }
}

/// The login name of the calling user, for the default sender.
pub fn login_name() -> String {
    user_name(nix::unistd::getuid().as_raw())
}

/// The login name of a Unix user id, through NSS (or `uidN`).
pub fn user_name(uid: u32) -> String {
    crate::ops::privileges::user_name(uid).unwrap_or_else(|| format!("uid{uid}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn sendmail_command_lines() {
        let o = parse_args(&args(
            "-t -oi -f cron@example.test -F Cron -odi alice@example.test",
        ))
        .unwrap();
        assert!(o.extract_recipients && o.ignore_dots);
        assert_eq!(o.sender.as_deref(), Some("cron@example.test"));
        assert_eq!(o.full_name.as_deref(), Some("Cron"));
        assert_eq!(o.recipients, ["alice@example.test"]);
        assert_eq!(
            parse_args(&args("-fbob@x.test")).unwrap().sender.as_deref(),
            Some("bob@x.test")
        );
        assert_eq!(parse_args(&args("-bp")).unwrap().mode, Mode::Queue);
        assert_eq!(parse_args(&args("-bs")).unwrap().mode, Mode::Smtp);
        assert_eq!(parse_args(&args("-bi")).unwrap().mode, Mode::Aliases);
        assert_eq!(parse_args(&args("-bd")).unwrap_err().code, exit::USAGE);
        assert_eq!(qualify("root", "example.test"), "root@example.test");
        assert_eq!(qualify("a@b.test", "example.test"), "a@b.test");
        assert_eq!(parse_args(&args("-Z")).unwrap_err().code, exit::USAGE);
    }

    #[test]
    fn a_lone_dot_ends_input_unless_i() {
        let input = b"Subject: x\n\nline\n.\nafter\n";
        assert_eq!(
            read_message(&input[..], false).unwrap(),
            b"Subject: x\r\n\r\nline\r\n"
        );
        assert_eq!(
            read_message(&input[..], true).unwrap(),
            b"Subject: x\r\n\r\nline\r\n.\r\nafter\r\n"
        );
    }

    #[test]
    fn recipients_from_headers_and_bcc_removed() {
        let m = b"To: Alice <alice@example.test>, bob@example.test\r\nBcc: secret@example.test,\r\n other@example.test\r\nSubject: s\r\n\r\nBcc: in body stays\r\n";
        let (rcpts, kept) = extract_recipients(m);
        assert_eq!(
            rcpts,
            [
                "alice@example.test",
                "bob@example.test",
                "secret@example.test",
                "other@example.test"
            ]
        );
        assert_eq!(kept, b"To: Alice <alice@example.test>, bob@example.test\r\nSubject: s\r\n\r\nBcc: in body stays\r\n");
    }

    #[test]
    fn from_is_added_only_when_missing() {
        let m = ensure_from(
            b"Subject: s\r\n\r\nx\r\n".to_vec(),
            "root@mx.test",
            Some("Cron Daemon"),
        );
        assert!(m.starts_with(b"From: \"Cron Daemon\" <root@mx.test>\r\nSubject: s"));
        let m = ensure_from(
            b"From: a@b.test\r\n\r\nx\r\n".to_vec(),
            "root@mx.test",
            None,
        );
        assert!(m.starts_with(b"From: a@b.test"));
    }
}
