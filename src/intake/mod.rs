//! The one way a message enters the queue, whoever made it: SMTP and LMTP sessions, the sendmail socket,
//! and tern itself (DSNs; later IMAP APPEND and Sieve redirects). Here a message gets its queue ID and our
//! Received: header, loses any Authentication-Results that claims to be ours, gets the one we wrote (if the
//! checks ran), is marked with its origin and the domain it may be DKIM-signed as, and is committed.
//!
//! Messages tern generates go through the same recipient policy as RCPT (`generated`): a DSN to a local
//! address is delivered only to what that address resolves to (a user, an alias's targets, a catch-all),
//! never to a path built from the raw reverse-path.

mod conclude;

pub use conclude::Attempt;

use crate::inbound::policy::RecipientPolicy;
use crate::inbound::trace::{self, TlsInfo};
use crate::queue::{
    Body, Origin, Queue, QueueError, QueueId, QueuedMessage, QueuedRecipient, Transport,
};
use crate::smtp::{Domain, ForwardPath, Mailbox};
use std::net::SocketAddr;
use std::sync::Arc;

/// How the message reached us, for our Received: header.
#[derive(Debug, Clone)]
pub enum Trace {
    Smtp {
        helo: String,
        /// `None` when the client's address is not to be shown (`hide_client_ip`).
        peer: Option<SocketAddr>,
        rdns: Option<String>,
        tls: Option<TlsInfo>,
        protocol: &'static str,
    },
    Local {
        uid: u32,
    },
    Generated,
}

/// One recipient: the forward-path as given and the mailbox a copy goes to.
#[derive(Debug, Clone)]
pub struct Rcpt {
    pub forward_path: String,
    pub mailbox: Mailbox,
    pub notify: Option<String>,
    pub orcpt: Option<String>,
}

/// A message to queue.
#[derive(Debug, Clone)]
pub struct Incoming {
    /// Empty for the null reverse-path.
    pub reverse_path: String,
    pub body_type: String,
    pub smtputf8: bool,
    pub ret: Option<String>,
    pub envid: Option<String>,
    pub recipients: Vec<Rcpt>,
    /// CRLF line endings; a large one with its tail in a spool file not yet committed.
    pub body: Body,
    pub trace: Trace,
    pub origin: Origin,
    /// The checks' Authentication-Results header (with its CRLF), to put on top.
    pub auth_results: Option<String>,
    /// `spf=pass dkim=pass ...` for the logs.
    pub checks: String,
    /// Local copies go to this folder (`Junk`), else the inbox.
    pub folder: Option<String>,
    /// The sender was checked to own the From: address (or is trusted to use any): the message may be
    /// DKIM-signed for its From: domain when that domain is ours.
    pub may_sign: bool,
    /// The queue ID, when one was given out before intake (the content filters were told it).
    pub id: Option<QueueId>,
}

/// What was queued, for the caller's reply and log line.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub id: QueueId,
    pub dkim_domain: Option<String>,
    /// Recipients relayed to other domains.
    pub remote: usize,
    /// Delivered to every local mailbox before this returned, never queued.
    pub delivered: bool,
}

pub struct Intake {
    pub queue: Queue,
    pub policy: Arc<RecipientPolicy>,
    pub hostname: String,
    pub local_domains: Vec<Domain>,
}

impl Intake {
    /// Commits the message; when this returns Ok it is on stable storage: in the queue, or (given `local`,
    /// for a message that only has local recipients) in their mailboxes.
    pub async fn accept(
        &self,
        m: Incoming,
        local: Option<(&crate::local::Local, crate::local::Quotas)>,
    ) -> Result<Accepted, QueueError> {
        let id = m.id.unwrap_or_else(|| self.queue.next_id());
        let trace = match &m.trace {
            Trace::Smtp {
                helo,
                peer,
                rdns,
                tls,
                protocol,
            } => trace::received(
                helo,
                *peer,
                rdns.as_deref(),
                tls.as_ref(),
                &self.hostname,
                protocol,
                id,
            ),
            Trace::Local { uid } => trace::received_local(*uid, &self.hostname, id),
            Trace::Generated => format!("Received: by {} (tern) id {id}", self.hostname),
        };
        // RFC 8601 5: an Authentication-Results field naming us was not written by us, whatever the listener.
        // Only the header section changes (a spooled message's tail is left as it is on disk).
        let Body { head, tail } = m.body;
        let head = match &m.auth_results {
            Some(h) => crate::checks::headers::replace_auth_results(head, &self.hostname, h),
            None => crate::checks::headers::strip_auth_results(head, &self.hostname),
        };
        let dkim_domain = if m.may_sign {
            signing_domain(&head, &self.local_domains)
        } else {
            None
        };
        if let Some(t) = &tail {
            // The content is durable under its queue ID before the row that names it.
            let (t, spool) = (t.clone(), self.queue.spool().clone());
            tokio::task::spawn_blocking(move || t.commit(&spool, id))
                .await
                .map_err(|e| QueueError::Write(e.to_string()))?
                .map_err(|e| QueueError::Write(format!("spool file: {e}")))?;
        }
        let body = Body { head, tail };
        let folder = m.folder.unwrap_or_default();
        // One queue recipient per target: an alias that fans out gives several, all under its forward-path.
        let recipients = m
            .recipients
            .into_iter()
            .enumerate()
            .map(|(i, r)| {
                let local = self.local_domains.contains(r.mailbox.domain());
                QueuedRecipient {
                    idx: i as u32,
                    forward_path: r.forward_path,
                    mailbox: r.mailbox.to_string(),
                    transport: if local {
                        Transport::Local
                    } else {
                        Transport::Remote
                    },
                    notify: r.notify,
                    orcpt: r.orcpt,
                    attempts: 0,
                    delay_notified: false,
                    folder: if local { folder.clone() } else { String::new() },
                }
            })
            .collect();
        let message = QueuedMessage {
            id,
            received_at: id.unix_secs(),
            reverse_path: m.reverse_path,
            body_type: m.body_type,
            smtputf8: m.smtputf8,
            ret: m.ret,
            envid: m.envid,
            trace,
            body,
            checks: m.checks,
            origin: m.origin,
            dkim_domain,
            recipients,
        };
        let mut accepted = Accepted {
            delivered: false,
            id,
            dkim_domain: message.dkim_domain.clone(),
            remote: message
                .recipients
                .iter()
                .filter(|r| r.transport == Transport::Remote)
                .count(),
        };
        let spooled = message.body.tail.is_some();
        let stored = match local {
            Some((local, quotas)) if crate::local::Local::can_deliver_now(&message) => {
                accepted.delivered = true;
                // Boxed: delivery may queue follow-ups (Sieve redirects, vacation replies) through
                // `accept`.
                Box::pin(local.deliver_now(message, quotas)).await
            }
            _ => self.queue.enqueue(message).await,
        };
        if let Err(e) = stored {
            // A failed commit named no file; a closed queue may have committed it (the sweep knows).
            if spooled && matches!(e, QueueError::Write(_)) {
                let spool = self.queue.spool().clone();
                let _ = tokio::task::spawn_blocking(move || spool.remove(&[id])).await;
            }
            return Err(e);
        }
        Ok(accepted)
    }

    /// Where a message tern generates for `to` goes: resolved like a RCPT from a client that may relay
    /// (so a remote sender gets it by MX), through aliases, subaddresses, domain aliases and catch-alls for
    /// ours. `Ok(None)` when `to` is a local address that names nobody: the message is not sent.
    pub async fn route_generated(
        &self,
        to: &Mailbox,
    ) -> Result<Option<Vec<Mailbox>>, crate::directory::DirectoryError> {
        use crate::smtp::server::RcptVerdict;
        match self
            .policy
            .resolve_for_generated(&ForwardPath::Mailbox(to.clone()))
            .await?
        {
            RcptVerdict::Accept(targets) => Ok(Some(targets)),
            RcptVerdict::Refuse(_) => Ok(None),
        }
    }

    /// Queues a message tern makes itself (a Sieve redirect or vacation reply) for `to`, routed like a
    /// RCPT through the recipient policy. `Ok(None)` when `to` names no one (nothing is sent).
    pub async fn send_generated(
        &self,
        reverse_path: &str,
        to: &Mailbox,
        body: Body,
        may_sign: bool,
    ) -> Result<Option<QueueId>, QueueError> {
        let targets = match self.route_generated(to).await {
            Ok(Some(t)) if !t.is_empty() => t,
            Ok(_) => return Ok(None),
            Err(e) => return Err(QueueError::Write(format!("resolving {to}: {e}"))),
        };
        let recipients = targets
            .into_iter()
            .map(|mailbox| Rcpt {
                forward_path: to.to_string(),
                mailbox,
                notify: None,
                orcpt: None,
            })
            .collect();
        let accepted = self
            .accept(
                Incoming {
                    reverse_path: reverse_path.to_string(),
                    body_type: "8BITMIME".into(),
                    smtputf8: !to.is_ascii(),
                    ret: None,
                    envid: None,
                    recipients,
                    body,
                    trace: Trace::Generated,
                    origin: Origin::Generated,
                    auth_results: None,
                    checks: String::new(),
                    folder: None,
                    may_sign,
                    id: None,
                },
                None,
            )
            .await?;
        Ok(Some(accepted.id))
    }

    /// A new queue ID (for the Message-ID of a generated message).
    pub fn next_id(&self) -> QueueId {
        self.queue.next_id()
    }
}

/// The domain to sign as: the domain of the message's one From: address when it is ours. A message with
/// several From: fields or none is not signed.
fn signing_domain(body: &[u8], local_domains: &[Domain]) -> Option<String> {
    if crate::message::count(body, "From") != 1 {
        return None;
    }
    let from = mail_parser::MessageParser::new()
        .parse_headers(crate::message::header_block(body))
        .and_then(|h| {
            let list = h.from()?;
            (list.iter().count() == 1)
                .then(|| list.first()?.address().map(str::to_lowercase))
                .flatten()
        })?;
    let domain = from.rsplit_once('@')?.1.to_string();
    local_domains
        .iter()
        .any(|l| l.as_str() == domain)
        .then_some(domain)
}

#[cfg(test)]
mod tests {
    #[test]
    fn signing_domain_needs_exactly_one_local_from() {
        let local = [crate::smtp::Domain::parse("example.test", false).unwrap()];
        let one = b"From: Alice <alice@Example.test>\r\nSubject: x\r\n\r\nbody\r\n";
        assert_eq!(
            super::signing_domain(one, &local).as_deref(),
            Some("example.test")
        );
        let two = b"From: alice@example.test\r\nFrom: mallory@evil.test\r\n\r\nbody\r\n";
        assert_eq!(super::signing_domain(two, &local), None);
        let list = b"From: alice@example.test, mallory@evil.test\r\n\r\nbody\r\n";
        assert_eq!(super::signing_domain(list, &local), None);
        let foreign = b"From: bob@other.test\r\n\r\nbody\r\n";
        assert_eq!(super::signing_domain(foreign, &local), None);
    }
}
