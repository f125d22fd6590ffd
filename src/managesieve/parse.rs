//! The command grammar of RFC 5804 section 4, over a command as [`super::frame::Framer`] collects it (its
//! lines joined by CRLF, literals in place).

/// RFC 5804 section 4: `quoted = DQUOTE *1024QUOTED-CHAR DQUOTE`.
const MAX_QUOTED: usize = 1024;
/// RFC 5804 section 1.6: servers must allow names of up to 128 Unicode characters; tern allows no more.
pub const MAX_NAME_CHARS: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Authenticate {
        mechanism: String,
        initial: Option<String>,
    },
    StartTls,
    Logout,
    Capability,
    HaveSpace {
        name: String,
        size: u32,
    },
    PutScript {
        name: String,
        script: String,
    },
    ListScripts,
    /// An empty name deactivates every script.
    SetActive {
        name: String,
    },
    GetScript {
        name: String,
    },
    DeleteScript {
        name: String,
    },
    RenameScript {
        from: String,
        to: String,
    },
    CheckScript {
        script: String,
    },
    Noop {
        tag: Option<String>,
    },
    Unauthenticate,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("unknown command {0:?}")]
    Unknown(String),
    #[error("{command}: {why}")]
    Syntax { command: &'static str, why: String },
}

/// A script name that RFC 5804 section 1.6 allows, and that holds no `/` or `\` (nor is `.` or `..`), so
/// that no store can take it for a path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("a script name cannot be empty")]
    Empty,
    #[error("{0:?} is longer than {MAX_NAME_CHARS} characters")]
    TooLong(String),
    #[error("{0:?} holds a control character")]
    Control(String),
    #[error("{0:?} holds a \"/\" or \"\\\" or is a dot name")]
    Path(String),
}

/// RFC 5804 section 1.6: no 0000-001F, 007F, 0080-009F, 2028 or 2029 in a name.
pub fn check_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(NameError::TooLong(
            name.chars().take(40).collect::<String>() + "...",
        ));
    }
    if name
        .chars()
        .any(|c| c.is_control() || c == '\u{2028}' || c == '\u{2029}')
    {
        return Err(NameError::Control(name.to_string()));
    }
    if name.contains(['/', '\\']) || name == "." || name == ".." {
        return Err(NameError::Path(name.to_string()));
    }
    Ok(())
}

type R<T> = Result<T, String>;

struct P<'a> {
    s: &'a [u8],
    pos: usize,
}

impl<'a> P<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn at_end(&self) -> bool {
        self.pos >= self.s.len()
    }

    fn sp(&mut self) -> R<()> {
        if self.peek() == Some(b' ') {
            self.pos += 1;
            Ok(())
        } else {
            Err("expected a space".into())
        }
    }

    fn atom(&mut self) -> &'a [u8] {
        let start = self.pos;
        while self.peek().is_some_and(|b| b.is_ascii_alphanumeric()) {
            self.pos += 1;
        }
        &self.s[start..self.pos]
    }

    /// `quoted`: SAFE-UTF8-CHAR, or `\` before `"` or `\`.
    fn quoted(&mut self) -> R<Vec<u8>> {
        self.pos += 1;
        let mut out = Vec::new();
        loop {
            match self.peek() {
                None => return Err("unterminated quoted string".into()),
                Some(b'"') => {
                    self.pos += 1;
                    break;
                }
                Some(b'\\') => {
                    self.pos += 1;
                    match self.peek() {
                        Some(c @ (b'"' | b'\\')) => out.push(c),
                        _ => return Err("only \\\" and \\\\ may be escaped".into()),
                    }
                    self.pos += 1;
                }
                Some(0 | b'\r' | b'\n') => {
                    return Err("NUL, CR or LF in a quoted string (send a literal)".into());
                }
                Some(c) => {
                    out.push(c);
                    self.pos += 1;
                }
            }
        }
        if out.len() > MAX_QUOTED {
            return Err(format!(
                "a quoted string is at most {MAX_QUOTED} octets (send a literal)"
            ));
        }
        Ok(out)
    }

    /// `literal-c2s` (and `literal-s2c`, framed alike): `{n+}` CRLF n octets.
    fn literal(&mut self) -> R<Vec<u8>> {
        let close = self.s[self.pos..]
            .iter()
            .position(|&b| b == b'}')
            .ok_or("unterminated literal length")?;
        let inner = &self.s[self.pos + 1..self.pos + close];
        let digits = inner.strip_suffix(b"+").unwrap_or(inner);
        let n: usize = std::str::from_utf8(digits)
            .ok()
            .filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|d| d.parse().ok())
            .ok_or_else(|| {
                format!(
                    "{:?} is not a literal length",
                    String::from_utf8_lossy(inner)
                )
            })?;
        self.pos += close + 1;
        if !self.s[self.pos..].starts_with(b"\r\n") {
            return Err("a literal's length must end its line".into());
        }
        self.pos += 2;
        let data = self
            .s
            .get(self.pos..self.pos + n)
            .ok_or("literal shorter than announced")?;
        self.pos += n;
        Ok(data.to_vec())
    }

    fn string_bytes(&mut self) -> R<Vec<u8>> {
        match self.peek() {
            Some(b'"') => self.quoted(),
            Some(b'{') => self.literal(),
            _ => Err("expected a string (quoted or literal)".into()),
        }
    }

    fn string(&mut self, what: &str) -> R<String> {
        let bytes = self.string_bytes()?;
        String::from_utf8(bytes).map_err(|_| format!("the {what} is not UTF-8"))
    }

    fn number(&mut self) -> R<u32> {
        let start = self.pos;
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.pos += 1;
        }
        let digits = std::str::from_utf8(&self.s[start..self.pos]).unwrap_or("");
        digits
            .parse()
            .map_err(|_| format!("{digits:?} is not a 32-bit number"))
    }

    fn arg_string(&mut self, what: &str) -> R<String> {
        self.sp()?;
        self.string(what)
    }
}

/// A string on its own (a SASL response, RFC 5804 section 2.1): quoted, a literal, or a bare `*`.
pub fn lone_string(raw: &[u8]) -> R<String> {
    if raw == b"*" {
        return Ok("*".into());
    }
    let mut p = P { s: raw, pos: 0 };
    let s = p.string("response")?;
    if !p.at_end() {
        return Err("one string expected".into());
    }
    Ok(s)
}

pub fn command(raw: &[u8]) -> Result<Command, ParseError> {
    let mut p = P { s: raw, pos: 0 };
    let verb = p.atom().to_ascii_uppercase();
    let name = match verb.as_slice() {
        b"AUTHENTICATE" => "AUTHENTICATE",
        b"STARTTLS" => "STARTTLS",
        b"LOGOUT" => "LOGOUT",
        b"CAPABILITY" => "CAPABILITY",
        b"HAVESPACE" => "HAVESPACE",
        b"PUTSCRIPT" => "PUTSCRIPT",
        b"LISTSCRIPTS" => "LISTSCRIPTS",
        b"SETACTIVE" => "SETACTIVE",
        b"GETSCRIPT" => "GETSCRIPT",
        b"DELETESCRIPT" => "DELETESCRIPT",
        b"RENAMESCRIPT" => "RENAMESCRIPT",
        b"CHECKSCRIPT" => "CHECKSCRIPT",
        b"NOOP" => "NOOP",
        b"UNAUTHENTICATE" => "UNAUTHENTICATE",
        _ => {
            let shown = raw.iter().take(40).copied().collect::<Vec<u8>>();
            let shown = String::from_utf8_lossy(&shown);
            let word = shown.split([' ', '\r', '\n']).next().unwrap_or("");
            return Err(ParseError::Unknown(word.to_string()));
        }
    };
    let syntax = |why: String| ParseError::Syntax { command: name, why };
    let parsed = (|| -> R<Command> {
        let c = match name {
            "AUTHENTICATE" => {
                let mechanism = p.arg_string("mechanism")?;
                let initial = if p.at_end() {
                    None
                } else {
                    Some(p.arg_string("initial response")?)
                };
                Command::Authenticate { mechanism, initial }
            }
            "STARTTLS" => Command::StartTls,
            "LOGOUT" => Command::Logout,
            "CAPABILITY" => Command::Capability,
            "HAVESPACE" => {
                let name = p.arg_string("script name")?;
                p.sp()?;
                let size = p.number()?;
                Command::HaveSpace { name, size }
            }
            "PUTSCRIPT" => {
                let name = p.arg_string("script name")?;
                let script = p.arg_string("script")?;
                Command::PutScript { name, script }
            }
            "LISTSCRIPTS" => Command::ListScripts,
            "SETACTIVE" => Command::SetActive {
                name: p.arg_string("script name")?,
            },
            "GETSCRIPT" => Command::GetScript {
                name: p.arg_string("script name")?,
            },
            "DELETESCRIPT" => Command::DeleteScript {
                name: p.arg_string("script name")?,
            },
            "RENAMESCRIPT" => {
                let from = p.arg_string("script name")?;
                let to = p.arg_string("new script name")?;
                Command::RenameScript { from, to }
            }
            "CHECKSCRIPT" => Command::CheckScript {
                script: p.arg_string("script")?,
            },
            "NOOP" => Command::Noop {
                tag: if p.at_end() {
                    None
                } else {
                    Some(p.arg_string("tag")?)
                },
            },
            _ => Command::Unauthenticate,
        };
        if !p.at_end() {
            return Err("unexpected text after the arguments".into());
        }
        Ok(c)
    })();
    parsed.map_err(syntax)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> Command {
        command(s.as_bytes()).unwrap_or_else(|e| panic!("{s:?}: {e}"))
    }

    #[test]
    fn every_command_parses() {
        assert_eq!(
            ok("Authenticate \"PLAIN\" \"AGFsaWNlAHB3\""),
            Command::Authenticate {
                mechanism: "PLAIN".into(),
                initial: Some("AGFsaWNlAHB3".into())
            }
        );
        assert_eq!(
            ok("AUTHENTICATE \"LOGIN\""),
            Command::Authenticate {
                mechanism: "LOGIN".into(),
                initial: None
            }
        );
        assert_eq!(ok("starttls"), Command::StartTls);
        assert_eq!(ok("LOGOUT"), Command::Logout);
        assert_eq!(ok("CAPABILITY"), Command::Capability);
        assert_eq!(
            ok("HAVESPACE \"myscript\" 999999"),
            Command::HaveSpace {
                name: "myscript".into(),
                size: 999999
            }
        );
        assert_eq!(
            ok("PUTSCRIPT \"mysieve\" {14+}\r\nkeep;\r\nstop;\r\n"),
            Command::PutScript {
                name: "mysieve".into(),
                script: "keep;\r\nstop;\r\n".into()
            }
        );
        assert_eq!(
            ok("PUTSCRIPT {3+}\r\na\"b {4}\r\nkeep"),
            Command::PutScript {
                name: "a\"b".into(),
                script: "keep".into()
            }
        );
        assert_eq!(ok("LISTSCRIPTS"), Command::ListScripts);
        assert_eq!(ok("SETACTIVE \"\""), Command::SetActive { name: "".into() });
        assert_eq!(
            ok("GETSCRIPT \"a \\\"q\\\\\""),
            Command::GetScript {
                name: "a \"q\\".into()
            }
        );
        assert_eq!(
            ok("DELETESCRIPT \"x\""),
            Command::DeleteScript { name: "x".into() }
        );
        assert_eq!(
            ok("RENAMESCRIPT \"a\" \"b\""),
            Command::RenameScript {
                from: "a".into(),
                to: "b".into()
            }
        );
        assert_eq!(
            ok("CHECKSCRIPT {5+}\r\nkeep;"),
            Command::CheckScript {
                script: "keep;".into()
            }
        );
        assert_eq!(ok("NOOP"), Command::Noop { tag: None });
        assert_eq!(
            ok("NOOP \"STARTTLS-SYNC-42\""),
            Command::Noop {
                tag: Some("STARTTLS-SYNC-42".into())
            }
        );
        assert_eq!(ok("UNAUTHENTICATE"), Command::Unauthenticate);
    }

    #[test]
    fn errors_quote_the_input() {
        let e = |s: &str| command(s.as_bytes()).unwrap_err().to_string();
        assert_eq!(e("FROB x"), "unknown command \"FROB\"");
        assert_eq!(e(""), "unknown command \"\"");
        assert_eq!(e("GETSCRIPT"), "GETSCRIPT: expected a space");
        assert_eq!(
            e("GETSCRIPT x"),
            "GETSCRIPT: expected a string (quoted or literal)"
        );
        assert_eq!(
            e("HAVESPACE \"a\" 99999999999"),
            "HAVESPACE: \"99999999999\" is not a 32-bit number"
        );
        assert_eq!(
            e("LOGOUT now"),
            "LOGOUT: unexpected text after the arguments"
        );
        assert_eq!(
            e("GETSCRIPT \"a\\b\""),
            "GETSCRIPT: only \\\" and \\\\ may be escaped"
        );
        assert_eq!(
            e("PUTSCRIPT \"a\" {9+}\r\nkeep"),
            "PUTSCRIPT: literal shorter than announced"
        );
        assert_eq!(
            command(b"CHECKSCRIPT {2+}\r\n\xff\xfe")
                .unwrap_err()
                .to_string(),
            "CHECKSCRIPT: the script is not UTF-8"
        );
        let long = format!("NOOP \"{}\"", "a".repeat(1025));
        assert!(e(&long).contains("at most 1024 octets"));
    }

    #[test]
    fn names_follow_section_1_6() {
        assert_eq!(check_name("vacation"), Ok(()));
        assert_eq!(check_name("Ferien ☀"), Ok(()));
        assert_eq!(check_name(""), Err(NameError::Empty));
        assert_eq!(check_name("../x"), Err(NameError::Path("../x".into())));
        assert_eq!(check_name(".."), Err(NameError::Path("..".into())));
        assert_eq!(check_name("a\tb"), Err(NameError::Control("a\tb".into())));
        assert_eq!(
            check_name("a\u{7f}"),
            Err(NameError::Control("a\u{7f}".into()))
        );
        assert_eq!(
            check_name("a\u{85}"),
            Err(NameError::Control("a\u{85}".into()))
        );
        assert_eq!(
            check_name("a\u{2028}"),
            Err(NameError::Control("a\u{2028}".into()))
        );
        assert!(check_name(&"é".repeat(128)).is_ok());
        assert!(matches!(
            check_name(&"é".repeat(129)),
            Err(NameError::TooLong(_))
        ));
        assert_eq!(check_name("a\\b"), Err(NameError::Path("a\\b".into())));
        assert_eq!(
            NameError::Path("../x".into()).to_string(),
            "\"../x\" holds a \"/\" or \"\\\" or is a dot name"
        );
    }
}
