//! The secure transport over the in-memory network.

use crate::common;

use std::sync::Arc;

use bytes::Bytes;
use common::*;
use tessera_channel::{ChannelConfig, RefusalReason};
use tessera_transport::memory::MemoryNetwork;
use tessera_transport::{SecureTransport, Transport, TransportError};

async fn memory_cluster(keys: &Keys, net: &MemoryNetwork) -> Vec<SecureTransport> {
    let mut nodes = Vec::new();
    for p in PARTIES {
        let transport = Arc::new(net.connect(p));
        nodes.push(keys.secure(p, transport, ChannelConfig::default()).await);
    }
    nodes
}

#[tokio::test]
async fn every_message_kind_round_trips_in_memory() {
    let keys = keys(3);
    let nodes = memory_cluster(&keys, &MemoryNetwork::new()).await;
    exchange_every_kind(&nodes).await;
}

#[tokio::test]
async fn garbage_is_counted_and_the_channel_keeps_serving() {
    let keys = keys(3);
    let net = MemoryNetwork::new();
    let nodes = memory_cluster(&keys, &net).await;
    let [p1, p2, _] = PARTIES;
    // p2's raw transport injects garbage into p1's inbox.
    let raw = net.connect(p2);
    raw.send(p1, Bytes::from_static(b"\x01\x02garbage"))
        .await
        .unwrap();
    nodes[1].send(p1, ctx(1), b"after garbage").await.unwrap();
    expect(&nodes[0], p2, b"after garbage").await;
    assert_eq!(nodes[0].refusals().get(RefusalReason::Malformed), 1);
}

#[tokio::test]
async fn sending_to_a_stopped_party_fails_clearly() {
    let keys = keys(3);
    let net = MemoryNetwork::new();
    let p1 = keys
        .secure(
            PARTIES[0],
            Arc::new(net.connect(PARTIES[0])),
            ChannelConfig::default(),
        )
        .await;
    let err = p1.send(PARTIES[1], ctx(1), b"anyone?").await.unwrap_err();
    assert!(
        matches!(
            err,
            tessera_transport::SecureError::Transport(TransportError::PeerUnavailable(p)) if p == PARTIES[1]
        ),
        "{err}"
    );
}

fn session_ctx(session: tessera_wire::SessionId, round: u16) -> tessera_channel::FrameContext {
    tessera_channel::FrameContext {
        session,
        round,
        protocol: tessera_wire::Protocol::PING,
    }
}

#[tokio::test]
async fn deliveries_are_routed_to_their_sessions_even_when_they_arrive_early() {
    let keys = keys(3);
    let nodes = memory_cluster(&keys, &MemoryNetwork::new()).await;
    let [p1, p2, p3] = PARTIES;
    let (s1, s2) = (
        tessera_wire::SessionId::random(),
        tessera_wire::SessionId::random(),
    );
    // Session 1 traffic arrives at p1 before p1 opens it; session 2 interleaves.
    for i in 0..5u16 {
        nodes[1]
            .send(p1, session_ctx(s1, i), &i.to_be_bytes())
            .await
            .unwrap();
        nodes[2]
            .send(p1, session_ctx(s2, i), &i.to_be_bytes())
            .await
            .unwrap();
    }
    // Once all ten are held, open session 1: the early ones come first, in order.
    let deadline = tokio::time::Instant::now() + WAIT;
    while nodes[0].router_stats().held < 10 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{:?}",
            nodes[0].router_stats()
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let mut inbox1 = nodes[0].open_session(s1);
    for i in 5..8u16 {
        nodes[1]
            .send(p1, session_ctx(s1, i), &i.to_be_bytes())
            .await
            .unwrap();
    }
    for i in 0..8u16 {
        let d = inbox1.recv().await.unwrap();
        assert_eq!((d.from, d.context.session), (p2, s1));
        assert_eq!(d.payload, i.to_be_bytes());
    }
    let mut inbox2 = nodes[0].open_session(s2);
    for i in 0..5u16 {
        let d = inbox2.recv().await.unwrap();
        assert_eq!((d.from, d.payload.as_slice()), (p3, &i.to_be_bytes()[..]));
    }
    // Closing a session drops its late frames, counted; other traffic is unaffected.
    drop(inbox1);
    nodes[1]
        .send(p1, session_ctx(s1, 99), b"late")
        .await
        .unwrap();
    nodes[2]
        .send(p1, session_ctx(s2, 99), b"on time")
        .await
        .unwrap();
    assert_eq!(inbox2.recv().await.unwrap().payload, b"on time");
    let deadline = tokio::time::Instant::now() + WAIT;
    while nodes[0].router_stats().late_for_closed_session < 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "late frame not counted"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert!(nodes[0]
        .recv_timeout(std::time::Duration::from_millis(50))
        .await
        .is_none());
}
