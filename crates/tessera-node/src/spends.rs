//! The spend chains a node holds: every record of its keys' spend chains it has checked
//! (`docs/protocols/spend-chain.md`), kept durably as `spend.<key>.<seq>`.
//!
//! A record enters only after it checked on its own (request, signature against the key) and
//! against its neighbours here: the record before must be the one its `prev` names, the one
//! after must name it, and a record already held at its place must be the same signing (a
//! different one is a fork, refused). The node's own signings enter the same way, before it
//! contributes anything, so it never takes part in two different signings at one place.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use alloy_primitives::U256;
use tessera_control::{SpendRecord, SpendRecordError};
use tessera_store::{RecordName, SecretStore};
use tessera_wire::{KeyId, RequestId};
use zeroize::Zeroizing;

use crate::state::StateError;

/// Largest stored record read back.
const MAX_STORED_RECORD: usize = tessera_control::MAX_CONTROL_MESSAGE;

/// Why a record was not taken into a chain.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    /// The record does not check on its own.
    #[error(transparent)]
    Record(#[from] SpendRecordError),
    /// A different signing is already held at the record's place: someone made two
    /// signings at one place of the chain, or is lying about one.
    #[error(
        "spend record {seq} of key {key} conflicts with the record held here for that place \
         (held {held}, offered {offered}); the chain forked or the sender is lying: stop \
         signing with this key and investigate"
    )]
    Fork {
        /// The key.
        key: KeyId,
        /// The place.
        seq: u64,
        /// The held record's hash, hex.
        held: String,
        /// The offered record's hash, hex.
        offered: String,
    },
    /// The record does not link to its neighbours held here.
    #[error("spend record {seq} of key {key} does not link to record {neighbour} held here")]
    Broken {
        /// The key.
        key: KeyId,
        /// The record's place.
        seq: u64,
        /// The neighbour's place.
        neighbour: u64,
    },
    /// The store failed.
    #[error(transparent)]
    State(#[from] StateError),
}

/// A record held, with what it spends.
#[derive(Clone, Debug)]
struct Held {
    record: SpendRecord,
    hash: [u8; 32],
    spends: Vec<(String, U256)>,
}

/// Every chain held, loaded from the store on first use.
pub(crate) struct Chains<S: SecretStore> {
    store: Arc<S>,
    keys: BTreeMap<KeyId, BTreeMap<u64, Held>>,
}

fn record_name(key: KeyId, seq: u64) -> RecordName {
    RecordName::new(format!("spend.{key}.{seq}")).expect("key ids and numbers make valid names")
}

impl<S: SecretStore> Chains<S> {
    /// Loads every record in `store`. A record that does not decode or check is an error: the
    /// node's own store is corrupt, and counting without it could let a limit through.
    pub(crate) fn load(store: Arc<S>) -> Result<Self, StateError> {
        let mut keys: BTreeMap<KeyId, BTreeMap<u64, Held>> = BTreeMap::new();
        for name in store.list()? {
            let Some(rest) = name.as_str().strip_prefix("spend.") else {
                continue;
            };
            let Some((key, seq)) = rest.split_once('.') else {
                continue;
            };
            let (Ok(key), Ok(seq)) = (key.parse::<KeyId>(), seq.parse::<u64>()) else {
                continue;
            };
            let bytes = store.get(&name)?;
            let record: SpendRecord = tessera_wire::decode(&bytes, MAX_STORED_RECORD)
                .map_err(|e| StateError::Format(name.to_string(), e.to_string()))?;
            let corrupt = |why: String| StateError::Format(name.to_string(), why);
            if record.link.seq != seq || record.key() != key {
                return Err(corrupt("the record is not the one its name says".into()));
            }
            let derived = record.request.check().map_err(|e| corrupt(e.to_string()))?;
            keys.entry(key).or_default().insert(
                seq,
                Held {
                    hash: record.hash(),
                    spends: derived.spends().into_iter().map(text_spend).collect(),
                    record,
                },
            );
        }
        Ok(Chains { store, keys })
    }

    /// Checks `record` (with `public_key`, the SEC1 key at its request's path) and takes it
    /// in. A record already held is kept, and gains the offered signature if it had none.
    pub(crate) fn accept(
        &mut self,
        key: KeyId,
        record: &SpendRecord,
        public_key: &[u8],
    ) -> Result<(), ChainError> {
        let derived = record.check(key, public_key)?;
        let seq = record.link.seq;
        let hash = record.hash();
        let chain = self.keys.entry(key).or_default();
        if let Some(held) = chain.get(&seq) {
            if held.hash != hash {
                return Err(ChainError::Fork {
                    key,
                    seq,
                    held: hex::encode(held.hash),
                    offered: hex::encode(hash),
                });
            }
            if held.record.signature.is_none() && record.signature.is_some() {
                let held = Held {
                    record: record.clone(),
                    ..held.clone()
                };
                write(self.store.as_ref(), key, &held.record)?;
                chain.insert(seq, held);
            }
            return Ok(());
        }
        if let Some(before) = seq.checked_sub(1).and_then(|s| chain.get(&s)) {
            if before.hash != record.link.prev
                || before.record.link.signed_at > record.link.signed_at
            {
                return Err(ChainError::Broken {
                    key,
                    seq,
                    neighbour: seq - 1,
                });
            }
        }
        if let Some(after) = chain.get(&(seq + 1)) {
            if after.record.link.prev != hash || after.record.link.signed_at < record.link.signed_at
            {
                return Err(ChainError::Broken {
                    key,
                    seq,
                    neighbour: seq + 1,
                });
            }
        }
        write(self.store.as_ref(), key, record)?;
        chain.insert(
            seq,
            Held {
                record: record.clone(),
                hash,
                spends: derived.spends().into_iter().map(text_spend).collect(),
            },
        );
        Ok(())
    }

    /// Where `key`'s chain stands here: the last place up to which every record is held, and
    /// that record's hash ((0, zeros) for none).
    pub(crate) fn head(&self, key: KeyId) -> (u64, [u8; 32]) {
        let mut head = (0, [0; 32]);
        if let Some(chain) = self.keys.get(&key) {
            for (seq, held) in chain {
                if *seq != head.0 + 1 {
                    break;
                }
                head = (*seq, held.hash);
            }
        }
        head
    }

    /// Adds the signature of this node's own signing `seq` of `key` (verified against the key
    /// by the protocol before it got here) to its record.
    pub(crate) fn add_signature(
        &mut self,
        key: KeyId,
        seq: u64,
        signature: &[u8],
    ) -> Result<(), StateError> {
        let Some(held) = self.keys.get_mut(&key).and_then(|c| c.get_mut(&seq)) else {
            return Ok(());
        };
        if held.record.signature.is_none() {
            let mut record = held.record.clone();
            record.signature = Some(signature.to_vec());
            write(self.store.as_ref(), key, &record)?;
            held.record = record;
        }
        Ok(())
    }

    /// The record held at `seq` of `key`, if any.
    pub(crate) fn get(&self, key: KeyId, seq: u64) -> Option<&SpendRecord> {
        self.keys.get(&key)?.get(&seq).map(|h| &h.record)
    }

    /// The requests of `key`'s records held here.
    pub(crate) fn requests(&self, key: KeyId) -> BTreeSet<RequestId> {
        self.keys
            .get(&key)
            .map(|chain| chain.values().map(|h| h.record.request.id).collect())
            .unwrap_or_default()
    }

    /// What `key`'s records held here spent of `asset` from `since` on, but for request
    /// `except`'s.
    pub(crate) fn spent_since(
        &self,
        key: KeyId,
        asset: &str,
        since: u64,
        except: RequestId,
    ) -> U256 {
        self.keys
            .get(&key)
            .into_iter()
            .flat_map(|chain| chain.values())
            .filter(|h| h.record.link.signed_at >= since && h.record.request.id != except)
            .flat_map(|h| &h.spends)
            .filter(|(a, _)| a == asset)
            .fold(U256::ZERO, |sum, (_, amount)| sum.saturating_add(*amount))
    }
}

fn text_spend((asset, amount): (tessera_policy::Asset, U256)) -> (String, U256) {
    (asset.to_string(), amount)
}

fn write<S: SecretStore>(store: &S, key: KeyId, record: &SpendRecord) -> Result<(), StateError> {
    let bytes = Zeroizing::new(tessera_wire::encode(record));
    store.put(&record_name(key, record.link.seq), &bytes)?;
    Ok(())
}
