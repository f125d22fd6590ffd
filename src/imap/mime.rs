//! A message's MIME structure for FETCH: the entities with their exact octet ranges (BODY[1.2.MIME] must be
//! the bytes as stored), ENVELOPE and BODYSTRUCTURE. Messages arrive here with CRLF line endings.
//! Transfer decoding (BINARY, SEARCH) uses mail-parser's decoders.

use super::response::{nstring, quoted_or_literal};

/// Nesting past this is treated as an opaque leaf: a hostile message cannot make the parser recurse deeply.
const MAX_DEPTH: usize = 32;
/// Parts past this in one multipart are left out of the structure.
const MAX_PARTS: usize = 1000;

#[derive(Debug)]
pub struct Entity<'a> {
    /// The header block, with the blank line that ends it.
    pub header: &'a [u8],
    pub body: &'a [u8],
    pub ctype: String,
    pub subtype: String,
    pub params: Vec<(String, String)>,
    /// Sub-entities of a multipart; for message/rfc822, the one embedded message.
    pub children: Vec<Entity<'a>>,
}

/// Splits an entity at the blank line after its header (the header keeps that line).
fn split(raw: &[u8]) -> (&[u8], &[u8]) {
    let header = crate::message::header_block(raw);
    (header, &raw[header.len()..])
}

/// The header fields of a block, unfolded: (name, raw value without the line breaks).
pub fn fields(header: &[u8]) -> Vec<(String, Vec<u8>)> {
    crate::message::fields(header)
        .filter(|(name, _)| !name.is_empty())
        .map(|(name, field)| {
            let colon = field
                .iter()
                .position(|&b| b == b':')
                .map_or(field.len(), |i| i + 1);
            let mut value = &field[colon..];
            while let [b' ' | b'\t', rest @ ..] = value {
                value = rest;
            }
            let unfolded = value
                .iter()
                .copied()
                .filter(|&b| b != b'\r' && b != b'\n')
                .collect();
            (String::from_utf8_lossy(name).into_owned(), unfolded)
        })
        .collect()
}

/// The first value of a header field.
pub fn field<'f>(fields: &'f [(String, Vec<u8>)], name: &str) -> Option<&'f [u8]> {
    fields
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_slice())
}

use crate::message::trim;

/// Removes (comments) outside quoted strings.
fn strip_comments(v: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len());
    let (mut depth, mut quoted, mut escaped) = (0usize, false, false);
    for &c in v {
        if escaped {
            escaped = false;
            if depth == 0 {
                out.push(c);
            }
            continue;
        }
        match c {
            b'\\' => {
                escaped = true;
                if depth == 0 {
                    out.push(c);
                }
            }
            b'"' if depth == 0 => {
                quoted = !quoted;
                out.push(c);
            }
            b'(' if !quoted => depth += 1,
            b')' if !quoted && depth > 0 => depth -= 1,
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

/// `type/subtype; a=b; c="d e"` → (type, subtype, params), lower-cased names.
pub fn content_type(v: &[u8]) -> (String, String, Vec<(String, String)>) {
    let v = strip_comments(v);
    let text = String::from_utf8_lossy(&v);
    let mut parts = split_params(&text).into_iter();
    let first = parts.next().unwrap_or_default();
    let (t, s) = first.split_once('/').unwrap_or((&first, ""));
    let params = parse_params(parts);
    (
        t.trim().to_ascii_lowercase(),
        s.trim().to_ascii_lowercase(),
        params,
    )
}

/// Splits at `;` outside quotes.
fn split_params(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let (mut cur, mut quoted, mut escaped) = (String::new(), false, false);
    for c in text.chars() {
        if escaped {
            cur.push(c);
            escaped = false;
            continue;
        }
        match c {
            '\\' if quoted => {
                cur.push(c);
                escaped = true;
            }
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            ';' if !quoted => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out
}

fn parse_params(parts: impl Iterator<Item = String>) -> Vec<(String, String)> {
    let mut params = Vec::new();
    for p in parts {
        let Some((k, v)) = p.split_once('=') else {
            continue;
        };
        let k = k.trim().to_ascii_lowercase();
        let v = v.trim();
        let v = match v.strip_prefix('"').and_then(|x| x.strip_suffix('"')) {
            Some(q) => q.replace("\\\"", "\"").replace("\\\\", "\\"),
            None => v.to_string(),
        };
        if !k.is_empty() && params.len() < 64 {
            params.push((k, v));
        }
    }
    params
}

fn param<'p>(params: &'p [(String, String)], name: &str) -> Option<&'p str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Parses an entity (a message, or a part of one). `digest` makes the default type message/rfc822.
pub fn parse(raw: &[u8]) -> Entity<'_> {
    entity(raw, false, 0)
}

fn entity(raw: &[u8], digest: bool, depth: usize) -> Entity<'_> {
    let (header, body) = split(raw);
    let f = fields(header);
    let (mut ctype, mut subtype, mut params) = match field(&f, "Content-Type") {
        Some(v) => content_type(v),
        None => (String::new(), String::new(), Vec::new()),
    };
    if ctype.is_empty() || subtype.is_empty() {
        (ctype, subtype) = if digest {
            ("message".into(), "rfc822".into())
        } else {
            ("text".into(), "plain".into())
        };
        if ctype == "text" && param(&params, "charset").is_none() {
            params = vec![("charset".into(), "us-ascii".into())];
        }
    }
    let mut children = Vec::new();
    if depth < MAX_DEPTH {
        if ctype == "multipart" {
            if let Some(boundary) = param(&params, "boundary").map(str::to_string) {
                let digest = subtype == "digest";
                for part in multipart_parts(body, boundary.as_bytes()) {
                    if children.len() >= MAX_PARTS {
                        break;
                    }
                    children.push(entity(part, digest, depth + 1));
                }
            }
        } else if ctype == "message" && (subtype == "rfc822" || subtype == "global") {
            children.push(entity(body, false, depth + 1));
        }
    }
    Entity {
        header,
        body,
        ctype,
        subtype,
        params,
        children,
    }
}

/// The bodies between `--boundary` lines (the CRLF before a delimiter belongs to it).
fn multipart_parts<'a>(body: &'a [u8], boundary: &[u8]) -> Vec<&'a [u8]> {
    let mut delim = b"--".to_vec();
    delim.extend_from_slice(boundary);
    let mut starts: Vec<(usize, usize, bool)> = Vec::new(); // (line start, after line, closing)
    let mut pos = 0;
    while pos < body.len() {
        let end = body[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(body.len(), |i| pos + i + 1);
        let line = &body[pos..end];
        if line.starts_with(&delim) {
            let rest = trim(&line[delim.len()..]);
            let closing = rest.starts_with(b"--");
            if rest.is_empty() || closing {
                starts.push((pos, end, closing));
                if closing {
                    break;
                }
            }
        }
        pos = end;
    }
    let mut out = Vec::new();
    for w in starts.windows(2) {
        let (_, from, closing) = w[0];
        if closing {
            break;
        }
        let mut to = w[1].0;
        // The line break before the delimiter is part of it.
        if to >= from + 2 && &body[to - 2..to] == b"\r\n" {
            to -= 2;
        } else if to > from && body[to - 1] == b'\n' {
            to -= 1;
        }
        out.push(&body[from..to.max(from)]);
    }
    if let Some(&(_, from, false)) = starts.last() {
        // No closing delimiter: the last part runs to the end.
        out.push(&body[from..]);
    }
    out
}

impl<'a> Entity<'a> {
    fn is_message(&self) -> bool {
        self.ctype == "message" && !self.children.is_empty() && self.subtype != "partial"
    }

    fn is_multipart(&self) -> bool {
        self.ctype == "multipart"
    }

    /// The entity a part path names (`1.2`), from this entity as a message.
    pub fn part(&self, path: &[u32]) -> Option<&Entity<'a>> {
        // The entity whose body the next number indexes: a message (its body's parts) or a multipart.
        let mut ctx = self;
        let mut found = None;
        let mut leaf = false;
        for &n in path {
            if leaf {
                return None;
            }
            let n = n as usize;
            let target = if ctx.is_multipart() {
                ctx.children.get(n.checked_sub(1)?)?
            } else if n == 1 {
                ctx
            } else {
                return None;
            };
            found = Some(target);
            if target.is_message() {
                ctx = &target.children[0];
            } else if target.is_multipart() {
                ctx = target;
            } else {
                leaf = true;
            }
        }
        found
    }

    /// The embedded message of a message/rfc822 part, or this entity itself at the top.
    pub fn message(&self, top: bool) -> Option<&Entity<'a>> {
        if top {
            Some(self)
        } else if self.is_message() {
            self.children.first()
        } else {
            None
        }
    }

    fn field(&self, name: &str) -> Option<Vec<u8>> {
        field(&fields(self.header), name).map(|v| v.to_vec())
    }

    /// The transfer encoding, lower-cased (`7bit` when absent).
    pub fn encoding(&self) -> String {
        self.field("Content-Transfer-Encoding")
            .map(|v| String::from_utf8_lossy(trim(&strip_comments(&v))).to_ascii_lowercase())
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| "7bit".into())
    }

    /// The body with its transfer encoding undone; `None` for an encoding tern does not know.
    pub fn decoded(&self) -> Option<Vec<u8>> {
        match self.encoding().as_str() {
            "7bit" | "8bit" | "binary" => Some(self.body.to_vec()),
            "base64" => {
                Some(mail_parser::decoders::base64::base64_decode(self.body).unwrap_or_default())
            }
            "quoted-printable" => Some(
                mail_parser::decoders::quoted_printable::quoted_printable_decode(self.body)
                    .unwrap_or_default(),
            ),
            _ => None,
        }
    }

    /// BODYSTRUCTURE (with extension data) or BODY (without).
    pub fn structure(&self, extended: bool, out: &mut Vec<u8>, depth: usize) {
        if self.is_multipart() && !self.children.is_empty() && depth < MAX_DEPTH {
            out.push(b'(');
            for c in &self.children {
                c.structure(extended, out, depth + 1);
            }
            out.push(b' ');
            quoted_or_literal(out, self.subtype.to_ascii_uppercase().as_bytes());
            if extended {
                out.push(b' ');
                params_list(out, &self.params);
                self.extension_tail(out);
            }
            out.push(b')');
            return;
        }
        let (ctype, subtype) = if self.is_multipart() {
            // A multipart without parts (or too deep) is shown as an opaque leaf.
            ("application".to_string(), "octet-stream".to_string())
        } else {
            (self.ctype.clone(), self.subtype.clone())
        };
        out.push(b'(');
        quoted_or_literal(out, ctype.to_ascii_uppercase().as_bytes());
        out.push(b' ');
        quoted_or_literal(out, subtype.to_ascii_uppercase().as_bytes());
        out.push(b' ');
        params_list(out, &self.params);
        out.push(b' ');
        nstring(out, self.field("Content-ID").as_deref().map(trim));
        out.push(b' ');
        nstring(out, self.field("Content-Description").as_deref().map(trim));
        out.push(b' ');
        quoted_or_literal(out, self.encoding().to_ascii_uppercase().as_bytes());
        out.extend_from_slice(format!(" {}", self.body.len()).as_bytes());
        if self.is_message() && depth < MAX_DEPTH {
            let m = &self.children[0];
            out.push(b' ');
            envelope(&fields(m.header), out);
            out.push(b' ');
            m.structure(extended, out, depth + 1);
            out.extend_from_slice(format!(" {}", lines(self.body)).as_bytes());
        } else if ctype == "text" {
            out.extend_from_slice(format!(" {}", lines(self.body)).as_bytes());
        }
        if extended {
            out.push(b' ');
            nstring(out, self.field("Content-MD5").as_deref().map(trim));
            self.extension_tail(out);
        }
        out.push(b')');
    }

    /// Disposition, language and location.
    fn extension_tail(&self, out: &mut Vec<u8>) {
        out.push(b' ');
        match self.field("Content-Disposition") {
            Some(v) => {
                let v = strip_comments(&v);
                let text = String::from_utf8_lossy(&v);
                let mut parts = split_params(&text).into_iter();
                let kind = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
                let params = parse_params(parts);
                out.push(b'(');
                quoted_or_literal(out, kind.to_ascii_uppercase().as_bytes());
                out.push(b' ');
                params_list(out, &params);
                out.push(b')');
            }
            None => out.extend_from_slice(b"NIL"),
        }
        out.push(b' ');
        match self.field("Content-Language") {
            Some(v) => {
                let v = String::from_utf8_lossy(&strip_comments(&v)).into_owned();
                let langs: Vec<&str> = v
                    .split(',')
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .collect();
                match langs.as_slice() {
                    [] => out.extend_from_slice(b"NIL"),
                    [one] => quoted_or_literal(out, one.as_bytes()),
                    many => {
                        out.push(b'(');
                        for (i, l) in many.iter().enumerate() {
                            if i > 0 {
                                out.push(b' ');
                            }
                            quoted_or_literal(out, l.as_bytes());
                        }
                        out.push(b')');
                    }
                }
            }
            None => out.extend_from_slice(b"NIL"),
        }
        out.push(b' ');
        nstring(out, self.field("Content-Location").as_deref().map(trim));
    }
}

fn lines(body: &[u8]) -> usize {
    body.iter().filter(|&&b| b == b'\n').count()
}

fn params_list(out: &mut Vec<u8>, params: &[(String, String)]) {
    if params.is_empty() {
        out.extend_from_slice(b"NIL");
        return;
    }
    out.push(b'(');
    for (i, (k, v)) in params.iter().enumerate() {
        if i > 0 {
            out.push(b' ');
        }
        quoted_or_literal(out, k.to_ascii_uppercase().as_bytes());
        out.push(b' ');
        quoted_or_literal(out, v.as_bytes());
    }
    out.push(b')');
}

/// ENVELOPE from a header block's fields.
pub fn envelope(f: &[(String, Vec<u8>)], out: &mut Vec<u8>) {
    let get = |n: &str| field(f, n).map(trim);
    out.push(b'(');
    nstring(out, get("Date"));
    out.push(b' ');
    nstring(out, get("Subject"));
    let from = get("From");
    for name in ["From", "Sender", "Reply-To", "To", "Cc", "Bcc"] {
        out.push(b' ');
        let v = match (name, get(name)) {
            ("Sender" | "Reply-To", None) => from,
            ("Sender" | "Reply-To", Some(v)) if v.is_empty() => from,
            (_, v) => v,
        };
        addresses(out, v);
    }
    out.push(b' ');
    nstring(out, get("In-Reply-To"));
    out.push(b' ');
    nstring(out, get("Message-ID"));
    out.push(b')');
}

#[derive(Debug, PartialEq)]
enum Tok {
    Word(Vec<u8>),
    Quoted(Vec<u8>),
    Special(u8),
    /// A (comment): the display name of `user@host (Name)`.
    Comment(Vec<u8>),
}

fn tokens(v: &[u8]) -> Vec<Tok> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < v.len() {
        let c = v[i];
        match c {
            b' ' | b'\t' | b'\r' | b'\n' => i += 1,
            b'(' => {
                let (mut depth, mut text) = (0usize, Vec::new());
                while i < v.len() {
                    match v[i] {
                        b'\\' if i + 1 < v.len() => {
                            i += 1;
                            text.push(v[i]);
                        }
                        b'(' => {
                            if depth > 0 {
                                text.push(b'(');
                            }
                            depth += 1;
                        }
                        b')' => {
                            depth -= 1;
                            if depth == 0 {
                                i += 1;
                                break;
                            }
                            text.push(b')');
                        }
                        b => text.push(b),
                    }
                    i += 1;
                }
                out.push(Tok::Comment(text));
            }
            b'"' => {
                let mut q = Vec::new();
                i += 1;
                while i < v.len() && v[i] != b'"' {
                    if v[i] == b'\\' && i + 1 < v.len() {
                        i += 1;
                    }
                    q.push(v[i]);
                    i += 1;
                }
                i += 1;
                out.push(Tok::Quoted(q));
            }
            b'<' | b'>' | b'@' | b',' | b';' | b':' => {
                out.push(Tok::Special(c));
                i += 1;
            }
            _ => {
                let start = i;
                while i < v.len() && !b" \t\r\n\"<>@,;:()".contains(&v[i]) {
                    i += 1;
                }
                out.push(Tok::Word(v[start..i].to_vec()));
            }
        }
        if out.len() > 10_000 {
            break;
        }
    }
    out
}

struct Addr {
    name: Option<Vec<u8>>,
    /// A source route (`@a,@b`), obsolete but still shown.
    adl: Option<Vec<u8>>,
    mailbox: Option<Vec<u8>>,
    host: Option<Vec<u8>>,
}

/// An address list as IMAP shows it: `((name adl mailbox host) ...)`, groups as RFC 9051 7.5.2 says.
fn addresses(out: &mut Vec<u8>, v: Option<&[u8]>) {
    let Some(v) = v else {
        out.extend_from_slice(b"NIL");
        return;
    };
    let list = parse_addresses(v);
    write_addresses(out, &list);
}

/// The first entry of an address list as ENVELOPE shows it: (display name, mailbox, host); a group's start
/// counts with the group's name as its mailbox (what SORT compares, as Dovecot does).
pub fn first_address(v: &[u8]) -> Option<(Option<Vec<u8>>, Vec<u8>, Option<Vec<u8>>)> {
    let a = parse_addresses(v).into_iter().next()??;
    let is_group = a.name.as_deref() == Some(b"") && a.host.is_none();
    Some((
        if is_group { None } else { a.name },
        a.mailbox.unwrap_or_default(),
        a.host,
    ))
}

fn parse_addresses(v: &[u8]) -> Vec<Option<Addr>> {
    let toks = tokens(v);
    let mut list: Vec<Option<Addr>> = Vec::new(); // None = group end
    let mut phrase: Vec<Vec<u8>> = Vec::new();
    let mut spec: Vec<u8> = Vec::new();
    let mut i = 0;
    let mut comment: Option<Vec<u8>> = None;
    let flush = |phrase: &mut Vec<Vec<u8>>,
                 spec: &mut Vec<u8>,
                 list: &mut Vec<Option<Addr>>,
                 comment: &mut Option<Vec<u8>>| {
        let name = comment.take();
        if phrase.is_empty() && spec.is_empty() {
            return;
        }
        let text = if spec.is_empty() {
            phrase.join(&b' ')
        } else {
            std::mem::take(spec)
        };
        phrase.clear();
        let (mailbox, host) = match text.iter().rposition(|&b| b == b'@') {
            Some(at) => (text[..at].to_vec(), Some(text[at + 1..].to_vec())),
            None => (text, None),
        };
        list.push(Some(Addr {
            name: name.filter(|n| !n.is_empty()),
            adl: None,
            mailbox: Some(mailbox),
            host,
        }));
    };
    while i < toks.len() && list.len() < 1000 {
        match &toks[i] {
            Tok::Word(w) | Tok::Quoted(w) => {
                if !spec.is_empty()
                    || matches!(toks.get(i + 1), Some(Tok::Special(b'@')))
                    || matches!(toks.get(i.wrapping_sub(1)), Some(Tok::Special(b'@')))
                {
                    spec.extend_from_slice(w);
                } else {
                    phrase.push(w.clone());
                }
                i += 1;
            }
            Tok::Special(b'@') => {
                if spec.is_empty()
                    && let Some(last) = phrase.pop()
                {
                    spec = last;
                }
                spec.push(b'@');
                i += 1;
            }
            Tok::Special(b'<') => {
                comment = None;
                let name = (!phrase.is_empty()).then(|| phrase.join(&b' '));
                phrase.clear();
                spec.clear();
                i += 1;
                let mut inner = Vec::new();
                while i < toks.len() && toks[i] != Tok::Special(b'>') {
                    match &toks[i] {
                        Tok::Word(w) | Tok::Quoted(w) => inner.extend_from_slice(w),
                        Tok::Special(c) => inner.push(*c),
                        Tok::Comment(_) => {}
                    }
                    i += 1;
                }
                i += 1;
                let mut adl = None;
                if let Some(colon) = inner.iter().rposition(|&b| b == b':') {
                    adl = Some(inner[..colon].to_vec());
                    inner.drain(..=colon);
                }
                let (mailbox, host) = match inner.iter().rposition(|&b| b == b'@') {
                    Some(at) => (inner[..at].to_vec(), Some(inner[at + 1..].to_vec())),
                    None => (inner, None),
                };
                list.push(Some(Addr {
                    name,
                    adl,
                    mailbox: Some(mailbox),
                    host,
                }));
            }
            Tok::Special(b':') => {
                // A group: its name starts it, `;` ends it.
                let name = phrase.join(&b' ');
                phrase.clear();
                list.push(Some(Addr {
                    name: None,
                    adl: None,
                    mailbox: Some(name),
                    host: None,
                }));
                if let Some(Some(a)) = list.last_mut() {
                    a.host = None;
                    a.name = Some(Vec::new());
                }
                i += 1;
            }
            Tok::Special(b';') => {
                flush(&mut phrase, &mut spec, &mut list, &mut comment);
                list.push(None);
                i += 1;
            }
            Tok::Special(b',') => {
                flush(&mut phrase, &mut spec, &mut list, &mut comment);
                i += 1;
            }
            Tok::Special(_) => i += 1,
            Tok::Comment(c) => {
                if comment.is_none() {
                    comment = Some(c.clone());
                }
                i += 1;
            }
        }
    }
    flush(&mut phrase, &mut spec, &mut list, &mut comment);
    list
}

fn write_addresses(out: &mut Vec<u8>, list: &[Option<Addr>]) {
    if list.is_empty() {
        out.extend_from_slice(b"NIL");
        return;
    }
    out.push(b'(');
    for a in list {
        match a {
            None => out.extend_from_slice(b"(NIL NIL NIL NIL)"),
            // A group start: (NIL NIL "name" NIL), marked by an empty name.
            Some(a) if a.name.as_deref() == Some(b"") && a.host.is_none() => {
                out.extend_from_slice(b"(NIL NIL ");
                nstring(out, a.mailbox.as_deref());
                out.extend_from_slice(b" NIL)");
            }
            Some(a) => {
                out.push(b'(');
                nstring(out, a.name.as_deref());
                out.push(b' ');
                nstring(out, a.adl.as_deref());
                out.push(b' ');
                nstring(out, a.mailbox.as_deref());
                out.push(b' ');
                // RFC 9051: a missing host in a non-group address is shown as an empty... NIL is a group.
                match &a.host {
                    Some(h) => nstring(out, Some(h)),
                    None => quoted_or_literal(out, b""),
                }
                out.push(b')');
            }
        }
    }
    out.push(b')');
}

/// A message sent as a binary literal (RFC 3516) with parts that hold NUL octets: those parts are stored
/// base64-encoded instead, so BODY[] never carries NUL while BINARY[] gives back the octets sent.
pub fn encode_binary(raw: &[u8]) -> Vec<u8> {
    if !raw.contains(&0) {
        return raw.to_vec();
    }
    let e = parse(raw);
    let mut out = Vec::with_capacity(raw.len() * 4 / 3 + 64);
    encode_entity(raw, &e, &mut out);
    out
}

fn offset(outer: &[u8], inner: &[u8]) -> usize {
    inner.as_ptr() as usize - outer.as_ptr() as usize
}

fn encode_entity(raw: &[u8], e: &Entity, out: &mut Vec<u8>) {
    let start = offset(raw, e.header);
    let end = offset(raw, e.body) + e.body.len();
    if !raw[start..end].contains(&0) {
        out.extend_from_slice(&raw[start..end]);
        return;
    }
    if e.children.is_empty() || e.is_message() {
        // A leaf (or an embedded message, kept whole): the header without its transfer encoding, then base64.
        for line in e.header.split_inclusive(|&b| b == b'\n') {
            if line == b"\r\n" || line == b"\n" {
                continue;
            }
            let lower = line.to_ascii_lowercase();
            if lower.starts_with(b"content-transfer-encoding:") {
                continue;
            }
            out.extend_from_slice(line);
        }
        out.extend_from_slice(b"Content-Transfer-Encoding: base64\r\n\r\n");
        use base64::Engine;
        let text = base64::engine::general_purpose::STANDARD.encode(e.body);
        for chunk in text.as_bytes().chunks(76) {
            out.extend_from_slice(chunk);
            out.extend_from_slice(b"\r\n");
        }
        return;
    }
    let mut pos = start;
    for c in &e.children {
        let c_start = offset(raw, c.header);
        out.extend_from_slice(&raw[pos..c_start]);
        encode_entity(raw, c, out);
        pos = offset(raw, c.body) + c.body.len();
    }
    out.extend_from_slice(&raw[pos..end]);
}

/// Header lines of a block whose names are (or, with `not`, are not) in `names`, with the blank line.
pub fn header_fields(header: &[u8], names: &[String], not: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let mut keep = false;
    for line in header.split_inclusive(|&b| b == b'\n') {
        if line == b"\r\n" || line == b"\n" {
            break;
        }
        if line[0] == b' ' || line[0] == b'\t' {
            if keep {
                out.extend_from_slice(line);
            }
            continue;
        }
        let name = line
            .iter()
            .position(|&b| b == b':')
            .map(|c| trim(&line[..c]));
        keep = match name {
            Some(n) => names.iter().any(|x| x.as_bytes().eq_ignore_ascii_case(n)) != not,
            None => false,
        };
        if keep {
            out.extend_from_slice(line);
        }
    }
    out.extend_from_slice(b"\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIXED: &[u8] = b"From: Alice <alice@example.test>\r\nTo: bob@example.test, \"Carol C\" <carol@x.test>\r\nSubject: hi\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\npreamble\r\n--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nhello\r\n--b1\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner\r\n\r\ninner body\r\n--b1--\r\n";

    #[test]
    fn parts_and_sections() {
        let e = parse(MIXED);
        assert_eq!(e.children.len(), 2);
        assert_eq!(e.part(&[1]).unwrap().body, b"hello");
        let m = e.part(&[2]).unwrap();
        assert_eq!(m.body, b"Subject: inner\r\n\r\ninner body");
        assert_eq!(m.message(false).unwrap().header, b"Subject: inner\r\n\r\n");
        assert_eq!(e.part(&[2, 1]).unwrap().body, b"inner body");
        assert!(e.part(&[3]).is_none());
        let single = parse(b"Subject: x\r\n\r\nbody\r\n");
        assert_eq!(single.part(&[1]).unwrap().body, b"body\r\n");
        assert!(single.part(&[2]).is_none());
    }

    #[test]
    fn structure_and_envelope() {
        let e = parse(MIXED);
        let mut out = Vec::new();
        e.structure(false, &mut out, 0);
        let s = String::from_utf8(out).unwrap();
        assert!(s.starts_with("((\"TEXT\" \"PLAIN\" (\"CHARSET\" \"utf-8\") NIL NIL \"7BIT\" 5 0)(\"MESSAGE\" \"RFC822\" NIL NIL NIL \"7BIT\" 28 (NIL \"inner\""), "{s}");
        assert!(s.ends_with(" \"MIXED\")"), "{s}");
        let mut env = Vec::new();
        envelope(&fields(split(MIXED).0), &mut env);
        let env = String::from_utf8(env).unwrap();
        assert_eq!(
            env,
            "(NIL \"hi\" ((\"Alice\" NIL \"alice\" \"example.test\")) ((\"Alice\" NIL \"alice\" \"example.test\")) ((\"Alice\" NIL \"alice\" \"example.test\")) ((NIL NIL \"bob\" \"example.test\")(\"Carol C\" NIL \"carol\" \"x.test\")) NIL NIL NIL NIL)"
        );
    }

    #[test]
    fn groups_and_field_filters() {
        let mut out = Vec::new();
        addresses(&mut out, Some(b"undisclosed-recipients:;"));
        assert_eq!(
            out,
            b"((NIL NIL \"undisclosed-recipients\" NIL)(NIL NIL NIL NIL))"
        );
        let h = b"From: a\r\nSubject: x\r\n y\r\nTo: b\r\n\r\n";
        assert_eq!(
            header_fields(h, &["subject".into()], false),
            b"Subject: x\r\n y\r\n\r\n"
        );
        assert_eq!(
            header_fields(h, &["subject".into()], true),
            b"From: a\r\nTo: b\r\n\r\n"
        );
    }

    #[test]
    fn hostile_nesting_is_bounded() {
        let mut m = Vec::new();
        for i in 0..200 {
            m.extend_from_slice(
                format!("Content-Type: multipart/mixed; boundary=b{i}\r\n\r\n--b{i}\r\n")
                    .as_bytes(),
            );
        }
        let e = parse(&m);
        let mut out = Vec::new();
        e.structure(true, &mut out, 0);
        assert!(!out.is_empty());
    }
}
