//! The transport over a real `nats-server` with the generated configuration: mTLS, one NKey
//! user per party, subject permissions.

use crate::common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use futures::StreamExt;
use tessera_channel::{ChannelConfig, RefusalReason};
use tessera_transport::nats::server::LocalNatsServer;
use tessera_transport::nats::{connect_client, NatsMetrics, NatsTransport};
use tessera_transport::{Transport, TransportError};
use tessera_wire::subject;

async fn cluster(
    keys: &Keys,
    server: &LocalNatsServer,
    config: ChannelConfig,
) -> Vec<tessera_transport::SecureTransport> {
    let mut nodes = Vec::new();
    for p in PARTIES {
        let transport = Arc::new(keys.nats(server, p).await);
        nodes.push(keys.secure(p, transport, config.clone()).await);
    }
    nodes
}

#[tokio::test]
async fn every_message_kind_round_trips_over_nats() {
    let keys = keys(3);
    let server = LocalNatsServer::start(&keys.roster).unwrap();
    let nodes = cluster(&keys, &server, ChannelConfig::default()).await;
    exchange_every_kind(&nodes).await;
}

#[tokio::test]
async fn rekey_mid_stream_over_nats_keeps_delivery() {
    let keys = keys(3);
    let server = LocalNatsServer::start(&keys.roster).unwrap();
    let nodes = cluster(
        &keys,
        &server,
        ChannelConfig {
            rekey_after_messages: 7,
            ..ChannelConfig::default()
        },
    )
    .await;
    let [p1, p2, _] = PARTIES;
    nodes[0].send(p2, ctx(0), b"first").await.unwrap();
    expect(&nodes[1], p1, b"first").await;
    let first_epoch = nodes[0].epoch(p2).unwrap();
    for i in 0..60u16 {
        nodes[0].send(p2, ctx(i), &i.to_be_bytes()).await.unwrap();
        if i == 30 {
            nodes[1].rekey(p1).await.unwrap();
        }
    }
    let mut got = Vec::new();
    for _ in 0..60 {
        let d = nodes[1]
            .recv_timeout(WAIT)
            .await
            .expect("delivery across rekeys");
        got.push(u16::from_be_bytes(d.payload.try_into().unwrap()));
    }
    got.sort();
    assert_eq!(got, (0..60).collect::<Vec<_>>());
    // The handshakes complete in the background; wait for both sides to agree on a new epoch.
    let deadline = tokio::time::Instant::now() + WAIT;
    while nodes[0].epoch(p2) == Some(first_epoch) || nodes[0].epoch(p2) != nodes[1].epoch(p1) {
        assert!(tokio::time::Instant::now() < deadline, "no rekey completed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    nodes[0]
        .send(p2, ctx(99), b"on the new epoch")
        .await
        .unwrap();
    expect(&nodes[1], p1, b"on the new epoch").await;
    nodes[1].send(p1, ctx(99), b"and back").await.unwrap();
    expect(&nodes[0], p2, b"and back").await;
    assert_eq!(nodes[0].refusals().total() + nodes[1].refusals().total(), 0);
}

#[tokio::test]
async fn broker_refuses_spoofed_sender_and_foreign_subscription() {
    let keys = keys(3);
    let server = LocalNatsServer::start(&keys.roster).unwrap();
    let [p1, p2, p3] = PARTIES;
    let nodes = cluster(&keys, &server, ChannelConfig::default()).await;
    // p1's credentials, used directly against the broker.
    let metrics = Arc::new(NatsMetrics::default());
    let config = server
        .client_config(&keys.roster, p1, keys.seed(p1))
        .unwrap();
    let raw = connect_client(&config, metrics.clone()).await.unwrap();

    // Publishing into p2's inbox in p3's name is refused by the broker.
    raw.publish(
        subject::inbox(&keys.roster.cluster, p2, p3),
        Bytes::from_static(b"spoof"),
    )
    .await
    .unwrap();
    raw.flush().await.unwrap();
    // Subscribing to p2's inbox is refused too, and the subscription never yields.
    let mut foreign = raw
        .subscribe(subject::inbox_wildcard(&keys.roster.cluster, p2))
        .await
        .unwrap();
    raw.flush().await.unwrap();
    // Nor may it read p2's reply inboxes.
    let mut replies = raw
        .subscribe(format!(
            "{}.>",
            subject::reply_inbox_prefix(&keys.roster.cluster, p2)
        ))
        .await
        .unwrap();
    // Give the server's asynchronous -ERR lines time to arrive, then prove traffic still flows.
    nodes[2].send(p2, ctx(1), b"legit").await.unwrap();
    expect(&nodes[1], p3, b"legit").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(metrics.permission_violations.load(Ordering::Relaxed), 3);
    assert!(
        tokio::time::timeout(Duration::from_millis(300), foreign.next())
            .await
            .is_err()
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(50), replies.next())
            .await
            .is_err()
    );
    // p2 never saw the spoofed message: nothing was delivered or refused at p2.
    assert!(nodes[1]
        .recv_timeout(Duration::from_millis(300))
        .await
        .is_none());
    assert_eq!(nodes[1].refusals().total(), 0);

    // The same violation through the transport API surfaces as a typed error.
    let transport = NatsTransport::connect(&config).await.unwrap();
    let spoof_client = connect_client(&config, transport.metrics().clone())
        .await
        .unwrap();
    spoof_client
        .publish(
            subject::inbox(&keys.roster.cluster, p2, p3),
            Bytes::from_static(b"x"),
        )
        .await
        .unwrap();
    spoof_client.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let err = transport.check_permissions().await.unwrap_err();
    assert!(
        matches!(err, TransportError::PermissionViolation(ref t) if t.contains("Publish")),
        "{err}"
    );
}

#[tokio::test]
async fn broker_refuses_clients_without_certificate_or_known_nkey() {
    let keys = keys(3);
    let server = LocalNatsServer::start(&keys.roster).unwrap();
    let p1 = PARTIES[0];
    let good = server
        .client_config(&keys.roster, p1, keys.seed(p1))
        .unwrap();

    // No client certificate: TLS handshake refused.
    let err = async_nats::ConnectOptions::with_nkey(keys.seed(p1).to_owned())
        .require_tls(true)
        .add_root_certificates(good.ca_file.clone())
        .connection_timeout(Duration::from_secs(3))
        .connect(good.url.as_str())
        .await
        .unwrap_err();
    assert!(
        err.to_string().to_lowercase().contains("certificate"),
        "{err}"
    );

    // A certificate from another CA is refused the same way.
    let other_keys = keys_with_other_ca();
    let other_server = LocalNatsServer::start(&other_keys.roster).unwrap();
    let foreign_files = other_server.provisioned().client(p1).unwrap().clone();
    let mut foreign = good.clone();
    foreign.cert_file = foreign_files.cert;
    foreign.key_file = foreign_files.key;
    let err = NatsTransport::connect(&foreign)
        .await
        .err()
        .expect("refused");
    assert!(matches!(err, TransportError::Connect { .. }), "{err}");

    // A valid certificate with an NKey that is not in the roster: authorization violation.
    let mut stranger = good.clone();
    stranger.nkey_seed = zeroize::Zeroizing::new(nkeys::KeyPair::new_user().seed().unwrap());
    let err = NatsTransport::connect(&stranger)
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("authorization violation"), "{err}");

    // The genuine credentials work.
    NatsTransport::connect(&good).await.unwrap();
}

fn keys_with_other_ca() -> Keys {
    keys(2)
}

#[tokio::test]
async fn injected_frames_over_nats_are_refused_and_counted() {
    let keys = keys(3);
    let server = LocalNatsServer::start(&keys.roster).unwrap();
    let [p1, p2, p3] = PARTIES;
    let nodes = cluster(&keys, &server, ChannelConfig::default()).await;
    nodes[2].send(p1, ctx(1), b"hello").await.unwrap();
    expect(&nodes[0], p3, b"hello").await;
    // p3 (an authenticated broker user, but a misbehaving party) sends garbage and an
    // oversized frame to p1 with its raw transport.
    let raw = keys.nats(&server, p3).await;
    raw.send(p1, Bytes::from_static(b"not a frame"))
        .await
        .unwrap();
    // Over our 768 KiB payload limit, under the broker's 1 MiB.
    raw.send(p1, Bytes::from(vec![1u8; 900 * 1024]))
        .await
        .unwrap();
    raw.check_permissions().await.unwrap();
    // Frames from two connections have no mutual order: wait for both refusals.
    let deadline = tokio::time::Instant::now() + WAIT;
    while nodes[0].refusals().get(RefusalReason::Malformed) < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{:?}",
            nodes[0].refusals()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    nodes[2].send(p1, ctx(2), b"still here").await.unwrap();
    expect(&nodes[0], p3, b"still here").await;
    assert_eq!(nodes[0].refusals().total(), 2, "{:?}", nodes[0].refusals());
    // p2 is unaffected.
    nodes[0].send(p2, ctx(3), b"p2?").await.unwrap();
    expect(&nodes[1], p1, b"p2?").await;
}

#[tokio::test]
async fn parties_reconnect_after_a_broker_restart() {
    let keys = keys(3);
    let mut server = LocalNatsServer::start(&keys.roster).unwrap();
    let [p1, p2, _] = PARTIES;
    let transport = Arc::new(keys.nats(&server, p1).await);
    let metrics = transport.metrics().clone();
    let a = keys.secure(p1, transport, ChannelConfig::default()).await;
    let b_transport = Arc::new(keys.nats(&server, p2).await);
    let b = keys.secure(p2, b_transport, ChannelConfig::default()).await;
    a.send(p2, ctx(1), b"before").await.unwrap();
    expect(&b, p1, b"before").await;

    server.restart().unwrap();
    // NATS is at-most-once: frames sent while a client is still reconnecting are lost, so
    // keep sending until one arrives, as protocol rounds with deadlines do.
    let mut delivered = false;
    for attempt in 0..50u16 {
        // A send may fail while the client is reconnecting; that is what retrying is for.
        let _ = a.send(p2, ctx(2), &attempt.to_be_bytes()).await;
        if b.recv_timeout(Duration::from_millis(200)).await.is_some() {
            delivered = true;
            break;
        }
    }
    assert!(delivered, "no delivery after the broker restarted");
    assert!(metrics.disconnects.load(Ordering::Relaxed) >= 1);
    assert!(metrics.connects.load(Ordering::Relaxed) >= 2);
    // Same channel keys as before the restart: the broker never held any.
    b.send(p1, ctx(3), b"after").await.unwrap();
    expect(&a, p2, b"after").await;
    assert_eq!(a.refusals().total() + b.refusals().total(), 0);
}

#[tokio::test]
async fn replies_travel_through_the_requesters_private_inbox() {
    let keys = keys(3);
    let server = LocalNatsServer::start(&keys.roster).unwrap();
    let [p1, p2, _] = PARTIES;
    let connect = |p| {
        let config = server.client_config(&keys.roster, p, keys.seed(p)).unwrap();
        async move {
            connect_client(&config, Arc::new(NatsMetrics::default()))
                .await
                .unwrap()
        }
    };
    let (responder, requester) = (connect(p1).await, connect(p2).await);
    let mut inbox = responder
        .subscribe(subject::inbox_wildcard(&keys.roster.cluster, p1))
        .await
        .unwrap();
    responder.flush().await.unwrap();
    let answer = tokio::spawn(async move {
        let request = inbox.next().await.unwrap();
        let reply = request.reply.expect("request carries a reply subject");
        // allow_responses lets p1 publish to p2's reply inbox for this request only.
        responder
            .publish(reply, Bytes::from_static(b"pong"))
            .await
            .unwrap();
        responder.flush().await.unwrap();
    });
    let subject = subject::inbox(&keys.roster.cluster, p1, p2);
    let mut response = None;
    for _ in 0..20 {
        let request = requester.request(subject.clone(), Bytes::from_static(b"ping"));
        if let Ok(Ok(m)) = tokio::time::timeout(Duration::from_millis(500), request).await {
            response = Some(m);
            break;
        }
    }
    let response = response.expect("a reply");
    assert_eq!(response.payload.as_ref(), b"pong");
    let prefix = subject::reply_inbox_prefix(&keys.roster.cluster, p2);
    assert!(
        response.subject.as_str().starts_with(&prefix),
        "{}",
        response.subject
    );
    answer.await.unwrap();
}
