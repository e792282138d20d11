//! Sign requests: what is asked, under which policy, by whom, until when.

mod action;
mod destination;
mod payload;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};
use tessera_wire::{KeyId, RequestId};

use crate::encoding::decode_hex_array;
use crate::principal::check_name;
use crate::PolicyError;

pub use action::{
    Action, ActionKind, Asset, ERC20_TRANSFER_FROM_SELECTOR, ERC20_TRANSFER_SELECTOR,
};
pub use destination::Destination;
pub use payload::{
    derive, Derived, EcdsaHash, Payload, Signing, MAX_MESSAGE_BYTES, MAX_TX_BYTES, SIGNATURE_LEN,
    SIGNINGS_DIGEST_LABEL,
};

/// Most levels in a derivation path.
pub const MAX_PATH_LEN: usize = 16;
/// The first hardened index (2^31); paths may only hold indices below it.
pub const HARDENED: u32 = 1 << 31;
/// Largest canonical encoding of a [`SignRequest`] that [`SignRequest::decode`] reads.
pub const MAX_ENCODED_REQUEST: usize = MAX_TX_BYTES + 1024;
/// Domain separation for [`SignRequest::request_digest`].
pub const REQUEST_DIGEST_LABEL: &[u8] = b"tessera/sign-request/v1";

/// The SHA-256 of a policy document's exact bytes (what `sha256sum policy.toml` prints).
/// Hex in text and JSON, 32 bytes in the binary encoding.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PolicyHash(pub [u8; 32]);

impl PolicyHash {
    /// The hash of `bytes`.
    pub fn of(bytes: &[u8]) -> PolicyHash {
        PolicyHash(Sha256::digest(bytes).into())
    }
}

impl ConstantTimeEq for PolicyHash {
    fn ct_eq(&self, other: &Self) -> Choice {
        self.0.ct_eq(&other.0)
    }
}

impl fmt::Display for PolicyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for PolicyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PolicyHash({self})")
    }
}

impl FromStr for PolicyHash {
    type Err = PolicyError;
    fn from_str(s: &str) -> Result<Self, PolicyError> {
        decode_hex_array(s)
            .map(PolicyHash)
            .map_err(|reason| PolicyError::Parse {
                what: "policy hash",
                text: s.to_owned(),
                reason,
            })
    }
}

impl Serialize for PolicyHash {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        crate::encoding::array32::serialize(&self.0, s)
    }
}

impl<'de> Deserialize<'de> for PolicyHash {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        crate::encoding::array32::deserialize(d).map(PolicyHash)
    }
}

/// A request to sign a payload with a key. It travels in JSON API bodies and inside the
/// coordinator's signed session starts; a node never trusts its `digest` and re-derives
/// everything with [`check`](Self::check).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignRequest {
    /// Chosen by the client; retries reuse it.
    #[serde(with = "crate::encoding::text")]
    pub id: RequestId,
    /// The threshold key to sign with.
    #[serde(with = "crate::encoding::text")]
    pub key: KeyId,
    /// Non-hardened derivation path from the key (empty = the key itself).
    pub path: Vec<u32>,
    /// What to sign.
    pub payload: Payload,
    /// The digest derived from the payload when the request was made.
    #[serde(with = "crate::encoding::array32")]
    pub digest: [u8; 32],
    /// The policy the request was made under.
    pub policy: PolicyHash,
    /// The principal who submitted it.
    pub submitted_by: String,
    /// Creation time, Unix seconds.
    pub created_at: u64,
    /// Expiry time, Unix seconds; must be later than `created_at`.
    pub expires_at: u64,
}

/// Refuses paths that are too long or hold hardened indices.
pub fn check_path(path: &[u32]) -> Result<(), PolicyError> {
    if path.len() > MAX_PATH_LEN {
        return Err(PolicyError::PathTooLong {
            len: path.len(),
            max: MAX_PATH_LEN,
        });
    }
    if let Some((position, &index)) = path.iter().enumerate().find(|(_, &i)| i >= HARDENED) {
        return Err(PolicyError::HardenedIndex { position, index });
    }
    Ok(())
}

impl SignRequest {
    /// Builds a request, deriving its digest from the payload. Refuses long or hardened
    /// paths, oversized payloads, undecodable transactions, a bad submitter name and
    /// `expires_at <= created_at`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: RequestId,
        key: KeyId,
        path: Vec<u32>,
        payload: Payload,
        policy: PolicyHash,
        submitted_by: impl Into<String>,
        created_at: u64,
        expires_at: u64,
    ) -> Result<Self, PolicyError> {
        let derived = derive(&payload)?;
        let request = SignRequest {
            id,
            key,
            path,
            payload,
            digest: derived.digest,
            policy,
            submitted_by: submitted_by.into(),
            created_at,
            expires_at,
        };
        request.check_fields()?;
        Ok(request)
    }

    fn check_fields(&self) -> Result<(), PolicyError> {
        check_path(&self.path)?;
        check_name(&self.submitted_by)?;
        if self.expires_at <= self.created_at {
            return Err(PolicyError::BadLifetime {
                created_at: self.created_at,
                expires_at: self.expires_at,
            });
        }
        Ok(())
    }

    /// Re-checks everything a request carries: path, submitter name, lifetime, payload size,
    /// and that `digest` is the one derived from the payload (compared in constant time).
    /// Returns what was derived; callers must use it, never `self.digest` alone.
    pub fn check(&self) -> Result<Derived, PolicyError> {
        self.check_fields()?;
        let derived = derive(&self.payload)?;
        if !bool::from(derived.digest.ct_eq(&self.digest)) {
            return Err(PolicyError::DigestMismatch {
                claimed: self.digest,
                derived: derived.digest,
            });
        }
        Ok(derived)
    }

    /// The canonical encoding (`tessera_wire::encode`: a version byte, then postcard).
    pub fn canonical_bytes(&self) -> Vec<u8> {
        tessera_wire::encode(self)
    }

    /// Reads a canonical encoding, refusing inputs over [`MAX_ENCODED_REQUEST`] bytes. The
    /// result is not yet checked: call [`check`](Self::check).
    pub fn decode(bytes: &[u8]) -> Result<Self, PolicyError> {
        Ok(tessera_wire::decode(bytes, MAX_ENCODED_REQUEST)?)
    }

    /// What approvers sign: SHA-256(`"tessera/sign-request/v1"` || canonical bytes).
    pub fn request_digest(&self) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update(REQUEST_DIGEST_LABEL);
        hasher.update(self.canonical_bytes());
        hasher.finalize().into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message_request() -> SignRequest {
        SignRequest::new(
            RequestId([1; 16]),
            KeyId([2; 16]),
            vec![0, 5],
            Payload::Message {
                bytes: b"hello".to_vec(),
            },
            PolicyHash([3; 32]),
            "alice",
            1_000,
            2_000,
        )
        .unwrap()
    }

    #[test]
    fn the_digest_is_derived_and_rechecked() {
        let request = message_request();
        assert_eq!(
            request.digest,
            tessera_chain::personal_message_digest(b"hello")
        );
        let derived = request.check().unwrap();
        assert_eq!(derived.action, Action::Message { len: 5 });

        let mut forged = request.clone();
        forged.digest[31] ^= 1;
        let err = forged.check().unwrap_err();
        assert!(matches!(err, PolicyError::DigestMismatch { .. }));
        let text = err.to_string();
        assert!(text.contains(&hex::encode(forged.digest)), "{text}");
        assert!(text.contains(&hex::encode(request.digest)), "{text}");

        let mut swapped = request.clone();
        swapped.payload = Payload::Message {
            bytes: b"hellp".to_vec(),
        };
        assert!(matches!(
            swapped.check(),
            Err(PolicyError::DigestMismatch { .. })
        ));
    }

    #[test]
    fn fields_are_checked_at_construction_and_on_check() {
        let make = |path: Vec<u32>, payload: Payload, who: &str, created: u64, expires: u64| {
            SignRequest::new(
                RequestId([1; 16]),
                KeyId([2; 16]),
                path,
                payload,
                PolicyHash([3; 32]),
                who,
                created,
                expires,
            )
        };
        let msg = |n: usize| Payload::Message { bytes: vec![0; n] };
        assert!(matches!(
            make(vec![0; 17], msg(1), "a", 1, 2),
            Err(PolicyError::PathTooLong { len: 17, .. })
        ));
        assert!(matches!(
            make(vec![1, HARDENED], msg(1), "a", 1, 2),
            Err(PolicyError::HardenedIndex { position: 1, .. })
        ));
        assert!(make(vec![HARDENED - 1; 16], msg(1), "a", 1, 2).is_ok());
        assert!(matches!(
            make(vec![], msg(1), "a", 2, 2),
            Err(PolicyError::BadLifetime { .. })
        ));
        assert!(matches!(
            make(vec![], msg(MAX_MESSAGE_BYTES + 1), "a", 1, 2),
            Err(PolicyError::TooLarge { .. })
        ));
        assert!(make(vec![], msg(MAX_MESSAGE_BYTES), "a", 1, 2).is_ok());
        assert!(matches!(
            make(
                vec![],
                Payload::EthereumTx {
                    raw: vec![0xc0; MAX_TX_BYTES + 1]
                },
                "a",
                1,
                2
            ),
            Err(PolicyError::TooLarge { .. })
        ));
        assert!(matches!(
            make(vec![], Payload::EthereumTx { raw: vec![0x05] }, "a", 1, 2),
            Err(PolicyError::Chain(_))
        ));
        assert!(matches!(
            make(vec![], msg(1), "", 1, 2),
            Err(PolicyError::BadName(_))
        ));

        // The same checks run on a request that was built field by field.
        let mut request = message_request();
        request.path.push(HARDENED);
        assert!(matches!(
            request.check(),
            Err(PolicyError::HardenedIndex { .. })
        ));
        let mut request = message_request();
        request.expires_at = request.created_at;
        assert!(matches!(
            request.check(),
            Err(PolicyError::BadLifetime { .. })
        ));
    }

    #[test]
    fn the_request_digest_covers_every_field() {
        let base = message_request();
        let d = base.request_digest();
        let mut expected = Sha256::new();
        expected.update(b"tessera/sign-request/v1");
        expected.update(tessera_wire::encode(&base));
        assert_eq!(d, <[u8; 32]>::from(expected.finalize()));
        type Change = Box<dyn Fn(&mut SignRequest)>;
        let variants: Vec<Change> = vec![
            Box::new(|r| r.id.0[0] ^= 1),
            Box::new(|r| r.key.0[0] ^= 1),
            Box::new(|r| r.path.push(1)),
            Box::new(|r| r.digest[0] ^= 1),
            Box::new(|r| r.policy.0[0] ^= 1),
            Box::new(|r| r.submitted_by.push('x')),
            Box::new(|r| r.created_at += 1),
            Box::new(|r| r.expires_at += 1),
            Box::new(|r| {
                r.payload = Payload::EthereumTx {
                    raw: b"hello".to_vec(),
                }
            }),
        ];
        for change in variants {
            let mut r = base.clone();
            change(&mut r);
            assert_ne!(r.request_digest(), d);
        }
    }

    #[test]
    fn json_is_readable_and_round_trips() {
        let request = message_request();
        let json = serde_json::to_value(&request).unwrap();
        assert_eq!(json["id"], "01".repeat(16));
        assert_eq!(json["key"], "02".repeat(16));
        assert_eq!(json["policy"], "03".repeat(32));
        assert_eq!(json["payload"]["message"]["bytes"], "68656c6c6f");
        assert_eq!(json["digest"], hex::encode(request.digest));
        let back: SignRequest = serde_json::from_value(json).unwrap();
        assert_eq!(back, request);
        assert_eq!(
            SignRequest::decode(&request.canonical_bytes()).unwrap(),
            request
        );
    }

    #[test]
    fn policy_hash_text() {
        let h = PolicyHash::of(b"abc");
        assert_eq!(
            h.to_string(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(h.to_string().parse::<PolicyHash>().unwrap(), h);
        assert!("abcd".parse::<PolicyHash>().is_err());
    }
}
