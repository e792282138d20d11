//! Routes authenticated deliveries to the protocol session they belong to.
//!
//! A peer may send a session's first messages before this party has opened that session, so
//! deliveries for sessions nobody has claimed are held until the session is opened, which hands
//! them over in arrival order. Late frames for a session that was closed are dropped and counted.
//!
//! Memory stays bounded whatever a peer sends, and one peer cannot crowd out another: every
//! delivery held here (for a session not yet opened, or queued in an open session's inbox until
//! it reads it) counts against its sender's allowance ([`HoldLimits`]), in deliveries and in
//! bytes, and against the allowance of its (session, sender) pair. A delivery over an allowance
//! is dropped and counted ([`RouterStats`]); what other peers sent stays. Routing never waits:
//! a session that reads slowly fills only its own allowance and cannot stall the others.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use tessera_channel::Delivery;
use tessera_wire::{PartyId, SessionId};
use tokio::sync::Notify;

/// Closed sessions remembered so that their late frames are dropped at once.
const CLOSED_MEMORY: usize = 4096;
/// What a delivery costs besides its payload (its context, sender and evidence).
const DELIVERY_OVERHEAD: usize = 256;

/// How much one peer may have waiting in this party's router at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HoldLimits {
    /// Deliveries from one peer held at once, over all sessions.
    pub peer_deliveries: usize,
    /// Bytes of deliveries from one peer held at once, over all sessions.
    pub peer_bytes: usize,
    /// Deliveries from one peer held at once for one session.
    pub session_deliveries: usize,
}

impl HoldLimits {
    /// The defaults: far above what the protocols send (a few messages per peer and round),
    /// far below what would strain a node (64 MiB per peer).
    pub const DEFAULT: HoldLimits = HoldLimits {
        peer_deliveries: 2048,
        peer_bytes: 64 * 1024 * 1024,
        session_deliveries: 256,
    };

    /// Refuses zero limits, which would drop every delivery.
    pub(crate) fn check(&self) -> Result<(), String> {
        if self.peer_deliveries == 0 || self.peer_bytes == 0 || self.session_deliveries == 0 {
            return Err(format!("hold limits must be positive, got {self:?}"));
        }
        Ok(())
    }
}

impl Default for HoldLimits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Counters of deliveries that reached no session, and what is held now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RouterStats {
    /// Dropped because their sender had [`HoldLimits::peer_deliveries`] or
    /// [`HoldLimits::peer_bytes`] held already.
    pub over_peer_limit: u64,
    /// Dropped because their sender had [`HoldLimits::session_deliveries`] held for that
    /// session already.
    pub over_session_limit: u64,
    /// Dropped because their session had been closed.
    pub late_for_closed_session: u64,
    /// Held now, waiting for their session to be opened.
    pub held: usize,
    /// Queued now in open sessions' inboxes, not yet read.
    pub queued: usize,
}

/// What one peer has held here.
#[derive(Default)]
struct Allowance {
    deliveries: usize,
    bytes: usize,
    per_session: HashMap<SessionId, usize>,
}

struct OpenSession {
    queue: VecDeque<Delivery>,
    arrived: Arc<Notify>,
}

#[derive(Default)]
struct Routes {
    open: HashMap<SessionId, OpenSession>,
    unclaimed: VecDeque<Delivery>,
    closed: HashSet<SessionId>,
    closed_order: VecDeque<SessionId>,
    held_by: HashMap<PartyId, Allowance>,
    stopped: bool,
    stats: RouterStats,
}

fn cost(delivery: &Delivery) -> usize {
    delivery.payload.len() + DELIVERY_OVERHEAD
}

impl Routes {
    /// Takes the allowance for `delivery`, or says which limit it is over.
    fn reserve(&mut self, delivery: &Delivery, limits: &HoldLimits) -> Result<(), Over> {
        let session = delivery.context.session;
        let bytes = cost(delivery);
        let allowance = self.held_by.entry(delivery.from).or_default();
        if allowance.deliveries >= limits.peer_deliveries
            || allowance.bytes.saturating_add(bytes) > limits.peer_bytes
        {
            return Err(Over::Peer);
        }
        let in_session = allowance.per_session.entry(session).or_default();
        if *in_session >= limits.session_deliveries {
            return Err(Over::Session);
        }
        *in_session += 1;
        allowance.deliveries += 1;
        allowance.bytes += bytes;
        Ok(())
    }

    /// Gives back the allowance `delivery` took.
    fn release(&mut self, delivery: &Delivery) {
        let Some(allowance) = self.held_by.get_mut(&delivery.from) else {
            return;
        };
        allowance.deliveries = allowance.deliveries.saturating_sub(1);
        allowance.bytes = allowance.bytes.saturating_sub(cost(delivery));
        let session = delivery.context.session;
        if let Some(n) = allowance.per_session.get_mut(&session) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                allowance.per_session.remove(&session);
            }
        }
        if allowance.deliveries == 0 {
            self.held_by.remove(&delivery.from);
        }
    }

    fn close(&mut self, session: SessionId) {
        if let Some(open) = self.open.remove(&session) {
            for d in &open.queue {
                self.release(d);
            }
            self.stats.queued -= open.queue.len();
            open.arrived.notify_one();
        }
        if self.closed.insert(session) {
            self.closed_order.push_back(session);
            if self.closed_order.len() > CLOSED_MEMORY {
                if let Some(old) = self.closed_order.pop_front() {
                    self.closed.remove(&old);
                }
            }
        }
    }
}

enum Over {
    Peer,
    Session,
}

/// Where a delivery went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Route {
    /// Queued in an open session's inbox.
    Session,
    /// Kept for a session not yet opened (or for [`crate::SecureTransport::recv`]).
    Held,
    /// Dropped (counted).
    Dropped,
}

#[derive(Default)]
pub(crate) struct Router {
    routes: Mutex<Routes>,
    limits: HoldLimits,
    arrived: Notify,
}

impl Router {
    pub(crate) fn new(limits: HoldLimits) -> Self {
        Router {
            routes: Mutex::default(),
            limits,
            arrived: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Routes> {
        // Every update leaves the routes consistent, so a poisoned lock is still usable.
        self.routes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Puts `delivery` where it goes, without waiting.
    pub(crate) fn route(&self, delivery: Delivery) -> Route {
        let mut routes = self.lock();
        let session = delivery.context.session;
        if !routes.open.contains_key(&session) && routes.closed.contains(&session) {
            routes.stats.late_for_closed_session += 1;
            return Route::Dropped;
        }
        if let Err(over) = routes.reserve(&delivery, &self.limits) {
            let what = match over {
                Over::Peer => {
                    routes.stats.over_peer_limit += 1;
                    "everything the peer has waiting"
                }
                Over::Session => {
                    routes.stats.over_session_limit += 1;
                    "what the peer has waiting for this session"
                }
            };
            tracing::debug!(peer = %delivery.from, %session, "delivery dropped: over the limit of {what}");
            return Route::Dropped;
        }
        if let Some(open) = routes.open.get_mut(&session) {
            open.queue.push_back(delivery);
            open.arrived.notify_one();
            routes.stats.queued += 1;
            return Route::Session;
        }
        routes.unclaimed.push_back(delivery);
        drop(routes);
        self.arrived.notify_one();
        Route::Held
    }

    /// Opens `session`: future deliveries go to the returned inbox, after those already held.
    /// Opening a session that is open already hands its unread deliveries to the new inbox;
    /// the old one then returns `None`.
    pub(crate) fn open(self: &Arc<Self>, session: SessionId) -> SessionInbox {
        let mut routes = self.lock();
        let mut queue = VecDeque::new();
        if let Some(previous) = routes.open.remove(&session) {
            queue = previous.queue;
            previous.arrived.notify_one();
        }
        let before = queue.len();
        let (mine, others): (VecDeque<Delivery>, VecDeque<Delivery>) =
            std::mem::take(&mut routes.unclaimed)
                .into_iter()
                .partition(|d| d.context.session == session);
        routes.unclaimed = others;
        queue.extend(mine);
        routes.stats.queued += queue.len() - before;
        routes.closed.remove(&session);
        let arrived = Arc::new(Notify::new());
        routes.open.insert(
            session,
            OpenSession {
                queue,
                arrived: arrived.clone(),
            },
        );
        SessionInbox {
            session,
            arrived,
            router: self.clone(),
        }
    }

    /// Takes the next delivery queued for `session`; `Err` if it is no longer open here.
    fn pop(&self, session: SessionId, arrived: &Arc<Notify>) -> Result<Option<Delivery>, ()> {
        let mut routes = self.lock();
        if routes.stopped {
            return Err(());
        }
        let open = match routes.open.get_mut(&session) {
            Some(open) if Arc::ptr_eq(&open.arrived, arrived) => open,
            _ => return Err(()),
        };
        let Some(delivery) = open.queue.pop_front() else {
            return Ok(None);
        };
        routes.stats.queued -= 1;
        routes.release(&delivery);
        Ok(Some(delivery))
    }

    /// The next held delivery of any session, waiting until one arrives.
    pub(crate) async fn next_unclaimed(&self) -> Delivery {
        loop {
            let notified = self.arrived.notified();
            {
                let mut routes = self.lock();
                if let Some(d) = routes.unclaimed.pop_front() {
                    routes.release(&d);
                    return d;
                }
            }
            notified.await;
        }
    }

    /// Stops routing (the transport stopped): open inboxes return `None` from now on.
    pub(crate) fn stop(&self) {
        let mut routes = self.lock();
        routes.stopped = true;
        for open in routes.open.values() {
            open.arrived.notify_one();
        }
    }

    pub(crate) fn stats(&self) -> RouterStats {
        let routes = self.lock();
        RouterStats {
            held: routes.unclaimed.len(),
            ..routes.stats
        }
    }
}

/// The deliveries of one protocol session. Dropping it closes the session: later frames for it
/// are dropped and counted, and what it had not read is let go.
pub struct SessionInbox {
    session: SessionId,
    arrived: Arc<Notify>,
    router: Arc<Router>,
}

impl SessionInbox {
    /// The session.
    pub fn session(&self) -> SessionId {
        self.session
    }

    /// The next delivery for this session, or `None` if the transport stopped (or the session
    /// was opened again elsewhere, which took over its deliveries).
    pub async fn recv(&mut self) -> Option<Delivery> {
        loop {
            let notified = self.arrived.notified();
            match self.router.pop(self.session, &self.arrived) {
                Ok(Some(d)) => return Some(d),
                Ok(None) => notified.await,
                Err(()) => return None,
            }
        }
    }
}

impl Drop for SessionInbox {
    fn drop(&mut self) {
        let mut routes = self.router.lock();
        let mine = routes
            .open
            .get(&self.session)
            .is_some_and(|open| Arc::ptr_eq(&open.arrived, &self.arrived));
        if mine {
            routes.close(self.session);
        }
    }
}
