//! What a peer may have waiting in a party's router: capped per peer (deliveries and bytes) and
//! per session, so that a hostile peer cannot grow a party's memory, evict another peer's
//! deliveries or fill a session past its share, and one session that does not read holds up
//! no other.

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use tessera_channel::{ChannelConfig, FrameContext};
use tessera_transport::memory::MemoryNetwork;
use tessera_transport::{HoldLimits, InboundLimits, RouterStats, SecureTransport};
use tessera_wire::{PartyId, Protocol, SessionId};

/// Budgets well above what the tests send, so that rate limits never get in the way.
const GENEROUS: InboundLimits = InboundLimits {
    frames_per_second: 100_000,
    burst: 10_000,
};

async fn cluster(keys: &Keys, net: &MemoryNetwork, held: HoldLimits) -> Vec<SecureTransport> {
    let mut nodes = Vec::new();
    for p in PARTIES {
        let manager = keys.manager(p, ChannelConfig::default());
        let node =
            SecureTransport::start_limited(manager, Arc::new(net.connect(p)), GENEROUS, held)
                .await
                .unwrap();
        nodes.push(node);
    }
    assert!(nodes[0].connect_peers(WAIT).await.is_empty());
    for n in &nodes[1..] {
        eventually("peers learn p1's channel keys", || {
            n.epoch(PARTIES[0]).is_some()
        })
        .await;
    }
    nodes
}

fn ctx(session: SessionId, round: u16) -> FrameContext {
    FrameContext {
        session,
        round,
        protocol: Protocol::PING,
    }
}

async fn eventually(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !ready() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits until p1's router has accounted for `total` deliveries (held, queued or dropped).
async fn accounted(node: &SecureTransport, total: u64) -> RouterStats {
    let seen = |s: &RouterStats| {
        s.held as u64
            + s.queued as u64
            + s.over_peer_limit
            + s.over_session_limit
            + s.late_for_closed_session
    };
    eventually("p1 accounts for every delivery", || {
        seen(&node.router_stats()) >= total
    })
    .await;
    let stats = node.router_stats();
    assert_eq!(seen(&stats), total, "{stats:?}");
    stats
}

async fn send(node: &SecureTransport, to: PartyId, session: SessionId, i: u16, payload: &[u8]) {
    node.send(to, ctx(session, i), payload).await.unwrap();
}

async fn next(inbox: &mut tessera_transport::SessionInbox) -> tessera_channel::Delivery {
    tokio::time::timeout(WAIT, inbox.recv())
        .await
        .expect("delivery missing")
        .expect("transport stopped")
}

#[tokio::test]
async fn a_peer_flooding_unopened_sessions_cannot_evict_another_peers_deliveries() {
    let keys = keys(3);
    let net = MemoryNetwork::new();
    let limits = HoldLimits {
        peer_deliveries: 64,
        peer_bytes: 1024 * 1024,
        session_deliveries: 16,
    };
    let nodes = cluster(&keys, &net, limits).await;
    let [p1, p2, p3] = PARTIES;
    // p2's early messages for a session p1 has not opened yet...
    let honest = SessionId::random();
    for i in 0..10u16 {
        send(&nodes[1], p1, honest, i, &i.to_be_bytes()).await;
    }
    accounted(&nodes[0], 10).await;
    // ...then p3, authenticated, floods p1 with 200 sessions that nobody will open.
    for i in 0..200u16 {
        send(&nodes[2], p1, SessionId::random(), 0, &i.to_be_bytes()).await;
    }
    let stats = accounted(&nodes[0], 210).await;
    assert_eq!(stats.held, 10 + 64, "{stats:?}");
    assert_eq!(stats.over_peer_limit, 200 - 64, "{stats:?}");
    assert_eq!(stats.over_session_limit, 0, "{stats:?}");

    // p2's deliveries are all still there, in order.
    let mut inbox = nodes[0].open_session(honest);
    for i in 0..10u16 {
        let d = next(&mut inbox).await;
        assert_eq!((d.from, d.payload), (p2, i.to_be_bytes().to_vec()));
    }
    // p3 is still capped; p2 is not (its allowance was given back as p1 read).
    for i in 0..5u16 {
        send(&nodes[2], p1, SessionId::random(), 0, &i.to_be_bytes()).await;
        send(&nodes[1], p1, honest, 10 + i, &i.to_be_bytes()).await;
    }
    for i in 0..5u16 {
        assert_eq!(next(&mut inbox).await.payload, i.to_be_bytes());
    }
    let stats = accounted(&nodes[0], 210 - 10 + 5).await;
    assert_eq!(stats.over_peer_limit, 200 - 64 + 5, "{stats:?}");
    assert_eq!((stats.held, stats.queued), (64, 0), "{stats:?}");

    // Reading p3's held deliveries gives its allowance back.
    for _ in 0..64 {
        let d = nodes[0].recv_timeout(WAIT).await.expect("held delivery");
        assert_eq!(d.from, p3);
    }
    send(&nodes[2], p1, SessionId::random(), 0, b"welcome again").await;
    let d = nodes[0]
        .recv_timeout(WAIT)
        .await
        .expect("p3's new delivery");
    assert_eq!(d.payload, b"welcome again");
    assert_eq!(nodes[0].router_stats().held, 0);
}

#[tokio::test]
async fn a_peer_cannot_fill_a_session_past_its_share() {
    let keys = keys(3);
    let net = MemoryNetwork::new();
    let limits = HoldLimits {
        peer_deliveries: 1000,
        peer_bytes: 1024 * 1024,
        session_deliveries: 16,
    };
    let nodes = cluster(&keys, &net, limits).await;
    let [p1, p2, p3] = PARTIES;
    let session = SessionId::random();
    for i in 0..40u16 {
        send(&nodes[2], p1, session, i, b"p3").await;
    }
    for i in 0..5u16 {
        send(&nodes[1], p1, session, i, b"p2").await;
    }
    let stats = accounted(&nodes[0], 45).await;
    assert_eq!((stats.held, stats.over_session_limit), (16 + 5, 40 - 16));

    // The session gets p3's first 16 and all of p2's.
    let mut inbox = nodes[0].open_session(session);
    let mut from = std::collections::BTreeMap::<PartyId, Vec<u16>>::new();
    for _ in 0..21 {
        let d = next(&mut inbox).await;
        from.entry(d.from).or_default().push(d.context.round);
    }
    assert_eq!(from[&p3], (0..16).collect::<Vec<_>>());
    assert_eq!(from[&p2], (0..5).collect::<Vec<_>>());
    // The cap holds in an open session too, until the session reads.
    for i in 40..60u16 {
        send(&nodes[2], p1, session, i, b"p3").await;
    }
    let stats = accounted(&nodes[0], 45 - 21 + 20).await;
    assert_eq!((stats.queued, stats.over_session_limit), (16, 24 + 4));
    for i in 40..56u16 {
        assert_eq!(next(&mut inbox).await.context.round, i);
    }
}

#[tokio::test]
async fn bytes_are_capped_per_peer() {
    let keys = keys(3);
    let net = MemoryNetwork::new();
    let limits = HoldLimits {
        peer_deliveries: 1000,
        peer_bytes: 64 * 1024,
        session_deliveries: 1000,
    };
    let nodes = cluster(&keys, &net, limits).await;
    let p1 = PARTIES[0];
    let big = vec![7u8; 10 * 1024];
    for i in 0..10u16 {
        send(&nodes[1], p1, SessionId::random(), i, &big).await;
    }
    // Six deliveries of 10 KiB (and their overhead) fit in 64 KiB, the seventh does not.
    let stats = accounted(&nodes[0], 10).await;
    assert_eq!((stats.held, stats.over_peer_limit), (6, 4), "{stats:?}");
    // Another peer's small deliveries are not affected.
    send(&nodes[2], p1, SessionId::random(), 0, b"small").await;
    let stats = accounted(&nodes[0], 11).await;
    assert_eq!(stats.held, 7, "{stats:?}");
}

#[tokio::test]
async fn a_session_that_does_not_read_holds_up_no_other() {
    let keys = keys(3);
    let net = MemoryNetwork::new();
    let nodes = cluster(&keys, &net, HoldLimits::default()).await;
    let [p1, p2, _] = PARTIES;
    let stuck = SessionId::random();
    let _stuck_inbox = nodes[0].open_session(stuck);
    // p2 sends far more than the session may queue to a session p1 never reads.
    let flood = 4 * HoldLimits::DEFAULT.session_deliveries as u16 + 100;
    for i in 0..flood {
        send(&nodes[1], p1, stuck, i, b"unread").await;
    }
    // Another session between the same two parties goes on.
    let live = SessionId::random();
    let mut inbox = nodes[0].open_session(live);
    send(&nodes[1], p1, live, 0, b"still served").await;
    let d = next(&mut inbox).await;
    assert_eq!((d.from, d.payload.as_slice()), (p2, &b"still served"[..]));
    // (The live session's delivery was read, so it is no longer counted.)
    let stats = accounted(&nodes[0], u64::from(flood)).await;
    let cap = HoldLimits::DEFAULT.session_deliveries;
    assert_eq!(stats.queued, cap, "{stats:?}");
    assert_eq!(
        stats.over_session_limit,
        u64::from(flood) - cap as u64,
        "{stats:?}"
    );
}

#[tokio::test]
async fn closing_a_session_gives_back_what_it_had_not_read() {
    let keys = keys(3);
    let net = MemoryNetwork::new();
    let limits = HoldLimits {
        peer_deliveries: 8,
        peer_bytes: 1024 * 1024,
        session_deliveries: 8,
    };
    let nodes = cluster(&keys, &net, limits).await;
    let p1 = PARTIES[0];
    let first = SessionId::random();
    let inbox = nodes[0].open_session(first);
    for i in 0..8u16 {
        send(&nodes[1], p1, first, i, b"never read").await;
    }
    let stats = accounted(&nodes[0], 8).await;
    assert_eq!(stats.queued, 8);
    drop(inbox);
    assert_eq!(nodes[0].router_stats().queued, 0);
    // p2's whole allowance is free again.
    let second = SessionId::random();
    let mut inbox = nodes[0].open_session(second);
    for i in 0..8u16 {
        send(&nodes[1], p1, second, i, b"read").await;
    }
    for i in 0..8u16 {
        assert_eq!(next(&mut inbox).await.context.round, i);
    }
    assert_eq!(nodes[0].router_stats().over_peer_limit, 0);
}

#[tokio::test]
async fn inboxes_end_when_the_transport_stops() {
    let keys = keys(3);
    let net = MemoryNetwork::new();
    let mut nodes = cluster(&keys, &net, HoldLimits::default()).await;
    let mut inbox = nodes[0].open_session(SessionId::random());
    let waiting = tokio::spawn(async move { inbox.recv().await.is_none() });
    tokio::time::sleep(Duration::from_millis(20)).await;
    drop(nodes.remove(0));
    let ended = tokio::time::timeout(WAIT, waiting).await;
    assert!(matches!(ended, Ok(Ok(true))), "{ended:?}");
}

#[tokio::test]
async fn zero_hold_limits_are_a_setup_error() {
    let keys = keys(3);
    let net = MemoryNetwork::new();
    for limits in [
        HoldLimits {
            peer_deliveries: 0,
            ..HoldLimits::DEFAULT
        },
        HoldLimits {
            peer_bytes: 0,
            ..HoldLimits::DEFAULT
        },
        HoldLimits {
            session_deliveries: 0,
            ..HoldLimits::DEFAULT
        },
    ] {
        let manager = keys.manager(PARTIES[0], ChannelConfig::default());
        let result = SecureTransport::start_limited(
            manager,
            Arc::new(net.connect(PARTIES[0])),
            GENEROUS,
            limits,
        )
        .await;
        assert!(
            matches!(result, Err(tessera_transport::TransportError::Setup(_))),
            "{limits:?}"
        );
    }
}
