//! The message history `tern trace` reads: one row per thing that happened to a message (received,
//! each delivery attempt, a DSN sent, an admin action), written by the queue writer in the transaction
//! that makes it true, so a trace never shows what did not happen. Bounded: pruned with the finished
//! history after `[queue] history_secs`, and never more than [`MAX_ROWS`] rows.

use super::{QueueId, QueuedMessage, Report};
use sqlx::{QueryBuilder, Row, Sqlite, SqlitePool, Transaction};

/// Rows kept at most (a few hundred bytes each): the oldest go first.
pub const MAX_ROWS: i64 = 1_000_000;
const ROWS_PER_STATEMENT: usize = 500;

/// One event, as `tern trace` prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub message_id: String,
    pub at: i64,
    pub kind: String,
    pub detail: String,
}

struct New {
    id: String,
    kind: &'static str,
    detail: String,
    header_id: Option<String>,
}

/// The Message-ID header of a message's header section, without angle brackets.
fn header_id(head: &[u8]) -> Option<String> {
    crate::message::fields(head)
        .find(|(name, _)| name.eq_ignore_ascii_case(b"Message-ID"))
        .and_then(|(_, field)| {
            let value = &field[field.iter().position(|&b| b == b':')? + 1..];
            let v = String::from_utf8_lossy(crate::message::trim(value)).to_string();
            let v = v
                .trim_start_matches('<')
                .trim_end_matches('>')
                .trim()
                .to_string();
            (!v.is_empty() && v.len() <= 998).then_some(v)
        })
}

/// The client part of our Received: line ("from helo (name [ip]) by ..."), for the received event.
fn client_of(trace: &str) -> String {
    let t = trace
        .trim_start_matches("Received:")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    if t.starts_with("by ") {
        // Made here (a DSN, a local submission): no client.
        return String::new();
    }
    let end = t.find(" by ").unwrap_or(t.len());
    t[..end].to_string()
}

fn received(m: &QueuedMessage) -> New {
    let to: Vec<&str> = m
        .recipients
        .iter()
        .map(|r| r.forward_path.as_str())
        .collect();
    let mut detail = format!(
        "from=<{}> to={} size={} origin={}",
        m.reverse_path,
        to.iter()
            .map(|t| format!("<{t}>"))
            .collect::<Vec<_>>()
            .join(","),
        m.body.len(),
        m.origin.as_str()
    );
    let client = client_of(&m.trace);
    if !client.is_empty() {
        detail.push_str(&format!(" client=\"{}\"", crate::log::escape(&client)));
    }
    if !m.checks.is_empty() {
        detail.push_str(&format!(" checks=\"{}\"", crate::log::escape(&m.checks)));
    }
    New {
        id: m.id.to_string(),
        kind: "received",
        detail,
        header_id: header_id(&m.body.head),
    }
}

fn delivery(r: &Report) -> impl Iterator<Item = New> + '_ {
    r.outcomes.iter().map(move |o| {
        let (status, reply) = match &o.kind {
            super::OutcomeKind::Delivered { reply } => ("sent".to_string(), reply),
            super::OutcomeKind::Deferred {
                reply,
                next_attempt,
                ..
            } => (
                format!(
                    "deferred, next attempt {}",
                    crate::clock::rfc5322_date(*next_attempt)
                ),
                reply,
            ),
            super::OutcomeKind::Failed { reply } => ("bounced".to_string(), reply),
        };
        New {
            id: r.id.to_string(),
            kind: "delivery",
            detail: format!(
                "to=<{}> transport={} relay={} status={status} reply=\"{}\"",
                o.to,
                r.transport.as_str(),
                o.relay.as_deref().unwrap_or("none"),
                crate::log::escape(reply)
            ),
            header_id: None,
        }
    })
}

/// Records, in `tx`, the received event of each new message, the delivery event of each outcome, and the
/// DSNs each report sent.
pub(super) async fn record(
    tx: &mut Transaction<'_, Sqlite>,
    inserts: &[&QueuedMessage],
    reports: &[&Report],
) -> Result<(), sqlx::Error> {
    let mut rows: Vec<New> = inserts.iter().map(|m| received(m)).collect();
    for r in reports {
        rows.extend(delivery(r));
        rows.extend(r.dsn_notes.iter().map(|n| New {
            id: r.id.to_string(),
            kind: "dsn",
            detail: n.clone(),
            header_id: None,
        }));
    }
    let now = crate::clock::unix_now() as i64;
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        let mut q = QueryBuilder::<Sqlite>::new(
            "INSERT INTO events (message_id, at, kind, detail, header_id) ",
        );
        q.push_values(chunk, |mut row, e| {
            row.push_bind(e.id.clone())
                .push_bind(now)
                .push_bind(e.kind)
                .push_bind(e.detail.clone())
                .push_bind(e.header_id.clone());
        });
        q.build().execute(&mut **tx).await?;
    }
    Ok(())
}

/// One event outside the writer (an admin action).
pub(super) async fn note(
    pool: &SqlitePool,
    id: QueueId,
    kind: &str,
    detail: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO events (message_id, at, kind, detail) VALUES (?, ?, ?, ?)")
        .bind(id.to_string())
        .bind(crate::clock::unix_now() as i64)
        .bind(kind)
        .bind(detail)
        .execute(pool)
        .await?;
    Ok(())
}

/// Drops events older than `before` and, past [`MAX_ROWS`], the oldest ones.
pub(super) async fn prune(pool: &SqlitePool, before: u64) -> Result<u64, sqlx::Error> {
    let old = sqlx::query("DELETE FROM events WHERE at < ?")
        .bind(before as i64)
        .execute(pool)
        .await?
        .rows_affected();
    let over = sqlx::query("DELETE FROM events WHERE rowid <= (SELECT MAX(rowid) FROM events) - ?")
        .bind(MAX_ROWS)
        .execute(pool)
        .await?
        .rows_affected();
    Ok(old + over)
}

/// The events of a queue ID, or of every message with this Message-ID (`<>` optional), oldest first.
pub(super) async fn trace(pool: &SqlitePool, key: &str) -> Result<Vec<Event>, sqlx::Error> {
    let upper = key.trim().to_ascii_uppercase();
    let ids: Vec<String> = if QueueId::parse(&upper).is_some() {
        vec![upper]
    } else {
        let header = key.trim().trim_start_matches('<').trim_end_matches('>');
        sqlx::query_scalar("SELECT DISTINCT message_id FROM events WHERE header_id = ?")
            .bind(header)
            .fetch_all(pool)
            .await?
    };
    let mut out = Vec::new();
    for id in ids {
        let rows = sqlx::query(
            "SELECT message_id, at, kind, detail FROM events WHERE message_id = ? ORDER BY rowid",
        )
        .bind(&id)
        .fetch_all(pool)
        .await?;
        out.extend(rows.iter().map(|r| Event {
            message_id: r.get(0),
            at: r.get(1),
            kind: r.get(2),
            detail: r.get(3),
        }));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn message_id_and_client_are_read_off_the_message() {
        assert_eq!(
            super::header_id(b"Subject: x\r\nMessage-ID:\r\n <abc@example.test>\r\n\r\nbody"),
            Some("abc@example.test".into())
        );
        assert_eq!(
            super::header_id(b"Subject: x\r\n\r\nMessage-ID: <no@x>\r\n"),
            None
        );
        assert_eq!(
            super::client_of(
                "Received: from mail.sender.test (unknown [127.0.0.5])\r\n\tby mx.example.test with ESMTP id 1"
            ),
            "from mail.sender.test (unknown [127.0.0.5])"
        );
        assert_eq!(
            super::client_of("Received: by mx.example.test (tern) id 1"),
            ""
        );
    }
}
