//! Chains for Tessera: what a node needs to sign a transaction it understands. Bitcoin PSBTs
//! are in [`bitcoin`], Solana transfers in [`solana`]; Ethereum is at the crate root:
//!
//! - [`UnsignedTx::decode`]: an unsigned legacy (EIP-155) or EIP-1559 transaction, decoded
//!   strictly: one canonical encoding only, no trailing bytes, a chain id always.
//! - [`UnsignedTx::signing_digest`]: the Keccak-256 digest a signature must cover, derived
//!   from the decoded transaction, never taken from the caller.
//! - [`UnsignedTx::assemble`]: the signed raw transaction from a threshold signature `r || s`,
//!   with the recovery parity found by recovering the key's own public key (so a signature by
//!   any other key is refused).
//! - [`address`], [`checksummed`]: a key's Ethereum address (EIP-55).
//! - [`Eip1559Request`]: builds unsigned EIP-1559 transfers (native and ERC-20).
//! - [`personal_message_digest`]: EIP-191 `personal_sign` digest for off-chain messages.
//! - [`address_of_key`]: a key's address on Ethereum, Bitcoin or Solana ([`Chain`]).

mod address;
pub mod bitcoin;
mod build;
mod chain;
pub mod solana;
#[cfg(feature = "testing")]
pub mod testing;
mod tx;

pub use address::{address, checksummed, Address};
pub use alloy_primitives::U256;
pub use build::Eip1559Request;
pub use chain::{address_of_key, AddressError, Chain};
pub use tx::{
    personal_message_digest, personal_message_preimage, recover_sender, TxKind, UnsignedTx,
};

/// Why a transaction, key or signature was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChainError {
    /// The bytes are not a transaction of a supported kind.
    #[error("malformed transaction: {0}")]
    Malformed(String),
    /// The transaction decodes, but these are not its canonical bytes.
    #[error("the transaction is not canonically encoded (re-encoding it gives other bytes)")]
    NotCanonical,
    /// A typed transaction of a kind Tessera does not sign.
    #[error("transaction type {0:#04x} is not supported (legacy EIP-155 and EIP-1559 are)")]
    UnsupportedType(u8),
    /// A legacy transaction without EIP-155 replay protection.
    #[error(
        "legacy transaction without a chain id (pre-EIP-155): it could be replayed on any chain"
    )]
    MissingChainId,
    /// Not a secp256k1 public key.
    #[error("not a secp256k1 public key")]
    BadPublicKey,
    /// Not a valid `r || s` signature (64 bytes, low s).
    #[error("not a valid low-s r || s signature")]
    BadSignature,
    /// The signature is not by the key over this transaction's digest.
    #[error("the signature does not recover to the key's public key over this transaction")]
    SignatureMismatch,
}
