//! The policy: the active document, and changes proposed and approved by admins
//! ([`tessera_policy::evaluate_change`]).
//!
//! An applied change becomes the coordinator's active policy at once. **The nodes keep
//! signing only under the policy they pin**: each node's pin must move to the new hash (and
//! the coordinator be restarted with the new document) before requests made under the new
//! policy can be signed; until then the nodes refuse them. Distributing approved policies to
//! the nodes is future work (ADR 0005).

use tessera_audit::NewEvent;
use tessera_policy::{
    evaluate_change, ChangeDecision, PolicyChange, PolicyDocument, PolicyHash, PrincipalSignature,
};
use tessera_wire::RequestId;

use super::approvals::{require_admin, AdminApproval};
use super::views::ProposalSummary;
use super::{
    expires_at, now_unix, to_db, Coordinator, PolicyView, ProposalView, ServiceError, SYSTEM,
};
use crate::store::{
    ApprovalSubject, InsertOutcome, NewProposal, PolicyRow, ProposalId, ProposalRow, ProposalState,
};

/// A policy change as an admin proposes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProposePolicy {
    /// Chosen by the client, so a retry is recognised.
    pub id: ProposalId,
    /// The new document's exact bytes (TOML; its `revision` must be higher than the active
    /// one's).
    pub document: Vec<u8>,
    /// Seconds until it expires unapproved; default
    /// [`CoordinatorSettings::proposal_lifetime`](super::CoordinatorSettings), capped at the
    /// policy's `max_request_lifetime_secs`.
    pub lifetime_secs: Option<u64>,
}

fn decode_change(row: &ProposalRow) -> Result<PolicyChange, ServiceError> {
    PolicyChange::decode(&row.body).map_err(|e| {
        ServiceError::corrupt(format_args!(
            "policy proposal {} does not decode ({e})",
            row.id
        ))
    })
}

impl Coordinator {
    /// The active policy: document, hash and revision.
    pub async fn policy(&self) -> Result<PolicyView, ServiceError> {
        let active = self.active().await?;
        Ok(PolicyView {
            hash: active.document.hash().to_string(),
            revision: active.document.revision(),
            document: String::from_utf8_lossy(active.document.bytes()).into_owned(),
            activated_at: active.activated_at,
        })
    }

    /// Proposes a new policy document, as `principal` (an admin of the active policy). The
    /// change is checked at once (document valid, revision higher, proposer an admin) and
    /// stored `pending` until enough other admins approve it with
    /// [`approve_policy`](Self::approve_policy). Idempotent by id.
    pub async fn propose_policy(
        &self,
        principal: &str,
        proposal: ProposePolicy,
    ) -> Result<ProposalView, ServiceError> {
        let active = self.active().await?;
        let current = &active.document;
        require_admin(current, principal)?;
        if let Some(existing) = self.store.get_proposal(proposal.id).await? {
            let change = decode_change(&existing)?;
            return if change.document == proposal.document && change.proposed_by == principal {
                self.proposal_view(existing).await
            } else {
                Err(ServiceError::Conflict(format!(
                    "proposal id {} is already used for a different proposal; choose a new id",
                    proposal.id
                )))
            };
        }
        let document = String::from_utf8(proposal.document.clone()).map_err(|_| {
            ServiceError::Invalid("the policy document is not UTF-8; save it as UTF-8".into())
        })?;
        let now = now_unix();
        let expires_at = expires_at(
            now,
            proposal.lifetime_secs,
            self.settings.proposal_lifetime.as_secs(),
            current.max_request_lifetime_secs(),
        )?;
        let change = PolicyChange {
            id: RequestId(proposal.id.0),
            previous: current.hash(),
            document: proposal.document,
            proposed_by: principal.to_owned(),
            created_at: now,
            expires_at,
        };
        evaluate_change(current, &change, &[], now)
            .map_err(|e| ServiceError::Invalid(format!("the policy change is refused: {e}")))?;
        // A document whose rules the API can never serve would hold requests pending forever.
        let proposed = PolicyDocument::from_toml(&change.document)
            .map_err(|e| ServiceError::Invalid(format!("the policy change is refused: {e}")))?;
        let gaps = crate::auth::rbac::unservable_rules(&proposed);
        if !gaps.is_empty() {
            return Err(ServiceError::Invalid(format!(
                "the policy change is refused: {}",
                gaps.join("; ")
            )));
        }
        let new = NewProposal {
            id: proposal.id,
            previous_hash: Some(current.hash().0.to_vec()),
            document,
            proposed_by: principal.to_owned(),
            created_at: to_db(now),
            expires_at: to_db(expires_at),
            body: change.canonical_bytes(),
        };
        let row = match self.store.insert_proposal(&new).await? {
            InsertOutcome::Inserted => self.proposal_row(proposal.id).await?,
            InsertOutcome::Existing(row) => row,
        };
        tracing::info!(proposal = %proposal.id, by = %principal, "policy change proposed");
        self.audit_note(
            NewEvent::new(
                principal,
                "policy.proposed",
                format!("proposal:{}", proposal.id),
            )
            .detail("policy", PolicyHash::of(row.document.as_bytes())),
        );
        self.proposal_view(row).await
    }

    /// Records `principal`'s approval of policy proposal `id`: `signature` is their
    /// [`Approval::sign`] over the change digest ([`PolicyChange::change_digest`] of
    /// [`ProposalView::change`]). The proposer signs its own change this way, and admins other
    /// than the proposer approve it, once each. When the proposer signed and enough other
    /// admins approved, the new document becomes the active policy (see the module
    /// documentation: the nodes must then be re-pinned).
    pub async fn approve_policy(
        &self,
        principal: &str,
        id: ProposalId,
        signature: PrincipalSignature,
    ) -> Result<ProposalView, ServiceError> {
        let row = self.proposal_row(id).await?;
        if row.state != ProposalState::Pending {
            return Err(ServiceError::Conflict(format!(
                "policy proposal {id} is {}; only a pending proposal takes approvals",
                row.state
            )));
        }
        let change = decode_change(&row)?;
        let now = now_unix();
        if now >= change.expires_at {
            self.store
                .transition_proposal(id, &[ProposalState::Pending], ProposalState::Expired)
                .await?;
            return Err(ServiceError::Conflict(format!(
                "policy proposal {id} expired at {}; propose the change again",
                change.expires_at
            )));
        }
        let active = self.active().await?;
        let current = &active.document;
        if change.previous != current.hash() {
            if PolicyHash::of(&change.document) == current.hash() {
                // Applied already (the process stopped before the proposal was marked).
                self.store
                    .transition_proposal(id, &[ProposalState::Pending], ProposalState::Applied)
                    .await?;
                return self.proposal_view(self.proposal_row(id).await?).await;
            }
            self.store
                .transition_proposal(id, &[ProposalState::Pending], ProposalState::Rejected)
                .await?;
            return Err(ServiceError::Conflict(format!(
                "policy proposal {id} was made against policy {}, but the active policy is now \
                 {}: propose the change again against the active policy",
                change.previous,
                current.hash()
            )));
        }
        self.record_admin_approval(
            current,
            AdminApproval {
                subject: ApprovalSubject::Policy(id),
                what: format!("policy proposal {id}"),
                digest: change.change_digest(),
                principal,
                signature,
                now,
            },
        )
        .await?;
        let approvals = self.approvals_of(ApprovalSubject::Policy(id)).await?;
        match evaluate_change(current, &change, &approvals, now)
            .map_err(|e| ServiceError::Conflict(format!("the policy change is refused: {e}")))?
        {
            ChangeDecision::Pending {
                needed,
                proposer_signed,
                ..
            } => {
                tracing::info!(proposal = %id, %principal, needed, proposer_signed, "policy change signed by an admin");
                self.audit_note(
                    NewEvent::new(principal, "policy.approved", format!("proposal:{id}"))
                        .detail("proposer", principal == change.proposed_by)
                        .detail("still_needed", needed)
                        .detail("proposer_signed", proposer_signed),
                );
            }
            ChangeDecision::Allow {
                document,
                approved_by,
            } => {
                let text = String::from_utf8_lossy(document.bytes()).into_owned();
                let revision = i64::try_from(document.revision()).map_err(|_| {
                    ServiceError::Invalid("the new policy's revision is too large".into())
                })?;
                self.store
                    .activate_policy_change(
                        &PolicyRow {
                            hash: document.hash().0.to_vec(),
                            revision,
                            document: text,
                            activated_at: to_db(now),
                        },
                        &change.previous.0,
                    )
                    .await?;
                self.store
                    .transition_proposal(id, &[ProposalState::Pending], ProposalState::Applied)
                    .await?;
                self.active().await?;
                self.audit_note(
                    NewEvent::new(principal, "policy.approved", format!("proposal:{id}"))
                        .detail("still_needed", 0),
                );
                self.audit_note(
                    NewEvent::new(
                        SYSTEM,
                        "policy.applied",
                        format!("policy:{}", document.hash()),
                    )
                    .detail("proposal", id)
                    .detail("revision", document.revision())
                    .detail("approved_by", approved_by.join(", ")),
                );
                tracing::warn!(
                    proposal = %id,
                    policy = %document.hash(),
                    revision = document.revision(),
                    approved_by = ?approved_by,
                    "policy change applied; the nodes still pin the previous policy: re-pin every \
                     node to the new hash (requests made under the new policy are refused by the \
                     nodes until then) and restart the coordinator with the new document"
                );
            }
        }
        self.proposal_view(self.proposal_row(id).await?).await
    }

    /// The policy proposal with this id.
    pub async fn get_proposal(&self, id: ProposalId) -> Result<ProposalView, ServiceError> {
        self.proposal_view(self.proposal_row(id).await?).await
    }

    /// Policy proposals, newest first, optionally only those in `state`, after proposal `after`
    /// (the last of the previous page); at most `limit`.
    pub async fn list_proposals(
        &self,
        state: Option<ProposalState>,
        after: Option<ProposalId>,
        limit: u32,
    ) -> Result<Vec<ProposalSummary>, ServiceError> {
        Ok(self
            .store
            .list_proposals(state, after, limit)
            .await?
            .into_iter()
            .map(|row| ProposalSummary {
                id: row.id,
                state: row.state,
                proposed_by: row.proposed_by,
                document_hash: PolicyHash::of(row.document.as_bytes()).to_string(),
                created_at: row.created_at,
                expires_at: row.expires_at,
            })
            .collect())
    }

    async fn proposal_row(&self, id: ProposalId) -> Result<ProposalRow, ServiceError> {
        self.store.get_proposal(id).await?.ok_or_else(|| {
            ServiceError::NotFound(format!(
                "no policy proposal {id}; list the proposals to see them"
            ))
        })
    }

    async fn proposal_view(&self, row: ProposalRow) -> Result<ProposalView, ServiceError> {
        let change = decode_change(&row)?;
        let decisions = self.decision_views(ApprovalSubject::Policy(row.id)).await?;
        Ok(ProposalView {
            id: row.id,
            state: row.state,
            proposed_by: row.proposed_by,
            document_hash: PolicyHash::of(&change.document).to_string(),
            change_digest: hex::encode(change.change_digest()),
            decisions,
            created_at: row.created_at,
            expires_at: row.expires_at,
            change,
        })
    }
}
