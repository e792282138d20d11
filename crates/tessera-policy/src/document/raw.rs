//! The document exactly as written: serde structures, unknown fields refused. Validation into
//! the typed form is in `validate`.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::principal::{Principal, Role};
use crate::request::ActionKind;

use super::rule::Weekday;

/// Default `max_request_lifetime_secs`: one day.
pub const DEFAULT_MAX_REQUEST_LIFETIME_SECS: u64 = 86_400;

/// Only `version` is read first, so a newer format gets a version error, not a field error.
#[derive(Deserialize)]
pub(super) struct VersionOnly {
    pub(super) version: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDocument {
    #[allow(dead_code)] // checked through `VersionOnly`
    pub(super) version: i64,
    pub(super) revision: u64,
    #[serde(default)]
    pub(super) description: String,
    #[serde(default = "default_lifetime")]
    pub(super) max_request_lifetime_secs: u64,
    pub(super) admin: RawAdmin,
    #[serde(default)]
    pub(super) groups: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub(super) approver_groups: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub(super) principals: Vec<Principal>,
    #[serde(default)]
    pub(super) rules: Vec<RawRule>,
}

fn default_lifetime() -> u64 {
    DEFAULT_MAX_REQUEST_LIFETIME_SECS
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAdmin {
    pub(super) approvals: u64,
    pub(super) committee_change_approvals: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRule {
    pub(super) name: String,
    pub(super) keys: Vec<String>,
    #[serde(default = "default_kinds")]
    pub(super) kinds: Vec<ActionKind>,
    pub(super) approvals: RawApprovals,
    #[serde(default)]
    pub(super) limits: Vec<RawLimit>,
    #[serde(default)]
    pub(super) destinations: RawDestinations,
    pub(super) hours: Option<RawHours>,
    #[serde(default)]
    pub(super) tiers: Vec<RawTier>,
}

fn default_kinds() -> Vec<ActionKind> {
    vec![ActionKind::Transfer]
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawApprovals {
    pub(super) count: u64,
    #[serde(default)]
    pub(super) roles: Vec<Role>,
    #[serde(default)]
    pub(super) from: Vec<String>,
    #[serde(default)]
    pub(super) groups: BTreeMap<String, u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTier {
    pub(super) asset: String,
    pub(super) above: String,
    pub(super) approvals: RawApprovals,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimit {
    pub(super) asset: String,
    pub(super) per_request: String,
    pub(super) per_window: Option<String>,
    pub(super) window_secs: Option<u64>,
    pub(super) window_keys: Option<String>,
    pub(super) max_fee: Option<String>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDestinations {
    #[serde(default)]
    pub(super) allow: Vec<String>,
    #[serde(default)]
    pub(super) deny: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHours {
    #[serde(default = "all_days")]
    pub(super) days: Vec<Weekday>,
    pub(super) from: u64,
    pub(super) to: u64,
}

fn all_days() -> Vec<Weekday> {
    Weekday::ALL.to_vec()
}
