//! Approvals shared by requests, policy changes and key changes: verifying a principal's
//! signature over a digest, recording an admin's approval of a change, and reading them back.

use tessera_policy::{Approval, PolicyDocument, PrincipalSignature, Role};

use super::{to_db, Coordinator, DecisionView, ServiceError};
use crate::store::{self, AddApproval, ApprovalSubject, Decision};

/// Refuses `principal` unless the policy names it an admin.
pub(super) fn require_admin(policy: &PolicyDocument, principal: &str) -> Result<(), ServiceError> {
    if policy
        .principal(principal)
        .is_some_and(|p| p.has_role(Role::Admin))
    {
        Ok(())
    } else {
        Err(ServiceError::forbidden(principal, "the admin role"))
    }
}

/// `approver`'s approval of `digest` (the `what` digest, e.g. "request digest"), verified
/// against the key `policy` names for them.
pub(super) fn verified_approval(
    policy: &PolicyDocument,
    digest: &[u8; 32],
    what: &str,
    approver: &str,
    signature: PrincipalSignature,
) -> Result<Approval, ServiceError> {
    let approval = Approval {
        approver: approver.to_owned(),
        signature,
    };
    approval.verify(digest, policy).map_err(|e| {
        ServiceError::Invalid(format!(
            "the approval does not verify ({e}); sign the {what} {} (recompute it from the \
             {}) with the key the policy names for '{approver}'",
            hex::encode(digest),
            what.trim_end_matches(" digest")
        ))
    })?;
    Ok(approval)
}

/// An admin's approval of a change (a policy change or a key change) to record.
pub(super) struct AdminApproval<'a> {
    /// What is approved.
    pub subject: ApprovalSubject,
    /// It, for people (e.g. `policy proposal <id>`).
    pub what: String,
    /// The change digest.
    pub digest: [u8; 32],
    /// The approving principal.
    pub principal: &'a str,
    /// Their signature over the digest.
    pub signature: PrincipalSignature,
    /// Unix seconds.
    pub now: u64,
}

impl Coordinator {
    /// Checks and records an admin's approval of a change (the proposer's own is its
    /// signature as the proposer): the principal is an admin, the signature verifies, and they
    /// did not sign it before.
    pub(super) async fn record_admin_approval(
        &self,
        policy: &PolicyDocument,
        approval: AdminApproval<'_>,
    ) -> Result<(), ServiceError> {
        let AdminApproval {
            subject,
            what,
            digest,
            principal,
            signature,
            now,
        } = approval;
        require_admin(policy, principal)?;
        let approval = verified_approval(policy, &digest, "change digest", principal, signature)?;
        let added = self
            .store
            .add_approval(&store::Approval {
                subject,
                approver: principal.to_owned(),
                decision: Decision::Approve,
                signature: approval.signature.0,
                created_at: to_db(now),
            })
            .await?;
        if let AddApproval::Duplicate(_) = added {
            return Err(ServiceError::Conflict(format!(
                "'{principal}' already signed {what}; an admin signs once"
            )));
        }
        Ok(())
    }

    /// The approvals (not rejections) recorded for `subject`.
    pub(super) async fn approvals_of(
        &self,
        subject: ApprovalSubject,
    ) -> Result<Vec<Approval>, ServiceError> {
        Ok(self
            .store
            .approvals_for(subject)
            .await?
            .into_iter()
            .filter(|a| a.decision == Decision::Approve)
            .map(|a| Approval {
                approver: a.approver,
                signature: PrincipalSignature(a.signature),
            })
            .collect())
    }

    /// Every decision recorded for `subject`, oldest first, as shown.
    pub(super) async fn decision_views(
        &self,
        subject: ApprovalSubject,
    ) -> Result<Vec<DecisionView>, ServiceError> {
        Ok(self
            .store
            .approvals_for(subject)
            .await?
            .into_iter()
            .map(|a| DecisionView {
                principal: a.approver,
                decision: a.decision,
                at: a.created_at,
            })
            .collect())
    }
}
