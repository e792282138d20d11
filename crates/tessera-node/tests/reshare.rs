//! Resharing through the nodes, started by signed control messages: the new shares stay
//! pending (the old committee keeps signing) until the coordinator activates them; activation
//! replaces or erases each node's share and its presignatures; a failed or unconfirmed reshare
//! changes nothing.

use crate::common;

use std::time::Duration;

use common::*;
use tessera_control::{Operation, Output, StarterError};
use tessera_mpc::fixtures::{insecure_committee_2of3, insecure_committee_3of5};
use tessera_mpc::reshare::{Kind, ReshareSetup};
use tessera_node::local::{LocalCluster, LocalOptions};
use tessera_node::state::ReshareRecord;
use tessera_node::NodeSettings;
use tessera_policy::{ApprovedKeyChange, KeyOperation};
use tessera_store::KdfParams;
use tessera_wire::{KeyId, PartyId, SessionId};

const P4: PartyId = PartyId(4);
const P5: PartyId = PartyId(5);

async fn five_nodes(dir: &std::path::Path) -> LocalCluster {
    let options = LocalOptions {
        parties: 5,
        kdf: KdfParams::MINIMUM,
        settings: NodeSettings {
            round_timeout: Duration::from_secs(3),
            ..NodeSettings::default()
        },
        ..LocalOptions::default()
    };
    LocalCluster::start(dir, options).await.unwrap()
}

/// The fixture 2-of-3 key on p1-p3, and auxiliary info for the committee p1-p5.
fn install_key_and_aux(cluster: &LocalCluster) -> (KeyId, Vec<u8>) {
    let five = insecure_committee_3of5();
    for (p, share) in five.committee.iter().zip(&five.shares) {
        let (_, aux) = parts(share);
        cluster
            .node(*p)
            .state()
            .put_aux(&five.committee, &aux)
            .unwrap();
    }
    install_fixture_committee(cluster)
}

/// 2-of-3 (p1-p3) to 3-of-5 (p1-p5), dealt by p1 and p3.
fn up_to_five() -> ReshareSetup {
    let fixture = insecure_committee_2of3();
    ReshareSetup {
        kind: Kind::Reshare,
        key: fixture.shares[0].core.key_info.clone(),
        old_committee: vec![P1, P2, P3],
        dealers: vec![P1, P3],
        new_committee: vec![P1, P2, P3, P4, P5],
        new_threshold: 3,
    }
}

/// The development admins' approval of what `setup` does (none for a refresh: a scheduled
/// refresh runs without one).
fn approval_of(
    cluster: &LocalCluster,
    key: KeyId,
    setup: &ReshareSetup,
) -> Option<ApprovedKeyChange> {
    let dev = cluster.dev.as_ref().expect("a development policy");
    match setup.kind {
        Kind::Refresh => None,
        Kind::Reshare => Some(dev.key_change(
            key,
            KeyOperation::Reshare {
                committee: setup.new_committee.clone(),
                threshold: setup.new_threshold,
            },
            now(),
        )),
    }
}

/// Runs the reshare, approved by the admins; returns its session and the confirmation all
/// participants reported.
async fn reshare(
    cluster: &LocalCluster,
    key: KeyId,
    setup: &ReshareSetup,
) -> (SessionId, Result<[u8; 32], StarterError>) {
    let approved = approval_of(cluster, key, setup);
    reshare_approved(cluster, key, setup, approved).await
}

/// Runs the reshare with `approved` as its authorisation.
async fn reshare_approved(
    cluster: &LocalCluster,
    key: KeyId,
    setup: &ReshareSetup,
    approved: Option<ApprovedKeyChange>,
) -> (SessionId, Result<[u8; 32], StarterError>) {
    let (start, signed) = cluster.starter().start(
        &setup.participants(),
        Operation::Reshare {
            key,
            setup: setup.clone(),
            approved: approved.map(Box::new),
        },
    );
    let checked = match cluster.control().run(&start, &signed, DEADLINE).await {
        Ok(outcomes) => cluster.starter().check(&start, &outcomes),
        Err(e) => Err(e),
    };
    let confirmation = checked.map(|output| match output {
        Output::Reshare { confirmation } => confirmation,
        other => panic!("a reshare reports its confirmation, not {other:?}"),
    });
    (start.session, confirmation)
}

async fn finish(
    cluster: &LocalCluster,
    key: KeyId,
    setup: &ReshareSetup,
    reshare: SessionId,
    confirmation: [u8; 32],
    activate: bool,
) -> Result<Output, StarterError> {
    let operation = Operation::FinishReshare {
        key,
        reshare,
        confirmation,
        activate,
    };
    cluster
        .run(&setup.participants(), operation, DEADLINE)
        .await
}

async fn signs(cluster: &LocalCluster, key: KeyId, public: &[u8], signers: &[PartyId]) -> bool {
    let (sign, digest) = sign_message(cluster, key, b"after the reshare");
    match cluster.run(signers, sign, DEADLINE).await {
        Ok(output) => k256_verifies(public, &digest, &output),
        Err(_) => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reshare_is_pending_until_activated_then_the_new_committee_signs() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = five_nodes(dir.path()).await;
    let (key, public) = install_key_and_aux(&cluster);
    let Output::Presign { presignature } = cluster
        .run(&[P1, P2], Operation::Presign { key }, DEADLINE)
        .await
        .unwrap()
    else {
        panic!("presign names its presignature");
    };

    let setup = up_to_five();
    let (session, confirmation) = reshare(&cluster, key, &setup).await;
    let confirmation = confirmation.unwrap();
    // Pending: nothing changed for the old committee.
    for p in [P1, P2, P3] {
        let record = cluster.node(p).state().key_record(key).unwrap();
        assert_eq!(record.committee, vec![P1, P2, P3]);
    }
    assert!(!cluster.node(P4).state().has_key(key).unwrap());
    assert!(signs(&cluster, key, &public, &[P2, P3]).await);

    // Activation with another confirmation is refused everywhere and changes nothing.
    let err = finish(&cluster, key, &setup, session, [7; 32], true)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("does not match"), "{err}");
    assert!(signs(&cluster, key, &public, &[P1, P3]).await);

    // Activated: every party of p1-p5 holds a 3-of-5 share of the same key.
    finish(&cluster, key, &setup, session, confirmation, true)
        .await
        .unwrap();
    for p in [P1, P2, P3, P4, P5] {
        let record = cluster.node(p).state().key_record(key).unwrap();
        assert_eq!(record.committee, setup.new_committee);
        assert_eq!(record.threshold, 3);
        assert_eq!(
            record.share.shared_public_key().to_bytes(true).to_vec(),
            public
        );
    }
    // The presignature made from the old shares is gone.
    assert!(cluster
        .node(P1)
        .state()
        .presignatures(key)
        .available()
        .unwrap()
        .iter()
        .all(|p| *p != presignature));
    assert!(signs(&cluster, key, &public, &[P3, P4, P5]).await);
    assert!(
        !signs(&cluster, key, &public, &[P1, P2]).await,
        "two signers are no longer a quorum"
    );
    // Activating again changes nothing; discarding now is refused.
    finish(&cluster, key, &setup, session, confirmation, true)
        .await
        .unwrap();
    let err = finish(&cluster, key, &setup, session, confirmation, false)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("was activated"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_party_that_drops_out_mid_reshare_leaves_the_old_shares_intact() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = five_nodes(dir.path()).await;
    let (key, public) = install_key_and_aux(&cluster);
    let setup = up_to_five();
    // p5 drops off the protocol network (its control messages still arrive).
    cluster.memory().unwrap().disconnect(P5);
    let (session, result) = reshare(&cluster, key, &setup).await;
    let err = result.unwrap_err();
    assert!(matches!(err, StarterError::Failed { .. }), "{err}");
    assert!(err.to_string().contains("p5"), "{err}");
    // The coordinator discards; nothing is pending anywhere.
    finish(&cluster, key, &setup, session, [0; 32], false)
        .await
        .unwrap();
    for p in [P1, P2, P3, P4, P5] {
        let left = cluster.node(p).state().reshare(key, session).unwrap();
        assert!(matches!(left, Some(ReshareRecord::Discarded)), "{p}");
    }
    // Activating a failed session is refused: no node has a result to activate.
    let err = finish(&cluster, key, &setup, session, [0; 32], true)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("discarded"), "{err}");
    for p in [P1, P2, P3] {
        let record = cluster.node(p).state().key_record(key).unwrap();
        assert_eq!(record.committee, vec![P1, P2, P3]);
        assert_eq!(record.threshold, 2);
    }
    assert!(!cluster.node(P4).state().has_key(key).unwrap());
    assert!(signs(&cluster, key, &public, &[P1, P3]).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_replaces_every_share_and_the_key_still_signs() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = five_nodes(dir.path()).await;
    let (key, public) = install_key_and_aux(&cluster);
    let fixture = insecure_committee_2of3();
    let setup = ReshareSetup {
        kind: Kind::Refresh,
        key: fixture.shares[0].core.key_info.clone(),
        old_committee: vec![P1, P2, P3],
        dealers: vec![P1, P2, P3],
        new_committee: vec![P1, P2, P3],
        new_threshold: 2,
    };
    let before: Vec<_> = [P1, P2, P3]
        .iter()
        .map(|p| cluster.node(*p).state().key_record(key).unwrap().share)
        .collect();
    let (session, confirmation) = reshare(&cluster, key, &setup).await;
    finish(&cluster, key, &setup, session, confirmation.unwrap(), true)
        .await
        .unwrap();
    for (p, old) in [P1, P2, P3].iter().zip(&before) {
        let now = cluster.node(*p).state().key_record(key).unwrap().share;
        assert_eq!(now.shared_public_key(), old.shared_public_key());
        assert_ne!(now.public_shares, old.public_shares, "{p}'s share renewed");
    }
    assert!(signs(&cluster, key, &public, &[P2, P3]).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_party_is_replaced_by_resharing_from_the_remaining_holders() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = five_nodes(dir.path()).await;
    let (key, public) = install_key_and_aux(&cluster);
    // The committee p1, p2, p4 has auxiliary info (the fixture's, as if set up).
    let fixture = insecure_committee_2of3();
    let replacement = vec![P1, P2, P4];
    for (p, share) in replacement.iter().zip(&fixture.shares) {
        let (_, aux) = parts(share);
        cluster
            .node(*p)
            .state()
            .put_aux(&replacement, &aux)
            .unwrap();
    }
    // p3 is lost: off the network for good.
    cluster.memory().unwrap().disconnect(P3);
    let setup = ReshareSetup {
        kind: Kind::Reshare,
        key: fixture.shares[0].core.key_info.clone(),
        old_committee: vec![P1, P2, P3],
        dealers: vec![P1, P2],
        new_committee: replacement.clone(),
        new_threshold: 2,
    };
    assert!(!setup.participants().contains(&P3));
    let (session, confirmation) = reshare(&cluster, key, &setup).await;
    finish(&cluster, key, &setup, session, confirmation.unwrap(), true)
        .await
        .unwrap();
    for p in &replacement {
        let record = cluster.node(*p).state().key_record(key).unwrap();
        assert_eq!(record.committee, replacement);
    }
    // The new committee signs with the same key, p4 included.
    assert!(signs(&cluster, key, &public, &[P2, P4]).await);
    assert!(signs(&cluster, key, &public, &[P1, P4]).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reshare_without_the_admins_approval_is_refused_by_every_node() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = five_nodes(dir.path()).await;
    let (key, public) = install_key_and_aux(&cluster);
    let dev = cluster.dev.as_ref().unwrap();
    let setup = up_to_five();
    let reshare_to = |committee: &[PartyId], threshold| KeyOperation::Reshare {
        committee: committee.to_vec(),
        threshold,
    };
    // Approved, but for a 2-of-5 (a coordinator lowering the threshold on its own).
    let other = dev.key_change(key, reshare_to(&setup.new_committee, 2), now());
    // For this reshare, but only the proposer signed it.
    let mut unapproved = dev.key_change(key, reshare_to(&setup.new_committee, 3), now());
    unapproved.approvals.clear();
    // For this reshare but another key.
    let elsewhere = dev.key_change(KeyId::random(), reshare_to(&setup.new_committee, 3), now());
    // A refresh's approval offered for a reshare.
    let refresh = dev.key_change(key, KeyOperation::Refresh, now());
    let cases = [
        (None, "needs a key change approved"),
        (Some(other), "asks for a reshare to 3-of-5"),
        (Some(unapproved), "needs 1 more admin approvals"),
        (Some(elsewhere), "is for key"),
        (Some(refresh), "is 'refresh'"),
    ];
    for (approved, expected) in cases {
        let (session, result) = reshare_approved(&cluster, key, &setup, approved).await;
        let err = result.unwrap_err();
        assert!(err.to_string().contains(expected), "{expected}: {err}");
        for p in setup.participants() {
            let state = cluster.node(p).state();
            assert!(state.reshare(key, session).unwrap().is_none(), "{p}");
        }
    }
    for p in [P1, P2, P3] {
        assert_eq!(
            cluster.node(p).state().key_record(key).unwrap().committee,
            vec![P1, P2, P3]
        );
    }
    assert!(!cluster.node(P4).state().has_key(key).unwrap());
    assert!(signs(&cluster, key, &public, &[P1, P2]).await);
}
