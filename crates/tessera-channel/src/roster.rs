//! The roster: which parties exist and which keys speak for them.
//!
//! A roster is signed by a quorum of admins and pinned by its hash in every node's
//! configuration. A frame from a party or key that is not in the pinned roster is refused.
//!
//! The roster also lists the **coordinator keys**: nodes accept a control message (a protocol
//! session start) only when one of these keys signed it.

use std::collections::BTreeSet;
use std::fmt;

use ed25519_dalek::{Signature, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tessera_wire::{ClusterId, PartyId};

use crate::identity::{AdminKey, PublicIdentity};

const ROSTER_HASH_LABEL: &[u8] = b"tessera/roster/v1";

/// Why a roster was refused.
#[derive(Debug, thiserror::Error)]
pub enum RosterError {
    /// The file is not valid JSON of the expected shape.
    #[error("roster file is not valid: {0}")]
    Format(#[from] serde_json::Error),
    /// A key field is not valid.
    #[error("roster entry {party}: {field} is not a valid key")]
    BadKey {
        /// The entry.
        party: PartyId,
        /// The field.
        field: &'static str,
    },
    /// A party appears twice.
    #[error("party {0} appears more than once in the roster")]
    DuplicateParty(PartyId),
    /// The roster lists fewer than two parties.
    #[error("a roster needs at least two parties")]
    TooFewParties,
    /// A public identity belongs to another cluster.
    #[error("identity of {party} belongs to cluster {found}, not {expected}")]
    WrongCluster {
        /// The party.
        party: PartyId,
        /// Its cluster.
        found: ClusterId,
        /// The roster's cluster.
        expected: ClusterId,
    },
    /// Fewer valid admin signatures than the quorum requires.
    #[error("roster carries {valid} valid signatures from the given admins; {quorum} required")]
    QuorumNotMet {
        /// Valid signatures by distinct listed admins.
        valid: usize,
        /// Required.
        quorum: usize,
    },
    /// The roster's hash is not the pinned one.
    #[error("roster hash {actual} does not match the pinned hash {pinned}")]
    HashMismatch {
        /// Hash of the roster presented.
        actual: RosterHash,
        /// Hash in the configuration.
        pinned: RosterHash,
    },
    /// A pinned hash is not 64 hex digits.
    #[error("roster hash must be 64 hex digits")]
    BadHash,
    /// A coordinator name is not 1 to 32 characters of `a-z`, `0-9` and `-`.
    #[error("coordinator name {0:?} is not valid: use 1 to 32 characters from a-z, 0-9 and '-'")]
    BadCoordinatorName(String),
    /// A coordinator appears twice.
    #[error("coordinator {0} appears more than once in the roster")]
    DuplicateCoordinator(String),
    /// A coordinator's key is not valid.
    #[error("roster coordinator {name}: ed25519 is not a valid key")]
    BadCoordinatorKey {
        /// The coordinator.
        name: String,
    },
}

/// One party in the roster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RosterEntry {
    /// The party.
    pub party: PartyId,
    /// Ed25519 verifying key, hex.
    pub ed25519: String,
    /// X25519 static public key, hex.
    pub x25519: String,
    /// NATS NKey user public key, if the party uses a broker.
    #[serde(default)]
    pub nats_user: Option<String>,
    /// Optional network address (for direct transports).
    #[serde(default)]
    pub address: Option<String>,
}

impl RosterEntry {
    /// The Ed25519 verifying key.
    pub fn verifying_key(&self) -> Result<VerifyingKey, RosterError> {
        let bad = || RosterError::BadKey {
            party: self.party,
            field: "ed25519",
        };
        let bytes = decode32(&self.ed25519).ok_or_else(bad)?;
        VerifyingKey::from_bytes(&bytes).map_err(|_| bad())
    }

    /// The X25519 static public key.
    pub fn static_key(&self) -> Result<[u8; 32], RosterError> {
        decode32(&self.x25519).ok_or(RosterError::BadKey {
            party: self.party,
            field: "x25519",
        })
    }
}

/// A coordinator key in the roster: nodes accept control messages (protocol session starts)
/// only when signed by one of these keys.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoordinatorEntry {
    /// The coordinator's name: 1 to 32 characters from `a-z`, `0-9` and `-`.
    pub name: String,
    /// Ed25519 verifying key, hex.
    pub ed25519: String,
    /// NATS NKey user public key, if the coordinator uses a broker.
    #[serde(default)]
    pub nats_user: Option<String>,
}

impl CoordinatorEntry {
    /// The Ed25519 verifying key.
    pub fn verifying_key(&self) -> Result<VerifyingKey, RosterError> {
        let bad = || RosterError::BadCoordinatorKey {
            name: self.name.clone(),
        };
        let bytes = decode32(&self.ed25519).ok_or_else(bad)?;
        VerifyingKey::from_bytes(&bytes).map_err(|_| bad())
    }
}

/// Whether `name` is a valid coordinator name: 1 to 32 characters from `a-z`, `0-9` and `-`
/// (so it is one NATS subject token and one path component).
pub(crate) fn valid_coordinator_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn decode32(text: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(text, &mut out).ok()?;
    Some(out)
}

/// The list of parties of one cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Roster {
    /// The cluster.
    pub cluster: ClusterId,
    /// Increases with every change, so an old roster cannot be replayed as new.
    pub version: u64,
    /// Parties, sorted by id.
    pub parties: Vec<RosterEntry>,
    /// Coordinator keys, sorted by name. Absent in rosters written before coordinators existed.
    #[serde(default)]
    pub coordinators: Vec<CoordinatorEntry>,
}

/// SHA-256 of a roster's canonical encoding.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct RosterHash(pub [u8; 32]);

impl RosterHash {
    /// Parses 64 hex digits.
    pub fn from_hex(text: &str) -> Result<Self, RosterError> {
        decode32(text.trim())
            .map(RosterHash)
            .ok_or(RosterError::BadHash)
    }

    /// Constant-time comparison.
    pub fn matches(&self, other: &RosterHash) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl fmt::Display for RosterHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for RosterHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RosterHash({self})")
    }
}

impl Roster {
    /// Builds a roster from the parties' public identities, checking each key. It lists no
    /// coordinators; add them with [`with_coordinators`](Self::with_coordinators).
    pub fn build(
        cluster: ClusterId,
        version: u64,
        identities: &[PublicIdentity],
    ) -> Result<Self, RosterError> {
        let mut parties = Vec::with_capacity(identities.len());
        for id in identities {
            if id.cluster != cluster {
                return Err(RosterError::WrongCluster {
                    party: id.party,
                    found: id.cluster.clone(),
                    expected: cluster,
                });
            }
            parties.push(RosterEntry {
                party: id.party,
                ed25519: id.ed25519.to_lowercase(),
                x25519: id.x25519.to_lowercase(),
                nats_user: id.nats_user.clone(),
                address: None,
            });
        }
        parties.sort_by_key(|e| e.party);
        let roster = Roster {
            cluster,
            version,
            parties,
            coordinators: Vec::new(),
        };
        roster.validate()?;
        Ok(roster)
    }

    /// Replaces the roster's coordinator keys with `coordinators` (sorted by name), checking
    /// names and keys.
    pub fn with_coordinators(
        mut self,
        mut coordinators: Vec<CoordinatorEntry>,
    ) -> Result<Roster, RosterError> {
        for c in &mut coordinators {
            c.ed25519 = c.ed25519.to_lowercase();
        }
        coordinators.sort_by(|a, b| a.name.cmp(&b.name));
        self.coordinators = coordinators;
        self.validate()?;
        Ok(self)
    }

    /// Checks that party ids are unique, coordinator names valid and unique, and every key
    /// parses.
    pub fn validate(&self) -> Result<(), RosterError> {
        if self.parties.len() < 2 {
            return Err(RosterError::TooFewParties);
        }
        let mut seen = BTreeSet::new();
        for entry in &self.parties {
            if !seen.insert(entry.party) {
                return Err(RosterError::DuplicateParty(entry.party));
            }
            entry.verifying_key()?;
            entry.static_key()?;
        }
        let mut names = BTreeSet::new();
        for c in &self.coordinators {
            if !valid_coordinator_name(&c.name) {
                return Err(RosterError::BadCoordinatorName(c.name.clone()));
            }
            if !names.insert(c.name.as_str()) {
                return Err(RosterError::DuplicateCoordinator(c.name.clone()));
            }
            c.verifying_key()?;
        }
        Ok(())
    }

    /// The roster's hash: SHA-256 over a domain label and the canonical encoding.
    pub fn hash(&self) -> RosterHash {
        let mut h = Sha256::new();
        h.update(ROSTER_HASH_LABEL);
        h.update(tessera_wire::encode(self));
        RosterHash(h.finalize().into())
    }

    /// The entry of one party.
    pub fn entry(&self, party: PartyId) -> Option<&RosterEntry> {
        self.parties.iter().find(|e| e.party == party)
    }

    /// The coordinator key named `name`.
    pub fn coordinator(&self, name: &str) -> Option<&CoordinatorEntry> {
        self.coordinators.iter().find(|c| c.name == name)
    }

    /// All party ids, ascending.
    pub fn party_ids(&self) -> impl Iterator<Item = PartyId> + '_ {
        self.parties.iter().map(|e| e.party)
    }
}

/// An admin's signature over a roster hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RosterSignature {
    /// The admin's Ed25519 verifying key, hex.
    pub admin: String,
    /// Signature over the roster hash, hex.
    pub signature: String,
}

/// A roster with its admin signatures: the roster file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedRoster {
    /// The roster.
    pub roster: Roster,
    /// Admin signatures over [`Roster::hash`].
    pub signatures: Vec<RosterSignature>,
}

impl SignedRoster {
    /// An unsigned roster, ready for admins to sign.
    pub fn new(roster: Roster) -> Self {
        SignedRoster {
            roster,
            signatures: Vec::new(),
        }
    }

    /// Adds (or replaces) one admin's signature.
    pub fn sign(&mut self, admin: &AdminKey) {
        let admin_hex = hex::encode(admin.verifying_key().as_bytes());
        let signature = hex::encode(admin.sign(&self.roster.hash().0));
        self.signatures.retain(|s| s.admin != admin_hex);
        self.signatures.push(RosterSignature {
            admin: admin_hex,
            signature,
        });
    }

    /// Verifies structure and that at least `quorum` distinct admins from `admins` signed.
    /// Returns the roster's hash.
    pub fn verify(
        &self,
        admins: &[VerifyingKey],
        quorum: usize,
    ) -> Result<RosterHash, RosterError> {
        self.roster.validate()?;
        let hash = self.roster.hash();
        let mut signers = BTreeSet::new();
        for sig in &self.signatures {
            let Some(admin_bytes) = decode32(&sig.admin) else {
                continue;
            };
            let Some(admin) = admins.iter().find(|a| a.as_bytes() == &admin_bytes) else {
                continue;
            };
            let mut sig_bytes = [0u8; 64];
            if hex::decode_to_slice(&sig.signature, &mut sig_bytes).is_err() {
                continue;
            }
            if admin
                .verify_strict(&hash.0, &Signature::from_bytes(&sig_bytes))
                .is_ok()
            {
                signers.insert(admin_bytes);
            }
        }
        if signers.len() < quorum.max(1) {
            return Err(RosterError::QuorumNotMet {
                valid: signers.len(),
                quorum: quorum.max(1),
            });
        }
        Ok(hash)
    }

    /// Verifies as [`verify`](Self::verify) and also that the hash equals the pinned one.
    pub fn verify_pinned(
        &self,
        admins: &[VerifyingKey],
        quorum: usize,
        pinned: &RosterHash,
    ) -> Result<RosterHash, RosterError> {
        let actual = self.verify(admins, quorum)?;
        if !actual.matches(pinned) {
            return Err(RosterError::HashMismatch {
                actual,
                pinned: *pinned,
            });
        }
        Ok(actual)
    }

    /// Parses a roster file.
    pub fn from_json(text: &str) -> Result<Self, RosterError> {
        Ok(serde_json::from_str(text)?)
    }

    /// Serializes to the roster file format.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("roster serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{CoordinatorKey, PartyIdentity};

    fn identities(cluster: &ClusterId, n: u16) -> Vec<PublicIdentity> {
        (1..=n)
            .map(|i| PartyIdentity::generate(PartyId(i), cluster.clone(), None).public(None))
            .collect()
    }

    #[test]
    fn quorum_and_pinning() {
        let c = ClusterId::new("c1").unwrap();
        let roster = Roster::build(c.clone(), 1, &identities(&c, 3)).unwrap();
        let (a1, a2, a3) = (
            AdminKey::generate(),
            AdminKey::generate(),
            AdminKey::generate(),
        );
        let admins = [a1.verifying_key(), a2.verifying_key(), a3.verifying_key()];
        let mut signed = SignedRoster::new(roster);
        signed.sign(&a1);
        assert!(matches!(
            signed.verify(&admins, 2),
            Err(RosterError::QuorumNotMet {
                valid: 1,
                quorum: 2
            })
        ));
        signed.sign(&a1); // re-signing does not count twice
        assert!(signed.verify(&admins, 2).is_err());
        signed.sign(&a2);
        let hash = signed.verify(&admins, 2).unwrap();
        assert!(signed.verify_pinned(&admins, 2, &hash).is_ok());

        let reparsed = SignedRoster::from_json(&signed.to_json()).unwrap();
        assert_eq!(reparsed.verify(&admins, 2).unwrap(), hash);

        // Any change to the roster invalidates the signatures.
        let mut tampered = signed.clone();
        tampered.roster.parties[0].nats_user = Some("UEVIL".into());
        assert!(matches!(
            tampered.verify(&admins, 1),
            Err(RosterError::QuorumNotMet { valid: 0, .. })
        ));
        let other = RosterHash([0; 32]);
        assert!(matches!(
            signed.verify_pinned(&admins, 2, &other),
            Err(RosterError::HashMismatch { .. })
        ));
        // An unknown admin's signature does not count.
        let stranger = AdminKey::generate();
        let mut by_stranger = SignedRoster::new(signed.roster.clone());
        by_stranger.sign(&stranger);
        assert!(by_stranger.verify(&admins, 1).is_err());
    }

    #[test]
    fn structural_refusals() {
        let c = ClusterId::new("c1").unwrap();
        let mut ids = identities(&c, 2);
        ids.push(ids[0].clone());
        assert!(matches!(
            Roster::build(c.clone(), 1, &ids),
            Err(RosterError::DuplicateParty(PartyId(1)))
        ));
        let other = ClusterId::new("c2").unwrap();
        assert!(matches!(
            Roster::build(c.clone(), 1, &identities(&other, 2)),
            Err(RosterError::WrongCluster { .. })
        ));
        let mut bad = identities(&c, 2);
        bad[1].x25519 = "00".into();
        assert!(matches!(
            Roster::build(c, 1, &bad),
            Err(RosterError::BadKey {
                field: "x25519",
                ..
            })
        ));
    }

    fn coordinator(name: &str) -> CoordinatorEntry {
        let c = ClusterId::new("c1").unwrap();
        CoordinatorKey::generate(name, c, None)
            .unwrap()
            .public(Some(format!("U{name}")))
    }

    #[test]
    fn coordinators_are_sorted_found_and_bound_into_the_hash() {
        let c = ClusterId::new("c1").unwrap();
        let plain = Roster::build(c.clone(), 1, &identities(&c, 3)).unwrap();
        assert!(plain.coordinators.is_empty());
        let (b, a) = (coordinator("beta"), coordinator("alpha"));
        let with = plain
            .clone()
            .with_coordinators(vec![b.clone(), a.clone()])
            .unwrap();
        assert_eq!(with.coordinators, vec![a.clone(), b.clone()]);
        assert_eq!(with.coordinator("beta"), Some(&b));
        assert_eq!(with.coordinator("gamma"), None);
        assert_eq!(plain.coordinator("alpha"), None);
        assert_ne!(with.hash(), plain.hash());

        // Admin signatures cover the coordinators: adding, swapping or re-pointing one breaks
        // them.
        let admin = AdminKey::generate();
        let mut signed = SignedRoster::new(with.clone());
        signed.sign(&admin);
        let hash = signed.verify(&[admin.verifying_key()], 1).unwrap();
        assert_eq!(hash, with.hash());
        let mut tampered = signed.clone();
        tampered.roster.coordinators[0].ed25519 = coordinator("alpha").ed25519;
        assert!(matches!(
            tampered.verify(&[admin.verifying_key()], 1),
            Err(RosterError::QuorumNotMet { valid: 0, .. })
        ));
        let mut dropped = signed.clone();
        dropped.roster.coordinators.pop();
        assert!(dropped.verify(&[admin.verifying_key()], 1).is_err());
        let mut renatsed = signed.clone();
        renatsed.roster.coordinators[1].nats_user = None;
        assert!(renatsed.verify(&[admin.verifying_key()], 1).is_err());

        // Upper-case hex is normalised, so the same key always hashes the same.
        let mut upper = a.clone();
        upper.ed25519 = upper.ed25519.to_uppercase();
        let normalised = plain.clone().with_coordinators(vec![upper]).unwrap();
        assert_eq!(
            normalised.hash(),
            plain.clone().with_coordinators(vec![a]).unwrap().hash()
        );

        // Round trip through the roster file.
        let back = SignedRoster::from_json(&signed.to_json()).unwrap();
        assert_eq!(back.roster, with);
        assert_eq!(back.verify(&[admin.verifying_key()], 1).unwrap(), hash);
    }

    #[test]
    fn bad_coordinators_are_refused() {
        let c = ClusterId::new("c1").unwrap();
        let roster = Roster::build(c.clone(), 1, &identities(&c, 2)).unwrap();
        let dup = roster
            .clone()
            .with_coordinators(vec![coordinator("main"), coordinator("main")]);
        assert!(
            matches!(dup, Err(RosterError::DuplicateCoordinator(ref n)) if n == "main"),
            "{dup:?}"
        );
        for name in ["", "Main", "a.b", "a>", "a*", "ä", &"x".repeat(33)] {
            let mut entry = coordinator("ok");
            entry.name = name.to_owned();
            let got = roster.clone().with_coordinators(vec![entry]);
            assert!(
                matches!(got, Err(RosterError::BadCoordinatorName(ref n)) if n == name),
                "{name:?}: {got:?}"
            );
        }
        let longest = "x".repeat(32);
        let mut entry = coordinator("ok");
        entry.name = longest.clone();
        assert!(roster.clone().with_coordinators(vec![entry]).is_ok());
        for key in ["00", "zz".repeat(32).as_str(), &"ab".repeat(33)] {
            let mut entry = coordinator("main");
            entry.ed25519 = key.to_owned();
            let got = roster.clone().with_coordinators(vec![entry]);
            assert!(
                matches!(got, Err(RosterError::BadCoordinatorKey { ref name }) if name == "main"),
                "{key:?}: {got:?}"
            );
        }
        // 32 bytes that are not a point on the curve.
        let mut off_curve = coordinator("main");
        off_curve.ed25519 = format!("02{}", "00".repeat(31));
        assert!(VerifyingKey::from_bytes(&decode32(&off_curve.ed25519).unwrap()).is_err());
        assert!(matches!(
            roster.clone().with_coordinators(vec![off_curve]),
            Err(RosterError::BadCoordinatorKey { .. })
        ));
        // A roster file edited to carry a bad coordinator fails verification.
        let admin = AdminKey::generate();
        let mut signed = SignedRoster::new(roster);
        signed.roster.coordinators.push(CoordinatorEntry {
            name: "Bad Name".into(),
            ..coordinator("x")
        });
        signed.sign(&admin);
        assert!(matches!(
            signed.verify(&[admin.verifying_key()], 1),
            Err(RosterError::BadCoordinatorName(_))
        ));
    }

    #[test]
    fn a_roster_file_without_coordinators_still_parses() {
        let c = ClusterId::new("c1").unwrap();
        let roster = Roster::build(c.clone(), 1, &identities(&c, 2)).unwrap();
        let admin = AdminKey::generate();
        let mut signed = SignedRoster::new(roster.clone());
        signed.sign(&admin);
        let mut value: serde_json::Value = serde_json::from_str(&signed.to_json()).unwrap();
        let removed = value["roster"]
            .as_object_mut()
            .unwrap()
            .remove("coordinators");
        assert_eq!(removed, Some(serde_json::json!([])));
        let old = SignedRoster::from_json(&value.to_string()).unwrap();
        assert!(old.roster.coordinators.is_empty());
        assert_eq!(old.roster, roster);
        assert_eq!(
            old.verify(&[admin.verifying_key()], 1).unwrap(),
            roster.hash()
        );
    }
}
