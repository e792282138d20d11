//! The policy document: TOML, validated when parsed, pinned by the SHA-256 of its exact bytes.

mod raw;
mod rule;
mod validate;

use std::collections::{BTreeMap, BTreeSet};

use tessera_wire::KeyId;

use crate::principal::{Principal, Role};
use crate::request::PolicyHash;
use crate::PolicyError;

pub use raw::DEFAULT_MAX_REQUEST_LIFETIME_SECS;
pub use rule::{
    ApprovalRequirement, Destinations, Hours, KeySelector, Limit, Rule, Tier, Weekday, Window,
};

/// The only document format version this build reads.
pub const POLICY_FORMAT_VERSION: i64 = 1;
/// Largest policy document accepted, in bytes.
pub const MAX_POLICY_BYTES: usize = 1024 * 1024;

/// A validated policy document. It keeps its exact bytes: its [`hash`](Self::hash) is the
/// SHA-256 of those bytes, the pin in every node's configuration.
#[derive(Clone, Debug)]
pub struct PolicyDocument {
    bytes: Vec<u8>,
    hash: PolicyHash,
    revision: u64,
    description: String,
    max_request_lifetime_secs: u64,
    admin_approvals: usize,
    committee_change_approvals: usize,
    groups: BTreeMap<String, BTreeSet<KeyId>>,
    approver_groups: BTreeMap<String, BTreeSet<String>>,
    principals: Vec<Principal>,
    rules: Vec<Rule>,
}

impl PolicyDocument {
    /// Parses and validates a document (see `docs/policy.md`). Refuses documents over
    /// [`MAX_POLICY_BYTES`], non-UTF-8 bytes, unknown fields, versions other than 1, and every
    /// inconsistency the format forbids, naming the field, principal or rule at fault.
    pub fn from_toml(bytes: &[u8]) -> Result<Self, PolicyError> {
        if bytes.len() > MAX_POLICY_BYTES {
            return Err(PolicyError::DocumentTooLarge {
                len: bytes.len(),
                max: MAX_POLICY_BYTES,
            });
        }
        let text = std::str::from_utf8(bytes)
            .map_err(|e| PolicyError::Toml(format!("not UTF-8 ({e}); save the file as UTF-8")))?;
        let version: raw::VersionOnly =
            toml::from_str(text).map_err(|e| PolicyError::Toml(e.to_string()))?;
        match version.version {
            Some(POLICY_FORMAT_VERSION) => {}
            Some(other) => return Err(PolicyError::UnsupportedVersion(other)),
            None => {
                return Err(PolicyError::Invalid {
                    at: "version".into(),
                    problem: "missing: start the document with `version = 1`".into(),
                })
            }
        }
        let raw: raw::RawDocument =
            toml::from_str(text).map_err(|e| PolicyError::Toml(e.to_string()))?;
        let v = validate::validate(raw)?;
        Ok(PolicyDocument {
            bytes: bytes.to_vec(),
            hash: PolicyHash::of(bytes),
            revision: v.revision,
            description: v.description,
            max_request_lifetime_secs: v.max_request_lifetime_secs,
            admin_approvals: v.admin_approvals,
            committee_change_approvals: v.committee_change_approvals,
            groups: v.groups,
            approver_groups: v.approver_groups,
            principals: v.principals,
            rules: v.rules,
        })
    }

    /// SHA-256 of the exact bytes.
    pub fn hash(&self) -> PolicyHash {
        self.hash
    }

    /// The exact bytes it was parsed from.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The revision; every approved change increases it.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// The free-text description.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// Requests living longer than this (expires_at - created_at) are denied.
    pub fn max_request_lifetime_secs(&self) -> u64 {
        self.max_request_lifetime_secs
    }

    /// How many admins other than the proposer must approve a policy change or a key change
    /// that keeps the key's committee (a refresh, a schedule).
    pub fn admin_approvals(&self) -> usize {
        self.admin_approvals
    }

    /// How many admins other than the proposer must approve a key change that moves the key
    /// to another committee or threshold (`[admin] committee_change_approvals`; default
    /// [`admin_approvals`](Self::admin_approvals)).
    pub fn committee_change_approvals(&self) -> usize {
        self.committee_change_approvals
    }

    /// The members of approver group `name` (`[approver_groups]`).
    pub fn approver_group(&self, name: &str) -> Option<&BTreeSet<String>> {
        self.approver_groups.get(name)
    }

    /// The named key groups.
    pub fn groups(&self) -> &BTreeMap<String, BTreeSet<KeyId>> {
        &self.groups
    }

    /// Every principal, in document order.
    pub fn principals(&self) -> &[Principal] {
        &self.principals
    }

    /// The principal with this name.
    pub fn principal(&self, name: &str) -> Option<&Principal> {
        self.principals.iter().find(|p| p.name == name)
    }

    /// The principals that have `role`.
    pub fn principals_with_role(&self, role: Role) -> impl Iterator<Item = &Principal> + '_ {
        self.principals.iter().filter(move |p| p.has_role(role))
    }

    /// Every rule, in document order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The rules that cover `key`.
    pub fn rules_for(&self, key: &KeyId) -> impl Iterator<Item = &Rule> + '_ {
        let key = *key;
        self.rules
            .iter()
            .filter(move |r| r.covers(&key, &self.groups))
    }

    /// Whether any rolling window counts what `key` spends: a window of a rule covering
    /// `key`, or one shared with it (`window_keys`). Every signing of such a key is a link of
    /// its spend chain (`docs/protocols/spend-chain.md`).
    pub fn windows_count(&self, key: &KeyId) -> bool {
        self.rules.iter().any(|rule| {
            let covers = rule.covers(key, &self.groups);
            rule.limits.iter().any(|limit| {
                limit
                    .window
                    .as_ref()
                    .is_some_and(|w| covers || w.shared_with.contains(key))
            })
        })
    }
}
