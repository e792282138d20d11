//! Decode, digest, sign (with a local test key standing in for the threshold signers),
//! assemble, and check with alloy's own decoder that the sender recovers to the key's address.

use alloy_consensus::transaction::SignerRecoverable;
use alloy_consensus::{SignableTransaction, TxEip1559, TxEnvelope, TxLegacy};
use alloy_eips::eip2718::Decodable2718;
use alloy_primitives::{address, b256, hex, Address as AlloyAddress, TxKind, U256};
use k256::ecdsa::SigningKey;
use rand_core::OsRng;
use tessera_chain::{address, checksummed, personal_message_digest, ChainError, UnsignedTx};

fn eip1559() -> TxEip1559 {
    TxEip1559 {
        chain_id: 1,
        nonce: 0x42,
        gas_limit: 44386,
        to: address!("6069a6c32cf691f5982febae4faf8a6f3ab2f0f6").into(),
        value: U256::from(1_500_000_000_000_000_000u128),
        input: hex!("a22cb465").into(),
        max_fee_per_gas: 0x4a817c800,
        max_priority_fee_per_gas: 0x3b9aca00,
        access_list: Default::default(),
    }
}

fn legacy() -> TxLegacy {
    TxLegacy {
        chain_id: Some(11155111),
        nonce: 7,
        gas_price: 20_000_000_000,
        gas_limit: 21000,
        to: TxKind::Call(address!("000000000000000000000000000000000000dEaD")),
        value: U256::from(10u64).pow(U256::from(17u64)),
        input: Default::default(),
    }
}

/// Signs like the threshold signers do: `r || s`, low s, no recovery id.
fn sign(key: &SigningKey, digest: &[u8; 32]) -> Vec<u8> {
    let (sig, _) = key.sign_prehash_recoverable(digest).unwrap();
    let sig = sig.normalize_s().unwrap_or(sig);
    sig.to_bytes().to_vec()
}

fn public(key: &SigningKey) -> Vec<u8> {
    key.verifying_key()
        .to_encoded_point(true)
        .as_bytes()
        .to_vec()
}

#[test]
fn the_digest_matches_a_known_eip1559_vector() {
    // alloy's own test vector for this transaction.
    let tx = TxEip1559 {
        value: U256::ZERO,
        input: hex!("a22cb4650000000000000000000000005eee75727d804a2b13038928d36f8b188945a57a0000000000000000000000000000000000000000000000000000000000000000").into(),
        ..eip1559()
    };
    let decoded = UnsignedTx::decode(&tx.encoded_for_signing()).unwrap();
    assert_eq!(
        decoded.signing_digest(),
        b256!("0d5688ac3897124635b6cf1bc0e29d6dfebceebdc10a54d74f2ef8b56535b682").0
    );
}

#[test]
fn eip1559_and_legacy_round_trip_to_a_recoverable_signed_transaction() {
    for _ in 0..8 {
        let key = SigningKey::random(&mut OsRng);
        let sender = address(&public(&key)).unwrap();
        for raw in [
            eip1559().encoded_for_signing(),
            legacy().encoded_for_signing(),
        ] {
            let tx = UnsignedTx::decode(&raw).unwrap();
            let signed = tx
                .assemble(&sign(&key, &tx.signing_digest()), &public(&key))
                .unwrap();
            let envelope = TxEnvelope::decode_2718(&mut signed.as_slice()).unwrap();
            assert_eq!(
                envelope.recover_signer().unwrap(),
                AlloyAddress::from(sender)
            );
            // Our own recovery agrees with alloy's; a flipped byte recovers someone else.
            assert_eq!(tessera_chain::recover_sender(&signed).unwrap(), sender);
            let mut tampered = signed.clone();
            let last = tampered.len() - 1;
            tampered[last] ^= 1;
            assert_ne!(tessera_chain::recover_sender(&tampered).ok(), Some(sender));
            if let TxEnvelope::Legacy(signed) = &envelope {
                // EIP-155: v = chain_id * 2 + 35 + parity.
                assert_eq!(signed.tx().chain_id, Some(11155111));
            }
        }
    }
}

#[test]
fn fields_are_read_from_the_transaction() {
    let tx = UnsignedTx::decode(&legacy().encoded_for_signing()).unwrap();
    assert_eq!(tx.chain_id(), 11155111);
    assert_eq!(tx.nonce(), 7);
    assert_eq!(
        tx.to(),
        tessera_chain::TxKind::Call(hex!("000000000000000000000000000000000000dEaD"))
    );
    assert_eq!(tx.value(), U256::from(100_000_000_000_000_000u128));
    // Gas limit times gas price.
    assert_eq!(tx.max_fee(), U256::from(21_000u64 * 20_000_000_000));
    let tx = UnsignedTx::decode(&eip1559().encoded_for_signing()).unwrap();
    assert_eq!(tx.input(), hex!("a22cb465"));
    // Gas limit times the maximum fee per gas (not the priority fee).
    assert_eq!(tx.max_fee(), U256::from(44_386u64 * 0x4a817c800));
    // The largest fields still fit.
    let huge = TxEip1559 {
        gas_limit: u64::MAX,
        max_fee_per_gas: u128::MAX,
        ..eip1559()
    };
    let tx = UnsignedTx::decode(&huge.encoded_for_signing()).unwrap();
    assert_eq!(tx.max_fee(), U256::from(u64::MAX) * U256::from(u128::MAX));
}

#[test]
fn a_signature_by_another_key_or_over_another_transaction_is_refused() {
    let key = SigningKey::random(&mut OsRng);
    let other = SigningKey::random(&mut OsRng);
    let tx = UnsignedTx::decode(&eip1559().encoded_for_signing()).unwrap();
    let by_other = sign(&other, &tx.signing_digest());
    assert_eq!(
        tx.assemble(&by_other, &public(&key)),
        Err(ChainError::SignatureMismatch)
    );
    let another = UnsignedTx::decode(&legacy().encoded_for_signing()).unwrap();
    let for_another = sign(&key, &another.signing_digest());
    assert_eq!(
        tx.assemble(&for_another, &public(&key)),
        Err(ChainError::SignatureMismatch)
    );
    // High s (the malleable twin) is refused, as Ethereum refuses it.
    let good = sign(&key, &tx.signing_digest());
    let sig = k256::ecdsa::Signature::from_slice(&good).unwrap();
    let (r, s) = sig.split_scalars();
    let high = k256::ecdsa::Signature::from_scalars(r, -*s).unwrap();
    assert_eq!(
        tx.assemble(&high.to_bytes(), &public(&key)),
        Err(ChainError::BadSignature)
    );
    assert_eq!(
        tx.assemble(&good[..63], &public(&key)),
        Err(ChainError::BadSignature)
    );
    assert_eq!(tx.assemble(&good, b"key"), Err(ChainError::BadPublicKey));
}

#[test]
fn unsupported_truncated_trailing_and_replayable_transactions_are_refused() {
    let raw = eip1559().encoded_for_signing();
    let mut trailing = raw.clone();
    trailing.push(0);
    assert!(matches!(
        UnsignedTx::decode(&trailing),
        Err(ChainError::Malformed(_))
    ));
    assert!(matches!(
        UnsignedTx::decode(&raw[..raw.len() - 1]),
        Err(ChainError::Malformed(_))
    ));
    assert!(matches!(
        UnsignedTx::decode(&[]),
        Err(ChainError::Malformed(_))
    ));
    for ty in [0x01, 0x03, 0x04] {
        let mut other = raw.clone();
        other[0] = ty;
        assert_eq!(
            UnsignedTx::decode(&other),
            Err(ChainError::UnsupportedType(ty))
        );
    }
    // A legacy transaction without EIP-155 fields could be replayed on any chain.
    let pre_155 = TxLegacy {
        chain_id: None,
        ..legacy()
    };
    assert_eq!(
        UnsignedTx::decode(&pre_155.encoded_for_signing()),
        Err(ChainError::MissingChainId)
    );
    // Non-canonical: the nonce 7 written as a one-byte string (0x81 0x07) instead of 0x07.
    let canonical = legacy().encoded_for_signing();
    let nonce_at = canonical.iter().position(|b| *b == 0x07).unwrap();
    let mut padded = canonical[..nonce_at].to_vec();
    padded.extend_from_slice(&[0x81, 0x07]);
    padded.extend_from_slice(&canonical[nonce_at + 1..]);
    padded[0] += 1; // list header: one more payload byte (short list form)
    let err = UnsignedTx::decode(&padded).unwrap_err();
    assert!(
        matches!(err, ChainError::Malformed(_) | ChainError::NotCanonical),
        "{err}"
    );
    assert_eq!(padded.len(), canonical.len() + 1);
}

#[test]
fn personal_sign_digest_matches_the_well_known_value() {
    // ethers.js `hashMessage("hello")`.
    assert_eq!(
        personal_message_digest(b"hello"),
        b256!("50b2c43fd39106bafbba0da34fc430e1f91e3c96ea2acee2bc34119f92b37750").0
    );
}

#[test]
fn checksummed_addresses_follow_eip55() {
    let a = hex!("5aaeb6053f3e94c9b9a09f33669435e7ef1beaed");
    assert_eq!(
        checksummed(&a),
        "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"
    );
}
