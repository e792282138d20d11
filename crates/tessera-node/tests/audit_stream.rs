//! Over a permissioned nats-server (mTLS, one NKey user per party), every node forwards its
//! audit events to the cluster's JetStream stream, which the coordinator created with
//! deny-delete and deny-purge; each node may publish only its own audit subject. The stream
//! reads back equal to each node's file and verifies against the roster.

use crate::common;

use std::time::{Duration, Instant};

use common::*;
use tessera_audit::stream::{last_seq, read_all};
use tessera_audit::{file, AuditRecord, TrustedKeys, Verifier};
use tessera_node::local::{LocalCluster, LocalOptions, Network};
use tessera_store::KdfParams;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_forward_their_audit_events_to_the_stream_over_a_permissioned_broker() {
    let dir = tempfile::tempdir().unwrap();
    let options = LocalOptions {
        network: Network::SpawnNats,
        kdf: KdfParams::MINIMUM,
        ..LocalOptions::default()
    };
    let cluster = LocalCluster::start(dir.path(), options).await.unwrap();
    let (key, public_key) = install_fixture_committee(&cluster);
    let (operation, digest) = sign_message(&cluster, key, b"streamed audit");
    let output = cluster
        .run(&[P1, P2], operation, Duration::from_secs(60))
        .await
        .unwrap();
    assert!(k256_verifies(&public_key, &digest, &output));

    let (client, name) = cluster
        .audit_stream()
        .expect("the local broker runs JetStream");
    let js = async_nats::jetstream::new(client.clone());
    let cluster_name = cluster.roster.cluster.to_string();
    for node in &cluster.nodes {
        let log = node.audit();
        let want = log.next_seq() - 1;
        let deadline = Instant::now() + Duration::from_secs(30);
        while last_seq(&js, name, &cluster_name, log.emitter())
            .await
            .unwrap()
            < want
        {
            assert!(
                Instant::now() < deadline,
                "{} never reached seq {want}",
                log.emitter()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    let streamed: Vec<AuditRecord> = read_all(&js, name)
        .await
        .unwrap()
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let keys = TrustedKeys::from_roster(&cluster.roster).unwrap();
    let summary = Verifier::verify_all(keys, streamed.iter().cloned().map(Ok)).unwrap();
    assert_eq!(summary.chains.len(), 3, "every node forwarded its chain");
    for node in &cluster.nodes {
        let log = node.audit();
        let in_file: Vec<AuditRecord> = file::read(log.file().unwrap())
            .unwrap()
            .into_iter()
            .map(Result::unwrap)
            .collect();
        let in_stream: Vec<AuditRecord> = streamed
            .iter()
            .filter(|r| &r.emitter == log.emitter())
            .cloned()
            .collect();
        assert_eq!(in_stream, in_file, "{}", log.emitter());
    }
    let joined = streamed
        .iter()
        .filter(|r| r.action == "session.joined")
        .count();
    assert_eq!(joined, 2, "both signers recorded the session");

    // Not even the coordinator's user can purge it.
    let stream = js.get_stream(name).await.unwrap();
    assert!(stream.purge().await.is_err());
    cluster.shutdown().await;
}
