//! Vacation replies (RFC 5230, RFC 6131 for :seconds): when not to answer (RFC 5230 section 4.5 and RFC
//! 3834: never to `<>`, to lists, to bulk or automatic mail, to ourselves, or to mail not addressed to us),
//! and the reply itself (sent from `<>`, Auto-Submitted: auto-replied, threaded with In-Reply-To).

use super::interp::Envelope;
use super::message::{MessageView, split_address};

/// What the script gave vacation, expanded.
pub struct Params {
    pub reason: String,
    pub subject: Option<String>,
    pub from: Option<String>,
    pub handle: Option<String>,
    pub mime: bool,
    pub seconds: u64,
}

/// A reply to send (once per sender and handle per `seconds`).
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// The envelope sender of the original: where the reply goes.
    pub to: String,
    /// The From: of the reply (an address, or a full mailbox with a display name).
    pub from: Option<String>,
    pub subject: String,
    /// Whether the script gave the subject (`:subject`).
    pub subject_explicit: bool,
    pub in_reply_to: Option<String>,
    pub references: Option<String>,
    pub reason: String,
    pub mime: bool,
    pub seconds: u64,
    /// Distinguishes this vacation from the user's other ones (the handle, or a digest of the text).
    pub handle: String,
}

/// Local parts that are automatic senders (RFC 5230 section 4.6 and long practice).
fn automatic_sender(local: &str) -> bool {
    let l = local.to_ascii_lowercase();
    l == "mailer-daemon"
        || l == "listserv"
        || l == "majordomo"
        || l == "owner"
        || l.starts_with("owner-")
        || l.ends_with("-request")
        || l == "postmaster"
        || l.starts_with("noreply")
        || l.starts_with("no-reply")
}

/// Whether a reply may be sent; else why not (for the log).
pub fn decide(msg: &MessageView, envelope: &Envelope, own: &[String]) -> Result<(), &'static str> {
    if envelope.from.is_empty() {
        return Err("the envelope sender is <>");
    }
    let (local, _) = split_address(&envelope.from);
    if automatic_sender(local) {
        return Err("the sender is an automatic address");
    }
    if own
        .iter()
        .any(|a| !a.is_empty() && a.eq_ignore_ascii_case(&envelope.from))
    {
        return Err("the sender is the user");
    }
    for v in msg.values("auto-submitted") {
        let v = v.split(';').next().unwrap_or("").trim();
        if !v.eq_ignore_ascii_case("no") {
            return Err("the message is Auto-Submitted");
        }
    }
    for h in [
        "list-id",
        "list-help",
        "list-subscribe",
        "list-unsubscribe",
        "list-post",
        "list-owner",
        "list-archive",
    ] {
        if msg.exists(h) {
            return Err("the message came from a mailing list");
        }
    }
    for v in msg.values("precedence") {
        if ["bulk", "list", "junk"]
            .iter()
            .any(|p| v.trim().eq_ignore_ascii_case(p))
        {
            return Err("the message has Precedence bulk, list or junk");
        }
    }
    // RFC 5230 section 4.5: only mail addressed to one of the user's addresses.
    let mut addressed = false;
    for h in ["to", "cc", "bcc", "resent-to", "resent-cc", "resent-bcc"] {
        for field in msg.addresses(h) {
            for a in field {
                if own.iter().any(|o| same_address(o, &a)) {
                    addressed = true;
                }
            }
        }
    }
    if !addressed {
        return Err("the message is not addressed to the user");
    }
    Ok(())
}

/// Equal addresses, and a subaddress (`user+tag@d`) is the user's too.
fn same_address(own: &str, other: &str) -> bool {
    if own.eq_ignore_ascii_case(other) {
        return true;
    }
    let (ol, od) = split_address(own);
    let (l, d) = split_address(other);
    od.eq_ignore_ascii_case(d)
        && l.split_once('+')
            .is_some_and(|(u, _)| u.eq_ignore_ascii_case(ol))
}

impl Reply {
    pub fn build(msg: &MessageView, envelope: &Envelope, p: Params) -> Reply {
        let original_subject: String = msg
            .values("subject")
            .into_iter()
            .next()
            .unwrap_or_default()
            .chars()
            .take(200)
            .collect();
        let subject_explicit = p.subject.as_ref().is_some_and(|s| !s.is_empty());
        let subject = p
            .subject
            .clone()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| format!("Auto: {original_subject}"));
        // Copied from the message: kept short enough for a header line (RFC 5322 2.1.1).
        let message_id = msg
            .values("message-id")
            .into_iter()
            .next()
            .filter(|m| m.len() <= 250);
        let references = msg.values("references").into_iter().next().map(|r| {
            // The last few identifiers are what threading needs (RFC 5322 3.6.4).
            let ids: Vec<&str> = r.split_whitespace().collect();
            ids[ids.len().saturating_sub(8)..]
                .iter()
                .filter(|i| i.len() <= 250)
                .copied()
                .collect::<Vec<_>>()
                .join(" ")
        });
        let references = match (&references, &message_id) {
            (Some(r), Some(m)) => Some(format!("{r} {m}")),
            (None, Some(m)) => Some(m.clone()),
            (r, None) => r.clone(),
        };
        // RFC 5230 section 4.2: the default handle depends on the script's arguments only (never on the
        // incoming message, or each new subject would get a new reply).
        let handle = p.handle.clone().unwrap_or_else(|| {
            digest(&[
                &p.reason,
                p.from.as_deref().unwrap_or(""),
                p.subject.as_deref().unwrap_or(""),
                if p.mime { "mime" } else { "" },
            ])
        });
        Reply {
            to: envelope.from.clone(),
            from: p.from,
            subject,
            subject_explicit,
            in_reply_to: message_id,
            references,
            reason: p.reason,
            mime: p.mime,
            seconds: p.seconds,
            handle,
        }
    }

    /// The reply as a message (CRLF), from `from_address` when the script gave no :from.
    pub fn render(&self, from_address: &str, date: &str, message_id: &str) -> Vec<u8> {
        let clean = |s: &str| -> String {
            s.chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect()
        };
        let mut m = String::new();
        let from = self.from.as_deref().unwrap_or(from_address);
        m.push_str(&format!("From: {}\r\n", clean(from)));
        m.push_str(&format!("To: <{}>\r\n", clean(&self.to)));
        m.push_str(&format!(
            "Subject: {}\r\n",
            encode_header(&clean(&self.subject))
        ));
        m.push_str(&format!("Date: {date}\r\n"));
        m.push_str(&format!("Message-ID: {message_id}\r\n"));
        if let Some(r) = &self.in_reply_to {
            m.push_str(&format!("In-Reply-To: {}\r\n", clean(r)));
        }
        if let Some(r) = &self.references {
            m.push_str(&format!("References: {}\r\n", clean(r)));
        }
        m.push_str("Auto-Submitted: auto-replied (vacation)\r\n");
        m.push_str("Precedence: bulk\r\n");
        m.push_str("MIME-Version: 1.0\r\n");
        let body = self.reason.replace("\r\n", "\n").replace('\n', "\r\n");
        if self.mime {
            // :mime: the reason is a MIME entity of its own (its headers, a blank line, its body).
            m.push_str(&body);
            if !body.ends_with("\r\n") {
                m.push_str("\r\n");
            }
        } else {
            m.push_str("Content-Type: text/plain; charset=utf-8\r\n");
            m.push_str("Content-Transfer-Encoding: 8bit\r\n\r\n");
            for line in body.split("\r\n") {
                // No line may be longer than SMTP allows.
                let mut rest = line;
                while rest.len() > 900 {
                    let mut cut = 900;
                    while !rest.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    m.push_str(&rest[..cut]);
                    m.push_str("\r\n");
                    rest = &rest[cut..];
                }
                m.push_str(rest);
                m.push_str("\r\n");
            }
        }
        m.into_bytes()
    }
}

/// A header value as RFC 2047 words when it is not ASCII.
fn encode_header(s: &str) -> String {
    if s.is_ascii() {
        return s.to_string();
    }
    use base64::Engine;
    // Encoded words of at most 75 characters (RFC 2047 section 2), split between characters.
    let mut words = Vec::new();
    let mut chunk = String::new();
    for c in s.chars() {
        if chunk.len() + c.len_utf8() > 45 {
            words.push(std::mem::take(&mut chunk));
        }
        chunk.push(c);
    }
    words.push(chunk);
    words
        .iter()
        .map(|w| {
            format!(
                "=?utf-8?b?{}?=",
                base64::engine::general_purpose::STANDARD.encode(w.as_bytes())
            )
        })
        .collect::<Vec<_>>()
        .join("\r\n ")
}

/// A short stable digest of some strings (keys of the vacation and duplicate memories).
pub fn digest(parts: &[&str]) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for p in parts {
        ctx.update(&(p.len() as u64).to_be_bytes());
        ctx.update(p.as_bytes());
    }
    ctx.finish().as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
