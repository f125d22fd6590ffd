//! The server side of an SMTP session as a state machine: fed bytes, it yields [`Action`]s for the I/O driver
//! (send a reply, judge a recipient, store a message, start TLS, close). It never touches a socket, a clock,
//! DNS or disk, so every dialogue is a unit test (see `tests.rs`).
//!
//! Replies are queued in order, which is what RFC 2920 pipelining needs: the driver flushes them whenever the
//! session has consumed all input it has and asks for more.

mod handlers;
#[cfg(test)]
mod tests;

use super::address::{ForwardPath, Mailbox, ReversePath};
use super::command::{MailParams, RcptParams};
use super::data::{ChunkReader, ContentLimits, DataReader};
use super::reply::Reply;
use std::collections::VecDeque;
use std::sync::Arc;

/// Limits a session enforces itself. Connection counts and timeouts belong to the driver.
#[derive(Debug, Clone)]
pub struct SessionLimits {
    /// Largest message accepted, in octets (SIZE is advertised with it).
    pub message_size: usize,
    /// Accepted recipients per message; more get 452 4.5.3.
    pub recipients: usize,
    /// Longest command line including CRLF.
    pub command_line: usize,
    /// Longest line of message text excluding CRLF.
    pub text_line: usize,
    /// Permanent (5xx) replies before the session is closed with 421.
    pub errors: usize,
    /// Longest header section of a message, in octets (552 5.3.4 beyond it).
    pub header_section: usize,
    /// Commands that move no mail (NOOP, RSET, VRFY, HELP, HELO/EHLO, refused ones) allowed between two
    /// accepted messages; past it the session is closed with 421 4.7.0 (Postfix's smtpd_junk_command_limit).
    pub junk_commands: usize,
}

/// What a session is configured with; shared by all sessions of a listener.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub hostname: String,
    pub limits: SessionLimits,
    /// STARTTLS can be offered (a certificate is loaded and the connection is not TLS yet).
    pub starttls: bool,
    /// AUTH PLAIN and LOGIN are offered once the session is TLS.
    pub auth: bool,
    /// MAIL is refused with 530 5.7.0 until the client has authenticated (submission listeners).
    pub require_auth: bool,
    /// LMTP (RFC 2033): LHLO instead of EHLO/HELO, one reply per recipient after the message.
    pub lmtp: bool,
}

/// What the I/O driver must do next.
#[derive(Debug)]
pub enum Action {
    /// Send this reply (the driver may hold it until input runs dry, for pipelining).
    Reply(Reply),
    /// Judge this reverse-path, then call [`Session::sender_verdict`].
    CheckSender(ReversePath, MailParams),
    /// Judge this recipient, then call [`Session::recipient_verdict`].
    CheckRecipient(ForwardPath),
    /// Check these credentials, then call [`Session::auth_verdict`].
    Authenticate(crate::sasl::Credentials),
    /// A complete message: store it, then call [`Session::message_stored`] with the reply to give.
    Message(Box<Envelope>, Vec<u8>),
    /// Send pending replies, perform the TLS handshake, then call [`Session::tls_established`].
    StartTls,
    /// Send pending replies and close the connection.
    Close,
}

/// A verdict on a recipient from the driver's policy.
#[derive(Debug)]
pub enum RcptVerdict {
    /// Deliver to these mailboxes: the forward-path itself, the local mailbox it maps to, or an alias's targets.
    Accept(Vec<Mailbox>),
    Refuse(Reply),
}

/// An accepted recipient: its forward-path as given, its DSN parameters and where it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    pub forward_path: ForwardPath,
    pub params: RcptParams,
    /// Where copies go (more than one for an alias that fans out).
    pub mailboxes: Vec<Mailbox>,
}

/// The envelope of one transaction, with what the trace header needs to know about the session.
#[derive(Debug, Clone)]
pub struct Envelope {
    pub reverse_path: ReversePath,
    pub params: MailParams,
    pub recipients: Vec<Recipient>,
    /// The HELO/EHLO argument.
    pub helo: String,
    /// RFC 3848 / RFC 6531 protocol name for the Received: header (ESMTP, ESMTPS, UTF8SMTPS, ...).
    pub protocol: &'static str,
    /// The authenticated identity (SMTP AUTH), if any.
    pub auth: Option<String>,
}

#[derive(Debug, Clone)]
struct Transaction {
    reverse_path: ReversePath,
    params: MailParams,
    recipients: Vec<Recipient>,
    /// For each accepted RCPT command, in order, the index of its recipient: a duplicate RCPT is stored once
    /// but LMTP still owes it a reply of its own (RFC 2033 4.2).
    slots: Vec<usize>,
}

#[derive(Debug)]
enum Phase {
    /// No transaction: before MAIL, or after one ended.
    Idle,
    /// MAIL accepted; RCPTs are being collected.
    Envelope(Transaction),
    /// After 354: reading dot-stuffed content.
    Data(Transaction, DataReader),
    /// Inside a BDAT transaction: reading a chunk, or between chunks.
    Chunking(Transaction, ChunkReader),
}

/// What the driver owes the session before it can go on.
#[derive(Debug)]
enum Waiting {
    Nothing,
    Sender(ReversePath, MailParams),
    Auth,
    Recipient(ForwardPath, RcptParams),
    /// The message was handed over; the slots map LMTP replies back to RCPT commands.
    Message(Vec<usize>),
    Tls,
}

#[derive(Debug, Clone)]
struct Hello {
    name: String,
    extended: bool,
}

/// One SMTP server session.
#[derive(Debug)]
pub struct Session {
    cfg: Arc<SessionConfig>,
    input: Vec<u8>,
    pos: usize,
    phase: Phase,
    hello: Option<Hello>,
    tls: bool,
    errors: usize,
    /// Commands since the last accepted message that moved no mail.
    junk: usize,
    /// Octets of a BDAT chunk to read and throw away (the command was refused), then this reply.
    skip: Option<(usize, Reply)>,
    /// An over-long command line is being discarded up to its LF.
    discarding_line: bool,
    /// An AUTH exchange waiting for the client's next line.
    sasl: Option<crate::sasl::Exchange>,
    /// Who authenticated.
    identity: Option<String>,
    out: VecDeque<Action>,
    waiting: Waiting,
    closed: bool,
    /// Messages begun (DATA, or a first BDAT chunk): ties the content the driver takes to its message.
    pub(super) content_seq: u64,
}

impl Session {
    pub fn new(cfg: Arc<SessionConfig>) -> Session {
        Session {
            cfg,
            input: Vec::new(),
            pos: 0,
            phase: Phase::Idle,
            hello: None,
            tls: false,
            errors: 0,
            junk: 0,
            skip: None,
            discarding_line: false,
            sasl: None,
            identity: None,
            out: VecDeque::new(),
            waiting: Waiting::Nothing,
            closed: false,
            content_seq: 0,
        }
    }

    /// A session on a connection that is already TLS (implicit TLS, RFC 8314).
    pub fn new_tls(cfg: Arc<SessionConfig>) -> Session {
        let mut s = Session::new(cfg);
        s.tls = true;
        s
    }

    /// The 220 greeting (RFC 5321 4.2 forbids nothing, but RFC 2034 keeps enhanced codes off it).
    pub fn greeting(&self) -> Reply {
        let proto = if self.cfg.lmtp { "LMTP" } else { "ESMTP" };
        Reply::plain(220, vec![format!("{} {proto} tern", self.cfg.hostname)])
    }

    /// Bytes read from the client.
    ///
    /// What was consumed is dropped first, so the buffer holds at most one unfinished command line (bounded by
    /// `command_line`, past which it is discarded) plus the bytes of this read, however the reads split lines.
    pub fn receive(&mut self, bytes: &[u8]) {
        if self.closed {
            return;
        }
        if self.pos > 0 {
            self.input.drain(..self.pos);
            self.pos = 0;
        }
        // A burst can grow the buffer once; give the memory back when it is mostly empty again.
        let keep = self.cfg.limits.command_line.max(16 * 1024);
        if self.input.capacity() > 4 * keep && self.input.len() + bytes.len() < keep {
            self.input.shrink_to(keep);
        }
        self.input.extend_from_slice(bytes);
    }

    /// Octets buffered and not yet consumed, and the buffer's capacity (for tests of its bound).
    pub fn buffered(&self) -> (usize, usize) {
        (self.input.len() - self.pos, self.input.capacity())
    }

    /// Octets the message being received holds in memory (0 outside DATA and BDAT).
    pub fn message_memory(&self) -> usize {
        match &self.phase {
            Phase::Data(_, reader) => reader.held(),
            Phase::Chunking(_, chunk) => chunk.held(),
            _ => 0,
        }
    }

    /// Which message the content being received belongs to, and how many of its octets are waiting to be
    /// taken; `None` outside DATA and BDAT.
    pub fn content_pending(&self) -> Option<(u64, usize)> {
        match &self.phase {
            Phase::Data(_, reader) => Some((self.content_seq, reader.pending())),
            Phase::Chunking(_, chunk) => Some((self.content_seq, chunk.pending())),
            _ => None,
        }
    }

    /// The number of the message being (or last) received, as [`Self::content_pending`] gives it.
    pub fn content_seq(&self) -> u64 {
        self.content_seq
    }

    /// Takes the content of the message being received read so far (the driver spools large messages to
    /// disk as they arrive); the message's [`Action::Message`] then carries only what came after.
    pub fn take_content(&mut self) -> Vec<u8> {
        match &mut self.phase {
            Phase::Data(_, reader) => reader.take(),
            Phase::Chunking(_, chunk) => chunk.take(),
            _ => Vec::new(),
        }
    }

    /// The driver has no memory for the message being received: it is read to its end without being kept
    /// and refused with 452 4.3.1 then.
    pub fn shed_message(&mut self) {
        match &mut self.phase {
            Phase::Data(_, reader) => reader.shed(),
            Phase::Chunking(_, chunk) => chunk.shed(),
            _ => {}
        }
    }

    /// Whether the session is reading message content (the driver applies the data timeout): DATA, a BDAT
    /// chunk, or the octets of a refused BDAT chunk being read and thrown away.
    pub fn in_data(&self) -> bool {
        matches!(self.phase, Phase::Data(..))
            || matches!(&self.phase, Phase::Chunking(_, c) if c.remaining > 0)
            || self.skip.is_some()
    }

    pub fn is_closed(&self) -> bool {
        self.closed && self.out.is_empty()
    }

    /// Whether a transaction (MAIL given, message not yet complete) is open.
    pub fn in_transaction(&self) -> bool {
        !matches!(self.phase, Phase::Idle)
    }

    /// The next action, or `None` when the session needs more input (or a verdict it asked for).
    pub fn poll(&mut self) -> Option<Action> {
        loop {
            if let Some(a) = self.out.pop_front() {
                return Some(a);
            }
            if self.closed || !matches!(self.waiting, Waiting::Nothing) {
                return None;
            }
            if !self.step() {
                return self.out.pop_front();
            }
        }
    }

    /// Consumes some input; returns false when nothing more can be done without more bytes.
    fn step(&mut self) -> bool {
        let avail = &self.input[self.pos..];
        if let Some((remaining, _)) = &mut self.skip {
            let n = avail.len().min(*remaining);
            *remaining -= n;
            self.pos += n;
            if *remaining == 0 {
                if let Some((_, reply)) = self.skip.take() {
                    self.reply(reply);
                }
                return true;
            }
            return false;
        }
        match &mut self.phase {
            Phase::Data(_, reader) => {
                if avail.is_empty() {
                    return false;
                }
                let (n, done) = reader.feed(avail);
                self.pos += n;
                match done {
                    Some(result) => {
                        self.finish_message(result);
                        true
                    }
                    None => false,
                }
            }
            Phase::Chunking(_, chunk) if chunk.remaining > 0 => {
                if avail.is_empty() {
                    return false;
                }
                let n = chunk.feed(avail);
                self.pos += n;
                if chunk.remaining == 0 {
                    self.finish_chunk();
                }
                true
            }
            _ => self.command_step(),
        }
    }

    /// Reads one command line if a whole one is buffered.
    fn command_step(&mut self) -> bool {
        let avail = &self.input[self.pos..];
        let Some(lf) = avail.iter().position(|&b| b == b'\n') else {
            if avail.len() > self.cfg.limits.command_line {
                // Keep nothing of an over-long line; its end will be found and answered with 500.
                self.discarding_line = true;
                self.pos = self.input.len();
            }
            return false;
        };
        let raw_len = lf + 1;
        let line_end = if lf > 0 && avail[lf - 1] == b'\r' {
            lf - 1
        } else {
            lf
        };
        let line = avail[..line_end].to_vec();
        self.pos += raw_len;
        if std::mem::take(&mut self.discarding_line) || raw_len > self.cfg.limits.command_line {
            // An over-long line inside an AUTH exchange ends the exchange too (RFC 4954 4: 501).
            self.sasl = None;
            self.reply(Reply::command_line_too_long(self.cfg.limits.command_line));
            return true;
        }
        match String::from_utf8(line) {
            Ok(line) if self.sasl.is_some() => self.sasl_line(&line),
            Ok(line) => self.handle_line(&line),
            Err(_) => self.reply(Reply::syntax("command line is not valid UTF-8")),
        }
        true
    }

    /// Queues a reply; a permanent one counts toward the error limit, which closes the session with 421.
    fn reply(&mut self, reply: Reply) {
        let permanent = reply.is_permanent();
        self.out.push_back(Action::Reply(reply));
        if permanent {
            self.errors += 1;
            if self.errors >= self.cfg.limits.errors {
                self.out.push_back(Action::Reply(Reply::too_many_errors()));
                self.close();
            }
        }
    }

    fn close(&mut self) {
        self.out.push_back(Action::Close);
        self.closed = true;
    }

    /// Counts a command that moves no mail; too many of them between messages close the session.
    pub(super) fn junk_command(&mut self) -> bool {
        self.junk += 1;
        if self.junk > self.cfg.limits.junk_commands {
            self.out
                .push_back(Action::Reply(Reply::too_many_junk_commands()));
            self.close();
            return false;
        }
        true
    }

    /// The driver's verdict on the reverse-path asked for with [`Action::CheckSender`]: `None` accepts it.
    pub fn sender_verdict(&mut self, refusal: Option<Reply>) {
        let Waiting::Sender(reverse_path, params) =
            std::mem::replace(&mut self.waiting, Waiting::Nothing)
        else {
            return;
        };
        match refusal {
            None => {
                self.phase = Phase::Envelope(Transaction {
                    reverse_path,
                    params,
                    recipients: Vec::new(),
                    slots: Vec::new(),
                });
                self.reply(Reply::sender_ok());
            }
            Some(r) => self.reply(r),
        }
    }

    /// The driver checked the credentials from [`Action::Authenticate`]: the identity, or the refusal to send.
    pub fn auth_verdict(&mut self, verdict: Result<String, Reply>) {
        if !matches!(self.waiting, Waiting::Auth) {
            return;
        }
        self.waiting = Waiting::Nothing;
        match verdict {
            Ok(identity) => {
                self.identity = Some(identity);
                self.reply(Reply::auth_succeeded());
            }
            Err(reply) => {
                let closing = reply.code == 421;
                self.reply(reply);
                if closing && !self.closed {
                    self.close();
                }
            }
        }
    }

    /// Who authenticated in this session.
    /// The HELO/EHLO argument, empty before one (for log lines).
    pub fn helo(&self) -> &str {
        self.hello.as_ref().map(|h| h.name.as_str()).unwrap_or("")
    }

    pub fn identity(&self) -> Option<&str> {
        self.identity.as_deref()
    }

    /// The driver's verdict on the recipient asked for with [`Action::CheckRecipient`].
    pub fn recipient_verdict(&mut self, verdict: RcptVerdict) {
        let Waiting::Recipient(forward_path, params) =
            std::mem::replace(&mut self.waiting, Waiting::Nothing)
        else {
            return;
        };
        match (verdict, &mut self.phase) {
            (RcptVerdict::Accept(mailboxes), Phase::Envelope(tx)) => {
                let slot = match tx
                    .recipients
                    .iter()
                    .position(|r| r.mailboxes == mailboxes && r.forward_path == forward_path)
                {
                    Some(i) => i,
                    None => {
                        tx.recipients.push(Recipient {
                            forward_path,
                            params,
                            mailboxes,
                        });
                        tx.recipients.len() - 1
                    }
                };
                tx.slots.push(slot);
                self.reply(Reply::recipient_ok());
            }
            (RcptVerdict::Accept(_), _) => self.reply(Reply::bad_sequence("no transaction")),
            (RcptVerdict::Refuse(reply), _) => self.reply(reply),
        }
    }

    /// The driver stored (or failed to store) the message from [`Action::Message`]; `reply` says which. For
    /// LMTP the one reply stands for every recipient (a message refused as a whole).
    pub fn message_stored(&mut self, reply: Reply) {
        let Waiting::Message(slots) = std::mem::replace(&mut self.waiting, Waiting::Nothing) else {
            return;
        };
        if reply.code < 400 {
            self.junk = 0;
        }
        if self.cfg.lmtp {
            for _ in &slots {
                self.reply(reply.clone());
            }
        } else {
            self.reply(reply);
        }
    }

    /// LMTP (RFC 2033 4.2): one reply per recipient of the envelope, in its order; each RCPT command that was
    /// accepted gets its recipient's reply, duplicates included.
    pub fn message_stored_each(&mut self, replies: Vec<Reply>) {
        let Waiting::Message(slots) = std::mem::replace(&mut self.waiting, Waiting::Nothing) else {
            return;
        };
        self.junk = 0;
        for slot in slots {
            let reply = replies
                .get(slot)
                .cloned()
                .unwrap_or_else(Reply::queue_write_failed);
            self.reply(reply);
        }
    }

    pub fn is_lmtp(&self) -> bool {
        self.cfg.lmtp
    }

    /// The TLS handshake after STARTTLS succeeded: the session starts over, as RFC 3207 4.2 requires.
    pub fn tls_established(&mut self) {
        if matches!(self.waiting, Waiting::Tls) {
            self.waiting = Waiting::Nothing;
            self.tls = true;
        }
    }

    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// The protocol name for Received: (RFC 3848; RFC 6531 3.7.3 for the UTF8 forms).
    fn protocol(&self, smtputf8: bool) -> &'static str {
        let extended = self.hello.as_ref().is_some_and(|h| h.extended);
        let auth = self.identity.is_some();
        if self.cfg.lmtp {
            return match (smtputf8, self.tls) {
                (true, true) => "UTF8LMTPS",
                (true, false) => "UTF8LMTP",
                (false, true) => "LMTPS",
                (false, false) => "LMTP",
            };
        }
        match (smtputf8 && extended, self.tls, auth) {
            (true, true, true) => "UTF8SMTPSA",
            (true, true, false) => "UTF8SMTPS",
            (true, false, true) => "UTF8SMTPA",
            (true, false, false) => "UTF8SMTP",
            (false, true, true) => "ESMTPSA",
            (false, true, false) => "ESMTPS",
            (false, false, true) => "ESMTPA",
            (false, false, false) if extended => "ESMTP",
            (false, false, false) => "SMTP",
        }
    }

    fn finish_message(&mut self, result: Result<Vec<u8>, super::data::ContentError>) {
        let tx = match std::mem::replace(&mut self.phase, Phase::Idle) {
            Phase::Data(tx, _) | Phase::Chunking(tx, _) => tx,
            other => {
                self.phase = other;
                return;
            }
        };
        match result {
            Ok(body) => {
                let slots = tx.slots.clone();
                let envelope = Envelope {
                    protocol: self.protocol(tx.params.smtputf8),
                    helo: self
                        .hello
                        .as_ref()
                        .map(|h| h.name.clone())
                        .unwrap_or_default(),
                    reverse_path: tx.reverse_path,
                    params: tx.params,
                    recipients: tx.recipients,
                    auth: self.identity.clone(),
                };
                self.waiting = Waiting::Message(slots);
                self.out
                    .push_back(Action::Message(Box::new(envelope), body));
            }
            Err(e) => self.refuse_content(e, &tx),
        }
    }

    fn finish_chunk(&mut self) {
        let Phase::Chunking(_, chunk) = &mut self.phase else {
            return;
        };
        if chunk.last {
            let Phase::Chunking(tx, chunk) = std::mem::replace(&mut self.phase, Phase::Idle) else {
                return;
            };
            self.phase = Phase::Chunking(tx, ChunkReader::new(self.content_limits()));
            self.finish_message(chunk.finish());
        } else if let Some(e) = chunk.error() {
            // RFC 3030 4.2: a failed chunk fails the transaction; later chunks are read and refused with 503.
            let Phase::Chunking(tx, _) = std::mem::replace(&mut self.phase, Phase::Idle) else {
                return;
            };
            self.refuse_content(e, &tx);
        } else {
            let n = chunk.chunk_size;
            self.reply(Reply::chunk_received(n));
        }
    }

    /// The refusal of a message's content; LMTP still owes one reply per accepted RCPT (RFC 2033 4.2).
    fn refuse_content(&mut self, e: super::data::ContentError, tx: &Transaction) {
        let refusal = content_refusal(e, &self.cfg.limits);
        let n = if self.cfg.lmtp {
            tx.slots.len().max(1)
        } else {
            1
        };
        for _ in 0..n {
            self.reply(refusal.clone());
        }
    }

    fn content_limits(&self) -> ContentLimits {
        ContentLimits {
            max_size: self.cfg.limits.message_size,
            max_line: self.cfg.limits.text_line,
            max_header: self.cfg.limits.header_section,
        }
    }
}

fn content_refusal(e: super::data::ContentError, limits: &SessionLimits) -> Reply {
    use super::data::ContentError;
    match e {
        ContentError::TooBig => Reply::message_too_big(limits.message_size),
        ContentError::LineTooLong => Reply::text_line_too_long(limits.text_line),
        ContentError::BareLf => Reply::bare_line_ending("LF"),
        ContentError::BareCr => Reply::bare_line_ending("CR"),
        ContentError::HeaderTooBig(max) => Reply::header_too_big(max),
        ContentError::NoMemory => Reply::insufficient_storage(),
    }
}
