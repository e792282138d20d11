//! Decisions on sign requests: approvals and rejections by approvers (each verified, the
//! policy re-evaluated after each), and cancellation by the submitter or an admin.

use sha2::{Digest, Sha256};
use tessera_policy::{
    evaluate, Approval, PolicyDocument, Principal, PrincipalSignature, Role, SignRequest, Verdict,
};
use tessera_wire::RequestId;

use super::approvals::verified_approval;
use super::requests::decode;
use super::{
    hash_hex, history, now_unix, to_db, ActivePolicy, Coordinator, RequestView, ServiceError,
    SYSTEM,
};
use crate::store::{self, AddApproval, ApprovalSubject, Decision, RequestRow, RequestState};

/// Domain separation for [`rejection_digest`].
pub const REJECTION_LABEL: &[u8] = b"tessera/reject-request/v1";

/// What an approver signs to **reject** a request: SHA-256(`"tessera/reject-request/v1"` ||
/// request digest), signed like an approval ([`Approval::sign`] over this digest).
///
/// A rejection must not be a signature over the request digest itself: that signature would
/// be a valid approval, which a compromised coordinator could show the nodes.
pub fn rejection_digest(request_digest: &[u8; 32]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(REJECTION_LABEL);
    hasher.update(request_digest);
    hasher.finalize().into()
}

/// The principal `name` of `policy`, or Forbidden (it would need `needed`).
pub(crate) fn principal<'p>(
    policy: &'p PolicyDocument,
    name: &str,
    needed: &str,
) -> Result<&'p Principal, ServiceError> {
    policy.principal(name).ok_or_else(|| {
        ServiceError::forbidden(
            name,
            format!("{needed} (it is not a principal of the active policy)"),
        )
    })
}

/// Checks that `approver` may decide on `request`: a principal, not its submitter, whose
/// approval counts for at least one rule covering the key (as `evaluate` counts them).
fn check_approver(
    policy: &PolicyDocument,
    request: &SignRequest,
    approver: &str,
) -> Result<(), ServiceError> {
    let who = principal(policy, approver, "an approving role")?;
    if who.name == request.submitted_by {
        return Err(ServiceError::forbidden(
            approver,
            format!(
                "to be someone other than the submitter ('{}' submitted request {}; a submitter \
                 signs it with POST /v1/requests/{}/sign, as `tessera request submit` does, and may \
                 cancel but never approve or reject it)",
                request.submitted_by, request.id, request.id
            ),
        ));
    }
    let rules: Vec<_> = policy
        .rules_for(&request.key)
        .filter(|r| r.approvals.count > 0)
        .collect();
    if rules
        .iter()
        .any(|r| r.approvals.counts(&who.name, &who.roles))
    {
        return Ok(());
    }
    let needed = if rules.is_empty() {
        "a rule covering the key that asks for approvals (none does: this key's requests need no approval)".to_owned()
    } else {
        rules
            .iter()
            .map(|r| {
                let roles: Vec<&str> = r.approvals.roles.iter().map(|role| role.as_str()).collect();
                let mut text = format!("the {} role", roles.join(" or "));
                if !r.approvals.from.is_empty() {
                    let names: Vec<&str> = r.approvals.from.iter().map(String::as_str).collect();
                    text.push_str(&format!(" and to be one of {}", names.join(", ")));
                }
                format!("{text} (rule '{}')", r.name)
            })
            .collect::<Vec<_>>()
            .join(", or ")
    };
    Err(ServiceError::forbidden(approver, needed))
}

impl Coordinator {
    /// Records the submitter's own signature of request `id`: `signature` is its
    /// [`Approval::sign`] over the request digest ([`SignRequest::request_digest`] of
    /// [`RequestView::request`], the request it was answered with). It is no approval, but
    /// every request needs it: the policy (here and in every node) keeps a request its named
    /// submitter did not sign pending, so nobody can make a request up in an operator's name.
    /// Only the submitter, once, while the request is pending approval; the policy is then
    /// evaluated again, as after [`approve`](Self::approve).
    pub async fn sign_as_submitter(
        &self,
        principal_name: &str,
        id: RequestId,
        signature: PrincipalSignature,
    ) -> Result<RequestView, ServiceError> {
        let who = |_: &PolicyDocument, request: &SignRequest| {
            if principal_name == request.submitted_by {
                return Ok(());
            }
            Err(ServiceError::forbidden(
                principal_name,
                format!(
                    "to be the submitter of request {id} ('{}'); others approve it",
                    request.submitted_by
                ),
            ))
        };
        self.sign_request_digest(
            principal_name,
            id,
            signature,
            who,
            "request.signed_by_submitter",
        )
        .await
    }

    /// Records `approver`'s approval of request `id`: `signature` is their
    /// [`Approval::sign`] over the request digest ([`SignRequest::request_digest`] of
    /// [`RequestView::request`]). The approver must be a principal whose approval counts for a
    /// rule covering the key, and not the submitter (who signs through
    /// [`sign_as_submitter`](Self::sign_as_submitter)); each principal decides once. The policy
    /// is then evaluated again: once it allows, the request is `approved` and queued for
    /// signing; if it now denies (e.g. a window limit was used up meanwhile), the request is
    /// `rejected` with the reasons.
    pub async fn approve(
        &self,
        approver: &str,
        id: RequestId,
        signature: PrincipalSignature,
    ) -> Result<RequestView, ServiceError> {
        let clock = self.counters.stages().clock("approve");
        let who = |policy: &PolicyDocument, request: &SignRequest| {
            check_approver(policy, request, approver)
        };
        let view = self
            .sign_request_digest(approver, id, signature, who, "request.approved")
            .await;
        clock.lap("api");
        view
    }

    /// Records `principal`'s signature over the request digest of pending request `id` (an
    /// approval, or the submitter's own signature) once `may_sign` allows them, audits it as
    /// `event`, and evaluates the policy again.
    async fn sign_request_digest(
        &self,
        principal: &str,
        id: RequestId,
        signature: PrincipalSignature,
        may_sign: impl FnOnce(&PolicyDocument, &SignRequest) -> Result<(), ServiceError>,
        event: &str,
    ) -> Result<RequestView, ServiceError> {
        let (row, request, active) = self
            .open_request(id, &[RequestState::PendingApproval])
            .await?;
        let policy = &active.document;
        may_sign(policy, &request)?;
        let digest = request.request_digest();
        let signed = verified_approval(policy, &digest, "request digest", principal, signature)?;
        self.decide(row.id, principal, Decision::Approve, signed.signature)
            .await?;
        tracing::info!(request = %id, %principal, %event, "request signed by a principal");
        // On disk with the re-evaluation's event, before the call returns.
        self.audit_request_unflushed(principal, event, id, &[("digest", hex::encode(digest))]);
        let reevaluated = self.reevaluate(&row, &request, policy).await;
        self.audit_flush();
        reevaluated?;
        self.get(id).await
    }

    /// Records `approver`'s rejection of request `id` and moves it to `rejected`.
    /// `signature` is their [`Approval::sign`] over [`rejection_digest`] of the request digest
    /// (never over the request digest itself, which would be an approval). Who may reject is
    /// who may approve. A request being signed can no longer be rejected.
    pub async fn reject(
        &self,
        approver: &str,
        id: RequestId,
        signature: PrincipalSignature,
    ) -> Result<RequestView, ServiceError> {
        let open = [RequestState::PendingApproval, RequestState::Approved];
        let (row, request, active) = self.open_request(id, &open).await?;
        let policy = &active.document;
        check_approver(policy, &request, approver)?;
        let digest = rejection_digest(&request.request_digest());
        let rejection = Approval {
            approver: approver.to_owned(),
            signature,
        };
        rejection.verify(&digest, policy).map_err(|e| {
            ServiceError::Invalid(format!(
                "the rejection does not verify ({e}); sign the rejection digest {} \
                 (SHA-256 of \"tessera/reject-request/v1\" and the request digest) with the \
                 key the policy names for '{approver}'",
                hex::encode(digest)
            ))
        })?;
        self.decide(row.id, approver, Decision::Reject, rejection.signature)
            .await?;
        let reason = format!("rejected by '{approver}'");
        if !self
            .store
            .conclude_request(
                id,
                &open,
                RequestState::Rejected,
                Some(&reason),
                std::slice::from_ref(&reason),
            )
            .await?
        {
            return Err(self.too_late(id, "rejected").await);
        }
        self.announce(id, RequestState::Rejected);
        tracing::info!(request = %id, %approver, "request rejected");
        self.audit_request(approver, "request.rejected", id, &[]);
        self.get(id).await
    }

    /// Cancels request `id`, by its submitter or an admin, while it is pending approval or
    /// approved (not once signing has started).
    pub async fn cancel(
        &self,
        principal_name: &str,
        id: RequestId,
    ) -> Result<RequestView, ServiceError> {
        let row = self.request_row(id).await?;
        let active = self.active().await?;
        let is_admin = active
            .document
            .principal(principal_name)
            .is_some_and(|p| p.has_role(Role::Admin));
        if row.submitted_by != principal_name && !is_admin {
            return Err(ServiceError::forbidden(
                principal_name,
                format!("to be the submitter ('{}') or an admin", row.submitted_by),
            ));
        }
        let open = [RequestState::PendingApproval, RequestState::Approved];
        let reason = format!("cancelled by '{principal_name}'");
        if !self
            .store
            .conclude_request(
                id,
                &open,
                RequestState::Cancelled,
                Some(&reason),
                std::slice::from_ref(&reason),
            )
            .await?
        {
            return Err(self.too_late(id, "cancelled").await);
        }
        self.announce(id, RequestState::Cancelled);
        tracing::info!(request = %id, by = %principal_name, "request cancelled");
        self.audit_request(principal_name, "request.cancelled", id, &[]);
        self.get(id).await
    }

    /// The request if it is in one of `states` and not expired (an expired one is marked so).
    async fn open_request(
        &self,
        id: RequestId,
        states: &[RequestState],
    ) -> Result<(RequestRow, SignRequest, std::sync::Arc<ActivePolicy>), ServiceError> {
        let row = self.request_row(id).await?;
        if !states.contains(&row.state) {
            return Err(ServiceError::Conflict(format!(
                "request {id} is {}; it takes decisions only while {}",
                row.state,
                states
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(" or ")
            )));
        }
        let request = decode(&row)?;
        let now = now_unix();
        if now >= request.expires_at {
            if self
                .store
                .transition_request(id, states, RequestState::Expired, None, None)
                .await?
            {
                self.announce(id, RequestState::Expired);
            }
            return Err(ServiceError::Conflict(format!(
                "request {id} expired at {} (now {now}); submit a new request",
                request.expires_at
            )));
        }
        let active = self.active().await?;
        if request.policy != active.document.hash() {
            let reason = format!(
                "the request was made under policy {}, but the policy in force is {}: submit it again",
                hash_hex(&request.policy),
                active.document.hash()
            );
            if self
                .store
                .conclude_request(
                    id,
                    states,
                    RequestState::Rejected,
                    Some(&reason),
                    std::slice::from_ref(&reason),
                )
                .await?
            {
                self.announce(id, RequestState::Rejected);
            }
            return Err(ServiceError::Conflict(format!("request {id}: {reason}")));
        }
        Ok((row, request, active))
    }

    /// Stores a decision; a principal decides once per request.
    async fn decide(
        &self,
        id: RequestId,
        approver: &str,
        decision: Decision,
        signature: PrincipalSignature,
    ) -> Result<(), ServiceError> {
        let added = self
            .store
            .add_approval(&store::Approval {
                subject: ApprovalSubject::Request(id),
                approver: approver.to_owned(),
                decision,
                signature: signature.0,
                created_at: to_db(now_unix()),
            })
            .await?;
        match added {
            AddApproval::Added => Ok(()),
            AddApproval::Duplicate(first) => Err(ServiceError::Conflict(format!(
                "'{approver}' already decided on request {id} ({}); a principal decides once",
                first.decision
            ))),
        }
    }

    /// The approvals stored for a request, as the policy and the nodes take them.
    pub(crate) async fn approvals(&self, id: RequestId) -> Result<Vec<Approval>, ServiceError> {
        self.approvals_of(ApprovalSubject::Request(id)).await
    }

    /// Evaluates a pending request with its approvals and moves it on.
    async fn reevaluate(
        &self,
        row: &RequestRow,
        request: &SignRequest,
        policy: &PolicyDocument,
    ) -> Result<(), ServiceError> {
        let id = row.id;
        let approvals = self.approvals(id).await?;
        let derived = request.check().map_err(|e| {
            ServiceError::corrupt(format_args!("request {id} no longer checks ({e})"))
        })?;
        let now = now_unix();
        let history = history::load(
            history::Source::Store(&self.store, None),
            policy,
            request.key,
            &derived,
            now,
        )
        .await?;
        let decision = evaluate(policy, request, &approvals, &history, now);
        let reasons: Vec<String> = decision.reasons.iter().map(ToString::to_string).collect();
        let pending = [RequestState::PendingApproval];
        match decision.verdict {
            Verdict::Allow => {
                if self
                    .store
                    .conclude_request(id, &pending, RequestState::Approved, None, &[])
                    .await?
                {
                    self.announce(id, RequestState::Approved);
                    tracing::info!(request = %id, approved_by = ?decision.approved_by, "request approved; queued for signing");
                    self.audit_request(
                        SYSTEM,
                        "request.allowed",
                        id,
                        &[("approved_by", decision.approved_by.join(", "))],
                    );
                    self.wake.notify_one();
                }
            }
            Verdict::Pending => {
                self.store
                    .set_request_reasons(id, &pending, &reasons)
                    .await?;
            }
            Verdict::Deny => {
                if self
                    .store
                    .conclude_request(id, &pending, RequestState::Rejected, None, &reasons)
                    .await?
                {
                    self.announce(id, RequestState::Rejected);
                    tracing::warn!(request = %id, reasons = %reasons.join("; "), "request denied on re-evaluation");
                    self.counters.policy_refusal(super::RefusalStage::Approval);
                    self.audit_request(
                        SYSTEM,
                        "request.denied",
                        id,
                        &[("reasons", reasons.join("; "))],
                    );
                }
            }
        }
        Ok(())
    }

    async fn too_late(&self, id: RequestId, what: &str) -> ServiceError {
        match self.store.get_request(id).await {
            Ok(Some(row)) => ServiceError::Conflict(format!(
                "request {id} is {} and can no longer be {what}",
                row.state
            )),
            Ok(None) => ServiceError::NotFound(format!("no request {id}")),
            Err(e) => e.into(),
        }
    }
}
