//! A party's long-term keys.
//!
//! Each party has an Ed25519 signing key (broadcasts, roster and audit signatures) and an X25519
//! static key (the `s` of Noise KK). Secrets are zeroized on drop and never printed: `Debug`
//! shows only the public half.

use std::fmt;

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use rand_core::OsRng;
use serde::{Deserialize, Serialize};
use tessera_wire::{ClusterId, PartyId};
use x25519_dalek::{PublicKey as X25519Public, StaticSecret};
use zeroize::Zeroizing;

/// Why an identity file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// Not valid JSON of the expected shape.
    #[error("identity file is not valid: {0}")]
    Format(#[from] serde_json::Error),
    /// A key field is not 32 bytes of hex.
    #[error("identity file field {0} must be 64 hex digits")]
    BadKey(&'static str),
}

/// A party's secret keys. Zeroized on drop.
pub struct PartyIdentity {
    party: PartyId,
    cluster: ClusterId,
    signing: SigningKey,
    static_secret: StaticSecret,
    nats_seed: Option<Zeroizing<String>>,
}

impl PartyIdentity {
    /// Fresh keys from the operating system's RNG. `nats_seed` is the party's NATS NKey user seed,
    /// if it connects to a broker.
    pub fn generate(party: PartyId, cluster: ClusterId, nats_seed: Option<String>) -> Self {
        PartyIdentity {
            party,
            cluster,
            signing: SigningKey::generate(&mut OsRng),
            static_secret: StaticSecret::random_from_rng(OsRng),
            nats_seed: nats_seed.map(Zeroizing::new),
        }
    }

    /// This party's id.
    pub fn party(&self) -> PartyId {
        self.party
    }

    /// The cluster this identity belongs to.
    pub fn cluster(&self) -> &ClusterId {
        &self.cluster
    }

    /// The NATS NKey user seed, if any.
    pub fn nats_seed(&self) -> Option<&str> {
        self.nats_seed.as_deref().map(String::as_str)
    }

    /// The X25519 static secret's bytes (for the Noise handshake).
    pub(crate) fn static_secret_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.static_secret.to_bytes())
    }

    /// Signs `message` with the Ed25519 identity key.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.signing.sign(message).to_bytes()
    }

    /// The public half.
    pub fn public(&self, nats_user: Option<String>) -> PublicIdentity {
        PublicIdentity {
            party: self.party,
            cluster: self.cluster.clone(),
            ed25519: hex::encode(self.signing.verifying_key().as_bytes()),
            x25519: hex::encode(X25519Public::from(&self.static_secret).as_bytes()),
            nats_user,
        }
    }

    /// The Ed25519 verifying key.
    pub fn verifying_key(&self) -> VerifyingKey {
        self.signing.verifying_key()
    }

    /// Serializes the secret keys to the identity file format (JSON). The result is secret.
    pub fn to_json(&self) -> Zeroizing<String> {
        let file = IdentityFile {
            party: self.party,
            cluster: self.cluster.clone(),
            ed25519_secret: Zeroizing::new(hex::encode(self.signing.to_bytes())),
            x25519_secret: Zeroizing::new(hex::encode(self.static_secret.to_bytes())),
            nats_seed: self.nats_seed.clone(),
        };
        Zeroizing::new(serde_json::to_string_pretty(&file).expect("identity serializes"))
    }

    /// Parses an identity file.
    pub fn from_json(text: &str) -> Result<Self, IdentityError> {
        let file: IdentityFile = serde_json::from_str(text)?;
        let ed = decode32(&file.ed25519_secret, "ed25519_secret")?;
        let x = decode32(&file.x25519_secret, "x25519_secret")?;
        Ok(PartyIdentity {
            party: file.party,
            cluster: file.cluster,
            signing: SigningKey::from_bytes(&ed),
            static_secret: StaticSecret::from(*x),
            nats_seed: file.nats_seed,
        })
    }
}

impl fmt::Debug for PartyIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PartyIdentity")
            .field("party", &self.party)
            .field("cluster", &self.cluster)
            .field(
                "ed25519",
                &hex::encode(self.signing.verifying_key().as_bytes()),
            )
            .finish_non_exhaustive()
    }
}

fn decode32(text: &str, field: &'static str) -> Result<Zeroizing<[u8; 32]>, IdentityError> {
    let mut out = Zeroizing::new([0u8; 32]);
    hex::decode_to_slice(text, out.as_mut()).map_err(|_| IdentityError::BadKey(field))?;
    Ok(out)
}

#[derive(Serialize, Deserialize)]
struct IdentityFile {
    party: PartyId,
    cluster: ClusterId,
    ed25519_secret: Zeroizing<String>,
    x25519_secret: Zeroizing<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    nats_seed: Option<Zeroizing<String>>,
}

/// A party's public keys, as published to admins to build the roster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicIdentity {
    /// The party.
    pub party: PartyId,
    /// Its cluster.
    pub cluster: ClusterId,
    /// Ed25519 verifying key, hex.
    pub ed25519: String,
    /// X25519 static public key, hex.
    pub x25519: String,
    /// NATS NKey user public key (`U...`), if the party connects to a broker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nats_user: Option<String>,
}

/// An admin's Ed25519 key, used to sign rosters. Zeroized on drop.
pub struct AdminKey {
    signing: SigningKey,
}

impl AdminKey {
    /// A fresh admin key.
    pub fn generate() -> Self {
        AdminKey {
            signing: SigningKey::generate(&mut OsRng),
        }
    }

    /// Signs `message`.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.signing.sign(message).to_bytes()
    }

    /// The public key.
    pub fn verifying_key(&self) -> VerifyingKey {
        self.signing.verifying_key()
    }

    /// The secret key as hex (secret).
    pub fn to_hex(&self) -> Zeroizing<String> {
        Zeroizing::new(hex::encode(self.signing.to_bytes()))
    }

    /// Parses a secret key from hex.
    pub fn from_hex(text: &str) -> Result<Self, IdentityError> {
        let bytes = decode32(text.trim(), "admin secret")?;
        Ok(AdminKey {
            signing: SigningKey::from_bytes(&bytes),
        })
    }
}

impl fmt::Debug for AdminKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "AdminKey({})",
            hex::encode(self.signing.verifying_key().as_bytes())
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_file_round_trip_and_debug_hides_secrets() {
        let id = PartyIdentity::generate(PartyId(3), ClusterId::new("c1").unwrap(), None);
        let json = id.to_json();
        let back = PartyIdentity::from_json(&json).unwrap();
        assert_eq!(back.public(None), id.public(None));
        let secret_hex = hex::encode(id.signing.to_bytes());
        assert!(!format!("{id:?}").contains(&secret_hex));
        assert!(PartyIdentity::from_json("{").is_err());
        let broken = json.replace(&secret_hex, "zz");
        assert!(matches!(
            PartyIdentity::from_json(&broken),
            Err(IdentityError::BadKey("ed25519_secret"))
        ));
    }
}
