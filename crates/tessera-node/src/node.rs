//! The session runner: checks a coordinator's start, runs this party's side, reports.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cggmp24::key_share::AnyKeyShare;
use tessera_audit::{AuditLog, NewEvent};
use tessera_channel::identity::PartyIdentity;
use tessera_channel::Roster;
use tessera_mpc::reshare::{Kind as ReshareKind, ReshareSetup};
use tessera_mpc::{
    KeyShare, MpcConfig, MpcError, PresignatureError, PrimeError, PrimePool, SessionSpec,
    StoredPresignature,
};
use tessera_store::SecretStore;
use tessera_transport::SecureTransport;
use tessera_wire::{KeyId, PartyId, SessionId};

use tessera_policy::{
    evaluate_key_change, Approval, ApprovedKeyChange, KeyChangeDecision, KeyOperation,
    PolicyDocument, SignRequest,
};

use crate::metrics::NodeMetrics;
use crate::requests::RequestLedger;
use crate::state::{
    committee_name, Activation, KeyRecord, NodeState, ReshareStateError, StateError,
};
use tessera_control::{
    now_unix, ControlError, Failure, Operation, Output, SessionOutcome, SessionStart,
    SignedOutcome, SignedStart,
};

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
}

impl Default for NodeSettings {
    fn default() -> Self {
        NodeSettings {
            round_timeout: Duration::from_secs(20),
            aux_info_round_timeout: Duration::from_secs(180),
            max_start_lifetime: Duration::from_secs(600),
            clock_skew: Duration::from_secs(60),
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
    /// A reshare could not be activated or discarded here.
    #[error(transparent)]
    Reshare(#[from] ReshareStateError),
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

/// A loaded key: its record and complete share.
struct LoadedKey {
    committee: Vec<PartyId>,
    share: KeyShare,
}

/// One party node.
pub struct Node<S: SecretStore> {
    net: Arc<SecureTransport>,
    identity: PartyIdentity,
    roster: Roster,
    state: NodeState<S>,
    primes: PrimePool<S>,
    policy: PolicyDocument,
    ledger: RequestLedger<S>,
    settings: NodeSettings,
    keys: Mutex<HashMap<KeyId, Arc<LoadedKey>>>,
    seen: Mutex<HashMap<SessionId, u64>>,
    metrics: NodeMetrics,
    audit: Arc<AuditLog>,
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
        Operation::AuxInfo => event,
        Operation::Keygen { key, .. }
        | Operation::Presign { key }
        | Operation::Reshare { key, .. }
        | Operation::FinishReshare { key, .. }
        | Operation::DescribeKey { key } => event.detail("key", key),
        Operation::Sign { request, .. } | Operation::OnlineSign { request, .. } => event
            .detail("request", request.id)
            .detail("key", request.key)
            .detail("digest", hex::encode(request.request_digest())),
    }
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
        Ok(Node {
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
        })
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
        let running = self.metrics.running();
        let joined = self
            .audit
            .record(session_event(
                "session.joined",
                signed.coordinator.as_str(),
                &start,
            ))
            .map_err(|e| NodeError::Audit(e.to_string()));
        let result = match joined {
            Ok(_) => self.run(&start).await,
            Err(e) => Err(e),
        };
        drop(running);
        let mut ended = session_event("session.ended", signed.coordinator.as_str(), &start)
            .detail("outcome", crate::metrics::session_outcome(&result))
            .detail("elapsed_ms", began.elapsed().as_millis());
        if let Err(e) = &result {
            ended = ended
                .detail("error", e)
                .detail("blamed", PartyId::list(&e.blamed()));
        }
        self.audit.note(ended);
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
        Some((start.session, SignedOutcome::sign(&outcome, &self.identity)))
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

    fn load_key(&self, key: KeyId) -> Result<Arc<LoadedKey>, NodeError> {
        if let Some(k) = self
            .keys
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return Ok(k.clone());
        }
        let (record, share) = self.state.key_share(key)?;
        let loaded = Arc::new(LoadedKey {
            committee: record.committee,
            share,
        });
        self.keys
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, loaded.clone());
        Ok(loaded)
    }

    async fn run(&self, start: &SessionStart) -> Result<Output, NodeError> {
        self.check_fresh(start)?;
        let spec = SessionSpec {
            session: start.session,
            protocol: start.operation.protocol(),
            parties: start.parties.clone(),
        };
        spec.my_index(self.party())?;
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
            Operation::Keygen { key, threshold } => {
                if self.state.has_key(*key)? {
                    return Err(StateError::Exists(format!("key {key}")).into());
                }
                let share = tessera_mpc::keygen(net, &spec, *threshold, config).await?;
                let public_key = share.shared_public_key().to_bytes(true).to_vec();
                let chain_code = share.chain_code.map(|c| c.to_vec()).unwrap_or_default();
                let record = KeyRecord {
                    committee: spec.parties.clone(),
                    threshold: *threshold,
                    share,
                };
                self.state.put_key(*key, &record)?;
                self.audit.note(
                    NewEvent::new("system", "share.stored", format!("key:{key}"))
                        .detail("key", key)
                        .detail("public_key", hex::encode(&public_key))
                        .detail("threshold", threshold)
                        .detail("committee", PartyId::list(&spec.parties)),
                );
                Ok(Output::Keygen {
                    public_key,
                    chain_code,
                })
            }
            Operation::Presign { key } => {
                let loaded = self.load_key(*key)?;
                let (presignature, public) =
                    tessera_mpc::presign(net, &spec, &loaded.committee, &loaded.share, config)
                        .await?;
                let item = StoredPresignature {
                    presignature,
                    public,
                    signers: spec.parties.clone(),
                };
                self.state.presignatures(*key).put(spec.session, &item)?;
                self.audit.note(
                    NewEvent::new("system", "presignature.stored", format!("key:{key}"))
                        .detail("key", key)
                        .detail("presignature", spec.session)
                        .detail("signers", PartyId::list(&spec.parties)),
                );
                Ok(Output::Presign {
                    presignature: spec.session,
                })
            }
            Operation::Sign { request, approvals } => {
                self.sign_request(request, approvals, |admitted, loaded| {
                    let (net, spec) = (net.clone(), spec.clone());
                    async move {
                        tessera_mpc::sign(
                            net,
                            &spec,
                            &loaded.committee,
                            &loaded.share,
                            &request.path,
                            &admitted,
                            config,
                        )
                        .await
                    }
                })
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
                let key_info = serde_json::to_string(&record.share.key_info)
                    .map_err(|e| NodeError::Refused(format!("key {key} does not encode: {e}")))?;
                Ok(Output::KeyInfo {
                    committee: record.committee,
                    threshold: record.threshold,
                    key_info,
                })
            }
            Operation::FinishReshare {
                key,
                reshare,
                confirmation,
                activate,
            } => self.finish_reshare(*key, *reshare, confirmation, *activate),
            Operation::OnlineSign {
                presignature,
                request,
                approvals,
            } => {
                if !request.path.is_empty() {
                    self.metrics.policy_refusal("online_child_path");
                    return Err(NodeError::Refused(
                        "presignatures are made for the master key; a child key (non-empty derivation path) signs with full signing".into(),
                    ));
                }
                self.sign_request(request, approvals, |admitted, loaded| {
                    let (net, spec) = (net.clone(), spec.clone());
                    async move {
                        // Durably removed from the store before any partial signature leaves.
                        let item = self.state.presignatures(request.key).take(*presignature)?;
                        self.audit.note(
                            NewEvent::new(
                                "system",
                                "presignature.consumed",
                                format!("key:{}", request.key),
                            )
                            .detail("key", request.key)
                            .detail("presignature", presignature)
                            .detail("request", request.id),
                        );
                        let public_key = *loaded.share.shared_public_key();
                        Ok::<_, NodeError>(
                            tessera_mpc::online_sign(
                                net,
                                &spec,
                                item,
                                &public_key,
                                &admitted,
                                config,
                            )
                            .await?,
                        )
                    }
                })
                .await
            }
        }
    }

    /// This party's side of a reshare or refresh: deals from its share if it is a dealer,
    /// and keeps its new share pending if it receives one.
    async fn reshare(
        &self,
        spec: &SessionSpec,
        key: KeyId,
        setup: &ReshareSetup,
        approved: Option<&ApprovedKeyChange>,
        config: &MpcConfig,
    ) -> Result<Output, NodeError> {
        let approved_by = self.check_key_change(key, setup, approved)?;
        let me = self.party();
        let share = if setup.old_committee.contains(&me) {
            let record = self.state.key_record(key)?;
            if record.committee != setup.old_committee {
                return Err(NodeError::Refused(format!(
                    "key {key} is held by committee {} here, not {}",
                    PartyId::list(&record.committee),
                    PartyId::list(&setup.old_committee)
                )));
            }
            Some(record.share)
        } else {
            if self.state.has_key(key)? {
                return Err(NodeError::Refused(format!(
                    "this node holds key {key} but the reshare's old committee {} does not include it",
                    PartyId::list(&setup.old_committee)
                )));
            }
            None
        };
        if setup.new_committee.contains(&me) && !self.state.has_aux(&setup.new_committee)? {
            return Err(StateError::NoAuxInfo(committee_name(&setup.new_committee)).into());
        }
        let output =
            tessera_mpc::reshare::reshare(self.net.clone(), spec, setup, share.as_ref(), config)
                .await?;
        let receives = output.share.is_some();
        let record = output.share.map(|share| KeyRecord {
            committee: setup.new_committee.clone(),
            threshold: setup.new_threshold,
            share,
        });
        self.state
            .put_pending_reshare(key, spec.session, output.confirmation, record)?;
        self.audit.note(
            NewEvent::new("system", "reshare.pending", format!("key:{key}"))
                .detail("key", key)
                .detail("reshare", spec.session)
                .detail("receives", receives)
                .detail("new_committee", PartyId::list(&setup.new_committee))
                .detail("new_threshold", setup.new_threshold)
                .detail(
                    "change",
                    approved.map_or_else(|| "none".to_owned(), |a| a.change.id.to_string()),
                )
                .detail("approved_by", approved_by.join(", "))
                .detail("confirmation", hex::encode(output.confirmation)),
        );
        Ok(Output::Reshare {
            confirmation: output.confirmation,
        })
    }

    /// Re-checks the admins' approval of a reshare or refresh against the pinned policy and
    /// that it names this key, committee and threshold; returns who approved. A reshare needs
    /// one; a refresh (same committee and threshold, enforced by the protocol's plan) may come
    /// without.
    fn check_key_change(
        &self,
        key: KeyId,
        setup: &ReshareSetup,
        approved: Option<&ApprovedKeyChange>,
    ) -> Result<Vec<String>, NodeError> {
        let Some(approved) = approved else {
            return match setup.kind {
                ReshareKind::Refresh => Ok(Vec::new()),
                ReshareKind::Reshare => Err(NodeError::Refused(format!(
                    "resharing key {key} needs a key change approved by the policy's admins;                      none was given"
                ))),
            };
        };
        let change = &approved.change;
        if change.key != key {
            return Err(NodeError::Refused(format!(
                "the approved key change {} is for key {}, not {key}",
                change.id, change.key
            )));
        }
        let matches = match (&change.operation, setup.kind) {
            (KeyOperation::Refresh, ReshareKind::Refresh) => true,
            (
                KeyOperation::Reshare {
                    committee,
                    threshold,
                },
                ReshareKind::Reshare,
            ) => *committee == setup.new_committee && *threshold == setup.new_threshold,
            _ => false,
        };
        if !matches {
            return Err(NodeError::Refused(format!(
                "the approved key change {} is '{}', but the session asks for a {} to {}-of-{} \
                 on {}",
                change.id,
                change.operation,
                match setup.kind {
                    ReshareKind::Refresh => "refresh",
                    ReshareKind::Reshare => "reshare",
                },
                setup.new_threshold,
                setup.new_committee.len(),
                PartyId::list(&setup.new_committee)
            )));
        }
        match evaluate_key_change(&self.policy, change, &approved.approvals, now_unix()) {
            Ok(KeyChangeDecision::Allow { approved_by }) => Ok(approved_by),
            Ok(KeyChangeDecision::Pending { needed, .. }) => Err(NodeError::Refused(format!(
                "key change {} needs {needed} more admin approvals under the policy this node \
                 pins",
                change.id
            ))),
            Err(e) => Err(NodeError::Refused(format!(
                "key change {} is refused under the policy this node pins: {e}",
                change.id
            ))),
        }
    }

    /// Activates or discards a reshare's result here.
    fn finish_reshare(
        &self,
        key: KeyId,
        reshare: SessionId,
        confirmation: &[u8; 32],
        activate: bool,
    ) -> Result<Output, NodeError> {
        let event = |action: &str| {
            NewEvent::new("system", action, format!("key:{key}"))
                .detail("key", key)
                .detail("reshare", reshare)
        };
        if !activate {
            self.state.discard_reshare(key, reshare)?;
            self.audit.note(event("reshare.discarded"));
            return Ok(Output::ReshareFinished);
        }
        let activation = self.state.activate_reshare(key, reshare, confirmation)?;
        // The cached share is the old one.
        self.keys
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key);
        match activation {
            Activation::Replaced => self.audit.note(event("share.replaced")),
            Activation::Erased => self.audit.note(event("share.erased")),
            Activation::AlreadyDone => {}
        }
        Ok(Output::ReshareFinished)
    }

    /// Re-checks `request` (digest, policy, approvals, ledger), records it as started, runs
    /// `sign`, and records it as signed once the signature verified.
    async fn sign_request<F, Fut, E>(
        &self,
        request: &SignRequest,
        approvals: &[Approval],
        sign: F,
    ) -> Result<Output, NodeError>
    where
        F: FnOnce(tessera_mpc::SigningInput, Arc<LoadedKey>) -> Fut,
        Fut: std::future::Future<Output = Result<tessera_mpc::Signature, E>>,
        NodeError: From<E>,
    {
        let loaded = self.load_key(request.key)?;
        let admitted = self
            .ledger
            .admit(&self.policy, request, approvals, now_unix())
            .inspect_err(|e| {
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
        let signature = sign(admitted.input.clone(), loaded).await?;
        admitted.signed()?;
        self.audit.note(
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
        );
        Ok(Output::Signature {
            signature: signature_bytes(&signature),
        })
    }
}
