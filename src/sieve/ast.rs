//! A compiled Sieve script: typed commands and tests, every argument checked, strings with their variable
//! references already split out. What the interpreter runs; built once when a script is stored.

use super::lexer::Pos;

/// A string argument: pieces of literal text and variable references (RFC 5229 section 3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Str(pub Vec<Piece>);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Text(String),
    /// `${name}` (lower-cased; namespaced names keep their dots).
    Var(String),
    /// `${1}`: a match variable.
    Match(usize),
}

impl Str {
    pub fn literal(s: &str) -> Str {
        Str(vec![Piece::Text(s.to_string())])
    }

    /// The text when no variable is referenced.
    pub fn as_literal(&self) -> Option<&str> {
        match self.0.as_slice() {
            [] => Some(""),
            [Piece::Text(t)] => Some(t),
            _ => None,
        }
    }
}

pub type StrList = Vec<Str>;

#[derive(Debug, Clone, PartialEq)]
pub struct Program {
    pub commands: Vec<Command>,
    /// Extensions the script requires, for the log and for `include`'s checks.
    pub requires: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparator {
    Octet,
    AsciiCasemap,
    AsciiNumeric,
    UnicodeCasemap,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relation {
    Gt,
    Ge,
    Lt,
    Le,
    Eq,
    Ne,
}

#[derive(Debug, Clone, PartialEq)]
pub enum MatchType {
    Is,
    Contains,
    Matches,
    Regex,
    Value(Relation),
    Count(Relation),
}

/// Comparator and match type of a test that compares strings.
#[derive(Debug, Clone, PartialEq)]
pub struct Matcher {
    pub comparator: Comparator,
    pub match_type: MatchType,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressPart {
    All,
    LocalPart,
    Domain,
    /// RFC 5233: the part before the separator.
    User,
    /// RFC 5233: the part after it.
    Detail,
}

/// RFC 5260 section 4: `:index N [:last]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Index {
    pub n: usize,
    pub last: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum BodyTransform {
    Raw,
    Content(StrList),
    Text,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Zone {
    /// The local time zone of the server.
    Local,
    /// `:zone "+0100"`.
    Fixed(Str),
    /// `:originalzone`: the zone the Date field has.
    Original,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Test {
    True,
    False,
    Not(Box<Test>),
    AllOf(Vec<Test>),
    AnyOf(Vec<Test>),
    Address {
        matcher: Matcher,
        part: AddressPart,
        index: Option<Index>,
        headers: StrList,
        keys: StrList,
    },
    Envelope {
        matcher: Matcher,
        part: AddressPart,
        parts: StrList,
        keys: StrList,
    },
    Header {
        matcher: Matcher,
        index: Option<Index>,
        headers: StrList,
        keys: StrList,
    },
    Exists(StrList),
    Size {
        over: bool,
        limit: u64,
    },
    Body {
        matcher: Matcher,
        transform: BodyTransform,
        keys: StrList,
    },
    Date {
        matcher: Matcher,
        zone: Zone,
        index: Option<Index>,
        header: Str,
        part: Str,
        keys: StrList,
    },
    CurrentDate {
        matcher: Matcher,
        zone: Zone,
        part: Str,
        keys: StrList,
    },
    String {
        matcher: Matcher,
        sources: StrList,
        keys: StrList,
    },
    HasFlag {
        matcher: Matcher,
        variables: Option<StrList>,
        keys: StrList,
    },
    MailboxExists(StrList),
    SpecialUseExists {
        mailbox: Option<Str>,
        uses: StrList,
    },
    Duplicate {
        handle: Option<Str>,
        /// `:header NAME` or `:uniqueid VALUE`; Message-ID when neither.
        header: Option<Str>,
        unique_id: Option<Str>,
        seconds: Option<u64>,
        last: bool,
    },
    SpamTest {
        matcher: Matcher,
        percent: bool,
        value: Str,
    },
    VirusTest {
        matcher: Matcher,
        value: Str,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Modifier {
    Lower,
    Upper,
    LowerFirst,
    UpperFirst,
    QuoteWildcard,
    QuoteRegex,
    Length,
    EncodeUrl,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlagOp {
    Set,
    Add,
    Remove,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Vacation {
    /// Seconds between replies to one sender (`:days` × 86400, or `:seconds`).
    pub seconds: Option<u64>,
    pub subject: Option<Str>,
    pub from: Option<Str>,
    pub addresses: StrList,
    pub mime: bool,
    pub handle: Option<Str>,
    pub reason: Str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Location {
    Personal,
    Global,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    If {
        branches: Vec<(Test, Vec<Command>)>,
        otherwise: Option<Vec<Command>>,
    },
    Stop,
    Keep {
        flags: Option<StrList>,
    },
    Discard,
    FileInto {
        mailbox: Str,
        copy: bool,
        create: bool,
        flags: Option<StrList>,
        special_use: Option<Str>,
    },
    Redirect {
        address: Str,
        copy: bool,
        pos: Pos,
    },
    Reject {
        reason: Str,
        extended: bool,
    },
    Flags {
        op: FlagOp,
        variable: Option<Str>,
        flags: StrList,
    },
    Set {
        name: String,
        modifiers: Vec<Modifier>,
        value: Str,
    },
    Vacation(Box<Vacation>),
    Include {
        location: Location,
        name: Str,
        once: bool,
        optional: bool,
        pos: Pos,
    },
    Return,
    Global(Vec<String>),
    AddHeader {
        last: bool,
        name: Str,
        value: Str,
    },
    DeleteHeader {
        matcher: Matcher,
        index: Option<Index>,
        name: Str,
        values: Option<StrList>,
    },
}
