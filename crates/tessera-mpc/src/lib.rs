//! Threshold protocols over Tessera's secure transport.
//!
//! The protocols themselves come from the audited `cggmp24` crate (CGGMP24 threshold ECDSA on
//! secp256k1): distributed key generation, auxiliary info, presignatures and signing. This crate
//! connects them to [`tessera_transport::SecureTransport`] sessions ([`delivery`]): every
//! protocol message travels sealed end to end, bound to its session, round and protocol;
//! broadcasts are signed; every round has a deadline, and a session that stalls fails with the
//! parties that did not deliver named ([`MpcError::Timeout`]).
//!
//! Signatures are verified against the public key with `k256` before they are returned.
//!
//! FROST threshold Schnorr keys (Ed25519, BIP-340 Taproot) come from the `givre` crate, by the
//! same authors and over the same key generation ([`frost`]).

pub mod baseline;
pub mod delivery;
mod error;
pub mod fixtures;
pub mod frost;
mod keys;
mod online;
pub mod presignatures;
pub mod primes;
pub mod protocols;
pub mod reshare;

pub use delivery::{MpcConfig, SessionSpec};
pub use error::{Blame, MpcError};
pub use keys::chain_public_key;
pub use online::online_sign;
pub use presignatures::{
    FrostNonceStore, PresignatureError, PresignatureStore, SingleUseError, SingleUseStore,
    StoredPresignature, Swept,
};
pub use primes::{PrimeError, PrimePool};
pub use protocols::{
    aux_info, child_public_key, derive_child_public_key, keygen, presign, sign, verify_signature,
    AuxInfo, Curve, DerivationPath, IncompleteKeyShare, KeyShare, Level, Presignature,
    PresignaturePublicData, PrimeSet, Signature, SigningInput,
};
