//! The coordinator's broker user over a real `nats-server` with the generated configuration: it
//! may publish control messages and read results, and nothing else; parties may not publish
//! control messages.

use crate::common;

use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_nats::{Client, Message, Subscriber};
use bytes::Bytes;
use common::*;
use futures::StreamExt;
use tessera_channel::identity::CoordinatorKey;
use tessera_transport::nats::provision::{provision, ServerSettings};
use tessera_transport::nats::server::LocalNatsServer;
use tessera_transport::nats::{connect_client, connect_coordinator, NatsMetrics, NatsTransport};
use tessera_transport::TransportError;
use tessera_wire::{subject, PartyId, SessionId};

/// A three-party cluster whose roster also lists coordinator `main` (with a NATS user) and
/// `offline` (without one).
struct Cluster {
    keys: Keys,
    coordinator: CoordinatorKey,
}

fn cluster() -> Cluster {
    let mut keys = keys(3);
    let nkey = nkeys::KeyPair::new_user();
    let coordinator = CoordinatorKey::generate(
        "main",
        keys.roster.cluster.clone(),
        Some(nkey.seed().unwrap()),
    )
    .unwrap();
    let offline = CoordinatorKey::generate("offline", keys.roster.cluster.clone(), None).unwrap();
    keys.roster = keys
        .roster
        .clone()
        .with_coordinators(vec![
            offline.public(None),
            coordinator.public(Some(nkey.public_key())),
        ])
        .unwrap();
    Cluster { keys, coordinator }
}

impl Cluster {
    async fn coordinator(&self, server: &LocalNatsServer, metrics: Arc<NatsMetrics>) -> Client {
        let config = server
            .coordinator_config(
                &self.keys.roster,
                self.coordinator.name(),
                self.coordinator.nats_seed().unwrap(),
            )
            .unwrap();
        connect_coordinator(&config, metrics).await.unwrap()
    }

    async fn party(
        &self,
        server: &LocalNatsServer,
        party: PartyId,
        metrics: Arc<NatsMetrics>,
    ) -> Client {
        let config = server
            .client_config(&self.keys.roster, party, self.keys.seed(party))
            .unwrap();
        connect_client(&config, metrics).await.unwrap()
    }
}

/// Publishes numbered messages on `subject` until `subscriber` yields one: subscriptions
/// register asynchronously, and core NATS drops what arrives before. Returns the first that
/// arrived, after draining late ones.
async fn deliver(client: &Client, subject: String, subscriber: &mut Subscriber) -> Message {
    for attempt in 0..50u32 {
        client
            .publish(subject.clone(), Bytes::from(attempt.to_be_bytes().to_vec()))
            .await
            .unwrap();
        client.flush().await.unwrap();
        if let Ok(Some(m)) =
            tokio::time::timeout(Duration::from_millis(200), subscriber.next()).await
        {
            while let Ok(Some(_)) =
                tokio::time::timeout(Duration::from_millis(300), subscriber.next()).await
            {
            }
            return m;
        }
    }
    panic!("nothing published on {subject} arrived");
}

/// Waits until the server has reported `n` permission violations to `metrics`, then checks
/// that no more arrive.
async fn expect_violations(metrics: &NatsMetrics, n: u64) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while metrics.permission_violations.load(Ordering::Relaxed) < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of {n} permission violations reported",
            metrics.permission_violations.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(metrics.permission_violations.load(Ordering::Relaxed), n);
}

async fn nothing_arrives(subscriber: &mut Subscriber) {
    if let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(300), subscriber.next()).await {
        panic!("unexpected message on {}", m.subject);
    }
}

#[tokio::test]
async fn coordinator_publishes_control_messages_and_reads_results() {
    let cluster = cluster();
    let c = cluster.keys.roster.cluster.clone();
    let server = LocalNatsServer::start(&cluster.keys.roster).unwrap();
    let [p1, p2, _] = PARTIES;

    // Only the coordinator with a NATS user got a certificate.
    let files = server.provisioned().coordinator_client("main").unwrap();
    assert!(files.cert.ends_with("clients/coord-main/cert.pem"));
    assert!(files.key.ends_with("clients/coord-main/key.pem"));
    assert_eq!(
        std::fs::metadata(&files.key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(server.provisioned().coordinator_client("offline").is_none());
    assert!(server
        .coordinator_config(&cluster.keys.roster, "offline", "SU")
        .is_err());

    let coordinator_metrics = Arc::new(NatsMetrics::default());
    let party_metrics = Arc::new(NatsMetrics::default());
    let coordinator = cluster
        .coordinator(&server, coordinator_metrics.clone())
        .await;
    let (n1, n2) = (
        cluster.party(&server, p1, party_metrics.clone()).await,
        cluster.party(&server, p2, party_metrics.clone()).await,
    );

    // Control messages reach every party; the party checks the signature against the roster.
    let mut ctrl1 = n1.subscribe(subject::ctrl(&c)).await.unwrap();
    let mut ctrl2 = n2.subscribe(subject::ctrl(&c)).await.unwrap();
    deliver(&coordinator, subject::ctrl(&c), &mut ctrl1).await;
    deliver(&coordinator, subject::ctrl(&c), &mut ctrl2).await;
    let start = b"start session 5";
    let signature = cluster.coordinator.sign(start);
    let mut signed = start.to_vec();
    signed.extend_from_slice(&signature.to_bytes());
    coordinator
        .publish(subject::ctrl(&c), Bytes::from(signed.clone()))
        .await
        .unwrap();
    coordinator.flush().await.unwrap();
    let entry = cluster.keys.roster.coordinator("main").unwrap();
    for ctrl in [&mut ctrl1, &mut ctrl2] {
        // Skip leftovers of the registration rounds.
        let got = loop {
            let m = tokio::time::timeout(WAIT, ctrl.next())
                .await
                .expect("control message")
                .unwrap();
            if m.payload.as_ref() == signed.as_slice() {
                break m;
            }
        };
        let (body, sig) = got.payload.split_at(got.payload.len() - 64);
        entry
            .verifying_key()
            .unwrap()
            .verify_strict(body, &sig.try_into().unwrap())
            .unwrap();
    }

    // Results of a session reach the coordinator.
    let mut results = coordinator
        .subscribe(subject::result_wildcard(&c))
        .await
        .unwrap();
    let session = SessionId::random();
    let got = deliver(&n2, subject::result(&c, session, p2), &mut results).await;
    assert_eq!(got.subject.as_str(), subject::result(&c, session, p2));

    // A request on ctrl is answered through the coordinator's private reply inbox.
    let answer = tokio::spawn(async move {
        loop {
            let request = ctrl1.next().await.unwrap();
            if let Some(reply) = request.reply {
                n1.publish(reply, Bytes::from_static(b"ack")).await.unwrap();
                n1.flush().await.unwrap();
                return;
            }
        }
    });
    let response = tokio::time::timeout(
        WAIT,
        coordinator.request(subject::ctrl(&c), Bytes::from_static(b"status?")),
    )
    .await
    .expect("a reply in time")
    .unwrap();
    assert_eq!(response.payload.as_ref(), b"ack");
    let prefix = subject::coordinator_reply_prefix(&c, "main");
    assert!(
        response.subject.as_str().starts_with(&format!("{prefix}.")),
        "{}",
        response.subject
    );
    answer.await.unwrap();

    coordinator.flush().await.unwrap();
    n2.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        coordinator_metrics
            .permission_violations
            .load(Ordering::Relaxed),
        0
    );
    assert_eq!(
        party_metrics.permission_violations.load(Ordering::Relaxed),
        0
    );
}

#[tokio::test]
async fn broker_confines_the_coordinator_and_keeps_parties_off_ctrl() {
    let cluster = cluster();
    let c = cluster.keys.roster.cluster.clone();
    let server = LocalNatsServer::start(&cluster.keys.roster).unwrap();
    let [p1, p2, _] = PARTIES;
    let coordinator_metrics = Arc::new(NatsMetrics::default());
    let coordinator = cluster
        .coordinator(&server, coordinator_metrics.clone())
        .await;
    let n1 = cluster
        .party(&server, p1, Arc::new(NatsMetrics::default()))
        .await;
    let n2 = cluster
        .party(&server, p2, Arc::new(NatsMetrics::default()))
        .await;
    let mut inbox2 = n2.subscribe(subject::inbox_wildcard(&c, p2)).await.unwrap();
    deliver(&n1, subject::inbox(&c, p2, p1), &mut inbox2).await;
    let mut ctrl2 = n2.subscribe(subject::ctrl(&c)).await.unwrap();
    deliver(&coordinator, subject::ctrl(&c), &mut ctrl2).await;
    nothing_arrives(&mut inbox2).await;
    nothing_arrives(&mut ctrl2).await;
    assert_eq!(
        coordinator_metrics
            .permission_violations
            .load(Ordering::Relaxed),
        0
    );

    // The coordinator may not publish into a party's inbox (here in p1's name).
    coordinator
        .publish(subject::inbox(&c, p2, p1), Bytes::from_static(b"forged"))
        .await
        .unwrap();
    coordinator.flush().await.unwrap();
    expect_violations(&coordinator_metrics, 1).await;
    nothing_arrives(&mut inbox2).await;

    // Nor subscribe to a party's inbox or reply inboxes: both are refused and never yield.
    let mut foreign_inbox = coordinator
        .subscribe(subject::inbox_wildcard(&c, p2))
        .await
        .unwrap();
    coordinator.flush().await.unwrap();
    expect_violations(&coordinator_metrics, 2).await;
    let mut foreign_replies = coordinator
        .subscribe(format!("{}.>", subject::reply_inbox_prefix(&c, p2)))
        .await
        .unwrap();
    coordinator.flush().await.unwrap();
    expect_violations(&coordinator_metrics, 3).await;
    let got = deliver(&n1, subject::inbox(&c, p2, p1), &mut inbox2).await;
    assert_eq!(got.subject.as_str(), subject::inbox(&c, p2, p1));
    nothing_arrives(&mut foreign_inbox).await;
    nothing_arrives(&mut foreign_replies).await;

    // Nor publish a result in a party's place.
    coordinator
        .publish(
            subject::result(&c, SessionId::random(), p1),
            Bytes::from_static(b"forged result"),
        )
        .await
        .unwrap();
    coordinator.flush().await.unwrap();
    expect_violations(&coordinator_metrics, 4).await;

    // A party publishes results on its own subject only: p1 publishing one on p2's is refused
    // by the broker and never reaches the coordinator.
    let session = SessionId::random();
    let mut results = coordinator
        .subscribe(subject::session_results(&c, session))
        .await
        .unwrap();
    coordinator.flush().await.unwrap();
    let p1_metrics = Arc::new(NatsMetrics::default());
    let rogue = cluster.party(&server, p1, p1_metrics.clone()).await;
    rogue
        .publish(
            subject::result(&c, session, p2),
            Bytes::from_static(b"p2's result, says p1"),
        )
        .await
        .unwrap();
    rogue.flush().await.unwrap();
    expect_violations(&p1_metrics, 1).await;
    nothing_arrives(&mut results).await;
    let got = deliver(&rogue, subject::result(&c, session, p1), &mut results).await;
    assert_eq!(got.subject.as_str(), subject::result(&c, session, p1));

    // A party may not publish control messages: refused by the broker, never delivered, and
    // surfaced as a typed error through the transport API.
    let config = server
        .client_config(&cluster.keys.roster, p1, cluster.keys.seed(p1))
        .unwrap();
    let transport = NatsTransport::connect(&config).await.unwrap();
    let raw = connect_client(&config, transport.metrics().clone())
        .await
        .unwrap();
    raw.publish(subject::ctrl(&c), Bytes::from_static(b"start session evil"))
        .await
        .unwrap();
    raw.flush().await.unwrap();
    expect_violations(transport.metrics(), 1).await;
    let err = transport.check_permissions().await.unwrap_err();
    assert!(
        matches!(
            err,
            TransportError::PermissionViolation(ref t)
                if t.contains("Publish") && t.contains(&subject::ctrl(&c))
        ),
        "{err}"
    );
    nothing_arrives(&mut ctrl2).await;
}

#[test]
fn provisioning_refuses_a_shared_nats_user() {
    let cluster = cluster();
    let p1_user = cluster.keys.roster.parties[0].nats_user.clone();
    let mut coordinators = cluster.keys.roster.coordinators.clone();
    coordinators[0].nats_user = p1_user;
    let roster = cluster
        .keys
        .roster
        .clone()
        .with_coordinators(coordinators)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let err = provision(&roster, &ServerSettings::loopback(4222), dir.path()).unwrap_err();
    assert!(err.to_string().contains("same NATS user"), "{err}");
    let mut bad = cluster.keys.roster.clone();
    bad.coordinators[0].nats_user = Some("not-an-nkey".into());
    let err = provision(&bad, &ServerSettings::loopback(4222), dir.path()).unwrap_err();
    assert!(err.to_string().contains("is not an NKey user"), "{err}");
}
