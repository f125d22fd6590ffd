//! Administration of the queue: what `tern queue` and the metrics see and do (list, flush, delete, bounce),
//! and the DSNs that bounces and failures send.

use super::{
    MIGRATOR, Outcome, OutcomeKind, Queue, QueueError, QueueId, QueuedMessage, QueuedRecipient,
    Report, Transport, Wake, database_path, dsn, store,
};
use crate::smtp::Mailbox;
use std::path::Path;

impl Queue {
    /// Recipients in the queue by (transport, state), for the metrics.
    pub async fn counts(&self) -> Result<Vec<((String, String), u64)>, QueueError> {
        let rows: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT transport, state, COUNT(*) FROM recipients GROUP BY transport, state",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(|e| QueueError::Write(e.to_string()))?;
        Ok(rows
            .into_iter()
            .map(|(t, s, n)| ((t, s), n.max(0) as u64))
            .collect())
    }

    /// `tern queue flush [ID]`: every queued recipient (of one message, or all) is due now.
    pub async fn flush(&self, id: Option<QueueId>) -> Result<usize, QueueError> {
        let now = crate::clock::unix_now();
        store::make_due(&self.pool, id, now)
            .await
            .map_err(|e| QueueError::Write(e.to_string()))?;
        let pending = store::pending(&self.pool)
            .await
            .map_err(|e| QueueError::Write(e.to_string()))?;
        let mut n = 0;
        for (qid, _) in pending
            .into_iter()
            .filter(|(q, _)| id.is_none_or(|i| i == *q))
        {
            let _ = self.wake.send(Wake::At(now, qid));
            n += 1;
        }
        Ok(n)
    }

    /// `tern queue delete ID`: the message is gone, with no report to anyone.
    pub async fn delete(&self, id: QueueId) -> Result<(), QueueError> {
        match store::delete_one(&self.pool, id).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(QueueError::NotFound(id.to_string())),
            Err(e) => Err(QueueError::Write(e.to_string())),
        }
    }

    /// `tern queue bounce ID`: every recipient still queued fails now, and the sender gets a DSN.
    pub async fn bounce(&self, id: QueueId) -> Result<usize, QueueError> {
        let far_future = u64::MAX / 2;
        let message = store::load_due(&self.pool, id, far_future)
            .await
            .map_err(|e| QueueError::Write(e.to_string()))?
            .ok_or_else(|| QueueError::NotFound(id.to_string()))?;
        let reply = "5.0.0 returned to sender by the administrator".to_string();
        let failed: Vec<(&QueuedRecipient, String, Option<String>)> = message
            .recipients
            .iter()
            .map(|r| (r, reply.clone(), None))
            .collect();
        self.notify(&message, dsn::DsnKind::Failure, &failed)
            .await?;
        let n = message.recipients.len();
        let outcomes = message
            .recipients
            .iter()
            .map(|r| Outcome {
                id,
                idx: r.idx,
                kind: OutcomeKind::Failed {
                    reply: reply.clone(),
                },
            })
            .collect();
        self.record(vec![Report {
            id,
            transport: Transport::Local,
            whole: false,
            outcomes,
        }])
        .await;
        Ok(n)
    }

    /// Sends the sender of `original` a DSN about these recipients (reply text and remote MTA for each), unless
    /// the sender is the null reverse-path or their NOTIFY asks for none. Stored before it returns.
    pub async fn notify(
        &self,
        original: &QueuedMessage,
        kind: dsn::DsnKind,
        recipients: &[(&QueuedRecipient, String, Option<String>)],
    ) -> Result<(), QueueError> {
        // RFC 5321 6.1 and RFC 3464: never a DSN about a message with the null reverse-path (a bounce).
        if original.reverse_path.is_empty() {
            return Ok(());
        }
        let permanent = kind == dsn::DsnKind::Failure;
        let lines: Vec<dsn::DsnRecipient> = recipients
            .iter()
            .filter(|(r, _, _)| dsn::wanted(r.notify.as_deref(), kind))
            .map(|(r, reply, mta)| dsn::DsnRecipient {
                forward_path: r.forward_path.clone(),
                orcpt: r.orcpt.clone(),
                status: dsn::status_of(reply, permanent),
                diagnostic: reply.clone(),
                remote_mta: mta.clone(),
            })
            .collect();
        if lines.is_empty() {
            return Ok(());
        }
        let Ok(to) = Mailbox::parse(&original.reverse_path, true) else {
            tracing::warn!(queue_id = %original.id, sender = %original.reverse_path, "no DSN: sender is not an address");
            return Ok(());
        };
        let id = self.next_id();
        let s = &self.dsn;
        let message_id = format!("<{id}.dsn@{}>", s.hostname);
        let body = dsn::build(
            kind,
            original,
            &lines,
            &s.hostname,
            crate::clock::unix_now(),
            &message_id,
        );
        let transport = if s.local_domains.contains(to.domain()) {
            Transport::Local
        } else {
            Transport::Remote
        };
        let dsn_message = QueuedMessage {
            id,
            received_at: id.unix_secs(),
            reverse_path: String::new(),
            body_type: "8BITMIME".into(),
            smtputf8: !to.is_ascii(),
            ret: None,
            envid: None,
            trace: format!("Received: by {} (tern) id {id}", s.hostname),
            body,
            checks: String::new(),
            recipients: vec![QueuedRecipient {
                idx: 0,
                forward_path: to.to_string(),
                mailbox: to.to_string(),
                transport: transport.as_str().into(),
                notify: Some("NEVER".into()),
                orcpt: None,
                attempts: 0,
                delay_notified: false,
                folder: String::new(),
            }],
        };
        self.enqueue(dsn_message).await?;
        tracing::info!(queue_id = %original.id, dsn_queue_id = %id, to = %to, kind = ?kind, recipients = lines.len(), "dsn queued");
        Ok(())
    }
}

/// Every message in the queue with every recipient, oldest first, for `tern queue list` and `show`.
#[derive(Debug, Clone)]
pub struct Listed {
    pub id: String,
    pub received_at: i64,
    pub reverse_path: String,
    pub size: i64,
    pub recipients: Vec<ListedRecipient>,
}

#[derive(Debug, Clone)]
pub struct ListedRecipient {
    pub forward_path: String,
    pub transport: String,
    pub state: String,
    pub attempts: i64,
    pub next_attempt: i64,
    pub last_reply: Option<String>,
}

/// Reads the queue of `data_dir` (while the daemon runs, too).
pub async fn list(data_dir: &Path) -> Result<Vec<Listed>, QueueError> {
    let path = database_path(data_dir);
    let err = |e: sqlx::Error| QueueError::Open {
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    let pool = crate::db::open(&path, &MIGRATOR, 1).await.map_err(err)?;
    store::list(&pool).await.map_err(err)
}
