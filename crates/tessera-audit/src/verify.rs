//! Checks a sequence of records: every hash, every signature against the roster's keys, and
//! each emitter's chain (sequence `1, 2, 3, …` with no gap, each `prev_hash` equal to the
//! previous record's hash). Records of several emitters may be interleaved (a stream), but each
//! emitter's own records must appear in order.
//!
//! The first broken record stops the check: after it, nothing of that chain can be trusted.
//! Note what a chain cannot show by itself: records cut off at the end of a file. Compare the
//! summary's heads with another copy (the stream, or a head noted earlier) to catch that.

use std::collections::BTreeMap;
use std::fmt;

use ed25519_dalek::VerifyingKey;
use serde::Serialize;
use tessera_channel::Roster;

use crate::{AuditError, AuditRecord, Emitter, EventHash};

/// The keys records must be signed with: each roster party's and coordinator's Ed25519 key.
#[derive(Clone, Debug)]
pub struct TrustedKeys {
    cluster: String,
    keys: BTreeMap<Emitter, VerifyingKey>,
}

impl TrustedKeys {
    /// Every party and coordinator of `roster`.
    pub fn from_roster(roster: &Roster) -> Result<Self, AuditError> {
        let mut keys = BTreeMap::new();
        for party in &roster.parties {
            let key = party
                .verifying_key()
                .map_err(|e| AuditError::Invalid(format!("roster entry {}: {e}", party.party)))?;
            keys.insert(Emitter::Party(party.party), key);
        }
        for coordinator in &roster.coordinators {
            let key = coordinator.verifying_key().map_err(|e| {
                AuditError::Invalid(format!("roster coordinator {}: {e}", coordinator.name))
            })?;
            keys.insert(Emitter::Coordinator(coordinator.name.clone()), key);
        }
        Ok(TrustedKeys {
            cluster: roster.cluster.to_string(),
            keys,
        })
    }

    /// Explicit keys for `cluster`.
    pub fn new(cluster: impl Into<String>, keys: BTreeMap<Emitter, VerifyingKey>) -> Self {
        TrustedKeys {
            cluster: cluster.into(),
            keys,
        }
    }

    /// The cluster the signatures are bound to.
    pub fn cluster(&self) -> &str {
        &self.cluster
    }
}

/// Why a record breaks the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BrokenReason {
    /// The line or message is not a record.
    Malformed {
        /// The parser's message.
        message: String,
    },
    /// The emitter is not in the roster.
    UnknownEmitter,
    /// The fields do not hash to the stored hash: the record was edited.
    HashMismatch {
        /// The hash of the fields as found.
        computed: EventHash,
    },
    /// The signature is not the emitter's.
    BadSignature,
    /// A sequence number out of order: an event is missing, repeated or moved.
    SequenceGap {
        /// The number expected here.
        expected: u64,
    },
    /// The record does not point at the emitter's previous record.
    BrokenLink {
        /// The previous record's hash.
        expected: EventHash,
    },
}

impl fmt::Display for BrokenReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BrokenReason::Malformed { message } => write!(f, "not an audit record: {message}"),
            BrokenReason::UnknownEmitter => {
                write!(
                    f,
                    "the emitter is not in the roster (no key to check it with)"
                )
            }
            BrokenReason::HashMismatch { computed } => write!(
                f,
                "the record was altered: its fields hash to {computed}, not to its stored hash"
            ),
            BrokenReason::BadSignature => {
                write!(f, "the signature is not the emitter's (forged or altered)")
            }
            BrokenReason::SequenceGap { expected } => write!(
                f,
                "sequence out of order: expected seq {expected} (an event was deleted, \
                 repeated, moved or inserted)"
            ),
            BrokenReason::BrokenLink { expected } => write!(
                f,
                "prev_hash does not match the emitter's previous record ({expected})"
            ),
        }
    }
}

/// The first record that breaks the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Broken {
    /// Where: the line of a file or the message of a stream, from 1.
    pub position: u64,
    /// The record's emitter, if it could be read.
    pub emitter: Option<Emitter>,
    /// The record's sequence number, if it could be read.
    pub seq: Option<u64>,
    /// Why.
    pub reason: BrokenReason,
}

impl fmt::Display for Broken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "record {}", self.position)?;
        if let (Some(emitter), Some(seq)) = (&self.emitter, self.seq) {
            write!(f, " ({emitter} seq {seq})")?;
        }
        write!(f, ": {}", self.reason)
    }
}

/// One emitter's chain as verified.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ChainSummary {
    /// Records checked.
    pub events: u64,
    /// The last sequence number.
    pub last_seq: u64,
    /// The last record's hash: note it to detect later truncation.
    pub head: EventHash,
    /// The first record's time (ms since the epoch).
    pub first_time: u64,
    /// The last record's time (ms since the epoch).
    pub last_time: u64,
}

/// A log that verified.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Records checked.
    pub events: u64,
    /// Each emitter's chain.
    pub chains: BTreeMap<Emitter, ChainSummary>,
}

/// Checks records one at a time.
pub struct Verifier {
    keys: TrustedKeys,
    position: u64,
    summary: Summary,
}

impl Verifier {
    /// A verifier trusting `keys`.
    pub fn new(keys: TrustedKeys) -> Self {
        Verifier {
            keys,
            position: 0,
            summary: Summary::default(),
        }
    }

    /// Checks the next record (or the reason it could not be read).
    pub fn push(&mut self, item: Result<AuditRecord, AuditError>) -> Result<(), Broken> {
        self.position += 1;
        let position = self.position;
        let record = item.map_err(|e| Broken {
            position,
            emitter: None,
            seq: None,
            reason: BrokenReason::Malformed {
                message: e.to_string(),
            },
        })?;
        let broken = |reason| Broken {
            position,
            emitter: Some(record.emitter.clone()),
            seq: Some(record.seq),
            reason,
        };
        let Some(key) = self.keys.keys.get(&record.emitter) else {
            return Err(broken(BrokenReason::UnknownEmitter));
        };
        let computed = record.compute_hash();
        if computed != record.hash {
            return Err(broken(BrokenReason::HashMismatch { computed }));
        }
        if !record.verify_signature(&self.keys.cluster, key) {
            return Err(broken(BrokenReason::BadSignature));
        }
        let chain = self.summary.chains.get(&record.emitter);
        let (expected_seq, expected_prev) = match chain {
            None => (1, EventHash::GENESIS),
            Some(c) => (c.last_seq + 1, c.head),
        };
        if record.seq != expected_seq {
            return Err(broken(BrokenReason::SequenceGap {
                expected: expected_seq,
            }));
        }
        if record.prev_hash != expected_prev {
            return Err(broken(BrokenReason::BrokenLink {
                expected: expected_prev,
            }));
        }
        let chain = self
            .summary
            .chains
            .entry(record.emitter.clone())
            .or_insert(ChainSummary {
                events: 0,
                last_seq: 0,
                head: EventHash::GENESIS,
                first_time: record.time,
                last_time: record.time,
            });
        chain.events += 1;
        chain.last_seq = record.seq;
        chain.head = record.hash;
        chain.last_time = record.time;
        self.summary.events += 1;
        Ok(())
    }

    /// The summary of everything checked so far.
    pub fn finish(self) -> Summary {
        self.summary
    }

    /// Checks every record of `items`.
    pub fn verify_all(
        keys: TrustedKeys,
        items: impl IntoIterator<Item = Result<AuditRecord, AuditError>>,
    ) -> Result<Summary, Broken> {
        let mut verifier = Verifier::new(keys);
        for item in items {
            verifier.push(item)?;
        }
        Ok(verifier.finish())
    }
}
