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
pub mod body;
pub mod claims;
pub mod dsn;
pub mod events;
mod id;
pub mod retry;
mod scheduler;
pub mod select;
pub mod spool;
mod store;
mod writer;

pub use admin::{Listed, ListedRecipient, content, list, trace};
pub use body::Body;
pub use id::{IdGenerator, QueueId};

use crate::config::QueueSettings;
use crate::smtp::Domain;
use sqlx::SqlitePool;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;
use tokio::sync::{mpsc, oneshot};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("src/queue/migrations");

/// Largest number of writes committed together.
const MAX_GROUP: usize = 512;

/// How long a group of writes that nobody waits for (the history of messages delivered in the session,
/// delivery reports) may wait for more: under load one transaction then carries dozens of them instead of
/// a handful. A write that someone waits for (a message's 250, a barrier) is committed at once.
const LINGER: std::time::Duration = std::time::Duration::from_millis(5);

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
    #[error("message {0} is being delivered right now; try again in a moment")]
    Busy(String),
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

    /// The transport a stored row names; `None` for anything else (never guessed: a wrong guess would
    /// deliver remote mail into a local mailbox or the reverse).
    pub fn parse(s: &str) -> Option<Transport> {
        match s {
            "local" => Some(Transport::Local),
            "remote" => Some(Transport::Remote),
            _ => None,
        }
    }
}

/// Where a message came from: what its DSNs may carry and whether it may be DKIM-signed as ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// An unauthenticated client on the relay listener (another MTA, or a stranger).
    Outside,
    /// LMTP from another MTA.
    Lmtp,
    /// An authenticated user, or a client in `[submission] trusted_networks`.
    Submission,
    /// A local program through the sendmail socket.
    Local,
    /// Made by tern itself (a DSN).
    Generated,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Outside => "outside",
            Origin::Lmtp => "lmtp",
            Origin::Submission => "submission",
            Origin::Local => "local",
            Origin::Generated => "generated",
        }
    }

    /// Unknown values read as `Outside`, the origin that is trusted least.
    pub fn parse(s: &str) -> Origin {
        match s {
            "lmtp" => Origin::Lmtp,
            "submission" => Origin::Submission,
            "local" => Origin::Local,
            "generated" => Origin::Generated,
            _ => Origin::Outside,
        }
    }

    /// Whether a DSN may return the whole message (RET=FULL): only to senders we know. A bounce of mail from
    /// outside goes to a sender anyone can forge, so it carries the headers only (no backscatter payload).
    pub fn may_return_full(self) -> bool {
        matches!(self, Origin::Submission | Origin::Local)
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
    /// The message as received, CRLF line endings (its header section as intake left it).
    pub body: Body,
    /// The inbound checks' verdict (`spf=pass dkim=pass ...`), empty when none ran.
    pub checks: String,
    pub origin: Origin,
    /// The domain to DKIM-sign as, decided at intake from a From: that the sender policy checked; `None`
    /// for mail that must not carry our signature (relayed from outside through an alias, say).
    pub dkim_domain: Option<String>,
    /// In a job: only the recipients to deliver now.
    pub recipients: Vec<QueuedRecipient>,
}

#[derive(Debug, Clone)]
pub struct QueuedRecipient {
    pub idx: u32,
    pub forward_path: String,
    pub mailbox: String,
    pub transport: Transport,
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
    /// This job's hold on (message, transport): nobody else delivers these recipients until it reports. A
    /// job dropped without a report (a panic) gives the hold back and defers its recipients.
    pub claim: Arc<claims::Claim>,
    /// The job's share of `[queue] delivery_memory` and `delivery_jobs`, given back when the job (and
    /// every clone) is dropped.
    pub memory: Option<Arc<Hold>>,
}

/// Both claims of a message held by administration ([`Queue::claim_idle`]); given back on drop, after the
/// administrative work committed.
pub struct IdleClaims(Vec<Arc<claims::Claim>>);

impl Drop for IdleClaims {
    fn drop(&mut self) {
        self.0.iter().for_each(|c| c.give_back());
    }
}

/// What a message in delivery holds: its share of `[queue] delivery_memory` (in KiB) and one of
/// `[queue] delivery_jobs`.
#[derive(Debug)]
pub struct Hold {
    _memory: tokio::sync::OwnedSemaphorePermit,
    _job: tokio::sync::OwnedSemaphorePermit,
}

/// The outcomes of one job.
#[derive(Debug, Clone)]
pub struct Report {
    pub id: QueueId,
    pub transport: Transport,
    /// From [`Job::whole`].
    pub whole: bool,
    pub outcomes: Vec<Outcome>,
    /// Released once the outcomes are committed.
    pub claim: Option<Arc<claims::Claim>>,
    /// The DSNs this report sends, for `tern trace` ("failure DSN to <a@b> ... queued as ID").
    pub dsn_notes: Vec<String>,
}

impl Report {
    /// Every recipient of the message reached a final state in this report: the message can go.
    fn all_final(&self) -> bool {
        self.whole
            && self
                .outcomes
                .iter()
                .all(|o| !matches!(o.kind, OutcomeKind::Deferred { .. }))
    }
}

/// What happened to one recipient.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub id: QueueId,
    pub idx: u32,
    pub kind: OutcomeKind,
    /// The recipient's forward-path and the relay tried, for `tern trace`.
    pub to: String,
    pub relay: Option<String>,
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
    /// Outcomes, and the DSNs they cause, committed together: a bounce is never recorded without its DSN.
    Reports(Vec<Report>, Vec<Arc<QueuedMessage>>),
    /// A message delivered before it was ever queued (`local::Local::deliver_now`), with the report of
    /// that delivery and its DSNs. All final: only its history and events are written. Otherwise the
    /// message is inserted with the outcomes applied, so what is left is retried and bounced as any other.
    Direct(
        Arc<QueuedMessage>,
        Report,
        Vec<Arc<QueuedMessage>>,
        Option<oneshot::Sender<Result<(), QueueError>>>,
    ),
    /// A job that ended without a report (its task panicked): its recipients are deferred.
    Abandoned(QueueId, Transport),
    /// Answered once everything sent before it is committed.
    Barrier(oneshot::Sender<()>),
}

impl Write {
    /// Someone waits for this write's commit: its group goes without lingering.
    fn awaited(&self) -> bool {
        match self {
            Write::Insert(..) | Write::Barrier(_) => true,
            Write::Direct(_, _, _, done) => done.is_some(),
            Write::Reports(..) | Write::Abandoned(..) => false,
        }
    }
}

enum Wake {
    At(u64, QueueId),
    /// A claim on this message was released: a wake that found it busy can go on.
    Released(QueueId),
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
    claims: Arc<claims::Claims>,
    settings: QueueSettings,
    dsn: Arc<DsnSettings>,
    pool: SqlitePool,
    spool: spool::Spool,
    /// Messages held by `tern queue hold` since the start: a job handed out before the hold is set aside
    /// when its delivery would begin.
    held: Arc<std::sync::Mutex<HashSet<QueueId>>>,
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
    claims: Arc<claims::Claims>,
    /// `[queue] delivery_memory` in KiB permits: a job holds its body's share from the moment the body is
    /// in memory for it until it is dropped.
    memory: Arc<tokio::sync::Semaphore>,
    memory_kib: u32,
    /// `[queue] delivery_jobs`: one permit per message in delivery.
    jobs: Arc<tokio::sync::Semaphore>,
    spool: spool::Spool,
}

/// Every job counts at least this much (its envelope and bookkeeping), in KiB.
const MIN_JOB_KIB: u32 = 4;

impl Shared {
    /// The permits a body of `octets` takes (never more than the whole budget, so that a message larger
    /// than the budget still goes, alone).
    fn kib_for(&self, octets: usize) -> u32 {
        let kib = u32::try_from(octets.div_ceil(1024)).unwrap_or(u32::MAX);
        kib.max(MIN_JOB_KIB).min(self.memory_kib)
    }

    /// What a job for `message` can hold in memory: its header section, and of a spooled tail what the
    /// stages read of it at once (outbound maps it whole to sign and send it; local delivery streams it
    /// and Sieve reads at most its body limit).
    fn cost_of(&self, message: &QueuedMessage) -> u32 {
        let tail = message.body.tail.as_ref().map_or(0, |t| t.len as usize);
        let remote = message
            .recipients
            .iter()
            .any(|r| r.transport == Transport::Remote);
        let read = if remote {
            tail
        } else {
            tail.min(crate::sieve::message::BODY_LIMIT + body::CHUNK)
        };
        self.kib_for(message.body.in_memory() + read)
    }
}

impl Shared {
    /// Hands the recipients of `message` to their transports, one job each, with the claims already taken
    /// for them (`claimed`).
    fn dispatch(
        &self,
        message: Arc<QueuedMessage>,
        from_disk: bool,
        claimed: Vec<Arc<claims::Claim>>,
        memory: Option<Hold>,
    ) {
        let memory = memory.map(Arc::new);
        let total = message.recipients.len();
        for claim in claimed {
            let transport = claim.transport();
            let n = message
                .recipients
                .iter()
                .filter(|r| r.transport == transport)
                .count();
            if n == 0 {
                // Nothing due for this transport: the claim goes back unused.
                claim.release_unused();
                continue;
            }
            let whole = !from_disk && n == total;
            let job_message = if n == total {
                message.clone()
            } else {
                let mut only = (*message).clone();
                only.recipients.retain(|r| r.transport == transport);
                Arc::new(only)
            };
            let tx = match transport {
                Transport::Local => &self.local,
                Transport::Remote => &self.remote,
            };
            let _ = tx.send(Job {
                message: job_message,
                transport,
                from_disk,
                whole,
                claim,
                memory: memory.clone(),
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
        let spool_err = |e: std::io::Error| QueueError::Open {
            path: data_dir.join("spool").display().to_string(),
            reason: e.to_string(),
        };
        let spool = spool::Spool::open(data_dir).map_err(spool_err)?;
        let keep: HashSet<QueueId> = store::spooled_ids(&pool)
            .await
            .map_err(open_err)?
            .into_iter()
            .collect();
        let orphans = spool.sweep(|id| keep.contains(&id)).map_err(spool_err)?;
        // A row whose file is gone (removed by hand, a disk fault) cannot be delivered: say so now, by ID.
        for id in &keep {
            if !spool.path_of(*id).exists() {
                tracing::error!(queue_id = %id, path = %spool.path_of(*id).display(), "queue: the spool file of a queued message is missing; it cannot be delivered (tern queue delete removes it)");
            }
        }
        if orphans > 0 {
            tracing::info!(
                files = orphans,
                "queue: removed spool files no queued message names (left by a crash)"
            );
        }

        let (local_tx, local_rx) = mpsc::unbounded_channel();
        let (remote_tx, remote_rx) = mpsc::unbounded_channel();
        let (wake_tx, wake_rx) = mpsc::unbounded_channel();
        let (write_tx, write_rx) = mpsc::channel(4096);
        let claims = claims::Claims::new(wake_tx.clone(), write_tx.clone());
        if !pending.is_empty() {
            tracing::info!(
                messages = pending.len(),
                "queue: resuming deliveries left from the previous run"
            );
        }
        for (id, due) in pending {
            let _ = wake_tx.send(Wake::At(due, id));
        }
        let memory_kib = u32::try_from(settings.delivery_memory / 1024)
            .unwrap_or(u32::MAX)
            .clamp(MIN_JOB_KIB, tokio::sync::Semaphore::MAX_PERMITS as u32);
        let shared = Arc::new(Shared {
            local: local_tx,
            remote: remote_tx,
            wake: wake_tx.clone(),
            claims: claims.clone(),
            memory: Arc::new(tokio::sync::Semaphore::new(memory_kib as usize)),
            memory_kib,
            jobs: Arc::new(tokio::sync::Semaphore::new(
                settings
                    .delivery_jobs
                    .min(tokio::sync::Semaphore::MAX_PERMITS),
            )),
            spool: spool.clone(),
        });
        tokio::spawn(writer::writer(
            pool.clone(),
            write_rx,
            shared.clone(),
            settings.clone(),
        ));
        tokio::spawn(scheduler::scheduler(
            pool.clone(),
            wake_rx,
            shared,
            settings.clone(),
        ));
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
            claims,
            settings,
            dsn: Arc::new(dsn),
            pool,
            spool,
            held: Default::default(),
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

    /// Where large messages' content goes while it arrives and while it is queued.
    pub fn spool(&self) -> &spool::Spool {
        &self.spool
    }

    pub fn dsn_settings(&self) -> &DsnSettings {
        &self.dsn
    }

    /// Deliveries under way right now.
    pub fn inflight(&self) -> usize {
        self.claims.len()
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

    /// Waits until every write sent before this call is committed (or failed).
    pub async fn settle(&self) {
        let (tx, rx) = oneshot::channel();
        if self.writes.send(Write::Barrier(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Takes the claims on both transports of a message, for administration (bounce, delete), given back
    /// when the result drops; `Busy` while a delivery holds either.
    pub fn claim_idle(&self, id: QueueId) -> Result<IdleClaims, QueueError> {
        let claims: Vec<_> = [Transport::Local, Transport::Remote]
            .into_iter()
            .map(|t| self.try_claim(id, t))
            .collect();
        if claims.iter().any(Option::is_none) {
            claims.into_iter().flatten().for_each(|c| c.give_back());
            return Err(QueueError::Busy(id.to_string()));
        }
        Ok(IdleClaims(claims.into_iter().flatten().collect()))
    }

    /// Takes the claim on a message's recipients of one transport, for administration; `None` while a
    /// delivery holds it.
    pub fn try_claim(&self, id: QueueId, transport: Transport) -> Option<Arc<claims::Claim>> {
        self.claims.try_claim(id, transport)
    }

    /// Records a message that was delivered before it was queued, with its report and DSNs. When every
    /// recipient is final and there is no DSN, nothing about the message needs the queue: this returns
    /// once the write is handed to the writer (its history follows with the next group). Otherwise it
    /// returns once the message and its outcomes are committed, as [`Queue::enqueue`] does.
    pub async fn record_direct(
        &self,
        message: Arc<QueuedMessage>,
        report: Report,
        dsns: Vec<QueuedMessage>,
    ) -> Result<(), QueueError> {
        if let Some(c) = &report.claim {
            c.mark_reported();
        }
        let settled = report.all_final() && dsns.is_empty();
        let dsns = dsns.into_iter().map(Arc::new).collect();
        if settled {
            // Every copy is stored: a writer that is gone loses the history, and the 250 still stands
            // (a 4xx now would only make the client send a second copy).
            let id = message.id;
            if self
                .writes
                .send(Write::Direct(message, report, dsns, None))
                .await
                .is_err()
            {
                tracing::error!(queue_id = %id, "queue: writer is gone; the history of a delivered message is not recorded");
            }
            return Ok(());
        }
        let (tx, rx) = oneshot::channel();
        self.writes
            .send(Write::Direct(message, report, dsns, Some(tx)))
            .await
            .map_err(|_| QueueError::Closed)?;
        rx.await.map_err(|_| QueueError::Closed)?
    }

    /// A job whose message was held after it was handed out: its claim is given back untouched (nothing
    /// was attempted, the recipients stay as they were) and true is returned; the caller drops the job.
    pub fn set_aside_if_held(&self, job: &Job) -> bool {
        let held = self
            .held
            .lock()
            .map(|h| h.contains(&job.message.id))
            .unwrap_or(false);
        if held {
            tracing::info!(queue_id = %job.message.id, transport = job.transport.as_str(), "queue: held before its delivery began; set aside");
            job.claim.release_unused();
        }
        held
    }

    fn mark_held(&self, id: QueueId, held: bool) {
        if let Ok(mut h) = self.held.lock() {
            if held {
                h.insert(id);
            } else {
                h.remove(&id);
            }
        }
    }

    /// Records delivery outcomes, with the DSNs they cause, in one commit (with the next group).
    pub async fn record(&self, reports: Vec<Report>, dsns: Vec<QueuedMessage>) {
        for r in &reports {
            if let Some(c) = &r.claim {
                c.mark_reported();
            }
        }
        let dsns = dsns.into_iter().map(Arc::new).collect();
        if self
            .writes
            .send(Write::Reports(reports, dsns))
            .await
            .is_err()
        {
            tracing::error!(
                "queue: writer is gone; outcomes will be retried from disk after restart"
            );
        }
    }
}
