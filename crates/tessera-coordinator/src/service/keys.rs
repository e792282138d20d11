//! Threshold keys (admin operations): generation on a ready committee, listing, and the
//! (child) public keys and addresses derived without any share.

use std::sync::Arc;

use tessera_audit::NewEvent;
use tessera_chain::bitcoin::BitcoinNetwork;
use tessera_chain::{address_of_key, Chain};
use tessera_control::{agreed, Operation, Output, StarterError};
use tessera_wire::{KeyId, KeyKind, PartyId};

use super::{now_unix, quorum, to_db, Coordinator, KeyAddress, KeyView, ServiceError, SYSTEM};
use crate::store::{
    CommitteeStatus, InsertOutcome, KeyRow, KeyStatus, LifecyclePhase, NewKey, NewSession,
    SessionOutcome, SessionSubject,
};

/// The chain a key of `kind` has its address on unless another is asked for: Ethereum for
/// ECDSA keys, Bitcoin for Taproot keys, Solana for Ed25519 keys.
pub(crate) fn default_chain(kind: KeyKind) -> Chain {
    match kind {
        KeyKind::Ecdsa => Chain::Ethereum,
        KeyKind::Taproot => Chain::Bitcoin,
        KeyKind::Ed25519 => Chain::Solana,
    }
}

/// Whether a key of `kind` signs for `chain`: ECDSA keys for Ethereum and Bitcoin (P2WPKH),
/// Taproot keys for Bitcoin (P2TR), Ed25519 keys for Solana.
fn signs_for(kind: KeyKind, chain: Chain) -> bool {
    matches!(
        (kind, chain),
        (KeyKind::Ecdsa, Chain::Ethereum | Chain::Bitcoin)
            | (KeyKind::Taproot, Chain::Bitcoin)
            | (KeyKind::Ed25519, Chain::Solana)
    )
}

/// The address of `key` at `path` on `chain` (its default chain if `None`; Bitcoin addresses
/// on `network`), with the key at the path as its chain sees it.
pub(crate) fn key_address_at(
    key: &KeyRow,
    path: &[u32],
    chain: Option<Chain>,
    network: BitcoinNetwork,
) -> Result<(Chain, Vec<u8>, String), ServiceError> {
    let chain = chain.unwrap_or_else(|| default_chain(key.kind));
    if !signs_for(key.kind, chain) {
        return Err(ServiceError::Invalid(format!(
            "key '{}' is a {} key and has no {chain} address (ecdsa keys sign for ethereum and \
             bitcoin, taproot keys for bitcoin, ed25519 keys for solana)",
            key.name, key.kind
        )));
    }
    let public_key = public_key_at(key, path)?;
    let address = address_of_key(&public_key, chain, network).map_err(|e| {
        ServiceError::corrupt(format_args!("key {} has no {chain} address: {e}", key.id))
    })?;
    Ok((chain, public_key, address))
}

impl From<KeyRow> for KeyView {
    fn from(row: KeyRow) -> Self {
        let address = key_address_at(&row, &[], None, BitcoinNetwork::Mainnet)
            .ok()
            .map(|(_, _, address)| address);
        KeyView {
            address,
            id: row.id,
            name: row.name,
            threshold: row.threshold,
            committee: row.committee,
            status: row.status,
            kind: row.kind,
            public_key: row.public_key.as_deref().map(hex::encode),
            chain_code: row.chain_code.as_deref().map(hex::encode),
            error: row.error,
            created_at: row.created_at,
            updated_at: row.updated_at,
            refresh_every_secs: row.refresh_every_secs,
            next_refresh_at: row.next_refresh_at,
            rotated_at: row.rotated_at,
            epoch: row.epoch,
            activation_due: row
                .lifecycle
                .as_ref()
                .filter(|l| l.phase == LifecyclePhase::Activate)
                .map(|l| l.session.to_string()),
            erasure_unconfirmed: row
                .lifecycle
                .filter(|l| l.phase == LifecyclePhase::Close)
                .map(|l| l.due)
                .unwrap_or_default(),
        }
    }
}

/// A session about a key, as it ran: its start, every party's verified report, and how long
/// it took.
pub(super) struct KeySession {
    /// The signed start's content.
    pub start: tessera_control::SessionStart,
    /// The parties' reports (or why none could be collected).
    pub reports: Result<tessera_control::Reports, StarterError>,
    /// From start to the last report.
    pub elapsed: std::time::Duration,
}

/// The compressed public key of `key` at `path` (the master key for an empty path).
/// Key names, each looked up once (for a list whose rows name keys by id).
#[derive(Default)]
pub(super) struct KeyNames(std::collections::HashMap<KeyId, String>);

impl KeyNames {
    /// The name of `key`.
    pub(super) async fn name(
        &mut self,
        coordinator: &Coordinator,
        key: KeyId,
    ) -> Result<String, ServiceError> {
        if let Some(name) = self.0.get(&key) {
            return Ok(name.clone());
        }
        let name = coordinator.key_row(key).await?.name;
        self.0.insert(key, name.clone());
        Ok(name)
    }
}

/// The public key of `key` at `path` as its chain sees it: SEC1 compressed for ECDSA, the
/// x-only Taproot output key, the 32-byte Ed25519 key (what the nodes check signatures and a
/// payload's signer against).
pub(crate) fn public_key_at(key: &KeyRow, path: &[u32]) -> Result<Vec<u8>, ServiceError> {
    let public_key = key.public_key.as_deref().ok_or_else(|| {
        ServiceError::Unavailable(format!(
            "key '{}' is {}: it has no public key yet",
            key.name, key.status
        ))
    })?;
    tessera_policy::request::check_path(path)
        .map_err(|e| ServiceError::Invalid(format!("derivation path: {e}")))?;
    let chain_code = key.chain_code.as_deref().unwrap_or_default();
    if !path.is_empty() && chain_code.is_empty() {
        return Err(ServiceError::Invalid(format!(
            "key '{}' has no HD chain code, so it has no child keys; use the empty path",
            key.name
        )));
    }
    tessera_mpc::chain_public_key(key.kind, public_key, chain_code, path)
        .map_err(|e| ServiceError::Invalid(format!("derivation path {path:?}: {e}")))
}

impl Coordinator {
    /// Generates a `threshold`-of-n key named `name` on a ready committee (any order of its
    /// parties) and returns it ready, with its public key, HD chain code and address.
    /// Idempotent by name: the same name, committee and threshold again returns the stored
    /// key; the name used for another key is a [`ServiceError::Conflict`]. If key generation
    /// fails the key is recorded `failed` (its name stays taken) and
    /// [`ServiceError::Unavailable`] says why.
    ///
    /// The protocol runs in its own task: if the caller stops waiting, the key is still
    /// generated and recorded.
    pub async fn create_key(
        self: &Arc<Self>,
        name: &str,
        committee: Vec<PartyId>,
        threshold: u16,
        kind: KeyKind,
    ) -> Result<KeyView, ServiceError> {
        let committee = self.committee_parties(&committee)?;
        if threshold < 2 || usize::from(threshold) > committee.len() {
            return Err(ServiceError::Invalid(format!(
                "threshold {threshold} for a committee of {}: a threshold key needs 2 to {} \
                 signers",
                committee.len(),
                committee.len()
            )));
        }
        let row = self.committee(&committee).await?;
        if row.status != CommitteeStatus::Ready {
            return Err(ServiceError::Unavailable(format!(
                "committee {} is {}; keys are generated on a ready committee (set it up first)",
                PartyId::list(&committee),
                row.status
            )));
        }
        if let Some(existing) = self.store.get_key_by_name(name).await? {
            return if existing.committee == committee
                && existing.threshold == threshold
                && existing.kind == kind
            {
                Ok(existing.into())
            } else {
                Err(ServiceError::Conflict(format!(
                    "a key named '{name}' already exists (a {}-of-{} {} key on {}); choose \
                     another name",
                    existing.threshold,
                    existing.committee.len(),
                    existing.kind,
                    PartyId::list(&existing.committee)
                )))
            };
        }
        let new = NewKey {
            id: KeyId::random(),
            name: name.to_owned(),
            threshold,
            committee: committee.clone(),
            kind,
            created_at: to_db(now_unix()),
        };
        if let InsertOutcome::Existing(existing) = self.store.insert_key(&new).await? {
            return Ok(existing.into());
        }
        tracing::info!(key = %new.id, %name, threshold, %kind, committee = %PartyId::list(&committee), "key generation started");
        self.audit_note(
            NewEvent::new(SYSTEM, "key.generation_started", format!("key:{}", new.id))
                .detail("name", name)
                .detail("kind", kind)
                .detail("threshold", threshold)
                .detail("committee", PartyId::list(&committee)),
        );
        let this = self.clone();
        let task =
            tokio::spawn(async move { this.generate(new.id, &committee, threshold, kind).await });
        task.await.map_err(|e| {
            ServiceError::Unavailable(format!("the key generation task failed: {e}"))
        })??;
        let key = self.key_row(new.id).await?;
        match key.status {
            KeyStatus::Ready => Ok(key.into()),
            _ => Err(ServiceError::Unavailable(format!(
                "key generation for '{name}' failed: {}; the name stays taken by the failed key: \
                 create the key again under another name",
                key.error.as_deref().unwrap_or("no reason recorded")
            ))),
        }
    }

    /// Starts a session about `key` (recorded as the key's, for `name`), runs it within
    /// `deadline` and returns every party's verified report (none of which need agree).
    pub(super) async fn start_key_session(
        &self,
        key: KeyId,
        name: &str,
        parties: &[PartyId],
        operation: Operation,
        deadline: std::time::Duration,
    ) -> Result<KeySession, ServiceError> {
        let (start, signed) = self.starter.start(parties, operation);
        self.store
            .insert_session(&NewSession {
                session_id: start.session,
                subject: SessionSubject::Key(key),
                operation: name.into(),
                parties: parties.to_vec(),
                started_at: to_db(now_unix()),
            })
            .await?;
        let began = std::time::Instant::now();
        let reports = match self.control.run(&start, &signed, deadline).await {
            Ok(outcomes) => Ok(self.starter.collect(&start, &outcomes)),
            Err(e) => Err(e),
        };
        Ok(KeySession {
            start,
            reports,
            elapsed: began.elapsed(),
        })
    }

    /// Runs key generation for a key recorded `creating`, and records the outcome.
    async fn generate(
        &self,
        id: KeyId,
        committee: &[PartyId],
        threshold: u16,
        kind: KeyKind,
    ) -> Result<(), ServiceError> {
        let run = self
            .start_key_session(
                id,
                "keygen",
                committee,
                Operation::Keygen {
                    key: id,
                    threshold,
                    kind,
                },
                self.settings.session_deadline,
            )
            .await?;
        let session = run.start.session;
        let outcome = run.reports.and_then(|r| agreed(&run.start, r));
        self.counters
            .session("keygen", outcome.is_ok(), run.elapsed);
        let result = match outcome {
            Ok(Output::Keygen {
                public_key,
                chain_code,
            }) => {
                let readable = tessera_mpc::chain_public_key(kind, &public_key, &[], &[])
                    .ok()
                    .filter(|key| {
                        address_of_key(key, default_chain(kind), BitcoinNetwork::Mainnet).is_ok()
                    });
                if readable.is_none() {
                    Err((
                        format!("the nodes reported a public key that is not a {kind} key"),
                        vec![],
                    ))
                } else if !(chain_code.is_empty() || chain_code.len() == 32) {
                    Err((
                        "the nodes reported a chain code that is not 32 bytes".to_owned(),
                        vec![],
                    ))
                } else {
                    Ok((public_key, chain_code))
                }
            }
            Ok(other) => Err((format!("key generation returned {other:?}"), vec![])),
            Err(e) => Err((e.to_string(), e.blamed())),
        };
        match result {
            Ok((public_key, chain_code)) => {
                self.store
                    .finish_session(session, &SessionOutcome::Ok, &[])
                    .await?;
                let chain_code = (!chain_code.is_empty()).then_some(chain_code.as_slice());
                self.store
                    .set_key_ready(id, &public_key, chain_code)
                    .await?;
                // Presignatures (ECDSA) or committed nonces (FROST) for one-round signing.
                if let Some(pool) = &self.pool {
                    pool.track(id, &quorum::preferred(committee, threshold));
                }
                tracing::info!(key = %id, %kind, "key generated");
                self.audit_note(
                    NewEvent::new(SYSTEM, "key.created", format!("key:{id}"))
                        .detail("session", session)
                        .detail("public_key", hex::encode(&public_key)),
                );
            }
            Err((error, blamed)) => {
                self.store
                    .finish_session(session, &SessionOutcome::Failed(error.clone()), &blamed)
                    .await?;
                self.health.failed(&blamed);
                self.store.set_key_failed(id, &error).await?;
                tracing::warn!(key = %id, %error, "key generation failed");
                self.audit_note(
                    NewEvent::new(SYSTEM, "key.generation_failed", format!("key:{id}"))
                        .detail("session", session)
                        .detail("error", &error)
                        .detail("blamed", PartyId::list(&blamed)),
                );
            }
        }
        Ok(())
    }

    /// Every key, by name.
    pub async fn list_keys(&self) -> Result<Vec<KeyView>, ServiceError> {
        Ok(self
            .store
            .list_keys()
            .await?
            .into_iter()
            .map(Into::into)
            .collect())
    }

    /// The key with this name, or with this id (32 hex digits).
    pub async fn get_key(&self, name_or_id: &str) -> Result<KeyView, ServiceError> {
        Ok(self.resolve_key(name_or_id).await?.into())
    }

    /// The public key and address of `key` (name or id) at `path` (non-hardened indices;
    /// empty = the master key) on `chain` (the key's default chain if `None`; Bitcoin
    /// addresses on `network`), derived from the key's public key and chain code.
    pub async fn key_address(
        &self,
        key: &str,
        path: &[u32],
        chain: Option<Chain>,
        network: BitcoinNetwork,
    ) -> Result<KeyAddress, ServiceError> {
        let key = self.resolve_key(key).await?;
        let (chain, public_key, address) = key_address_at(&key, path, chain, network)?;
        Ok(KeyAddress {
            key_id: key.id,
            kind: key.kind,
            path: path.to_vec(),
            chain: chain.to_string(),
            network: (chain == Chain::Bitcoin).then(|| network.to_string()),
            public_key: hex::encode(&public_key),
            address,
        })
    }

    /// The key with this name, or with this id.
    pub(crate) async fn resolve_key(&self, name_or_id: &str) -> Result<KeyRow, ServiceError> {
        if let Ok(id) = name_or_id.parse::<KeyId>() {
            if let Some(key) = self.store.get_key(id).await? {
                return Ok(key);
            }
        }
        self.store
            .get_key_by_name(name_or_id)
            .await?
            .ok_or_else(|| {
                ServiceError::NotFound(format!(
                    "no key named {:?} and no key with that id; list the keys to see them",
                    name_or_id.chars().take(128).collect::<String>()
                ))
            })
    }

    pub(crate) async fn key_row(&self, id: KeyId) -> Result<KeyRow, ServiceError> {
        self.store
            .get_key(id)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("no key {id}")))
    }
}
