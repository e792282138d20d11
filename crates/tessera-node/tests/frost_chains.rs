//! Taproot and Ed25519 keys (FROST) through the nodes, as a coordinator drives them (issue
//! 17): key generation by kind, approved requests re-checked by every signer (kind, signer,
//! policy, spend chain), one signature per input the key owns, and what a node refuses.
//!
//! Every finalized Bitcoin transaction is checked by Bitcoin Core's script interpreter
//! (`bitcoinconsensus`, Taproot rules on); every Solana transaction by `ed25519-dalek`.

use crate::common;

use common::*;
use tessera_chain::bitcoin::{
    p2tr_script, p2wpkh_script, taproot_output_key, BitcoinNetwork, InputSignature, Psbt,
    SpentOutput,
};
use tessera_chain::solana::Transfer;
use tessera_control::{Operation, Output};
use tessera_mpc::reshare::{Kind, ReshareSetup};
use tessera_node::local::{LocalCluster, LocalOptions};
use tessera_policy::{ApprovedKeyChange, KeyEpoch, KeyOperation, Payload};
use tessera_store::KdfParams;
use tessera_wire::{KeyId, KeyKind, PartyId};

const P4: PartyId = PartyId(4);
const P5: PartyId = PartyId(5);
const NET: BitcoinNetwork = BitcoinNetwork::Regtest;

async fn cluster(parties: u16) -> (LocalCluster, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let options = LocalOptions {
        parties,
        kdf: KdfParams::MINIMUM,
        ..LocalOptions::default()
    };
    (LocalCluster::start(dir.path(), options).await.unwrap(), dir)
}

/// Generates a `threshold`-of-`committee` key of `kind` through the nodes; returns its id and
/// public key as key generation reports it.
async fn generate(
    cluster: &LocalCluster,
    committee: &[PartyId],
    threshold: u16,
    kind: KeyKind,
) -> (KeyId, Vec<u8>) {
    let key = KeyId::random();
    let output = cluster
        .run(
            committee,
            Operation::Keygen {
                key,
                threshold,
                kind,
            },
            DEADLINE,
        )
        .await
        .expect("key generation");
    let Output::Keygen { public_key, .. } = output else {
        panic!("key generation returns the public key: {output:?}")
    };
    (key, public_key)
}

/// The payments' destination: the P2WPKH output of secp256k1's generator point as a key.
fn away() -> Vec<u8> {
    let generator =
        hex::decode("0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798").unwrap();
    p2wpkh_script(&generator).unwrap()
}

/// A PSBT spending `inputs` (script, sat), paying 70 000 sat away and the rest but `fee` back
/// to `change`.
fn psbt(inputs: &[(Vec<u8>, u64)], change: &[u8], fee: u64) -> (String, Vec<SpentOutput>) {
    let total: u64 = inputs.iter().map(|(_, v)| v).sum();
    let outputs = [(away(), 70_000), (change.to_vec(), total - 70_000 - fee)];
    tessera_chain::testing::psbt_spending(inputs, &outputs)
}

fn psbt_payload(psbt: &str, signer: &[u8]) -> Payload {
    Payload::BitcoinPsbt {
        network: NET,
        psbt: psbt.to_owned(),
        signer: signer.to_vec(),
    }
}

/// Bitcoin Core's script interpreter: the transaction `raw` spends each of `spent`.
fn consensus_verifies(raw: &[u8], spent: &[SpentOutput]) {
    tessera_chain::testing::consensus_verifies(raw, spent).unwrap();
}

/// Signs an approved request with `signers` as a coordinator does; returns the signatures.
async fn sign(
    cluster: &LocalCluster,
    signers: &[PartyId],
    key: KeyId,
    payload: Payload,
) -> Vec<u8> {
    let (request, approvals) = approved_payload(cluster, key, payload);
    match cluster
        .sign(signers, &request, approvals, None, DEADLINE)
        .await
        .expect("signing")
    {
        Output::Signature { signature } => signature,
        other => panic!("signing returns signatures: {other:?}"),
    }
}

/// A Taproot key spends two of its key-path outputs in one request (one signature each),
/// with its change back to itself; an Ed25519 key signs a Solana transfer and a raw message.
async fn taproot_and_ed25519_keys_sign(cluster: &LocalCluster, committee: &[PartyId], t: u16) {
    // The signers: the last t of the committee, so p1 is not always among them.
    let signers = &committee[committee.len() - usize::from(t)..];

    let (key, internal) = generate(cluster, committee, t, KeyKind::Taproot).await;
    assert_eq!(internal.len(), 33, "a Taproot key reports its internal key");
    let output_key = taproot_output_key(&internal).unwrap();
    let own = p2tr_script(&output_key).unwrap();
    let (text, spent) = psbt(&[(own.clone(), 60_000), (own.clone(), 40_000)], &own, 1_000);
    let signatures = sign(cluster, signers, key, psbt_payload(&text, &output_key)).await;
    assert_eq!(signatures.len(), 128, "one BIP-340 signature per input");
    let finalized = Psbt::decode(&text, NET)
        .unwrap()
        .finalize(&[
            InputSignature::Schnorr {
                signature: signatures[..64].to_vec(),
            },
            InputSignature::Schnorr {
                signature: signatures[64..].to_vec(),
            },
        ])
        .expect("both signatures verify against the output key");
    consensus_verifies(&finalized, &spent);

    let (key, public_key) = generate(cluster, committee, t, KeyKind::Ed25519).await;
    let from: [u8; 32] = public_key.try_into().expect("32-byte Ed25519 key");
    let message = Transfer {
        from,
        to: [5; 32],
        lamports: 250_000_000,
        recent_blockhash: [6; 32],
    }
    .build();
    let signature = sign(
        cluster,
        signers,
        key,
        Payload::SolanaTransfer {
            message: message.clone(),
        },
    )
    .await;
    let signature: [u8; 64] = signature.try_into().expect("one signature");
    let tx = Transfer::assemble(&message, &signature).unwrap();
    let verifying = ed25519_dalek::VerifyingKey::from_bytes(&from).unwrap();
    let sig = ed25519_dalek::Signature::from_bytes(tx[1..65].try_into().unwrap());
    verifying
        .verify_strict(&tx[65..], &sig)
        .expect("the Solana transaction's signature verifies");

    let raw = b"tessera login 42".to_vec();
    let signature = sign(
        cluster,
        signers,
        key,
        Payload::Ed25519Message { bytes: raw.clone() },
    )
    .await;
    let sig = ed25519_dalek::Signature::from_slice(&signature).unwrap();
    verifying
        .verify_strict(&raw, &sig)
        .expect("the raw message's signature verifies");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn taproot_and_ed25519_keys_sign_2_of_3_and_3_of_5() {
    let (cluster, _dir) = cluster(5).await;
    taproot_and_ed25519_keys_sign(&cluster, &[P1, P2, P3], 2).await;
    taproot_and_ed25519_keys_sign(&cluster, &[P1, P2, P3, P4, P5], 3).await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_psbt_mixing_p2wpkh_and_p2tr_inputs_is_signed_by_each_key_and_finalized() {
    let (cluster, _dir) = cluster(3).await;
    let (ecdsa, ecdsa_public) = install_fixture_committee(&cluster);
    let (taproot, internal) = generate(&cluster, &[P1, P2, P3], 2, KeyKind::Taproot).await;
    let output_key = taproot_output_key(&internal).unwrap();
    let wpkh = p2wpkh_script(&ecdsa_public).unwrap();
    let tr = p2tr_script(&output_key).unwrap();
    let (text, spent) = psbt(&[(wpkh.clone(), 50_000), (tr, 30_000)], &wpkh, 1_000);

    // Each key signs only its own input, in its own approved request.
    let ecdsa_signature = sign(
        &cluster,
        &[P2, P3],
        ecdsa,
        psbt_payload(&text, &ecdsa_public),
    )
    .await;
    let taproot_signature = sign(
        &cluster,
        &[P1, P3],
        taproot,
        psbt_payload(&text, &output_key),
    )
    .await;
    assert_eq!((ecdsa_signature.len(), taproot_signature.len()), (64, 64));
    let finalized = Psbt::decode(&text, NET)
        .unwrap()
        .finalize(&[
            InputSignature::Ecdsa {
                signature: ecdsa_signature,
                public_key: ecdsa_public,
            },
            InputSignature::Schnorr {
                signature: taproot_signature,
            },
        ])
        .expect("both signatures verify");
    consensus_verifies(&finalized, &spent);
    cluster.shutdown().await;
}

/// Runs `operation` with `signers` and returns the refusal every signer gave.
async fn refused(cluster: &LocalCluster, signers: &[PartyId], operation: Operation) -> String {
    let err = cluster
        .run(signers, operation, DEADLINE)
        .await
        .expect_err("the nodes refuse");
    err.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_refuse_a_request_of_another_kind_signer_or_over_the_fee_cap() {
    let (cluster, _dir) = cluster(3).await;
    let (ecdsa, ecdsa_public) = install_fixture_committee(&cluster);
    let (taproot, internal) = generate(&cluster, &[P1, P2, P3], 2, KeyKind::Taproot).await;
    let (ed25519, _) = generate(&cluster, &[P1, P2, P3], 2, KeyKind::Ed25519).await;
    let output_key = taproot_output_key(&internal).unwrap();
    let tr = p2tr_script(&output_key).unwrap();
    let wpkh = p2wpkh_script(&ecdsa_public).unwrap();
    let sign_op = |key: KeyId, payload: Payload| {
        let (request, approvals) = approved_payload(&cluster, key, payload);
        (
            request.id,
            Operation::Sign {
                request,
                approvals,
                link: None,
            },
        )
    };
    let mut refused_ids = Vec::new();

    // The ECDSA key's PSBT (P2WPKH signer) offered to the Taproot key: another kind.
    let (text, _) = psbt(
        &[(wpkh.clone(), 50_000), (tr.clone(), 30_000)],
        &wpkh,
        1_000,
    );
    let (id, op) = sign_op(taproot, psbt_payload(&text, &ecdsa_public));
    let err = refused(&cluster, &[P1, P2], op).await;
    assert!(err.contains("asks for ecdsa signatures, but key"), "{err}");
    assert!(err.contains("is of kind taproot"), "{err}");
    refused_ids.push(id);

    // A Taproot PSBT whose signer is another Taproot key (whose input it also spends).
    let other_key = taproot_output_key(&ecdsa_public).unwrap();
    let (text, _) = psbt(
        &[
            (p2tr_script(&other_key).unwrap(), 50_000),
            (tr.clone(), 30_000),
        ],
        &tr,
        1_000,
    );
    let (id, op) = sign_op(taproot, psbt_payload(&text, &other_key));
    let err = refused(&cluster, &[P1, P2], op).await;
    assert!(err.contains("names signer"), "{err}");
    refused_ids.push(id);

    // A fee over the development cap of 100 000 sat.
    let (text, _) = psbt(&[(tr.clone(), 300_000)], &tr, 100_001);
    let (id, op) = sign_op(taproot, psbt_payload(&text, &output_key));
    let err = refused(&cluster, &[P1, P2], op).await;
    assert!(err.contains("fee"), "{err}");
    refused_ids.push(id);

    // An EIP-191 message (an ECDSA signing) to the Ed25519 key; a Solana transfer from
    // another sender.
    let (id, op) = sign_op(
        ed25519,
        Payload::Message {
            bytes: b"hi".to_vec(),
        },
    );
    let err = refused(&cluster, &[P2, P3], op).await;
    assert!(err.contains("is of kind ed25519"), "{err}");
    refused_ids.push(id);
    let message = Transfer {
        from: [9; 32],
        to: [5; 32],
        lamports: 1,
        recent_blockhash: [6; 32],
    }
    .build();
    let (id, op) = sign_op(ed25519, Payload::SolanaTransfer { message });
    let err = refused(&cluster, &[P2, P3], op).await;
    assert!(err.contains("names signer"), "{err}");
    refused_ids.push(id);

    // A raw Ed25519 message to the ECDSA key.
    let (id, op) = sign_op(ecdsa, Payload::Ed25519Message { bytes: vec![1] });
    let err = refused(&cluster, &[P1, P3], op).await;
    assert!(err.contains("asks for ed25519 signatures"), "{err}");
    refused_ids.push(id);

    // A presignature or committed nonce makes one signature, so a PSBT with two of the key's
    // inputs is not signed online, for either kind.
    let (text, _) = psbt(&[(tr.clone(), 50_000), (tr.clone(), 50_000)], &tr, 1_000);
    let (request, approvals) =
        approved_payload(&cluster, taproot, psbt_payload(&text, &output_key));
    refused_ids.push(request.id);
    let online = Operation::OnlineSign {
        presignature: tessera_wire::SessionId::random(),
        request,
        approvals,
        link: None,
    };
    let err = refused(&cluster, &[P1, P2], online).await;
    assert!(err.contains("this request asks for 2"), "{err}");
    let (text, _) = psbt(
        &[(wpkh.clone(), 50_000), (wpkh.clone(), 50_000)],
        &wpkh,
        1_000,
    );
    let (request, approvals) =
        approved_payload(&cluster, ecdsa, psbt_payload(&text, &ecdsa_public));
    refused_ids.push(request.id);
    let online = Operation::OnlineSign {
        presignature: tessera_wire::SessionId::random(),
        request,
        approvals,
        link: None,
    };
    let err = refused(&cluster, &[P1, P2], online).await;
    assert!(err.contains("this request asks for 2"), "{err}");

    // Nothing was started for any refused request: no node recorded it.
    for id in refused_ids {
        for p in [P1, P2, P3] {
            assert!(
                cluster.node(p).ledger().entry(id).unwrap().is_none(),
                "{p} recorded refused request {id}"
            );
        }
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frost_keys_sign_in_one_round_from_nonces_committed_ahead_and_used_once() {
    let (cluster, _dir) = cluster(3).await;
    for kind in [KeyKind::Taproot, KeyKind::Ed25519] {
        let (key, public_key) = generate(&cluster, &[P1, P2, P3], 2, kind).await;
        // The signers commit ahead of time; each keeps its nonces and every commitment.
        let commit = |signers: [PartyId; 2]| {
            let cluster = &cluster;
            async move {
                match cluster
                    .run(&signers, Operation::Presign { key }, DEADLINE)
                    .await
                    .expect("commit session")
                {
                    Output::Presign { presignature } => presignature,
                    other => panic!("{other:?}"),
                }
            }
        };
        let committed = commit([P3, P1]).await;
        for p in [P1, P3] {
            assert_eq!(
                cluster.node(p).state().online_ready(key).unwrap(),
                [committed]
            );
        }
        assert!(cluster
            .node(P2)
            .state()
            .online_ready(key)
            .unwrap()
            .is_empty());
        let at_master = match kind {
            KeyKind::Taproot => taproot_output_key(&public_key).unwrap().to_vec(),
            _ => public_key.clone(),
        };
        let payload = || match kind {
            KeyKind::Taproot => {
                let own = p2tr_script(&at_master).unwrap();
                let (text, _) = psbt(&[(own.clone(), 90_000)], &own, 1_000);
                psbt_payload(&text, &at_master)
            }
            _ => Payload::Ed25519Message {
                bytes: b"online".to_vec(),
            },
        };
        let (request, approvals) = approved_payload(&cluster, key, payload());
        let derived = request.check().unwrap();
        let Output::Signature { signature } = cluster
            .sign(&[P3, P1], &request, approvals, Some(committed), DEADLINE)
            .await
            .expect("one-round signing")
        else {
            panic!("a signature")
        };
        assert!(derived.verify(&at_master, &signature), "{kind}");
        // Consumed on both signers: never again, for any request.
        assert!(cluster
            .node(P1)
            .state()
            .online_ready(key)
            .unwrap()
            .is_empty());
        let (request, approvals) = approved_payload(&cluster, key, payload());
        let err = cluster
            .sign(&[P3, P1], &request, approvals, Some(committed), DEADLINE)
            .await
            .expect_err("used once");
        assert!(err.to_string().contains("already used"), "{err}");
        // Nonces committed by p3 and p1, in that order, sign only with p3 and p1 in that
        // order.
        let committed = commit([P3, P1]).await;
        let (request, approvals) = approved_payload(&cluster, key, payload());
        let err = cluster
            .sign(&[P1, P3], &request, approvals, Some(committed), DEADLINE)
            .await
            .expect_err("another order");
        assert!(
            err.to_string()
                .contains("committed by p3, p1, not by the session's parties p1, p3"),
            "{err}"
        );
    }
    cluster.shutdown().await;
}

/// A refresh (unapproved, as a scheduled one runs) or a reshare (with the development admins'
/// approval) of `key` as p1 holds it now.
fn rotation(
    cluster: &LocalCluster,
    key: KeyId,
    kind: Kind,
    dealers: &[PartyId],
    new_committee: &[PartyId],
    new_threshold: u16,
) -> (ReshareSetup, Option<ApprovedKeyChange>) {
    let record = cluster.node(P1).state().key_record(key).unwrap();
    let approved = (kind == Kind::Reshare).then(|| {
        cluster.dev.as_ref().unwrap().key_change(
            key,
            KeyEpoch {
                epoch: record.epoch,
                committee: record.committee.clone(),
                threshold: record.threshold,
            },
            KeyOperation::Reshare {
                committee: new_committee.to_vec(),
                threshold: new_threshold,
            },
            now(),
        )
    });
    let setup = ReshareSetup {
        kind,
        key_id: key,
        key_kind: record.kind,
        epoch: record.epoch,
        key: record.share.setup_key(),
        old_committee: record.committee.clone(),
        dealers: dealers.to_vec(),
        new_committee: new_committee.to_vec(),
        new_threshold,
        authorisation: approved
            .as_ref()
            .map_or([0; 32], |a| a.change.change_digest()),
    };
    (setup, approved)
}

/// Refreshes, then reshares 2-of-3 on p1-p3 to 3-of-4 on p1-p4, key `key` through the nodes,
/// with no prime set anywhere (FROST keys have no auxiliary info); checks each new epoch as
/// the nodes hold it.
async fn refresh_then_reshare(cluster: &LocalCluster, key: KeyId, kind: KeyKind) {
    let shares_before = cluster.node(P1).state().key_record(key).unwrap().share;
    let (setup, none) = rotation(cluster, key, Kind::Refresh, &[P1, P2, P3], &[P1, P2, P3], 2);
    let report = cluster.rotate(key, setup, none, DEADLINE).await.unwrap();
    assert_eq!((report.to_epoch(), report.aux), (1, None));
    let record = cluster.node(P1).state().key_record(key).unwrap();
    assert_eq!((record.epoch, record.kind), (1, kind));
    assert!(record.aux.is_none(), "a FROST key has no auxiliary info");
    assert_eq!(record.share.public_key(), shares_before.public_key());
    assert_ne!(
        serde_json::to_value(&record.share).unwrap(),
        serde_json::to_value(&shares_before).unwrap(),
        "the share was renewed"
    );
    let four = [P1, P2, P3, P4];
    let (setup, approved) = rotation(cluster, key, Kind::Reshare, &[P3, P2], &four, 3);
    let report = cluster
        .rotate(key, setup, approved, DEADLINE)
        .await
        .unwrap();
    assert_eq!(report.to_epoch(), 2);
    for p in four {
        let record = cluster.node(p).state().key_record(key).unwrap();
        assert_eq!(
            (
                record.epoch,
                record.kind,
                record.threshold,
                &record.committee[..]
            ),
            (2, kind, 3, &four[..])
        );
        assert_eq!(record.share.public_key(), shares_before.public_key());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frost_keys_are_refreshed_and_reshared_by_the_nodes_and_sign_after() {
    let (cluster, _dir) = cluster(4).await;

    // Taproot: nonces committed for the old epoch are erased with it; the key spends after.
    let (key, internal) = generate(&cluster, &[P1, P2, P3], 2, KeyKind::Taproot).await;
    let committed = cluster
        .run(&[P1, P2], Operation::Presign { key }, DEADLINE)
        .await
        .expect("commit session");
    assert!(matches!(committed, Output::Presign { .. }), "{committed:?}");
    refresh_then_reshare(&cluster, key, KeyKind::Taproot).await;
    for p in [P1, P2] {
        assert!(
            cluster
                .node(p)
                .state()
                .online_ready(key)
                .unwrap()
                .is_empty(),
            "{p}: nonces of the old epoch are erased"
        );
    }
    let output_key = taproot_output_key(&internal).unwrap();
    let own = p2tr_script(&output_key).unwrap();
    let (text, spent) = psbt(&[(own.clone(), 90_000)], &own, 1_000);
    let signature = sign(
        &cluster,
        &[P4, P1, P3],
        key,
        psbt_payload(&text, &output_key),
    )
    .await;
    let finalized = Psbt::decode(&text, NET)
        .unwrap()
        .finalize(&[InputSignature::Schnorr { signature }])
        .expect("the signature verifies against the same output key");
    consensus_verifies(&finalized, &spent);

    // Ed25519: a Solana transfer from the same address, signed by the new committee.
    let (key, public_key) = generate(&cluster, &[P1, P2, P3], 2, KeyKind::Ed25519).await;
    refresh_then_reshare(&cluster, key, KeyKind::Ed25519).await;
    let from: [u8; 32] = public_key.try_into().unwrap();
    let message = Transfer {
        from,
        to: [5; 32],
        lamports: 1_000,
        recent_blockhash: [6; 32],
    }
    .build();
    let signature = sign(
        &cluster,
        &[P2, P4, P3],
        key,
        Payload::SolanaTransfer {
            message: message.clone(),
        },
    )
    .await;
    let sig = ed25519_dalek::Signature::from_slice(&signature).unwrap();
    ed25519_dalek::VerifyingKey::from_bytes(&from)
        .unwrap()
        .verify_strict(&message, &sig)
        .expect("the transfer is signed by the same key");
    // Two of the new committee no longer suffice.
    let (request, approvals) = approved_payload(
        &cluster,
        key,
        Payload::Ed25519Message {
            bytes: b"two of four".to_vec(),
        },
    );
    assert!(cluster
        .sign(&[P1, P2], &request, approvals, None, DEADLINE)
        .await
        .is_err());
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holders_refuse_a_rotation_that_names_another_key_kind_or_curve() {
    let (cluster, _dir) = cluster(3).await;
    let (key, _) = generate(&cluster, &[P1, P2, P3], 2, KeyKind::Taproot).await;
    let committee = [P1, P2, P3];
    let (honest, _) = rotation(&cluster, key, Kind::Refresh, &committee, &committee, 2);
    // The same secp256k1 key called an ECDSA key: every holder refuses before dealing.
    let as_ecdsa = ReshareSetup {
        key_kind: KeyKind::Ecdsa,
        ..honest.clone()
    };
    // Called an Ed25519 key, and one that carries Ed25519 key info.
    let as_ed25519 = ReshareSetup {
        key_kind: KeyKind::Ed25519,
        ..honest.clone()
    };
    let (ed_key, _) = generate(&cluster, &committee, 2, KeyKind::Ed25519).await;
    let ed_info = cluster
        .node(P1)
        .state()
        .key_record(ed_key)
        .unwrap()
        .share
        .setup_key();
    let other_curve = ReshareSetup {
        key: ed_info,
        ..honest.clone()
    };
    for (setup, says) in [
        (
            as_ecdsa,
            "is of kind taproot here, but the session is for kind ecdsa",
        ),
        (
            as_ed25519,
            "names key kind ed25519 but carries a key on secp256k1",
        ),
        (
            other_curve,
            "names key kind taproot but carries a key on edwards25519",
        ),
    ] {
        let err = cluster
            .rotate(key, setup, None, DEADLINE)
            .await
            .expect_err("refused");
        assert!(err.to_string().contains(says), "{err}; expected {says:?}");
    }
    // Nothing changed: the honest refresh still runs from epoch 0.
    let report = cluster.rotate(key, honest, None, DEADLINE).await.unwrap();
    assert_eq!(report.to_epoch(), 1);
    cluster.shutdown().await;
}
