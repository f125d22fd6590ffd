//! Turning one delivery attempt's per-recipient results into queue outcomes: retry or expire temporary
//! failures, tell the sender about permanent ones and long delays (DSN), and log one line per recipient.
//! Local delivery and the outbound MTA both end their attempts here, so the rules are the same for both.

use super::dsn::DsnKind;
use super::retry::{self, Retry};
use super::{Job, Outcome, OutcomeKind, Queue, QueuedRecipient, Report};

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

impl Queue {
    /// `attempts[i]` is the result for `job.message.recipients[i]`.
    pub async fn conclude(
        &self,
        job: &Job,
        attempts: Vec<Attempt>,
        started: std::time::Instant,
    ) -> Report {
        let m = &job.message;
        let now = crate::clock::unix_now();
        let s = self.settings();
        let delay_warning = self.dsn_settings().delay_warning.as_secs();
        let mut outcomes = Vec::with_capacity(attempts.len());
        let mut failed: Vec<(&QueuedRecipient, String, Option<String>)> = Vec::new();
        let mut delayed: Vec<(&QueuedRecipient, String, Option<String>)> = Vec::new();
        let delay_ms = started.elapsed().as_millis() as u64;
        for (rcpt, attempt) in m.recipients.iter().zip(attempts) {
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
                                relay = relay.as_deref().unwrap_or("none"), delay_ms, status = "deferred", reply = %reply,
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
                                relay = relay.as_deref().unwrap_or("none"), status = "bounced", reply = %reply, "delivery");
                            failed.push((rcpt, reply.clone(), relay));
                            OutcomeKind::Failed { reply }
                        }
                    }
                }
                Attempt::Permanent { reply, relay } => {
                    tracing::warn!(queue_id = %m.id, from = %m.reverse_path, to = %rcpt.forward_path,
                        relay = relay.as_deref().unwrap_or("none"), delay_ms, status = "bounced", reply = %reply, "delivery");
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
            });
        }
        // The DSN is stored before the outcome: a crash in between repeats the DSN, it never loses it.
        for (kind, list) in [(DsnKind::Failure, &failed), (DsnKind::Delay, &delayed)] {
            if !list.is_empty()
                && let Err(e) = self.notify(m, kind, list).await
            {
                tracing::error!(queue_id = %m.id, error = %e, "cannot queue a DSN");
            }
        }
        Report {
            id: m.id,
            transport: job.transport,
            whole: job.whole,
            outcomes,
        }
    }
}
