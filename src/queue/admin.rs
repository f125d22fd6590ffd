//! Administration of the queue: what `tern queue` and the metrics see and do (list, flush, delete, bounce),
//! and the DSNs that bounces and failures send.

use super::{
    MIGRATOR, Queue, QueueError, QueueId, QueuedMessage, Transport, Wake, database_path, store,
};
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

    /// When the oldest message in the queue arrived (Unix seconds), for the metrics.
    pub async fn oldest_received(&self) -> Result<Option<u64>, QueueError> {
        let t: Option<i64> = sqlx::query_scalar("SELECT MIN(received_at) FROM messages")
            .fetch_one(&self.pool)
            .await
            .map_err(|e| QueueError::Write(e.to_string()))?;
        Ok(t.map(|t| t.max(0) as u64))
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

    /// `tern queue hold ID`: no delivery is started for the message until it is released (one handed out
    /// but not begun is set aside; one already talking to a server finishes); its lifetime still counts
    /// from its arrival.
    pub async fn hold(&self, id: QueueId) -> Result<(), QueueError> {
        match store::set_held(&self.pool, id, true).await {
            Ok(true) => {
                self.mark_held(id, true);
                self.note(id, "held by the administrator (tern queue hold)")
                    .await;
                Ok(())
            }
            Ok(false) => Err(QueueError::NotFound(id.to_string())),
            Err(e) => Err(QueueError::Write(e.to_string())),
        }
    }

    /// `tern queue release ID`: a held message is delivered again, at once.
    pub async fn release(&self, id: QueueId) -> Result<(), QueueError> {
        match store::set_held(&self.pool, id, false).await {
            Ok(true) => {
                self.mark_held(id, false);
                self.note(id, "released by the administrator (tern queue release)")
                    .await;
                self.flush(Some(id)).await.map(|_| ())
            }
            Ok(false) => Err(QueueError::NotFound(id.to_string())),
            Err(e) => Err(QueueError::Write(e.to_string())),
        }
    }

    /// `tern queue delete ID`: the message is gone, with no report to anyone. Refused while a delivery of
    /// it is under way (its report would name a message that is no longer there): try again in a moment.
    pub async fn delete(&self, id: QueueId) -> Result<(), QueueError> {
        let _claims = self.claim_idle(id)?;
        match store::delete_one(&self.pool, id).await {
            Ok(Some(spooled)) => {
                self.note(
                    id,
                    "deleted by the administrator (tern queue delete); nobody was told",
                )
                .await;
                if spooled {
                    let spool = self.spool.clone();
                    let _ = tokio::task::spawn_blocking(move || spool.remove(&[id])).await;
                }
                Ok(())
            }
            Ok(None) => Err(QueueError::NotFound(id.to_string())),
            Err(e) => Err(QueueError::Write(e.to_string())),
        }
    }

    /// An admin action in the message's trace; a failure to record it is logged, never the action's.
    async fn note(&self, id: QueueId, detail: &str) {
        if let Err(e) = super::events::note(&self.pool, id, "admin", detail).await {
            tracing::warn!(queue_id = %id, error = %e, "cannot record the admin action for tern trace");
        }
    }

    /// `tern queue bounce ID`: the message with every recipient still queued, for the DSN that fails them.
    pub async fn load_all(&self, id: QueueId) -> Result<QueuedMessage, QueueError> {
        let far_future = u64::MAX / 2;
        store::load_due(
            &self.pool,
            &self.spool,
            id,
            far_future,
            &[Transport::Local, Transport::Remote],
            true,
        )
        .await
        .map_err(|e| QueueError::Write(e.to_string()))?
        .ok_or_else(|| QueueError::NotFound(id.to_string()))
    }
}

/// Every message in the queue with every recipient, oldest first, for `tern queue list` and `show`.
#[derive(Debug, Clone)]
pub struct Listed {
    pub id: String,
    pub received_at: i64,
    pub reverse_path: String,
    pub size: i64,
    /// Held by `tern queue hold`: not delivered until released.
    pub held: bool,
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

/// A queued message's content as received (its header section as intake left it), read from `data_dir`
/// while the daemon runs, too.
pub async fn content(data_dir: &Path, id: QueueId) -> Result<super::Body, QueueError> {
    let path = database_path(data_dir);
    let err = |e: sqlx::Error| QueueError::Open {
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    let pool = crate::db::open(&path, &MIGRATOR, 1).await.map_err(err)?;
    let spool = super::spool::Spool::open(data_dir).map_err(|e| err(sqlx::Error::Io(e)))?;
    store::content(&pool, &spool, id)
        .await
        .map_err(err)?
        .ok_or_else(|| QueueError::NotFound(id.to_string()))
}

/// `tern trace KEY`: the events of a queue ID, or of every message with that Message-ID, read from
/// `data_dir` (while the daemon runs, too).
pub async fn trace(data_dir: &Path, key: &str) -> Result<Vec<super::events::Event>, QueueError> {
    let path = database_path(data_dir);
    let err = |e: sqlx::Error| QueueError::Open {
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    let pool = crate::db::open(&path, &MIGRATOR, 1).await.map_err(err)?;
    super::events::trace(&pool, key).await.map_err(err)
}
