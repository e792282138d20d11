use tessera_wire::{PartyId, Protocol, SessionId};

/// Why a protocol session failed.
#[derive(Debug, thiserror::Error)]
pub enum MpcError {
    /// A round's deadline passed without messages from these parties.
    #[error("{protocol} session {session} timed out in round {round}: no message from {}", PartyId::list(.missing))]
    Timeout {
        /// The protocol.
        protocol: Protocol,
        /// The session.
        session: SessionId,
        /// The round that stalled.
        round: u16,
        /// Parties that did not deliver.
        missing: Vec<PartyId>,
    },
    /// A party sent a message that does not decode or does not belong to its round.
    #[error("{protocol} session {session}: {from} sent an invalid message ({reason})")]
    InvalidMessage {
        /// The protocol.
        protocol: Protocol,
        /// The session.
        session: SessionId,
        /// The sender, to blame.
        from: PartyId,
        /// What was wrong.
        reason: String,
    },
    /// The protocol library aborted. `detail` is the library's own account, which names
    /// misbehaving parties by their index in the session when it can.
    #[error("{protocol} session {session} aborted: {detail}")]
    Aborted {
        /// The protocol.
        protocol: Protocol,
        /// The session.
        session: SessionId,
        /// The library's error.
        detail: String,
    },
    /// The session description is not usable.
    #[error("invalid session: {0}")]
    InvalidSession(String),
    /// The HD derivation path cannot be used with this key.
    #[error("invalid derivation path: {0} (only non-hardened indices below 2^31, on keys generated with HD enabled)")]
    InvalidPath(String),
    /// Sending failed.
    #[error("cannot send: {0}")]
    Send(String),
    /// The produced signature does not verify against the public key; it was not released.
    #[error("the combined signature does not verify against the public key; not released")]
    SignatureInvalid,
}
