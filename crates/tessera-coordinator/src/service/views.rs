//! What the service shows: requests, keys, committees, policies and proposals, ready for an API
//! (JSON: ids, digests, hashes and bytes as lowercase hex; addresses EIP-55).

use std::fmt::Display;

use serde::{Serialize, Serializer};
use tessera_policy::{KeyChange, PolicyChange, SignRequest};
use tessera_wire::{KeyId, KeyKind, PartyId, RequestId};

use crate::store::{
    CommitteeStatus, Decision, KeyChangeState, KeyStatus, ProposalId, ProposalState, RequestKind,
    RequestState,
};

/// Serializes a value by its `Display` text (ids, states).
fn display<T: Display, S: Serializer>(value: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(value)
}

/// One principal's decision on a request or a policy proposal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DecisionView {
    /// The principal.
    pub principal: String,
    /// Approve or reject.
    #[serde(serialize_with = "display")]
    pub decision: Decision,
    /// When it was received (Unix seconds).
    pub at: i64,
}

/// A signing request as the service shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RequestView {
    /// The client-chosen id.
    #[serde(serialize_with = "display")]
    pub id: RequestId,
    /// The key's id.
    #[serde(serialize_with = "display")]
    pub key_id: KeyId,
    /// The key's name.
    pub key_name: String,
    /// The derivation path (empty = the master key).
    pub path: Vec<u32>,
    /// What it signs, by the policy's kinds.
    #[serde(serialize_with = "display")]
    pub kind: RequestKind,
    /// What it does, in words (derived from the payload), e.g. `transfer of 5 eth:1 to 0x…`.
    pub action: String,
    /// Where it is in its life.
    #[serde(serialize_with = "display")]
    pub state: RequestState,
    /// The digest to be signed (hex), derived from the payload.
    pub digest: String,
    /// The request digest approvers sign (hex): see
    /// [`SignRequest::request_digest`]; recompute it from `request` before signing.
    pub request_digest: String,
    /// The policy it was made under (hex SHA-256 of the document).
    pub policy_hash: String,
    /// The operator who submitted it.
    pub submitted_by: String,
    /// Creation time (Unix seconds).
    pub created_at: u64,
    /// Expiry time (Unix seconds).
    pub expires_at: u64,
    /// When its record last changed (Unix seconds).
    pub updated_at: i64,
    /// Approvals and rejections, oldest first.
    pub decisions: Vec<DecisionView>,
    /// Why it is not (yet) allowed: the reasons of its last policy evaluation, or who
    /// rejected or cancelled it.
    pub reasons: Vec<String>,
    /// Once signed: the signed raw transaction (Ethereum transactions) or the 65-byte
    /// `r || s || v` signature with `v` 27 or 28 (messages), hex.
    pub result: Option<String>,
    /// The address that signs: the sender of the transaction, or the signer of the message
    /// (the child key's address for a non-empty path), EIP-55.
    pub address: Option<String>,
    /// Signing sessions started for it.
    pub attempts: u32,
    /// The last signing error.
    pub error: Option<String>,
    /// The request itself, as approvers sign it and nodes re-check it.
    pub request: SignRequest,
}

/// A committee: parties that share auxiliary info.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CommitteeView {
    /// The parties, in protocol order.
    pub parties: Vec<PartyId>,
    /// Where its set-up is.
    #[serde(serialize_with = "display")]
    pub status: CommitteeStatus,
    /// Why the set-up failed.
    pub error: Option<String>,
    /// When the set-up was requested (Unix seconds).
    pub created_at: i64,
    /// When the record last changed (Unix seconds).
    pub updated_at: i64,
}

/// A threshold key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KeyView {
    /// Its id.
    #[serde(serialize_with = "display")]
    pub id: KeyId,
    /// Its unique name.
    pub name: String,
    /// Signers needed.
    pub threshold: u16,
    /// The parties holding shares.
    pub committee: Vec<PartyId>,
    /// Where it is in its life.
    #[serde(serialize_with = "display")]
    pub status: KeyStatus,
    /// `ecdsa`, `taproot` or `ed25519`.
    #[serde(serialize_with = "display")]
    pub kind: KeyKind,
    /// The public key (hex), once generated: SEC1 compressed on secp256k1 (for a Taproot key
    /// the internal key, untweaked), 32 bytes for Ed25519.
    pub public_key: Option<String>,
    /// The HD chain code (hex; public), if key generation reported one.
    pub chain_code: Option<String>,
    /// The master key's address on its default chain: Ethereum (EIP-55) for ECDSA keys,
    /// Bitcoin mainnet P2TR for Taproot keys, Solana for Ed25519 keys.
    pub address: Option<String>,
    /// Why key generation failed.
    pub error: Option<String>,
    /// When key generation was requested (Unix seconds).
    pub created_at: i64,
    /// When the record last changed (Unix seconds).
    pub updated_at: i64,
    /// The automatic refresh interval (seconds), if scheduled.
    pub refresh_every_secs: Option<i64>,
    /// When the next scheduled refresh is due (Unix seconds), if scheduled.
    pub next_refresh_at: Option<i64>,
    /// When the shares last changed by a refresh or reshare (Unix seconds), if ever.
    pub rotated_at: Option<i64>,
    /// The key's epoch: 0 after key generation, one more after each refresh or reshare.
    pub epoch: u64,
    /// The reshare session whose activation has not reached every participant yet (resent
    /// automatically, or with `tessera key activate`).
    pub activation_due: Option<String>,
    /// Holders of the key's previous epoch that have not confirmed erasing it yet (asked again
    /// every rotation check, or with `tessera key activate`).
    pub erasure_unconfirmed: Vec<PartyId>,
}

/// A key's (child) public key and address at a derivation path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KeyAddress {
    /// The key.
    #[serde(serialize_with = "display")]
    pub key_id: KeyId,
    /// The key's kind.
    #[serde(serialize_with = "display")]
    pub kind: KeyKind,
    /// The path (empty = the master key).
    pub path: Vec<u32>,
    /// `ethereum`, `bitcoin` or `solana`.
    pub chain: String,
    /// The Bitcoin network the address is for (Bitcoin only).
    pub network: Option<String>,
    /// The public key at the path as the chain sees it (hex): SEC1 compressed for ECDSA, the
    /// x-only Taproot output key, the Ed25519 key. A PSBT request names it as its `signer`.
    pub public_key: String,
    /// The address: EIP-55, bech32 (P2WPKH), bech32m (P2TR) or base58 (Solana).
    pub address: String,
}

/// The active policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PolicyView {
    /// SHA-256 of the document's exact bytes (hex): what requests name and nodes pin.
    pub hash: String,
    /// Its revision.
    pub revision: u64,
    /// The document (TOML).
    pub document: String,
    /// When it became active here (Unix seconds).
    pub activated_at: i64,
}

/// A policy change proposal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ProposalView {
    /// The proposal's id.
    #[serde(serialize_with = "display")]
    pub id: ProposalId,
    /// Where it is in its life.
    #[serde(serialize_with = "display")]
    pub state: ProposalState,
    /// The proposing admin.
    pub proposed_by: String,
    /// The proposed document's hash (hex): the pin nodes need once it is applied.
    pub document_hash: String,
    /// The digest admins sign to approve (hex): see [`PolicyChange::change_digest`];
    /// recompute it from `change` before signing.
    pub change_digest: String,
    /// Approvals, oldest first.
    pub decisions: Vec<DecisionView>,
    /// When it was proposed (Unix seconds).
    pub created_at: i64,
    /// When it expires unapproved (Unix seconds).
    pub expires_at: i64,
    /// The change itself, as admins sign it.
    pub change: PolicyChange,
}

/// A key change (refresh, reshare, refresh schedule) as the service shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KeyChangeView {
    /// Its id.
    #[serde(serialize_with = "display")]
    pub id: ProposalId,
    /// The key's id.
    #[serde(serialize_with = "display")]
    pub key_id: KeyId,
    /// The key's name.
    pub key_name: String,
    /// What it does, in words.
    pub operation: String,
    /// Where it is in its life.
    #[serde(serialize_with = "display")]
    pub state: KeyChangeState,
    /// Why carrying it out failed.
    pub error: Option<String>,
    /// The proposing admin.
    pub proposed_by: String,
    /// The digest admins sign to approve (hex): see [`KeyChange::change_digest`]; recompute
    /// it from `change` before signing.
    pub change_digest: String,
    /// Approvals, oldest first.
    pub decisions: Vec<DecisionView>,
    /// When it was proposed (Unix seconds).
    pub created_at: i64,
    /// When it expires unapproved (Unix seconds).
    pub expires_at: i64,
    /// When its record last changed (Unix seconds).
    pub updated_at: i64,
    /// The change itself, as admins sign it and nodes re-check it.
    pub change: KeyChange,
    /// What the proposer should know now, e.g. that a receiver has no prime set ready, so the
    /// change will wait for one when it runs (only in the answer to the proposal).
    pub notes: Vec<String>,
}

/// A signing request as a list shows it: what it does and where it stands, without the
/// request itself or the decisions on it ([`RequestView`] has them).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RequestSummary {
    /// The client-chosen id.
    #[serde(serialize_with = "display")]
    pub id: RequestId,
    /// The key's id.
    #[serde(serialize_with = "display")]
    pub key_id: KeyId,
    /// The key's name.
    pub key_name: String,
    /// What it signs.
    #[serde(serialize_with = "display")]
    pub kind: RequestKind,
    /// What it does, in words.
    pub action: String,
    /// Where it is in its life.
    #[serde(serialize_with = "display")]
    pub state: RequestState,
    /// The operator who submitted it.
    pub submitted_by: String,
    /// Creation time (Unix seconds).
    pub created_at: i64,
    /// When its record last changed (Unix seconds).
    pub updated_at: i64,
    /// Signing sessions started for it.
    pub attempts: u32,
    /// The last signing error.
    pub error: Option<String>,
}

/// A key change as a list shows it, without the change itself or its approvals
/// ([`KeyChangeView`] has them).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KeyChangeSummary {
    /// Its id.
    #[serde(serialize_with = "display")]
    pub id: ProposalId,
    /// The key's id.
    #[serde(serialize_with = "display")]
    pub key_id: KeyId,
    /// The key's name.
    pub key_name: String,
    /// What it does, in words.
    pub operation: String,
    /// Where it is in its life.
    #[serde(serialize_with = "display")]
    pub state: KeyChangeState,
    /// Why carrying it out failed.
    pub error: Option<String>,
    /// The proposing admin.
    pub proposed_by: String,
    /// When it was proposed (Unix seconds).
    pub created_at: i64,
    /// When it expires unapproved (Unix seconds).
    pub expires_at: i64,
    /// When its record last changed (Unix seconds).
    pub updated_at: i64,
}

/// A policy proposal as a list shows it, without the document or its approvals
/// ([`ProposalView`] has them).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ProposalSummary {
    /// The proposal's id.
    #[serde(serialize_with = "display")]
    pub id: ProposalId,
    /// Where it is in its life.
    #[serde(serialize_with = "display")]
    pub state: ProposalState,
    /// The proposing admin.
    pub proposed_by: String,
    /// The proposed document's hash (hex).
    pub document_hash: String,
    /// When it was proposed (Unix seconds).
    pub created_at: i64,
    /// When it expires unapproved (Unix seconds).
    pub expires_at: i64,
}

/// What the coordinator knows of a party's recent sessions (kept in memory).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PartyHealthView {
    /// The party.
    pub party: PartyId,
    /// Sessions that failed in a row with this party blamed or silent.
    pub consecutive_failures: u32,
    /// Seconds since its last failure, if any.
    pub secs_since_failure: Option<u64>,
}
