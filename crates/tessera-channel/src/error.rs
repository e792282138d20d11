//! Typed refusals and their counters.

use std::collections::BTreeMap;
use std::fmt;

use tessera_wire::{FrameError, PartyId};

/// Why an inbound message was refused, or an outbound one could not be sealed.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ChannelError {
    /// The bytes are not a well-formed frame (garbage, truncated, oversized, wrong version).
    #[error("malformed frame: {0}")]
    Malformed(#[from] FrameError),
    /// The frame names a sender that is not in the pinned roster.
    #[error("frame from {0}, which is not in the roster")]
    UnknownParty(PartyId),
    /// The frame is addressed to another party.
    #[error("frame addressed to {to}, but this party is {me}")]
    Misaddressed {
        /// Recipient named in the frame.
        to: PartyId,
        /// This party.
        me: PartyId,
    },
    /// The transport says one sender, the frame another.
    #[error("frame claims sender {claimed} but arrived from {transport}")]
    SenderMismatch {
        /// Sender in the frame.
        claimed: PartyId,
        /// Sender according to the transport.
        transport: PartyId,
    },
    /// The frame's counter was already accepted, or is older than the replay window.
    #[error("replayed frame from {from} (epoch {epoch}, counter {counter})")]
    Replay {
        /// Sender.
        from: PartyId,
        /// Channel generation.
        epoch: u32,
        /// The repeated counter.
        counter: u64,
    },
    /// No channel keys exist for the frame's epoch (never established, or long retired).
    #[error("no channel with {from} at epoch {epoch}; the peer should re-handshake")]
    UnknownEpoch {
        /// Sender.
        from: PartyId,
        /// Unknown epoch.
        epoch: u32,
    },
    /// The frame failed authentication: tampered, re-addressed, or sealed with other keys.
    #[error("frame from {from} failed authentication (tampered, re-addressed or forged)")]
    AuthenticationFailed {
        /// Claimed sender.
        from: PartyId,
    },
    /// A broadcast's Ed25519 signature does not verify against the sender's roster key.
    #[error("broadcast from {from} carries a signature that does not verify")]
    BadBroadcastSignature {
        /// Sender.
        from: PartyId,
    },
    /// A handshake message failed (wrong static key, tampered, or out of order).
    #[error("handshake with {peer} failed: {reason}")]
    HandshakeFailed {
        /// The peer.
        peer: PartyId,
        /// What went wrong.
        reason: String,
    },
    /// A handshake message for a channel generation that is already in use (a replay).
    #[error("stale handshake from {peer} for epoch {epoch}")]
    StaleHandshake {
        /// The peer.
        peer: PartyId,
        /// The epoch it named.
        epoch: u32,
    },
    /// The payload is larger than the configured limit.
    #[error("payload of {len} bytes exceeds the limit of {limit} bytes")]
    PayloadTooLarge {
        /// Payload length.
        len: usize,
        /// Limit.
        limit: usize,
    },
    /// Too many messages are waiting for a handshake with this peer.
    #[error("send queue to {peer} is full ({limit} messages waiting for the handshake)")]
    QueueFull {
        /// The peer.
        peer: PartyId,
        /// Queue limit.
        limit: usize,
    },
    /// A party tried to open a channel to itself.
    #[error("a party has no channel to itself")]
    SelfChannel,
}

/// Refusal categories, one counter each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RefusalReason {
    /// See [`ChannelError::Malformed`].
    Malformed,
    /// See [`ChannelError::UnknownParty`].
    UnknownParty,
    /// See [`ChannelError::Misaddressed`].
    Misaddressed,
    /// See [`ChannelError::SenderMismatch`].
    SenderMismatch,
    /// See [`ChannelError::Replay`].
    Replay,
    /// See [`ChannelError::UnknownEpoch`].
    UnknownEpoch,
    /// See [`ChannelError::AuthenticationFailed`].
    AuthenticationFailed,
    /// See [`ChannelError::BadBroadcastSignature`].
    BadBroadcastSignature,
    /// See [`ChannelError::HandshakeFailed`].
    HandshakeFailed,
    /// See [`ChannelError::StaleHandshake`].
    StaleHandshake,
    /// See [`ChannelError::PayloadTooLarge`].
    PayloadTooLarge,
    /// See [`ChannelError::QueueFull`].
    QueueFull,
    /// See [`ChannelError::SelfChannel`].
    SelfChannel,
    /// The frame was dropped unread because its sender exceeded its inbound frame budget (a
    /// per-peer token bucket checked by the transport before any cryptography). The channel layer
    /// itself never returns this reason; the secure transport counts it.
    RateLimited,
}

impl RefusalReason {
    /// A short stable name, for metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            RefusalReason::Malformed => "malformed",
            RefusalReason::UnknownParty => "unknown_party",
            RefusalReason::Misaddressed => "misaddressed",
            RefusalReason::SenderMismatch => "sender_mismatch",
            RefusalReason::Replay => "replay",
            RefusalReason::UnknownEpoch => "unknown_epoch",
            RefusalReason::AuthenticationFailed => "authentication_failed",
            RefusalReason::BadBroadcastSignature => "bad_broadcast_signature",
            RefusalReason::HandshakeFailed => "handshake_failed",
            RefusalReason::StaleHandshake => "stale_handshake",
            RefusalReason::PayloadTooLarge => "payload_too_large",
            RefusalReason::QueueFull => "queue_full",
            RefusalReason::SelfChannel => "self_channel",
            RefusalReason::RateLimited => "rate_limited",
        }
    }
}

impl fmt::Display for RefusalReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl ChannelError {
    /// The counter this error increments.
    pub fn reason(&self) -> RefusalReason {
        match self {
            ChannelError::Malformed(_) => RefusalReason::Malformed,
            ChannelError::UnknownParty(_) => RefusalReason::UnknownParty,
            ChannelError::Misaddressed { .. } => RefusalReason::Misaddressed,
            ChannelError::SenderMismatch { .. } => RefusalReason::SenderMismatch,
            ChannelError::Replay { .. } => RefusalReason::Replay,
            ChannelError::UnknownEpoch { .. } => RefusalReason::UnknownEpoch,
            ChannelError::AuthenticationFailed { .. } => RefusalReason::AuthenticationFailed,
            ChannelError::BadBroadcastSignature { .. } => RefusalReason::BadBroadcastSignature,
            ChannelError::HandshakeFailed { .. } => RefusalReason::HandshakeFailed,
            ChannelError::StaleHandshake { .. } => RefusalReason::StaleHandshake,
            ChannelError::PayloadTooLarge { .. } => RefusalReason::PayloadTooLarge,
            ChannelError::QueueFull { .. } => RefusalReason::QueueFull,
            ChannelError::SelfChannel => RefusalReason::SelfChannel,
        }
    }
}

/// How many inputs were refused, per reason.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RefusalCounters {
    counts: BTreeMap<RefusalReason, u64>,
}

impl RefusalCounters {
    /// Counts one refusal.
    pub fn record(&mut self, reason: RefusalReason) {
        *self.counts.entry(reason).or_default() += 1;
    }

    /// Refusals for one reason.
    pub fn get(&self, reason: RefusalReason) -> u64 {
        self.counts.get(&reason).copied().unwrap_or(0)
    }

    /// All refusals.
    pub fn total(&self) -> u64 {
        self.counts.values().sum()
    }

    /// Refusals of records and broadcasts, and failed handshakes: everything except stale
    /// handshake messages, which also occur without any attack when two parties open a channel
    /// to each other at the same moment (the loser's late message is refused as stale).
    pub fn frames(&self) -> u64 {
        self.total() - self.get(RefusalReason::StaleHandshake)
    }

    /// Every reason with a non-zero count.
    pub fn iter(&self) -> impl Iterator<Item = (RefusalReason, u64)> + '_ {
        self.counts.iter().map(|(r, n)| (*r, *n))
    }
}
