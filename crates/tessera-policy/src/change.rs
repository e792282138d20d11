//! Policy changes: an admin proposes a new document; other admins of the current policy approve.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tessera_wire::RequestId;

use crate::approval::{bounded, Approval};
use crate::document::{PolicyDocument, MAX_POLICY_BYTES};
use crate::evaluate::MAX_CLOCK_SKEW_SECS;
use crate::principal::Role;
use crate::request::PolicyHash;
use crate::PolicyError;

/// Domain separation for [`PolicyChange::change_digest`].
pub const CHANGE_DIGEST_LABEL: &[u8] = b"tessera/policy-change/v1";
/// Largest canonical encoding of a [`PolicyChange`] that [`PolicyChange::decode`] reads.
pub const MAX_ENCODED_CHANGE: usize = MAX_POLICY_BYTES + 1024;

/// A proposal to replace the current policy document.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyChange {
    /// Chosen by the proposer; retries reuse it.
    #[serde(with = "crate::encoding::text")]
    pub id: RequestId,
    /// The hash of the policy being replaced.
    pub previous: PolicyHash,
    /// The new document's exact bytes (hex in JSON).
    #[serde(with = "crate::encoding::bytes")]
    pub document: Vec<u8>,
    /// The admin who proposes it.
    pub proposed_by: String,
    /// Creation time, Unix seconds.
    pub created_at: u64,
    /// Expiry time, Unix seconds.
    pub expires_at: u64,
}

impl PolicyChange {
    /// The canonical encoding (`tessera_wire::encode`).
    pub fn canonical_bytes(&self) -> Vec<u8> {
        tessera_wire::encode(self)
    }

    /// Reads a canonical encoding, refusing inputs over [`MAX_ENCODED_CHANGE`] bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, PolicyError> {
        Ok(tessera_wire::decode(bytes, MAX_ENCODED_CHANGE)?)
    }

    /// What admins sign: SHA-256(`"tessera/policy-change/v1"` || canonical bytes).
    pub fn change_digest(&self) -> [u8; 32] {
        labelled_digest(CHANGE_DIGEST_LABEL, &self.canonical_bytes())
    }
}

/// SHA-256(`label` || `bytes`): the digest admins sign for a change.
pub(crate) fn labelled_digest(label: &[u8], bytes: &[u8]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(label);
    hasher.update(bytes);
    hasher.finalize().into()
}

/// Where a valid policy change stands.
#[derive(Clone, Debug)]
pub enum ChangeDecision {
    /// Enough admins approved: `document` replaces the current policy.
    Allow {
        /// The new document, parsed and validated.
        document: PolicyDocument,
        /// The admins whose approvals counted.
        approved_by: Vec<String>,
    },
    /// Valid so far; the proposer's signature or more admin approvals are needed.
    Pending {
        /// How many more approvals of admins other than the proposer.
        needed: usize,
        /// The admins whose approvals counted so far.
        approved_by: Vec<String>,
        /// Whether the proposer signed the change.
        proposer_signed: bool,
    },
}

/// Evaluates a policy change against the current policy at time `now`.
///
/// Errors (the change must be refused, with the reason): `previous` is not the current hash,
/// the change is expired, from the future or lives too long, the proposer is not an admin of
/// the current policy, the new document is invalid or its revision does not increase, or an
/// approval is duplicated, by an unknown principal, or does not verify. It is allowed once the
/// proposer signed it (an approval by the proposer) and [`PolicyDocument::admin_approvals`]
/// other admins approved; approvals by non-admins are valid but do not count.
pub fn evaluate_change(
    current: &PolicyDocument,
    change: &PolicyChange,
    approvals: &[Approval],
    now: u64,
) -> Result<ChangeDecision, PolicyError> {
    check_proposal(
        current,
        &change.previous,
        &change.proposed_by,
        (change.created_at, change.expires_at),
        now,
    )?;
    let document = PolicyDocument::from_toml(&change.document)?;
    if document.revision() <= current.revision() {
        return Err(PolicyError::RevisionNotIncreased {
            current: current.revision(),
            proposed: document.revision(),
        });
    }

    let count = count_admin_approvals(
        current,
        &change.proposed_by,
        &change.change_digest(),
        approvals,
        current.admin_approvals(),
    )?;
    Ok(if count.complete() {
        ChangeDecision::Allow {
            document,
            approved_by: count.approved_by,
        }
    } else {
        ChangeDecision::Pending {
            needed: count.needed,
            approved_by: count.approved_by,
            proposer_signed: count.proposer_signed,
        }
    })
}

/// What every change proposed to the admins (policy or key change) must be: made against
/// `current` (hash `against`), within its lifetime `(created_at, expires_at)` at `now`, and
/// proposed by an admin of `current`.
pub(crate) fn check_proposal(
    current: &PolicyDocument,
    against: &PolicyHash,
    proposed_by: &str,
    (created_at, expires_at): (u64, u64),
    now: u64,
) -> Result<(), PolicyError> {
    let current_hash = current.hash();
    if !bool::from(against.ct_eq(&current_hash)) {
        return Err(PolicyError::StalePolicy {
            current: current_hash,
            proposed_against: *against,
        });
    }
    check_times(current, created_at, expires_at, now)?;
    check_proposer(current, proposed_by)
}

/// Refuses a proposer who is not an admin of `current`.
fn check_proposer(current: &PolicyDocument, proposed_by: &str) -> Result<(), PolicyError> {
    match current.principal(proposed_by) {
        Some(p) if p.has_role(Role::Admin) => Ok(()),
        _ => Err(PolicyError::ProposerNotAdmin(bounded(proposed_by))),
    }
}

/// The signatures on a change, counted.
pub(crate) struct AdminCount {
    /// How many more approvals of admins other than the proposer are needed.
    pub needed: usize,
    /// The admins other than the proposer whose approvals counted.
    pub approved_by: Vec<String>,
    /// Whether the proposer's own signature is among them (it does not count as an approval,
    /// but a change nobody verifiably proposed is never allowed).
    pub proposer_signed: bool,
}

impl AdminCount {
    /// Signed by its proposer and approved by enough other admins.
    pub fn complete(&self) -> bool {
        self.needed == 0 && self.proposer_signed
    }
}

/// Verifies every approval of `digest`, notes the proposer's signature and counts the
/// approvals by other admins. Duplicated, unknown or bad approvals are refused.
pub(crate) fn count_admin_approvals(
    current: &PolicyDocument,
    proposed_by: &str,
    digest: &[u8; 32],
    approvals: &[Approval],
    required: usize,
) -> Result<AdminCount, PolicyError> {
    let mut seen = BTreeSet::new();
    let mut approved_by = Vec::new();
    let mut proposer_signed = false;
    for approval in approvals {
        if !seen.insert(approval.approver.as_str()) {
            return Err(PolicyError::DuplicateApproval(bounded(&approval.approver)));
        }
        let principal = approval.verify(digest, current)?;
        if principal.name == proposed_by {
            proposer_signed = true;
        } else if principal.has_role(Role::Admin) {
            approved_by.push(principal.name.clone());
        }
    }
    Ok(AdminCount {
        needed: required.saturating_sub(approved_by.len()),
        approved_by,
        proposer_signed,
    })
}

/// Refuses a lifetime that is empty, over, from the future or longer than the policy allows.
fn check_times(
    current: &PolicyDocument,
    created_at: u64,
    expires_at: u64,
    now: u64,
) -> Result<(), PolicyError> {
    if expires_at <= created_at {
        return Err(PolicyError::BadLifetime {
            created_at,
            expires_at,
        });
    }
    if now >= expires_at {
        return Err(PolicyError::Expired { expires_at, now });
    }
    if created_at > now.saturating_add(MAX_CLOCK_SKEW_SECS) {
        return Err(PolicyError::FromTheFuture {
            created_at,
            now,
            max_skew: MAX_CLOCK_SKEW_SECS,
        });
    }
    let lifetime = expires_at - created_at;
    if lifetime > current.max_request_lifetime_secs() {
        return Err(PolicyError::LifetimeTooLong {
            lifetime,
            max: current.max_request_lifetime_secs(),
        });
    }
    Ok(())
}
