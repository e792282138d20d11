//! What a node keeps in its encrypted store, and under which record names:
//!
//! | record | content |
//! |---|---|
//! | `aux.<committee>` | the committee's auxiliary info, copied into each key it generates, e.g. `aux.p1-p2-p3` |
//! | `key.<key id>` | the key's active epoch: committee, threshold, epoch number, this party's share and its auxiliary info |
//! | `presig.<key id>.<session>` | one fresh presignature, with its expiry ([`PresignatureStore`]) |
//! | `presig-used.<key id>.<session>` | a consumed presignature, remembered until it would have expired |
//! | `primes.<id>` | one pre-generated prime set ([`PrimePool`]) |
//! | `reshare.<key id>.<session>` | a reshare's result here: started, pending, activated (with the retired epoch), closed or abandoned |
//! | `change.<id>` | an approved key change this node has used (never again) |
//!
//! Records are never overwritten: a second key generation under an existing key id, or second
//! auxiliary info for a committee, is refused. The exception is a key's epochs: activating a
//! reshare's new epoch replaces (or removes) `key.<key id>`, keeping the old epoch retired
//! inside the reshare's record until the epoch is closed, and only on certificates the node
//! checked itself (`docs/protocols/reshare.md`, Activation and erasure).

use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};
use tessera_control::{EpochReport, SignedOutcome};
use tessera_mpc::frost::{Ed25519, FrostKeyShare, Scheme};
use tessera_mpc::{
    AuxInfo, FrostNonceStore, IncompleteKeyShare, KeyShare, PresignatureError, PresignatureStore,
    PrimePool,
};
use tessera_store::{RecordName, SecretStore, StoreError};
use tessera_wire::{KeyId, KeyKind, PartyId, RequestId, SessionId};
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
    /// An approved key change was used here before.
    #[error("approved key change {id} was already used here (by reshare session {session}); an approval carries out one session: propose the change again")]
    ChangeUsed {
        /// The change.
        id: RequestId,
        /// The session that used it.
        session: SessionId,
    },
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

/// Why a reshare's result could not be activated, closed or abandoned here. Nothing changed.
#[derive(Debug, thiserror::Error)]
pub enum ReshareStateError {
    /// The state failed.
    #[error(transparent)]
    State(#[from] StateError),
    /// This party has no result of the session (it failed or never ran here).
    #[error("reshare session {0} left no result here (it failed or did not run on this node); nothing changed")]
    NoSession(SessionId),
    /// The certificate's report is not the one this party's output had.
    #[error("the certificate for reshare session {0} does not match this node's result; nothing changed")]
    Mismatch(SessionId),
    /// Abandoned before.
    #[error("reshare session {0} was abandoned here; it cannot be activated")]
    Abandoned(SessionId),
    /// The pending result expired before the activation arrived.
    #[error("the pending result of reshare session {0} expired here before its activation arrived; it is abandoned")]
    Expired(SessionId),
    /// The key is no longer at the epoch the session started from.
    #[error("key {key} is at epoch {held} here (or not held), but reshare session {session} starts from epoch {from}: a stale certificate; nothing changed")]
    Stale {
        /// The key.
        key: KeyId,
        /// The session.
        session: SessionId,
        /// The epoch it starts from.
        from: u64,
        /// The epoch held here (`u64::MAX` if none).
        held: u64,
    },
    /// Closed before: the new epoch is final here.
    #[error("reshare session {0} is closed here: its new epoch is final and the old one erased")]
    Closed(SessionId),
    /// Activated: only a new holder's abandonment proof takes it back.
    #[error("reshare session {0} is activated here; only a new holder's signed abandonment takes it back")]
    Activated(SessionId),
    /// Pending and not expired: erasing it needs an abandonment proof.
    #[error("reshare session {0} is pending here; it is abandoned only on a participant's signed failure or abandonment, or once it expires")]
    NeedsProof(SessionId),
}

impl From<StoreError> for ReshareStateError {
    fn from(e: StoreError) -> Self {
        ReshareStateError::State(e.into())
    }
}

/// This party's share of a key, on the key's curve.
#[derive(Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum StoredShare {
    /// A secp256k1 share: ECDSA and Taproot keys (the same key-share format for both).
    Secp256k1(IncompleteKeyShare),
    /// An Ed25519 share.
    Ed25519(FrostKeyShare<Ed25519>),
}

impl StoredShare {
    /// The secp256k1 share, if the key is on secp256k1.
    pub fn secp256k1(&self) -> Option<&IncompleteKeyShare> {
        match self {
            StoredShare::Secp256k1(share) => Some(share),
            StoredShare::Ed25519(_) => None,
        }
    }

    /// The Ed25519 share, if the key is an Ed25519 key.
    pub fn ed25519(&self) -> Option<&FrostKeyShare<Ed25519>> {
        match self {
            StoredShare::Ed25519(share) => Some(share),
            StoredShare::Secp256k1(_) => None,
        }
    }

    /// This party's index in the key's committee.
    pub fn index(&self) -> u16 {
        match self {
            StoredShare::Secp256k1(share) => share.i,
            StoredShare::Ed25519(share) => share.i,
        }
    }

    /// The key's (master, untweaked) public key: SEC1 compressed on secp256k1, 32 bytes for
    /// Ed25519.
    pub fn public_key(&self) -> Vec<u8> {
        match self {
            StoredShare::Secp256k1(share) => share.shared_public_key.to_bytes(true).to_vec(),
            StoredShare::Ed25519(share) => share.shared_public_key.to_bytes(true).to_vec(),
        }
    }

    /// The key's public info (public key, public shares, evaluation points, chain code) as the
    /// library's JSON.
    pub fn key_info_json(&self) -> Result<String, serde_json::Error> {
        match self {
            StoredShare::Secp256k1(share) => serde_json::to_string(&share.key_info),
            StoredShare::Ed25519(share) => serde_json::to_string(&share.key_info),
        }
    }

    /// The key's public info on its curve, as a reshare setup carries it.
    pub fn setup_key(&self) -> tessera_mpc::reshare::SetupKey {
        match self {
            StoredShare::Secp256k1(share) => share.key_info.clone().into(),
            StoredShare::Ed25519(share) => share.key_info.clone().into(),
        }
    }

    /// Whether the share's curve is the one keys of `kind` live on.
    pub fn fits(&self, kind: KeyKind) -> bool {
        matches!(
            (self, kind),
            (StoredShare::Secp256k1(_), KeyKind::Ecdsa | KeyKind::Taproot)
                | (StoredShare::Ed25519(_), KeyKind::Ed25519)
        )
    }
}

/// One epoch of a key as this party holds it.
#[derive(Clone, Serialize, Deserialize)]
pub struct KeyRecord {
    /// The parties holding the key in this epoch, in key order.
    pub committee: Vec<PartyId>,
    /// Signers needed.
    pub threshold: u16,
    /// The epoch: 0 after key generation, one more after each refresh or reshare. (Records
    /// written before epochs existed read as 0.)
    #[serde(default)]
    pub epoch: u64,
    /// The key's kind. (Records written before kinds existed are ECDSA keys.)
    #[serde(default)]
    pub kind: KeyKind,
    /// This party's share (without auxiliary info).
    pub share: StoredShare,
    /// The auxiliary info of this epoch (Paillier keys, ring-Pedersen parameters). `None` in
    /// records written before keys had their own: those use their committee's.
    #[serde(default)]
    pub aux: Option<AuxInfo>,
}

/// A reshare session's result at this party (`docs/protocols/reshare.md`, Activation and
/// erasure).
#[derive(Serialize, Deserialize)]
pub enum ReshareRecord {
    /// The session is running here (written before the protocol starts, so that a session
    /// runs at most once, even across a restart; a record left in this state by a crash
    /// reads as abandoned).
    Started,
    /// The session succeeded here; waiting for its activation certificate.
    Pending {
        /// What this party reported (signed) for the session.
        report: EpochReport,
        /// The new epoch for a receiver; `None` for a dealer leaving the committee.
        record: Option<Box<KeyRecord>>,
        /// Unix seconds after which it can no longer be activated here.
        expires_at: u64,
    },
    /// Activated on its certificate: the new epoch is active here (or, for a party that
    /// left, no epoch is), the old one retired until the epoch closes.
    Activated {
        /// The report.
        report: EpochReport,
        /// The activation certificate.
        certificate: Vec<SignedOutcome>,
        /// The old epoch, kept (never used to sign) until the closure certificate.
        retired: Option<Box<KeyRecord>>,
        /// The new epoch installed as `key.<key id>`, for a receiver.
        installed: Option<Box<KeyRecord>>,
    },
    /// Closed on its closure certificate: the old epoch is erased here.
    Closed {
        /// The report.
        report: EpochReport,
    },
    /// Abandoned: any pending result is erased; the session can never be activated here.
    Abandoned {
        /// Why.
        reason: String,
    },
}

impl ReshareRecord {
    /// The record's state, for messages and metrics.
    pub fn state(&self) -> &'static str {
        match self {
            ReshareRecord::Started => "started",
            ReshareRecord::Pending { .. } => "pending",
            ReshareRecord::Activated { .. } => "activated",
            ReshareRecord::Closed { .. } => "closed",
            ReshareRecord::Abandoned { .. } => "abandoned",
        }
    }
}

/// What activating a new epoch did here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// The new epoch is this party's active share of the key.
    Installed,
    /// This party left the committee: it no longer holds an active share of the key.
    Left,
    /// It was activated before (a repeated activation changes nothing).
    AlreadyDone,
}

/// What closing an old epoch did here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Closure {
    /// The old epoch's share and auxiliary info were erased now.
    Erased,
    /// Nothing of the old epoch was held here (or it was erased before).
    NothingHeld,
}

/// What abandoning a session did here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Abandonment {
    /// A pending result was erased.
    Erased,
    /// An activated epoch was taken back: the retired one is active again.
    Reverted,
    /// There was no result here; the session is recorded abandoned.
    Recorded,
    /// It was abandoned before.
    AlreadyDone,
}

/// What [`NodeState::sweep_reshares`] did: each session it abandoned, with why, or the error
/// that left it as it was.
pub type Swept = Vec<(KeyId, SessionId, Result<&'static str, StateError>)>;

/// The node's durable state in a [`SecretStore`].
pub struct NodeState<S: SecretStore> {
    store: Arc<S>,
    /// Serialises the transitions of reshare records (each reads a record, decides and
    /// writes), so that two control messages about one session cannot interleave.
    lifecycle: Arc<Mutex<()>>,
}

impl<S: SecretStore> Clone for NodeState<S> {
    fn clone(&self) -> Self {
        NodeState {
            store: self.store.clone(),
            lifecycle: self.lifecycle.clone(),
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
        NodeState {
            store,
            lifecycle: Arc::new(Mutex::new(())),
        }
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

    /// The key record of `key` (committee, threshold, share without auxiliary info); refused
    /// if its share is not on its kind's curve.
    pub fn key_record(&self, key: KeyId) -> Result<KeyRecord, StateError> {
        let record: KeyRecord = self
            .get_json(&Self::key_name(key))?
            .ok_or(StateError::UnknownKey(key))?;
        if !record.share.fits(record.kind) {
            return Err(StateError::InvalidShare {
                key,
                reason: format!("the share is not on the curve of a {} key", record.kind),
            });
        }
        Ok(record)
    }

    fn reshare_name(key: KeyId, session: SessionId) -> RecordName {
        record(format!("reshare.{key}.{session}"))
    }

    fn change_name(id: RequestId) -> RecordName {
        record(format!("change.{id}"))
    }

    fn locked(&self) -> MutexGuard<'_, ()> {
        // The guard protects no data of its own: a panic elsewhere leaves nothing half-done.
        self.lifecycle.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn put_json<T: Serialize>(&self, name: &RecordName, value: &T) -> Result<(), StateError> {
        let bytes = Zeroizing::new(serde_json::to_vec(value).expect("state records serialize"));
        Ok(self.store.put(name, &bytes)?)
    }

    fn delete(&self, name: &RecordName) -> Result<(), StateError> {
        match self.store.delete(name) {
            Ok(()) | Err(StoreError::NotFound(_)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Marks approved key change `id` as used here by reshare `session`; refused if this node
    /// used it before (an approval carries out at most one session). The check and the record
    /// are one step under the lifecycle lock, so that of two sessions that start at once with
    /// the same change only one can use it.
    pub fn use_change(&self, id: RequestId, session: SessionId) -> Result<(), StateError> {
        let _guard = self.locked();
        let name = Self::change_name(id);
        if let Some(session) = self.get_json::<SessionId>(&name)? {
            return Err(StateError::ChangeUsed { id, session });
        }
        self.put_json(&name, &session)
    }

    /// Records that reshare `session` of `key` starts here; refused if the session left any
    /// record before, so that it runs here at most once.
    pub fn start_reshare(&self, key: KeyId, session: SessionId) -> Result<(), StateError> {
        let _guard = self.locked();
        self.put_new_json(&Self::reshare_name(key, session), &ReshareRecord::Started)
    }

    /// Keeps reshare `session`'s result pending until `expires_at`. Refused unless the session
    /// is still recorded as started here (it was abandoned meanwhile).
    pub fn put_pending_reshare(
        &self,
        key: KeyId,
        session: SessionId,
        report: EpochReport,
        record: Option<KeyRecord>,
        expires_at: u64,
    ) -> Result<(), ReshareStateError> {
        let _guard = self.locked();
        let name = Self::reshare_name(key, session);
        match self.get_json::<ReshareRecord>(&name)? {
            Some(ReshareRecord::Started) => {}
            _ => return Err(ReshareStateError::Abandoned(session)),
        }
        let pending = ReshareRecord::Pending {
            report,
            record: record.map(Box::new),
            expires_at,
        };
        Ok(self.put_json(&name, &pending)?)
    }

    /// Records reshare `session` abandoned after it failed here (while it is recorded as
    /// started; any later record stays as it is).
    pub fn fail_reshare(
        &self,
        key: KeyId,
        session: SessionId,
        reason: &str,
    ) -> Result<(), StateError> {
        let _guard = self.locked();
        let name = Self::reshare_name(key, session);
        if !matches!(self.get_json(&name)?, Some(ReshareRecord::Started)) {
            return Ok(());
        }
        self.put_json(
            &name,
            &ReshareRecord::Abandoned {
                reason: reason.to_owned(),
            },
        )
    }

    /// The record reshare `session` of `key` left here, if any.
    pub fn reshare(
        &self,
        key: KeyId,
        session: SessionId,
    ) -> Result<Option<ReshareRecord>, StateError> {
        self.get_json(&Self::reshare_name(key, session))
    }

    /// Every reshare record of `key` here, by session.
    pub fn reshares(&self, key: KeyId) -> Result<Vec<(SessionId, ReshareRecord)>, StateError> {
        let prefix = format!("reshare.{key}.");
        let mut found = Vec::new();
        for name in self.store.list()? {
            let Some(session) = name.as_str().strip_prefix(&prefix) else {
                continue;
            };
            let Ok(session) = session.parse::<SessionId>() else {
                continue;
            };
            if let Some(record) = self.get_json(&name)? {
                found.push((session, record));
            }
        }
        Ok(found)
    }

    /// Every reshare record here, by key and session (its name alone: nothing is read).
    fn reshare_sessions(&self) -> Result<Vec<(KeyId, SessionId)>, StateError> {
        Ok(self
            .store
            .list()?
            .iter()
            .filter_map(|n| {
                let (key, session) = n.as_str().strip_prefix("reshare.")?.split_once('.')?;
                Some((key.parse().ok()?, session.parse().ok()?))
            })
            .collect())
    }

    fn current(&self, key: KeyId) -> Result<Option<KeyRecord>, StateError> {
        self.get_json(&Self::key_name(key))
    }

    /// Makes `installed` the key's active epoch (a receiver), or removes the active epoch
    /// `from` (a party that left); a later epoch is never touched. Idempotent.
    fn install(
        &self,
        key: KeyId,
        installed: Option<&KeyRecord>,
        from: u64,
    ) -> Result<(), StateError> {
        let current = self.current(key)?;
        match installed {
            Some(new) if current.as_ref().map(|c| c.epoch) != Some(new.epoch) => {
                self.put_json(&Self::key_name(key), new)
            }
            Some(_) => Ok(()),
            None if current.as_ref().is_some_and(|c| c.epoch == from) => {
                self.delete(&Self::key_name(key))
            }
            None => Ok(()),
        }
    }

    /// Activates the new epoch of reshare `session` of `key` here, on a certificate (checked by
    /// the caller) that carries `report`: it must be the report this party's pending result
    /// has, not expired, and the key must still be at the epoch the session started from
    /// (`me` holding it if and only if it is in the old committee). A receiver's new epoch
    /// becomes `key.<key>`; a party that leaves stops holding an active share; the old epoch
    /// is kept retired in the session's record. The key's presignatures and every other
    /// pending result of the key are erased. Each step is durable before the next, and a
    /// repeated activation completes an interrupted one.
    pub fn activate_epoch(
        &self,
        key: KeyId,
        session: SessionId,
        me: PartyId,
        report: &EpochReport,
        certificate: &[SignedOutcome],
        now: u64,
    ) -> Result<Activation, ReshareStateError> {
        let _guard = self.locked();
        let name = Self::reshare_name(key, session);
        let (mine, record, expires_at) = match self.get_json::<ReshareRecord>(&name)? {
            None | Some(ReshareRecord::Started) => {
                return Err(ReshareStateError::NoSession(session))
            }
            Some(ReshareRecord::Abandoned { .. }) => {
                return Err(ReshareStateError::Abandoned(session))
            }
            Some(ReshareRecord::Closed { .. }) => return Ok(Activation::AlreadyDone),
            Some(ReshareRecord::Activated {
                report, installed, ..
            }) => {
                self.install(key, installed.as_deref(), report.from_epoch)?;
                return Ok(Activation::AlreadyDone);
            }
            Some(ReshareRecord::Pending {
                report,
                record,
                expires_at,
            }) => (report, record, expires_at),
        };
        if !mine.same_result(report) || (mine.aux.is_some() && mine.aux != report.aux) {
            return Err(ReshareStateError::Mismatch(session));
        }
        if now > expires_at {
            self.put_json(
                &name,
                &ReshareRecord::Abandoned {
                    reason: "its pending result expired before the activation arrived".into(),
                },
            )?;
            return Err(ReshareStateError::Expired(session));
        }
        let current = self.current(key)?;
        let held = current.as_ref().map_or(u64::MAX, |c| c.epoch);
        let fresh = match &current {
            Some(c) => {
                mine.old_committee.contains(&me)
                    && c.epoch == mine.from_epoch
                    && c.committee == mine.old_committee
            }
            None => !mine.old_committee.contains(&me),
        };
        if !fresh {
            return Err(ReshareStateError::Stale {
                key,
                session,
                from: mine.from_epoch,
                held,
            });
        }
        let leaves = record.is_none();
        self.put_json(
            &name,
            &ReshareRecord::Activated {
                report: mine.clone(),
                certificate: certificate.to_vec(),
                retired: current.map(Box::new),
                installed: record.clone(),
            },
        )?;
        self.install(key, record.as_deref(), mine.from_epoch)?;
        self.erase_presignatures(key)?;
        for (other, left) in self.reshares(key)? {
            if other != session
                && matches!(left, ReshareRecord::Pending { .. } | ReshareRecord::Started)
            {
                self.put_json(
                    &Self::reshare_name(key, other),
                    &ReshareRecord::Abandoned {
                        reason: format!("reshare session {session} of the key was activated"),
                    },
                )?;
            }
        }
        Ok(if leaves {
            Activation::Left
        } else {
            Activation::Installed
        })
    }

    /// Closes the epoch that reshare `session` of `key` replaced, on a closure certificate
    /// (checked by the caller, with the admins' approval for a holder that took no part)
    /// for `report`: the retired epoch is erased and only the report kept. A participant
    /// must have activated first; an old holder whose own result was abandoned, or that took
    /// no part, erases its share of epoch `report.from_epoch` of the key.
    pub fn close_epoch(
        &self,
        key: KeyId,
        session: SessionId,
        me: PartyId,
        report: &EpochReport,
    ) -> Result<Closure, ReshareStateError> {
        let _guard = self.locked();
        let name = Self::reshare_name(key, session);
        let closed = ReshareRecord::Closed {
            report: report.clone(),
        };
        match self.get_json::<ReshareRecord>(&name)? {
            Some(ReshareRecord::Pending { .. }) => Err(ReshareStateError::NoSession(session)),
            Some(ReshareRecord::Activated { retired, .. }) => {
                self.put_json(&name, &closed)?;
                Ok(if retired.is_some() {
                    Closure::Erased
                } else {
                    Closure::NothingHeld
                })
            }
            Some(ReshareRecord::Closed { .. }) => Ok(Closure::NothingHeld),
            left
            @ (None | Some(ReshareRecord::Started) | Some(ReshareRecord::Abandoned { .. })) => {
                // This party holds no new epoch of the session: it is an old holder that took
                // no part, or whose own result was abandoned. A receiver cannot be here (the
                // certificate needs its activation).
                if report.new_committee.contains(&me) {
                    return Err(ReshareStateError::Abandoned(session));
                }
                let current = self.current(key)?;
                match current {
                    Some(c) if c.epoch == report.from_epoch => {
                        self.put_json(&name, &closed)?;
                        self.delete(&Self::key_name(key))?;
                        self.erase_presignatures(key)?;
                        Ok(Closure::Erased)
                    }
                    Some(c) if c.epoch < report.from_epoch => Err(ReshareStateError::Stale {
                        key,
                        session,
                        from: report.from_epoch,
                        held: c.epoch,
                    }),
                    _ => {
                        if left.is_some() {
                            self.put_json(&name, &closed)?;
                        }
                        Ok(Closure::NothingHeld)
                    }
                }
            }
        }
    }

    /// Abandons reshare `session` of `key` here. `proof_by` names who signed the abandonment
    /// proof the caller checked (a participant of the session), if any. A pending result is
    /// erased with a proof or once expired; an activated one is taken back (the retired
    /// epoch active again, the new one erased) only with a proof by a new holder; no result
    /// is recorded abandoned. A closed session cannot be abandoned.
    pub fn abandon_reshare(
        &self,
        key: KeyId,
        session: SessionId,
        proof_by: Option<PartyId>,
        now: u64,
    ) -> Result<Abandonment, ReshareStateError> {
        let _guard = self.locked();
        let name = Self::reshare_name(key, session);
        let abandoned = |reason: String| ReshareRecord::Abandoned { reason };
        let why = |default: &str| match proof_by {
            Some(p) => format!("{p} signed that the session failed or was abandoned"),
            None => default.to_owned(),
        };
        match self.get_json::<ReshareRecord>(&name)? {
            Some(ReshareRecord::Abandoned { .. }) => Ok(Abandonment::AlreadyDone),
            Some(ReshareRecord::Closed { .. }) => Err(ReshareStateError::Closed(session)),
            None | Some(ReshareRecord::Started) => {
                self.put_json(&name, &abandoned(why("it left no result here")))?;
                Ok(Abandonment::Recorded)
            }
            Some(ReshareRecord::Pending { expires_at, .. }) => {
                if proof_by.is_none() && now <= expires_at {
                    return Err(ReshareStateError::NeedsProof(session));
                }
                self.put_json(&name, &abandoned(why("its pending result expired")))?;
                Ok(Abandonment::Erased)
            }
            Some(ReshareRecord::Activated {
                report,
                retired,
                installed,
                ..
            }) => {
                if !proof_by.is_some_and(|p| report.new_committee.contains(&p)) {
                    return Err(ReshareStateError::Activated(session));
                }
                // The retired epoch first: from here on the new one is never used.
                match &retired {
                    Some(old) => self.put_json(&Self::key_name(key), old)?,
                    None if installed.is_some() => self.delete(&Self::key_name(key))?,
                    None => {}
                }
                self.erase_presignatures(key)?;
                self.put_json(&name, &abandoned(why("")))?;
                Ok(Abandonment::Reverted)
            }
        }
    }

    /// Pending results that expired by `now` are abandoned (their new shares erased), and, at
    /// start-up (`restarted`), sessions a stop interrupted too. Returns each with what
    /// happened to it, or the error that left it as it was: its record cannot be read or does
    /// not decode (whether it was due is unknown), or it could not be read again or written.
    /// Such a failure is confined to its record: the others are swept all the same. `Err` only
    /// if the records cannot be listed: then nothing was swept. Every record is read before
    /// any is written.
    pub fn sweep_reshares(&self, now: u64, restarted: bool) -> Result<Swept, StateError> {
        let mut swept = Vec::new();
        let mut due = Vec::new();
        for (key, session) in self.reshare_sessions()? {
            let reason = match self.reshare(key, session) {
                Ok(Some(ReshareRecord::Pending { expires_at, .. })) if now > expires_at => {
                    "its pending result expired"
                }
                Ok(Some(ReshareRecord::Started)) if restarted => "the node stopped while it ran",
                Ok(_) => continue,
                Err(e) => {
                    swept.push((key, session, Err(e)));
                    continue;
                }
            };
            due.push((key, session, reason));
        }
        for (key, session, reason) in due {
            let _guard = self.locked();
            // Read again under the lock: a certificate may have arrived meanwhile. A record that
            // cannot be read now is reported (it stays as it was, to be tried again).
            match self.reshare(key, session) {
                Ok(Some(ReshareRecord::Pending { .. } | ReshareRecord::Started)) => {}
                Ok(_) => continue,
                Err(e) => {
                    swept.push((key, session, Err(e)));
                    continue;
                }
            }
            let result = self
                .put_json(
                    &Self::reshare_name(key, session),
                    &ReshareRecord::Abandoned {
                        reason: reason.to_owned(),
                    },
                )
                .map(|()| reason);
            swept.push((key, session, result));
        }
        Ok(swept)
    }

    fn erase_presignatures(&self, key: KeyId) -> Result<(), StateError> {
        let prefixes = [format!("presig.{key}."), format!("frost-nonce.{key}.")];
        for name in self.store.list()? {
            if prefixes.iter().any(|p| name.as_str().starts_with(p)) {
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

    /// Loads ECDSA key `key`'s active epoch with its auxiliary info as a complete, validated
    /// key share (refused for other kinds: they have no auxiliary info).
    pub fn key_share(&self, key: KeyId) -> Result<(KeyRecord, KeyShare), StateError> {
        let record = self.key_record(key)?;
        let core = match (&record.share, record.kind) {
            (StoredShare::Secp256k1(core), KeyKind::Ecdsa) => core.clone(),
            _ => {
                return Err(StateError::InvalidShare {
                    key,
                    reason: format!(
                        "it is a {} key: only ECDSA keys have auxiliary info",
                        record.kind
                    ),
                })
            }
        };
        let aux = match &record.aux {
            Some(aux) => aux.clone(),
            None => self.aux(&record.committee)?,
        };
        let share = KeyShare::from_parts((core, aux)).map_err(|e| StateError::InvalidShare {
            key,
            reason: e.to_string(),
        })?;
        Ok((record, share))
    }

    /// The presignatures of `key`.
    pub fn presignatures(&self, key: KeyId) -> PresignatureStore<S> {
        PresignatureStore::new(self.store.clone(), key)
    }

    /// The committed FROST nonces of `key` (a Taproot or Ed25519 key; `C` its scheme).
    pub fn frost_nonces<C: Scheme>(&self, key: KeyId) -> FrostNonceStore<S, C> {
        FrostNonceStore::new(self.store.clone(), key)
    }

    /// What `key` holds ready for one-round signing: its presignatures (ECDSA) or committed
    /// nonces (FROST), by session.
    pub fn online_ready(&self, key: KeyId) -> Result<Vec<SessionId>, PresignatureError> {
        let mut ready = self.presignatures(key).available()?;
        // Listing reads names only, the same for both FROST schemes.
        ready.extend(self.frost_nonces::<Ed25519>(key).available()?);
        Ok(ready)
    }

    /// The prime pool.
    pub fn primes(&self) -> PrimePool<S> {
        PrimePool::new(self.store.clone())
    }
}
