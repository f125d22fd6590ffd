//! The outbound MTA: delivers the queue's remote recipients to the MX hosts of their domains.
//!
//! One task per job (a message's remote recipients), within `[delivery] max_connections` in total and
//! `per_destination` per domain. Each domain's recipients go in one SMTP transaction; replies are judged per
//! recipient; `queue::conclude` decides retries and DSNs. Connections are kept idle for a while and reused
//! for the next message to the same host.

pub mod client;
mod deliver;
pub mod dkim;
mod lmtp;
mod pool;
pub mod tls;

use crate::config::{DeliverySettings, TlsPolicy};
use crate::dns::Dns;
use crate::intake::{Attempt, Intake};
use crate::queue::{Job, Queue};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::sync::{Semaphore, mpsc};

/// Everything the delivery tasks share.
pub struct Outbound {
    pub hostname: String,
    pub settings: DeliverySettings,
    pub dns: Dns,
    pub queue: Queue,
    pub tls: tls::TlsClients,
    pub dkim: Arc<dkim::Dkim>,
    pub local_domains: Vec<crate::smtp::Domain>,
    /// Our own listening sockets: an MX that resolves to one of them is a loop.
    pub own_addresses: Vec<SocketAddr>,
    pool: pool::Pool,
    total: Arc<Semaphore>,
    per_destination: Mutex<HashMap<String, Arc<Semaphore>>>,
    /// `[[transport]] concurrency`, by rule (its position and limit).
    per_transport: Mutex<HashMap<(usize, usize), Arc<Semaphore>>>,
}

impl Outbound {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        hostname: String,
        settings: DeliverySettings,
        dns: Dns,
        queue: Queue,
        tls: tls::TlsClients,
        dkim: dkim::Dkim,
        local_domains: Vec<crate::smtp::Domain>,
        own_addresses: Vec<SocketAddr>,
    ) -> Arc<Outbound> {
        let total = Arc::new(Semaphore::new(settings.max_connections));
        let pool = pool::Pool::new(settings.idle, settings.per_destination);
        Arc::new(Outbound {
            hostname,
            settings,
            dns,
            queue,
            tls,
            dkim: Arc::new(dkim),
            local_domains,
            own_addresses,
            pool,
            total,
            per_destination: Mutex::new(HashMap::new()),
            per_transport: Mutex::new(HashMap::new()),
        })
    }

    fn tls_policy(&self, domain: &str) -> TlsPolicy {
        self.settings
            .tls_policy
            .get(domain)
            .copied()
            .unwrap_or(TlsPolicy::May)
    }

    fn destination_slots(&self, domain: &str) -> Arc<Semaphore> {
        let mut map = self
            .per_destination
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        // Domains nobody is delivering to right now hold no state worth keeping.
        if map.len() >= 1024 {
            map.retain(|_, slots| Arc::strong_count(slots) > 1);
        }
        map.entry(domain.to_string())
            .or_insert_with(|| Arc::new(Semaphore::new(self.settings.per_destination)))
            .clone()
    }

    /// The slots of the transport rule for `domain`, when it limits its connections.
    fn transport_slots(&self, domain: &str) -> Option<Arc<Semaphore>> {
        let (i, rule) = self
            .settings
            .transports
            .iter()
            .enumerate()
            .find(|(_, r)| r.matches(domain))?;
        let limit = rule.concurrency?;
        let mut map = self.per_transport.lock().unwrap_or_else(|p| p.into_inner());
        Some(
            map.entry((i, limit))
                .or_insert_with(|| Arc::new(Semaphore::new(limit)))
                .clone(),
        )
    }

    /// Whether `addr` is one of our own listening sockets (an MX pointing back at us).
    fn is_own(&self, addr: SocketAddr) -> bool {
        self.own_addresses.iter().any(|own| {
            own.port() == addr.port()
                && (own.ip() == addr.ip() || (own.ip().is_unspecified() && addr.ip().is_loopback()))
        })
    }
}

/// Runs delivery tasks for the jobs until the queue closes.
pub fn start(ctx: Arc<Outbound>, intake: Arc<Intake>, mut jobs: mpsc::UnboundedReceiver<Job>) {
    tokio::spawn(pool::reaper(ctx.clone()));
    tokio::spawn(async move {
        while let Some(job) = jobs.recv().await {
            let ctx = ctx.clone();
            let intake = intake.clone();
            tokio::spawn(async move {
                let started = std::time::Instant::now();
                let Some(attempts) = deliver_job(&ctx, &job).await else {
                    return;
                };
                let (report, dsns) = intake.conclude(&job, attempts, started).await;
                ctx.queue.record(vec![report], dsns).await;
            });
        }
    });
}

/// One attempt for every recipient of the job, grouped by domain, in recipient order; `None` when the
/// message was held while the job waited for its first slots (set aside, nothing attempted).
async fn deliver_job(ctx: &Outbound, job: &Job) -> Option<Vec<Attempt>> {
    let m = &job.message;
    let mut by_domain: Vec<(String, Vec<usize>)> = Vec::new();
    for (i, r) in m.recipients.iter().enumerate() {
        let domain = r
            .mailbox
            .rsplit_once('@')
            .map(|(_, d)| d.to_lowercase())
            .unwrap_or_default();
        match by_domain.iter_mut().find(|(d, _)| *d == domain) {
            Some((_, v)) => v.push(i),
            None => by_domain.push((domain, vec![i])),
        }
    }
    let mut attempts: Vec<Option<Attempt>> = vec![None; m.recipients.len()];
    for (domain, indexes) in by_domain {
        // The transport rule's slot, then the domain's, then one of the global connections: a job waiting
        // for a busy (or slow) relay or domain holds nothing that deliveries elsewhere need.
        let transport = ctx.transport_slots(&domain);
        let _transport_slot = match &transport {
            Some(t) => Some(t.acquire().await),
            None => None,
        };
        let slots = ctx.destination_slots(&domain);
        let _slot = slots.acquire().await;
        let _permit = ctx.total.acquire().await;
        if attempts.iter().all(Option::is_none) && ctx.queue.set_aside_if_held(job) {
            return None;
        }
        let rcpts: Vec<&crate::queue::QueuedRecipient> =
            indexes.iter().map(|&i| &m.recipients[i]).collect();
        let results = deliver::deliver_domain(ctx, m, &domain, &rcpts).await;
        for (i, a) in indexes.into_iter().zip(results) {
            attempts[i] = Some(a);
        }
    }
    Some(
        attempts
            .into_iter()
            .map(|a| {
                a.unwrap_or(Attempt::Temporary {
                    reply: "4.3.0 not attempted".into(),
                    relay: None,
                })
            })
            .collect(),
    )
}
