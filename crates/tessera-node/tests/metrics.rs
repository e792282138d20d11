//! The node's metrics and health: sessions by kind and outcome, policy refusals, pool levels,
//! the request ledger and refused frames in the rendered text; `/healthz`, `/readyz` and
//! `/metrics` over HTTP; NATS connection counters over a real broker.

use crate::common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use tessera_chain::{Eip1559Request, U256};
use tessera_channel::identity::CoordinatorKey;
use tessera_channel::RefusalReason;
use tessera_control::SignedStart;
use tessera_control::{Operation, Output};
use tessera_mpc::fixtures::insecure_test_primes;
use tessera_node::local::{LocalCluster, LocalOptions, Network};
use tessera_node::metrics::{NodeCollector, NodeReadiness, PoolFloors};
use tessera_node::{NodeMetrics, NodeSettings};
use tessera_policy::dev::{DEV_CHAIN_ID, DEV_PER_REQUEST_WEI};
use tessera_policy::Payload;
use tessera_store::KdfParams;
use tessera_telemetry::CONTENT_TYPE;
use tessera_wire::KeyId;

fn options() -> LocalOptions {
    LocalOptions {
        kdf: KdfParams::MINIMUM,
        settings: NodeSettings {
            round_timeout: Duration::from_secs(5),
            ..NodeSettings::default()
        },
        ..LocalOptions::default()
    }
}

/// The value of the sample `series` (name and labels exactly as rendered), if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let value = line.strip_prefix(series)?.strip_prefix(' ')?;
        value.parse().ok()
    })
}

#[track_caller]
fn expect(text: &str, series: &str, value: f64) {
    assert_eq!(
        sample(text, series),
        Some(value),
        "{series} should be {value} in:\n{text}"
    );
}

fn sessions(kind: &str, outcome: &str) -> String {
    format!("tessera_node_sessions_total{{kind=\"{kind}\",outcome=\"{outcome}\"}}")
}

fn transfer(nonce: u64, wei: u128) -> Payload {
    Payload::EthereumTx {
        raw: Eip1559Request::transfer(DEV_CHAIN_ID, nonce, [0x42; 20], U256::from(wei)).encode(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_refusals_pools_and_refused_frames_are_rendered() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = LocalCluster::start(dir.path(), options()).await.unwrap();
    let (key, _) = install_fixture_committee(&cluster);
    let p1 = cluster.node(P1);

    // Before anything ran: every kind and outcome at zero, pools and ledger empty.
    let text = cluster.telemetry(P1).unwrap().render().unwrap();
    expect(&text, &sessions("sign", "ok"), 0.0);
    expect(&text, &sessions("keygen", "refused"), 0.0);
    expect(&text, "tessera_node_primes_ready", 0.0);
    expect(&text, "tessera_node_keys", 1.0);
    expect(&text, "tessera_node_requests{state=\"signed\"}", 0.0);
    expect(
        &text,
        "tessera_node_frames_refused_total{reason=\"malformed\"}",
        0.0,
    );

    // A key generation, a presignature and a full signing of an approved transfer.
    let new_key = KeyId::random();
    let Output::Keygen { .. } = cluster
        .run(
            &[P1, P2, P3],
            Operation::Keygen {
                key: new_key,
                threshold: 2,
                kind: tessera_wire::KeyKind::Ecdsa,
            },
            DEADLINE,
        )
        .await
        .unwrap()
    else {
        panic!("keygen returns the public key");
    };
    cluster
        .run(&[P1, P2], Operation::Presign { key }, DEADLINE)
        .await
        .unwrap();
    let (request, approvals) = approved_payload(&cluster, key, transfer(0, 1_000));
    cluster
        .sign(&[P1, P2], &request, approvals.clone(), None, DEADLINE)
        .await
        .unwrap();
    let signed = Operation::Sign {
        request,
        approvals,
        link: None,
    };

    // Refused by both signers: the same request again, and an amount over the limit.
    cluster
        .run(&[P1, P2], signed, DEADLINE)
        .await
        .expect_err("already signed");
    let (request, approvals) =
        approved_payload(&cluster, key, transfer(1, DEV_PER_REQUEST_WEI + 1));
    cluster
        .run(
            &[P1, P2],
            Operation::Sign {
                request,
                approvals,
                link: None,
            },
            DEADLINE,
        )
        .await
        .expect_err("over the limit");

    // A start signed by a coordinator key that is not in the roster: dropped, counted.
    let rogue = CoordinatorKey::generate("local", cluster.roster.cluster.clone(), None).unwrap();
    let (start, _) = cluster
        .starter()
        .start(&[P1, P2], Operation::Presign { key });
    assert!(p1
        .execute(&SignedStart::sign(&start, &rogue))
        .await
        .is_none());

    // Garbage injected into p1's inbox through p2's raw transport: refused as malformed.
    cluster
        .node(P2)
        .net()
        .transport()
        .send(P1, bytes::Bytes::from_static(b"\x01\x02garbage"))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while p1.net().refusals().get(RefusalReason::Malformed) == 0 {
        assert!(
            Instant::now() < deadline,
            "the garbage frame was not refused"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let text = cluster.telemetry(P1).unwrap().render().unwrap();
    // Where the sessions' time went: each stage reached once per session.
    let stage = |operation: &str, stage: &str| {
        format!("tessera_node_stage_seconds_count{{operation=\"{operation}\",stage=\"{stage}\"}}")
    };
    for (operation, name, count) in [
        ("keygen", "start", 1.0),
        ("keygen", "run", 1.0),
        ("keygen", "outcome", 1.0),
        ("sign", "start", 3.0),
        ("sign", "policy", 1.0),
        ("sign", "protocol", 1.0),
        ("sign", "record", 1.0),
        ("sign", "failed", 2.0),
        ("sign", "outcome", 3.0),
    ] {
        expect(&text, &stage(operation, name), count);
    }
    expect(&text, &sessions("keygen", "ok"), 1.0);
    expect(&text, &sessions("presign", "ok"), 1.0);
    expect(&text, &sessions("sign", "ok"), 1.0);
    expect(&text, &sessions("sign", "refused"), 2.0);
    expect(&text, &sessions("sign", "failed"), 0.0);
    expect(&text, &sessions("aux_info", "ok"), 0.0);
    expect(
        &text,
        "tessera_node_session_duration_seconds_count{kind=\"keygen\"}",
        1.0,
    );
    expect(
        &text,
        "tessera_node_session_duration_seconds_count{kind=\"sign\"}",
        1.0,
    );
    expect(&text, "tessera_node_sessions_running", 0.0);
    expect(
        &text,
        "tessera_node_policy_refusals_total{reason=\"already_signed\"}",
        1.0,
    );
    expect(
        &text,
        "tessera_node_policy_refusals_total{reason=\"over_per_request\"}",
        1.0,
    );
    expect(
        &text,
        "tessera_node_starts_refused_total{reason=\"bad_signature\"}",
        1.0,
    );
    expect(&text, "tessera_node_keys", 2.0);
    expect(
        &text,
        &format!("tessera_node_presignatures_fresh{{key=\"{key}\"}}"),
        1.0,
    );
    expect(
        &text,
        &format!("tessera_node_presignatures_fresh{{key=\"{new_key}\"}}"),
        0.0,
    );
    expect(&text, "tessera_node_primes_ready", 0.0);
    expect(&text, "tessera_node_primes_generating", 0.0);
    expect(&text, "tessera_node_requests{state=\"signed\"}", 1.0);
    expect(&text, "tessera_node_requests{state=\"started\"}", 0.0);
    expect(
        &text,
        "tessera_node_frames_refused_total{reason=\"malformed\"}",
        1.0,
    );
    expect(
        &text,
        "tessera_node_frames_refused_total{reason=\"authentication_failed\"}",
        0.0,
    );
    expect(
        &text,
        "tessera_node_frames_refused_total{reason=\"rate_limited\"}",
        0.0,
    );
    expect(
        &text,
        "tessera_node_deliveries_dropped_total{reason=\"over_peer_limit\"}",
        0.0,
    );
    assert!(
        text.lines()
            .any(|l| l == "# TYPE tessera_node_deliveries_held gauge"),
        "{text}"
    );
    // No NATS in memory.
    assert!(!text.contains("tessera_node_nats_"), "{text}");
    assert!(text.ends_with("# EOF\n"), "{text}");

    // p3 took part in the key generation only; NodeMetrics::render reads the same counters.
    let text = NodeMetrics::render(cluster.node(P3)).unwrap();
    expect(&text, &sessions("keygen", "ok"), 1.0);
    expect(&text, &sessions("sign", "ok"), 0.0);
    expect(&text, &sessions("sign", "refused"), 0.0);
    expect(
        &text,
        "tessera_node_frames_refused_total{reason=\"malformed\"}",
        0.0,
    );
    assert_eq!(
        sample(
            &text,
            "tessera_node_policy_refusals_total{reason=\"already_signed\"}"
        ),
        None,
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_metrics_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = LocalCluster::start(dir.path(), options()).await.unwrap();
    let (key, _) = install_fixture_committee(&cluster);
    let node = cluster.node(P1).clone();
    let floors = PoolFloors {
        primes: 1,
        presignatures: 1,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(tessera_telemetry::serve(
        listener,
        Arc::new(NodeCollector::new(node.clone()).telemetry()),
        Arc::new(NodeReadiness::new(node.clone(), floors)),
        async move {
            let _ = stopped.await;
        },
    ));
    let http = reqwest::Client::new();
    let get = |path: &str| http.get(format!("{url}{path}")).send();

    let health = get("/healthz").await.unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(health.text().await.unwrap(), "ok\n");

    // Both pools below their floors: not ready, and each reason is named.
    let ready = get("/readyz").await.unwrap();
    assert_eq!(ready.status(), 503);
    let body = ready.text().await.unwrap();
    assert!(body.contains("primes: 0 set(s) ready, floor 1"), "{body}");
    assert!(
        body.contains(&format!("presignatures: key {key} has 0 fresh, floor 1")),
        "{body}"
    );
    assert_eq!(body.lines().count(), 2, "{body}");

    // A prime set: only the presignatures are missing.
    node.primes().put(&insecure_test_primes()[0]).unwrap();
    let ready = get("/readyz").await.unwrap();
    assert_eq!(ready.status(), 503);
    let body = ready.text().await.unwrap();
    assert!(!body.contains("primes"), "{body}");
    assert!(body.contains("presignatures"), "{body}");

    // A presignature: ready.
    cluster
        .run(&[P1, P2], Operation::Presign { key }, DEADLINE)
        .await
        .unwrap();
    let ready = get("/readyz").await.unwrap();
    assert_eq!(ready.status(), 200);
    assert_eq!(ready.text().await.unwrap(), "ready\n");

    let metrics = get("/metrics").await.unwrap();
    assert_eq!(metrics.status(), 200);
    assert_eq!(
        metrics.headers()[reqwest::header::CONTENT_TYPE],
        CONTENT_TYPE
    );
    let text = metrics.text().await.unwrap();
    for family in [
        "# TYPE tessera_node_sessions counter",
        "# TYPE tessera_node_session_duration_seconds histogram",
        "# TYPE tessera_node_primes_ready gauge",
        "# TYPE tessera_node_presignatures_fresh gauge",
        "# TYPE tessera_node_frames_refused counter",
        "# TYPE tessera_node_requests gauge",
    ] {
        assert!(text.lines().any(|l| l == family), "{family}:\n{text}");
    }
    expect(&text, &sessions("presign", "ok"), 1.0);
    expect(&text, "tessera_node_primes_ready", 1.0);
    expect(
        &text,
        &format!("tessera_node_presignatures_fresh{{key=\"{key}\"}}"),
        1.0,
    );

    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_connection_counters_over_a_real_broker() {
    let dir = tempfile::tempdir().unwrap();
    let options = LocalOptions {
        network: Network::SpawnNats,
        ..options()
    };
    let cluster = LocalCluster::start(dir.path(), options).await.unwrap();
    let (key, _) = install_fixture_committee(&cluster);
    cluster
        .run(&[P1, P2], Operation::Presign { key }, DEADLINE)
        .await
        .unwrap();
    let text = cluster.telemetry(P1).unwrap().render().unwrap();
    expect(&text, &sessions("presign", "ok"), 1.0);
    expect(&text, "tessera_node_broker_connected", 1.0);
    for connection in ["transport", "control"] {
        let connects = sample(
            &text,
            &format!("tessera_node_nats_connects_total{{connection=\"{connection}\"}}"),
        );
        assert!(connects >= Some(1.0), "{connection}:\n{text}");
        for counter in [
            "disconnects",
            "permission_violations",
            "slow_consumer_drops",
        ] {
            expect(
                &text,
                &format!("tessera_node_nats_{counter}_total{{connection=\"{connection}\"}}"),
                0.0,
            );
        }
    }
    cluster.shutdown().await;
}

/// One party floods another with 100 times its per-peer frame budget while the flooded node
/// signs with a third party: the signing finishes, every flooded frame is dropped or refused
/// (nothing queues), and the drops show in the node's metrics, blamed on the flooding peer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_flooding_100x_its_budget_is_dropped_and_counted_while_signing_goes_on() {
    use tessera_transport::{InboundLimits, Transport};

    let dir = tempfile::tempdir().unwrap();
    let cluster = LocalCluster::start(dir.path(), options()).await.unwrap();
    let (key, public_key) = install_fixture_committee(&cluster);
    let limits = InboundLimits::default();
    let flood = 100 * limits.burst as u64;
    let attacker = cluster.memory().expect("an in-memory cluster").connect(P3);
    let began = Instant::now();
    let flooding = tokio::spawn(async move {
        for _ in 0..flood {
            // Garbage: within the budget it is refused as malformed, beyond it dropped unread.
            attacker
                .send(P1, bytes::Bytes::from_static(b"flood"))
                .await
                .unwrap();
        }
    });

    // p1 and p2 sign while p3 floods p1.
    let (operation, digest) = sign_message(&cluster, key, b"signed under a flood");
    let output = cluster
        .run(&[P1, P2], operation, Duration::from_secs(60))
        .await
        .unwrap();
    assert!(k256_verifies(&public_key, &digest, &output));
    flooding.await.unwrap();

    // Every flooded frame is accounted for: dropped by the limit or refused as malformed.
    let net = cluster.node(P1).net();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let refusals = net.refusals();
        let seen =
            refusals.get(RefusalReason::RateLimited) + refusals.get(RefusalReason::Malformed);
        if seen == flood {
            break;
        }
        assert!(
            seen < flood && Instant::now() < deadline,
            "{seen} of {flood}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = began.elapsed().as_secs_f64();
    let admitted_at_most =
        limits.burst as f64 + limits.frames_per_second as f64 * elapsed.ceil() + 1.0;
    let text = cluster.telemetry(P1).unwrap().render().unwrap();
    let limited = sample(
        &text,
        "tessera_node_frames_refused_total{reason=\"rate_limited\"}",
    )
    .unwrap_or_else(|| panic!("no rate_limited series in:\n{text}"));
    assert!(
        limited >= flood as f64 - admitted_at_most,
        "{limited} dropped of {flood} in {elapsed:.1} s (at most {admitted_at_most} admitted)"
    );
    let blamed = net.rate_limited();
    assert_eq!(
        blamed.keys().copied().collect::<Vec<_>>(),
        [P3],
        "{blamed:?}"
    );
    assert_eq!(blamed[&P3] as f64, limited);
}
