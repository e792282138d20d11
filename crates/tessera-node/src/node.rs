//! The session runner: checks a coordinator's start, runs this party's side, reports.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cggmp24::key_share::AnyKeyShare;
use tessera_audit::{AuditLog, NewEvent};
use tessera_channel::identity::PartyIdentity;
use tessera_channel::Roster;
use tessera_mpc::frost::{self, Bitcoin, Ed25519, FrostKeyShare};
use tessera_mpc::{
    KeyShare, MpcConfig, MpcError, PresignatureError, PrimeError, PrimePool, SessionSpec,
    StoredPresignature,
};
use tessera_store::SecretStore;
use tessera_telemetry::StageClock;
use tessera_transport::SecureTransport;
use tessera_wire::{KeyId, KeyKind, PartyId, Protocol, SessionId};

use tessera_policy::{Approval, EcdsaHash, PolicyDocument, SignRequest, Signing};

use crate::metrics::NodeMetrics;
use crate::requests::{KeyFacts, RequestLedger};
use crate::spends::ChainError;
use crate::state::{
    committee_name, KeyRecord, NodeState, ReshareStateError, StateError, StoredShare,
};
use tessera_control::spend::MAX_RECORDS_PER_DELIVERY;
use tessera_control::{
    now_unix, ControlError, Failure, Operation, Output, SessionOutcome, SessionStart,
    SignedOutcome, SignedStart, SpendLink, SpendRecord,
};

/// How long a presignature may wait for its request, by default: six hours.
pub const DEFAULT_PRESIGNATURE_LIFETIME_SECS: u64 = 6 * 3600;

/// How a node runs sessions.
#[derive(Clone, Debug)]
pub struct NodeSettings {
    /// Round deadline of key generation, presigning and signing.
    pub round_timeout: Duration,
    /// Round deadline of auxiliary info, whose rounds include long proofs.
    pub aux_info_round_timeout: Duration,
    /// Longest validity (`expires_at - issued_at`) a start may ask for.
    pub max_start_lifetime: Duration,
    /// How far in the future a start's `issued_at` may be (clock skew).
    pub clock_skew: Duration,
    /// How long a reshare's result stays pending, waiting for its activation certificate,
    /// before it is abandoned here.
    pub pending_reshare_lifetime: Duration,
    /// How long a presignature may wait for its request; then it is erased unused (so a
    /// restored snapshot of the store re-arms nothing older).
    pub presignature_lifetime: Duration,
}

impl Default for NodeSettings {
    fn default() -> Self {
        NodeSettings {
            round_timeout: Duration::from_secs(20),
            aux_info_round_timeout: Duration::from_secs(180),
            max_start_lifetime: Duration::from_secs(600),
            clock_skew: Duration::from_secs(60),
            pending_reshare_lifetime: Duration::from_secs(24 * 3600),
            presignature_lifetime: Duration::from_secs(DEFAULT_PRESIGNATURE_LIFETIME_SECS),
        }
    }
}

/// Why this party's side of a session failed or was refused.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The start message is not acceptable.
    #[error(transparent)]
    Control(#[from] ControlError),
    /// The start expired, is not yet valid, or asks for too long a validity.
    #[error("session start refused: {0}")]
    Stale(String),
    /// The session id was seen before.
    #[error("session {0} was already started here; a session id is never reused")]
    Replayed(SessionId),
    /// The request itself is not acceptable.
    #[error("refused: {0}")]
    Refused(String),
    /// The node's state.
    #[error(transparent)]
    State(#[from] StateError),
    /// The protocol failed.
    #[error(transparent)]
    Mpc(#[from] MpcError),
    /// The presignature store.
    #[error(transparent)]
    Presignature(#[from] PresignatureError),
    /// The prime pool.
    #[error(transparent)]
    Primes(#[from] PrimeError),
    /// A reshare's result could not be activated, closed or abandoned here.
    #[error(transparent)]
    Reshare(#[from] ReshareStateError),
    /// A certificate or proof did not check out.
    #[error("refused: {0}")]
    Certificate(#[from] tessera_control::CertificateError),
    /// A spend record does not check, or conflicts with the spend chain held here.
    #[error("refused: {0}")]
    SpendChain(#[from] crate::spends::ChainError),
    /// The audit log cannot be written: the node takes part in no session it cannot account
    /// for.
    #[error("this node's audit log cannot be written ({0}); it joins no session until it can")]
    Audit(String),
}

impl NodeError {
    /// Parties this error blames.
    pub fn blamed(&self) -> Vec<PartyId> {
        match self {
            NodeError::Mpc(MpcError::Timeout { missing, .. }) => missing.clone(),
            NodeError::Mpc(MpcError::InvalidMessage { from, .. }) => vec![*from],
            NodeError::Mpc(MpcError::Blamed { blamed, .. }) => tessera_mpc::Blame::parties(blamed),
            _ => Vec::new(),
        }
    }
}

/// A key's share, ready to sign with.
pub(crate) enum KeyMaterial {
    /// An ECDSA key's complete share (with its auxiliary info).
    Ecdsa(KeyShare),
    /// A Taproot key's share.
    Taproot(FrostKeyShare<Bitcoin>),
    /// An Ed25519 key's share.
    Ed25519(FrostKeyShare<Ed25519>),
}

/// A loaded key: its record and complete share.
pub(crate) struct LoadedKey {
    committee: Vec<PartyId>,
    threshold: u16,
    material: KeyMaterial,
}

impl LoadedKey {
    /// The key's kind.
    fn kind(&self) -> KeyKind {
        match self.material {
            KeyMaterial::Ecdsa(_) => KeyKind::Ecdsa,
            KeyMaterial::Taproot(_) => KeyKind::Taproot,
            KeyMaterial::Ed25519(_) => KeyKind::Ed25519,
        }
    }

    /// The public key of the child at `path` (the key itself for an empty path) as its chain
    /// sees it: SEC1 compressed for ECDSA, the x-only Taproot output key, the 32-byte Ed25519
    /// key.
    fn public_key_at(&self, path: &[u32]) -> Option<Vec<u8>> {
        match &self.material {
            KeyMaterial::Ecdsa(share) => tessera_mpc::child_public_key(share, path)
                .ok()
                .map(|point| point.to_bytes(true).to_vec()),
            KeyMaterial::Taproot(share) => frost::frost_public_key::<Bitcoin>(share, path).ok(),
            KeyMaterial::Ed25519(share) => frost::frost_public_key::<Ed25519>(share, path).ok(),
        }
    }
}

/// One party node.
pub struct Node<S: SecretStore> {
    pub(crate) net: Arc<SecureTransport>,
    identity: PartyIdentity,
    pub(crate) roster: Roster,
    pub(crate) state: NodeState<S>,
    pub(crate) primes: PrimePool<S>,
    pub(crate) policy: PolicyDocument,
    ledger: RequestLedger<S>,
    pub(crate) settings: NodeSettings,
    keys: Mutex<HashMap<KeyId, Arc<LoadedKey>>>,
    seen: Mutex<HashMap<SessionId, u64>>,
    metrics: NodeMetrics,
    pub(crate) audit: Arc<AuditLog>,
}

/// What a one-round signing uses beyond the request: the material made ahead of time and the
/// request's place in the key's spend chain.
struct Material<'a> {
    presignature: SessionId,
    link: Option<&'a SpendLink>,
}

/// An audit event about `start`: its kind and parties, the coordinator that started it, and
/// for key generation, presigning and signing the key (and the request and its digest).
fn session_event(action: &str, coordinator: &str, start: &SessionStart) -> NewEvent {
    let event = NewEvent::new(
        format!("coordinator:{coordinator}"),
        action,
        format!("session:{}", start.session),
    )
    .detail("kind", crate::metrics::session_kind(&start.operation))
    .detail("parties", PartyId::list(&start.parties));
    match &start.operation {
        Operation::AuxInfo | Operation::Primes => event,
        Operation::Keygen { key, .. }
        | Operation::Presign { key }
        | Operation::DescribeKey { key } => event.detail("key", key),
        Operation::Reshare { key, .. } => event.detail("key", key),
        Operation::ActivateEpoch { key, reshare, .. }
        | Operation::CloseEpoch { key, reshare, .. }
        | Operation::AbandonReshare { key, reshare, .. } => {
            event.detail("key", key).detail("reshare", reshare)
        }
        Operation::RecordSpends { key, records } => {
            event.detail("key", key).detail("records", records.len())
        }
        Operation::Sign { request, .. } | Operation::OnlineSign { request, .. } => event
            .detail("request", request.id)
            .detail("key", request.key)
            .detail("digest", hex::encode(request.request_digest())),
    }
}

/// A one-round FROST signing session of a request, with nonces already taken out of the
/// store.
struct FrostSigning<'a> {
    spec: &'a SessionSpec,
    committee: &'a [PartyId],
    request: &'a SignRequest,
}

impl<'a> FrostSigning<'a> {
    fn new(spec: &'a SessionSpec, committee: &'a [PartyId], request: &'a SignRequest) -> Self {
        FrostSigning {
            spec,
            committee,
            request,
        }
    }

    /// Signs `message` with `share`'s child key at the request's path from `taken`. Refuses
    /// a session whose parties are not the ones that committed the nonces, in their order
    /// (the nonces are consumed already: a coordinator that mixes them up loses them).
    async fn run<C: frost::Scheme>(
        self,
        net: Arc<SecureTransport>,
        share: &FrostKeyShare<C>,
        taken: frost::StoredFrostNonces<C>,
        message: &[u8],
        config: &MpcConfig,
    ) -> Result<Vec<u8>, NodeError> {
        if taken.signers != self.spec.parties {
            return Err(NodeError::Refused(format!(
                "the nonces were committed by {}, not by the session's parties {}",
                PartyId::list(&taken.signers),
                PartyId::list(&self.spec.parties)
            )));
        }
        Ok(frost::frost_online_sign::<C>(
            net,
            self.spec,
            self.committee,
            share,
            taken.nonces,
            &taken.commitments,
            &self.request.path,
            message,
            config,
        )
        .await?)
    }
}

/// What the ECDSA library is given for `signing`: the preimage, which it hashes itself.
fn ecdsa_input(signing: &Signing) -> Result<tessera_mpc::SigningInput, NodeError> {
    match signing {
        Signing::Ecdsa {
            preimage,
            hash: EcdsaHash::Keccak256,
            ..
        } => Ok(tessera_mpc::SigningInput::Keccak256(preimage.clone())),
        Signing::Ecdsa {
            preimage,
            hash: EcdsaHash::Sha256,
            ..
        } => Ok(tessera_mpc::SigningInput::Sha256(preimage.clone())),
        other => Err(NodeError::Refused(format!(
            "an ECDSA key cannot make a {} signature",
            other.kind()
        ))),
    }
}

/// Runs one signing protocol per signing of a request, in order, each in its own part of
/// the session, with `loaded`'s child key at `path`; returns the signatures concatenated.
async fn sign_each(
    net: Arc<SecureTransport>,
    spec: &SessionSpec,
    loaded: &LoadedKey,
    path: &[u32],
    signings: &[Signing],
    config: &MpcConfig,
) -> Result<Vec<u8>, NodeError> {
    let mut signatures = Vec::with_capacity(64 * signings.len());
    for (index, signing) in signings.iter().enumerate() {
        let part = spec.part(index);
        let signature = match (&loaded.material, signing) {
            (KeyMaterial::Ecdsa(share), _) => {
                let input = ecdsa_input(signing)?;
                let signature = tessera_mpc::sign(
                    net.clone(),
                    &part,
                    &loaded.committee,
                    share,
                    path,
                    &input,
                    config,
                )
                .await?;
                signature_bytes(&signature)
            }
            (KeyMaterial::Taproot(share), Signing::Taproot { sighash }) => {
                let part = SessionSpec {
                    protocol: Protocol::FROST_SIGN,
                    ..part
                };
                frost::frost_sign::<Bitcoin>(
                    net.clone(),
                    &part,
                    &loaded.committee,
                    share,
                    path,
                    sighash,
                    config,
                )
                .await?
            }
            (KeyMaterial::Ed25519(share), Signing::Ed25519 { message }) => {
                let part = SessionSpec {
                    protocol: Protocol::FROST_SIGN,
                    ..part
                };
                frost::frost_sign::<Ed25519>(
                    net.clone(),
                    &part,
                    &loaded.committee,
                    share,
                    path,
                    message,
                    config,
                )
                .await?
            }
            (_, other) => {
                return Err(NodeError::Refused(format!(
                    "a {} key cannot make a {} signature",
                    loaded.kind(),
                    other.kind()
                )))
            }
        };
        signatures.extend_from_slice(&signature);
    }
    Ok(signatures)
}

fn signature_bytes(signature: &tessera_mpc::Signature) -> Vec<u8> {
    let mut bytes = [0u8; 64];
    signature.write_to_slice(&mut bytes);
    bytes.to_vec()
}

impl<S: SecretStore + Send + Sync + 'static> Node<S> {
    /// A node for `identity` in the pinned `roster`, with its state in `store`, talking over
    /// `net` (which must belong to the same identity). It signs only requests that `policy`
    /// (the document whose hash the node pins) allows. What it does is recorded in `audit`
    /// (its own chain, signed with its identity key); a `node.started` event is written here.
    pub fn new(
        net: Arc<SecureTransport>,
        identity: PartyIdentity,
        roster: Roster,
        store: Arc<S>,
        policy: PolicyDocument,
        settings: NodeSettings,
        audit: Arc<AuditLog>,
    ) -> Result<Self, NodeError> {
        if net.party() != identity.party() {
            return Err(NodeError::Refused(format!(
                "the transport is {}'s but the identity is {}'s",
                net.party(),
                identity.party()
            )));
        }
        if roster.entry(identity.party()).is_none() {
            return Err(ControlError::UnknownParty(identity.party()).into());
        }
        if audit.emitter() != &tessera_audit::Emitter::Party(identity.party()) {
            return Err(NodeError::Audit(format!(
                "the audit log is {}'s, not {}'s",
                audit.emitter(),
                identity.party()
            )));
        }
        audit
            .record(
                NewEvent::new(
                    "system",
                    "node.started",
                    format!("node:{}", identity.party()),
                )
                .detail("roster", roster.hash())
                .detail("policy", policy.hash()),
            )
            .map_err(|e| NodeError::Audit(e.to_string()))?;
        let state = NodeState::new(store.clone());
        let metrics = NodeMetrics::default();
        let node = Node {
            audit,
            primes: state.primes(),
            ledger: RequestLedger::with_metrics(store, metrics.clone()),
            metrics,
            policy,
            net,
            identity,
            roster,
            state,
            settings,
            keys: Mutex::new(HashMap::new()),
            seen: Mutex::new(HashMap::new()),
        };
        // Sessions a stop interrupted never finish; expired results are erased. A record that
        // cannot be read or erased is logged and audited and does not stop the start (the
        // sweep goes on with the others); only a store that cannot be listed at all does.
        node.sweep_reshares(true)?;
        Ok(node)
    }

    /// This party.
    pub fn party(&self) -> PartyId {
        self.identity.party()
    }

    /// The pinned roster.
    pub fn roster(&self) -> &Roster {
        &self.roster
    }

    /// The durable state.
    pub fn state(&self) -> &NodeState<S> {
        &self.state
    }

    /// The policy this node signs under.
    pub fn policy(&self) -> &PolicyDocument {
        &self.policy
    }

    /// The durable record of requests this node agreed to sign.
    pub fn ledger(&self) -> &RequestLedger<S> {
        &self.ledger
    }

    /// The prime pool.
    pub fn primes(&self) -> &PrimePool<S> {
        &self.primes
    }

    /// The secure transport.
    pub fn net(&self) -> &Arc<SecureTransport> {
        &self.net
    }

    /// This node's audit log.
    pub fn audit(&self) -> &Arc<AuditLog> {
        &self.audit
    }

    /// What this node counts (see [`crate::metrics`]).
    pub fn metrics(&self) -> &NodeMetrics {
        &self.metrics
    }

    /// Handles a start message as received from the broker. Returns the session and the signed
    /// outcome to publish, or `None` if the message is not addressed to this node or cannot be
    /// trusted (it is logged and dropped).
    pub async fn handle(&self, bytes: &[u8]) -> Option<(SessionId, SignedOutcome)> {
        match SignedStart::from_bytes(bytes) {
            Ok(signed) => self.run_start(&signed).await,
            Err(e) => {
                tracing::warn!(error = %e, "control message dropped");
                self.metrics.start_refused(&e);
                None
            }
        }
    }

    /// Verifies and runs a start. `None` if it is not for this node or does not verify.
    pub async fn execute(&self, signed: &SignedStart) -> Option<SignedOutcome> {
        self.run_start(signed).await.map(|(_, outcome)| outcome)
    }

    async fn run_start(&self, signed: &SignedStart) -> Option<(SessionId, SignedOutcome)> {
        let received = Instant::now();
        let start = match signed.verify(&self.roster) {
            Ok(start) => start,
            Err(e) => {
                tracing::warn!(error = %e, coordinator = %signed.coordinator, "session start refused");
                self.metrics.start_refused(&e);
                return None;
            }
        };
        if !start.parties.contains(&self.party()) {
            return None;
        }
        let protocol = start.operation.protocol();
        tracing::info!(session = %start.session, %protocol, parties = ?start.parties, coordinator = %signed.coordinator, "session started");
        let began = Instant::now();
        let clock = self
            .metrics
            .stages()
            .clock_from(crate::metrics::session_kind(&start.operation), received);
        let running = self.metrics.running();
        // Written now, on disk with the session's first flush: before a presignature's share
        // leaves (online signing) or before the outcome does.
        let joined = self
            .audit
            .append(session_event(
                "session.joined",
                signed.coordinator.as_str(),
                &start,
            ))
            .map_err(|e| NodeError::Audit(e.to_string()));
        clock.lap("start");
        let result = match joined {
            Ok(_) => self.run(&start, &clock).await,
            Err(e) => Err(e),
        };
        if result.is_err() {
            // From the last stage reached to the refusal or failure.
            clock.lap("failed");
        } else if !matches!(
            start.operation,
            Operation::Sign { .. } | Operation::OnlineSign { .. }
        ) {
            // Signing times its own stages.
            clock.lap("run");
        }
        drop(running);
        let mut ended = session_event("session.ended", signed.coordinator.as_str(), &start)
            .detail("outcome", crate::metrics::session_outcome(&result))
            .detail("elapsed_ms", began.elapsed().as_millis());
        if let Err(e) = &result {
            ended = ended
                .detail("error", e)
                .detail("blamed", PartyId::list(&e.blamed()));
        }
        // Every event of the session is on disk before its outcome leaves: a signature is
        // never released before its `request.signed` event is durable.
        let flushed = self.audit.append(ended).and_then(|_| self.audit.sync());
        let result = match flushed {
            Ok(()) => result,
            Err(e) => {
                tracing::error!(session = %start.session, error = %e, "cannot record the session's end; its outcome is withheld");
                Err(NodeError::Audit(e.to_string()))
            }
        };
        self.metrics
            .session_finished(&start.operation, &result, began.elapsed());
        let elapsed_ms = began.elapsed().as_secs_f64() * 1e3;
        let result = match result {
            Ok(output) => {
                tracing::info!(session = %start.session, %protocol, elapsed_ms, "session finished");
                Ok(output)
            }
            Err(e) => {
                let blamed = e.blamed();
                tracing::warn!(session = %start.session, %protocol, elapsed_ms, ?blamed, error = %e, "session failed");
                Err(Failure {
                    message: e.to_string(),
                    blamed,
                })
            }
        };
        let outcome = SessionOutcome {
            session: start.session,
            party: self.party(),
            result,
        };
        let signed = SignedOutcome::sign(&outcome, &self.identity);
        clock.lap("outcome");
        Some((start.session, signed))
    }

    fn check_fresh(&self, start: &SessionStart) -> Result<(), NodeError> {
        let now = now_unix();
        if start.expires_at < now {
            return Err(NodeError::Stale(format!(
                "it expired {} s ago",
                now - start.expires_at
            )));
        }
        if start.issued_at > now + self.settings.clock_skew.as_secs() {
            return Err(NodeError::Stale(
                "it was issued in the future; check the coordinator's clock".into(),
            ));
        }
        if start.expires_at.saturating_sub(start.issued_at)
            > self.settings.max_start_lifetime.as_secs()
        {
            return Err(NodeError::Stale(format!(
                "it is valid for longer than {} s",
                self.settings.max_start_lifetime.as_secs()
            )));
        }
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.retain(|_, expires| *expires >= now);
        if seen.insert(start.session, start.expires_at).is_some() {
            return Err(NodeError::Replayed(start.session));
        }
        Ok(())
    }

    /// Forgets the cached share of `key` (after its epoch changed).
    pub(crate) fn forget_key(&self, key: KeyId) {
        self.keys
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key);
    }

    fn load_key(&self, key: KeyId) -> Result<Arc<LoadedKey>, NodeError> {
        if let Some(k) = self
            .keys
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return Ok(k.clone());
        }
        let record = self.state.key_record(key)?;
        let material = match (record.kind, &record.share) {
            (KeyKind::Ecdsa, _) => KeyMaterial::Ecdsa(self.state.key_share(key)?.1),
            (KeyKind::Taproot, StoredShare::Secp256k1(share)) => {
                KeyMaterial::Taproot(share.clone())
            }
            (KeyKind::Ed25519, StoredShare::Ed25519(share)) => KeyMaterial::Ed25519(share.clone()),
            (kind, _) => {
                return Err(StateError::InvalidShare {
                    key,
                    reason: format!("the share is not on the curve of a {kind} key"),
                }
                .into())
            }
        };
        let loaded = Arc::new(LoadedKey {
            committee: record.committee,
            threshold: record.threshold,
            material,
        });
        self.keys
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, loaded.clone());
        Ok(loaded)
    }

    async fn run(&self, start: &SessionStart, clock: &StageClock) -> Result<Output, NodeError> {
        self.check_fresh(start)?;
        let spec = SessionSpec {
            session: start.session,
            protocol: start.operation.protocol(),
            parties: start.parties.clone(),
        };
        if spec.protocol != tessera_wire::Protocol::CONTROL {
            // A protocol needs two or more distinct parties; a control message may go to one.
            spec.my_index(self.party())?;
        }
        let net = self.net.clone();
        let config = &MpcConfig {
            round_timeout: self.settings.round_timeout,
        };
        match &start.operation {
            Operation::AuxInfo => {
                if self.state.has_aux(&spec.parties)? {
                    return Err(StateError::Exists(format!(
                        "auxiliary info for committee {}",
                        committee_name(&spec.parties)
                    ))
                    .into());
                }
                let Some(primes) = self.primes.take()? else {
                    return Err(NodeError::Refused(format!(
                        "{}'s prime pool is empty{}; retry when it has a prime set",
                        self.party(),
                        if self.primes.generating() {
                            " (a set is being generated, which takes minutes)"
                        } else {
                            ""
                        }
                    )));
                };
                let config = MpcConfig {
                    round_timeout: self.settings.aux_info_round_timeout,
                };
                let aux = tessera_mpc::aux_info(net, &spec, primes, &config).await?;
                self.state.put_aux(&spec.parties, &aux)?;
                self.audit.note(NewEvent::new(
                    "system",
                    "aux_info.stored",
                    format!("committee:{}", committee_name(&spec.parties)),
                ));
                Ok(Output::AuxInfo)
            }
            Operation::Keygen {
                key,
                threshold,
                kind,
            } => {
                self.keygen(net, &spec, *key, *threshold, *kind, config)
                    .await
            }
            Operation::Presign { key } => self.presign(net, &spec, *key, config).await,
            Operation::Sign {
                request,
                approvals,
                link,
            } => {
                let sign = |signings: Vec<Signing>, loaded: Arc<LoadedKey>| {
                    let (net, spec) = (net.clone(), spec.clone());
                    async move { sign_each(net, &spec, &loaded, &request.path, &signings, config).await }
                };
                self.sign_request(request, approvals, link.as_ref(), clock, sign)
                    .await
            }
            Operation::Reshare {
                key,
                setup,
                approved,
            } => {
                self.reshare(&spec, *key, setup, approved.as_deref(), config)
                    .await
            }
            Operation::DescribeKey { key } => {
                let record = self.state.key_record(*key)?;
                let key_info = record
                    .share
                    .key_info_json()
                    .map_err(|e| NodeError::Refused(format!("key {key} does not encode: {e}")))?;
                Ok(Output::KeyInfo {
                    committee: record.committee,
                    threshold: record.threshold,
                    epoch: record.epoch,
                    key_info,
                })
            }
            Operation::Primes => Ok(Output::Primes {
                ready: u32::try_from(self.primes.len()?).unwrap_or(u32::MAX),
                generating: self.primes.generating(),
            }),
            Operation::ActivateEpoch {
                key,
                reshare,
                certificate,
            } => self.activate_epoch(*key, *reshare, certificate),
            Operation::CloseEpoch {
                key,
                reshare,
                certificate,
                activated,
                approved,
            } => self.close_epoch(*key, *reshare, certificate, activated, approved.as_deref()),
            Operation::AbandonReshare {
                key,
                reshare,
                proof,
            } => self.abandon_reshare(*key, *reshare, proof.as_deref()),
            Operation::RecordSpends { key, records } => self.record_spends(*key, records),
            Operation::OnlineSign {
                presignature,
                request,
                approvals,
                link,
            } => {
                let material = Material {
                    presignature: *presignature,
                    link: link.as_ref(),
                };
                self.online_sign(net, &spec, material, request, approvals, config, clock)
                    .await
            }
        }
    }

    /// Makes single-use material for one future one-round signing by the session's parties:
    /// a presignature (ECDSA) or committed nonces (FROST: one round exchanging commitments),
    /// stored under the session's id until it is used or expires.
    async fn presign(
        &self,
        net: Arc<SecureTransport>,
        spec: &SessionSpec,
        key: KeyId,
        config: &MpcConfig,
    ) -> Result<Output, NodeError> {
        let loaded = self.load_key(key)?;
        let (now, lifetime) = (now_unix(), self.settings.presignature_lifetime.as_secs());
        let commit = SessionSpec {
            protocol: Protocol::FROST_COMMIT,
            ..spec.clone()
        };
        let committee = &loaded.committee;
        match &loaded.material {
            KeyMaterial::Ecdsa(share) => {
                let (presignature, public) =
                    tessera_mpc::presign(net, spec, committee, share, config).await?;
                let item = StoredPresignature {
                    presignature,
                    public,
                    signers: spec.parties.clone(),
                };
                self.state
                    .presignatures(key)
                    .put(spec.session, &item, now, lifetime)?;
            }
            KeyMaterial::Taproot(share) => {
                let item =
                    frost::frost_commit_session::<Bitcoin>(net, &commit, committee, share, config)
                        .await?;
                self.state
                    .frost_nonces::<Bitcoin>(key)
                    .put(spec.session, &item, now, lifetime)?;
            }
            KeyMaterial::Ed25519(share) => {
                let item =
                    frost::frost_commit_session::<Ed25519>(net, &commit, committee, share, config)
                        .await?;
                self.state
                    .frost_nonces::<Ed25519>(key)
                    .put(spec.session, &item, now, lifetime)?;
            }
        }
        self.audit.note(
            NewEvent::new("system", "presignature.stored", format!("key:{key}"))
                .detail("key", key)
                .detail("kind", loaded.kind())
                .detail("presignature", spec.session)
                .detail("signers", PartyId::list(&spec.parties)),
        );
        Ok(Output::Presign {
            presignature: spec.session,
        })
    }

    /// One-round signing of an approved request with the material made in session
    /// `presignature`, taken durably out of the store before anything leaves: a presignature
    /// for an ECDSA key (master key only), committed nonces for a FROST key (any path).
    #[allow(clippy::too_many_arguments)]
    async fn online_sign(
        &self,
        net: Arc<SecureTransport>,
        spec: &SessionSpec,
        material: Material<'_>,
        request: &SignRequest,
        approvals: &[Approval],
        config: &MpcConfig,
        clock: &StageClock,
    ) -> Result<Output, NodeError> {
        let Material { presignature, link } = material;
        // Refused before the request is admitted: nothing is recorded for it.
        let kind = self.load_key(request.key)?.kind();
        if kind == KeyKind::Ecdsa && !request.path.is_empty() {
            self.metrics.policy_refusal("online_child_path");
            return Err(NodeError::Refused(
                "presignatures are made for the master key; a child key (non-empty derivation path) signs with full signing".into(),
            ));
        }
        let signings = request.check().map(|d| d.signings.len()).unwrap_or(1);
        if signings != 1 {
            return Err(NodeError::Refused(format!(
                "a presignature or committed nonce makes one signature and this request asks \
                 for {signings}; sign it with full signing"
            )));
        }
        let lifetime = self.settings.presignature_lifetime.as_secs();
        let sign = |signings: Vec<Signing>, loaded: Arc<LoadedKey>| {
            let (net, spec) = (net.clone(), spec.clone());
            async move {
                // On disk (with the session's earlier events) before any share leaves.
                let consumed = || -> Result<(), NodeError> {
                    self.audit
                        .record(
                            NewEvent::new(
                                "system",
                                "presignature.consumed",
                                format!("key:{}", request.key),
                            )
                            .detail("key", request.key)
                            .detail("presignature", presignature)
                            .detail("request", request.id),
                        )
                        .map_err(|e| NodeError::Audit(e.to_string()))?;
                    clock.lap("material");
                    Ok(())
                };
                let refused = |e: &PresignatureError| self.note_unusable_presignature(request, e);
                let online = SessionSpec {
                    protocol: Protocol::FROST_ONLINE_SIGN,
                    ..spec.clone()
                };
                // Each arm takes its material out of the store durably before any share of a
                // signature leaves.
                match (&loaded.material, &signings[0]) {
                    (KeyMaterial::Ecdsa(share), signing) => {
                        let input = ecdsa_input(signing)?;
                        let item = self
                            .state
                            .presignatures(request.key)
                            .take(presignature, now_unix(), lifetime)
                            .inspect_err(refused)?;
                        consumed()?;
                        let public_key = *share.shared_public_key();
                        let signature =
                            tessera_mpc::online_sign(net, &spec, item, &public_key, &input, config)
                                .await?;
                        Ok(signature_bytes(&signature))
                    }
                    (KeyMaterial::Taproot(share), Signing::Taproot { sighash }) => {
                        let taken = self
                            .state
                            .frost_nonces::<Bitcoin>(request.key)
                            .take(presignature, now_unix(), lifetime)
                            .inspect_err(refused)?;
                        consumed()?;
                        let signing = FrostSigning::new(&online, &loaded.committee, request);
                        signing
                            .run::<Bitcoin>(net, share, taken, sighash, config)
                            .await
                    }
                    (KeyMaterial::Ed25519(share), Signing::Ed25519 { message }) => {
                        let taken = self
                            .state
                            .frost_nonces::<Ed25519>(request.key)
                            .take(presignature, now_unix(), lifetime)
                            .inspect_err(refused)?;
                        consumed()?;
                        let signing = FrostSigning::new(&online, &loaded.committee, request);
                        signing
                            .run::<Ed25519>(net, share, taken, message, config)
                            .await
                    }
                    (_, other) => Err(NodeError::Refused(format!(
                        "a {} key cannot make a {} signature",
                        loaded.kind(),
                        other.kind()
                    ))),
                }
            }
        };
        self.sign_request(request, approvals, link, clock, sign)
            .await
    }

    /// Distributed key generation of a `threshold`-of-n key of `kind` over the session's
    /// parties; stores the share.
    async fn keygen(
        &self,
        net: Arc<SecureTransport>,
        spec: &SessionSpec,
        key: KeyId,
        threshold: u16,
        kind: KeyKind,
        config: &MpcConfig,
    ) -> Result<Output, NodeError> {
        if self.state.has_key(key)? {
            return Err(StateError::Exists(format!("key {key}")).into());
        }
        let (share, chain_code, aux) = match kind {
            KeyKind::Ecdsa => {
                // The key's epoch 0 gets a copy of the committee's auxiliary info (or, if the
                // committee has none yet, uses the committee's once it has).
                let aux = match self.state.has_aux(&spec.parties)? {
                    true => Some(self.state.aux(&spec.parties)?),
                    false => None,
                };
                let share = tessera_mpc::keygen(net, spec, threshold, config).await?;
                let chain_code = share.chain_code;
                (StoredShare::Secp256k1(share), chain_code, aux)
            }
            KeyKind::Taproot => {
                let share = frost::frost_keygen::<Bitcoin>(net, spec, threshold, config).await?;
                let chain_code = share.chain_code;
                (StoredShare::Secp256k1(share), chain_code, None)
            }
            KeyKind::Ed25519 => {
                let share = frost::frost_keygen::<Ed25519>(net, spec, threshold, config).await?;
                let chain_code = share.chain_code;
                (StoredShare::Ed25519(share), chain_code, None)
            }
        };
        let public_key = share.public_key();
        let record = KeyRecord {
            committee: spec.parties.clone(),
            threshold,
            epoch: 0,
            kind,
            share,
            aux,
        };
        self.state.put_key(key, &record)?;
        self.audit.note(
            NewEvent::new("system", "share.stored", format!("key:{key}"))
                .detail("key", key)
                .detail("kind", kind)
                .detail("public_key", hex::encode(&public_key))
                .detail("threshold", threshold)
                .detail("committee", PartyId::list(&spec.parties)),
        );
        Ok(Output::Keygen {
            public_key,
            chain_code: chain_code.map(|c| c.to_vec()).unwrap_or_default(),
        })
    }

    /// Re-checks `request` (digest, policy, approvals, ledger), records it as started, runs
    /// `sign`, and records it as signed once the signature verified.
    async fn sign_request<F, Fut>(
        &self,
        request: &SignRequest,
        approvals: &[Approval],
        link: Option<&SpendLink>,
        clock: &StageClock,
        sign: F,
    ) -> Result<Output, NodeError>
    where
        F: FnOnce(Vec<Signing>, Arc<LoadedKey>) -> Fut,
        Fut: std::future::Future<Output = Result<Vec<u8>, NodeError>>,
    {
        let loaded = self.load_key(request.key)?;
        let public_key_at = |path: &[u32]| loaded.public_key_at(path);
        let facts = KeyFacts {
            holders: loaded.committee.len(),
            threshold: loaded.threshold,
            kind: loaded.kind(),
            public_key_at: &public_key_at,
        };
        let admitted = self
            .ledger
            .admit(&self.policy, request, approvals, link, &facts, now_unix())
            .inspect_err(|e| {
                self.note_fork(request.key, e);
                self.audit.note(
                    NewEvent::new(
                        "system",
                        "request.refused",
                        format!("request:{}", request.id),
                    )
                    .detail("key", request.key)
                    .detail("reason", e),
                );
            })?;
        clock.lap("policy");
        let signature = sign(admitted.derived.signings.clone(), loaded.clone()).await?;
        clock.lap("protocol");
        // Each protocol verified its own signature; this checks them all together, as the
        // request's spend record and the coordinator will, against the key at the path.
        let verifies = loaded
            .public_key_at(&request.path)
            .is_some_and(|key| admitted.derived.verify(&key, &signature));
        if !verifies {
            return Err(NodeError::Mpc(MpcError::SignatureInvalid));
        }
        admitted.signed(&signature)?;
        // On disk before the outcome that carries the signature leaves (see `run_start`).
        self.audit
            .append(
                NewEvent::new(
                    "system",
                    "request.signed",
                    format!("request:{}", request.id),
                )
                .detail("key", request.key)
                .detail(
                    "approved_by",
                    approvals
                        .iter()
                        .map(|a| a.approver.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                ),
            )
            .map_err(|e| NodeError::Audit(e.to_string()))?;
        clock.lap("record");
        Ok(Output::Signature { signature })
    }

    /// Checks and keeps delivered records of `key`'s spend chain, in order, and says where the
    /// chain stands here. The first record refused stops the delivery (those before it are
    /// kept).
    fn record_spends(&self, key: KeyId, records: &[SpendRecord]) -> Result<Output, NodeError> {
        if records.len() > MAX_RECORDS_PER_DELIVERY {
            return Err(NodeError::Refused(format!(
                "{} spend records in one delivery; at most {MAX_RECORDS_PER_DELIVERY}",
                records.len()
            )));
        }
        let loaded = self.load_key(key)?;
        for record in records {
            let public_key = loaded.public_key_at(&record.request.path).ok_or_else(|| {
                NodeError::Refused(format!(
                    "spend record {} of key {key}: the key has no child at {:?}",
                    record.link.seq, record.request.path
                ))
            })?;
            self.ledger
                .accept_record(key, record, &public_key)
                .inspect_err(|e| self.note_fork(key, e))?;
        }
        let (head, hash) = self.ledger.chain_head(key)?;
        Ok(Output::SpendsRecorded { key, head, hash })
    }

    /// Audits a fork of `key`'s spend chain, if `error` is one.
    fn note_fork(&self, key: KeyId, error: &NodeError) {
        if let NodeError::SpendChain(ChainError::Fork {
            seq, held, offered, ..
        }) = error
        {
            tracing::error!(%key, seq, held, offered, "spend chain fork refused");
            self.audit.note(
                NewEvent::new("system", "spend_chain.fork", format!("key:{key}"))
                    .detail("key", key)
                    .detail("seq", seq)
                    .detail("held", held)
                    .detail("offered", offered),
            );
        }
    }
}
