//! One IMAP session: frames commands (`imap::Framer`), parses them (`imap::parse`), runs them against the
//! mailbox index and writes the responses. `process` is blocking (the index does file I/O) and runs on
//! the blocking pool; what must wait on the network or on a password check is handed back to the driver
//! as an `Outcome`.

use crate::access::{Access, LoggedIn, LoginError};
use crate::imap::parse::{
    self, Command, FetchAtt, ListOptions, SearchKey, SearchReturn, SectionText, SeqSet, StatusItem,
    StoreOp,
};
use crate::imap::response::{flag_list, internal_date, literal, mailbox_name, parse_flags};
use crate::imap::view::{Report, View, uid_set};
use crate::imap::{Frame, Framer, ParseError, mime, search};
use crate::log::Escaped;
use crate::mailbox::index::{
    self as idx, FlagOp, Flags, IndexError, MailIndex, NewMessage, Snapshot, flag,
};
use std::sync::Arc;

/// Output past this is written out before a long FETCH goes on.
const FLUSH_AT: usize = 256 * 1024;

/// What the driver must do next.
#[derive(Debug)]
pub enum Outcome {
    /// Write the output and read more input.
    Read,
    /// Write the output and call `process` again (a long FETCH goes on).
    Continue,
    /// Check these credentials, then call `logged_in`.
    Login(String, crate::sasl::Credentials),
    /// Write the output, then start TLS.
    StartTls,
    /// Write the output, then wait for DONE or a change of the mailbox.
    Idle,
    /// Write the output and close.
    Close,
}

enum Sasl {
    Exchange(String, crate::sasl::Exchange),
}

struct PendingFetch {
    tag: String,
    uid_cmd: bool,
    uids: Vec<u32>,
    next: usize,
    items: Vec<FetchAtt>,
    modseq: bool,
}

pub struct Session {
    access: Arc<Access>,
    pub tls: bool,
    secure_peer: bool,
    starttls: bool,
    framer: Framer,
    pub out: Vec<u8>,
    user: Option<LoggedIn>,
    view: Option<View>,
    rev2: bool,
    condstore: bool,
    qresync: bool,
    bad: usize,
    sasl: Option<Sasl>,
    pub idle_tag: Option<String>,
    pending: Option<PendingFetch>,
    /// The tagged completion of the command being run: untagged updates go out before it.
    tail: Vec<u8>,
    closing: bool,
}

fn caps_common() -> &'static str {
    "IMAP4rev1 IMAP4rev2 LITERAL+ SASL-IR ID ENABLE IDLE NAMESPACE UNSELECT UIDPLUS ESEARCH SEARCHRES \
     LIST-EXTENDED LIST-STATUS MOVE SPECIAL-USE CHILDREN CONDSTORE QRESYNC STATUS=SIZE BINARY \
     QUOTA QUOTA=RES-STORAGE QUOTA=RES-MESSAGE SORT SORT=DISPLAY THREAD=ORDEREDSUBJECT THREAD=REFERENCES"
}

fn index_error(tag: &str, e: &IndexError) -> String {
    match e {
        IndexError::NoFolder(_) => format!("{tag} NO [NONEXISTENT] {e}\r\n"),
        IndexError::Exists(_) => format!("{tag} NO [ALREADYEXISTS] {e}\r\n"),
        IndexError::BadName(_) | IndexError::Refused(_) => format!("{tag} NO [CANNOT] {e}\r\n"),
        IndexError::Storage(s) => {
            tracing::error!(error = %s, "mailbox index error");
            format!("{tag} NO [UNAVAILABLE] the mailbox cannot be read now, try again later\r\n")
        }
    }
}

/// `*` and `%` matching of LIST (`%` stops at the delimiter).
fn list_match(pattern: &[u8], name: &[u8]) -> bool {
    match pattern.split_first() {
        None => name.is_empty(),
        Some((b'*', rest)) => (0..=name.len()).any(|i| list_match(rest, &name[i..])),
        Some((b'%', rest)) => {
            for i in 0..=name.len() {
                if list_match(rest, &name[i..]) {
                    return true;
                }
                if i < name.len() && name[i] == idx::DELIMITER as u8 {
                    return false;
                }
            }
            false
        }
        Some((c, rest)) => name.first() == Some(c) && list_match(rest, &name[1..]),
    }
}

impl Session {
    pub fn new(access: Arc<Access>, tls: bool, secure_peer: bool, starttls: bool) -> Session {
        let s = &access.settings;
        let framer = Framer::new(s.imap_command_line, s.imap_literal_size);
        Session {
            access,
            tls,
            secure_peer,
            starttls,
            framer,
            out: Vec::new(),
            user: None,
            view: None,
            rev2: false,
            condstore: false,
            qresync: false,
            bad: 0,
            sasl: None,
            idle_tag: None,
            pending: None,
            tail: Vec::new(),
            closing: false,
        }
    }

    /// A stand-in while the real session runs on the blocking pool.
    pub fn placeholder(access: Arc<Access>) -> Session {
        Session::new(access, false, false, false)
    }

    /// The logged-in user's mailbox, if logged in.
    pub fn user_mailbox(&self) -> Option<crate::smtp::Mailbox> {
        self.user.as_ref().map(|u| u.mailbox.clone())
    }

    pub fn logged(&self) -> bool {
        self.user.is_some()
    }

    fn capabilities(&self) -> String {
        let mut c = caps_common().to_string();
        if self.user.is_none() {
            if self.starttls && !self.tls {
                c.push_str(" STARTTLS");
            }
            if self.tls || self.secure_peer {
                c.push_str(" AUTH=PLAIN AUTH=LOGIN");
            } else {
                c.push_str(" LOGINDISABLED");
            }
        } else {
            c.push_str(&format!(
                " APPENDLIMIT={}",
                self.access.settings.imap_literal_size
            ));
        }
        c
    }

    pub fn greeting(&mut self) {
        let line = format!(
            "* OK [CAPABILITY {}] {} IMAP ready\r\n",
            self.capabilities(),
            self.access.hostname
        );
        self.out.extend_from_slice(line.as_bytes());
    }

    pub fn tls_established(&mut self) {
        self.tls = true;
    }

    pub fn receive(&mut self, bytes: &[u8]) {
        self.framer.push(bytes);
    }

    pub fn buffered(&self) -> usize {
        self.framer.buffered()
    }

    fn index(&self) -> Option<&dyn MailIndex> {
        self.access.store.index()
    }

    fn send(&mut self, s: &str) {
        self.out.extend_from_slice(s.as_bytes());
    }

    fn bad_command(&mut self, tag: Option<&str>, why: &str) -> bool {
        self.bad += 1;
        let why = why.replace(['\r', '\n'], " ");
        self.send(&format!("{} BAD {why}\r\n", tag.unwrap_or("*")));
        if self.bad >= self.access.settings.bad_commands {
            tracing::warn!(bad_commands = self.bad, "closing: too many bad commands");
            self.send("* BYE too many bad commands\r\n");
            self.closing = true;
            return true;
        }
        false
    }

    /// Runs what has arrived, until input runs out or the driver must act.
    pub fn process(&mut self) -> Outcome {
        if let Some(p) = self.pending.take() {
            self.fetch_on(p);
            if self.pending.is_some() {
                return Outcome::Continue;
            }
        }
        loop {
            if self.closing {
                return Outcome::Close;
            }
            if self.out.len() > FLUSH_AT {
                return Outcome::Continue;
            }
            if let Some(Sasl::Exchange(tag, ex)) = self.sasl.take() {
                let Some(line) = self.framer.line() else {
                    self.sasl = Some(Sasl::Exchange(tag, ex));
                    return Outcome::Read;
                };
                let Ok(line) = line else {
                    self.send(&format!("{tag} BAD authentication line too long\r\n"));
                    continue;
                };
                let text = String::from_utf8_lossy(&line).into_owned();
                match self.sasl_step(&tag, ex.respond(&text)) {
                    Some(o) => return o,
                    None => continue,
                }
            }
            let Some(frame) = self.framer.next() else {
                return Outcome::Read;
            };
            match frame {
                Frame::Continue => self.send("+ OK\r\n"),
                Frame::TooLong(tag) => {
                    if self.bad_command(tag.as_deref(), "command line too long") {
                        return Outcome::Close;
                    }
                }
                Frame::LiteralTooBig(tag, n) => {
                    let t = tag.as_deref().unwrap_or("*");
                    self.send(&format!(
                        "{t} NO [TOOBIG] a literal of {n} octets is over the limit of {}\r\n",
                        self.access.settings.imap_literal_size
                    ));
                }
                Frame::Command(raw) => {
                    let parsed = parse::command(&raw);
                    match parsed {
                        Ok(t) => {
                            if let Some(o) = self.execute(t.tag, t.command) {
                                return o;
                            }
                            if self.pending.is_some() {
                                return Outcome::Continue;
                            }
                        }
                        Err((tag, ParseError::BadCharset)) => {
                            let t = tag.as_deref().unwrap_or("*");
                            self.send(&format!(
                                "{t} NO [BADCHARSET (UTF-8 US-ASCII)] unsupported charset\r\n"
                            ));
                        }
                        Err((tag, e)) => {
                            if self.bad_command(tag.as_deref(), &e.to_string()) {
                                return Outcome::Close;
                            }
                        }
                    }
                }
            }
        }
    }

    fn sasl_step(
        &mut self,
        tag: &str,
        (ex, step): (Option<crate::sasl::Exchange>, crate::sasl::Step),
    ) -> Option<Outcome> {
        use crate::sasl::{SaslError, Step};
        match step {
            Step::Challenge(c) => {
                self.send(&format!("+ {c}\r\n"));
                if let Some(ex) = ex {
                    self.sasl = Some(Sasl::Exchange(tag.to_string(), ex));
                }
                None
            }
            Step::Done(creds) => Some(Outcome::Login(tag.to_string(), creds)),
            Step::Failed(SaslError::Cancelled) => {
                self.send(&format!("{tag} BAD authentication cancelled\r\n"));
                None
            }
            Step::Failed(SaslError::Malformed(why)) => {
                self.send(&format!("{tag} BAD {why}\r\n"));
                None
            }
        }
    }

    /// The password check's verdict.
    pub fn logged_in(&mut self, tag: &str, result: Result<LoggedIn, LoginError>) {
        match result {
            Ok(user) => {
                if self.index().is_none() {
                    self.send(&format!(
                        "{tag} NO [UNAVAILABLE] IMAP is not available with this mailbox store\r\n"
                    ));
                    return;
                }
                // Make the default folders now, so the first LIST shows them.
                if let Some(i) = self.index()
                    && let Err(e) = i.list(&user.mailbox)
                {
                    tracing::error!(error = %e, "cannot open the mailbox");
                    self.send(&format!(
                        "{tag} NO [UNAVAILABLE] cannot open the mailbox, try again later\r\n"
                    ));
                    return;
                }
                self.user = Some(user);
                let caps = self.capabilities();
                self.send(&format!("{tag} OK [CAPABILITY {caps}] logged in\r\n"));
            }
            Err(LoginError::Invalid) => self.send(&format!(
                "{tag} NO [AUTHENTICATIONFAILED] invalid user name or password\r\n"
            )),
            Err(LoginError::Throttled) => self.send(&format!(
                "{tag} NO [UNAVAILABLE] too many failed logins, try again later\r\n"
            )),
            Err(LoginError::InUse) => self.send(&format!(
                "{tag} NO [LIMIT] too many sessions of this user\r\n"
            )),
            Err(LoginError::Temporary) => {
                self.send(&format!("{tag} NO [UNAVAILABLE] try again later\r\n"))
            }
            Err(LoginError::Disabled) => self.send(&format!(
                "{tag} NO [AUTHORIZATIONFAILED] account disabled\r\n"
            )),
        }
    }

    /// CONDSTORE switched on by a command that uses it (RFC 7162 3.1): the client learns HIGHESTMODSEQ.
    fn enable_condstore(&mut self) {
        if self.condstore {
            return;
        }
        self.condstore = true;
        if let Some(v) = &self.view {
            let line = format!(
                "* OK [HIGHESTMODSEQ {}] CONDSTORE enabled\r\n",
                v.shown.highest_modseq
            );
            self.send(&line);
        }
    }

    fn report(&self, expunges: bool) -> Report {
        Report {
            expunges,
            condstore: self.condstore,
            qresync: self.qresync,
            rev1: !self.rev2,
        }
    }

    /// Brings the selected folder's view up to date (after a command, during IDLE).
    pub fn refresh(&mut self, expunges: bool) {
        let Some(v) = &self.view else { return };
        let Some(user) = &self.user else { return };
        let Some(index) = self.access.store.index() else {
            return;
        };
        match index.snapshot(&user.mailbox, &v.folder, !v.read_only) {
            Ok(snap) => {
                let how = self.report(expunges);
                if let Some(v) = self.view.as_mut() {
                    let u = v.update(snap, how);
                    self.out.extend_from_slice(&u.lines);
                }
            }
            Err(IndexError::NoFolder(_)) => {
                // Deleted by another session.
                self.view = None;
                self.send("* BYE the selected folder was deleted\r\n");
                self.closing = true;
            }
            Err(e) => tracing::warn!(error = %e, "cannot refresh the selected folder"),
        }
    }

    /// Input during IDLE: DONE ends it.
    pub fn idle_input(&mut self) -> Option<Outcome> {
        let line = self.framer.line()?;
        let tag = self.idle_tag.take().unwrap_or_else(|| "*".into());
        match line {
            Ok(l) if l.eq_ignore_ascii_case(b"DONE") => {
                self.refresh(true);
                self.send(&format!("{tag} OK IDLE terminated\r\n"));
                Some(self.process())
            }
            _ => {
                self.send(&format!("{tag} BAD expected DONE\r\n"));
                Some(self.process())
            }
        }
    }

    fn execute(&mut self, tag: String, command: Command) -> Option<Outcome> {
        let t = tag.as_str();
        // Commands for any state.
        match &command {
            Command::Capability => {
                let c = self.capabilities();
                self.send(&format!(
                    "* CAPABILITY {c}\r\n{t} OK CAPABILITY completed\r\n"
                ));
                return None;
            }
            Command::Noop | Command::Check => {
                self.refresh(true);
                self.send(&format!("{t} OK done\r\n"));
                return None;
            }
            Command::Logout => {
                self.send(&format!("* BYE logging out\r\n{t} OK LOGOUT completed\r\n"));
                return Some(Outcome::Close);
            }
            Command::Id => {
                self.send(&format!(
                    "* ID (\"name\" \"tern\")\r\n{t} OK ID completed\r\n"
                ));
                return None;
            }
            _ => {}
        }
        if self.user.is_none() {
            return self.not_authenticated(t, command);
        }
        let expunges_after = match &command {
            Command::Fetch { uid, .. }
            | Command::Store { uid, .. }
            | Command::Search { uid, .. }
            | Command::Copy { uid, .. } => *uid,
            _ => true,
        };
        let selected_cmd = matches!(
            command,
            Command::Fetch { .. }
                | Command::Store { .. }
                | Command::Search { .. }
                | Command::Copy { .. }
                | Command::Expunge(_)
                | Command::Close
                | Command::Unselect
                | Command::Sort { .. }
                | Command::Thread { .. }
        );
        if selected_cmd && self.view.is_none() {
            self.send(&format!("{t} BAD no folder selected\r\n"));
            return None;
        }
        let command = self.stored_names(command);
        // Commands that read or change messages see the folder as it is now: what changed since the last
        // command is reported first (expunges only where the command allows them), so FETCH never shows
        // flags or a MODSEQ older than another session has already made.
        if matches!(
            command,
            Command::Fetch { .. }
                | Command::Store { .. }
                | Command::Search { .. }
                | Command::Copy { .. }
                | Command::Sort { .. }
                | Command::Thread { .. }
        ) {
            self.refresh(expunges_after);
        }
        let done = self.authenticated(t, command);
        if let Some(o) = done {
            return Some(o);
        }
        if self.pending.is_none() {
            self.finish_tagged(expunges_after);
        }
        None
    }

    /// The tagged line of the last command waits in `tail`; updates go before it.
    fn finish_tagged(&mut self, expunges: bool) {
        let tail = std::mem::take(&mut self.tail);
        if tail.is_empty() {
            return;
        }
        self.refresh(expunges);
        self.out.extend_from_slice(&tail);
    }

    fn not_authenticated(&mut self, t: &str, command: Command) -> Option<Outcome> {
        let may_login = self.tls || self.secure_peer;
        match command {
            Command::StartTls if self.starttls && !self.tls => {
                self.send(&format!("{t} OK begin TLS now\r\n"));
                Some(Outcome::StartTls)
            }
            Command::StartTls => {
                self.send(&format!(
                    "{t} BAD TLS is active already or not offered here\r\n"
                ));
                None
            }
            Command::Login { .. } | Command::Authenticate { .. } if !may_login => {
                self.send(&format!("{t} NO [PRIVACYREQUIRED] use TLS (STARTTLS or the implicit-TLS port) before logging in\r\n"));
                None
            }
            Command::Login { user, password } => Some(Outcome::Login(
                t.to_string(),
                crate::sasl::Credentials {
                    username: user,
                    password,
                },
            )),
            Command::Authenticate { mechanism, initial } => {
                let Some(m) = crate::sasl::Mechanism::parse(&mechanism) else {
                    self.send(&format!(
                        "{t} NO [CANNOT] unsupported mechanism {}\r\n",
                        Escaped(&mechanism)
                    ));
                    return None;
                };
                let step = crate::sasl::Exchange::start(m, initial.as_deref());
                self.sasl_step(t, step)
            }
            Command::Enable(_)
            | Command::Select { .. }
            | Command::Create(_)
            | Command::Delete(_)
            | Command::Rename(..)
            | Command::Subscribe(..)
            | Command::List { .. }
            | Command::Status(..)
            | Command::Append(..)
            | Command::Namespace
            | Command::Idle
            | Command::GetQuota(_)
            | Command::GetQuotaRoot(_)
            | Command::SetQuota => {
                self.send(&format!("{t} BAD log in first\r\n"));
                None
            }
            _ => {
                self.send(&format!("{t} BAD log in first\r\n"));
                None
            }
        }
    }

    fn authenticated(&mut self, t: &str, command: Command) -> Option<Outcome> {
        let mailbox = self.user.as_ref()?.mailbox.clone();
        let access = self.access.clone();
        let index = access.store.index()?;
        match command {
            Command::StartTls | Command::Login { .. } | Command::Authenticate { .. } => {
                self.tagged(&format!("{t} BAD already logged in\r\n"));
            }
            Command::Enable(caps) => {
                let mut enabled = Vec::new();
                for c in caps {
                    match c.as_str() {
                        "IMAP4REV2" => {
                            self.rev2 = true;
                            enabled.push("IMAP4rev2");
                        }
                        "CONDSTORE" => {
                            self.condstore = true;
                            enabled.push("CONDSTORE");
                        }
                        "QRESYNC" => {
                            self.condstore = true;
                            self.qresync = true;
                            enabled.push("QRESYNC");
                        }
                        _ => {}
                    }
                }
                self.send(
                    &format!("* ENABLED {}\r\n", enabled.join(" "))
                        .replace("ENABLED \r", "ENABLED\r"),
                );
                self.tagged(&format!("{t} OK ENABLE completed\r\n"));
            }
            Command::Namespace => {
                self.send("* NAMESPACE ((\"\" \".\")) NIL NIL\r\n");
                self.tagged(&format!("{t} OK NAMESPACE completed\r\n"));
            }
            Command::Idle => {
                self.refresh(true);
                self.send("+ idling\r\n");
                self.idle_tag = Some(t.to_string());
                return Some(Outcome::Idle);
            }
            Command::Select {
                mailbox: name,
                examine,
                condstore,
                qresync,
            } => {
                if self.view.take().is_some() && (self.qresync || self.rev2) {
                    self.send("* OK [CLOSED] previous folder closed\r\n");
                }
                if condstore {
                    self.condstore = true;
                }
                if qresync.is_some() && !self.qresync {
                    self.tagged(&format!("{t} BAD QRESYNC was not enabled\r\n"));
                    return None;
                }
                match index.snapshot(&mailbox, &name, !examine) {
                    Ok(snap) => self.selected(t, name, examine, snap, qresync, index, &mailbox),
                    Err(e) => self.tagged(&index_error(t, &e)),
                }
            }
            Command::Create(name) => {
                let name = name.trim_end_matches(idx::DELIMITER).to_string();
                match index.create(&mailbox, &name) {
                    Ok(()) => self.tagged(&format!("{t} OK CREATE completed\r\n")),
                    Err(e) => self.tagged(&index_error(t, &e)),
                }
            }
            Command::Delete(name) => {
                // A folder with folders below it may go: it becomes their \\Noselect parent (RFC 9051 6.3.4).
                if self.view.as_ref().is_some_and(|v| v.folder == name) {
                    self.view = None;
                }
                match index.delete(&mailbox, &name) {
                    Ok(()) => self.tagged(&format!("{t} OK DELETE completed\r\n")),
                    Err(e) => self.tagged(&index_error(t, &e)),
                }
            }
            Command::Rename(from, to) => match index.rename(&mailbox, &from, &to) {
                Ok(()) => self.tagged(&format!("{t} OK RENAME completed\r\n")),
                Err(e) => self.tagged(&index_error(t, &e)),
            },
            Command::Subscribe(name, on) => {
                match idx::folder_name(&name).and_then(|n| index.subscribe(&mailbox, &n, on)) {
                    Ok(()) => self.tagged(&format!("{t} OK done\r\n")),
                    Err(e) => self.tagged(&index_error(t, &e)),
                }
            }
            Command::List {
                reference,
                patterns,
                options,
                lsub,
            } => {
                self.list(t, index, &mailbox, &reference, &patterns, &options, lsub);
            }
            Command::Status(name, items) => match index.snapshot(&mailbox, &name, false) {
                Ok(snap) => {
                    let line = status_line(&self.shown_name(&name), &snap, &items);
                    self.out.extend_from_slice(&line);
                    self.tagged(&format!("{t} OK STATUS completed\r\n"));
                }
                Err(e) => self.tagged(&index_error(t, &e)),
            },
            Command::Append(name, messages) => {
                let mut new = Vec::new();
                for m in messages {
                    let flags = match parse_flags(&m.flags) {
                        Ok(f) => f,
                        Err(why) => {
                            self.tagged(&format!("{t} BAD {why}\r\n"));
                            return None;
                        }
                    };
                    if m.body.is_empty() {
                        self.tagged(&format!("{t} NO empty message\r\n"));
                        return None;
                    }
                    new.push(NewMessage {
                        body: mime::encode_binary(&m.body),
                        flags,
                        internal_date: m.date.unwrap_or_else(|| crate::clock::unix_now() as i64),
                    });
                }
                let adding: u64 = new.iter().map(|m| m.body.len() as u64).sum();
                if let Ok((usage, limits)) = self.quota(&mailbox) {
                    let over_bytes = limits.0.is_some_and(|b| usage.bytes + adding > b);
                    let over_count = limits
                        .1
                        .is_some_and(|m| usage.messages + new.len() as u64 > m);
                    if over_bytes || over_count {
                        tracing::info!(user = %mailbox, "APPEND refused: over quota");
                        self.tagged(&format!("{t} NO [OVERQUOTA] the mailbox is full\r\n"));
                        return None;
                    }
                }
                match index.append(&mailbox, &name, new) {
                    Ok((validity, uids)) => {
                        tracing::info!(user = %mailbox, folder = %Escaped(&name), messages = uids.len(), "appended");
                        self.tagged(&format!(
                            "{t} OK [APPENDUID {validity} {}] APPEND completed\r\n",
                            uid_set(&uids)
                        ));
                    }
                    Err(IndexError::NoFolder(_)) => {
                        self.tagged(&format!("{t} NO [TRYCREATE] no such folder\r\n"))
                    }
                    Err(e) => self.tagged(&index_error(t, &e)),
                }
            }
            Command::Close | Command::Unselect => {
                let v = self.view.take()?;
                if matches!(command, Command::Close) && !v.read_only {
                    let deleted: Vec<u32> = v
                        .shown
                        .messages
                        .iter()
                        .filter(|m| m.flags.system & flag::DELETED != 0)
                        .map(|m| m.uid)
                        .collect();
                    if let Err(e) = index.expunge(&mailbox, &v.folder, &deleted) {
                        self.tagged(&index_error(t, &e));
                        return None;
                    }
                }
                self.tagged(&format!("{t} OK done\r\n"));
            }
            Command::Expunge(set) => {
                let v = self.view.as_ref()?;
                if v.read_only {
                    self.tagged(&format!("{t} NO [READ-ONLY] the folder is read-only\r\n"));
                    return None;
                }
                let snap = match index.snapshot(&mailbox, &v.folder, false) {
                    Ok(s) => s,
                    Err(e) => {
                        self.tagged(&index_error(t, &e));
                        return None;
                    }
                };
                let allowed: Option<Vec<u32>> = set.as_ref().map(|s| self.resolve(s, true));
                let deleted: Vec<u32> = snap
                    .messages
                    .iter()
                    .filter(|m| m.flags.system & flag::DELETED != 0)
                    .filter(|m| {
                        allowed
                            .as_ref()
                            .is_none_or(|a| a.binary_search(&m.uid).is_ok())
                    })
                    .map(|m| m.uid)
                    .collect();
                let folder = v.folder.clone();
                match index.expunge(&mailbox, &folder, &deleted) {
                    Ok(()) => {
                        let hm = index
                            .snapshot(&mailbox, &folder, false)
                            .map(|s| s.highest_modseq)
                            .unwrap_or(0);
                        if self.condstore {
                            self.tagged(&format!(
                                "{t} OK [HIGHESTMODSEQ {hm}] EXPUNGE completed\r\n"
                            ));
                        } else {
                            self.tagged(&format!("{t} OK EXPUNGE completed\r\n"));
                        }
                    }
                    Err(e) => self.tagged(&index_error(t, &e)),
                }
            }
            Command::Search { uid, ret, key } => self.search(t, index, &mailbox, uid, ret, key),
            Command::Sort { uid, keys, key } => {
                let items = self.sort_data(index, &mailbox, &key);
                let mut items = items;
                crate::imap::sort::sort(&mut items, &keys);
                let mut line = String::from("* SORT");
                for d in &items {
                    line.push_str(&format!(" {}", if uid { d.uid } else { d.seq }));
                }
                self.send(&format!("{line}\r\n"));
                self.tagged(&format!("{t} OK SORT completed\r\n"));
            }
            Command::Thread {
                uid,
                references,
                key,
            } => {
                let mut items = self.sort_data(index, &mailbox, &key);
                let threads = if references {
                    crate::imap::thread::references(&items, uid)
                } else {
                    crate::imap::sort::ordered_subject(&mut items, uid)
                };
                self.send(&format!("* THREAD {threads}\r\n").replace("THREAD \r", "THREAD\r"));
                self.tagged(&format!("{t} OK THREAD completed\r\n"));
            }
            Command::Fetch {
                uid,
                set,
                items,
                changed_since,
                vanished,
            } => {
                self.fetch(t, index, &mailbox, uid, set, items, changed_since, vanished);
            }
            Command::Store {
                uid,
                set,
                op,
                silent,
                flags,
                unchanged_since,
            } => {
                self.store(
                    t,
                    index,
                    &mailbox,
                    uid,
                    set,
                    op,
                    silent,
                    flags,
                    unchanged_since,
                );
            }
            Command::Copy {
                uid,
                set,
                mailbox: target,
                moving,
            } => {
                self.copy(t, index, &mailbox, uid, set, &target, moving);
            }
            Command::GetQuotaRoot(name) => {
                let mut line = b"* QUOTAROOT ".to_vec();
                mailbox_name(&mut line, &self.shown_name(&name));
                line.extend_from_slice(b" \"\"\r\n");
                self.out.extend_from_slice(&line);
                match self.quota_line(&mailbox) {
                    Ok(q) => {
                        self.send(&q);
                        self.tagged(&format!("{t} OK GETQUOTAROOT completed\r\n"));
                    }
                    Err(why) => self.tagged(&format!("{t} NO [UNAVAILABLE] {why}\r\n")),
                }
            }
            Command::GetQuota(root) => {
                if !root.is_empty() {
                    self.tagged(&format!(
                        "{t} NO [NONEXISTENT] the only quota root is \"\"\r\n"
                    ));
                    return None;
                }
                match self.quota_line(&mailbox) {
                    Ok(q) => {
                        self.send(&q);
                        self.tagged(&format!("{t} OK GETQUOTA completed\r\n"));
                    }
                    Err(why) => self.tagged(&format!("{t} NO [UNAVAILABLE] {why}\r\n")),
                }
            }
            Command::SetQuota => {
                self.tagged(&format!(
                    "{t} NO [NOPERM] quotas are set by the administrator (tern user set-quota)\r\n"
                ));
            }
            Command::Capability
            | Command::Noop
            | Command::Check
            | Command::Logout
            | Command::Id => {}
        }
        None
    }

    /// A name as the store keeps it (modified UTF-7): IMAP4rev2 sessions send UTF-8; an IMAP4rev1 client
    /// that sends 8-bit names anyway is taken to mean UTF-8 too.
    fn stored_name(&self, name: &str) -> String {
        if name == "INBOX" || (!self.rev2 && name.is_ascii()) {
            name.to_string()
        } else {
            crate::imap::utf7::encode(name)
        }
    }

    /// A stored name as this session shows it.
    fn shown_name(&self, stored: &str) -> String {
        if self.rev2 {
            crate::imap::utf7::decode(stored).unwrap_or_else(|| stored.to_string())
        } else {
            stored.to_string()
        }
    }

    fn stored_names(&self, command: Command) -> Command {
        let n = |s: String| self.stored_name(&s);
        match command {
            Command::Select {
                mailbox,
                examine,
                condstore,
                qresync,
            } => Command::Select {
                mailbox: n(mailbox),
                examine,
                condstore,
                qresync,
            },
            Command::Create(m) => Command::Create(n(m)),
            Command::Delete(m) => Command::Delete(n(m)),
            Command::Rename(a, b) => Command::Rename(n(a), n(b)),
            Command::Subscribe(m, on) => Command::Subscribe(n(m), on),
            Command::List {
                reference,
                patterns,
                options,
                lsub,
            } => Command::List {
                reference: n(reference),
                patterns: patterns.into_iter().map(n).collect(),
                options,
                lsub,
            },
            Command::Status(m, items) => Command::Status(n(m), items),
            Command::Append(m, msgs) => Command::Append(n(m), msgs),
            Command::Copy {
                uid,
                set,
                mailbox,
                moving,
            } => Command::Copy {
                uid,
                set,
                mailbox: n(mailbox),
                moving,
            },
            other => other,
        }
    }

    /// The user's quota and usage (RFC 9208): the limits delivery enforces, on one root "" for the whole
    /// mailbox. STORAGE is in units of 1024 octets.
    fn quota(
        &self,
        mailbox: &crate::smtp::Mailbox,
    ) -> Result<(crate::mailbox::Usage, (Option<u64>, Option<u64>)), String> {
        let directory = self.access.directory.clone();
        let address = mailbox.to_string();
        let limits = tokio::runtime::Handle::current()
            .block_on(directory.quota(&address))
            .map_err(|e| {
                tracing::error!(error = %e, "cannot read the quota");
                "cannot read the quota now".to_string()
            })?
            .unwrap_or((None, None));
        let usage = self.access.store.usage(mailbox).map_err(|e| {
            tracing::error!(error = %e, "cannot read the mailbox usage");
            "cannot read the usage now".to_string()
        })?;
        Ok((usage, limits))
    }

    fn quota_line(&self, mailbox: &crate::smtp::Mailbox) -> Result<String, String> {
        let (usage, (bytes, messages)) = self.quota(mailbox)?;
        let mut parts = Vec::new();
        if let Some(b) = bytes {
            parts.push(format!(
                "STORAGE {} {}",
                usage.bytes.div_ceil(1024),
                b / 1024
            ));
        }
        if let Some(m) = messages {
            parts.push(format!("MESSAGE {} {m}", usage.messages));
        }
        Ok(format!("* QUOTA \"\" ({})\r\n", parts.join(" ")))
    }

    fn tagged(&mut self, line: &str) {
        self.tail.extend_from_slice(line.as_bytes());
    }

    #[allow(clippy::too_many_arguments)]
    fn selected(
        &mut self,
        t: &str,
        name: String,
        examine: bool,
        snap: Arc<Snapshot>,
        qresync: Option<parse::Qresync>,
        index: &dyn MailIndex,
        mailbox: &crate::smtp::Mailbox,
    ) {
        let view = View::new(name.clone(), examine, snap.clone());
        self.out.extend_from_slice(&view.flags_lines());
        self.send(&format!("* {} EXISTS\r\n", view.exists()));
        if !self.rev2 {
            self.send(&format!("* {} RECENT\r\n", view.recent.len()));
            if let Some(pos) = snap
                .messages
                .iter()
                .position(|m| m.flags.system & flag::SEEN == 0)
            {
                self.send(&format!("* OK [UNSEEN {}] first unseen\r\n", pos + 1));
            }
        }
        self.send(&format!(
            "* OK [UIDVALIDITY {}] UIDs valid\r\n",
            snap.uidvalidity
        ));
        self.send(&format!(
            "* OK [UIDNEXT {}] predicted next UID\r\n",
            snap.uidnext
        ));
        self.send(&format!(
            "* OK [HIGHESTMODSEQ {}] highest\r\n",
            snap.highest_modseq
        ));
        if self.rev2 {
            self.out.extend_from_slice(b"* LIST () \".\" ");
            let shown = self.shown_name(&name);
            mailbox_name(&mut self.out, &shown);
            self.out.extend_from_slice(b"\r\n");
        }
        if let Some(q) = qresync
            && q.uidvalidity == snap.uidvalidity
        {
            let in_known = |u: u32| {
                q.known_uids
                    .as_ref()
                    .is_none_or(|k| SeqSet::contains(k, u, snap.uidnext.saturating_sub(1)))
            };
            if let Ok(gone) = index.vanished_since(mailbox, &name, q.modseq) {
                // Read after the snapshot: a message expunged since is still in this view (its
                // expunge is reported by the next update), not vanished.
                let gone: Vec<u32> = gone
                    .into_iter()
                    .filter(|u| in_known(*u) && snap.get(*u).is_none())
                    .collect();
                if !gone.is_empty() {
                    self.send(&format!("* VANISHED (EARLIER) {}\r\n", uid_set(&gone)));
                }
            }
            for (i, m) in snap.messages.iter().enumerate() {
                if m.modseq > q.modseq && in_known(m.uid) {
                    let mut line = format!("* {} FETCH (UID {} FLAGS ", i + 1, m.uid).into_bytes();
                    flag_list(&mut line, &m.flags, false);
                    line.extend_from_slice(format!(" MODSEQ ({}))\r\n", m.modseq).as_bytes());
                    self.out.extend_from_slice(&line);
                }
            }
        }
        self.view = Some(view);
        let mode = if examine { "READ-ONLY" } else { "READ-WRITE" };
        self.tagged(&format!("{t} OK [{mode}] SELECT completed\r\n"));
    }

    #[allow(clippy::too_many_arguments)]
    fn list(
        &mut self,
        t: &str,
        index: &dyn MailIndex,
        mailbox: &crate::smtp::Mailbox,
        reference: &str,
        patterns: &[String],
        options: &ListOptions,
        lsub: bool,
    ) {
        if patterns.len() == 1 && patterns[0].is_empty() {
            let kind = if lsub { "LSUB" } else { "LIST" };
            self.send(&format!("* {kind} (\\Noselect) \".\" \"\"\r\n"));
            self.tagged(&format!("{t} OK {kind} completed\r\n"));
            return;
        }
        let folders = match index.list(mailbox) {
            Ok(f) => f,
            Err(e) => {
                self.tagged(&index_error(t, &e));
                return;
            }
        };
        // Every level of every name: real folders, subscribed names, and the parents they imply.
        #[derive(Default, Clone)]
        struct Info {
            exists: bool,
            subscribed: bool,
            special: Option<idx::SpecialUse>,
        }
        let mut names: std::collections::BTreeMap<String, Info> = std::collections::BTreeMap::new();
        for f in &folders {
            let mut acc = String::new();
            for (i, level) in f.name.split(idx::DELIMITER).enumerate() {
                if i > 0 {
                    acc.push(idx::DELIMITER);
                }
                acc.push_str(level);
                names.entry(acc.clone()).or_default();
            }
            let e = names.entry(f.name.clone()).or_default();
            e.exists |= f.exists;
            e.subscribed |= f.subscribed;
            e.special = e.special.or(f.special_use);
        }
        let matches = |name: &str| {
            patterns.iter().any(|p| {
                let full = format!("{reference}{p}");
                list_match(full.as_bytes(), name.as_bytes())
                    || (name == "INBOX"
                        && list_match(full.to_ascii_uppercase().as_bytes(), b"INBOX"))
            })
        };
        let below = |name: &str| {
            let prefix = format!("{name}{}", idx::DELIMITER);
            names
                .iter()
                .filter(move |(n, _)| n.starts_with(&prefix))
                .map(|(n, i)| (n.clone(), i.clone()))
                .collect::<Vec<_>>()
        };
        let subscribed_only = lsub || options.subscribed;
        let kind = if lsub { "LSUB" } else { "LIST" };
        // INBOX first, as clients show it.
        let mut order: Vec<(&String, &Info)> = names.iter().collect();
        order.sort_by_key(|(n, _)| (n.as_str() != "INBOX", n.as_str()));
        for (name, info) in order {
            if !matches(name) {
                continue;
            }
            let children = below(name);
            let has_children = children.iter().any(|(_, i)| i.exists);
            let mut childinfo = false;
            if subscribed_only && !info.subscribed {
                let subscribed_below: Vec<&String> = children
                    .iter()
                    .filter(|(_, i)| i.subscribed)
                    .map(|(n, _)| n)
                    .collect();
                if subscribed_below.is_empty() {
                    continue;
                }
                if lsub {
                    // RFC 3501 6.3.9: a parent of subscribed names reached by % is shown as \Noselect.
                    let pct = patterns.iter().any(|p| p.contains('%'));
                    if !pct {
                        continue;
                    }
                } else if options.recursive && subscribed_below.iter().any(|n| !matches(n)) {
                    childinfo = true;
                } else {
                    continue;
                }
            }
            if !subscribed_only && !info.exists && !has_children && children.is_empty() {
                // A subscription to a folder that is gone is not a folder.
                continue;
            }
            if options.special_use && info.special.is_none() {
                continue;
            }
            let mut attrs: Vec<&str> = Vec::new();
            if lsub {
                if !info.subscribed {
                    attrs.push("\\Noselect");
                }
            } else {
                if !info.exists {
                    if info.subscribed || options.subscribed {
                        attrs.push("\\NonExistent");
                    } else {
                        attrs.push("\\Noselect");
                    }
                }
                if !childinfo || options.return_children {
                    attrs.push(if has_children {
                        "\\HasChildren"
                    } else {
                        "\\HasNoChildren"
                    });
                }
                if info.subscribed && (options.return_subscribed || options.subscribed) {
                    attrs.push("\\Subscribed");
                }
                if let Some(u) = info.special {
                    attrs.push(u.attribute());
                }
            }
            let mut line = format!("* {kind} ({}) \".\" ", attrs.join(" ")).into_bytes();
            mailbox_name(&mut line, &self.shown_name(name));
            if childinfo {
                line.extend_from_slice(b" (\"CHILDINFO\" (\"SUBSCRIBED\"))");
            }
            line.extend_from_slice(b"\r\n");
            self.out.extend_from_slice(&line);
            if !options.return_status.is_empty()
                && info.exists
                && let Ok(snap) = index.snapshot(mailbox, name, false)
            {
                let l = status_line(&self.shown_name(name), &snap, &options.return_status);
                self.out.extend_from_slice(&l);
            }
        }
        self.tagged(&format!("{t} OK {kind} completed\r\n"));
    }

    /// The UIDs a set names in the view, ascending; sequence numbers past the end name nothing.
    fn resolve(&self, set: &SeqSet, uid: bool) -> Vec<u32> {
        let Some(v) = &self.view else {
            return Vec::new();
        };
        let ranges = match set {
            SeqSet::Saved => {
                return v
                    .saved
                    .iter()
                    .copied()
                    .filter(|u| v.seq_of(*u).is_some())
                    .collect();
            }
            SeqSet::Ranges(r) => r,
        };
        if uid {
            let largest = v.uids.last().copied().unwrap_or(0);
            v.uids
                .iter()
                .copied()
                .filter(|u| SeqSet::contains(ranges, *u, largest))
                .collect()
        } else {
            let n = v.exists();
            let mut out: Vec<u32> = Vec::new();
            for &(a, b) in ranges {
                let a = if a == parse::STAR { n } else { a };
                let b = if b == parse::STAR { n } else { b };
                let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
                for s in lo.max(1)..=hi.min(n) {
                    if let Some(u) = v.uid_of(s) {
                        out.push(u);
                    }
                }
            }
            out.sort();
            out.dedup();
            out
        }
    }

    /// A sequence set that names numbers past the end is an error for sequence numbers (RFC 9051 6.4.5).
    fn seq_out_of_range(&self, set: &SeqSet, uid: bool) -> bool {
        let (Some(v), SeqSet::Ranges(r), false) = (&self.view, set, uid) else {
            return false;
        };
        let n = v.exists();
        r.iter()
            .any(|&(a, b)| (a != parse::STAR && a > n) || (b != parse::STAR && b > n))
    }

    fn search(
        &mut self,
        t: &str,
        index: &dyn MailIndex,
        mailbox: &crate::smtp::Mailbox,
        uid: bool,
        ret: Option<Vec<SearchReturn>>,
        key: SearchKey,
    ) {
        if search::uses_modseq(&key) {
            self.enable_condstore();
        }
        let hits = self.search_hits(index, mailbox, &key);
        self.search_results(t, uid, ret, &key, hits);
    }

    /// What SORT and THREAD need of the messages a search program matches.
    fn sort_data(
        &self,
        index: &dyn MailIndex,
        mailbox: &crate::smtp::Mailbox,
        key: &SearchKey,
    ) -> Vec<crate::imap::sort::SortData> {
        let hits = self.search_hits(index, mailbox, key);
        let Some(v) = &self.view else {
            return Vec::new();
        };
        let mut out = Vec::with_capacity(hits.len());
        for (seq, uid, _) in hits {
            let Some(meta) = v.shown.get(uid) else {
                continue;
            };
            let raw = match index.read(mailbox, &v.folder, uid) {
                Ok(Some(r)) => r,
                _ => continue,
            };
            out.push(crate::imap::sort::SortData::of(seq, meta, &raw));
        }
        out
    }

    /// The messages a search program matches: (sequence number, UID, MODSEQ), in sequence order.
    fn search_hits(
        &self,
        index: &dyn MailIndex,
        mailbox: &crate::smtp::Mailbox,
        key: &SearchKey,
    ) -> Vec<(u32, u32, u64)> {
        let Some(v) = &self.view else {
            return Vec::new();
        };
        let need_text = search::needs_text(key);
        let ctx = search::Context {
            max_seq: v.exists(),
            max_uid: v.uids.last().copied().unwrap_or(0),
            saved: &v.saved,
        };
        let now = crate::clock::unix_now() as i64;
        // Flags and MODSEQs as they are now: another session may have changed them since this one's view
        // was last brought up to date, and a MODSEQ must never go back (RFC 7162 3.1.4).
        let current = index.snapshot(mailbox, &v.folder, false).ok();
        let mut hits: Vec<(u32, u32, u64)> = Vec::new(); // (seq, uid, modseq)
        for (i, u) in v.uids.iter().enumerate() {
            let Some(meta) = current
                .as_ref()
                .and_then(|c| c.get(*u))
                .or_else(|| v.shown.get(*u))
            else {
                continue;
            };
            let c = search::Candidate {
                seq: i as u32 + 1,
                meta,
                recent: v.recent.contains(u),
            };
            let text = if need_text {
                match index.read(mailbox, &v.folder, *u) {
                    Ok(Some(raw)) => Some(search::Text::of(&raw)),
                    _ => None,
                }
            } else {
                None
            };
            if search::matches(key, &c, &ctx, text.as_ref(), now) {
                hits.push((c.seq, *u, meta.modseq));
            }
        }
        hits
    }

    fn search_results(
        &mut self,
        t: &str,
        uid: bool,
        ret: Option<Vec<SearchReturn>>,
        key: &SearchKey,
        hits: Vec<(u32, u32, u64)>,
    ) {
        let numbers: Vec<u32> = hits.iter().map(|h| if uid { h.1 } else { h.0 }).collect();
        let top_modseq = hits.iter().map(|h| h.2).max();
        let with_modseq = search::uses_modseq(key);
        match ret {
            None => {
                let mut line = String::from("* SEARCH");
                for n in &numbers {
                    line.push_str(&format!(" {n}"));
                }
                if with_modseq && let Some(m) = top_modseq {
                    line.push_str(&format!(" (MODSEQ {m})"));
                }
                self.send(&format!("{line}\r\n"));
            }
            Some(opts) => {
                let opts = if opts.is_empty() {
                    vec![SearchReturn::All]
                } else {
                    opts
                };
                let save = opts.contains(&SearchReturn::Save);
                if save {
                    let mut uids: Vec<u32> = hits.iter().map(|h| h.1).collect();
                    uids.sort();
                    if let Some(v) = self.view.as_mut() {
                        v.saved = uids;
                    }
                }
                let reported: Vec<&SearchReturn> =
                    opts.iter().filter(|o| **o != SearchReturn::Save).collect();
                if !reported.is_empty() || !save {
                    let mut line = format!("* ESEARCH (TAG \"{t}\")");
                    if uid {
                        line.push_str(" UID");
                    }
                    for o in &reported {
                        match o {
                            SearchReturn::Min if !numbers.is_empty() => line
                                .push_str(&format!(" MIN {}", numbers.iter().min().unwrap_or(&0))),
                            SearchReturn::Max if !numbers.is_empty() => line
                                .push_str(&format!(" MAX {}", numbers.iter().max().unwrap_or(&0))),
                            SearchReturn::Count => {
                                line.push_str(&format!(" COUNT {}", numbers.len()))
                            }
                            SearchReturn::All if !numbers.is_empty() => {
                                let mut sorted = numbers.clone();
                                sorted.sort();
                                line.push_str(&format!(" ALL {}", uid_set(&sorted)));
                            }
                            _ => {}
                        }
                    }
                    // RFC 7162 3.1.5: the highest MODSEQ of the messages each returned item stands for.
                    let whole = reported
                        .iter()
                        .any(|o| matches!(o, SearchReturn::All | SearchReturn::Count));
                    let modseq = if whole {
                        top_modseq
                    } else {
                        let by_number = |n: Option<&u32>| {
                            n.and_then(|n| {
                                hits.iter().find(|h| (if uid { h.1 } else { h.0 }) == *n)
                            })
                            .map(|h| h.2)
                        };
                        let mut m = None;
                        if reported.contains(&&SearchReturn::Min) {
                            m = m.max(by_number(numbers.iter().min()));
                        }
                        if reported.contains(&&SearchReturn::Max) {
                            m = m.max(by_number(numbers.iter().max()));
                        }
                        m
                    };
                    if with_modseq && let Some(m) = modseq {
                        line.push_str(&format!(" MODSEQ {m}"));
                    }
                    self.send(&format!("{line}\r\n"));
                }
            }
        }
        self.tagged(&format!("{t} OK SEARCH completed\r\n"));
    }

    #[allow(clippy::too_many_arguments)]
    fn fetch(
        &mut self,
        t: &str,
        index: &dyn MailIndex,
        mailbox: &crate::smtp::Mailbox,
        uid: bool,
        set: SeqSet,
        mut items: Vec<FetchAtt>,
        changed_since: Option<u64>,
        vanished: bool,
    ) {
        if self.seq_out_of_range(&set, uid) {
            self.tagged(&format!("{t} BAD message sequence number out of range\r\n"));
            return;
        }
        if changed_since.is_some() || items.contains(&FetchAtt::ModSeq) {
            self.enable_condstore();
        }
        let mut uids = self.resolve(&set, uid);
        let Some(v) = &self.view else { return };
        if let Some(since) = changed_since {
            if vanished
                && let SeqSet::Ranges(r) = &set
                && let Ok(gone) = index.vanished_since(mailbox, &v.folder, since)
            {
                let largest = v.shown.uidnext.saturating_sub(1);
                let gone: Vec<u32> = gone
                    .into_iter()
                    .filter(|u| SeqSet::contains(r, *u, largest) && v.seq_of(*u).is_none())
                    .collect();
                if !gone.is_empty() {
                    self.send(&format!("* VANISHED (EARLIER) {}\r\n", uid_set(&gone)));
                }
            }
            let v = self
                .view
                .as_ref()
                .unwrap_or_else(|| unreachable!("checked above"));
            uids.retain(|u| v.shown.get(*u).is_some_and(|m| m.modseq > since));
        }
        if uid && !items.contains(&FetchAtt::Uid) {
            items.insert(0, FetchAtt::Uid);
        }
        // An item asked for twice is answered once.
        let mut seen = Vec::with_capacity(items.len());
        items.retain(|i| {
            if seen.contains(i) {
                false
            } else {
                seen.push(i.clone());
                true
            }
        });
        let modseq = self.condstore;
        self.fetch_on(PendingFetch {
            tag: t.to_string(),
            uid_cmd: uid,
            uids,
            next: 0,
            items,
            modseq,
        });
    }

    fn fetch_on(&mut self, mut p: PendingFetch) {
        let Some(user) = &self.user else { return };
        let mailbox = user.mailbox.clone();
        let access = self.access.clone();
        let Some(index) = access.store.index() else {
            return;
        };
        // The message itself is read for its content, or for its structure when that is not cached.
        let needs_content = p.items.iter().any(|i| {
            !matches!(
                i,
                FetchAtt::Flags
                    | FetchAtt::InternalDate
                    | FetchAtt::Rfc822Size
                    | FetchAtt::Uid
                    | FetchAtt::ModSeq
                    | FetchAtt::Envelope
                    | FetchAtt::Body
                    | FetchAtt::BodyStructure
            )
        });
        let wants_structure = p.items.iter().any(|i| {
            matches!(
                i,
                FetchAtt::Envelope | FetchAtt::Body | FetchAtt::BodyStructure
            )
        });
        let owner = mailbox.to_string();
        let sets_seen = p.items.iter().any(|i| {
            matches!(
                i,
                FetchAtt::Rfc822
                    | FetchAtt::Rfc822Text
                    | FetchAtt::Section { peek: false, .. }
                    | FetchAtt::Binary { peek: false, .. }
            )
        });
        // The folder as it is now, for a FETCH that reads no message: flags and MODSEQs another session
        // has changed since this view was brought up to date are shown as they are (RFC 7162 3.1.4.1).
        let mut current: Option<Arc<Snapshot>> = None;
        while p.next < p.uids.len() {
            if self.out.len() > FLUSH_AT {
                self.pending = Some(p);
                return;
            }
            let u = p.uids[p.next];
            p.next += 1;
            let Some(v) = self.view.as_ref() else { return };
            let (Some(seq), Some(meta)) = (v.seq_of(u), v.shown.get(u).cloned()) else {
                continue;
            };
            let folder = v.folder.clone();
            let read_only = v.read_only;
            let recent = v.recent.contains(&u);
            let key = (owner.clone(), folder.clone(), v.uidvalidity, u, meta.size);
            let mut structure = if wants_structure {
                access.structures.get(&key)
            } else {
                None
            };
            let needs_body = needs_content || (wants_structure && structure.is_none());
            let body = if needs_body {
                match index.read(&mailbox, &folder, u) {
                    Ok(Some(b)) => Some(b),
                    // Expunged by another session: nothing to show for it.
                    Ok(None) => continue,
                    Err(e) => {
                        tracing::warn!(error = %e, uid = u, "cannot read a message");
                        continue;
                    }
                }
            } else {
                None
            };
            let mut meta = meta;
            let mut flags_changed = false;
            // Reading the message took time in which another session may have changed its flags: show
            // them as they are now (the view notes it, so they are not reported twice).
            let now = if body.is_some() {
                // Reading took time: look again.
                index.snapshot(&mailbox, &folder, false).ok()
            } else {
                if current.is_none() {
                    current = index.snapshot(&mailbox, &folder, false).ok();
                }
                current.clone()
            };
            if let Some(now) = now
                && let Some(current) = now.get(u)
                && current.modseq > meta.modseq
            {
                meta.flags = current.flags.clone();
                meta.modseq = current.modseq;
                if let Some(v) = self.view.as_mut() {
                    v.reported(u, meta.flags.clone(), meta.modseq);
                    let lines = v.announce(&meta.flags);
                    self.out.extend_from_slice(&lines);
                }
                // Marked as reported, so this line must carry them.
                flags_changed = true;
            }
            if sets_seen && !read_only && meta.flags.system & flag::SEEN == 0 {
                let seen = Flags {
                    system: flag::SEEN,
                    keywords: vec![],
                };
                if let Ok(r) = index.store(&mailbox, &folder, &[u], FlagOp::Add, &seen, None)
                    && let Some(s) = r.stored.first()
                {
                    meta.flags = s.flags.clone();
                    meta.modseq = s.modseq;
                    flags_changed = true;
                    if let Some(v) = self.view.as_mut() {
                        v.reported(u, s.flags.clone(), s.modseq);
                    }
                }
            }
            let mut line = format!("* {seq} FETCH (").into_bytes();
            let mut first = true;
            let mut sep = |line: &mut Vec<u8>| {
                if !first {
                    line.push(b' ');
                }
                first = false;
            };
            let entity = body.as_deref().map(mime::parse);
            if wants_structure
                && structure.is_none()
                && let Some(e) = &entity
            {
                let s = Arc::new(crate::access::imap::cache::Structure::of(e));
                access.structures.insert(key, s.clone());
                structure = Some(s);
            }
            let mut flags_done = false;
            for item in &p.items {
                sep(&mut line);
                match item {
                    FetchAtt::Flags => {
                        line.extend_from_slice(b"FLAGS ");
                        flag_list(&mut line, &meta.flags, !self.rev2 && recent);
                        flags_done = true;
                    }
                    FetchAtt::Uid => line.extend_from_slice(format!("UID {u}").as_bytes()),
                    FetchAtt::InternalDate => line.extend_from_slice(
                        format!("INTERNALDATE {}", internal_date(meta.internal_date)).as_bytes(),
                    ),
                    FetchAtt::Rfc822Size => {
                        line.extend_from_slice(format!("RFC822.SIZE {}", meta.size).as_bytes())
                    }
                    FetchAtt::ModSeq => {
                        line.extend_from_slice(format!("MODSEQ ({})", meta.modseq).as_bytes())
                    }
                    FetchAtt::Envelope => {
                        line.extend_from_slice(b"ENVELOPE ");
                        if let Some(s) = &structure {
                            line.extend_from_slice(&s.envelope);
                        }
                    }
                    FetchAtt::Body => {
                        line.extend_from_slice(b"BODY ");
                        if let Some(s) = &structure {
                            line.extend_from_slice(&s.body);
                        }
                    }
                    FetchAtt::BodyStructure => {
                        line.extend_from_slice(b"BODYSTRUCTURE ");
                        if let Some(s) = &structure {
                            line.extend_from_slice(&s.bodystructure);
                        }
                    }
                    FetchAtt::Rfc822 => {
                        line.extend_from_slice(b"RFC822 ");
                        literal(&mut line, body.as_deref().unwrap_or_default());
                    }
                    FetchAtt::Rfc822Header => {
                        line.extend_from_slice(b"RFC822.HEADER ");
                        literal(
                            &mut line,
                            entity.as_ref().map(|e| e.header).unwrap_or_default(),
                        );
                    }
                    FetchAtt::Rfc822Text => {
                        line.extend_from_slice(b"RFC822.TEXT ");
                        literal(
                            &mut line,
                            entity.as_ref().map(|e| e.body).unwrap_or_default(),
                        );
                    }
                    FetchAtt::Section {
                        section, partial, ..
                    } => {
                        let data = entity.as_ref().and_then(|e| {
                            section_data(e, body.as_deref().unwrap_or_default(), section)
                        });
                        line.extend_from_slice(b"BODY[");
                        line.extend_from_slice(section_label(section).as_bytes());
                        line.push(b']');
                        put_partial(&mut line, data.as_deref(), *partial, false);
                    }
                    FetchAtt::Binary { part, partial, .. } => {
                        let data = binary(entity.as_ref(), body.as_deref(), part);
                        line.extend_from_slice(format!("BINARY[{}]", part_label(part)).as_bytes());
                        put_partial(&mut line, data.as_deref(), *partial, true);
                    }
                    FetchAtt::BinarySize(part) => {
                        let n =
                            binary(entity.as_ref(), body.as_deref(), part).map_or(0, |d| d.len());
                        line.extend_from_slice(
                            format!("BINARY.SIZE[{}] {n}", part_label(part)).as_bytes(),
                        );
                    }
                }
            }
            if flags_changed && !flags_done {
                line.extend_from_slice(b" FLAGS ");
                flag_list(&mut line, &meta.flags, !self.rev2 && recent);
            }
            if p.modseq && !p.items.contains(&FetchAtt::ModSeq) {
                line.extend_from_slice(format!(" MODSEQ ({})", meta.modseq).as_bytes());
            }
            if !p.uid_cmd && flags_changed && !p.items.contains(&FetchAtt::Uid) && self.condstore {
                line.extend_from_slice(format!(" UID {u}").as_bytes());
            }
            line.extend_from_slice(b")\r\n");
            self.out.extend_from_slice(&line);
        }
        self.tail
            .extend_from_slice(format!("{} OK FETCH completed\r\n", p.tag).as_bytes());
        let expunges = p.uid_cmd;
        self.finish_tagged(expunges);
    }

    #[allow(clippy::too_many_arguments)]
    fn store(
        &mut self,
        t: &str,
        index: &dyn MailIndex,
        mailbox: &crate::smtp::Mailbox,
        uid: bool,
        set: SeqSet,
        op: StoreOp,
        silent: bool,
        flags: Vec<String>,
        unchanged_since: Option<u64>,
    ) {
        if self.view.as_ref().is_some_and(|v| v.read_only) {
            self.tagged(&format!("{t} NO [READ-ONLY] the folder is read-only\r\n"));
            return;
        }
        if self.seq_out_of_range(&set, uid) {
            self.tagged(&format!("{t} BAD message sequence number out of range\r\n"));
            return;
        }
        let flags = match parse_flags(&flags) {
            Ok(f) => f,
            Err(why) => {
                self.tagged(&format!("{t} BAD {why}\r\n"));
                return;
            }
        };
        if unchanged_since.is_some() {
            self.enable_condstore();
        }
        let uids = self.resolve(&set, uid);
        let Some(v) = &self.view else { return };
        let folder = v.folder.clone();
        let op = match op {
            StoreOp::Replace => FlagOp::Replace,
            StoreOp::Add => FlagOp::Add,
            StoreOp::Remove => FlagOp::Remove,
        };
        let result = match index.store(mailbox, &folder, &uids, op, &flags, unchanged_since) {
            Ok(r) => r,
            Err(e) => {
                self.tagged(&index_error(t, &e));
                return;
            }
        };
        for s in &result.stored {
            let Some(v) = self.view.as_mut() else { return };
            let lines = v.announce(&s.flags);
            self.out.extend_from_slice(&lines);
            let Some(v) = self.view.as_mut() else { return };
            let Some(seq) = v.seq_of(s.uid) else { continue };
            let recent = v.recent.contains(&s.uid);
            v.reported(s.uid, s.flags.clone(), s.modseq);
            if !silent || unchanged_since.is_some() {
                let mut line = format!("* {seq} FETCH (").into_bytes();
                if !silent {
                    line.extend_from_slice(b"FLAGS ");
                    flag_list(&mut line, &s.flags, !self.rev2 && recent);
                }
                if uid {
                    line.extend_from_slice(
                        format!("{}UID {}", if silent { "" } else { " " }, s.uid).as_bytes(),
                    );
                }
                if self.condstore {
                    let lead = if silent && !uid { "" } else { " " };
                    line.extend_from_slice(format!("{lead}MODSEQ ({})", s.modseq).as_bytes());
                }
                line.extend_from_slice(b")\r\n");
                self.out.extend_from_slice(&line);
            }
        }
        if result.modified.is_empty() {
            self.tagged(&format!("{t} OK STORE completed\r\n"));
        } else {
            let v = self.view.as_ref();
            let mut ids: Vec<u32> = result
                .modified
                .iter()
                .filter_map(|u| {
                    if uid {
                        Some(*u)
                    } else {
                        v.and_then(|v| v.seq_of(*u))
                    }
                })
                .collect();
            ids.sort();
            self.tagged(&format!(
                "{t} OK [MODIFIED {}] conditional STORE failed for some\r\n",
                uid_set(&ids)
            ));
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn copy(
        &mut self,
        t: &str,
        index: &dyn MailIndex,
        mailbox: &crate::smtp::Mailbox,
        uid: bool,
        set: SeqSet,
        target: &str,
        moving: bool,
    ) {
        if self.seq_out_of_range(&set, uid) {
            self.tagged(&format!("{t} BAD message sequence number out of range\r\n"));
            return;
        }
        let uids = self.resolve(&set, uid);
        let Some(v) = &self.view else { return };
        if moving && v.read_only {
            self.tagged(&format!("{t} NO [READ-ONLY] the folder is read-only\r\n"));
            return;
        }
        let folder = v.folder.clone();
        match index.copy(mailbox, &folder, &uids, target) {
            Ok((validity, pairs)) => {
                self.train(index, mailbox, &folder, target, &pairs);
                let code = if pairs.is_empty() {
                    String::new()
                } else {
                    let src: Vec<u32> = pairs.iter().map(|p| p.0).collect();
                    let dst: Vec<u32> = pairs.iter().map(|p| p.1).collect();
                    format!(
                        "[COPYUID {validity} {} {}] ",
                        list_set(&src),
                        list_set(&dst)
                    )
                };
                if moving {
                    if !code.is_empty() {
                        self.send(&format!("* OK {code}moved\r\n"));
                    }
                    let moved: Vec<u32> = pairs.iter().map(|p| p.0).collect();
                    if let Err(e) = index.expunge(mailbox, &folder, &moved) {
                        self.tagged(&index_error(t, &e));
                        return;
                    }
                    // The expunges are reported even for MOVE by sequence number (RFC 6851 3.3).
                    self.refresh(true);
                    self.tagged(&format!("{t} OK MOVE completed\r\n"));
                } else {
                    self.tagged(&format!("{t} OK {code}COPY completed\r\n"));
                }
            }
            Err(IndexError::NoFolder(_)) => {
                self.tagged(&format!("{t} NO [TRYCREATE] no such folder\r\n"))
            }
            Err(e) => self.tagged(&index_error(t, &e)),
        }
    }
}

impl Session {
    /// A move or copy into Junk teaches rspamd spam; out of Junk (not to Trash), ham. Read before a MOVE
    /// expunges the originals; at most [`MAX_LESSONS`] per command.
    fn train(
        &self,
        index: &dyn MailIndex,
        mailbox: &crate::smtp::Mailbox,
        from: &str,
        to: &str,
        pairs: &[(u32, u32)],
    ) {
        let Some(trainer) = &self.access.trainer else {
            return;
        };
        let junk = |f: &str| f.eq_ignore_ascii_case("Junk");
        let spam = match (junk(from), junk(to)) {
            (false, true) => true,
            (true, false) if !to.eq_ignore_ascii_case("Trash") => false,
            _ => return,
        };
        let user = mailbox.to_string();
        for (uid, _) in pairs.iter().take(MAX_LESSONS) {
            if let Ok(Some(bytes)) = index.read(mailbox, from, *uid) {
                trainer.learn(spam, bytes, &user);
            }
        }
        if pairs.len() > MAX_LESSONS {
            tracing::info!(user = %user, moved = pairs.len(), "rspamd training: only the first {MAX_LESSONS} messages of the command are learnt");
        }
    }
}

/// Messages one IMAP command teaches rspamd at most.
const MAX_LESSONS: usize = 100;

/// A UID list in the order given (COPYUID pairs source and target by position).
fn list_set(uids: &[u32]) -> String {
    let mut sorted = uids.to_vec();
    sorted.sort();
    if sorted == uids {
        uid_set(uids)
    } else {
        uids.iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// BINARY[part]: the part with its transfer encoding undone; the whole message for `[]`.
fn binary(entity: Option<&mime::Entity>, whole: Option<&[u8]>, part: &[u32]) -> Option<Vec<u8>> {
    if part.is_empty() {
        return whole.map(<[u8]>::to_vec);
    }
    entity?.part(part)?.decoded()
}

fn part_label(part: &[u32]) -> String {
    part.iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(".")
}

fn section_label(s: &parse::Section) -> String {
    let mut out = part_label(&s.part);
    if let Some(text) = &s.text {
        if !out.is_empty() {
            out.push('.');
        }
        match text {
            SectionText::Header => out.push_str("HEADER"),
            SectionText::Text => out.push_str("TEXT"),
            SectionText::Mime => out.push_str("MIME"),
            SectionText::HeaderFields { not, fields } => {
                out.push_str(if *not {
                    "HEADER.FIELDS.NOT ("
                } else {
                    "HEADER.FIELDS ("
                });
                let f: Vec<String> = fields.iter().map(|f| f.to_ascii_uppercase()).collect();
                out.push_str(&f.join(" "));
                out.push(')');
            }
        }
    }
    out
}

/// The octets a BODY[section] names; `None` when the part does not exist.
fn section_data(e: &mime::Entity, whole: &[u8], s: &parse::Section) -> Option<Vec<u8>> {
    if s.part.is_empty() {
        return Some(match &s.text {
            None => whole.to_vec(),
            Some(SectionText::Header) => e.header.to_vec(),
            Some(SectionText::Text) => e.body.to_vec(),
            Some(SectionText::HeaderFields { not, fields }) => {
                mime::header_fields(e.header, fields, *not)
            }
            Some(SectionText::Mime) => return None,
        });
    }
    let part = e.part(&s.part)?;
    Some(match &s.text {
        None => part.body.to_vec(),
        Some(SectionText::Mime) => part.header.to_vec(),
        Some(SectionText::Header) => part.message(false)?.header.to_vec(),
        Some(SectionText::Text) => part.message(false)?.body.to_vec(),
        Some(SectionText::HeaderFields { not, fields }) => {
            mime::header_fields(part.message(false)?.header, fields, *not)
        }
    })
}

fn put_partial(line: &mut Vec<u8>, data: Option<&[u8]>, partial: Option<(u32, u32)>, binary: bool) {
    let data = data.unwrap_or_default();
    let slice = match partial {
        Some((start, len)) => {
            line.extend_from_slice(format!("<{start}>").as_bytes());
            let s = (start as usize).min(data.len());
            let e = s.saturating_add(len as usize).min(data.len());
            &data[s..e]
        }
        None => data,
    };
    line.push(b' ');
    if binary && slice.contains(&0) {
        line.push(b'~');
    }
    literal(line, slice);
}

fn status_line(name: &str, snap: &Snapshot, items: &[StatusItem]) -> Vec<u8> {
    let mut line = b"* STATUS ".to_vec();
    mailbox_name(&mut line, name);
    line.extend_from_slice(b" (");
    let mut parts = Vec::new();
    for i in items {
        parts.push(match i {
            StatusItem::Messages => format!("MESSAGES {}", snap.messages.len()),
            StatusItem::Recent => format!("RECENT {}", snap.recent.len()),
            StatusItem::UidNext => format!("UIDNEXT {}", snap.uidnext),
            StatusItem::UidValidity => format!("UIDVALIDITY {}", snap.uidvalidity),
            StatusItem::Unseen => format!(
                "UNSEEN {}",
                snap.messages
                    .iter()
                    .filter(|m| m.flags.system & flag::SEEN == 0)
                    .count()
            ),
            StatusItem::Deleted => format!(
                "DELETED {}",
                snap.messages
                    .iter()
                    .filter(|m| m.flags.system & flag::DELETED != 0)
                    .count()
            ),
            StatusItem::Size => {
                format!("SIZE {}", snap.messages.iter().map(|m| m.size).sum::<u64>())
            }
            StatusItem::HighestModSeq => format!("HIGHESTMODSEQ {}", snap.highest_modseq),
        });
    }
    line.extend_from_slice(parts.join(" ").as_bytes());
    line.extend_from_slice(b")\r\n");
    line
}
