//! Unsigned transactions: strict decoding, the digest to sign, and assembly once signed.

use alloy_consensus::transaction::RlpEcdsaDecodableTx;
use alloy_consensus::{SignableTransaction, TxEip1559, TxEnvelope, TxLegacy};
use alloy_eips::eip2718::Encodable2718;
use alloy_primitives::{keccak256, Signature, TxKind as AlloyTxKind, U256};
use alloy_rlp::{Decodable, Header};
use k256::ecdsa::{RecoveryId, VerifyingKey};

use crate::{address, Address, ChainError};

const EIP1559_TYPE: u8 = 0x02;

/// Where a transaction goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxKind {
    /// A call or transfer to this address.
    Call(Address),
    /// Contract creation.
    Create,
}

/// An unsigned Ethereum transaction of a kind Tessera signs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UnsignedTx {
    /// Legacy, with EIP-155 replay protection.
    Legacy(TxLegacy),
    /// EIP-1559 (type 2).
    Eip1559(TxEip1559),
}

fn malformed(e: alloy_rlp::Error) -> ChainError {
    ChainError::Malformed(e.to_string())
}

impl UnsignedTx {
    /// Decodes the bytes a wallet would sign: `0x02 || rlp([chain_id, nonce, …, access_list])`
    /// for EIP-1559, `rlp([nonce, gas_price, gas, to, value, data, chain_id, 0, 0])` for a
    /// legacy EIP-155 transaction. Refuses other types, trailing bytes, pre-EIP-155 legacy
    /// transactions and any non-canonical encoding.
    pub fn decode(raw: &[u8]) -> Result<Self, ChainError> {
        let first = *raw
            .first()
            .ok_or_else(|| ChainError::Malformed("empty".into()))?;
        let tx = if first >= 0xc0 {
            UnsignedTx::Legacy(decode_legacy(raw)?)
        } else if first == EIP1559_TYPE {
            let mut buf = &raw[1..];
            let tx = TxEip1559::rlp_decode(&mut buf).map_err(malformed)?;
            if !buf.is_empty() {
                return Err(ChainError::Malformed(format!(
                    "{} trailing bytes",
                    buf.len()
                )));
            }
            UnsignedTx::Eip1559(tx)
        } else if first <= 0x7f {
            return Err(ChainError::UnsupportedType(first));
        } else {
            return Err(ChainError::Malformed("not a transaction".into()));
        };
        if tx.encoded_for_signing() != raw {
            return Err(ChainError::NotCanonical);
        }
        Ok(tx)
    }

    /// The canonical bytes that are signed (hashed with Keccak-256).
    pub fn encoded_for_signing(&self) -> Vec<u8> {
        match self {
            UnsignedTx::Legacy(tx) => tx.encoded_for_signing(),
            UnsignedTx::Eip1559(tx) => tx.encoded_for_signing(),
        }
    }

    /// The digest a signature must cover.
    pub fn signing_digest(&self) -> [u8; 32] {
        match self {
            UnsignedTx::Legacy(tx) => tx.signature_hash().0,
            UnsignedTx::Eip1559(tx) => tx.signature_hash().0,
        }
    }

    /// The chain id.
    pub fn chain_id(&self) -> u64 {
        match self {
            UnsignedTx::Legacy(tx) => tx.chain_id.unwrap_or_default(),
            UnsignedTx::Eip1559(tx) => tx.chain_id,
        }
    }

    /// The sender's nonce.
    pub fn nonce(&self) -> u64 {
        match self {
            UnsignedTx::Legacy(tx) => tx.nonce,
            UnsignedTx::Eip1559(tx) => tx.nonce,
        }
    }

    /// The destination.
    pub fn to(&self) -> TxKind {
        let kind = match self {
            UnsignedTx::Legacy(tx) => tx.to,
            UnsignedTx::Eip1559(tx) => tx.to,
        };
        match kind {
            AlloyTxKind::Call(a) => TxKind::Call(a.into_array()),
            AlloyTxKind::Create => TxKind::Create,
        }
    }

    /// The value transferred, in wei.
    pub fn value(&self) -> U256 {
        match self {
            UnsignedTx::Legacy(tx) => tx.value,
            UnsignedTx::Eip1559(tx) => tx.value,
        }
    }

    /// The most the transaction can cost in fees, in wei: its gas limit times its gas price
    /// (legacy) or its maximum fee per gas (EIP-1559), whatever the network charges in the end.
    pub fn max_fee(&self) -> U256 {
        let (gas_limit, per_gas) = match self {
            UnsignedTx::Legacy(tx) => (tx.gas_limit, tx.gas_price),
            UnsignedTx::Eip1559(tx) => (tx.gas_limit, tx.max_fee_per_gas),
        };
        // u64 times u128 always fits in 256 bits.
        U256::from(gas_limit) * U256::from(per_gas)
    }

    /// The call data.
    pub fn input(&self) -> &[u8] {
        match self {
            UnsignedTx::Legacy(tx) => &tx.input,
            UnsignedTx::Eip1559(tx) => &tx.input,
        }
    }

    /// The signed raw transaction (EIP-2718 bytes, ready for `eth_sendRawTransaction`) from a
    /// low-s signature `r || s` over [`signing_digest`](Self::signing_digest) by
    /// `public_key`. The parity is the one under which the signature recovers to
    /// `public_key`; if neither does, the signature is refused.
    pub fn assemble(&self, signature: &[u8], public_key: &[u8]) -> Result<Vec<u8>, ChainError> {
        let expected =
            VerifyingKey::from_sec1_bytes(public_key).map_err(|_| ChainError::BadPublicKey)?;
        let sig =
            k256::ecdsa::Signature::from_slice(signature).map_err(|_| ChainError::BadSignature)?;
        if sig.normalize_s().is_some() {
            // Ethereum accepts only low-s signatures (EIP-2).
            return Err(ChainError::BadSignature);
        }
        let digest = self.signing_digest();
        let parity = [0u8, 1]
            .into_iter()
            .find(|&id| {
                let id = RecoveryId::from_byte(id).expect("0 and 1 are recovery ids");
                VerifyingKey::recover_from_prehash(&digest, &sig, id).is_ok_and(|k| k == expected)
            })
            .ok_or(ChainError::SignatureMismatch)?;
        let r = U256::from_be_slice(&signature[..32]);
        let s = U256::from_be_slice(&signature[32..]);
        let signature = Signature::new(r, s, parity == 1);
        let envelope = match self.clone() {
            UnsignedTx::Legacy(tx) => TxEnvelope::Legacy(tx.into_signed(signature)),
            UnsignedTx::Eip1559(tx) => TxEnvelope::Eip1559(tx.into_signed(signature)),
        };
        Ok(envelope.encoded_2718())
    }

    /// The sender: the address of `public_key`.
    pub fn sender(public_key: &[u8]) -> Result<Address, ChainError> {
        address(public_key)
    }
}

/// Recovers the sender of a signed raw transaction (EIP-2718 bytes, legacy or EIP-1559), as a
/// node of the chain would: decode, then recover the public key from the signature over the
/// signing digest. Used to check what Tessera returns before anyone broadcasts it.
pub fn recover_sender(signed: &[u8]) -> Result<Address, ChainError> {
    use alloy_eips::eip2718::Decodable2718;
    let mut buf = signed;
    let envelope = TxEnvelope::decode_2718(&mut buf)
        .map_err(|e| ChainError::Malformed(format!("not a signed transaction: {e}")))?;
    if !buf.is_empty() {
        return Err(ChainError::Malformed(format!(
            "{} trailing bytes",
            buf.len()
        )));
    }
    let (digest, signature) = match &envelope {
        TxEnvelope::Legacy(tx) => (tx.signature_hash(), *tx.signature()),
        TxEnvelope::Eip1559(tx) => (tx.signature_hash(), *tx.signature()),
        _ => return Err(ChainError::UnsupportedType(envelope.tx_type() as u8)),
    };
    let sig = k256::ecdsa::Signature::from_scalars(
        signature.r().to_be_bytes::<32>(),
        signature.s().to_be_bytes::<32>(),
    )
    .map_err(|_| ChainError::BadSignature)?;
    let id = RecoveryId::from_byte(u8::from(signature.v())).ok_or(ChainError::BadSignature)?;
    let key = VerifyingKey::recover_from_prehash(&digest.0, &sig, id)
        .map_err(|_| ChainError::BadSignature)?;
    address(&key.to_encoded_point(true).to_bytes())
}

fn decode_legacy(raw: &[u8]) -> Result<TxLegacy, ChainError> {
    let mut buf = raw;
    let header = Header::decode(&mut buf).map_err(malformed)?;
    if !header.list {
        return Err(ChainError::Malformed(
            "a legacy transaction is an RLP list".into(),
        ));
    }
    if buf.len() != header.payload_length {
        return Err(ChainError::Malformed(
            "length does not match the RLP header".into(),
        ));
    }
    let mut tx = TxLegacy::rlp_decode_fields(&mut buf).map_err(malformed)?;
    if buf.is_empty() {
        return Err(ChainError::MissingChainId);
    }
    let chain_id = u64::decode(&mut buf).map_err(malformed)?;
    let zero_r = u64::decode(&mut buf).map_err(malformed)?;
    let zero_s = u64::decode(&mut buf).map_err(malformed)?;
    if !buf.is_empty() || zero_r != 0 || zero_s != 0 || chain_id == 0 {
        return Err(ChainError::Malformed(
            "an unsigned EIP-155 transaction ends with chain_id, 0, 0".into(),
        ));
    }
    tx.chain_id = Some(chain_id);
    Ok(tx)
}

/// The EIP-191 `personal_sign` digest of `message`:
/// Keccak-256 of `"\x19Ethereum Signed Message:\n" || len(message) || message`.
pub fn personal_message_digest(message: &[u8]) -> [u8; 32] {
    keccak256(personal_message_preimage(message)).0
}

/// The bytes EIP-191 `personal_sign` hashes: `"\x19Ethereum Signed Message:\n" || len(message)
/// || message` (hand these to a signer that hashes with Keccak-256 itself).
pub fn personal_message_preimage(message: &[u8]) -> Vec<u8> {
    let mut bytes = format!("\x19Ethereum Signed Message:\n{}", message.len()).into_bytes();
    bytes.extend_from_slice(message);
    bytes
}
