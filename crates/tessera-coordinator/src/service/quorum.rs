//! Picking signers: per-party health kept in memory, and quorums that avoid parties that
//! failed recently or were blamed in this request's earlier attempts.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tessera_wire::PartyId;

use super::PartyHealthView;

#[derive(Clone, Copy, Debug, Default)]
struct PartyHealth {
    last_failure: Option<Instant>,
    consecutive_failures: u32,
}

/// What the coordinator remembers of each party's sessions. In memory only: a restarted
/// coordinator trusts every party again.
pub(crate) struct Health {
    parties: Mutex<HashMap<PartyId, PartyHealth>>,
    cooldown: Duration,
}

/// The quorum used when every party is healthy: the committee's first `threshold` parties.
pub(crate) fn preferred(committee: &[PartyId], threshold: u16) -> Vec<PartyId> {
    committee
        .iter()
        .copied()
        .take(usize::from(threshold))
        .collect()
}

impl Health {
    pub(crate) fn new(cooldown: Duration) -> Self {
        Health {
            parties: Mutex::new(HashMap::new()),
            cooldown,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PartyId, PartyHealth>> {
        self.parties.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `threshold` parties of `committee` (in committee order), none of `excluded`: parties
    /// without a recent failure first, then the fewest consecutive failures, then committee
    /// order. `None` if fewer than `threshold` parties are left.
    pub(crate) fn pick(
        &self,
        committee: &[PartyId],
        threshold: u16,
        excluded: &BTreeSet<PartyId>,
    ) -> Option<Vec<PartyId>> {
        let threshold = usize::from(threshold);
        let health = self.lock();
        let now = Instant::now();
        let mut candidates: Vec<(usize, PartyId)> = committee
            .iter()
            .copied()
            .enumerate()
            .filter(|(_, p)| !excluded.contains(p))
            .collect();
        if threshold == 0 || candidates.len() < threshold {
            return None;
        }
        candidates.sort_by_key(|&(position, p)| {
            let h = health.get(&p).copied().unwrap_or_default();
            let recent = h
                .last_failure
                .is_some_and(|at| now.duration_since(at) < self.cooldown);
            (recent, h.consecutive_failures, position)
        });
        let mut chosen: Vec<(usize, PartyId)> = candidates.into_iter().take(threshold).collect();
        chosen.sort();
        Some(chosen.into_iter().map(|(_, p)| p).collect())
    }

    /// The session with `parties` succeeded.
    pub(crate) fn succeeded(&self, parties: &[PartyId]) {
        let mut health = self.lock();
        for p in parties {
            health.entry(*p).or_default().consecutive_failures = 0;
        }
    }

    /// `parties` were blamed for, or silent in, a failed session.
    pub(crate) fn failed(&self, parties: &[PartyId]) {
        let mut health = self.lock();
        let now = Instant::now();
        for p in parties {
            let h = health.entry(*p).or_default();
            h.last_failure = Some(now);
            h.consecutive_failures = h.consecutive_failures.saturating_add(1);
        }
    }

    pub(crate) fn view(&self) -> Vec<PartyHealthView> {
        let now = Instant::now();
        let mut view: Vec<PartyHealthView> = self
            .lock()
            .iter()
            .map(|(p, h)| PartyHealthView {
                party: *p,
                consecutive_failures: h.consecutive_failures,
                secs_since_failure: h.last_failure.map(|at| now.duration_since(at).as_secs()),
            })
            .collect();
        view.sort_by_key(|v| v.party);
        view
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: [PartyId; 4] = [PartyId(1), PartyId(2), PartyId(3), PartyId(4)];

    #[test]
    fn healthy_committees_use_the_preferred_quorum() {
        let health = Health::new(Duration::from_secs(60));
        assert_eq!(
            health.pick(&P[..3], 2, &BTreeSet::new()),
            Some(vec![P[0], P[1]])
        );
        assert_eq!(preferred(&P[..3], 2), vec![P[0], P[1]]);
    }

    #[test]
    fn excluded_and_failing_parties_are_avoided() {
        let health = Health::new(Duration::from_secs(60));
        let excluded = BTreeSet::from([P[0]]);
        assert_eq!(health.pick(&P[..3], 2, &excluded), Some(vec![P[1], P[2]]));
        assert_eq!(
            health.pick(&P[..3], 3, &excluded),
            None,
            "two parties left cannot make a quorum of three"
        );
        health.failed(&[P[1]]);
        assert_eq!(
            health.pick(&P, 2, &BTreeSet::new()),
            Some(vec![P[0], P[2]]),
            "a recently failed party is replaced"
        );
        // ...but used when nobody else can take its place.
        assert_eq!(
            health.pick(&P[..2], 2, &BTreeSet::new()),
            Some(vec![P[0], P[1]])
        );
        health.succeeded(&[P[1]]);
        let view = health.view();
        assert_eq!(view.len(), 1);
        assert_eq!(view[0].consecutive_failures, 0);
        assert!(view[0].secs_since_failure.is_some());
    }
}
