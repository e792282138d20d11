//! The messages: a coordinator's signed session start, and a node's signed outcome.
//!
//! Both travel in the clear over the broker (they hold nothing secret) and are authenticated by
//! Ed25519 signatures over a domain label and the canonical encoding of their body:
//! - a [`SignedStart`] by a coordinator key listed in the admin-signed roster;
//! - a [`SignedOutcome`] by the party's identity key from the same roster.
//!
//! A start binds the cluster, the roster hash, the session id, the ordered parties and an
//! expiry, so it cannot be replayed on another cluster, roster or after it expired.

use ed25519_dalek::Signature;
use serde::{Deserialize, Serialize};
use tessera_channel::identity::{CoordinatorKey, PartyIdentity};
use tessera_channel::Roster;
use tessera_mpc::reshare::{Kind, ReshareSetup};
use tessera_policy::{Approval, ApprovedKeyChange, SignRequest};
use tessera_wire::{ClusterId, KeyId, KeyKind, PartyId, Protocol, SessionId};

use crate::spend::{SpendLink, SpendRecord};

/// Largest encoded control message accepted.
pub const MAX_CONTROL_MESSAGE: usize = 256 * 1024;

const START_LABEL: &[u8] = b"tessera/session-start/v1";
const OUTCOME_LABEL: &[u8] = b"tessera/session-outcome/v1";

/// Why a control message was refused.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The bytes do not decode.
    #[error("malformed control message: {0}")]
    Malformed(String),
    /// The signer is not a coordinator of the pinned roster.
    #[error("coordinator {0:?} is not in the roster; only roster coordinators may start sessions")]
    UnknownCoordinator(String),
    /// The sender is not a party of the pinned roster.
    #[error("{0} is not in the roster")]
    UnknownParty(PartyId),
    /// The signature does not verify.
    #[error("bad signature on a control message from {0}")]
    BadSignature(String),
    /// Addressed to another cluster.
    #[error("the message is for cluster {found}, this is {expected}")]
    WrongCluster {
        /// Cluster in the message.
        found: ClusterId,
        /// Our cluster.
        expected: ClusterId,
    },
    /// Made for another roster.
    #[error("the message was made for another roster (roster hash {0}); check that coordinator and nodes pin the same roster")]
    WrongRoster(String),
}

/// What a session does. The session's parties are the committee (aux info, keygen) or the
/// signers (presign, sign, online sign), in protocol order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Operation {
    /// Auxiliary info for the committee of the session's parties (slow; consumes one prime set
    /// from each party's pool).
    AuxInfo,
    /// Distributed key generation of a `threshold`-of-n key of `kind` (ECDSA keys need
    /// their committee's auxiliary info first; FROST keys need none).
    Keygen {
        /// The new key's id.
        key: KeyId,
        /// Signers needed.
        threshold: u16,
        /// What kind of key.
        kind: KeyKind,
    },
    /// A presignature for `key`, to be used by exactly these signers.
    Presign {
        /// The key.
        key: KeyId,
    },
    /// Full interactive signing of an approved request. Every signer re-checks the request,
    /// its approvals and the policy before it takes part. The key's kind picks the protocol
    /// (CGGMP24 for ECDSA keys, FROST for Taproot and Ed25519 keys); a request that asks for
    /// several signatures (a PSBT with several of the key's inputs) runs it once per signature
    /// in one session ([`tessera_mpc::SessionSpec::part`]).
    Sign {
        /// The request, as approvers signed it.
        request: SignRequest,
        /// The approvals the coordinator collected.
        approvals: Vec<Approval>,
        /// The signing's place in the key's spend chain: required when a rolling window
        /// counts the key's spend (`docs/protocols/spend-chain.md`).
        link: Option<SpendLink>,
    },
    /// Online signing of an approved request (master key, empty path) with the presignature
    /// made in session `presignature`; re-checked like [`Operation::Sign`].
    OnlineSign {
        /// The presigning session.
        presignature: SessionId,
        /// The request, as approvers signed it.
        request: SignRequest,
        /// The approvals the coordinator collected.
        approvals: Vec<Approval>,
        /// The signing's place in the key's spend chain, as for [`Operation::Sign`].
        link: Option<SpendLink>,
    },
    /// Delivers records of `key`'s spend chain: each node that holds the key checks them
    /// (signature, links, agreement with what it holds) and keeps them, so that it counts
    /// in its windows what other holders signed. No protocol runs; empty `records` asks
    /// only for the node's place in the chain ([`Output::SpendsRecorded`]).
    RecordSpends {
        /// The key.
        key: KeyId,
        /// Records, oldest first, at most [`crate::spend::MAX_RECORDS_PER_DELIVERY`].
        records: Vec<SpendRecord>,
    },
    /// Resharing `key` to a new committee, or refreshing its committee's shares and
    /// auxiliary info (`docs/protocols/reshare.md`). The session's parties are the setup's
    /// participants. Each keeps its result pending and reports it signed
    /// ([`Output::Reshare`]); the reports of every participant are the activation certificate
    /// of [`Operation::ActivateEpoch`].
    Reshare {
        /// The key.
        key: KeyId,
        /// Who deals, who receives, the key's epoch and public info, the new threshold.
        setup: ReshareSetup,
        /// The admins' approval of this change, which every participant re-checks against
        /// the policy it pins. Required to reshare (it changes who holds the key); a refresh
        /// keeps committee and threshold and may run without one (a scheduled refresh), but
        /// one given must match. Its digest is the setup's `authorisation`.
        approved: Option<Box<ApprovedKeyChange>>,
    },
    /// Reports `key`'s committee, threshold, epoch and public key info as this node holds
    /// them (what a reshare's session start must carry). No protocol runs.
    DescribeKey {
        /// The key.
        key: KeyId,
    },
    /// Reports this node's prime pool: a refresh or reshare takes one prime set from every
    /// receiver. No protocol runs.
    Primes,
    /// Activates the new epoch of reshare session `reshare` of `key` on its certificate: the
    /// signed successful reports of every participant. Each node checks the certificate
    /// itself (signatures, its own report, its epoch) before it acts. No protocol runs.
    ActivateEpoch {
        /// The key.
        key: KeyId,
        /// The reshare session.
        reshare: SessionId,
        /// Every participant's signed outcome of the reshare session.
        certificate: Vec<SignedOutcome>,
    },
    /// Closes the epoch that reshare session `reshare` of `key` replaced, on its closure
    /// certificate: the signed [`Output::EpochActivated`] of every new holder. Every holder of
    /// the old epoch erases it (a participant that missed the activation activates first,
    /// from `certificate`). No protocol runs.
    CloseEpoch {
        /// The key.
        key: KeyId,
        /// The reshare session.
        reshare: SessionId,
        /// The activation certificate (every participant's signed reshare outcome).
        certificate: Vec<SignedOutcome>,
        /// Every new holder's signed activation.
        activated: Vec<SignedOutcome>,
        /// The admins' approved change, which holders that took no part check before they
        /// erase (required for a reshare).
        approved: Option<Box<ApprovedKeyChange>>,
    },
    /// Abandons reshare session `reshare` of `key` here: a pending result is erased on an
    /// abandonment proof (a participant's signed failure of the session, or its signed
    /// [`Output::ReshareAbandoned`]) or after it expired; an activated one goes back to the
    /// retired epoch only on a new holder's proof. A node that has no result records the
    /// session abandoned. No protocol runs.
    AbandonReshare {
        /// The key.
        key: KeyId,
        /// The reshare session.
        reshare: SessionId,
        /// The proof, if the coordinator has one.
        proof: Option<Box<SignedOutcome>>,
    },
}

impl Operation {
    /// The protocol the session runs.
    pub fn protocol(&self) -> Protocol {
        match self {
            Operation::AuxInfo => Protocol::AUX_INFO,
            Operation::Keygen { kind, .. } if kind.is_frost() => Protocol::FROST_KEYGEN,
            Operation::Keygen { .. } => Protocol::KEYGEN,
            Operation::Presign { .. } => Protocol::PRESIGN,
            Operation::Sign { .. } => Protocol::SIGN,
            Operation::OnlineSign { .. } => Protocol::ONLINE_SIGN,
            Operation::Reshare { .. } => Protocol::RESHARE,
            Operation::DescribeKey { .. }
            | Operation::Primes
            | Operation::ActivateEpoch { .. }
            | Operation::CloseEpoch { .. }
            | Operation::AbandonReshare { .. }
            | Operation::RecordSpends { .. } => Protocol::CONTROL,
        }
    }
}

/// A coordinator's order to run one session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionStart {
    /// The cluster.
    pub cluster: ClusterId,
    /// The hash of the roster the coordinator uses.
    pub roster: [u8; 32],
    /// The session; never reused.
    pub session: SessionId,
    /// The parties, in protocol order.
    pub parties: Vec<PartyId>,
    /// Unix seconds when issued.
    pub issued_at: u64,
    /// Unix seconds after which no node starts it.
    pub expires_at: u64,
    /// What to do.
    pub operation: Operation,
}

/// A [`SessionStart`] signed by a roster coordinator.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SignedStart {
    /// The coordinator's name in the roster.
    pub coordinator: String,
    /// The encoded [`SessionStart`].
    pub body: Vec<u8>,
    /// Ed25519 signature over the label and `body`.
    pub signature: Vec<u8>,
}

/// Seconds since the Unix epoch: the clock starts are issued and checked by.
pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn signed_bytes(label: &[u8], body: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(label.len() + body.len());
    bytes.extend_from_slice(label);
    bytes.extend_from_slice(body);
    bytes
}

fn parse_signature(bytes: &[u8], signer: &str) -> Result<Signature, ControlError> {
    Signature::from_slice(bytes).map_err(|_| ControlError::BadSignature(signer.to_owned()))
}

impl SignedStart {
    /// Signs `start` with a coordinator key.
    pub fn sign(start: &SessionStart, key: &CoordinatorKey) -> Self {
        let body = tessera_wire::encode(start);
        let signature = key.sign(&signed_bytes(START_LABEL, &body));
        SignedStart {
            coordinator: key.name().to_owned(),
            body,
            signature: signature.to_bytes().to_vec(),
        }
    }

    /// The wire form.
    pub fn to_bytes(&self) -> Vec<u8> {
        tessera_wire::encode(self)
    }

    /// Parses the wire form (size-limited before decoding).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ControlError> {
        tessera_wire::decode(bytes, MAX_CONTROL_MESSAGE)
            .map_err(|e| ControlError::Malformed(e.to_string()))
    }

    /// Checks the coordinator's signature against `roster` and that the start is for this
    /// cluster and roster; returns the start.
    pub fn verify(&self, roster: &Roster) -> Result<SessionStart, ControlError> {
        let entry = roster
            .coordinator(&self.coordinator)
            .ok_or_else(|| ControlError::UnknownCoordinator(self.coordinator.clone()))?;
        let key = entry
            .verifying_key()
            .map_err(|_| ControlError::BadSignature(self.coordinator.clone()))?;
        let signature = parse_signature(&self.signature, &self.coordinator)?;
        key.verify_strict(&signed_bytes(START_LABEL, &self.body), &signature)
            .map_err(|_| ControlError::BadSignature(self.coordinator.clone()))?;
        let start: SessionStart = tessera_wire::decode(&self.body, MAX_CONTROL_MESSAGE)
            .map_err(|e| ControlError::Malformed(e.to_string()))?;
        if start.cluster != roster.cluster {
            return Err(ControlError::WrongCluster {
                found: start.cluster,
                expected: roster.cluster.clone(),
            });
        }
        if start.roster != roster.hash().0 {
            return Err(ControlError::WrongRoster(hex::encode(start.roster)));
        }
        Ok(start)
    }
}

/// What a party produced.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Output {
    /// Auxiliary info is stored for the committee.
    AuxInfo,
    /// The key share is stored; the key's public key and HD chain code.
    Keygen {
        /// The (master, untweaked) public key: SEC1 compressed on secp256k1 (ECDSA, Taproot),
        /// 32 bytes for Ed25519.
        public_key: Vec<u8>,
        /// The SLIP-10 chain code child keys are derived with (public).
        chain_code: Vec<u8>,
    },
    /// The presignature is stored, named by its session.
    Presign {
        /// The presigning session (use it in [`Operation::OnlineSign`]).
        presignature: SessionId,
    },
    /// The request's signatures, verified against the key at the request's path: one
    /// 64-byte signature per signing the request asks for ([`tessera_policy::Derived`]), in
    /// order: ECDSA `r || s` (low-s), BIP-340, or Ed25519. One signature for every payload but
    /// a PSBT with several of the key's inputs.
    Signature {
        /// The signatures, concatenated.
        signature: Vec<u8>,
    },
    /// The reshare ran here; the result is pending. Signed, it is this party's part of the
    /// session's activation certificate.
    Reshare {
        /// What this party holds pending.
        report: EpochReport,
    },
    /// The new epoch is active here (signed: part of the closure certificate).
    EpochActivated {
        /// The key.
        key: KeyId,
        /// The reshare session.
        reshare: SessionId,
        /// The epoch now active (or, for a party that left, now in force elsewhere).
        epoch: u64,
    },
    /// The old epoch is closed here: its share and auxiliary info are erased (or there was
    /// nothing to erase).
    EpochClosed {
        /// The key.
        key: KeyId,
        /// The reshare session.
        reshare: SessionId,
        /// The epoch closed.
        epoch: u64,
        /// Whether this node held that epoch and erased it now.
        erased: bool,
    },
    /// The reshare session is abandoned here: its result, if any, is erased, and it can never
    /// be activated here (signed: an abandonment proof).
    ReshareAbandoned {
        /// The key.
        key: KeyId,
        /// The reshare session.
        reshare: SessionId,
    },
    /// A key as this node holds it.
    KeyInfo {
        /// The key's committee, in key order.
        committee: Vec<PartyId>,
        /// Signers needed.
        threshold: u16,
        /// The key's epoch (0 after key generation, one more after each rotation).
        epoch: u64,
        /// The key's public info (public key, public shares, evaluation points, chain code),
        /// as the library's JSON.
        key_info: String,
    },
    /// The node keeps the records delivered; where its chain of the key stands.
    SpendsRecorded {
        /// The key.
        key: KeyId,
        /// The last place up to which this node holds every record (0: none).
        head: u64,
        /// That record's hash (zeros for none): the `prev` of the next link.
        hash: [u8; 32],
    },
    /// This node's prime pool.
    Primes {
        /// Prime sets ready.
        ready: u32,
        /// Whether more are being generated.
        generating: bool,
    },
}

/// What a participant of a reshare or refresh holds pending when its side succeeded: the
/// statement its signed [`Output::Reshare`] makes (`docs/protocols/reshare.md`, Reports and
/// certificates). Every participant reports the same, except `aux`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochReport {
    /// The key.
    pub key: KeyId,
    /// The reshare session.
    pub reshare: SessionId,
    /// Refresh or reshare.
    pub kind: Kind,
    /// The epoch the session started from; the new one is the next.
    pub from_epoch: u64,
    /// The key's committee in that epoch, in key order.
    pub old_committee: Vec<PartyId>,
    /// Who dealt, in dealing order.
    pub dealers: Vec<PartyId>,
    /// The new committee, in its key order.
    pub new_committee: Vec<PartyId>,
    /// The new threshold.
    pub new_threshold: u16,
    /// The key's (master, untweaked) public key, compressed as key generation reports it
    /// (SEC1 on secp256k1, 32 bytes for Ed25519); it does not change.
    pub public_key: Vec<u8>,
    /// The session's confirmation: a hash of the session and the new public key info.
    pub confirmation: [u8; 32],
    /// The digest of the admins' approval (32 zero bytes for a refresh without one).
    pub authorisation: [u8; 32],
    /// For a receiver of an ECDSA key, the digest of the public part of the new auxiliary
    /// info (FROST keys have none).
    pub aux: Option<[u8; 32]>,
}

impl EpochReport {
    /// The new epoch.
    pub fn to_epoch(&self) -> u64 {
        self.from_epoch.saturating_add(1)
    }

    /// The session's participants, in protocol order: the dealers, then the receivers that
    /// do not deal.
    pub fn participants(&self) -> Vec<PartyId> {
        tessera_mpc::reshare::participants(&self.dealers, &self.new_committee)
    }

    /// Whether `other` reports the same session result, apart from the receiver-only
    /// auxiliary digest.
    pub fn same_result(&self, other: &EpochReport) -> bool {
        EpochReport {
            aux: None,
            ..self.clone()
        } == EpochReport {
            aux: None,
            ..other.clone()
        }
    }
}

/// Why a party's side of a session failed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// What happened and what to do.
    pub message: String,
    /// Parties this node blames (did not deliver, or sent invalid messages).
    pub blamed: Vec<PartyId>,
}

/// One party's report of one session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionOutcome {
    /// The session.
    pub session: SessionId,
    /// The reporting party.
    pub party: PartyId,
    /// Its result.
    pub result: Result<Output, Failure>,
}

/// A [`SessionOutcome`] signed by the reporting party.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedOutcome {
    /// The reporting party.
    pub party: PartyId,
    /// The encoded [`SessionOutcome`].
    pub body: Vec<u8>,
    /// Ed25519 signature over the label and `body`.
    pub signature: Vec<u8>,
}

impl SignedOutcome {
    /// Signs `outcome` with the party's identity.
    pub fn sign(outcome: &SessionOutcome, identity: &PartyIdentity) -> Self {
        let body = tessera_wire::encode(outcome);
        let signature = identity.sign(&signed_bytes(OUTCOME_LABEL, &body));
        SignedOutcome {
            party: identity.party(),
            body,
            signature: signature.to_vec(),
        }
    }

    /// The wire form.
    pub fn to_bytes(&self) -> Vec<u8> {
        tessera_wire::encode(self)
    }

    /// Parses the wire form.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ControlError> {
        tessera_wire::decode(bytes, MAX_CONTROL_MESSAGE)
            .map_err(|e| ControlError::Malformed(e.to_string()))
    }

    /// Checks the party's signature against `roster` and returns the outcome.
    pub fn verify(&self, roster: &Roster) -> Result<SessionOutcome, ControlError> {
        let entry = roster
            .entry(self.party)
            .ok_or(ControlError::UnknownParty(self.party))?;
        let who = self.party.to_string();
        let key = entry
            .verifying_key()
            .map_err(|_| ControlError::BadSignature(who.clone()))?;
        let signature = parse_signature(&self.signature, &who)?;
        key.verify_strict(&signed_bytes(OUTCOME_LABEL, &self.body), &signature)
            .map_err(|_| ControlError::BadSignature(who.clone()))?;
        let outcome: SessionOutcome = tessera_wire::decode(&self.body, MAX_CONTROL_MESSAGE)
            .map_err(|e| ControlError::Malformed(e.to_string()))?;
        if outcome.party != self.party {
            return Err(ControlError::BadSignature(who));
        }
        Ok(outcome)
    }
}
