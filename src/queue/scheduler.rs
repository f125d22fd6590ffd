//! The scheduler: one entry per message at the earliest time any of its recipients is due; claims,
//! loads and hands out what is due, within `[queue] delivery_jobs` and `delivery_memory_mb`.

use super::*;

/// Holds deferred deliveries until they are due, then claims them, loads them from disk and hands them out.
/// One entry per message (the earliest time any of its recipients is due); no message body is read before
/// a claim is held.
pub(super) async fn scheduler(
    pool: SqlitePool,
    mut rx: mpsc::UnboundedReceiver<Wake>,
    shared: Arc<Shared>,
    settings: QueueSettings,
) {
    let mut heap: BinaryHeap<Reverse<(u64, QueueId)>> = BinaryHeap::new();
    // The due time each message is in the heap for; stale heap entries are skipped.
    let mut due_of: HashMap<QueueId, u64> = HashMap::new();
    // Messages that were due while a delivery of theirs was under way: looked at again on release.
    let mut busy: HashSet<QueueId> = HashSet::new();
    let mut last_prune = 0u64;
    loop {
        let now = crate::clock::unix_now();
        while let Some(Reverse((due, id))) = heap.peek().copied() {
            if due > now {
                break;
            }
            heap.pop();
            if due_of.get(&id) != Some(&due) {
                continue;
            }
            due_of.remove(&id);
            let claimed: Vec<Arc<claims::Claim>> = [Transport::Local, Transport::Remote]
                .into_iter()
                .filter_map(|t| shared.claims.try_claim(id, t))
                .collect();
            if claimed.len() < 2 {
                busy.insert(id);
            }
            if claimed.is_empty() {
                continue;
            }
            let transports: Vec<Transport> = claimed.iter().map(|c| c.transport()).collect();
            // Room for the body first, then the body: however long the queue, the bodies in memory stay
            // within [queue] delivery_memory. The wait holds only this message's claims.
            let Ok(job) = shared.jobs.clone().acquire_owned().await else {
                return;
            };
            let size = store::body_size(&pool, id).await.unwrap_or(0);
            let permit = match shared
                .memory
                .clone()
                .acquire_many_owned(shared.kib_for(size))
                .await
            {
                Ok(p) => Hold {
                    _memory: p,
                    _job: job,
                },
                Err(_) => return,
            };
            match store::load_due(&pool, &shared.spool, id, now, &transports, false).await {
                Ok(Some(message)) => {
                    shared.dispatch(Arc::new(message), true, claimed, Some(permit))
                }
                Ok(None) => claimed.iter().for_each(|c| c.release_unused()),
                // No retry brings a deleted file back: held (once, visibly) until the admin restores the
                // file and releases the message, or deletes it.
                Err(sqlx::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::NotFound | std::io::ErrorKind::UnexpectedEof
                    ) =>
                {
                    claimed.iter().for_each(|c| c.release_unused());
                    let path = shared.spool.path_of(id);
                    match store::set_held(&pool, id, true).await {
                        Ok(_) => {
                            let _ = events::note(
                                &pool,
                                id,
                                "held",
                                "its spool file is missing or truncated",
                            )
                            .await;
                            tracing::error!(queue_id = %id, path = %path.display(),
                                "queue: the spool file of this message is missing or truncated; held (restore the file and run tern queue release, or tern queue delete)");
                        }
                        Err(e) => {
                            tracing::error!(queue_id = %id, path = %path.display(), error = %e, "queue: the spool file of this message is missing; will look again");
                            push(&mut heap, &mut due_of, now + 300, id);
                        }
                    }
                }
                Err(e) => {
                    tracing::error!(queue_id = %id, error = %e, "queue: cannot load message, will try again");
                    claimed.iter().for_each(|c| c.release_unused());
                    push(&mut heap, &mut due_of, now + 30, id);
                }
            }
        }
        if now >= last_prune + 3600 {
            last_prune = now;
            let before = now.saturating_sub(settings.history.as_secs());
            match store::prune_history(&pool, before).await {
                Ok(n) if n > 0 => tracing::info!(rows = n, "queue: old history pruned"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "queue: history pruning failed"),
            }
            match events::prune(&pool, before).await {
                Ok(n) if n > 0 => tracing::info!(rows = n, "queue: old trace events pruned"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "queue: trace event pruning failed"),
            }
        }
        let wait = heap
            .peek()
            .map(|Reverse((due, _))| Duration::from_secs(due.saturating_sub(now).max(1)));
        tokio::select! {
            item = rx.recv() => match item {
                Some(Wake::At(due, id)) => push(&mut heap, &mut due_of, due, id),
                Some(Wake::Released(id)) => {
                    if busy.remove(&id) {
                        push(&mut heap, &mut due_of, crate::clock::unix_now(), id);
                    }
                }
                None => return,
            },
            _ = tokio::time::sleep(wait.unwrap_or(Duration::from_secs(3600))) => {}
        }
    }
}

/// Schedules `id` at `due` unless it is already scheduled earlier.
fn push(
    heap: &mut BinaryHeap<Reverse<(u64, QueueId)>>,
    due_of: &mut HashMap<QueueId, u64>,
    due: u64,
    id: QueueId,
) {
    match due_of.get(&id) {
        Some(&d) if d <= due => {}
        _ => {
            due_of.insert(id, due);
            heap.push(Reverse((due, id)));
        }
    }
}
