//! The queue's one writer: every change to queue.db goes through it, in groups committed together (one
//! transaction, one fsync of the WAL for all the messages, outcomes and DSNs waiting), then hands fresh
//! messages to delivery and wakes the scheduler for what was deferred. A group that no one waits for
//! lingers up to [`LINGER`] for more writes.

use super::*;
use sqlx::Connection;
use sqlx::Sqlite;
use sqlx::pool::PoolConnection;

/// Takes the claims for a message the writer is about to store: nobody else knows its id yet.
fn claim_new(claims: &Arc<claims::Claims>, m: &QueuedMessage) -> Vec<Arc<claims::Claim>> {
    [Transport::Local, Transport::Remote]
        .into_iter()
        .filter(|t| m.recipients.iter().any(|r| r.transport == *t))
        .filter_map(|t| claims.try_claim(m.id, t))
        .collect()
}

/// A message just committed goes to delivery at once while its body fits `[queue] delivery_memory`;
/// otherwise it waits on disk, where the scheduler finds it as soon as there is room (the writer never
/// waits for room: deliveries report through it).
fn hand_out_fresh(shared: &Arc<Shared>, message: Arc<QueuedMessage>, now: u64) {
    let kib = shared.cost_of(&message);
    let job = shared.jobs.clone().try_acquire_owned();
    let memory = shared.memory.clone().try_acquire_many_owned(kib);
    match (job, memory) {
        (Ok(job), Ok(memory)) => {
            let claimed = claim_new(&shared.claims, &message);
            let hold = Hold {
                _memory: memory,
                _job: job,
            };
            shared.dispatch(message, false, claimed, Some(hold));
        }
        _ => {
            let _ = shared.wake.send(Wake::At(now, message.id));
        }
    }
}

pub(super) async fn writer(
    pool: SqlitePool,
    mut rx: mpsc::Receiver<Write>,
    shared: Arc<Shared>,
    settings: QueueSettings,
) {
    let mut batch = Vec::with_capacity(64);
    // One connection of the pool kept for every group: the pool hands its idle connections out in
    // turn, and a connection that did not make the last commit starts with its page cache dropped
    // (re-reading the pages the next insert touches). After a failed commit it is given back.
    let mut conn: Option<PoolConnection<Sqlite>> = None;
    while let Some(first) = rx.recv().await {
        gather(first, &mut rx, &mut batch, LINGER).await;
        let now = crate::clock::unix_now();
        let result = commit(
            &pool,
            &mut conn,
            &shared.spool,
            &batch,
            now + settings.retry_base.as_secs(),
        )
        .await
        .map_err(|e| QueueError::Write(e.to_string()));
        // Files of messages that just left the queue (a crash before this leaves them to the next sweep).
        let result = match result {
            Ok(spooled) if !spooled.is_empty() => {
                let spool = shared.spool.clone();
                tokio::task::spawn_blocking(move || spool.remove(&spooled));
                Ok(())
            }
            Ok(_) => Ok(()),
            Err(e) => Err(e),
        };
        if let Err(e) = &result {
            conn = None;
            tracing::error!(error = %e, writes = batch.len(), "queue: group commit failed");
        }
        for w in batch.drain(..) {
            match w {
                Write::Insert(message, done) => {
                    if result.is_ok() {
                        hand_out_fresh(&shared, message, now);
                    }
                    let _ = done.send(result.clone());
                }
                Write::Reports(reports, dsns) => {
                    if result.is_ok() {
                        for o in reports.iter().flat_map(|r| &r.outcomes) {
                            if let OutcomeKind::Deferred { next_attempt, .. } = o.kind {
                                let _ = shared.wake.send(Wake::At(next_attempt, o.id));
                            }
                        }
                        for dsn in dsns {
                            hand_out_fresh(&shared, dsn, now);
                        }
                    } else {
                        // Not recorded, nor their DSNs: these recipients are tried again from disk shortly.
                        for r in &reports {
                            let _ = shared.wake.send(Wake::At(now + 5, r.id));
                        }
                    }
                    for r in &reports {
                        if let Some(c) = &r.claim {
                            c.release();
                        }
                    }
                }
                Write::Direct(message, report, dsns, done) => {
                    if result.is_ok() {
                        for o in &report.outcomes {
                            if let OutcomeKind::Deferred { next_attempt, .. } = o.kind {
                                let _ = shared.wake.send(Wake::At(next_attempt, o.id));
                            }
                        }
                        for dsn in dsns {
                            hand_out_fresh(&shared, dsn, now);
                        }
                    } else if done.is_none() {
                        // Delivered already; only its history and trace events are lost.
                        tracing::error!(queue_id = %message.id, "queue: the history of a delivered message was not recorded");
                    }
                    if let Some(c) = &report.claim {
                        c.release();
                    }
                    if let Some(done) = done {
                        let _ = done.send(result.clone());
                    }
                }
                Write::Abandoned(id, transport) => {
                    shared.claims.remove(id, transport, true);
                    let due = if result.is_ok() {
                        now + settings.retry_base.as_secs()
                    } else {
                        now + 5
                    };
                    let _ = shared.wake.send(Wake::At(due, id));
                }
                Write::Barrier(done) => {
                    let _ = done.send(());
                }
            }
        }
    }
    // Closed: the connection is closed here, not handed back to a pool that is going away.
    if let Some(c) = conn.take() {
        drop(c.detach());
    }
}

/// Fills `batch` with the next group: `first`, what is already waiting, and while no write in it is
/// awaited, what arrives within `linger` (up to [`MAX_GROUP`] writes).
async fn gather(
    first: Write,
    rx: &mut mpsc::Receiver<Write>,
    batch: &mut Vec<Write>,
    linger: std::time::Duration,
) {
    let mut awaited = first.awaited();
    batch.push(first);
    let linger_until = tokio::time::Instant::now() + linger;
    loop {
        while batch.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(w) => {
                    awaited |= w.awaited();
                    batch.push(w);
                }
                Err(_) => break,
            }
        }
        if batch.len() >= MAX_GROUP || awaited {
            return;
        }
        match tokio::time::timeout_at(linger_until, rx.recv()).await {
            Ok(Some(w)) => {
                awaited |= w.awaited();
                batch.push(w);
            }
            // Closed (shutting down) or the time is up: commit what there is.
            Ok(None) | Err(_) => return,
        }
    }
}

/// Commits a group of writes; returns the messages that left the queue with a spool file.
async fn commit(
    pool: &SqlitePool,
    conn: &mut Option<PoolConnection<Sqlite>>,
    spool: &spool::Spool,
    batch: &[Write],
    retry_at: u64,
) -> Result<Vec<QueueId>, sqlx::Error> {
    let conn = match conn {
        Some(c) => c,
        None => conn.insert(pool.acquire().await?),
    };
    let mut tx = conn.begin().await?;
    let mut inserts: Vec<&QueuedMessage> = Vec::new();
    let mut reports: Vec<&Report> = Vec::new();
    let mut abandoned = Vec::new();
    // Messages delivered before they were queued, every recipient final: history and events only.
    let mut direct: Vec<(&QueuedMessage, &Report)> = Vec::new();
    let mut received: Vec<&QueuedMessage> = Vec::new();
    for w in batch {
        match w {
            Write::Insert(m, _) => inserts.push(m),
            Write::Direct(m, r, dsns, _) => {
                if r.all_final() {
                    direct.push((m, r));
                    received.push(m);
                } else {
                    inserts.push(m);
                }
                reports.push(r);
                inserts.extend(dsns.iter().map(|d| &**d));
            }
            Write::Reports(r, dsns) => {
                reports.extend(r.iter());
                inserts.extend(dsns.iter().map(|d| &**d));
            }
            Write::Abandoned(id, transport) => abandoned.push((*id, *transport)),
            Write::Barrier(_) => {}
        }
    }
    // Spool files renamed to their queue IDs: their names are durable before the rows naming them.
    if inserts.iter().any(|m| m.body.tail.is_some()) {
        let spool = spool.clone();
        tokio::task::spawn_blocking(move || spool.sync())
            .await
            .map_err(|e| sqlx::Error::Io(std::io::Error::other(e)))?
            .map_err(sqlx::Error::Io)?;
    }
    store::insert(&mut tx, &inserts).await?;
    received.extend(inserts.iter().copied());
    events::record(&mut tx, &received, &reports).await?;
    store::history_of_direct(&mut tx, &direct).await?;
    // The common case, every recipient of a fresh message final at once, is one statement for the group.
    let mut finished = Vec::new();
    let mut spooled = Vec::new();
    // Delivered before it was ever queued: its spool file goes once the history is in.
    spooled.extend(
        direct
            .iter()
            .filter(|(m, _)| m.body.tail.is_some())
            .map(|(m, _)| m.id),
    );
    for report in reports {
        if direct.iter().any(|(_, r)| std::ptr::eq(*r, report)) {
            continue;
        }
        if report.all_final() {
            finished.push(report);
            continue;
        }
        for o in &report.outcomes {
            store::apply(&mut tx, o).await?;
        }
        store::finish_if_done(&mut tx, report.id, &mut spooled).await?;
    }
    store::finish(&mut tx, &finished, &mut spooled).await?;
    for (id, transport) in abandoned {
        store::defer_all(&mut tx, id, transport, retry_at).await?;
    }
    tx.commit().await?;
    Ok(spooled)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn unawaited(n: u64) -> Write {
        Write::Abandoned(IdGenerator::after(None).next(n), Transport::Local)
    }

    /// With the clock paused, time moves only when every task waits: the test decides what arrives when.
    #[tokio::test(start_paused = true)]
    async fn writes_no_one_waits_for_linger_into_one_group() {
        let (tx, mut rx) = mpsc::channel(16);
        let sender = tokio::spawn(async move {
            for n in 0..4u64 {
                tx.send(unawaited(1_700_000_000_000_000 + n)).await.unwrap();
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            tx
        });
        let mut batch = Vec::new();
        let first = rx.recv().await.unwrap();
        let started = tokio::time::Instant::now();
        gather(first, &mut rx, &mut batch, Duration::from_millis(5)).await;
        // Four writes a millisecond apart, then nothing: one group, closed when the linger ran out.
        assert_eq!(batch.len(), 4);
        assert_eq!(started.elapsed(), Duration::from_millis(5));
        drop(sender.await.unwrap());
    }

    #[tokio::test(start_paused = true)]
    async fn an_awaited_write_closes_the_group_at_once() {
        let (tx, mut rx) = mpsc::channel(16);
        tx.send(unawaited(1_700_000_000_000_000)).await.unwrap();
        let (done, _wait) = oneshot::channel();
        tx.send(Write::Barrier(done)).await.unwrap();
        tx.send(unawaited(1_700_000_000_000_001)).await.unwrap();
        let mut batch = Vec::new();
        let first = rx.recv().await.unwrap();
        let started = tokio::time::Instant::now();
        gather(first, &mut rx, &mut batch, Duration::from_secs(60)).await;
        // What was already waiting comes along; no linger once someone waits.
        assert_eq!(batch.len(), 3);
        assert_eq!(started.elapsed(), Duration::ZERO);
        // The next group starts alone and, no one waiting on it, lingers in full.
        let next = unawaited(1_700_000_000_000_002);
        batch.clear();
        gather(next, &mut rx, &mut batch, Duration::from_millis(5)).await;
        assert_eq!(batch.len(), 1);
        assert_eq!(started.elapsed(), Duration::from_millis(5));
    }

    #[tokio::test(start_paused = true)]
    async fn a_group_is_never_larger_than_max_group() {
        let (tx, mut rx) = mpsc::channel(MAX_GROUP + 10);
        for n in 0..(MAX_GROUP as u64 + 10) {
            tx.send(unawaited(1_700_000_000_000_000 + n)).await.unwrap();
        }
        let mut batch = Vec::new();
        let first = rx.recv().await.unwrap();
        gather(first, &mut rx, &mut batch, Duration::from_secs(60)).await;
        assert_eq!(batch.len(), MAX_GROUP);
        let started = tokio::time::Instant::now();
        let first = rx.recv().await.unwrap();
        batch.clear();
        gather(first, &mut rx, &mut batch, Duration::from_millis(5)).await;
        assert_eq!(batch.len(), 10);
        assert_eq!(started.elapsed(), Duration::from_millis(5));
    }
}
