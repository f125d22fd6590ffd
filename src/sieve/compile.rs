//! From the generic grammar to a typed program: every command and test known, every tagged argument
//! checked against what the script requires, strings split into text and variable references.

use super::CompileError;
use super::ast::*;
use super::lexer::Pos;
use super::syntax::{self, Arg};
use std::collections::HashSet;

/// Every extension tern implements: what `require` accepts and what ManageSieve's SIEVE capability lists.
pub const EXTENSIONS: &[&str] = &[
    "fileinto",
    "reject",
    "ereject",
    "envelope",
    "encoded-character",
    "variables",
    "relational",
    "comparator-i;ascii-numeric",
    "subaddress",
    "copy",
    "imap4flags",
    "body",
    "vacation",
    "vacation-seconds",
    "date",
    "index",
    "mailbox",
    "include",
    "duplicate",
    "editheader",
    "regex",
    "spamtest",
    "spamtestplus",
    "virustest",
    "special-use",
];

/// Compiles a script, or says where and why it is wrong.
pub fn compile(source: &str) -> Result<Program, CompileError> {
    let tokens = super::lexer::tokens(source)?;
    let tree = syntax::parse(&tokens)?;
    let mut c = Compiler {
        required: HashSet::new(),
        requires: Vec::new(),
    };
    let mut body = tree.as_slice();
    // RFC 5228 section 3.2: require comes before any other command.
    while let Some((first, rest)) = body.split_first() {
        if first.name != "require" {
            break;
        }
        c.require(first)?;
        body = rest;
    }
    let commands = c.block(body, &mut Nest::default())?;
    Ok(Program {
        commands,
        requires: c.requires,
    })
}

struct Compiler {
    required: HashSet<String>,
    requires: Vec<String>,
}

/// Where a command stands, for the rules that depend on it (elsif after if).
#[derive(Default)]
struct Nest {
    depth: usize,
}

/// The arguments of one command or test, consumed from the front.
struct Cursor<'a> {
    args: &'a [Arg],
    at: usize,
    what: &'a str,
    pos: Pos,
}

impl<'a> Cursor<'a> {
    fn new(what: &'a str, pos: Pos, args: &'a [Arg]) -> Self {
        Cursor {
            args,
            at: 0,
            what,
            pos,
        }
    }

    fn peek_tag(&self) -> Option<(&'a str, Pos)> {
        match self.args.get(self.at) {
            Some(Arg::Tag(t, p)) => Some((t.as_str(), *p)),
            _ => None,
        }
    }

    fn here(&self) -> Pos {
        self.args.get(self.at).map_or(self.pos, Arg::pos)
    }

    fn number(&mut self, after: &str) -> Result<u64, CompileError> {
        match self.args.get(self.at) {
            Some(Arg::Number(n, _)) => {
                self.at += 1;
                Ok(*n)
            }
            _ => Err(CompileError::at(
                self.here(),
                format!("{after} needs a number after it"),
            )),
        }
    }

    fn raw_string(&mut self, what: &str) -> Result<(&'a str, Pos), CompileError> {
        match self.args.get(self.at) {
            Some(Arg::Strings {
                values,
                list: false,
                pos,
            }) => {
                self.at += 1;
                Ok((values[0].as_str(), *pos))
            }
            Some(Arg::Strings {
                values,
                list: true,
                pos,
            }) if values.len() == 1 => {
                self.at += 1;
                Ok((values[0].as_str(), *pos))
            }
            _ => Err(CompileError::at(
                self.here(),
                format!("{} needs a string for {what}", self.what),
            )),
        }
    }

    fn raw_list(&mut self, what: &str) -> Result<(&'a [String], Pos), CompileError> {
        match self.args.get(self.at) {
            Some(Arg::Strings { values, pos, .. }) => {
                self.at += 1;
                Ok((values.as_slice(), *pos))
            }
            _ => Err(CompileError::at(
                self.here(),
                format!("{} needs a string list for {what}", self.what),
            )),
        }
    }

    fn has_string(&self) -> bool {
        matches!(self.args.get(self.at), Some(Arg::Strings { .. }))
    }

    fn remaining(&self) -> usize {
        self.args.len() - self.at
    }

    fn done(&self) -> Result<(), CompileError> {
        match self.args.get(self.at) {
            None => Ok(()),
            Some(Arg::Tag(t, p)) => Err(CompileError::at(
                *p,
                format!("{} has no tagged argument \":{t}\" here", self.what),
            )),
            Some(a) => Err(CompileError::at(
                a.pos(),
                format!("{} has too many arguments", self.what),
            )),
        }
    }
}

/// The tagged arguments tests share: comparator, match type, address part, index.
#[derive(Default)]
struct Common {
    comparator: Option<Comparator>,
    match_type: Option<MatchType>,
    part: Option<AddressPart>,
    index: Option<usize>,
    last: bool,
    last_pos: Pos,
}

const MATCH: u8 = 1;
const PART: u8 = 2;
const INDEX: u8 = 4;

impl Compiler {
    fn require(&mut self, cmd: &syntax::Command) -> Result<(), CompileError> {
        let mut cur = Cursor::new("require", cmd.pos, &cmd.args);
        let (names, pos) = cur.raw_list("the extensions")?;
        cur.done()?;
        if !cmd.tests.is_empty() || cmd.block.is_some() {
            return Err(CompileError::at(cmd.pos, "require takes no test or block"));
        }
        for name in names {
            let lower = name.to_ascii_lowercase();
            if !EXTENSIONS.contains(&lower.as_str()) {
                return Err(CompileError::at(
                    pos,
                    format!("unsupported extension {name:?}"),
                ));
            }
            // vacation-seconds implies vacation (RFC 6131 section 2), spamtestplus spamtest (RFC 5235 3.2).
            let implied = match lower.as_str() {
                "vacation-seconds" => Some("vacation"),
                "spamtestplus" => Some("spamtest"),
                _ => None,
            };
            for ext in std::iter::once(lower.as_str()).chain(implied) {
                if self.required.insert(ext.to_string()) {
                    self.requires.push(ext.to_string());
                }
            }
        }
        Ok(())
    }

    fn has(&self, ext: &str) -> bool {
        self.required.contains(ext)
    }

    fn need(&self, ext: &str, pos: Pos, what: &str) -> Result<(), CompileError> {
        if self.has(ext) {
            Ok(())
        } else {
            Err(CompileError::at(
                pos,
                format!("{what} needs require \"{ext}\""),
            ))
        }
    }

    fn block(
        &mut self,
        commands: &[syntax::Command],
        nest: &mut Nest,
    ) -> Result<Vec<Command>, CompileError> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < commands.len() {
            let cmd = &commands[i];
            i += 1;
            match cmd.name.as_str() {
                "require" => {
                    return Err(CompileError::at(
                        cmd.pos,
                        "require must come before every other command",
                    ));
                }
                "if" => {
                    let mut branches = vec![self.branch(cmd, nest)?];
                    let mut otherwise = None;
                    while let Some(next) = commands.get(i) {
                        match next.name.as_str() {
                            "elsif" => {
                                branches.push(self.branch(next, nest)?);
                                i += 1;
                            }
                            "else" => {
                                if !next.args.is_empty() || !next.tests.is_empty() {
                                    return Err(CompileError::at(
                                        next.pos,
                                        "else takes no arguments or test",
                                    ));
                                }
                                let Some(body) = &next.block else {
                                    return Err(CompileError::at(next.pos, "else needs a block"));
                                };
                                nest.depth += 1;
                                otherwise = Some(self.block(body, nest)?);
                                nest.depth -= 1;
                                i += 1;
                                break;
                            }
                            _ => break,
                        }
                    }
                    out.push(Command::If {
                        branches,
                        otherwise,
                    });
                }
                "elsif" | "else" => {
                    return Err(CompileError::at(
                        cmd.pos,
                        format!("{} without a preceding if", cmd.name),
                    ));
                }
                _ => {
                    if cmd.block.is_some() {
                        return Err(CompileError::at(
                            cmd.pos,
                            format!("command {:?} takes no block", cmd.name),
                        ));
                    }
                    if !cmd.tests.is_empty() {
                        return Err(CompileError::at(
                            cmd.tests[0].pos,
                            format!("command {:?} takes no test", cmd.name),
                        ));
                    }
                    out.push(self.command(cmd)?);
                }
            }
        }
        Ok(out)
    }

    fn branch(
        &mut self,
        cmd: &syntax::Command,
        nest: &mut Nest,
    ) -> Result<(Test, Vec<Command>), CompileError> {
        if !cmd.args.is_empty() {
            return Err(CompileError::at(
                cmd.args[0].pos(),
                format!("{} takes a test, not arguments", cmd.name),
            ));
        }
        let [test] = cmd.tests.as_slice() else {
            return Err(CompileError::at(
                cmd.pos,
                format!("{} needs exactly one test", cmd.name),
            ));
        };
        let Some(body) = &cmd.block else {
            return Err(CompileError::at(
                cmd.pos,
                format!("{} needs a block", cmd.name),
            ));
        };
        let test = self.test(test)?;
        nest.depth += 1;
        let body = self.block(body, nest)?;
        nest.depth -= 1;
        Ok((test, body))
    }

    // ---- strings ----

    /// A string as the script's extensions read it: encoded characters decoded, variables split out.
    fn string(&self, s: &str, pos: Pos) -> Result<Str, CompileError> {
        let decoded;
        let s = if self.has("encoded-character") {
            decoded = super::strings::decode_encoded(s).map_err(|m| CompileError::at(pos, m))?;
            decoded.as_str()
        } else {
            s
        };
        Ok(if self.has("variables") {
            super::strings::template(s)
        } else {
            Str::literal(s)
        })
    }

    fn list(&self, values: &[String], pos: Pos) -> Result<StrList, CompileError> {
        values.iter().map(|v| self.string(v, pos)).collect()
    }

    fn str_arg(&self, cur: &mut Cursor, what: &str) -> Result<Str, CompileError> {
        let (s, pos) = cur.raw_string(what)?;
        self.string(s, pos)
    }

    fn list_arg(&self, cur: &mut Cursor, what: &str) -> Result<StrList, CompileError> {
        let (v, pos) = cur.raw_list(what)?;
        self.list(v, pos)
    }

    // ---- shared tagged arguments ----

    fn common_tag(
        &self,
        cur: &mut Cursor,
        common: &mut Common,
        allow: u8,
    ) -> Result<bool, CompileError> {
        let Some((tag, pos)) = cur.peek_tag() else {
            return Ok(false);
        };
        let twice = |what: &str| CompileError::at(pos, format!("{what} given twice"));
        match tag {
            "comparator" if allow & MATCH != 0 => {
                cur.at += 1;
                if common.comparator.is_some() {
                    return Err(twice("comparator"));
                }
                let (name, npos) = cur.raw_string("the comparator")?;
                let name = self.string(name, npos)?;
                let name = name.as_literal().ok_or_else(|| {
                    CompileError::at(npos, "the comparator name must be a constant")
                })?;
                common.comparator = Some(match name.to_ascii_lowercase().as_str() {
                    "i;octet" => Comparator::Octet,
                    "i;ascii-casemap" => Comparator::AsciiCasemap,
                    "i;ascii-numeric" => {
                        self.need(
                            "comparator-i;ascii-numeric",
                            npos,
                            "comparator \"i;ascii-numeric\"",
                        )?;
                        Comparator::AsciiNumeric
                    }
                    other => {
                        return Err(CompileError::at(
                            npos,
                            format!("unknown comparator {other:?}"),
                        ));
                    }
                });
            }
            "is" | "contains" | "matches" | "regex" | "value" | "count" if allow & MATCH != 0 => {
                cur.at += 1;
                if common.match_type.is_some() {
                    return Err(twice("match type"));
                }
                common.match_type = Some(match tag {
                    "is" => MatchType::Is,
                    "contains" => MatchType::Contains,
                    "matches" => MatchType::Matches,
                    "regex" => {
                        self.need("regex", pos, ":regex")?;
                        MatchType::Regex
                    }
                    _ => {
                        self.need("relational", pos, &format!(":{tag}"))?;
                        let (rel, rpos) = cur.raw_string("the relation")?;
                        let r = match rel.to_ascii_lowercase().as_str() {
                            "gt" => Relation::Gt,
                            "ge" => Relation::Ge,
                            "lt" => Relation::Lt,
                            "le" => Relation::Le,
                            "eq" => Relation::Eq,
                            "ne" => Relation::Ne,
                            other => {
                                return Err(CompileError::at(
                                    rpos,
                                    format!("unknown relation {other:?}"),
                                ));
                            }
                        };
                        if tag == "value" {
                            MatchType::Value(r)
                        } else {
                            MatchType::Count(r)
                        }
                    }
                });
            }
            "all" | "localpart" | "domain" | "user" | "detail" if allow & PART != 0 => {
                cur.at += 1;
                if common.part.is_some() {
                    return Err(twice("address part"));
                }
                common.part = Some(match tag {
                    "all" => AddressPart::All,
                    "localpart" => AddressPart::LocalPart,
                    "domain" => AddressPart::Domain,
                    "user" => {
                        self.need("subaddress", pos, ":user")?;
                        AddressPart::User
                    }
                    _ => {
                        self.need("subaddress", pos, ":detail")?;
                        AddressPart::Detail
                    }
                });
            }
            "index" if allow & INDEX != 0 => {
                self.need("index", pos, ":index")?;
                cur.at += 1;
                let n = cur.number(":index")?;
                if n == 0 {
                    return Err(CompileError::at(pos, ":index counts from 1"));
                }
                common.index = Some(usize::try_from(n).unwrap_or(usize::MAX));
            }
            "last" if allow & INDEX != 0 => {
                self.need("index", pos, ":last")?;
                cur.at += 1;
                common.last = true;
                common.last_pos = pos;
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    fn matcher(&self, common: &Common, pos: Pos) -> Result<Matcher, CompileError> {
        let comparator = common.comparator.unwrap_or(Comparator::AsciiCasemap);
        let match_type = common.match_type.clone().unwrap_or(MatchType::Is);
        if comparator == Comparator::AsciiNumeric
            && matches!(
                match_type,
                MatchType::Contains | MatchType::Matches | MatchType::Regex
            )
        {
            return Err(CompileError::at(
                pos,
                "comparator \"i;ascii-numeric\" only supports :is, :value and :count",
            ));
        }
        Ok(Matcher {
            comparator,
            match_type,
        })
    }

    fn index(&self, common: &Common) -> Result<Option<Index>, CompileError> {
        match (common.index, common.last) {
            (Some(n), last) => Ok(Some(Index { n, last })),
            (None, true) => Err(CompileError::at(common.last_pos, ":last needs :index")),
            (None, false) => Ok(None),
        }
    }

    /// Checks regex keys that are constants, so a bad pattern is a compile error, not a runtime one.
    fn check_keys(&self, m: &Matcher, keys: &StrList, pos: Pos) -> Result<(), CompileError> {
        if m.match_type == MatchType::Regex {
            for k in keys {
                if let Some(p) = k.as_literal() {
                    let key = (p.to_string(), m.comparator != Comparator::Octet);
                    super::matching::shared(&key, m.comparator)
                        .map_err(|e| CompileError::at(pos, e))?;
                }
            }
        }
        Ok(())
    }

    fn header_names(&self, list: &StrList, pos: Pos) -> Result<(), CompileError> {
        for name in list {
            if let Some(n) = name.as_literal()
                && !valid_field_name(n)
            {
                return Err(CompileError::at(
                    pos,
                    format!("{n:?} is not a header field name"),
                ));
            }
        }
        Ok(())
    }

    // ---- tests ----

    fn test(&mut self, t: &syntax::Test) -> Result<Test, CompileError> {
        let mut cur = Cursor::new(&t.name, t.pos, &t.args);
        let mut common = Common::default();
        let no_subtests = |t: &syntax::Test| -> Result<(), CompileError> {
            match t.tests.first() {
                Some(s) => Err(CompileError::at(
                    s.pos,
                    format!("test {:?} takes no nested test", t.name),
                )),
                None => Ok(()),
            }
        };
        let test = match t.name.as_str() {
            "true" | "false" => {
                cur.done()?;
                no_subtests(t)?;
                if t.name == "true" {
                    Test::True
                } else {
                    Test::False
                }
            }
            "not" => {
                cur.done()?;
                let [inner] = t.tests.as_slice() else {
                    return Err(CompileError::at(t.pos, "not needs exactly one test"));
                };
                Test::Not(Box::new(self.test(inner)?))
            }
            "allof" | "anyof" => {
                cur.done()?;
                if t.tests.is_empty() {
                    return Err(CompileError::at(
                        t.pos,
                        format!("{} needs a list of tests", t.name),
                    ));
                }
                let tests = t
                    .tests
                    .iter()
                    .map(|s| self.test(s))
                    .collect::<Result<Vec<_>, _>>()?;
                if t.name == "allof" {
                    Test::AllOf(tests)
                } else {
                    Test::AnyOf(tests)
                }
            }
            "address" => {
                no_subtests(t)?;
                while self.common_tag(&mut cur, &mut common, MATCH | PART | INDEX)? {}
                let hpos = cur.here();
                let headers = self.list_arg(&mut cur, "the header names")?;
                self.header_names(&headers, hpos)?;
                let keys = self.list_arg(&mut cur, "the keys")?;
                cur.done()?;
                let matcher = self.matcher(&common, t.pos)?;
                self.check_keys(&matcher, &keys, t.pos)?;
                Test::Address {
                    matcher,
                    part: common.part.unwrap_or(AddressPart::All),
                    index: self.index(&common)?,
                    headers,
                    keys,
                }
            }
            "envelope" => {
                self.need("envelope", t.pos, "test \"envelope\"")?;
                no_subtests(t)?;
                while self.common_tag(&mut cur, &mut common, MATCH | PART)? {}
                let ppos = cur.here();
                let parts = self.list_arg(&mut cur, "the envelope parts")?;
                for p in &parts {
                    if let Some(name) = p.as_literal()
                        && !matches!(name.to_ascii_lowercase().as_str(), "from" | "to")
                    {
                        return Err(CompileError::at(
                            ppos,
                            format!("unknown envelope part {name:?} (from or to)"),
                        ));
                    }
                }
                let keys = self.list_arg(&mut cur, "the keys")?;
                cur.done()?;
                let matcher = self.matcher(&common, t.pos)?;
                self.check_keys(&matcher, &keys, t.pos)?;
                Test::Envelope {
                    matcher,
                    part: common.part.unwrap_or(AddressPart::All),
                    parts,
                    keys,
                }
            }
            "header" => {
                no_subtests(t)?;
                while self.common_tag(&mut cur, &mut common, MATCH | INDEX)? {}
                let hpos = cur.here();
                let headers = self.list_arg(&mut cur, "the header names")?;
                self.header_names(&headers, hpos)?;
                let keys = self.list_arg(&mut cur, "the keys")?;
                cur.done()?;
                let matcher = self.matcher(&common, t.pos)?;
                self.check_keys(&matcher, &keys, t.pos)?;
                Test::Header {
                    matcher,
                    index: self.index(&common)?,
                    headers,
                    keys,
                }
            }
            "exists" => {
                no_subtests(t)?;
                let hpos = cur.here();
                let names = self.list_arg(&mut cur, "the header names")?;
                self.header_names(&names, hpos)?;
                cur.done()?;
                Test::Exists(names)
            }
            "size" => {
                no_subtests(t)?;
                let over = match cur.peek_tag() {
                    Some(("over", _)) => true,
                    Some(("under", _)) => false,
                    _ => {
                        return Err(CompileError::at(t.pos, "size needs :over or :under"));
                    }
                };
                cur.at += 1;
                let limit = cur.number(if over { ":over" } else { ":under" })?;
                cur.done()?;
                Test::Size { over, limit }
            }
            "body" => {
                self.need("body", t.pos, "test \"body\"")?;
                no_subtests(t)?;
                let mut transform = None;
                loop {
                    if self.common_tag(&mut cur, &mut common, MATCH)? {
                        continue;
                    }
                    match cur.peek_tag() {
                        Some((tag @ ("raw" | "content" | "text"), pos)) => {
                            if transform.is_some() {
                                return Err(CompileError::at(pos, "body transform given twice"));
                            }
                            cur.at += 1;
                            transform = Some(match tag {
                                "raw" => BodyTransform::Raw,
                                "text" => BodyTransform::Text,
                                _ => BodyTransform::Content(
                                    self.list_arg(&mut cur, "the content types")?,
                                ),
                            });
                        }
                        _ => break,
                    }
                }
                let keys = self.list_arg(&mut cur, "the keys")?;
                cur.done()?;
                let matcher = self.matcher(&common, t.pos)?;
                self.check_keys(&matcher, &keys, t.pos)?;
                Test::Body {
                    matcher,
                    transform: transform.unwrap_or(BodyTransform::Text),
                    keys,
                }
            }
            "date" | "currentdate" => {
                self.need("date", t.pos, &format!("test {:?}", t.name))?;
                no_subtests(t)?;
                let mut zone = Zone::Local;
                let mut zone_set = false;
                let allow = if t.name == "date" {
                    MATCH | INDEX
                } else {
                    MATCH
                };
                loop {
                    if self.common_tag(&mut cur, &mut common, allow)? {
                        continue;
                    }
                    match cur.peek_tag() {
                        Some(("zone", pos)) => {
                            if zone_set {
                                return Err(CompileError::at(pos, "zone given twice"));
                            }
                            cur.at += 1;
                            zone = Zone::Fixed(self.str_arg(&mut cur, ":zone")?);
                            zone_set = true;
                        }
                        Some(("originalzone", pos)) if t.name == "date" => {
                            if zone_set {
                                return Err(CompileError::at(pos, "zone given twice"));
                            }
                            cur.at += 1;
                            zone = Zone::Original;
                            zone_set = true;
                        }
                        _ => break,
                    }
                }
                let header = if t.name == "date" {
                    let hpos = cur.here();
                    let h = self.str_arg(&mut cur, "the header name")?;
                    self.header_names(&vec![h.clone()], hpos)?;
                    Some(h)
                } else {
                    None
                };
                let ppos = cur.here();
                let part = self.str_arg(&mut cur, "the date part")?;
                if let Some(p) = part.as_literal()
                    && !super::date::PARTS.contains(&p.to_ascii_lowercase().as_str())
                {
                    return Err(CompileError::at(ppos, format!("unknown date part {p:?}")));
                }
                let keys = self.list_arg(&mut cur, "the keys")?;
                cur.done()?;
                let matcher = self.matcher(&common, t.pos)?;
                self.check_keys(&matcher, &keys, t.pos)?;
                match header {
                    Some(header) => Test::Date {
                        matcher,
                        zone,
                        index: self.index(&common)?,
                        header,
                        part,
                        keys,
                    },
                    None => Test::CurrentDate {
                        matcher,
                        zone,
                        part,
                        keys,
                    },
                }
            }
            "string" => {
                self.need("variables", t.pos, "test \"string\"")?;
                no_subtests(t)?;
                while self.common_tag(&mut cur, &mut common, MATCH)? {}
                let sources = self.list_arg(&mut cur, "the source strings")?;
                let keys = self.list_arg(&mut cur, "the keys")?;
                cur.done()?;
                let matcher = self.matcher(&common, t.pos)?;
                self.check_keys(&matcher, &keys, t.pos)?;
                Test::String {
                    matcher,
                    sources,
                    keys,
                }
            }
            "hasflag" => {
                self.need("imap4flags", t.pos, "test \"hasflag\"")?;
                no_subtests(t)?;
                while self.common_tag(&mut cur, &mut common, MATCH)? {}
                let first = self.list_arg(&mut cur, "the flags")?;
                let (variables, keys) = if cur.has_string() {
                    if !self.has("variables") {
                        return Err(CompileError::at(
                            t.pos,
                            "hasflag with variable names needs require \"variables\"",
                        ));
                    }
                    (Some(first), self.list_arg(&mut cur, "the flags")?)
                } else {
                    (None, first)
                };
                cur.done()?;
                Test::HasFlag {
                    matcher: self.matcher(&common, t.pos)?,
                    variables,
                    keys,
                }
            }
            "mailboxexists" => {
                self.need("mailbox", t.pos, "test \"mailboxexists\"")?;
                no_subtests(t)?;
                let names = self.list_arg(&mut cur, "the mailbox names")?;
                cur.done()?;
                Test::MailboxExists(names)
            }
            "specialuse_exists" => {
                self.need("special-use", t.pos, "test \"specialuse_exists\"")?;
                no_subtests(t)?;
                let first = self.list_arg(&mut cur, "the special-use flags")?;
                let (mailbox, uses) = if cur.has_string() {
                    let mut first = first;
                    if first.len() != 1 {
                        return Err(CompileError::at(
                            t.pos,
                            "specialuse_exists takes one mailbox name",
                        ));
                    }
                    (
                        first.pop(),
                        self.list_arg(&mut cur, "the special-use flags")?,
                    )
                } else {
                    (None, first)
                };
                cur.done()?;
                Test::SpecialUseExists { mailbox, uses }
            }
            "duplicate" => {
                self.need("duplicate", t.pos, "test \"duplicate\"")?;
                no_subtests(t)?;
                let (mut handle, mut header, mut unique_id, mut seconds, mut last) =
                    (None, None, None, None, false);
                while let Some((tag, pos)) = cur.peek_tag() {
                    cur.at += 1;
                    match tag {
                        "handle" => handle = Some(self.str_arg(&mut cur, ":handle")?),
                        "header" if unique_id.is_none() => {
                            header = Some(self.str_arg(&mut cur, ":header")?)
                        }
                        "uniqueid" if header.is_none() => {
                            unique_id = Some(self.str_arg(&mut cur, ":uniqueid")?)
                        }
                        "seconds" => seconds = Some(cur.number(":seconds")?),
                        "last" => last = true,
                        _ => {
                            return Err(CompileError::at(
                                pos,
                                format!("duplicate has no tagged argument \":{tag}\" here"),
                            ));
                        }
                    }
                }
                cur.done()?;
                Test::Duplicate {
                    handle,
                    header,
                    unique_id,
                    seconds,
                    last,
                }
            }
            "spamtest" | "virustest" => {
                self.need(&t.name, t.pos, &format!("test {:?}", t.name))?;
                no_subtests(t)?;
                let mut percent = false;
                loop {
                    if self.common_tag(&mut cur, &mut common, MATCH)? {
                        continue;
                    }
                    match cur.peek_tag() {
                        Some(("percent", pos)) if t.name == "spamtest" => {
                            self.need("spamtestplus", pos, ":percent")?;
                            cur.at += 1;
                            percent = true;
                        }
                        _ => break,
                    }
                }
                let value = self.str_arg(&mut cur, "the value")?;
                cur.done()?;
                // RFC 5235 section 3.1: the comparator defaults to i;ascii-numeric here.
                if common.comparator.is_none() {
                    common.comparator = Some(Comparator::AsciiNumeric);
                }
                let matcher = self.matcher(&common, t.pos)?;
                if t.name == "spamtest" {
                    Test::SpamTest {
                        matcher,
                        percent,
                        value,
                    }
                } else {
                    Test::VirusTest { matcher, value }
                }
            }
            other => {
                return Err(CompileError::at(t.pos, format!("unknown test {other:?}")));
            }
        };
        Ok(test)
    }

    // ---- commands ----

    fn flags_tag(&self, cur: &mut Cursor, pos: Pos) -> Result<StrList, CompileError> {
        self.need("imap4flags", pos, ":flags")?;
        cur.at += 1;
        self.list_arg(cur, ":flags")
    }

    fn command(&mut self, cmd: &syntax::Command) -> Result<Command, CompileError> {
        let mut cur = Cursor::new(&cmd.name, cmd.pos, &cmd.args);
        let c = match cmd.name.as_str() {
            "stop" => {
                cur.done()?;
                Command::Stop
            }
            "keep" => {
                let mut flags = None;
                if let Some(("flags", pos)) = cur.peek_tag() {
                    flags = Some(self.flags_tag(&mut cur, pos)?);
                }
                cur.done()?;
                Command::Keep { flags }
            }
            "discard" => {
                cur.done()?;
                Command::Discard
            }
            "fileinto" => {
                self.need("fileinto", cmd.pos, "command \"fileinto\"")?;
                let (mut copy, mut create, mut flags, mut special_use) = (false, false, None, None);
                while let Some((tag, pos)) = cur.peek_tag() {
                    match tag {
                        "copy" => {
                            self.need("copy", pos, ":copy")?;
                            cur.at += 1;
                            copy = true;
                        }
                        "create" => {
                            self.need("mailbox", pos, ":create")?;
                            cur.at += 1;
                            create = true;
                        }
                        "flags" => flags = Some(self.flags_tag(&mut cur, pos)?),
                        "specialuse" => {
                            self.need("special-use", pos, ":specialuse")?;
                            cur.at += 1;
                            special_use = Some(self.str_arg(&mut cur, ":specialuse")?);
                        }
                        _ => break,
                    }
                }
                let mailbox = self.str_arg(&mut cur, "the mailbox")?;
                cur.done()?;
                Command::FileInto {
                    mailbox,
                    copy,
                    create,
                    flags,
                    special_use,
                }
            }
            "redirect" => {
                let mut copy = false;
                if let Some(("copy", pos)) = cur.peek_tag() {
                    self.need("copy", pos, ":copy")?;
                    cur.at += 1;
                    copy = true;
                }
                let (raw, apos) = cur.raw_string("the address")?;
                let address = self.string(raw, apos)?;
                if let Some(a) = address.as_literal()
                    && super::interp::redirect_target(a).is_none()
                {
                    return Err(CompileError::at(
                        apos,
                        format!("{a:?} is not an address to redirect to"),
                    ));
                }
                cur.done()?;
                Command::Redirect {
                    address,
                    copy,
                    pos: cmd.pos,
                }
            }
            "reject" | "ereject" => {
                self.need(&cmd.name, cmd.pos, &format!("command {:?}", cmd.name))?;
                let reason = self.str_arg(&mut cur, "the reason")?;
                cur.done()?;
                Command::Reject {
                    reason,
                    extended: cmd.name == "ereject",
                }
            }
            "setflag" | "addflag" | "removeflag" => {
                self.need("imap4flags", cmd.pos, &format!("command {:?}", cmd.name))?;
                let op = match cmd.name.as_str() {
                    "setflag" => FlagOp::Set,
                    "addflag" => FlagOp::Add,
                    _ => FlagOp::Remove,
                };
                let variable = if cur.remaining() == 2 {
                    if !self.has("variables") {
                        return Err(CompileError::at(
                            cmd.pos,
                            format!(
                                "{} with a variable name needs require \"variables\"",
                                cmd.name
                            ),
                        ));
                    }
                    let (name, npos) = cur.raw_string("the variable name")?;
                    check_variable_name(name, npos)?;
                    Some(Str::literal(&name.to_ascii_lowercase()))
                } else {
                    None
                };
                let flags = self.list_arg(&mut cur, "the flags")?;
                cur.done()?;
                Command::Flags {
                    op,
                    variable,
                    flags,
                }
            }
            "set" => {
                self.need("variables", cmd.pos, "command \"set\"")?;
                let mut modifiers = Vec::new();
                while let Some((tag, pos)) = cur.peek_tag() {
                    let m = match tag {
                        "lower" => Modifier::Lower,
                        "upper" => Modifier::Upper,
                        "lowerfirst" => Modifier::LowerFirst,
                        "upperfirst" => Modifier::UpperFirst,
                        "quotewildcard" => Modifier::QuoteWildcard,
                        "quoteregex" => {
                            self.need("regex", pos, ":quoteregex")?;
                            Modifier::QuoteRegex
                        }
                        "length" => Modifier::Length,
                        "encodeurl" => {
                            return Err(CompileError::at(
                                pos,
                                ":encodeurl needs the \"enotify\" extension, which is not supported",
                            ));
                        }
                        _ => {
                            return Err(CompileError::at(
                                pos,
                                format!("set has no modifier \":{tag}\""),
                            ));
                        }
                    };
                    if modifiers.contains(&m) {
                        return Err(CompileError::at(
                            pos,
                            format!("modifier \":{tag}\" given twice"),
                        ));
                    }
                    cur.at += 1;
                    modifiers.push(m);
                }
                let (name, npos) = cur.raw_string("the variable name")?;
                check_variable_name(name, npos)?;
                let value = self.str_arg(&mut cur, "the value")?;
                cur.done()?;
                // RFC 5229 section 4.1: applied by precedence, highest first.
                modifiers.sort_by_key(|m| {
                    std::cmp::Reverse(match m {
                        Modifier::Lower | Modifier::Upper => 40,
                        Modifier::LowerFirst | Modifier::UpperFirst => 30,
                        Modifier::QuoteWildcard | Modifier::QuoteRegex => 20,
                        Modifier::EncodeUrl => 15,
                        Modifier::Length => 10,
                    })
                });
                Command::Set {
                    name: name.to_ascii_lowercase(),
                    modifiers,
                    value,
                }
            }
            "vacation" => {
                self.need("vacation", cmd.pos, "command \"vacation\"")?;
                let mut v = Vacation {
                    seconds: None,
                    subject: None,
                    from: None,
                    addresses: Vec::new(),
                    mime: false,
                    handle: None,
                    reason: Str::literal(""),
                };
                while let Some((tag, pos)) = cur.peek_tag() {
                    cur.at += 1;
                    match tag {
                        "days" if v.seconds.is_none() => {
                            v.seconds = Some(cur.number(":days")?.saturating_mul(86_400))
                        }
                        "seconds" if v.seconds.is_none() => {
                            self.need("vacation-seconds", pos, ":seconds")?;
                            v.seconds = Some(cur.number(":seconds")?);
                        }
                        "subject" => v.subject = Some(self.str_arg(&mut cur, ":subject")?),
                        "from" => v.from = Some(self.str_arg(&mut cur, ":from")?),
                        "addresses" => v.addresses = self.list_arg(&mut cur, ":addresses")?,
                        "mime" => v.mime = true,
                        "handle" => v.handle = Some(self.str_arg(&mut cur, ":handle")?),
                        _ => {
                            return Err(CompileError::at(
                                pos,
                                format!("vacation has no tagged argument \":{tag}\" here"),
                            ));
                        }
                    }
                }
                v.reason = self.str_arg(&mut cur, "the reason")?;
                cur.done()?;
                Command::Vacation(Box::new(v))
            }
            "include" => {
                self.need("include", cmd.pos, "command \"include\"")?;
                let (mut location, mut once, mut optional) = (None, false, false);
                while let Some((tag, pos)) = cur.peek_tag() {
                    cur.at += 1;
                    match tag {
                        "personal" | "global" if location.is_none() => {
                            location = Some(if tag == "personal" {
                                Location::Personal
                            } else {
                                Location::Global
                            })
                        }
                        "once" => once = true,
                        "optional" => optional = true,
                        _ => {
                            return Err(CompileError::at(
                                pos,
                                format!("include has no tagged argument \":{tag}\" here"),
                            ));
                        }
                    }
                }
                let (raw, npos) = cur.raw_string("the script name")?;
                let name = self.string(raw, npos)?;
                if let Some(n) = name.as_literal()
                    && !super::store::valid_name(n)
                {
                    return Err(CompileError::at(
                        npos,
                        format!("{n:?} is not a script name"),
                    ));
                }
                cur.done()?;
                Command::Include {
                    location: location.unwrap_or(Location::Personal),
                    name,
                    once,
                    optional,
                    pos: cmd.pos,
                }
            }
            "return" => {
                self.need("include", cmd.pos, "command \"return\"")?;
                cur.done()?;
                Command::Return
            }
            "global" => {
                self.need("include", cmd.pos, "command \"global\"")?;
                self.need("variables", cmd.pos, "command \"global\"")?;
                let (names, pos) = cur.raw_list("the variable names")?;
                let mut out = Vec::new();
                for n in names {
                    check_variable_name(n, pos)?;
                    out.push(n.to_ascii_lowercase());
                }
                cur.done()?;
                Command::Global(out)
            }
            "addheader" => {
                self.need("editheader", cmd.pos, "command \"addheader\"")?;
                let mut last = false;
                if let Some(("last", _)) = cur.peek_tag() {
                    cur.at += 1;
                    last = true;
                }
                let (raw, npos) = cur.raw_string("the field name")?;
                let name = self.string(raw, npos)?;
                if let Some(n) = name.as_literal()
                    && !valid_field_name(n)
                {
                    return Err(CompileError::at(
                        npos,
                        format!("{n:?} is not a header field name"),
                    ));
                }
                let value = self.str_arg(&mut cur, "the value")?;
                cur.done()?;
                Command::AddHeader { last, name, value }
            }
            "deleteheader" => {
                self.need("editheader", cmd.pos, "command \"deleteheader\"")?;
                let mut common = Common::default();
                while self.common_tag(&mut cur, &mut common, MATCH | INDEX)? {}
                // Without the index extension, :index and :last still belong to deleteheader (RFC 5293 5).
                let (raw, npos) = cur.raw_string("the field name")?;
                let name = self.string(raw, npos)?;
                if let Some(n) = name.as_literal()
                    && !valid_field_name(n)
                {
                    return Err(CompileError::at(
                        npos,
                        format!("{n:?} is not a header field name"),
                    ));
                }
                let values = if cur.has_string() {
                    Some(self.list_arg(&mut cur, "the value patterns")?)
                } else {
                    None
                };
                cur.done()?;
                let matcher = self.matcher(&common, cmd.pos)?;
                if let Some(v) = &values {
                    self.check_keys(&matcher, v, cmd.pos)?;
                }
                Command::DeleteHeader {
                    matcher,
                    index: self.index(&common)?,
                    name,
                    values,
                }
            }
            other => {
                return Err(CompileError::at(
                    cmd.pos,
                    format!("unknown command {other:?}"),
                ));
            }
        };
        Ok(c)
    }
}

/// RFC 5229 section 3: identifier, or a namespace and a name (`global.x`).
fn check_variable_name(name: &str, pos: Pos) -> Result<(), CompileError> {
    let ok = !name.is_empty()
        && name.len() <= super::strings::MAX_VARIABLE_NAME
        && name.split('.').enumerate().all(|(i, part)| {
            !part.is_empty()
                && part
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && (i == 0 || name.to_ascii_lowercase().starts_with("global."))
        })
        && name.split('.').count() <= 2;
    if ok {
        Ok(())
    } else {
        Err(CompileError::at(
            pos,
            format!("{name:?} is not a variable name"),
        ))
    }
}

/// RFC 5322 field-name: printable ASCII except ':'.
pub fn valid_field_name(n: &str) -> bool {
    !n.is_empty() && n.len() <= 997 && n.bytes().all(|b| (33..=126).contains(&b) && b != b':')
}
