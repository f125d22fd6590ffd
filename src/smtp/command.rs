//! SMTP command lines (RFC 5321 4.1.1) and the ESMTP parameters tern understands on MAIL and RCPT:
//! SIZE, BODY, SMTPUTF8 (RFC 1870, 6152, 6531), RET, ENVID, NOTIFY and ORCPT (DSN, RFC 3461).

use super::address::{
    AddressError, ForwardPath, ReversePath, parse_forward_path, parse_reverse_path,
};
use thiserror::Error;

/// A parsed command. Addresses stay unparsed until the session knows whether SMTPUTF8 applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Ehlo(String),
    Helo(String),
    Lhlo(String),
    Mail {
        reverse_path: ReversePath,
        params: MailParams,
    },
    Rcpt {
        forward_path: ForwardPath,
        params: RcptParams,
    },
    Data,
    Bdat {
        size: usize,
        last: bool,
    },
    Rset,
    Noop,
    Quit,
    Vrfy,
    Help,
    StartTls,
    /// `AUTH mechanism [initial-response]` (RFC 4954).
    Auth {
        mechanism: String,
        initial: Option<String>,
    },
    /// Known verbs tern does not offer here (AUTH on the relay listener, EXPN, ETRN, TURN).
    NotImplemented(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BodyType {
    #[default]
    SevenBit,
    EightBitMime,
}

impl BodyType {
    pub fn as_str(self) -> &'static str {
        match self {
            BodyType::SevenBit => "7BIT",
            BodyType::EightBitMime => "8BITMIME",
        }
    }
}

/// RFC 3461 4.3: return the full message or only its headers in a DSN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ret {
    Full,
    Hdrs,
}

impl Ret {
    pub fn as_str(self) -> &'static str {
        match self {
            Ret::Full => "FULL",
            Ret::Hdrs => "HDRS",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MailParams {
    pub size: Option<usize>,
    pub body: BodyType,
    pub smtputf8: bool,
    pub ret: Option<Ret>,
    /// ENVID, still xtext-encoded as received.
    pub envid: Option<String>,
}

/// RFC 3461 4.1 NOTIFY: `NEVER`, or any of SUCCESS, FAILURE, DELAY.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Notify {
    pub never: bool,
    pub success: bool,
    pub failure: bool,
    pub delay: bool,
}

impl Notify {
    pub fn to_param(self) -> String {
        if self.never {
            return "NEVER".into();
        }
        let mut v = Vec::new();
        if self.success {
            v.push("SUCCESS");
        }
        if self.failure {
            v.push("FAILURE");
        }
        if self.delay {
            v.push("DELAY");
        }
        v.join(",")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RcptParams {
    pub notify: Option<Notify>,
    /// ORCPT as `addr-type;xtext`, kept encoded as received.
    pub orcpt: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CommandError {
    #[error("unrecognized command {0:?}")]
    Unrecognized(String),
    #[error("{0}")]
    Syntax(String),
    #[error("{0}")]
    Sender(AddressError),
    #[error("{0}")]
    Recipient(AddressError),
    #[error("unsupported parameter {0:?}")]
    UnsupportedParam(String),
    #[error("BODY=BINARYMIME is not supported")]
    BinaryMime,
}

/// Parses one command line, without its CRLF. `line` may contain UTF-8 (SMTPUTF8 addresses).
/// Verbs this server knows (including the ones it refuses as not implemented).
const VERBS: &[&str] = &[
    "EHLO", "HELO", "LHLO", "MAIL", "RCPT", "DATA", "BDAT", "RSET", "NOOP", "HELP", "QUIT", "VRFY",
    "STARTTLS", "AUTH", "EXPN", "ETRN", "TURN", "ATRN",
];

/// Whether `verb` is an SMTP verb this server knows, so that it may be logged as one.
pub fn is_known_verb(verb: &str) -> bool {
    VERBS.iter().any(|v| v.eq_ignore_ascii_case(verb))
}

pub fn parse(line: &str) -> Result<Command, CommandError> {
    let (verb, rest) = match line.find(' ') {
        Some(i) => (&line[..i], line[i + 1..].trim()),
        None => (line, ""),
    };
    let no_args = |cmd: Command| {
        if rest.is_empty() {
            Ok(cmd)
        } else {
            Err(CommandError::Syntax(format!("{verb} takes no arguments")))
        }
    };
    let hello = |f: fn(String) -> Command| {
        if rest.is_empty() {
            Err(CommandError::Syntax(format!(
                "{verb} requires a domain name"
            )))
        } else {
            Ok(f(rest.split(' ').next().unwrap_or(rest).to_string()))
        }
    };
    match verb.to_ascii_uppercase().as_str() {
        "EHLO" => hello(Command::Ehlo),
        "HELO" => hello(Command::Helo),
        "LHLO" => hello(Command::Lhlo),
        "MAIL" => parse_mail(rest),
        "RCPT" => parse_rcpt(rest),
        "DATA" => no_args(Command::Data),
        "BDAT" => parse_bdat(rest),
        "RSET" => no_args(Command::Rset),
        // NOOP and HELP may carry an argument, which is ignored (RFC 5321 4.1.1.9, 4.1.1.8).
        "NOOP" => Ok(Command::Noop),
        "HELP" => Ok(Command::Help),
        "QUIT" => no_args(Command::Quit),
        "VRFY" => Ok(Command::Vrfy),
        "STARTTLS" => no_args(Command::StartTls),
        "AUTH" => {
            let mut words = rest.split(' ').filter(|w| !w.is_empty());
            let mechanism = words
                .next()
                .ok_or_else(|| CommandError::Syntax("AUTH requires a mechanism".into()))?;
            let initial = words.next().map(str::to_string);
            if words.next().is_some() {
                return Err(CommandError::Syntax("too many AUTH arguments".into()));
            }
            Ok(Command::Auth {
                mechanism: mechanism.to_string(),
                initial,
            })
        }
        v @ ("EXPN" | "ETRN" | "TURN" | "ATRN") => Ok(Command::NotImplemented(v.to_string())),
        _ => Err(CommandError::Unrecognized(verb.chars().take(32).collect())),
    }
}

/// Splits `FROM:<path> PARAMS` (a space after the colon is tolerated, as most servers do).
fn split_path<'a>(rest: &'a str, keyword: &str) -> Result<(&'a str, &'a str), CommandError> {
    let head = rest
        .get(..keyword.len())
        .filter(|h| h.eq_ignore_ascii_case(keyword));
    let after = match head {
        Some(_) => rest[keyword.len()..].trim_start(),
        None => return Err(CommandError::Syntax(format!("expected {keyword}<address>"))),
    };
    if !after.starts_with('<') {
        return Err(CommandError::Syntax(format!(
            "expected <address> after {keyword}"
        )));
    }
    // The path ends at the first '>' outside a quoted local part.
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in after.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '>' if !quoted => return Ok((&after[..=i], after[i + 1..].trim())),
            _ => {}
        }
    }
    Err(CommandError::Syntax("unterminated <address>".into()))
}

fn params(s: &str) -> impl Iterator<Item = (String, Option<&str>)> {
    s.split(' ')
        .filter(|p| !p.is_empty())
        .map(|p| match p.find('=') {
            Some(i) => (p[..i].to_ascii_uppercase(), Some(&p[i + 1..])),
            None => (p.to_ascii_uppercase(), None),
        })
}

/// RFC 3461 4: xtext is printable ASCII except `+` and `=`, with `+XX` hex escapes, and what it decodes to
/// must be printable US-ASCII too (4.4, 5.4): a `+0D+0A` would put a line break into a DSN.
fn is_xtext(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => {
                let Some(hex) = b.get(i + 1..i + 3).filter(|h| {
                    h.iter()
                        .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_lowercase())
                }) else {
                    return false;
                };
                let decoded = std::str::from_utf8(hex)
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                if !decoded.is_some_and(|c| c.is_ascii_graphic() || c == b' ') {
                    return false;
                }
                i += 3;
            }
            b'!'..=b'~' if b[i] != b'=' => i += 1,
            _ => return false,
        }
    }
    true
}

/// RFC 3461 4.2: ORCPT's addr-type is an atom (`rfc822`, `utf-8`).
fn is_atom(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&c))
}

fn parse_mail(rest: &str) -> Result<Command, CommandError> {
    let (path, rest) = split_path(rest, "FROM:")?;
    let mut p = MailParams::default();
    let mut seen = Vec::new();
    for (key, value) in params(rest) {
        if seen.contains(&key) {
            return Err(CommandError::Syntax(format!("duplicate parameter {key}")));
        }
        seen.push(key.clone());
        match (key.as_str(), value) {
            ("SIZE", Some(v)) => {
                let n = v
                    .parse()
                    .map_err(|_| CommandError::Syntax(format!("SIZE={v:?} is not a number")))?;
                p.size = Some(n);
            }
            ("BODY", Some(v)) if v.eq_ignore_ascii_case("7BIT") => p.body = BodyType::SevenBit,
            ("BODY", Some(v)) if v.eq_ignore_ascii_case("8BITMIME") => {
                p.body = BodyType::EightBitMime
            }
            ("BODY", Some(v)) if v.eq_ignore_ascii_case("BINARYMIME") => {
                return Err(CommandError::BinaryMime);
            }
            ("SMTPUTF8", None) => p.smtputf8 = true,
            ("RET", Some(v)) if v.eq_ignore_ascii_case("FULL") => p.ret = Some(Ret::Full),
            ("RET", Some(v)) if v.eq_ignore_ascii_case("HDRS") => p.ret = Some(Ret::Hdrs),
            ("ENVID", Some(v)) if v.len() <= 100 && is_xtext(v) => p.envid = Some(v.to_string()),
            // RFC 4954 5: the submitter's identity as claimed by a relaying MTA; tern records its own.
            ("AUTH", Some(_)) => {}
            ("SIZE" | "BODY" | "RET" | "ENVID", _) => {
                return Err(CommandError::Syntax(format!("bad value for {key}")));
            }
            _ => return Err(CommandError::UnsupportedParam(key)),
        }
    }
    let reverse_path = parse_reverse_path(path, p.smtputf8).map_err(CommandError::Sender)?;
    Ok(Command::Mail {
        reverse_path,
        params: p,
    })
}

fn parse_rcpt(rest: &str) -> Result<Command, CommandError> {
    let (path, rest) = split_path(rest, "TO:")?;
    let mut p = RcptParams::default();
    for (key, value) in params(rest) {
        match (key.as_str(), value) {
            ("NOTIFY", Some(v)) if p.notify.is_none() => {
                let mut n = Notify::default();
                for item in v.split(',') {
                    match item.to_ascii_uppercase().as_str() {
                        "NEVER" => n.never = true,
                        "SUCCESS" => n.success = true,
                        "FAILURE" => n.failure = true,
                        "DELAY" => n.delay = true,
                        _ => {
                            return Err(CommandError::Syntax(format!("bad NOTIFY value {item:?}")));
                        }
                    }
                }
                if n.never && (n.success || n.failure || n.delay) {
                    return Err(CommandError::Syntax(
                        "NOTIFY=NEVER cannot be combined".into(),
                    ));
                }
                p.notify = Some(n);
            }
            ("ORCPT", Some(v)) if p.orcpt.is_none() => {
                let ok = v
                    .split_once(';')
                    .is_some_and(|(t, a)| is_atom(t) && is_xtext(a) && a.len() <= 500);
                if !ok {
                    return Err(CommandError::Syntax(format!("bad ORCPT value {v:?}")));
                }
                p.orcpt = Some(v.to_string());
            }
            ("NOTIFY" | "ORCPT", _) => {
                return Err(CommandError::Syntax(format!("bad or duplicate {key}")));
            }
            _ => return Err(CommandError::UnsupportedParam(key)),
        }
    }
    // Whether UTF-8 is allowed depends on the transaction; the session re-checks with what MAIL said.
    let forward_path = parse_forward_path(path, true).map_err(CommandError::Recipient)?;
    Ok(Command::Rcpt {
        forward_path,
        params: p,
    })
}

fn parse_bdat(rest: &str) -> Result<Command, CommandError> {
    let mut words = rest.split(' ').filter(|w| !w.is_empty());
    let size = words
        .next()
        .filter(|w| w.bytes().all(|b| b.is_ascii_digit()) && w.len() <= 15)
        .and_then(|w| w.parse().ok())
        .ok_or_else(|| CommandError::Syntax("BDAT requires a chunk size".into()))?;
    let last = match words.next() {
        None => false,
        Some(w) if w.eq_ignore_ascii_case("LAST") => true,
        Some(w) => {
            return Err(CommandError::Syntax(format!(
                "unexpected {w:?} after the chunk size"
            )));
        }
    };
    if words.next().is_some() {
        return Err(CommandError::Syntax("too many BDAT arguments".into()));
    }
    Ok(Command::Bdat { size, last })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mail_with_dsn_and_size_parameters() {
        let c =
            parse("MAIL FROM:<a@b.test> SIZE=1000 BODY=8BITMIME RET=HDRS ENVID=QQ+2B1").unwrap();
        let Command::Mail {
            reverse_path,
            params,
        } = c
        else {
            panic!("{c:?}")
        };
        assert_eq!(reverse_path.to_string(), "a@b.test");
        assert_eq!(params.size, Some(1000));
        assert_eq!(params.body, BodyType::EightBitMime);
        assert_eq!(params.ret, Some(Ret::Hdrs));
        assert_eq!(params.envid.as_deref(), Some("QQ+2B1"));
    }

    #[test]
    fn lenient_space_after_colon_and_lowercase_verbs() {
        assert!(matches!(
            parse("mail from: <a@b.test>"),
            Ok(Command::Mail { .. })
        ));
        assert!(matches!(
            parse("rcpt to:<Postmaster>"),
            Ok(Command::Rcpt {
                forward_path: ForwardPath::Postmaster,
                ..
            })
        ));
    }

    #[test]
    fn rcpt_notify_and_orcpt() {
        let c = parse("RCPT TO:<c@d.test> NOTIFY=SUCCESS,DELAY ORCPT=rfc822;c+40d.test").unwrap();
        let Command::Rcpt { params, .. } = c else {
            panic!()
        };
        assert_eq!(params.notify.unwrap().to_param(), "SUCCESS,DELAY");
        assert_eq!(params.orcpt.as_deref(), Some("rfc822;c+40d.test"));
        assert!(parse("RCPT TO:<c@d.test> NOTIFY=NEVER,SUCCESS").is_err());
    }

    #[test]
    fn errors_quote_the_input() {
        assert_eq!(
            parse("FOO bar"),
            Err(CommandError::Unrecognized("FOO".into()))
        );
        assert_eq!(
            parse("MAIL FROM:<a@b.test> XYZ=1"),
            Err(CommandError::UnsupportedParam("XYZ".into()))
        );
        assert!(matches!(
            parse("MAIL TO:<a@b.test>"),
            Err(CommandError::Syntax(_))
        ));
        assert!(matches!(
            parse("MAIL FROM:<a@@b>"),
            Err(CommandError::Sender(_))
        ));
        assert_eq!(
            parse("MAIL FROM:<a@b.test> BODY=BINARYMIME"),
            Err(CommandError::BinaryMime)
        );
        assert!(parse("ENVID").is_err());
    }

    #[test]
    fn bdat_forms() {
        assert_eq!(
            parse("BDAT 10 LAST"),
            Ok(Command::Bdat {
                size: 10,
                last: true
            })
        );
        assert_eq!(
            parse("BDAT 0"),
            Ok(Command::Bdat {
                size: 0,
                last: false
            })
        );
        assert!(parse("BDAT -1").is_err());
        assert!(parse("BDAT 10 FIRST").is_err());
    }

    #[test]
    fn xtext() {
        assert!(is_xtext("abc+2B"));
        assert!(!is_xtext("abc+2"));
        assert!(!is_xtext("a=b"));
        assert!(!is_xtext("a b"));
        // Decoded control characters would reach the DSN as they are.
        assert!(!is_xtext("a+0D+0Ab"));
        assert!(!is_xtext("a+00"));
        assert!(is_xtext("a+20b"));
        assert!(is_atom("rfc822") && !is_atom("rfc 822") && !is_atom("") && !is_atom("a\rb"));
    }
}
