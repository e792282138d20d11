//! Durable storage with use-at-most-once semantics, for ECDSA presignatures
//! ([`PresignatureStore`]) and FROST nonces ([`FrostNonceStore`]).
//!
//! A presignature that signs twice leaks the key, and so does a FROST nonce used for two
//! messages, so consumption must survive any crash. Each item is stored in its own encrypted
//! record, named after the key and the session that produced it. [`SingleUseStore::take`]
//! reads the record, **durably records that it was consumed and deletes it before** handing
//! the item out. After a crash at
//! any point, a presignature is either still on disk and never used, or gone for good: one that
//! may have been used can never be found again.
//!
//! Two more guards bound what a copy of old records can do (a store restored from a snapshot,
//! or an old record file put back):
//! - **Consumed ids are remembered** (`presig-used.<key>.<session>`, `frost-nonce-used.…`,
//!   until the item
//!   would have expired anyway): a presignature from a consumed session is never stored again
//!   (a coordinator reusing a session id) nor taken again (a record put back), and the refusal
//!   says so. A peer whose store was restored still holds records its co-signers remember as
//!   consumed: they refuse, so no signature comes of it, and the refusal tells the operators.
//! - **Items expire**: each record carries its expiry, set from the lifetime in force when it
//!   was stored, and [`take`](SingleUseStore::take) also applies the lifetime in force now. A
//!   snapshot older than the lifetime re-arms nothing; records from before expiry existed count
//!   as expired. [`sweep`](SingleUseStore::sweep) erases expired records and forgets consumed
//!   ids whose items have expired.

use std::marker::PhantomData;
use std::sync::Arc;

use cggmp24::generic_ec::{NonZero, Point};
use cggmp24::signing::PresignatureCommitment;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tessera_store::{RecordName, SecretStore, StoreError};
use tessera_wire::{KeyId, PartyId, SessionId};

use crate::frost::{Scheme, StoredFrostNonces};
use crate::{Curve, Presignature, PresignaturePublicData};

/// Why a single-use item (a presignature, FROST nonces) could not be stored or taken.
#[derive(Debug, thiserror::Error)]
pub enum PresignatureError {
    /// No fresh item from that session: never made here, or already used.
    #[error("no fresh {noun} of key {key} from session {session}; it was never made here or was already used")]
    NotAvailable {
        /// What it is.
        noun: &'static str,
        /// The key.
        key: KeyId,
        /// The presigning session.
        session: SessionId,
    },
    /// The presignature of that session was consumed here before: it is never stored or used
    /// again (a record put back, a restored store, or a reused session id).
    #[error("the {noun} of key {key} from session {session} was already used here (at {used_at}); it is never used again. A party that still offers it may be running from a restored snapshot of its store")]
    Consumed {
        /// What it is.
        noun: &'static str,
        /// The key.
        key: KeyId,
        /// The presigning session.
        session: SessionId,
        /// When it was consumed (Unix seconds).
        used_at: u64,
    },
    /// The presignature is past its lifetime; it was erased unused.
    #[error("the {noun} of key {key} from session {session} expired at {expires_at} (now {now}); it was erased unused")]
    Expired {
        /// What it is.
        noun: &'static str,
        /// The key.
        key: KeyId,
        /// The presigning session.
        session: SessionId,
        /// Its expiry (Unix seconds).
        expires_at: u64,
        /// The time of the attempt.
        now: u64,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The record does not hold what its name says.
    #[error("record {0} is not valid: {1}")]
    Format(String, String),
}

/// The errors of a [`SingleUseStore`] of any item.
pub type SingleUseError = PresignatureError;

/// What a [`SingleUseStore`] keeps, and how it is stored.
pub trait SingleUse {
    /// The record names' prefix (`presig`: records `presig.<key>.<session>`).
    const PREFIX: &'static str;
    /// What it is called in errors.
    const NOUN: &'static str;
    /// What is stored and taken.
    type Item;
    /// Its stored form (JSON, inside an encrypted record).
    type Record: Serialize + DeserializeOwned;
    /// The stored form of `item`.
    fn to_record(item: &Self::Item) -> Self::Record;
    /// The item a record holds.
    fn from_record(record: Self::Record) -> Self::Item;
}

/// ECDSA presignatures, used at most once.
pub struct Presignatures;

/// FROST nonces of scheme `C`, used at most once.
pub struct FrostNonceItems<C>(PhantomData<C>);

/// A presignature with what is needed to use it.
pub struct StoredPresignature {
    /// The secret presignature; use once.
    pub presignature: Presignature,
    /// The public data every signer of the session shares.
    pub public: PresignaturePublicData,
    /// The parties that made it, in signing order; they must sign together.
    pub signers: Vec<PartyId>,
}

/// A presignature as stored.
#[derive(Serialize, Deserialize)]
pub struct PresignatureRecord {
    presignature: Presignature,
    gamma: NonZero<Point<Curve>>,
    commitments: Vec<(Point<Curve>, Point<Curve>)>,
    signers: Vec<PartyId>,
}

impl SingleUse for Presignatures {
    const PREFIX: &'static str = "presig";
    const NOUN: &'static str = "presignature";
    type Item = StoredPresignature;
    type Record = PresignatureRecord;

    fn to_record(item: &StoredPresignature) -> PresignatureRecord {
        PresignatureRecord {
            presignature: item.presignature.clone(),
            gamma: item.public.Gamma,
            commitments: item
                .public
                .commitments
                .iter()
                .map(|c| (c.tilde_Delta, c.tilde_S))
                .collect(),
            signers: item.signers.clone(),
        }
    }

    fn from_record(record: PresignatureRecord) -> StoredPresignature {
        StoredPresignature {
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
        }
    }
}

impl<C: Scheme> SingleUse for FrostNonceItems<C> {
    const PREFIX: &'static str = "frost-nonce";
    const NOUN: &'static str = "FROST nonce";
    type Item = StoredFrostNonces<C>;
    type Record = StoredFrostNonces<C>;

    fn to_record(item: &StoredFrostNonces<C>) -> StoredFrostNonces<C> {
        item.clone()
    }

    fn from_record(record: StoredFrostNonces<C>) -> StoredFrostNonces<C> {
        record
    }
}

/// An item as stored, with its times.
#[derive(Serialize, Deserialize)]
#[serde(bound = "R: Serialize + DeserializeOwned")]
struct Record<R> {
    #[serde(flatten)]
    item: R,
    /// When it was stored (Unix seconds); 0 in records from before expiry existed.
    #[serde(default)]
    created_at: u64,
    /// When it expires (Unix seconds); 0 (expired) in records from before expiry existed.
    #[serde(default)]
    expires_at: u64,
}

/// The times of a stored item, read without the item.
#[derive(Deserialize)]
struct Times {
    #[serde(default)]
    created_at: u64,
    #[serde(default)]
    expires_at: u64,
}

/// What is remembered of a consumed presignature.
#[derive(Serialize, Deserialize)]
struct Consumed {
    used_at: u64,
    /// Until then, a copy of the presignature could still be within its lifetime.
    remember_until: u64,
}

/// What [`PresignatureStore::sweep`] erased.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Swept {
    /// Expired presignatures erased unused.
    pub expired: usize,
    /// Consumed ids forgotten (their presignatures would have expired).
    pub forgotten: usize,
}

/// The single-use items of kind `K` of one key in a [`SecretStore`].
pub struct SingleUseStore<S: SecretStore, K: SingleUse> {
    store: Arc<S>,
    key: KeyId,
    kind: PhantomData<K>,
}

/// The presignatures of one key.
pub type PresignatureStore<S> = SingleUseStore<S, Presignatures>;
/// The FROST nonces of scheme `C` of one key.
pub type FrostNonceStore<S, C> = SingleUseStore<S, FrostNonceItems<C>>;

impl<S: SecretStore, K: SingleUse> SingleUseStore<S, K> {
    /// The items of `key` in `store`.
    pub fn new(store: Arc<S>, key: KeyId) -> Self {
        SingleUseStore {
            store,
            key,
            kind: PhantomData,
        }
    }

    fn prefix(&self) -> String {
        format!("{}.{}.", K::PREFIX, self.key)
    }

    fn name(&self, session: SessionId) -> RecordName {
        RecordName::new(format!("{}{session}", self.prefix()))
            .expect("hex ids make valid record names")
    }

    fn consumed_prefix(&self) -> String {
        format!("{}-used.{}.", K::PREFIX, self.key)
    }

    fn consumed_name(&self, session: SessionId) -> RecordName {
        RecordName::new(format!("{}{session}", self.consumed_prefix()))
            .expect("hex ids make valid record names")
    }

    /// When the item of `session` was consumed here, if it was (and is remembered).
    fn consumed_at(&self, session: SessionId) -> Result<Option<u64>, PresignatureError> {
        let name = self.consumed_name(session);
        match self.store.get(&name) {
            Ok(bytes) => {
                let consumed: Consumed = serde_json::from_slice(&bytes)
                    .map_err(|e| PresignatureError::Format(name.to_string(), e.to_string()))?;
                Ok(Some(consumed.used_at))
            }
            Err(StoreError::NotFound(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Stores a fresh item made in `session` at `now` (Unix seconds), to expire after
    /// `lifetime` seconds. Refused if an item of that session was consumed here.
    pub fn put(
        &self,
        session: SessionId,
        item: &K::Item,
        now: u64,
        lifetime: u64,
    ) -> Result<(), PresignatureError> {
        if let Some(used_at) = self.consumed_at(session)? {
            return Err(PresignatureError::Consumed {
                noun: K::NOUN,
                key: self.key,
                session,
                used_at,
            });
        }
        let record = Record {
            item: K::to_record(item),
            created_at: now,
            expires_at: now.saturating_add(lifetime),
        };
        let bytes = zeroize::Zeroizing::new(
            serde_json::to_vec(&record).expect("single-use records serialize"),
        );
        self.store.put(&self.name(session), &bytes)?;
        Ok(())
    }

    /// Sessions whose items are fresh, in name order.
    pub fn available(&self) -> Result<Vec<SessionId>, PresignatureError> {
        let prefix = self.prefix();
        Ok(self
            .store
            .list()?
            .iter()
            .filter_map(|n| n.as_str().strip_prefix(&prefix)?.parse().ok())
            .collect())
    }

    /// Takes the item made in `session` at `now` (Unix seconds), under a lifetime of
    /// `lifetime` seconds: it is durably marked consumed and removed from the store before it
    /// is returned, so it can never be taken again, even after a crash. Refused if it was
    /// consumed before (its record put back) or is past its expiry or the lifetime (then it is
    /// erased unused).
    pub fn take(
        &self,
        session: SessionId,
        now: u64,
        lifetime: u64,
    ) -> Result<K::Item, PresignatureError> {
        let name = self.name(session);
        if let Some(used_at) = self.consumed_at(session)? {
            // A record of a consumed presignature was put back: erase it again.
            if let Err(e) = self.store.delete(&name) {
                if !matches!(e, StoreError::NotFound(_)) {
                    return Err(e.into());
                }
            }
            return Err(PresignatureError::Consumed {
                noun: K::NOUN,
                key: self.key,
                session,
                used_at,
            });
        }
        let bytes = match self.store.get(&name) {
            Ok(b) => b,
            Err(StoreError::NotFound(_)) => {
                return Err(PresignatureError::NotAvailable {
                    noun: K::NOUN,
                    key: self.key,
                    session,
                })
            }
            Err(e) => return Err(e.into()),
        };
        let record: Record<K::Record> = serde_json::from_slice(&bytes)
            .map_err(|e| PresignatureError::Format(name.to_string(), e.to_string()))?;
        let expires_at = record
            .expires_at
            .min(record.created_at.saturating_add(lifetime));
        if now >= expires_at {
            self.store.delete(&name)?;
            return Err(PresignatureError::Expired {
                noun: K::NOUN,
                key: self.key,
                session,
                expires_at,
                now,
            });
        }
        // Remembered as consumed before the record goes: a crash in between leaves a record
        // that can never be taken (see above), never a presignature that can be taken twice.
        // Remembered for as long as a copy of the record could be taken (its own expiry, even if
        // the lifetime is raised later).
        let consumed = Consumed {
            used_at: now,
            remember_until: record.expires_at.max(expires_at),
        };
        self.store.put(
            &self.consumed_name(session),
            &serde_json::to_vec(&consumed).expect("consumed records serialize"),
        )?;
        // The durable marker stands for the removal: a record a crash brings back is refused
        // and erased by the next `take` (see above).
        self.store.delete_lazily(&name)?;
        Ok(K::from_record(record.item))
    }

    /// Erases the items past their expiry or `lifetime` at `now`, and forgets the consumed ids
    /// whose items would have expired by now (a copy of them could not
    /// be used anyway). A record that cannot be read is left for [`take`](Self::take) to report.
    pub fn sweep(&self, now: u64, lifetime: u64) -> Result<Swept, PresignatureError> {
        let mut swept = Swept::default();
        let (fresh, used) = (self.prefix(), self.consumed_prefix());
        for name in self.store.list()? {
            if name.as_str().starts_with(&fresh) {
                // Only the times are read: an item of any kind is swept alike.
                let Ok(record) = serde_json::from_slice::<Times>(&self.store.get(&name)?) else {
                    continue;
                };
                let expires_at = record
                    .expires_at
                    .min(record.created_at.saturating_add(lifetime));
                if now >= expires_at {
                    self.store.delete(&name)?;
                    swept.expired += 1;
                }
            } else if name.as_str().starts_with(&used) {
                let Ok(consumed) = serde_json::from_slice::<Consumed>(&self.store.get(&name)?)
                else {
                    continue;
                };
                if now >= consumed.remember_until {
                    self.store.delete(&name)?;
                    swept.forgotten += 1;
                }
            }
        }
        Ok(swept)
    }
}
