//! Bitcoin for Tessera: what a node needs to sign a PSBT it understands.
//!
//! - [`Psbt::decode`]: a PSBT (BIP-174, base64), size-limited and decoded strictly. Every
//!   input must carry the output it spends (`witness_utxo`) and be one Tessera can sign: a
//!   P2WPKH output (ECDSA key; BIP-143) or a P2TR output spent by key path (Schnorr key;
//!   BIP-341). Only the default sighash type is accepted (`ALL`, or `DEFAULT` for Taproot):
//!   other types would let someone else change what was approved.
//! - [`Psbt::inputs`]: each input's digest to sign, derived here, never taken from the caller.
//! - [`Psbt::outputs`] and [`Psbt::fee`]: what the policy sees: each output's amount and
//!   address, and the fee (inputs minus outputs).
//! - [`Psbt::finalize`]: the network transaction, from one signature per input.
//!
//! The tests check finalized transactions with Bitcoin Core's script interpreter
//! (`bitcoinconsensus`, Taproot rules on): every input spends its previous output.

use std::str::FromStr;

use bitcoin::hashes::Hash;
use bitcoin::psbt::Psbt as RawPsbt;
use bitcoin::sighash::{EcdsaSighashType, Prevouts, SighashCache, TapSighashType};
use bitcoin::{Address, Amount, Network, TxOut, Witness};

/// Largest PSBT accepted, base64 text.
pub const MAX_PSBT_LEN: usize = 512 * 1024;

/// Why a PSBT or a signature for it was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BitcoinError {
    /// Too large to decode.
    #[error("the PSBT is {len} characters; at most {MAX_PSBT_LEN} are accepted")]
    TooLarge {
        /// Its length.
        len: usize,
    },
    /// Not a PSBT.
    #[error("malformed PSBT: {0}")]
    Malformed(String),
    /// An input without the output it spends.
    #[error(
        "input {input} does not carry the output it spends (witness_utxo); add it to the PSBT"
    )]
    MissingUtxo {
        /// The input.
        input: usize,
    },
    /// An input Tessera cannot sign.
    #[error("input {input} spends a {kind} output; Tessera signs P2WPKH (ECDSA keys) and P2TR key-path (Schnorr keys) inputs")]
    UnsupportedScript {
        /// The input.
        input: usize,
        /// What it spends.
        kind: &'static str,
    },
    /// A sighash type other than the default.
    #[error("input {input} asks for sighash type {found}; only the default (ALL) is signed, so nobody can change what was approved")]
    SighashType {
        /// The input.
        input: usize,
        /// What it asks for.
        found: String,
    },
    /// The outputs are worth more than the inputs, or amounts overflow.
    #[error("the outputs ({outputs} sat) are worth more than the inputs ({inputs} sat)")]
    NegativeFee {
        /// What the inputs spend.
        inputs: u64,
        /// What the outputs pay.
        outputs: u64,
    },
    /// The digest of an input cannot be computed.
    #[error("input {input}: {reason}")]
    Sighash {
        /// The input.
        input: usize,
        /// Why.
        reason: String,
    },
    /// A signature that does not fit the input.
    #[error("input {input}: {reason}")]
    Signature {
        /// The input.
        input: usize,
        /// Why.
        reason: String,
    },
}

/// Which Bitcoin network addresses are shown for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BitcoinNetwork {
    /// Mainnet (`bc1…`).
    Mainnet,
    /// Testnet (`tb1…`).
    Testnet,
    /// Signet (`tb1…`).
    Signet,
    /// Regtest (`bcrt1…`).
    Regtest,
}

impl BitcoinNetwork {
    fn network(self) -> Network {
        match self {
            BitcoinNetwork::Mainnet => Network::Bitcoin,
            BitcoinNetwork::Testnet => Network::Testnet,
            BitcoinNetwork::Signet => Network::Signet,
            BitcoinNetwork::Regtest => Network::Regtest,
        }
    }
}

/// How an input is spent, and so which key kind signs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpendKind {
    /// P2WPKH: an ECDSA signature over the BIP-143 digest, then the compressed public key.
    P2wpkh,
    /// P2TR key path: a BIP-340 Schnorr signature over the BIP-341 digest.
    P2trKeyPath,
}

/// One input as a signer sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InputToSign {
    /// Its position.
    pub index: usize,
    /// How it is spent.
    pub kind: SpendKind,
    /// What it spends, in satoshis.
    pub value: u64,
    /// The output script it spends.
    pub script_pubkey: Vec<u8>,
    /// The digest to sign (BIP-143 or BIP-341), derived from the PSBT here.
    pub sighash: [u8; 32],
}

/// One output as the policy sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutputView {
    /// Its position.
    pub index: usize,
    /// What it pays, in satoshis.
    pub value: u64,
    /// Its address on the network, if its script has one.
    pub address: Option<String>,
    /// Its script.
    pub script_pubkey: Vec<u8>,
}

/// A decoded PSBT whose every input Tessera can sign.
#[derive(Clone, Debug)]
pub struct Psbt {
    raw: RawPsbt,
    inputs: Vec<InputToSign>,
    outputs: Vec<OutputView>,
    fee: u64,
}

impl Psbt {
    /// Decodes `base64` (a BIP-174 PSBT) and derives each input's digest; addresses are shown
    /// for `network`.
    pub fn decode(base64: &str, network: BitcoinNetwork) -> Result<Self, BitcoinError> {
        let text = base64.trim();
        if text.len() > MAX_PSBT_LEN {
            return Err(BitcoinError::TooLarge { len: text.len() });
        }
        let raw = RawPsbt::from_str(text).map_err(|e| BitcoinError::Malformed(e.to_string()))?;
        let tx = &raw.unsigned_tx;
        let mut prevouts: Vec<TxOut> = Vec::with_capacity(raw.inputs.len());
        for (index, input) in raw.inputs.iter().enumerate() {
            let utxo = input
                .witness_utxo
                .clone()
                .ok_or(BitcoinError::MissingUtxo { input: index })?;
            prevouts.push(utxo);
        }
        let mut cache = SighashCache::new(tx);
        let mut inputs = Vec::with_capacity(prevouts.len());
        for (index, (input, utxo)) in raw.inputs.iter().zip(&prevouts).enumerate() {
            let script = &utxo.script_pubkey;
            let sighash_error = |reason: String| BitcoinError::Sighash {
                input: index,
                reason,
            };
            let (kind, sighash) = if script.is_p2wpkh() {
                if let Some(found) = input.sighash_type {
                    if found.ecdsa_hash_ty().ok() != Some(EcdsaSighashType::All) {
                        return Err(BitcoinError::SighashType {
                            input: index,
                            found: found.to_string(),
                        });
                    }
                }
                let digest = cache
                    .p2wpkh_signature_hash(index, script, utxo.value, EcdsaSighashType::All)
                    .map_err(|e| sighash_error(e.to_string()))?;
                (SpendKind::P2wpkh, digest.to_byte_array())
            } else if script.is_p2tr() {
                if let Some(found) = input.sighash_type {
                    if found.taproot_hash_ty().ok() != Some(TapSighashType::Default) {
                        return Err(BitcoinError::SighashType {
                            input: index,
                            found: found.to_string(),
                        });
                    }
                }
                let digest = cache
                    .taproot_key_spend_signature_hash(
                        index,
                        &Prevouts::All(&prevouts),
                        TapSighashType::Default,
                    )
                    .map_err(|e| sighash_error(e.to_string()))?;
                (SpendKind::P2trKeyPath, digest.to_byte_array())
            } else {
                return Err(BitcoinError::UnsupportedScript {
                    input: index,
                    kind: script_kind(script),
                });
            };
            inputs.push(InputToSign {
                index,
                kind,
                value: utxo.value.to_sat(),
                script_pubkey: script.to_bytes(),
                sighash,
            });
        }
        let network = network.network();
        let outputs: Vec<OutputView> = tx
            .output
            .iter()
            .enumerate()
            .map(|(index, out)| OutputView {
                index,
                value: out.value.to_sat(),
                address: Address::from_script(&out.script_pubkey, network)
                    .ok()
                    .map(|a| a.to_string()),
                script_pubkey: out.script_pubkey.to_bytes(),
            })
            .collect();
        let spent = total(prevouts.iter().map(|o| o.value));
        let paid = total(tx.output.iter().map(|o| o.value));
        let (spent, paid) = match (spent, paid) {
            (Some(spent), Some(paid)) => (spent.to_sat(), paid.to_sat()),
            _ => return Err(BitcoinError::Malformed("amounts overflow".into())),
        };
        let fee = spent.checked_sub(paid).ok_or(BitcoinError::NegativeFee {
            inputs: spent,
            outputs: paid,
        })?;
        Ok(Psbt {
            raw,
            inputs,
            outputs,
            fee,
        })
    }

    /// Every input, with its digest to sign.
    pub fn inputs(&self) -> &[InputToSign] {
        &self.inputs
    }

    /// Every output.
    pub fn outputs(&self) -> &[OutputView] {
        &self.outputs
    }

    /// The fee: what the inputs spend minus what the outputs pay, in satoshis.
    pub fn fee(&self) -> u64 {
        self.fee
    }

    /// The network transaction (consensus bytes), finalized from one signature per input, in
    /// input order: for P2WPKH a 64-byte `r || s` ECDSA signature and the input key's
    /// compressed public key (its hash must be the script's); for P2TR a 64-byte BIP-340
    /// signature. Each signature is checked against its input's digest first.
    pub fn finalize(self, signatures: &[InputSignature]) -> Result<Vec<u8>, BitcoinError> {
        use bitcoin::secp256k1::{ecdsa, schnorr, Message, PublicKey, Secp256k1, XOnlyPublicKey};
        if signatures.len() != self.inputs.len() {
            return Err(BitcoinError::Signature {
                input: signatures.len().min(self.inputs.len()),
                reason: format!(
                    "{} signatures for {} inputs",
                    signatures.len(),
                    self.inputs.len()
                ),
            });
        }
        let secp = Secp256k1::verification_only();
        let mut raw = self.raw;
        for ((input, signature), psbt_input) in self
            .inputs
            .iter()
            .zip(signatures)
            .zip(raw.inputs.iter_mut())
        {
            let bad = |reason: &str| BitcoinError::Signature {
                input: input.index,
                reason: reason.to_owned(),
            };
            let message = Message::from_digest(input.sighash);
            let witness = match (input.kind, signature) {
                (
                    SpendKind::P2wpkh,
                    InputSignature::Ecdsa {
                        signature,
                        public_key,
                    },
                ) => {
                    let key = PublicKey::from_slice(public_key)
                        .map_err(|_| bad("not a compressed secp256k1 public key"))?;
                    let expected = bitcoin::ScriptBuf::new_p2wpkh(
                        &bitcoin::CompressedPublicKey(key).wpubkey_hash(),
                    );
                    if expected.as_bytes() != input.script_pubkey.as_slice() {
                        return Err(bad("the public key is not the one the output pays"));
                    }
                    let mut sig = ecdsa::Signature::from_compact(signature)
                        .map_err(|_| bad("not a 64-byte r || s ECDSA signature"))?;
                    sig.normalize_s();
                    secp.verify_ecdsa(&message, &sig, &key)
                        .map_err(|_| bad("the ECDSA signature does not verify"))?;
                    Witness::p2wpkh(
                        &bitcoin::ecdsa::Signature {
                            signature: sig,
                            sighash_type: EcdsaSighashType::All,
                        },
                        &key,
                    )
                }
                (SpendKind::P2trKeyPath, InputSignature::Schnorr { signature }) => {
                    let sig = schnorr::Signature::from_slice(signature)
                        .map_err(|_| bad("not a 64-byte BIP-340 signature"))?;
                    let output_key = XOnlyPublicKey::from_slice(&input.script_pubkey[2..])
                        .map_err(|_| bad("the output key is not a valid x-only key"))?;
                    secp.verify_schnorr(&sig, &message, &output_key)
                        .map_err(|_| bad("the BIP-340 signature does not verify"))?;
                    Witness::p2tr_key_spend(&bitcoin::taproot::Signature {
                        signature: sig,
                        sighash_type: TapSighashType::Default,
                    })
                }
                (SpendKind::P2wpkh, _) => {
                    return Err(bad("a P2WPKH input needs an ECDSA signature"))
                }
                (SpendKind::P2trKeyPath, _) => {
                    return Err(bad("a P2TR input needs a BIP-340 signature"))
                }
            };
            psbt_input.final_script_witness = Some(witness);
            psbt_input.partial_sigs.clear();
            psbt_input.tap_key_sig = None;
        }
        let tx = raw.extract_tx_unchecked_fee_rate();
        Ok(bitcoin::consensus::encode::serialize(&tx))
    }
}

/// A signature for one input of a [`Psbt`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InputSignature {
    /// ECDSA `r || s` and the signing key's compressed public key (P2WPKH).
    Ecdsa {
        /// `r || s`, 64 bytes.
        signature: Vec<u8>,
        /// SEC1 compressed, 33 bytes.
        public_key: Vec<u8>,
    },
    /// BIP-340, 64 bytes (P2TR key path).
    Schnorr {
        /// The signature.
        signature: Vec<u8>,
    },
}

/// The sum of `amounts`, or `None` if it overflows.
fn total(mut amounts: impl Iterator<Item = Amount>) -> Option<Amount> {
    amounts.try_fold(Amount::ZERO, |sum, a| sum.checked_add(a))
}

fn script_kind(script: &bitcoin::Script) -> &'static str {
    if script.is_p2pkh() {
        "P2PKH"
    } else if script.is_p2sh() {
        "P2SH"
    } else if script.is_p2wsh() {
        "P2WSH"
    } else if script.is_op_return() {
        "OP_RETURN"
    } else {
        "non-standard"
    }
}
