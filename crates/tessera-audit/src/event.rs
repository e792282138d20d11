//! An audit event, its canonical encoding, hash and signature.
//!
//! The hash of an event is SHA-256 over this encoding (every length is a big-endian `u64`):
//!
//! ```text
//! "tessera-audit/v1\n"
//! seq (u64) || time_ms (u64)
//! len || emitter || len || actor || len || action || len || subject
//! count || (len || key || len || value) for each detail, sorted by key
//! prev_hash (32 bytes)
//! ```
//!
//! The signature is Ed25519 by the emitter's roster key over
//! `"tessera-audit/v1 signature\n" || len || cluster || hash`, so that no other signed message
//! of Tessera's and no other cluster's log can pass for it.
//! Records are stored as one JSON object per line; a verifier recomputes the hash from the
//! fields, so the JSON layout itself carries no meaning.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use ed25519_dalek::{Signature, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tessera_wire::PartyId;

use crate::AuditError;

const HASH_DOMAIN: &[u8] = b"tessera-audit/v1\n";
const SIGNATURE_DOMAIN: &[u8] = b"tessera-audit/v1 signature\n";

/// Longest actor, action or subject, in bytes.
pub const MAX_FIELD: usize = 256;
/// Most details one event may carry.
pub const MAX_DETAILS: usize = 32;
/// Longest detail value, in bytes.
pub const MAX_DETAIL_VALUE: usize = 2048;

/// Who wrote an event: a party node or a roster coordinator.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Emitter {
    /// A party node (`p1`).
    Party(PartyId),
    /// A roster coordinator (`coordinator:<name>`).
    Coordinator(String),
}

impl Emitter {
    /// The last token of the emitter's NATS subject (`tessera.<c>.audit.<token>`): the party
    /// number, or `coord-<name>` (coordinator names are `a-z`, `0-9` and `-`).
    pub fn subject_token(&self) -> String {
        match self {
            Emitter::Party(p) => p.0.to_string(),
            Emitter::Coordinator(name) => format!("coord-{name}"),
        }
    }
}

impl fmt::Display for Emitter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Emitter::Party(p) => write!(f, "{p}"),
            Emitter::Coordinator(name) => write!(f, "coordinator:{name}"),
        }
    }
}

impl FromStr for Emitter {
    type Err = AuditError;
    fn from_str(s: &str) -> Result<Self, AuditError> {
        if let Some(name) = s.strip_prefix("coordinator:") {
            let valid = !name.is_empty()
                && name.len() <= 32
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if valid {
                return Ok(Emitter::Coordinator(name.to_owned()));
            }
        } else if s.starts_with('p') {
            if let Ok(p) = s.parse::<PartyId>() {
                return Ok(Emitter::Party(p));
            }
        }
        Err(AuditError::Invalid(format!(
            "{s:?} is not an emitter (expected p<number> or coordinator:<name>)"
        )))
    }
}

impl Serialize for Emitter {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Emitter {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The SHA-256 of an event's canonical encoding.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct EventHash(pub [u8; 32]);

impl EventHash {
    /// The `prev_hash` of an emitter's first event.
    pub const GENESIS: EventHash = EventHash([0; 32]);
}

impl fmt::Display for EventHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for EventHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EventHash({self})")
    }
}

impl FromStr for EventHash {
    type Err = AuditError;
    fn from_str(s: &str) -> Result<Self, AuditError> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out)
            .map_err(|_| AuditError::Invalid(format!("{s:?} is not a 64-hex-digit hash")))?;
        Ok(EventHash(out))
    }
}

impl Serialize for EventHash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for EventHash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// What an emitter wants to record: everything but the chain fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewEvent {
    /// Who caused it: a principal name, a party id, or `system`.
    pub actor: String,
    /// What happened, dotted: `request.approved`, `session.joined`, `node.started`.
    pub action: String,
    /// What it happened to: `request:<id>`, `key:<id>`, `session:<id>`, `policy:<hash>`.
    pub subject: String,
    /// Public facts about it (ids, hashes, reasons). Never a secret.
    pub details: BTreeMap<String, String>,
}

impl NewEvent {
    /// An event with no details.
    pub fn new(
        actor: impl Into<String>,
        action: impl Into<String>,
        subject: impl Into<String>,
    ) -> Self {
        NewEvent {
            actor: actor.into(),
            action: action.into(),
            subject: subject.into(),
            details: BTreeMap::new(),
        }
    }

    /// Adds one detail.
    pub fn detail(mut self, key: impl Into<String>, value: impl ToString) -> Self {
        self.details.insert(key.into(), value.to_string());
        self
    }

    /// Checks the size limits, so that a record always fits one stream message.
    pub fn check(&self) -> Result<(), AuditError> {
        for (name, value) in [
            ("actor", &self.actor),
            ("action", &self.action),
            ("subject", &self.subject),
        ] {
            if value.is_empty() || value.len() > MAX_FIELD {
                return Err(AuditError::Invalid(format!(
                    "the event's {name} must be 1 to {MAX_FIELD} bytes (it is {})",
                    value.len()
                )));
            }
        }
        if self.details.len() > MAX_DETAILS {
            return Err(AuditError::Invalid(format!(
                "an event carries at most {MAX_DETAILS} details (this one has {})",
                self.details.len()
            )));
        }
        for (key, value) in &self.details {
            if key.is_empty() || key.len() > MAX_FIELD || value.len() > MAX_DETAIL_VALUE {
                return Err(AuditError::Invalid(format!(
                    "detail {key:?}: keys are 1 to {MAX_FIELD} bytes, values at most \
                     {MAX_DETAIL_VALUE}"
                )));
            }
        }
        Ok(())
    }
}

/// One event as stored: the event, its hash and the emitter's signature.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditRecord {
    /// Position in the emitter's chain, from 1.
    pub seq: u64,
    /// When, in milliseconds since the Unix epoch (UTC), by the emitter's clock.
    pub time: u64,
    /// Who wrote it.
    pub emitter: Emitter,
    /// Who caused it.
    pub actor: String,
    /// What happened.
    pub action: String,
    /// What it happened to.
    pub subject: String,
    /// Public facts about it.
    #[serde(default)]
    pub details: BTreeMap<String, String>,
    /// The hash of the emitter's previous event ([`EventHash::GENESIS`] for `seq` 1).
    pub prev_hash: EventHash,
    /// The hash of this event's canonical encoding.
    pub hash: EventHash,
    /// Ed25519 signature by the emitter (128 hex digits).
    pub signature: String,
}

impl AuditRecord {
    /// Builds and signs the record that follows `prev_hash` as number `seq`.
    pub fn seal(
        emitter: Emitter,
        seq: u64,
        time: u64,
        prev_hash: EventHash,
        event: NewEvent,
        cluster: &str,
        sign: impl FnOnce(&[u8]) -> [u8; 64],
    ) -> Self {
        let mut record = AuditRecord {
            seq,
            time,
            emitter,
            actor: event.actor,
            action: event.action,
            subject: event.subject,
            details: event.details,
            prev_hash,
            hash: EventHash::GENESIS,
            signature: String::new(),
        };
        record.hash = record.compute_hash();
        record.signature = hex::encode(sign(&record.signed_message(cluster)));
        record
    }

    /// The canonical encoding (see the module docs).
    pub fn canonical_bytes(&self) -> Vec<u8> {
        fn field(out: &mut Vec<u8>, bytes: &[u8]) {
            out.extend_from_slice(&(bytes.len() as u64).to_be_bytes());
            out.extend_from_slice(bytes);
        }
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(HASH_DOMAIN);
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.time.to_be_bytes());
        field(&mut out, self.emitter.to_string().as_bytes());
        field(&mut out, self.actor.as_bytes());
        field(&mut out, self.action.as_bytes());
        field(&mut out, self.subject.as_bytes());
        out.extend_from_slice(&(self.details.len() as u64).to_be_bytes());
        for (key, value) in &self.details {
            field(&mut out, key.as_bytes());
            field(&mut out, value.as_bytes());
        }
        out.extend_from_slice(&self.prev_hash.0);
        out
    }

    /// SHA-256 of the canonical encoding.
    pub fn compute_hash(&self) -> EventHash {
        EventHash(Sha256::digest(self.canonical_bytes()).into())
    }

    /// What the emitter signs: a domain tag, the cluster and the event's hash.
    pub fn signed_message(&self, cluster: &str) -> Vec<u8> {
        let mut message = SIGNATURE_DOMAIN.to_vec();
        message.extend_from_slice(&(cluster.len() as u64).to_be_bytes());
        message.extend_from_slice(cluster.as_bytes());
        message.extend_from_slice(&self.hash.0);
        message
    }

    /// Checks the signature against `key` for `cluster`.
    pub fn verify_signature(&self, cluster: &str, key: &VerifyingKey) -> bool {
        let mut bytes = [0u8; 64];
        if hex::decode_to_slice(&self.signature, &mut bytes).is_err() {
            return false;
        }
        key.verify_strict(
            &self.signed_message(cluster),
            &Signature::from_bytes(&bytes),
        )
        .is_ok()
    }

    /// One JSON line (without the newline).
    pub fn to_json_line(&self) -> String {
        serde_json::to_string(self).expect("an audit record always serializes")
    }

    /// Parses one JSON line.
    pub fn from_json(text: &str) -> Result<Self, AuditError> {
        serde_json::from_str(text)
            .map_err(|e| AuditError::Invalid(format!("not an audit record: {e}")))
    }

    /// The message id the stream deduplicates on: `emitter/seq`.
    pub fn message_id(&self) -> String {
        format!("{}/{}", self.emitter, self.seq)
    }
}
