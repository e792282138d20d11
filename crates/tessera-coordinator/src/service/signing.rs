//! The signing worker: admits approved requests to signing, runs signing sessions with healthy
//! quorums, verifies and assembles the result, and retries with another quorum when a party
//! fails.
//!
//! Admission re-evaluates the policy and, in one database transaction that holds the key's
//! admission lock, reserves the request's spend and moves it `approved` → `signing`
//! ([`Store::begin_admission`](crate::Store::begin_admission)): replicas sharing a database
//! admit one request of a key at a time, each seeing the others' reservations, so together
//! they never admit more than a window allows. A request whose signing fails gives its
//! reservation back in the statement group that marks it failed.
//!
//! Requests left `signing` by a coordinator that stopped are taken over once nobody has
//! touched them for [`stale_signing_after`](super::CoordinatorSettings::stale_signing_after):
//! a running signer refreshes its request every third of that. Retrying is safe: a node
//! signs a request id at most once, and may retry one it started (ADR 0005).

use std::collections::BTreeSet;
use std::sync::{Arc, Weak};
use std::time::Duration;

use k256::ecdsa::{RecoveryId, Signature, VerifyingKey};
use tessera_chain::bitcoin::{InputSignature, Psbt, Signed};
use tessera_chain::{address, recover_sender, UnsignedTx};
use tessera_control::{
    agreed, Operation, Output, Reports, SessionStart, SignedStart, StarterError,
};
use tessera_policy::{evaluate, Approval, Derived, Payload, SignRequest, SIGNATURE_LEN};
use tessera_telemetry::StageClock;
use tessera_wire::{KeyId, KeyKind, PartyId, RequestId, SessionId};
use tokio::sync::{watch, Notify};

use super::keys::public_key_at;
use super::requests::decode;
use super::{history, now_unix, spend_chain, to_db, Coordinator, ServiceError, SYSTEM};
use crate::store::{
    NewSession, RequestRow, RequestState, SessionOutcome, SessionSubject, SignedRequest, Spend,
};

/// What became of an approved request offered for admission to signing.
enum Admitted {
    /// Admitted: its spend is reserved and it is `signing`, held by this coordinator.
    Yes,
    /// No longer `approved` (another coordinator admitted it, or it was cancelled).
    Taken,
    /// The policy no longer allows it; it was marked failed.
    Refused,
}

/// How many queued requests one look at the queue reads.
const BATCH: u32 = 16;
/// Extra time given to a control channel beyond the session deadline before giving up on it.
const CHANNEL_GRACE: Duration = Duration::from_secs(5);

/// The signing worker: signs one request at a time, until stopped or the coordinator is
/// dropped.
pub(crate) async fn worker(
    weak: Weak<Coordinator>,
    wake: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
    poll: Duration,
) {
    loop {
        if *stop.borrow() {
            return;
        }
        let Some(coordinator) = weak.upgrade() else {
            return;
        };
        let busy = match coordinator.work_once().await {
            Ok(busy) => busy,
            Err(e) => {
                tracing::warn!(error = %e, "signing worker: cannot read the queue; retrying later");
                false
            }
        };
        drop(coordinator);
        if busy {
            continue;
        }
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(poll) => {}
            _ = stop.changed() => return,
        }
    }
}

/// How one signing session ended.
enum Attempt {
    /// The agreed signature, and the parties that reported one that does not verify.
    Signed {
        signature: Vec<u8>,
        liars: Vec<PartyId>,
    },
    /// Retry without these parties.
    Failed {
        error: String,
        exclude: Vec<PartyId>,
    },
    /// Do not retry (every signer refused, or the nodes returned nonsense).
    Fatal(String),
}

impl Coordinator {
    /// Takes one request and signs it: an approved one, else one left `signing` by a stopped
    /// coordinator. Returns whether there was one.
    async fn work_once(&self) -> Result<bool, ServiceError> {
        for row in self
            .store
            .requests_in_state(RequestState::Approved, i64::MAX, BATCH)
            .await?
        {
            let clock = self.counters.stages().clock("request");
            match self.admit(&row).await? {
                Admitted::Yes => {
                    self.announce(row.id, RequestState::Signing);
                    let row = self.request_row(row.id).await?;
                    clock.lap("admission");
                    self.run_signing(row, false, &clock).await;
                    return Ok(true);
                }
                Admitted::Refused => return Ok(true),
                Admitted::Taken => {}
            }
        }
        let cutoff =
            to_db(now_unix()).saturating_sub(to_db(self.settings.stale_signing_after.as_secs()));
        for row in self
            .store
            .requests_in_state(RequestState::Signing, cutoff, BATCH)
            .await?
        {
            if self
                .store
                .claim_stale(row.id, RequestState::Signing, cutoff)
                .await?
            {
                tracing::warn!(request = %row.id, attempts = row.attempts, "resuming a request left signing by a stopped coordinator");
                let clock = self.counters.stages().clock("request");
                self.run_signing(row, true, &clock).await;
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Admits approved request `row` to signing: evaluates the policy against the windows as
    /// every coordinator reserved them and, if it allows the request, reserves its spend and
    /// moves it to `signing` in the same transaction. A request the policy no longer allows
    /// is marked failed with the reasons.
    async fn admit(&self, row: &RequestRow) -> Result<Admitted, ServiceError> {
        let id = row.id;
        let request = decode(row)?;
        // Everything read from the store outside the admission is read before it starts: on
        // an in-memory database the admission holds the only connection.
        let approvals = self.approvals(id).await?;
        let active = self.active().await?;
        let now = now_unix();
        let reasons = match request.check() {
            Err(e) => vec![format!("the request no longer checks: {e}")],
            Ok(derived) => {
                let shared = history::counted_keys(&active.document, request.key);
                let mut admission = self.store.begin_admission(id, request.key, &shared).await?;
                let history = history::load(
                    history::Source::Admission(&mut admission),
                    &active.document,
                    request.key,
                    &derived,
                    now,
                )
                .await?;
                let decision = evaluate(&active.document, &request, &approvals, &history, now);
                if decision.is_allowed() {
                    let spends: Vec<(String, String)> = derived
                        .spends()
                        .into_iter()
                        .map(|(asset, amount)| (asset.to_string(), amount.to_string()))
                        .collect();
                    let head = admission.chain_head().await?;
                    let link = spend_chain::next_link(&request, head, now);
                    return Ok(if admission.admit(&spends, to_db(now), &link).await? {
                        Admitted::Yes
                    } else {
                        Admitted::Taken
                    });
                }
                decision.reasons.iter().map(ToString::to_string).collect()
            }
        };
        let error = format!(
            "not admitted to signing: the policy no longer allows it ({})",
            reasons.join("; ")
        );
        if !self
            .store
            .conclude_request(
                id,
                &[RequestState::Approved],
                RequestState::Failed,
                Some(&error),
                &reasons,
            )
            .await?
        {
            return Ok(Admitted::Taken);
        }
        self.announce(id, RequestState::Failed);
        tracing::warn!(request = %id, %error, "request refused at admission to signing");
        self.counters.policy_refusal(super::RefusalStage::Admission);
        self.audit_request(SYSTEM, "request.failed", id, &[("error", error)]);
        Ok(Admitted::Refused)
    }

    /// Signs a request this coordinator holds in `signing`, keeping it fresh meanwhile, and
    /// records the outcome.
    async fn run_signing(&self, row: RequestRow, resumed: bool, clock: &StageClock) {
        let id = row.id;
        let period = (self.settings.stale_signing_after / 3).max(Duration::from_millis(100));
        let mut heartbeat = tokio::time::interval(period);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        heartbeat.tick().await;
        let signing = self.sign(&row, resumed, clock);
        tokio::pin!(signing);
        let outcome = loop {
            tokio::select! {
                outcome = &mut signing => break outcome,
                _ = heartbeat.tick() => {
                    if let Err(e) = self.store.touch_request(id, RequestState::Signing).await {
                        tracing::warn!(request = %id, error = %e, "cannot refresh a request being signed");
                    }
                }
            }
        };
        let (to, result, error) = match &outcome {
            Ok(done) => (RequestState::Signed, Some(done.result.clone()), None),
            Err(error) => (RequestState::Failed, None, Some(error.clone())),
        };
        let recorded = match &outcome {
            // The session's end, the signature in the spend chain, the signers' places in it
            // and the result: one transaction.
            Ok(done) => self.store.record_signed(&done.as_row(id, true)).await,
            // Failed: the reservation is given back with it.
            Err(error) => self.store.fail_signing(id, error).await,
        };
        if let Ok(true) = recorded {
            if to == RequestState::Signed {
                self.audit_request(SYSTEM, "request.signed", id, &[]);
                clock.lap("recording");
            }
            self.announce(id, to);
        }
        match recorded {
            Ok(true) if to == RequestState::Signed => {
                tracing::info!(request = %id, "request signed");
            }
            Ok(true) => {
                tracing::warn!(request = %id, error = error.as_deref().unwrap_or(""), "signing failed");
                self.audit_request(
                    SYSTEM,
                    "request.failed",
                    id,
                    &[("error", error.clone().unwrap_or_default())],
                );
            }
            Ok(false) => {
                tracing::warn!(request = %id, "the request left signing meanwhile; outcome not recorded")
            }
            // The signature (public) is logged so an operator can recover it: the nodes will
            // not sign this request id again.
            Err(e) => tracing::error!(
                request = %id,
                error = %e,
                result = %result.as_deref().map(hex::encode).unwrap_or_default(),
                "cannot record the signing outcome; the request stays signing"
            ),
        }
    }

    /// Runs signing sessions for a request until one succeeds, a failure is final, or the
    /// attempts are used up. Returns what to record, or the error.
    async fn sign(
        &self,
        row: &RequestRow,
        resumed: bool,
        clock: &StageClock,
    ) -> Result<Done, String> {
        let id = row.id;
        let request = decode(row).map_err(|e| e.to_string())?;
        let key = self.key_row(request.key).await.map_err(|e| e.to_string())?;
        let target = public_key_at(&key, &request.path).map_err(|e| e.to_string())?;
        let approvals = self.approvals(id).await.map_err(|e| e.to_string())?;
        let derived = if resumed {
            self.resume_checks(&request, &approvals)
                .await
                .map_err(|e| e.to_string())?
        } else {
            // Checked and reserved at admission, a moment ago.
            request
                .check()
                .map_err(|e| format!("the request no longer checks: {e}"))?
        };
        let link = self.link_of(&request).await.map_err(|e| e.to_string())?;
        let limit = if resumed {
            self.settings
                .signing_attempts
                .max(row.attempts.saturating_add(1))
        } else {
            self.settings.signing_attempts
        };
        let mut attempts = row.attempts;
        let mut excluded = BTreeSet::new();
        let mut last_error = String::from("no session was started");
        let mut online_tried = false;
        while attempts < limit {
            let Some(quorum) = self.health.pick(&key.committee, key.threshold, &excluded) else {
                return Err(format!(
                    "no quorum of {} is left in committee {} after excluding {} (blamed or \
                     silent); bring those nodes back and submit a new request. Last error: \
                     {last_error}",
                    key.threshold,
                    PartyId::list(&key.committee),
                    PartyId::list(&excluded.iter().copied().collect::<Vec<_>>())
                ));
            };
            // Each signer must hold the chain before this signing (a window-limited request
            // is refused otherwise); one that cannot be brought up to date says so when it
            // refuses.
            if let Err(e) = self.catch_up(key.id, &quorum, link.seq - 1).await {
                tracing::warn!(request = %id, error = %e, "cannot deliver the key's spend chain");
            }
            let presignature = match &self.pool {
                // A presignature makes one ECDSA signature of the master key; committed FROST
                // nonces make one signature of the key at any path.
                Some(pool)
                    if (request.path.is_empty() || key.kind != KeyKind::Ecdsa)
                        && derived.signings.len() == 1
                        && !online_tried =>
                {
                    pool.take(key.id, &quorum)
                }
                _ => None,
            };
            let (operation, name) = match presignature {
                Some(presignature) => {
                    online_tried = true;
                    (
                        Operation::OnlineSign {
                            presignature,
                            request: request.clone(),
                            approvals: approvals.clone(),
                            link: Some(link),
                        },
                        "online_sign",
                    )
                }
                None => (
                    Operation::Sign {
                        request: request.clone(),
                        approvals: approvals.clone(),
                        link: Some(link),
                    },
                    "sign",
                ),
            };
            let verifies =
                |signature: &[u8]| verify_signature(&target, &derived, signature).is_ok();
            let (start, signed) = self.starter.start(&quorum, operation);
            // The attempt is counted and its session recorded in one transaction.
            attempts = self
                .store
                .begin_attempt(
                    id,
                    &NewSession {
                        session_id: start.session,
                        subject: SessionSubject::Request(id),
                        operation: name.to_owned(),
                        parties: quorum.clone(),
                        started_at: to_db(now_unix()),
                    },
                )
                .await
                .map_err(|e| e.to_string())?;
            match self
                .attempt(id, &quorum, (&start, &signed), name, &verifies, clock)
                .await
            {
                Attempt::Signed { signature, liars } => {
                    let heads = match self.places_after(key.id, &quorum, link.seq).await {
                        Ok(heads) => heads,
                        Err(e) => {
                            tracing::warn!(request = %id, error = %e, "cannot read where the signers' spend chains stand; they are asked at the next signing");
                            Vec::new()
                        }
                    };
                    let mut done = Done {
                        session: start.session,
                        liars,
                        signature,
                        key: key.id,
                        heads,
                        result: Vec::new(),
                    };
                    match assemble(&request, &derived, &target, &done.signature) {
                        Ok(result) => {
                            done.result = result;
                            return Ok(done);
                        }
                        Err(error) => {
                            // Signed all the same: the session, the signature in the spend
                            // chain and the signers' places are kept.
                            if let Err(e) = self.store.record_signed(&done.as_row(id, false)).await
                            {
                                tracing::warn!(request = %id, error = %e, "cannot record a signing session's end");
                            }
                            return Err(error);
                        }
                    }
                }
                Attempt::Fatal(error) => {
                    self.refresh_heads_quietly(key.id, &quorum).await;
                    return Err(error);
                }
                Attempt::Failed { error, exclude } => {
                    self.refresh_heads_quietly(key.id, &quorum).await;
                    tracing::warn!(request = %id, attempt = attempts, %error, excluded = %PartyId::list(&exclude), "signing attempt failed; retrying");
                    excluded.extend(exclude);
                    last_error = error;
                }
            }
        }
        Err(format!(
            "signing failed after {attempts} attempt(s); last error: {last_error}"
        ))
    }

    /// [`refresh_heads`](Self::refresh_heads), logging a failure (the next catch-up starts
    /// from what was known).
    async fn refresh_heads_quietly(&self, key: tessera_wire::KeyId, parties: &[PartyId]) {
        if let Err(e) = self.refresh_heads(key, parties).await {
            tracing::warn!(%key, error = %e, "cannot learn where the signers' spend chains stand");
        }
    }

    /// Before resuming a request another coordinator left `signing`: re-evaluates the policy
    /// (it may have changed, or the request expired) with the windows as reserved by others,
    /// and reserves the request's spend if it has none (a request admitted before reservations
    /// existed). Returns what the payload does.
    async fn resume_checks(
        &self,
        request: &SignRequest,
        approvals: &[Approval],
    ) -> Result<Derived, ServiceError> {
        let active = self.active().await?;
        let derived = request
            .check()
            .map_err(|e| ServiceError::Invalid(format!("the request no longer checks: {e}")))?;
        let now = now_unix();
        let history = history::load(
            history::Source::Store(&self.store, Some(request.id)),
            &active.document,
            request.key,
            &derived,
            now,
        )
        .await?;
        let decision = evaluate(&active.document, request, approvals, &history, now);
        if !decision.is_allowed() {
            let reasons: Vec<String> = decision.reasons.iter().map(ToString::to_string).collect();
            return Err(ServiceError::Denied { reasons });
        }
        if self.store.spend_of(request.id).await?.is_empty() {
            for (asset, amount) in derived.spends() {
                self.store
                    .record_spend(&Spend {
                        request_id: request.id,
                        key_id: request.key,
                        asset: asset.to_string(),
                        amount: amount.to_string(),
                        signed_at: to_db(now),
                    })
                    .await?;
            }
        }
        Ok(derived)
    }

    /// One signing session with `quorum`, recorded in the sessions table. Each party's
    /// reported signature is checked with `verifies` (against the key and the digest) before
    /// it counts: a valid one is the result even if another party reported nonsense, and a
    /// party that reported an invalid one is blamed, so one party can neither forge the result
    /// nor hide the others'.
    async fn attempt(
        &self,
        id: RequestId,
        quorum: &[PartyId],
        (start, signed): (&SessionStart, &SignedStart),
        name: &str,
        verifies: &(dyn Fn(&[u8]) -> bool + Sync),
        clock: &StageClock,
    ) -> Attempt {
        tracing::info!(request = %id, session = %start.session, operation = name, parties = %PartyId::list(quorum), "signing session started");
        self.audit_session(
            "session.started",
            start.session,
            id,
            quorum,
            &[("operation", name.to_owned())],
        );
        clock.lap("preparation");
        let deadline = self.settings.session_deadline;
        let began = std::time::Instant::now();
        let outcomes = tokio::time::timeout(
            deadline + CHANNEL_GRACE,
            self.control.run(start, signed, deadline),
        )
        .await
        .unwrap_or_else(|_| {
            Err(StarterError::Channel(
                "the control channel did not answer in time".into(),
            ))
        });
        let (result, missing, checked) = match outcomes {
            Ok(outcomes) => {
                let reports = self.starter.collect(start, &outcomes);
                let missing: Vec<PartyId> = quorum
                    .iter()
                    .copied()
                    .filter(|p| !reports.contains_key(p))
                    .collect();
                let checked = check_signatures(&reports, verifies);
                (agreed(start, reports), missing, checked)
            }
            Err(e) => (Err(e), Vec::new(), Checked::default()),
        };
        clock.lap("session");
        let liars = checked.invalid;
        let attempt = match (checked.valid, result) {
            (Some(signature), _) => {
                let honest: Vec<PartyId> = quorum
                    .iter()
                    .copied()
                    .filter(|p| !liars.contains(p))
                    .collect();
                self.health.succeeded(&honest);
                if !liars.is_empty() {
                    tracing::warn!(request = %id, session = %start.session, parties = %PartyId::list(&liars), "parties reported a signature that does not verify against the key; the valid one was used");
                    self.health.failed(&liars);
                }
                Attempt::Signed {
                    signature,
                    liars: liars.clone(),
                }
            }
            (None, _) if !liars.is_empty() => {
                self.health.failed(&liars);
                let mut exclude: BTreeSet<PartyId> = liars.iter().copied().collect();
                exclude.extend(missing);
                Attempt::Failed {
                    error: format!(
                        "{} reported a signature that does not verify against the key",
                        PartyId::list(&liars)
                    ),
                    exclude: exclude.into_iter().collect(),
                }
            }
            (None, Ok(other)) => Attempt::Fatal(format!(
                "the nodes returned {other:?} instead of a signature"
            )),
            (None, Err(e)) => {
                let mut blamed: BTreeSet<PartyId> = e.blamed().into_iter().collect();
                blamed.extend(missing);
                let refusing: Vec<PartyId> = match &e {
                    StarterError::Failed { failures, .. } => failures
                        .iter()
                        .filter(|(_, f)| f.message.starts_with("refused:"))
                        .map(|(p, _)| *p)
                        .collect(),
                    _ => Vec::new(),
                };
                let blamed: Vec<PartyId> = blamed.into_iter().collect();
                self.health.failed(&blamed);
                if refusing.len() == quorum.len() {
                    self.counters.policy_refusal(super::RefusalStage::Nodes);
                    Attempt::Fatal(format!("the nodes refused to sign it: {e}"))
                } else {
                    let mut exclude = blamed;
                    exclude.extend(refusing);
                    Attempt::Failed {
                        error: e.to_string(),
                        exclude,
                    }
                }
            }
        };
        let (outcome, blamed) = match &attempt {
            Attempt::Signed { .. } => (SessionOutcome::Ok, liars),
            Attempt::Failed { error, exclude } => {
                (SessionOutcome::Failed(error.clone()), exclude.clone())
            }
            Attempt::Fatal(error) => (SessionOutcome::Failed(error.clone()), Vec::new()),
        };
        self.counters
            .session(name, matches!(outcome, SessionOutcome::Ok), began.elapsed());
        let (label, error) = match &outcome {
            SessionOutcome::Ok => ("ok", String::new()),
            SessionOutcome::Failed(error) => ("failed", error.clone()),
        };
        self.audit_session(
            "session.ended",
            start.session,
            id,
            quorum,
            &[
                ("outcome", label.to_owned()),
                ("error", error),
                ("blamed", PartyId::list(&blamed)),
            ],
        );
        // A signed session ends in the transaction that records its signature.
        if !matches!(attempt, Attempt::Signed { .. }) {
            if let Err(e) = self
                .store
                .finish_session(start.session, &outcome, &blamed)
                .await
            {
                tracing::warn!(session = %start.session, error = %e, "cannot record a session's outcome");
            }
        }
        attempt
    }
}

/// A signing that succeeded, recorded in one transaction ([`Store::record_signed`]).
struct Done {
    session: SessionId,
    liars: Vec<PartyId>,
    signature: Vec<u8>,
    key: KeyId,
    heads: Vec<(PartyId, u64)>,
    result: Vec<u8>,
}

impl Done {
    /// The row to record; with `result`, the request moves to `signed`.
    fn as_row(&self, id: RequestId, result: bool) -> SignedRequest<'_> {
        SignedRequest {
            request: id,
            session: self.session,
            blamed: &self.liars,
            signature: &self.signature,
            key: self.key,
            heads: &self.heads,
            result: result.then_some(&self.result[..]),
        }
    }
}

/// What the parties of one signing session reported, checked against the key.
#[derive(Default)]
struct Checked {
    /// A reported signature that verifies (all valid ones are equal but for ECDSA's `s`
    /// malleability, and any of them will do).
    valid: Option<Vec<u8>>,
    /// Parties that reported success with something that is not a valid signature.
    invalid: Vec<PartyId>,
}

/// Checks every successful report of a signing session with `verifies`.
fn check_signatures(reports: &Reports, verifies: &(dyn Fn(&[u8]) -> bool + Sync)) -> Checked {
    let mut checked = Checked::default();
    for (party, report) in reports {
        match &report.result {
            Ok(Output::Signature { signature }) if verifies(signature) => {
                checked.valid.get_or_insert_with(|| signature.clone());
            }
            Ok(_) => checked.invalid.push(*party),
            Err(_) => {}
        }
    }
    checked
}

/// Checks the nodes' signatures (one 64-byte signature per signing of the request) against
/// the public key at the request's path, as its chain sees it.
fn verify_signature(public_key: &[u8], derived: &Derived, signature: &[u8]) -> Result<(), String> {
    if derived.verify(public_key, signature) {
        Ok(())
    } else {
        Err("the nodes' signatures do not verify against the key".to_owned())
    }
}

/// Verifies the nodes' signatures against the (child) public key and builds the result: the
/// signed network transaction (an Ethereum sender must recover to the key's address), a
/// 65-byte `r || s || v` EIP-191 signature, a raw Ed25519 signature, or, for a PSBT whose
/// other inputs belong to other keys, the PSBT (base64 text) with this key's inputs final.
fn assemble(
    request: &SignRequest,
    derived: &Derived,
    public_key: &[u8],
    signature: &[u8],
) -> Result<Vec<u8>, String> {
    let refuse = |what: String| {
        format!(
            "{what}; the signing nodes misbehaved: the request id is spent, submit a new request"
        )
    };
    verify_signature(public_key, derived, signature).map_err(refuse)?;
    match &request.payload {
        Payload::EthereumTx { raw } => {
            let tx = UnsignedTx::decode(raw)
                .map_err(|e| refuse(format!("the transaction does not decode: {e}")))?;
            let signed = tx
                .assemble(signature, public_key)
                .map_err(|e| refuse(format!("the signed transaction cannot be assembled: {e}")))?;
            let sender = recover_sender(&signed).map_err(|e| {
                refuse(format!(
                    "the signed transaction's sender cannot be recovered: {e}"
                ))
            })?;
            let expected =
                address(public_key).map_err(|e| refuse(format!("the key has no address: {e}")))?;
            if sender != expected {
                return Err(refuse(
                    "the signed transaction's sender is not the key's address".into(),
                ));
            }
            Ok(signed)
        }
        Payload::Message { .. } => {
            let key = VerifyingKey::from_sec1_bytes(public_key)
                .map_err(|_| refuse("the key's public key is not a secp256k1 point".into()))?;
            let sig = Signature::from_slice(signature)
                .map_err(|_| refuse("the nodes returned a malformed signature".into()))?;
            let recovery = RecoveryId::trial_recovery_from_prehash(&key, &derived.digest, &sig)
                .map_err(|_| refuse("the signature's recovery id cannot be found".into()))?;
            let mut out = signature.to_vec();
            out.push(27 + recovery.to_byte());
            Ok(out)
        }
        Payload::BitcoinPsbt { network, psbt, .. } => {
            let decoded = Psbt::decode(psbt, *network)
                .map_err(|e| refuse(format!("the PSBT does not decode: {e}")))?;
            let signatures = derived
                .inputs
                .iter()
                .zip(signature.chunks_exact(SIGNATURE_LEN))
                .map(|(input, sig)| {
                    let sig = sig.to_vec();
                    let signed = match public_key.len() {
                        33 => InputSignature::Ecdsa {
                            signature: sig,
                            public_key: public_key.to_vec(),
                        },
                        _ => InputSignature::Schnorr { signature: sig },
                    };
                    (*input, signed)
                })
                .collect::<Vec<_>>();
            match decoded
                .sign_inputs(&signatures)
                .map_err(|e| refuse(format!("the PSBT cannot be finalized: {e}")))?
            {
                Signed::Transaction(tx) => Ok(tx),
                Signed::Psbt(text) => Ok(text.into_bytes()),
            }
        }
        Payload::SolanaTransfer { message } => {
            let signature: [u8; 64] = signature
                .try_into()
                .map_err(|_| refuse("a Solana transfer takes one signature".into()))?;
            tessera_chain::solana::Transfer::assemble(message, &signature)
                .map_err(|e| refuse(format!("the Solana transaction cannot be assembled: {e}")))
        }
        Payload::Ed25519Message { .. } => Ok(signature.to_vec()),
    }
}
