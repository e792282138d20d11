//! Per-peer inbound rate limits: a flooding peer is cut off before any cryptography, its excess
//! is dropped and counted (and blamed on it alone), nothing piles up, and the other peers'
//! sessions go on.

use crate::common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use tessera_channel::{ChannelConfig, FrameContext, RefusalReason};
use tessera_transport::memory::MemoryNetwork;
use tessera_transport::{InboundLimits, SecureTransport};
use tessera_wire::{PartyId, Protocol, SessionId};

/// Small limits, so that 100 times the budget is a quick test: 5000 frames.
const LIMITS: InboundLimits = InboundLimits {
    frames_per_second: 20,
    burst: 50,
};
const FLOOD: u64 = 100 * LIMITS.burst as u64;
const SESSIONS: usize = 4;
const MESSAGES: u16 = 5;

async fn limited_cluster(keys: &Keys, net: &MemoryNetwork) -> Vec<Arc<SecureTransport>> {
    let mut nodes = Vec::new();
    for p in PARTIES {
        let manager = keys.manager(p, ChannelConfig::default());
        let node = SecureTransport::start_with(manager, Arc::new(net.connect(p)), LIMITS)
            .await
            .unwrap();
        assert_eq!(node.inbound_limits(), LIMITS);
        nodes.push(Arc::new(node));
    }
    nodes
}

/// The most frames one peer's bucket can have let through since it was created `since`: the
/// burst, plus the refill over the time elapsed, plus one for rounding.
fn budget_since(since: Instant) -> u64 {
    let refill = (since.elapsed().as_secs_f64() * f64::from(LIMITS.frames_per_second)).ceil();
    u64::from(LIMITS.burst) + refill as u64 + 1
}

fn ctx(session: SessionId, round: u16) -> FrameContext {
    FrameContext {
        session,
        round,
        protocol: Protocol::PING,
    }
}

/// Waits until `ready` holds, failing after [`WAIT`] (only to avoid hanging).
async fn eventually(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !ready() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Handshakes from `nodes[0]` with both peers, and waits until both ends have keys.
async fn connect(nodes: &[Arc<SecureTransport>]) {
    let [p1, _, _] = PARTIES;
    assert!(nodes[0].connect_peers(WAIT).await.is_empty());
    for n in &nodes[1..] {
        eventually("peers learn the channel keys", || n.epoch(p1).is_some()).await;
    }
}

/// One session between `a` and `b`: each sends [`MESSAGES`] payloads to the other, and each
/// checks that it got the other's, intact and in order.
async fn session(a: &SecureTransport, b: &SecureTransport, index: usize) {
    let id = SessionId::random();
    let mut inbox_a = a.open_session(id);
    let mut inbox_b = b.open_session(id);
    let payload = |from: PartyId, i: u16| format!("session {index} from {from} #{i}").into_bytes();
    for i in 0..MESSAGES {
        a.send(b.party(), ctx(id, i), &payload(a.party(), i))
            .await
            .unwrap();
        b.send(a.party(), ctx(id, i), &payload(b.party(), i))
            .await
            .unwrap();
    }
    for (inbox, from) in [(&mut inbox_a, b.party()), (&mut inbox_b, a.party())] {
        for i in 0..MESSAGES {
            let d = tokio::time::timeout(WAIT, inbox.recv())
                .await
                .unwrap_or_else(|_| panic!("session {index}: message {i} from {from} missing"))
                .expect("transport stopped");
            assert_eq!(d.from, from);
            assert_eq!(d.context, ctx(id, i));
            assert_eq!(d.payload, payload(from, i), "session {index}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_flooding_100x_its_budget_is_cut_off_and_other_sessions_finish() {
    let keys = keys(3);
    let net = MemoryNetwork::new();
    let [p1, p2, p3] = PARTIES;
    let created = Instant::now();
    let nodes = limited_cluster(&keys, &net).await;
    connect(&nodes).await;

    // p3, a roster party with valid channel keys, floods p1 with sealed frames of a session
    // nobody opened: each one admitted costs p1 a decryption and a place in its queue. It keeps
    // going until p1 and p2's sessions are done, and sends at least 100 times its burst.
    let sessions_done = Arc::new(AtomicBool::new(false));
    let flood = {
        let attacker = nodes[2].clone();
        let done = sessions_done.clone();
        tokio::spawn(async move {
            let junk_session = SessionId::random();
            let junk = vec![0xAA; 512];
            let mut sent = 0u64;
            while sent < FLOOD || !done.load(Ordering::Relaxed) {
                attacker
                    .send(p1, ctx(junk_session, 0), &junk)
                    .await
                    .unwrap();
                sent += 1;
                if sent.is_multiple_of(64) {
                    tokio::task::yield_now().await;
                }
                // A guard against running forever if the sessions hang (they then fail);
                // below the channel's rekey-after-messages count, so that p3 never needs a
                // new handshake (which p1 would rate-limit too).
                if sent >= 10 * FLOOD {
                    break;
                }
            }
            sent
        })
    };
    // The honest sessions start once p1 is already dropping p3's frames.
    eventually("p1 starts dropping p3's frames", || {
        nodes[0].rate_limited().contains_key(&p3)
    })
    .await;
    let runs = (0..SESSIONS).map(|i| session(&nodes[0], &nodes[1], i));
    futures::future::join_all(runs).await;
    sessions_done.store(true, Ordering::Relaxed);
    let sent = flood.await.unwrap();
    assert!(sent >= FLOOD);

    // Every frame p3 sent was either dropped unread (rate-limited) or admitted, decrypted and
    // held for its session (or, past the session's share, dropped and counted); wait until p1
    // has read them all, taking the held ones out.
    let mut admitted = 0u64;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let dropped = nodes[0].rate_limited().get(&p3).copied().unwrap_or(0);
        let over_share = nodes[0].router_stats().over_session_limit;
        if dropped + admitted + over_share == sent {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "p1 lost track of p3's frames: {dropped} dropped + {admitted} admitted of {sent}"
        );
        if let Some(d) = nodes[0].recv_timeout(Duration::from_millis(5)).await {
            assert_eq!(d.from, p3);
            admitted += 1;
        }
    }
    // Nothing piled up: p1 never held more than p3's budget (and at most one session's share
    // of it), and p3 never reached its allowance over all sessions.
    let stats = nodes[0].router_stats();
    let budget = budget_since(created);
    assert_eq!(stats.over_peer_limit, 0, "{stats:?}");
    assert_eq!(stats.held, 0, "{stats:?}");
    let admitted = admitted + stats.over_session_limit;
    assert!(
        admitted <= budget,
        "p1 admitted {admitted} of p3's frames, above its budget of {budget}"
    );

    // The refusals show up, blamed on p3 alone.
    let limited = nodes[0].rate_limited();
    let dropped = sent - admitted;
    eprintln!("p3 sent {sent} frames: {admitted} admitted, {dropped} dropped (budget {budget})");
    assert_eq!(
        limited,
        BTreeMap::from([(p3, dropped)]),
        "p2 must not be blamed"
    );
    assert!(
        dropped + budget >= sent,
        "only {dropped} of {sent} dropped (budget {budget})"
    );
    let refusals = nodes[0].refusals();
    assert_eq!(refusals.get(RefusalReason::RateLimited), dropped);
    assert_eq!(
        refusals.frames(),
        dropped,
        "p1 refused something else: {refusals:?}"
    );
    assert_eq!(RefusalReason::RateLimited.as_str(), "rate_limited");
    // p2 received only p1's frames, well within budget.
    assert!(nodes[1].rate_limited().is_empty());
    assert_eq!(nodes[1].refusals().get(RefusalReason::RateLimited), 0);

    // p2 was never throttled: one more exchange with p1 still works after the flood.
    session(&nodes[0], &nodes[1], SESSIONS).await;
    assert!(!nodes[0].rate_limited().contains_key(&p2));
}

#[tokio::test]
async fn a_peer_within_its_budget_loses_nothing() {
    let keys = keys(3);
    let net = MemoryNetwork::new();
    let [p1, p2, _] = PARTIES;
    let nodes = limited_cluster(&keys, &net).await;
    connect(&nodes).await;
    // p2's handshake answer took a token or two; all but a margin of the rest go in one burst.
    let count = LIMITS.burst as u16 - 5;
    let id = SessionId::random();
    let mut inbox = nodes[0].open_session(id);
    for i in 0..count {
        nodes[1]
            .send(p1, ctx(id, i), &i.to_be_bytes())
            .await
            .unwrap();
    }
    for i in 0..count {
        let d = tokio::time::timeout(WAIT, inbox.recv())
            .await
            .unwrap_or_else(|_| panic!("message {i} of {count} lost"))
            .expect("transport stopped");
        assert_eq!((d.from, d.payload), (p2, i.to_be_bytes().to_vec()));
    }
    assert!(nodes[0].rate_limited().is_empty());
    assert_eq!(nodes[0].refusals().get(RefusalReason::RateLimited), 0);
}

#[tokio::test]
async fn zero_limits_are_a_setup_error() {
    let keys = keys(3);
    let net = MemoryNetwork::new();
    let limits = InboundLimits {
        frames_per_second: 0,
        burst: 10,
    };
    let manager = keys.manager(PARTIES[0], ChannelConfig::default());
    let result =
        SecureTransport::start_with(manager, Arc::new(net.connect(PARTIES[0])), limits).await;
    assert!(matches!(
        result,
        Err(tessera_transport::TransportError::Setup(_))
    ));
}
