//! Typed identifiers. Each id has exactly one textual and one binary form.

use std::fmt;
use std::str::FromStr;

use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

/// Why a textual id was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdError {
    /// The text is not a valid id of the named kind.
    #[error("invalid {kind} {text:?}: {reason}")]
    Invalid {
        /// Which kind of id was being parsed.
        kind: &'static str,
        /// The refused text (ids are public, never secret).
        text: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// A party in a roster, numbered from 1. Shown as `p1`, `p2`, ...
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PartyId(pub u16);

impl PartyId {
    /// The id as the big-endian bytes used in frame headers.
    pub fn to_be_bytes(self) -> [u8; 2] {
        self.0.to_be_bytes()
    }
}

impl fmt::Display for PartyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "p{}", self.0)
    }
}

impl PartyId {
    /// A list of parties for messages: `p1, p3`.
    pub fn list(parties: &[PartyId]) -> String {
        parties
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl FromStr for PartyId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        let invalid = |reason| IdError::Invalid {
            kind: "party id",
            text: s.to_owned(),
            reason,
        };
        let digits = s.strip_prefix('p').unwrap_or(s);
        let n: u16 = digits
            .parse()
            .map_err(|_| invalid("expected p<number>, e.g. p1"))?;
        if n == 0 {
            return Err(invalid("party ids start at p1"));
        }
        Ok(PartyId(n))
    }
}

impl ConstantTimeEq for PartyId {
    fn ct_eq(&self, other: &Self) -> subtle::Choice {
        self.0.ct_eq(&other.0)
    }
}

macro_rules! random_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub struct $name(pub [u8; 16]);

        impl $name {
            /// A fresh random id from the operating system's RNG.
            pub fn random() -> Self {
                let mut bytes = [0u8; 16];
                OsRng.fill_bytes(&mut bytes);
                Self(bytes)
            }

            /// The raw bytes.
            pub fn as_bytes(&self) -> &[u8; 16] {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&hex::encode(self.0))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self)
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                let mut bytes = [0u8; 16];
                hex::decode_to_slice(s, &mut bytes).map_err(|_| IdError::Invalid {
                    kind: $kind,
                    text: s.to_owned(),
                    reason: "expected 32 hex digits",
                })?;
                Ok(Self(bytes))
            }
        }

        impl ConstantTimeEq for $name {
            fn ct_eq(&self, other: &Self) -> subtle::Choice {
                self.0.ct_eq(&other.0)
            }
        }
    };
}

random_id!(
    /// One run of a protocol (a DKG, a signing, a channel test...) among a set of parties.
    SessionId,
    "session id"
);
random_id!(
    /// A threshold key managed by a committee.
    KeyId,
    "key id"
);
random_id!(
    /// A signing request, chosen by the client so that retries are idempotent.
    RequestId,
    "request id"
);

/// A protocol round number inside a session.
pub type Round = u16;

/// Which protocol a frame belongs to. Bound into every frame's associated data so a message of
/// one protocol can never be accepted as a message of another.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Protocol(pub u16);

impl Protocol {
    /// Channel-layer control (rekey confirmation); never handed to an application.
    pub const CONTROL: Protocol = Protocol(0);
    /// Connectivity checks and the foundation demo.
    pub const PING: Protocol = Protocol(1);
    /// Distributed key generation.
    pub const KEYGEN: Protocol = Protocol(2);
    /// Auxiliary info generation (Paillier keys, ring-Pedersen parameters).
    pub const AUX_INFO: Protocol = Protocol(3);
    /// Presignature generation.
    pub const PRESIGN: Protocol = Protocol(4);
    /// Full interactive signing.
    pub const SIGN: Protocol = Protocol(5);
    /// Key refresh and resharing.
    pub const RESHARE: Protocol = Protocol(6);
    /// Online signing: each signer sends its partial signature from a presignature.
    pub const ONLINE_SIGN: Protocol = Protocol(7);
    /// Distributed key generation of a FROST (Schnorr, EdDSA) key.
    pub const FROST_KEYGEN: Protocol = Protocol(8);
    /// Interactive FROST signing.
    pub const FROST_SIGN: Protocol = Protocol(9);
    /// One-round FROST signing from nonces committed ahead of time.
    pub const FROST_ONLINE_SIGN: Protocol = Protocol(10);
    /// FROST nonce commitments made ahead of time by a signer set, exchanged in one round.
    pub const FROST_COMMIT: Protocol = Protocol(11);
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match *self {
            Protocol::CONTROL => "control",
            Protocol::PING => "ping",
            Protocol::KEYGEN => "keygen",
            Protocol::AUX_INFO => "aux-info",
            Protocol::PRESIGN => "presign",
            Protocol::SIGN => "sign",
            Protocol::RESHARE => "reshare",
            Protocol::ONLINE_SIGN => "online-sign",
            Protocol::FROST_KEYGEN => "frost-keygen",
            Protocol::FROST_SIGN => "frost-sign",
            Protocol::FROST_ONLINE_SIGN => "frost-online-sign",
            Protocol::FROST_COMMIT => "frost-commit",
            Protocol(other) => return write!(f, "protocol-{other}"),
        };
        f.write_str(name)
    }
}

/// A cluster's name: 1 to 32 characters of `a-z`, `0-9` and `-`, so it is safe inside a NATS
/// subject and a file name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ClusterId(String);

impl ClusterId {
    /// Validates and wraps a cluster name.
    pub fn new(name: impl Into<String>) -> Result<Self, IdError> {
        let name = name.into();
        let invalid = |reason| IdError::Invalid {
            kind: "cluster id",
            text: name.clone(),
            reason,
        };
        if name.is_empty() || name.len() > 32 {
            return Err(invalid("must be 1 to 32 characters"));
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(invalid("only a-z, 0-9 and '-' are allowed"));
        }
        Ok(ClusterId(name))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ClusterId {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        ClusterId::new(s)
    }
}

impl From<ClusterId> for String {
    fn from(c: ClusterId) -> String {
        c.0
    }
}

impl fmt::Display for ClusterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for ClusterId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        ClusterId::new(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn party_id_text_round_trip() {
        assert_eq!("p7".parse::<PartyId>().unwrap(), PartyId(7));
        assert_eq!("7".parse::<PartyId>().unwrap(), PartyId(7));
        assert_eq!(PartyId(12).to_string(), "p12");
        assert!("p0".parse::<PartyId>().is_err());
        assert!("q1".parse::<PartyId>().is_err());
    }

    #[test]
    fn session_id_hex_round_trip() {
        let id = SessionId::random();
        assert_eq!(id.to_string().parse::<SessionId>().unwrap(), id);
        assert!("abc".parse::<SessionId>().is_err());
    }

    #[test]
    fn cluster_id_rules() {
        assert!(ClusterId::new("prod-eu-1").is_ok());
        assert!(ClusterId::new("").is_err());
        assert!(ClusterId::new("Prod").is_err());
        assert!(ClusterId::new("a.b").is_err());
        assert!(ClusterId::new("x".repeat(33)).is_err());
    }
}

/// What kind of threshold key a key is: its curve, its signature scheme, and so the protocol
/// that signs with it. Shown as `ecdsa`, `taproot`, `ed25519`; a key's kind never changes.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum KeyKind {
    /// ECDSA on secp256k1 (CGGMP24): Ethereum transactions and messages, Bitcoin P2WPKH.
    #[default]
    Ecdsa,
    /// BIP-340 Schnorr on secp256k1 with the BIP-341 key-path tweak (FROST): Bitcoin P2TR.
    Taproot,
    /// Ed25519 (FROST): Solana and raw Ed25519 messages.
    Ed25519,
}

impl KeyKind {
    /// Every kind, in order.
    pub const ALL: [KeyKind; 3] = [KeyKind::Ecdsa, KeyKind::Taproot, KeyKind::Ed25519];

    /// The name used in text, JSON and the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyKind::Ecdsa => "ecdsa",
            KeyKind::Taproot => "taproot",
            KeyKind::Ed25519 => "ed25519",
        }
    }

    /// Whether the key is a FROST (Schnorr or EdDSA) key.
    pub fn is_frost(self) -> bool {
        !matches!(self, KeyKind::Ecdsa)
    }
}

impl fmt::Display for KeyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for KeyKind {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        KeyKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| IdError::Invalid {
                kind: "key kind",
                text: s.to_owned(),
                reason: "expected ecdsa, taproot or ed25519",
            })
    }
}

#[cfg(test)]
mod key_kind_tests {
    use super::*;

    #[test]
    fn key_kinds_have_one_text_form() {
        for kind in KeyKind::ALL {
            assert_eq!(kind.to_string().parse::<KeyKind>().unwrap(), kind);
            assert_eq!(
                serde_json::to_value(kind).unwrap(),
                serde_json::Value::String(kind.to_string())
            );
        }
        assert_eq!(KeyKind::default(), KeyKind::Ecdsa);
        assert!("schnorr".parse::<KeyKind>().is_err());
        assert!(KeyKind::Taproot.is_frost() && !KeyKind::Ecdsa.is_frost());
    }
}
