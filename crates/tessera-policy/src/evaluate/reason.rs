//! Why a request is not (yet) allowed, in words an operator understands.

use std::collections::BTreeSet;
use std::fmt;

use alloy_primitives::U256;
use serde::ser::SerializeStruct;
use serde::{Serialize, Serializer};
use tessera_wire::KeyId;

use crate::document::Hours;
use crate::principal::Role;
use crate::request::{ActionKind, Asset, Destination, PolicyHash};

/// The outcome of an evaluation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Every rule is met: the request may be signed.
    Allow,
    /// Nothing is wrong, but approvals are missing.
    Pending,
    /// The request must not be signed.
    Deny,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Allow => "allow",
            Verdict::Pending => "pending",
            Verdict::Deny => "deny",
        })
    }
}

/// One reason a request is denied or pending.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reason {
    /// The request is malformed (path, sizes, lifetime, submitter name, undecodable payload).
    InvalidRequest(String),
    /// The request's digest is not the one derived from its payload.
    DigestMismatch {
        /// The digest the request carries.
        claimed: [u8; 32],
        /// The digest derived from the payload.
        derived: [u8; 32],
    },
    /// The request was made under another policy than the one evaluating it.
    WrongPolicy {
        /// The request's policy hash.
        request: PolicyHash,
        /// The evaluating policy's hash.
        current: PolicyHash,
    },
    /// `now >= expires_at`.
    Expired {
        /// Expiry.
        expires_at: u64,
        /// Evaluation time.
        now: u64,
    },
    /// `created_at` is more than [`MAX_CLOCK_SKEW_SECS`](crate::MAX_CLOCK_SKEW_SECS) ahead.
    FromTheFuture {
        /// Creation time.
        created_at: u64,
        /// Evaluation time.
        now: u64,
    },
    /// `expires_at - created_at` exceeds the policy's `max_request_lifetime_secs`.
    LifetimeTooLong {
        /// The request's lifetime.
        lifetime: u64,
        /// The policy's maximum.
        max: u64,
    },
    /// The submitter is not a principal of the policy.
    UnknownSubmitter(String),
    /// The submitter does not have the operator role.
    SubmitterNotOperator(String),
    /// No rule covers the key.
    NoRule {
        /// The key.
        key: KeyId,
    },
    /// A covering rule does not allow this kind of action.
    KindNotAllowed {
        /// The rule.
        rule: String,
        /// The action's kind.
        kind: ActionKind,
    },
    /// A covering rule has no limit for the asset spent.
    NoLimit {
        /// The rule.
        rule: String,
        /// The asset.
        asset: Asset,
    },
    /// Above a rule's per-request limit.
    OverPerRequest {
        /// The rule.
        rule: String,
        /// The asset.
        asset: Asset,
        /// The requested amount.
        amount: U256,
        /// The limit.
        limit: U256,
    },
    /// The transaction's maximum fee is above the rule's fee cap.
    OverFeeCap {
        /// The rule.
        rule: String,
        /// The native asset the fee is paid in.
        asset: Asset,
        /// The maximum fee (gas limit times the most paid per gas).
        fee: U256,
        /// The cap.
        cap: U256,
    },
    /// Would exceed a rule's rolling-window limit.
    OverWindow {
        /// The rule.
        rule: String,
        /// The asset.
        asset: Asset,
        /// Already spent in the window.
        spent: U256,
        /// The requested amount.
        amount: U256,
        /// The window limit.
        limit: U256,
        /// The window's length.
        window_secs: u64,
    },
    /// The destination is on a rule's deny list.
    DestinationDenied {
        /// The rule.
        rule: String,
        /// The destination.
        to: Destination,
    },
    /// A rule has an allow list and the destination is not on it.
    DestinationNotAllowed {
        /// The rule.
        rule: String,
        /// The destination.
        to: Destination,
    },
    /// Outside a rule's hours.
    OutsideHours {
        /// The rule.
        rule: String,
        /// The rule's hours.
        hours: Hours,
        /// Evaluation time.
        now: u64,
    },
    /// More approvals than the policy has principals: some must be duplicates or forged.
    TooManyApprovals {
        /// Approvals received.
        got: usize,
        /// Principals in the policy.
        principals: usize,
    },
    /// An approval by someone who is not a principal.
    UnknownApprover(String),
    /// An approval whose signature does not verify.
    BadApproval {
        /// The approver.
        approver: String,
        /// Why.
        detail: String,
    },
    /// Two approvals by the same principal.
    DuplicateApproval(String),
    /// The submitter named in the request has not signed it (its request digest, as an
    /// approval by the submitter, which counts as no approval): until they do, nothing shows
    /// that they asked for it.
    NotSignedBySubmitter(String),
    /// A rule's approvals are not all there yet.
    NeedsApprovals {
        /// The rule.
        rule: String,
        /// How many it needs.
        needed: usize,
        /// How many valid, counting approvals there are.
        have: usize,
        /// Roles that count.
        roles: BTreeSet<Role>,
        /// If not empty, only these principals count.
        from: BTreeSet<String>,
    },
    /// Not enough approvals from one of the approver groups the rule (or a tier) names:
    /// pending.
    NeedsGroupApprovals {
        /// The rule (and tier).
        rule: String,
        /// The approver group.
        group: String,
        /// How many of its members must approve.
        needed: usize,
        /// How many did.
        have: usize,
    },
}

impl Reason {
    /// Whether this reason only makes the request wait (missing approvals or the submitter's
    /// signature) rather than deny it.
    pub fn is_pending(&self) -> bool {
        matches!(
            self,
            Reason::NeedsApprovals { .. }
                | Reason::NeedsGroupApprovals { .. }
                | Reason::NotSignedBySubmitter(_)
        )
    }

    /// A stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Reason::InvalidRequest(_) => "invalid_request",
            Reason::DigestMismatch { .. } => "digest_mismatch",
            Reason::WrongPolicy { .. } => "wrong_policy",
            Reason::Expired { .. } => "expired",
            Reason::FromTheFuture { .. } => "from_the_future",
            Reason::LifetimeTooLong { .. } => "lifetime_too_long",
            Reason::UnknownSubmitter(_) => "unknown_submitter",
            Reason::SubmitterNotOperator(_) => "submitter_not_operator",
            Reason::NoRule { .. } => "no_rule",
            Reason::KindNotAllowed { .. } => "kind_not_allowed",
            Reason::NoLimit { .. } => "no_limit",
            Reason::OverPerRequest { .. } => "over_per_request",
            Reason::OverFeeCap { .. } => "over_fee_cap",
            Reason::OverWindow { .. } => "over_window",
            Reason::DestinationDenied { .. } => "destination_denied",
            Reason::DestinationNotAllowed { .. } => "destination_not_allowed",
            Reason::OutsideHours { .. } => "outside_hours",
            Reason::TooManyApprovals { .. } => "too_many_approvals",
            Reason::UnknownApprover(_) => "unknown_approver",
            Reason::BadApproval { .. } => "bad_approval",
            Reason::DuplicateApproval(_) => "duplicate_approval",
            Reason::NotSignedBySubmitter(_) => "not_signed_by_submitter",
            Reason::NeedsApprovals { .. } => "needs_approvals",
            Reason::NeedsGroupApprovals { .. } => "needs_group_approvals",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::InvalidRequest(e) => write!(f, "the request is invalid: {e}"),
            Reason::DigestMismatch { claimed, derived } => write!(
                f,
                "the request carries digest {} but its payload gives {}: it was altered",
                hex::encode(claimed),
                hex::encode(derived)
            ),
            Reason::WrongPolicy { request, current } => write!(
                f,
                "the request was made under policy {request}, but the policy in force is \
                 {current}: submit it again"
            ),
            Reason::Expired { expires_at, now } => {
                write!(f, "the request expired at {expires_at} (now {now})")
            }
            Reason::FromTheFuture { created_at, now } => write!(
                f,
                "the request was created at {created_at}, more than {} s after now ({now}): \
                 check the clocks",
                crate::MAX_CLOCK_SKEW_SECS
            ),
            Reason::LifetimeTooLong { lifetime, max } => write!(
                f,
                "the request lives {lifetime} s, longer than the policy's \
                 max_request_lifetime_secs of {max} s"
            ),
            Reason::UnknownSubmitter(name) => {
                write!(f, "the submitter '{name}' is not a principal of the policy")
            }
            Reason::SubmitterNotOperator(name) => {
                write!(f, "the submitter '{name}' does not have the operator role")
            }
            Reason::NoRule { key } => write!(f, "no rule covers key {key}; default deny"),
            Reason::KindNotAllowed { rule, kind } => write!(
                f,
                "rule '{rule}' does not allow {kind} (add \"{kind}\" to its kinds)"
            ),
            Reason::NoLimit { rule, asset } => write!(
                f,
                "rule '{rule}' sets no limit for {asset}, so it allows none: add a \
                 [[rules.limits]] for it"
            ),
            Reason::OverPerRequest {
                rule,
                asset,
                amount,
                limit,
            } => write!(
                f,
                "amount {amount} of {asset} (base units; for the native coin, the value plus the \
                 maximum fee) exceeds the per-request limit {limit} of rule '{rule}'"
            ),
            Reason::OverFeeCap {
                rule,
                asset,
                fee,
                cap,
            } => write!(
                f,
                "the maximum fee {fee} of {asset} (gas limit times the most paid per gas) exceeds \
                 the fee cap {cap} of rule '{rule}': lower the gas limit or the fee per gas"
            ),
            Reason::OverWindow {
                rule,
                asset,
                spent,
                amount,
                limit,
                window_secs,
            } => write!(
                f,
                "amount {amount} of {asset} (base units) on top of {spent} already spent in \
                 the last {window_secs} s exceeds the limit {limit} per {window_secs} s of \
                 rule '{rule}'"
            ),
            Reason::DestinationDenied { rule, to } => {
                write!(f, "destination {to} is on the deny list of rule '{rule}'")
            }
            Reason::DestinationNotAllowed { rule, to } => {
                write!(
                    f,
                    "destination {to} is not on the allow list of rule '{rule}'"
                )
            }
            Reason::OutsideHours { rule, hours, now } => write!(
                f,
                "rule '{rule}' allows requests only {hours}; it is now {} {:02}:{:02} UTC",
                crate::document::Weekday::of_unix(*now),
                (now % 86_400) / 3_600,
                (now % 3_600) / 60
            ),
            Reason::TooManyApprovals { got, principals } => write!(
                f,
                "{got} approvals for a policy of {principals} principals: some are duplicates \
                 or forged"
            ),
            Reason::UnknownApprover(name) => {
                write!(
                    f,
                    "approval by '{name}', who is not a principal of the policy"
                )
            }
            Reason::BadApproval { approver, detail } => {
                write!(f, "the approval by '{approver}' is invalid: {detail}")
            }
            Reason::DuplicateApproval(name) => write!(f, "'{name}' approved more than once"),
            Reason::NotSignedBySubmitter(name) => write!(
                f,
                "the submitter '{name}' has not signed the request (their signature counts as \
                 no approval, but shows they asked for it)"
            ),
            Reason::NeedsApprovals {
                rule,
                needed,
                have,
                roles,
                from,
            } => {
                let roles: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
                write!(
                    f,
                    "needs {needed} approval{} by {}",
                    if *needed == 1 { "" } else { "s" },
                    roles.join(" or ")
                )?;
                if !from.is_empty() {
                    let names: Vec<&str> = from.iter().map(String::as_str).collect();
                    write!(f, " (only {})", names.join(", "))?;
                }
                write!(f, " from rule '{rule}', has {have}")
            }
            Reason::NeedsGroupApprovals {
                rule,
                group,
                needed,
                have,
            } => write!(
                f,
                "needs {needed} approval{} from group '{group}' for rule '{rule}', has {have}",
                if *needed == 1 { "" } else { "s" }
            ),
        }
    }
}

/// Serialized as `{"code": "...", "message": "..."}`.
impl Serialize for Reason {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("Reason", 2)?;
        st.serialize_field("code", self.code())?;
        st.serialize_field("message", &self.to_string())?;
        st.end()
    }
}

/// The verdict, every reason for it, and who validly approved.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// Allow, Pending or Deny.
    pub verdict: Verdict,
    /// Every reason found (empty exactly when the verdict is Allow).
    pub reasons: Vec<Reason>,
    /// Principals whose approvals verified (the submitter excluded), in the order given.
    pub approved_by: Vec<String>,
}

impl Decision {
    /// The decision the reasons lead to: Deny if any reason denies, else Pending if any
    /// reason waits, else Allow.
    pub fn from_reasons(reasons: Vec<Reason>, approved_by: Vec<String>) -> Decision {
        let verdict = if reasons.iter().any(|r| !r.is_pending()) {
            Verdict::Deny
        } else if reasons.is_empty() {
            Verdict::Allow
        } else {
            Verdict::Pending
        };
        Decision {
            verdict,
            reasons,
            approved_by,
        }
    }

    /// Whether the verdict is Allow.
    pub fn is_allowed(&self) -> bool {
        self.verdict == Verdict::Allow
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.verdict)?;
        for (i, reason) in self.reasons.iter().enumerate() {
            f.write_str(if i == 0 { ": " } else { "; " })?;
            write!(f, "{reason}")?;
        }
        Ok(())
    }
}
