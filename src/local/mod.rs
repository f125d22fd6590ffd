//! Final delivery to our own users: turns queue jobs into mailbox writes and reports each recipient's outcome.
//!
//! Workers take several jobs at once, so that one blocking call writes a batch and fsyncs each Maildir folder
//! once for it. Every attempt logs one line per recipient (queue_id, to, status, reply).

use crate::mailbox::{Delivery, MailboxStore};
use crate::queue::{Job, Outcome, OutcomeKind, Queue, Report, retry};
use crate::smtp::Mailbox;
use std::sync::Arc;
use tokio::sync::{Mutex, mpsc};

/// Jobs one worker takes in one batch at most.
const BATCH: usize = 32;

/// Starts `workers` delivery tasks fed from `jobs`.
pub fn start(
    workers: usize,
    jobs: mpsc::UnboundedReceiver<Job>,
    store: Arc<dyn MailboxStore>,
    queue: Queue,
) {
    let jobs = Arc::new(Mutex::new(jobs));
    for _ in 0..workers {
        tokio::spawn(worker(jobs.clone(), store.clone(), queue.clone()));
    }
}

async fn worker(
    jobs: Arc<Mutex<mpsc::UnboundedReceiver<Job>>>,
    store: Arc<dyn MailboxStore>,
    queue: Queue,
) {
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
        let store = store.clone();
        let started = std::time::Instant::now();
        let (batch, deliveries, results) = match tokio::task::spawn_blocking(move || {
            let (origins, deliveries) = prepare(&batch);
            let results = store.deliver(&deliveries);
            (
                batch,
                origins.into_iter().zip(deliveries).collect::<Vec<_>>(),
                results,
            )
        })
        .await
        {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "local delivery task failed; the batch stays queued for retry");
                continue;
            }
        };
        let reports = judge(&batch, &deliveries, results, &queue, started);
        queue.record(reports).await;
    }
}

/// One `Delivery` per recipient of each job, and the (job, recipient) index each came from.
fn prepare(batch: &[Job]) -> (Vec<(usize, usize)>, Vec<Delivery>) {
    let mut origins = Vec::new();
    let mut out = Vec::new();
    for (j, job) in batch.iter().enumerate() {
        let m = &job.message;
        let body = Arc::new(crlf_to_lf(&m.body));
        let date = crate::clock::rfc5322_date(m.received_at);
        for (r, rcpt) in m.recipients.iter().enumerate() {
            let Ok(mailbox) = Mailbox::parse(&rcpt.mailbox, true) else {
                continue;
            };
            let mut prefix = format!("Return-Path: <{}>\n", m.reverse_path);
            prefix.push_str(&m.trace.replace("\r\n", "\n"));
            prefix.push_str(&format!("\n\tfor <{}>; {date}\n", rcpt.forward_path));
            origins.push((j, r));
            out.push(Delivery {
                mailbox,
                unique: format!("{}.{}_{}.tern", m.received_at, m.id, rcpt.idx),
                prefix: prefix.into_bytes(),
                body: body.clone(),
                check_existing: job.from_disk,
            });
        }
    }
    (origins, out)
}

fn judge(
    batch: &[Job],
    deliveries: &[((usize, usize), Delivery)],
    results: Vec<Result<(), crate::mailbox::MailboxError>>,
    queue: &Queue,
    started: std::time::Instant,
) -> Vec<Report> {
    let now = crate::clock::unix_now();
    let s = queue.settings();
    let mut reports: Vec<Report> = batch
        .iter()
        .map(|j| Report {
            id: j.message.id,
            whole: j.whole,
            outcomes: Vec::new(),
        })
        .collect();
    let mut reported = vec![Vec::new(); batch.len()];
    for (((j, r), d), result) in deliveries.iter().zip(results) {
        let m = &batch[*j].message;
        let rcpt = &m.recipients[*r];
        reported[*j].push(*r);
        let kind = match result {
            Ok(()) => {
                let reply = "2.0.0 delivered to maildir".to_string();
                tracing::info!(queue_id = %m.id, from = %m.reverse_path, to = %rcpt.forward_path, mailbox = %d.mailbox,
                    relay = "local", delay_ms = started.elapsed().as_millis() as u64, status = "sent", reply = %reply, "delivery");
                OutcomeKind::Delivered { reply }
            }
            Err(e) => {
                let reply = format!("4.2.0 mailbox write failed: {e}");
                match retry::next_attempt(
                    rcpt.attempts + 1,
                    m.received_at,
                    now,
                    s.retry_base,
                    s.retry_max,
                    s.max_lifetime,
                ) {
                    retry::Retry::At(t) => {
                        tracing::warn!(queue_id = %m.id, from = %m.reverse_path, to = %rcpt.forward_path, relay = "local",
                            status = "deferred", reply = %reply, next_attempt = t, "delivery");
                        OutcomeKind::Deferred {
                            reply,
                            next_attempt: t,
                        }
                    }
                    retry::Retry::Expired => {
                        let reply = format!("5.4.7 delivery time expired: {e}");
                        tracing::warn!(queue_id = %m.id, from = %m.reverse_path, to = %rcpt.forward_path, relay = "local",
                            status = "bounced", reply = %reply, "delivery");
                        OutcomeKind::Failed { reply }
                    }
                }
            }
        };
        reports[*j].outcomes.push(Outcome {
            id: m.id,
            idx: rcpt.idx,
            kind,
        });
    }
    // A recipient whose stored mailbox no longer parses cannot be delivered by any retry.
    for (j, job) in batch.iter().enumerate() {
        for (r, rcpt) in job.message.recipients.iter().enumerate() {
            if !reported[j].contains(&r) {
                let reply = format!("5.1.3 stored mailbox {:?} is not an address", rcpt.mailbox);
                tracing::error!(queue_id = %job.message.id, to = %rcpt.forward_path, status = "bounced", reply = %reply, "delivery");
                reports[j].outcomes.push(Outcome {
                    id: job.message.id,
                    idx: rcpt.idx,
                    kind: OutcomeKind::Failed { reply },
                });
            }
        }
    }
    reports
}

/// Maildir files use the local (LF) line ending; SMTP carries CRLF.
fn crlf_to_lf(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len());
    let mut i = 0;
    while i < body.len() {
        if body[i] == b'\r' && body.get(i + 1) == Some(&b'\n') {
            i += 1;
            continue;
        }
        out.push(body[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn crlf_becomes_lf_and_lone_cr_stays() {
        assert_eq!(super::crlf_to_lf(b"a\r\nb\rc\r\n"), b"a\nb\rc\n");
    }
}
