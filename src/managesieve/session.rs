//! The server session: fed bytes, it yields [`Action`]s for the driver (send these bytes, check these
//! credentials, run this script operation, start TLS, close) and is told their outcomes.

use super::frame::{Frame, Framer, Refused};
use super::parse::{self, Command, check_name};
use super::response::{Code, Refusal, Response, string};
use crate::sasl::{Credentials, Exchange, Mechanism, SaslError, Step};
use std::collections::VecDeque;
use std::sync::Arc;

/// What a session needs to know of its server.
#[derive(Debug, Clone)]
pub struct ManageSieveConfig {
    pub hostname: String,
    /// STARTTLS can be offered.
    pub starttls: bool,
    /// Erroneous commands before the session is closed with BYE.
    pub bad_commands: usize,
    /// Longest line in octets, literals apart; also the largest literal that is not a script.
    pub max_line: usize,
    /// Largest script in octets (the store's limit).
    pub max_script: usize,
    /// The Sieve extensions the interpreter supports, space-separated (the SIEVE capability).
    pub sieve_extensions: String,
    /// Redirects a script may do (the MAXREDIRECTS capability).
    pub max_redirects: usize,
}

/// A script operation for the driver to run against the user's scripts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScriptOp {
    List,
    Get {
        name: String,
    },
    Put {
        name: String,
        script: String,
    },
    Check {
        script: String,
    },
    HaveSpace {
        name: String,
        size: u32,
    },
    /// `None` deactivates every script.
    SetActive {
        name: Option<String>,
    },
    Delete {
        name: String,
    },
    Rename {
        from: String,
        to: String,
    },
}

/// What a script operation gave back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Done {
    Done,
    /// LISTSCRIPTS: each script's name and whether it is the active one.
    Listed(Vec<(String, bool)>),
    /// GETSCRIPT: the script's source.
    Script(String),
}

/// Why the driver refused a login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginRefusal {
    /// Wrong user or password.
    Invalid,
    /// Too many failed logins from this client or for this account.
    Throttled,
    /// Too many sessions of this user.
    InUse,
    /// A server-side error.
    Temporary,
    /// The right password for a disabled account.
    Disabled,
}

#[derive(Debug)]
pub enum Action {
    Send(Vec<u8>),
    /// Check these credentials, then call [`Session::auth_verdict`].
    Authenticate(Credentials),
    /// Run this, then call [`Session::script_done`].
    Script(ScriptOp),
    /// The user logged out with UNAUTHENTICATE: release the login.
    Unauthenticated,
    /// Send pending bytes, do the TLS handshake, then call [`Session::tls_established`].
    StartTls,
    Close,
}

enum State {
    NonAuthenticated,
    /// An AUTHENTICATE exchange waiting for the client's next response.
    Sasl(Exchange),
    /// Waiting for the driver's verdict on credentials.
    Authenticating,
    Authenticated {
        owner: String,
    },
    Done,
}

pub struct Session {
    cfg: Arc<ManageSieveConfig>,
    framer: Framer,
    state: State,
    tls: bool,
    /// AUTHENTICATE is allowed (TLS, or a client in the secure networks).
    secure: bool,
    bad: usize,
    out: VecDeque<Action>,
    /// An answer the driver owes: no further command is read meanwhile.
    waiting: bool,
    /// The OK text of the script operation in progress.
    pending: &'static str,
}

impl Session {
    pub fn new(cfg: Arc<ManageSieveConfig>, tls: bool, secure: bool) -> Session {
        Session {
            framer: Framer::new(cfg.max_line, cfg.max_script),
            cfg,
            state: State::NonAuthenticated,
            tls,
            secure: secure || tls,
            bad: 0,
            out: VecDeque::new(),
            waiting: false,
            pending: "",
        }
    }

    /// RFC 5804 section 1.7: the greeting is the capability response.
    pub fn greeting(&self) -> Vec<u8> {
        let mut out = self.capabilities();
        Response::ok(format!("{} ManageSieve ready", self.cfg.hostname)).write(&mut out);
        out
    }

    pub fn receive(&mut self, bytes: &[u8]) {
        self.framer.push(bytes);
    }

    pub fn is_authenticated(&self) -> bool {
        matches!(self.state, State::Authenticated { .. })
    }

    pub fn poll(&mut self) -> Option<Action> {
        loop {
            if let Some(a) = self.out.pop_front() {
                return Some(a);
            }
            if self.waiting || matches!(self.state, State::Done) {
                return None;
            }
            match self.framer.next_frame()? {
                Frame::Command(raw) => {
                    if matches!(self.state, State::Sasl(_)) {
                        self.sasl_response(&raw);
                    } else {
                        match parse::command(&raw) {
                            Ok(c) => self.command(c),
                            Err(e) => self.bad(Response::no(e.to_string())),
                        }
                    }
                }
                Frame::Refused(why) => {
                    if matches!(self.state, State::Sasl(_)) {
                        self.state = State::NonAuthenticated;
                    }
                    self.refused(why);
                }
                Frame::Lost(digits) => {
                    self.respond(Response::bye(format!(
                        "literal length {digits} is not a 32-bit number"
                    )));
                    self.close();
                }
            }
        }
    }

    fn respond(&mut self, r: Response) {
        self.out.push_back(Action::Send(r.to_bytes()));
    }

    /// A refused command that counts towards the limit; at the limit the session ends.
    fn bad(&mut self, r: Response) {
        self.respond(r);
        self.bad += 1;
        if self.bad >= self.cfg.bad_commands {
            self.respond(Response::bye("too many bad commands"));
            self.close();
        }
    }

    fn close(&mut self) {
        self.state = State::Done;
        self.out.push_back(Action::Close);
    }

    fn refused(&mut self, why: Refused) {
        match why {
            Refused::LineTooLong => self.bad(Response::no(format!(
                "line too long (at most {} octets)",
                self.cfg.max_line
            ))),
            Refused::LiteralTooBig {
                script: true,
                size,
                limit,
            } if self.is_authenticated() => self.respond(
                Response::no(format!(
                    "script of {size} octets is too large (at most {limit} octets)"
                ))
                .with(Code::QuotaMaxSize),
            ),
            Refused::LiteralTooBig { size, limit, .. } => self.bad(Response::no(format!(
                "string of {size} octets is too long (at most {limit} octets)"
            ))),
        }
    }

    /// RFC 5804 section 1.7, the capability list as the session stands now.
    fn capabilities(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut item = |name: &str, value: Option<&str>| {
            string(name, &mut out);
            if let Some(v) = value {
                out.push(b' ');
                string(v, &mut out);
            }
            out.extend_from_slice(b"\r\n");
        };
        item("IMPLEMENTATION", Some("tern"));
        // Only mechanisms usable now: none before TLS on a connection that is not secure, none once
        // authenticated.
        let usable = self.secure && matches!(self.state, State::NonAuthenticated);
        item("SASL", Some(if usable { "PLAIN LOGIN" } else { "" }));
        item("SIEVE", Some(&self.cfg.sieve_extensions));
        if self.cfg.starttls && !self.tls && !self.is_authenticated() {
            item("STARTTLS", None);
        }
        item("MAXREDIRECTS", Some(&self.cfg.max_redirects.to_string()));
        if let State::Authenticated { owner } = &self.state {
            item("OWNER", Some(owner));
        }
        item("UNAUTHENTICATE", None);
        item("VERSION", Some("1.0"));
        out
    }

    fn command(&mut self, c: Command) {
        let authenticated = self.is_authenticated();
        match c {
            Command::Capability => {
                let mut out = self.capabilities();
                Response::ok("capability completed").write(&mut out);
                self.out.push_back(Action::Send(out));
            }
            Command::Noop { tag } => {
                let r = Response::ok("Done");
                self.respond(match tag {
                    Some(t) => r.with(Code::Tag(t)),
                    None => r,
                });
            }
            Command::Logout => {
                self.respond(Response::ok("logout completed"));
                self.close();
            }
            Command::StartTls if authenticated => self.bad(Response::no("already authenticated")),
            Command::StartTls => self.starttls(),
            Command::Authenticate { .. } if authenticated => {
                self.bad(Response::no("already authenticated"))
            }
            Command::Authenticate { mechanism, initial } => self.authenticate(&mechanism, initial),
            _ if !authenticated => self.bad(Response::no("authenticate first")),
            Command::Unauthenticate => {
                self.state = State::NonAuthenticated;
                self.out.push_back(Action::Unauthenticated);
                self.respond(Response::ok("unauthenticated"));
            }
            Command::ListScripts => self.script(ScriptOp::List, "listscripts completed"),
            Command::GetScript { name } => {
                if self.name_ok(&name) {
                    self.script(ScriptOp::Get { name }, "getscript completed");
                }
            }
            Command::PutScript { name, script } => {
                if !self.name_ok(&name) {
                    return;
                }
                if script.len() > self.cfg.max_script {
                    return self.respond(Refusal::TooLarge(self.cfg.max_script).response());
                }
                self.script(ScriptOp::Put { name, script }, "putscript completed");
            }
            Command::CheckScript { script } => {
                if script.len() > self.cfg.max_script {
                    return self.respond(Refusal::TooLarge(self.cfg.max_script).response());
                }
                self.script(ScriptOp::Check { script }, "script is valid");
            }
            Command::HaveSpace { name, size } => {
                if !self.name_ok(&name) {
                    return;
                }
                if size as usize > self.cfg.max_script {
                    return self.respond(Refusal::TooLarge(self.cfg.max_script).response());
                }
                self.script(
                    ScriptOp::HaveSpace { name, size },
                    "putscript would succeed",
                );
            }
            Command::SetActive { name } => {
                if name.is_empty() {
                    return self.script(ScriptOp::SetActive { name: None }, "no script is active");
                }
                if self.name_ok(&name) {
                    self.script(ScriptOp::SetActive { name: Some(name) }, "script activated");
                }
            }
            Command::DeleteScript { name } => {
                if self.name_ok(&name) {
                    self.script(ScriptOp::Delete { name }, "script deleted");
                }
            }
            Command::RenameScript { from, to } => {
                if self.name_ok(&from) && self.name_ok(&to) {
                    self.script(ScriptOp::Rename { from, to }, "script renamed");
                }
            }
        }
    }

    /// A name that RFC 5804 section 1.6 allows; else the NO is sent.
    fn name_ok(&mut self, name: &str) -> bool {
        match check_name(name) {
            Ok(()) => true,
            Err(e) => {
                self.respond(Refusal::BadName(e.to_string()).response());
                false
            }
        }
    }

    fn script(&mut self, op: ScriptOp, ok: &'static str) {
        self.pending = ok;
        self.waiting = true;
        self.out.push_back(Action::Script(op));
    }

    /// The outcome of the [`Action::Script`] asked for.
    pub fn script_done(&mut self, result: Result<Done, Refusal>) {
        if !self.waiting {
            return;
        }
        self.waiting = false;
        let mut out = Vec::new();
        match result {
            Ok(Done::Done) => Response::ok(self.pending).write(&mut out),
            Ok(Done::Listed(scripts)) => {
                for (name, active) in scripts {
                    string(&name, &mut out);
                    if active {
                        out.extend_from_slice(b" ACTIVE");
                    }
                    out.extend_from_slice(b"\r\n");
                }
                Response::ok(self.pending).write(&mut out);
            }
            Ok(Done::Script(source)) => {
                // RFC 5804 section 2.9: always a literal, then CRLF.
                out.extend_from_slice(format!("{{{}}}\r\n", source.len()).as_bytes());
                out.extend_from_slice(source.as_bytes());
                out.extend_from_slice(b"\r\n");
                Response::ok(self.pending).write(&mut out);
            }
            Err(refusal) => refusal.response().write(&mut out),
        }
        self.out.push_back(Action::Send(out));
    }

    fn starttls(&mut self) {
        if self.tls || !self.cfg.starttls {
            return self.bad(Response::no("STARTTLS is not available"));
        }
        self.respond(Response::ok("begin TLS negotiation now"));
        self.out.push_back(Action::StartTls);
        self.waiting = true;
        // Nothing sent before the handshake is read after it.
        self.framer.clear();
    }

    /// RFC 5804 section 2.2: after the handshake the capabilities are sent again.
    pub fn tls_established(&mut self) {
        self.waiting = false;
        self.tls = true;
        self.secure = true;
        let mut out = self.capabilities();
        Response::ok("TLS negotiation successful").write(&mut out);
        self.out.push_back(Action::Send(out));
    }

    fn authenticate(&mut self, mechanism: &str, initial: Option<String>) {
        let Some(m) = Mechanism::parse(mechanism) else {
            return self.bad(Response::no(format!(
                "unsupported SASL mechanism {mechanism:?}"
            )));
        };
        if !self.secure {
            return self.bad(
                Response::no("no password is accepted without TLS: use STARTTLS first")
                    .with(Code::EncryptNeeded),
            );
        }
        let (exchange, step) = Exchange::start(m, initial.as_deref());
        self.sasl_step(exchange, step);
    }

    /// RFC 5804 section 2.1: each client response is a string; `"*"` cancels.
    fn sasl_response(&mut self, raw: &[u8]) {
        let State::Sasl(exchange) = std::mem::replace(&mut self.state, State::NonAuthenticated)
        else {
            return;
        };
        match parse::lone_string(raw) {
            Ok(line) => {
                let (exchange, step) = exchange.respond(&line);
                self.sasl_step(exchange, step);
            }
            Err(why) => self.bad(Response::no(format!("SASL response: {why}"))),
        }
    }

    fn sasl_step(&mut self, exchange: Option<Exchange>, step: Step) {
        match (exchange, step) {
            (Some(exchange), Step::Challenge(c)) => {
                let mut out = Vec::new();
                string(&c, &mut out);
                out.extend_from_slice(b"\r\n");
                self.out.push_back(Action::Send(out));
                self.state = State::Sasl(exchange);
            }
            (_, Step::Done(credentials)) => {
                self.state = State::Authenticating;
                self.waiting = true;
                self.out.push_back(Action::Authenticate(credentials));
            }
            (_, Step::Failed(SaslError::Cancelled)) => {
                self.state = State::NonAuthenticated;
                self.respond(Response::no("authentication cancelled"));
            }
            (_, Step::Failed(SaslError::Malformed(why))) => {
                self.state = State::NonAuthenticated;
                self.bad(Response::no(why));
            }
            (None, Step::Challenge(_)) => {
                // sasl::Exchange keeps an exchange whenever it challenges; were it not to, fail safe.
                self.state = State::NonAuthenticated;
                self.bad(Response::no("authentication failed"));
            }
        }
    }

    /// The driver's verdict on [`Action::Authenticate`]: the owner (the logged-in mailbox), or why not.
    pub fn auth_verdict(&mut self, verdict: Result<String, LoginRefusal>) {
        if !matches!(self.state, State::Authenticating) {
            return;
        }
        self.waiting = false;
        match verdict {
            Ok(owner) => {
                self.state = State::Authenticated { owner };
                self.respond(Response::ok("logged in"));
            }
            Err(refusal) => {
                self.state = State::NonAuthenticated;
                match refusal {
                    LoginRefusal::Invalid => {
                        self.bad(Response::no("invalid user name or password"))
                    }
                    LoginRefusal::Throttled => self.respond(
                        Response::no("too many failed logins, try again later")
                            .with(Code::TryLater),
                    ),
                    LoginRefusal::InUse => self.respond(
                        Response::no("too many sessions of this user").with(Code::TryLater),
                    ),
                    LoginRefusal::Temporary => {
                        self.respond(Response::no("try again later").with(Code::TryLater))
                    }
                    LoginRefusal::Disabled => self.respond(Response::no("account disabled")),
                }
            }
        }
    }
}
