//! Resharing a key to a new committee and refreshing a committee's shares, without changing the
//! public key or the HD chain code. Our own protocol (the library has none):
//! `docs/protocols/reshare.md` is its specification.
//!
//! [`core`] is the sans-IO math, generic over the curve; [`run`] carries it over a secure
//! session: the share protocol for a key on any curve ([`reshare_shares`]; all a FROST key
//! needs, [`reshare_frost`]), and for ECDSA keys the new auxiliary info after it
//! ([`reshare`]). [`setup`] is what a session is about, as the coordinator's session start
//! carries it.

pub mod core;
pub mod run;
pub mod setup;

pub use self::core::{Fault, Kind, Plan};

/// A secp256k1 key's public info: public key, public shares, threshold and evaluation points,
/// chain code.
pub type KeyInfo = cggmp24::key_share::DirtyKeyInfo<crate::Curve>;
pub use self::run::{
    aux_digest, reshare, reshare_frost, reshare_shares, reshare_with, AuxInput, Complaint,
    Contribution, NewShare, ReshareOutput, SeenBroadcasts, SharesOutput, SubShareEvidence,
    SUB_SHARE_ROUND,
};
pub use self::setup::{participants, Edwards, ReshareCurve, ReshareSetup, SetupKey};
