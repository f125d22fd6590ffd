//! Turning one delivery attempt's per-recipient results into queue outcomes: retry or expire temporary
//! failures, tell the sender about permanent ones and long delays (DSN), and log one line per recipient.
//! Local delivery and the outbound MTA both end their attempts here, so the rules are the same for both.
//!
//! A DSN is built here and committed in the same transaction as the outcomes that caused it: a recipient is
//! never recorded as failed without its bounce. When the bounce cannot be routed now (a directory error),
//! the recipient stays deferred and the attempt is repeated later.

use super::Intake;
use crate::queue::dsn::{self, DsnKind};
use crate::queue::retry::{self, Retry};
use crate::queue::{
    Job, Origin, Outcome, OutcomeKind, QueueError, QueueId, QueuedMessage, QueuedRecipient, Report,
    Transport,
};
use crate::smtp::Mailbox;

/// What one attempt did for one recipient.
#[derive(Debug, Clone)]
pub enum Attempt {
    Delivered {
        reply: String,
        relay: String,
    },
    /// Worth trying again (4xx, connection trouble, DNS SERVFAIL, a full disk).
    Temporary {
        reply: String,
        relay: Option<String>,
    },
    /// Will never work (5xx, NXDOMAIN, null MX, a loop).
    Permanent {
        reply: String,
        relay: Option<String>,
    },
}

impl Intake {
    /// `attempts[i]` is the result for `job.message.recipients[i]`. Returns the report and the DSNs to commit
    /// with it ([`crate::queue::Queue::record`]).
    pub async fn conclude(
        &self,
        job: &Job,
        attempts: Vec<Attempt>,
        started: std::time::Instant,
    ) -> (Report, Vec<QueuedMessage>) {
        let m = &job.message;
        let now = crate::clock::unix_now();
        let s = self.queue.settings();
        let delay_warning = self.queue.dsn_settings().delay_warning.as_secs();
        let mut outcomes = Vec::with_capacity(attempts.len());
        let mut failed: Vec<(&QueuedRecipient, String, Option<String>)> = Vec::new();
        let mut delayed: Vec<(&QueuedRecipient, String, Option<String>)> = Vec::new();
        let delay_ms = started.elapsed().as_millis() as u64;
        for (rcpt, attempt) in m.recipients.iter().zip(attempts) {
            let relay_of = match &attempt {
                Attempt::Delivered { relay, .. } => Some(relay.clone()),
                Attempt::Temporary { relay, .. } | Attempt::Permanent { relay, .. } => {
                    relay.clone()
                }
            };
            let kind = match attempt {
                Attempt::Delivered { reply, relay } => {
                    tracing::info!(queue_id = %m.id, from = %m.reverse_path, to = %rcpt.forward_path, relay = %relay,
                        delay_ms, status = "sent", reply = %reply, checks = %m.checks, "delivery");
                    OutcomeKind::Delivered { reply }
                }
                Attempt::Temporary { reply, relay } => {
                    match retry::next_attempt(
                        rcpt.attempts + 1,
                        m.received_at,
                        now,
                        s.retry_base,
                        s.retry_max,
                        s.max_lifetime,
                    ) {
                        Retry::At(t) => {
                            let warn = !rcpt.delay_notified
                                && now.saturating_sub(m.received_at) >= delay_warning;
                            if warn {
                                delayed.push((rcpt, reply.clone(), relay.clone()));
                            }
                            tracing::warn!(queue_id = %m.id, from = %m.reverse_path, to = %rcpt.forward_path,
                                relay = %relay.as_deref().unwrap_or("none"), delay_ms, status = "deferred", reply = %reply,
                                next_attempt = t, "delivery");
                            OutcomeKind::Deferred {
                                reply,
                                next_attempt: t,
                                delay_notified: warn || rcpt.delay_notified,
                            }
                        }
                        Retry::Expired => {
                            let reply = format!("5.4.7 delivery time expired; last error: {reply}");
                            tracing::warn!(queue_id = %m.id, from = %m.reverse_path, to = %rcpt.forward_path,
                                relay = %relay.as_deref().unwrap_or("none"), status = "bounced", reply = %reply, "delivery");
                            failed.push((rcpt, reply.clone(), relay));
                            OutcomeKind::Failed { reply }
                        }
                    }
                }
                Attempt::Permanent { reply, relay } => {
                    tracing::warn!(queue_id = %m.id, from = %m.reverse_path, to = %rcpt.forward_path,
                        relay = %relay.as_deref().unwrap_or("none"), delay_ms, status = "bounced", reply = %reply, "delivery");
                    failed.push((rcpt, reply.clone(), relay));
                    OutcomeKind::Failed { reply }
                }
            };
            let result = match &kind {
                OutcomeKind::Delivered { .. } => "sent",
                OutcomeKind::Deferred { .. } => "deferred",
                OutcomeKind::Failed { .. } => "bounced",
            };
            crate::ops::metrics::inc(
                "tern_delivery_attempts_total",
                &[("transport", job.transport.as_str()), ("result", result)],
            );
            outcomes.push(Outcome {
                id: m.id,
                idx: rcpt.idx,
                kind,
                to: rcpt.forward_path.clone(),
                relay: relay_of,
            });
        }
        let mut dsns = Vec::new();
        let mut dsn_notes = Vec::new();
        for (kind, list) in [(DsnKind::Failure, &failed), (DsnKind::Delay, &delayed)] {
            if list.is_empty() {
                continue;
            }
            match self.notify(m, kind, list).await {
                Ok(Some(d)) => {
                    dsn_notes.push(format!(
                        "{} DSN to <{}> for {} queued as {}",
                        if kind == DsnKind::Failure {
                            "failure"
                        } else {
                            "delay"
                        },
                        m.reverse_path,
                        list.iter()
                            .map(|(r, _, _)| format!("<{}>", r.forward_path))
                            .collect::<Vec<_>>()
                            .join(","),
                        d.id
                    ));
                    dsns.push(d)
                }
                Ok(None) => {}
                Err(e) => {
                    // Not routable now: the recipients stay deferred, and the next attempt tries again.
                    tracing::error!(queue_id = %m.id, error = %e, "cannot route a DSN; recipients stay queued");
                    let retry_at = now + s.retry_base.as_secs();
                    for (rcpt, reply, _) in list.iter() {
                        for o in outcomes.iter_mut().filter(|o| o.idx == rcpt.idx) {
                            o.kind = match (&o.kind, kind) {
                                (OutcomeKind::Failed { .. }, DsnKind::Failure) => {
                                    OutcomeKind::Deferred {
                                        reply: reply.clone(),
                                        next_attempt: retry_at,
                                        delay_notified: rcpt.delay_notified,
                                    }
                                }
                                (
                                    OutcomeKind::Deferred {
                                        reply,
                                        next_attempt,
                                        ..
                                    },
                                    DsnKind::Delay,
                                ) => OutcomeKind::Deferred {
                                    reply: reply.clone(),
                                    next_attempt: *next_attempt,
                                    delay_notified: rcpt.delay_notified,
                                },
                                (k, _) => k.clone(),
                            };
                        }
                    }
                }
            }
        }
        (
            Report {
                id: m.id,
                transport: job.transport,
                whole: job.whole,
                outcomes,
                claim: Some(job.claim.clone()),
                dsn_notes,
            },
            dsns,
        )
    }

    /// The DSN for `original`'s sender about these recipients (reply text and remote MTA for each), unless
    /// the sender is the null reverse-path, their NOTIFY asks for none, or the sender is a local address that
    /// names nobody (logged). `Err` when the sender's address cannot be resolved now.
    pub async fn notify(
        &self,
        original: &QueuedMessage,
        kind: DsnKind,
        recipients: &[(&QueuedRecipient, String, Option<String>)],
    ) -> Result<Option<QueuedMessage>, QueueError> {
        // RFC 5321 6.1 and RFC 3464: never a DSN about a message with the null reverse-path (a bounce).
        if original.reverse_path.is_empty() {
            return Ok(None);
        }
        let permanent = kind == DsnKind::Failure;
        let lines: Vec<dsn::DsnRecipient> = recipients
            .iter()
            .filter(|(r, _, _)| dsn::wanted(r.notify.as_deref(), kind))
            .map(|(r, reply, mta)| dsn::DsnRecipient {
                forward_path: r.forward_path.clone(),
                orcpt: r.orcpt.clone(),
                status: dsn::status_of(reply, permanent),
                diagnostic: reply.clone(),
                remote_mta: mta.clone(),
            })
            .collect();
        if lines.is_empty() {
            return Ok(None);
        }
        let Ok(to) = Mailbox::parse(&original.reverse_path, true) else {
            tracing::warn!(queue_id = %original.id, sender = %crate::log::Escaped(&original.reverse_path), "no DSN: sender is not an address");
            return Ok(None);
        };
        // The same recipient policy as RCPT: aliases, subaddresses, domain aliases, catch-alls; an unknown
        // local sender gets nothing (the reverse-path was a stranger's word).
        let targets = match self.route_generated(&to).await {
            Ok(Some(t)) if !t.is_empty() => t,
            Ok(_) => {
                tracing::warn!(queue_id = %original.id, sender = %to, kind = ?kind,
                    "no DSN: the sender is a local address that names no mailbox");
                return Ok(None);
            }
            Err(e) => {
                return Err(QueueError::Write(format!(
                    "resolving the DSN recipient {to}: {e}"
                )));
            }
        };
        let id = self.next_id();
        let hostname = &self.hostname;
        let message_id = format!("<{id}.dsn@{hostname}>");
        let body = dsn::build(
            kind,
            original,
            &lines,
            hostname,
            crate::clock::unix_now(),
            &message_id,
            original.origin.may_return_full(),
        );
        let recipients = targets
            .iter()
            .enumerate()
            .map(|(i, target)| QueuedRecipient {
                idx: i as u32,
                forward_path: to.to_string(),
                mailbox: target.to_string(),
                transport: if self.local_domains.contains(target.domain()) {
                    Transport::Local
                } else {
                    Transport::Remote
                },
                notify: Some("NEVER".into()),
                orcpt: None,
                attempts: 0,
                delay_notified: false,
                folder: String::new(),
            })
            .collect();
        tracing::info!(queue_id = %original.id, dsn_queue_id = %id, to = %to, kind = ?kind, recipients = lines.len(), "dsn queued");
        Ok(Some(QueuedMessage {
            id,
            received_at: id.unix_secs(),
            reverse_path: String::new(),
            body_type: "8BITMIME".into(),
            smtputf8: !to.is_ascii(),
            ret: None,
            envid: None,
            trace: format!("Received: by {hostname} (tern) id {id}"),
            body: crate::queue::Body::memory(body),
            checks: String::new(),
            origin: Origin::Generated,
            dkim_domain: None,
            recipients,
        }))
    }

    /// `tern queue bounce ID`: every recipient still queued fails now, and the sender gets a DSN, in one
    /// commit. Refused while a delivery of the message is under way (try again in a moment).
    pub async fn bounce(&self, id: QueueId) -> Result<usize, QueueError> {
        // The claims go back once the bounce is committed (or refused); a delivery woken meanwhile finds
        // nothing queued.
        let _claims = self.queue.claim_idle(id)?;
        self.bounce_claimed(id).await
    }

    async fn bounce_claimed(&self, id: QueueId) -> Result<usize, QueueError> {
        let message = self.queue.load_all(id).await?;
        let reply = "5.0.0 returned to sender by the administrator".to_string();
        let failed: Vec<(&QueuedRecipient, String, Option<String>)> = message
            .recipients
            .iter()
            .map(|r| (r, reply.clone(), None))
            .collect();
        let dsn = self.notify(&message, DsnKind::Failure, &failed).await?;
        let n = message.recipients.len();
        let outcomes = message
            .recipients
            .iter()
            .map(|r| Outcome {
                id,
                idx: r.idx,
                kind: OutcomeKind::Failed {
                    reply: reply.clone(),
                },
                to: r.forward_path.clone(),
                relay: None,
            })
            .collect();
        let dsn_notes = dsn
            .iter()
            .map(|d| {
                format!(
                    "failure DSN to <{}> (tern queue bounce) queued as {}",
                    message.reverse_path, d.id
                )
            })
            .collect();
        let reports = vec![Report {
            id,
            transport: Transport::Local,
            whole: false,
            outcomes,
            claim: None,
            dsn_notes,
        }];
        self.queue.record(reports, dsn.into_iter().collect()).await;
        self.queue.settle().await;
        Ok(n)
    }
}
