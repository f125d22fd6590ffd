//! The judgement of a complete message: the inbound checks for mail from outside (SPF, DKIM, ARC, DMARC),
//! the content filters in turn, and the one decision `checks::fate` makes of all their verdicts (refuse,
//! defer, discard, Junk, deliver) with its reasons for the log line.

use super::Conn;
use crate::checks::fate::{Decision, Fate};
use crate::config::CheckAction;
use crate::log::Escaped;
use crate::queue::{Body, QueueId};
use crate::smtp::Reply;
use crate::smtp::reply::EnhancedCode;
use crate::smtp::server::Envelope;

/// A message the verdicts let through.
pub(super) struct Judged {
    pub body: Body,
    /// The verdicts for the log line and tern's own record (Sieve's spamtest and virustest read it):
    /// "spf=pass dkim=pass dmarc=pass arc=none header.from=a.test filter=rspamd:...:no_action score=1.00/15.00".
    pub checks: String,
    /// The Authentication-Results header the checks wrote.
    pub auth_results: Option<String>,
    /// The queue ID the filters were told (milters read it as the `i` macro).
    pub queue_id: Option<QueueId>,
    pub decision: Decision,
}

pub(super) enum Judgement {
    Go(Judged),
    /// Refused or deferred: the reply, and nothing is kept.
    Refused(Reply),
    /// Accepted and dropped (a discard, or no recipient left): the 250, and the sending limit counts it.
    Dropped(Reply),
}

impl Conn {
    pub(super) async fn judge(&mut self, env: &mut Envelope, body: Body, size: usize) -> Judgement {
        let mut decision = Decision::default();
        let mut checks = String::new();
        let mut auth_results = None;
        let refused = |env: &Envelope, checks: &str, d: &Decision| {
            let reply = d.reply().cloned().unwrap_or_else(Reply::queue_write_failed);
            tracing::info!(helo = %Escaped(&env.helo), from = %env.reverse_path, checks = %checks, fate = %d.fate().word(),
                reasons = %d.reasons(), reply = %reply.summary(), "message refused");
            Judgement::Refused(reply)
        };
        let from_outside = self.user.is_none()
            && matches!(self.peer, super::Peer::Tcp(_))
            && self.client.as_ref().is_some_and(|c| !c.skipped);
        // The blocklists are asked at connect whether or not SPF/DKIM/DMARC are on.
        if from_outside && let Some(zone) = self.client.as_ref().and_then(|c| c.listed.as_ref()) {
            decision.note(format!("dnsbl:{zone}"), Fate::Junk);
        }
        let outside = from_outside && self.ctx.checks.as_ref().is_some_and(|c| c.enabled());
        let body = if outside {
            let (Some(checks_service), Some(client)) =
                (self.ctx.checks.clone(), self.client.clone())
            else {
                return Judgement::Refused(Reply::queue_write_failed());
            };
            let (verdict, body) = checks_service
                .message(&client, &env.helo, &env.reverse_path.to_string(), body)
                .await;
            let fate = match (verdict.action, &verdict.reply) {
                (CheckAction::Deliver, _) => Fate::Deliver,
                (CheckAction::Junk, _) => Fate::Junk,
                (_, Some(reply)) => Fate::refusal(reply.clone()),
                (_, None) => Fate::Deliver,
            };
            decision.note(verdict.reason, fate);
            checks = verdict.summary.clone();
            if decision.reply().is_some() {
                return refused(env, &checks, &decision);
            }
            auth_results = Some(verdict.header);
            body
        } else {
            body
        };
        // The content filters, each seeing the message as the ones before it left it, and told the queue
        // ID it will have.
        let Some(filters) = self.filters.as_mut() else {
            return Judgement::Go(Judged {
                body,
                checks,
                auth_results,
                queue_id: None,
                decision,
            });
        };
        let id = self.ctx.intake.next_id();
        let (body, outcome) = filters
            .message(body, self.ctx.limits.message_size, &id.to_string())
            .await;
        if !checks.is_empty() {
            checks.push(' ');
        }
        checks.push_str(&format!("filter={}", outcome.summary.join(",")));
        if let Some(v) = outcome.virus {
            checks.push_str(&format!(" virus={v}"));
        }
        if let Some(reply) = &outcome.refused {
            decision.note("filter", Fate::refusal(reply.clone()));
            return refused(env, &checks, &decision);
        }
        if outcome.discard {
            decision.note("filter:discard", Fate::Discard);
            tracing::info!(helo = %Escaped(&env.helo), from = %env.reverse_path, checks = %checks, fate = %decision.fate().word(),
                reasons = %decision.reasons(), "message discarded by a content filter");
            return Judgement::Dropped(Reply::new(
                250,
                EnhancedCode(2, 0, 0),
                "OK: discarded by a content filter",
            ));
        }
        if let Some(reason) = &outcome.quarantine {
            tracing::info!(filter_reason = %Escaped(reason), "content filter quarantine: delivered to Junk");
            decision.note("filter:quarantine", Fate::Junk);
        }
        if !self.filter_envelope(env, &outcome, size as u64).await {
            tracing::info!(helo = %Escaped(&env.helo), from = %env.reverse_path, checks = %checks, "message dropped: the content filters removed every recipient");
            return Judgement::Dropped(Reply::new(
                250,
                EnhancedCode(2, 0, 0),
                "OK: no recipient left after content filtering",
            ));
        }
        Judgement::Go(Judged {
            body,
            checks,
            auth_results,
            queue_id: Some(id),
            decision,
        })
    }

    /// The envelope changes content filters asked for: recipients removed and added (added ones go through
    /// the recipient policy like any RCPT, with relaying allowed as for the filter's own mail), and a new
    /// sender. False when no recipient is left.
    async fn filter_envelope(
        &self,
        env: &mut Envelope,
        outcome: &crate::filter::Outcome,
        size: u64,
    ) -> bool {
        for gone in &outcome.del_rcpts {
            env.recipients.retain(|r| {
                let fp = r.forward_path.to_string();
                let keep = !fp.eq_ignore_ascii_case(gone);
                if !keep {
                    tracing::info!(to = %Escaped(&fp), "recipient removed by a content filter");
                }
                keep
            });
        }
        for added in &outcome.add_rcpts {
            let Ok(fp) = crate::smtp::address::parse_forward_path(&format!("<{added}>"), true)
            else {
                tracing::warn!(to = %Escaped(added), "content filter added a recipient that is not an address; ignored");
                continue;
            };
            match self.ctx.policy.check(&fp, true, size).await {
                crate::smtp::server::RcptVerdict::Accept(mailboxes) => {
                    tracing::info!(to = %fp, "recipient added by a content filter");
                    env.recipients.push(crate::smtp::server::Recipient {
                        forward_path: fp,
                        params: Default::default(),
                        mailboxes,
                    });
                }
                crate::smtp::server::RcptVerdict::Refuse(r) => {
                    tracing::warn!(to = %fp, reply = %r.summary(), "content filter added a recipient the policy refuses; ignored");
                }
            }
        }
        if let Some(from) = &outcome.new_from {
            match crate::smtp::address::parse_reverse_path(&format!("<{from}>"), true) {
                Ok(rp) => {
                    tracing::info!(old = %env.reverse_path, new = %rp, "sender changed by a content filter");
                    env.reverse_path = rp;
                }
                Err(_) => {
                    tracing::warn!(from = %Escaped(from), "content filter set a sender that is not an address; ignored")
                }
            }
        }
        !env.recipients.is_empty()
    }
}
