//! Rule evaluation: deterministic, sans-IO; time and spend history are inputs.

mod reason;

use std::collections::BTreeSet;

use alloy_primitives::U256;
use subtle::ConstantTimeEq;
use tessera_wire::KeyId;

use crate::approval::{bounded, Approval};
use crate::document::{PolicyDocument, Rule};
use crate::principal::{Principal, Role};
use crate::request::{Asset, Derived, SignRequest};
use crate::PolicyError;

pub use reason::{Decision, Reason, Verdict};

/// How far in the future `created_at` may be (clock skew between machines), in seconds.
pub const MAX_CLOCK_SKEW_SECS: u64 = 60;

/// What was already signed. The coordinator backs it with its database, a node with its own
/// durable record of what it signed.
pub trait SpendHistory {
    /// The sum of amounts of `asset` signed with `key` (any derivation path) at or after the
    /// Unix time `since`.
    fn spent_since(&self, key: KeyId, asset: &Asset, since: u64) -> U256;
}

impl<F: Fn(KeyId, &Asset, u64) -> U256> SpendHistory for F {
    fn spent_since(&self, key: KeyId, asset: &Asset, since: u64) -> U256 {
        self(key, asset, since)
    }
}

/// Evaluates `request` under `policy` at time `now` (Unix seconds).
///
/// The payload is decoded and its digest re-derived here ([`SignRequest::check`]); the
/// request's own `digest` is never trusted. Every reason found is reported; Deny dominates
/// Pending, and Allow means no reason at all.
pub fn evaluate(
    policy: &PolicyDocument,
    request: &SignRequest,
    approvals: &[Approval],
    history: &dyn SpendHistory,
    now: u64,
) -> Decision {
    let derived = match request.check() {
        Ok(derived) => derived,
        Err(PolicyError::DigestMismatch { claimed, derived }) => {
            return deny(Reason::DigestMismatch { claimed, derived })
        }
        Err(e) => return deny(Reason::InvalidRequest(e.to_string())),
    };
    let current = policy.hash();
    if !bool::from(request.policy.ct_eq(&current)) {
        // The rules of another policy say nothing about this request.
        return deny(Reason::WrongPolicy {
            request: request.policy,
            current,
        });
    }

    let mut reasons = Vec::new();
    check_times(policy, request, now, &mut reasons);
    let submitter_is_operator = match policy.principal(&request.submitted_by) {
        None => {
            reasons.push(Reason::UnknownSubmitter(request.submitted_by.clone()));
            false
        }
        Some(p) if !p.has_role(Role::Operator) => {
            reasons.push(Reason::SubmitterNotOperator(p.name.clone()));
            false
        }
        Some(_) => true,
    };

    let rules: Vec<&Rule> = policy.rules_for(&request.key).collect();
    if rules.is_empty() {
        reasons.push(Reason::NoRule { key: request.key });
    }
    for rule in &rules {
        check_action(rule, &derived, request.key, history, now, &mut reasons);
    }

    let signed = check_approvals(policy, request, approvals, &mut reasons);
    // (A submitter who may not submit is refused for that already.)
    if submitter_is_operator && !signed.by_submitter {
        reasons.push(Reason::NotSignedBySubmitter(bounded(&request.submitted_by)));
    }
    let approvers = signed.approvers;
    for rule in &rules {
        check_requirement(
            policy,
            &rule.name,
            &rule.approvals,
            &approvers,
            &mut reasons,
        );
        // Every tier whose amount the request passes adds its own requirement.
        let spends = derived.spends();
        for tier in &rule.tiers {
            let amount = spends
                .iter()
                .find(|(asset, _)| *asset == tier.asset)
                .map(|(_, amount)| *amount);
            if amount.is_some_and(|amount| amount > tier.above) {
                let name = format!("{} (above {} {})", rule.name, tier.above, tier.asset);
                check_requirement(policy, &name, &tier.approvals, &approvers, &mut reasons);
            }
        }
    }
    let approved_by = approvers.iter().map(|p| p.name.clone()).collect();
    Decision::from_reasons(reasons, approved_by)
}

/// Whether `approvers` meet `requirement` (its count, and each approver group's count); a
/// pending reason for each part they do not.
fn check_requirement(
    policy: &PolicyDocument,
    rule: &str,
    requirement: &crate::document::ApprovalRequirement,
    approvers: &[&Principal],
    reasons: &mut Vec<Reason>,
) {
    let have = approvers
        .iter()
        .filter(|p| requirement.counts(&p.name, &p.roles))
        .count();
    if have < requirement.count {
        reasons.push(Reason::NeedsApprovals {
            rule: rule.to_owned(),
            needed: requirement.count,
            have,
            roles: requirement.roles.clone(),
            from: requirement.from.clone(),
        });
    }
    for (group, needed) in &requirement.groups {
        // Validation guarantees the group exists; a missing one counts nobody.
        let have = policy.approver_group(group).map_or(0, |members| {
            approvers
                .iter()
                .filter(|p| requirement.counts_for_group(members, &p.name, &p.roles))
                .count()
        });
        if have < *needed {
            reasons.push(Reason::NeedsGroupApprovals {
                rule: rule.to_owned(),
                group: group.clone(),
                needed: *needed,
                have,
            });
        }
    }
}

fn deny(reason: Reason) -> Decision {
    Decision::from_reasons(vec![reason], Vec::new())
}

fn check_times(
    policy: &PolicyDocument,
    request: &SignRequest,
    now: u64,
    reasons: &mut Vec<Reason>,
) {
    if now >= request.expires_at {
        reasons.push(Reason::Expired {
            expires_at: request.expires_at,
            now,
        });
    }
    if request.created_at > now.saturating_add(MAX_CLOCK_SKEW_SECS) {
        reasons.push(Reason::FromTheFuture {
            created_at: request.created_at,
            now,
        });
    }
    // `check` guarantees expires_at > created_at.
    let lifetime = request.expires_at.saturating_sub(request.created_at);
    if lifetime > policy.max_request_lifetime_secs() {
        reasons.push(Reason::LifetimeTooLong {
            lifetime,
            max: policy.max_request_lifetime_secs(),
        });
    }
}

fn check_action(
    rule: &Rule,
    derived: &Derived,
    key: KeyId,
    history: &dyn SpendHistory,
    now: u64,
    reasons: &mut Vec<Reason>,
) {
    let action = &derived.action;
    let kind = action.kind();
    if !rule.kinds.contains(&kind) {
        reasons.push(Reason::KindNotAllowed {
            rule: rule.name.clone(),
            kind,
        });
    }
    // The value moved and the maximum fee, per asset: a fee counts like any other spend.
    for (asset, amount) in derived.spends() {
        check_limit(rule, asset, amount, key, history, now, reasons);
    }
    if let Some((asset, fee)) = derived.max_fee {
        let cap = rule.limit(&asset).and_then(|limit| limit.max_fee);
        if let Some(cap) = cap.filter(|cap| fee > *cap) {
            reasons.push(Reason::OverFeeCap {
                rule: rule.name.clone(),
                asset,
                fee,
                cap,
            });
        }
    }
    for to in action.destinations() {
        match rule.destinations.check(&to, action.chain_id()) {
            Ok(()) => {}
            Err(true) => reasons.push(Reason::DestinationDenied {
                rule: rule.name.clone(),
                to,
            }),
            Err(false) => reasons.push(Reason::DestinationNotAllowed {
                rule: rule.name.clone(),
                to,
            }),
        }
    }
    if let Some(hours) = &rule.hours {
        if !hours.contains(now) {
            reasons.push(Reason::OutsideHours {
                rule: rule.name.clone(),
                hours: hours.clone(),
                now,
            });
        }
    }
}

fn check_limit(
    rule: &Rule,
    asset: Asset,
    amount: U256,
    key: KeyId,
    history: &dyn SpendHistory,
    now: u64,
    reasons: &mut Vec<Reason>,
) {
    let Some(limit) = rule.limit(&asset) else {
        reasons.push(Reason::NoLimit {
            rule: rule.name.clone(),
            asset,
        });
        return;
    };
    if amount > limit.per_request {
        reasons.push(Reason::OverPerRequest {
            rule: rule.name.clone(),
            asset,
            amount,
            limit: limit.per_request,
        });
    }
    if let Some(window) = &limit.window {
        // The request's key, and every key the window is shared with.
        let since = now.saturating_sub(window.secs);
        let spent = window
            .counted_keys(key)
            .into_iter()
            .fold(U256::ZERO, |sum, counted| {
                sum.saturating_add(history.spent_since(counted, &asset, since))
            });
        let within = spent
            .checked_add(amount)
            .is_some_and(|total| total <= window.amount);
        if !within {
            reasons.push(Reason::OverWindow {
                rule: rule.name.clone(),
                asset,
                spent,
                amount,
                limit: window.amount,
                window_secs: window.secs,
            });
        }
    }
}

/// The signatures on a request, verified.
struct Signatures<'p> {
    /// The distinct valid approvers other than the submitter, in the order given.
    approvers: Vec<&'p Principal>,
    /// Whether the submitter's own signature is among them: it is no approval, but proves
    /// that the submitter named in the request asked for it (not whoever relayed it).
    by_submitter: bool,
}

/// Verifies every signature on the request: the submitter's and the approvals.
fn check_approvals<'p>(
    policy: &'p PolicyDocument,
    request: &SignRequest,
    approvals: &[Approval],
    reasons: &mut Vec<Reason>,
) -> Signatures<'p> {
    let mut signed = Signatures {
        approvers: Vec::new(),
        by_submitter: false,
    };
    if approvals.len() > policy.principals().len() {
        reasons.push(Reason::TooManyApprovals {
            got: approvals.len(),
            principals: policy.principals().len(),
        });
        return signed;
    }
    let digest = request.request_digest();
    let mut seen = BTreeSet::new();
    let valid = &mut signed.approvers;
    for approval in approvals {
        if !seen.insert(approval.approver.as_str()) {
            reasons.push(Reason::DuplicateApproval(bounded(&approval.approver)));
            continue;
        }
        match approval.verify(&digest, policy) {
            Ok(principal) if principal.name == request.submitted_by => {
                signed.by_submitter = true;
            }
            Ok(principal) => valid.push(principal),
            Err(PolicyError::UnknownApprover(name)) => reasons.push(Reason::UnknownApprover(name)),
            Err(PolicyError::BadApproval { approver, reason }) => {
                reasons.push(Reason::BadApproval {
                    approver,
                    detail: reason,
                })
            }
            Err(other) => reasons.push(Reason::BadApproval {
                approver: bounded(&approval.approver),
                detail: other.to_string(),
            }),
        }
    }
    signed
}
