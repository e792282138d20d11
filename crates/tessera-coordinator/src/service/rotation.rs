//! Rotating a key's shares without changing the key (`docs/protocols/reshare.md`, ADRs 0008
//! and 0012): refreshing its committee's shares and auxiliary info, or resharing it to another
//! committee or threshold (a party joins or leaves, or a lost party is replaced from the
//! remaining holders).
//!
//! The coordinator asks the dealers for the key's public info and epoch, waits until every
//! receiver has a prime set, runs the reshare, and only when every participant reported the
//! same result records the key's new epoch (its commit point). From then on it only carries
//! the nodes' own signed outcomes between them: the **activation certificate** (every
//! participant's report) makes each participant activate the new epoch, and the **closure
//! certificate** (every new holder's signed activation) makes every holder of the old epoch
//! erase it. A failed reshare is abandoned on a participant's signed abandonment. The nodes
//! check every certificate themselves; the coordinator can delay a step, not forge one.
//!
//! People ask for rotations as key changes approved by admins ([`super::key_changes`]); a
//! reshare carries the approved change to the nodes, which re-check it (ADR 0010). The
//! rotation check ([`Coordinator::rotation_check`]) runs scheduled refreshes and delivers
//! rotation steps that did not reach every party.

use std::sync::Arc;
use std::time::Duration;

use tessera_audit::NewEvent;
use tessera_control::certificate::verify_activation;
use tessera_control::{all_succeeded, Operation, Output, Reports, SignedOutcome, StarterError};
use tessera_mpc::reshare::{Kind, ReshareSetup, SetupKey};
use tessera_policy::ApprovedKeyChange;
use tessera_wire::{KeyId, KeyKind, PartyId, SessionId};

use super::{now_unix, quorum, to_db, Coordinator, KeyView, ServiceError, SYSTEM};
use crate::store::{KeyRow, KeyStatus, Lifecycle, LifecyclePhase, SessionOutcome};

/// How often a new rotation's steps are sent before the coordinator leaves them due (the
/// rotation check, and `tessera key activate`, send a due step once each time).
const LIFECYCLE_ATTEMPTS: usize = 3;
/// How long after a failed scheduled refresh it is tried again.
const SCHEDULED_REFRESH_RETRY_SECS: u64 = 15 * 60;
/// How often the receivers' prime pools are asked again while the coordinator waits.
const PRIME_POLL: Duration = Duration::from_secs(5);

/// How long a rotation lease lasts unless renewed (a coordinator that stops mid-rotation
/// holds the key no longer than this); renewed every third of it.
const ROTATION_LEASE_SECS: i64 = 90;

/// Holds a key's rotation lease in the database while alive (renewed in the background), so
/// that no other rotation of the key starts on any coordinator replica; gives it back on drop.
struct RotatingGuard {
    store: crate::Store,
    key: KeyId,
    owner: String,
    renewal: tokio::task::JoinHandle<()>,
    released: bool,
}

impl RotatingGuard {
    /// Gives the lease back now (a rotation that follows at once finds it free).
    async fn release(mut self) {
        self.renewal.abort();
        if let Err(e) = self
            .store
            .release_rotation_lease(self.key, &self.owner)
            .await
        {
            tracing::warn!(key = %self.key, error = %e, "cannot release a rotation lease; it lapses by itself");
        }
        self.released = true;
    }
}

impl Drop for RotatingGuard {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        // Dropped without `release` (the task was cancelled): give it back in the background.
        self.renewal.abort();
        let (store, key, owner) = (self.store.clone(), self.key, self.owner.clone());
        tokio::spawn(async move {
            if let Err(e) = store.release_rotation_lease(key, &owner).await {
                tracing::warn!(%key, error = %e, "cannot release a rotation lease; it lapses by itself");
            }
        });
    }
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Reshare => "reshare",
        Kind::Refresh => "refresh",
    }
}

fn done_action(kind: Kind) -> &'static str {
    match kind {
        Kind::Reshare => "key.reshared",
        Kind::Refresh => "key.refreshed",
    }
}

/// The parties in `parties`, in order, without repeats.
fn union(parties: impl IntoIterator<Item = PartyId>) -> Vec<PartyId> {
    let mut all: Vec<PartyId> = parties.into_iter().collect();
    all.sort();
    all.dedup();
    all
}

impl Coordinator {
    /// Refreshes `key` (name or id) without an admin approval, as the refresh schedule does
    /// (people propose a [`KeyOperation::Refresh`](tessera_policy::KeyOperation) key change):
    /// every holder gets a new share of the same key and new auxiliary info; shares and
    /// Paillier keys taken before no longer work with those after. Every holder must be
    /// reachable and have a prime set (the coordinator waits for them).
    pub async fn refresh_key(self: &Arc<Self>, key: &str) -> Result<KeyView, ServiceError> {
        let row = self.ready_key(key).await?;
        self.refresh_row(row, None).await
    }

    /// Refreshes a ready key, with the admins' approval if people asked for it.
    pub(super) async fn refresh_row(
        self: &Arc<Self>,
        row: KeyRow,
        approved: Option<ApprovedKeyChange>,
    ) -> Result<KeyView, ServiceError> {
        let committee = row.committee.clone();
        let threshold = row.threshold;
        self.rotate(row, Kind::Refresh, committee, threshold, approved)
            .await
    }

    /// Reshares a ready key as the approved change says: `threshold` reachable holders deal,
    /// the new committee receives (and makes the new epoch's auxiliary info). The public key,
    /// addresses and HD chain code do not change.
    pub(super) async fn reshare_row(
        self: &Arc<Self>,
        row: KeyRow,
        committee: Vec<PartyId>,
        threshold: u16,
        approved: ApprovedKeyChange,
    ) -> Result<KeyView, ServiceError> {
        self.check_reshare_target(&committee, threshold)?;
        self.rotate(row, Kind::Reshare, committee, threshold, Some(approved))
            .await
    }

    /// Refuses a committee that is not of roster parties in ascending order (as committees are
    /// recorded) or a threshold outside 2..=n. The committee needs no set-up: its parties
    /// generate the new epoch's auxiliary info during the reshare.
    pub(super) fn check_reshare_target(
        &self,
        committee: &[PartyId],
        threshold: u16,
    ) -> Result<(), ServiceError> {
        if self.committee_parties(committee)? != committee {
            return Err(ServiceError::Invalid(format!(
                "name the committee {} in ascending order",
                PartyId::list(committee)
            )));
        }
        if threshold < 2 || usize::from(threshold) > committee.len() {
            return Err(ServiceError::Invalid(format!(
                "threshold {threshold} for a committee of {}: it must be 2 to {}",
                committee.len(),
                committee.len()
            )));
        }
        Ok(())
    }

    /// Sends the due step of `key`'s last rotation again (its activation, or its closure to
    /// the holders that have not confirmed erasing the old epoch); the rotation check does
    /// this by itself every interval. Returns the key as recorded afterwards.
    pub async fn complete_activation(&self, key: &str) -> Result<KeyView, ServiceError> {
        let row = self.resolve_key(key).await?;
        self.drive_lifecycle(&row, 1).await?;
        Ok(self.key_row(row.id).await?.into())
    }

    /// One rotation check: delivers due rotation steps and runs due scheduled refreshes (each
    /// claimed in the database, so one replica runs it). Failures are logged and audited;
    /// a failed scheduled refresh is tried again after 15 minutes.
    pub(super) async fn rotation_check(self: &Arc<Self>) -> Result<(), ServiceError> {
        let now = now_unix();
        for row in self.store.keys_due_for_rotation_work(to_db(now)).await? {
            let activation_due = row
                .lifecycle
                .as_ref()
                .is_some_and(|l| l.phase == LifecyclePhase::Activate);
            if row.lifecycle.is_some() {
                if let Err(e) = self.drive_lifecycle(&row, 1).await {
                    tracing::warn!(key = %row.id, error = %e, "rotation step still due");
                }
                if activation_due {
                    continue;
                }
            }
            let due = row.next_refresh_at.is_some_and(|at| at <= to_db(now));
            let retry_at = to_db(now.saturating_add(SCHEDULED_REFRESH_RETRY_SECS));
            if !due
                || !self
                    .store
                    .claim_scheduled_refresh(row.id, to_db(now), retry_at)
                    .await?
            {
                continue;
            }
            tracing::info!(key = %row.id, "scheduled refresh due");
            self.audit_note(
                NewEvent::new(SYSTEM, "key.refresh_scheduled", format!("key:{}", row.id))
                    .detail("every_secs", row.refresh_every_secs.unwrap_or_default()),
            );
            let row = self.key_row(row.id).await?;
            let name = row.name.clone();
            if let Err(e) = self.refresh_row(row, None).await {
                tracing::warn!(key = %name, error = %e, "scheduled refresh failed; retrying in 15 minutes");
            }
        }
        Ok(())
    }

    pub(super) async fn ready_key(&self, key: &str) -> Result<KeyRow, ServiceError> {
        let row = self.resolve_key(key).await?;
        if row.status != KeyStatus::Ready {
            return Err(ServiceError::Unavailable(format!(
                "key '{}' is {}; only a ready key can be rotated",
                row.name, row.status
            )));
        }
        Ok(row)
    }

    /// Runs one rotation in its own task (it completes and is recorded even if the caller
    /// stops waiting) and returns the key as recorded afterwards.
    async fn rotate(
        self: &Arc<Self>,
        row: KeyRow,
        kind: Kind,
        committee: Vec<PartyId>,
        threshold: u16,
        approved: Option<ApprovedKeyChange>,
    ) -> Result<KeyView, ServiceError> {
        let this = self.clone();
        let id = row.id;
        tokio::spawn(async move {
            let guard = this.start_rotating(&row).await?;
            let rotated = async {
                // An earlier rotation's due step first: until its new epoch is active
                // everywhere, another rotation cannot start from it. (A closure that some old
                // holder has not confirmed does not hold the key back: the next rotation asks
                // those holders too.)
                let activation_due = row
                    .lifecycle
                    .as_ref()
                    .is_some_and(|l| l.phase == LifecyclePhase::Activate);
                let delivered = this.drive_lifecycle(&row, 1).await;
                if activation_due {
                    delivered?;
                }
                let row = this.key_row(row.id).await?;
                this.run_rotation(row, kind, committee, threshold, approved)
                    .await
            }
            .await;
            guard.release().await;
            rotated
        })
        .await
        .map_err(|e| ServiceError::Unavailable(format!("the rotation task failed: {e}")))??;
        Ok(self.key_row(id).await?.into())
    }

    /// Takes `row`'s rotation lease in the database, or refuses if another rotation (here or
    /// on another replica) holds it.
    async fn start_rotating(&self, row: &KeyRow) -> Result<RotatingGuard, ServiceError> {
        let owner = SessionId::random().to_string();
        if !self
            .store
            .lease_rotation(row.id, &owner, ROTATION_LEASE_SECS)
            .await?
        {
            return Err(ServiceError::Conflict(format!(
                "key '{}' is being refreshed or reshared; try again when that finished",
                row.name
            )));
        }
        let renewal = tokio::spawn({
            let (store, key, owner) = (self.store.clone(), row.id, owner.clone());
            async move {
                let period = Duration::from_secs(ROTATION_LEASE_SECS.unsigned_abs() / 3);
                loop {
                    tokio::time::sleep(period).await;
                    match store
                        .renew_rotation_lease(key, &owner, ROTATION_LEASE_SECS)
                        .await
                    {
                        Ok(true) => {}
                        Ok(false) => {
                            tracing::error!(%key, "the rotation lease was lost (it lapsed and another rotation took it)");
                            return;
                        }
                        Err(e) => {
                            tracing::warn!(%key, error = %e, "cannot renew a rotation lease; trying again")
                        }
                    }
                }
            }
        });
        Ok(RotatingGuard {
            store: self.store.clone(),
            key: row.id,
            owner,
            renewal,
            released: false,
        })
    }

    async fn run_rotation(
        &self,
        row: KeyRow,
        kind: Kind,
        committee: Vec<PartyId>,
        threshold: u16,
        approved: Option<ApprovedKeyChange>,
    ) -> Result<(), ServiceError> {
        if let Some(approved) = &approved {
            let from = &approved.change.from;
            if from.epoch != row.epoch
                || from.committee != row.committee
                || from.threshold != row.threshold
            {
                return Err(ServiceError::Conflict(format!(
                    "key change {} was approved for {from}, but key '{}' is at epoch {} \
                     ({}-of-{} on {}) now; propose it again",
                    approved.change.id,
                    row.name,
                    row.epoch,
                    row.threshold,
                    row.committee.len(),
                    PartyId::list(&row.committee)
                )));
            }
        }
        let dealers = match kind {
            Kind::Refresh => row.committee.clone(),
            Kind::Reshare => self
                .health
                .pick(&row.committee, row.threshold, &Default::default())
                .ok_or_else(|| {
                    ServiceError::Unavailable(format!(
                        "key '{}' needs {} dealers of {}",
                        row.name,
                        row.threshold,
                        PartyId::list(&row.committee)
                    ))
                })?,
        };
        let key_info = self.describe_key(&row, &dealers).await?;
        if row.kind == KeyKind::Ecdsa {
            // FROST keys have no auxiliary info, so their receivers need no primes.
            self.wait_for_primes(&row, &committee).await?;
        }
        let setup = ReshareSetup {
            kind,
            key_id: row.id,
            key_kind: row.kind,
            epoch: row.epoch,
            key: key_info,
            old_committee: row.committee.clone(),
            dealers,
            new_committee: committee.clone(),
            new_threshold: threshold,
            authorisation: approved
                .as_ref()
                .map_or([0; 32], |a| a.change.change_digest()),
        };
        let participants = setup.participants();
        let name = kind_name(kind);
        self.audit_note(
            NewEvent::new(
                SYSTEM,
                format!("key.{name}_started"),
                format!("key:{}", row.id),
            )
            .detail("epoch", row.epoch)
            .detail("committee", PartyId::list(&row.committee))
            .detail("dealers", PartyId::list(&setup.dealers))
            .detail("new_committee", PartyId::list(&committee))
            .detail("new_threshold", threshold)
            .detail(
                "change",
                approved
                    .as_ref()
                    .map_or_else(|| "scheduled".to_owned(), |a| a.change.id.to_string()),
            ),
        );
        let operation = Operation::Reshare {
            key: row.id,
            setup,
            approved: approved.clone().map(Box::new),
        };
        let run = self
            .start_key_session(
                row.id,
                name,
                &participants,
                operation,
                self.settings.aux_info_deadline,
            )
            .await?;
        let session = run.start.session;
        let (report, certificate) = match run.reports {
            Err(error) => {
                return self
                    .reshare_failed(&row, name, session, &participants, None, error, run.elapsed)
                    .await
            }
            Ok(reports) => {
                let certificate = certificate_of(&participants, &reports);
                let verdict = all_succeeded(&run.start, &reports).and_then(|()| {
                    verify_activation(self.starter.roster(), row.id, session, &certificate).map_err(
                        |e| {
                            StarterError::Channel(format!(
                                "the participants' reports do not agree: {e}"
                            ))
                        },
                    )
                });
                match verdict {
                    Ok(report) => (report, certificate),
                    Err(error) => {
                        return self
                            .reshare_failed(
                                &row,
                                name,
                                session,
                                &participants,
                                Some(reports),
                                error,
                                run.elapsed,
                            )
                            .await
                    }
                }
            }
        };
        self.counters.session(name, true, run.elapsed);
        self.store
            .finish_session(session, &SessionOutcome::Ok, &[])
            .await?;
        self.health.succeeded(&participants);
        // The commit point: every participant holds the same result.
        let previous = row
            .lifecycle
            .as_ref()
            .filter(|l| l.phase == LifecyclePhase::Close)
            .map(|l| l.due.clone())
            .unwrap_or_default();
        let lifecycle = Lifecycle {
            session,
            phase: LifecyclePhase::Activate,
            certificate,
            activated: Vec::new(),
            approved,
            due: participants.clone(),
            holders: union(
                row.committee
                    .iter()
                    .chain(&participants)
                    .chain(&previous)
                    .copied(),
            ),
        };
        if !self
            .store
            .set_key_rotated(row.id, row.epoch, &committee, threshold, &lifecycle)
            .await?
        {
            return Err(ServiceError::Conflict(format!(
                "key '{}' changed while it was being rotated; its new epoch was not recorded \
                 (the nodes' pending results expire)",
                row.name
            )));
        }
        if let Some(pool) = &self.pool {
            pool.forget(row.id);
            pool.track(row.id, &quorum::preferred(&committee, threshold));
        }
        let row = self.key_row(row.id).await?;
        self.drive_lifecycle(&row, LIFECYCLE_ATTEMPTS).await?;
        tracing::info!(key = %row.id, %name, committee = %PartyId::list(&committee), threshold, epoch = report.to_epoch(), "key rotated");
        self.audit_note(
            NewEvent::new(SYSTEM, done_action(kind), format!("key:{}", row.id))
                .detail("session", session)
                .detail("epoch", report.to_epoch())
                .detail("committee", PartyId::list(&committee))
                .detail("threshold", threshold)
                .detail("confirmation", hex::encode(report.confirmation)),
        );
        Ok(())
    }

    /// A reshare that did not give every participant the same result: recorded failed and
    /// abandoned at every participant that can be reached (the others' pending results
    /// expire); the key is unchanged.
    #[allow(clippy::too_many_arguments)]
    async fn reshare_failed(
        &self,
        row: &KeyRow,
        name: &str,
        session: SessionId,
        participants: &[PartyId],
        reports: Option<Reports>,
        error: StarterError,
        elapsed: Duration,
    ) -> Result<(), ServiceError> {
        self.counters.session(name, false, elapsed);
        let blamed = error.blamed();
        self.store
            .finish_session(session, &SessionOutcome::Failed(error.to_string()), &blamed)
            .await?;
        self.health.failed(&blamed);
        let succeeded: Vec<PartyId> = reports
            .iter()
            .flatten()
            .filter(|(_, r)| matches!(r.result, Ok(Output::Reshare { .. })))
            .map(|(p, _)| *p)
            .collect();
        let abandoned = self
            .abandon_reshare(row.id, session, participants, &succeeded)
            .await;
        let mut event = NewEvent::new(
            SYSTEM,
            format!("key.{name}_failed"),
            format!("key:{}", row.id),
        )
        .detail("session", session)
        .detail("error", &error)
        .detail("blamed", PartyId::list(&blamed));
        if let Err(e) = &abandoned {
            event = event.detail("abandon_incomplete", e);
        }
        self.audit_note(event);
        Err(ServiceError::Unavailable(format!(
            "the {name} of key '{}' failed and was abandoned; the key is unchanged: {error}",
            row.name
        )))
    }

    /// Abandons reshare `session` at its participants: first where it left no result (each
    /// answers with a signed abandonment), then, with one of those as proof, where it left a
    /// pending result (`succeeded`). Errors name who could not be reached; their pending
    /// results expire by themselves.
    async fn abandon_reshare(
        &self,
        key: KeyId,
        session: SessionId,
        participants: &[PartyId],
        succeeded: &[PartyId],
    ) -> Result<(), String> {
        let others: Vec<PartyId> = participants
            .iter()
            .copied()
            .filter(|p| !succeeded.contains(p))
            .collect();
        let abandon = |proof: Option<SignedOutcome>| Operation::AbandonReshare {
            key,
            reshare: session,
            proof: proof.map(Box::new),
        };
        let mut proof = None;
        let mut unreached = Vec::new();
        if !others.is_empty() {
            let reports = self.collect(&others, abandon(None)).await;
            for p in &others {
                match reports.get(p) {
                    Some(r) if matches!(r.result, Ok(Output::ReshareAbandoned { .. })) => {
                        proof.get_or_insert_with(|| r.signed.clone());
                    }
                    _ => unreached.push(*p),
                }
            }
        }
        if !succeeded.is_empty() {
            let Some(proof) = proof else {
                return Err(format!(
                    "no participant could sign the abandonment; the pending results at {} \
                     expire by themselves",
                    PartyId::list(succeeded)
                ));
            };
            let reports = self.collect(succeeded, abandon(Some(proof))).await;
            unreached.extend(succeeded.iter().copied().filter(|p| {
                !reports
                    .get(p)
                    .is_some_and(|r| matches!(r.result, Ok(Output::ReshareAbandoned { .. })))
            }));
        }
        if unreached.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{} did not confirm abandoning it",
                PartyId::list(&unreached)
            ))
        }
    }

    /// Runs a control session with `parties` and returns the verified reports that came back
    /// (none where the session could not run).
    pub(super) async fn collect(&self, parties: &[PartyId], operation: Operation) -> Reports {
        self.collect_within(parties, operation, self.settings.session_deadline)
            .await
    }

    /// [`collect`](Self::collect), waiting at most `deadline` for the answers.
    pub(super) async fn collect_within(
        &self,
        parties: &[PartyId],
        operation: Operation,
        deadline: Duration,
    ) -> Reports {
        match self
            .starter
            .run_collect(self.control.as_ref(), parties, operation, deadline)
            .await
        {
            Ok((_, reports)) => reports,
            Err(e) => {
                tracing::warn!(error = %e, "control session failed");
                Reports::new()
            }
        }
    }

    /// Delivers the due step of `row`'s last rotation: the activation certificate to the
    /// participants that have not activated, then the closure certificate to every holder of
    /// the old epoch that has not confirmed erasing it. Each answer is the node's own signed
    /// outcome. An activation that does not reach every participant is an error (it stays
    /// due); a closure that does not reach every holder is audited and stays due.
    async fn drive_lifecycle(&self, row: &KeyRow, attempts: usize) -> Result<(), ServiceError> {
        let Some(mut lifecycle) = row.lifecycle.clone() else {
            return Ok(());
        };
        // Audited when it changes, not at every rotation check.
        let due_before = lifecycle.due.clone();
        let closing_began = lifecycle.phase == LifecyclePhase::Activate || attempts > 1;
        let session = lifecycle.session;
        let report = verify_activation(
            self.starter.roster(),
            row.id,
            session,
            &lifecycle.certificate,
        )
        .map_err(|e| {
            ServiceError::corrupt(format_args!(
                "key {}: the recorded activation certificate does not verify ({e})",
                row.id
            ))
        })?;
        if lifecycle.phase == LifecyclePhase::Activate {
            let operation = Operation::ActivateEpoch {
                key: row.id,
                reshare: session,
                certificate: lifecycle.certificate.clone(),
            };
            let expected = Output::EpochActivated {
                key: row.id,
                reshare: session,
                epoch: report.to_epoch(),
            };
            let errors = self
                .deliver(
                    &mut lifecycle,
                    operation,
                    attempts,
                    |o| *o == expected,
                    |l, r| l.activated.push(r.signed.clone()),
                )
                .await;
            if !lifecycle.due.is_empty() {
                self.store
                    .update_lifecycle(row.id, session, Some(&lifecycle))
                    .await?;
                if lifecycle.due != due_before || attempts > 1 {
                    self.audit_note(
                        NewEvent::new(
                            SYSTEM,
                            "key.activation_incomplete",
                            format!("key:{}", row.id),
                        )
                        .detail("session", session)
                        .detail("due", PartyId::list(&lifecycle.due))
                        .detail("errors", &errors),
                    );
                }
                return Err(ServiceError::Unavailable(format!(
                    "key '{}': the new epoch {} is recorded, but its activation has not reached \
                     {} ({errors}); bring them back: the coordinator resends it every rotation \
                     check (or run `tessera key activate`)",
                    row.name,
                    report.to_epoch(),
                    PartyId::list(&lifecycle.due)
                )));
            }
            lifecycle.phase = LifecyclePhase::Close;
            lifecycle.due = lifecycle.holders.clone();
            self.store
                .update_lifecycle(row.id, session, Some(&lifecycle))
                .await?;
            self.audit_note(
                NewEvent::new(SYSTEM, "key.epoch_activated", format!("key:{}", row.id))
                    .detail("session", session)
                    .detail("epoch", report.to_epoch()),
            );
        }
        let new_holders = report.new_committee.clone();
        let operation = Operation::CloseEpoch {
            key: row.id,
            reshare: session,
            certificate: lifecycle.certificate.clone(),
            activated: lifecycle
                .activated
                .iter()
                .filter(|o| new_holders.contains(&o.party))
                .cloned()
                .collect(),
            approved: lifecycle.approved.clone().map(Box::new),
        };
        let errors = self
            .deliver(
                &mut lifecycle,
                operation,
                attempts,
                |o| matches!(o, Output::EpochClosed { reshare, .. } if *reshare == session),
                |_, _| {},
            )
            .await;
        if lifecycle.due.is_empty() {
            self.store.update_lifecycle(row.id, session, None).await?;
            self.audit_note(
                NewEvent::new(SYSTEM, "key.epoch_closed", format!("key:{}", row.id))
                    .detail("session", session)
                    .detail("epoch", report.from_epoch)
                    .detail("holders", PartyId::list(&lifecycle.holders)),
            );
        } else {
            self.store
                .update_lifecycle(row.id, session, Some(&lifecycle))
                .await?;
            if closing_began || lifecycle.due != due_before {
                tracing::warn!(key = %row.id, due = %PartyId::list(&lifecycle.due), "old epoch not confirmed erased");
                self.audit_note(
                    NewEvent::new(SYSTEM, "key.erasure_unconfirmed", format!("key:{}", row.id))
                        .detail("session", session)
                        .detail("epoch", report.from_epoch)
                        .detail("parties", PartyId::list(&lifecycle.due))
                        .detail("errors", &errors),
                );
            }
        }
        Ok(())
    }

    /// Sends `operation` to the lifecycle's due parties up to `attempts` times; each party
    /// whose signed answer passes `accepted` is no longer due (`record` keeps what it said).
    /// Returns what the others answered, for the record.
    async fn deliver(
        &self,
        lifecycle: &mut Lifecycle,
        operation: Operation,
        attempts: usize,
        accepted: impl Fn(&Output) -> bool,
        record: impl Fn(&mut Lifecycle, &tessera_control::Report),
    ) -> String {
        let mut errors = Vec::new();
        for attempt in 0..attempts {
            if lifecycle.due.is_empty() {
                break;
            }
            if attempt > 0 {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            let due = lifecycle.due.clone();
            let reports = self.collect(&due, operation.clone()).await;
            errors.clear();
            for p in due {
                match reports.get(&p) {
                    Some(r) if r.result.as_ref().is_ok_and(&accepted) => {
                        record(lifecycle, r);
                        lifecycle.due.retain(|d| *d != p);
                    }
                    Some(r) => errors.push(match &r.result {
                        Err(f) => format!("{p}: {}", f.message),
                        Ok(other) => format!("{p}: answered {other:?}"),
                    }),
                    None => errors.push(format!("{p}: no answer")),
                }
            }
        }
        errors.join("; ")
    }

    /// Waits until every party of `receivers` has a prime set for the new auxiliary info,
    /// saying so (log and audit) if one has none; at most the auxiliary-info deadline.
    async fn wait_for_primes(
        &self,
        row: &KeyRow,
        receivers: &[PartyId],
    ) -> Result<(), ServiceError> {
        let began = std::time::Instant::now();
        let mut announced = false;
        loop {
            let reports = self.collect(receivers, Operation::Primes).await;
            let lacking: Vec<PartyId> = receivers
                .iter()
                .copied()
                .filter(|p| {
                    !reports.get(p).is_some_and(
                        |r| matches!(r.result, Ok(Output::Primes { ready, .. }) if ready > 0),
                    )
                })
                .collect();
            if lacking.is_empty() {
                if announced {
                    tracing::info!(key = %row.id, waited_secs = began.elapsed().as_secs(), "prime sets ready");
                }
                return Ok(());
            }
            if began.elapsed() >= self.settings.aux_info_deadline {
                return Err(ServiceError::Unavailable(format!(
                    "key '{}': {} still had no prime set ready after {} s; a rotation renews \
                     the auxiliary info and needs one from every receiver (check that those \
                     nodes run and generate primes, `tessera-node status`)",
                    row.name,
                    PartyId::list(&lacking),
                    began.elapsed().as_secs()
                )));
            }
            if !announced {
                announced = true;
                tracing::info!(key = %row.id, lacking = %PartyId::list(&lacking), "waiting for prime sets (a set takes minutes to generate)");
                self.audit_note(
                    NewEvent::new(SYSTEM, "key.waiting_for_primes", format!("key:{}", row.id))
                        .detail("parties", PartyId::list(&lacking)),
                );
            }
            tokio::time::sleep(PRIME_POLL).await;
        }
    }

    /// The receivers among `parties` whose prime pool is empty now (for a proposal's note).
    pub(super) async fn lacking_primes(&self, parties: &[PartyId]) -> Vec<PartyId> {
        let reports = self.collect(parties, Operation::Primes).await;
        parties
            .iter()
            .copied()
            .filter(|p| {
                !reports.get(p).is_some_and(
                    |r| matches!(r.result, Ok(Output::Primes { ready, .. }) if ready > 0),
                )
            })
            .collect()
    }

    /// The key's public info as the dealers hold it; they must agree with each other and
    /// with the recorded committee, threshold, epoch and public key.
    async fn describe_key(
        &self,
        row: &KeyRow,
        dealers: &[PartyId],
    ) -> Result<SetupKey, ServiceError> {
        let outcome = self
            .starter
            .run(
                self.control.as_ref(),
                dealers,
                Operation::DescribeKey { key: row.id },
                self.settings.session_deadline,
            )
            .await;
        let unavailable = |m: String| ServiceError::Unavailable(m);
        let (committee, threshold, epoch, key_info) = match outcome {
            Ok(Output::KeyInfo {
                committee,
                threshold,
                epoch,
                key_info,
            }) => (committee, threshold, epoch, key_info),
            Ok(other) => {
                return Err(unavailable(format!(
                    "describing the key returned {other:?}"
                )))
            }
            Err(e) => {
                self.health.failed(&e.blamed());
                return Err(unavailable(format!(
                    "the holders of key '{}' could not describe it: {e}",
                    row.name
                )));
            }
        };
        if committee != row.committee || threshold != row.threshold || epoch != row.epoch {
            return Err(ServiceError::corrupt(format_args!(
                "key {}: the nodes hold epoch {epoch} as {threshold}-of-{} on {}, the \
                 coordinator recorded epoch {} as {}-of-{} on {}",
                row.id,
                committee.len(),
                PartyId::list(&committee),
                row.epoch,
                row.threshold,
                row.committee.len(),
                PartyId::list(&row.committee)
            )));
        }
        let info = SetupKey::from_json(row.kind, &key_info).map_err(|e| {
            unavailable(format!(
                "the nodes' key info does not decode as a {} key's: {e}",
                row.kind
            ))
        })?;
        if row.public_key.as_deref() != Some(&info.public_key()[..]) {
            return Err(ServiceError::corrupt(format_args!(
                "key {}: the nodes' public key differs from the recorded one",
                row.id
            )));
        }
        Ok(info)
    }
}

/// The signed reshare outcomes of `participants`, in that order: the activation certificate
/// if every one is a successful report.
fn certificate_of(participants: &[PartyId], reports: &Reports) -> Vec<SignedOutcome> {
    participants
        .iter()
        .filter_map(|p| reports.get(p))
        .map(|r| r.signed.clone())
        .collect()
}
