//! Long-term keys: parties, coordinators and admins.
//!
//! Each party has an Ed25519 signing key (broadcasts, roster and audit signatures) and an X25519
//! static key (the `s` of Noise KK). A coordinator has an Ed25519 key that signs control
//! messages (protocol session starts). Secrets are zeroized on drop and never printed: `Debug`
//! shows only the public half.

use std::fmt;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use rand_core::OsRng;
use serde::{Deserialize, Serialize};
use tessera_wire::{ClusterId, PartyId};
use x25519_dalek::{PublicKey as X25519Public, StaticSecret};
use zeroize::Zeroizing;

use crate::roster::{valid_coordinator_name, CoordinatorEntry};

/// Why an identity file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// Not valid JSON of the expected shape.
    #[error("identity file is not valid: {0}")]
    Format(#[from] serde_json::Error),
    /// A key field is not 32 bytes of hex.
    #[error("identity file field {0} must be 64 hex digits")]
    BadKey(&'static str),
    /// A coordinator name is not 1 to 32 characters of `a-z`, `0-9` and `-`.
    #[error("coordinator name {0:?} is not valid: use 1 to 32 characters from a-z, 0-9 and '-'")]
    BadCoordinatorName(String),
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

/// A coordinator's secret key: it signs control messages (protocol session starts), which
/// nodes accept only from keys listed in the roster's coordinators. Zeroized on drop.
pub struct CoordinatorKey {
    name: String,
    cluster: ClusterId,
    signing: SigningKey,
    nats_seed: Option<Zeroizing<String>>,
}

impl CoordinatorKey {
    /// A fresh key from the operating system's RNG. `name` must be 1 to 32 characters from
    /// `a-z`, `0-9` and `-`; `nats_seed` is the coordinator's NATS NKey user seed, if it
    /// connects to a broker.
    pub fn generate(
        name: &str,
        cluster: ClusterId,
        nats_seed: Option<String>,
    ) -> Result<Self, IdentityError> {
        if !valid_coordinator_name(name) {
            return Err(IdentityError::BadCoordinatorName(name.to_owned()));
        }
        Ok(CoordinatorKey {
            name: name.to_owned(),
            cluster,
            signing: SigningKey::generate(&mut OsRng),
            nats_seed: nats_seed.map(Zeroizing::new),
        })
    }

    /// The coordinator's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The cluster this key belongs to.
    pub fn cluster(&self) -> &ClusterId {
        &self.cluster
    }

    /// The NATS NKey user seed, if any.
    pub fn nats_seed(&self) -> Option<&str> {
        self.nats_seed.as_deref().map(String::as_str)
    }

    /// Signs `message`. The caller puts a domain label and the cluster into `message`.
    pub fn sign(&self, message: &[u8]) -> Signature {
        self.signing.sign(message)
    }

    /// The Ed25519 verifying key.
    pub fn verifying_key(&self) -> VerifyingKey {
        self.signing.verifying_key()
    }

    /// The roster entry for this key; `nats_user` is the public key (`U...`) of
    /// [`nats_seed`](Self::nats_seed), if the coordinator connects to a broker.
    pub fn public(&self, nats_user: Option<String>) -> CoordinatorEntry {
        CoordinatorEntry {
            name: self.name.clone(),
            ed25519: hex::encode(self.signing.verifying_key().as_bytes()),
            nats_user,
        }
    }

    /// Serializes the secret key to the coordinator key file format (JSON). The result is
    /// secret.
    pub fn to_json(&self) -> Zeroizing<String> {
        let file = CoordinatorFile {
            name: self.name.clone(),
            cluster: self.cluster.clone(),
            ed25519_secret: Zeroizing::new(hex::encode(self.signing.to_bytes())),
            nats_seed: self.nats_seed.clone(),
        };
        Zeroizing::new(serde_json::to_string_pretty(&file).expect("coordinator key serializes"))
    }

    /// Parses a coordinator key file.
    pub fn from_json(text: &str) -> Result<Self, IdentityError> {
        let file: CoordinatorFile = serde_json::from_str(text)?;
        if !valid_coordinator_name(&file.name) {
            return Err(IdentityError::BadCoordinatorName(file.name));
        }
        let ed = decode32(&file.ed25519_secret, "ed25519_secret")?;
        Ok(CoordinatorKey {
            name: file.name,
            cluster: file.cluster,
            signing: SigningKey::from_bytes(&ed),
            nats_seed: file.nats_seed,
        })
    }
}

impl fmt::Debug for CoordinatorKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CoordinatorKey")
            .field("name", &self.name)
            .field("cluster", &self.cluster)
            .field(
                "ed25519",
                &hex::encode(self.signing.verifying_key().as_bytes()),
            )
            .finish_non_exhaustive()
    }
}

#[derive(Serialize, Deserialize)]
struct CoordinatorFile {
    name: String,
    cluster: ClusterId,
    ed25519_secret: Zeroizing<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    nats_seed: Option<Zeroizing<String>>,
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

    #[test]
    fn coordinator_key_file_round_trip_and_debug_hides_secrets() {
        let cluster = ClusterId::new("c1").unwrap();
        let seed = "SUAEXAMPLEONLYNOTAREALSEED".to_owned();
        let key = CoordinatorKey::generate("coord-1", cluster.clone(), Some(seed.clone())).unwrap();
        let json = key.to_json();
        let back = CoordinatorKey::from_json(&json).unwrap();
        assert_eq!(back.name(), "coord-1");
        assert_eq!(back.cluster(), &cluster);
        assert_eq!(back.nats_seed(), Some(seed.as_str()));
        assert_eq!(back.verifying_key(), key.verifying_key());
        assert_eq!(
            back.public(Some("UX".into())),
            key.public(Some("UX".into()))
        );
        let entry = key.public(None);
        assert_eq!(entry.name, "coord-1");
        assert_eq!(entry.verifying_key().unwrap(), key.verifying_key());

        // The reloaded key signs what the roster entry verifies.
        let sig = back.sign(b"session start");
        entry
            .verifying_key()
            .unwrap()
            .verify_strict(b"session start", &sig)
            .unwrap();

        // Without a NATS seed, the file has none either.
        let plain = CoordinatorKey::generate("c", cluster.clone(), None).unwrap();
        assert!(!plain.to_json().contains("nats_seed"));
        assert_eq!(
            CoordinatorKey::from_json(&plain.to_json())
                .unwrap()
                .nats_seed(),
            None
        );

        let secret_hex = hex::encode(key.signing.to_bytes());
        let debug = format!("{key:?}");
        assert!(!debug.contains(&secret_hex), "{debug}");
        assert!(!debug.contains(&seed), "{debug}");
        assert!(debug.contains("coord-1"), "{debug}");

        let broken = json.replace(&secret_hex, "zz");
        assert!(matches!(
            CoordinatorKey::from_json(&broken),
            Err(IdentityError::BadKey("ed25519_secret"))
        ));
        let renamed = json.replace("\"coord-1\"", "\"Coord.1\"");
        assert!(matches!(
            CoordinatorKey::from_json(&renamed),
            Err(IdentityError::BadCoordinatorName(n)) if n == "Coord.1"
        ));
        // A party identity file is not a coordinator key file.
        let party = PartyIdentity::generate(PartyId(1), cluster.clone(), None);
        assert!(matches!(
            CoordinatorKey::from_json(&party.to_json()),
            Err(IdentityError::Format(_))
        ));
    }

    #[test]
    fn coordinator_names_are_checked() {
        let cluster = ClusterId::new("c1").unwrap();
        for bad in ["", "Main", "a.b", "a*", "a>", "a b", &"x".repeat(33)] {
            assert!(
                matches!(
                    CoordinatorKey::generate(bad, cluster.clone(), None),
                    Err(IdentityError::BadCoordinatorName(ref n)) if n == bad
                ),
                "{bad:?} accepted"
            );
        }
        for good in ["a", "coord-1", &"x".repeat(32)] {
            assert_eq!(
                CoordinatorKey::generate(good, cluster.clone(), None)
                    .unwrap()
                    .name(),
                good
            );
        }
    }
}
