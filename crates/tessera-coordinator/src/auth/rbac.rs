//! Role-based access control: which policy roles may do what through the API.
//!
//! A caller's roles are its roles in the active policy; a caller with several roles may do
//! whatever any of them may do, and a caller without roles may do nothing. The matrix below
//! is the specification: `tests/auth.rs` reads this table and checks every cell against
//! [`permitted`], so the table and the code cannot drift apart.
//!
//! | Permission        | admin | operator | approver | auditor |
//! |-------------------|-------|----------|----------|---------|
//! | `ReadKeys`        | yes   | yes      | yes      | yes     |
//! | `CreateKeys`      | yes   | no       | no       | no      |
//! | `SetupCommittees` | yes   | no       | no       | no      |
//! | `SubmitRequests`  | no    | yes      | no       | no      |
//! | `CancelRequests`  | yes   | yes      | no       | no      |
//! | `ApproveRequests` | no    | no       | yes      | no      |
//! | `ReadRequests`    | yes   | yes      | yes      | yes     |
//! | `ReadPolicy`      | yes   | yes      | yes      | yes     |
//! | `ProposePolicy`   | yes   | no       | no       | no      |
//! | `ApprovePolicy`   | yes   | no       | no       | no      |
//! | `ReadAudit`       | yes   | no       | no       | yes     |
//! | `ReadMetrics`     | yes   | no       | no       | yes     |
//!
//! In words: **admin** creates keys, sets up committees, proposes and approves policy changes
//! and reads everything, and may cancel a sign request (stop it before it is signed), but
//! neither submits nor approves them (separation of duties);
//! **operator** submits and cancels (its own) sign requests and reads keys, requests and the
//! policy;
//! **approver** approves or rejects sign requests and reads keys, requests and the policy;
//! **auditor** reads keys, requests, the policy, the audit log and metrics, and writes nothing.
//!
//! These checks guard the API; finer checks stay with the handlers (for example whether an
//! operator may cancel another operator's request, or the policy's own rules on which roles'
//! approvals count). Key safety never depends on them: nodes re-check policy and approvals.

use std::collections::BTreeSet;
use std::fmt;

use tessera_policy::Role;

use super::{AuthError, Caller};

/// Something an API endpoint needs the caller to be allowed to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Permission {
    /// List and show keys and their public keys.
    ReadKeys,
    /// Create (generate) keys.
    CreateKeys,
    /// Set up party committees (auxiliary information, resharing).
    SetupCommittees,
    /// Submit sign requests.
    SubmitRequests,
    /// Cancel sign requests.
    CancelRequests,
    /// Approve or reject sign requests.
    ApproveRequests,
    /// List and show sign requests and their approvals.
    ReadRequests,
    /// Read the active policy and policy proposals.
    ReadPolicy,
    /// Propose a policy change.
    ProposePolicy,
    /// Approve or reject a policy change.
    ApprovePolicy,
    /// Read the audit log.
    ReadAudit,
    /// Read metrics.
    ReadMetrics,
}

impl Permission {
    /// Every permission, in declaration order.
    pub const ALL: [Permission; 12] = [
        Permission::ReadKeys,
        Permission::CreateKeys,
        Permission::SetupCommittees,
        Permission::SubmitRequests,
        Permission::CancelRequests,
        Permission::ApproveRequests,
        Permission::ReadRequests,
        Permission::ReadPolicy,
        Permission::ProposePolicy,
        Permission::ApprovePolicy,
        Permission::ReadAudit,
        Permission::ReadMetrics,
    ];

    /// What the permission allows, as a verb phrase ("create keys").
    pub fn describe(self) -> &'static str {
        match self {
            Permission::ReadKeys => "read keys",
            Permission::CreateKeys => "create keys",
            Permission::SetupCommittees => "set up committees",
            Permission::SubmitRequests => "submit sign requests",
            Permission::CancelRequests => "cancel sign requests",
            Permission::ApproveRequests => "approve or reject sign requests",
            Permission::ReadRequests => "read sign requests",
            Permission::ReadPolicy => "read the policy",
            Permission::ProposePolicy => "propose policy changes",
            Permission::ApprovePolicy => "approve policy changes",
            Permission::ReadAudit => "read the audit log",
            Permission::ReadMetrics => "read metrics",
        }
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

/// Whether one role grants `permission` (the matrix in the module documentation).
pub(crate) fn grants(role: Role, permission: Permission) -> bool {
    use Permission as P;
    match role {
        Role::Admin => matches!(
            permission,
            P::ReadKeys
                | P::CreateKeys
                | P::SetupCommittees
                | P::CancelRequests
                | P::ReadRequests
                | P::ReadPolicy
                | P::ProposePolicy
                | P::ApprovePolicy
                | P::ReadAudit
                | P::ReadMetrics
        ),
        Role::Operator => matches!(
            permission,
            P::ReadKeys | P::SubmitRequests | P::CancelRequests | P::ReadRequests | P::ReadPolicy
        ),
        Role::Approver => matches!(
            permission,
            P::ReadKeys | P::ApproveRequests | P::ReadRequests | P::ReadPolicy
        ),
        Role::Auditor => matches!(
            permission,
            P::ReadKeys | P::ReadRequests | P::ReadPolicy | P::ReadAudit | P::ReadMetrics
        ),
    }
}

/// What in `policy` the API can never serve: each rule that asks for more request approvals
/// than there are principals whose approvals count for it **and** who may approve through the
/// API (a role granting [`Permission::ApproveRequests`]). Such a rule holds every request it
/// covers pending forever. Empty when every rule can be met.
pub fn unservable_rules(policy: &tessera_policy::PolicyDocument) -> Vec<String> {
    let approvers: Vec<&tessera_policy::Principal> = policy
        .principals()
        .iter()
        .filter(|p| permitted(&p.roles, Permission::ApproveRequests))
        .collect();
    let api_roles: Vec<&str> = Role::ALL
        .into_iter()
        .filter(|role| grants(*role, Permission::ApproveRequests))
        .map(|role| role.as_str())
        .collect();
    let explain = |what: String, needed: usize, can: Vec<&str>| {
        format!(
            "{what} needs {needed} approval(s), but only {} principal(s) whose approval counts \
             for it may approve requests through the API ({}): only the {} role may; give its \
             approvers that role, or change the rule's roles",
            can.len(),
            if can.is_empty() {
                "none".to_owned()
            } else {
                can.join(", ")
            },
            api_roles.join(" or ")
        )
    };
    let mut problems = Vec::new();
    for rule in policy.rules() {
        let requirements = std::iter::once((format!("rule '{}'", rule.name), &rule.approvals))
            .chain(rule.tiers.iter().map(|tier| {
                (
                    format!("rule '{}' above {} {}", rule.name, tier.above, tier.asset),
                    &tier.approvals,
                )
            }));
        for (what, need) in requirements {
            let can: Vec<&str> = approvers
                .iter()
                .filter(|p| need.counts(&p.name, &p.roles))
                .map(|p| p.name.as_str())
                .collect();
            if can.len() < need.count {
                problems.push(explain(what.clone(), need.count, can));
            }
            for (group, needed) in &need.groups {
                let members = policy.approver_group(group);
                let can: Vec<&str> = approvers
                    .iter()
                    .filter(|p| {
                        members.is_some_and(|m| need.counts_for_group(m, &p.name, &p.roles))
                    })
                    .map(|p| p.name.as_str())
                    .collect();
                if can.len() < *needed {
                    problems.push(explain(format!("{what}, group '{group}',"), *needed, can));
                }
            }
        }
    }
    problems
}

/// Whether a principal with `roles` may do `permission`: true if any of the roles grants it.
pub fn permitted(roles: &BTreeSet<Role>, permission: Permission) -> bool {
    roles.iter().any(|role| grants(*role, permission))
}

/// `Ok` if `caller` may do `permission`, otherwise [`AuthError::Forbidden`] (status 403).
pub fn require(caller: &Caller, permission: Permission) -> Result<(), AuthError> {
    if permitted(&caller.roles, permission) {
        Ok(())
    } else {
        Err(AuthError::Forbidden {
            name: caller.name.clone(),
            permission,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_lists_every_permission_once_in_order() {
        for (i, permission) in Permission::ALL.into_iter().enumerate() {
            assert_eq!(permission as usize, i, "{permission:?}");
        }
        // The last variant: a new one appended must be added to ALL (and to the table).
        assert_eq!(Permission::ReadMetrics as usize + 1, Permission::ALL.len());
    }
}
