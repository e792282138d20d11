//! The channel layer over a transport: every payload sealed end to end.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use tessera_channel::{
    BroadcastEvidence, ChannelError, ChannelManager, Delivery, FrameContext, Outbound,
    RefusalCounters,
};
use tessera_wire::PartyId;
use tokio::task::JoinHandle;

use crate::limits::{Admission, InboundLimits};
use crate::router::{HoldLimits, Router, RouterStats, SessionInbox};
use crate::{Transport, TransportError};

/// How often timers (handshake retries, time-based rekeys) are checked.
pub const TICK_INTERVAL: Duration = Duration::from_millis(200);

/// Why a secure send failed.
#[derive(Debug, thiserror::Error)]
pub enum SecureError {
    /// The channel layer refused the payload.
    #[error(transparent)]
    Channel(#[from] ChannelError),
    /// The transport failed.
    #[error(transparent)]
    Transport(#[from] TransportError),
}

struct Shared {
    manager: Mutex<ChannelManager>,
    transport: Arc<dyn Transport>,
    router: Arc<Router>,
    admission: Admission,
}

impl Shared {
    fn manager(&self) -> MutexGuard<'_, ChannelManager> {
        // Channel operations leave the manager consistent at every step; a panic elsewhere
        // while holding the lock does not poison its state.
        self.manager.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hands `delivery` to its session without waiting (see [`crate::HoldLimits`]).
    fn deliver(&self, delivery: Delivery) {
        self.router.route(delivery);
    }

    async fn transmit(&self, outbound: Vec<Outbound>) -> Result<(), TransportError> {
        for o in outbound {
            self.transport.send(o.to, Bytes::from(o.bytes)).await?;
        }
        Ok(())
    }
}

/// A party's end-to-end secure messaging over a [`Transport`].
///
/// Incoming frames are authenticated and decrypted by a background task; refused ones are
/// counted (see [`SecureTransport::refusals`]) and dropped, and the task keeps serving. Before
/// any of that, each frame takes a token from its sender's bucket (see [`InboundLimits`]):
/// frames over a peer's budget are dropped unread and counted, per peer too (see
/// [`SecureTransport::rate_limited`]).
/// Authenticated payloads go to the session they belong to (see
/// [`SecureTransport::open_session`]); payloads of sessions nobody opened are returned by
/// [`SecureTransport::recv`]. What a peer has waiting, in sessions not yet opened or not yet
/// read, is capped per peer and per session ([`HoldLimits`]); handing a payload over never
/// waits for a session to read, so a slow session holds up no other.
pub struct SecureTransport {
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

impl SecureTransport {
    /// Subscribes to this party's inbox and starts the receive and timer tasks, with the
    /// default [`InboundLimits`].
    pub async fn start(
        manager: ChannelManager,
        transport: Arc<dyn Transport>,
    ) -> Result<Self, TransportError> {
        Self::start_with(manager, transport, InboundLimits::default()).await
    }

    /// As [`start`](Self::start), with each peer's inbound frames limited to `limits`. Zero
    /// limits are refused ([`TransportError::Setup`]).
    pub async fn start_with(
        manager: ChannelManager,
        transport: Arc<dyn Transport>,
        limits: InboundLimits,
    ) -> Result<Self, TransportError> {
        Self::start_limited(manager, transport, limits, HoldLimits::default()).await
    }

    /// As [`start_with`](Self::start_with), with each peer's deliveries waiting for their
    /// sessions limited to `held`. Zero limits are refused ([`TransportError::Setup`]).
    pub async fn start_limited(
        manager: ChannelManager,
        transport: Arc<dyn Transport>,
        limits: InboundLimits,
        held: HoldLimits,
    ) -> Result<Self, TransportError> {
        held.check().map_err(TransportError::Setup)?;
        let admission = Admission::new(
            limits,
            manager.roster().party_ids(),
            manager.counters().clone(),
        )?;
        if manager.party() != transport.party() {
            return Err(TransportError::Setup(format!(
                "channel identity is {} but the transport speaks for {}",
                manager.party(),
                transport.party()
            )));
        }
        let mut inbox = transport.subscribe().await?;
        let shared = Arc::new(Shared {
            manager: Mutex::new(manager),
            transport,
            router: Arc::new(Router::new(held)),
            admission,
        });

        let receiver = {
            let shared = shared.clone();
            tokio::spawn(async move {
                while let Some(inbound) = inbox.next().await {
                    // Over budget: dropped unread (and counted) before any cryptography.
                    if !shared.admission.admit(inbound.from) {
                        continue;
                    }
                    let result = shared.manager().receive(
                        Some(inbound.from),
                        &inbound.bytes,
                        Instant::now(),
                    );
                    match result {
                        Ok(received) => {
                            if let Err(e) = shared.transmit(received.outbound).await {
                                tracing::warn!(peer = %inbound.from, error = %e, "cannot answer peer");
                            }
                            if let Some(delivery) = received.delivery {
                                shared.deliver(delivery);
                            }
                        }
                        Err(e) => {
                            shared.admission.refused(e.reason());
                            tracing::debug!(
                                peer = %inbound.from,
                                reason = %e.reason(),
                                error = %e,
                                "refused inbound frame"
                            )
                        }
                    }
                }
            })
        };
        let ticker = {
            let shared = shared.clone();
            tokio::spawn(async move {
                let mut interval = tokio::time::interval(TICK_INTERVAL);
                interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    interval.tick().await;
                    let outbound = shared.manager().tick(Instant::now());
                    if let Err(e) = shared.transmit(outbound).await {
                        tracing::debug!(error = %e, "handshake message not sent");
                    }
                }
            })
        };
        Ok(SecureTransport {
            shared,
            tasks: vec![receiver, ticker],
        })
    }

    /// This party.
    pub fn party(&self) -> PartyId {
        self.shared.manager().party()
    }

    /// Seals and sends `payload` to `to`.
    pub async fn send(
        &self,
        to: PartyId,
        context: FrameContext,
        payload: &[u8],
    ) -> Result<(), SecureError> {
        let outbound = self
            .shared
            .manager()
            .send(to, context, payload, Instant::now())?;
        Ok(self.shared.transmit(outbound).await?)
    }

    /// Signs `payload` once and sends it to each of `recipients`.
    pub async fn broadcast(
        &self,
        recipients: &[PartyId],
        context: FrameContext,
        payload: &[u8],
    ) -> Result<(), SecureError> {
        let outbound =
            self.shared
                .manager()
                .broadcast(recipients, context, payload, Instant::now())?;
        Ok(self.shared.transmit(outbound).await?)
    }

    /// Seals `payload` for `to` with this party's signature, as a broadcast to one party:
    /// the recipient can show the signed statement to others later (a resharing dealer's
    /// sub-share, shown as evidence in a complaint). Frames whose signature does not verify
    /// are refused before delivery.
    pub async fn send_signed(
        &self,
        to: PartyId,
        context: FrameContext,
        payload: &[u8],
    ) -> Result<(), SecureError> {
        self.broadcast(&[to], context, payload).await
    }

    /// Whether `evidence` (a signed broadcast statement, shown by some party) verifies against
    /// the pinned roster.
    pub fn verify_evidence(&self, evidence: &BroadcastEvidence) -> bool {
        evidence.verify(self.shared.manager().roster()).is_ok()
    }

    /// Starts a re-handshake with `peer` now.
    pub async fn rekey(&self, peer: PartyId) -> Result<(), SecureError> {
        let outbound = self.shared.manager().rekey(peer, Instant::now())?;
        Ok(self.shared.transmit(outbound).await?)
    }

    /// Handshakes with every peer of the roster and waits up to `limit` for the channels;
    /// returns the peers still unreachable. Call it when a party (re)starts: its peers learn at
    /// once that it has new channel keys, instead of losing their next frame to it (sealed
    /// under keys it no longer has).
    pub async fn connect_peers(&self, limit: Duration) -> Vec<PartyId> {
        let me = self.party();
        let peers: Vec<PartyId> = {
            let manager = self.shared.manager();
            manager.roster().party_ids().filter(|p| *p != me).collect()
        };
        for &peer in &peers {
            if let Err(e) = self.rekey(peer).await {
                tracing::debug!(%peer, error = %e, "handshake not sent");
            }
        }
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let missing: Vec<PartyId> = peers
                .iter()
                .copied()
                .filter(|p| self.epoch(*p).is_none())
                .collect();
            if missing.is_empty() || tokio::time::Instant::now() >= deadline {
                return missing;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Opens a protocol session: its payloads, including any that arrived before this call, go
    /// to the returned inbox. Dropping the inbox closes the session.
    pub fn open_session(&self, session: tessera_wire::SessionId) -> SessionInbox {
        self.shared.router.open(session)
    }

    /// The next authenticated payload of a session nobody opened.
    pub async fn recv(&self) -> Delivery {
        self.shared.router.next_unclaimed().await
    }

    /// As [`recv`](Self::recv), waiting at most `limit`.
    pub async fn recv_timeout(&self, limit: Duration) -> Option<Delivery> {
        tokio::time::timeout(limit, self.recv()).await.ok()
    }

    /// Deliveries that reached no session, and what is held or queued now.
    pub fn router_stats(&self) -> RouterStats {
        self.shared.router.stats()
    }

    /// Refusals so far, per reason: the channel layer's, and frames dropped over their sender's
    /// budget ([`RefusalReason::RateLimited`](tessera_channel::RefusalReason::RateLimited)).
    pub fn refusals(&self) -> RefusalCounters {
        self.shared.admission.refusals()
    }

    /// Frames dropped over their sender's budget so far, per sender (the transport's idea of
    /// the sender: on NATS, the subject the broker let it publish on). Only senders with drops
    /// are listed.
    pub fn rate_limited(&self) -> BTreeMap<PartyId, u64> {
        self.shared.admission.rate_limited()
    }

    /// The inbound frame budget of each peer.
    pub fn inbound_limits(&self) -> InboundLimits {
        self.shared.admission.limits()
    }

    /// The epoch used for sending to `peer`, once established.
    pub fn epoch(&self, peer: PartyId) -> Option<u32> {
        self.shared.manager().epoch(peer)
    }

    /// The underlying transport.
    pub fn transport(&self) -> &Arc<dyn Transport> {
        &self.shared.transport
    }
}

impl Drop for SecureTransport {
    fn drop(&mut self) {
        self.shared.router.stop();
        for task in &self.tasks {
            task.abort();
        }
    }
}
