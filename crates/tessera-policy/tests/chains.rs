//! Bitcoin PSBTs, Solana transfers and raw Ed25519 messages under the policy: what is signed
//! (only the signer's inputs), what counts as spend (change back to the signer does not, the
//! fee does), the fee cap, destinations, and every malformed payload refused before signing.

use alloy_primitives::U256;
use bitcoin::absolute::LockTime;
use bitcoin::hashes::Hash;
use bitcoin::key::{Keypair, TapTweak};
use bitcoin::psbt::Psbt as RawPsbt;
use bitcoin::secp256k1::{Message, Secp256k1, SecretKey};
use bitcoin::transaction::Version;
use bitcoin::{
    Amount, CompressedPublicKey, OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxOut, Txid,
    Witness,
};
use tessera_chain::bitcoin::{address_of_script, BitcoinNetwork};
use tessera_chain::solana::Transfer;
use tessera_policy::{
    derive, evaluate, Action, ActionKind, Asset, Decision, Destination, EcdsaHash, Payload,
    PolicyDocument, PolicyError, SignRequest, Signing,
};
use tessera_wire::KeyKind;

use crate::common::{approve, new_request, MapHistory, EXAMPLE, MONDAY_10AM};

const NET: BitcoinNetwork = BitcoinNetwork::Regtest;

struct Keys {
    ecdsa: SecretKey,
    taproot: Keypair,
}

fn keys() -> Keys {
    let secp = Secp256k1::new();
    Keys {
        ecdsa: SecretKey::from_slice(&[0x31; 32]).unwrap(),
        taproot: Keypair::from_secret_key(&secp, &SecretKey::from_slice(&[0x32; 32]).unwrap()),
    }
}

impl Keys {
    /// The ECDSA key's compressed public key: its PSBT signer.
    fn ecdsa_signer(&self) -> Vec<u8> {
        self.ecdsa
            .public_key(&Secp256k1::new())
            .serialize()
            .to_vec()
    }

    fn p2wpkh(&self) -> ScriptBuf {
        let public = self.ecdsa.public_key(&Secp256k1::new());
        ScriptBuf::new_p2wpkh(&CompressedPublicKey(public).wpubkey_hash())
    }

    fn p2tr(&self) -> ScriptBuf {
        let (internal, _) = self.taproot.x_only_public_key();
        ScriptBuf::new_p2tr(&Secp256k1::new(), internal, None)
    }

    /// The Taproot output key (tweaked, x-only): its PSBT signer.
    fn taproot_signer(&self) -> Vec<u8> {
        self.p2tr().as_bytes()[2..].to_vec()
    }
}

fn away() -> ScriptBuf {
    ScriptBuf::new_p2wpkh(&bitcoin::WPubkeyHash::from_byte_array([7; 20]))
}

/// Spends 50 000 sat (P2WPKH, the ECDSA key) and 30 000 sat (P2TR, the Taproot key); pays
/// 60 000 away and `80 000 - 60 000 - fee` back to the ECDSA key.
fn psbt(keys: &Keys, fee: u64) -> String {
    let input = |n: u8| TxIn {
        previous_output: OutPoint {
            txid: Txid::from_byte_array([n; 32]),
            vout: 0,
        },
        script_sig: ScriptBuf::new(),
        sequence: Sequence::ENABLE_RBF_NO_LOCKTIME,
        witness: Witness::new(),
    };
    let tx = Transaction {
        version: Version::TWO,
        lock_time: LockTime::ZERO,
        input: vec![input(1), input(2)],
        output: vec![
            TxOut {
                value: Amount::from_sat(60_000),
                script_pubkey: away(),
            },
            TxOut {
                value: Amount::from_sat(20_000 - fee),
                script_pubkey: keys.p2wpkh(),
            },
        ],
    };
    let mut psbt = RawPsbt::from_unsigned_tx(tx).unwrap();
    psbt.inputs[0].witness_utxo = Some(TxOut {
        value: Amount::from_sat(50_000),
        script_pubkey: keys.p2wpkh(),
    });
    psbt.inputs[1].witness_utxo = Some(TxOut {
        value: Amount::from_sat(30_000),
        script_pubkey: keys.p2tr(),
    });
    psbt.to_string()
}

fn psbt_payload(psbt: String, signer: Vec<u8>) -> Payload {
    Payload::BitcoinPsbt {
        network: NET,
        psbt,
        signer,
    }
}

/// The example's principals with one rule for every key: one approval, bitcoin and SOL
/// limits with fee caps, and `destinations` as given.
fn chains_policy(destinations: &str) -> PolicyDocument {
    let principals = EXAMPLE.split("[[rules]]").next().unwrap();
    let text = format!(
        r#"{principals}
[[rules]]
name = "chains"
keys = ["*"]
kinds = ["transfer"]
approvals = {{ count = 1, roles = ["approver"] }}

[[rules.limits]]
asset = "btc:regtest"
per_request = "70000"
max_fee = "2000"

[[rules.limits]]
asset = "sol"
per_request = "2000000000"
max_fee = "5000"

[rules.destinations]
{destinations}
"#
    );
    PolicyDocument::from_toml(text.as_bytes()).expect("the test policy parses")
}

fn decide(policy: &PolicyDocument, payload: Payload) -> Decision {
    let request = new_request(policy, crate::common::TREASURY_KEY, payload, MONDAY_10AM);
    let approvals = approve(&request, &["bob"]);
    evaluate(
        policy,
        &request,
        &approvals,
        &MapHistory::default(),
        MONDAY_10AM,
    )
}

fn codes(decision: &Decision) -> Vec<&'static str> {
    decision.reasons.iter().map(|r| r.code()).collect()
}

#[test]
fn a_psbt_signs_only_the_signers_inputs_and_change_back_to_it_is_no_spend() {
    let keys = keys();
    let psbt = psbt(&keys, 1_000);

    // The ECDSA key: input 0, BIP-143, hashed once more by the signers; its change is no spend.
    let derived = derive(&psbt_payload(psbt.clone(), keys.ecdsa_signer())).unwrap();
    assert_eq!(derived.inputs, [0]);
    assert_eq!(derived.kind(), KeyKind::Ecdsa);
    let [Signing::Ecdsa {
        preimage,
        hash: EcdsaHash::Sha256,
        digest,
    }] = derived.signings.as_slice()
    else {
        panic!("one ECDSA signing: {:?}", derived.signings)
    };
    assert_eq!(
        bitcoin::hashes::sha256::Hash::hash(preimage).to_byte_array(),
        *digest
    );
    let btc = Asset::Bitcoin { network: NET };
    assert_eq!(
        derived.action,
        Action::BitcoinTransfer {
            network: NET,
            payments: vec![(
                Destination::Bitcoin {
                    network: NET,
                    script: away().to_bytes()
                },
                U256::from(60_000)
            )],
            change: U256::from(19_000),
        }
    );
    assert_eq!(derived.max_fee, Some((btc, U256::from(1_000))));
    assert_eq!(derived.spends(), vec![(btc, U256::from(61_000))]);
    assert_eq!(derived.signer.as_deref(), Some(&keys.ecdsa_signer()[..]));

    // The Taproot key signs input 1; for it, the output back to the ECDSA key is a payment.
    let derived = derive(&psbt_payload(psbt.clone(), keys.taproot_signer())).unwrap();
    assert_eq!(derived.inputs, [1]);
    assert_eq!(derived.kind(), KeyKind::Taproot);
    assert!(matches!(
        derived.signings.as_slice(),
        [Signing::Taproot { .. }]
    ));
    assert_eq!(derived.spends(), vec![(btc, U256::from(80_000))]);

    // Under a 70 000 sat limit: the ECDSA key's spend passes, the Taproot key's does not.
    let policy = chains_policy("");
    assert!(
        decide(&policy, psbt_payload(psbt.clone(), keys.ecdsa_signer())).is_allowed(),
        "61 000 sat (60 000 paid, 1 000 fee; 19 000 change) is within 70 000"
    );
    assert_eq!(
        codes(&decide(&policy, psbt_payload(psbt, keys.taproot_signer()))),
        ["over_per_request"]
    );
}

#[test]
fn a_fee_over_the_cap_and_a_denied_output_are_refused() {
    let keys = keys();
    let policy = chains_policy("");
    let expensive = psbt_payload(psbt(&keys, 2_001), keys.ecdsa_signer());
    let decision = decide(&policy, expensive);
    assert_eq!(codes(&decision), ["over_fee_cap"]);
    assert!(
        decision.reasons[0].to_string().contains("2001"),
        "{decision:?}"
    );
    assert!(decide(
        &policy,
        psbt_payload(psbt(&keys, 2_000), keys.ecdsa_signer())
    )
    .is_allowed());

    let away = address_of_script(away().as_bytes(), NET).unwrap();
    let denied = chains_policy(&format!(r#"deny = ["btc:regtest:{away}"]"#));
    let decision = decide(
        &denied,
        psbt_payload(psbt(&keys, 1_000), keys.ecdsa_signer()),
    );
    assert_eq!(codes(&decision), ["destination_denied"]);
    assert!(
        decision.reasons[0].to_string().contains(&away),
        "{decision:?}"
    );

    // An allow list holds on every chain: the change is not checked, the payment is.
    let allowed = chains_policy(&format!(r#"allow = ["btc:regtest:{away}"]"#));
    assert!(decide(
        &allowed,
        psbt_payload(psbt(&keys, 1_000), keys.ecdsa_signer())
    )
    .is_allowed());
    let elsewhere = chains_policy(r#"allow = ["0x000000000000000000000000000000000000dEaD"]"#);
    assert_eq!(
        codes(&decide(
            &elsewhere,
            psbt_payload(psbt(&keys, 1_000), keys.ecdsa_signer())
        )),
        ["destination_not_allowed"]
    );
}

#[test]
fn psbts_that_cannot_be_signed_are_refused_before_any_signing() {
    let keys = keys();
    let good = psbt(&keys, 1_000);
    let refused = |payload: Payload| derive(&payload).unwrap_err().to_string();

    let stranger = SecretKey::from_slice(&[0x33; 32])
        .unwrap()
        .public_key(&Secp256k1::new())
        .serialize()
        .to_vec();
    let err = refused(psbt_payload(good.clone(), stranger));
    assert!(
        err.contains("no input of the PSBT spends the signer's P2WPKH"),
        "{err}"
    );
    let err = refused(psbt_payload(good.clone(), vec![2; 20]));
    assert!(err.contains("20 bytes"), "{err}");
    let err = refused(psbt_payload("cHNidP8BAA==".into(), keys.ecdsa_signer()));
    assert!(err.starts_with("PSBT refused"), "{err}");
    let err = refused(psbt_payload("not base64!".into(), keys.ecdsa_signer()));
    assert!(err.starts_with("PSBT refused"), "{err}");

    let mut missing: RawPsbt = good.parse().unwrap();
    missing.inputs[1].witness_utxo = None;
    let err = refused(psbt_payload(missing.to_string(), keys.ecdsa_signer()));
    assert!(err.contains("input 1"), "{err}");

    let oversized = "A".repeat(tessera_policy::MAX_TX_BYTES + 1);
    assert!(matches!(
        derive(&psbt_payload(oversized, keys.ecdsa_signer())),
        Err(PolicyError::TooLarge { .. })
    ));
}

#[test]
fn signatures_are_verified_for_every_signing_and_kind() {
    let keys = keys();
    let secp = Secp256k1::new();
    let psbt = psbt(&keys, 1_000);

    let derived = derive(&psbt_payload(psbt.clone(), keys.ecdsa_signer())).unwrap();
    let Signing::Ecdsa { digest, .. } = &derived.signings[0] else {
        unreachable!()
    };
    let sig = secp
        .sign_ecdsa(&Message::from_digest(*digest), &keys.ecdsa)
        .serialize_compact();
    assert!(derived.verify(&keys.ecdsa_signer(), &sig));
    assert!(!derived.verify(&keys.ecdsa_signer(), &sig[..63]));
    assert!(!derived.verify(&keys.ecdsa_signer(), &[sig, sig].concat()));
    let mut high_s = k256::ecdsa::Signature::from_slice(&sig).unwrap();
    high_s = k256::ecdsa::Signature::from_scalars(high_s.r(), -*high_s.s()).unwrap();
    assert!(
        !derived.verify(&keys.ecdsa_signer(), &high_s.to_bytes()),
        "high s is refused"
    );

    let derived = derive(&psbt_payload(psbt, keys.taproot_signer())).unwrap();
    let Signing::Taproot { sighash } = &derived.signings[0] else {
        unreachable!()
    };
    let tweaked = keys.taproot.tap_tweak(&secp, None).to_keypair();
    let sig = secp.sign_schnorr_no_aux_rand(&Message::from_digest(*sighash), &tweaked);
    assert!(derived.verify(&keys.taproot_signer(), sig.as_ref()));
    let untweaked = secp.sign_schnorr_no_aux_rand(&Message::from_digest(*sighash), &keys.taproot);
    assert!(
        !derived.verify(&keys.taproot_signer(), untweaked.as_ref()),
        "a signature by the internal key is no key-path signature"
    );
}

fn solana_transfer(from: [u8; 32], to: [u8; 32], lamports: u64) -> Payload {
    Payload::SolanaTransfer {
        message: Transfer {
            from,
            to,
            lamports,
            recent_blockhash: [9; 32],
        }
        .build(),
    }
}

#[test]
fn a_solana_transfer_is_a_sol_transfer_with_its_fee_and_its_sender_as_signer() {
    use ed25519_dalek::Signer;
    let key = ed25519_dalek::SigningKey::from_bytes(&[0x44; 32]);
    let from = key.verifying_key().to_bytes();
    let payload = solana_transfer(from, [5; 32], 1_500_000_000);
    let derived = derive(&payload).unwrap();
    assert_eq!(
        derived.action,
        Action::Transfer {
            asset: Asset::Sol,
            amount: U256::from(1_500_000_000u64),
            to: Destination::Solana([5; 32]),
        }
    );
    assert_eq!(derived.max_fee, Some((Asset::Sol, U256::from(5_000))));
    assert_eq!(derived.signer.as_deref(), Some(&from[..]));
    assert_eq!(derived.kind(), KeyKind::Ed25519);
    let Payload::SolanaTransfer { message } = &payload else {
        unreachable!()
    };
    let sig = key.sign(message).to_bytes();
    assert!(derived.verify(&from, &sig));
    assert!(!derived.verify(&[5; 32], &sig));

    let policy = chains_policy("");
    assert!(decide(&policy, payload).is_allowed());
    assert_eq!(
        codes(&decide(
            &policy,
            solana_transfer(from, [5; 32], 2_000_000_000)
        )),
        ["over_per_request"],
        "the fee counts toward the per-request limit"
    );
    let denied = chains_policy(&format!(
        r#"deny = ["sol:{}"]"#,
        tessera_chain::solana::address(&[5; 32])
    ));
    assert_eq!(
        codes(&decide(&denied, solana_transfer(from, [5; 32], 1))),
        ["destination_denied"]
    );
    let mut other = Transfer::decode(
        &Transfer {
            from,
            to: [5; 32],
            lamports: 1,
            recent_blockhash: [9; 32],
        }
        .build(),
    )
    .unwrap()
    .build();
    other.push(0);
    assert!(matches!(
        derive(&Payload::SolanaTransfer { message: other }),
        Err(PolicyError::Solana(_))
    ));
}

#[test]
fn raw_ed25519_messages_need_a_rule_that_allows_raw_messages() {
    let payload = Payload::Ed25519Message {
        bytes: b"login nonce 42".to_vec(),
    };
    let derived = derive(&payload).unwrap();
    assert_eq!(derived.action.kind(), ActionKind::RawMessage);
    assert_eq!(derived.kind(), KeyKind::Ed25519);
    assert_eq!(derived.spends(), vec![]);
    let policy = chains_policy("");
    assert_eq!(codes(&decide(&policy, payload)), ["kind_not_allowed"]);
    // A Solana transaction is never signed as an opaque raw message: the policy would not
    // see what it moves.
    let Payload::SolanaTransfer { message } = solana_transfer([1; 32], [2; 32], 3) else {
        unreachable!()
    };
    let err = derive(&Payload::Ed25519Message { bytes: message })
        .unwrap_err()
        .to_string();
    assert!(err.contains("is a Solana transaction message"), "{err}");
}

#[test]
fn chain_payloads_round_trip_through_json_and_the_canonical_encoding() {
    let keys = keys();
    let policy = chains_policy("");
    for payload in [
        psbt_payload(psbt(&keys, 1_000), keys.taproot_signer()),
        solana_transfer([1; 32], [2; 32], 3),
        Payload::Ed25519Message { bytes: vec![1, 2] },
    ] {
        let request = new_request(&policy, crate::common::TREASURY_KEY, payload, MONDAY_10AM);
        let json = serde_json::to_string(&request).unwrap();
        assert_eq!(serde_json::from_str::<SignRequest>(&json).unwrap(), request);
        let back = SignRequest::decode(&request.canonical_bytes()).unwrap();
        assert_eq!(back, request);
        back.check().unwrap();
    }
    let json = serde_json::to_value(psbt_payload("cHNidP8=".into(), vec![0xab; 32])).unwrap();
    assert_eq!(json["bitcoin_psbt"]["network"], "regtest");
    assert_eq!(json["bitcoin_psbt"]["signer"], "ab".repeat(32));
}
