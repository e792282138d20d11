//! An operator's own secret key, for tools and tests that sign approvals.

use std::fmt;

use rand_core::OsRng;
use serde::Deserialize;
use zeroize::{Zeroize, Zeroizing};

use super::{ethereum, PrincipalKey, PrincipalSignature};
use crate::PolicyError;

enum Secret {
    Ed25519(ed25519_dalek::SigningKey),
    Ethereum(k256::ecdsa::SigningKey),
}

/// A principal's secret key: Ed25519, or secp256k1 identified by its Ethereum address.
///
/// Both inner key types zeroize themselves on drop. `Debug` shows only the public key, and the
/// key-file form is returned in a [`Zeroizing`] string.
pub struct OperatorKey(Secret);

const HEX: &[u8; 16] = b"0123456789abcdef";

impl OperatorKey {
    /// A fresh Ed25519 key from the operating system's RNG.
    pub fn generate_ed25519() -> Self {
        OperatorKey(Secret::Ed25519(ed25519_dalek::SigningKey::generate(
            &mut OsRng,
        )))
    }

    /// A fresh secp256k1 (Ethereum) key from the operating system's RNG.
    pub fn generate_ethereum() -> Self {
        OperatorKey(Secret::Ethereum(k256::ecdsa::SigningKey::random(
            &mut OsRng,
        )))
    }

    /// The public key to put in a policy document.
    pub fn public(&self) -> PrincipalKey {
        match &self.0 {
            Secret::Ed25519(key) => PrincipalKey::Ed25519(key.verifying_key()),
            Secret::Ethereum(key) => {
                let point = key.verifying_key().to_encoded_point(false);
                // An uncompressed point of a valid key always has an address.
                let address = tessera_chain::address(point.as_bytes())
                    .expect("a k256 verifying key is a valid SEC1 public key");
                PrincipalKey::Ethereum(address)
            }
        }
    }

    /// Signs `label || message` so that [`PrincipalKey::verify`] accepts it: Ed25519 directly,
    /// Ethereum as EIP-191 `personal_sign` (65 bytes `r || s || v`, low `s`, `v` = 27/28).
    pub fn sign(&self, label: &[u8], message: &[u8]) -> PrincipalSignature {
        match &self.0 {
            Secret::Ed25519(key) => {
                use ed25519_dalek::Signer;
                let signed = [label, message].concat();
                PrincipalSignature(key.sign(&signed).to_bytes().to_vec())
            }
            Secret::Ethereum(key) => PrincipalSignature(ethereum::sign(key, label, message)),
        }
    }

    /// The key file: `{"kind":"ed25519"|"ethereum","secret":"<64 hex>"}`. The string holds the
    /// secret, so it is wiped when dropped; write it to a file with restrictive permissions.
    pub fn to_json(&self) -> Zeroizing<String> {
        let (kind, secret) = match &self.0 {
            Secret::Ed25519(key) => ("ed25519", Zeroizing::new(key.to_bytes())),
            Secret::Ethereum(key) => {
                let mut bytes = key.to_bytes();
                let mut secret = Zeroizing::new([0u8; 32]);
                secret.copy_from_slice(&bytes);
                bytes.as_mut_slice().zeroize();
                ("ethereum", secret)
            }
        };
        let head = format!("{{\"kind\":\"{kind}\",\"secret\":\"");
        let tail = "\"}";
        // Sized up front so the buffer never reallocates (a reallocation would leave a copy).
        let mut out = Zeroizing::new(String::with_capacity(head.len() + 64 + tail.len()));
        out.push_str(&head);
        for byte in secret.iter() {
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0x0f)]));
        }
        out.push_str(tail);
        out
    }

    /// Reads a key file written by [`to_json`](Self::to_json). Error messages never contain
    /// any part of the secret.
    pub fn from_json(json: &str) -> Result<Self, PolicyError> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct KeyFile {
            kind: String,
            secret: Zeroizing<String>,
        }
        let file: KeyFile = serde_json::from_str(json).map_err(|e| {
            PolicyError::SecretKey(format!(
                "not a key file ({:?} error at line {}, column {}); expected \
                 {{\"kind\":\"ed25519\"|\"ethereum\",\"secret\":\"<64 hex digits>\"}}",
                e.classify(),
                e.line(),
                e.column()
            ))
        })?;
        let mut bytes = Zeroizing::new([0u8; 32]);
        let digits = file.secret.as_bytes();
        if digits.len() != 64 {
            return Err(PolicyError::SecretKey(format!(
                "the secret must be 64 hex digits, it has {} characters",
                digits.len()
            )));
        }
        if hex::decode_to_slice(digits, bytes.as_mut_slice()).is_err() {
            return Err(PolicyError::SecretKey(
                "the secret is not hexadecimal".into(),
            ));
        }
        match file.kind.as_str() {
            "ed25519" => Ok(OperatorKey(Secret::Ed25519(
                ed25519_dalek::SigningKey::from_bytes(&bytes),
            ))),
            "ethereum" => k256::ecdsa::SigningKey::from_slice(bytes.as_slice())
                .map(|key| OperatorKey(Secret::Ethereum(key)))
                .map_err(|_| {
                    PolicyError::SecretKey(
                        "not a valid secp256k1 secret (zero or not below the curve order)".into(),
                    )
                }),
            other => Err(PolicyError::SecretKey(format!(
                "unknown kind {:?}: expected \"ed25519\" or \"ethereum\"",
                other.chars().take(32).collect::<String>()
            ))),
        }
    }
}

impl fmt::Debug for OperatorKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OperatorKey")
            .field("public", &self.public().to_string())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn both() -> [OperatorKey; 2] {
        [
            OperatorKey::generate_ed25519(),
            OperatorKey::generate_ethereum(),
        ]
    }

    #[test]
    fn signatures_verify_and_tampering_is_refused() {
        for key in both() {
            let public = key.public();
            let mut sig = key.sign(b"label/", b"message");
            public.verify(b"label/", b"message", &sig).unwrap();
            // Another message, another label, another key.
            assert!(public.verify(b"label/", b"messagf", &sig).is_err());
            assert!(public.verify(b"label!", b"message", &sig).is_err());
            let other = OperatorKey::generate_ed25519().public();
            assert!(other.verify(b"label/", b"message", &sig).is_err());
            let other = OperatorKey::generate_ethereum().public();
            assert!(other.verify(b"label/", b"message", &sig).is_err());
            // One flipped byte anywhere.
            for i in 0..sig.0.len() {
                sig.0[i] ^= 1;
                assert!(public.verify(b"label/", b"message", &sig).is_err(), "{i}");
                sig.0[i] ^= 1;
            }
            // Truncated.
            sig.0.pop();
            assert!(matches!(
                public.verify(b"label/", b"message", &sig),
                Err(PolicyError::SignatureLength { .. })
            ));
        }
    }

    #[test]
    fn key_files_round_trip_and_never_show_the_secret() {
        for key in both() {
            let json = key.to_json();
            let back = OperatorKey::from_json(&json).unwrap();
            assert_eq!(back.public(), key.public());
            let secret: serde_json::Value = serde_json::from_str(&json).unwrap();
            let secret = secret["secret"].as_str().unwrap().to_owned();
            assert_eq!(secret.len(), 64);
            let debug = format!("{key:?}");
            assert!(!debug.contains(&secret), "{debug}");
            assert!(debug.contains(&key.public().to_string()));
        }
    }

    #[test]
    fn bad_key_files_are_refused_without_echoing_the_secret() {
        let secret = "ab".repeat(32);
        let cases = [
            format!("{{\"kind\":\"rsa\",\"secret\":\"{secret}\"}}"),
            format!(
                "{{\"kind\":\"ethereum\",\"secret\":\"{}\"}}",
                "zz".repeat(32)
            ),
            format!(
                "{{\"kind\":\"ethereum\",\"secret\":\"{}\"}}",
                "00".repeat(32)
            ),
            format!(
                "{{\"kind\":\"ethereum\",\"secret\":\"{}\"}}",
                "ff".repeat(32)
            ),
            format!("{{\"kind\":\"ed25519\",\"secret\":\"{}\"}}", &secret[..62]),
            format!("{{\"kind\":\"ed25519\",\"secret\":\"{secret}\",\"x\":1}}"),
            format!("{{\"kind\":\"ed25519\",\"secret\":\"{secret}\""),
        ];
        for case in cases {
            let err = OperatorKey::from_json(&case).unwrap_err().to_string();
            assert!(!err.contains(&secret[..16]), "{err}");
            assert!(!err.contains("zzzz"), "{err}");
        }
    }
}
