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

/// A real nats-server provisioned for the cluster, the coordinator connected to it, and the
/// means to connect parties with their own credentials.
struct Broker {
    c: Cluster,
    server: LocalNatsServer,
    client: async_nats::Client,
    control: NatsControl,
    starter: Starter,
}

impl Broker {
    async fn start() -> Broker {
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
        Broker {
            c,
            server,
            client,
            control,
            starter,
        }
    }

    /// Party `p` connected with its own credentials, and the counters of its connection.
    async fn party(&self, p: PartyId) -> (async_nats::Client, Arc<NatsMetrics>) {
        let config = self
            .server
            .client_config(&self.c.roster, p, &self.c.seeds[usize::from(p.0) - 1])
            .unwrap();
        let metrics = Arc::new(NatsMetrics::default());
        (
            connect_client(&config, metrics.clone()).await.unwrap(),
            metrics,
        )
    }

    /// `client` subscribed to the control subject, once the server delivers on it.
    /// async-nats's flush only writes the subscription out; it does not wait for the server to
    /// register it. So the coordinator probes until one arrives, so that a start published
    /// afterwards cannot race the subscription.
    async fn ctrl_subscription(&self, client: &async_nats::Client) -> async_nats::Subscriber {
        let ctrl = subject::ctrl(&self.c.roster.cluster);
        let mut starts = client.subscribe(ctrl.clone()).await.unwrap();
        for _ in 0..100 {
            self.client
                .publish(ctrl.clone(), Bytes::from_static(b"probe"))
                .await
                .unwrap();
            self.client.flush().await.unwrap();
            if let Ok(Some(_)) =
                tokio::time::timeout(Duration::from_millis(50), starts.next()).await
            {
                return starts;
            }
        }
        panic!("a ctrl subscription never became active");
    }

    /// A primes session of p1 and p2, played by hand. When the start arrives (on `starts`, p1's
    /// subscription), `honest` (p2) reports on its own subject, and `rogue` (p1, a party with
    /// valid broker credentials) publishes a copy of p2's signed outcome on p2's subject
    /// (refused by the broker) and on its own (ignored by the coordinator), junk on its own,
    /// then its own outcome. Checks that the session completes with both genuine outcomes and
    /// that the coordinator ignored and counted the relayed copy and the junk.
    async fn rogue_session(
        &self,
        mut starts: async_nats::Subscriber,
        rogue: &async_nats::Client,
        honest: &async_nats::Client,
    ) {
        let (p1, p2) = (PartyId(1), PartyId(2));
        let ids: Vec<PartyIdentity> = self
            .c
            .ids
            .iter()
            .map(|i| PartyIdentity::from_json(&i.to_json()).unwrap())
            .collect();
        let roster = self.c.roster.clone();
        let (rogue, honest) = (rogue.clone(), honest.clone());
        let nodes = tokio::spawn(async move {
            // The first signed start (probes sent while waiting for subscriptions are skipped).
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
            publish(&honest, p2, outcome(p2)).await;
            publish(&rogue, p2, outcome(p2)).await;
            publish(&rogue, p1, outcome(p2)).await;
            publish(&rogue, p1, b"not an outcome".to_vec()).await;
            publish(&rogue, p1, outcome(p1)).await;
        });
        let (start, signed) = self.starter.start(&[p1, p2], Operation::Primes);
        let outcomes = self
            .control
            .run(&start, &signed, Duration::from_secs(10))
            .await
            .unwrap();
        nodes.await.unwrap();
        let mut parties: Vec<PartyId> = outcomes.iter().map(|o| o.party).collect();
        parties.sort();
        assert_eq!(parties, [p1, p2]);
        assert_eq!(
            self.starter.check(&start, &outcomes).unwrap(),
            Output::Primes {
                ready: 1,
                generating: false
            }
        );
        // p2's outcome relayed on p1's subject and the junk were ignored and counted; the copy
        // on p2's subject never arrived (the broker refused p1's publication there).
        assert_eq!(self.control.refused(), 2);
    }
}

/// Waits until the server has reported `n` permission violations to `metrics`, then checks
/// that no more arrive.
async fn expect_violations(metrics: &NatsMetrics, n: u64) {
    let count = || {
        metrics
            .permission_violations
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while count() < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of {n} permission violations reported",
            count()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(count(), n);
}

#[tokio::test]
async fn a_party_cannot_report_for_another_party() {
    let broker = Broker::start().await;
    let (n1, n1_metrics) = broker.party(PartyId(1)).await;
    let (n2, _) = broker.party(PartyId(2)).await;
    let starts = broker.ctrl_subscription(&n1).await;
    broker.rogue_session(starts, &n1, &n2).await;
    // The broker reports the refusal on p2's subject to p1, asynchronously.
    n1.flush().await.unwrap();
    expect_violations(&n1_metrics, 1).await;
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
    let broker = Broker::start().await;
    let (p2, p3) = (PartyId(2), PartyId(3));
    let cluster_id = broker.c.roster.cluster.clone();
    let (rogue, rogue_metrics) = broker.party(PartyId(1)).await;
    let (honest, _) = broker.party(p2).await;
    // p2 listens where the rogue would like to reach it: its inbox and the control subject.
    let mut p2_inbox = honest
        .subscribe(subject::inbox_wildcard(&cluster_id, p2))
        .await
        .unwrap();
    let mut p2_starts = broker.ctrl_subscription(&honest).await;

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
    // 4. A session in which it relays p2's outcome on p2's subject and on its own, and junk.
    let rogue_starts = broker.ctrl_subscription(&rogue).await;
    broker.rogue_session(rogue_starts, &rogue, &honest).await;

    // The broker refused the four others and told the rogue.
    expect_violations(&rogue_metrics, 4).await;
    // Honest p2 received nothing from the rogue: no inbox frame and no forged control
    // message (only the coordinator's probes and signed start); the rogue read nothing of
    // p2's.
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
