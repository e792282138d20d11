//! Sans-IO secure channels between the parties of a Tessera cluster.
//!
//! This crate knows no network and no async runtime: callers hand it bytes that arrived and the
//! current time, and it hands back bytes to send and payloads to deliver. It provides:
//!
//! * [`identity`]: a party's long-term Ed25519 signing key and X25519 static key, and a
//!   coordinator's Ed25519 key;
//! * [`roster`]: the admin-signed list of parties, coordinators and their public keys, pinned by
//!   hash;
//! * [`ChannelManager`]: one party's pairwise channels to every other party. Each channel is
//!   established with Noise `KK` (`Noise_KK_25519_ChaChaPoly_BLAKE2s`) and re-established every
//!   N messages, every T seconds or on demand; records are sealed with ChaCha20-Poly1305 under
//!   the handshake's keys with an explicit counter as nonce and the whole frame header as
//!   associated data, and checked against a sliding replay window per peer and epoch;
//! * [`broadcast`]: Ed25519-signed broadcasts whose signatures anyone holding the roster can
//!   check later.
//!
//! Every refused input yields a typed [`ChannelError`] and bumps a per-reason counter in
//! [`RefusalCounters`]; a refusal never disturbs the channel's state.

pub mod broadcast;
mod epoch;
mod error;
pub mod identity;
mod manager;
mod peer;
mod replay;
pub mod roster;

pub use broadcast::BroadcastEvidence;
pub use error::{ChannelError, RefusalCounters, RefusalReason};
pub use identity::{CoordinatorKey, PartyIdentity, PublicIdentity};
pub use manager::{ChannelConfig, ChannelManager, Delivery, FrameContext, Outbound, Received};
pub use replay::ReplayWindow;
pub use roster::{CoordinatorEntry, Roster, RosterEntry, RosterError, RosterHash, SignedRoster};

/// The Noise protocol every channel uses.
pub const NOISE_PARAMS: &str = "Noise_KK_25519_ChaChaPoly_BLAKE2s";
/// Domain label bound into every handshake prologue.
pub const PROLOGUE_LABEL: &[u8] = b"tessera-channel/v1";
