//! From the document as written to the validated, typed form. Every error names the field,
//! principal, group or rule at fault.

use std::collections::{BTreeMap, BTreeSet};

use alloy_primitives::U256;
use tessera_chain::Address;
use tessera_wire::KeyId;

use super::raw::{
    RawApprovals, RawDestinations, RawDocument, RawHours, RawLimit, RawRule, RawTier,
};
use super::rule::{
    ApprovalRequirement, Destinations, Hours, KeySelector, Limit, Rule, Tier, Window,
};
use crate::encoding::parse_address;
use crate::principal::{check_name, Principal, Role};
use crate::request::{ActionKind, Asset, Destination};
use crate::PolicyError;

/// The validated content of a document.
pub(super) struct Validated {
    pub(super) revision: u64,
    pub(super) description: String,
    pub(super) max_request_lifetime_secs: u64,
    pub(super) admin_approvals: usize,
    pub(super) committee_change_approvals: usize,
    pub(super) groups: BTreeMap<String, BTreeSet<KeyId>>,
    pub(super) approver_groups: BTreeMap<String, BTreeSet<String>>,
    pub(super) principals: Vec<Principal>,
    pub(super) rules: Vec<Rule>,
}

fn invalid(at: impl Into<String>, problem: impl Into<String>) -> PolicyError {
    PolicyError::Invalid {
        at: at.into(),
        problem: problem.into(),
    }
}

pub(super) fn validate(raw: RawDocument) -> Result<Validated, PolicyError> {
    if raw.max_request_lifetime_secs == 0 {
        return Err(invalid(
            "max_request_lifetime_secs",
            "must be at least 1 (the default is 86400)",
        ));
    }
    check_principals(&raw.principals)?;
    let admins = raw
        .principals
        .iter()
        .filter(|p| p.has_role(Role::Admin))
        .count();
    let admin_approvals = usize::try_from(raw.admin.approvals).unwrap_or(usize::MAX);
    if admin_approvals == 0 {
        return Err(invalid(
            "admin.approvals",
            "must be at least 1: a policy change always needs another admin's approval",
        ));
    }
    if admin_approvals >= admins {
        return Err(invalid(
            "admin.approvals",
            format!(
                "{admin_approvals} approvals by admins other than the proposer can never be \
                 reached with {admins} admin(s): add admins or lower the count below the \
                 number of admins"
            ),
        ));
    }
    let committee_change_approvals = match raw.admin.committee_change_approvals {
        None => admin_approvals,
        Some(n) => {
            let n = usize::try_from(n).unwrap_or(usize::MAX);
            if n < admin_approvals {
                return Err(invalid(
                    "admin.committee_change_approvals",
                    format!(
                        "{n} is below admin.approvals ({admin_approvals}): moving a key to \
                         another committee needs at least the approvals of a refresh"
                    ),
                ));
            }
            if n >= admins {
                return Err(invalid(
                    "admin.committee_change_approvals",
                    format!(
                        "{n} approvals by admins other than the proposer can never be reached \
                         with {admins} admin(s): add admins or lower the count"
                    ),
                ));
            }
            n
        }
    };
    let groups = check_groups(raw.groups)?;
    let approver_groups = check_approver_groups(raw.approver_groups, &raw.principals)?;
    if raw.rules.is_empty() {
        return Err(invalid(
            "rules",
            "the policy has no [[rules]]: it would deny everything; add at least one rule",
        ));
    }
    let mut names = BTreeSet::new();
    let mut rules = Vec::with_capacity(raw.rules.len());
    for rule in raw.rules {
        if !names.insert(rule.name.clone()) {
            return Err(invalid(
                format!("rule '{}'", rule.name),
                "another rule has the same name; rule names must be unique",
            ));
        }
        rules.push(check_rule(
            rule,
            &groups,
            &approver_groups,
            &raw.principals,
        )?);
    }
    Ok(Validated {
        revision: raw.revision,
        description: raw.description,
        max_request_lifetime_secs: raw.max_request_lifetime_secs,
        admin_approvals,
        committee_change_approvals,
        groups,
        approver_groups,
        principals: raw.principals,
        rules,
    })
}

fn check_principals(principals: &[Principal]) -> Result<(), PolicyError> {
    let mut names = BTreeSet::new();
    let mut keys = BTreeMap::new();
    for p in principals {
        let at = || format!("principal '{}'", p.name);
        check_name(&p.name).map_err(|e| invalid(at(), e.to_string()))?;
        if !names.insert(p.name.as_str()) {
            return Err(invalid(at(), "the name is used by another principal"));
        }
        if p.roles.is_empty() {
            return Err(invalid(
                at(),
                "has no roles: give it at least one of admin, operator, approver, auditor",
            ));
        }
        if let Some(other) = keys.insert(p.key.to_string(), p.name.as_str()) {
            return Err(invalid(
                at(),
                format!(
                    "has the same key as principal '{other}': one key, one principal \
                     (otherwise one person could approve twice)"
                ),
            ));
        }
    }
    Ok(())
}

fn check_group_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

fn check_groups(
    raw: BTreeMap<String, Vec<String>>,
) -> Result<BTreeMap<String, BTreeSet<KeyId>>, PolicyError> {
    let mut groups = BTreeMap::new();
    for (name, members) in raw {
        let at = || format!("group '{name}'");
        if !check_group_name(&name) {
            return Err(invalid(
                at(),
                "group names are 1 to 64 characters of A-Z, a-z, 0-9, '_', '-', '.'",
            ));
        }
        let mut keys = BTreeSet::new();
        for member in &members {
            let key: KeyId = member.parse().map_err(|e| invalid(at(), format!("{e}")))?;
            if !keys.insert(key) {
                return Err(invalid(at(), format!("key {key} is listed twice")));
            }
        }
        groups.insert(name, keys);
    }
    Ok(groups)
}

fn check_approver_groups(
    raw: BTreeMap<String, Vec<String>>,
    principals: &[Principal],
) -> Result<BTreeMap<String, BTreeSet<String>>, PolicyError> {
    let mut groups = BTreeMap::new();
    for (name, members) in raw {
        let at = || format!("approver group '{name}'");
        if !check_group_name(&name) {
            return Err(invalid(
                at(),
                "group names are 1 to 64 characters of A-Z, a-z, 0-9, '_', '-', '.'",
            ));
        }
        if members.is_empty() {
            return Err(invalid(at(), "has no members: list principals' names"));
        }
        let mut names = BTreeSet::new();
        for member in members {
            if !principals.iter().any(|p| p.name == member) {
                return Err(invalid(at(), format!("'{member}' is not a principal")));
            }
            if !names.insert(member.clone()) {
                return Err(invalid(at(), format!("'{member}' is listed twice")));
            }
        }
        groups.insert(name, names);
    }
    Ok(groups)
}

fn check_rule(
    raw: RawRule,
    groups: &BTreeMap<String, BTreeSet<KeyId>>,
    approver_groups: &BTreeMap<String, BTreeSet<String>>,
    principals: &[Principal],
) -> Result<Rule, PolicyError> {
    let at = format!("rule '{}'", raw.name);
    if raw.name.trim().is_empty() || raw.name.len() > 128 {
        return Err(invalid(at, "a rule needs a name of 1 to 128 characters"));
    }
    if raw.keys.is_empty() {
        return Err(invalid(
            at,
            "`keys` is empty: list key ids, \"group:<name>\" or \"*\"",
        ));
    }
    let keys = raw
        .keys
        .iter()
        .map(|k| parse_selector(k, groups).map_err(|p| invalid(&at, p)))
        .collect::<Result<Vec<_>, _>>()?;
    if raw.kinds.is_empty() {
        return Err(invalid(
            at,
            "`kinds` is empty: the rule would allow nothing; omit it for [\"transfer\"]",
        ));
    }
    let mut kinds = BTreeSet::new();
    for kind in raw.kinds {
        if !kinds.insert(kind) {
            return Err(invalid(&at, format!("kind \"{kind}\" is listed twice")));
        }
    }
    let approvals = check_approvals(raw.approvals, principals, approver_groups, &at)?;
    let limits = raw
        .limits
        .into_iter()
        .map(|l| check_limit(l, groups, &at))
        .collect::<Result<Vec<_>, _>>()?;
    let mut assets = BTreeSet::new();
    for limit in &limits {
        if !assets.insert(limit.asset) {
            return Err(invalid(
                &at,
                format!(
                    "two [[rules.limits]] for asset {}: merge them into one",
                    limit.asset
                ),
            ));
        }
    }
    if kinds.contains(&ActionKind::Transfer) && limits.is_empty() {
        return Err(invalid(
            &at,
            "allows \"transfer\" but sets no [[rules.limits]]: every transfer would be denied; \
             add a limit per asset",
        ));
    }
    let destinations = check_destinations(raw.destinations, &at)?;
    let hours = raw.hours.map(|h| check_hours(h, &at)).transpose()?;
    let tiers = raw
        .tiers
        .into_iter()
        .map(|t| check_tier(t, &limits, principals, approver_groups, &at))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Rule {
        name: raw.name,
        keys,
        kinds,
        approvals,
        limits,
        destinations,
        hours,
        tiers,
    })
}

fn check_tier(
    raw: RawTier,
    limits: &[Limit],
    principals: &[Principal],
    approver_groups: &BTreeMap<String, BTreeSet<String>>,
    at: &str,
) -> Result<Tier, PolicyError> {
    let asset: Asset = raw
        .asset
        .parse()
        .map_err(|e: PolicyError| invalid(at, format!("tiers: {e}")))?;
    let at = format!("{at}, tier above {} {asset}", raw.above);
    let above = parse_amount(&raw.above, "above", &at)?;
    if !limits.iter().any(|l| l.asset == asset) {
        return Err(invalid(
            at,
            format!(
                "the rule has no limit for {asset}, so it denies every request in it: add a \
                 [[rules.limits]] for {asset} or drop the tier"
            ),
        ));
    }
    let approvals = check_approvals(raw.approvals, principals, approver_groups, &at)?;
    if approvals.count == 0 && approvals.groups.is_empty() {
        return Err(invalid(
            at,
            "asks for no approvals: a tier adds approvals (set approvals.count or \
             approvals.groups)",
        ));
    }
    Ok(Tier {
        asset,
        above,
        approvals,
    })
}

fn parse_selector(
    text: &str,
    groups: &BTreeMap<String, BTreeSet<KeyId>>,
) -> Result<KeySelector, String> {
    if text == "*" {
        return Ok(KeySelector::Any);
    }
    if let Some(group) = text.strip_prefix("group:") {
        if !groups.contains_key(group) {
            return Err(format!(
                "unknown group '{group}' in `keys`: define it under [groups]"
            ));
        }
        return Ok(KeySelector::Group(group.to_owned()));
    }
    text.parse().map(KeySelector::Key).map_err(|_| {
        format!("`keys` entry {text:?} is not a key id (32 hex digits), \"group:<name>\" or \"*\"")
    })
}

fn check_approvals(
    raw: RawApprovals,
    principals: &[Principal],
    approver_groups: &BTreeMap<String, BTreeSet<String>>,
    at: &str,
) -> Result<ApprovalRequirement, PolicyError> {
    let count = usize::try_from(raw.count).unwrap_or(usize::MAX);
    let roles: BTreeSet<Role> = raw.roles.into_iter().collect();
    if (count > 0 || !raw.groups.is_empty()) && roles.is_empty() {
        return Err(invalid(
            at,
            "approvals.count is above 0 but approvals.roles is empty: name the roles whose \
             approvals count, e.g. [\"approver\"]",
        ));
    }
    let mut from = BTreeSet::new();
    for name in raw.from {
        let principal = principals.iter().find(|p| p.name == name).ok_or_else(|| {
            invalid(
                at,
                format!("approvals.from names '{name}', who is not a principal"),
            )
        })?;
        if principal.roles.is_disjoint(&roles) {
            return Err(invalid(
                at,
                format!(
                    "approvals.from names '{name}', who has none of the roles {}",
                    list(&roles)
                ),
            ));
        }
        from.insert(name);
    }
    let mut groups = BTreeMap::new();
    for (group, needed) in raw.groups {
        let Some(members) = approver_groups.get(&group) else {
            return Err(invalid(
                at,
                format!(
                    "approvals.groups names '{group}', which is not an approver group: define \
                     it under [approver_groups]"
                ),
            ));
        };
        let needed = usize::try_from(needed).unwrap_or(usize::MAX);
        let eligible = principals
            .iter()
            .filter(|p| members.contains(&p.name) && !p.roles.is_disjoint(&roles))
            .count();
        if needed == 0 || needed > eligible {
            return Err(invalid(
                at,
                format!(
                    "approvals.groups asks {needed} approval(s) of group '{group}', which has \
                     {eligible} member(s) with the roles {}: ask between 1 and {eligible}",
                    list(&roles)
                ),
            ));
        }
        groups.insert(group, needed);
    }
    let requirement = ApprovalRequirement {
        count,
        roles,
        from,
        groups,
    };
    let eligible = principals
        .iter()
        .filter(|p| requirement.counts(&p.name, &p.roles))
        .count();
    if count > eligible {
        return Err(invalid(
            at,
            format!(
                "needs {count} approvals but only {eligible} principal(s) can give one: \
                 lower approvals.count or add principals"
            ),
        ));
    }
    Ok(requirement)
}

fn list(roles: &BTreeSet<Role>) -> String {
    roles
        .iter()
        .map(|r| r.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn parse_amount(text: &str, field: &str, at: &str) -> Result<U256, PolicyError> {
    let problem = || {
        invalid(
            at,
            format!(
                "{field} = {text:?} is not an amount: write base units (wei) as a decimal \
                 string of digits, e.g. \"1000000000000000000\""
            ),
        )
    };
    if text.is_empty() || text.len() > 78 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(problem());
    }
    U256::from_str_radix(text, 10).map_err(|_| problem())
}

fn check_limit(
    raw: RawLimit,
    groups: &BTreeMap<String, BTreeSet<KeyId>>,
    at: &str,
) -> Result<Limit, PolicyError> {
    let asset: Asset = raw
        .asset
        .parse()
        .map_err(|e: PolicyError| invalid(at, format!("limits: {e}")))?;
    let at = format!("{at}, limit for {asset}");
    let per_request = parse_amount(&raw.per_request, "per_request", &at)?;
    let window = match (raw.per_window, raw.window_secs) {
        (None, None) => None,
        (Some(amount), Some(secs)) => {
            let amount = parse_amount(&amount, "per_window", &at)?;
            if secs == 0 {
                return Err(invalid(at, "window_secs must be at least 1"));
            }
            if per_request > amount {
                return Err(invalid(
                    at,
                    format!(
                        "per_request ({per_request}) is above per_window ({amount}); \
                         per_request must not exceed per_window"
                    ),
                ));
            }
            let shared_with = match &raw.window_keys {
                None => BTreeSet::new(),
                Some(text) => {
                    let group = text.strip_prefix("group:").ok_or_else(|| {
                        invalid(
                            &at,
                            format!(
                                "window_keys = {text:?}: write \"group:<name>\" to share the \
                                 window among the keys of a group"
                            ),
                        )
                    })?;
                    groups.get(group).cloned().ok_or_else(|| {
                        invalid(
                            &at,
                            format!(
                                "window_keys names group '{group}', which is not defined: add \
                                 it under [groups]"
                            ),
                        )
                    })?
                }
            };
            Some(Window {
                amount,
                secs,
                shared_with,
            })
        }
        _ => {
            return Err(invalid(
                at,
                "per_window and window_secs go together: set both or neither",
            ))
        }
    };
    if window.is_none() && raw.window_keys.is_some() {
        return Err(invalid(
            at,
            "window_keys shares a rolling window: set per_window and window_secs too",
        ));
    }
    let max_fee = match raw.max_fee {
        None => None,
        Some(_) if matches!(asset, Asset::Erc20 { .. }) => {
            return Err(invalid(
                at,
                "max_fee applies to the chain's native coin (fees are paid in it): set it on \
                 the eth:<chain id>, btc:<network> or sol limit",
            ))
        }
        Some(text) => Some(parse_amount(&text, "max_fee", &at)?),
    };
    Ok(Limit {
        asset,
        per_request,
        window,
        max_fee,
    })
}

/// Addresses on every chain, addresses on one chain, and Bitcoin and Solana destinations.
type AddressSets = (
    BTreeSet<Address>,
    BTreeSet<(u64, Address)>,
    BTreeSet<Destination>,
);

fn check_destinations(raw: RawDestinations, at: &str) -> Result<Destinations, PolicyError> {
    let parse = |list: Vec<String>, field: &str| -> Result<AddressSets, PolicyError> {
        let (mut any, mut on, mut other) = (BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
        for text in list {
            let bad = |e: String| invalid(at, format!("destinations.{field}: {e}"));
            let fresh = if text.starts_with("btc:") || text.starts_with("sol:") {
                other.insert(Destination::parse(&text).map_err(|e| bad(e.to_string()))?)
            } else {
                match text.strip_prefix("eth:") {
                    Some(rest) => {
                        let (chain, address) = rest.split_once(':').ok_or_else(|| {
                            bad(format!(
                                "{text:?}: expected 0x<address> (every chain) or \
                             eth:<chain id>:0x<address> (one chain)"
                            ))
                        })?;
                        let chain: u64 = chain
                            .parse()
                            .ok()
                            .filter(|c| *c != 0 && chain.bytes().all(|b| b.is_ascii_digit()))
                            .ok_or_else(|| {
                                bad(format!("{text:?}: the chain id must be a positive number"))
                            })?;
                        let address = parse_address(address).map_err(|e| bad(e.to_string()))?;
                        on.insert((chain, address))
                    }
                    None => any.insert(parse_address(&text).map_err(|e| bad(e.to_string()))?),
                }
            };
            if !fresh {
                return Err(invalid(
                    at,
                    format!("destinations.{field} lists {text} twice"),
                ));
            }
        }
        Ok((any, on, other))
    };
    let (allow, allow_on, allow_other) = parse(raw.allow, "allow")?;
    let (deny, deny_on, deny_other) = parse(raw.deny, "deny")?;
    let both = allow
        .intersection(&deny)
        .next()
        .map(tessera_chain::checksummed)
        .or_else(|| {
            allow_on
                .intersection(&deny_on)
                .next()
                .map(|(chain, a)| format!("eth:{chain}:{}", tessera_chain::checksummed(a)))
        })
        .or_else(|| {
            allow_other
                .intersection(&deny_other)
                .next()
                .map(ToString::to_string)
        });
    if let Some(both) = both {
        return Err(invalid(
            at,
            format!("{both} is both allowed and denied; remove it from one list"),
        ));
    }
    Ok(Destinations {
        allow,
        allow_on,
        deny,
        deny_on,
        allow_other,
        deny_other,
    })
}

fn check_hours(raw: RawHours, at: &str) -> Result<Hours, PolicyError> {
    if raw.days.is_empty() {
        return Err(invalid(
            at,
            "hours.days is empty: the rule would never apply; omit it for every day",
        ));
    }
    let (from, to) = match (u8::try_from(raw.from), u8::try_from(raw.to)) {
        (Ok(from), Ok(to)) if to <= 24 && from < to => (from, to),
        _ => {
            return Err(invalid(
                at,
                format!(
                    "hours from = {}, to = {}: hours are 0 to 24 with from < to (from \
                     inclusive, to exclusive, UTC)",
                    raw.from, raw.to
                ),
            ))
        }
    };
    Ok(Hours {
        days: raw.days.into_iter().collect(),
        from,
        to,
    })
}
