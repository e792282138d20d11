//! Rate limits on the `/v1` API: a token bucket per authenticated principal, and one shared
//! bucket for failed authentications.
//!
//! **For metrics:** [`ApiState::rate_limited`](super::ApiState::rate_limited) returns a
//! [`RateLimitCounts`]: `per_principal` (calls answered 429 so far, per principal name; only
//! principals with refusals are listed) and `unauthenticated` (failed authentications answered
//! 429). Render them as `tessera_coordinator_api_rate_limited_total{principal="<name>"}`, the
//! latter e.g. with `principal=""`.
//!
//! # Per principal
//!
//! A principal's bucket is checked right after its signature is verified (and before its
//! permission), so limits are per principal, and unauthenticated garbage, which never gets that
//! far, cannot use up a real principal's budget. A call over budget is answered 429
//! `rate_limited` with a `Retry-After` header, and counted; nothing waits in a queue. Only
//! principals of the active policy can authenticate, so the number of buckets is bounded by
//! the policy.
//!
//! # Failed authentications
//!
//! Calls that fail authentication (missing or malformed headers, unknown principal, bad
//! signature, replayed nonce) share one global bucket with the same limits: within it they are
//! answered 401 and logged as usual; beyond it they are answered 429 and counted, and logged at
//! most once a minute. Successful authentications never touch that bucket, so a flood of
//! garbage cannot lock out real principals. This bucket is global, not per client address: the
//! coordinator sits behind a TLS proxy (plain HTTP is only for loopback), so the address it sees
//! is the proxy's. What one garbage call costs is small and bounded anyway (a body of at most
//! [`MAX_BODY_BYTES`](crate::auth::MAX_BODY_BYTES), the cached policy, one signature check);
//! limiting its rate per client belongs to the proxy in front.

use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroU32;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use governor::clock::Clock;
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};

use super::ApiError;

/// How often at most a `warn!` is logged about one principal (or about failed authentications)
/// going over its limit; the refusals in between are logged at `debug` level.
pub const RATE_LIMIT_WARNING_INTERVAL: Duration = Duration::from_secs(60);

/// Calls answered 429 so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RateLimitCounts {
    /// Per authenticated principal (only those with refusals).
    pub per_principal: BTreeMap<String, u64>,
    /// Failed authentications over their shared budget.
    pub unauthenticated: u64,
}

/// Key of the failed-authentication warnings in [`Books::warned`] (not a principal name: those
/// come from the policy and are never empty).
const UNAUTHENTICATED: &str = "";

#[derive(Default)]
struct Books {
    counts: RateLimitCounts,
    warned: HashMap<String, Instant>,
}

struct Buckets {
    per_second: u32,
    burst: u32,
    principals: DefaultKeyedRateLimiter<String>,
    failed_auth: DefaultDirectRateLimiter,
}

/// The API's rate limiters and their counts.
pub(crate) struct RateLimits {
    /// `None`: limits disabled (a zero rate or burst in the options).
    buckets: Option<Buckets>,
    books: Mutex<Books>,
}

impl RateLimits {
    /// Buckets of `burst` calls refilled at `per_second`; either at zero disables the limits.
    pub(crate) fn new(per_second: u32, burst: u32) -> Self {
        let buckets = match (NonZeroU32::new(per_second), NonZeroU32::new(burst)) {
            (Some(rate), Some(size)) => {
                let quota = Quota::per_second(rate).allow_burst(size);
                Some(Buckets {
                    per_second,
                    burst,
                    principals: RateLimiter::keyed(quota),
                    failed_auth: RateLimiter::direct(quota),
                })
            }
            _ => {
                tracing::warn!(
                    per_second,
                    burst,
                    "API rate limits disabled (a zero rate or burst)"
                );
                None
            }
        };
        RateLimits {
            buckets,
            books: Mutex::new(Books::default()),
        }
    }

    fn books(&self) -> MutexGuard<'_, Books> {
        // Counter increments only: a poisoned lock still holds consistent counts.
        self.books.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a token from `principal`'s bucket (an authenticated principal); a 429 if it has
    /// none left.
    pub(crate) fn check_principal(&self, principal: &str) -> Result<(), ApiError> {
        let Some(b) = &self.buckets else {
            return Ok(());
        };
        match b.principals.check_key(&principal.to_owned()) {
            Ok(()) => Ok(()),
            Err(not_until) => {
                let wait = not_until.wait_time_from(b.principals.clock().now());
                self.count(Some(principal), wait);
                Err(ApiError::rate_limited(
                    wait,
                    format!(
                        "too many calls from principal '{principal}': at most {} per second \
                         (bursts of {}); retry after {} ms",
                        b.per_second,
                        b.burst,
                        wait.as_millis().max(1)
                    ),
                ))
            }
        }
    }

    /// Takes a token from the failed-authentication bucket: `None` if there was one (answer
    /// the failure as usual), else the 429 to answer instead.
    pub(crate) fn check_failed_auth(&self) -> Option<ApiError> {
        let b = self.buckets.as_ref()?;
        let not_until = b.failed_auth.check().err()?;
        let wait = not_until.wait_time_from(b.failed_auth.clock().now());
        self.count(None, wait);
        Some(ApiError::rate_limited(
            wait,
            format!(
                "too many failed authentications: at most {} per second (bursts of {}) are \
                 answered; sign the request with a key of the policy; retry after {} ms",
                b.per_second,
                b.burst,
                wait.as_millis().max(1)
            ),
        ))
    }

    fn count(&self, principal: Option<&str>, wait: Duration) {
        let now = Instant::now();
        let key = principal.unwrap_or(UNAUTHENTICATED);
        let mut books = self.books();
        let refused = match principal {
            Some(name) => {
                let n = books
                    .counts
                    .per_principal
                    .entry(name.to_owned())
                    .or_default();
                *n += 1;
                *n
            }
            None => {
                books.counts.unauthenticated += 1;
                books.counts.unauthenticated
            }
        };
        let warn = books
            .warned
            .get(key)
            .is_none_or(|last| now.duration_since(*last) >= RATE_LIMIT_WARNING_INTERVAL);
        if warn {
            books.warned.insert(key.to_owned(), now);
        }
        drop(books);
        let retry_after_ms = wait.as_millis() as u64;
        match (warn, principal) {
            (true, Some(principal)) => tracing::warn!(
                principal,
                refused_so_far = refused,
                retry_after_ms,
                "principal over its API rate limit; answering 429 (logged at most once a minute)"
            ),
            (true, None) => tracing::warn!(
                refused_so_far = refused,
                retry_after_ms,
                "failed authentications over their rate limit; answering 429 (logged at most \
                 once a minute)"
            ),
            (false, principal) => tracing::debug!(
                principal = principal.unwrap_or("(unauthenticated)"),
                refused_so_far = refused,
                retry_after_ms,
                "API call rate-limited"
            ),
        }
    }

    /// Calls answered 429 so far.
    pub(crate) fn counts(&self) -> RateLimitCounts {
        self.books().counts.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_principal_has_its_own_budget() {
        let limits = RateLimits::new(1, 3);
        for _ in 0..3 {
            limits.check_principal("olivia").unwrap();
        }
        let e = limits.check_principal("olivia").unwrap_err();
        assert_eq!((e.status.as_u16(), e.code), (429, "rate_limited"));
        let retry = e.retry_after.expect("retry after");
        assert!(
            retry > Duration::ZERO && retry <= Duration::from_secs(1),
            "{retry:?}"
        );
        assert!(e.message.contains("retry after"), "{}", e.message);
        for _ in 0..3 {
            limits.check_principal("ana").unwrap();
        }
        assert_eq!(
            limits.counts(),
            RateLimitCounts {
                per_principal: BTreeMap::from([("olivia".to_owned(), 1)]),
                unauthenticated: 0,
            }
        );
    }

    #[test]
    fn failed_authentications_share_a_budget_apart_from_the_principals() {
        let limits = RateLimits::new(1, 2);
        assert!(limits.check_failed_auth().is_none());
        assert!(limits.check_failed_auth().is_none());
        let e = limits.check_failed_auth().expect("over budget");
        assert_eq!(e.status.as_u16(), 429);
        limits.check_principal("ana").unwrap();
        let counts = limits.counts();
        assert_eq!(counts.unauthenticated, 1);
        assert!(counts.per_principal.is_empty());
    }

    #[test]
    fn zero_disables_the_limits() {
        for (rate, burst) in [(0, 10), (10, 0)] {
            let limits = RateLimits::new(rate, burst);
            for _ in 0..1000 {
                limits.check_principal("olivia").unwrap();
                assert!(limits.check_failed_auth().is_none());
            }
        }
    }
}
