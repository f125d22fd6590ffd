//! POP3 (RFC 1939) as a sans-IO session: fed bytes, it yields [`Action`]s for the I/O driver (send these
//! bytes, check these credentials, open the maildrop, fetch a message, delete messages at QUIT, start TLS,
//! close). With CAPA (RFC 2449), UIDL, TOP, USER/PASS, SASL PLAIN and LOGIN (RFC 5034), STLS (RFC 2595) and
//! PIPELINING. The maildrop is a snapshot taken at login: numbers and sizes do not move during a session,
//! and DELE takes effect only in the UPDATE state (QUIT).

#[cfg(test)]
mod tests;

use crate::sasl::{Credentials, Exchange, Mechanism, SaslError, Step};

/// RFC 2449 4: a command line is at most 255 octets; a SASL response line may be longer.
const MAX_COMMAND: usize = 255;
const MAX_SASL_LINE: usize = 8192;

#[derive(Debug, Clone)]
pub struct Pop3Config {
    pub hostname: String,
    /// STLS can be offered (not already TLS).
    pub starttls: bool,
    /// Erroneous commands before the session is closed.
    pub bad_commands: usize,
}

/// One message of the maildrop as the session sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DropMessage {
    /// Stable and unique in the mailbox (UIDL): printable ASCII 0x21-0x7E, at most 70 octets.
    pub uid: String,
    /// Octets as sent (CRLF line endings), for STAT and LIST.
    pub size: u64,
}

#[derive(Debug)]
pub enum Action {
    Send(Vec<u8>),
    /// Check these credentials, then call [`Session::auth_verdict`].
    Authenticate(Credentials),
    /// Read the message with this uid (whole, or its header and `lines` body lines), then call
    /// [`Session::retrieved`].
    Retrieve {
        uid: String,
        lines: Option<usize>,
    },
    /// The session ends (QUIT): delete these uids, then call [`Session::updated`].
    Update(Vec<String>),
    /// Send pending bytes, do the TLS handshake, then call [`Session::tls_established`].
    StartTls,
    Close,
}

enum State {
    Authorization {
        user: Option<String>,
    },
    /// Waiting for the driver's verdict on credentials.
    Authenticating,
    Transaction,
    Done,
}

pub struct Session {
    cfg: std::sync::Arc<Pop3Config>,
    input: Vec<u8>,
    state: State,
    tls: bool,
    /// Plaintext login is allowed (TLS, or a client in the secure networks).
    secure: bool,
    sasl: Option<Exchange>,
    maildrop: Vec<DropMessage>,
    deleted: Vec<bool>,
    bad: usize,
    out: std::collections::VecDeque<Action>,
    /// A command whose answer the driver owes (no further line is read meanwhile).
    waiting: bool,
    discarding: bool,
}

impl Session {
    pub fn new(cfg: std::sync::Arc<Pop3Config>, tls: bool, secure: bool) -> Session {
        Session {
            cfg,
            input: Vec::new(),
            state: State::Authorization { user: None },
            tls,
            secure: secure || tls,
            sasl: None,
            maildrop: Vec::new(),
            deleted: Vec::new(),
            bad: 0,
            out: Default::default(),
            waiting: false,
            discarding: false,
        }
    }

    pub fn greeting(&self) -> Vec<u8> {
        format!("+OK {} POP3 tern ready\r\n", self.cfg.hostname).into_bytes()
    }

    pub fn receive(&mut self, bytes: &[u8]) {
        self.input.extend_from_slice(bytes);
    }

    pub fn is_authenticated(&self) -> bool {
        matches!(self.state, State::Transaction)
    }

    pub fn poll(&mut self) -> Option<Action> {
        loop {
            if let Some(a) = self.out.pop_front() {
                return Some(a);
            }
            if self.waiting || matches!(self.state, State::Done) {
                return None;
            }
            let limit = if self.sasl.is_some() {
                MAX_SASL_LINE
            } else {
                MAX_COMMAND
            };
            let Some(lf) = self.input.iter().position(|&b| b == b'\n') else {
                if self.input.len() > limit {
                    self.input.clear();
                    self.discarding = true;
                }
                return None;
            };
            let mut line: Vec<u8> = self.input.drain(..=lf).collect();
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            if std::mem::take(&mut self.discarding) || line.len() > limit {
                self.sasl = None;
                self.error("line too long");
                continue;
            }
            let Ok(line) = String::from_utf8(line) else {
                self.error("not UTF-8");
                continue;
            };
            if let Some(exchange) = self.sasl.take() {
                let (exchange, step) = exchange.respond(&line);
                self.sasl = exchange;
                self.sasl_step(step);
            } else {
                self.command(&line);
            }
        }
    }

    fn send(&mut self, text: impl Into<String>) {
        let mut t = text.into();
        t.push_str("\r\n");
        self.out.push_back(Action::Send(t.into_bytes()));
    }

    fn ok(&mut self, text: &str) {
        self.send(format!("+OK {text}"));
    }

    /// A refused command; too many close the session.
    fn error(&mut self, text: &str) {
        self.send(format!("-ERR {text}"));
        self.bad += 1;
        if self.bad >= self.cfg.bad_commands {
            self.send("-ERR too many bad commands, closing");
            self.close();
        }
    }

    fn close(&mut self) {
        self.state = State::Done;
        self.out.push_back(Action::Close);
    }

    fn command(&mut self, line: &str) {
        let (verb, arg) = match line.split_once(' ') {
            Some((v, a)) => (v.to_ascii_uppercase(), a.trim()),
            None => (line.trim().to_ascii_uppercase(), ""),
        };
        match (&self.state, verb.as_str()) {
            (_, "CAPA") => self.capa(),
            (_, "QUIT") => self.quit(),
            (State::Authorization { .. }, "STLS") => self.stls(),
            (State::Authorization { .. }, "USER") => self.user(arg),
            (State::Authorization { .. }, "PASS") => self.pass(arg),
            (State::Authorization { .. }, "AUTH") => self.auth(arg),
            (State::Transaction, "STAT") => self.stat(),
            (State::Transaction, "LIST") => self.list(arg),
            (State::Transaction, "UIDL") => self.uidl(arg),
            (State::Transaction, "RETR") => self.retr(arg, None),
            (State::Transaction, "TOP") => {
                let mut parts = arg.split_whitespace();
                match (
                    parts.next(),
                    parts.next().and_then(|n| n.parse().ok()),
                    parts.next(),
                ) {
                    (Some(n), Some(lines), None) => self.retr(n, Some(lines)),
                    _ => self.error("TOP needs a message number and a line count"),
                }
            }
            (State::Transaction, "DELE") => match self.number(arg) {
                Some(i) => {
                    self.deleted[i] = true;
                    self.ok(&format!("message {} deleted", i + 1));
                }
                None => self.error("no such message"),
            },
            (State::Transaction, "RSET") => {
                self.deleted.iter_mut().for_each(|d| *d = false);
                let n = self.maildrop.len();
                self.ok(&format!("maildrop has {n} messages"));
            }
            (State::Transaction, "NOOP") => self.ok(""),
            (
                State::Authorization { .. },
                "STAT" | "LIST" | "UIDL" | "RETR" | "TOP" | "DELE" | "RSET" | "NOOP",
            ) => self.error("log in first"),
            (State::Transaction, "USER" | "PASS" | "AUTH" | "STLS") => {
                self.error("already logged in")
            }
            _ => self.error("unknown command"),
        }
    }

    fn capa(&mut self) {
        let mut lines = vec![
            "+OK capability list follows".to_string(),
            "TOP".into(),
            "UIDL".into(),
        ];
        lines.push("RESP-CODES".into());
        lines.push("PIPELINING".into());
        lines.push("AUTH-RESP-CODE".into());
        if matches!(self.state, State::Authorization { .. }) {
            if self.cfg.starttls && !self.tls {
                lines.push("STLS".into());
            }
            if self.secure {
                lines.push("USER".into());
                lines.push("SASL PLAIN LOGIN".into());
            }
        }
        lines.push("IMPLEMENTATION tern".into());
        lines.push(".".into());
        self.send(lines.join("\r\n"));
    }

    fn quit(&mut self) {
        match self.state {
            State::Transaction => {
                let uids = self
                    .maildrop
                    .iter()
                    .zip(&self.deleted)
                    .filter(|(_, d)| **d)
                    .map(|(m, _)| m.uid.clone())
                    .collect();
                self.waiting = true;
                self.out.push_back(Action::Update(uids));
            }
            _ => {
                self.ok(&format!("{} POP3 server signing off", self.cfg.hostname));
                self.close();
            }
        }
    }

    fn stls(&mut self) {
        if self.tls || !self.cfg.starttls {
            return self.error("STLS not available");
        }
        self.ok("begin TLS negotiation");
        self.out.push_back(Action::StartTls);
        self.waiting = true;
        // RFC 2595 4: nothing sent before the handshake is read after it.
        self.input.clear();
    }

    /// RFC 2595 2.2: no password in the clear unless the client is allowed to send one.
    fn plaintext_refused(&mut self) -> bool {
        if self.secure {
            return false;
        }
        self.error("[AUTH] plaintext login is not allowed without TLS (use STLS)");
        true
    }

    fn user(&mut self, arg: &str) {
        if self.plaintext_refused() {
            return;
        }
        if arg.is_empty() {
            return self.error("USER needs a name");
        }
        self.state = State::Authorization {
            user: Some(arg.to_string()),
        };
        self.ok("send PASS");
    }

    fn pass(&mut self, arg: &str) {
        let State::Authorization { user: Some(user) } = &self.state else {
            return self.error("USER first");
        };
        let credentials = Credentials {
            username: user.clone(),
            password: arg.to_string(),
        };
        self.state = State::Authenticating;
        self.waiting = true;
        self.out.push_back(Action::Authenticate(credentials));
    }

    fn auth(&mut self, arg: &str) {
        if arg.is_empty() {
            // RFC 5034 4: AUTH without a mechanism lists them (a common extension, Dovecot does it).
            return self.send("+OK\r\nPLAIN\r\nLOGIN\r\n.");
        }
        if self.plaintext_refused() {
            return;
        }
        let mut words = arg.split_whitespace();
        let Some(mechanism) = words.next().and_then(Mechanism::parse) else {
            return self.error("unsupported SASL mechanism");
        };
        let (exchange, step) = Exchange::start(mechanism, words.next());
        self.sasl = exchange;
        self.sasl_step(step);
    }

    fn sasl_step(&mut self, step: Step) {
        match step {
            Step::Challenge(c) => self.send(format!("+ {c}")),
            Step::Done(credentials) => {
                self.state = State::Authenticating;
                self.waiting = true;
                self.out.push_back(Action::Authenticate(credentials));
            }
            Step::Failed(SaslError::Cancelled) => self.error("authentication cancelled"),
            Step::Failed(SaslError::Malformed(why)) => self.error(why),
        }
    }

    /// The driver's verdict: the maildrop snapshot, or the reply text of the refusal
    /// (`[AUTH] ...`, `[SYS/TEMP] ...`, `[IN-USE] ...`, RFC 2449 and RFC 3206 response codes).
    pub fn auth_verdict(&mut self, verdict: Result<Vec<DropMessage>, String>) {
        if !matches!(self.state, State::Authenticating) {
            return;
        }
        self.waiting = false;
        match verdict {
            Ok(maildrop) => {
                let (n, size) = (maildrop.len(), maildrop.iter().map(|m| m.size).sum::<u64>());
                self.deleted = vec![false; n];
                self.maildrop = maildrop;
                self.state = State::Transaction;
                self.ok(&format!("logged in, {n} messages ({size} octets)"));
            }
            Err(text) => {
                self.state = State::Authorization { user: None };
                self.error(&text);
            }
        }
    }

    fn stat(&mut self) {
        let (n, size) = self
            .live()
            .fold((0, 0), |(n, s), (_, m)| (n + 1, s + m.size));
        self.ok(&format!("{n} {size}"));
    }

    fn live(&self) -> impl Iterator<Item = (usize, &DropMessage)> {
        self.maildrop
            .iter()
            .enumerate()
            .filter(|(i, _)| !self.deleted[*i])
    }

    /// The index of a message number that exists and is not deleted.
    fn number(&self, arg: &str) -> Option<usize> {
        let n: usize = arg.trim().parse().ok()?;
        let i = n.checked_sub(1)?;
        (i < self.maildrop.len() && !self.deleted[i]).then_some(i)
    }

    fn list(&mut self, arg: &str) {
        if !arg.is_empty() {
            return match self.number(arg) {
                Some(i) => self.ok(&format!("{} {}", i + 1, self.maildrop[i].size)),
                None => self.error("no such message"),
            };
        }
        let mut lines = vec!["+OK scan listing follows".to_string()];
        lines.extend(self.live().map(|(i, m)| format!("{} {}", i + 1, m.size)));
        lines.push(".".into());
        self.send(lines.join("\r\n"));
    }

    fn uidl(&mut self, arg: &str) {
        if !arg.is_empty() {
            return match self.number(arg) {
                Some(i) => self.ok(&format!("{} {}", i + 1, self.maildrop[i].uid)),
                None => self.error("no such message"),
            };
        }
        let mut lines = vec!["+OK unique-id listing follows".to_string()];
        lines.extend(self.live().map(|(i, m)| format!("{} {}", i + 1, m.uid)));
        lines.push(".".into());
        self.send(lines.join("\r\n"));
    }

    fn retr(&mut self, arg: &str, lines: Option<usize>) {
        let Some(i) = self.number(arg) else {
            return self.error("no such message");
        };
        self.waiting = true;
        self.out.push_back(Action::Retrieve {
            uid: self.maildrop[i].uid.clone(),
            lines,
        });
    }

    /// The message asked for with [`Action::Retrieve`] (as stored: LF or CRLF line endings), or `None`
    /// when it is gone (another session deleted it).
    pub fn retrieved(&mut self, message: Option<&[u8]>, lines: Option<usize>) {
        self.waiting = false;
        match message {
            Some(m) => {
                let mut out = b"+OK message follows\r\n".to_vec();
                stuff(m, lines, &mut out);
                out.extend_from_slice(b".\r\n");
                self.out.push_back(Action::Send(out));
            }
            None => self.error("[SYS/TEMP] message is no longer in the maildrop"),
        }
    }

    /// The UPDATE state is over: `Ok` when every deletion is durable.
    pub fn updated(&mut self, result: Result<(), String>) {
        self.waiting = false;
        match result {
            Ok(()) => self.ok(&format!("{} POP3 server signing off", self.cfg.hostname)),
            Err(e) => self.send(format!(
                "-ERR [SYS/TEMP] some messages were not deleted: {e}"
            )),
        }
        self.close();
    }

    pub fn tls_established(&mut self) {
        self.waiting = false;
        self.tls = true;
        self.secure = true;
    }
}

/// The message in CRLF lines, dot-stuffed (RFC 1939 3); with `lines`, the header, the empty line and at
/// most that many body lines (TOP).
pub fn stuff(message: &[u8], lines: Option<usize>, out: &mut Vec<u8>) {
    let mut in_body = false;
    let mut body_lines = 0;
    let mut rest = message;
    while !rest.is_empty() {
        let (line, next) = match rest.iter().position(|&b| b == b'\n') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, &rest[rest.len()..]),
        };
        rest = next;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if in_body {
            if lines.is_some_and(|max| body_lines >= max) {
                break;
            }
            body_lines += 1;
        } else if line.is_empty() {
            in_body = true;
        }
        if line.first() == Some(&b'.') {
            out.push(b'.');
        }
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
    }
}

/// Octets of `message` as POP3 sends it (CRLF line endings, before dot-stuffing), for LIST and STAT.
pub fn wire_size(message: &[u8]) -> u64 {
    let lf = message.iter().filter(|&&b| b == b'\n').count();
    let crlf = message.windows(2).filter(|w| w == b"\r\n").count();
    let unterminated = u64::from(!message.is_empty() && !message.ends_with(b"\n"));
    (message.len() + lf - crlf) as u64 + 2 * unterminated
}
