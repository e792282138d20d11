//! Key changes: an admin proposes to refresh a key, reshare it, or set its refresh schedule;
//! other admins approve ([`tessera_policy::evaluate_key_change`], the policy's
//! `[admin] approvals`); then the coordinator carries it out. A reshare goes to the nodes with
//! its approvals, and every node re-checks them against the policy it pins (ADR 0010).

use std::sync::Arc;

use tessera_audit::NewEvent;
use tessera_policy::{
    evaluate_key_change, ApprovedKeyChange, KeyChange, KeyChangeDecision, KeyEpoch, KeyOperation,
    PrincipalSignature,
};
use tessera_wire::{PartyId, RequestId};

use super::approvals::{require_admin, AdminApproval};
use super::keys::KeyNames;
use super::views::KeyChangeSummary;
use super::{expires_at, now_unix, to_db, Coordinator, KeyChangeView, ServiceError};
use crate::store::{
    ApprovalSubject, InsertOutcome, KeyChangeRow, KeyChangeState, KeyRow, NewKeyChange, ProposalId,
};

/// A key change as an admin proposes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProposeKeyChange {
    /// Chosen by the client, so a retry is recognised.
    pub id: ProposalId,
    /// The key (name or id).
    pub key: String,
    /// What to do. A reshare's committee must be set up and named in ascending order.
    pub operation: KeyOperation,
    /// Seconds until it expires unapproved; default
    /// [`CoordinatorSettings::proposal_lifetime`](super::CoordinatorSettings), capped at the
    /// policy's `max_request_lifetime_secs`.
    pub lifetime_secs: Option<u64>,
}

fn decode_change(row: &KeyChangeRow) -> Result<KeyChange, ServiceError> {
    KeyChange::decode(&row.body).map_err(|e| {
        ServiceError::corrupt(format_args!("key change {} does not decode ({e})", row.id))
    })
}

impl Coordinator {
    /// Proposes a key change as `principal` (an admin of the active policy). It is checked at
    /// once (the key is ready, a reshare's committee is set up, the operation is valid) and
    /// stored `pending` until enough other admins approve it with
    /// [`approve_key_change`](Self::approve_key_change). Idempotent by id.
    pub async fn propose_key_change(
        self: &Arc<Self>,
        principal: &str,
        proposal: ProposeKeyChange,
    ) -> Result<KeyChangeView, ServiceError> {
        let active = self.active().await?;
        let current = &active.document;
        require_admin(current, principal)?;
        let row = self.ready_key(&proposal.key).await?;
        if let Some(existing) = self.store.get_key_change(proposal.id).await? {
            let change = decode_change(&existing)?;
            return if change.key == row.id
                && change.operation == proposal.operation
                && change.proposed_by == principal
            {
                self.key_change_view(existing).await
            } else {
                Err(ServiceError::Conflict(format!(
                    "key change id {} is already used for a different change; choose a new id",
                    proposal.id
                )))
            };
        }
        if let KeyOperation::Reshare {
            committee,
            threshold,
        } = &proposal.operation
        {
            self.check_reshare_target(committee, *threshold)?;
        }
        let now = now_unix();
        let expires_at = expires_at(
            now,
            proposal.lifetime_secs,
            self.settings.proposal_lifetime.as_secs(),
            current.max_request_lifetime_secs(),
        )?;
        let change = KeyChange {
            id: RequestId(proposal.id.0),
            policy: current.hash(),
            key: row.id,
            from: KeyEpoch {
                epoch: row.epoch,
                committee: row.committee.clone(),
                threshold: row.threshold,
            },
            operation: proposal.operation,
            proposed_by: principal.to_owned(),
            created_at: now,
            expires_at,
        };
        evaluate_key_change(current, &change, &[], now)
            .map_err(|e| ServiceError::Invalid(format!("the key change is refused: {e}")))?;
        let new = NewKeyChange {
            id: proposal.id,
            key: row.id,
            operation: change.operation.to_string(),
            proposed_by: principal.to_owned(),
            created_at: to_db(now),
            expires_at: to_db(expires_at),
            body: change.canonical_bytes(),
        };
        let stored = match self.store.insert_key_change(&new).await? {
            InsertOutcome::Inserted => self.key_change_row(proposal.id).await?,
            InsertOutcome::Existing(row) => row,
        };
        tracing::info!(change = %proposal.id, key = %row.id, operation = %change.operation, by = %principal, "key change proposed");
        let notes = self.proposal_notes(&row, &change.operation).await;
        self.audit_note(
            NewEvent::new(
                principal,
                "key_change.proposed",
                format!("key-change:{}", proposal.id),
            )
            .detail("key", row.id)
            .detail("operation", &new.operation),
        );
        let mut view = self.key_change_view(stored).await?;
        view.notes = notes;
        Ok(view)
    }

    /// What a proposer should know before the change runs: receivers whose prime pool is empty
    /// now (a refresh or reshare of an ECDSA key renews the auxiliary info and waits for their
    /// primes; FROST keys have none).
    async fn proposal_notes(&self, row: &KeyRow, operation: &KeyOperation) -> Vec<String> {
        if row.kind != tessera_wire::KeyKind::Ecdsa {
            return Vec::new();
        }
        let (receivers, what) = match operation {
            KeyOperation::Refresh => (row.committee.clone(), "refresh"),
            KeyOperation::Reshare { committee, .. } => (committee.clone(), "reshare"),
            KeyOperation::RefreshSchedule { .. } => return Vec::new(),
        };
        let lacking = self.lacking_primes(&receivers).await;
        if lacking.is_empty() {
            return Vec::new();
        }
        vec![format!(
            "{} {} no prime set ready now: the {what} renews the auxiliary info and will wait \
             for their nodes to generate one (1 to 6 minutes each) when it runs",
            PartyId::list(&lacking),
            if lacking.len() == 1 { "has" } else { "have" }
        )]
    }

    /// Records `principal`'s approval of key change `id`: `signature` is their
    /// [`Approval::sign`] over [`KeyChange::change_digest`] of [`KeyChangeView::change`]. The
    /// proposer signs its own change this way; admins other than the proposer approve it, once
    /// each. When the proposer signed and enough other admins approved, the change is carried
    /// out before this returns; the view then shows it `applied`, or `failed` with the error.
    pub async fn approve_key_change(
        self: &Arc<Self>,
        principal: &str,
        id: ProposalId,
        signature: PrincipalSignature,
    ) -> Result<KeyChangeView, ServiceError> {
        let row = self.key_change_row(id).await?;
        if row.state != KeyChangeState::Pending {
            return Err(ServiceError::Conflict(format!(
                "key change {id} is {}; only a pending change takes approvals",
                row.state
            )));
        }
        let change = decode_change(&row)?;
        let now = now_unix();
        if now >= change.expires_at {
            self.store
                .transition_key_change(
                    id,
                    &[KeyChangeState::Pending],
                    KeyChangeState::Expired,
                    None,
                )
                .await?;
            return Err(ServiceError::Conflict(format!(
                "key change {id} expired at {}; propose it again",
                change.expires_at
            )));
        }
        let active = self.active().await?;
        let current = &active.document;
        self.record_admin_approval(
            current,
            AdminApproval {
                subject: ApprovalSubject::KeyChange(id),
                what: format!("key change {id}"),
                digest: change.change_digest(),
                principal,
                signature,
                now,
            },
        )
        .await?;
        let approvals = self.approvals_of(ApprovalSubject::KeyChange(id)).await?;
        let decision = evaluate_key_change(current, &change, &approvals, now);
        let approved_by = match decision {
            Ok(KeyChangeDecision::Pending {
                needed,
                proposer_signed,
                ..
            }) => {
                tracing::info!(change = %id, %principal, needed, proposer_signed, "key change signed by an admin");
                self.audit_note(
                    NewEvent::new(principal, "key_change.approved", format!("key-change:{id}"))
                        .detail("proposer", principal == change.proposed_by)
                        .detail("still_needed", needed)
                        .detail("proposer_signed", proposer_signed),
                );
                return self.key_change_view(self.key_change_row(id).await?).await;
            }
            Ok(KeyChangeDecision::Allow { approved_by }) => approved_by,
            Err(e) => {
                // The policy changed under it (or it lives too long for the new one).
                let error = format!("the key change is refused: {e}");
                self.store
                    .transition_key_change(
                        id,
                        &[KeyChangeState::Pending],
                        KeyChangeState::Failed,
                        Some(&error),
                    )
                    .await?;
                return Err(ServiceError::Conflict(format!(
                    "{error}; propose it again under the active policy"
                )));
            }
        };
        self.audit_note(
            NewEvent::new(principal, "key_change.approved", format!("key-change:{id}"))
                .detail("still_needed", 0),
        );
        if !self
            .store
            .transition_key_change(
                id,
                &[KeyChangeState::Pending],
                KeyChangeState::Running,
                None,
            )
            .await?
        {
            // Another approval completed it at the same moment; that one carries it out.
            return self.key_change_view(self.key_change_row(id).await?).await;
        }
        tracing::info!(change = %id, key = %change.key, operation = %change.operation, approved_by = ?approved_by, "key change approved; carrying it out");
        let outcome = self
            .carry_out(ApprovedKeyChange {
                change: change.clone(),
                approvals,
            })
            .await;
        let (state, error) = match &outcome {
            Ok(()) => (KeyChangeState::Applied, None),
            Err(e) => (KeyChangeState::Failed, Some(e.to_string())),
        };
        self.store
            .transition_key_change(id, &[KeyChangeState::Running], state, error.as_deref())
            .await?;
        let mut event = NewEvent::new(
            super::SYSTEM,
            format!("key_change.{state}"),
            format!("key-change:{id}"),
        )
        .detail("key", change.key)
        .detail("operation", change.operation.to_string())
        .detail("approved_by", approved_by.join(", "));
        if let Some(error) = &error {
            event = event.detail("error", error);
        }
        self.audit_note(event);
        self.key_change_view(self.key_change_row(id).await?).await
    }

    /// Carries out an approved key change.
    async fn carry_out(self: &Arc<Self>, approved: ApprovedKeyChange) -> Result<(), ServiceError> {
        let key = approved.change.key.to_string();
        let row = self.ready_key(&key).await?;
        match approved.change.operation.clone() {
            KeyOperation::Refresh => self.refresh_row(row, Some(approved)).await.map(|_| ()),
            KeyOperation::Reshare {
                committee,
                threshold,
            } => self
                .reshare_row(row, committee, threshold, approved)
                .await
                .map(|_| ()),
            KeyOperation::RefreshSchedule { every_secs } => {
                let every = every_secs.map(to_db);
                self.store.set_refresh_schedule(row.id, every).await?;
                tracing::info!(key = %row.id, every_secs = ?every_secs, "refresh schedule set");
                Ok(())
            }
        }
    }

    /// The key change with this id.
    pub async fn get_key_change(&self, id: ProposalId) -> Result<KeyChangeView, ServiceError> {
        self.key_change_view(self.key_change_row(id).await?).await
    }

    /// Key changes, newest first, optionally only those in `state`, after change `after` (the
    /// last of the previous page); at most `limit`.
    pub async fn list_key_changes(
        &self,
        state: Option<KeyChangeState>,
        after: Option<ProposalId>,
        limit: u32,
    ) -> Result<Vec<KeyChangeSummary>, ServiceError> {
        let mut names = KeyNames::default();
        let mut summaries = Vec::new();
        for row in self.store.list_key_changes(state, after, limit).await? {
            summaries.push(KeyChangeSummary {
                id: row.id,
                key_id: row.key,
                key_name: names.name(self, row.key).await?,
                operation: row.operation,
                state: row.state,
                error: row.error,
                proposed_by: row.proposed_by,
                created_at: row.created_at,
                expires_at: row.expires_at,
                updated_at: row.updated_at,
            });
        }
        Ok(summaries)
    }

    async fn key_change_row(&self, id: ProposalId) -> Result<KeyChangeRow, ServiceError> {
        self.store.get_key_change(id).await?.ok_or_else(|| {
            ServiceError::NotFound(format!(
                "no key change {id}; list the key changes to see them"
            ))
        })
    }

    async fn key_change_view(&self, row: KeyChangeRow) -> Result<KeyChangeView, ServiceError> {
        let change = decode_change(&row)?;
        let key_name = self.key_row(row.key).await?.name;
        let decisions = self
            .decision_views(ApprovalSubject::KeyChange(row.id))
            .await?;
        Ok(KeyChangeView {
            id: row.id,
            key_id: row.key,
            key_name,
            operation: row.operation,
            state: row.state,
            error: row.error,
            proposed_by: row.proposed_by,
            change_digest: hex::encode(change.change_digest()),
            decisions,
            created_at: row.created_at,
            expires_at: row.expires_at,
            updated_at: row.updated_at,
            change,
            notes: Vec::new(),
        })
    }
}
