//! One handler per command: the `match` of (phase, command) that decides each reply.

use super::{Action, Hello, Phase, Session, Waiting};
use crate::smtp::command::{self, Command, CommandError};
use crate::smtp::data::{ChunkReader, DataReader};
use crate::smtp::reply::Reply;
use crate::smtp::{ForwardPath, ReversePath};

impl Session {
    pub(super) fn handle_line(&mut self, line: &str) {
        let cmd = match command::parse(line) {
            Ok(c) => c,
            Err(e) => {
                if self.junk_command() {
                    self.refuse_command(line, e);
                }
                return;
            }
        };
        let moves_mail = matches!(
            cmd,
            Command::Mail { .. }
                | Command::Rcpt { .. }
                | Command::Data
                | Command::Bdat { .. }
                | Command::Quit
                | Command::StartTls
                | Command::Auth { .. }
        );
        if !moves_mail && !self.junk_command() {
            return;
        }
        match cmd {
            // RFC 2033 4.1: an LMTP server takes LHLO and refuses HELO and EHLO; an SMTP server the reverse.
            Command::Ehlo(_) | Command::Helo(_) if self.cfg.lmtp => {
                self.reply(Reply::unrecognized("HELO/EHLO"))
            }
            Command::Lhlo(name) if self.cfg.lmtp => self.hello(name, true),
            Command::Ehlo(name) => self.hello(name, true),
            Command::Helo(name) => self.hello(name, false),
            Command::Lhlo(_) => self.reply(Reply::unrecognized("LHLO")),
            Command::Mail {
                reverse_path,
                params,
            } => self.mail(reverse_path, params),
            Command::Rcpt {
                forward_path,
                params,
            } => self.rcpt(forward_path, params),
            Command::Data => self.data(),
            Command::Bdat { size, last } => self.bdat(size, last),
            Command::Rset => {
                self.phase = Phase::Idle;
                self.reply(Reply::ok());
            }
            Command::Noop => self.reply(Reply::ok()),
            Command::Vrfy => self.reply(Reply::cannot_vrfy()),
            Command::Help => self.reply(Reply::help()),
            Command::Quit => {
                self.reply(Reply::closing(&self.cfg.hostname));
                self.close();
            }
            Command::StartTls => self.starttls(),
            Command::Auth { mechanism, initial } => self.auth(&mechanism, initial.as_deref()),
            Command::NotImplemented(verb) => self.reply(Reply::not_implemented(&verb)),
        }
    }

    fn refuse_command(&mut self, line: &str, e: CommandError) {
        let verb = line.split(' ').next().unwrap_or("");
        // Only a known verb is logged: an unknown "verb" may be a pipelined AUTH response (a password).
        let logged = if command::is_known_verb(verb) {
            verb
        } else {
            "(unrecognized)"
        };
        // A BDAT we cannot parse has an unknown number of octets behind it; they will be read as commands
        // and refused, and the error limit ends a session that is out of step.
        let reply = match &e {
            CommandError::Unrecognized(v) => Reply::unrecognized(v),
            CommandError::Syntax(reason) => Reply::syntax(reason),
            CommandError::Sender(a) => match a {
                crate::smtp::address::AddressError::NeedsUtf8(_) => Reply::needs_smtputf8(),
                a => Reply::bad_sender_syntax(&a.to_string()),
            },
            CommandError::Recipient(a) => Reply::bad_recipient_syntax(&a.to_string()),
            CommandError::UnsupportedParam(p) => Reply::unsupported_parameter(p),
            CommandError::BinaryMime => Reply::binarymime_unsupported(),
        };
        let error = if matches!(e, CommandError::Unrecognized(_)) {
            "unrecognized command".to_string()
        } else {
            crate::log::escape(&e.to_string())
        };
        tracing::debug!(verb = logged, error = %error, "command refused");
        self.reply(reply);
    }

    fn hello(&mut self, name: String, extended: bool) {
        // RFC 5321 4.1.4: EHLO/HELO resets any transaction in progress.
        self.phase = Phase::Idle;
        let mut lines = vec![self.cfg.hostname.clone()];
        if extended {
            lines.extend([
                "PIPELINING".to_string(),
                format!("SIZE {}", self.cfg.limits.message_size),
                "8BITMIME".into(),
                "SMTPUTF8".into(),
                "ENHANCEDSTATUSCODES".into(),
                "CHUNKING".into(),
            ]);
            if self.cfg.starttls && !self.tls {
                lines.push("STARTTLS".into());
            }
            // RFC 4954 and RFC 8314: passwords only ever cross TLS.
            if self.cfg.auth && self.tls && self.identity.is_none() {
                lines.push("AUTH PLAIN LOGIN".into());
            }
            lines.push("DSN".into());
        }
        self.hello = Some(Hello { name, extended });
        self.out.push_back(Action::Reply(Reply::plain(250, lines)));
    }

    fn mail(&mut self, reverse_path: ReversePath, params: command::MailParams) {
        if self.hello.is_none() {
            return self.reply(Reply::bad_sequence("send HELO/EHLO first"));
        }
        if !matches!(self.phase, Phase::Idle) {
            return self.reply(Reply::bad_sequence("nested MAIL command"));
        }
        if self.cfg.require_auth && self.identity.is_none() {
            return self.reply(Reply::auth_required());
        }
        if params
            .size
            .is_some_and(|s| s > self.cfg.limits.message_size)
        {
            return self.reply(Reply::message_too_big(self.cfg.limits.message_size));
        }
        self.waiting = Waiting::Sender(reverse_path.clone(), params.clone());
        self.out
            .push_back(Action::CheckSender(reverse_path, params));
    }

    fn auth(&mut self, mechanism: &str, initial: Option<&str>) {
        use crate::sasl::{Exchange, Mechanism};
        if !self.cfg.auth {
            return self.reply(Reply::not_implemented("AUTH"));
        }
        if self.hello.as_ref().is_none_or(|h| !h.extended) {
            return self.reply(Reply::bad_sequence("send EHLO first"));
        }
        if !self.tls {
            return self.reply(Reply::encryption_required());
        }
        if self.identity.is_some() {
            return self.reply(Reply::bad_sequence("already authenticated"));
        }
        if !matches!(self.phase, Phase::Idle) {
            return self.reply(Reply::bad_sequence("AUTH inside a transaction"));
        }
        let Some(mechanism) = Mechanism::parse(mechanism) else {
            return self.reply(Reply::auth_mechanism_unknown(mechanism));
        };
        let (exchange, step) = Exchange::start(mechanism, initial);
        self.sasl = exchange;
        self.sasl_step(step);
    }

    pub(super) fn sasl_line(&mut self, line: &str) {
        let Some(exchange) = self.sasl.take() else {
            return;
        };
        let (exchange, step) = exchange.respond(line);
        self.sasl = exchange;
        self.sasl_step(step);
    }

    fn sasl_step(&mut self, step: crate::sasl::Step) {
        use crate::sasl::{SaslError, Step};
        match step {
            Step::Challenge(c) => self.out.push_back(Action::Reply(Reply::auth_challenge(&c))),
            Step::Done(credentials) => {
                self.waiting = Waiting::Auth;
                self.out.push_back(Action::Authenticate(credentials));
            }
            Step::Failed(SaslError::Cancelled) => self.reply(Reply::auth_cancelled()),
            Step::Failed(SaslError::Malformed(why)) => self.reply(Reply::auth_malformed(why)),
        }
    }

    fn rcpt(&mut self, forward_path: ForwardPath, params: command::RcptParams) {
        let Phase::Envelope(tx) = &self.phase else {
            return self.reply(Reply::bad_sequence("need MAIL before RCPT"));
        };
        if let ForwardPath::Mailbox(m) = &forward_path
            && !tx.params.smtputf8
            && !m.is_ascii()
        {
            return self.reply(Reply::needs_smtputf8());
        }
        if tx.recipients.len() >= self.cfg.limits.recipients {
            return self.reply(Reply::too_many_recipients(self.cfg.limits.recipients));
        }
        self.waiting = Waiting::Recipient(forward_path.clone(), params);
        self.out.push_back(Action::CheckRecipient(forward_path));
    }

    fn data(&mut self) {
        match std::mem::replace(&mut self.phase, Phase::Idle) {
            Phase::Envelope(tx) if !tx.recipients.is_empty() => {
                self.content_seq += 1;
                self.phase = Phase::Data(tx, DataReader::new(self.content_limits()));
                self.out.push_back(Action::Reply(Reply::start_data()));
            }
            Phase::Envelope(tx) => {
                self.phase = Phase::Envelope(tx);
                self.reply(Reply::no_valid_recipients());
            }
            Phase::Idle => self.reply(Reply::bad_sequence("need MAIL command")),
            other => {
                self.phase = other;
                self.reply(Reply::bad_sequence("DATA inside a BDAT transaction"));
            }
        }
    }

    fn bdat(&mut self, size: usize, last: bool) {
        match std::mem::replace(&mut self.phase, Phase::Idle) {
            Phase::Envelope(tx) if !tx.recipients.is_empty() => {
                self.content_seq += 1;
                let mut chunk = ChunkReader::new(self.content_limits());
                chunk.begin_chunk(size, last);
                self.phase = Phase::Chunking(tx, chunk);
            }
            Phase::Chunking(tx, mut chunk) => {
                chunk.begin_chunk(size, last);
                self.phase = Phase::Chunking(tx, chunk);
            }
            other => {
                // The chunk's octets follow the command regardless: read and drop them, then refuse.
                let reply = match &other {
                    Phase::Envelope(_) => Reply::no_valid_recipients(),
                    _ => Reply::bad_sequence("need MAIL and RCPT before BDAT"),
                };
                if let Phase::Envelope(_) = other {
                    self.phase = other;
                }
                self.skip = Some((size, reply));
                return;
            }
        }
        // A zero-octet chunk completes at once.
        if let Phase::Chunking(_, c) = &self.phase
            && c.remaining == 0
        {
            self.finish_chunk();
        }
    }

    fn starttls(&mut self) {
        if self.tls {
            return self.reply(Reply::bad_sequence("TLS already active"));
        }
        if !self.cfg.starttls {
            return self.reply(Reply::tls_not_available());
        }
        if self.hello.is_none() {
            return self.reply(Reply::bad_sequence("send EHLO first"));
        }
        if !matches!(self.phase, Phase::Idle) {
            return self.reply(Reply::bad_sequence("STARTTLS inside a transaction"));
        }
        self.out.push_back(Action::Reply(Reply::ready_for_tls()));
        self.out.push_back(Action::StartTls);
        self.waiting = Waiting::Tls;
        // RFC 3207 4.2 and CVE-2011-0411: nothing sent before the handshake is obeyed after it.
        self.input.clear();
        self.pos = 0;
        self.hello = None;
        self.phase = Phase::Idle;
    }
}
