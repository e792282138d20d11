//! Party nodes in one process: sessions started by signed control messages.

use crate::common;

use std::time::{Duration, Instant};

use common::*;
use tessera_channel::identity::CoordinatorKey;
use tessera_control::{Operation, Output, StarterError};
use tessera_control::{SessionStart, SignedStart};
use tessera_node::local::{LocalCluster, LocalOptions};
use tessera_node::NodeSettings;
use tessera_store::KdfParams;
use tessera_wire::{KeyId, SessionId};

fn options() -> LocalOptions {
    LocalOptions {
        kdf: KdfParams::MINIMUM,
        settings: NodeSettings {
            round_timeout: Duration::from_secs(3),
            ..NodeSettings::default()
        },
        ..LocalOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keygen_presign_online_and_full_signing() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = LocalCluster::start(dir.path(), options()).await.unwrap();
    let _ = install_fixture_committee(&cluster);

    // A fresh key on the committee whose aux info is installed.
    let key = KeyId::random();
    let Output::Keygen { public_key, .. } = cluster
        .run(
            &[P1, P2, P3],
            Operation::Keygen {
                key,
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
    assert_eq!(public_key.len(), 33);

    // Full signing with two of three.
    let (sign, digest) = sign_message(&cluster, key, b"transfer 1 ETH");
    let full = cluster.run(&[P3, P1], sign, DEADLINE).await.unwrap();
    assert!(k256_verifies(&public_key, &digest, &full));
    assert!(!k256_verifies(&public_key, &[7; 32], &full));

    // A presignature, then online signing with it.
    let Output::Presign { presignature } = cluster
        .run(&[P1, P2], Operation::Presign { key }, DEADLINE)
        .await
        .unwrap()
    else {
        panic!("presign names the presignature");
    };
    for p in [P1, P2] {
        let fresh = cluster
            .node(p)
            .state()
            .presignatures(key)
            .available()
            .unwrap();
        assert_eq!(fresh, vec![presignature]);
    }
    let (request, approvals) = approved(&cluster, key, b"transfer 1 ETH");
    let digest = request.digest;
    let online = Operation::OnlineSign {
        presignature,
        request,
        approvals,
        link: None,
    };
    let signature = cluster
        .run(&[P1, P2], online.clone(), DEADLINE)
        .await
        .unwrap();
    assert!(k256_verifies(&public_key, &digest, &signature));

    // The same presignature for another approved request: both signers refuse, and say why.
    let (request, approvals) = approved(&cluster, key, b"transfer 2 ETH");
    let again = Operation::OnlineSign {
        presignature,
        request,
        approvals,
        link: None,
    };
    let err = cluster.run(&[P1, P2], again, DEADLINE).await.unwrap_err();
    let StarterError::Failed { failures, .. } = &err else {
        panic!("expected failures, got {err}");
    };
    assert_eq!(failures.len(), 2, "{err}");
    assert!(err.to_string().contains("already used"), "{err}");

    // Every protocol message travelled sealed: nothing refused.
    for node in &cluster.nodes {
        assert_eq!(node.net().refusals().frames(), 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_party_is_named_and_the_remaining_quorum_signs() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = LocalCluster::start(dir.path(), options()).await.unwrap();
    let (key, public_key) = install_fixture_committee(&cluster);
    let (sign, digest) = sign_message(&cluster, key, b"pay invoice 7");

    // p3 is down: only p1 receives the start of a session with p1 and p3.
    let (start, signed) = cluster.starter().start(&[P1, P3], sign.clone());
    let began = Instant::now();
    let outcome = cluster.node(P1).execute(&signed).await.unwrap();
    let err = cluster.starter().check(&start, &[outcome]).unwrap_err();
    assert!(
        began.elapsed() < Duration::from_secs(30),
        "failed within the deadline"
    );
    assert_eq!(err.blamed(), vec![P3], "{err}");
    assert!(err.to_string().contains("no message from p3"), "{err}");

    // p1 stays healthy: p1 and p2 sign the same request (a retry after a failed session).
    let output = cluster.run(&[P1, P2], sign, DEADLINE).await.unwrap();
    assert!(k256_verifies(&public_key, &digest, &output));
}

fn resign(start: &SessionStart, key: &CoordinatorKey) -> SignedStart {
    SignedStart::sign(start, key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_stale_replayed_or_foreign_starts_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = LocalCluster::start(dir.path(), options()).await.unwrap();
    let (key, _) = install_fixture_committee(&cluster);
    let node = cluster.node(P1);
    let (sign, _) = sign_message(&cluster, key, b"m");

    // A coordinator key that is not in the roster: ignored, nothing runs.
    let rogue = CoordinatorKey::generate("local", cluster.roster.cluster.clone(), None).unwrap();
    let (start, _) = cluster.starter().start(&[P1, P2], sign.clone());
    assert!(node.execute(&resign(&start, &rogue)).await.is_none());

    // A tampered body: the signature no longer matches.
    let (_, mut signed) = cluster.starter().start(&[P1, P2], sign.clone());
    let last = signed.body.len() - 1;
    signed.body[last] ^= 1;
    assert!(node.execute(&signed).await.is_none());
    // Garbage bytes.
    assert!(node.handle(b"\x01garbage").await.is_none());

    // Not a participant: ignored.
    let (_, signed) = cluster.starter().start(&[P2, P3], sign.clone());
    assert!(node.execute(&signed).await.is_none());

    // Signed by the coordinator but refused, with the reason in a signed outcome.
    let refused = |start: SessionStart, needle: &'static str| {
        let cluster = &cluster;
        async move {
            // Re-sign the modified start with the real coordinator's key via the starter's
            // roster: build it through the starter so the signature is genuine.
            let signed = cluster.starter().sign(&start);
            let outcome = node.execute(&signed).await.expect("a signed refusal");
            let err = cluster.starter().check(&start, &[outcome]).unwrap_err();
            assert!(err.to_string().contains(needle), "{needle}: {err}");
        }
    };
    let (fresh, _) = cluster.starter().start(&[P1, P2], sign.clone());
    let mut expired = fresh.clone();
    expired.session = SessionId::random();
    expired.issued_at -= 1000;
    expired.expires_at = expired.issued_at + 10;
    refused(expired, "expired").await;
    let mut future = fresh.clone();
    future.session = SessionId::random();
    future.issued_at += 3600;
    future.expires_at = future.issued_at + 10;
    refused(future, "future").await;
    let mut too_long = fresh.clone();
    too_long.session = SessionId::random();
    too_long.expires_at = too_long.issued_at + 86_400;
    refused(too_long, "longer than").await;
    let mut unknown_key = fresh.clone();
    unknown_key.session = SessionId::random();
    unknown_key.operation = sign_message(&cluster, KeyId::random(), b"m").0;
    refused(unknown_key, "not held by this node").await;
    let mut other_roster = fresh.clone();
    other_roster.session = SessionId::random();
    other_roster.roster = [7; 32];
    let signed = cluster.starter().sign(&other_roster);
    assert!(
        node.execute(&signed).await.is_none(),
        "another roster's start is ignored"
    );

    // A replayed session id: refused the second time, whatever it asks.
    let (start, signed) = cluster
        .starter()
        .start(&[P1, P2], Operation::Presign { key });
    let first = async { cluster.node(P2).execute(&signed).await };
    let (a, b) = tokio::join!(node.execute(&signed), first);
    cluster
        .starter()
        .check(&start, &[a.unwrap(), b.unwrap()])
        .unwrap();
    refused(start, "already started").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn existing_keys_and_aux_info_are_never_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = LocalCluster::start(dir.path(), options()).await.unwrap();
    let (key, public_key) = install_fixture_committee(&cluster);
    let err = cluster
        .run(
            &[P1, P2, P3],
            Operation::Keygen {
                key,
                threshold: 2,
                kind: tessera_wire::KeyKind::Ecdsa,
            },
            DEADLINE,
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("never overwritten"), "{err}");
    let err = cluster
        .run(&[P1, P2, P3], Operation::AuxInfo, DEADLINE)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("never overwritten"), "{err}");
    // The key still signs.
    let (sign, digest) = sign_message(&cluster, key, b"still here");
    let output = cluster.run(&[P2, P3], sign, DEADLINE).await.unwrap();
    assert!(k256_verifies(&public_key, &digest, &output));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_refills_in_the_background_and_signing_falls_back_to_full() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use tessera_control::pool::SignPath;

    let dir = tempfile::tempdir().unwrap();
    let cluster = LocalCluster::start(dir.path(), options()).await.unwrap();
    let (key, public_key) = install_fixture_committee(&cluster);
    let pool = cluster.presignature_pool(2);
    pool.track(key, &[P1, P3]);
    let stop = Arc::new(AtomicBool::new(false));
    let refill = pool.spawn_refill(Duration::from_millis(50), stop.clone());
    let wait_for = |level: usize| {
        let pool = pool.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            while pool.level(key, &[P1, P3]) < level {
                assert!(Instant::now() < deadline, "pool did not refill");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    wait_for(2).await;
    // The nodes hold exactly the pooled presignatures.
    for p in [P1, P3] {
        let fresh = cluster
            .node(p)
            .state()
            .presignatures(key)
            .available()
            .unwrap();
        assert_eq!(fresh.len(), 2);
    }

    // Signing takes from the pool (online), and the pool refills behind it.
    let public_key = &public_key;
    let pool_sign = |signers: [tessera_wire::PartyId; 2]| {
        let (pool, cluster) = (pool.clone(), &cluster);
        async move {
            let (request, approvals) = approved(cluster, key, b"from the pool");
            let (output, path) = pool
                .sign(&signers, &request, &approvals, None)
                .await
                .unwrap();
            assert!(k256_verifies(public_key, &request.digest, &output));
            path
        }
    };
    assert_eq!(pool_sign([P1, P3]).await, SignPath::Online);
    wait_for(2).await;

    // No pool for these signers: full signing.
    assert_eq!(pool_sign([P2, P3]).await, SignPath::Full);

    // A pooled presignature that a node lost (e.g. used elsewhere) fails online signing;
    // the pool falls back to full signing and the signature is still good.
    stop.store(true, Ordering::Relaxed);
    refill.await.unwrap();
    let lost = cluster
        .node(P1)
        .state()
        .presignatures(key)
        .available()
        .unwrap()[0];
    let _ = cluster
        .node(P1)
        .state()
        .presignatures(key)
        .take(lost, tessera_control::now_unix(), 3600)
        .unwrap();
    let mut paths = Vec::new();
    for _ in 0..2 {
        paths.push(pool_sign([P1, P3]).await);
    }
    assert!(paths.contains(&SignPath::Full), "{paths:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_of_five_over_a_real_nats_server() {
    use tessera_node::local::Network;
    let dir = tempfile::tempdir().unwrap();
    let options = LocalOptions {
        parties: 5,
        network: Network::SpawnNats,
        ..options()
    };
    let cluster = LocalCluster::start(dir.path(), options).await.unwrap();
    install(&cluster, tessera_mpc::fixtures::insecure_committee_3of5());
    let all: Vec<_> = cluster.parties.clone();
    let [p1, p2, p3, p4, p5] = all[..] else {
        panic!("five parties")
    };

    // A fresh 3-of-5 key on the committee, over the broker's control subjects.
    let key = KeyId::random();
    let Output::Keygen { public_key, .. } = cluster
        .run(
            &all,
            Operation::Keygen {
                key,
                threshold: 3,
                kind: tessera_wire::KeyKind::Ecdsa,
            },
            DEADLINE,
        )
        .await
        .unwrap()
    else {
        panic!("keygen returns the public key");
    };
    // Two signers are not enough; each of two different triples signs.
    let (sign, digest) = sign_message(&cluster, key, b"3-of-5 transfer");
    let err = cluster
        .run(&[p1, p2], sign.clone(), DEADLINE)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("needs 3"), "{err}");
    let full = cluster.run(&[p5, p1, p3], sign, DEADLINE).await.unwrap();
    assert!(k256_verifies(&public_key, &digest, &full));
    let Output::Presign { presignature } = cluster
        .run(&[p2, p3, p4], Operation::Presign { key }, DEADLINE)
        .await
        .unwrap()
    else {
        panic!("presign names the presignature");
    };
    let (request, approvals) = approved(&cluster, key, b"3-of-5 transfer");
    let digest = request.digest;
    let online = Operation::OnlineSign {
        presignature,
        request,
        approvals,
        link: None,
    };
    let signature = cluster.run(&[p2, p3, p4], online, DEADLINE).await.unwrap();
    assert!(k256_verifies(&public_key, &digest, &signature));
    for node in &cluster.nodes {
        assert_eq!(node.net().refusals().frames(), 0);
    }
    cluster.shutdown().await;
}
