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
    /// Participants found these parties' messages wrong and aborted; nothing was installed.
    #[error("{protocol} session {session} aborted: {}", Blame::list(.blamed))]
    Blamed {
        /// The protocol.
        protocol: Protocol,
        /// The session.
        session: SessionId,
        /// Each accusation.
        blamed: Vec<Blame>,
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

/// One accusation made in a session: `by` found `party`'s messages wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blame {
    /// The party accused.
    pub party: PartyId,
    /// The party that found the fault. A fault in a point-to-point message is not publicly
    /// provable: either the accused or the accuser is faulty.
    pub by: PartyId,
    /// What was wrong.
    pub reason: String,
}

impl Blame {
    /// The blamed parties, without repeats, in order.
    pub fn parties(blamed: &[Blame]) -> Vec<PartyId> {
        let mut parties: Vec<PartyId> = blamed.iter().map(|b| b.party).collect();
        parties.sort();
        parties.dedup();
        parties
    }

    fn list(blamed: &[Blame]) -> String {
        blamed
            .iter()
            .map(|b| format!("{} blamed by {}: {}", b.party, b.by, b.reason))
            .collect::<Vec<_>>()
            .join("; ")
    }
}
