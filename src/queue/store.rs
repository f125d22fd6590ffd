//! The queue's SQL: one function per statement group, all run by the writer or the scheduler.

use super::{
    Origin, Outcome, OutcomeKind, QueueId, QueuedMessage, QueuedRecipient, Report, Transport,
};
use sqlx::{QueryBuilder, Row, Sqlite, SqlitePool, Transaction};

/// SQLite's default limit on bound parameters in one statement is 32766; stay well below it.
const ROWS_PER_STATEMENT: usize = 500;

/// Inserts messages and their recipients with one multi-row statement per table (per 500 rows).
pub(super) async fn insert(
    tx: &mut Transaction<'_, Sqlite>,
    messages: &[&QueuedMessage],
) -> Result<(), sqlx::Error> {
    for chunk in messages.chunks(ROWS_PER_STATEMENT) {
        let mut q = QueryBuilder::<Sqlite>::new(
            "INSERT INTO messages (id, received_at, reverse_path, body_type, smtputf8, ret, envid, trace, body, checks, origin, dkim_domain, spool_offset, spool_len, spool_lines) ",
        );
        q.push_values(chunk, |mut row, m| {
            row.push_bind(m.id.to_string())
                .push_bind(m.received_at as i64)
                .push_bind(m.reverse_path.clone())
                .push_bind(m.body_type.clone())
                .push_bind(m.smtputf8)
                .push_bind(m.ret.clone())
                .push_bind(m.envid.clone())
                .push_bind(m.trace.clone())
                .push_bind(m.body.head.clone())
                .push_bind(m.checks.clone())
                .push_bind(m.origin.as_str())
                .push_bind(m.dkim_domain.clone())
                .push_bind(m.body.tail.as_ref().map(|t| t.offset as i64))
                .push_bind(m.body.tail.as_ref().map(|t| t.len as i64))
                .push_bind(m.body.tail.as_ref().map(|t| t.lines as i64));
        });
        q.build().execute(&mut **tx).await?;
    }
    let recipients: Vec<(&QueuedMessage, &QueuedRecipient)> = messages
        .iter()
        .flat_map(|m| m.recipients.iter().map(move |r| (*m, r)))
        .collect();
    for chunk in recipients.chunks(ROWS_PER_STATEMENT) {
        let mut q = QueryBuilder::<Sqlite>::new(
            "INSERT INTO recipients (message_id, idx, forward_path, mailbox, transport, notify, orcpt, state, attempts, next_attempt, folder) ",
        );
        q.push_values(chunk, |mut row, (m, r)| {
            row.push_bind(m.id.to_string())
                .push_bind(r.idx)
                .push_bind(r.forward_path.clone())
                .push_bind(r.mailbox.clone())
                .push_bind(r.transport.as_str())
                .push_bind(r.notify.clone())
                .push_bind(r.orcpt.clone())
                .push_bind("queued")
                .push_bind(0i64)
                .push_bind(m.received_at as i64)
                .push_bind(r.folder.clone());
        });
        q.build().execute(&mut **tx).await?;
    }
    Ok(())
}

/// Moves messages whose every recipient is final (delivered or failed) to the history: the reports say
/// what became of each recipient, and the rows go (recipients with them, ON DELETE CASCADE). Adds to
/// `spooled` the messages whose spool file is to be removed once this commits.
pub(super) async fn finish(
    tx: &mut Transaction<'_, Sqlite>,
    reports: &[&Report],
    spooled: &mut Vec<QueueId>,
) -> Result<(), sqlx::Error> {
    let now = crate::clock::unix_now() as i64;
    let rows: Vec<(&Report, &Outcome)> = reports
        .iter()
        .flat_map(|r| r.outcomes.iter().map(move |o| (*r, o)))
        .collect();
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        let mut q = QueryBuilder::<Sqlite>::new(
            "INSERT OR REPLACE INTO history (message_id, idx, reverse_path, forward_path, state, last_reply, finished_at) ",
        );
        q.push_values(chunk, |mut row, (r, o)| {
            let (state, reply) = history_state(&o.kind);
            row.push_bind(r.id.to_string())
                .push_bind(o.idx)
                .push("(SELECT reverse_path FROM messages WHERE id = ")
                .push_bind_unseparated(r.id.to_string())
                .push_unseparated(")")
                .push("(SELECT forward_path FROM recipients WHERE message_id = ")
                .push_bind_unseparated(r.id.to_string())
                .push_unseparated(" AND idx = ")
                .push_bind_unseparated(o.idx)
                .push_unseparated(")")
                .push_bind(state)
                .push_bind(reply.clone())
                .push_bind(now);
        });
        q.build().execute(&mut **tx).await?;
    }
    let ids: Vec<String> = reports.iter().map(|r| r.id.to_string()).collect();
    for chunk in ids.chunks(ROWS_PER_STATEMENT) {
        let mut q = QueryBuilder::<Sqlite>::new("DELETE FROM messages WHERE id IN (");
        let mut list = q.separated(", ");
        for id in chunk {
            list.push_bind(id.clone());
        }
        q.push(") RETURNING id, spool_len");
        collect_spooled(q.build().fetch_all(&mut **tx).await?, spooled);
    }
    Ok(())
}

/// The history of messages delivered before they were ever queued (no rows to move): one row per
/// recipient, from the message itself.
pub(super) async fn history_of_direct(
    tx: &mut Transaction<'_, Sqlite>,
    done: &[(&QueuedMessage, &Report)],
) -> Result<(), sqlx::Error> {
    let now = crate::clock::unix_now() as i64;
    let rows: Vec<(&QueuedMessage, &Outcome)> = done
        .iter()
        .flat_map(|(m, r)| r.outcomes.iter().map(move |o| (*m, o)))
        .collect();
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        let mut q = QueryBuilder::<Sqlite>::new(
            "INSERT OR REPLACE INTO history (message_id, idx, reverse_path, forward_path, state, last_reply, finished_at) ",
        );
        q.push_values(chunk, |mut row, (m, o)| {
            let (state, reply) = history_state(&o.kind);
            let forward_path = m
                .recipients
                .iter()
                .find(|r| r.idx == o.idx)
                .map_or(o.to.clone(), |r| r.forward_path.clone());
            row.push_bind(m.id.to_string())
                .push_bind(o.idx)
                .push_bind(m.reverse_path.clone())
                .push_bind(forward_path)
                .push_bind(state)
                .push_bind(reply.clone())
                .push_bind(now);
        });
        q.build().execute(&mut **tx).await?;
    }
    Ok(())
}

/// A final outcome as the history has it: its state and last reply.
fn history_state(kind: &OutcomeKind) -> (&'static str, &String) {
    match kind {
        OutcomeKind::Delivered { reply } => ("delivered", reply),
        OutcomeKind::Failed { reply } | OutcomeKind::Deferred { reply, .. } => ("failed", reply),
    }
}

fn collect_spooled(rows: Vec<sqlx::sqlite::SqliteRow>, spooled: &mut Vec<QueueId>) {
    spooled.extend(
        rows.iter()
            .filter(|r| r.try_get::<Option<i64>, _>(1).ok().flatten().is_some())
            .filter_map(|r| QueueId::parse(&r.get::<String, _>(0))),
    );
}

/// Moves the message to the history if none of its recipients is still queued.
pub(super) async fn finish_if_done(
    tx: &mut Transaction<'_, Sqlite>,
    id: QueueId,
    spooled: &mut Vec<QueueId>,
) -> Result<(), sqlx::Error> {
    let id = id.to_string();
    let done: Option<i64> = sqlx::query_scalar(
        "SELECT 1 FROM messages WHERE id = ? AND NOT EXISTS \
         (SELECT 1 FROM recipients WHERE message_id = ? AND state = 'queued')",
    )
    .bind(&id)
    .bind(&id)
    .fetch_optional(&mut **tx)
    .await?;
    if done.is_none() {
        return Ok(());
    }
    sqlx::query(
        "INSERT OR REPLACE INTO history (message_id, idx, reverse_path, forward_path, state, last_reply, finished_at) \
         SELECT r.message_id, r.idx, m.reverse_path, r.forward_path, r.state, r.last_reply, ? \
         FROM recipients r JOIN messages m ON m.id = r.message_id WHERE r.message_id = ?",
    )
    .bind(crate::clock::unix_now() as i64)
    .bind(&id)
    .execute(&mut **tx)
    .await?;
    let rows = sqlx::query("DELETE FROM messages WHERE id = ? RETURNING id, spool_len")
        .bind(&id)
        .fetch_all(&mut **tx)
        .await?;
    collect_spooled(rows, spooled);
    Ok(())
}

/// A delivery that ended without a report: its queued recipients count an attempt and wait until `at`.
pub(super) async fn defer_all(
    tx: &mut Transaction<'_, Sqlite>,
    id: QueueId,
    transport: Transport,
    at: u64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE recipients SET attempts = attempts + 1, next_attempt = ?, \
         last_reply = '4.3.0 delivery attempt failed inside tern (see the log)' \
         WHERE message_id = ? AND transport = ? AND state = 'queued'",
    )
    .bind(at as i64)
    .bind(id.to_string())
    .bind(transport.as_str())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Forgets history older than `before` (Unix seconds).
pub(super) async fn prune_history(pool: &SqlitePool, before: u64) -> Result<u64, sqlx::Error> {
    let r = sqlx::query("DELETE FROM history WHERE finished_at < ?")
        .bind(before as i64)
        .execute(pool)
        .await?;
    Ok(r.rows_affected())
}

pub(super) async fn apply(
    tx: &mut Transaction<'_, Sqlite>,
    o: &Outcome,
) -> Result<(), sqlx::Error> {
    let id = o.id.to_string();
    let q = match &o.kind {
        OutcomeKind::Delivered { reply } => {
            sqlx::query("UPDATE recipients SET state = 'delivered', attempts = attempts + 1, last_reply = ? WHERE message_id = ? AND idx = ?")
                .bind(reply)
        }
        OutcomeKind::Deferred { reply, next_attempt, delay_notified } => sqlx::query(
            "UPDATE recipients SET attempts = attempts + 1, next_attempt = ?, last_reply = ?, \
             delay_notified = MAX(delay_notified, ?) WHERE message_id = ? AND idx = ?",
        )
        .bind(*next_attempt as i64)
        .bind(reply)
        .bind(*delay_notified),
        OutcomeKind::Failed { reply } => {
            sqlx::query("UPDATE recipients SET state = 'failed', attempts = attempts + 1, last_reply = ? WHERE message_id = ? AND idx = ?")
                .bind(reply)
        }
    };
    q.bind(&id).bind(o.idx).execute(&mut **tx).await?;
    Ok(())
}

/// Every message with queued recipients, with the earliest time one of them is due.
pub(super) async fn pending(pool: &SqlitePool) -> Result<Vec<(QueueId, u64)>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT r.message_id, MIN(r.next_attempt) FROM recipients r JOIN messages m ON m.id = r.message_id \
         WHERE r.state = 'queued' AND m.held = 0 GROUP BY r.message_id ORDER BY r.message_id",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .iter()
        .filter_map(|r| {
            Some((
                QueueId::parse(&r.get::<String, _>(0))?,
                r.get::<i64, _>(1).max(0) as u64,
            ))
        })
        .collect())
}

pub(super) async fn max_id(pool: &SqlitePool) -> Result<Option<QueueId>, sqlx::Error> {
    let id: Option<String> = sqlx::query_scalar("SELECT MAX(id) FROM messages")
        .fetch_one(pool)
        .await?;
    Ok(id.and_then(|s| QueueId::parse(&s)))
}

/// Octets of a message's body, without reading it.
pub(super) async fn body_size(pool: &SqlitePool, id: QueueId) -> Result<usize, sqlx::Error> {
    let row =
        sqlx::query("SELECT length(body) + COALESCE(spool_len, 0) FROM messages WHERE id = ?")
            .bind(id.to_string())
            .fetch_optional(pool)
            .await?;
    Ok(row
        .and_then(|r| r.try_get::<i64, _>(0).ok())
        .map_or(0, |n| n.max(0) as usize))
}

/// Loads a message with its recipients of these transports that are queued and due at `now`; `None` when
/// it has none, or when it is held and `held` is false.
pub(super) async fn load_due(
    pool: &SqlitePool,
    spool: &super::spool::Spool,
    id: QueueId,
    now: u64,
    transports: &[Transport],
    held: bool,
) -> Result<Option<QueuedMessage>, sqlx::Error> {
    let key = id.to_string();
    let recipients: Vec<QueuedRecipient> = sqlx::query(
        "SELECT idx, forward_path, mailbox, transport, notify, orcpt, attempts, delay_notified, folder FROM recipients \
         WHERE message_id = ? AND state = 'queued' AND next_attempt <= ? ORDER BY idx",
    )
    .bind(&key)
    .bind(now as i64)
    .fetch_all(pool)
    .await?
    .iter()
    .filter_map(|r| {
        let transport: String = r.get(3);
        let Some(transport) = Transport::parse(&transport) else {
            tracing::error!(queue_id = %id, transport = %transport, "queue: recipient with an unknown transport left alone");
            return None;
        };
        transports.contains(&transport).then(|| QueuedRecipient {
            idx: r.get(0),
            forward_path: r.get(1),
            mailbox: r.get(2),
            transport,
            notify: r.get(4),
            orcpt: r.get(5),
            attempts: r.get(6),
            delay_notified: r.get(7),
            folder: r.get(8),
        })
    })
    .collect();
    if recipients.is_empty() {
        return Ok(None);
    }
    let Some(row) = sqlx::query(
        "SELECT received_at, reverse_path, body_type, smtputf8, ret, envid, trace, body, checks, origin, dkim_domain, spool_offset, spool_len, spool_lines FROM messages WHERE id = ? AND (held = 0 OR ?)",
    )
    .bind(&key)
    .bind(held)
    .fetch_optional(pool)
    .await?
    else {
        return Ok(None);
    };
    let tail = open_tail(spool, id, &row, 11).await?;
    Ok(Some(QueuedMessage {
        id,
        received_at: row.get::<i64, _>(0).max(0) as u64,
        reverse_path: row.get(1),
        body_type: row.get(2),
        smtputf8: row.get(3),
        ret: row.get(4),
        envid: row.get(5),
        trace: row.get(6),
        body: super::body::Body {
            head: row.get(7),
            tail,
        },
        checks: row.get(8),
        origin: Origin::parse(&row.get::<String, _>(9)),
        dkim_domain: row.get(10),
        recipients,
    }))
}

/// The spool file a row names in its columns `at` (offset), `at + 1` (length), `at + 2` (lines), if any.
async fn open_tail(
    spool: &super::spool::Spool,
    id: QueueId,
    row: &sqlx::sqlite::SqliteRow,
    at: usize,
) -> Result<Option<std::sync::Arc<super::spool::Tail>>, sqlx::Error> {
    let (Some(offset), Some(len), Some(lines)) = (
        row.get::<Option<i64>, _>(at),
        row.get::<Option<i64>, _>(at + 1),
        row.get::<Option<i64>, _>(at + 2),
    ) else {
        return Ok(None);
    };
    let spool = spool.clone();
    let opened = tokio::task::spawn_blocking(move || {
        spool.open_tail(
            id,
            offset.max(0) as u64,
            len.max(0) as u64,
            lines.max(0) as u64,
        )
    })
    .await
    .map_err(|e| sqlx::Error::Io(std::io::Error::other(e)))?;
    Ok(Some(std::sync::Arc::new(opened.map_err(sqlx::Error::Io)?)))
}

/// A queued message's content (`tern queue show --body`), whatever its recipients' states.
pub(super) async fn content(
    pool: &SqlitePool,
    spool: &super::spool::Spool,
    id: QueueId,
) -> Result<Option<super::body::Body>, sqlx::Error> {
    let Some(row) =
        sqlx::query("SELECT body, spool_offset, spool_len, spool_lines FROM messages WHERE id = ?")
            .bind(id.to_string())
            .fetch_optional(pool)
            .await?
    else {
        return Ok(None);
    };
    Ok(Some(super::body::Body {
        head: row.get(0),
        tail: open_tail(spool, id, &row, 1).await?,
    }))
}

/// Every message in the queue with every recipient, oldest first, for `tern queue list`.
pub(super) async fn list(pool: &SqlitePool) -> Result<Vec<super::Listed>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT m.id, m.received_at, m.reverse_path, length(m.body) + COALESCE(m.spool_len, 0), r.forward_path, r.transport, r.state, r.attempts, \
         r.next_attempt, r.last_reply, m.held FROM messages m JOIN recipients r ON r.message_id = m.id ORDER BY m.id, r.idx",
    )
    .fetch_all(pool)
    .await?;
    let mut out: Vec<super::Listed> = Vec::new();
    for r in rows {
        let id: String = r.get(0);
        if out.last().is_none_or(|l| l.id != id) {
            out.push(super::Listed {
                id,
                received_at: r.get(1),
                reverse_path: r.get(2),
                size: r.get(3),
                held: r.get::<i64, _>(10) != 0,
                recipients: Vec::new(),
            });
        }
        if let Some(last) = out.last_mut() {
            last.recipients.push(super::ListedRecipient {
                forward_path: r.get(4),
                transport: r.get(5),
                state: r.get(6),
                attempts: r.get(7),
                next_attempt: r.get(8),
                last_reply: r.get(9),
            });
        }
    }
    Ok(out)
}

/// Removes a message and its recipients, whatever their state (`tern queue delete`).
/// Returns whether it was there and whether it had a spool file.
pub(super) async fn delete_one(
    pool: &SqlitePool,
    id: QueueId,
) -> Result<Option<bool>, sqlx::Error> {
    let row = sqlx::query("DELETE FROM messages WHERE id = ? RETURNING spool_len")
        .bind(id.to_string())
        .fetch_optional(pool)
        .await?;
    Ok(row.map(|r| r.try_get::<Option<i64>, _>(0).ok().flatten().is_some()))
}

/// Holds or releases a message; returns whether it is in the queue.
pub(super) async fn set_held(
    pool: &SqlitePool,
    id: QueueId,
    held: bool,
) -> Result<bool, sqlx::Error> {
    let r = sqlx::query("UPDATE messages SET held = ? WHERE id = ?")
        .bind(i64::from(held))
        .bind(id.to_string())
        .execute(pool)
        .await?;
    Ok(r.rows_affected() > 0)
}

/// Every queue ID with a spool file (for the start's sweep of orphans).
pub(super) async fn spooled_ids(pool: &SqlitePool) -> Result<Vec<QueueId>, sqlx::Error> {
    let ids: Vec<String> =
        sqlx::query_scalar("SELECT id FROM messages WHERE spool_len IS NOT NULL")
            .fetch_all(pool)
            .await?;
    Ok(ids.iter().filter_map(|s| QueueId::parse(s)).collect())
}

/// Makes every queued recipient of a message (or of every message) due now.
pub(super) async fn make_due(
    pool: &SqlitePool,
    id: Option<QueueId>,
    now: u64,
) -> Result<(), sqlx::Error> {
    match id {
        Some(id) => {
            sqlx::query(
                "UPDATE recipients SET next_attempt = ? WHERE message_id = ? AND state = 'queued'",
            )
            .bind(now as i64)
            .bind(id.to_string())
            .execute(pool)
            .await?
        }
        None => sqlx::query(
            "UPDATE recipients SET next_attempt = ? WHERE state = 'queued' AND next_attempt > ?",
        )
        .bind(now as i64)
        .bind(now as i64)
        .execute(pool)
        .await?,
    };
    Ok(())
}
