//! Bitcoin PSBTs: a two-input PSBT mixing a P2WPKH input (ECDSA key) and a P2TR key-path input
//! (Schnorr key) is decoded, its digests derived, signed, finalized; and every malformed or
//! unsupported PSBT is refused with the field it is about.

use bitcoin::absolute::LockTime;
use bitcoin::hashes::Hash;
use bitcoin::key::{Keypair, TapTweak};
use bitcoin::psbt::{Psbt as RawPsbt, PsbtSighashType};
use bitcoin::secp256k1::{Message, Secp256k1, SecretKey};
use bitcoin::sighash::EcdsaSighashType;
use bitcoin::transaction::Version;
use bitcoin::{
    Amount, CompressedPublicKey, OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxOut, Txid,
    Witness,
};
use tessera_chain::bitcoin::{
    BitcoinError, BitcoinNetwork, InputSignature, Psbt, SpendKind, MAX_PSBT_LEN,
};

struct Keys {
    ecdsa: SecretKey,
    schnorr: Keypair,
}

fn keys() -> Keys {
    let secp = Secp256k1::new();
    Keys {
        ecdsa: SecretKey::from_slice(&[0x11; 32]).unwrap(),
        schnorr: Keypair::from_secret_key(&secp, &SecretKey::from_slice(&[0x22; 32]).unwrap()),
    }
}

fn p2wpkh(keys: &Keys) -> ScriptBuf {
    let public = keys.ecdsa.public_key(&Secp256k1::new());
    ScriptBuf::new_p2wpkh(&CompressedPublicKey(public).wpubkey_hash())
}

fn p2tr(keys: &Keys) -> ScriptBuf {
    let (internal, _) = keys.schnorr.x_only_public_key();
    ScriptBuf::new_p2tr(&Secp256k1::new(), internal, None)
}

/// Spends 50 000 sat (P2WPKH) and 30 000 sat (P2TR): pays 60 000 away and 19 000 back to the
/// P2WPKH key, so 1 000 is the fee.
fn raw_psbt(keys: &Keys) -> RawPsbt {
    let input = |n: u8| TxIn {
        previous_output: OutPoint {
            txid: Txid::from_byte_array([n; 32]),
            vout: 0,
        },
        script_sig: ScriptBuf::new(),
        sequence: Sequence::ENABLE_RBF_NO_LOCKTIME,
        witness: Witness::new(),
    };
    let away = ScriptBuf::new_p2wpkh(&bitcoin::WPubkeyHash::from_byte_array([7; 20]));
    let tx = Transaction {
        version: Version::TWO,
        lock_time: LockTime::ZERO,
        input: vec![input(1), input(2)],
        output: vec![
            TxOut {
                value: Amount::from_sat(60_000),
                script_pubkey: away,
            },
            TxOut {
                value: Amount::from_sat(19_000),
                script_pubkey: p2wpkh(keys),
            },
        ],
    };
    let mut psbt = RawPsbt::from_unsigned_tx(tx).unwrap();
    psbt.inputs[0].witness_utxo = Some(TxOut {
        value: Amount::from_sat(50_000),
        script_pubkey: p2wpkh(keys),
    });
    psbt.inputs[1].witness_utxo = Some(TxOut {
        value: Amount::from_sat(30_000),
        script_pubkey: p2tr(keys),
    });
    psbt
}

/// Checks with Bitcoin Core's script interpreter (libbitcoinconsensus, Taproot rules on) that
/// the transaction `raw` spends each of `prevouts`.
pub fn consensus_verifies(raw: &[u8], prevouts: &[TxOut]) -> Result<(), String> {
    let utxos: Vec<bitcoinconsensus::Utxo> = prevouts
        .iter()
        .map(|o| bitcoinconsensus::Utxo {
            script_pubkey: o.script_pubkey.as_bytes().as_ptr(),
            script_pubkey_len: o.script_pubkey.len() as u32,
            value: o.value.to_sat() as i64,
        })
        .collect();
    for (index, out) in prevouts.iter().enumerate() {
        bitcoinconsensus::verify(
            out.script_pubkey.as_bytes(),
            out.value.to_sat(),
            raw,
            Some(&utxos),
            index,
        )
        .map_err(|e| format!("input {index}: {e:?}"))?;
    }
    Ok(())
}

/// Signs each input as the threshold keys would: ECDSA `r || s`, and BIP-340 with the
/// Taproot-tweaked key.
fn sign(keys: &Keys, psbt: &Psbt) -> Vec<InputSignature> {
    let secp = Secp256k1::new();
    psbt.inputs()
        .iter()
        .map(|input| {
            let message = Message::from_digest(input.sighash);
            match input.kind {
                SpendKind::P2wpkh => InputSignature::Ecdsa {
                    signature: secp
                        .sign_ecdsa(&message, &keys.ecdsa)
                        .serialize_compact()
                        .to_vec(),
                    public_key: keys.ecdsa.public_key(&secp).serialize().to_vec(),
                },
                SpendKind::P2trKeyPath => {
                    let tweaked = keys.schnorr.tap_tweak(&secp, None).to_keypair();
                    InputSignature::Schnorr {
                        signature: secp
                            .sign_schnorr_no_aux_rand(&message, &tweaked)
                            .as_ref()
                            .to_vec(),
                    }
                }
            }
        })
        .collect()
}

#[test]
fn a_mixed_psbt_is_decoded_signed_and_finalized() {
    let keys = keys();
    let text = raw_psbt(&keys).to_string();
    let psbt = Psbt::decode(&text, BitcoinNetwork::Regtest).unwrap();
    let kinds: Vec<SpendKind> = psbt.inputs().iter().map(|i| i.kind).collect();
    assert_eq!(kinds, [SpendKind::P2wpkh, SpendKind::P2trKeyPath]);
    assert_eq!(psbt.fee(), 1_000);
    let outputs: Vec<(u64, bool)> = psbt
        .outputs()
        .iter()
        .map(|o| {
            (
                o.value,
                o.address
                    .as_deref()
                    .is_some_and(|a| a.starts_with("bcrt1q")),
            )
        })
        .collect();
    assert_eq!(outputs, [(60_000, true), (19_000, true)]);
    // The digests are the transaction's own: another fee gives other digests.
    let mut cheaper = raw_psbt(&keys);
    cheaper.unsigned_tx.output[0].value = Amount::from_sat(60_500);
    let other = Psbt::decode(&cheaper.to_string(), BitcoinNetwork::Regtest).unwrap();
    assert_ne!(other.inputs()[0].sighash, psbt.inputs()[0].sighash);
    assert_ne!(other.inputs()[1].sighash, psbt.inputs()[1].sighash);

    // Checked with k256, independently of the libsecp256k1 the PSBT code uses.
    let signatures = sign(&keys, &psbt);
    {
        use k256::ecdsa::signature::hazmat::PrehashVerifier;
        let InputSignature::Ecdsa {
            signature,
            public_key,
        } = &signatures[0]
        else {
            unreachable!()
        };
        let key = k256::ecdsa::VerifyingKey::from_sec1_bytes(public_key).unwrap();
        let sig = k256::ecdsa::Signature::from_slice(signature).unwrap();
        assert!(key.verify_prehash(&psbt.inputs()[0].sighash, &sig).is_ok());
        let InputSignature::Schnorr { signature } = &signatures[1] else {
            unreachable!()
        };
        let output_key =
            k256::schnorr::VerifyingKey::from_bytes(&psbt.inputs()[1].script_pubkey[2..]).unwrap();
        let sig = k256::schnorr::Signature::try_from(signature.as_slice()).unwrap();
        assert!(output_key
            .verify_prehash(&psbt.inputs()[1].sighash, &sig)
            .is_ok());
    }
    let raw = psbt.clone().finalize(&signatures).unwrap();
    // Bitcoin Core's interpreter agrees that every input spends its output; a changed
    // transaction spends none.
    let prevouts: Vec<TxOut> = raw_psbt(&keys)
        .inputs
        .iter()
        .map(|i| i.witness_utxo.clone().unwrap())
        .collect();
    consensus_verifies(&raw, &prevouts).unwrap();
    // The key-path signature is read back from the witness (the P2WPKH input has two
    // elements, so it has none); junk is not a transaction.
    let InputSignature::Schnorr { signature } = &signatures[1] else {
        unreachable!()
    };
    assert_eq!(
        tessera_chain::bitcoin::key_path_signatures(&raw).unwrap(),
        std::slice::from_ref(signature)
    );
    assert!(tessera_chain::bitcoin::key_path_signatures(b"not a transaction").is_err());
    let mut changed: Transaction = bitcoin::consensus::encode::deserialize(&raw).unwrap();
    changed.output[0].value = Amount::from_sat(59_000);
    let changed = bitcoin::consensus::encode::serialize(&changed);
    assert!(consensus_verifies(&changed, &prevouts).is_err());
    let tx: Transaction = bitcoin::consensus::encode::deserialize(&raw).unwrap();
    assert_eq!(tx.input[0].witness.len(), 2, "P2WPKH: signature and key");
    assert_eq!(
        tx.input[0].witness.nth(1).unwrap(),
        keys.ecdsa.public_key(&Secp256k1::new()).serialize()
    );
    assert_eq!(tx.input[1].witness.len(), 1, "P2TR key path: the signature");
    assert_eq!(
        tx.input[1].witness.nth(0).unwrap().len(),
        64,
        "default sighash: no type byte"
    );
    assert_eq!(
        tx.compute_txid(),
        raw_psbt(&keys).unsigned_tx.compute_txid()
    );

    // A signature for the wrong input or by the wrong key is refused.
    let mut swapped = signatures.clone();
    swapped.swap(0, 1);
    assert!(matches!(
        psbt.clone().finalize(&swapped),
        Err(BitcoinError::Signature { input: 0, .. })
    ));
    let mut wrong_key = signatures.clone();
    if let InputSignature::Ecdsa { public_key, .. } = &mut wrong_key[0] {
        *public_key = SecretKey::from_slice(&[0x33; 32])
            .unwrap()
            .public_key(&Secp256k1::new())
            .serialize()
            .to_vec();
    }
    let err = psbt.clone().finalize(&wrong_key).unwrap_err();
    assert!(
        err.to_string().contains("not the one the output pays"),
        "{err}"
    );
    let mut forged = signatures.clone();
    if let InputSignature::Schnorr { signature } = &mut forged[1] {
        signature[10] ^= 1;
    }
    let err = psbt.clone().finalize(&forged).unwrap_err();
    assert!(err.to_string().contains("does not verify"), "{err}");
    assert!(psbt.finalize(&signatures[..1]).is_err());
}

#[test]
fn malformed_and_unsupported_psbts_are_refused_naming_the_input() {
    let keys = keys();
    let refused =
        |psbt: RawPsbt| Psbt::decode(&psbt.to_string(), BitcoinNetwork::Mainnet).unwrap_err();

    let mut missing = raw_psbt(&keys);
    missing.inputs[1].witness_utxo = None;
    assert_eq!(refused(missing), BitcoinError::MissingUtxo { input: 1 });

    let mut legacy = raw_psbt(&keys);
    legacy.inputs[0]
        .witness_utxo
        .as_mut()
        .unwrap()
        .script_pubkey = ScriptBuf::new_p2pkh(&bitcoin::PubkeyHash::from_byte_array([1; 20]));
    assert_eq!(
        refused(legacy),
        BitcoinError::UnsupportedScript {
            input: 0,
            kind: "P2PKH"
        }
    );

    let mut none = raw_psbt(&keys);
    none.inputs[0].sighash_type = Some(PsbtSighashType::from(EcdsaSighashType::None));
    assert!(matches!(
        refused(none),
        BitcoinError::SighashType { input: 0, .. }
    ));
    let mut anyone = raw_psbt(&keys);
    anyone.inputs[1].sighash_type = Some(PsbtSighashType::from(
        bitcoin::sighash::TapSighashType::SinglePlusAnyoneCanPay,
    ));
    assert!(matches!(
        refused(anyone),
        BitcoinError::SighashType { input: 1, .. }
    ));
    // ALL stated explicitly is the default.
    let mut all = raw_psbt(&keys);
    all.inputs[0].sighash_type = Some(PsbtSighashType::from(EcdsaSighashType::All));
    assert!(Psbt::decode(&all.to_string(), BitcoinNetwork::Mainnet).is_ok());

    let mut overspent = raw_psbt(&keys);
    overspent.unsigned_tx.output[0].value = Amount::from_sat(70_000);
    assert_eq!(
        refused(overspent),
        BitcoinError::NegativeFee {
            inputs: 80_000,
            outputs: 89_000
        }
    );

    assert!(matches!(
        Psbt::decode("cHNidP8BAAoCAAAAAAAAAAA=garbage", BitcoinNetwork::Mainnet),
        Err(BitcoinError::Malformed(_))
    ));
    assert!(matches!(
        Psbt::decode(&"A".repeat(MAX_PSBT_LEN + 1), BitcoinNetwork::Mainnet),
        Err(BitcoinError::TooLarge { .. })
    ));
}

#[test]
fn an_ecdsa_signer_is_given_the_bip143_preimage_hash_never_the_bare_sighash() {
    let keys = keys();
    let psbt = Psbt::decode(&raw_psbt(&keys).to_string(), BitcoinNetwork::Regtest).unwrap();
    let [wpkh, tr] = psbt.inputs() else {
        panic!("two inputs")
    };
    let once = wpkh
        .preimage_hash
        .expect("P2WPKH carries the preimage hash");
    assert_eq!(
        bitcoin::hashes::sha256::Hash::hash(&once).to_byte_array(),
        wpkh.sighash,
        "the sighash is SHA-256 of the preimage hash (BIP-143 double SHA-256)"
    );
    assert_eq!(tr.preimage_hash, None);
}

#[test]
fn key_scripts_and_addresses_round_trip_on_every_network() {
    use tessera_chain::bitcoin::{
        address_of_script, p2tr_script, p2wpkh_script, script_of_address,
    };
    let keys = keys();
    let secp = Secp256k1::new();
    let compressed = keys.ecdsa.public_key(&secp).serialize();
    assert_eq!(
        p2wpkh_script(&compressed).unwrap(),
        p2wpkh(&keys).to_bytes()
    );
    let output_key = p2tr(&keys).as_bytes()[2..].to_vec();
    assert_eq!(p2tr_script(&output_key).unwrap(), p2tr(&keys).to_bytes());
    for (network, wpkh_prefix, tr_prefix) in [
        (BitcoinNetwork::Mainnet, "bc1q", "bc1p"),
        (BitcoinNetwork::Testnet, "tb1q", "tb1p"),
        (BitcoinNetwork::Signet, "tb1q", "tb1p"),
        (BitcoinNetwork::Regtest, "bcrt1q", "bcrt1p"),
    ] {
        assert_eq!(
            network.to_string().parse::<BitcoinNetwork>().unwrap(),
            network
        );
        for (script, prefix) in [(p2wpkh(&keys), wpkh_prefix), (p2tr(&keys), tr_prefix)] {
            let address = address_of_script(script.as_bytes(), network).unwrap();
            assert!(address.starts_with(prefix), "{address}");
            assert_eq!(
                script_of_address(&address, network).unwrap(),
                script.to_bytes()
            );
        }
    }
    let mainnet = address_of_script(p2tr(&keys).as_bytes(), BitcoinNetwork::Mainnet).unwrap();
    let err = script_of_address(&mainnet, BitcoinNetwork::Regtest).unwrap_err();
    assert!(
        err.to_string().contains("not an address on regtest"),
        "{err}"
    );
    assert!(script_of_address("bc1qnotanaddress", BitcoinNetwork::Mainnet).is_err());
    assert!(p2wpkh_script(&compressed[1..]).is_err());
    assert!(p2wpkh_script(&keys.ecdsa.public_key(&secp).serialize_uncompressed()).is_err());
    assert!(p2tr_script(&[0xff; 32]).is_err());
    assert!("bitcoin".parse::<BitcoinNetwork>().is_err());
}

#[test]
fn a_key_has_an_address_on_the_chains_its_form_fits() {
    use tessera_chain::{address_of_key, Chain};
    let keys = keys();
    let compressed = keys.ecdsa.public_key(&Secp256k1::new()).serialize();
    let output_key = p2tr(&keys).as_bytes()[2..].to_vec();
    let eth = address_of_key(&compressed, Chain::Ethereum, BitcoinNetwork::Mainnet).unwrap();
    assert!(eth.starts_with("0x") && eth.len() == 42, "{eth}");
    let wpkh = address_of_key(&compressed, Chain::Bitcoin, BitcoinNetwork::Regtest).unwrap();
    assert!(wpkh.starts_with("bcrt1q"), "{wpkh}");
    let tr = address_of_key(&output_key, Chain::Bitcoin, BitcoinNetwork::Mainnet).unwrap();
    assert!(tr.starts_with("bc1p"), "{tr}");
    let sol = address_of_key(&[0; 32], Chain::Solana, BitcoinNetwork::Mainnet).unwrap();
    assert_eq!(sol, "11111111111111111111111111111111");
    for (key, chain) in [
        (&output_key[..], Chain::Ethereum),
        (&compressed[..], Chain::Solana),
        (&compressed[..20], Chain::Bitcoin),
    ] {
        let err = address_of_key(key, chain, BitcoinNetwork::Mainnet).unwrap_err();
        assert!(
            err.to_string().contains(&format!("no {chain} address")),
            "{err}"
        );
    }
    assert_eq!("bitcoin".parse::<Chain>().unwrap(), Chain::Bitcoin);
    assert!("dogecoin".parse::<Chain>().is_err());
}
