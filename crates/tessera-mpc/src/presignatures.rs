//! Durable presignature storage with use-at-most-once semantics.
//!
//! A presignature that signs twice leaks the key, so consumption must survive any crash. Each
//! presignature is stored in its own encrypted record, named after the key and the presigning
//! session that produced it. [`PresignatureStore::take`] reads the record and **durably deletes
//! it (fsync of the store directory) before** handing the presignature out. After a crash at any
//! point, a presignature is either still on disk and never used, or gone for good: one that
//! may have been used can never be found again.

use std::sync::Arc;

use cggmp24::generic_ec::{NonZero, Point};
use cggmp24::signing::PresignatureCommitment;
use serde::{Deserialize, Serialize};
use tessera_store::{RecordName, SecretStore, StoreError};
use tessera_wire::{KeyId, PartyId, SessionId};

use crate::{Curve, Presignature, PresignaturePublicData};

/// Why a presignature could not be stored or taken.
#[derive(Debug, thiserror::Error)]
pub enum PresignatureError {
    /// No fresh presignature from that session: never made here, or already used.
    #[error("no fresh presignature of key {key} from session {session}; it was never made here or was already used")]
    NotAvailable {
        /// The key.
        key: KeyId,
        /// The presigning session.
        session: SessionId,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The record does not hold a presignature.
    #[error("presignature record {0} is not valid: {1}")]
    Format(String, String),
}

/// A presignature with what is needed to use it.
pub struct StoredPresignature {
    /// The secret presignature; use once.
    pub presignature: Presignature,
    /// The public data every signer of the session shares.
    pub public: PresignaturePublicData,
    /// The parties that made it, in signing order; they must sign together.
    pub signers: Vec<PartyId>,
}

#[derive(Serialize, Deserialize)]
struct Record {
    presignature: Presignature,
    gamma: NonZero<Point<Curve>>,
    commitments: Vec<(Point<Curve>, Point<Curve>)>,
    signers: Vec<PartyId>,
}

/// The presignatures of one key in a [`SecretStore`].
pub struct PresignatureStore<S: SecretStore> {
    store: Arc<S>,
    key: KeyId,
}

impl<S: SecretStore> PresignatureStore<S> {
    /// The presignatures of `key` in `store`.
    pub fn new(store: Arc<S>, key: KeyId) -> Self {
        PresignatureStore { store, key }
    }

    fn prefix(&self) -> String {
        format!("presig.{}.", self.key)
    }

    fn name(&self, session: SessionId) -> RecordName {
        RecordName::new(format!("{}{session}", self.prefix()))
            .expect("hex ids make valid record names")
    }

    /// Stores a fresh presignature made in `session`.
    pub fn put(
        &self,
        session: SessionId,
        item: &StoredPresignature,
    ) -> Result<(), PresignatureError> {
        let record = Record {
            presignature: item.presignature.clone(),
            gamma: item.public.Gamma,
            commitments: item
                .public
                .commitments
                .iter()
                .map(|c| (c.tilde_Delta, c.tilde_S))
                .collect(),
            signers: item.signers.clone(),
        };
        let bytes =
            zeroize::Zeroizing::new(serde_json::to_vec(&record).expect("presignatures serialize"));
        self.store.put(&self.name(session), &bytes)?;
        Ok(())
    }

    /// Sessions whose presignatures are fresh, in name order.
    pub fn available(&self) -> Result<Vec<SessionId>, PresignatureError> {
        let prefix = self.prefix();
        Ok(self
            .store
            .list()?
            .iter()
            .filter_map(|n| n.as_str().strip_prefix(&prefix)?.parse().ok())
            .collect())
    }

    /// Takes the presignature made in `session`: it is durably removed from the store before it
    /// is returned, so it can never be taken again, even after a crash.
    pub fn take(&self, session: SessionId) -> Result<StoredPresignature, PresignatureError> {
        let name = self.name(session);
        let bytes = match self.store.get(&name) {
            Ok(b) => b,
            Err(StoreError::NotFound(_)) => {
                return Err(PresignatureError::NotAvailable {
                    key: self.key,
                    session,
                })
            }
            Err(e) => return Err(e.into()),
        };
        self.store.delete(&name)?;
        let record: Record = serde_json::from_slice(&bytes)
            .map_err(|e| PresignatureError::Format(name.to_string(), e.to_string()))?;
        Ok(StoredPresignature {
            presignature: record.presignature,
            public: PresignaturePublicData {
                Gamma: record.gamma,
                commitments: record
                    .commitments
                    .into_iter()
                    .map(|(delta, s)| PresignatureCommitment {
                        tilde_Delta: delta,
                        tilde_S: s,
                    })
                    .collect(),
            },
            signers: record.signers,
        })
    }
}
