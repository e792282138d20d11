//! How the coordinator service runs: attempts, deadlines, intervals, pools.

use std::time::Duration;

use super::ServiceError;

/// Settings of a [`Coordinator`](super::Coordinator). [`Default`] gives the documented
/// defaults; [`validate`](Self::validate) refuses unusable values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CoordinatorSettings {
    /// Signing sessions per request before it fails (each retry picks another quorum when a
    /// party was blamed). Default 3; at least 1.
    pub signing_attempts: u32,
    /// How long the coordinator waits for the outcomes of a key generation, presigning or
    /// signing session. Default 120 s.
    pub session_deadline: Duration,
    /// How long it waits for auxiliary info (Paillier safe primes and long proofs). Default
    /// 15 minutes.
    pub aux_info_deadline: Duration,
    /// How often requests and policy proposals past their expiry are marked expired, and
    /// abandoned key generations and committee set-ups marked failed. Default 30 s.
    pub expiry_sweep_interval: Duration,
    /// How often keys are checked for a scheduled refresh that is due and for an activation
    /// that did not reach every party (resent until it does). Default 60 s.
    pub rotation_check_interval: Duration,
    /// How often every holder of each key is given the records of the key's spend chain it
    /// lacks (`docs/protocols/spend-chain.md`), so that holders that did not sign learn of
    /// each signing before they sign themselves. Default 30 s.
    pub spend_delivery_interval: Duration,
    /// How often the signing worker looks for work when nothing woke it (requests approved
    /// by another replica, requests left signing by a stopped coordinator). Default 5 s.
    pub worker_poll_interval: Duration,
    /// A request in `signing` whose coordinator has not shown life for this long is taken
    /// over and retried (a running signer refreshes it every third of this). Default 60 s; at
    /// least 1 s.
    pub stale_signing_after: Duration,
    /// Presignatures kept ready per key (for its preferred quorum), for one-round online
    /// signing of master-key requests. 0 = full interactive signing only. Default 0.
    pub presignature_pool_target: usize,
    /// How often the presignature pools are refilled. Default 10 s.
    pub presignature_refill_interval: Duration,
    /// How long a pooled presignature is offered before it is forgotten and replaced; keep it
    /// below the nodes' `presignature_lifetime_secs` (they erase older ones). Default 5 hours.
    pub presignature_max_age: Duration,
    /// Lifetime of a request submitted without one (capped at the policy's
    /// `max_request_lifetime_secs`). Default 1 hour.
    pub default_request_lifetime: Duration,
    /// Lifetime of a policy change proposal (capped like requests). Default 24 hours.
    pub proposal_lifetime: Duration,
    /// A party that failed within this time is picked for a quorum only if no other party
    /// can take its place. Default 5 minutes.
    pub blame_cooldown: Duration,
    /// How long [`shutdown`](super::Coordinator::shutdown) lets a running session finish
    /// before abandoning it (it is resumed by the next coordinator). Default 10 s.
    pub shutdown_grace: Duration,
}

impl Default for CoordinatorSettings {
    fn default() -> Self {
        CoordinatorSettings {
            signing_attempts: 3,
            session_deadline: Duration::from_secs(120),
            aux_info_deadline: Duration::from_secs(15 * 60),
            expiry_sweep_interval: Duration::from_secs(30),
            rotation_check_interval: Duration::from_secs(60),
            spend_delivery_interval: Duration::from_secs(30),
            worker_poll_interval: Duration::from_secs(5),
            stale_signing_after: Duration::from_secs(60),
            presignature_pool_target: 0,
            presignature_refill_interval: Duration::from_secs(10),
            presignature_max_age: Duration::from_secs(tessera_control::pool::DEFAULT_MAX_AGE_SECS),
            default_request_lifetime: Duration::from_secs(3600),
            proposal_lifetime: Duration::from_secs(24 * 3600),
            blame_cooldown: Duration::from_secs(300),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

impl CoordinatorSettings {
    /// Refuses settings the service cannot run with, naming the setting.
    pub fn validate(&self) -> Result<(), ServiceError> {
        let invalid = |what: &str, why: &str| {
            Err(ServiceError::Invalid(format!(
                "coordinator setting {what}: {why}"
            )))
        };
        if self.signing_attempts == 0 {
            return invalid("signing_attempts", "must be at least 1");
        }
        for (what, value) in [
            ("session_deadline", self.session_deadline),
            ("aux_info_deadline", self.aux_info_deadline),
            ("expiry_sweep_interval", self.expiry_sweep_interval),
            ("worker_poll_interval", self.worker_poll_interval),
            ("rotation_check_interval", self.rotation_check_interval),
            ("spend_delivery_interval", self.spend_delivery_interval),
            (
                "presignature_refill_interval",
                self.presignature_refill_interval,
            ),
            ("presignature_max_age", self.presignature_max_age),
        ] {
            if value.is_zero() {
                return invalid(what, "must be longer than zero");
            }
        }
        if self.stale_signing_after < Duration::from_secs(1) {
            return invalid("stale_signing_after", "must be at least 1 s");
        }
        if self.default_request_lifetime.as_secs() == 0 {
            return invalid("default_request_lifetime", "must be at least 1 s");
        }
        if self.proposal_lifetime.as_secs() == 0 {
            return invalid("proposal_lifetime", "must be at least 1 s");
        }
        Ok(())
    }
}
