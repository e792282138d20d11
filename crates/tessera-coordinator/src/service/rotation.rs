//! Rotating a key's shares without changing the key (`docs/protocols/reshare.md`, ADR 0008):
//! refreshing its committee's shares, or resharing it to another committee or threshold (a
//! party joins or leaves, or a lost party is replaced from the remaining holders).
//!
//! The coordinator asks the dealers for the key's public info, runs the reshare, and only when
//! every participant reported the same confirmation records the new committee and tells every
//! participant to activate. A failed reshare is discarded and changes nothing.
//!
//! People ask for rotations as key changes approved by admins ([`super::key_changes`]); a
//! reshare carries the approved change to the nodes, which re-check it (ADR 0010). The
//! rotation check ([`Coordinator::rotation_check`]) runs scheduled refreshes and resends
//! activations that did not reach every participant.

use std::sync::Arc;
use std::time::Duration;

use tessera_audit::NewEvent;
use tessera_control::{Operation, Output, StarterError};
use tessera_mpc::reshare::{Kind, ReshareSetup};
use tessera_policy::ApprovedKeyChange;
use tessera_wire::{KeyId, PartyId, SessionId};

use super::{now_unix, quorum, to_db, Coordinator, KeyView, ServiceError, SYSTEM};
use crate::store::{CommitteeStatus, KeyRow, KeyStatus, PendingActivation, SessionOutcome};

/// How often activation is sent before the coordinator reports it incomplete.
const ACTIVATION_ATTEMPTS: usize = 3;
/// How long after a failed scheduled refresh it is tried again.
const SCHEDULED_REFRESH_RETRY_SECS: u64 = 15 * 60;

/// Marks a key as being rotated by this coordinator while alive.
struct RotatingGuard<'a> {
    coordinator: &'a Coordinator,
    key: KeyId,
}

impl Drop for RotatingGuard<'_> {
    fn drop(&mut self) {
        self.coordinator
            .rotating
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.key);
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

impl Coordinator {
    /// Refreshes `key` (name or id) without an admin approval, as the refresh schedule does
    /// (people propose a [`KeyOperation::Refresh`](tessera_policy::KeyOperation) key change):
    /// every holder gets a new share of the same key; shares taken before no longer combine
    /// with shares after. Every holder must be reachable.
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
    /// the new committee (which must be set up: its auxiliary info exists) receives. The
    /// public key, addresses and HD chain code do not change.
    pub(super) async fn reshare_row(
        self: &Arc<Self>,
        row: KeyRow,
        committee: Vec<PartyId>,
        threshold: u16,
        approved: ApprovedKeyChange,
    ) -> Result<KeyView, ServiceError> {
        self.check_reshare_target(&committee, threshold).await?;
        self.rotate(row, Kind::Reshare, committee, threshold, Some(approved))
            .await
    }

    /// Refuses a committee that is not a set-up committee of roster parties (in ascending
    /// order, as committees are recorded) or a threshold outside 2..=n.
    pub(super) async fn check_reshare_target(
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
        let ready = self.committee(committee).await?;
        if ready.status != CommitteeStatus::Ready {
            return Err(ServiceError::Unavailable(format!(
                "committee {} is {}; set it up before resharing to it",
                PartyId::list(committee),
                ready.status
            )));
        }
        Ok(())
    }

    /// Sends the activation of `key`'s last rotation again to every participant, if it did
    /// not reach them all (the rotation check does this by itself every interval). Returns
    /// the key as recorded afterwards.
    pub async fn complete_activation(&self, key: &str) -> Result<KeyView, ServiceError> {
        let row = self.resolve_key(key).await?;
        self.deliver_activation(&row).await?;
        Ok(self.key_row(row.id).await?.into())
    }

    /// Delivers `row`'s due activation, if any, and records it delivered.
    async fn deliver_activation(&self, row: &KeyRow) -> Result<(), ServiceError> {
        let Some(due) = &row.pending_activation else {
            return Ok(());
        };
        match self
            .finish_reshare(row.id, due.session, &due.parties, due.confirmation, true)
            .await
        {
            Ok(()) => {
                self.store
                    .clear_pending_activation(row.id, due.session)
                    .await?;
                tracing::info!(key = %row.id, session = %due.session, "activation delivered to every participant");
                self.audit_note(
                    NewEvent::new(
                        SYSTEM,
                        "key.activation_completed",
                        format!("key:{}", row.id),
                    )
                    .detail("session", due.session),
                );
                Ok(())
            }
            Err(e) => Err(ServiceError::Unavailable(format!(
                "key '{}': activation of session {} has not reached every participant ({e}); \
                 bring the parties named back and try again (the coordinator also resends it \
                 every rotation check)",
                row.name, due.session
            ))),
        }
    }

    /// One rotation check: resends due activations and runs due scheduled refreshes (each
    /// claimed in the database, so one replica runs it). Failures are logged and audited;
    /// a failed scheduled refresh is tried again after 15 minutes.
    pub(super) async fn rotation_check(self: &Arc<Self>) -> Result<(), ServiceError> {
        let now = now_unix();
        for row in self.store.keys_due_for_rotation_work(to_db(now)).await? {
            if row.pending_activation.is_some() {
                if let Err(e) = self.deliver_activation(&row).await {
                    tracing::warn!(key = %row.id, error = %e, "activation still incomplete");
                }
                continue;
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
            let _guard = this.start_rotating(&row)?;
            // An earlier rotation's activation first: until it reached every participant,
            // some of them hold the old share.
            this.deliver_activation(&row).await?;
            this.run_rotation(row, kind, committee, threshold, approved)
                .await
        })
        .await
        .map_err(|e| ServiceError::Unavailable(format!("the rotation task failed: {e}")))??;
        Ok(self.key_row(id).await?.into())
    }

    /// Marks `row` as being rotated here, or refuses if it already is.
    fn start_rotating(&self, row: &KeyRow) -> Result<RotatingGuard<'_>, ServiceError> {
        let mut rotating = self.rotating.lock().unwrap_or_else(|p| p.into_inner());
        if !rotating.insert(row.id) {
            return Err(ServiceError::Conflict(format!(
                "key '{}' is being refreshed or reshared; try again when that finished",
                row.name
            )));
        }
        Ok(RotatingGuard {
            coordinator: self,
            key: row.id,
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
        let setup = ReshareSetup {
            kind,
            key: key_info,
            old_committee: row.committee.clone(),
            dealers,
            new_committee: committee.clone(),
            new_threshold: threshold,
        };
        let participants = setup.participants();
        let name = kind_name(kind);
        self.audit_note(
            NewEvent::new(
                SYSTEM,
                format!("key.{name}_started"),
                format!("key:{}", row.id),
            )
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
            setup: setup.clone(),
            approved: approved.map(Box::new),
        };
        let (session, outcome) = self
            .run_key_session(row.id, name, &participants, operation)
            .await?;
        let confirmation = match outcome {
            Ok(Output::Reshare { confirmation }) => confirmation,
            other => {
                let error = match other {
                    Ok(output) => format!("the {name} returned {output:?}"),
                    Err(e) => e.to_string(),
                };
                // Nothing is active yet: every pending share is dropped, the key unchanged.
                let _ = self
                    .finish_reshare(row.id, session, &participants, [0; 32], false)
                    .await;
                self.audit_note(
                    NewEvent::new(
                        SYSTEM,
                        format!("key.{name}_failed"),
                        format!("key:{}", row.id),
                    )
                    .detail("session", session)
                    .detail("error", &error),
                );
                return Err(ServiceError::Unavailable(format!(
                    "the {name} of key '{}' failed and was discarded; the key is unchanged: {error}",
                    row.name
                )));
            }
        };
        // The commit point: every participant holds the same result.
        let activation = PendingActivation {
            session,
            confirmation,
            parties: participants.clone(),
        };
        self.store
            .set_key_committee(row.id, &committee, threshold, &activation)
            .await?;
        if let Some(pool) = &self.pool {
            pool.forget(row.id);
            pool.track(row.id, &quorum::preferred(&committee, threshold));
        }
        let mut last = None;
        for attempt in 0..ACTIVATION_ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            match self
                .finish_reshare(row.id, session, &participants, confirmation, true)
                .await
            {
                Ok(()) => {
                    self.store.clear_pending_activation(row.id, session).await?;
                    last = None;
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        if let Some(e) = last {
            self.audit_note(
                NewEvent::new(
                    SYSTEM,
                    "key.activation_incomplete",
                    format!("key:{}", row.id),
                )
                .detail("session", session)
                .detail("error", &e)
                .detail("blamed", PartyId::list(&e.blamed())),
            );
            return Err(ServiceError::Unavailable(format!(
                "key '{}': the {name} succeeded and is recorded, but activation did not reach \
                 every participant ({e}); bring the parties named back: the coordinator resends \
                 activation for session {session} every rotation check (or run `tessera key \
                 activate`)",
                row.name
            )));
        }
        tracing::info!(key = %row.id, %name, committee = %PartyId::list(&committee), threshold, "key rotated");
        self.audit_note(
            NewEvent::new(SYSTEM, done_action(kind), format!("key:{}", row.id))
                .detail("session", session)
                .detail("committee", PartyId::list(&committee))
                .detail("threshold", threshold)
                .detail("confirmation", hex::encode(confirmation)),
        );
        Ok(())
    }

    /// The key's public info as the dealers hold it; they must agree with each other and
    /// with the recorded committee, threshold and public key.
    async fn describe_key(
        &self,
        row: &KeyRow,
        dealers: &[PartyId],
    ) -> Result<tessera_mpc::reshare::KeyInfo, ServiceError> {
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
        let (committee, threshold, key_info) = match outcome {
            Ok(Output::KeyInfo {
                committee,
                threshold,
                key_info,
            }) => (committee, threshold, key_info),
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
        if committee != row.committee || threshold != row.threshold {
            return Err(ServiceError::corrupt(format_args!(
                "key {}: the nodes hold it as {threshold}-of-{} on {}, the coordinator recorded {}-of-{} on {}",
                row.id,
                committee.len(),
                PartyId::list(&committee),
                row.threshold,
                row.committee.len(),
                PartyId::list(&row.committee)
            )));
        }
        let info: tessera_mpc::reshare::KeyInfo = serde_json::from_str(&key_info)
            .map_err(|e| unavailable(format!("the nodes' key info does not decode: {e}")))?;
        if row.public_key.as_deref() != Some(&info.shared_public_key.to_bytes(true)[..]) {
            return Err(ServiceError::corrupt(format_args!(
                "key {}: the nodes' public key differs from the recorded one",
                row.id
            )));
        }
        Ok(info)
    }

    /// Sends activate or discard for reshare `session` to its participants.
    async fn finish_reshare(
        &self,
        key: KeyId,
        session: SessionId,
        participants: &[PartyId],
        confirmation: [u8; 32],
        activate: bool,
    ) -> Result<(), StarterError> {
        let operation = Operation::FinishReshare {
            key,
            reshare: session,
            confirmation,
            activate,
        };
        self.starter
            .run(
                self.control.as_ref(),
                participants,
                operation,
                self.settings.session_deadline,
            )
            .await
            .map(|_| ())
    }

    /// Runs a session about `key` ([`start_key_session`](Self::start_key_session)) and records
    /// its outcome as the session's and in the parties' health.
    async fn run_key_session(
        &self,
        key: KeyId,
        name: &str,
        parties: &[PartyId],
        operation: Operation,
    ) -> Result<(SessionId, Result<Output, StarterError>), ServiceError> {
        let (session, outcome) = self
            .start_key_session(key, name, parties, operation)
            .await?;
        match &outcome {
            Ok(_) => {
                self.store
                    .finish_session(session, &SessionOutcome::Ok, &[])
                    .await?;
                self.health.succeeded(parties);
            }
            Err(e) => {
                let blamed = e.blamed();
                self.store
                    .finish_session(session, &SessionOutcome::Failed(e.to_string()), &blamed)
                    .await?;
                self.health.failed(&blamed);
            }
        }
        Ok((session, outcome))
    }
}
