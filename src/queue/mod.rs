//! The durable queue: every accepted message is committed to SQLite (data_dir/queue.db, WAL, synchronous=FULL)
//! before the 250 reply, and stays there until each recipient is delivered or has failed for good.
//!
//! One writer task owns all writes and commits them in groups (group commit): the messages and delivery
//! outcomes that arrive while one commit is on its way to disk go together in the next, so one fsync serves
//! many messages. A scheduler holds the times of deferred deliveries and re-loads those messages when due;
//! at start-up it picks up everything left in the queue. Recipients take one of two transports: `local`
//! (our mailboxes, `local/`) or `remote` (the outbound MTA, `outbound/`); each gets its own job stream.
//! Failed recipients are reported to the sender with a DSN (`dsn.rs`), queued like any other message.

mod admin;
mod conclude;
pub mod dsn;
mod id;
pub mod retry;
mod store;

pub use admin::{Listed, ListedRecipient, list};
pub use conclude::Attempt;
pub use id::{IdGenerator, QueueId};

use crate::config::QueueSettings;
use crate::smtp::Domain;
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
    #[error("no message {0} in the queue")]
    NotFound(String),
    #[error("queue is shut down")]
    Closed,
}

/// Which delivery path a recipient takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Local,
    Remote,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Local => "local",
            Transport::Remote => "remote",
        }
    }

    fn of(s: &str) -> Transport {
        if s == "remote" {
            Transport::Remote
        } else {
            Transport::Local
        }
    }
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
    /// The inbound checks' verdict (`spf=pass dkim=pass ...`), empty when none ran.
    pub checks: String,
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
    /// A delay DSN was already sent for this recipient.
    pub delay_notified: bool,
    /// Mailbox folder for a local copy: empty for the inbox, `Junk` for quarantine.
    pub folder: String,
}

/// Recipients of one message, all of one transport, that are due for delivery now.
#[derive(Debug, Clone)]
pub struct Job {
    pub message: Arc<QueuedMessage>,
    pub transport: Transport,
    /// Loaded from disk (after a restart or a deferral): an earlier attempt may have delivered already, so
    /// delivery must check before writing again.
    pub from_disk: bool,
    /// The job holds every recipient the message has left (a fresh message): if all are delivered, the
    /// message can be deleted without looking at its rows.
    pub whole: bool,
}

/// The outcomes of one job.
#[derive(Debug, Clone)]
pub struct Report {
    pub id: QueueId,
    pub transport: Transport,
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
    Delivered {
        reply: String,
    },
    Deferred {
        reply: String,
        next_attempt: u64,
        delay_notified: bool,
    },
    Failed {
        reply: String,
    },
}

/// What DSNs need to know about this server.
#[derive(Debug, Clone)]
pub struct DsnSettings {
    pub hostname: String,
    pub local_domains: Vec<Domain>,
    /// Send one delay DSN once a recipient has waited this long.
    pub delay_warning: Duration,
}

enum Write {
    Insert(Arc<QueuedMessage>, oneshot::Sender<Result<(), QueueError>>),
    Reports(Vec<Report>),
}

enum Wake {
    At(u64, QueueId),
}

/// Free space on the queue's file system, looked at no more than once a second.
struct Room {
    path: std::path::PathBuf,
    checked_at: std::sync::atomic::AtomicU64,
    enough: std::sync::atomic::AtomicBool,
}

/// Octets available to unprivileged users on the file system holding `path`.
fn free_space(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a writable statvfs.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    (rc == 0).then(|| st.f_bavail as u64 * st.f_frsize as u64)
}

/// A handle on the queue, cheap to clone.
#[derive(Clone)]
pub struct Queue {
    room: Arc<Room>,
    writes: mpsc::Sender<Write>,
    wake: mpsc::UnboundedSender<Wake>,
    ids: Arc<IdGenerator>,
    inflight: Arc<Mutex<HashSet<(QueueId, Transport)>>>,
    settings: QueueSettings,
    dsn: Arc<DsnSettings>,
    pool: SqlitePool,
}

/// The job streams, one per transport.
pub struct Jobs {
    pub local: mpsc::UnboundedReceiver<Job>,
    pub remote: mpsc::UnboundedReceiver<Job>,
}

struct Shared {
    local: mpsc::UnboundedSender<Job>,
    remote: mpsc::UnboundedSender<Job>,
    wake: mpsc::UnboundedSender<Wake>,
    inflight: Arc<Mutex<HashSet<(QueueId, Transport)>>>,
}

impl Shared {
    /// Hands the recipients of `message` to their transports, one job each; `fresh` for a message just stored.
    fn dispatch(&self, message: Arc<QueuedMessage>, from_disk: bool) {
        let total = message.recipients.len();
        for transport in [Transport::Local, Transport::Remote] {
            let n = message
                .recipients
                .iter()
                .filter(|r| Transport::of(&r.transport) == transport)
                .count();
            if n == 0 {
                continue;
            }
            let whole = !from_disk && n == total;
            let job_message = if n == total {
                message.clone()
            } else {
                let mut only = (*message).clone();
                only.recipients
                    .retain(|r| Transport::of(&r.transport) == transport);
                Arc::new(only)
            };
            if let Ok(mut set) = self.inflight.lock() {
                set.insert((message.id, transport));
            }
            let tx = match transport {
                Transport::Local => &self.local,
                Transport::Remote => &self.remote,
            };
            let _ = tx.send(Job {
                message: job_message,
                transport,
                from_disk,
                whole,
            });
        }
    }
}

pub fn database_path(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join("queue.db")
}

impl Queue {
    /// Opens the queue and starts its writer and scheduler. Jobs due for delivery arrive on the receivers,
    /// starting with everything a previous run left behind.
    pub async fn open(
        data_dir: &Path,
        settings: QueueSettings,
        dsn: DsnSettings,
    ) -> Result<(Queue, Jobs), QueueError> {
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

        let (local_tx, local_rx) = mpsc::unbounded_channel();
        let (remote_tx, remote_rx) = mpsc::unbounded_channel();
        let (wake_tx, wake_rx) = mpsc::unbounded_channel();
        let (write_tx, write_rx) = mpsc::channel(4096);
        let inflight = Arc::new(Mutex::new(HashSet::new()));
        if !pending.is_empty() {
            tracing::info!(
                messages = pending.len(),
                "queue: resuming deliveries left from the previous run"
            );
        }
        for (id, due) in pending {
            let _ = wake_tx.send(Wake::At(due, id));
        }
        let shared = Arc::new(Shared {
            local: local_tx,
            remote: remote_tx,
            wake: wake_tx.clone(),
            inflight: inflight.clone(),
        });
        tokio::spawn(writer(pool.clone(), write_rx, shared.clone()));
        tokio::spawn(scheduler(pool.clone(), wake_rx, shared));
        let room = Arc::new(Room {
            path: data_dir.to_path_buf(),
            checked_at: std::sync::atomic::AtomicU64::new(0),
            enough: std::sync::atomic::AtomicBool::new(true),
        });
        let queue = Queue {
            room,
            writes: write_tx,
            wake: wake_tx,
            ids,
            inflight,
            settings,
            dsn: Arc::new(dsn),
            pool,
        };
        Ok((
            queue,
            Jobs {
                local: local_rx,
                remote: remote_rx,
            },
        ))
    }

    /// Whether the file system has more than `[queue] min_free` octets free (checked at most once a second).
    pub fn has_room(&self) -> bool {
        use std::sync::atomic::Ordering;
        let now = crate::clock::unix_now();
        if self.room.checked_at.swap(now, Ordering::Relaxed) != now {
            let enough =
                free_space(&self.room.path).is_none_or(|free| free >= self.settings.min_free);
            if !enough && self.room.enough.load(Ordering::Relaxed) {
                tracing::error!(path = %self.room.path.display(), min_free = self.settings.min_free, "disk almost full: refusing new mail with 452 4.3.1");
            }
            self.room.enough.store(enough, Ordering::Relaxed);
        }
        self.room.enough.load(Ordering::Relaxed)
    }

    pub fn next_id(&self) -> QueueId {
        self.ids.next(crate::clock::unix_micros())
    }

    pub fn settings(&self) -> &QueueSettings {
        &self.settings
    }

    pub fn dsn_settings(&self) -> &DsnSettings {
        &self.dsn
    }

    /// Deliveries under way right now.
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
                        shared.dispatch(message, false);
                    }
                    let _ = done.send(result.clone());
                }
                Write::Reports(reports) => {
                    if let Ok(mut set) = shared.inflight.lock() {
                        for r in &reports {
                            set.remove(&(r.id, r.transport));
                        }
                    }
                    for o in reports.iter().flat_map(|r| &r.outcomes) {
                        if let OutcomeKind::Deferred { next_attempt, .. } = o.kind {
                            let _ = shared.wake.send(Wake::At(next_attempt, o.id));
                        }
                    }
                    if result.is_err() {
                        // Not recorded: try these recipients again from disk shortly.
                        for r in &reports {
                            let _ = shared
                                .wake
                                .send(Wake::At(crate::clock::unix_now() + 5, r.id));
                        }
                    }
                }
            }
        }
    }
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
async fn scheduler(pool: SqlitePool, mut rx: mpsc::UnboundedReceiver<Wake>, shared: Arc<Shared>) {
    let mut heap: BinaryHeap<Reverse<(u64, QueueId)>> = BinaryHeap::new();
    loop {
        let now = crate::clock::unix_now();
        let mut later = Vec::new();
        while let Some(Reverse((due, id))) = heap.peek().copied() {
            if due > now {
                break;
            }
            heap.pop();
            match store::load_due(&pool, id, now).await {
                Ok(Some(mut message)) => {
                    // A transport with an attempt under way is looked at again once that attempt reports.
                    let busy: Vec<Transport> = shared
                        .inflight
                        .lock()
                        .map(|s| {
                            [Transport::Local, Transport::Remote]
                                .into_iter()
                                .filter(|t| s.contains(&(id, *t)))
                                .collect()
                        })
                        .unwrap_or_default();
                    let before = message.recipients.len();
                    message
                        .recipients
                        .retain(|r| !busy.contains(&Transport::of(&r.transport)));
                    if message.recipients.len() < before {
                        later.push(Reverse((now + 1, id)));
                    }
                    if !message.recipients.is_empty() {
                        shared.dispatch(Arc::new(message), true);
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(queue_id = %id, error = %e, "queue: cannot load message, will try again");
                    later.push(Reverse((now + 30, id)));
                }
            }
        }
        heap.extend(later);
        let wait = heap
            .peek()
            .map(|Reverse((due, _))| Duration::from_secs(due.saturating_sub(now).max(1)));
        tokio::select! {
            item = rx.recv() => match item {
                Some(Wake::At(due, id)) => heap.push(Reverse((due, id))),
                None => return,
            },
            _ = tokio::time::sleep(wait.unwrap_or(Duration::from_secs(3600))), if wait.is_some() => {}
        }
    }
}
