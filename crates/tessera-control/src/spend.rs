//! The spend chain of a key: every signing of the key, in order, so that every holder counts
//! in its rolling windows every spend of the key, whichever holders signed it
//! (`docs/protocols/spend-chain.md`).
//!
//! A signing start carries its [`SpendLink`]: the signing's place in the chain (`seq`), the
//! hash of the record before it (`prev`) and when it was admitted (`signed_at`). The link and
//! the request make a [`SpendRecord`]; with the signature, once there is one, the record is
//! what [`Operation::RecordSpends`](crate::Operation::RecordSpends) delivers to every holder.
//! [`SpendChain`] keeps a chain in memory for drivers without a database (the demo, the
//! benchmarks, tests); the coordinator keeps its chains in its store.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tessera_policy::{Derived, SignRequest};
use tessera_wire::KeyId;

const LINK_LABEL: &[u8] = b"tessera/spend-record/v1";

/// Most records one [`Operation::RecordSpends`](crate::Operation::RecordSpends) carries; a
/// longer catch-up is sent in several.
pub const MAX_RECORDS_PER_DELIVERY: usize = 64;

/// A signing's place in its key's spend chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpendLink {
    /// The key's signings counted from 1.
    pub seq: u64,
    /// The hash of record `seq - 1` (32 zero bytes for the first).
    pub prev: [u8; 32],
    /// Unix seconds when the signing was admitted: windows count its spend from then.
    pub signed_at: u64,
}

impl SpendLink {
    /// The link after the record whose hash is `prev` and whose place is `seq - 1`.
    pub fn new(seq: u64, prev: [u8; 32], signed_at: u64) -> Self {
        SpendLink {
            seq,
            prev,
            signed_at,
        }
    }
}

/// Why a spend record was refused.
#[derive(Debug, thiserror::Error)]
pub enum SpendRecordError {
    /// The record's request does not check (it cannot have been approved).
    #[error("spend record {seq} of key {key}: its request does not check ({reason})")]
    Request {
        /// The key.
        key: KeyId,
        /// The record's place.
        seq: u64,
        /// Why.
        reason: String,
    },
    /// The record is for another key.
    #[error("spend record {seq} is of key {found}, not of key {expected}")]
    WrongKey {
        /// The key asked about.
        expected: KeyId,
        /// The record's key.
        found: KeyId,
        /// The record's place.
        seq: u64,
    },
    /// The record's signature does not verify against the key.
    #[error("spend record {seq} of key {key}: its signature does not verify against the key")]
    BadSignature {
        /// The key.
        key: KeyId,
        /// The record's place.
        seq: u64,
    },
    /// `seq` 0, or a first record whose `prev` is not zero.
    #[error("spend record {seq} of key {key}: {reason}")]
    BadLink {
        /// The key.
        key: KeyId,
        /// The record's place.
        seq: u64,
        /// Why.
        reason: &'static str,
    },
}

/// One signing of a key: its link, its request, and the signature once there is one (a
/// signing that never completed keeps none, and still counts as spent).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpendRecord {
    /// Its place in the chain.
    pub link: SpendLink,
    /// The request, as approvers signed it.
    pub request: SignRequest,
    /// The signature, `r || s` (verified against the key by whoever receives it).
    pub signature: Option<Vec<u8>>,
}

/// The hash of the record that `link` and `request` make (the signature is not part of it:
/// the record of a signing is the same before and after it completes).
pub fn record_hash(link: &SpendLink, request: &SignRequest) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(LINK_LABEL);
    hasher.update(request.key.0);
    hasher.update(link.seq.to_be_bytes());
    hasher.update(link.prev);
    hasher.update(link.signed_at.to_be_bytes());
    hasher.update(request.request_digest());
    hasher.finalize().into()
}

impl SpendRecord {
    /// The key it spends from.
    pub fn key(&self) -> KeyId {
        self.request.key
    }

    /// Its hash: what the next record's `prev` holds.
    pub fn hash(&self) -> [u8; 32] {
        record_hash(&self.link, &self.request)
    }

    /// Checks the record on its own: that it is of `key`, that its link is well formed, that
    /// its request checks, and that its signatures (if any) verify against `public_key` (the
    /// key at the request's path as [`tessera_policy::Signing::verify`] takes it). Returns what the request does (its spends).
    pub fn check(&self, key: KeyId, public_key: &[u8]) -> Result<Derived, SpendRecordError> {
        let seq = self.link.seq;
        if self.key() != key {
            return Err(SpendRecordError::WrongKey {
                expected: key,
                found: self.key(),
                seq,
            });
        }
        if seq == 0 {
            return Err(SpendRecordError::BadLink {
                key,
                seq,
                reason: "places count from 1",
            });
        }
        if seq == 1 && self.link.prev != [0; 32] {
            return Err(SpendRecordError::BadLink {
                key,
                seq,
                reason: "the first record follows nothing (its prev must be zero)",
            });
        }
        let derived = self
            .request
            .check()
            .map_err(|e| SpendRecordError::Request {
                key,
                seq,
                reason: e.to_string(),
            })?;
        if let Some(signature) = &self.signature {
            if !derived.verify(public_key, signature) {
                return Err(SpendRecordError::BadSignature { key, seq });
            }
        }
        Ok(derived)
    }
}

/// Spend chains kept in memory: the links a driver without a database gives its signings, and
/// the records it delivers. Not shared between processes; the coordinator keeps its chains in
/// its store.
#[derive(Debug, Default)]
pub struct SpendChain {
    keys: BTreeMap<KeyId, Vec<SpendRecord>>,
}

impl SpendChain {
    /// An empty chain for every key.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends `request`'s signing to its key's chain, admitted at `now`, and returns its link.
    pub fn link(&mut self, request: &SignRequest, now: u64) -> SpendLink {
        let records = self.keys.entry(request.key).or_default();
        let (seq, prev) = match records.last() {
            Some(last) => (last.link.seq + 1, last.hash()),
            None => (1, [0; 32]),
        };
        let link = SpendLink::new(seq, prev, now);
        records.push(SpendRecord {
            link,
            request: request.clone(),
            signature: None,
        });
        link
    }

    /// Records the signature of signing `seq` of `key`.
    pub fn signed(&mut self, key: KeyId, seq: u64, signature: Vec<u8>) {
        if let Some(record) = self
            .keys
            .get_mut(&key)
            .and_then(|records| records.iter_mut().find(|r| r.link.seq == seq))
        {
            record.signature = Some(signature);
        }
    }

    /// The records of `key` after place `after`, oldest first.
    pub fn records_after(&self, key: KeyId, after: u64) -> Vec<SpendRecord> {
        self.keys
            .get(&key)
            .map(|records| {
                records
                    .iter()
                    .filter(|r| r.link.seq > after)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_policy::dev::DevPolicy;
    use tessera_policy::Payload;

    fn message(dev: &DevPolicy, key: KeyId, text: &str) -> SignRequest {
        let payload = Payload::Message {
            bytes: text.as_bytes().to_vec(),
        };
        dev.request(key, Vec::new(), payload, 1_700_000_000)
            .unwrap()
    }

    /// A known-answer vector: another implementation of the chain must link the same way.
    #[test]
    fn the_record_hash_matches_its_known_answer() {
        let request = SignRequest::new(
            tessera_wire::RequestId([1; 16]),
            KeyId([2; 16]),
            vec![0, 5],
            Payload::Message {
                bytes: b"hello".to_vec(),
            },
            tessera_policy::PolicyHash([3; 32]),
            "alice",
            1_000,
            2_000,
        )
        .unwrap();
        let link = SpendLink::new(2, [4; 32], 1_500);
        // As docs/protocols/spend-chain.md lays it out.
        let mut spelled_out = Sha256::new();
        spelled_out.update(b"tessera/spend-record/v1");
        spelled_out.update([2; 16]);
        spelled_out.update(2u64.to_be_bytes());
        spelled_out.update([4; 32]);
        spelled_out.update(1_500u64.to_be_bytes());
        spelled_out.update(request.request_digest());
        let expected: [u8; 32] = spelled_out.finalize().into();
        assert_eq!(record_hash(&link, &request), expected);
        assert_eq!(
            hex::encode(expected),
            "a86e7f1bdc1bbb6f84228f021bac2a594aa60852335447b98c7c001469e34395"
        );
    }

    #[test]
    fn a_chain_links_each_record_to_the_one_before() {
        let dev = DevPolicy::generate().unwrap();
        let key = KeyId([7; 16]);
        let mut chain = SpendChain::new();
        let first = chain.link(&message(&dev, key, "one"), 10);
        let second = chain.link(&message(&dev, key, "two"), 20);
        assert_eq!((first.seq, first.prev), (1, [0; 32]));
        let records = chain.records_after(key, 0);
        assert_eq!(second.seq, 2);
        assert_eq!(second.prev, records[0].hash());
        assert_eq!(chain.records_after(key, 1), records[1..]);
        // The signature is not part of the hash: a record is the same before and after.
        let before = records[1].hash();
        chain.signed(key, 2, vec![1; 64]);
        let after = chain.records_after(key, 1).remove(0);
        assert_eq!(after.signature, Some(vec![1; 64]));
        assert_eq!(after.hash(), before);
        // Another key has its own chain.
        let other = KeyId([8; 16]);
        assert_eq!(chain.link(&message(&dev, other, "x"), 30).seq, 1);
    }

    #[test]
    fn the_hash_binds_the_place_the_previous_record_the_time_and_the_request() {
        let dev = DevPolicy::generate().unwrap();
        let key = KeyId([7; 16]);
        let request = message(&dev, key, "one");
        let link = SpendLink::new(3, [9; 32], 100);
        let base = record_hash(&link, &request);
        for changed in [
            SpendLink::new(4, [9; 32], 100),
            SpendLink::new(3, [8; 32], 100),
            SpendLink::new(3, [9; 32], 101),
        ] {
            assert_ne!(record_hash(&changed, &request), base, "{changed:?}");
        }
        assert_ne!(record_hash(&link, &message(&dev, key, "two")), base);
    }

    #[test]
    fn a_record_that_is_not_well_formed_is_refused() {
        let dev = DevPolicy::generate().unwrap();
        let key = KeyId([7; 16]);
        let record = |seq, prev| SpendRecord {
            link: SpendLink::new(seq, prev, 100),
            request: message(&dev, key, "one"),
            signature: None,
        };
        let any_key = [2u8; 33];
        assert!(record(1, [0; 32]).check(key, &any_key).is_ok());
        assert!(matches!(
            record(1, [0; 32]).check(KeyId([8; 16]), &any_key),
            Err(SpendRecordError::WrongKey { .. })
        ));
        assert!(matches!(
            record(0, [0; 32]).check(key, &any_key),
            Err(SpendRecordError::BadLink { .. })
        ));
        assert!(matches!(
            record(1, [1; 32]).check(key, &any_key),
            Err(SpendRecordError::BadLink { .. })
        ));
        let mut signed = record(2, [1; 32]);
        signed.signature = Some(vec![0; 64]);
        assert!(matches!(
            signed.check(key, &any_key),
            Err(SpendRecordError::BadSignature { .. })
        ));
        let mut tampered = record(2, [1; 32]);
        tampered.request.digest[0] ^= 1;
        assert!(matches!(
            tampered.check(key, &any_key),
            Err(SpendRecordError::Request { .. })
        ));
    }
}
