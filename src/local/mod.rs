//! Final delivery to our own users: turns queue jobs into mailbox writes and reports each recipient's outcome.
//!
//! Workers take several jobs at once, so that one blocking call writes a batch and fsyncs each Maildir folder
//! once for it. Each recipient's Sieve scripts (`sieve`) run in that call and decide the copies; what they
//! queue (redirects, vacation replies) is committed before the recipient's outcome is. The queue's
//! `conclude` logs one line per recipient and decides retries and DSNs.

pub mod sieve;

use crate::directory::Directory;
use crate::intake::{Attempt, Intake};
use crate::mailbox::{Delivery, MailboxStore};
use crate::queue::Job;
use crate::smtp::Mailbox;
use sieve::SieveRunner;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::{Mutex, mpsc};

/// Jobs one worker takes in one batch at most.
const BATCH: usize = 32;

/// Users' quotas (bytes, messages) by lowercase address.
pub type Quotas = Arc<HashMap<String, (Option<u64>, Option<u64>)>>;

/// Users with quotas, read once per batch (one small query; most users have no quota).
struct QuotaCache {
    directory: Directory,
    last: Mutex<Quotas>,
}

impl QuotaCache {
    async fn get(&self) -> Quotas {
        let mut last = self.last.lock().await;
        match self.directory.quotas().await {
            Ok(q) => *last = Arc::new(q),
            Err(e) => tracing::error!(error = %e, "cannot read quotas; using the last known"),
        }
        last.clone()
    }
}

/// Local delivery: the mailbox store, the users' quotas and scripts, and the intake their follow-ups
/// (redirects, vacation replies, DSNs) go through.
pub struct Local {
    store: Arc<dyn MailboxStore>,
    intake: Arc<Intake>,
    quotas: QuotaCache,
    sieve: Option<Arc<SieveRunner>>,
}

impl Local {
    pub fn new(
        store: Arc<dyn MailboxStore>,
        intake: Arc<Intake>,
        directory: Directory,
        sieve: Option<Arc<SieveRunner>>,
    ) -> Arc<Local> {
        Arc::new(Local {
            store,
            intake,
            quotas: QuotaCache {
                directory,
                last: Mutex::new(Arc::new(HashMap::new())),
            },
            sieve,
        })
    }

    /// Whether `deliver_now` can take this message: every recipient ours, and no recipient asking for a
    /// success DSN (that is the queue's to send). A spooled message streams from its spool file, which
    /// goes once every copy is stored.
    pub fn can_deliver_now(m: &crate::queue::QueuedMessage) -> bool {
        !m.recipients.is_empty()
            && m.recipients.iter().all(|r| {
                r.transport == crate::queue::Transport::Local
                    && !r
                        .notify
                        .as_deref()
                        .is_some_and(|n| n.to_ascii_uppercase().contains("SUCCESS"))
            })
    }

    /// Delivers a message that was never queued, from the SMTP session before its 250: the same writes,
    /// scripts and outcomes as a queued job. When every recipient is delivered nothing is queued (the
    /// copies are fsynced with their folders, which is what the 250 promises); anything else (a deferral,
    /// a script's reject, a DSN) is committed with the message as a queue entry before this returns, and
    /// the queue goes on from there. An error means nothing is promised: the client gets a 4xx.
    /// `quotas` are those of the recipients' mailboxes, as the session just read them for its own check.
    pub async fn deliver_now(
        &self,
        message: crate::queue::QueuedMessage,
        quotas: Quotas,
    ) -> Result<(), crate::queue::QueueError> {
        let queue = &self.intake.queue;
        let id = message.id;
        // A fresh queue ID: no one else can hold it.
        let claim = queue
            .try_claim(id, crate::queue::Transport::Local)
            .ok_or_else(|| crate::queue::QueueError::Busy(id.to_string()))?;
        let message = Arc::new(message);
        let job = Job {
            message: message.clone(),
            transport: crate::queue::Transport::Local,
            from_disk: false,
            whole: true,
            claim,
            memory: None,
        };
        let Some((mut reports, dsns)) = self.run(vec![job], quotas).await else {
            return Err(crate::queue::QueueError::Write(
                "local delivery task failed".into(),
            ));
        };
        let report = reports.pop().ok_or(crate::queue::QueueError::Closed)?;
        queue.record_direct(message, report, dsns).await
    }

    /// Writes a batch, queues what the recipients' scripts asked for, and concludes every job: the reports
    /// and DSNs to record. `None` when the blocking task died (the jobs' claims defer their recipients).
    async fn run(
        &self,
        batch: Vec<Job>,
        quotas: Quotas,
    ) -> Option<(Vec<crate::queue::Report>, Vec<crate::queue::QueuedMessage>)> {
        let store = self.store.clone();
        let started = std::time::Instant::now();
        let runner = self.sieve.clone();
        let (batch, mut attempts, followups) = match tokio::task::spawn_blocking(move || {
            let (attempts, followups) = deliver(&batch, &*store, &quotas, runner.as_deref());
            (batch, attempts, followups)
        })
        .await
        {
            Ok(r) => r,
            Err(e) => {
                // The batch's jobs went with the task: their claims defer the recipients and wake the
                // scheduler, so nothing waits for a restart.
                tracing::error!(error = %e, "local delivery task failed; its recipients are deferred");
                return None;
            }
        };
        if let Some(runner) = &self.sieve {
            for f in followups {
                if let Err(reply) = follow_up(&self.intake, runner, &batch[f.job], &f).await {
                    attempts[f.job][f.rcpt] = Attempt::Temporary {
                        reply,
                        relay: Some("local".into()),
                    };
                }
            }
        }
        let mut reports = Vec::with_capacity(batch.len());
        let mut dsns = Vec::new();
        for (job, attempts) in batch.iter().zip(attempts) {
            let (report, mut d) = self.intake.conclude(job, attempts, started).await;
            reports.push(report);
            dsns.append(&mut d);
        }
        Some((reports, dsns))
    }
}

/// Starts `workers` delivery tasks fed from `jobs`.
pub fn start(workers: usize, jobs: mpsc::UnboundedReceiver<Job>, local: Arc<Local>) {
    let jobs = Arc::new(Mutex::new(jobs));
    for _ in 0..workers {
        tokio::spawn(worker(jobs.clone(), local.clone()));
    }
}

async fn worker(jobs: Arc<Mutex<mpsc::UnboundedReceiver<Job>>>, local: Arc<Local>) {
    loop {
        let mut batch = Vec::with_capacity(BATCH);
        {
            let mut rx = jobs.lock().await;
            match rx.recv().await {
                Some(j) => batch.push(j),
                None => return,
            }
            while batch.len() < BATCH {
                match rx.try_recv() {
                    Ok(j) => batch.push(j),
                    Err(_) => break,
                }
            }
        }
        batch.retain(|j| !local.intake.queue.set_aside_if_held(j));
        if batch.is_empty() {
            continue;
        }
        let quotas = local.quotas.get().await;
        if let Some((reports, dsns)) = local.run(batch, quotas).await {
            local.intake.queue.record(reports, dsns).await;
        }
    }
}

/// What a recipient's Sieve run queues once its copies are stored.
struct FollowUp {
    job: usize,
    rcpt: usize,
    mailbox: Mailbox,
    redirects: Vec<Mailbox>,
    vacation: Option<crate::sieve::vacation::Reply>,
    duplicates: Vec<(String, u64)>,
    /// The message as the script left it (CRLF; of a spooled message its header section), for redirects.
    edited: Option<Vec<u8>>,
}

/// Queues what a recipient's script asked for (redirects, a vacation reply) and remembers its duplicate
/// keys; an error is the reply of a temporary failure (the delivery is tried again).
async fn follow_up(
    intake: &Intake,
    runner: &SieveRunner,
    job: &Job,
    f: &FollowUp,
) -> Result<(), String> {
    let m = &job.message;
    let user = f.mailbox.to_string().to_lowercase();
    let now = crate::clock::unix_now() as i64;
    let rcpt = &m.recipients[f.rcpt];
    for to in &f.redirects {
        // A run repeated after a crash (or a failed commit) must not send a redirect twice: each is
        // remembered under its (message, recipient, target) once queued.
        let key = crate::sieve::vacation::digest(&[
            "redirect",
            &m.id.to_string(),
            &rcpt.idx.to_string(),
            &to.to_string(),
        ]);
        if runner.scripts.seen(&user, &key, now).await.unwrap_or(false) {
            continue;
        }
        // RFC 5228 section 4.2: the original envelope sender stays; the header marks the loop guard.
        // A spooled message's tail is not copied: the redirect's spool file is a second link to it.
        let mut head = format!("X-Sieve-Redirected-From: <{}>\r\n", f.mailbox).into_bytes();
        head.extend_from_slice(f.edited.as_deref().unwrap_or(&m.body.head));
        let tail = match &m.body.tail {
            Some(t) => {
                let (t, spool) = (t.clone(), intake.queue.spool().clone());
                let linked = tokio::task::spawn_blocking(move || t.link(&spool))
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|r| r.map_err(|e| e.to_string()))
                    .map_err(|e| format!("4.3.0 cannot spool the Sieve redirect to {to}: {e}"))?;
                Some(Arc::new(linked))
            }
            None => None,
        };
        let body = crate::queue::Body { head, tail };
        match intake
            .send_generated(&m.reverse_path, to, body, false)
            .await
        {
            Ok(Some(id)) => {
                tracing::info!(queue_id = %m.id, mailbox = %f.mailbox, to = %to, redirect_queue_id = %id, "sieve: redirected")
            }
            Ok(None) => {
                tracing::warn!(queue_id = %m.id, mailbox = %f.mailbox, to = %to, "sieve: redirect target names no mailbox")
            }
            Err(e) => {
                return Err(format!(
                    "4.3.0 cannot queue the Sieve redirect to {to}: {e}"
                ));
            }
        }
        if let Err(e) = runner
            .scripts
            .remember(&user, &[(key, 7 * 86_400)], now)
            .await
        {
            tracing::warn!(mailbox = %f.mailbox, error = %e, "sieve: redirect not remembered");
        }
    }
    if let Some(reply) = &f.vacation {
        let Ok(to) = Mailbox::parse(&reply.to, true) else {
            return Ok(());
        };
        let due = runner
            .scripts
            .claim_vacation(&user, &reply.handle, &reply.to, reply.seconds, now)
            .await
            .map_err(|e| format!("4.3.0 vacation memory: {e}"))?;
        if due {
            let id = intake.next_id();
            // :from may name only the user's own address (with a display name): a vacation reply is
            // not a way to send as someone else. It is parsed as a header would be, and written anew.
            let mut reply = reply.clone();
            if let Some(from) = reply.from.take() {
                match own_from(&from, &[f.mailbox.to_string(), rcpt.forward_path.clone()]) {
                    Some(clean) => reply.from = Some(clean),
                    None => {
                        tracing::warn!(mailbox = %f.mailbox, from = %crate::log::Escaped(&from), "sieve: vacation :from is not the user's address; using the user's")
                    }
                }
            }
            let body = reply.render(
                &f.mailbox.to_string(),
                &crate::clock::rfc5322_date(now.max(0) as u64),
                &format!("<{id}.vacation@{}>", intake.hostname),
            );
            // From <>, so that nothing answers the answer (RFC 3834 section 3.3).
            match intake
                .send_generated("", &to, crate::queue::Body::memory(body), true)
                .await
            {
                Ok(_) => {
                    tracing::info!(queue_id = %m.id, mailbox = %f.mailbox, to = %to, "sieve: vacation reply queued")
                }
                Err(e) => {
                    // Not sent: the claim goes back, so the retry of this delivery may send it.
                    let _ = runner
                        .scripts
                        .release_vacation(&user, &reply.handle, &reply.to)
                        .await;
                    return Err(format!(
                        "4.3.0 cannot queue the vacation reply to {to}: {e}"
                    ));
                }
            }
        } else {
            tracing::debug!(queue_id = %m.id, mailbox = %f.mailbox, to = %to, "sieve: vacation reply already sent in this period");
        }
    }
    if !f.duplicates.is_empty()
        && let Err(e) = runner.scripts.remember(&user, &f.duplicates, now).await
    {
        tracing::warn!(mailbox = %f.mailbox, error = %e, "sieve: duplicate keys not remembered");
    }
    Ok(())
}

/// A vacation `:from` rewritten as `"Name" <address>` when it is exactly one mailbox and that mailbox is
/// one of `own`; `None` otherwise.
fn own_from(from: &str, own: &[String]) -> Option<String> {
    let header = format!("From: {}\r\n\r\n", from.replace(['\r', '\n'], " "));
    let parsed = mail_parser::MessageParser::default().parse_headers(header.as_bytes())?;
    let addr = parsed.from()?;
    let mut all = addr.iter();
    let first = all.next()?;
    if all.next().is_some() {
        return None;
    }
    let address = first.address()?;
    if !own.iter().any(|o| o.eq_ignore_ascii_case(address)) {
        return None;
    }
    let name: String = first
        .name()
        .unwrap_or("")
        .chars()
        .filter(|c| !c.is_control() && *c != '"' && *c != '\\')
        .take(100)
        .collect();
    Some(if name.trim().is_empty() {
        format!("<{address}>")
    } else {
        format!("\"{}\" <{address}>", name.trim())
    })
}

/// One recipient's copies: the first failure, and the reply for the log line.
struct Pending {
    failed: Option<String>,
    reply: String,
}

/// Writes every recipient's copies of every job; returns the attempts per job, in recipient order, and
/// what the recipients' scripts queue once their copies are stored.
fn deliver(
    batch: &[Job],
    store: &dyn MailboxStore,
    quotas: &HashMap<String, (Option<u64>, Option<u64>)>,
    sieve: Option<&SieveRunner>,
) -> (Vec<Vec<Attempt>>, Vec<FollowUp>) {
    let mut attempts: Vec<Vec<Option<Attempt>>> = batch
        .iter()
        .map(|j| vec![None; j.message.recipients.len()])
        .collect();
    let mut origins = Vec::new();
    let mut deliveries = Vec::new();
    let mut pending: HashMap<(usize, usize), Pending> = HashMap::new();
    let mut followups = Vec::new();
    let mut planned: HashMap<String, (u64, u64)> = HashMap::new();
    for (j, job) in batch.iter().enumerate() {
        let m = &job.message;
        // In memory: the message, or of a spooled one its header section (the tail streams from disk).
        let body = Arc::new(crlf_to_lf(&m.body.head));
        let tail = m.body.tail.clone();
        let stored_size = |head: usize| head as u64 + tail.as_ref().map_or(0, |t| t.len - t.lines);
        let date = crate::clock::rfc5322_date(m.received_at);
        for (r, rcpt) in m.recipients.iter().enumerate() {
            let Ok(mailbox) = Mailbox::parse(&rcpt.mailbox, true) else {
                // No retry can deliver to a mailbox that is not an address.
                let reply = format!("5.1.3 stored mailbox {:?} is not an address", rcpt.mailbox);
                attempts[j][r] = Some(Attempt::Permanent {
                    reply,
                    relay: Some("local".into()),
                });
                continue;
            };
            // The script decides how many copies there are, and their size: the quota sees all of them.
            let plan = sieve.and_then(|s| {
                s.plan(
                    store,
                    &mailbox,
                    &rcpt.forward_path,
                    &m.reverse_path,
                    &m.body,
                    &m.checks,
                )
            });
            let (copies, copy_size) = match &plan {
                Some(p) => (
                    p.copies.len() as u64,
                    stored_size(p.edited.as_ref().map_or(body.len(), Vec::len)),
                ),
                None => (1, stored_size(body.len())),
            };
            // Over quota: deferred (and retried until the user makes room or the message expires), never lost.
            let key = mailbox.to_string().to_lowercase();
            if let Some(quota) = quotas.get(&key) {
                // What this batch already puts in the mailbox counts too.
                let (planned_bytes, planned_count) = planned.get(&key).copied().unwrap_or((0, 0));
                let full = store
                    .usage(&mailbox)
                    .map(|u| crate::mailbox::Usage {
                        bytes: u.bytes + planned_bytes,
                        messages: u.messages + planned_count,
                    })
                    .map(|u| {
                        copies > 0
                            && crate::mailbox::Usage {
                                bytes: u.bytes + copy_size * (copies - 1),
                                messages: u.messages + (copies - 1),
                            }
                            .exceeds(*quota, copy_size)
                    })
                    .unwrap_or(false);
                if !full {
                    let e = planned.entry(key).or_insert((0, 0));
                    *e = (e.0 + copy_size * copies, e.1 + copies);
                }
                if full {
                    let reply = format!("4.2.2 mailbox {mailbox} is over its quota");
                    attempts[j][r] = Some(Attempt::Temporary {
                        reply,
                        relay: Some("local".into()),
                    });
                    continue;
                }
            }
            let mut prefix = format!("Return-Path: <{}>\n", m.reverse_path);
            prefix.push_str(&m.trace.replace("\r\n", "\n"));
            prefix.push_str(&format!("\n\tfor <{}>; {date}\n", rcpt.forward_path));
            let default_folder = (!rcpt.folder.is_empty()).then(|| rcpt.folder.clone());
            let unique = format!("{}.{}_{}.tern", m.received_at, m.id, rcpt.idx);
            let Some(plan) = plan else {
                let reply = match &default_folder {
                    Some(f) => format!("2.0.0 delivered to mailbox {mailbox} folder {f}"),
                    None => format!("2.0.0 delivered to mailbox {mailbox}"),
                };
                pending.insert(
                    (j, r),
                    Pending {
                        failed: None,
                        reply,
                    },
                );
                origins.push((j, r));
                deliveries.push(Delivery {
                    mailbox,
                    folder: default_folder,
                    unique,
                    prefix: prefix.into_bytes(),
                    body: body.clone(),
                    tail: tail.clone(),
                    check_existing: job.from_disk,
                    flags: Default::default(),
                });
                continue;
            };
            let summary = format!("(sieve={})", plan.summary);
            if let Some(reason) = &plan.reject {
                // RFC 5429 section 2.1: refused after the SMTP session; the DSN tells the sender why.
                attempts[j][r] = Some(Attempt::Permanent {
                    reply: format!("5.7.1 refused by the recipient's filter: {reason} {summary}"),
                    relay: Some("local".into()),
                });
                continue;
            }
            let copy_body = match &plan.edited {
                Some(e) => Arc::new(e.clone()),
                None => body.clone(),
            };
            let folders: Vec<String> = plan
                .copies
                .iter()
                .map(|c| {
                    c.folder
                        .clone()
                        .or(default_folder.clone())
                        .unwrap_or_else(|| "INBOX".into())
                })
                .collect();
            let reply = if plan.copies.is_empty() {
                format!("2.0.0 discarded for mailbox {mailbox} {summary}")
            } else {
                format!(
                    "2.0.0 delivered to mailbox {mailbox} folder {} {summary}",
                    folders.join(",")
                )
            };
            pending.insert(
                (j, r),
                Pending {
                    failed: None,
                    reply,
                },
            );
            for (n, copy) in plan.copies.into_iter().enumerate() {
                origins.push((j, r));
                deliveries.push(Delivery {
                    mailbox: mailbox.clone(),
                    folder: copy.folder.or(default_folder.clone()),
                    // Stable per copy, so a retry finds what an earlier attempt stored.
                    unique: if n == 0 {
                        unique.clone()
                    } else {
                        format!("{unique}.s{n}")
                    },
                    prefix: prefix.clone().into_bytes(),
                    body: copy_body.clone(),
                    tail: tail.clone(),
                    check_existing: job.from_disk,
                    flags: copy.flags,
                });
            }
            if !plan.redirects.is_empty() || plan.vacation.is_some() || !plan.duplicates.is_empty()
            {
                followups.push(FollowUp {
                    job: j,
                    rcpt: r,
                    mailbox,
                    redirects: plan.redirects,
                    vacation: plan.vacation,
                    duplicates: plan.duplicates,
                    edited: plan.edited.map(|e| crate::mailbox::crlf(&e)),
                });
            }
        }
    }
    let results = store.deliver(&deliveries);
    for ((j, r), result) in origins.into_iter().zip(results) {
        if let (Err(e), Some(p)) = (result, pending.get_mut(&(j, r)))
            && p.failed.is_none()
        {
            p.failed = Some(format!("4.2.0 mailbox write failed: {e}"));
        }
    }
    for ((j, r), p) in pending {
        attempts[j][r] = Some(match p.failed {
            None => Attempt::Delivered {
                reply: p.reply,
                relay: "local".into(),
            },
            Some(reply) => Attempt::Temporary {
                reply,
                relay: Some("local".into()),
            },
        });
    }
    // Follow-ups only for recipients whose copies are all stored.
    let followups = followups
        .into_iter()
        .filter(|f| matches!(attempts[f.job][f.rcpt], Some(Attempt::Delivered { .. })))
        .collect();
    let attempts = attempts
        .into_iter()
        .map(|v| {
            v.into_iter()
                .map(|a| {
                    a.unwrap_or(Attempt::Temporary {
                        reply: "4.3.0 not attempted".into(),
                        relay: None,
                    })
                })
                .collect()
        })
        .collect();
    (attempts, followups)
}

/// Maildir files use the local (LF) line ending; SMTP carries CRLF.
fn crlf_to_lf(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len());
    let mut from = 0;
    for at in memchr::memchr_iter(b'\r', body) {
        if body.get(at + 1) == Some(&b'\n') {
            out.extend_from_slice(&body[from..at]);
            from = at + 1;
        }
    }
    out.extend_from_slice(&body[from..]);
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn vacation_from_must_be_the_users_own_mailbox() {
        let own = ["alice@example.test".to_string()];
        assert_eq!(
            super::own_from("Alice Smith <alice@example.test>", &own).as_deref(),
            Some("\"Alice Smith\" <alice@example.test>")
        );
        assert_eq!(
            super::own_from("ALICE@example.test", &own).as_deref(),
            Some("<ALICE@example.test>")
        );
        // Whatever a lenient parse makes of a comment, what is written is only the user's own address.
        let tricky = super::own_from("boss@corp.example (<alice@example.test>)", &own);
        assert!(
            tricky.as_deref().is_none_or(|f| !f.contains("boss")),
            "{tricky:?}"
        );
        for hostile in [
            "\"Boss\" <boss@corp.example>, <alice@example.test>",
            "x\r\nBcc: <alice@example.test>",
            "\"a\\\"b\r\n\" <alice@example.test>",
        ] {
            let got = super::own_from(hostile, &own);
            assert!(
                got.as_deref().is_none_or(|f| !f.contains("boss")
                    && !f.contains('\n')
                    && !f.contains("Bcc")
                    && f.ends_with("<alice@example.test>")
                    && f.matches('"').count() <= 2),
                "{hostile:?} gave {got:?}"
            );
        }
        assert_eq!(super::own_from("boss@corp.example", &own), None);
    }

    #[test]
    fn crlf_becomes_lf_and_lone_cr_stays() {
        assert_eq!(super::crlf_to_lf(b"a\r\nb\rc\r\n"), b"a\nb\rc\n");
    }
}
