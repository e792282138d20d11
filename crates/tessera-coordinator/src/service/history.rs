//! The coordinator's [`SpendHistory`]: the spend reserved in its database.
//!
//! `evaluate` is synchronous and the store is not, so the sums it will ask for are read first
//! (from the store, or inside an [`Admission`] that holds the key's admission lock):
//! for each asset the request spends (what it moves, and the native coin for its fee), one sum
//! per rolling window of the rules covering the key, and per key the window counts (a window
//! shared by a group of keys counts them all). A sum
//! that was not read (which `evaluate` never asks for) counts as unlimited spend, so a mistake
//! here denies rather than allows.

use std::collections::{BTreeSet, HashMap};

use tessera_chain::U256;
use tessera_policy::{Asset, Derived, PolicyDocument, SpendHistory};
use tessera_wire::KeyId;

use super::{to_db, ServiceError};
use crate::store::Admission;
use crate::Store;
use tessera_wire::RequestId;

/// Sums of spend per (key, asset, since), read from the store for one evaluation.
pub(crate) struct StoreHistory {
    sums: HashMap<(KeyId, Asset, u64), U256>,
}

impl SpendHistory for StoreHistory {
    fn spent_since(&self, key: KeyId, asset: &Asset, since: u64) -> U256 {
        self.sums
            .get(&(key, *asset, since))
            .copied()
            .unwrap_or(U256::MAX)
    }
}

/// Every key whose spend a request of `key` counts under `policy`: `key`, and the keys its
/// rules' windows are shared with (`window_keys`). An admission locks them all.
pub(crate) fn counted_keys(policy: &PolicyDocument, key: KeyId) -> BTreeSet<KeyId> {
    let mut keys = BTreeSet::from([key]);
    for rule in policy.rules_for(&key) {
        for limit in &rule.limits {
            if let Some(window) = &limit.window {
                keys.extend(window.counted_keys(key));
            }
        }
    }
    keys
}

/// Where the reserved spend is read from.
pub(crate) enum Source<'a> {
    /// The store, leaving out one request's own reservation (a request already admitted).
    Store(&'a Store, Option<RequestId>),
    /// An admission in progress: what it reads is what it decides on.
    Admission(&'a mut Admission),
}

impl Source<'_> {
    async fn spends_since(
        &mut self,
        key: KeyId,
        asset: &str,
        since: i64,
    ) -> Result<Vec<String>, ServiceError> {
        Ok(match self {
            Source::Store(store, except) => store.spends_since(key, asset, since, *except).await?,
            Source::Admission(admission) => admission.spends_since(key, asset, since).await?,
        })
    }
}

/// Reads what evaluating a request for `key` that does `derived` at `now` will ask.
pub(crate) async fn load(
    mut source: Source<'_>,
    policy: &PolicyDocument,
    key: KeyId,
    derived: &Derived,
    now: u64,
) -> Result<StoreHistory, ServiceError> {
    let mut sums = HashMap::new();
    for (asset, _) in derived.spends() {
        for rule in policy.rules_for(&key) {
            let Some(window) = rule.limit(&asset).and_then(|l| l.window.as_ref()) else {
                continue;
            };
            let since = now.saturating_sub(window.secs);
            for counted in window.counted_keys(key) {
                if sums.contains_key(&(counted, asset, since)) {
                    continue;
                }
                let amounts = source
                    .spends_since(counted, &asset.to_string(), to_db(since))
                    .await?;
                let total = amounts.iter().fold(U256::ZERO, |sum, amount| {
                    // Amounts are validated when recorded; an unreadable one counts as
                    // unlimited.
                    let amount = amount.parse::<U256>().unwrap_or(U256::MAX);
                    sum.saturating_add(amount)
                });
                sums.insert((counted, asset, since), total);
            }
        }
    }
    Ok(StoreHistory { sums })
}
