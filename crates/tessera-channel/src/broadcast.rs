//! Signed broadcast.
//!
//! A broadcast payload travels through each pairwise channel like any record, but also carries
//! the sender's Ed25519 signature over `(cluster, session, round, protocol, sender, H(payload))`.
//! The recipient checks it against the roster before delivering, and can keep the
//! [`BroadcastEvidence`] to show later (echo checks, blame): anyone with the roster can verify it.

use ed25519_dalek::Signature;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tessera_wire::{ClusterId, PartyId, Protocol, Round, SessionId};

use crate::error::ChannelError;
use crate::roster::Roster;

const BROADCAST_LABEL: &str = "tessera/broadcast/v1";

/// Bytes of signature appended to a broadcast payload inside the sealed record.
pub const SIGNATURE_LEN: usize = 64;

/// A broadcast's signed statement, enough to verify it without the payload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BroadcastEvidence {
    /// Cluster.
    pub cluster: ClusterId,
    /// Session.
    pub session: SessionId,
    /// Round.
    pub round: Round,
    /// Protocol.
    pub protocol: Protocol,
    /// The sender.
    pub sender: PartyId,
    /// SHA-256 of the payload.
    pub payload_hash: [u8; 32],
    /// Ed25519 signature over the statement.
    pub signature: Vec<u8>,
}

#[derive(Serialize)]
struct Statement<'a> {
    label: &'a str,
    cluster: &'a ClusterId,
    session: SessionId,
    round: Round,
    protocol: Protocol,
    sender: PartyId,
    payload_hash: [u8; 32],
}

impl BroadcastEvidence {
    /// The statement for `payload`, without a signature yet.
    pub(crate) fn unsigned(
        cluster: &ClusterId,
        session: SessionId,
        round: Round,
        protocol: Protocol,
        sender: PartyId,
        payload: &[u8],
    ) -> Self {
        BroadcastEvidence {
            cluster: cluster.clone(),
            session,
            round,
            protocol,
            sender,
            payload_hash: Sha256::digest(payload).into(),
            signature: Vec::new(),
        }
    }

    /// The exact bytes that are signed.
    pub fn statement_bytes(&self) -> Vec<u8> {
        tessera_wire::encode(&Statement {
            label: BROADCAST_LABEL,
            cluster: &self.cluster,
            session: self.session,
            round: self.round,
            protocol: self.protocol,
            sender: self.sender,
            payload_hash: self.payload_hash,
        })
    }

    /// Checks the signature against the sender's key in `roster`.
    pub fn verify(&self, roster: &Roster) -> Result<(), ChannelError> {
        let bad = || ChannelError::BadBroadcastSignature { from: self.sender };
        if roster.cluster != self.cluster {
            return Err(bad());
        }
        let entry = roster
            .entry(self.sender)
            .ok_or(ChannelError::UnknownParty(self.sender))?;
        let key = entry.verifying_key().map_err(|_| bad())?;
        let sig: [u8; SIGNATURE_LEN] = self.signature.as_slice().try_into().map_err(|_| bad())?;
        key.verify_strict(&self.statement_bytes(), &Signature::from_bytes(&sig))
            .map_err(|_| bad())
    }

    /// Whether `payload` is the one this evidence speaks of.
    pub fn covers(&self, payload: &[u8]) -> bool {
        let h: [u8; 32] = Sha256::digest(payload).into();
        subtle::ConstantTimeEq::ct_eq(&h[..], &self.payload_hash[..]).into()
    }
}
