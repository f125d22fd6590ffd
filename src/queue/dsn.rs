//! Delivery status notifications (RFC 3464): the multipart/report a sender gets when a recipient fails or is
//! still being retried. Pure: builds bytes from a queued message and what happened to its recipients.

use super::QueuedMessage;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DsnKind {
    /// Action: failed.
    Failure,
    /// Action: delayed (the message is still being retried).
    Delay,
}

/// One recipient's line in the report.
#[derive(Debug, Clone)]
pub struct DsnRecipient {
    pub forward_path: String,
    pub orcpt: Option<String>,
    /// Enhanced status code, e.g. `5.1.1`.
    pub status: String,
    /// What the remote server or the local delivery said.
    pub diagnostic: String,
    pub remote_mta: Option<String>,
}

/// Whether a recipient's NOTIFY parameter asks for this kind of report (absent means FAILURE and DELAY).
pub fn wanted(notify: Option<&str>, kind: DsnKind) -> bool {
    let Some(n) = notify else { return true };
    let n = n.to_ascii_uppercase();
    if n.contains("NEVER") {
        return false;
    }
    match kind {
        DsnKind::Failure => n.contains("FAILURE"),
        DsnKind::Delay => n.contains("DELAY"),
    }
}

/// The enhanced status code at the start of a reply text (`550 5.1.1 ...` or `5.1.1 ...`), else a default.
pub fn status_of(reply: &str, permanent: bool) -> String {
    let words: Vec<&str> = reply.split_whitespace().take(2).collect();
    for w in words {
        let parts: Vec<&str> = w.split('.').collect();
        if parts.len() == 3
            && parts
                .iter()
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        {
            return w.to_string();
        }
    }
    if permanent {
        "5.0.0".into()
    } else {
        "4.0.0".into()
    }
}

/// xtext (RFC 3461 4) decoding for ENVID and ORCPT values. The SMTP parser refuses xtext that decodes to
/// anything but printable ASCII; what is decoded here is filtered again, as rows queued before that check
/// (or a damaged database) must not put a line break into a report.
fn xtext_decode(s: &str) -> String {
    xtext_raw(s)
        .chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .collect()
}

fn xtext_raw(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '+' {
            let hex: String = chars.by_ref().take(2).collect();
            if let Ok(b) = u8::from_str_radix(&hex, 16) {
                out.push(b as char);
                continue;
            }
        }
        out.push(c);
    }
    out
}

/// Builds the report to `original.reverse_path`. `may_return_full`: RET=FULL is honoured (the whole message
/// returned) only for mail from our own senders; anything else gets its headers back.
pub fn build(
    kind: DsnKind,
    original: &QueuedMessage,
    recipients: &[DsnRecipient],
    hostname: &str,
    now: u64,
    message_id: &str,
    may_return_full: bool,
) -> Vec<u8> {
    let date = crate::clock::rfc5322_date(now);
    let boundary = format!("{}/{hostname}", message_id.trim_matches(['<', '>']));
    let (subject, human) = match kind {
        DsnKind::Failure => (
            "Undelivered Mail Returned to Sender",
            "Your message could not be delivered to one or more recipients.\r\n\
             It has been returned below with the reason for each recipient.",
        ),
        DsnKind::Delay => (
            "Delayed Mail (still being retried)",
            "Your message has not been delivered yet to one or more recipients.\r\n\
             Delivery will be retried; you do not need to send it again.",
        ),
    };
    let mut m = String::new();
    m.push_str(&format!(
        "From: Mail Delivery System <MAILER-DAEMON@{hostname}>\r\n"
    ));
    m.push_str(&format!("To: <{}>\r\n", original.reverse_path));
    m.push_str(&format!("Subject: {subject}\r\n"));
    m.push_str(&format!("Date: {date}\r\n"));
    m.push_str(&format!("Message-ID: {message_id}\r\n"));
    m.push_str("Auto-Submitted: auto-replied\r\n");
    m.push_str("MIME-Version: 1.0\r\n");
    m.push_str(&format!(
        "Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"{boundary}\"\r\n\r\n"
    ));
    m.push_str("This is a MIME-encapsulated delivery status notification.\r\n\r\n");
    m.push_str(&format!(
        "--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
    ));
    m.push_str(&format!(
        "This is the mail system at {hostname}.\r\n\r\n{human}\r\n\r\n"
    ));
    for r in recipients {
        m.push_str(&format!("<{}>: {}\r\n", r.forward_path, r.diagnostic));
    }
    m.push_str(&format!(
        "\r\n--{boundary}\r\nContent-Type: message/delivery-status\r\n\r\n"
    ));
    m.push_str(&format!("Reporting-MTA: dns; {hostname}\r\n"));
    m.push_str(&format!("X-Tern-Queue-ID: {}\r\n", original.id));
    if let Some(envid) = &original.envid {
        m.push_str(&format!(
            "Original-Envelope-Id: {}\r\n",
            xtext_decode(envid)
        ));
    }
    m.push_str(&format!(
        "Arrival-Date: {}\r\n",
        crate::clock::rfc5322_date(original.received_at)
    ));
    for r in recipients {
        m.push_str("\r\n");
        m.push_str(&format!("Final-Recipient: rfc822; {}\r\n", r.forward_path));
        if let Some(orcpt) = &r.orcpt
            && let Some((kind, addr)) = orcpt.split_once(';')
        {
            m.push_str(&format!(
                "Original-Recipient: {kind}; {}\r\n",
                xtext_decode(addr)
            ));
        }
        m.push_str(&format!(
            "Action: {}\r\n",
            if kind == DsnKind::Failure {
                "failed"
            } else {
                "delayed"
            }
        ));
        m.push_str(&format!("Status: {}\r\n", r.status));
        if let Some(mta) = &r.remote_mta {
            m.push_str(&format!("Remote-MTA: dns; {mta}\r\n"));
        }
        let diagnostic: String = r.diagnostic.chars().filter(|c| !c.is_control()).collect();
        m.push_str(&format!("Diagnostic-Code: smtp; {diagnostic}\r\n"));
        m.push_str(&format!("Last-Attempt-Date: {date}\r\n"));
    }
    // A message too large to hold in memory (spooled) comes back as its header section only, as Postfix
    // does past bounce_size_limit: a bounce is never the way to make tern copy 25 MB.
    let full = may_return_full
        && original.body.tail.is_none()
        && original
            .ret
            .as_deref()
            .is_some_and(|r| r.eq_ignore_ascii_case("FULL"));
    let mut out = m.into_bytes();
    if full {
        out.extend_from_slice(
            format!("\r\n--{boundary}\r\nContent-Type: message/rfc822\r\n\r\n").as_bytes(),
        );
        out.extend_from_slice(&original.body.head);
        if !original.body.head.ends_with(b"\r\n") {
            out.extend_from_slice(b"\r\n");
        }
    } else {
        out.extend_from_slice(
            format!("\r\n--{boundary}\r\nContent-Type: text/rfc822-headers\r\n\r\n").as_bytes(),
        );
        let head = &original.body.head;
        out.extend_from_slice(&head[..crate::message::header_len(head)]);
    }
    out.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::{IdGenerator, QueuedRecipient};

    fn original(ret: Option<&str>) -> QueuedMessage {
        QueuedMessage {
            id: IdGenerator::after(None).next(1_700_000_000_000_000),
            received_at: 1_700_000_000,
            reverse_path: "alice@example.test".into(),
            body_type: "7BIT".into(),
            smtputf8: false,
            ret: ret.map(str::to_string),
            envid: Some("abc+2B1".into()),
            trace: String::new(),
            body: crate::queue::Body::memory(
                b"Subject: hello\r\nFrom: alice@example.test\r\n\r\nsecret body\r\n".to_vec(),
            ),
            checks: String::new(),
            origin: crate::queue::Origin::Submission,
            dkim_domain: None,
            recipients: vec![QueuedRecipient {
                idx: 0,
                forward_path: "x@remote.test".into(),
                mailbox: "x@remote.test".into(),
                transport: crate::queue::Transport::Remote,
                notify: None,
                orcpt: Some("rfc822;x+40remote.test".into()),
                attempts: 1,
                delay_notified: false,
                folder: String::new(),
            }],
        }
    }

    fn rcpt() -> DsnRecipient {
        DsnRecipient {
            forward_path: "x@remote.test".into(),
            orcpt: Some("rfc822;x+40remote.test".into()),
            status: "5.1.1".into(),
            diagnostic: "550 5.1.1 no such user".into(),
            remote_mta: Some("mx.remote.test".into()),
        }
    }

    #[test]
    fn failure_report_has_the_delivery_status_fields_and_headers_only() {
        let dsn = String::from_utf8(build(
            DsnKind::Failure,
            &original(None),
            &[rcpt()],
            "mx.example.test",
            1_700_000_100,
            "<d@mx>",
            true,
        ))
        .unwrap();
        for want in [
            "To: <alice@example.test>",
            "Content-Type: multipart/report; report-type=delivery-status;",
            "Reporting-MTA: dns; mx.example.test",
            "Original-Envelope-Id: abc+1",
            "Final-Recipient: rfc822; x@remote.test",
            "Original-Recipient: rfc822; x@remote.test",
            "Action: failed",
            "Status: 5.1.1",
            "Remote-MTA: dns; mx.remote.test",
            "Diagnostic-Code: smtp; 550 5.1.1 no such user",
            "Content-Type: text/rfc822-headers",
            "Subject: hello",
        ] {
            assert!(dsn.contains(want), "missing {want:?} in\n{dsn}");
        }
        assert!(!dsn.contains("secret body"), "RET absent: headers only");
        let full = String::from_utf8(build(
            DsnKind::Delay,
            &original(Some("FULL")),
            &[rcpt()],
            "mx",
            0,
            "<d@mx>",
            true,
        ))
        .unwrap();
        assert!(
            full.contains("Action: delayed")
                && full.contains("message/rfc822")
                && full.contains("secret body")
        );
        // Mail from outside: RET=FULL or not, only the headers go back to a sender anyone can forge.
        let outside = String::from_utf8(build(
            DsnKind::Failure,
            &original(Some("FULL")),
            &[rcpt()],
            "mx",
            0,
            "<d@mx>",
            false,
        ))
        .unwrap();
        assert!(outside.contains("text/rfc822-headers") && !outside.contains("secret body"));
    }

    #[test]
    fn notify_and_status_parsing() {
        assert!(wanted(None, DsnKind::Delay));
        assert!(!wanted(Some("NEVER"), DsnKind::Failure));
        assert!(!wanted(Some("SUCCESS"), DsnKind::Failure));
        assert!(wanted(Some("SUCCESS,FAILURE"), DsnKind::Failure));
        assert_eq!(status_of("550 5.1.1 nope", true), "5.1.1");
        assert_eq!(status_of("4.4.1 connection refused", false), "4.4.1");
        assert_eq!(status_of("550 nope", true), "5.0.0");
    }
}
