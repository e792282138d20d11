//! Outcomes travel on each party's own result subject: a party that publishes another party's
//! signed outcome (a replay, or one it relays) is refused by the broker on that party's subject
//! and ignored (counted) by the coordinator on its own.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use tessera_channel::identity::{CoordinatorKey, PartyIdentity};
use tessera_channel::Roster;
use tessera_control::nats::NatsControl;
use tessera_control::{
    ControlChannel, Operation, Output, SessionOutcome, SignedOutcome, SignedStart, Starter,
};
use tessera_transport::nats::server::LocalNatsServer;
use tessera_transport::nats::{connect_client, connect_coordinator, NatsMetrics};
use tessera_wire::{subject, ClusterId, PartyId};

struct Cluster {
    ids: Vec<PartyIdentity>,
    seeds: Vec<String>,
    coordinator: CoordinatorKey,
    coordinator_seed: String,
    roster: Roster,
}

fn cluster() -> Cluster {
    let cluster = ClusterId::new("control").unwrap();
    let (mut ids, mut seeds, mut publics) = (Vec::new(), Vec::new(), Vec::new());
    for p in 1..=2 {
        let nkey = nkeys::KeyPair::new_user();
        let seed = nkey.seed().unwrap();
        let id = PartyIdentity::generate(PartyId(p), cluster.clone(), Some(seed.clone()));
        publics.push(id.public(Some(nkey.public_key())));
        ids.push(id);
        seeds.push(seed);
    }
    let nkey = nkeys::KeyPair::new_user();
    let coordinator_seed = nkey.seed().unwrap();
    let coordinator =
        CoordinatorKey::generate("main", cluster.clone(), Some(coordinator_seed.clone())).unwrap();
    let roster = Roster::build(cluster, 1, &publics)
        .unwrap()
        .with_coordinators(vec![coordinator.public(Some(nkey.public_key()))])
        .unwrap();
    Cluster {
        ids,
        seeds,
        coordinator,
        coordinator_seed,
        roster,
    }
}

#[tokio::test]
async fn a_party_cannot_report_for_another_party() {
    let c = cluster();
    let server = LocalNatsServer::start(&c.roster).unwrap();
    let config = server
        .coordinator_config(&c.roster, "main", &c.coordinator_seed)
        .unwrap();
    let client = connect_coordinator(&config, Arc::new(NatsMetrics::default()))
        .await
        .unwrap();
    let control = NatsControl::new(client.clone(), c.roster.cluster.clone());
    let key = CoordinatorKey::from_json(&c.coordinator.to_json()).unwrap();
    let starter = Starter::new(key, c.roster.clone()).unwrap();
    let (p1, p2) = (PartyId(1), PartyId(2));
    let party = |p: PartyId| {
        let config = server
            .client_config(&c.roster, p, &c.seeds[usize::from(p.0) - 1])
            .unwrap();
        async move {
            let metrics = Arc::new(NatsMetrics::default());
            (
                connect_client(&config, metrics.clone()).await.unwrap(),
                metrics,
            )
        }
    };
    let (n1, n1_metrics) = party(p1).await;
    let (n2, _) = party(p2).await;
    let cluster_id = c.roster.cluster.clone();
    let mut starts = n1.subscribe(subject::ctrl(&cluster_id)).await.unwrap();
    // async-nats's flush only writes the subscription out; it does not wait for the server to
    // register it. Probe until p1 receives what the coordinator publishes on ctrl, so the
    // start below cannot race the subscription.
    let mut registered = false;
    for _ in 0..100 {
        client
            .publish(subject::ctrl(&cluster_id), Bytes::from_static(b"probe"))
            .await
            .unwrap();
        client.flush().await.unwrap();
        if let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(50), starts.next()).await {
            registered = true;
            break;
        }
    }
    assert!(registered, "p1's ctrl subscription never became active");

    // Played by hand: when the start arrives, p2 reports on its own subject, and p1 (a rogue
    // party with valid broker credentials) publishes a copy of p2's signed outcome on p2's
    // subject (refused by the broker) and on its own (ignored by the coordinator), then its
    // own outcome.
    let ids: Vec<PartyIdentity> = c
        .ids
        .iter()
        .map(|i| PartyIdentity::from_json(&i.to_json()).unwrap())
        .collect();
    let roster = c.roster.clone();
    // Kept open: the broker reports the refusal to p1 asynchronously.
    let n1_open = n1.clone();
    let nodes = tokio::spawn(async move {
        // The first signed start (probes sent while waiting for the subscription are skipped).
        let start = loop {
            let message = starts.next().await.unwrap();
            if let Ok(signed) = SignedStart::from_bytes(&message.payload) {
                break signed.verify(&roster).unwrap();
            }
        };
        let outcome = |p: PartyId| {
            SignedOutcome::sign(
                &SessionOutcome {
                    session: start.session,
                    party: p,
                    result: Ok(Output::Primes {
                        ready: 1,
                        generating: false,
                    }),
                },
                &ids[usize::from(p.0) - 1],
            )
            .to_bytes()
        };
        let publish = |client: &async_nats::Client, on: PartyId, body: Vec<u8>| {
            let client = client.clone();
            let subject = subject::result(&roster.cluster, start.session, on);
            async move {
                client.publish(subject, Bytes::from(body)).await.unwrap();
                client.flush().await.unwrap();
            }
        };
        publish(&n2, p2, outcome(p2)).await;
        publish(&n1, p2, outcome(p2)).await;
        publish(&n1, p1, outcome(p2)).await;
        publish(&n1, p1, b"not an outcome".to_vec()).await;
        publish(&n1, p1, outcome(p1)).await;
    });
    let (start, signed) = starter.start(&[p1, p2], Operation::Primes);
    let outcomes = control
        .run(&start, &signed, Duration::from_secs(10))
        .await
        .unwrap();
    nodes.await.unwrap();
    let mut parties: Vec<PartyId> = outcomes.iter().map(|o| o.party).collect();
    parties.sort();
    assert_eq!(parties, [p1, p2]);
    assert_eq!(
        starter.check(&start, &outcomes).unwrap(),
        Output::Primes {
            ready: 1,
            generating: false
        }
    );
    // p2's outcome relayed on p1's subject and the junk were ignored and counted; the copy on
    // p2's subject never arrived (the broker refused p1's publication there).
    assert_eq!(control.refused(), 2);
    n1_open.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        n1_metrics
            .permission_violations
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

/// Issue 16's rogue party: p1 holds valid broker credentials (from the same provisioning as
/// `tessera nats-config`) and tries everything at once against a real nats-server. Sending
/// into p2's inbox in p3's name, reading p2's inbox, publishing a control message and publishing
/// on p2's result subject are refused by the broker (four permission violations reported to p1);
/// what the broker cannot tell apart, p2's signed outcome relayed on p1's own result subject and
/// junk there, is ignored by the coordinator and counted. Honest p2 sees none of it, and the
/// session completes with the genuine outcomes.
#[tokio::test]
async fn a_rogue_party_with_broker_credentials_is_refused_or_ignored_everywhere() {
    let c = cluster();
    let server = LocalNatsServer::start(&c.roster).unwrap();
    let config = server
        .coordinator_config(&c.roster, "main", &c.coordinator_seed)
        .unwrap();
    let client = connect_coordinator(&config, Arc::new(NatsMetrics::default()))
        .await
        .unwrap();
    let control = NatsControl::new(client.clone(), c.roster.cluster.clone());
    let key = CoordinatorKey::from_json(&c.coordinator.to_json()).unwrap();
    let starter = Starter::new(key, c.roster.clone()).unwrap();
    let (p1, p2, p3) = (PartyId(1), PartyId(2), PartyId(3));
    let cluster_id = c.roster.cluster.clone();
    let connect = |p: PartyId| {
        let config = server
            .client_config(&c.roster, p, &c.seeds[usize::from(p.0) - 1])
            .unwrap();
        async move {
            let metrics = Arc::new(NatsMetrics::default());
            (
                connect_client(&config, metrics.clone()).await.unwrap(),
                metrics,
            )
        }
    };
    let (rogue, rogue_metrics) = connect(p1).await;
    let (honest, _) = connect(p2).await;
    // p2 listens where the rogue would like to reach it: its inbox and the control subject.
    let mut p2_inbox = honest
        .subscribe(subject::inbox_wildcard(&cluster_id, p2))
        .await
        .unwrap();
    let mut p2_starts = honest.subscribe(subject::ctrl(&cluster_id)).await.unwrap();
    // Wait until p2's control subscription is live (flush does not wait for the server).
    let mut live = false;
    for _ in 0..100 {
        client
            .publish(subject::ctrl(&cluster_id), Bytes::from_static(b"probe"))
            .await
            .unwrap();
        client.flush().await.unwrap();
        if let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(50), p2_starts.next()).await
        {
            live = true;
            break;
        }
    }
    assert!(live, "p2's ctrl subscription never became active");
    while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(100), p2_starts.next()).await
    {
    }

    // 1. Into p2's inbox in p3's name.
    rogue
        .publish(
            subject::inbox(&cluster_id, p2, p3),
            Bytes::from_static(b"spoofed frame"),
        )
        .await
        .unwrap();
    // 2. Reading p2's inbox.
    let mut stolen = rogue
        .subscribe(subject::inbox_wildcard(&cluster_id, p2))
        .await
        .unwrap();
    // 3. A control message of its own making.
    rogue
        .publish(
            subject::ctrl(&cluster_id),
            Bytes::from_static(b"forged start"),
        )
        .await
        .unwrap();
    rogue.flush().await.unwrap();

    // 4. A session: p2 reports genuinely; the rogue publishes p2's signed outcome on p2's
    //    subject (refused by the broker) and on its own (ignored and counted), junk, then its
    //    own outcome.
    let ids: Vec<PartyIdentity> = c
        .ids
        .iter()
        .map(|i| PartyIdentity::from_json(&i.to_json()).unwrap())
        .collect();
    let roster = c.roster.clone();
    let (honest_for_session, rogue_for_session) = (honest.clone(), rogue.clone());
    let mut rogue_starts = rogue.subscribe(subject::ctrl(&cluster_id)).await.unwrap();
    let mut rogue_live = false;
    for _ in 0..100 {
        client
            .publish(subject::ctrl(&cluster_id), Bytes::from_static(b"probe"))
            .await
            .unwrap();
        client.flush().await.unwrap();
        if let Ok(Some(_)) =
            tokio::time::timeout(Duration::from_millis(50), rogue_starts.next()).await
        {
            rogue_live = true;
            break;
        }
    }
    assert!(
        rogue_live,
        "the rogue's ctrl subscription never became active"
    );
    let nodes = tokio::spawn(async move {
        let start = loop {
            let message = rogue_starts.next().await.unwrap();
            if let Ok(signed) = SignedStart::from_bytes(&message.payload) {
                break signed.verify(&roster).unwrap();
            }
        };
        let outcome = |p: PartyId| {
            SignedOutcome::sign(
                &SessionOutcome {
                    session: start.session,
                    party: p,
                    result: Ok(Output::Primes {
                        ready: 1,
                        generating: false,
                    }),
                },
                &ids[usize::from(p.0) - 1],
            )
            .to_bytes()
        };
        let publish = |client: &async_nats::Client, on: PartyId, body: Vec<u8>| {
            let client = client.clone();
            let subject = subject::result(&roster.cluster, start.session, on);
            async move {
                client.publish(subject, Bytes::from(body)).await.unwrap();
                client.flush().await.unwrap();
            }
        };
        publish(&honest_for_session, p2, outcome(p2)).await;
        publish(&rogue_for_session, p2, outcome(p2)).await;
        publish(&rogue_for_session, p1, outcome(p2)).await;
        publish(&rogue_for_session, p1, b"not an outcome".to_vec()).await;
        publish(&rogue_for_session, p1, outcome(p1)).await;
    });
    let (start, signed) = starter.start(&[p1, p2], Operation::Primes);
    let outcomes = control
        .run(&start, &signed, Duration::from_secs(10))
        .await
        .unwrap();
    nodes.await.unwrap();
    let mut parties: Vec<PartyId> = outcomes.iter().map(|o| o.party).collect();
    parties.sort();
    assert_eq!(parties, [p1, p2]);
    assert!(starter.check(&start, &outcomes).is_ok());
    // What the broker cannot tell apart was ignored and counted by the coordinator.
    assert_eq!(control.refused(), 2);

    // The broker refused the four others and told the rogue.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while rogue_metrics
        .permission_violations
        .load(std::sync::atomic::Ordering::Relaxed)
        < 4
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} permission violations",
            rogue_metrics
                .permission_violations
                .load(std::sync::atomic::Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        rogue_metrics
            .permission_violations
            .load(std::sync::atomic::Ordering::Relaxed),
        4
    );
    // Honest p2 received nothing from the rogue: no inbox frame and no forged control
    // message (only the coordinator's signed start); the rogue read nothing of p2's.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), p2_inbox.next())
            .await
            .is_err(),
        "a spoofed frame reached p2's inbox"
    );
    while let Ok(Some(message)) =
        tokio::time::timeout(Duration::from_millis(300), p2_starts.next()).await
    {
        assert_ne!(
            &message.payload[..],
            b"forged start",
            "the rogue's control message reached p2"
        );
    }
    assert!(
        tokio::time::timeout(Duration::from_millis(100), stolen.next())
            .await
            .is_err(),
        "the rogue read p2's inbox"
    );
}
