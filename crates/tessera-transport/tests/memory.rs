//! The secure transport over the in-memory network.

mod common;

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
