//! SMTP replies with RFC 3463 enhanced status codes, and the one place that names every reply tern sends.
//!
//! Reply text is never built ad hoc by the I/O code: it calls one of the named constructors here, so that
//! every refusal carries a basic code, an enhanced code and a reason an administrator can grep for.

use std::fmt;

/// An RFC 3463 enhanced status code such as `5.1.1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnhancedCode(pub u8, pub u16, pub u16);

impl fmt::Display for EnhancedCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// One SMTP reply: a three-digit code, an enhanced status code and one or more text lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub enhanced: Option<EnhancedCode>,
    pub lines: Vec<String>,
}

impl Reply {
    /// A single-line reply with an enhanced status code.
    pub fn new(code: u16, enhanced: EnhancedCode, text: impl Into<String>) -> Reply {
        Reply {
            code,
            enhanced: Some(enhanced),
            lines: vec![text.into()],
        }
    }

    /// A reply without an enhanced code: only the greeting and EHLO, where RFC 2034 forbids one.
    pub fn plain(code: u16, lines: Vec<String>) -> Reply {
        Reply {
            code,
            enhanced: None,
            lines,
        }
    }

    pub fn is_positive(&self) -> bool {
        self.code < 400
    }
    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code)
    }
    pub fn is_permanent(&self) -> bool {
        self.code >= 500
    }

    /// The reply on the wire: every line but the last joined with `-`, each ending in CRLF.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let n = self.lines.len().max(1);
        for i in 0..n {
            let text = self.lines.get(i).map(String::as_str).unwrap_or("");
            let sep = if i + 1 == n { ' ' } else { '-' };
            out.extend_from_slice(self.code.to_string().as_bytes());
            out.push(sep as u8);
            if let Some(e) = self.enhanced {
                out.extend_from_slice(e.to_string().as_bytes());
                out.push(b' ');
            }
            // A reply line never carries CR or LF from the text it quotes.
            out.extend(text.bytes().filter(|b| *b != b'\r' && *b != b'\n'));
            out.extend_from_slice(b"\r\n");
        }
    }

    /// The reply as one line for logs: `550 5.1.1 text`.
    pub fn summary(&self) -> String {
        let mut s = self.code.to_string();
        if let Some(e) = self.enhanced {
            s.push(' ');
            s.push_str(&e.to_string());
        }
        for l in &self.lines {
            s.push(' ');
            s.push_str(l);
        }
        s
    }

    // ---- Positive replies -------------------------------------------------------------------------------------

    pub fn ok() -> Reply {
        Reply::new(250, EnhancedCode(2, 0, 0), "OK")
    }
    pub fn sender_ok() -> Reply {
        Reply::new(250, EnhancedCode(2, 1, 0), "Sender OK")
    }
    pub fn recipient_ok() -> Reply {
        Reply::new(250, EnhancedCode(2, 1, 5), "Recipient OK")
    }
    pub fn start_data() -> Reply {
        Reply::plain(354, vec!["End data with <CR><LF>.<CR><LF>".into()])
    }
    pub fn queued(queue_id: &str) -> Reply {
        Reply::new(
            250,
            EnhancedCode(2, 0, 0),
            format!("OK: queued as {queue_id}"),
        )
    }
    pub fn chunk_received(octets: usize) -> Reply {
        Reply::new(
            250,
            EnhancedCode(2, 0, 0),
            format!("{octets} octets received"),
        )
    }
    pub fn closing(hostname: &str) -> Reply {
        Reply::new(
            221,
            EnhancedCode(2, 0, 0),
            format!("{hostname} closing connection"),
        )
    }
    pub fn ready_for_tls() -> Reply {
        Reply::new(220, EnhancedCode(2, 0, 0), "Ready to start TLS")
    }
    pub fn cannot_vrfy() -> Reply {
        Reply::new(
            252,
            EnhancedCode(2, 5, 2),
            "Cannot VRFY user, but will accept message and attempt delivery",
        )
    }
    pub fn help() -> Reply {
        Reply::new(
            214,
            EnhancedCode(2, 0, 0),
            "Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP STARTTLS",
        )
    }

    // ---- Sequence and syntax ----------------------------------------------------------------------------------

    pub fn bad_sequence(what: &str) -> Reply {
        Reply::new(
            503,
            EnhancedCode(5, 5, 1),
            format!("Bad sequence of commands: {what}"),
        )
    }
    pub fn unrecognized(verb: &str) -> Reply {
        Reply::new(
            500,
            EnhancedCode(5, 5, 2),
            format!("Command unrecognized: \"{verb}\""),
        )
    }
    pub fn not_implemented(verb: &str) -> Reply {
        Reply::new(
            502,
            EnhancedCode(5, 5, 1),
            format!("Command not implemented: {verb}"),
        )
    }
    pub fn syntax(reason: &str) -> Reply {
        Reply::new(
            501,
            EnhancedCode(5, 5, 4),
            format!("Syntax error in arguments: {reason}"),
        )
    }
    pub fn bad_sender_syntax(reason: &str) -> Reply {
        Reply::new(
            501,
            EnhancedCode(5, 1, 7),
            format!("Bad sender address syntax: {reason}"),
        )
    }
    pub fn bad_recipient_syntax(reason: &str) -> Reply {
        Reply::new(
            501,
            EnhancedCode(5, 1, 3),
            format!("Bad recipient address syntax: {reason}"),
        )
    }
    pub fn unsupported_parameter(param: &str) -> Reply {
        Reply::new(
            555,
            EnhancedCode(5, 5, 4),
            format!("Unsupported parameter: {param}"),
        )
    }
    pub fn command_line_too_long(limit: usize) -> Reply {
        Reply::new(
            500,
            EnhancedCode(5, 5, 2),
            format!("Line too long (limit {limit} octets)"),
        )
    }
    pub fn needs_smtputf8() -> Reply {
        Reply::new(
            553,
            EnhancedCode(5, 6, 7),
            "Non-ASCII address requires the SMTPUTF8 parameter",
        )
    }
    pub fn tls_not_available() -> Reply {
        Reply::new(502, EnhancedCode(5, 5, 1), "STARTTLS not available")
    }

    // ---- Limits -----------------------------------------------------------------------------------------------

    pub fn message_too_big(limit: usize) -> Reply {
        Reply::new(
            552,
            EnhancedCode(5, 3, 4),
            format!("Message size exceeds fixed limit of {limit} octets"),
        )
    }
    pub fn too_many_recipients(limit: usize) -> Reply {
        Reply::new(
            452,
            EnhancedCode(4, 5, 3),
            format!("Too many recipients (limit {limit} per message)"),
        )
    }
    pub fn text_line_too_long(limit: usize) -> Reply {
        Reply::new(
            500,
            EnhancedCode(5, 5, 2),
            format!("Message has a line longer than {limit} octets"),
        )
    }
    pub fn too_many_errors() -> Reply {
        Reply::new(
            421,
            EnhancedCode(4, 7, 0),
            "Too many errors, closing connection",
        )
    }
    pub fn too_many_connections(scope: &str) -> Reply {
        Reply::new(
            421,
            EnhancedCode(4, 7, 0),
            format!("Too many connections {scope}, try again later"),
        )
    }
    pub fn timeout(hostname: &str) -> Reply {
        Reply::new(
            421,
            EnhancedCode(4, 4, 2),
            format!("{hostname} timeout, closing connection"),
        )
    }
    pub fn shutting_down(hostname: &str) -> Reply {
        Reply::new(
            421,
            EnhancedCode(4, 3, 2),
            format!("{hostname} shutting down"),
        )
    }

    // ---- Message content --------------------------------------------------------------------------------------

    /// A bare CR or LF in DATA or BDAT: refused so that SMTP smuggling can neither end nor split a message.
    pub fn bare_line_ending(which: &str) -> Reply {
        Reply::new(
            550,
            EnhancedCode(5, 6, 0),
            format!("Message contains a bare {which}; lines must end with <CR><LF>"),
        )
    }
    /// The recipient's own filter refused the message (Sieve ereject, RFC 5429 section 2.1); the reason is
    /// the script's, made one printable line.
    pub fn refused_by_filter(reason: &str) -> Reply {
        // SMTP reply text is ASCII (RFC 5321 4.2): anything else becomes '?'.
        let text: String = reason
            .chars()
            .map(|c| match c {
                c if c.is_control() => ' ',
                c if !c.is_ascii() => '?',
                c => c,
            })
            .take(200)
            .collect();
        Reply::new(550, EnhancedCode(5, 7, 1), text.trim().to_string())
    }

    pub fn no_valid_recipients() -> Reply {
        Reply::new(554, EnhancedCode(5, 5, 1), "No valid recipients")
    }
    pub fn binarymime_unsupported() -> Reply {
        Reply::new(
            555,
            EnhancedCode(5, 5, 4),
            "BODY=BINARYMIME is not supported",
        )
    }

    // ---- Authentication (RFC 4954) -------------------------------------------------------------------------

    pub fn auth_challenge(challenge: &str) -> Reply {
        Reply::plain(334, vec![challenge.to_string()])
    }
    pub fn auth_succeeded() -> Reply {
        Reply::new(235, EnhancedCode(2, 7, 0), "Authentication successful")
    }
    pub fn auth_required() -> Reply {
        Reply::new(530, EnhancedCode(5, 7, 0), "Authentication required")
    }
    /// RFC 4954 section 6: the credentials are right but the account is disabled.
    pub fn account_disabled() -> Reply {
        Reply::new(525, EnhancedCode(5, 7, 13), "User account disabled")
    }
    pub fn auth_failed() -> Reply {
        Reply::new(
            535,
            EnhancedCode(5, 7, 8),
            "Authentication credentials invalid",
        )
    }
    pub fn encryption_required() -> Reply {
        Reply::new(
            538,
            EnhancedCode(5, 7, 11),
            "Encryption required for requested authentication mechanism",
        )
    }
    pub fn auth_mechanism_unknown(name: &str) -> Reply {
        Reply::new(
            504,
            EnhancedCode(5, 5, 4),
            format!("Unrecognized authentication mechanism {name:?}"),
        )
    }
    pub fn auth_cancelled() -> Reply {
        Reply::new(501, EnhancedCode(5, 7, 0), "Authentication cancelled")
    }
    pub fn auth_malformed(reason: &str) -> Reply {
        Reply::new(
            501,
            EnhancedCode(5, 5, 2),
            format!("Malformed authentication response: {reason}"),
        )
    }
    pub fn auth_throttled() -> Reply {
        Reply::new(
            421,
            EnhancedCode(4, 7, 0),
            "Too many failed logins, try again later",
        )
    }
    pub fn auth_temporary_failure() -> Reply {
        Reply::new(
            454,
            EnhancedCode(4, 7, 0),
            "Temporary authentication failure",
        )
    }

    // ---- Submission policy ------------------------------------------------------------------------------------

    /// MAIL FROM or From: names an address the authenticated user does not own.
    pub fn sender_not_owned(what: &str, address: &str, user: &str) -> Reply {
        Reply::new(
            553,
            EnhancedCode(5, 7, 1),
            format!("{what} <{address}> is not owned by user {user}"),
        )
    }
    pub fn user_rate_limited(limit: u32) -> Reply {
        Reply::new(
            452,
            EnhancedCode(4, 7, 0),
            format!("Message rate limit exceeded: at most {limit} messages per hour"),
        )
    }
    pub fn user_too_many_recipients(limit: usize) -> Reply {
        Reply::new(
            452,
            EnhancedCode(4, 5, 3),
            format!("Too many recipients: your limit is {limit} per message"),
        )
    }
    pub fn user_message_too_big(limit: usize) -> Reply {
        Reply::new(
            552,
            EnhancedCode(5, 3, 4),
            format!("Message size exceeds your limit of {limit} octets"),
        )
    }
    pub fn bad_from_header(reason: &str) -> Reply {
        Reply::new(
            550,
            EnhancedCode(5, 6, 0),
            format!("Message refused: {reason}"),
        )
    }

    // ---- Inbound checks -------------------------------------------------------------------------------------

    pub fn blocklisted(ip: &str, zone: &str) -> Reply {
        Reply::new(
            554,
            EnhancedCode(5, 7, 1),
            format!("Client host [{ip}] blocked using {zone}"),
        )
    }
    pub fn dmarc_rejected(domain: &str, policy: &str) -> Reply {
        Reply::new(
            550,
            EnhancedCode(5, 7, 1),
            format!("Message rejected: DMARC policy of {domain} (p={policy}) failed"),
        )
    }
    pub fn spf_failed() -> Reply {
        Reply::new(
            550,
            EnhancedCode(5, 7, 23),
            "Message rejected: SPF check failed",
        )
    }
    pub fn checks_temporary_failure() -> Reply {
        Reply::new(
            451,
            EnhancedCode(4, 7, 5),
            "Temporary DNS failure checking the message, try again later",
        )
    }
    pub fn greylisted() -> Reply {
        Reply::new(
            451,
            EnhancedCode(4, 7, 1),
            "Greylisted, please try again later",
        )
    }

    // ---- Recipient and sender policy --------------------------------------------------------------------------

    pub fn unknown_user(address: &str) -> Reply {
        Reply::new(
            550,
            EnhancedCode(5, 1, 1),
            format!("<{address}>: Recipient address rejected: no such user"),
        )
    }
    /// RFC 3463 X.2.1: the mailbox exists but its account is disabled.
    pub fn mailbox_disabled(address: &str) -> Reply {
        Reply::new(
            550,
            EnhancedCode(5, 2, 1),
            format!(
                "<{address}>: Recipient address rejected: mailbox disabled, not accepting messages"
            ),
        )
    }
    pub fn over_quota(address: &str) -> Reply {
        Reply::new(
            452,
            EnhancedCode(4, 2, 2),
            format!("<{address}>: Mailbox full, try again later"),
        )
    }
    /// The message can never fit the mailbox: it is bigger than the whole quota (RFC 3463 5.2.2).
    pub fn exceeds_quota(address: &str) -> Reply {
        Reply::new(
            552,
            EnhancedCode(5, 2, 2),
            format!("<{address}>: Message is bigger than the mailbox's quota"),
        )
    }
    pub fn header_too_big(limit: usize) -> Reply {
        Reply::new(
            552,
            EnhancedCode(5, 3, 4),
            format!("Header section exceeds fixed limit of {limit} octets"),
        )
    }
    pub fn too_many_junk_commands() -> Reply {
        Reply::new(
            421,
            EnhancedCode(4, 7, 0),
            "Too many commands without mail, closing connection",
        )
    }
    /// The session went on too long without completing a message.
    pub fn session_too_long(hostname: &str) -> Reply {
        Reply::new(
            421,
            EnhancedCode(4, 4, 2),
            format!("{hostname} session lasted too long without mail, closing connection"),
        )
    }
    /// RFC 5322 3.6: at most one From:, Sender:, ... field.
    pub fn duplicate_header(name: &str) -> Reply {
        Reply::new(
            550,
            EnhancedCode(5, 6, 0),
            format!("Message has more than one {name} header field (RFC 5322 3.6)"),
        )
    }
    /// A local program tried to send as an address its Unix user does not own.
    pub fn local_sender_refused(address: &str, user: &str) -> Reply {
        Reply::new(
            553,
            EnhancedCode(5, 7, 1),
            format!("Local user {user} may not send as <{address}>"),
        )
    }
    pub fn relay_denied(address: &str) -> Reply {
        Reply::new(
            554,
            EnhancedCode(5, 7, 1),
            format!("<{address}>: Relay access denied"),
        )
    }
    pub fn temporary_lookup_failure() -> Reply {
        Reply::new(
            451,
            EnhancedCode(4, 3, 0),
            "Temporary recipient lookup failure, try again later",
        )
    }
    pub fn insufficient_storage() -> Reply {
        Reply::new(
            452,
            EnhancedCode(4, 3, 1),
            "Insufficient system storage, try again later",
        )
    }
    pub fn queue_write_failed() -> Reply {
        Reply::new(
            451,
            EnhancedCode(4, 3, 0),
            "Local error in processing: message not queued, try again later",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multiline_reply_uses_dash_until_the_last_line() {
        let r = Reply::plain(
            250,
            vec!["mx.example.test".into(), "PIPELINING".into(), "DSN".into()],
        );
        let mut out = Vec::new();
        r.write_to(&mut out);
        assert_eq!(out, b"250-mx.example.test\r\n250-PIPELINING\r\n250 DSN\r\n");
    }

    #[test]
    fn enhanced_code_follows_the_basic_code_and_crlf_is_stripped() {
        let mut out = Vec::new();
        Reply::unknown_user("a\r\nb@example.test").write_to(&mut out);
        assert_eq!(
            out,
            b"550 5.1.1 <ab@example.test>: Recipient address rejected: no such user\r\n"
        );
    }
}
