//! Per-peer token buckets on inbound frames.
//!
//! Every frame that reaches a [`SecureTransport`](crate::SecureTransport), handshake messages
//! included, first takes a token from its sender's bucket. The check is a few atomic operations
//! and happens before any decoding or cryptography, so a peer that floods costs this party
//! almost nothing: frames over budget are dropped unread and counted (as
//! [`RefusalReason::RateLimited`], and per sender), never queued.
//!
//! Each party of the roster has its own bucket, so one flooding peer cannot use up the budget of
//! the others. Senders outside the roster (which the channel layer refuses anyway) share one
//! bucket, so their number does not grow this party's memory.

use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroU32;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tessera_channel::{RefusalCounters, RefusalReason};
use tessera_wire::PartyId;

use crate::TransportError;

/// How often at most a `warn!` is logged about one flooding peer; drops in between are logged
/// at `debug` level only, so that a flood does not flood the log too.
pub const RATE_LIMIT_WARNING_INTERVAL: Duration = Duration::from_secs(60);

/// The inbound frame budget of each peer: a token bucket holding `burst` frames, refilled at
/// `frames_per_second`.
///
/// The defaults (1000 frames per second, bursts of 2000) are far above what honest protocol
/// traffic needs, so that real sessions never meet them, and far below what a flooding peer can
/// send, so that it cannot make this party spend its time on decryption:
/// * a protocol message is one frame per recipient (payloads up to the channel's
///   `max_payload` are never split), and the CGGMP24 protocols run a handful of rounds
///   (auxiliary info and presigning: 3 to 4, with one to two frames per round and peer); a
///   committee of 3 to 5 parties thus sends each peer well under 10 frames per session;
/// * the burst of 2000 therefore covers a couple of hundred sessions starting at the same
///   instant (a presignature pool refilled concurrently, or many signings at once), plus
///   handshakes, which are frames too;
/// * sustained, every session costs each party whole seconds (auxiliary info) or tens of
///   milliseconds (presigning) of modular arithmetic, so even online signing from presignatures
///   (one frame per session and peer) stays well below 1000 frames per second and peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InboundLimits {
    /// Frames per second a peer may send on average (the bucket's refill rate). Must be
    /// positive.
    pub frames_per_second: u32,
    /// Frames a peer may send at once after a quiet spell (the bucket's size). Must be positive.
    pub burst: u32,
}

impl Default for InboundLimits {
    fn default() -> Self {
        InboundLimits {
            frames_per_second: 1000,
            burst: 2000,
        }
    }
}

impl InboundLimits {
    /// The governor quota for these limits; a zero rate or burst is a set-up error.
    fn quota(&self) -> Result<Quota, TransportError> {
        let (Some(rate), Some(burst)) = (
            NonZeroU32::new(self.frames_per_second),
            NonZeroU32::new(self.burst),
        ) else {
            return Err(TransportError::Setup(format!(
                "inbound frame limits must be positive (got {} frames per second, burst {})",
                self.frames_per_second, self.burst
            )));
        };
        Ok(Quota::per_second(rate).allow_burst(burst))
    }
}

/// What was refused, kept by the transport (see [`Admission::refused`]).
#[derive(Default)]
struct Books {
    /// Every refusal of this party's transport: the channel layer's and the rate limiter's.
    refusals: RefusalCounters,
    /// Frames dropped by the rate limiter, per sender.
    rate_limited: BTreeMap<PartyId, u64>,
    /// When a `warn!` was last logged about each flooding sender.
    warned: HashMap<PartyId, Instant>,
}

/// The inbound gate of one [`SecureTransport`](crate::SecureTransport): the buckets and the
/// refusal books.
pub(crate) struct Admission {
    limits: InboundLimits,
    peers: HashMap<PartyId, DefaultDirectRateLimiter>,
    strangers: DefaultDirectRateLimiter,
    books: Mutex<Books>,
}

impl Admission {
    /// Buckets for each of `parties`, one shared bucket for anyone else, and refusal books that
    /// start from `refusals` (what the channel manager counted before the transport started).
    pub(crate) fn new(
        limits: InboundLimits,
        parties: impl IntoIterator<Item = PartyId>,
        refusals: RefusalCounters,
    ) -> Result<Self, TransportError> {
        let quota = limits.quota()?;
        Ok(Admission {
            limits,
            peers: parties
                .into_iter()
                .map(|p| (p, RateLimiter::direct(quota)))
                .collect(),
            strangers: RateLimiter::direct(quota),
            books: Mutex::new(Books {
                refusals,
                ..Books::default()
            }),
        })
    }

    fn books(&self) -> MutexGuard<'_, Books> {
        // Every update is a counter increment: a poisoned lock still holds consistent counts.
        self.books.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The limits in force.
    pub(crate) fn limits(&self) -> InboundLimits {
        self.limits
    }

    /// Takes a token from `from`'s bucket. `false`: the frame is over budget; it has been
    /// counted and must be dropped unread.
    pub(crate) fn admit(&self, from: PartyId) -> bool {
        let bucket = self.peers.get(&from).unwrap_or(&self.strangers);
        if bucket.check().is_ok() {
            return true;
        }
        let now = Instant::now();
        let mut books = self.books();
        books.refusals.record(RefusalReason::RateLimited);
        let dropped = {
            let n = books.rate_limited.entry(from).or_default();
            *n += 1;
            *n
        };
        let warn = books
            .warned
            .get(&from)
            .is_none_or(|last| now.duration_since(*last) >= RATE_LIMIT_WARNING_INTERVAL);
        if warn {
            books.warned.insert(from, now);
        }
        drop(books);
        if warn {
            tracing::warn!(
                peer = %from,
                dropped_so_far = dropped,
                frames_per_second = self.limits.frames_per_second,
                burst = self.limits.burst,
                "peer exceeds its inbound frame budget; dropping its excess frames unread \
                 (logged at most once a minute per peer)"
            );
        } else {
            tracing::debug!(peer = %from, dropped_so_far = dropped, "inbound frame rate-limited");
        }
        false
    }

    /// Counts a refusal by the channel layer (which also counts it in its own counters; the
    /// transport keeps the sum of both kinds so that reading it needs no merge).
    pub(crate) fn refused(&self, reason: RefusalReason) {
        self.books().refusals.record(reason);
    }

    /// Every refusal so far, per reason.
    pub(crate) fn refusals(&self) -> RefusalCounters {
        self.books().refusals.clone()
    }

    /// Frames dropped by the rate limiter so far, per sender.
    pub(crate) fn rate_limited(&self) -> BTreeMap<PartyId, u64> {
        self.books().rate_limited.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P1: PartyId = PartyId(1);
    const P2: PartyId = PartyId(2);
    const STRANGER: PartyId = PartyId(900);

    fn admission(frames_per_second: u32, burst: u32) -> Admission {
        let limits = InboundLimits {
            frames_per_second,
            burst,
        };
        Admission::new(limits, [P1, P2], RefusalCounters::default()).unwrap()
    }

    #[test]
    fn a_peer_within_its_budget_loses_nothing() {
        // One frame per hour refill: the burst is all there is during the test.
        let gate = admission(1, 10);
        for i in 0..10 {
            assert!(gate.admit(P1), "frame {i} within the burst was dropped");
        }
        assert_eq!(gate.refusals().get(RefusalReason::RateLimited), 0);
        assert!(gate.rate_limited().is_empty());
    }

    #[test]
    fn excess_is_dropped_counted_and_blamed_on_its_sender_only() {
        let gate = admission(1, 10);
        let admitted = (0..1000).filter(|_| gate.admit(P1)).count();
        // The burst, plus at most a few refills if the loop were very slow.
        assert!((10..=12).contains(&admitted), "{admitted} admitted");
        let dropped = 1000 - admitted as u64;
        assert_eq!(gate.refusals().get(RefusalReason::RateLimited), dropped);
        assert_eq!(gate.rate_limited(), BTreeMap::from([(P1, dropped)]));
        // The other peer's bucket is untouched.
        for i in 0..10 {
            assert!(gate.admit(P2), "P2's frame {i} was dropped");
        }
        assert_eq!(gate.rate_limited().get(&P2), None);
    }

    #[test]
    fn strangers_share_one_bucket() {
        let gate = admission(1, 3);
        let admitted = (0..3)
            .filter(|i| gate.admit(PartyId(STRANGER.0 + i)))
            .count();
        assert_eq!(admitted, 3);
        assert!(!gate.admit(PartyId(7)));
        assert!(gate.admit(P1), "roster peers keep their own budget");
    }

    #[test]
    fn channel_refusals_are_summed_with_rate_limits() {
        let mut before = RefusalCounters::default();
        before.record(RefusalReason::Malformed);
        let gate = Admission::new(
            InboundLimits {
                frames_per_second: 1,
                burst: 1,
            },
            [P1],
            before,
        )
        .unwrap();
        gate.refused(RefusalReason::Replay);
        assert!(gate.admit(P1));
        assert!(!gate.admit(P1));
        let counts = gate.refusals();
        assert_eq!(counts.get(RefusalReason::Malformed), 1);
        assert_eq!(counts.get(RefusalReason::Replay), 1);
        assert_eq!(counts.get(RefusalReason::RateLimited), 1);
        assert_eq!(counts.total(), 3);
    }

    #[test]
    fn zero_limits_are_refused() {
        for (rate, burst) in [(0, 10), (10, 0)] {
            let limits = InboundLimits {
                frames_per_second: rate,
                burst,
            };
            assert!(matches!(
                Admission::new(limits, [P1], RefusalCounters::default()),
                Err(TransportError::Setup(_))
            ));
        }
    }

    #[test]
    fn defaults_are_generous() {
        let d = InboundLimits::default();
        assert_eq!((d.frames_per_second, d.burst), (1000, 2000));
        let gate = Admission::new(d, [P1], RefusalCounters::default()).unwrap();
        assert!((0..2000).all(|_| gate.admit(P1)));
    }
}
