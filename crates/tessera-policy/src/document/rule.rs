//! The typed, validated rules of a policy document.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use alloy_primitives::U256;
use serde::{Deserialize, Serialize};
use tessera_chain::Address;
use tessera_wire::KeyId;

use crate::principal::Role;
use crate::request::{ActionKind, Asset, Destination};

/// Which keys a rule covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeySelector {
    /// `"*"`: every key.
    Any,
    /// One key by id.
    Key(KeyId),
    /// `"group:<name>"`: every key in a named group.
    Group(String),
}

impl KeySelector {
    /// Whether the selector names `key`, given the document's groups.
    pub fn matches(&self, key: &KeyId, groups: &BTreeMap<String, BTreeSet<KeyId>>) -> bool {
        match self {
            KeySelector::Any => true,
            KeySelector::Key(k) => k == key,
            KeySelector::Group(name) => groups.get(name).is_some_and(|keys| keys.contains(key)),
        }
    }
}

impl fmt::Display for KeySelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySelector::Any => f.write_str("*"),
            KeySelector::Key(k) => write!(f, "{k}"),
            KeySelector::Group(g) => write!(f, "group:{g}"),
        }
    }
}

/// The approvals a rule (or one of its tiers) requires.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApprovalRequirement {
    /// How many distinct principals must approve (0 = none).
    pub count: usize,
    /// An approver counts only with one of these roles.
    pub roles: BTreeSet<Role>,
    /// If not empty, only these principals count.
    pub from: BTreeSet<String>,
    /// Besides `count`: at least this many approvals from each named approver group (its
    /// members with one of `roles`). One approval may count toward `count` and a group.
    pub groups: BTreeMap<String, usize>,
}

impl ApprovalRequirement {
    /// Whether an approval by a principal with this name and these roles counts.
    pub fn counts(&self, name: &str, roles: &BTreeSet<Role>) -> bool {
        (self.from.is_empty() || self.from.contains(name)) && !self.roles.is_disjoint(roles)
    }

    /// Whether an approval by this principal counts toward the group whose members are
    /// `members`.
    pub fn counts_for_group(
        &self,
        members: &BTreeSet<String>,
        name: &str,
        roles: &BTreeSet<Role>,
    ) -> bool {
        members.contains(name) && !self.roles.is_disjoint(roles)
    }
}

/// More approvals for larger requests: when a request spends more than `above` of `asset`
/// (its maximum fee included for the native coin), `approvals` must hold too.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tier {
    /// The asset whose amount selects the tier.
    pub asset: Asset,
    /// The tier applies to requests spending strictly more than this, base units.
    pub above: U256,
    /// What it requires, besides the rule's own approvals.
    pub approvals: ApprovalRequirement,
}

/// A rolling-window limit: at most `amount` within any `secs` seconds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Window {
    /// Most that may be spent in the window, base units.
    pub amount: U256,
    /// The window's length in seconds (> 0).
    pub secs: u64,
    /// Other keys whose spend counts in the same window (`window_keys = "group:<name>"`):
    /// the group's members. Empty: the window is the request's key's own.
    pub shared_with: BTreeSet<KeyId>,
}

impl Window {
    /// The keys whose spend a request of `key` counts in this window: `key` and the keys the
    /// window is shared with, in order.
    pub fn counted_keys(&self, key: KeyId) -> BTreeSet<KeyId> {
        let mut keys = self.shared_with.clone();
        keys.insert(key);
        keys
    }
}

/// How much of one asset a rule lets through.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limit {
    /// The asset.
    pub asset: Asset,
    /// Most per request, base units.
    pub per_request: U256,
    /// Optional rolling-window limit.
    pub window: Option<Window>,
    /// Optional cap on a transaction's maximum fee, in wei (native assets only). The fee also
    /// counts toward `per_request` and the window either way.
    pub max_fee: Option<U256>,
}

/// Where value may go. Entries written `0x…` hold on every EVM chain; entries written
/// `eth:<chain id>:0x…` only on that chain; `btc:<network>:<address>` and
/// `sol:<address>` name Bitcoin and Solana destinations. An allow list holds for every chain:
/// a rule that allows only some Ethereum addresses allows no Bitcoin output.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Destinations {
    /// If this or `allow_on` is not empty, only these addresses (on any chain)...
    pub allow: BTreeSet<Address>,
    /// ...and these addresses on these chains.
    pub allow_on: BTreeSet<(u64, Address)>,
    /// Never these addresses, on any chain.
    pub deny: BTreeSet<Address>,
    /// Never these addresses on these chains.
    pub deny_on: BTreeSet<(u64, Address)>,
    /// Bitcoin and Solana destinations allowed.
    pub allow_other: BTreeSet<Destination>,
    /// Bitcoin and Solana destinations denied.
    pub deny_other: BTreeSet<Destination>,
}

impl Destinations {
    /// `Err(true)` if `to` is denied (on `chain_id`, for an Ethereum address), `Err(false)`
    /// if an allow list exists without it.
    pub(crate) fn check(&self, to: &Destination, chain_id: Option<u64>) -> Result<(), bool> {
        let any_allow_list =
            !self.allow.is_empty() || !self.allow_on.is_empty() || !self.allow_other.is_empty();
        let (denied, allowed) = match to {
            Destination::Ethereum(to) => {
                let on_chain = |set: &BTreeSet<(u64, Address)>| {
                    chain_id.is_some_and(|chain| set.contains(&(chain, *to)))
                };
                (
                    self.deny.contains(to) || on_chain(&self.deny_on),
                    self.allow.contains(to) || on_chain(&self.allow_on),
                )
            }
            other => (
                self.deny_other.contains(other),
                self.allow_other.contains(other),
            ),
        };
        if denied {
            Err(true)
        } else if any_allow_list && !allowed {
            Err(false)
        } else {
            Ok(())
        }
    }
}

/// A day of the week (UTC).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Weekday {
    /// Monday.
    Mon,
    /// Tuesday.
    Tue,
    /// Wednesday.
    Wed,
    /// Thursday.
    Thu,
    /// Friday.
    Fri,
    /// Saturday.
    Sat,
    /// Sunday.
    Sun,
}

impl Weekday {
    /// Monday to Sunday.
    pub const ALL: [Weekday; 7] = [
        Weekday::Mon,
        Weekday::Tue,
        Weekday::Wed,
        Weekday::Thu,
        Weekday::Fri,
        Weekday::Sat,
        Weekday::Sun,
    ];

    /// The UTC weekday of a Unix time (1970-01-01 was a Thursday).
    pub fn of_unix(secs: u64) -> Weekday {
        let days = secs / 86_400;
        match (days + 3) % 7 {
            0 => Weekday::Mon,
            1 => Weekday::Tue,
            2 => Weekday::Wed,
            3 => Weekday::Thu,
            4 => Weekday::Fri,
            5 => Weekday::Sat,
            _ => Weekday::Sun,
        }
    }

    /// The three-letter lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Weekday::Mon => "mon",
            Weekday::Tue => "tue",
            Weekday::Wed => "wed",
            Weekday::Thu => "thu",
            Weekday::Fri => "fri",
            Weekday::Sat => "sat",
            Weekday::Sun => "sun",
        }
    }
}

impl fmt::Display for Weekday {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// When (UTC) a rule lets requests through.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hours {
    /// The days.
    pub days: BTreeSet<Weekday>,
    /// First hour, inclusive (0-23).
    pub from: u8,
    /// Last hour, exclusive (1-24; `from < to`).
    pub to: u8,
}

impl Hours {
    /// Whether the Unix time `secs` falls inside.
    pub fn contains(&self, secs: u64) -> bool {
        let hour = (secs % 86_400) / 3_600;
        self.days.contains(&Weekday::of_unix(secs))
            && hour >= u64::from(self.from)
            && hour < u64::from(self.to)
    }
}

impl fmt::Display for Hours {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let days: Vec<&str> = self.days.iter().map(|d| d.as_str()).collect();
        write!(
            f,
            "{} {:02}:00-{:02}:00 UTC",
            days.join(","),
            self.from,
            self.to
        )
    }
}

/// One rule of a policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// Unique name, used in reasons.
    pub name: String,
    /// The keys it covers.
    pub keys: Vec<KeySelector>,
    /// The action kinds it allows.
    pub kinds: BTreeSet<ActionKind>,
    /// The approvals it requires.
    pub approvals: ApprovalRequirement,
    /// Per-asset limits; a transfer (or value sent) in an asset without one is denied.
    pub limits: Vec<Limit>,
    /// Destination allow and deny lists.
    pub destinations: Destinations,
    /// Optional time window.
    pub hours: Option<Hours>,
    /// More approvals above amounts, by asset (every tier that applies must hold).
    pub tiers: Vec<Tier>,
}

impl Rule {
    /// Whether the rule covers `key`.
    pub fn covers(&self, key: &KeyId, groups: &BTreeMap<String, BTreeSet<KeyId>>) -> bool {
        self.keys.iter().any(|s| s.matches(key, groups))
    }

    /// The limit for `asset`, if any.
    pub fn limit(&self, asset: &Asset) -> Option<&Limit> {
        self.limits.iter().find(|l| &l.asset == asset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weekdays_and_hours_on_fixed_times() {
        assert_eq!(Weekday::of_unix(0), Weekday::Thu);
        // 2024-01-01 00:00:00 UTC was a Monday.
        assert_eq!(Weekday::of_unix(1_704_067_200), Weekday::Mon);
        assert_eq!(Weekday::of_unix(1_704_067_200 - 1), Weekday::Sun);
        let office = Hours {
            days: Weekday::ALL[..5].iter().copied().collect(),
            from: 8,
            to: 18,
        };
        let monday = 1_704_067_200;
        assert!(!office.contains(monday + 7 * 3600 + 3599));
        assert!(office.contains(monday + 8 * 3600));
        assert!(office.contains(monday + 17 * 3600 + 3599));
        assert!(!office.contains(monday + 18 * 3600));
        // Saturday 10:00.
        assert!(!office.contains(monday + 5 * 86_400 + 10 * 3600));
        let all_day = Hours {
            days: [Weekday::Sun].into(),
            from: 0,
            to: 24,
        };
        assert!(all_day.contains(monday - 1));
        assert!(!all_day.contains(monday));
    }
}
