//! How Tessera parties reach each other.
//!
//! * [`Transport`]: send bytes to a party, receive the bytes addressed to this party. Two
//!   implementations: [`memory::MemoryNetwork`] (one process: the embedded default and fast
//!   tests) and [`nats::NatsTransport`] (NATS with mTLS, one NKey user per party and per-party
//!   subject permissions). Transports move opaque bytes and are trusted with nothing.
//! * [`SecureTransport`]: runs `tessera-channel` over any transport: every payload is sealed
//!   end to end between the two parties, each peer's inbound frames are limited by a token
//!   bucket ([`InboundLimits`]) checked before any cryptography, what each peer has waiting
//!   for its sessions is capped ([`HoldLimits`]), and refusals are counted.
//! * [`nats::provision`] writes a `nats-server` configuration (PKI, users, permissions) for a
//!   roster, and [`nats::server::LocalNatsServer`] runs one on loopback for development and tests.

mod error;
mod limits;
pub mod memory;
pub mod nats;
mod router;
mod secure;

use std::pin::Pin;

use async_trait::async_trait;
use bytes::Bytes;
use futures::Stream;
use tessera_wire::PartyId;

pub use error::TransportError;
pub use limits::{InboundLimits, RATE_LIMIT_WARNING_INTERVAL};
pub use router::{HoldLimits, RouterStats, SessionInbox};
pub use secure::{SecureError, SecureTransport};

/// Bytes that arrived for this party.
#[derive(Clone, Debug)]
pub struct Inbound {
    /// The sender as the transport knows it (NATS: from the subject, which the broker's
    /// permissions tie to the sender's user). The channel layer checks it against the frame.
    pub from: PartyId,
    /// The raw message.
    pub bytes: Bytes,
}

/// The stream of messages addressed to this party.
pub type Inbox = Pin<Box<dyn Stream<Item = Inbound> + Send>>;

/// Moves opaque bytes between the parties of one cluster.
#[async_trait]
pub trait Transport: Send + Sync + 'static {
    /// The party this transport speaks for.
    fn party(&self) -> PartyId;

    /// Sends `bytes` to `to`. Delivery is at most once: success means the transport took the
    /// message, not that the peer received it.
    async fn send(&self, to: PartyId, bytes: Bytes) -> Result<(), TransportError>;

    /// Subscribes to this party's own inbox. Call once, before peers send.
    async fn subscribe(&self) -> Result<Inbox, TransportError>;
}
