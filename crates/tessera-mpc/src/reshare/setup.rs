//! What a reshare or refresh session is about, as the coordinator's signed session start
//! carries it: the key (its kind and public info on its curve), who deals, who receives, the
//! new threshold and the approval behind it. Every participant checks it and turns it into the
//! core's [`Plan`].

use cggmp24::generic_ec::Curve as EcCurve;
use cggmp24::key_share::DirtyKeyInfo;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tessera_wire::{KeyId, KeyKind, PartyId, Protocol, SessionId};

use super::core::{self, Kind, Plan};
use crate::delivery::SessionSpec;
use crate::protocols::Curve;
use crate::MpcError;

/// The edwards25519 curve of Ed25519 keys.
pub type Edwards = givre::generic_ec::curves::Ed25519;

/// A key's public info (public key, public shares, threshold and evaluation points, chain
/// code) on the key's curve. Carried as JSON text: the library's serde form omits absent
/// fields, which a binary codec cannot decode.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum SetupKey {
    /// A secp256k1 key: ECDSA or Taproot.
    Secp256k1(#[serde(with = "key_info_text")] DirtyKeyInfo<Curve>),
    /// An Ed25519 key.
    Ed25519(#[serde(with = "key_info_text")] DirtyKeyInfo<Edwards>),
}

impl SetupKey {
    /// Parses the JSON form a node describes its key with (`Output::KeyInfo`), for a key of
    /// `kind`.
    pub fn from_json(kind: KeyKind, text: &str) -> Result<Self, serde_json::Error> {
        Ok(match kind {
            KeyKind::Ecdsa | KeyKind::Taproot => SetupKey::Secp256k1(serde_json::from_str(text)?),
            KeyKind::Ed25519 => SetupKey::Ed25519(serde_json::from_str(text)?),
        })
    }

    /// Whether this is the curve keys of `kind` live on.
    pub fn fits(&self, kind: KeyKind) -> bool {
        matches!(
            (self, kind),
            (SetupKey::Secp256k1(_), KeyKind::Ecdsa | KeyKind::Taproot)
                | (SetupKey::Ed25519(_), KeyKind::Ed25519)
        )
    }

    /// The curve's name, for errors.
    pub fn curve_name(&self) -> &'static str {
        match self {
            SetupKey::Secp256k1(_) => "secp256k1",
            SetupKey::Ed25519(_) => "edwards25519",
        }
    }

    /// The (master, untweaked) public key, compressed: 33 bytes SEC1 on secp256k1, 32 bytes
    /// on edwards25519, as key generation reports it.
    pub fn public_key(&self) -> Vec<u8> {
        match self {
            SetupKey::Secp256k1(k) => k.shared_public_key.to_bytes(true).to_vec(),
            SetupKey::Ed25519(k) => k.shared_public_key.to_bytes(true).to_vec(),
        }
    }

    /// How many shares the key has.
    pub fn shares(&self) -> usize {
        match self {
            SetupKey::Secp256k1(k) => k.public_shares.len(),
            SetupKey::Ed25519(k) => k.public_shares.len(),
        }
    }

    /// The key's threshold (all shares for an `n`-of-`n` key).
    pub fn threshold(&self) -> u16 {
        fn of<E: EcCurve>(k: &DirtyKeyInfo<E>) -> u16 {
            k.vss_setup
                .as_ref()
                .map_or(k.public_shares.len() as u16, |v| v.min_signers)
        }
        match self {
            SetupKey::Secp256k1(k) => of(k),
            SetupKey::Ed25519(k) => of(k),
        }
    }
}

impl PartialEq for SetupKey {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (SetupKey::Secp256k1(a), SetupKey::Secp256k1(b)) => core::same_key(a, b),
            (SetupKey::Ed25519(a), SetupKey::Ed25519(b)) => core::same_key(a, b),
            _ => false,
        }
    }
}

impl Eq for SetupKey {}

impl From<DirtyKeyInfo<Curve>> for SetupKey {
    fn from(key: DirtyKeyInfo<Curve>) -> Self {
        SetupKey::Secp256k1(key)
    }
}

impl From<DirtyKeyInfo<Edwards>> for SetupKey {
    fn from(key: DirtyKeyInfo<Edwards>) -> Self {
        SetupKey::Ed25519(key)
    }
}

/// A curve keys can be reshared on: secp256k1 (ECDSA, Taproot) and edwards25519 (Ed25519).
pub trait ReshareCurve: EcCurve {
    /// The key info, if `key` is on this curve.
    fn key_of(key: &SetupKey) -> Option<&DirtyKeyInfo<Self>>;
}

impl ReshareCurve for Curve {
    fn key_of(key: &SetupKey) -> Option<&DirtyKeyInfo<Self>> {
        match key {
            SetupKey::Secp256k1(k) => Some(k),
            SetupKey::Ed25519(_) => None,
        }
    }
}

impl ReshareCurve for Edwards {
    fn key_of(key: &SetupKey) -> Option<&DirtyKeyInfo<Self>> {
        match key {
            SetupKey::Ed25519(k) => Some(k),
            SetupKey::Secp256k1(_) => None,
        }
    }
}

mod key_info_text {
    //! A key's public info as JSON text inside any serde format.
    use cggmp24::generic_ec::Curve;
    use cggmp24::key_share::DirtyKeyInfo;
    use serde::{de::Error as _, ser::Error as _, Deserialize, Deserializer, Serializer};

    pub fn serialize<E: Curve, S: Serializer>(
        key: &DirtyKeyInfo<E>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        let text = serde_json::to_string(key).map_err(S::Error::custom)?;
        s.serialize_str(&text)
    }

    pub fn deserialize<'de, E: Curve, D: Deserializer<'de>>(
        d: D,
    ) -> Result<DirtyKeyInfo<E>, D::Error> {
        let text = String::deserialize(d)?;
        serde_json::from_str(&text).map_err(D::Error::custom)
    }
}

/// A reshare or refresh session as the coordinator's signed session start describes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReshareSetup {
    /// Reshare or refresh.
    pub kind: Kind,
    /// The key's id.
    pub key_id: KeyId,
    /// The key's kind (ECDSA, Taproot, Ed25519): bound into the session hash, so a session
    /// for a key of one kind is never taken for one of another on the same curve.
    pub key_kind: KeyKind,
    /// The key's epoch the session starts from (its dealers' shares are of this epoch); the
    /// new shares are of the next one.
    pub epoch: u64,
    /// The key's public info before the session (from the key share; a new party gets it from
    /// the session start), on the curve of `key_kind`.
    pub key: SetupKey,
    /// The committee holding the key, in key order (position `k` holds share `k`).
    pub old_committee: Vec<PartyId>,
    /// Who deals, in dealing order: exactly the key's threshold of old holders for a reshare,
    /// the whole committee for a refresh.
    pub dealers: Vec<PartyId>,
    /// The committee receiving the key, in its new key order; the old one for a refresh.
    pub new_committee: Vec<PartyId>,
    /// The new threshold; the old one for a refresh.
    pub new_threshold: u16,
    /// The digest of the admins' approval of this change (`KeyChange::change_digest`), or 32
    /// zero bytes for a refresh without one. Bound into every hash of the session.
    pub authorisation: [u8; 32],
}

/// A reshare's participants, in protocol order: the `dealers`, then the parties of the
/// `new_committee` that do not deal.
pub fn participants(dealers: &[PartyId], new_committee: &[PartyId]) -> Vec<PartyId> {
    let mut parties = dealers.to_vec();
    parties.extend(new_committee.iter().filter(|p| !dealers.contains(p)));
    parties
}

fn party_numbers(parties: &[PartyId]) -> Vec<u16> {
    parties.iter().map(|p| p.0).collect()
}

impl ReshareSetup {
    /// The session's participants, in protocol order (see [`participants`]).
    pub fn participants(&self) -> Vec<PartyId> {
        participants(&self.dealers, &self.new_committee)
    }

    /// The key's public info on curve `E`; refused if the key is on another curve or its
    /// curve is not the one of its kind.
    pub fn key_info<E: ReshareCurve>(&self) -> Result<&DirtyKeyInfo<E>, MpcError> {
        if !self.key.fits(self.key_kind) {
            return Err(MpcError::InvalidSession(format!(
                "the setup names key kind {} but carries a key on {}",
                self.key_kind,
                self.key.curve_name()
            )));
        }
        E::key_of(&self.key).ok_or_else(|| {
            MpcError::InvalidSession(format!(
                "the setup's key is on {}, not on the curve this party runs the session on",
                self.key.curve_name()
            ))
        })
    }

    /// Checks the setup and turns it into the core's plan, on curve `E`.
    pub fn plan<E: ReshareCurve>(&self) -> Result<Plan<E>, MpcError> {
        let key = self.key_info::<E>()?;
        let invalid = |m: String| MpcError::InvalidSession(m);
        let distinct =
            |list: &[PartyId]| list.iter().enumerate().all(|(a, p)| !list[..a].contains(p));
        if !distinct(&self.old_committee) || !distinct(&self.new_committee) {
            return Err(invalid("a committee lists a party twice".into()));
        }
        if self.old_committee.len() != key.public_shares.len() {
            return Err(invalid(format!(
                "the old committee has {} parties but the key {} shares",
                self.old_committee.len(),
                key.public_shares.len()
            )));
        }
        let positions = self
            .dealers
            .iter()
            .map(|d| {
                self.old_committee
                    .iter()
                    .position(|p| p == d)
                    .map(|k| k as u16)
                    .ok_or_else(|| invalid(format!("dealer {d} holds no share of the key")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let n = u16::try_from(self.new_committee.len())
            .map_err(|_| invalid("the new committee is too large".into()))?;
        let plan = match self.kind {
            Kind::Reshare => Plan::reshare(key, positions, n, self.new_threshold),
            Kind::Refresh => {
                if self.dealers != self.old_committee || self.new_committee != self.old_committee {
                    return Err(invalid(
                        "a refresh is dealt by and to the whole committee, in key order".into(),
                    ));
                }
                Plan::refresh(key)
            }
        };
        let plan = plan.map_err(|e| invalid(e.to_string()))?;
        if plan.new_threshold() != self.new_threshold {
            return Err(invalid(format!(
                "a refresh keeps the threshold {}",
                plan.new_threshold()
            )));
        }
        Ok(plan)
    }

    /// The session hash (`sid` of the spec): `spec`'s execution id bound to every input of
    /// this setup (the key's kind included) and its authorisation.
    pub fn session_hash<E: EcCurve>(&self, spec: &SessionSpec, plan: &Plan<E>) -> Vec<u8> {
        core::session_hash(
            &spec.execution_id(),
            self.key_id.as_bytes(),
            self.key_kind.as_str(),
            self.epoch,
            plan,
            &party_numbers(&self.old_committee),
            &party_numbers(&self.new_committee),
            &self.authorisation,
        )
    }

    /// The auxiliary-info session of the receivers of reshare session `session` (ECDSA keys).
    pub fn aux_session(&self, session: SessionId) -> SessionSpec {
        let digest = udigest::hash::<Sha256>(&AuxSession {
            session: session.as_bytes(),
        });
        let mut id = [0u8; 16];
        id.copy_from_slice(&digest[..16]);
        SessionSpec {
            session: SessionId(id),
            protocol: Protocol::AUX_INFO,
            parties: self.new_committee.clone(),
        }
    }
}

#[derive(udigest::Digestable)]
#[udigest(tag = "tessera/reshare/v3/aux-session")]
struct AuxSession<'a> {
    #[udigest(as_bytes)]
    session: &'a [u8],
}
