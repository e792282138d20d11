//! Key epochs through the nodes (`docs/protocols/reshare.md`), started by signed control
//! messages: a reshare's result stays pending (the old epoch keeps signing) until its
//! activation certificate (every participant's signed report) arrives; activation retires the
//! old epoch and erases its presignatures; the closure certificate (every new holder's signed
//! activation) makes every holder of the old epoch erase it, including holders that took no
//! part. A coordinator that lies (forged, partial or stale certificates, discards without
//! proof, withheld certificates) cannot leave the key without a usable epoch.

use crate::common;

use std::time::Duration;

use common::*;
use tessera_control::{EpochReport, Operation, Output, Reports, SignedOutcome};
use tessera_mpc::fixtures::insecure_committee_2of3;
use tessera_mpc::reshare::{Kind, ReshareSetup};
use tessera_node::local::{LocalCluster, LocalOptions};
use tessera_node::state::ReshareRecord;
use tessera_node::NodeSettings;
use tessera_policy::{ApprovedKeyChange, KeyEpoch, KeyOperation};
use tessera_store::{KdfParams, SecretStore};
use tessera_wire::{KeyId, PartyId, SessionId};

const P4: PartyId = PartyId(4);
const P5: PartyId = PartyId(5);

async fn five_nodes(dir: &std::path::Path, settings: NodeSettings) -> LocalCluster {
    let options = LocalOptions {
        parties: 5,
        kdf: KdfParams::MINIMUM,
        settings,
        ..LocalOptions::default()
    };
    LocalCluster::start(dir, options).await.unwrap()
}

fn quick() -> NodeSettings {
    NodeSettings {
        round_timeout: Duration::from_secs(3),
        ..NodeSettings::default()
    }
}

/// The fixture 2-of-3 key on p1-p3 at epoch 0 as `from`.
fn epoch0() -> KeyEpoch {
    KeyEpoch {
        epoch: 0,
        committee: vec![P1, P2, P3],
        threshold: 2,
    }
}

/// A reshare (or refresh) of the fixture key (its public info as at epoch 0) from `from`'s epoch, dealt by `dealers`, with the
/// development admins' approval of it (none for a refresh).
fn setup_of(
    cluster: &LocalCluster,
    key: KeyId,
    kind: Kind,
    from: KeyEpoch,
    dealers: &[PartyId],
    new_committee: &[PartyId],
    new_threshold: u16,
) -> (ReshareSetup, Option<ApprovedKeyChange>) {
    let dev = cluster.dev.as_ref().expect("a development policy");
    let approved = match kind {
        Kind::Refresh => None,
        Kind::Reshare => Some(dev.key_change(
            key,
            from.clone(),
            KeyOperation::Reshare {
                committee: new_committee.to_vec(),
                threshold: new_threshold,
            },
            now(),
        )),
    };
    let setup = ReshareSetup {
        kind,
        key_id: key,
        key_kind: tessera_wire::KeyKind::Ecdsa,
        epoch: from.epoch,
        key: fixture_key_info().into(),
        old_committee: from.committee.clone(),
        dealers: dealers.to_vec(),
        new_committee: new_committee.to_vec(),
        new_threshold,
        authorisation: approved
            .as_ref()
            .map_or([0; 32], |a| a.change.change_digest()),
    };
    (setup, approved)
}

fn fixture_key_info() -> tessera_mpc::reshare::KeyInfo {
    insecure_committee_2of3().shares[0].core.key_info.clone()
}

/// A reshare session that ran: its id, every participant's report, and the activation
/// certificate if all succeeded.
struct Ran {
    session: SessionId,
    reports: Reports,
    certificate: Vec<SignedOutcome>,
}

impl Ran {
    fn report(&self) -> EpochReport {
        match &self.reports.values().next().unwrap().result {
            Ok(Output::Reshare { report }) => report.clone(),
            other => panic!("a successful report, not {other:?}"),
        }
    }

    fn succeeded(&self) -> bool {
        self.reports
            .values()
            .all(|r| matches!(r.result, Ok(Output::Reshare { .. })))
    }
}

async fn run_reshare(
    cluster: &LocalCluster,
    key: KeyId,
    setup: &ReshareSetup,
    approved: Option<ApprovedKeyChange>,
) -> Ran {
    let operation = Operation::Reshare {
        key,
        setup: setup.clone(),
        approved: approved.map(Box::new),
    };
    let (start, reports) = cluster
        .starter()
        .run_collect(
            cluster.control(),
            &setup.participants(),
            operation,
            DEADLINE,
        )
        .await
        .unwrap();
    let certificate = reports.values().map(|r| r.signed.clone()).collect();
    Ran {
        session: start.session,
        reports,
        certificate,
    }
}

/// Sends `operation` to `parties`; every party's verified report.
async fn send(cluster: &LocalCluster, parties: &[PartyId], operation: Operation) -> Reports {
    cluster
        .starter()
        .run_collect(cluster.control(), parties, operation, DEADLINE)
        .await
        .unwrap()
        .1
}

fn activate_op(key: KeyId, ran: &Ran, certificate: Vec<SignedOutcome>) -> Operation {
    Operation::ActivateEpoch {
        key,
        reshare: ran.session,
        certificate,
    }
}

/// The error each party answered, or panics where one succeeded.
fn refusals(reports: &Reports) -> Vec<String> {
    reports
        .iter()
        .map(|(p, r)| match &r.result {
            Err(f) => f.message.clone(),
            Ok(o) => panic!("{p} accepted: {o:?}"),
        })
        .collect()
}

fn all_ok(reports: &Reports, parties: &[PartyId]) -> Vec<SignedOutcome> {
    for p in parties {
        let r = reports.get(p).unwrap_or_else(|| panic!("{p} answered"));
        assert!(r.result.is_ok(), "{p}: {:?}", r.result);
    }
    reports.values().map(|r| r.signed.clone()).collect()
}

async fn signs(cluster: &LocalCluster, key: KeyId, public: &[u8], signers: &[PartyId]) -> bool {
    let (sign, digest) = sign_message(cluster, key, b"after the reshare");
    match cluster.run(signers, sign, DEADLINE).await {
        Ok(output) => k256_verifies(public, &digest, &output),
        Err(_) => false,
    }
}

fn record_state(cluster: &LocalCluster, p: PartyId, key: KeyId, session: SessionId) -> String {
    cluster
        .node(p)
        .state()
        .reshare(key, session)
        .unwrap()
        .map_or_else(|| "none".into(), |r| r.state().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_epoch_activates_only_on_its_certificate_and_every_old_holder_erases_the_old_one() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = five_nodes(dir.path(), quick()).await;
    let (key, public) = install_fixture_committee(&cluster);
    let Output::Presign { presignature } = cluster
        .run(&[P1, P2], Operation::Presign { key }, DEADLINE)
        .await
        .unwrap()
    else {
        panic!("presign names its presignature");
    };
    // 2-of-3 on p1-p3 -> 2-of-3 on p2, p4, p5: p1 deals and leaves, p2 deals and stays, p4
    // and p5 join, p3 neither deals nor receives.
    let new_committee = [P2, P4, P5];
    let (setup, approved) = setup_of(
        &cluster,
        key,
        Kind::Reshare,
        epoch0(),
        &[P1, P2],
        &new_committee,
        2,
    );
    give_primes(&cluster, &[(P2, 3), (P4, 4), (P5, 5)]);
    let ran = run_reshare(&cluster, key, &setup, approved.clone()).await;
    assert!(ran.succeeded(), "{:?}", ran.reports);
    let participants = setup.participants();
    // Pending: nothing changed for the old epoch, which still signs.
    for p in [P1, P2, P3] {
        assert_eq!(cluster.node(p).state().key_record(key).unwrap().epoch, 0);
    }
    assert!(!cluster.node(P4).state().has_key(key).unwrap());
    assert!(signs(&cluster, key, &public, &[P1, P3]).await);

    // Certificates the coordinator cannot make valid: one participant's report missing, one
    // from another session, one report altered (its signature no longer verifies), and the
    // outcomes of an unrelated session (a presignature's).
    let mut missing = ran.certificate.clone();
    missing.pop();
    let mut altered = ran.certificate.clone();
    altered[0].body[10] ^= 1;
    let (other, _) = (
        run_reshare(&cluster, key, &setup, None).await,
        "a reshare without approval: every node refuses it",
    );
    let presign_outcomes: Vec<SignedOutcome> =
        send(&cluster, &[P1, P2], Operation::Presign { key })
            .await
            .values()
            .map(|r| r.signed.clone())
            .collect();
    for (bad, expected) in [
        (missing, "holds no successful report"),
        (altered, "does not verify"),
        (other.certificate, "is not a successful report"),
        (presign_outcomes, "is not a successful report"),
    ] {
        let answers = send(&cluster, &participants, activate_op(key, &ran, bad)).await;
        for message in refusals(&answers) {
            assert!(message.contains(expected), "{expected}: {message}");
        }
    }
    for p in &participants {
        assert_eq!(
            record_state(&cluster, *p, key, ran.session),
            "pending",
            "{p}"
        );
    }
    assert!(signs(&cluster, key, &public, &[P2, P3]).await);

    // The real certificate: every participant activates; the old epoch is retired, not yet
    // erased; presignatures of the old epoch are gone.
    let activated = all_ok(
        &send(
            &cluster,
            &participants,
            activate_op(key, &ran, ran.certificate.clone()),
        )
        .await,
        &participants,
    );
    for p in new_committee {
        let record = cluster.node(p).state().key_record(key).unwrap();
        assert_eq!(
            (record.epoch, &record.committee[..]),
            (1, &new_committee[..])
        );
        assert!(
            record.aux.is_some(),
            "{p} holds the new epoch's own auxiliary info"
        );
    }
    assert!(
        !cluster.node(P1).state().has_key(key).unwrap(),
        "p1 left: it holds no active share"
    );
    match cluster.node(P1).state().reshare(key, ran.session).unwrap() {
        Some(ReshareRecord::Activated { retired, .. }) => {
            assert_eq!(retired.expect("the old epoch kept retired").epoch, 0)
        }
        other => panic!("activated, not {:?}", other.map(|r| r.state())),
    }
    assert!(cluster
        .node(P1)
        .state()
        .presignatures(key)
        .available()
        .unwrap()
        .iter()
        .all(|p| *p != presignature));
    // p3 took no part and still holds epoch 0.
    assert_eq!(cluster.node(P3).state().key_record(key).unwrap().epoch, 0);
    assert!(signs(&cluster, key, &public, &[P4, P5]).await);
    assert!(signs(&cluster, key, &public, &[P2, P5]).await);

    // Closing needs every new holder's activation, and, at p3 (which took no part), the
    // admins' approval of this very change.
    let close = |activated: Vec<SignedOutcome>, approved: Option<ApprovedKeyChange>| {
        Operation::CloseEpoch {
            key,
            reshare: ran.session,
            certificate: ran.certificate.clone(),
            activated,
            approved: approved.map(Box::new),
        }
    };
    let new_holders: Vec<SignedOutcome> = activated
        .iter()
        .filter(|o| new_committee.contains(&o.party))
        .cloned()
        .collect();
    let answers = send(
        &cluster,
        &[P3],
        close(new_holders[..2].to_vec(), approved.clone()),
    )
    .await;
    let message = &refusals(&answers)[0];
    assert!(message.contains("holds no activation from p5"), "{message}");
    let answers = send(&cluster, &[P3], close(new_holders.clone(), None)).await;
    assert!(refusals(&answers)[0].contains("needs the admins' approved change"));
    let elsewhere = cluster.dev.as_ref().unwrap().key_change(
        key,
        epoch0(),
        KeyOperation::Reshare {
            committee: vec![P2, P4, P5],
            threshold: 3,
        },
        now(),
    );
    let answers = send(&cluster, &[P3], close(new_holders.clone(), Some(elsewhere))).await;
    assert!(refusals(&answers)[0].contains("is not the one reshare session"));
    assert_eq!(cluster.node(P3).state().key_record(key).unwrap().epoch, 0);

    let holders = [P1, P2, P3, P4, P5];
    let closed = send(
        &cluster,
        &holders,
        close(new_holders.clone(), approved.clone()),
    )
    .await;
    all_ok(&closed, &holders);
    for (p, erased) in [(P1, true), (P2, true), (P3, true), (P4, false), (P5, false)] {
        match &closed[&p].result {
            Ok(Output::EpochClosed {
                epoch, erased: e, ..
            }) => {
                assert_eq!((*epoch, *e), (0, erased), "{p}")
            }
            other => panic!("{p}: {other:?}"),
        }
        assert_eq!(record_state(&cluster, p, key, ran.session), "closed", "{p}");
    }
    assert!(
        !cluster.node(P3).state().has_key(key).unwrap(),
        "p3 erased its share"
    );
    assert!(!cluster.node(P1).state().has_key(key).unwrap());
    // Repeats change nothing; a closed epoch cannot be taken back.
    all_ok(
        &send(
            &cluster,
            &participants,
            activate_op(key, &ran, ran.certificate.clone()),
        )
        .await,
        &participants,
    );
    let abandon = Operation::AbandonReshare {
        key,
        reshare: ran.session,
        proof: None,
    };
    for message in refusals(&send(&cluster, &new_committee, abandon).await) {
        assert!(message.contains("is closed here"), "{message}");
    }
    assert!(signs(&cluster, key, &public, &[P4, P2]).await);
    assert!(!signs(&cluster, key, &public, &[P1, P3]).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_party_that_drops_out_mid_reshare_leaves_the_old_epoch_intact() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = five_nodes(dir.path(), quick()).await;
    let (key, public) = install_fixture_committee(&cluster);
    let (setup, approved) = setup_of(
        &cluster,
        key,
        Kind::Reshare,
        epoch0(),
        &[P1, P3],
        &[P1, P2, P3, P4, P5],
        3,
    );
    give_primes(&cluster, &[(P1, 1), (P2, 2), (P3, 3), (P4, 4), (P5, 5)]);
    // p5 drops off the protocol network (its control messages still arrive).
    cluster.memory().unwrap().disconnect(P5);
    let ran = run_reshare(&cluster, key, &setup, approved.clone()).await;
    for (p, r) in &ran.reports {
        let failure = r.result.as_ref().expect_err("nobody finishes without p5");
        if *p != P5 {
            assert!(failure.message.contains("p5"), "{p}: {failure:?}");
        }
        assert_eq!(
            record_state(&cluster, *p, key, ran.session),
            "abandoned",
            "{p}"
        );
    }
    // Each signs its abandonment; that is no activation certificate.
    let participants = setup.participants();
    let abandoned = send(
        &cluster,
        &participants,
        Operation::AbandonReshare {
            key,
            reshare: ran.session,
            proof: None,
        },
    )
    .await;
    let proofs = all_ok(&abandoned, &participants);
    let answers = send(&cluster, &participants, activate_op(key, &ran, proofs)).await;
    for message in refusals(&answers) {
        assert!(message.contains("is not a successful report"), "{message}");
    }
    // The same approved change cannot start another session: each node used it.
    let again = run_reshare(&cluster, key, &setup, approved).await;
    for (p, r) in &again.reports {
        let failure = r.result.as_ref().expect_err("the change was used");
        assert!(
            failure.message.contains("was already used"),
            "{p}: {failure:?}"
        );
    }
    for p in [P1, P2, P3] {
        let record = cluster.node(p).state().key_record(key).unwrap();
        assert_eq!((record.epoch, record.threshold), (0, 2));
    }
    assert!(!cluster.node(P4).state().has_key(key).unwrap());
    assert!(signs(&cluster, key, &public, &[P1, P3]).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_renews_share_and_auxiliary_info_and_retires_the_old_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = five_nodes(dir.path(), quick()).await;
    let (key, public) = install_fixture_committee(&cluster);
    let committee = [P1, P2, P3];
    let Output::Presign { presignature } = cluster
        .run(&[P1, P2], Operation::Presign { key }, DEADLINE)
        .await
        .unwrap()
    else {
        panic!("presign names its presignature");
    };
    let before: Vec<_> = committee
        .iter()
        .map(|p| cluster.node(*p).state().key_record(key).unwrap())
        .collect();
    let (setup, _) = setup_of(
        &cluster,
        key,
        Kind::Refresh,
        epoch0(),
        &committee,
        &committee,
        2,
    );
    // Two sets each, none the party's own in the fixture (sets 0, 1, 2 for p1, p2, p3), and
    // distinct within either refresh whichever each node takes first.
    give_primes(
        &cluster,
        &[(P1, 1), (P1, 3), (P2, 2), (P2, 4), (P3, 0), (P3, 5)],
    );
    // Two refreshes from epoch 0 run; both stay pending.
    let first = run_reshare(&cluster, key, &setup, None).await;
    let second = run_reshare(&cluster, key, &setup, None).await;
    assert!(first.succeeded() && second.succeeded());

    // The second's certificate reaches p1 only: p1's new epoch and p3's old one do not
    // sign together, the old epoch (p2, p3) still does.
    all_ok(
        &send(
            &cluster,
            &[P1],
            activate_op(key, &second, second.certificate.clone()),
        )
        .await,
        &[P1],
    );
    assert!(!signs(&cluster, key, &public, &[P1, P3]).await);
    assert!(signs(&cluster, key, &public, &[P2, P3]).await);
    // Once the certificate reaches every node, the refresh is active everywhere.
    all_ok(
        &send(
            &cluster,
            &committee,
            activate_op(key, &second, second.certificate.clone()),
        )
        .await,
        &committee,
    );
    for (p, old) in committee.iter().zip(&before) {
        let now = cluster.node(*p).state().key_record(key).unwrap();
        assert_eq!(now.epoch, 1);
        let (now_share, old_share) = (
            now.share.secp256k1().unwrap(),
            old.share.secp256k1().unwrap(),
        );
        assert_eq!(now_share.shared_public_key, old_share.shared_public_key);
        assert_ne!(
            now_share.public_shares, old_share.public_shares,
            "{p}'s share renewed"
        );
        let (new_aux, old_aux) = (now.aux.as_ref().unwrap(), old.aux.as_ref().unwrap());
        assert_ne!(new_aux.p, old_aux.p, "{p}'s Paillier key renewed");
        assert_ne!(new_aux.N, old_aux.N);
        for (a, b) in new_aux.pedersen_params.iter().zip(&old_aux.pedersen_params) {
            assert_ne!(
                (&a.hat_N, &a.s, &a.t),
                (&b.hat_N, &b.s, &b.t),
                "ring-Pedersen renewed"
            );
        }
    }
    // The presignature made before the refresh is gone; new ones work.
    let (request, approvals) = approved(&cluster, key, b"online after the refresh");
    let stale = Operation::OnlineSign {
        presignature,
        request,
        approvals,
        link: None,
    };
    let err = cluster.run(&[P1, P2], stale, DEADLINE).await.unwrap_err();
    assert!(err.to_string().contains(&presignature.to_string()), "{err}");
    let Output::Presign { presignature } = cluster
        .run(&[P1, P3], Operation::Presign { key }, DEADLINE)
        .await
        .unwrap()
    else {
        panic!("presign names its presignature");
    };
    let (request, approvals) = approved(&cluster, key, b"online after the refresh");
    let digest = request.digest;
    let output = cluster
        .run(
            &[P1, P3],
            Operation::OnlineSign {
                presignature,
                request,
                approvals,
                link: None,
            },
            DEADLINE,
        )
        .await
        .unwrap();
    assert!(k256_verifies(&public, &digest, &output));

    // The first refresh was abandoned when the second activated: its certificate is refused.
    for p in committee {
        assert_eq!(record_state(&cluster, p, key, first.session), "abandoned");
    }
    let answers = send(
        &cluster,
        &committee,
        activate_op(key, &first, first.certificate.clone()),
    )
    .await;
    for message in refusals(&answers) {
        assert!(message.contains("was abandoned here"), "{message}");
    }
    // A disk restored with the first refresh's pending record: its certificate is stale now.
    let stale_record = ReshareRecord::Pending {
        report: first.report(),
        record: None,
        expires_at: now() + 3600,
    };
    let name = tessera_store::RecordName::new(format!("reshare.{key}.{}", first.session)).unwrap();
    cluster
        .node(P2)
        .state()
        .store()
        .put(&name, &serde_json::to_vec(&stale_record).unwrap())
        .unwrap();
    let answers = send(
        &cluster,
        &[P2],
        activate_op(key, &first, first.certificate.clone()),
    )
    .await;
    assert!(
        refusals(&answers)[0].contains("a stale certificate"),
        "{answers:?}"
    );
    assert_eq!(cluster.node(P2).state().key_record(key).unwrap().epoch, 1);
    assert!(signs(&cluster, key, &public, &[P2, P3]).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_that_activates_some_and_discards_others_cannot_lose_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = five_nodes(dir.path(), quick()).await;
    let (key, public) = install_fixture_committee(&cluster);
    // 2-of-3 on p1-p3 -> 2-of-3 on p1, p2, p4, dealt by p1 and p3 (p3 leaves).
    let new_committee = [P1, P2, P4];
    let (setup, approved) = setup_of(
        &cluster,
        key,
        Kind::Reshare,
        epoch0(),
        &[P1, P3],
        &new_committee,
        2,
    );
    give_primes(&cluster, &[(P1, 3), (P2, 4), (P4, 5)]);
    let ran = run_reshare(&cluster, key, &setup, approved).await;
    assert!(ran.succeeded(), "{:?}", ran.reports);
    // The coordinator activates p1 and tells p2, p3 and p4 to discard, without proof or
    // with a proof from another session: refused, nothing changes there.
    all_ok(
        &send(
            &cluster,
            &[P1],
            activate_op(key, &ran, ran.certificate.clone()),
        )
        .await,
        &[P1],
    );
    let other_session = SessionId::random();
    let foreign = send(
        &cluster,
        &[P4],
        Operation::AbandonReshare {
            key,
            reshare: other_session,
            proof: None,
        },
    )
    .await[&P4]
        .signed
        .clone();
    for proof in [None, Some(Box::new(foreign))] {
        let discard = Operation::AbandonReshare {
            key,
            reshare: ran.session,
            proof,
        };
        for message in refusals(&send(&cluster, &[P2, P3, P4], discard).await) {
            assert!(
                message.contains("is pending here") || message.contains("not the abandonment"),
                "{message}"
            );
        }
    }
    for p in [P2, P3, P4] {
        assert_eq!(
            record_state(&cluster, p, key, ran.session),
            "pending",
            "{p}"
        );
    }
    // It withholds the certificate until their results expire (a day on; the nodes' clocks
    // are stood in for here): they abandon them by themselves, and the activation arrives too
    // late.
    let later = now() + NodeSettings::default().pending_reshare_lifetime.as_secs() + 60;
    let state = cluster.node(P4).state();
    let report = ran.report();
    let err = state
        .activate_epoch(key, ran.session, P4, &report, &ran.certificate, later)
        .unwrap_err();
    assert!(err.to_string().contains("expired"), "{err}");
    for p in [P2, P3] {
        let swept = cluster
            .node(p)
            .state()
            .sweep_reshares(later, false)
            .unwrap();
        assert_eq!(swept.len(), 1, "{p}");
        assert!(swept[0].2.is_ok(), "{p}");
    }
    let late = send(
        &cluster,
        &[P4],
        activate_op(key, &ran, ran.certificate.clone()),
    )
    .await;
    assert!(
        refusals(&late)[0].contains("was abandoned here"),
        "{late:?}"
    );
    // Nothing was erased: p1 holds the old epoch retired, p2 and p3 active. A new holder's
    // signed abandonment (p4's) takes p1 back; the old committee signs again, all of it.
    assert!(!signs(&cluster, key, &public, &[P1, P2]).await);
    assert!(signs(&cluster, key, &public, &[P2, P3]).await);
    let proof = send(
        &cluster,
        &[P4],
        Operation::AbandonReshare {
            key,
            reshare: ran.session,
            proof: None,
        },
    )
    .await[&P4]
        .signed
        .clone();
    // A leaving dealer's abandonment does not take back an activated epoch.
    let dealer_proof = send(
        &cluster,
        &[P3],
        Operation::AbandonReshare {
            key,
            reshare: ran.session,
            proof: None,
        },
    )
    .await[&P3]
        .signed
        .clone();
    let revert = |proof: SignedOutcome| Operation::AbandonReshare {
        key,
        reshare: ran.session,
        proof: Some(Box::new(proof)),
    };
    let answers = send(&cluster, &[P1], revert(dealer_proof)).await;
    assert!(refusals(&answers)[0].contains("only a new holder's signed abandonment"));
    all_ok(&send(&cluster, &[P1], revert(proof)).await, &[P1]);
    assert_eq!(cluster.node(P1).state().key_record(key).unwrap().epoch, 0);
    assert!(signs(&cluster, key, &public, &[P1, P2]).await);
    assert!(signs(&cluster, key, &public, &[P1, P3]).await);
    assert!(!cluster.node(P4).state().has_key(key).unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reshare_without_the_admins_approval_for_this_epoch_is_refused_by_every_node() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = five_nodes(dir.path(), quick()).await;
    let (key, public) = install_fixture_committee(&cluster);
    let dev = cluster.dev.as_ref().unwrap();
    let new_committee = [P1, P2, P3, P4, P5];
    let (setup, _) = setup_of(
        &cluster,
        key,
        Kind::Reshare,
        epoch0(),
        &[P1, P3],
        &new_committee,
        3,
    );
    let reshare_to = |committee: &[PartyId], threshold| KeyOperation::Reshare {
        committee: committee.to_vec(),
        threshold,
    };
    let bound = |approved: ApprovedKeyChange| {
        let mut setup = setup.clone();
        setup.authorisation = approved.change.change_digest();
        (setup, Some(approved))
    };
    let as_is = |approved: Option<ApprovedKeyChange>| (setup.clone(), approved);
    let later = KeyEpoch {
        epoch: 1,
        ..epoch0()
    };
    let mut unapproved = dev.key_change(key, epoch0(), reshare_to(&new_committee, 3), now());
    unapproved.approvals.clear();
    // Approved by the other admin, but not signed by its proposer: made up in ada's name.
    let mut unproposed = dev.key_change(key, epoch0(), reshare_to(&new_committee, 3), now());
    unproposed.approvals.remove(0);
    // Signed by its proposer only.
    let mut proposed_only = dev.key_change(key, epoch0(), reshare_to(&new_committee, 3), now());
    proposed_only.approvals.truncate(1);
    let right = dev.key_change(key, epoch0(), reshare_to(&new_committee, 3), now());
    let unbound = {
        let mut setup = setup.clone();
        setup.authorisation = [0; 32];
        (setup, None)
    };
    let cases = [
        (unbound, "needs a key change approved"),
        (
            as_is(None),
            "the setup names an approval the session start does not carry",
        ),
        // Approved, but for a 2-of-5 (a coordinator lowering the threshold on its own).
        (
            bound(dev.key_change(key, epoch0(), reshare_to(&new_committee, 2), now())),
            "asks for a reshare to 3-of-5",
        ),
        (
            bound(unapproved),
            "does not carry the signature of its proposer",
        ),
        (
            bound(unproposed),
            "does not carry the signature of its proposer",
        ),
        (bound(proposed_only), "needs 1 more admin approvals"),
        (
            bound(dev.key_change(
                KeyId::random(),
                epoch0(),
                reshare_to(&new_committee, 3),
                now(),
            )),
            "is for key",
        ),
        (
            bound(dev.key_change(key, epoch0(), KeyOperation::Refresh, now())),
            "is 'refresh'",
        ),
        // Approved for the key's next epoch, or with another source committee.
        (
            bound(dev.key_change(key, later, reshare_to(&new_committee, 3), now())),
            "applies to epoch 1",
        ),
        (
            bound(dev.key_change(
                key,
                KeyEpoch {
                    committee: vec![P1, P2, P4],
                    ..epoch0()
                },
                reshare_to(&new_committee, 3),
                now(),
            )),
            "applies to epoch 0 (2-of-3 on p1, p2, p4)",
        ),
        // The right approval, but the setup names another authorisation.
        (as_is(Some(right)), "is not the digest of key change"),
    ];
    for ((setup, approved), expected) in cases {
        let ran = run_reshare(&cluster, key, &setup, approved).await;
        assert_eq!(ran.reports.len(), setup.participants().len());
        for (p, r) in &ran.reports {
            let failure = r.result.as_ref().expect_err("refused");
            assert!(
                failure.message.contains(expected),
                "{p}, {expected}: {failure:?}"
            );
            assert_eq!(record_state(&cluster, *p, key, ran.session), "none", "{p}");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_rotation_through_the_local_cluster_moves_the_key_and_erases_the_old_epoch() {
    // The lost-party case: p3 is gone; p1 and p2 reshare to p1, p2, p4 (no backup needed).
    let dir = tempfile::tempdir().unwrap();
    let cluster = five_nodes(dir.path(), quick()).await;
    let (key, public) = install_fixture_committee(&cluster);
    let replacement = [P1, P2, P4];
    let (setup, approved) = setup_of(
        &cluster,
        key,
        Kind::Reshare,
        epoch0(),
        &[P1, P2],
        &replacement,
        2,
    );
    give_primes(&cluster, &[(P1, 3), (P2, 4), (P4, 5)]);
    cluster.memory().unwrap().disconnect(P3);
    let report = cluster
        .rotate(key, setup, approved, DEADLINE)
        .await
        .unwrap();
    assert_eq!(report.to_epoch(), 1);
    for p in replacement {
        let record = cluster.node(p).state().key_record(key).unwrap();
        assert_eq!((record.epoch, &record.committee[..]), (1, &replacement[..]));
    }
    // p3 took no part, but its control messages still arrive: it erased its epoch too.
    assert!(!cluster.node(P3).state().has_key(key).unwrap());
    assert!(signs(&cluster, key, &public, &[P2, P4]).await);
    assert!(signs(&cluster, key, &public, &[P1, P4]).await);
}

/// What a restarted node needs from the cluster it was part of.
struct Restart {
    roster: tessera_channel::Roster,
    policy: tessera_policy::PolicyDocument,
    identities: Vec<(PartyId, tessera_channel::PartyIdentity)>,
    audit_dir: std::path::PathBuf,
}

impl Restart {
    fn of(cluster: &LocalCluster) -> Self {
        Restart {
            roster: cluster.roster.clone(),
            policy: cluster.policy.clone(),
            identities: cluster
                .parties
                .iter()
                .map(|p| (*p, cluster.party_identity(*p)))
                .collect(),
            audit_dir: cluster.audit_dir().to_owned(),
        }
    }

    fn identity(&self, p: PartyId) -> tessera_channel::PartyIdentity {
        let (_, identity) = self.identities.iter().find(|(q, _)| *q == p).unwrap();
        tessera_channel::PartyIdentity::from_json(&identity.to_json()).unwrap()
    }

    /// Party `p`'s node, started anew over `store` on `net`, continuing its audit log
    /// `audit` (in the cluster's audit directory).
    async fn node<S: SecretStore + Send + Sync + 'static>(
        &self,
        p: PartyId,
        store: std::sync::Arc<S>,
        net: &tessera_transport::memory::MemoryNetwork,
        audit: &str,
    ) -> std::sync::Arc<tessera_node::Node<S>> {
        use tessera_channel::{ChannelConfig, ChannelManager};
        let manager = ChannelManager::new(
            self.identity(p),
            self.roster.clone(),
            ChannelConfig::default(),
        )
        .unwrap();
        let transport =
            tessera_transport::SecureTransport::start(manager, std::sync::Arc::new(net.connect(p)))
                .await
                .unwrap();
        let audit = tessera_audit::AuditLog::open(
            Box::new(self.identity(p)),
            tessera_audit::LogOptions {
                file: Some(self.audit_dir.join(audit)),
                ..tessera_audit::LogOptions::default()
            },
        )
        .unwrap();
        std::sync::Arc::new(
            tessera_node::Node::new(
                std::sync::Arc::new(transport),
                self.identity(p),
                self.roster.clone(),
                store,
                self.policy.clone(),
                quick(),
                std::sync::Arc::new(audit),
            )
            .unwrap(),
        )
    }

    /// Every party's node restarted over its store directory under `dir` (new `Node`s over
    /// the same files, on a new network), and in-process control over them.
    async fn all(
        &self,
        dir: &std::path::Path,
    ) -> (
        Vec<std::sync::Arc<tessera_node::Node<tessera_store::FileStore>>>,
        tessera_node::channels::InProcessControl<tessera_store::FileStore>,
    ) {
        let net = tessera_transport::memory::MemoryNetwork::new();
        let mut nodes = Vec::new();
        for (p, _) in &self.identities {
            let store = tessera_store::FileStore::open(
                &dir.join(p.to_string()),
                tessera_node::local::LOCAL_PASSPHRASE,
            )
            .unwrap();
            let audit = format!("{p}.audit.jsonl");
            nodes.push(
                self.node(*p, std::sync::Arc::new(store), &net, &audit)
                    .await,
            );
        }
        for node in &nodes {
            let unreachable = node.net().connect_peers(Duration::from_secs(10)).await;
            assert!(unreachable.is_empty(), "{unreachable:?}");
        }
        let control = tessera_node::channels::InProcessControl::new(nodes.clone());
        (nodes, control)
    }
}

fn change_recorded<S: SecretStore + 'static>(
    node: &tessera_node::Node<S>,
    approved: &ApprovedKeyChange,
) -> bool {
    let name = tessera_store::RecordName::new(format!("change.{}", approved.change.id)).unwrap();
    node.state().store().contains(&name).unwrap()
}

/// Runs `setup` with `approved`, restarts every node from its store directory, and replays
/// the same approved change in a new session: every participant refuses it as used.
async fn replayed_after_a_restart(
    dir: &std::path::Path,
    cluster: LocalCluster,
    key: KeyId,
    setup: ReshareSetup,
    approved: ApprovedKeyChange,
) {
    let participants = setup.participants();
    // A generous deadline: a report missing because the machine is slow would leave a
    // session running in the old nodes while new ones start over their files.
    let (start, reports) = cluster
        .starter()
        .run_collect(
            cluster.control(),
            &participants,
            Operation::Reshare {
                key,
                setup: setup.clone(),
                approved: Some(Box::new(approved.clone())),
            },
            Duration::from_secs(300),
        )
        .await
        .unwrap();
    let ran = Ran {
        session: start.session,
        certificate: reports.values().map(|r| r.signed.clone()).collect(),
        reports,
    };
    assert_eq!(
        ran.reports.len(),
        participants.len(),
        "every participant reported"
    );
    assert!(ran.succeeded(), "{:?}", ran.reports);
    for p in &participants {
        assert!(change_recorded(cluster.node(*p), &approved), "{p}");
    }
    // Stop every node; start new ones over the same store files.
    let restart = Restart::of(&cluster);
    let (starter, _) = cluster.shared();
    cluster.shutdown().await;
    let (nodes, control) = restart.all(dir).await;
    let node = |p: PartyId| nodes.iter().find(|n| n.party() == p).unwrap().clone();
    for p in &participants {
        assert!(
            change_recorded(&node(*p), &approved),
            "{p} after the restart"
        );
        assert!(
            matches!(
                node(*p).state().reshare(key, ran.session).unwrap(),
                Some(ReshareRecord::Pending { .. })
            ),
            "{p} kept its pending result"
        );
    }
    let replay = Operation::Reshare {
        key,
        setup: setup.clone(),
        approved: Some(Box::new(approved.clone())),
    };
    let (start, reports) = starter
        .run_collect(&control, &participants, replay, DEADLINE)
        .await
        .unwrap();
    assert_eq!(reports.len(), participants.len());
    for (p, r) in &reports {
        let failure = r
            .result
            .as_ref()
            .expect_err("a replayed approval is refused");
        assert!(
            failure.message.contains(&format!(
                "approved key change {} was already used here (by reshare session {})",
                approved.change.id, ran.session
            )),
            "{p}: {failure:?}"
        );
        let record = node(*p).state().reshare(key, start.session).unwrap();
        assert_eq!(record.map(|r| r.state()), Some("abandoned"), "{p}");
    }
    // The first session's result survived the restart and the replay: its certificate
    // still activates it.
    let activated = starter
        .run_collect(
            &control,
            &participants,
            activate_op(key, &ran, ran.certificate.clone()),
            DEADLINE,
        )
        .await
        .unwrap()
        .1;
    all_ok(&activated, &participants);
    for p in &setup.new_committee {
        assert_eq!(node(*p).state().key_record(key).unwrap().epoch, 1, "{p}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approved_reshare_is_refused_when_replayed_after_the_nodes_restart() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = five_nodes(dir.path(), quick()).await;
    let (key, _) = install_fixture_committee(&cluster);
    let (setup, approved) = setup_of(
        &cluster,
        key,
        Kind::Reshare,
        epoch0(),
        &[P1, P2],
        &[P1, P2, P4],
        2,
    );
    give_primes(&cluster, &[(P1, 3), (P2, 4), (P4, 5)]);
    replayed_after_a_restart(dir.path(), cluster, key, setup, approved.unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approved_refresh_is_refused_when_replayed_after_the_nodes_restart() {
    // A refresh may come without an approval; one that carries one is checked and recorded
    // like a reshare's.
    let dir = tempfile::tempdir().unwrap();
    let cluster = five_nodes(dir.path(), quick()).await;
    let (key, _) = install_fixture_committee(&cluster);
    let committee = [P1, P2, P3];
    let (mut setup, none) = setup_of(
        &cluster,
        key,
        Kind::Refresh,
        epoch0(),
        &committee,
        &committee,
        2,
    );
    assert!(none.is_none());
    let approved =
        cluster
            .dev
            .as_ref()
            .unwrap()
            .key_change(key, epoch0(), KeyOperation::Refresh, now());
    setup.authorisation = approved.change.change_digest();
    give_primes(&cluster, &[(P1, 3), (P2, 4), (P3, 5)]);
    replayed_after_a_restart(dir.path(), cluster, key, setup, approved).await;
}

/// A store that fails on demand: writes of reshare records, listing, or one read of a
/// reshare record; or stalls reads of used-change records (it returns what it read a while
/// later, so that two sessions checking a change at nearly the same time both read it before
/// either records it).
struct FailingStore {
    inner: tessera_store::FileStore,
    fail_reshare_writes: std::sync::atomic::AtomicBool,
    fail_listing: std::sync::atomic::AtomicBool,
    /// `Some(n)`: `n` more reads of reshare records succeed, the next one fails (then `None`).
    fail_reshare_read_after: std::sync::Mutex<Option<usize>>,
    stall_change_reads: std::sync::atomic::AtomicBool,
}

impl FailingStore {
    /// How long a stalled read of a used-change record takes.
    const STALL: Duration = Duration::from_millis(300);

    /// A new store in `dir` that does not fail (yet).
    fn new(dir: &std::path::Path) -> Self {
        FailingStore {
            inner: tessera_store::FileStore::create(
                dir,
                tessera_node::local::LOCAL_PASSPHRASE,
                KdfParams::MINIMUM,
            )
            .unwrap(),
            fail_reshare_writes: false.into(),
            fail_listing: false.into(),
            fail_reshare_read_after: std::sync::Mutex::new(None),
            stall_change_reads: false.into(),
        }
    }

    fn fail_reshare_read_after(&self, reads: usize) {
        *self.fail_reshare_read_after.lock().unwrap() = Some(reads);
    }

    fn injected(what: &'static str) -> tessera_store::StoreError {
        tessera_store::StoreError::Io {
            context: what,
            path: "injected".into(),
            source: std::io::Error::other("disk failure injected by the test"),
        }
    }

    fn set(flag: &std::sync::atomic::AtomicBool, on: bool) {
        flag.store(on, std::sync::atomic::Ordering::SeqCst);
    }
}

impl SecretStore for FailingStore {
    fn put(
        &self,
        name: &tessera_store::RecordName,
        secret: &[u8],
    ) -> Result<(), tessera_store::StoreError> {
        if name.as_str().starts_with("reshare.")
            && self
                .fail_reshare_writes
                .load(std::sync::atomic::Ordering::SeqCst)
        {
            return Err(Self::injected("cannot write"));
        }
        self.inner.put(name, secret)
    }

    fn get(
        &self,
        name: &tessera_store::RecordName,
    ) -> Result<tessera_store::Zeroizing<Vec<u8>>, tessera_store::StoreError> {
        if name.as_str().starts_with("reshare.") {
            let mut after = self.fail_reshare_read_after.lock().unwrap();
            match *after {
                Some(0) => {
                    *after = None;
                    return Err(Self::injected("cannot read"));
                }
                Some(n) => *after = Some(n - 1),
                None => {}
            }
        }
        // A stalled read reads first and returns late: what it returns may be out of date.
        let read = self.inner.get(name);
        if name.as_str().starts_with("change.")
            && self
                .stall_change_reads
                .load(std::sync::atomic::Ordering::SeqCst)
        {
            std::thread::sleep(Self::STALL);
        }
        read
    }

    fn delete(&self, name: &tessera_store::RecordName) -> Result<(), tessera_store::StoreError> {
        self.inner.delete(name)
    }

    fn contains(
        &self,
        name: &tessera_store::RecordName,
    ) -> Result<bool, tessera_store::StoreError> {
        self.inner.contains(name)
    }

    fn list(&self) -> Result<Vec<tessera_store::RecordName>, tessera_store::StoreError> {
        if self.fail_listing.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(Self::injected("cannot list"));
        }
        self.inner.list()
    }
}

/// A refresh result of `key` held pending here (p1 receives a new share) that expired ten
/// seconds ago, with its session.
fn expired_pending(key: KeyId) -> (SessionId, ReshareRecord) {
    let fixture = insecure_committee_2of3();
    let (share, aux) = parts(&fixture.shares[0]);
    let session = SessionId::random();
    let pending = ReshareRecord::Pending {
        report: EpochReport {
            key,
            reshare: session,
            kind: Kind::Refresh,
            from_epoch: 0,
            old_committee: vec![P1, P2, P3],
            dealers: vec![P1, P2, P3],
            new_committee: vec![P1, P2, P3],
            new_threshold: 2,
            public_key: Vec::new(),
            confirmation: [0; 32],
            authorisation: [0; 32],
            aux: Some([0; 32]),
        },
        record: Some(Box::new(tessera_node::state::KeyRecord {
            committee: vec![P1, P2, P3],
            threshold: 2,
            epoch: 1,
            kind: tessera_wire::KeyKind::Ecdsa,
            share: tessera_node::state::StoredShare::Secp256k1(share),
            aux: Some(aux),
        })),
        expires_at: now() - 10,
    };
    (session, pending)
}

/// The store's name of `key`'s reshare record of `session`.
fn reshare_record(key: KeyId, session: SessionId) -> tessera_store::RecordName {
    tessera_store::RecordName::new(format!("reshare.{key}.{session}")).unwrap()
}

/// The events of `action` in the audit log at `path`, as JSON.
fn audited(path: &std::path::Path, action: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["action"] == action)
        .collect()
}

fn detail(event: &serde_json::Value, name: &str) -> String {
    event["details"][name]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_that_cannot_erase_a_result_audits_the_failure_and_keeps_it_until_it_can() {
    // p1's node over a store that fails on demand (its own files, next to the cluster's).
    let dir = tempfile::tempdir().unwrap();
    let cluster = five_nodes(dir.path(), quick()).await;
    let restart = Restart::of(&cluster);
    let store = std::sync::Arc::new(FailingStore::new(&dir.path().join("failing")));
    let net = tessera_transport::memory::MemoryNetwork::new();
    let log = "failing.audit.jsonl";
    let log_path = cluster.audit_dir().join(log);
    let node = restart.node(P1, store.clone(), &net, log).await;

    // A reshare result held pending here (p1 receives a new share), and expired.
    let key = KeyId::random();
    let (session, pending) = expired_pending(key);
    store
        .put(
            &reshare_record(key, session),
            &serde_json::to_vec(&pending).unwrap(),
        )
        .unwrap();
    let state = |session| {
        node.state()
            .reshare(key, session)
            .unwrap()
            .map(|r| r.state())
    };

    // The store cannot be listed: the sweep returns the error and audits it.
    FailingStore::set(&store.fail_listing, true);
    let err = node.sweep_reshares(false).unwrap_err();
    assert!(err.to_string().contains("disk failure injected"), "{err}");
    FailingStore::set(&store.fail_listing, false);
    assert_eq!(state(session), Some("pending"));
    let failed = audited(&log_path, "reshare.sweep_failed");
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(
        detail(&failed[0], "error").contains("disk failure injected"),
        "{}",
        failed[0]
    );
    assert_eq!(detail(&failed[0], "restarted"), "false");
    assert!(audited(&log_path, "reshare.abandon_failed").is_empty());

    // The record is read when the sweep lists it but not when it reads it again under the
    // lock: the failure is audited for the session, the result stays pending.
    store.fail_reshare_read_after(1);
    assert_eq!(node.sweep_reshares(false).unwrap(), 0);
    assert_eq!(state(session), Some("pending"));
    let failed = audited(&log_path, "reshare.abandon_failed");
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(detail(&failed[0], "reshare"), session.to_string());
    assert!(
        detail(&failed[0], "error").contains("disk failure injected"),
        "{}",
        failed[0]
    );

    // The record cannot be overwritten: nothing is abandoned, the failure is audited, the
    // result stays pending (and is tried again).
    FailingStore::set(&store.fail_reshare_writes, true);
    for attempt in 1..=2 {
        assert_eq!(node.sweep_reshares(false).unwrap(), 0);
        assert_eq!(state(session), Some("pending"));
        let failed = audited(&log_path, "reshare.abandon_failed");
        assert_eq!(failed.len(), attempt + 1);
        let event = &failed[attempt];
        assert_eq!(detail(event, "key"), key.to_string());
        assert_eq!(detail(event, "reshare"), session.to_string());
        assert!(
            detail(event, "error").contains("disk failure injected"),
            "{event}"
        );
        assert!(audited(&log_path, "reshare.abandoned").is_empty());
    }

    // Once the store works again, the next sweep abandons it (the new share erased) and
    // audits that.
    FailingStore::set(&store.fail_reshare_writes, false);
    assert_eq!(node.sweep_reshares(false).unwrap(), 1);
    assert_eq!(state(session), Some("abandoned"));
    let abandoned = audited(&log_path, "reshare.abandoned");
    assert_eq!(abandoned.len(), 1);
    assert_eq!(detail(&abandoned[0], "reshare"), session.to_string());
    assert_eq!(
        detail(&abandoned[0], "reason"),
        "its pending result expired"
    );
    assert_eq!(node.sweep_reshares(false).unwrap(), 0, "nothing left to do");

    // A session a stop interrupted: a restart over a store that cannot write still starts
    // the node, audits the failure and keeps the record; the next restart abandons it.
    let interrupted = SessionId::random();
    node.state().start_reshare(key, interrupted).unwrap();
    drop(node);
    FailingStore::set(&store.fail_reshare_writes, true);
    let node = restart.node(P1, store.clone(), &net, log).await;
    let failed = audited(&log_path, "reshare.abandon_failed");
    assert_eq!(failed.len(), 4);
    assert_eq!(detail(&failed[3], "reshare"), interrupted.to_string());
    assert_eq!(
        node.state()
            .reshare(key, interrupted)
            .unwrap()
            .map(|r| r.state()),
        Some("started")
    );
    drop(node);
    FailingStore::set(&store.fail_reshare_writes, false);
    let node = restart.node(P1, store.clone(), &net, log).await;
    assert_eq!(
        node.state()
            .reshare(key, interrupted)
            .unwrap()
            .map(|r| r.state()),
        Some("abandoned")
    );
    let abandoned = audited(&log_path, "reshare.abandoned");
    assert_eq!(abandoned.len(), 2);
    assert_eq!(detail(&abandoned[1], "reshare"), interrupted.to_string());
    assert_eq!(
        detail(&abandoned[1], "reason"),
        "the node stopped while it ran"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_reshare_record_is_reported_and_the_sweep_still_erases_the_others() {
    // p1's store holds two keys' expired pending results; one of them is garbage (it does not
    // decode), written before the node starts.
    let dir = tempfile::tempdir().unwrap();
    let cluster = five_nodes(dir.path(), quick()).await;
    let restart = Restart::of(&cluster);
    let store = std::sync::Arc::new(FailingStore::new(&dir.path().join("corrupt")));
    let net = tessera_transport::memory::MemoryNetwork::new();
    let log = "corrupt.audit.jsonl";
    let log_path = cluster.audit_dir().join(log);
    let (good_key, bad_key) = (KeyId::random(), KeyId::random());
    let (good, pending) = expired_pending(good_key);
    store
        .put(
            &reshare_record(good_key, good),
            &serde_json::to_vec(&pending).unwrap(),
        )
        .unwrap();
    let bad = SessionId::random();
    let garbage = b"\x00\xffnot a reshare record".to_vec();
    store.put(&reshare_record(bad_key, bad), &garbage).unwrap();

    // The node starts all the same; its start-up sweep erases the good key's result and
    // audits it, and reports and audits the corrupt record, which it leaves as it was.
    let node = restart.node(P1, store.clone(), &net, log).await;
    assert_eq!(
        node.state()
            .reshare(good_key, good)
            .unwrap()
            .map(|r| r.state()),
        Some("abandoned")
    );
    let abandoned = audited(&log_path, "reshare.abandoned");
    assert_eq!(abandoned.len(), 1, "{abandoned:?}");
    assert_eq!(detail(&abandoned[0], "key"), good_key.to_string());
    assert_eq!(detail(&abandoned[0], "reshare"), good.to_string());
    assert_eq!(
        detail(&abandoned[0], "reason"),
        "its pending result expired"
    );
    let failed = audited(&log_path, "reshare.abandon_failed");
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(detail(&failed[0], "key"), bad_key.to_string());
    assert_eq!(detail(&failed[0], "reshare"), bad.to_string());
    let record = reshare_record(bad_key, bad).to_string();
    assert!(
        detail(&failed[0], "error").contains(&format!("record {record} is not valid")),
        "{}",
        failed[0]
    );
    assert!(audited(&log_path, "reshare.sweep_failed").is_empty());
    assert_eq!(*store.get(&reshare_record(bad_key, bad)).unwrap(), garbage);

    // Each later sweep reports it again (a typed error, for its key and session) and
    // abandons nothing more.
    let swept = node.state().sweep_reshares(now(), false).unwrap();
    assert_eq!(swept.len(), 1, "{swept:?}");
    assert_eq!((swept[0].0, swept[0].1), (bad_key, bad));
    assert!(
        matches!(
            &swept[0].2,
            Err(tessera_node::state::StateError::Format(name, _)) if *name == record
        ),
        "{swept:?}"
    );
    assert_eq!(node.sweep_reshares(false).unwrap(), 0);
    assert_eq!(audited(&log_path, "reshare.abandon_failed").len(), 2);
    assert_eq!(audited(&log_path, "reshare.abandoned").len(), 1);
    assert_eq!(*store.get(&reshare_record(bad_key, bad)).unwrap(), garbage);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approved_change_started_twice_at_once_on_a_node_is_used_by_one_session_only() {
    // p4 (a receiver that holds nothing yet) over a store that stalls reading used-change
    // records, so that both sessions are inside the check at the same time.
    let dir = tempfile::tempdir().unwrap();
    let cluster = five_nodes(dir.path(), quick()).await;
    let (key, _) = install_fixture_committee(&cluster);
    let (setup, approved) = setup_of(
        &cluster,
        key,
        Kind::Reshare,
        epoch0(),
        &[P1, P2],
        &[P1, P2, P4],
        2,
    );
    let approved = approved.unwrap();
    let store = std::sync::Arc::new(FailingStore::new(&dir.path().join("stalling")));
    FailingStore::set(&store.stall_change_reads, true);
    let net = tessera_transport::memory::MemoryNetwork::new();
    let node = Restart::of(&cluster)
        .node(P4, store.clone(), &net, "stalling.audit.jsonl")
        .await;
    let control = tessera_node::channels::InProcessControl::new(vec![node.clone()]);

    // Two sessions with the same approved change, started at once (only p4 runs them: the
    // one that uses the change then stops for want of a prime set).
    let operation = Operation::Reshare {
        key,
        setup: setup.clone(),
        approved: Some(Box::new(approved.clone())),
    };
    let parties = setup.participants();
    let starter = cluster.starter();
    let (a, b) = tokio::join!(
        starter.run_collect(&control, &parties, operation.clone(), DEADLINE),
        starter.run_collect(&control, &parties, operation, DEADLINE),
    );
    let refused = |(start, reports): &(tessera_control::SessionStart, Reports)| {
        let report = reports.get(&P4).expect("p4 answered");
        let failure = report.result.as_ref().expect_err("p4 has no prime set");
        (
            start.session,
            failure.message.contains(&format!(
                "approved key change {} was already used here",
                approved.change.id
            )),
            failure.message.clone(),
        )
    };
    let (a, b) = (refused(&a.unwrap()), refused(&b.unwrap()));
    assert!(
        a.1 != b.1,
        "exactly one is refused as a used change: {a:?}, {b:?}"
    );
    let (used, other) = if a.1 { (b, a) } else { (a, b) };
    assert!(used.2.contains("prime pool is empty"), "{used:?}");
    assert!(
        other.2.contains(&format!("by reshare session {}", used.0)),
        "{other:?}"
    );
    let name = tessera_store::RecordName::new(format!("change.{}", approved.change.id)).unwrap();
    let recorded: SessionId = serde_json::from_slice(&store.get(&name).unwrap()).unwrap();
    assert_eq!(
        recorded, used.0,
        "the change names the session that used it"
    );
}

#[test]
fn an_approved_change_recorded_by_many_threads_at_once_is_used_once() {
    // The state alone: eight threads record the same change for eight sessions at once, over
    // a store that stalls reading the change record; exactly one succeeds.
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(FailingStore::new(&dir.path().join("stalling")));
    FailingStore::set(&store.stall_change_reads, true);
    let state = tessera_node::state::NodeState::new(store.clone());
    let change = tessera_wire::RequestId::random();
    let threads = 8;
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(threads));
    let results: Vec<(SessionId, bool)> = (0..threads)
        .map(|_| {
            let (state, barrier) = (state.clone(), barrier.clone());
            std::thread::spawn(move || {
                let session = SessionId::random();
                barrier.wait();
                (session, state.use_change(change, session).is_ok())
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    let used: Vec<SessionId> = results.iter().filter(|r| r.1).map(|r| r.0).collect();
    assert_eq!(used.len(), 1, "{results:?}");
    let err = state.use_change(change, SessionId::random()).unwrap_err();
    assert!(
        err.to_string()
            .contains(&format!("by reshare session {}", used[0])),
        "{err}"
    );
}
