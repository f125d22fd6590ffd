//! Addresses as RFC 5321 section 4.1.2 defines them: `Domain`, `Mailbox`, reverse-path and forward-path.
//!
//! Parsed once at the edge; everything past the parser holds these types, never a bare string that "should be"
//! an address. Non-ASCII local parts and domains (RFC 6531) parse only when the caller allows UTF-8.

use std::fmt;
use thiserror::Error;

/// RFC 5321 4.5.3.1.1: the maximum total length of a user name or other local-part is 64 octets.
pub const MAX_LOCAL_PART: usize = 64;
/// RFC 5321 4.5.3.1.2: the maximum total length of a domain name or number is 255 octets.
pub const MAX_DOMAIN: usize = 255;
/// RFC 5321 4.5.3.1.3: the maximum total length of a reverse-path or forward-path is 256 octets.
pub const MAX_PATH: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AddressError {
    #[error("{0:?} is not enclosed in <>")]
    NotBracketed(String),
    #[error("{0:?} has no @domain")]
    NoDomain(String),
    #[error("local part {0:?} is not a valid dot-string or quoted-string")]
    BadLocalPart(String),
    #[error("local part {0:?} is longer than 64 octets")]
    LocalPartTooLong(String),
    #[error("domain {0:?} is not a valid domain name or address literal")]
    BadDomain(String),
    #[error("path {0:?} is longer than 256 octets")]
    PathTooLong(String),
    #[error("{0:?} contains non-ASCII characters without SMTPUTF8")]
    NeedsUtf8(String),
}

/// A domain name (lower-cased) or an address literal such as `[192.0.2.1]` or `[IPv6:::1]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Domain(String);

impl Domain {
    /// Parses a domain or address literal; `utf8` allows U-labels (RFC 6531).
    pub fn parse(s: &str, utf8: bool) -> Result<Domain, AddressError> {
        let bad = || AddressError::BadDomain(s.to_string());
        if s.is_empty() || s.len() > MAX_DOMAIN {
            return Err(bad());
        }
        if let Some(inner) = s.strip_prefix('[') {
            let inner = inner.strip_suffix(']').ok_or_else(bad)?;
            if let Some(v6) = inner
                .strip_prefix("IPv6:")
                .or_else(|| inner.strip_prefix("ipv6:"))
            {
                v6.parse::<std::net::Ipv6Addr>().map_err(|_| bad())?;
                return Ok(Domain(format!("[IPv6:{}]", v6.to_ascii_lowercase())));
            }
            inner.parse::<std::net::Ipv4Addr>().map_err(|_| bad())?;
            return Ok(Domain(format!("[{inner}]")));
        }
        if !s.is_ascii() && !utf8 {
            return Err(AddressError::NeedsUtf8(s.to_string()));
        }
        // A trailing dot (the DNS root) is tolerated and dropped.
        let name = s.strip_suffix('.').unwrap_or(s);
        for label in name.split('.') {
            let ok = !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| {
                    c.is_ascii_alphanumeric() || c == '-' || (!c.is_ascii() && c.is_alphanumeric())
                });
            if !ok {
                return Err(bad());
            }
        }
        Ok(Domain(name.to_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_ascii(&self) -> bool {
        self.0.is_ascii()
    }
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `local-part@domain`. The local part keeps its case (RFC 5321 2.4); the domain is lower-cased.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mailbox {
    local: String,
    domain: Domain,
}

fn is_atext(c: char, utf8: bool) -> bool {
    c.is_ascii_alphanumeric()
        || "!#$%&'*+-/=?^_`{|}~".contains(c)
        || (utf8 && !c.is_ascii() && !c.is_control())
}

impl Mailbox {
    /// Parses `local@domain` (no angle brackets). `utf8` allows non-ASCII (the SMTPUTF8 parameter was given).
    pub fn parse(s: &str, utf8: bool) -> Result<Mailbox, AddressError> {
        let at = s
            .rfind('@')
            .ok_or_else(|| AddressError::NoDomain(s.to_string()))?;
        let (local, domain) = (&s[..at], &s[at + 1..]);
        if !s.is_ascii() && !utf8 {
            return Err(AddressError::NeedsUtf8(s.to_string()));
        }
        Self::check_local(local, utf8)?;
        let domain = Domain::parse(domain, utf8)?;
        Ok(Mailbox {
            local: local.to_string(),
            domain,
        })
    }

    fn check_local(local: &str, utf8: bool) -> Result<(), AddressError> {
        let bad = || AddressError::BadLocalPart(local.to_string());
        if local.len() > MAX_LOCAL_PART {
            return Err(AddressError::LocalPartTooLong(local.to_string()));
        }
        if let Some(q) = local.strip_prefix('"') {
            // Quoted-string: qtextSMTP or quoted-pairSMTP (backslash followed by any printable ASCII).
            let inner = q.strip_suffix('"').ok_or_else(bad)?;
            let mut chars = inner.chars();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => match chars.next() {
                        Some(n) if (' '..='~').contains(&n) => {}
                        _ => return Err(bad()),
                    },
                    '"' => return Err(bad()),
                    c if (' '..='~').contains(&c) => {}
                    c if utf8 && !c.is_ascii() && !c.is_control() => {}
                    _ => return Err(bad()),
                }
            }
            return Ok(());
        }
        if local.is_empty()
            || local
                .split('.')
                .any(|atom| atom.is_empty() || !atom.chars().all(|c| is_atext(c, utf8)))
        {
            return Err(bad());
        }
        Ok(())
    }

    pub fn new(local: &str, domain: Domain) -> Result<Mailbox, AddressError> {
        Self::check_local(local, true)?;
        Ok(Mailbox {
            local: local.to_string(),
            domain,
        })
    }

    pub fn local_part(&self) -> &str {
        &self.local
    }
    pub fn domain(&self) -> &Domain {
        &self.domain
    }
    pub fn is_ascii(&self) -> bool {
        self.local.is_ascii() && self.domain.is_ascii()
    }
}

impl fmt::Display for Mailbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.local, self.domain)
    }
}

/// The MAIL FROM argument: a mailbox, or the null reverse-path `<>` used by bounces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReversePath {
    Null,
    Mailbox(Mailbox),
}

impl ReversePath {
    pub fn mailbox(&self) -> Option<&Mailbox> {
        match self {
            ReversePath::Null => None,
            ReversePath::Mailbox(m) => Some(m),
        }
    }
}

impl fmt::Display for ReversePath {
    /// Without angle brackets: empty for the null reverse-path.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReversePath::Null => Ok(()),
            ReversePath::Mailbox(m) => m.fmt(f),
        }
    }
}

/// The RCPT TO argument: a mailbox, or the bare `<Postmaster>` that RFC 5321 4.5.1 requires every server to accept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForwardPath {
    Postmaster,
    Mailbox(Mailbox),
}

impl fmt::Display for ForwardPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ForwardPath::Postmaster => f.write_str("postmaster"),
            ForwardPath::Mailbox(m) => m.fmt(f),
        }
    }
}

/// Strips `<...>` and an obsolete source route (`@a,@b:`), which RFC 5321 4.1.2 says to accept and ignore.
fn unbracket(path: &str) -> Result<&str, AddressError> {
    if path.len() > MAX_PATH + 2 {
        return Err(AddressError::PathTooLong(path.to_string()));
    }
    let inner = path
        .strip_prefix('<')
        .and_then(|p| p.strip_suffix('>'))
        .ok_or_else(|| AddressError::NotBracketed(path.to_string()))?;
    if inner.starts_with('@')
        && let Some(colon) = inner.find(':')
    {
        return Ok(&inner[colon + 1..]);
    }
    Ok(inner)
}

/// Parses the path of `MAIL FROM:<path>`.
pub fn parse_reverse_path(path: &str, utf8: bool) -> Result<ReversePath, AddressError> {
    let inner = unbracket(path)?;
    if inner.is_empty() {
        return Ok(ReversePath::Null);
    }
    Mailbox::parse(inner, utf8).map(ReversePath::Mailbox)
}

/// Parses the path of `RCPT TO:<path>`.
pub fn parse_forward_path(path: &str, utf8: bool) -> Result<ForwardPath, AddressError> {
    let inner = unbracket(path)?;
    if inner.eq_ignore_ascii_case("postmaster") {
        return Ok(ForwardPath::Postmaster);
    }
    Mailbox::parse(inner, utf8).map(ForwardPath::Mailbox)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mailbox_lowercases_the_domain_only() {
        let m = Mailbox::parse("Alice.Smith@Example.TEST", false).unwrap();
        assert_eq!(m.local_part(), "Alice.Smith");
        assert_eq!(m.domain().as_str(), "example.test");
    }

    #[test]
    fn quoted_local_part_and_address_literals() {
        assert!(Mailbox::parse("\"john doe\"@example.test", false).is_ok());
        assert_eq!(
            Mailbox::parse("a@[127.0.0.1]", false)
                .unwrap()
                .domain()
                .as_str(),
            "[127.0.0.1]"
        );
        assert!(Mailbox::parse("a@[IPv6:::1]", false).is_ok());
        assert!(Mailbox::parse("a@[300.0.0.1]", false).is_err());
    }

    #[test]
    fn bad_addresses_are_refused_with_the_input_quoted() {
        for bad in [
            "a..b@example.test",
            ".a@example.test",
            "a@-x.test",
            "a@exa_mple.test",
            "a b@x.test",
            "a@",
            "@x",
        ] {
            let e = Mailbox::parse(bad, false).unwrap_err();
            assert!(e.to_string().contains('"'), "{bad}: {e}");
        }
        let long = format!("{}@example.test", "a".repeat(65));
        assert!(matches!(
            Mailbox::parse(&long, false),
            Err(AddressError::LocalPartTooLong(_))
        ));
    }

    #[test]
    fn utf8_needs_smtputf8() {
        assert!(matches!(
            Mailbox::parse("jöran@example.test", false),
            Err(AddressError::NeedsUtf8(_))
        ));
        assert!(Mailbox::parse("jöran@bücher.test", true).is_ok());
    }

    #[test]
    fn paths() {
        assert_eq!(parse_reverse_path("<>", false).unwrap(), ReversePath::Null);
        assert_eq!(
            parse_forward_path("<Postmaster>", false).unwrap(),
            ForwardPath::Postmaster
        );
        let r = parse_reverse_path("<@relay.test,@b.test:bob@example.test>", false).unwrap();
        assert_eq!(r.to_string(), "bob@example.test");
        assert!(parse_reverse_path("bob@example.test", false).is_err());
    }
}
