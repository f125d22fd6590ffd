//! Final delivery to our own users: turns queue jobs into mailbox writes and reports each recipient's outcome.
//!
//! Workers take several jobs at once, so that one blocking call writes a batch and fsyncs each Maildir folder
//! once for it. The queue's `conclude` logs one line per recipient and decides retries and DSNs.

use crate::directory::Directory;
use crate::intake::{Attempt, Intake};
use crate::mailbox::{Delivery, MailboxStore};
use crate::queue::Job;
use crate::smtp::Mailbox;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::{Mutex, mpsc};

/// Jobs one worker takes in one batch at most.
const BATCH: usize = 32;

type Quotas = Arc<HashMap<String, (Option<u64>, Option<u64>)>>;

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

/// Starts `workers` delivery tasks fed from `jobs`.
pub fn start(
    workers: usize,
    jobs: mpsc::UnboundedReceiver<Job>,
    store: Arc<dyn MailboxStore>,
    intake: Arc<Intake>,
    directory: Directory,
) {
    let jobs = Arc::new(Mutex::new(jobs));
    let quotas = Arc::new(QuotaCache {
        directory,
        last: Mutex::new(Arc::new(HashMap::new())),
    });
    for _ in 0..workers {
        tokio::spawn(worker(
            jobs.clone(),
            store.clone(),
            intake.clone(),
            quotas.clone(),
        ));
    }
}

async fn worker(
    jobs: Arc<Mutex<mpsc::UnboundedReceiver<Job>>>,
    store: Arc<dyn MailboxStore>,
    intake: Arc<Intake>,
    quotas: Arc<QuotaCache>,
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
        let quotas = quotas.get().await;
        let (batch, attempts) = match tokio::task::spawn_blocking(move || {
            let attempts = deliver(&batch, &*store, &quotas);
            (batch, attempts)
        })
        .await
        {
            Ok(r) => r,
            Err(e) => {
                // The batch's jobs went with the task: their claims defer the recipients and wake the
                // scheduler, so nothing waits for a restart.
                tracing::error!(error = %e, "local delivery task failed; its recipients are deferred");
                continue;
            }
        };
        let mut reports = Vec::with_capacity(batch.len());
        let mut dsns = Vec::new();
        for (job, attempts) in batch.iter().zip(attempts) {
            let (report, mut d) = intake.conclude(job, attempts, started).await;
            reports.push(report);
            dsns.append(&mut d);
        }
        intake.queue.record(reports, dsns).await;
    }
}

/// Writes every recipient's copy of every job; returns the attempts per job, in recipient order.
fn deliver(
    batch: &[Job],
    store: &dyn MailboxStore,
    quotas: &HashMap<String, (Option<u64>, Option<u64>)>,
) -> Vec<Vec<Attempt>> {
    let mut attempts: Vec<Vec<Option<Attempt>>> = batch
        .iter()
        .map(|j| vec![None; j.message.recipients.len()])
        .collect();
    let mut origins = Vec::new();
    let mut deliveries = Vec::new();
    let mut planned: HashMap<String, (u64, u64)> = HashMap::new();
    for (j, job) in batch.iter().enumerate() {
        let m = &job.message;
        let body = Arc::new(crlf_to_lf(&m.body));
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
                    .map(|u| u.exceeds(*quota, body.len() as u64))
                    .unwrap_or(false);
                if !full {
                    let e = planned.entry(key).or_insert((0, 0));
                    *e = (e.0 + body.len() as u64, e.1 + 1);
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
            origins.push((j, r));
            deliveries.push(Delivery {
                mailbox,
                folder: (!rcpt.folder.is_empty()).then(|| rcpt.folder.clone()),
                unique: format!("{}.{}_{}.tern", m.received_at, m.id, rcpt.idx),
                prefix: prefix.into_bytes(),
                body: body.clone(),
                check_existing: job.from_disk,
            });
        }
    }
    let results = store.deliver(&deliveries);
    for (((j, r), d), result) in origins.into_iter().zip(&deliveries).zip(results) {
        attempts[j][r] = Some(match result {
            Ok(()) => Attempt::Delivered {
                reply: match &d.folder {
                    Some(f) => format!("2.0.0 delivered to mailbox {} folder {f}", d.mailbox),
                    None => format!("2.0.0 delivered to mailbox {}", d.mailbox),
                },
                relay: "local".into(),
            },
            Err(e) => Attempt::Temporary {
                reply: format!("4.2.0 mailbox write failed: {e}"),
                relay: Some("local".into()),
            },
        });
    }
    attempts
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
        .collect()
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
