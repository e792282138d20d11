//! Taproot and Ed25519 keys through the coordinator (issue 17): keys of each kind generated on
//! a ready committee, their addresses, PSBTs and Solana transfers submitted, approved, signed
//! by the nodes, finalized into network transactions that Bitcoin Core's script interpreter
//! and ed25519-dalek accept; a PSBT mixing two keys' inputs carried from one request to the
//! next; what the coordinator refuses before anyone approves; and refresh and resharing of
//! FROST keys, approved by the admins, with no prime set anywhere.

use crate::on_both_backends;
use crate::service_support;

use bitcoin::hashes::Hash;
use bitcoin::psbt::Psbt as RawPsbt;
use bitcoin::ScriptBuf;
use service_support::*;
use tessera_chain::bitcoin::{p2tr_script, p2wpkh_script, BitcoinNetwork, SpentOutput};
use tessera_chain::solana::Transfer;
use tessera_chain::Chain;
use tessera_coordinator::service::{Coordinator, ServiceError, Submit};
use tessera_coordinator::store::{KeyChangeState, RequestState};
use tessera_policy::{KeyOperation, Payload};
use tessera_wire::{KeyKind, RequestId};

on_both_backends!(
    taproot_and_ed25519_keys_sign_psbts_and_solana_transfers,
    a_psbt_of_two_keys_goes_from_one_request_to_the_next,
    frost_keys_sign_online_from_nonces_the_pool_committed,
    frost_keys_are_refreshed_and_reshared_on_approval_and_sign_after,
);

const NET: BitcoinNetwork = BitcoinNetwork::Regtest;

fn submit(key: &str, path: Vec<u32>, payload: Payload) -> Submit {
    Submit {
        id: RequestId::random(),
        key: key.to_owned(),
        path,
        payload,
        lifetime_secs: None,
    }
}

/// A PSBT spending `inputs` (script, sat), paying 70 000 sat away and all but a 1 000 sat fee
/// back to `change`.
fn psbt(inputs: &[(Vec<u8>, u64)], change: &[u8]) -> (String, Vec<SpentOutput>) {
    let total: u64 = inputs.iter().map(|(_, v)| v).sum();
    let away = ScriptBuf::new_p2wpkh(&bitcoin::WPubkeyHash::from_byte_array([7; 20])).to_bytes();
    let outputs = [(away, 70_000), (change.to_vec(), total - 71_000)];
    tessera_chain::testing::psbt_spending(inputs, &outputs)
}

/// Bitcoin Core's script interpreter: `raw` spends each of `spent`.
fn consensus_verifies(raw: &[u8], spent: &[SpentOutput]) {
    tessera_chain::testing::consensus_verifies(raw, spent).unwrap();
}

/// Submits `payload` for `key` at `path` as olivia, signs it as its submitter, has ana and
/// ben approve it, and returns the request's result once signed.
async fn sign(
    c: &Coordinator,
    cluster: &Cluster,
    key: &str,
    path: Vec<u32>,
    payload: Payload,
) -> Vec<u8> {
    sign_request(c, cluster, key, path, payload).await.1
}

/// As [`sign`], with the request's id.
async fn sign_request(
    c: &Coordinator,
    cluster: &Cluster,
    key: &str,
    path: Vec<u32>,
    payload: Payload,
) -> (RequestId, Vec<u8>) {
    let view = c
        .submit("olivia", submit(key, path, payload))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    c.sign_as_submitter("olivia", view.id, cluster.approval("olivia", &view))
        .await
        .unwrap();
    for approver in ["ana", "ben"] {
        c.approve(approver, view.id, cluster.approval(approver, &view))
            .await
            .unwrap();
    }
    let signed = wait_for(c, view.id, RequestState::Signed).await;
    let result = hex::decode(signed.result.expect("a signed request has a result")).unwrap();
    (view.id, result)
}

/// The public key of `key` at `path` as `chain` sees it.
async fn chain_key(c: &Coordinator, key: &str, path: &[u32], chain: Chain) -> Vec<u8> {
    let address = c.key_address(key, path, Some(chain), NET).await.unwrap();
    hex::decode(address.public_key).unwrap()
}

#[track_caller]
fn assert_invalid(result: Result<impl std::fmt::Debug, ServiceError>, says: &str) {
    match result {
        Err(e @ ServiceError::Invalid(_)) => {
            assert!(e.to_string().contains(says), "{e}; expected {says:?}")
        }
        other => panic!("expected Invalid ({says}), got {other:?}"),
    }
}

async fn taproot_and_ed25519_keys_sign_psbts_and_solana_transfers(db: &Db) {
    let cluster = Cluster::start().await;
    let c = coordinator(db, &cluster, cluster.control(), settings()).await;
    c.register_committee_ready(vec![P1, P2, P3]).await.unwrap();
    let btc = c
        .create_key("btc", vec![P1, P2, P3], 2, KeyKind::Taproot)
        .await
        .unwrap();
    let sol = c
        .create_key("sol", vec![P1, P2, P3], 2, KeyKind::Ed25519)
        .await
        .unwrap();
    assert_eq!((btc.kind, sol.kind), (KeyKind::Taproot, KeyKind::Ed25519));
    assert!(
        btc.address.as_deref().unwrap().starts_with("bc1p"),
        "{btc:?}"
    );
    // The same name for another kind is another key.
    assert!(matches!(
        c.create_key("btc", vec![P1, P2, P3], 2, KeyKind::Ed25519)
            .await,
        Err(ServiceError::Conflict(_))
    ));

    // Addresses: on the key's chains only.
    let regtest = c
        .key_address("btc", &[0, 1], Some(Chain::Bitcoin), NET)
        .await
        .unwrap();
    assert!(regtest.address.starts_with("bcrt1p"), "{regtest:?}");
    let solana = c.key_address("sol", &[], None, NET).await.unwrap();
    assert_eq!(Some(solana.address.clone()), sol.address);
    assert_invalid(
        c.key_address("sol", &[], Some(Chain::Ethereum), NET).await,
        "has no ethereum address",
    );
    assert_invalid(
        c.key_address("btc", &[], Some(Chain::Solana), NET).await,
        "has no solana address",
    );

    // A Taproot key at a child path spends two of its outputs: one signature each, the
    // network transaction assembled and valid by consensus rules.
    let output_key = chain_key(&c, "btc", &[0, 1], Chain::Bitcoin).await;
    let own = p2tr_script(&output_key).unwrap();
    let (text, spent) = psbt(&[(own.clone(), 60_000), (own.clone(), 40_000)], &own);
    let payload = Payload::BitcoinPsbt {
        network: NET,
        psbt: text.clone(),
        signer: output_key.clone(),
    };
    let tx = sign(&c, &cluster, "btc", vec![0, 1], payload).await;
    consensus_verifies(&tx, &spent);

    // An Ed25519 key signs a Solana transfer from its address.
    let from: [u8; 32] = chain_key(&c, "sol", &[], Chain::Solana)
        .await
        .try_into()
        .unwrap();
    let message = Transfer {
        from,
        to: [5; 32],
        lamports: 1_000_000,
        recent_blockhash: [6; 32],
    }
    .build();
    let tx = sign(
        &c,
        &cluster,
        "sol",
        vec![],
        Payload::SolanaTransfer {
            message: message.clone(),
        },
    )
    .await;
    let key = ed25519_dalek::VerifyingKey::from_bytes(&from).unwrap();
    let signature = ed25519_dalek::Signature::from_slice(&tx[1..65]).unwrap();
    key.verify_strict(&tx[65..], &signature)
        .expect("the Solana transaction is signed by the key");
    assert_eq!(&tx[65..], &message[..]);

    // Refused at submission, before anyone approves: another kind, another signer, another
    // path's key.
    let payload = |signer: &[u8]| Payload::BitcoinPsbt {
        network: NET,
        psbt: text.clone(),
        signer: signer.to_vec(),
    };
    assert_invalid(
        c.submit("olivia", submit("sol", vec![], payload(&output_key)))
            .await,
        "is of kind ed25519 and this payload asks for taproot signatures",
    );
    assert_invalid(
        c.submit("olivia", submit("btc", vec![], payload(&output_key)))
            .await,
        "the payload's signer is",
    );
    assert_invalid(
        c.submit(
            "olivia",
            submit("sol", vec![], Payload::Message { bytes: vec![1] }),
        )
        .await,
        "asks for ecdsa signatures",
    );
    // A PSBT Tessera cannot sign is refused with what is wrong and where: an input of a
    // script type no key here signs, an input whose spent output is missing, a sighash type
    // that would let others change the transaction.
    let p2pkh = ScriptBuf::new_p2pkh(&bitcoin::PubkeyHash::from_byte_array([3; 20])).to_bytes();
    let (unsupported, _) = psbt(&[(own.clone(), 60_000), (p2pkh, 40_000)], &own);
    let mut missing: RawPsbt = text.parse().unwrap();
    missing.inputs[1].witness_utxo = None;
    let mut anyone_can_pay: RawPsbt = text.parse().unwrap();
    anyone_can_pay.inputs[0].sighash_type = Some(bitcoin::psbt::PsbtSighashType::from(
        bitcoin::sighash::TapSighashType::AllPlusAnyoneCanPay,
    ));
    for (bad, says) in [
        (unsupported, "input 1"),
        (missing.to_string(), "input 1"),
        (anyone_can_pay.to_string(), "input 0"),
        ("cHNidP8BAA==".to_owned(), "PSBT refused"),
    ] {
        assert_invalid(
            c.submit(
                "olivia",
                submit(
                    "btc",
                    vec![0, 1],
                    Payload::BitcoinPsbt {
                        network: NET,
                        psbt: bad,
                        signer: output_key.clone(),
                    },
                ),
            )
            .await,
            says,
        );
    }
    c.shutdown().await;
}

async fn a_psbt_of_two_keys_goes_from_one_request_to_the_next(db: &Db) {
    let cluster = Cluster::start().await;
    let c = coordinator(db, &cluster, cluster.control(), settings()).await;
    let ecdsa = fixture_key(&c, "hot").await;
    c.create_key("tap", vec![P1, P2, P3], 2, KeyKind::Taproot)
        .await
        .unwrap();
    let compressed = chain_key(&c, &ecdsa, &[], Chain::Bitcoin).await;
    let output_key = chain_key(&c, "tap", &[], Chain::Bitcoin).await;
    let wpkh = p2wpkh_script(&compressed).unwrap();
    let (text, spent) = psbt(
        &[
            (wpkh.clone(), 50_000),
            (p2tr_script(&output_key).unwrap(), 30_000),
        ],
        &wpkh,
    );
    // The ECDSA key signs its P2WPKH input: the answer is the PSBT with that input final.
    let partial = sign(
        &c,
        &cluster,
        &ecdsa,
        vec![],
        Payload::BitcoinPsbt {
            network: NET,
            psbt: text,
            signer: compressed,
        },
    )
    .await;
    let partial = String::from_utf8(partial).expect("a PSBT, base64");
    assert!(partial.starts_with("cHNidP"), "{partial}");
    // The Taproot key signs its input of that PSBT: every input is final, the transaction
    // is assembled.
    let tx = sign(
        &c,
        &cluster,
        "tap",
        vec![],
        Payload::BitcoinPsbt {
            network: NET,
            psbt: partial,
            signer: output_key,
        },
    )
    .await;
    consensus_verifies(&tx, &spent);
    c.shutdown().await;
}

async fn frost_keys_sign_online_from_nonces_the_pool_committed(db: &Db) {
    let cluster = Cluster::start().await;
    let settings = tessera_coordinator::service::CoordinatorSettings {
        presignature_pool_target: 1,
        presignature_refill_interval: std::time::Duration::from_millis(200),
        ..settings()
    };
    let c = coordinator(db, &cluster, cluster.control(), settings).await;
    c.register_committee_ready(vec![P1, P2, P3]).await.unwrap();
    for (name, kind) in [("tap", KeyKind::Taproot), ("sol", KeyKind::Ed25519)] {
        c.create_key(name, vec![P1, P2, P3], 2, kind).await.unwrap();
        wait_for_presignature(&c, name).await;
    }
    // A Solana transfer from a child key signs in one round from committed nonces.
    let path = vec![0, 2];
    let from: [u8; 32] = chain_key(&c, "sol", &path, Chain::Solana)
        .await
        .try_into()
        .unwrap();
    let message = Transfer {
        from,
        to: [5; 32],
        lamports: 7,
        recent_blockhash: [6; 32],
    }
    .build();
    let (id, tx) = sign_request(
        &c,
        &cluster,
        "sol",
        path,
        Payload::SolanaTransfer { message },
    )
    .await;
    let key = ed25519_dalek::VerifyingKey::from_bytes(&from).unwrap();
    let signature = ed25519_dalek::Signature::from_slice(&tx[1..65]).unwrap();
    key.verify_strict(&tx[65..], &signature).unwrap();
    let sessions = c
        .store()
        .sessions_for(tessera_coordinator::store::SessionSubject::Request(id))
        .await
        .unwrap();
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    assert_eq!(sessions[0].operation, "online_sign");
    // So does a Taproot key-path spend of one input.
    let output_key = chain_key(&c, "tap", &[], Chain::Bitcoin).await;
    let own = p2tr_script(&output_key).unwrap();
    let (text, spent) = psbt(&[(own.clone(), 90_000)], &own);
    let payload = Payload::BitcoinPsbt {
        network: NET,
        psbt: text,
        signer: output_key,
    };
    let (id, tx) = sign_request(&c, &cluster, "tap", vec![], payload).await;
    consensus_verifies(&tx, &spent);
    let sessions = c
        .store()
        .sessions_for(tessera_coordinator::store::SessionSubject::Request(id))
        .await
        .unwrap();
    assert_eq!(sessions[0].operation, "online_sign");
    c.shutdown().await;
}

/// A Solana transfer from `sol`'s address, signed and verified.
async fn sol_transfer_signs(c: &Coordinator, cluster: &Cluster, lamports: u64) {
    let from: [u8; 32] = chain_key(c, "sol", &[], Chain::Solana)
        .await
        .try_into()
        .unwrap();
    let message = Transfer {
        from,
        to: [5; 32],
        lamports,
        recent_blockhash: [6; 32],
    }
    .build();
    let tx = sign(
        c,
        cluster,
        "sol",
        vec![],
        Payload::SolanaTransfer { message },
    )
    .await;
    let signature = ed25519_dalek::Signature::from_slice(&tx[1..65]).unwrap();
    ed25519_dalek::VerifyingKey::from_bytes(&from)
        .unwrap()
        .verify_strict(&tx[65..], &signature)
        .expect("signed by the key's address");
}

/// A key-path spend of one of `tap`'s outputs at `path`, finalized and checked by consensus
/// rules.
async fn taproot_spend_signs(c: &Coordinator, cluster: &Cluster, path: Vec<u32>) {
    let output_key = chain_key(c, "tap", &path, Chain::Bitcoin).await;
    let own = p2tr_script(&output_key).unwrap();
    let (text, spent) = psbt(&[(own.clone(), 80_000)], &own);
    let payload = Payload::BitcoinPsbt {
        network: NET,
        psbt: text,
        signer: output_key,
    };
    let tx = sign(c, cluster, "tap", path, payload).await;
    consensus_verifies(&tx, &spent);
}

async fn frost_keys_are_refreshed_and_reshared_on_approval_and_sign_after(db: &Db) {
    // No node has a prime set: FROST keys have no auxiliary info and rotate without one.
    let cluster = Cluster::start().await;
    let c = coordinator(db, &cluster, cluster.control(), settings()).await;
    c.register_committee_ready(vec![P1, P2, P3]).await.unwrap();
    for (name, kind) in [("tap", KeyKind::Taproot), ("sol", KeyKind::Ed25519)] {
        let created = c.create_key(name, vec![P1, P2, P3], 2, kind).await.unwrap();
        let share = |p: usize| {
            let record = cluster.nodes[p].state().key_record(created.id).unwrap();
            serde_json::to_value(&record.share).unwrap()
        };
        let before = share(0);
        // Proposed with no note about primes, refreshed once another admin approves.
        let pending = c
            .propose_key_change("ada", proposal(name, KeyOperation::Refresh))
            .await
            .unwrap();
        assert!(pending.notes.is_empty(), "{:?}", pending.notes);
        let refresh = approved_change(&c, &cluster, name, KeyOperation::Refresh).await;
        assert_eq!(
            refresh.state,
            KeyChangeState::Applied,
            "{:?}",
            refresh.error
        );
        let view = c.get_key(name).await.unwrap();
        assert_eq!((view.epoch, view.kind), (1, kind));
        assert_eq!(view.public_key, created.public_key, "the same key");
        assert_eq!(view.address, created.address, "the same address");
        assert!(view.erasure_unconfirmed.is_empty());
        assert_ne!(share(0), before, "p1's share was renewed");
        // Then reshared to 3-of-3: every holder must sign.
        let three = approved_change(&c, &cluster, name, reshare(&[P1, P2, P3], 3)).await;
        assert_eq!(three.state, KeyChangeState::Applied, "{:?}", three.error);
        let view = c.get_key(name).await.unwrap();
        assert_eq!((view.epoch, view.threshold), (2, 3));
        assert_eq!(view.public_key, created.public_key);
        for node in &cluster.nodes {
            let record = node.state().key_record(created.id).unwrap();
            assert_eq!((record.epoch, record.threshold, record.kind), (2, 3, kind));
        }
    }
    taproot_spend_signs(&c, &cluster, vec![]).await;
    taproot_spend_signs(&c, &cluster, vec![0, 7]).await;
    sol_transfer_signs(&c, &cluster, 2_000).await;
    c.shutdown().await;
}
