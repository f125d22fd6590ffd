//! Responses (RFC 5804 section 1.3, `response-oknobye`): OK, NO or BYE, a response code, a human-readable
//! string; and the one mapping of refusals to them.

/// Response codes of RFC 5804 section 1.3.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Code {
    AuthTooWeak,
    EncryptNeeded,
    Quota,
    QuotaMaxScripts,
    QuotaMaxSize,
    /// A `sieveurl` of the server to use instead.
    Referral(String),
    /// Base64 data of a final SASL step.
    Sasl(String),
    TransitionNeeded,
    TryLater,
    Active,
    Nonexistent,
    AlreadyExists,
    Warnings,
    /// NOOP's tag, echoed.
    Tag(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    No,
    Bye,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: Status,
    pub code: Option<Code>,
    pub text: Option<String>,
}

/// Writes `s` as a quoted string when the grammar allows one (at most 1024 octets, no CR, LF or NUL),
/// else as a server literal `{n}` CRLF octets (RFC 5804 section 4, `literal-s2c`).
pub fn string(s: &str, out: &mut Vec<u8>) {
    if s.len() <= 1024 && !s.bytes().any(|b| matches!(b, 0 | b'\r' | b'\n')) {
        out.push(b'"');
        for b in s.bytes() {
            if b == b'"' || b == b'\\' {
                out.push(b'\\');
            }
            out.push(b);
        }
        out.push(b'"');
    } else {
        out.extend_from_slice(format!("{{{}}}\r\n", s.len()).as_bytes());
        out.extend_from_slice(s.as_bytes());
    }
}

impl Response {
    pub fn ok(text: impl Into<String>) -> Response {
        Response {
            status: Status::Ok,
            code: None,
            text: Some(text.into()),
        }
    }

    pub fn no(text: impl Into<String>) -> Response {
        Response {
            status: Status::No,
            code: None,
            text: Some(text.into()),
        }
    }

    pub fn bye(text: impl Into<String>) -> Response {
        Response {
            status: Status::Bye,
            code: None,
            text: Some(text.into()),
        }
    }

    pub fn with(mut self, code: Code) -> Response {
        self.code = Some(code);
        self
    }

    pub fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(match self.status {
            Status::Ok => b"OK",
            Status::No => b"NO",
            Status::Bye => b"BYE",
        });
        if let Some(code) = &self.code {
            out.extend_from_slice(b" (");
            let word: &[u8] = match code {
                Code::AuthTooWeak => b"AUTH-TOO-WEAK",
                Code::EncryptNeeded => b"ENCRYPT-NEEDED",
                Code::Quota => b"QUOTA",
                Code::QuotaMaxScripts => b"QUOTA/MAXSCRIPTS",
                Code::QuotaMaxSize => b"QUOTA/MAXSIZE",
                Code::Referral(_) => b"REFERRAL",
                Code::Sasl(_) => b"SASL",
                Code::TransitionNeeded => b"TRANSITION-NEEDED",
                Code::TryLater => b"TRYLATER",
                Code::Active => b"ACTIVE",
                Code::Nonexistent => b"NONEXISTENT",
                Code::AlreadyExists => b"ALREADYEXISTS",
                Code::Warnings => b"WARNINGS",
                Code::Tag(_) => b"TAG",
            };
            out.extend_from_slice(word);
            match code {
                // `sieveurl` is an atom-like URL, not a string.
                Code::Referral(url) => {
                    out.push(b' ');
                    out.extend_from_slice(url.as_bytes());
                }
                Code::Sasl(s) | Code::Tag(s) => {
                    out.push(b' ');
                    string(s, out);
                }
                _ => {}
            }
            out.push(b')');
        }
        if let Some(text) = &self.text {
            out.push(b' ');
            string(text, out);
        }
        out.extend_from_slice(b"\r\n");
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write(&mut out);
        out
    }
}

/// Sent to a client over the connection limits, before closing.
pub const BUSY: &[u8] = b"BYE (TRYLATER) \"too many connections, try again later\"\r\n";

/// The BYE of a session that waited too long for a command.
pub fn bye_idle() -> Vec<u8> {
    Response::bye("idle for too long").to_bytes()
}

/// The BYE of a session cut short by the server's shutdown.
pub fn bye_shutdown() -> Vec<u8> {
    Response::bye("server shutting down")
        .with(Code::TryLater)
        .to_bytes()
}

/// Why the script store refused an operation, as the driver learns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    Nonexistent(String),
    AlreadyExists(String),
    Active(String),
    BadName(String),
    /// The script does not compile: the compiler's message (line, column, what is wrong).
    Invalid(String),
    TooManyScripts(usize),
    TooLarge(usize),
    /// A storage fault: logged by the driver, not shown.
    TryLater,
}

impl Refusal {
    /// The NO for this refusal: the only place refusals become responses.
    pub fn response(&self) -> Response {
        match self {
            Refusal::Nonexistent(name) => {
                Response::no(format!("there is no script {name:?}")).with(Code::Nonexistent)
            }
            Refusal::AlreadyExists(name) => {
                Response::no(format!("a script {name:?} already exists")).with(Code::AlreadyExists)
            }
            Refusal::Active(name) => Response::no(format!(
                "script {name:?} is active: activate another one (or none) first"
            ))
            .with(Code::Active),
            Refusal::BadName(why) => Response::no(why.clone()),
            Refusal::Invalid(why) => Response::no(why.clone()),
            Refusal::TooManyScripts(n) => {
                Response::no(format!("too many scripts (at most {n})")).with(Code::QuotaMaxScripts)
            }
            Refusal::TooLarge(n) => Response::no(format!("script too large (at most {n} octets)"))
                .with(Code::QuotaMaxSize),
            Refusal::TryLater => {
                Response::no("script storage is unavailable, try again later").with(Code::TryLater)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(r: Response) -> String {
        String::from_utf8(r.to_bytes()).unwrap()
    }

    #[test]
    fn every_code_is_written_as_the_rfc_spells_it() {
        let codes = [
            (Code::AuthTooWeak, "AUTH-TOO-WEAK"),
            (Code::EncryptNeeded, "ENCRYPT-NEEDED"),
            (Code::Quota, "QUOTA"),
            (Code::QuotaMaxScripts, "QUOTA/MAXSCRIPTS"),
            (Code::QuotaMaxSize, "QUOTA/MAXSIZE"),
            (
                Code::Referral("sieve://a.example".into()),
                "REFERRAL sieve://a.example",
            ),
            (Code::Sasl("dGVzdA==".into()), "SASL \"dGVzdA==\""),
            (Code::TransitionNeeded, "TRANSITION-NEEDED"),
            (Code::TryLater, "TRYLATER"),
            (Code::Active, "ACTIVE"),
            (Code::Nonexistent, "NONEXISTENT"),
            (Code::AlreadyExists, "ALREADYEXISTS"),
            (Code::Warnings, "WARNINGS"),
            (Code::Tag("x".into()), "TAG \"x\""),
        ];
        for (code, word) in codes {
            assert_eq!(
                text(Response::no("t").with(code)),
                format!("NO ({word}) \"t\"\r\n")
            );
        }
        assert_eq!(
            String::from_utf8(bye_shutdown()).unwrap(),
            "BYE (TRYLATER) \"server shutting down\"\r\n"
        );
    }

    #[test]
    fn responses_and_codes() {
        assert_eq!(text(Response::ok("Done")), "OK \"Done\"\r\n");
        assert_eq!(
            text(Response::ok("Done").with(Code::Tag("t\"1".into()))),
            "OK (TAG \"t\\\"1\") \"Done\"\r\n"
        );
        assert_eq!(
            text(Refusal::TooLarge(1024).response()),
            "NO (QUOTA/MAXSIZE) \"script too large (at most 1024 octets)\"\r\n"
        );
        assert_eq!(
            text(Response::bye("x").with(Code::Referral("sieve://b.example".into()))),
            "BYE (REFERRAL sieve://b.example) \"x\"\r\n"
        );
        assert_eq!(
            text(Refusal::Invalid("line 1:\nbad".into()).response()),
            "NO {11}\r\nline 1:\nbad\r\n"
        );
        assert_eq!(
            text(Refusal::Active("a".into()).response()),
            "NO (ACTIVE) \"script \\\"a\\\" is active: activate another one (or none) first\"\r\n"
        );
    }
}
