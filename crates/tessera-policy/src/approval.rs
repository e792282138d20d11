//! Approvals: a principal's signature over a request digest or a policy-change digest.

use serde::{Deserialize, Serialize};

use crate::document::PolicyDocument;
use crate::principal::{OperatorKey, Principal, PrincipalSignature};
use crate::PolicyError;

/// Domain separation for approval signatures: the signed bytes are this label followed by the
/// 32-byte digest.
pub const APPROVAL_LABEL: &[u8] = b"tessera/approval/v1";

/// A principal's approval of one digest ([`SignRequest::request_digest`] or
/// [`PolicyChange::change_digest`]).
///
/// [`SignRequest::request_digest`]: crate::SignRequest::request_digest
/// [`PolicyChange::change_digest`]: crate::PolicyChange::change_digest
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Approval {
    /// The approving principal's name.
    pub approver: String,
    /// Their signature over [`APPROVAL_LABEL`] || digest.
    pub signature: PrincipalSignature,
}

impl Approval {
    /// Signs `digest` as `approver`.
    pub fn sign(digest: &[u8; 32], approver: &str, key: &OperatorKey) -> Approval {
        Approval {
            approver: approver.to_owned(),
            signature: key.sign(APPROVAL_LABEL, digest),
        }
    }

    /// Checks the approval against the approver's key in `policy` and returns the approver.
    /// Refuses approvers the policy does not name and signatures that do not verify.
    pub fn verify<'p>(
        &self,
        digest: &[u8; 32],
        policy: &'p PolicyDocument,
    ) -> Result<&'p Principal, PolicyError> {
        let principal = policy
            .principal(&self.approver)
            .ok_or_else(|| PolicyError::UnknownApprover(bounded(&self.approver)))?;
        principal
            .key
            .verify(APPROVAL_LABEL, digest, &self.signature)
            .map_err(|e| PolicyError::BadApproval {
                approver: principal.name.clone(),
                reason: e.to_string(),
            })?;
        Ok(principal)
    }
}

/// An untrusted name, cut short for messages.
pub(crate) fn bounded(name: &str) -> String {
    name.chars().take(80).collect()
}
