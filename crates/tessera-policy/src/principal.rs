//! Principals: the people (and services) named in a policy, their roles and their keys.

mod ethereum;
mod operator_key;

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tessera_chain::{checksummed, Address};

use crate::encoding::{decode_hex, decode_hex_array, parse_address};
use crate::PolicyError;

pub use operator_key::OperatorKey;

/// Longest principal name.
pub const MAX_NAME_LEN: usize = 64;

/// What a principal may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Proposes and approves policy changes.
    Admin,
    /// Submits sign requests.
    Operator,
    /// Approves sign requests.
    Approver,
    /// Reads requests and audit events.
    Auditor,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 4] = [Role::Admin, Role::Operator, Role::Approver, Role::Auditor];

    /// The lowercase name used in documents.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::Approver => "approver",
            Role::Auditor => "auditor",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = PolicyError;
    fn from_str(s: &str) -> Result<Self, PolicyError> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| PolicyError::Parse {
                what: "role",
                text: s.to_owned(),
                reason: "expected admin, operator, approver or auditor".into(),
            })
    }
}

/// A principal's public key: what their approvals are checked against.
///
/// Text form: `ed25519:<64 hex>` or `eth:0x<40 hex>` (shown EIP-55 checksummed).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub enum PrincipalKey {
    /// An Ed25519 key; signatures are checked with `verify_strict`.
    Ed25519(ed25519_dalek::VerifyingKey),
    /// A secp256k1 key known by its Ethereum address; signatures are EIP-191 `personal_sign`.
    Ethereum(Address),
}

impl PrincipalKey {
    /// The key type's name, as in key files: `ed25519` or `ethereum`.
    pub fn kind(&self) -> &'static str {
        match self {
            PrincipalKey::Ed25519(_) => "ed25519",
            PrincipalKey::Ethereum(_) => "ethereum",
        }
    }

    /// Checks `signature` over `label || message`.
    ///
    /// Ed25519: `verify_strict` over the concatenation. Ethereum: the EIP-191 `personal_sign`
    /// digest of the concatenation, a 65-byte `r || s || v` signature (`v` in 0, 1, 27, 28),
    /// low `s` only, recovering to this key's address.
    pub fn verify(
        &self,
        label: &[u8],
        message: &[u8],
        signature: &PrincipalSignature,
    ) -> Result<(), PolicyError> {
        match self {
            PrincipalKey::Ed25519(key) => {
                let bytes: &[u8; 64] = signature.0.as_slice().try_into().map_err(|_| {
                    PolicyError::SignatureLength {
                        kind: "Ed25519",
                        expected: 64,
                        got: signature.0.len(),
                    }
                })?;
                let signed = [label, message].concat();
                key.verify_strict(&signed, &ed25519_dalek::Signature::from_bytes(bytes))
                    .map_err(|_| {
                        PolicyError::BadSignature(
                            "not a valid Ed25519 signature by this key over this message".into(),
                        )
                    })
            }
            PrincipalKey::Ethereum(address) => {
                ethereum::verify(address, label, message, &signature.0)
            }
        }
    }
}

impl fmt::Display for PrincipalKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PrincipalKey::Ed25519(key) => write!(f, "ed25519:{}", hex::encode(key.as_bytes())),
            PrincipalKey::Ethereum(address) => write!(f, "eth:{}", checksummed(address)),
        }
    }
}

impl fmt::Debug for PrincipalKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PrincipalKey({self})")
    }
}

impl FromStr for PrincipalKey {
    type Err = PolicyError;
    fn from_str(s: &str) -> Result<Self, PolicyError> {
        let invalid = |reason: String| PolicyError::Parse {
            what: "principal key",
            text: s.to_owned(),
            reason,
        };
        if let Some(hex) = s.strip_prefix("ed25519:") {
            let bytes: [u8; 32] = decode_hex_array(hex).map_err(invalid)?;
            let key = ed25519_dalek::VerifyingKey::from_bytes(&bytes)
                .map_err(|_| invalid("not a point on the Ed25519 curve".into()))?;
            if key.is_weak() {
                return Err(invalid(
                    "a weak (small-order) key: anyone can forge its signatures".into(),
                ));
            }
            Ok(PrincipalKey::Ed25519(key))
        } else if let Some(address) = s.strip_prefix("eth:") {
            let address = parse_address(address).map_err(|e| match e {
                PolicyError::Parse { reason, .. } => invalid(reason),
                other => other,
            })?;
            Ok(PrincipalKey::Ethereum(address))
        } else {
            Err(invalid(
                "expected ed25519:<64 hex digits> or eth:0x<40 hex digits>".into(),
            ))
        }
    }
}

impl Serialize for PrincipalKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PrincipalKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A signature by a principal: 64 bytes (Ed25519) or 65 bytes `r || s || v` (Ethereum).
/// Hex in JSON and TOML, bytes in the binary encoding. Its length is checked when it is
/// verified.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PrincipalSignature(#[serde(with = "crate::encoding::bytes")] pub Vec<u8>);

impl fmt::Display for PrincipalSignature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(&self.0))
    }
}

impl fmt::Debug for PrincipalSignature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PrincipalSignature({self})")
    }
}

impl FromStr for PrincipalSignature {
    type Err = PolicyError;
    fn from_str(s: &str) -> Result<Self, PolicyError> {
        decode_hex(s)
            .map(PrincipalSignature)
            .map_err(|reason| PolicyError::Parse {
                what: "signature",
                text: s.to_owned(),
                reason,
            })
    }
}

/// Someone named in a policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Principal {
    /// Unique name (1 to 64 characters of `A-Z a-z 0-9 . _ - @`).
    pub name: String,
    /// What they may do; never empty in a valid document.
    pub roles: BTreeSet<Role>,
    /// Their public key.
    pub key: PrincipalKey,
}

impl Principal {
    /// Whether the principal has `role`.
    pub fn has_role(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }
}

/// Checks a principal name: 1 to [`MAX_NAME_LEN`] characters of `A-Z a-z 0-9 . _ - @`.
pub fn check_name(name: &str) -> Result<(), PolicyError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@'));
    if ok {
        Ok(())
    } else {
        // Bound what we echo back.
        Err(PolicyError::BadName(name.chars().take(80).collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_have_one_text_form() {
        for role in Role::ALL {
            assert_eq!(role.to_string().parse::<Role>().unwrap(), role);
            assert_eq!(serde_json::to_string(&role).unwrap(), format!("\"{role}\""));
        }
        assert!("Admin".parse::<Role>().is_err());
        assert!("root".parse::<Role>().is_err());
    }

    #[test]
    fn keys_round_trip_through_text() {
        let ed = OperatorKey::generate_ed25519().public();
        assert_eq!(ed.to_string().parse::<PrincipalKey>().unwrap(), ed);
        let upper = ed
            .to_string()
            .to_uppercase()
            .replace("ED25519:", "ed25519:");
        assert_eq!(upper.parse::<PrincipalKey>().unwrap(), ed);

        let eth: PrincipalKey = "eth:0x7e5f4552091a69125d5dfcb7b8c2659029395bdf"
            .parse()
            .unwrap();
        assert_eq!(
            eth.to_string(),
            "eth:0x7E5F4552091A69125d5DfCb7b8C2659029395Bdf"
        );
        assert_eq!(
            serde_json::to_string(&eth).unwrap(),
            "\"eth:0x7E5F4552091A69125d5DfCb7b8C2659029395Bdf\""
        );
    }

    #[test]
    fn bad_keys_are_refused_with_the_reason() {
        for (text, why) in [
            ("ed25519:00", "64 hex digits"),
            ("rsa:abcd", "expected ed25519"),
            ("eth:0x1234", "40 hex digits"),
            // The identity point is a weak key.
            (
                "ed25519:0100000000000000000000000000000000000000000000000000000000000000",
                "weak",
            ),
        ] {
            let err = text.parse::<PrincipalKey>().unwrap_err().to_string();
            assert!(err.contains(why), "{text}: {err}");
        }
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("alice").is_ok());
        assert!(check_name("ops-bot@acme.example").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name("a b").is_err());
        assert!(check_name(&"x".repeat(65)).is_err());
    }
}
