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
    /// An address, network name or key that is not one.
    #[error("{0}")]
    Address(String),
}

/// Which Bitcoin network addresses are shown for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
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
    /// Every network, in order.
    pub const ALL: [BitcoinNetwork; 4] = [
        BitcoinNetwork::Mainnet,
        BitcoinNetwork::Testnet,
        BitcoinNetwork::Signet,
        BitcoinNetwork::Regtest,
    ];

    /// The name used in text: `mainnet`, `testnet`, `signet`, `regtest`.
    pub fn as_str(self) -> &'static str {
        match self {
            BitcoinNetwork::Mainnet => "mainnet",
            BitcoinNetwork::Testnet => "testnet",
            BitcoinNetwork::Signet => "signet",
            BitcoinNetwork::Regtest => "regtest",
        }
    }

    fn network(self) -> Network {
        match self {
            BitcoinNetwork::Mainnet => Network::Bitcoin,
            BitcoinNetwork::Testnet => Network::Testnet,
            BitcoinNetwork::Signet => Network::Signet,
            BitcoinNetwork::Regtest => Network::Regtest,
        }
    }
}

impl std::fmt::Display for BitcoinNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for BitcoinNetwork {
    type Err = BitcoinError;
    fn from_str(s: &str) -> Result<Self, BitcoinError> {
        BitcoinNetwork::ALL
            .into_iter()
            .find(|n| n.as_str() == s)
            .ok_or_else(|| {
                BitcoinError::Address(format!(
                    "unknown network {s:?}; expected mainnet, testnet, signet or regtest"
                ))
            })
    }
}

/// The P2WPKH output script that pays the compressed secp256k1 key `public_key` (33 bytes).
pub fn p2wpkh_script(public_key: &[u8]) -> Result<Vec<u8>, BitcoinError> {
    let key = bitcoin::secp256k1::PublicKey::from_slice(public_key)
        .ok()
        .filter(|_| public_key.len() == 33)
        .ok_or_else(|| BitcoinError::Address("not a compressed secp256k1 public key".into()))?;
    Ok(
        bitcoin::ScriptBuf::new_p2wpkh(&bitcoin::CompressedPublicKey(key).wpubkey_hash())
            .to_bytes(),
    )
}

/// The P2TR output script that pays the x-only Taproot output key `output_key` (32 bytes,
/// already tweaked: the key a FROST Taproot key reports).
pub fn p2tr_script(output_key: &[u8]) -> Result<Vec<u8>, BitcoinError> {
    let key = bitcoin::secp256k1::XOnlyPublicKey::from_slice(output_key)
        .map_err(|_| BitcoinError::Address("not an x-only secp256k1 public key".into()))?;
    Ok(bitcoin::ScriptBuf::new_p2tr_tweaked(
        bitcoin::key::TweakedPublicKey::dangerous_assume_tweaked(key),
    )
    .to_bytes())
}

/// The Taproot output key (x-only, 32 bytes) of internal key `internal` (SEC1 compressed, 33
/// bytes) with no script tree (BIP-341 key path only, BIP-86): what a P2TR output pays.
pub fn taproot_output_key(internal: &[u8]) -> Result<[u8; 32], BitcoinError> {
    use bitcoin::key::TapTweak;
    let key = bitcoin::secp256k1::PublicKey::from_slice(internal)
        .ok()
        .filter(|_| internal.len() == 33)
        .ok_or_else(|| BitcoinError::Address("not a compressed secp256k1 public key".into()))?;
    let (x_only, _) = key.x_only_public_key();
    let (tweaked, _) = x_only.tap_tweak(&bitcoin::secp256k1::Secp256k1::verification_only(), None);
    Ok(tweaked.to_x_only_public_key().serialize())
}

/// The address of output script `script` on `network` (bech32 for SegWit v0, bech32m for
/// Taproot), if it has one.
pub fn address_of_script(script: &[u8], network: BitcoinNetwork) -> Option<String> {
    Address::from_script(bitcoin::Script::from_bytes(script), network.network())
        .ok()
        .map(|a| a.to_string())
}

/// The output script an address pays, checked to be an address of `network` (testnet and
/// signet share their addresses).
pub fn script_of_address(address: &str, network: BitcoinNetwork) -> Result<Vec<u8>, BitcoinError> {
    let unchecked = Address::from_str(address)
        .map_err(|e| BitcoinError::Address(format!("{address:?} is not an address: {e}")))?;
    let checked = unchecked.require_network(network.network()).map_err(|_| {
        BitcoinError::Address(format!("{address:?} is not an address on {network}"))
    })?;
    Ok(checked.script_pubkey().to_bytes())
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
    /// For P2WPKH: the single SHA-256 of the BIP-143 preimage. The sighash is its SHA-256, so
    /// an ECDSA signer that hashes what it signs (as the threshold ECDSA library does) is given
    /// this and never a bare digest.
    pub preimage_hash: Option<[u8; 32]>,
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
            let (kind, sighash, preimage_hash) = if script.is_p2wpkh() {
                if let Some(found) = input.sighash_type {
                    if found.ecdsa_hash_ty().ok() != Some(EcdsaSighashType::All) {
                        return Err(BitcoinError::SighashType {
                            input: index,
                            found: found.to_string(),
                        });
                    }
                }
                let code = script
                    .p2wpkh_script_code()
                    .ok_or_else(|| sighash_error("no P2WPKH script code".into()))?;
                let mut preimage = Vec::new();
                cache
                    .segwit_v0_encode_signing_data_to(
                        &mut preimage,
                        index,
                        &code,
                        utxo.value,
                        EcdsaSighashType::All,
                    )
                    .map_err(|e| sighash_error(e.to_string()))?;
                let once = bitcoin::hashes::sha256::Hash::hash(&preimage);
                let digest = bitcoin::hashes::sha256::Hash::hash(once.as_byte_array());
                (
                    SpendKind::P2wpkh,
                    digest.to_byte_array(),
                    Some(once.to_byte_array()),
                )
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
                (SpendKind::P2trKeyPath, digest.to_byte_array(), None)
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
                preimage_hash,
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
        let numbered: Vec<(usize, InputSignature)> =
            signatures.iter().cloned().enumerate().collect();
        match self.sign_inputs(&numbered)? {
            Signed::Transaction(tx) => Ok(tx),
            Signed::Psbt(_) => unreachable!("every input was given a signature"),
        }
    }

    /// Finalizes the inputs named in `signatures` (input index, signature; each checked
    /// against its input's digest first, as for [`finalize`](Self::finalize)). If every input
    /// of the PSBT is then final (others may have been finalized before, by other keys), the
    /// network transaction; otherwise the PSBT, base64, to give to the other inputs' keys.
    pub fn sign_inputs(
        self,
        signatures: &[(usize, InputSignature)],
    ) -> Result<Signed, BitcoinError> {
        use bitcoin::secp256k1::{ecdsa, schnorr, Message, PublicKey, Secp256k1, XOnlyPublicKey};
        let secp = Secp256k1::verification_only();
        let mut raw = self.raw;
        for (index, signature) in signatures {
            let input = self.inputs.get(*index).ok_or(BitcoinError::Signature {
                input: *index,
                reason: format!("the PSBT has {} inputs", self.inputs.len()),
            })?;
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
            let psbt_input = &mut raw.inputs[*index];
            psbt_input.final_script_witness = Some(witness);
            psbt_input.partial_sigs.clear();
            psbt_input.tap_key_sig = None;
        }
        if raw.inputs.iter().all(|i| i.final_script_witness.is_some()) {
            let tx = raw.extract_tx_unchecked_fee_rate();
            Ok(Signed::Transaction(bitcoin::consensus::encode::serialize(
                &tx,
            )))
        } else {
            Ok(Signed::Psbt(raw.to_string()))
        }
    }
}

/// What signing some of a PSBT's inputs gives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Signed {
    /// Every input is final: the network transaction (consensus bytes).
    Transaction(Vec<u8>),
    /// Inputs of other keys are not final yet: the PSBT (base64) with these inputs final.
    Psbt(String),
}

/// An output a transaction spends: where it is and what it holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpentOutput {
    /// The transaction that made it (internal byte order, as in the transaction).
    pub txid: [u8; 32],
    /// Its position in that transaction.
    pub vout: u32,
    /// What it holds, in satoshis.
    pub value: u64,
    /// Its script.
    pub script_pubkey: Vec<u8>,
}

/// The key-path (BIP-340) signatures of a finalized network transaction, in input order: the
/// one 64-byte witness element of each input that has one (other inputs are skipped).
pub fn key_path_signatures(raw: &[u8]) -> Result<Vec<Vec<u8>>, BitcoinError> {
    let tx: bitcoin::Transaction = bitcoin::consensus::encode::deserialize(raw)
        .map_err(|e| BitcoinError::Malformed(format!("not a network transaction: {e}")))?;
    Ok(tx
        .input
        .iter()
        .filter(|input| input.witness.len() == 1)
        .filter_map(|input| input.witness.nth(0))
        .filter(|element| element.len() == 64)
        .map(<[u8]>::to_vec)
        .collect())
}

/// An unsigned PSBT (BIP-174, base64): a version 2 transaction (replaceable, no lock time)
/// spending `inputs`, each with the output it spends recorded (`witness_utxo`), and paying
/// `outputs` (script, satoshis).
pub fn unsigned_psbt(
    inputs: &[SpentOutput],
    outputs: &[(Vec<u8>, u64)],
) -> Result<String, BitcoinError> {
    use bitcoin::hashes::Hash as _;
    let tx = bitcoin::Transaction {
        version: bitcoin::transaction::Version::TWO,
        lock_time: bitcoin::absolute::LockTime::ZERO,
        input: inputs
            .iter()
            .map(|i| bitcoin::TxIn {
                previous_output: bitcoin::OutPoint {
                    txid: bitcoin::Txid::from_byte_array(i.txid),
                    vout: i.vout,
                },
                script_sig: bitcoin::ScriptBuf::new(),
                sequence: bitcoin::Sequence::ENABLE_RBF_NO_LOCKTIME,
                witness: Witness::new(),
            })
            .collect(),
        output: outputs
            .iter()
            .map(|(script, value)| TxOut {
                value: Amount::from_sat(*value),
                script_pubkey: bitcoin::ScriptBuf::from_bytes(script.clone()),
            })
            .collect(),
    };
    let mut psbt =
        RawPsbt::from_unsigned_tx(tx).map_err(|e| BitcoinError::Malformed(e.to_string()))?;
    for (input, spent) in psbt.inputs.iter_mut().zip(inputs) {
        input.witness_utxo = Some(TxOut {
            value: Amount::from_sat(spent.value),
            script_pubkey: bitcoin::ScriptBuf::from_bytes(spent.script_pubkey.clone()),
        });
    }
    Ok(psbt.to_string())
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
