//! Storing a complete message: the submission and local-program rules, the inbound checks, the quota of
//! every local mailbox, then the hand-over to intake; one reply (or one per recipient for LMTP).

use super::judge::{Judged, Judgement};
use super::{Conn, Peer};
use crate::config::ListenerKind;
use crate::inbound::policy::Fit;
use crate::intake::{Incoming, Rcpt, Trace};
use crate::log::Escaped;
use crate::queue::{Body, Origin};
use crate::smtp::Reply;
use crate::smtp::server::Envelope;

impl Conn {
    /// LMTP: one reply per recipient. A recipient whose mailbox this message would overflow gets 452 4.2.2
    /// (552 5.2.2 if it never fits); the others share one durable queue entry and its 250.
    pub(super) async fn store_lmtp(
        &mut self,
        env: Envelope,
        body: Body,
        tls_on: bool,
    ) -> Vec<Reply> {
        self.quotas = Default::default();
        let mut replies: Vec<Option<Reply>> = vec![None; env.recipients.len()];
        let mut keep = Vec::new();
        for (i, r) in env.recipients.iter().enumerate() {
            match self.quota_refusal(&r.mailboxes, body.len() as u64).await {
                Some(reply) => {
                    tracing::info!(to = %r.forward_path, reply = %reply.summary(), "recipient refused after data");
                    replies[i] = Some(reply);
                }
                None => keep.push(i),
            }
        }
        if !keep.is_empty() {
            let mut accepted = env.clone();
            accepted.recipients = keep.iter().map(|&i| env.recipients[i].clone()).collect();
            let reply = self.store(accepted, body, tls_on).await;
            for i in keep {
                replies[i] = Some(reply.clone());
            }
        }
        replies
            .into_iter()
            .map(|r| r.unwrap_or_else(Reply::queue_write_failed))
            .collect()
    }

    /// The refusal for a message of `size` octets that one of these local mailboxes cannot take. The
    /// quotas read on the way are kept in `self.quotas` for delivery in the session.
    async fn quota_refusal(
        &mut self,
        mailboxes: &[crate::smtp::Mailbox],
        size: u64,
    ) -> Option<Reply> {
        for m in mailboxes
            .iter()
            .filter(|m| self.ctx.policy.local_domains.contains(m.domain()))
        {
            // As the RCPT found it when it did (an account accepted directly), else asked now.
            let known = self
                .rcpt_quotas
                .get(&m.to_string().to_lowercase())
                .map(|q| Some((m.clone(), *q, false)));
            let found = match known {
                Some(k) => Ok(k),
                None => self.ctx.directory.lookup_with_quota(m).await,
            };
            let fit = match found {
                Ok(Some((user, quota, _))) => {
                    if let Some(q) = quota {
                        let seen = std::sync::Arc::make_mut(&mut self.quotas);
                        seen.insert(m.to_string().to_lowercase(), q);
                        seen.insert(user.to_string().to_lowercase(), q);
                    }
                    self.ctx.policy.fit(&user, quota, size).await
                }
                _ => Fit::Fits,
            };
            match fit {
                Fit::Fits => {}
                Fit::Full => return Some(Reply::over_quota(&m.to_string())),
                Fit::TooBig => return Some(Reply::exceeds_quota(&m.to_string())),
            }
        }
        None
    }

    /// Commits the message to the queue; the reply is 250 only once it is on stable storage.
    pub(super) async fn store(&mut self, mut env: Envelope, body: Body, tls_on: bool) -> Reply {
        // Kept only if the message is stored; any refusal below gives the place in the hourly limit back.
        let reservation = self.reservation.take();
        let lmtp = self.ctx.kind == ListenerKind::Lmtp;
        // Who vouches for the sender: an authenticated user (checked to own it), a trusted network or local
        // program, or nobody (mail from outside, which is never signed as ours).
        let (origin, mut may_sign) = match (&self.user, &self.peer) {
            _ if lmtp => (Origin::Lmtp, false),
            (Some(_), _) => (Origin::Submission, true),
            (None, Peer::Local(local)) => (Origin::Local, local.trusted),
            (None, Peer::Tcp(_)) if self.trusted_network() => (Origin::Submission, true),
            (None, Peer::Tcp(_)) => (Origin::Outside, false),
        };
        // The rules below read and change only the header section (a spooled message's tail stays on disk).
        let size = body.len();
        let body = match (&self.user, &self.peer) {
            (Some(user), _) => {
                // Header parsing (up to [limits] header_section) runs on the blocking pool.
                let (submission, user, hostname) = (
                    self.ctx.submission.clone(),
                    user.clone(),
                    self.ctx.hostname.clone(),
                );
                let Body { head, tail } = body;
                let checked = tokio::task::spawn_blocking(move || {
                    submission.check_content(&user, &hostname, head, size)
                })
                .await
                .unwrap_or_else(|_| Err(Reply::queue_write_failed()));
                match checked {
                    Ok(head) => Body { head, tail },
                    Err(reply) => {
                        tracing::info!(helo = %Escaped(&env.helo), from = %env.reverse_path, reply = %reply.summary(), "message refused");
                        return reply;
                    }
                }
            }
            // A local program gets the same fix-ups; an untrusted one is signed for only when its From:
            // is its own address.
            (None, Peer::Local(local)) if !lmtp => {
                let (ctx, local) = (self.ctx.clone(), local.clone());
                let Body { head, tail } = body;
                let fixed = tokio::task::spawn_blocking(move || {
                    let sign = local.trusted
                        || local
                            .address
                            .as_deref()
                            .is_some_and(|own| ctx.from_owned_by(&head, own));
                    (sign, ctx.submission.fix_up(&ctx.hostname, head))
                })
                .await;
                match fixed {
                    Ok((sign, head)) => {
                        may_sign = sign;
                        Body { head, tail }
                    }
                    Err(_) => return Reply::queue_write_failed(),
                }
            }
            (None, _) => body,
        };
        // Mail from outside is checked (SPF, DKIM, ARC, DMARC), every message passes the content filters,
        // and one decision comes of all their verdicts.
        let judged = match self.judge(&mut env, body, size).await {
            Judgement::Go(j) => j,
            Judgement::Refused(reply) => return reply,
            Judgement::Dropped(reply) => {
                if let Some(r) = reservation {
                    r.keep();
                }
                return reply;
            }
        };
        let Judged {
            body,
            checks: checks_summary,
            auth_results,
            queue_id,
            decision,
        } = judged;
        let folder = decision.folder().map(str::to_string);
        // The message must fit every local mailbox it goes to: refused now, never bounced later (SMTP has
        // one reply for all recipients; LMTP already answered per recipient).
        if !lmtp {
            self.quotas = Default::default();
            for r in &env.recipients {
                if let Some(reply) = self.quota_refusal(&r.mailboxes, size as u64).await {
                    tracing::info!(helo = %Escaped(&env.helo), from = %env.reverse_path, to = %r.forward_path, reply = %reply.summary(), "message refused");
                    return reply;
                }
            }
        }
        // ereject refuses at SMTP time where it can: one recipient, so the reply is that recipient's.
        if !lmtp
            && let [r] = env.recipients.as_slice()
            && let [mailbox] = r.mailboxes.as_slice()
            && self.ctx.policy.local_domains.contains(mailbox.domain())
            && let Some(runner) = &self.ctx.sieve
            && let Some(reason) = runner
                .smtp_refusal(
                    self.ctx.store.clone(),
                    mailbox,
                    &r.forward_path.to_string(),
                    &env.reverse_path.to_string(),
                    &body,
                )
                .await
        {
            let reply = Reply::refused_by_filter(&reason);
            tracing::info!(helo = %Escaped(&env.helo), from = %env.reverse_path, to = %r.forward_path, reply = %reply.summary(), "message refused by the recipient's Sieve script (ereject)");
            return reply;
        }
        let trace = match &self.peer {
            Peer::Tcp(addr) => {
                let tls = if tls_on { self.tls.clone() } else { None };
                let hide = self.user.is_some() && self.ctx.submission.settings.hide_client_ip;
                Trace::Smtp {
                    helo: env.helo.clone(),
                    peer: (!hide).then_some(*addr),
                    rdns: self.client.as_ref().and_then(|c| c.rdns.clone()),
                    tls,
                    protocol: env.protocol,
                }
            }
            Peer::Local(local) => Trace::Local { uid: local.uid },
        };
        let recipients: Vec<Rcpt> = env
            .recipients
            .iter()
            .flat_map(|r| {
                r.mailboxes.iter().map(move |m| Rcpt {
                    forward_path: r.forward_path.to_string(),
                    mailbox: m.clone(),
                    notify: r.params.notify.map(|n| n.to_param()),
                    orcpt: r.params.orcpt.clone(),
                })
            })
            .collect();
        let to: Vec<String> = recipients.iter().map(|r| r.forward_path.clone()).collect();
        let to = to.join(",");
        let incoming = Incoming {
            reverse_path: env.reverse_path.to_string(),
            body_type: env.params.body.as_str().to_string(),
            smtputf8: env.params.smtputf8,
            ret: env.params.ret.map(|r| r.as_str().to_string()),
            envid: env.params.envid.clone(),
            recipients,
            body,
            trace,
            origin,
            auth_results,
            checks: checks_summary.clone(),
            folder: folder.clone(),
            may_sign,
            id: queue_id,
        };
        let auth = env.auth.as_deref().unwrap_or("");
        match self
            .ctx
            .intake
            .accept(
                incoming,
                self.ctx
                    .local
                    .as_deref()
                    .map(|l| (l, std::mem::take(&mut self.quotas))),
            )
            .await
        {
            Ok(stored) => {
                self.messages += 1;
                crate::ops::metrics::inc(
                    "tern_messages_accepted_total",
                    &[("listener", self.ctx.kind.as_str())],
                );
                if let Some(r) = reservation {
                    r.keep();
                }
                let (id, remote, delivered) = (stored.id, stored.remote, stored.delivered);
                tracing::info!(queue_id = %id, helo = %Escaped(&env.helo), from = %env.reverse_path, to = %to, size, protocol = env.protocol,
                    sasl_user = %Escaped(auth), remote, delivered, checks = %checks_summary, fate = %decision.fate().word(),
                    reasons = %decision.reasons(), folder = folder.as_deref().unwrap_or(""),
                    dkim_domain = stored.dkim_domain.as_deref().unwrap_or(""), origin = origin.as_str(), "message accepted");
                Reply::queued(&id.to_string())
            }
            Err(e) => {
                tracing::error!(from = %env.reverse_path, to = %to, error = %e, "message not queued");
                Reply::queue_write_failed()
            }
        }
    }
}
