//! The IMAP command grammar (RFC 9051 9, RFC 3501 9, and the extensions tern announces), over one complete
//! command: the line with its literals in place (`{n}CRLF` followed by n octets), as `framing` collects it.
//!
//! imap-codec 1.0 was evaluated first: it has no NAMESPACE, ID, ESEARCH, SORT/THREAD, LIST-EXTENDED or
//! UID EXPUNGE, all of which IMAP4rev2 or the mail clients need, so the grammar is written here.

use super::ParseError;

/// `*` in a sequence set.
pub const STAR: u32 = 0;

/// A sequence set: ranges of numbers, `STAR` (0, never a valid number) standing for `*`; or `$`, the last saved search.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SeqSet {
    Ranges(Vec<(u32, u32)>),
    Saved,
}

impl SeqSet {
    /// Whether `n` is in the set, `*` being `largest`.
    pub fn contains(ranges: &[(u32, u32)], n: u32, largest: u32) -> bool {
        ranges.iter().any(|&(a, b)| {
            let a = if a == STAR { largest } else { a };
            let b = if b == STAR { largest } else { b };
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            n >= lo && n <= hi
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SectionText {
    Header,
    HeaderFields { not: bool, fields: Vec<String> },
    Text,
    Mime,
}

/// `BODY[1.2.HEADER]`: a part path and what of it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Section {
    pub part: Vec<u32>,
    pub text: Option<SectionText>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchAtt {
    Flags,
    InternalDate,
    Rfc822Size,
    Envelope,
    BodyStructure,
    /// BODY without a section: the non-extensible structure.
    Body,
    Uid,
    ModSeq,
    Rfc822,
    Rfc822Header,
    Rfc822Text,
    Section {
        peek: bool,
        section: Section,
        partial: Option<(u32, u32)>,
    },
    Binary {
        peek: bool,
        part: Vec<u32>,
        partial: Option<(u32, u32)>,
    },
    BinarySize(Vec<u32>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SearchKey {
    All,
    And(Vec<SearchKey>),
    Or(Box<SearchKey>, Box<SearchKey>),
    Not(Box<SearchKey>),
    Seq(SeqSet),
    Uid(SeqSet),
    /// A flag that must be set (`\Seen`, a keyword), or must not (`UNSEEN`, `UNKEYWORD`).
    Flag(String, bool),
    New,
    Old,
    Recent,
    Larger(u64),
    Smaller(u64),
    /// Internal date: `Before`/`On`/`Since`, days since 1970.
    Before(i64),
    On(i64),
    Since(i64),
    SentBefore(i64),
    SentOn(i64),
    SentSince(i64),
    Header(String, String),
    Body(String),
    Text(String),
    ModSeq(u64),
    Older(u64),
    Younger(u64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchReturn {
    Min,
    Max,
    All,
    Count,
    Save,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusItem {
    Messages,
    Recent,
    UidNext,
    UidValidity,
    Unseen,
    Deleted,
    Size,
    HighestModSeq,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreOp {
    Replace,
    Add,
    Remove,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendMessage {
    pub flags: Vec<String>,
    /// Unix seconds.
    pub date: Option<i64>,
    pub body: Vec<u8>,
}

/// `SELECT ... (QRESYNC (uidvalidity modseq [known-uids]))`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Qresync {
    pub uidvalidity: u32,
    pub modseq: u64,
    pub known_uids: Option<Vec<(u32, u32)>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListOptions {
    pub subscribed: bool,
    pub special_use: bool,
    pub recursive: bool,
    pub return_subscribed: bool,
    pub return_children: bool,
    pub return_special_use: bool,
    pub return_status: Vec<StatusItem>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKey {
    Arrival,
    Cc,
    Date,
    From,
    Size,
    Subject,
    To,
    DisplayFrom,
    DisplayTo,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Capability,
    Noop,
    Logout,
    StartTls,
    Login {
        user: String,
        password: String,
    },
    Authenticate {
        mechanism: String,
        initial: Option<String>,
    },
    Enable(Vec<String>),
    Id,
    Namespace,
    Idle,
    Select {
        mailbox: String,
        examine: bool,
        condstore: bool,
        qresync: Option<Qresync>,
    },
    Create(String),
    Delete(String),
    Rename(String, String),
    Subscribe(String, bool),
    List {
        reference: String,
        patterns: Vec<String>,
        options: ListOptions,
        lsub: bool,
    },
    Status(String, Vec<StatusItem>),
    Append(String, Vec<AppendMessage>),
    Check,
    Close,
    Unselect,
    Expunge(Option<SeqSet>),
    Search {
        uid: bool,
        ret: Option<Vec<SearchReturn>>,
        key: SearchKey,
    },
    Sort {
        uid: bool,
        keys: Vec<(SortKey, bool)>,
        key: SearchKey,
    },
    Thread {
        uid: bool,
        references: bool,
        key: SearchKey,
    },
    Fetch {
        uid: bool,
        set: SeqSet,
        items: Vec<FetchAtt>,
        changed_since: Option<u64>,
        vanished: bool,
    },
    Store {
        uid: bool,
        set: SeqSet,
        op: StoreOp,
        silent: bool,
        flags: Vec<String>,
        unchanged_since: Option<u64>,
    },
    Copy {
        uid: bool,
        set: SeqSet,
        mailbox: String,
        moving: bool,
    },
    GetQuota(String),
    GetQuotaRoot(String),
    SetQuota,
}

/// A tagged command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tagged {
    pub tag: String,
    pub command: Command,
}

struct P<'a> {
    b: &'a [u8],
    i: usize,
}

type R<T> = Result<T, ParseError>;

fn bad<T>(why: impl Into<String>) -> R<T> {
    Err(ParseError::Bad(why.into()))
}

fn is_atom_char(c: u8) -> bool {
    c > 0x20
        && c < 0x7f
        && !matches!(
            c,
            b'(' | b')' | b'{' | b' ' | b'%' | b'*' | b'"' | b'\\' | b']'
        )
}

impl<'a> P<'a> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn at_end(&self) -> bool {
        self.i >= self.b.len()
    }

    fn sp(&mut self) -> R<()> {
        if self.peek() == Some(b' ') {
            self.i += 1;
            Ok(())
        } else {
            bad(format!("expected a space at octet {}", self.i))
        }
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, c: u8) -> R<()> {
        if self.eat(c) {
            Ok(())
        } else {
            bad(format!("expected {:?} at octet {}", c as char, self.i))
        }
    }

    /// Characters while `f` holds.
    fn take(&mut self, f: impl Fn(u8) -> bool) -> &'a [u8] {
        let start = self.i;
        while self.i < self.b.len() && f(self.b[self.i]) {
            self.i += 1;
        }
        &self.b[start..self.i]
    }

    fn atom(&mut self) -> R<String> {
        let a = self.take(is_atom_char);
        if a.is_empty() {
            return bad(format!("expected an atom at octet {}", self.i));
        }
        Ok(String::from_utf8_lossy(a).into_owned())
    }

    /// An atom that may contain `]` (flags like `\Seen`, list-mailbox characters).
    fn word(&mut self, extra: &[u8]) -> R<String> {
        let a = self.take(|c| is_atom_char(c) || extra.contains(&c));
        if a.is_empty() {
            return bad(format!("expected an atom at octet {}", self.i));
        }
        Ok(String::from_utf8_lossy(a).into_owned())
    }

    fn number(&mut self) -> R<u64> {
        let d = self.take(|c| c.is_ascii_digit());
        if d.is_empty() || d.len() > 19 {
            return bad(format!("expected a number at octet {}", self.i));
        }
        std::str::from_utf8(d)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| ParseError::Bad("number out of range".into()))
    }

    fn nz_number(&mut self) -> R<u32> {
        let n = self.number()?;
        if n == 0 || n > u32::MAX as u64 {
            return bad("expected a non-zero 32-bit number");
        }
        Ok(n as u32)
    }

    fn quoted(&mut self) -> R<Vec<u8>> {
        self.expect(b'"')?;
        let mut out = Vec::new();
        loop {
            match self.peek() {
                None => return bad("unterminated quoted string"),
                Some(b'"') => {
                    self.i += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.i += 1;
                    match self.peek() {
                        Some(c @ (b'"' | b'\\')) => {
                            out.push(c);
                            self.i += 1;
                        }
                        _ => return bad("bad escape in quoted string"),
                    }
                }
                Some(b'\r' | b'\n' | 0) => return bad("line break in quoted string"),
                Some(c) => {
                    out.push(c);
                    self.i += 1;
                }
            }
        }
    }

    /// `{n}CRLF` or `{n+}CRLF` (or `~{n}` when `binary`) followed by n octets.
    fn literal(&mut self, binary: bool) -> R<Vec<u8>> {
        if binary {
            self.eat(b'~');
        }
        self.expect(b'{')?;
        let n = self.number()? as usize;
        self.eat(b'+');
        self.expect(b'}')?;
        if !(self.eat(b'\r') && self.eat(b'\n')) {
            return bad("literal not followed by CRLF");
        }
        if self.i + n > self.b.len() {
            return bad("literal shorter than announced");
        }
        let v = self.b[self.i..self.i + n].to_vec();
        self.i += n;
        if !binary && v.contains(&0) {
            return bad("NUL in a literal");
        }
        Ok(v)
    }

    fn string(&mut self) -> R<Vec<u8>> {
        match self.peek() {
            Some(b'"') => self.quoted(),
            Some(b'{') => self.literal(false),
            _ => bad(format!("expected a string at octet {}", self.i)),
        }
    }

    fn astring_bytes(&mut self) -> R<Vec<u8>> {
        match self.peek() {
            Some(b'"' | b'{') => self.string(),
            _ => Ok(self.word(b"]")?.into_bytes()),
        }
    }

    fn astring(&mut self) -> R<String> {
        let b = self.astring_bytes()?;
        String::from_utf8(b).map_err(|_| ParseError::Bad("string is not UTF-8".into()))
    }

    fn mailbox(&mut self) -> R<String> {
        let m = self.astring()?;
        Ok(if m.eq_ignore_ascii_case("INBOX") {
            "INBOX".into()
        } else {
            m
        })
    }

    /// A LIST pattern: an astring or list-char atoms (with `%` and `*`).
    fn list_mailbox(&mut self) -> R<String> {
        match self.peek() {
            Some(b'"' | b'{') => self.astring(),
            _ => self.word(b"%*]"),
        }
    }

    fn seq_number(&mut self) -> R<u32> {
        if self.eat(b'*') {
            Ok(STAR)
        } else {
            self.nz_number()
        }
    }

    fn seq_set(&mut self) -> R<SeqSet> {
        if self.eat(b'$') {
            return Ok(SeqSet::Saved);
        }
        let mut ranges = Vec::new();
        loop {
            let a = self.seq_number()?;
            let b = if self.eat(b':') {
                self.seq_number()?
            } else {
                a
            };
            ranges.push((a, b));
            if ranges.len() > 100_000 {
                return bad("sequence set too long");
            }
            if !self.eat(b',') {
                return Ok(SeqSet::Ranges(ranges));
            }
        }
    }

    fn flag(&mut self) -> R<String> {
        if self.eat(b'\\') {
            let a = self.atom()?;
            Ok(format!("\\{a}"))
        } else {
            self.atom()
        }
    }

    fn flag_list(&mut self) -> R<Vec<String>> {
        self.expect(b'(')?;
        let mut out = Vec::new();
        if self.eat(b')') {
            return Ok(out);
        }
        loop {
            out.push(self.flag()?);
            if self.eat(b')') {
                return Ok(out);
            }
            self.sp()?;
        }
    }

    /// `"dd-Mon-yyyy"` or dd-Mon-yyyy, as days since 1970.
    fn date(&mut self) -> R<i64> {
        let quoted = self.eat(b'"');
        let text = String::from_utf8_lossy(self.take(|c| c.is_ascii_alphanumeric() || c == b'-'))
            .into_owned();
        if quoted {
            self.expect(b'"')?;
        }
        parse_date(&text).ok_or_else(|| ParseError::Bad(format!("{text:?} is not a date")))
    }

    fn parenthesized<T>(&mut self, mut item: impl FnMut(&mut Self) -> R<T>) -> R<Vec<T>> {
        self.expect(b'(')?;
        let mut out = Vec::new();
        if self.eat(b')') {
            return Ok(out);
        }
        loop {
            out.push(item(self)?);
            if self.eat(b')') {
                return Ok(out);
            }
            self.sp()?;
        }
    }
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];

/// Days from 1970-01-01 to a civil date (proleptic Gregorian).
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

fn parse_date(s: &str) -> Option<i64> {
    let mut it = s.split('-');
    let d: i64 = it.next()?.parse().ok()?;
    let m = it.next()?.to_ascii_lowercase();
    let y: i64 = it.next()?.parse().ok()?;
    if it.next().is_some() || !(1..=31).contains(&d) || !(1..=9999).contains(&y) {
        return None;
    }
    let m = MONTHS.iter().position(|x| *x == m)? as i64 + 1;
    Some(days_from_civil(y, m, d))
}

/// `"dd-Mon-yyyy hh:mm:ss +zzzz"` as Unix seconds.
fn parse_date_time(s: &str) -> Option<i64> {
    let s = s.trim_start();
    let (date, rest) = s.split_once(' ')?;
    let (time, zone) = rest.split_once(' ')?;
    let days = parse_date(date)?;
    let t: Vec<i64> = time
        .split(':')
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    if t.len() != 3 || t[0] > 23 || t[1] > 59 || t[2] > 60 {
        return None;
    }
    let sign = match zone.as_bytes().first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let z: i64 = zone.get(1..5)?.parse().ok()?;
    let offset = sign * ((z / 100) * 3600 + (z % 100) * 60);
    Some(days * 86400 + t[0] * 3600 + t[1] * 60 + t[2] - offset)
}

fn section(p: &mut P) -> R<Section> {
    p.expect(b'[')?;
    let mut s = Section::default();
    if p.eat(b']') {
        return Ok(s);
    }
    loop {
        if p.peek().is_some_and(|c| c.is_ascii_digit()) {
            s.part.push(p.nz_number()?);
            if p.eat(b'.') {
                continue;
            }
            break;
        }
        let word = p.atom()?.to_ascii_uppercase();
        s.text = Some(match word.as_str() {
            "HEADER" => SectionText::Header,
            "TEXT" => SectionText::Text,
            "MIME" if !s.part.is_empty() => SectionText::Mime,
            "HEADER.FIELDS" | "HEADER.FIELDS.NOT" => {
                p.sp()?;
                let fields = p.parenthesized(|p| p.astring())?;
                if fields.is_empty() {
                    return bad("empty header field list");
                }
                SectionText::HeaderFields {
                    not: word.ends_with(".NOT"),
                    fields,
                }
            }
            _ => return bad(format!("unknown section {word:?}")),
        });
        break;
    }
    p.expect(b']')?;
    Ok(s)
}

fn partial(p: &mut P) -> R<Option<(u32, u32)>> {
    if !p.eat(b'<') {
        return Ok(None);
    }
    let start = p.number()?;
    p.expect(b'.')?;
    let len = p.nz_number()?;
    p.expect(b'>')?;
    Ok(Some((start.min(u32::MAX as u64) as u32, len)))
}

fn fetch_att(p: &mut P) -> R<FetchAtt> {
    let word = p.take(|c| c.is_ascii_alphanumeric() || c == b'.' || c == b'-');
    let word = String::from_utf8_lossy(word).to_ascii_uppercase();
    Ok(match word.as_str() {
        "FLAGS" => FetchAtt::Flags,
        "INTERNALDATE" => FetchAtt::InternalDate,
        "RFC822.SIZE" => FetchAtt::Rfc822Size,
        "ENVELOPE" => FetchAtt::Envelope,
        "BODYSTRUCTURE" => FetchAtt::BodyStructure,
        "UID" => FetchAtt::Uid,
        "MODSEQ" => FetchAtt::ModSeq,
        "RFC822" => FetchAtt::Rfc822,
        "RFC822.HEADER" => FetchAtt::Rfc822Header,
        "RFC822.TEXT" => FetchAtt::Rfc822Text,
        "BODY" | "BODY.PEEK" => {
            if p.peek() != Some(b'[') {
                if word == "BODY" {
                    return Ok(FetchAtt::Body);
                }
                return bad("BODY.PEEK without a section");
            }
            let section = section(p)?;
            FetchAtt::Section {
                peek: word == "BODY.PEEK",
                section,
                partial: partial(p)?,
            }
        }
        "BINARY" | "BINARY.PEEK" | "BINARY.SIZE" => {
            let s = section(p)?;
            if s.text.is_some() {
                return bad("BINARY takes a part number only");
            }
            if word == "BINARY.SIZE" {
                FetchAtt::BinarySize(s.part)
            } else {
                FetchAtt::Binary {
                    peek: word == "BINARY.PEEK",
                    part: s.part,
                    partial: partial(p)?,
                }
            }
        }
        _ => return bad(format!("unknown fetch item {word:?}")),
    })
}

fn fetch_atts(p: &mut P) -> R<Vec<FetchAtt>> {
    if p.peek() == Some(b'(') {
        return p.parenthesized(fetch_att);
    }
    let save = p.i;
    let word = p.atom()?.to_ascii_uppercase();
    let macro_items = match word.as_str() {
        "ALL" => vec![
            FetchAtt::Flags,
            FetchAtt::InternalDate,
            FetchAtt::Rfc822Size,
            FetchAtt::Envelope,
        ],
        "FAST" => vec![
            FetchAtt::Flags,
            FetchAtt::InternalDate,
            FetchAtt::Rfc822Size,
        ],
        "FULL" => vec![
            FetchAtt::Flags,
            FetchAtt::InternalDate,
            FetchAtt::Rfc822Size,
            FetchAtt::Envelope,
            FetchAtt::Body,
        ],
        _ => {
            p.i = save;
            return Ok(vec![fetch_att(p)?]);
        }
    };
    Ok(macro_items)
}

fn search_key(p: &mut P, depth: usize) -> R<SearchKey> {
    if depth > 64 {
        return bad("search keys nested too deeply");
    }
    if p.peek() == Some(b'(') {
        p.i += 1;
        let mut keys = vec![search_key(p, depth + 1)?];
        while !p.eat(b')') {
            p.sp()?;
            keys.push(search_key(p, depth + 1)?);
        }
        return Ok(SearchKey::And(keys));
    }
    if p.peek()
        .is_some_and(|c| c.is_ascii_digit() || c == b'*' || c == b'$')
    {
        return Ok(SearchKey::Seq(p.seq_set()?));
    }
    let word = p.atom()?.to_ascii_uppercase();
    let flag = |name: &str, set: bool| Ok(SearchKey::Flag(name.to_string(), set));
    macro_rules! arg {
        () => {{
            p.sp()?;
            p.astring()?
        }};
    }
    match word.as_str() {
        "ALL" => Ok(SearchKey::All),
        "ANSWERED" => flag("\\Answered", true),
        "DELETED" => flag("\\Deleted", true),
        "DRAFT" => flag("\\Draft", true),
        "FLAGGED" => flag("\\Flagged", true),
        "SEEN" => flag("\\Seen", true),
        "UNANSWERED" => flag("\\Answered", false),
        "UNDELETED" => flag("\\Deleted", false),
        "UNDRAFT" => flag("\\Draft", false),
        "UNFLAGGED" => flag("\\Flagged", false),
        "UNSEEN" => flag("\\Seen", false),
        "KEYWORD" | "UNKEYWORD" => {
            p.sp()?;
            let k = p.flag()?;
            Ok(SearchKey::Flag(k, word == "KEYWORD"))
        }
        "NEW" => Ok(SearchKey::New),
        "OLD" => Ok(SearchKey::Old),
        "RECENT" => Ok(SearchKey::Recent),
        "LARGER" | "SMALLER" => {
            p.sp()?;
            let n = p.number()?;
            Ok(if word == "LARGER" {
                SearchKey::Larger(n)
            } else {
                SearchKey::Smaller(n)
            })
        }
        "BEFORE" | "ON" | "SINCE" | "SENTBEFORE" | "SENTON" | "SENTSINCE" => {
            p.sp()?;
            let d = p.date()?;
            Ok(match word.as_str() {
                "BEFORE" => SearchKey::Before(d),
                "ON" => SearchKey::On(d),
                "SINCE" => SearchKey::Since(d),
                "SENTBEFORE" => SearchKey::SentBefore(d),
                "SENTON" => SearchKey::SentOn(d),
                _ => SearchKey::SentSince(d),
            })
        }
        "BCC" | "CC" | "FROM" | "SUBJECT" | "TO" => {
            let v = arg!();
            Ok(SearchKey::Header(word.to_string(), v))
        }
        "HEADER" => {
            let name = arg!();
            let v = arg!();
            Ok(SearchKey::Header(name, v))
        }
        "BODY" => Ok(SearchKey::Body(arg!())),
        "TEXT" => Ok(SearchKey::Text(arg!())),
        "NOT" => {
            p.sp()?;
            Ok(SearchKey::Not(Box::new(search_key(p, depth + 1)?)))
        }
        "OR" => {
            p.sp()?;
            let a = search_key(p, depth + 1)?;
            p.sp()?;
            let b = search_key(p, depth + 1)?;
            Ok(SearchKey::Or(Box::new(a), Box::new(b)))
        }
        "UID" => {
            p.sp()?;
            Ok(SearchKey::Uid(p.seq_set()?))
        }
        "MODSEQ" => {
            p.sp()?;
            // MODSEQ [entry-name entry-type] mod-sequence
            if p.peek() == Some(b'"') {
                p.quoted()?;
                p.sp()?;
                p.atom()?;
                p.sp()?;
            }
            Ok(SearchKey::ModSeq(p.number()?))
        }
        "OLDER" | "YOUNGER" => {
            p.sp()?;
            let n = p.number()?;
            Ok(if word == "OLDER" {
                SearchKey::Older(n)
            } else {
                SearchKey::Younger(n)
            })
        }
        _ => bad(format!("unknown search key {word:?}")),
    }
}

/// `[CHARSET x] key *(SP key)`: the keys of SEARCH, SORT and THREAD.
fn search_program(p: &mut P, charset_allowed: bool) -> R<SearchKey> {
    let save = p.i;
    if charset_allowed && let Ok(w) = p.atom() {
        if w.eq_ignore_ascii_case("CHARSET") {
            p.sp()?;
            let cs = p.astring()?;
            if !cs.eq_ignore_ascii_case("UTF-8") && !cs.eq_ignore_ascii_case("US-ASCII") {
                return Err(ParseError::BadCharset);
            }
            p.sp()?;
        } else {
            p.i = save;
        }
    }
    let mut keys = vec![search_key(p, 0)?];
    while p.eat(b' ') {
        keys.push(search_key(p, 0)?);
    }
    Ok(if keys.len() == 1 {
        keys.remove(0)
    } else {
        SearchKey::And(keys)
    })
}

fn status_item(p: &mut P) -> R<StatusItem> {
    let w = p.atom()?.to_ascii_uppercase();
    Ok(match w.as_str() {
        "MESSAGES" => StatusItem::Messages,
        "RECENT" => StatusItem::Recent,
        "UIDNEXT" => StatusItem::UidNext,
        "UIDVALIDITY" => StatusItem::UidValidity,
        "UNSEEN" => StatusItem::Unseen,
        "DELETED" => StatusItem::Deleted,
        "SIZE" => StatusItem::Size,
        "HIGHESTMODSEQ" => StatusItem::HighestModSeq,
        _ => return bad(format!("unknown status item {w:?}")),
    })
}

fn list_command(p: &mut P, lsub: bool) -> R<Command> {
    let mut options = ListOptions::default();
    p.sp()?;
    if !lsub && p.peek() == Some(b'(') {
        for o in p.parenthesized(|p| p.atom())? {
            match o.to_ascii_uppercase().as_str() {
                "SUBSCRIBED" => options.subscribed = true,
                "SPECIAL-USE" => options.special_use = true,
                "RECURSIVEMATCH" => options.recursive = true,
                "REMOTE" => {}
                other => return bad(format!("unknown LIST selection option {other:?}")),
            }
        }
        if options.recursive && !options.subscribed {
            return bad("RECURSIVEMATCH needs another selection option");
        }
        p.sp()?;
    }
    let reference = p.mailbox_or_empty()?;
    p.sp()?;
    let patterns = if !lsub && p.peek() == Some(b'(') {
        p.parenthesized(|p| p.list_mailbox())?
    } else {
        vec![p.list_mailbox()?]
    };
    if !lsub && p.eat(b' ') {
        let w = p.atom()?;
        if !w.eq_ignore_ascii_case("RETURN") {
            return bad("expected RETURN");
        }
        p.sp()?;
        p.expect(b'(')?;
        while !p.eat(b')') {
            p.eat(b' ');
            let o = p.atom()?.to_ascii_uppercase();
            match o.as_str() {
                "SUBSCRIBED" => options.return_subscribed = true,
                "CHILDREN" => options.return_children = true,
                "SPECIAL-USE" => options.return_special_use = true,
                "STATUS" => {
                    p.sp()?;
                    options.return_status = p.parenthesized(status_item)?;
                }
                other => return bad(format!("unknown LIST return option {other:?}")),
            }
        }
    }
    Ok(Command::List {
        reference,
        patterns,
        options,
        lsub,
    })
}

impl P<'_> {
    fn mailbox_or_empty(&mut self) -> R<String> {
        self.astring()
    }
}

fn select_params(p: &mut P) -> R<(bool, Option<Qresync>)> {
    let (mut condstore, mut qresync) = (false, None);
    if !p.eat(b' ') {
        return Ok((condstore, qresync));
    }
    p.expect(b'(')?;
    while !p.eat(b')') {
        p.eat(b' ');
        let w = p.atom()?.to_ascii_uppercase();
        match w.as_str() {
            "CONDSTORE" => condstore = true,
            "QRESYNC" => {
                p.sp()?;
                p.expect(b'(')?;
                let uidvalidity = p.nz_number()?;
                p.sp()?;
                let modseq = p.number()?;
                let mut known_uids = None;
                if p.eat(b' ') {
                    if p.peek() != Some(b'(') {
                        match p.seq_set()? {
                            SeqSet::Ranges(r) => known_uids = Some(r),
                            SeqSet::Saved => return bad("$ is not allowed here"),
                        }
                        p.eat(b' ');
                    }
                    if p.eat(b'(') {
                        // The sequence match data only helps servers without VANISHED memory; skipped.
                        p.take(|c| c != b')');
                        p.expect(b')')?;
                    }
                }
                p.expect(b')')?;
                qresync = Some(Qresync {
                    uidvalidity,
                    modseq,
                    known_uids,
                });
            }
            other => return bad(format!("unknown SELECT parameter {other:?}")),
        }
    }
    Ok((condstore, qresync))
}

fn append_command(p: &mut P) -> R<Command> {
    p.sp()?;
    let mailbox = p.mailbox()?;
    let mut messages = Vec::new();
    while p.eat(b' ') {
        let mut m = AppendMessage {
            flags: Vec::new(),
            date: None,
            body: Vec::new(),
        };
        if p.peek() == Some(b'(') {
            m.flags = p.flag_list()?;
            p.sp()?;
        }
        if p.peek() == Some(b'"') {
            let d = p.quoted()?;
            let d = String::from_utf8_lossy(&d).into_owned();
            m.date = Some(
                parse_date_time(&d)
                    .ok_or_else(|| ParseError::Bad(format!("{d:?} is not a date-time")))?,
            );
            p.sp()?;
        }
        if p.peek() == Some(b'~') || p.peek() == Some(b'{') {
            m.body = p.literal(true)?;
        } else {
            return bad("APPEND needs a literal");
        }
        messages.push(m);
    }
    if messages.is_empty() {
        return bad("APPEND needs a message");
    }
    Ok(Command::Append(mailbox, messages))
}

fn sort_keys(p: &mut P) -> R<Vec<(SortKey, bool)>> {
    p.expect(b'(')?;
    let mut out = Vec::new();
    let mut reverse = false;
    loop {
        let w = p.atom()?.to_ascii_uppercase();
        let key = match w.as_str() {
            "REVERSE" => {
                reverse = true;
                p.sp()?;
                continue;
            }
            "ARRIVAL" => SortKey::Arrival,
            "CC" => SortKey::Cc,
            "DATE" => SortKey::Date,
            "FROM" => SortKey::From,
            "SIZE" => SortKey::Size,
            "SUBJECT" => SortKey::Subject,
            "TO" => SortKey::To,
            "DISPLAYFROM" => SortKey::DisplayFrom,
            "DISPLAYTO" => SortKey::DisplayTo,
            _ => return bad(format!("unknown sort key {w:?}")),
        };
        out.push((key, reverse));
        reverse = false;
        if p.eat(b')') {
            return Ok(out);
        }
        p.sp()?;
    }
}

fn charset(p: &mut P) -> R<()> {
    let cs = p.astring()?;
    if !cs.eq_ignore_ascii_case("UTF-8") && !cs.eq_ignore_ascii_case("US-ASCII") {
        return Err(ParseError::BadCharset);
    }
    Ok(())
}

fn uid_command(p: &mut P) -> R<Command> {
    p.sp()?;
    let w = p.atom()?.to_ascii_uppercase();
    match w.as_str() {
        "FETCH" | "STORE" | "COPY" | "MOVE" | "SEARCH" | "SORT" | "THREAD" | "EXPUNGE" => {
            command_body(p, &w, true)
        }
        _ => bad(format!("UID {w} is not a command")),
    }
}

fn command_body(p: &mut P, name: &str, uid: bool) -> R<Command> {
    let end = |p: &mut P, c: Command| {
        if p.at_end() {
            Ok(c)
        } else {
            bad(format!("unexpected text at octet {}", p.i))
        }
    };
    match name {
        "CAPABILITY" => end(p, Command::Capability),
        "NOOP" => end(p, Command::Noop),
        "LOGOUT" => end(p, Command::Logout),
        "STARTTLS" => end(p, Command::StartTls),
        "CHECK" => end(p, Command::Check),
        "CLOSE" => end(p, Command::Close),
        "UNSELECT" => end(p, Command::Unselect),
        "IDLE" => end(p, Command::Idle),
        "NAMESPACE" => end(p, Command::Namespace),
        "ID" => {
            p.sp()?;
            // The client's parameters are only logged by some servers; accepted and not kept.
            if p.peek() == Some(b'(') {
                p.parenthesized(|p| {
                    if p.peek() == Some(b'N') || p.peek() == Some(b'n') {
                        p.atom()?;
                        Ok(())
                    } else {
                        p.string().map(|_| ())
                    }
                })?;
            } else {
                p.atom()?;
            }
            end(p, Command::Id)
        }
        "LOGIN" => {
            p.sp()?;
            let user = p.astring()?;
            p.sp()?;
            let password = p.astring()?;
            end(p, Command::Login { user, password })
        }
        "AUTHENTICATE" => {
            p.sp()?;
            let mechanism = p.atom()?;
            let initial = if p.eat(b' ') {
                Some(String::from_utf8_lossy(p.take(|c| c != b' ')).into_owned())
            } else {
                None
            };
            end(p, Command::Authenticate { mechanism, initial })
        }
        "ENABLE" => {
            let mut caps = Vec::new();
            while p.eat(b' ') {
                caps.push(p.atom()?.to_ascii_uppercase());
            }
            if caps.is_empty() {
                return bad("ENABLE needs a capability");
            }
            end(p, Command::Enable(caps))
        }
        "SELECT" | "EXAMINE" => {
            p.sp()?;
            let mailbox = p.mailbox()?;
            let (condstore, qresync) = select_params(p)?;
            end(
                p,
                Command::Select {
                    mailbox,
                    examine: name == "EXAMINE",
                    condstore,
                    qresync,
                },
            )
        }
        "CREATE" | "DELETE" | "SUBSCRIBE" | "UNSUBSCRIBE" | "GETQUOTAROOT" => {
            p.sp()?;
            let m = p.mailbox()?;
            if name == "CREATE" && p.eat(b' ') {
                // CREATE-SPECIAL-USE parameters are not offered.
                return bad("CREATE parameters are not supported");
            }
            end(
                p,
                match name {
                    "CREATE" => Command::Create(m),
                    "DELETE" => Command::Delete(m),
                    "SUBSCRIBE" => Command::Subscribe(m, true),
                    "UNSUBSCRIBE" => Command::Subscribe(m, false),
                    _ => Command::GetQuotaRoot(m),
                },
            )
        }
        "GETQUOTA" => {
            p.sp()?;
            let root = p.astring()?;
            end(p, Command::GetQuota(root))
        }
        "SETQUOTA" => {
            p.take(|_| true);
            Ok(Command::SetQuota)
        }
        "RENAME" => {
            p.sp()?;
            let a = p.mailbox()?;
            p.sp()?;
            let b = p.mailbox()?;
            end(p, Command::Rename(a, b))
        }
        "LIST" | "LSUB" => {
            let c = list_command(p, name == "LSUB")?;
            end(p, c)
        }
        "STATUS" => {
            p.sp()?;
            let m = p.mailbox()?;
            p.sp()?;
            let items = p.parenthesized(status_item)?;
            if items.is_empty() {
                return bad("STATUS needs an item");
            }
            end(p, Command::Status(m, items))
        }
        "APPEND" => {
            let c = append_command(p)?;
            end(p, c)
        }
        "EXPUNGE" => {
            if uid {
                p.sp()?;
                let set = p.seq_set()?;
                return end(p, Command::Expunge(Some(set)));
            }
            end(p, Command::Expunge(None))
        }
        "SEARCH" => {
            p.sp()?;
            let mut ret = None;
            let save = p.i;
            if p.atom().is_ok_and(|w| w.eq_ignore_ascii_case("RETURN")) {
                p.sp()?;
                let opts = p.parenthesized(|p| {
                    let w = p.atom()?.to_ascii_uppercase();
                    Ok(match w.as_str() {
                        "MIN" => SearchReturn::Min,
                        "MAX" => SearchReturn::Max,
                        "ALL" => SearchReturn::All,
                        "COUNT" => SearchReturn::Count,
                        "SAVE" => SearchReturn::Save,
                        _ => return bad(format!("unknown search return option {w:?}")),
                    })
                })?;
                ret = Some(opts);
                p.sp()?;
            } else {
                p.i = save;
            }
            let key = search_program(p, true)?;
            end(p, Command::Search { uid, ret, key })
        }
        "SORT" => {
            p.sp()?;
            let keys = sort_keys(p)?;
            p.sp()?;
            charset(p)?;
            p.sp()?;
            let key = search_program(p, false)?;
            end(p, Command::Sort { uid, keys, key })
        }
        "THREAD" => {
            p.sp()?;
            let alg = p.atom()?.to_ascii_uppercase();
            let references = match alg.as_str() {
                "REFERENCES" => true,
                "ORDEREDSUBJECT" => false,
                _ => return bad(format!("unknown thread algorithm {alg:?}")),
            };
            p.sp()?;
            charset(p)?;
            p.sp()?;
            let key = search_program(p, false)?;
            end(
                p,
                Command::Thread {
                    uid,
                    references,
                    key,
                },
            )
        }
        "FETCH" => {
            p.sp()?;
            let set = p.seq_set()?;
            p.sp()?;
            let items = fetch_atts(p)?;
            let (mut changed_since, mut vanished) = (None, false);
            if p.eat(b' ') {
                let mods = p.parenthesized(|p| {
                    let w = p.atom()?.to_ascii_uppercase();
                    match w.as_str() {
                        "CHANGEDSINCE" => {
                            p.sp()?;
                            Ok((Some(p.number()?), false))
                        }
                        "VANISHED" => Ok((None, true)),
                        _ => bad(format!("unknown FETCH modifier {w:?}")),
                    }
                })?;
                for (c, v) in mods {
                    changed_since = changed_since.or(c);
                    vanished |= v;
                }
                if vanished && (!uid || changed_since.is_none()) {
                    return bad("VANISHED needs UID FETCH with CHANGEDSINCE");
                }
            }
            end(
                p,
                Command::Fetch {
                    uid,
                    set,
                    items,
                    changed_since,
                    vanished,
                },
            )
        }
        "STORE" => {
            p.sp()?;
            let set = p.seq_set()?;
            p.sp()?;
            let mut unchanged_since = None;
            if p.peek() == Some(b'(') {
                let mods = p.parenthesized(|p| {
                    let w = p.atom()?;
                    if !w.eq_ignore_ascii_case("UNCHANGEDSINCE") {
                        return bad(format!("unknown STORE modifier {w:?}"));
                    }
                    p.sp()?;
                    p.number()
                })?;
                unchanged_since = mods.first().copied();
                p.sp()?;
            }
            let w = p.atom()?.to_ascii_uppercase();
            let (op, silent) = match w.as_str() {
                "FLAGS" => (StoreOp::Replace, false),
                "FLAGS.SILENT" => (StoreOp::Replace, true),
                "+FLAGS" => (StoreOp::Add, false),
                "+FLAGS.SILENT" => (StoreOp::Add, true),
                "-FLAGS" => (StoreOp::Remove, false),
                "-FLAGS.SILENT" => (StoreOp::Remove, true),
                _ => return bad(format!("unknown STORE item {w:?}")),
            };
            p.sp()?;
            let flags = if p.peek() == Some(b'(') {
                p.flag_list()?
            } else {
                let mut f = vec![p.flag()?];
                while p.eat(b' ') {
                    f.push(p.flag()?);
                }
                f
            };
            end(
                p,
                Command::Store {
                    uid,
                    set,
                    op,
                    silent,
                    flags,
                    unchanged_since,
                },
            )
        }
        "COPY" | "MOVE" => {
            p.sp()?;
            let set = p.seq_set()?;
            p.sp()?;
            let mailbox = p.mailbox()?;
            end(
                p,
                Command::Copy {
                    uid,
                    set,
                    mailbox,
                    moving: name == "MOVE",
                },
            )
        }
        "UID" if !uid => uid_command(p),
        _ => Err(ParseError::Unknown(name.to_string())),
    }
}

/// Parses one complete command (without its final CRLF).
pub fn command(raw: &[u8]) -> Result<Tagged, (Option<String>, ParseError)> {
    let mut p = P { b: raw, i: 0 };
    let tag = match p.atom() {
        Ok(t) if !t.contains('+') => t,
        _ => return Err((None, ParseError::Bad("missing or invalid tag".into()))),
    };
    let command = (|| {
        p.sp()?;
        let name = p.atom()?.to_ascii_uppercase();
        command_body(&mut p, &name, false)
    })();
    match command {
        Ok(command) => Ok(Tagged { tag, command }),
        Err(e) => Err((Some(tag), e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> Command {
        command(s.as_bytes()).unwrap().command
    }

    #[test]
    fn commands_parse() {
        assert_eq!(
            ok("a LOGIN alice \"p a\\\"ss\""),
            Command::Login {
                user: "alice".into(),
                password: "p a\"ss".into()
            }
        );
        assert_eq!(
            ok("a login {5}\r\nalice {3+}\r\nxyz"),
            Command::Login {
                user: "alice".into(),
                password: "xyz".into()
            }
        );
        match ok(
            "a UID FETCH 1:*,7 (FLAGS BODY.PEEK[1.2.HEADER.FIELDS (From To)]<0.100>) (CHANGEDSINCE 5 VANISHED)",
        ) {
            Command::Fetch {
                uid: true,
                set: SeqSet::Ranges(r),
                items,
                changed_since: Some(5),
                vanished: true,
            } => {
                assert_eq!(r, vec![(1, STAR), (7, 7)]);
                assert_eq!(items.len(), 2);
                assert_eq!(
                    items[1],
                    FetchAtt::Section {
                        peek: true,
                        section: Section {
                            part: vec![1, 2],
                            text: Some(SectionText::HeaderFields {
                                not: false,
                                fields: vec!["From".into(), "To".into()]
                            })
                        },
                        partial: Some((0, 100))
                    }
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            ok(
                "a SEARCH RETURN (MIN COUNT) CHARSET UTF-8 OR SEEN (FROM \"bob\" LARGER 10) NOT 1:3"
            ),
            Command::Search {
                ret: Some(_),
                key: SearchKey::And(_),
                ..
            }
        ));
        assert!(matches!(
            ok("a SELECT INBOX (QRESYNC (67890007 20050715194045000 41,43:211,214:541))"),
            Command::Select {
                qresync: Some(Qresync {
                    uidvalidity: 67890007,
                    ..
                }),
                ..
            }
        ));
        assert!(matches!(
            ok(
                "a LIST (SUBSCRIBED) \"\" (INBOX \"Lists.*\") RETURN (CHILDREN STATUS (MESSAGES UNSEEN))"
            ),
            Command::List { .. }
        ));
        assert!(matches!(
            ok("a APPEND Drafts (\\Seen) \" 7-Feb-1994 21:52:25 -0800\" {3}\r\nabc"),
            Command::Append(..)
        ));
    }

    #[test]
    fn bad_commands_keep_their_tag() {
        for (s, tag) in [
            ("a FETCH", Some("a")),
            ("b FETCH 0 FLAGS", Some("b")),
            ("c LOGIN {10}\r\nab", Some("c")),
            ("* NOOP", None),
            ("d NOOP extra", Some("d")),
            ("e SEARCH CHARSET KOI8-R ALL", Some("e")),
            ("f SELECT \"a\nb\"", Some("f")),
            ("", None),
        ] {
            let (t, _) = command(s.as_bytes()).unwrap_err();
            assert_eq!(t.as_deref(), tag, "{s:?}");
        }
    }

    #[test]
    fn deep_search_nesting_is_refused() {
        let s = format!("a SEARCH {}ALL{}", "(".repeat(200), ")".repeat(200));
        assert!(command(s.as_bytes()).is_err());
        let s = format!("a SEARCH {}ALL", "NOT ".repeat(200));
        assert!(command(s.as_bytes()).is_err());
    }

    #[test]
    fn dates() {
        assert_eq!(parse_date("1-Jan-1970"), Some(0));
        assert_eq!(
            parse_date_time(" 7-Feb-1994 21:52:25 -0800"),
            Some(760686745)
        );
        assert_eq!(parse_date("31-Foo-2000"), None);
    }
}
