//! The durable queue: every accepted message is committed to SQLite (data_dir/queue.db, WAL, synchronous=FULL)
//! before the 250 reply, and stays there until each recipient is delivered or has failed for good.
//!
//! One writer task owns all writes and commits them in groups (group commit): the messages and delivery
//! outcomes that arrive while one commit is on its way to disk go together in the next, so one fsync serves
//! many messages. A scheduler holds the times of deferred deliveries and re-loads those messages when due;
//! at start-up it picks up everything left in the queue.

mod id;
pub mod retry;
mod store;

pub use id::{IdGenerator, QueueId};

use crate::config::QueueSettings;
use sqlx::SqlitePool;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use thiserror::Error;
use tokio::sync::{mpsc, oneshot};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("src/queue/migrations");

/// Largest number of writes committed together.
const MAX_GROUP: usize = 512;

#[derive(Debug, Error, Clone)]
pub enum QueueError {
    #[error("queue database {path}: {reason}")]
    Open { path: String, reason: String },
    #[error("queue write failed: {0}")]
    Write(String),
    #[error("queue is shut down")]
    Closed,
}

/// A message as the queue holds it.
#[derive(Debug, Clone)]
pub struct QueuedMessage {
    pub id: QueueId,
    /// Unix seconds.
    pub received_at: u64,
    /// Empty for the null reverse-path.
    pub reverse_path: String,
    pub body_type: String,
    pub smtputf8: bool,
    pub ret: Option<String>,
    pub envid: Option<String>,
    /// Our Received: header up to (not including) the `for` clause and date.
    pub trace: String,
    /// The message as received, CRLF line endings.
    pub body: Vec<u8>,
    /// In a job: only the recipients to deliver now.
    pub recipients: Vec<QueuedRecipient>,
}

#[derive(Debug, Clone)]
pub struct QueuedRecipient {
    pub idx: u32,
    pub forward_path: String,
    pub mailbox: String,
    /// `local` (our mailboxes) or `remote` (the outbound MTA).
    pub transport: String,
    pub notify: Option<String>,
    pub orcpt: Option<String>,
    /// Attempts made before this one.
    pub attempts: u32,
}

/// Recipients of one message that are due for delivery now.
#[derive(Debug, Clone)]
pub struct Job {
    pub message: Arc<QueuedMessage>,
    /// The job holds every recipient the message has left (a fresh message): if all are delivered, the
    /// message can be deleted without looking at its rows.
    pub whole: bool,
    /// Loaded from disk (after a restart or a deferral): an earlier attempt may have delivered already, so
    /// delivery must check before writing again.
    pub from_disk: bool,
}

/// The outcomes of one job.
#[derive(Debug, Clone)]
pub struct Report {
    pub id: QueueId,
    /// From [`Job::whole`].
    pub whole: bool,
    pub outcomes: Vec<Outcome>,
}

impl Report {
    fn all_delivered(&self) -> bool {
        self.whole
            && self
                .outcomes
                .iter()
                .all(|o| matches!(o.kind, OutcomeKind::Delivered { .. }))
    }
}

/// What happened to one recipient.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub id: QueueId,
    pub idx: u32,
    pub kind: OutcomeKind,
}

#[derive(Debug, Clone)]
pub enum OutcomeKind {
    Delivered { reply: String },
    Deferred { reply: String, next_attempt: u64 },
    Failed { reply: String },
}

enum Write {
    Insert(Arc<QueuedMessage>, oneshot::Sender<Result<(), QueueError>>),
    Reports(Vec<Report>),
}

/// One message as `tern queue list` shows it.
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

/// A handle on the queue, cheap to clone.
#[derive(Clone)]
pub struct Queue {
    writes: mpsc::Sender<Write>,
    ids: Arc<IdGenerator>,
    inflight: Arc<Mutex<HashSet<QueueId>>>,
    settings: QueueSettings,
}

struct Shared {
    ready: mpsc::UnboundedSender<Job>,
    schedule: mpsc::UnboundedSender<(u64, QueueId)>,
    inflight: Arc<Mutex<HashSet<QueueId>>>,
}

pub fn database_path(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join("queue.db")
}

impl Queue {
    /// Opens the queue and starts its writer and scheduler. Jobs due for delivery arrive on the receiver,
    /// starting with everything a previous run left behind.
    pub async fn open(
        data_dir: &Path,
        settings: QueueSettings,
    ) -> Result<(Queue, mpsc::UnboundedReceiver<Job>), QueueError> {
        let path = database_path(data_dir);
        let open_err = |e: sqlx::Error| QueueError::Open {
            path: path.display().to_string(),
            reason: e.to_string(),
        };
        let pool = crate::db::open(&path, &MIGRATOR, 4)
            .await
            .map_err(open_err)?;
        let ids = Arc::new(IdGenerator::after(
            store::max_id(&pool).await.map_err(open_err)?,
        ));
        let pending = store::pending(&pool).await.map_err(open_err)?;

        let (ready_tx, ready_rx) = mpsc::unbounded_channel();
        let (sched_tx, sched_rx) = mpsc::unbounded_channel();
        let (write_tx, write_rx) = mpsc::channel(4096);
        let inflight = Arc::new(Mutex::new(HashSet::new()));
        if !pending.is_empty() {
            tracing::info!(
                messages = pending.len(),
                "queue: resuming deliveries left from the previous run"
            );
        }
        for p in pending {
            let _ = sched_tx.send((p.1, p.0));
        }
        let shared = Arc::new(Shared {
            ready: ready_tx,
            schedule: sched_tx,
            inflight: inflight.clone(),
        });
        tokio::spawn(writer(pool.clone(), write_rx, shared.clone()));
        tokio::spawn(scheduler(pool, sched_rx, shared));
        Ok((
            Queue {
                writes: write_tx,
                ids,
                inflight,
                settings,
            },
            ready_rx,
        ))
    }

    pub fn next_id(&self) -> QueueId {
        self.ids.next(crate::clock::unix_micros())
    }

    pub fn settings(&self) -> &QueueSettings {
        &self.settings
    }

    /// Messages being delivered right now.
    pub fn inflight(&self) -> usize {
        self.inflight.lock().map(|s| s.len()).unwrap_or(0)
    }

    /// Stores a message durably; when this returns Ok the message is on stable storage.
    pub async fn enqueue(&self, message: QueuedMessage) -> Result<(), QueueError> {
        let (tx, rx) = oneshot::channel();
        self.writes
            .send(Write::Insert(Arc::new(message), tx))
            .await
            .map_err(|_| QueueError::Closed)?;
        rx.await.map_err(|_| QueueError::Closed)?
    }

    /// Records delivery outcomes (committed with the next group).
    pub async fn record(&self, reports: Vec<Report>) {
        if self.writes.send(Write::Reports(reports)).await.is_err() {
            tracing::error!(
                "queue: writer is gone; outcomes will be retried from disk after restart"
            );
        }
    }
}

async fn writer(pool: SqlitePool, mut rx: mpsc::Receiver<Write>, shared: Arc<Shared>) {
    let mut batch = Vec::with_capacity(64);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(w) => batch.push(w),
                Err(_) => break,
            }
        }
        let result = commit(&pool, &batch)
            .await
            .map_err(|e| QueueError::Write(e.to_string()));
        if let Err(e) = &result {
            tracing::error!(error = %e, writes = batch.len(), "queue: group commit failed");
        }
        for w in batch.drain(..) {
            match w {
                Write::Insert(message, done) => {
                    if result.is_ok() {
                        dispatch_local(&shared, message);
                    }
                    let _ = done.send(result.clone());
                }
                Write::Reports(reports) => {
                    if let Ok(mut set) = shared.inflight.lock() {
                        for r in &reports {
                            set.remove(&r.id);
                        }
                    }
                    for o in reports.iter().flat_map(|r| &r.outcomes) {
                        if let OutcomeKind::Deferred { next_attempt, .. } = o.kind {
                            let _ = shared.schedule.send((next_attempt, o.id));
                        }
                    }
                    if result.is_err() {
                        // Not recorded: try these recipients again from disk shortly.
                        for r in &reports {
                            let _ = shared.schedule.send((crate::clock::unix_now() + 5, r.id));
                        }
                    }
                }
            }
        }
    }
}

/// Hands the local recipients of a freshly stored message to local delivery; remote ones wait for the
/// outbound MTA, queued and visible in `tern queue list`.
fn dispatch_local(shared: &Shared, message: Arc<QueuedMessage>) {
    let local = message
        .recipients
        .iter()
        .filter(|r| r.transport == "local")
        .count();
    if local == 0 {
        return;
    }
    let whole = local == message.recipients.len();
    let message = if whole {
        message
    } else {
        let mut only_local = (*message).clone();
        only_local.recipients.retain(|r| r.transport == "local");
        Arc::new(only_local)
    };
    if let Ok(mut set) = shared.inflight.lock() {
        set.insert(message.id);
    }
    let _ = shared.ready.send(Job {
        message,
        from_disk: false,
        whole,
    });
}

async fn commit(pool: &SqlitePool, batch: &[Write]) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    let mut inserts: Vec<&QueuedMessage> = Vec::new();
    let mut reports: Vec<&Report> = Vec::new();
    for w in batch {
        match w {
            Write::Insert(m, _) => inserts.push(m),
            Write::Reports(r) => reports.extend(r.iter()),
        }
    }
    store::insert(&mut tx, &inserts).await?;
    // The common case, every recipient of a fresh message delivered, is one DELETE for the whole group.
    let mut finished = Vec::new();
    for report in reports {
        if report.all_delivered() {
            finished.push(report.id);
            continue;
        }
        for o in &report.outcomes {
            store::apply(&mut tx, o).await?;
        }
        store::delete_if_done(&mut tx, report.id).await?;
    }
    store::delete(&mut tx, &finished).await?;
    tx.commit().await
}

/// Holds deferred deliveries until they are due, then loads them from disk and hands them out.
async fn scheduler(
    pool: SqlitePool,
    mut rx: mpsc::UnboundedReceiver<(u64, QueueId)>,
    shared: Arc<Shared>,
) {
    let mut heap: BinaryHeap<Reverse<(u64, QueueId)>> = BinaryHeap::new();
    loop {
        let now = crate::clock::unix_now();
        while let Some(Reverse((due, id))) = heap.peek().copied() {
            if due > now {
                break;
            }
            heap.pop();
            let busy = shared
                .inflight
                .lock()
                .map(|s| s.contains(&id))
                .unwrap_or(true);
            if busy {
                // Another attempt for this message is under way; look again once it has reported.
                heap.push(Reverse((now + 1, id)));
                break;
            }
            match store::load_due(&pool, id, now).await {
                Ok(Some(message)) if !message.recipients.is_empty() => {
                    if let Ok(mut set) = shared.inflight.lock() {
                        set.insert(id);
                    }
                    let _ = shared.ready.send(Job {
                        message: Arc::new(message),
                        from_disk: true,
                        whole: false,
                    });
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(queue_id = %id, error = %e, "queue: cannot load message, will try again");
                    heap.push(Reverse((now + 30, id)));
                }
            }
        }
        let wait = heap
            .peek()
            .map(|Reverse((due, _))| Duration::from_secs(due.saturating_sub(now).max(1)));
        tokio::select! {
            item = rx.recv() => match item {
                Some((due, id)) => heap.push(Reverse((due, id))),
                None => return,
            },
            _ = tokio::time::sleep(wait.unwrap_or(Duration::from_secs(3600))), if wait.is_some() => {}
        }
    }
}
