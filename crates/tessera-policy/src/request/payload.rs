//! What is to be signed, and the digest and action derived from it.

use alloy_primitives::U256;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tessera_chain::bitcoin::{p2tr_script, p2wpkh_script, BitcoinNetwork, Psbt, SpendKind};
use tessera_chain::solana::{Transfer, FEE_LAMPORTS_PER_SIGNATURE};
use tessera_chain::{personal_message_digest, personal_message_preimage, UnsignedTx};
use tessera_wire::KeyKind;

use super::action::{Action, Asset};
use super::destination::Destination;
use crate::PolicyError;

/// Domain separation of the digest of a request that asks for several signatures (a PSBT) or
/// for an Ed25519 signature: SHA-256 over this label and what is signed.
pub const SIGNINGS_DIGEST_LABEL: &[u8] = b"tessera/signings/v1";

/// Largest unsigned transaction accepted, in bytes.
pub const MAX_TX_BYTES: usize = 128 * 1024;
/// Largest `personal_sign` message accepted, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// What a request asks to sign.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Payload {
    /// An unsigned Ethereum transaction (legacy EIP-155 or EIP-1559), as the bytes a wallet
    /// signs. Hex in JSON.
    EthereumTx {
        /// The unsigned transaction's canonical encoding.
        #[serde(with = "crate::encoding::bytes")]
        raw: Vec<u8>,
    },
    /// A message signed as EIP-191 `personal_sign`. Hex in JSON.
    Message {
        /// The message.
        #[serde(with = "crate::encoding::bytes")]
        bytes: Vec<u8>,
    },
    /// A Bitcoin PSBT (BIP-174). The inputs that spend `signer`'s output script are signed
    /// (P2WPKH with an ECDSA key, P2TR key path with a Taproot key); other inputs are left to
    /// other keys. Outputs back to that script are change.
    BitcoinPsbt {
        /// The network (addresses, and the asset limits count).
        #[serde(with = "network")]
        network: BitcoinNetwork,
        /// The PSBT, base64.
        psbt: String,
        /// The signing key as its outputs name it, at the request's path: a 33-byte
        /// compressed key (P2WPKH) or a 32-byte x-only Taproot output key (P2TR). Every node
        /// checks that it is its own key's. Hex in JSON.
        #[serde(with = "crate::encoding::bytes")]
        signer: Vec<u8>,
    },
    /// A Solana legacy message holding one System Program transfer from its only signer.
    /// Hex in JSON.
    SolanaTransfer {
        /// The message (what the Ed25519 signature covers).
        #[serde(with = "crate::encoding::bytes")]
        message: Vec<u8>,
    },
    /// Raw bytes signed with an Ed25519 key as they are (policy kind `raw_message`). Hex in
    /// JSON.
    Ed25519Message {
        /// The message.
        #[serde(with = "crate::encoding::bytes")]
        bytes: Vec<u8>,
    },
}

/// [`BitcoinNetwork`] by its name, in every format.
mod network {
    use serde::{de, Deserialize, Deserializer, Serializer};
    use tessera_chain::bitcoin::BitcoinNetwork;

    pub(super) fn serialize<S: Serializer>(n: &BitcoinNetwork, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(n.as_str())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<BitcoinNetwork, D::Error> {
        String::deserialize(d)?.parse().map_err(de::Error::custom)
    }
}

/// How an ECDSA signer hashes what it is given (the library hashes the preimage itself, so a
/// node never signs a bare digest).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EcdsaHash {
    /// Keccak-256 (Ethereum transactions and EIP-191 messages).
    Keccak256,
    /// SHA-256 (Bitcoin: the preimage is the BIP-143 preimage's SHA-256).
    Sha256,
}

/// One signature a request asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Signing {
    /// ECDSA on secp256k1 over `digest`, the `hash` of `preimage`.
    Ecdsa {
        /// What the signers hash.
        preimage: Vec<u8>,
        /// How.
        hash: EcdsaHash,
        /// The digest the signature verifies against.
        digest: [u8; 32],
    },
    /// BIP-340 Schnorr with the Taproot output key over a BIP-341 sighash.
    Taproot {
        /// The sighash.
        sighash: [u8; 32],
    },
    /// Ed25519 over a message.
    Ed25519 {
        /// The message.
        message: Vec<u8>,
    },
}

/// The length of every signature Tessera makes (ECDSA `r || s`, BIP-340, Ed25519).
pub const SIGNATURE_LEN: usize = 64;

impl Signing {
    /// The kind of key that makes this signature.
    pub fn kind(&self) -> KeyKind {
        match self {
            Signing::Ecdsa { .. } => KeyKind::Ecdsa,
            Signing::Taproot { .. } => KeyKind::Taproot,
            Signing::Ed25519 { .. } => KeyKind::Ed25519,
        }
    }

    /// Whether `signature` (64 bytes) is a valid signature of this by `public_key` (the key
    /// as [`Payload::BitcoinPsbt`]'s `signer` names it: SEC1 compressed for ECDSA, x-only
    /// output key for Taproot, 32 bytes for Ed25519). ECDSA signatures must be low-s.
    pub fn verify(&self, public_key: &[u8], signature: &[u8]) -> bool {
        match self {
            Signing::Ecdsa { digest, .. } => {
                use k256::ecdsa::signature::hazmat::PrehashVerifier;
                let Ok(key) = k256::ecdsa::VerifyingKey::from_sec1_bytes(public_key) else {
                    return false;
                };
                let Ok(sig) = k256::ecdsa::Signature::from_slice(signature) else {
                    return false;
                };
                sig.normalize_s().is_none() && key.verify_prehash(digest, &sig).is_ok()
            }
            Signing::Taproot { sighash } => {
                let Ok(key) = k256::schnorr::VerifyingKey::from_bytes(public_key) else {
                    return false;
                };
                let Ok(sig) = k256::schnorr::Signature::try_from(signature) else {
                    return false;
                };
                key.verify_raw(sighash, &sig).is_ok()
            }
            Signing::Ed25519 { message } => {
                let Ok(key) = <[u8; 32]>::try_from(public_key)
                    .map_err(|_| ())
                    .and_then(|k| ed25519_dalek::VerifyingKey::from_bytes(&k).map_err(|_| ()))
                else {
                    return false;
                };
                let Ok(sig) = ed25519_dalek::Signature::from_slice(signature) else {
                    return false;
                };
                key.verify_strict(message, &sig).is_ok()
            }
        }
    }
}

impl Payload {
    /// Refuses payloads over [`MAX_TX_BYTES`] / [`MAX_MESSAGE_BYTES`].
    pub fn check_size(&self) -> Result<(), PolicyError> {
        let (what, len, max) = match self {
            Payload::EthereumTx { raw } => ("transaction", raw.len(), MAX_TX_BYTES),
            Payload::Message { bytes } | Payload::Ed25519Message { bytes } => {
                ("message", bytes.len(), MAX_MESSAGE_BYTES)
            }
            Payload::BitcoinPsbt { psbt, .. } => ("PSBT", psbt.len(), MAX_TX_BYTES),
            Payload::SolanaTransfer { message } => {
                ("Solana message", message.len(), MAX_MESSAGE_BYTES)
            }
        };
        if len > max {
            return Err(PolicyError::TooLarge { what, len, max });
        }
        Ok(())
    }
}

/// The digest to sign and what signing it does, both derived from a payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Derived {
    /// The request's digest of what is signed: the one signature's digest for Ethereum
    /// payloads; for the others SHA-256 over [`SIGNINGS_DIGEST_LABEL`] and every signing.
    pub digest: [u8; 32],
    /// What the payload does.
    pub action: Action,
    /// The most a transaction can cost in fees, in its chain's native coin (gas limit times
    /// gas price or maximum fee per gas; a PSBT's inputs minus outputs; a Solana
    /// transaction's base fee); `None` for messages.
    pub max_fee: Option<(Asset, U256)>,
    /// The signatures the request asks for, in order (several for a PSBT with several of
    /// the signer's inputs, one otherwise). All are made by one key, of one kind.
    pub signings: Vec<Signing>,
    /// The key the payload names as its signer, which must be the key at the request's path
    /// (the PSBT's `signer`, the Solana transfer's sender); `None` where the payload names
    /// none (Ethereum: the sender is whoever signs).
    pub signer: Option<Vec<u8>>,
    /// For a PSBT, the inputs signed, in the order of `signings`.
    pub inputs: Vec<usize>,
}

impl Derived {
    /// What signing spends, one entry per asset: what the action moves ([`Action::spend`])
    /// plus the maximum fee in the native coin (fees are spent whatever the transaction does).
    /// Limits and windows count these; record them once the signature is made.
    pub fn spends(&self) -> Vec<(Asset, U256)> {
        let mut spends: Vec<(Asset, U256)> = Vec::new();
        for (asset, amount) in self.action.spend().into_iter().chain(self.max_fee) {
            if amount.is_zero() {
                continue;
            }
            match spends.iter_mut().find(|(a, _)| *a == asset) {
                Some((_, sum)) => *sum = sum.saturating_add(amount),
                None => spends.push((asset, amount)),
            }
        }
        spends.sort();
        spends
    }

    /// The kind of key that signs this (all signings are of one kind).
    pub fn kind(&self) -> KeyKind {
        self.signings
            .first()
            .map(Signing::kind)
            .unwrap_or(KeyKind::Ecdsa)
    }

    /// Whether `signatures` holds one valid 64-byte signature per signing, in order, by
    /// `public_key` (the key at the request's path, in the form [`Signing::verify`] takes).
    pub fn verify(&self, public_key: &[u8], signatures: &[u8]) -> bool {
        signatures.len() == SIGNATURE_LEN * self.signings.len()
            && self
                .signings
                .iter()
                .zip(signatures.chunks_exact(SIGNATURE_LEN))
                .all(|(signing, signature)| signing.verify(public_key, signature))
    }
}

/// SHA-256 over [`SIGNINGS_DIGEST_LABEL`] and each signing (its kind and what it covers).
fn signings_digest(signings: &[Signing]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(SIGNINGS_DIGEST_LABEL);
    for signing in signings {
        match signing {
            Signing::Ecdsa { digest, .. } => {
                hasher.update([0]);
                hasher.update(digest);
            }
            Signing::Taproot { sighash } => {
                hasher.update([1]);
                hasher.update(sighash);
            }
            Signing::Ed25519 { message } => {
                hasher.update([2]);
                hasher.update((message.len() as u64).to_be_bytes());
                hasher.update(message);
            }
        }
    }
    hasher.finalize().into()
}

/// What a PSBT does for `signer`: the inputs it signs, the payments, the change and the fee.
fn derive_psbt(network: BitcoinNetwork, psbt: &str, signer: &[u8]) -> Result<Derived, PolicyError> {
    let (own, kind) = match signer.len() {
        33 => (p2wpkh_script(signer)?, SpendKind::P2wpkh),
        32 => (p2tr_script(signer)?, SpendKind::P2trKeyPath),
        n => {
            return Err(PolicyError::Signer(format!(
                "the PSBT's signer is {n} bytes: expected a 33-byte compressed key (P2WPKH) \
                 or a 32-byte Taproot output key (P2TR)"
            )))
        }
    };
    let decoded = Psbt::decode(psbt, network)?;
    let mut signings = Vec::new();
    let mut inputs = Vec::new();
    for input in decoded.inputs() {
        if input.script_pubkey != own {
            continue;
        }
        debug_assert_eq!(input.kind, kind);
        inputs.push(input.index);
        signings.push(match (kind, input.preimage_hash) {
            (SpendKind::P2wpkh, Some(once)) => Signing::Ecdsa {
                preimage: once.to_vec(),
                hash: EcdsaHash::Sha256,
                digest: input.sighash,
            },
            (SpendKind::P2trKeyPath, _) => Signing::Taproot {
                sighash: input.sighash,
            },
            (SpendKind::P2wpkh, None) => {
                return Err(PolicyError::Signer(format!(
                    "input {}: no BIP-143 preimage was derived",
                    input.index
                )))
            }
        });
    }
    if signings.is_empty() {
        return Err(PolicyError::Signer(format!(
            "no input of the PSBT spends the signer's {} output; nothing to sign",
            match kind {
                SpendKind::P2wpkh => "P2WPKH",
                SpendKind::P2trKeyPath => "P2TR",
            }
        )));
    }
    let mut payments = Vec::new();
    let mut change = U256::ZERO;
    for output in decoded.outputs() {
        let amount = U256::from(output.value);
        if output.script_pubkey == own {
            change = change.saturating_add(amount);
        } else {
            payments.push((
                Destination::Bitcoin {
                    network,
                    script: output.script_pubkey.clone(),
                },
                amount,
            ));
        }
    }
    Ok(Derived {
        digest: signings_digest(&signings),
        action: Action::BitcoinTransfer {
            network,
            payments,
            change,
        },
        max_fee: Some((Asset::Bitcoin { network }, U256::from(decoded.fee()))),
        signings,
        signer: Some(signer.to_vec()),
        inputs,
    })
}

/// Decodes a payload and derives the digest to sign and its action. Transactions are decoded
/// strictly by `tessera_chain` (canonical encoding, chain id required).
pub fn derive(payload: &Payload) -> Result<Derived, PolicyError> {
    payload.check_size()?;
    match payload {
        Payload::EthereumTx { raw } => {
            let tx = UnsignedTx::decode(raw)?;
            let digest = tx.signing_digest();
            Ok(Derived {
                digest,
                action: Action::of_transaction(&tx)?,
                max_fee: Some((
                    Asset::Native {
                        chain_id: tx.chain_id(),
                    },
                    tx.max_fee(),
                )),
                signings: vec![Signing::Ecdsa {
                    preimage: tx.encoded_for_signing(),
                    hash: EcdsaHash::Keccak256,
                    digest,
                }],
                signer: None,
                inputs: Vec::new(),
            })
        }
        Payload::Message { bytes } => {
            let digest = personal_message_digest(bytes);
            Ok(Derived {
                digest,
                action: Action::Message { len: bytes.len() },
                max_fee: None,
                signings: vec![Signing::Ecdsa {
                    preimage: personal_message_preimage(bytes),
                    hash: EcdsaHash::Keccak256,
                    digest,
                }],
                signer: None,
                inputs: Vec::new(),
            })
        }
        Payload::BitcoinPsbt {
            network,
            psbt,
            signer,
        } => derive_psbt(*network, psbt, signer),
        Payload::SolanaTransfer { message } => {
            let transfer = Transfer::decode(message)?;
            let signings = vec![Signing::Ed25519 {
                message: message.clone(),
            }];
            Ok(Derived {
                digest: signings_digest(&signings),
                action: Action::Transfer {
                    asset: Asset::Sol,
                    amount: U256::from(transfer.lamports),
                    to: Destination::Solana(transfer.to),
                },
                max_fee: Some((Asset::Sol, U256::from(FEE_LAMPORTS_PER_SIGNATURE))),
                signings,
                signer: Some(transfer.from.to_vec()),
                inputs: Vec::new(),
            })
        }
        Payload::Ed25519Message { bytes } => {
            if tessera_chain::solana::is_transaction_message(bytes) {
                return Err(PolicyError::Solana(
                    tessera_chain::solana::SolanaError::Unsupported(
                        "the raw message is a Solana transaction message; Solana transactions are \
                     signed only as solana_transfer payloads, which the policy reads"
                            .into(),
                    ),
                ));
            }
            let signings = vec![Signing::Ed25519 {
                message: bytes.clone(),
            }];
            Ok(Derived {
                digest: signings_digest(&signings),
                action: Action::RawMessage { len: bytes.len() },
                max_fee: None,
                signings,
                signer: None,
                inputs: Vec::new(),
            })
        }
    }
}
