//! Runs a compiled script on one message for one recipient and returns the actions it decided, with the
//! implicit keep applied exactly as RFC 5228 section 2.10.2 has it. Performs nothing itself: storing,
//! redirecting and replying are local delivery's job. Every run is bounded (steps, time, actions,
//! redirects, include depth); a run that errs falls back to keeping the message in INBOX.

use super::ast::*;
use super::matching::{self, Regexes};
use super::message::{self, MessageView};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The SMTP envelope of the delivery.
#[derive(Debug, Clone, Default)]
pub struct Envelope {
    /// The reverse-path without brackets; empty for `<>`.
    pub from: String,
    /// The recipient as given at RCPT (with its subaddress).
    pub to: String,
}

/// How far one run may go; exceeding any limit is a runtime error (and so an implicit keep).
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_actions: usize,
    pub max_redirects: usize,
    pub max_include_depth: usize,
    pub max_time: Duration,
    /// Commands and tests evaluated, at most.
    pub max_steps: u64,
    /// Seconds between vacation replies when the script does not say (`:days`), and the bounds.
    pub vacation_default: u64,
    pub vacation_min: u64,
    pub vacation_max: u64,
    /// Subaddress separator.
    pub separator: char,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_actions: 32,
            max_redirects: 4,
            max_include_depth: 5,
            max_time: Duration::from_secs(5),
            max_steps: 100_000,
            vacation_default: 7 * 86_400,
            vacation_min: 86_400,
            vacation_max: 90 * 86_400,
            separator: '+',
        }
    }
}

/// What a run may ask of the world around it.
pub trait Environment {
    /// Whether the recipient's mailbox has this folder.
    fn mailbox_exists(&self, name: &str) -> bool;
    /// Whether a folder (or any, for `None`) carries these special-use attributes.
    fn special_use_exists(&self, mailbox: Option<&str>, uses: &[String]) -> bool;
    /// A script to include; `Ok(None)` when there is none by that name.
    fn include(&self, location: Location, name: &str) -> Result<Option<Arc<Program>>, String>;
    /// Whether the duplicate test has seen this key before (and it has not expired).
    fn seen(&self, key: &str) -> bool;
    /// The content filter's spam score as spamtest's value ("1".."10"), `None` when not tested.
    fn spam_score(&self, percent: bool) -> Option<String>;
    fn virus_score(&self) -> Option<String>;
    /// Unix seconds now.
    fn now(&self) -> i64;
}

/// An environment with nothing around the script: only INBOX exists, nothing is remembered, nothing can
/// be included, no content filter scored the message (benchmarks, fuzzing).
pub struct Detached;

impl Environment for Detached {
    fn mailbox_exists(&self, name: &str) -> bool {
        name.eq_ignore_ascii_case("INBOX")
    }
    fn special_use_exists(&self, _: Option<&str>, _: &[String]) -> bool {
        false
    }
    fn include(&self, _: Location, _: &str) -> Result<Option<Arc<Program>>, String> {
        Ok(None)
    }
    fn seen(&self, _: &str) -> bool {
        false
    }
    fn spam_score(&self, _: bool) -> Option<String> {
        None
    }
    fn virus_score(&self) -> Option<String> {
        None
    }
    fn now(&self) -> i64 {
        0
    }
}

/// One action the run decided.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Store a copy: in INBOX for keep (and implicit keep), or in a folder.
    Store {
        folder: String,
        flags: Vec<String>,
        create: bool,
        special_use: Option<String>,
        implicit: bool,
    },
    Redirect {
        address: String,
    },
    Reject {
        reason: String,
        extended: bool,
    },
    Vacation(super::vacation::Reply),
}

/// The result of a run.
#[derive(Debug, Default)]
pub struct Outcome {
    pub actions: Vec<Action>,
    /// Why the run failed; the actions are then only the fallback keep.
    pub error: Option<String>,
    /// The message as editheader left it (CRLF), when it changed it.
    pub edited: Option<Vec<u8>>,
    /// Duplicate keys to remember once the delivery is done: (key, seconds).
    pub duplicates: Vec<(String, u64)>,
}

impl Outcome {
    /// What the delivery log line says: `fileinto:Lists,redirect:a@b`.
    pub fn summary(&self) -> String {
        let mut parts: Vec<String> = self
            .actions
            .iter()
            .map(|a| match a {
                Action::Store {
                    folder, implicit, ..
                } if folder == "INBOX" => {
                    if *implicit {
                        "keep".into()
                    } else {
                        "keep:explicit".into()
                    }
                }
                Action::Store { folder, .. } => format!("fileinto:{folder}"),
                Action::Redirect { address } => format!("redirect:{address}"),
                Action::Reject { extended, .. } => {
                    if *extended {
                        "ereject".into()
                    } else {
                        "reject".into()
                    }
                }
                Action::Vacation(r) => format!("vacation:{}", r.to),
            })
            .collect();
        if parts.is_empty() {
            parts.push("discard".into());
        }
        if self.error.is_some() {
            parts.push("error".into());
        }
        crate::log::Escaped(&parts.join(",")).to_string()
    }
}

/// The mailbox index's name of a folder a script names: `/` is read as the hierarchy separator too (scripts
/// written for servers that use it), so `Lists/rust` and `Lists.rust` are one folder.
pub fn folder_of(name: &str) -> Result<String, crate::mailbox::index::IndexError> {
    crate::mailbox::index::folder_name(&name.replace('/', "."))
}

/// Whether `s` is an address a redirect may go to; its canonical form.
pub fn redirect_target(s: &str) -> Option<String> {
    let s = s.trim();
    let s = s
        .strip_prefix('<')
        .and_then(|x| x.strip_suffix('>'))
        .unwrap_or(s);
    crate::smtp::Mailbox::parse(s, true)
        .ok()
        .map(|m| m.to_string())
}

/// Runs `program` on `raw` (CRLF line endings) for the recipient in `envelope`.
pub fn run(
    programs: &[&Program],
    raw: &[u8],
    envelope: &Envelope,
    user_addresses: &[String],
    env: &dyn Environment,
    limits: &Limits,
) -> Outcome {
    run_sized(
        programs,
        raw,
        raw.len() as u64,
        envelope,
        user_addresses,
        env,
        limits,
    )
}

/// As [`run`], on the start of a message of `size` octets (what the `size` test sees); the edited
/// message it returns then ends where `raw` ends.
pub fn run_sized(
    programs: &[&Program],
    raw: &[u8],
    size: u64,
    envelope: &Envelope,
    user_addresses: &[String],
    env: &dyn Environment,
    limits: &Limits,
) -> Outcome {
    let mut r = Run {
        msg: MessageView::new(raw).with_size(size),
        envelope,
        user_addresses,
        env,
        limits,
        globals: HashMap::new(),
        actions: Vec::new(),
        implicit_keep: true,
        matches: Vec::new(),
        regexes: Regexes::default(),
        steps: 0,
        started: Instant::now(),
        stack: Vec::new(),
        included: HashSet::new(),
        redirects: 0,
        duplicates: Vec::new(),
        vacation: false,
        added_fields: 0,
        added_bytes: 0,
    };
    // The admin's scripts before and after the user's run as one: stop in any ends the run; return ends
    // the script it is in (RFC 6609 section 3.3).
    let mut result = Ok(());
    for program in programs {
        let mut scope = Scope::new(program);
        match r.block(&program.commands, &mut scope) {
            Ok(()) | Err(Flow::Return) => {}
            Err(Flow::Stop) => break,
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    let internal = split_flags(r.globals.get(INTERNAL_FLAGS).map_or("", String::as_str));
    match result.and_then(|_| r.finish(internal)) {
        Ok(()) => Outcome {
            edited: r.msg.edited_message(),
            actions: r.actions,
            error: None,
            duplicates: r.duplicates,
        },
        Err(Flow::Error(e)) => fallback(e),
        Err(Flow::Stop | Flow::Return) => unreachable_flow(),
    }
}

fn unreachable_flow() -> Outcome {
    fallback("internal error: stray stop".into())
}

/// RFC 5228 section 2.10.6: on a runtime error, implicit keep.
pub fn fallback(error: String) -> Outcome {
    Outcome {
        actions: vec![Action::Store {
            folder: "INBOX".into(),
            flags: Vec::new(),
            create: false,
            special_use: None,
            implicit: true,
        }],
        error: Some(error),
        edited: None,
        duplicates: Vec::new(),
    }
}

enum Flow {
    Stop,
    Return,
    Error(String),
}

type Step = Result<(), Flow>;

fn err<T>(m: impl Into<String>) -> Result<T, Flow> {
    Err(Flow::Error(m.into()))
}

/// The variables of one script (its own, RFC 5229) and the names it declared global (RFC 6609).
struct Scope {
    vars: HashMap<String, String>,
    globals: HashSet<String>,
    variables: bool,
}

/// The name of imap4flags' internal variable in the global map (not a valid Sieve name).
const INTERNAL_FLAGS: &str = " flags";

impl Scope {
    fn new(p: &Program) -> Scope {
        Scope {
            vars: HashMap::new(),
            globals: HashSet::new(),
            variables: p.requires.iter().any(|r| r == "variables"),
        }
    }

    fn is_global(&self, name: &str) -> bool {
        name.starts_with("global.") || self.globals.contains(name)
    }

    /// The key of a variable in its map: `global.x` and a declared global `x` are one variable (RFC
    /// 6609 section 3.5).
    fn key<'n>(&self, name: &'n str) -> &'n str {
        name.strip_prefix("global.").unwrap_or(name)
    }

    fn internal_flags(&self, globals: &HashMap<String, String>) -> Vec<String> {
        split_flags(globals.get(INTERNAL_FLAGS).map_or("", String::as_str))
    }
}

struct Run<'a> {
    msg: MessageView<'a>,
    envelope: &'a Envelope,
    user_addresses: &'a [String],
    env: &'a dyn Environment,
    limits: &'a Limits,
    globals: HashMap<String, String>,
    actions: Vec<Action>,
    implicit_keep: bool,
    matches: Vec<String>,
    regexes: Regexes,
    steps: u64,
    started: Instant,
    /// Scripts being included, innermost last.
    stack: Vec<(Location, String)>,
    included: HashSet<(Location, String)>,
    redirects: usize,
    duplicates: Vec<(String, u64)>,
    vacation: bool,
    added_fields: usize,
    added_bytes: usize,
}

/// Header fields, and their octets, one run may add with addheader.
const MAX_ADDED_FIELDS: usize = 100;
const MAX_ADDED_BYTES: usize = 64 * 1024;

impl Run<'_> {
    fn step(&mut self) -> Step {
        self.steps += 1;
        if self.steps > self.limits.max_steps {
            return err(format!(
                "script ran more than {} steps",
                self.limits.max_steps
            ));
        }
        if self.started.elapsed() > self.limits.max_time {
            return err(format!(
                "script ran longer than {} ms",
                self.limits.max_time.as_millis()
            ));
        }
        Ok(())
    }

    fn get_var(&self, scope: &Scope, name: &str) -> String {
        if scope.is_global(name) {
            self.globals
                .get(scope.key(name))
                .cloned()
                .unwrap_or_default()
        } else {
            scope.vars.get(name).cloned().unwrap_or_default()
        }
    }

    fn set_var(&mut self, scope: &mut Scope, name: &str, value: String) {
        let value = super::strings::bounded(value);
        if scope.is_global(name) {
            self.globals.insert(scope.key(name).to_string(), value);
        } else {
            scope.vars.insert(name.to_string(), value);
        }
    }

    fn expand(&self, scope: &Scope, s: &Str) -> String {
        if let Some(t) = s.as_literal() {
            return t.to_string();
        }
        let mut out = String::new();
        for p in &s.0 {
            match p {
                Piece::Text(t) => out.push_str(t),
                Piece::Var(n) => out.push_str(&self.get_var(scope, n)),
                Piece::Match(i) => out.push_str(self.matches.get(*i).map_or("", String::as_str)),
            }
            if out.len() > super::strings::MAX_VARIABLE_SIZE * 4 {
                break;
            }
        }
        out
    }

    fn expand_list(&self, scope: &Scope, l: &[Str]) -> Vec<String> {
        l.iter().map(|s| self.expand(scope, s)).collect()
    }

    fn block(&mut self, commands: &[Command], scope: &mut Scope) -> Step {
        for c in commands {
            self.command(c, scope)?;
        }
        Ok(())
    }

    fn count_action(&self) -> Step {
        if self.actions.len() >= self.limits.max_actions {
            return err(format!(
                "more than {} actions in one run",
                self.limits.max_actions
            ));
        }
        Ok(())
    }

    fn command(&mut self, c: &Command, scope: &mut Scope) -> Step {
        self.step()?;
        match c {
            Command::If {
                branches,
                otherwise,
            } => {
                for (test, body) in branches {
                    if self.test(test, scope)? {
                        return self.block(body, scope);
                    }
                }
                if let Some(body) = otherwise {
                    return self.block(body, scope);
                }
                Ok(())
            }
            Command::Stop => Err(Flow::Stop),
            Command::Return => Err(Flow::Return),
            Command::Keep { flags } => {
                let flags = self.flags_for(flags, scope);
                self.store("INBOX".into(), flags, false, None)?;
                self.implicit_keep = false;
                Ok(())
            }
            Command::Discard => {
                self.implicit_keep = false;
                Ok(())
            }
            Command::FileInto {
                mailbox,
                copy,
                create,
                flags,
                special_use,
            } => {
                let folder = self.expand(scope, mailbox);
                let folder = match folder_of(&folder) {
                    Ok(f) if f == "INBOX" => f,
                    Ok(_) => folder,
                    Err(_) => return err(format!("{folder:?} is not a folder name")),
                };
                let flags = self.flags_for(flags, scope);
                let special_use = special_use.as_ref().map(|s| self.expand(scope, s));
                self.store(folder, flags, *create, special_use)?;
                if !copy {
                    self.implicit_keep = false;
                }
                Ok(())
            }
            Command::Redirect { address, copy, .. } => {
                let raw = self.expand(scope, address);
                let Some(address) = redirect_target(&raw) else {
                    return err(format!("{raw:?} is not an address to redirect to"));
                };
                if !copy {
                    self.implicit_keep = false;
                }
                // RFC 5228 section 4.2: the same address twice is one redirect.
                if self
                    .actions
                    .iter()
                    .any(|a| matches!(a, Action::Redirect { address: x } if x.eq_ignore_ascii_case(&address)))
                {
                    return Ok(());
                }
                if self.redirects >= self.limits.max_redirects {
                    return err(format!(
                        "more than {} redirects in one run",
                        self.limits.max_redirects
                    ));
                }
                self.count_action()?;
                self.redirects += 1;
                self.actions.push(Action::Redirect { address });
                Ok(())
            }
            Command::Reject { reason, extended } => {
                let reason = self.expand(scope, reason);
                if self
                    .actions
                    .iter()
                    .any(|a| matches!(a, Action::Reject { .. }))
                {
                    return err("reject given twice");
                }
                self.count_action()?;
                self.implicit_keep = false;
                self.actions.push(Action::Reject {
                    reason,
                    extended: *extended,
                });
                Ok(())
            }
            Command::Flags {
                op,
                variable,
                flags,
            } => {
                let name = match variable {
                    Some(v) => self.expand(scope, v).to_ascii_lowercase(),
                    None => INTERNAL_FLAGS.to_string(),
                };
                let current = if name == INTERNAL_FLAGS {
                    split_flags(self.globals.get(INTERNAL_FLAGS).map_or("", String::as_str))
                } else {
                    split_flags(&self.get_var(scope, &name))
                };
                let given: Vec<String> = self
                    .expand_list(scope, flags)
                    .iter()
                    .flat_map(|f| split_flags(f))
                    .collect();
                let new = match op {
                    FlagOp::Set => dedup_flags(given),
                    FlagOp::Add => dedup_flags(current.into_iter().chain(given).collect()),
                    FlagOp::Remove => current
                        .into_iter()
                        .filter(|f| !given.iter().any(|g| g.eq_ignore_ascii_case(f)))
                        .collect(),
                };
                let joined = new.join(" ");
                if name == INTERNAL_FLAGS {
                    self.globals.insert(name, super::strings::bounded(joined));
                } else {
                    self.set_var(scope, &name, joined);
                }
                Ok(())
            }
            Command::Set {
                name,
                modifiers,
                value,
            } => {
                let v = self.expand(scope, value);
                let v = super::strings::apply(modifiers, v);
                self.set_var(scope, name, v);
                Ok(())
            }
            Command::Global(names) => {
                for n in names {
                    scope.globals.insert(n.clone());
                }
                Ok(())
            }
            Command::Vacation(v) => self.vacation(v, scope),
            Command::Include {
                location,
                name,
                once,
                optional,
                ..
            } => {
                let name = self.expand(scope, name);
                let key = (*location, name.clone());
                if *once && self.included.contains(&key) {
                    return Ok(());
                }
                if self.stack.contains(&key) {
                    return err(format!("script {name:?} includes itself"));
                }
                if self.stack.len() >= self.limits.max_include_depth {
                    return err(format!(
                        "includes nested deeper than {}",
                        self.limits.max_include_depth
                    ));
                }
                let program = match self.env.include(*location, &name) {
                    Ok(Some(p)) => p,
                    Ok(None) if *optional => return Ok(()),
                    Ok(None) => return err(format!("included script {name:?} does not exist")),
                    Err(e) => return err(format!("included script {name:?}: {e}")),
                };
                self.included.insert(key.clone());
                self.stack.push(key);
                let mut inner = Scope::new(&program);
                let r = self.block(&program.commands, &mut inner);
                self.stack.pop();
                match r {
                    Ok(()) | Err(Flow::Return) => Ok(()),
                    Err(other) => Err(other),
                }
            }
            Command::AddHeader { last, name, value } => {
                let name = self.expand(scope, name);
                let value = self.expand(scope, value);
                if !super::compile::valid_field_name(&name) {
                    return err(format!("{name:?} is not a header field name"));
                }
                if message::protected(&name) {
                    tracing::debug!(field = %crate::log::Escaped(&name), "sieve: addheader of a protected field ignored");
                    return Ok(());
                }
                let value = fold(&value);
                // What scripts add is bounded: fields and octets (RFC 5293 leaves the limit to us).
                self.added_fields += 1;
                self.added_bytes += name.len() + value.len() + 4;
                if self.added_fields > MAX_ADDED_FIELDS || self.added_bytes > MAX_ADDED_BYTES {
                    return err(format!(
                        "addheader past {MAX_ADDED_FIELDS} fields or {MAX_ADDED_BYTES} octets"
                    ));
                }
                let field = message::Field {
                    name,
                    value: format!(" {value}\r\n"),
                };
                if *last {
                    self.msg.fields.push(field);
                } else {
                    self.msg.fields.insert(0, field);
                }
                self.msg.edited = true;
                Ok(())
            }
            Command::DeleteHeader {
                matcher,
                index,
                name,
                values,
            } => {
                let name = self.expand(scope, name);
                if message::protected(&name) {
                    return Ok(());
                }
                let patterns = values.as_ref().map(|v| self.expand_list(scope, v));
                let positions: Vec<usize> = self
                    .msg
                    .fields
                    .iter()
                    .enumerate()
                    .filter(|(_, f)| f.name.eq_ignore_ascii_case(&name))
                    .map(|(i, _)| i)
                    .collect();
                let chosen: Vec<usize> = match index {
                    Some(ix) => pick(&positions, *ix).into_iter().collect(),
                    None => positions,
                };
                let mut remove = Vec::new();
                for i in chosen {
                    let keep_it = match &patterns {
                        None => false,
                        Some(p) => {
                            let v = message::decoded(&self.msg.fields[i].value);
                            let mut hit = false;
                            for key in p {
                                if matching::matches(matcher, &v, key, None, &mut self.regexes)
                                    .map_err(Flow::Error)?
                                {
                                    hit = true;
                                    break;
                                }
                            }
                            !hit
                        }
                    };
                    if !keep_it {
                        remove.push(i);
                    }
                }
                for i in remove.into_iter().rev() {
                    self.msg.fields.remove(i);
                    self.msg.edited = true;
                }
                Ok(())
            }
        }
    }

    fn flags_for(&self, flags: &Option<StrList>, scope: &Scope) -> Vec<String> {
        match flags {
            Some(l) => dedup_flags(
                self.expand_list(scope, l)
                    .iter()
                    .flat_map(|f| split_flags(f))
                    .collect(),
            ),
            None => scope.internal_flags(&self.globals),
        }
    }

    fn store(
        &mut self,
        folder: String,
        flags: Vec<String>,
        create: bool,
        special_use: Option<String>,
    ) -> Step {
        // The same folder twice is one copy (RFC 5228 section 4.1), with the flags of both.
        for a in &mut self.actions {
            if let Action::Store {
                folder: f,
                flags: fl,
                create: c,
                ..
            } = a
                && f.eq_ignore_ascii_case(&folder)
            {
                let mut all = std::mem::take(fl);
                all.extend(flags);
                *fl = dedup_flags(all);
                *c |= create;
                return Ok(());
            }
        }
        self.count_action()?;
        self.actions.push(Action::Store {
            folder,
            flags,
            create,
            special_use,
            implicit: false,
        });
        Ok(())
    }

    /// After the last command: implicit keep, and the conflicts RFC 5429 forbids.
    fn finish(&mut self, internal_flags: Vec<String>) -> Step {
        let rejected = self
            .actions
            .iter()
            .any(|a| matches!(a, Action::Reject { .. }));
        if rejected
            && self.actions.iter().any(|a| {
                matches!(a, Action::Store { .. } | Action::Vacation(_))
                    || matches!(a, Action::Redirect { .. })
            })
        {
            return err("reject cannot be combined with keep, fileinto, redirect or vacation");
        }
        if self.implicit_keep {
            let before = self.actions.len();
            self.store("INBOX".into(), internal_flags, false, None)
                .or_else(|_| {
                    // The limit never refuses the implicit keep itself.
                    self.actions.push(Action::Store {
                        folder: "INBOX".into(),
                        flags: Vec::new(),
                        create: false,
                        special_use: None,
                        implicit: true,
                    });
                    Ok::<(), Flow>(())
                })?;
            if self.actions.len() > before
                && let Some(Action::Store { implicit, .. }) = self.actions.last_mut()
            {
                *implicit = true;
            }
        }
        Ok(())
    }

    fn vacation(&mut self, v: &Vacation, scope: &mut Scope) -> Step {
        if self.vacation {
            return err("vacation given twice");
        }
        self.vacation = true;
        let addresses: Vec<String> = self.expand_list(scope, &v.addresses);
        let reason = self.expand(scope, &v.reason);
        let subject = v.subject.as_ref().map(|s| self.expand(scope, s));
        let from = v.from.as_ref().map(|s| self.expand(scope, s));
        let handle = v.handle.as_ref().map(|s| self.expand(scope, s));
        let seconds = v
            .seconds
            .unwrap_or(self.limits.vacation_default)
            .max(self.limits.vacation_min)
            .min(self.limits.vacation_max);
        let mut own: Vec<String> = self.user_addresses.to_vec();
        own.push(self.envelope.to.clone());
        own.extend(addresses.iter().cloned());
        match super::vacation::decide(&self.msg, self.envelope, &own) {
            Ok(()) => {}
            Err(why) => {
                tracing::debug!(why, "sieve: no vacation reply");
                return Ok(());
            }
        }
        self.count_action()?;
        let reply = super::vacation::Reply::build(
            &self.msg,
            self.envelope,
            super::vacation::Params {
                reason,
                subject,
                from,
                handle,
                mime: v.mime,
                seconds,
            },
        );
        self.actions.push(Action::Vacation(reply));
        Ok(())
    }

    // ---- tests ----

    fn test(&mut self, t: &Test, scope: &mut Scope) -> Result<bool, Flow> {
        self.step()?;
        Ok(match t {
            Test::True => true,
            Test::False => false,
            Test::Not(inner) => !self.test(inner, scope)?,
            Test::AllOf(list) => {
                for t in list {
                    if !self.test(t, scope)? {
                        return Ok(false);
                    }
                }
                true
            }
            Test::AnyOf(list) => {
                for t in list {
                    if self.test(t, scope)? {
                        return Ok(true);
                    }
                }
                false
            }
            Test::Exists(names) => self
                .expand_list(scope, names)
                .iter()
                .all(|n| self.msg.exists(n)),
            Test::Size { over, limit } => {
                if *over {
                    self.msg.size() > *limit
                } else {
                    self.msg.size() < *limit
                }
            }
            Test::Header {
                matcher,
                index,
                headers,
                keys,
            } => {
                let mut values = Vec::new();
                for h in self.expand_list(scope, headers) {
                    let all = self.msg.values(&h);
                    match index {
                        Some(ix) => values.extend(pick(&all, *ix)),
                        None => values.extend(all),
                    }
                }
                self.compare(matcher, &values, keys, scope)?
            }
            Test::Address {
                matcher,
                part,
                index,
                headers,
                keys,
            } => {
                let mut values = Vec::new();
                for h in self.expand_list(scope, headers) {
                    let fields = self.msg.addresses(&h);
                    let fields = match index {
                        Some(ix) => pick(&fields, *ix).into_iter().collect(),
                        None => fields,
                    };
                    for a in fields.into_iter().flatten() {
                        if let Some(p) = address_part(&a, *part, self.limits.separator) {
                            values.push(p);
                        }
                    }
                }
                self.compare(matcher, &values, keys, scope)?
            }
            Test::Envelope {
                matcher,
                part,
                parts,
                keys,
            } => {
                let mut values = Vec::new();
                for p in self.expand_list(scope, parts) {
                    let a = match p.to_ascii_lowercase().as_str() {
                        "from" => self.envelope.from.clone(),
                        "to" => self.envelope.to.clone(),
                        _ => continue,
                    };
                    // The null reverse-path is the empty string for every part (RFC 5228 5.4).
                    if a.is_empty() {
                        values.push(String::new());
                    } else if let Some(v) = address_part(&a, *part, self.limits.separator) {
                        values.push(v);
                    }
                }
                self.compare(matcher, &values, keys, scope)?
            }
            Test::Body {
                matcher,
                transform,
                keys,
            } => {
                let types = match transform {
                    BodyTransform::Content(l) => self.expand_list(scope, l),
                    _ => Vec::new(),
                };
                let values = self.msg.body(transform, &types);
                self.compare_body(matcher, &values, keys, scope)?
            }
            Test::Date {
                matcher,
                zone,
                index,
                header,
                part,
                keys,
            } => {
                let header = self.expand(scope, header);
                let all = self.msg.values(&header);
                let value = match index {
                    Some(ix) => pick(&all, *ix),
                    None => all.into_iter().next(),
                };
                let Some(value) = value else { return Ok(false) };
                // Received: the date follows the last semicolon.
                let text = value.rsplit(';').next().unwrap_or(&value).trim();
                let Some(dt) = mail_parser::DateTime::parse_rfc822(text) else {
                    return Ok(false);
                };
                if !dt.is_valid() {
                    return Ok(false);
                }
                let dt = match zone {
                    Zone::Original => dt,
                    Zone::Local => {
                        let ts = dt.to_timestamp();
                        super::date::at(ts, super::date::local_offset(ts))
                    }
                    Zone::Fixed(z) => {
                        let z = self.expand(scope, z);
                        let Some(off) = super::date::parse_zone(&z) else {
                            return Ok(false);
                        };
                        super::date::at(dt.to_timestamp(), off)
                    }
                };
                let part = self.expand(scope, part);
                let Some(v) = super::date::part(&dt, &part) else {
                    return Ok(false);
                };
                self.compare(matcher, &[v], keys, scope)?
            }
            Test::CurrentDate {
                matcher,
                zone,
                part,
                keys,
            } => {
                let now = self.env.now();
                let off = match zone {
                    Zone::Fixed(z) => {
                        let z = self.expand(scope, z);
                        match super::date::parse_zone(&z) {
                            Some(o) => o,
                            None => return Ok(false),
                        }
                    }
                    _ => super::date::local_offset(now),
                };
                let dt = super::date::at(now, off);
                let part = self.expand(scope, part);
                let Some(v) = super::date::part(&dt, &part) else {
                    return Ok(false);
                };
                self.compare(matcher, &[v], keys, scope)?
            }
            Test::String {
                matcher,
                sources,
                keys,
            } => {
                let values = self.expand_list(scope, sources);
                if let MatchType::Count(_) = matcher.match_type {
                    // RFC 5229 section 5: empty strings are not counted.
                    let values: Vec<String> =
                        values.into_iter().filter(|v| !v.is_empty()).collect();
                    self.compare(matcher, &values, keys, scope)?
                } else {
                    self.compare(matcher, &values, keys, scope)?
                }
            }
            Test::HasFlag {
                matcher,
                variables,
                keys,
            } => {
                let flags: Vec<String> = match variables {
                    Some(vars) => self
                        .expand_list(scope, vars)
                        .iter()
                        .flat_map(|v| split_flags(&self.get_var(scope, &v.to_ascii_lowercase())))
                        .collect(),
                    None => scope.internal_flags(&self.globals),
                };
                let keys: Vec<Str> = self
                    .expand_list(scope, keys)
                    .iter()
                    .flat_map(|k| split_flags(k))
                    .map(|k| Str::literal(&k))
                    .collect();
                self.compare(matcher, &flags, &keys, scope)?
            }
            Test::MailboxExists(names) => self
                .expand_list(scope, names)
                .iter()
                .all(|n| self.env.mailbox_exists(n)),
            Test::SpecialUseExists { mailbox, uses } => {
                let mailbox = mailbox.as_ref().map(|m| self.expand(scope, m));
                let uses = self.expand_list(scope, uses);
                self.env.special_use_exists(mailbox.as_deref(), &uses)
            }
            Test::Duplicate {
                handle,
                header,
                unique_id,
                seconds,
                last: _,
            } => {
                let value = match (unique_id, header) {
                    (Some(u), _) => Some(self.expand(scope, u)),
                    (None, Some(h)) => {
                        let h = self.expand(scope, h);
                        self.msg.values(&h).into_iter().next()
                    }
                    (None, None) => self.msg.values("message-id").into_iter().next(),
                };
                // RFC 7352 section 3.1: without the field, the test is false.
                let Some(value) = value else { return Ok(false) };
                let handle = handle
                    .as_ref()
                    .map(|h| self.expand(scope, h))
                    .unwrap_or_default();
                let key = super::vacation::digest(&[&handle, &value]);
                let seen = self.env.seen(&key);
                let secs = seconds.unwrap_or(12 * 3600).min(7 * 86_400);
                if !self.duplicates.iter().any(|(k, _)| *k == key) {
                    if self.duplicates.len() >= self.limits.max_actions {
                        return err(format!(
                            "more than {} duplicate tests in one run",
                            self.limits.max_actions
                        ));
                    }
                    self.duplicates.push((key, secs));
                }
                seen
            }
            Test::SpamTest {
                matcher,
                percent,
                value,
            } => {
                let v = self.env.spam_score(*percent).unwrap_or_else(|| "0".into());
                self.compare(matcher, &[v], std::slice::from_ref(value), scope)?
            }
            Test::VirusTest { matcher, value } => {
                let v = self.env.virus_score().unwrap_or_else(|| "0".into());
                self.compare(matcher, &[v], std::slice::from_ref(value), scope)?
            }
        })
    }

    /// Any value against any key; :count compares the number of values.
    fn compare(
        &mut self,
        m: &Matcher,
        values: &[String],
        keys: &[Str],
        scope: &Scope,
    ) -> Result<bool, Flow> {
        let keys = self.expand_list(scope, keys);
        if let MatchType::Count(_) = m.match_type {
            let n = values.len().to_string();
            for k in &keys {
                if matching::matches(m, &n, k, None, &mut self.regexes).map_err(Flow::Error)? {
                    return Ok(true);
                }
            }
            return Ok(false);
        }
        let capture =
            scope.variables && matches!(m.match_type, MatchType::Matches | MatchType::Regex);
        for v in values {
            for k in &keys {
                self.step()?;
                let mut caps = Vec::new();
                let hit =
                    matching::matches(m, v, k, capture.then_some(&mut caps), &mut self.regexes)
                        .map_err(Flow::Error)?;
                if hit {
                    if capture {
                        self.matches = caps;
                    }
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    fn compare_body(
        &mut self,
        m: &Matcher,
        values: &[String],
        keys: &[Str],
        scope: &Scope,
    ) -> Result<bool, Flow> {
        // RFC 5173: the body test does not set match variables.
        let keys = self.expand_list(scope, keys);
        for v in values {
            for k in &keys {
                self.step()?;
                if matching::matches(m, v, k, None, &mut self.regexes).map_err(Flow::Error)? {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }
}

/// The `:index` occurrence (1-based; `:last` counts from the end).
fn pick<T: Clone>(all: &[T], ix: Index) -> Option<T> {
    if ix.n == 0 || ix.n > all.len() {
        return None;
    }
    let i = if ix.last { all.len() - ix.n } else { ix.n - 1 };
    all.get(i).cloned()
}

fn address_part(a: &str, part: AddressPart, sep: char) -> Option<String> {
    let (local, domain) = message::split_address(a);
    Some(match part {
        AddressPart::All => a.to_string(),
        AddressPart::LocalPart => local.to_string(),
        AddressPart::Domain => domain.to_string(),
        AddressPart::User => local.split_once(sep).map_or(local, |(u, _)| u).to_string(),
        // RFC 5233 section 4: no separator, no detail (the test does not match it).
        AddressPart::Detail => local.split_once(sep)?.1.to_string(),
    })
}

fn split_flags(s: &str) -> Vec<String> {
    s.split_ascii_whitespace().map(str::to_string).collect()
}

/// Flags once each (case-insensitively), in the order first given.
fn dedup_flags(v: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for f in v {
        if !out.iter().any(|o| o.eq_ignore_ascii_case(&f)) {
            out.push(f);
        }
    }
    out
}

/// A header value made safe to write: line breaks become folds, other control characters go.
fn fold(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for line in v.split(['\r', '\n']).filter(|l| !l.is_empty()) {
        if !out.is_empty() {
            out.push_str("\r\n ");
        }
        out.extend(line.chars().filter(|c| !c.is_control() || *c == '\t'));
    }
    out
}
