//! What a node keeps in its encrypted store, and under which record names:
//!
//! | record | content |
//! |---|---|
//! | `aux.<committee>` | auxiliary info for the committee, e.g. `aux.p1-p2-p3` |
//! | `key.<key id>` | the key's committee, threshold and this party's key-generation share |
//! | `presig.<key id>.<session>` | one fresh presignature ([`PresignatureStore`]) |
//! | `primes.<id>` | one pre-generated prime set ([`PrimePool`]) |
//! | `reshare.<key id>.<session>` | a reshare's result here: pending, activated or discarded |
//!
//! Records are never overwritten: a second key generation under an existing key id, or second
//! auxiliary info for a committee, is refused. The one exception is activating a reshare,
//! which replaces (or erases) `key.<key id>` once the coordinator reports that every receiver
//! holds its new share (`docs/protocols/reshare.md`, Activation and erasure).

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tessera_mpc::{AuxInfo, IncompleteKeyShare, KeyShare, PresignatureStore, PrimePool};
use tessera_store::{RecordName, SecretStore, StoreError};
use tessera_wire::{KeyId, PartyId, SessionId};
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

/// Why a reshare could not be activated or discarded here.
#[derive(Debug, thiserror::Error)]
pub enum ReshareStateError {
    /// The state failed.
    #[error(transparent)]
    State(#[from] StateError),
    /// This party has no result of the session (it failed or never ran here).
    #[error("reshare session {0} left no result here (it failed or did not run on this node); nothing changed")]
    NoSession(SessionId),
    /// The confirmation is not the one this party's output had.
    #[error("the confirmation for reshare session {0} does not match this node's result; nothing changed")]
    Mismatch(SessionId),
    /// Discarded before.
    #[error("reshare session {0} was discarded here; it cannot be activated")]
    Discarded(SessionId),
    /// Activated before.
    #[error("reshare session {0} was activated here; it cannot be discarded")]
    Activated(SessionId),
}

impl From<StoreError> for ReshareStateError {
    fn from(e: StoreError) -> Self {
        ReshareStateError::State(e.into())
    }
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

/// A reshare session's result at this party.
#[derive(Serialize, Deserialize)]
pub enum ReshareRecord {
    /// The session succeeded here; waiting for the coordinator to activate or discard it.
    Pending {
        /// This party's confirmation of the session's output.
        confirmation: [u8; 32],
        /// The new key record for a receiver; `None` for a dealer leaving the committee.
        record: Option<Box<KeyRecord>>,
    },
    /// Activated: the key's record was replaced (or erased).
    Activated {
        /// The confirmation it was activated with.
        confirmation: [u8; 32],
    },
    /// Discarded: the pending share was erased; nothing else changed.
    Discarded,
}

/// What activating a reshare did here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// The key's share was replaced by the new one.
    Replaced,
    /// This party left the committee: its share of the key was erased.
    Erased,
    /// It was activated before (a repeated activation changes nothing).
    AlreadyDone,
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

    /// The auxiliary info of `committee`.
    pub fn aux(&self, committee: &[PartyId]) -> Result<AuxInfo, StateError> {
        self.get_json(&Self::aux_name(committee))?
            .ok_or_else(|| StateError::NoAuxInfo(committee_name(committee)))
    }

    /// Whether `key` is held here.
    pub fn has_key(&self, key: KeyId) -> Result<bool, StateError> {
        Ok(self.store.contains(&Self::key_name(key))?)
    }

    /// Stores a new key; refused if the id is taken.
    pub fn put_key(&self, key: KeyId, record: &KeyRecord) -> Result<(), StateError> {
        self.put_new_json(&Self::key_name(key), record)
    }

    /// The key record of `key` (committee, threshold, share without auxiliary info).
    pub fn key_record(&self, key: KeyId) -> Result<KeyRecord, StateError> {
        self.get_json(&Self::key_name(key))?
            .ok_or(StateError::UnknownKey(key))
    }

    fn reshare_name(key: KeyId, session: SessionId) -> RecordName {
        record(format!("reshare.{key}.{session}"))
    }

    /// Keeps a reshare's result pending; refused if the session already left a record.
    pub fn put_pending_reshare(
        &self,
        key: KeyId,
        session: SessionId,
        confirmation: [u8; 32],
        record: Option<KeyRecord>,
    ) -> Result<(), StateError> {
        let pending = ReshareRecord::Pending {
            confirmation,
            record: record.map(Box::new),
        };
        self.put_new_json(&Self::reshare_name(key, session), &pending)
    }

    /// The record reshare `session` of `key` left here, if any.
    pub fn reshare(
        &self,
        key: KeyId,
        session: SessionId,
    ) -> Result<Option<ReshareRecord>, StateError> {
        self.get_json(&Self::reshare_name(key, session))
    }

    fn put_json<T: Serialize>(&self, name: &RecordName, value: &T) -> Result<(), StateError> {
        let bytes = Zeroizing::new(serde_json::to_vec(value).expect("state records serialize"));
        Ok(self.store.put(name, &bytes)?)
    }

    /// Activates reshare `session` of `key`, if its pending result here has `confirmation`:
    /// a receiver's new share replaces the key's record, a leaving dealer's record is erased;
    /// either way the key's presignatures (made from the old shares) are erased. Each step is
    /// durable before the next; repeating an activation changes nothing.
    pub fn activate_reshare(
        &self,
        key: KeyId,
        session: SessionId,
        confirmation: &[u8; 32],
    ) -> Result<Activation, ReshareStateError> {
        let name = Self::reshare_name(key, session);
        let activated = match self.get_json::<ReshareRecord>(&name)? {
            None => return Err(ReshareStateError::NoSession(session)),
            Some(ReshareRecord::Discarded) => return Err(ReshareStateError::Discarded(session)),
            Some(ReshareRecord::Activated { confirmation: c }) if &c == confirmation => {
                return Ok(Activation::AlreadyDone)
            }
            Some(ReshareRecord::Activated { .. }) => {
                return Err(ReshareStateError::Mismatch(session))
            }
            Some(ReshareRecord::Pending {
                confirmation: c, ..
            }) if !bool::from(subtle::ConstantTimeEq::ct_eq(&c[..], &confirmation[..])) => {
                return Err(ReshareStateError::Mismatch(session))
            }
            Some(ReshareRecord::Pending {
                record: Some(record),
                ..
            }) => {
                self.put_json(&Self::key_name(key), &record)?;
                Activation::Replaced
            }
            Some(ReshareRecord::Pending { record: None, .. }) => {
                match self.store.delete(&Self::key_name(key)) {
                    Ok(()) | Err(StoreError::NotFound(_)) => {}
                    Err(e) => return Err(StateError::from(e).into()),
                }
                Activation::Erased
            }
        };
        self.erase_presignatures(key)?;
        self.put_json(
            &name,
            &ReshareRecord::Activated {
                confirmation: *confirmation,
            },
        )?;
        Ok(activated)
    }

    /// Discards reshare `session` of `key`: its pending share, if any, is erased; the key's
    /// record is untouched. Refused once activated.
    pub fn discard_reshare(&self, key: KeyId, session: SessionId) -> Result<(), ReshareStateError> {
        let name = Self::reshare_name(key, session);
        match self.get_json::<ReshareRecord>(&name)? {
            Some(ReshareRecord::Activated { .. }) => Err(ReshareStateError::Activated(session)),
            Some(ReshareRecord::Discarded) => Ok(()),
            // Nothing pending (the session failed here): remember the decision all the same.
            None | Some(ReshareRecord::Pending { .. }) => {
                Ok(self.put_json(&name, &ReshareRecord::Discarded)?)
            }
        }
    }

    fn erase_presignatures(&self, key: KeyId) -> Result<(), StateError> {
        let prefix = format!("presig.{key}.");
        for name in self.store.list()? {
            if name.as_str().starts_with(&prefix) {
                match self.store.delete(&name) {
                    Ok(()) | Err(StoreError::NotFound(_)) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(())
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
