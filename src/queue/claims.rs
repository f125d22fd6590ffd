//! Who is delivering what: a claim on (message, transport) is taken atomically before the message's rows are
//! read for delivery and held until the attempt's outcomes are committed, so that no recipient is handed to
//! two deliveries at once, whatever order the scheduler, the writer and `tern queue flush` run in.
//!
//! A claim is dropped unreported only when its delivery task died (a panic): then its recipients are deferred
//! like a failed attempt and the scheduler is woken, instead of staying "in flight" until a restart.

use super::{QueueId, Transport, Wake, Write};
use std::collections::HashSet;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

const HELD: u8 = 0;
/// Handed to the writer with the outcomes; it releases the claim after the commit.
const REPORTED: u8 = 1;
const RELEASED: u8 = 2;

pub struct Claims {
    held: Mutex<HashSet<(QueueId, Transport)>>,
    wake: mpsc::UnboundedSender<Wake>,
    writes: mpsc::Sender<Write>,
}

impl Claims {
    pub(super) fn new(
        wake: mpsc::UnboundedSender<Wake>,
        writes: mpsc::Sender<Write>,
    ) -> Arc<Claims> {
        Arc::new(Claims {
            held: Mutex::new(HashSet::new()),
            wake,
            writes,
        })
    }

    /// Takes the claim on (id, transport) unless someone holds it.
    pub(super) fn try_claim(
        self: &Arc<Self>,
        id: QueueId,
        transport: Transport,
    ) -> Option<Arc<Claim>> {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        held.insert((id, transport)).then(|| {
            Arc::new(Claim {
                id,
                transport,
                claims: self.clone(),
                state: AtomicU8::new(HELD),
            })
        })
    }

    /// Deliveries under way.
    pub fn len(&self) -> usize {
        self.held.lock().map(|h| h.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Gives the claim back; `wake` tells the scheduler, which may have found the message busy meanwhile.
    pub(super) fn remove(&self, id: QueueId, transport: Transport, wake: bool) {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        held.remove(&(id, transport));
        drop(held);
        if wake {
            let _ = self.wake.send(Wake::Released(id));
        }
    }
}

pub struct Claim {
    id: QueueId,
    transport: Transport,
    claims: Arc<Claims>,
    state: AtomicU8,
}

impl std::fmt::Debug for Claim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Claim({} {})", self.id, self.transport.as_str())
    }
}

impl Claim {
    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// The outcomes are on their way to the writer, which releases the claim once they are committed.
    pub(super) fn mark_reported(&self) {
        let _ = self
            .state
            .compare_exchange(HELD, REPORTED, Ordering::AcqRel, Ordering::Acquire);
    }

    /// After the commit of the outcomes.
    pub(super) fn release(&self) {
        if self.state.swap(RELEASED, Ordering::AcqRel) != RELEASED {
            self.claims.remove(self.id, self.transport, true);
        }
    }

    /// Gives back a claim taken by administration (`tern queue bounce`) once its work is committed.
    pub fn give_back(&self) {
        self.release();
    }

    /// A claim that found nothing to deliver: nothing changed, so nobody needs waking.
    pub(super) fn release_unused(&self) {
        if self.state.swap(RELEASED, Ordering::AcqRel) != RELEASED {
            self.claims.remove(self.id, self.transport, false);
        }
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if self.state.load(Ordering::Acquire) != HELD {
            return;
        }
        tracing::error!(queue_id = %self.id, transport = self.transport.as_str(),
            "delivery ended without a report (the task failed); its recipients are deferred");
        let write = Write::Abandoned(self.id, self.transport);
        match self.claims.writes.try_send(write) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(write)) => {
                if let Ok(handle) = tokio::runtime::Handle::try_current() {
                    let writes = self.claims.writes.clone();
                    handle.spawn(async move {
                        let _ = writes.send(write).await;
                    });
                }
            }
            // The writer is gone (shutting down): the rows stay queued and are picked up at the next start.
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
        // The writer releases it after deferring the rows; until then nobody else takes these recipients.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u64) -> QueueId {
        crate::queue::IdGenerator::after(None).next(1_700_000_000_000_000 + n)
    }

    #[tokio::test]
    async fn a_claim_is_held_once_and_a_dropped_one_is_reported_as_abandoned() {
        let (wake_tx, mut wake_rx) = mpsc::unbounded_channel();
        let (writes_tx, mut writes_rx) = mpsc::channel(8);
        let claims = Claims::new(wake_tx, writes_tx);
        let a = claims.try_claim(id(1), Transport::Remote).expect("free");
        assert!(
            claims.try_claim(id(1), Transport::Remote).is_none(),
            "held twice"
        );
        assert!(claims.try_claim(id(1), Transport::Local).is_some_and(|c| {
            c.release_unused();
            true
        }));
        // Reported and released after the commit: no abandonment, and the scheduler hears of it.
        a.mark_reported();
        a.release();
        drop(a);
        assert!(matches!(wake_rx.try_recv(), Ok(Wake::Released(_))));
        assert!(writes_rx.try_recv().is_err());
        // A delivery that died: its claim reports the recipients as abandoned, and stays held until then.
        let b = claims.try_claim(id(2), Transport::Local).expect("free");
        drop(b);
        assert!(matches!(
            writes_rx.try_recv(),
            Ok(Write::Abandoned(_, Transport::Local))
        ));
        assert!(claims.try_claim(id(2), Transport::Local).is_none());
        claims.remove(id(2), Transport::Local, true);
        assert!(claims.try_claim(id(2), Transport::Local).is_some());
    }
}
