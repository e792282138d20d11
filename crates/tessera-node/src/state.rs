//! What a node keeps in its encrypted store, and under which record names:
//!
//! | record | content |
//! |---|---|
//! | `aux.<committee>` | auxiliary info for the committee, e.g. `aux.p1-p2-p3` |
//! | `key.<key id>` | the key's committee, threshold and this party's key-generation share |
//! | `presig.<key id>.<session>` | one fresh presignature ([`PresignatureStore`]) |
//! | `primes.<id>` | one pre-generated prime set ([`PrimePool`]) |
//!
//! Records are never overwritten: a second key generation under an existing key id, or second
//! auxiliary info for a committee, is refused.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tessera_mpc::{AuxInfo, IncompleteKeyShare, KeyShare, PresignatureStore, PrimePool};
use tessera_store::{RecordName, SecretStore, StoreError};
use tessera_wire::{KeyId, PartyId};
use zeroize::Zeroizing;

/// Why the node state could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A record exists already and is never overwritten.
    #[error("{0} exists already; it is never overwritten")]
    Exists(String),
    /// The key is not held here.
    #[error("key {0} is not held by this node; run key generation first")]
    UnknownKey(KeyId),
    /// No auxiliary info for the committee.
    #[error("no auxiliary info for committee {0}; run aux info for it first")]
    NoAuxInfo(String),
    /// A record does not decode.
    #[error("record {0} is not valid: {1}")]
    Format(String, String),
    /// The share and the auxiliary info do not form a valid key share.
    #[error("key {key}: the share and the committee's auxiliary info do not form a valid key share: {reason}")]
    InvalidShare {
        /// The key.
        key: KeyId,
        /// The library's reason.
        reason: String,
    },
}

/// One key as this party holds it.
#[derive(Serialize, Deserialize)]
pub struct KeyRecord {
    /// The parties that generated the key, in key-generation order.
    pub committee: Vec<PartyId>,
    /// Signers needed.
    pub threshold: u16,
    /// This party's share (without auxiliary info).
    pub share: IncompleteKeyShare,
}

/// The node's durable state in a [`SecretStore`].
pub struct NodeState<S: SecretStore> {
    store: Arc<S>,
}

impl<S: SecretStore> Clone for NodeState<S> {
    fn clone(&self) -> Self {
        NodeState {
            store: self.store.clone(),
        }
    }
}

/// The record-name form of a committee: `p1-p2-p3`.
pub fn committee_name(parties: &[PartyId]) -> String {
    parties
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("-")
}

fn record(name: String) -> RecordName {
    RecordName::new(name).expect("party and key ids make valid record names")
}

impl<S: SecretStore + 'static> NodeState<S> {
    /// The state kept in `store`.
    pub fn new(store: Arc<S>) -> Self {
        NodeState { store }
    }

    /// The underlying store.
    pub fn store(&self) -> &Arc<S> {
        &self.store
    }

    fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        name: &RecordName,
    ) -> Result<Option<T>, StateError> {
        match self.store.get(name) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| StateError::Format(name.to_string(), e.to_string())),
            Err(StoreError::NotFound(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    fn put_new_json<T: Serialize>(&self, name: &RecordName, value: &T) -> Result<(), StateError> {
        if self.store.contains(name)? {
            return Err(StateError::Exists(name.to_string()));
        }
        let bytes = Zeroizing::new(serde_json::to_vec(value).expect("state records serialize"));
        self.store.put(name, &bytes)?;
        Ok(())
    }

    fn aux_name(committee: &[PartyId]) -> RecordName {
        record(format!("aux.{}", committee_name(committee)))
    }

    fn key_name(key: KeyId) -> RecordName {
        record(format!("key.{key}"))
    }

    /// Whether auxiliary info for `committee` is stored.
    pub fn has_aux(&self, committee: &[PartyId]) -> Result<bool, StateError> {
        Ok(self.store.contains(&Self::aux_name(committee))?)
    }

    /// Stores auxiliary info for `committee`; refused if some exists.
    pub fn put_aux(&self, committee: &[PartyId], aux: &AuxInfo) -> Result<(), StateError> {
        self.put_new_json(&Self::aux_name(committee), aux)
    }

    /// Whether `key` is held here.
    pub fn has_key(&self, key: KeyId) -> Result<bool, StateError> {
        Ok(self.store.contains(&Self::key_name(key))?)
    }

    /// Stores a new key; refused if the id is taken.
    pub fn put_key(&self, key: KeyId, record: &KeyRecord) -> Result<(), StateError> {
        self.put_new_json(&Self::key_name(key), record)
    }

    /// The keys held here.
    pub fn keys(&self) -> Result<Vec<KeyId>, StateError> {
        Ok(self
            .store
            .list()?
            .iter()
            .filter_map(|n| n.as_str().strip_prefix("key.")?.parse().ok())
            .collect())
    }

    /// Loads `key` with its committee's auxiliary info as a complete, validated key share.
    pub fn key_share(&self, key: KeyId) -> Result<(KeyRecord, KeyShare), StateError> {
        let record: KeyRecord = self
            .get_json(&Self::key_name(key))?
            .ok_or(StateError::UnknownKey(key))?;
        let aux: AuxInfo = self
            .get_json(&Self::aux_name(&record.committee))?
            .ok_or_else(|| StateError::NoAuxInfo(committee_name(&record.committee)))?;
        let share = KeyShare::from_parts((record.share.clone(), aux)).map_err(|e| {
            StateError::InvalidShare {
                key,
                reason: e.to_string(),
            }
        })?;
        Ok((record, share))
    }

    /// The presignatures of `key`.
    pub fn presignatures(&self, key: KeyId) -> PresignatureStore<S> {
        PresignatureStore::new(self.store.clone(), key)
    }

    /// The prime pool.
    pub fn primes(&self) -> PrimePool<S> {
        PrimePool::new(self.store.clone())
    }
}
