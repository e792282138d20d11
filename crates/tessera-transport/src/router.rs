//! Routes authenticated deliveries to the protocol session they belong to.
//!
//! A peer may send a session's first messages before this party has opened that session, so
//! deliveries for sessions nobody has claimed wait in a bounded queue (oldest dropped first, and
//! counted). Opening a session hands over, in arrival order, what already arrived for it. Late
//! frames for a session that was closed are dropped and counted.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use tessera_channel::Delivery;
use tessera_wire::SessionId;
use tokio::sync::{mpsc, Notify};

/// Deliveries that may wait for a session to be opened, over all sessions.
pub const UNCLAIMED_CAPACITY: usize = 4096;
/// Deliveries that may wait in one open session before intake slows down.
pub const SESSION_CAPACITY: usize = 1024;
/// Closed sessions remembered so that their late frames are dropped at once.
const CLOSED_MEMORY: usize = 4096;

/// Counters of deliveries that reached no session.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RouterStats {
    /// Dropped because the unclaimed queue was full.
    pub unclaimed_overflow: u64,
    /// Dropped because their session had been closed.
    pub late_for_closed_session: u64,
    /// Held now, waiting for their session to be opened.
    pub held: usize,
}

#[derive(Default)]
struct Routes {
    open: HashMap<SessionId, mpsc::Sender<Delivery>>,
    unclaimed: VecDeque<Delivery>,
    closed: HashSet<SessionId>,
    closed_order: VecDeque<SessionId>,
    stats: RouterStats,
}

/// Where a delivery goes.
pub(crate) enum Route {
    /// To an open session.
    Session(mpsc::Sender<Delivery>),
    /// Kept for a session not yet opened (or for [`crate::SecureTransport::recv`]).
    Held,
    /// Dropped (counted).
    Dropped,
}

#[derive(Default)]
pub(crate) struct Router {
    routes: Mutex<Routes>,
    arrived: Notify,
}

impl Router {
    fn lock(&self) -> MutexGuard<'_, Routes> {
        // Every update leaves the routes consistent, so a poisoned lock is still usable.
        self.routes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Decides where `delivery` goes; held deliveries are stored here.
    pub(crate) fn route(&self, delivery: Delivery) -> (Route, Option<Delivery>) {
        let mut routes = self.lock();
        let session = delivery.context.session;
        if let Some(tx) = routes.open.get(&session) {
            return (Route::Session(tx.clone()), Some(delivery));
        }
        if routes.closed.contains(&session) {
            routes.stats.late_for_closed_session += 1;
            return (Route::Dropped, None);
        }
        if routes.unclaimed.len() >= UNCLAIMED_CAPACITY {
            routes.unclaimed.pop_front();
            routes.stats.unclaimed_overflow += 1;
        }
        routes.unclaimed.push_back(delivery);
        drop(routes);
        self.arrived.notify_one();
        (Route::Held, None)
    }

    /// Marks a session's receiver as gone (its inbox was dropped while a delivery was sent).
    pub(crate) fn session_gone(&self, session: SessionId) {
        close(&mut self.lock(), session);
    }

    /// Opens `session`: future deliveries go to the returned inbox, after those already held.
    pub(crate) fn open(self: &Arc<Self>, session: SessionId) -> SessionInbox {
        let (tx, rx) = mpsc::channel(SESSION_CAPACITY);
        let mut routes = self.lock();
        let mut early = VecDeque::new();
        routes.unclaimed.retain(|d| {
            let mine = d.context.session == session;
            if mine {
                early.push_back(d.clone());
            }
            !mine
        });
        routes.closed.remove(&session);
        routes.open.insert(session, tx);
        SessionInbox {
            session,
            early,
            rx,
            router: self.clone(),
        }
    }

    /// The next held delivery of any session, waiting until one arrives.
    pub(crate) async fn next_unclaimed(&self) -> Delivery {
        loop {
            let notified = self.arrived.notified();
            if let Some(d) = self.lock().unclaimed.pop_front() {
                return d;
            }
            notified.await;
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

fn close(routes: &mut Routes, session: SessionId) {
    routes.open.remove(&session);
    if routes.closed.insert(session) {
        routes.closed_order.push_back(session);
        if routes.closed_order.len() > CLOSED_MEMORY {
            if let Some(old) = routes.closed_order.pop_front() {
                routes.closed.remove(&old);
            }
        }
    }
}

/// The deliveries of one protocol session. Dropping it closes the session: later frames for it
/// are dropped and counted.
pub struct SessionInbox {
    session: SessionId,
    early: VecDeque<Delivery>,
    rx: mpsc::Receiver<Delivery>,
    router: Arc<Router>,
}

impl SessionInbox {
    /// The session.
    pub fn session(&self) -> SessionId {
        self.session
    }

    /// The next delivery for this session, or `None` if the transport stopped.
    pub async fn recv(&mut self) -> Option<Delivery> {
        match self.early.pop_front() {
            Some(d) => Some(d),
            None => self.rx.recv().await,
        }
    }
}

impl Drop for SessionInbox {
    fn drop(&mut self) {
        close(&mut self.router.lock(), self.session);
    }
}
