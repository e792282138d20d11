//! The sans-IO core of resharing and refresh (`docs/protocols/reshare.md`): dealing, every
//! check a participant makes, and building the new key share. Pure functions over `generic-ec`
//! types, generic over the curve; the runner ([`super::run`]) only carries their inputs and
//! outputs between parties.

use cggmp24::generic_ec::{Curve, NonZero, Point, Scalar, SecretScalar};
use cggmp24::key_share::{DirtyIncompleteKeyShare, DirtyKeyInfo, Validate, VssSetup};
use generic_ec_zkp::polynomial::lagrange_coefficient_at_zero;
use generic_ec_zkp::schnorr_pok;
use rand_core::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// Evaluation points, one per committee position.
type Points<E> = Vec<NonZero<Scalar<E>>>;

/// A 32-byte hash: commitments, echoes, confirmations.
pub type Hash = [u8; 32];

/// Resharing to a (possibly different) committee, or refreshing the same one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    /// Exactly `t` old holders deal their Lagrange-weighted shares to a new committee.
    Reshare,
    /// Every holder deals a zero-constant polynomial to the same committee.
    Refresh,
}

/// What every participant agrees on before the session: the key's public info, who deals,
/// and the new committee's size, points and threshold. Built only through [`Plan::reshare`]
/// and [`Plan::refresh`], which check it.
#[derive(Clone, Debug)]
pub struct Plan<E: Curve> {
    kind: Kind,
    old: DirtyKeyInfo<E>,
    dealers: Vec<u16>,
    weights: Vec<Scalar<E>>,
    new_points: Vec<NonZero<Scalar<E>>>,
    new_threshold: u16,
}

/// Why a plan cannot be run.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    /// The key info does not validate.
    #[error("the key's public info is not valid: {0}")]
    InvalidKey(String),
    /// Additive (n-of-n) keys have no evaluation points to reshare from.
    #[error("the key is an additive n-of-n key; only threshold (VSS) keys can be reshared")]
    AdditiveKey,
    /// The dealer set is not exactly `t` distinct holders of the key.
    #[error("dealers must be exactly {threshold} distinct holders of the key (positions below {holders}), got {dealers:?}")]
    Dealers {
        /// The key's threshold.
        threshold: u16,
        /// The key's number of holders.
        holders: u16,
        /// The positions given.
        dealers: Vec<u16>,
    },
    /// The new threshold does not fit the new committee.
    #[error(
        "the new threshold {threshold} must be between 2 and the new committee's size {parties}"
    )]
    Threshold {
        /// Requested threshold.
        threshold: u16,
        /// New committee size.
        parties: u16,
    },
}

/// What a participant found wrong with one dealer's messages.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Fault {
    /// The dealer broadcast no commitment or no reveal.
    #[error("a broadcast it must send is missing")]
    Missing,
    /// The dealer sent this receiver no sub-share.
    #[error("it sent no sub-share")]
    MissingSubShare,
    /// The revealed dealing does not hash to the round-1 commitment.
    #[error("its reveal does not open its commitment")]
    BadOpening,
    /// Wrong number of coefficient commitments or proofs.
    #[error("its dealing has the wrong shape: {0}")]
    BadShape(String),
    /// The constant term is not the dealer's weighted public share (or not zero, in refresh).
    #[error("its constant term is not what it must deal")]
    BadConstantTerm,
    /// A proof of knowledge of a coefficient does not verify.
    #[error("its proof of knowledge of coefficient {0} does not verify")]
    BadProof(u16),
    /// The sub-share does not match the dealer's commitments.
    #[error("the sub-share it sent does not match its commitments")]
    BadSubShare,
}

impl Fault {
    /// Whether the fault is in the dealer's point-to-point sub-share (which only the
    /// complainer received: judged on the evidence it shows), rather than in broadcast data
    /// (which every participant checks itself).
    pub fn in_sub_share(&self) -> bool {
        matches!(self, Fault::MissingSubShare | Fault::BadSubShare)
    }
}

/// Why a participant's output could not be built.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// The caller passed inconsistent inputs (a bug in the runner, not a peer's fault).
    #[error("inconsistent inputs: {0}")]
    Inputs(String),
    /// The dealers' constant terms do not sum to the public key.
    #[error("the dealings do not sum to the key's public key")]
    WrongKey,
    /// The library refused the new key share.
    #[error("the new key share does not validate: {0}")]
    Invalid(String),
}

/// A Schnorr proof that the dealer knows one coefficient.
#[derive(Clone, Serialize, Deserialize, udigest::Digestable)]
#[serde(bound = "")]
#[udigest(bound = "")]
pub struct CoefficientProof<E: Curve> {
    /// The prover's ephemeral commitment.
    pub commit: schnorr_pok::Commit<E>,
    /// The response.
    pub proof: schnorr_pok::Proof<E>,
}

/// A dealer's public contribution (its round-2 reveal).
#[derive(Clone, Serialize, Deserialize, udigest::Digestable)]
#[serde(bound = "")]
#[udigest(bound = "")]
pub struct Dealing<E: Curve> {
    /// `G·a_k` for every coefficient of the dealer's polynomial, constant first.
    pub commitments: Vec<Point<E>>,
    /// Proofs of knowledge of `a_1 .. a_{t'-1}`.
    pub proofs: Vec<CoefficientProof<E>>,
    /// Random salt, so the round-1 commitment hides the dealing.
    #[udigest(as_bytes)]
    pub salt: [u8; 32],
}

/// A dealer's polynomial. Zeroized on drop (each coefficient is a `SecretScalar`, which
/// zeroizes itself).
pub struct DealerSecret<E: Curve> {
    coefficients: Vec<SecretScalar<E>>,
}

mod transcript {
    //! The hashed inputs, each with its own domain tag.
    use super::*;

    #[derive(udigest::Digestable)]
    #[udigest(tag = "tessera/reshare/v3/sid")]
    #[udigest(bound = "")]
    pub struct Sid<'a, E: Curve> {
        #[udigest(as_bytes)]
        pub execution: &'a [u8],
        #[udigest(as_bytes)]
        pub key: &'a [u8],
        pub key_kind: &'a str,
        pub epoch: u64,
        pub refresh: bool,
        pub old_committee: &'a [u16],
        pub dealers: &'a [u16],
        pub new_committee: &'a [u16],
        pub new_threshold: u16,
        pub public_key: &'a Point<E>,
        pub public_shares: Vec<Point<E>>,
        pub threshold: u16,
        pub points: Vec<Scalar<E>>,
        #[udigest(as = Option<udigest::Bytes>)]
        pub chain_code: Option<[u8; 32]>,
        #[udigest(as_bytes)]
        pub authorisation: &'a [u8],
    }

    #[derive(udigest::Digestable)]
    #[udigest(tag = "tessera/reshare/v3/commit")]
    #[udigest(bound = "")]
    pub struct Commit<'a, E: Curve> {
        #[udigest(as_bytes)]
        pub sid: &'a [u8],
        pub dealer: u16,
        pub dealing: &'a Dealing<E>,
    }

    #[derive(udigest::Digestable)]
    #[udigest(tag = "tessera/reshare/v3/pok")]
    #[udigest(bound = "")]
    pub struct Pok<'a, E: Curve> {
        #[udigest(as_bytes)]
        pub sid: &'a [u8],
        pub dealer: u16,
        pub coefficient: u16,
        pub point: &'a Point<E>,
        pub commit: &'a schnorr_pok::Commit<E>,
    }

    #[derive(udigest::Digestable)]
    #[udigest(tag = "tessera/reshare/v3/confirm")]
    #[udigest(bound = "")]
    pub struct Confirm<'a, E: Curve> {
        #[udigest(as_bytes)]
        pub sid: &'a [u8],
        pub public_key: &'a Point<E>,
        pub public_shares: Vec<Point<E>>,
        pub threshold: u16,
        pub points: Vec<Scalar<E>>,
        #[udigest(as = Option<udigest::Bytes>)]
        pub chain_code: Option<[u8; 32]>,
    }
}

fn hash(input: &impl udigest::Digestable) -> Hash {
    udigest::hash::<Sha256>(input).into()
}

/// A share's value as a plain scalar (for arithmetic that ends in a `SecretScalar`).
fn value<E: Curve>(x: &NonZero<SecretScalar<E>>) -> &Scalar<E> {
    x.as_ref()
}

/// The evaluation point of each position: `position + 1`, as the library's key generation
/// uses.
fn default_points<E: Curve>(n: u16) -> Vec<NonZero<Scalar<E>>> {
    (1..=n)
        .map(|x| NonZero::from_scalar(Scalar::from(x)).expect("1..=n is not zero"))
        .collect()
}

/// `Σ_k x^k · C_k`: a commitment polynomial evaluated at `x` (Horner).
fn evaluate_commitments<E: Curve>(commitments: &[Point<E>], x: &Scalar<E>) -> Point<E> {
    commitments
        .iter()
        .rev()
        .fold(Point::zero(), |acc, c| acc * x + c)
}

fn all_distinct<E: Curve>(points: &[NonZero<Scalar<E>>]) -> bool {
    points
        .iter()
        .enumerate()
        .all(|(a, p)| points[..a].iter().all(|q| p != q))
}

impl<E: Curve> Plan<E> {
    /// Resharing: `dealers` (positions in the old committee, exactly `t` of them, in the order
    /// they deal) hand the key to a new committee of `new_parties` with `new_threshold`.
    pub fn reshare(
        old: &DirtyKeyInfo<E>,
        dealers: Vec<u16>,
        new_parties: u16,
        new_threshold: u16,
    ) -> Result<Self, PlanError> {
        let (old_points, old_threshold) = Self::checked_old(old)?;
        let holders = old.public_shares.len() as u16;
        let distinct = dealers
            .iter()
            .enumerate()
            .all(|(a, d)| !dealers[..a].contains(d));
        if dealers.len() != usize::from(old_threshold)
            || !distinct
            || dealers.iter().any(|d| *d >= holders)
        {
            return Err(PlanError::Dealers {
                threshold: old_threshold,
                holders,
                dealers,
            });
        }
        if new_threshold < 2 || new_threshold > new_parties {
            return Err(PlanError::Threshold {
                threshold: new_threshold,
                parties: new_parties,
            });
        }
        let dealer_points: Vec<_> = dealers
            .iter()
            .map(|d| old_points[usize::from(*d)])
            .collect();
        let weights = (0..dealers.len())
            .map(|j| {
                lagrange_coefficient_at_zero(j, &dealer_points)
                    .map(|l| l.into_inner())
                    .ok_or_else(|| PlanError::InvalidKey("evaluation points repeat".into()))
            })
            .collect::<Result<_, _>>()?;
        Ok(Plan {
            kind: Kind::Reshare,
            old: old.clone(),
            dealers,
            weights,
            new_points: default_points(new_parties),
            new_threshold,
        })
    }

    /// Refresh: every holder deals a zero-constant polynomial to the same committee.
    pub fn refresh(old: &DirtyKeyInfo<E>) -> Result<Self, PlanError> {
        let (old_points, old_threshold) = Self::checked_old(old)?;
        let n = old.public_shares.len() as u16;
        Ok(Plan {
            kind: Kind::Refresh,
            old: old.clone(),
            new_points: old_points,
            dealers: (0..n).collect(),
            weights: vec![Scalar::zero(); usize::from(n)],
            new_threshold: old_threshold,
        })
    }

    fn checked_old(old: &DirtyKeyInfo<E>) -> Result<(Points<E>, u16), PlanError> {
        let vss = old.vss_setup.as_ref().ok_or(PlanError::AdditiveKey)?;
        old.clone()
            .validate()
            .map_err(|e| PlanError::InvalidKey(e.to_string()))?;
        if !all_distinct(&vss.I) {
            return Err(PlanError::InvalidKey("evaluation points repeat".into()));
        }
        Ok((vss.I.clone(), vss.min_signers))
    }

    /// Reshare or refresh.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The key's public info before the session.
    pub fn old_key(&self) -> &DirtyKeyInfo<E> {
        &self.old
    }

    /// Dealers, as positions in the old committee, in dealing order.
    pub fn dealers(&self) -> &[u16] {
        &self.dealers
    }

    /// Size of the new committee.
    pub fn new_parties(&self) -> u16 {
        self.new_points.len() as u16
    }

    /// Threshold of the new committee.
    pub fn new_threshold(&self) -> u16 {
        self.new_threshold
    }

    /// What dealer number `d` (in dealing order) must deal: `λ_d · X_d`, or the identity in
    /// refresh.
    fn expected_constant(&self, d: usize) -> Point<E> {
        match self.kind {
            Kind::Reshare => {
                let x = self.old.public_shares[usize::from(self.dealers[d])];
                x.into_inner() * self.weights[d]
            }
            Kind::Refresh => Point::zero(),
        }
    }

    fn new_point(&self, receiver: u16) -> Result<&NonZero<Scalar<E>>, OutputError> {
        self.new_points
            .get(usize::from(receiver))
            .ok_or_else(|| OutputError::Inputs(format!("no receiver at position {receiver}")))
    }
}

/// The round-1 commitment to a dealing.
pub fn commitment<E: Curve>(sid: &[u8], dealer: u16, dealing: &Dealing<E>) -> Hash {
    hash(&transcript::Commit {
        sid,
        dealer,
        dealing,
    })
}

fn pok_challenge<E: Curve>(
    sid: &[u8],
    dealer: u16,
    coefficient: u16,
    point: &Point<E>,
    commit: &schnorr_pok::Commit<E>,
) -> schnorr_pok::Challenge<E> {
    schnorr_pok::Challenge {
        nonce: Scalar::from_hash::<Sha256>(&transcript::Pok {
            sid,
            dealer,
            coefficient,
            point,
            commit,
        }),
    }
}

/// Deals for dealer number `d` of the plan (in dealing order) from its key share: samples the
/// polynomial, commits to its coefficients and proves knowledge of them. Refuses a share that
/// is not that dealer's or not of the plan's key.
pub fn deal<E: Curve, R: RngCore + CryptoRng>(
    rng: &mut R,
    sid: &[u8],
    plan: &Plan<E>,
    d: usize,
    share: &DirtyIncompleteKeyShare<E>,
) -> Result<(DealerSecret<E>, Dealing<E>), OutputError> {
    let position = *plan
        .dealers
        .get(d)
        .ok_or_else(|| OutputError::Inputs(format!("there is no dealer number {d}")))?;
    if share.i != position || !same_key(&share.key_info, &plan.old) {
        return Err(OutputError::Inputs(
            "the key share is not this dealer's share of the plan's key".into(),
        ));
    }
    let mut constant = match plan.kind {
        Kind::Reshare => plan.weights[d] * value(&share.x),
        Kind::Refresh => Scalar::zero(),
    };
    let mut coefficients = vec![SecretScalar::new(&mut constant)];
    coefficients.extend((1..plan.new_threshold).map(|_| SecretScalar::random(rng)));
    let commitments: Vec<Point<E>> = coefficients
        .iter()
        .map(|a| Point::generator() * a)
        .collect();
    let proofs = (1..coefficients.len())
        .map(|k| {
            let (secret, commit) = schnorr_pok::prover_commits_ephemeral_secret(rng);
            let challenge = pok_challenge(sid, position, k as u16, &commitments[k], &commit);
            let proof = schnorr_pok::prove(&secret, &challenge, &coefficients[k]);
            CoefficientProof { commit, proof }
        })
        .collect();
    let mut salt = [0u8; 32];
    rng.fill_bytes(&mut salt);
    Ok((
        DealerSecret { coefficients },
        Dealing {
            commitments,
            proofs,
            salt,
        },
    ))
}

impl<E: Curve> DealerSecret<E> {
    /// The sub-share for the receiver at `receiver` (position in the new committee).
    pub fn sub_share(&self, plan: &Plan<E>, receiver: u16) -> Result<SecretScalar<E>, OutputError> {
        let x = plan.new_point(receiver)?;
        let mut value = self
            .coefficients
            .iter()
            .rev()
            .fold(Scalar::zero(), |acc, a| acc * x + a.as_ref());
        Ok(SecretScalar::new(&mut value))
    }
}

/// Checks dealer number `d`'s broadcast messages: the opening of its commitment, the shape,
/// the constant term, and the proofs of knowledge (checks 1-4 of the spec).
pub fn check_dealing<E: Curve>(
    sid: &[u8],
    plan: &Plan<E>,
    d: usize,
    committed: &Hash,
    dealing: &Dealing<E>,
) -> Result<(), Fault> {
    let position = plan.dealers[d];
    let opened = commitment(sid, position, dealing);
    if !bool::from(subtle::ConstantTimeEq::ct_eq(&opened[..], &committed[..])) {
        return Err(Fault::BadOpening);
    }
    let t = usize::from(plan.new_threshold);
    if dealing.commitments.len() != t || dealing.proofs.len() != t - 1 {
        return Err(Fault::BadShape(format!(
            "{} commitments and {} proofs, expected {t} and {}",
            dealing.commitments.len(),
            dealing.proofs.len(),
            t - 1
        )));
    }
    if dealing.commitments[0] != plan.expected_constant(d) {
        return Err(Fault::BadConstantTerm);
    }
    for (k, p) in dealing.proofs.iter().enumerate() {
        let k = k + 1;
        let point = &dealing.commitments[k];
        let challenge = pok_challenge(sid, position, k as u16, point, &p.commit);
        p.proof
            .verify(&p.commit, &challenge, point)
            .map_err(|_| Fault::BadProof(k as u16))?;
    }
    Ok(())
}

/// Checks a sub-share from a dealing whose broadcast part already passed [`check_dealing`]
/// (check 5: `G·s = Σ_k J^k · F_k`).
pub fn check_sub_share<E: Curve>(
    plan: &Plan<E>,
    dealing: &Dealing<E>,
    receiver: u16,
    sub_share: &SecretScalar<E>,
) -> Result<(), Fault> {
    let x = plan.new_point(receiver).map_err(|_| Fault::BadSubShare)?;
    let expected = evaluate_commitments(&dealing.commitments, x.as_ref());
    if Point::generator() * sub_share == expected {
        Ok(())
    } else {
        Err(Fault::BadSubShare)
    }
}

/// The session hash (`sid`): the session's execution id and every input of the plan, the key
/// id, kind (`ecdsa`, `taproot`, `ed25519`) and epoch, the committees as positions or party
/// numbers, and the authorisation digest (32 zero bytes when there is none). Every other hash
/// of the protocol includes it.
#[allow(clippy::too_many_arguments)]
pub fn session_hash<E: Curve>(
    execution: &[u8],
    key: &[u8],
    key_kind: &str,
    epoch: u64,
    plan: &Plan<E>,
    old_committee: &[u16],
    new_committee: &[u16],
    authorisation: &[u8; 32],
) -> Vec<u8> {
    let old = &plan.old;
    let vss = old.vss_setup.as_ref();
    hash(&transcript::Sid {
        execution,
        key,
        key_kind,
        epoch,
        refresh: plan.kind == Kind::Refresh,
        old_committee,
        dealers: &plan.dealers,
        new_committee,
        new_threshold: plan.new_threshold,
        public_key: &old.shared_public_key,
        public_shares: old.public_shares.iter().map(|p| p.into_inner()).collect(),
        threshold: vss.map_or(0, |v| v.min_signers),
        points: vss.map_or_else(Vec::new, |v| v.I.iter().map(|x| x.into_inner()).collect()),
        chain_code: old.chain_code,
        authorisation,
    })
    .to_vec()
}

/// The new key's public info from the checked dealings (the same at every participant).
pub fn new_key_info<E: Curve>(
    plan: &Plan<E>,
    dealings: &[Dealing<E>],
) -> Result<DirtyKeyInfo<E>, OutputError> {
    if dealings.len() != plan.dealers.len() {
        return Err(OutputError::Inputs(format!(
            "{} dealings for {} dealers",
            dealings.len(),
            plan.dealers.len()
        )));
    }
    if plan.kind == Kind::Reshare {
        let sum: Point<E> = dealings.iter().map(|d| d.commitments[0]).sum();
        if sum != plan.old.shared_public_key.into_inner() {
            return Err(OutputError::WrongKey);
        }
    }
    let public_shares = plan
        .new_points
        .iter()
        .enumerate()
        .map(|(k, x)| {
            let dealt: Point<E> = dealings
                .iter()
                .map(|d| evaluate_commitments(&d.commitments, x.as_ref()))
                .sum();
            let share = match plan.kind {
                Kind::Reshare => dealt,
                Kind::Refresh => dealt + plan.old.public_shares[k],
            };
            NonZero::from_point(share)
                .ok_or_else(|| OutputError::Invalid(format!("public share {k} is the identity")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(DirtyKeyInfo {
        curve: Default::default(),
        shared_public_key: plan.old.shared_public_key,
        public_shares,
        vss_setup: Some(VssSetup {
            min_signers: plan.new_threshold,
            I: plan.new_points.clone(),
        }),
        chain_code: plan.old.chain_code,
    })
}

/// Receiver `receiver`'s new key share: the sum of its sub-shares (plus its old share, in
/// refresh), with the new public info, validated by the library.
pub fn new_share<E: Curve>(
    plan: &Plan<E>,
    receiver: u16,
    dealings: &[Dealing<E>],
    sub_shares: &[SecretScalar<E>],
    old_share: Option<&DirtyIncompleteKeyShare<E>>,
) -> Result<cggmp24::IncompleteKeyShare<E>, OutputError> {
    plan.new_point(receiver)?;
    if sub_shares.len() != plan.dealers.len() {
        return Err(OutputError::Inputs(format!(
            "{} sub-shares for {} dealers",
            sub_shares.len(),
            plan.dealers.len()
        )));
    }
    let key_info = new_key_info(plan, dealings)?;
    let mut x = sub_shares
        .iter()
        .fold(Scalar::zero(), |acc, s| acc + s.as_ref());
    if plan.kind == Kind::Refresh {
        let old = old_share
            .filter(|s| s.i == receiver && same_key(&s.key_info, &plan.old))
            .ok_or_else(|| {
                OutputError::Inputs("refresh needs the receiver's own current share".into())
            })?;
        x += value(&old.x);
    }
    let secret = SecretScalar::new(&mut x);
    let x = NonZero::from_secret_scalar(secret)
        .ok_or_else(|| OutputError::Invalid("the new share is zero".into()))?;
    let share = DirtyIncompleteKeyShare {
        i: receiver,
        key_info,
        x,
    };
    share
        .validate()
        .map_err(|e| OutputError::Invalid(e.to_string()))
}

/// The hash a receiver reports to confirm its new share: it names the new public key info,
/// so the coordinator activates only if every receiver built the same one.
pub fn confirmation<E: Curve>(sid: &[u8], key: &DirtyKeyInfo<E>) -> Hash {
    let vss = key.vss_setup.as_ref();
    hash(&transcript::Confirm {
        sid,
        public_key: &key.shared_public_key,
        public_shares: key.public_shares.iter().map(|p| p.into_inner()).collect(),
        threshold: vss.map_or(0, |v| v.min_signers),
        points: vss.map_or_else(Vec::new, |v| v.I.iter().map(|x| x.into_inner()).collect()),
        chain_code: key.chain_code,
    })
}

/// Whether two key infos describe the same key sharing (public key, public shares, setup,
/// chain code).
pub fn same_key<E: Curve>(a: &DirtyKeyInfo<E>, b: &DirtyKeyInfo<E>) -> bool {
    a.shared_public_key == b.shared_public_key
        && a.public_shares == b.public_shares
        && a.vss_setup == b.vss_setup
        && a.chain_code == b.chain_code
}

#[cfg(test)]
mod tests {
    //! Every check against malicious input, without a network.
    use super::*;
    use crate::fixtures::{insecure_committee_2of3, CommitteeFixture};
    use crate::Curve;
    use rand_core::OsRng;

    const SID: &[u8] = b"test session";

    fn key(f: &CommitteeFixture) -> DirtyKeyInfo<Curve> {
        f.shares[0].core.key_info.clone()
    }

    fn share(f: &CommitteeFixture, k: usize) -> DirtyIncompleteKeyShare<Curve> {
        f.shares[k].core.clone()
    }

    /// 2-of-3 -> 3-of-5 dealt by positions 0 and 2.
    fn plan(f: &CommitteeFixture) -> Plan<Curve> {
        Plan::reshare(&key(f), vec![0, 2], 5, 3).unwrap()
    }

    fn dealings(
        f: &CommitteeFixture,
        plan: &Plan<Curve>,
    ) -> Vec<(DealerSecret<Curve>, Dealing<Curve>)> {
        (0..plan.dealers().len())
            .map(|d| {
                let k = usize::from(plan.dealers()[d]);
                deal(&mut OsRng, SID, plan, d, &share(f, k)).unwrap()
            })
            .collect()
    }

    /// Re-commits a modified dealing, so that only the targeted check can fail.
    fn recommit(plan: &Plan<Curve>, d: usize, dealing: &Dealing<Curve>) -> Hash {
        commitment(SID, plan.dealers()[d], dealing)
    }

    #[test]
    fn plans_that_cannot_work_are_refused() {
        let f = insecure_committee_2of3();
        let k = key(&f);
        for dealers in [vec![0], vec![0, 1, 2], vec![1, 1], vec![0, 3]] {
            assert!(
                matches!(
                    Plan::reshare(&k, dealers.clone(), 5, 3),
                    Err(PlanError::Dealers { .. })
                ),
                "{dealers:?}"
            );
        }
        for (n, t) in [(5, 1), (5, 6), (1, 1)] {
            assert!(matches!(
                Plan::reshare(&k, vec![0, 1], n, t),
                Err(PlanError::Threshold { .. })
            ));
        }
        let mut additive = k.clone();
        additive.vss_setup = None;
        assert_eq!(
            Plan::reshare(&additive, vec![0, 1], 3, 2).unwrap_err(),
            PlanError::AdditiveKey
        );
        let mut wrong = k.clone();
        wrong.public_shares.swap(0, 1);
        assert!(matches!(
            Plan::refresh(&wrong),
            Err(PlanError::InvalidKey(_))
        ));
    }

    #[test]
    fn a_dealer_refuses_a_share_that_is_not_its_own() {
        let f = insecure_committee_2of3();
        let plan = plan(&f);
        // Dealer 0 is position 0; position 1's share is not its.
        assert!(deal(&mut OsRng, SID, &plan, 0, &share(&f, 1)).is_err());
        assert!(deal(&mut OsRng, SID, &plan, 2, &share(&f, 0)).is_err());
    }

    #[test]
    fn honest_dealings_pass_and_give_a_valid_three_of_five_sharing_of_the_same_key() {
        let f = insecure_committee_2of3();
        let plan = plan(&f);
        let dealt = dealings(&f, &plan);
        let public: Vec<Dealing<Curve>> = dealt.iter().map(|(_, d)| d.clone()).collect();
        for (d, dealing) in public.iter().enumerate() {
            let c = recommit(&plan, d, dealing);
            check_dealing(SID, &plan, d, &c, dealing).unwrap();
        }
        let shares: Vec<_> = (0..5)
            .map(|j| {
                let subs: Vec<_> = dealt
                    .iter()
                    .map(|(s, d)| {
                        let sub = s.sub_share(&plan, j).unwrap();
                        check_sub_share(&plan, d, j, &sub).unwrap();
                        sub
                    })
                    .collect();
                new_share(&plan, j, &public, &subs, None).unwrap()
            })
            .collect();
        for s in &shares {
            assert_eq!(s.shared_public_key, key(&f).shared_public_key);
            assert_eq!(s.chain_code, key(&f).chain_code);
            assert_eq!(s.key_info.vss_setup.as_ref().unwrap().min_signers, 3);
        }
        // Any three interpolate to the public key.
        let points = &plan.new_points;
        for q in [[0usize, 1, 2], [1, 3, 4]] {
            let xs: Vec<_> = q.iter().map(|k| points[*k]).collect();
            let x: Scalar<Curve> = q
                .iter()
                .enumerate()
                .map(|(j, k)| {
                    lagrange_coefficient_at_zero(j, &xs).unwrap().into_inner()
                        * value(&shares[*k].x)
                })
                .sum();
            assert_eq!(
                Point::generator() * x,
                key(&f).shared_public_key.into_inner()
            );
        }
        assert_eq!(
            confirmation(SID, &shares[0].key_info),
            confirmation(SID, &shares[4].key_info)
        );
    }

    #[test]
    fn every_kind_of_bad_dealing_is_caught_by_its_check() {
        let f = insecure_committee_2of3();
        let plan = plan(&f);
        let dealt = dealings(&f, &plan);
        let (secret, honest) = &dealt[1];
        let committed = recommit(&plan, 1, honest);
        let check = |dealing: &Dealing<Curve>, committed: &Hash| {
            check_dealing(SID, &plan, 1, committed, dealing)
        };

        // Opening: a changed salt, the commitment of another session, another dealer's.
        let mut d = honest.clone();
        d.salt[0] ^= 1;
        assert_eq!(check(&d, &committed), Err(Fault::BadOpening));
        let elsewhere = commitment(b"another session", plan.dealers()[1], honest);
        assert_eq!(check(honest, &elsewhere), Err(Fault::BadOpening));
        assert_eq!(
            check_dealing(SID, &plan, 0, &committed, honest),
            Err(Fault::BadOpening)
        );

        // Shape: one coefficient too many, one proof missing.
        let mut d = honest.clone();
        d.commitments.push(Point::generator().into());
        assert!(matches!(
            check(&d, &recommit(&plan, 1, &d)),
            Err(Fault::BadShape(_))
        ));
        let mut d = honest.clone();
        d.proofs.pop();
        assert!(matches!(
            check(&d, &recommit(&plan, 1, &d)),
            Err(Fault::BadShape(_))
        ));

        // Constant term: anything but λ·X for this dealer (here: the other dealer's).
        let mut d = honest.clone();
        d.commitments[0] = dealt[0].1.commitments[0];
        assert_eq!(
            check(&d, &recommit(&plan, 1, &d)),
            Err(Fault::BadConstantTerm)
        );

        // Knowledge: a tampered proof; a coefficient copied (negated) from the other dealer
        // with that dealer's proof.
        let mut d = honest.clone();
        d.proofs[1].proof.0 += Scalar::one();
        assert_eq!(check(&d, &recommit(&plan, 1, &d)), Err(Fault::BadProof(2)));
        let mut d = honest.clone();
        d.commitments[1] = -dealt[0].1.commitments[1];
        d.proofs[0] = dealt[0].1.proofs[0].clone();
        assert_eq!(check(&d, &recommit(&plan, 1, &d)), Err(Fault::BadProof(1)));

        // Sub-shares: off by one, or meant for another receiver.
        let good = secret.sub_share(&plan, 3).unwrap();
        check_sub_share(&plan, honest, 3, &good).unwrap();
        let mut off = *good.as_ref() + Scalar::one();
        let off = SecretScalar::new(&mut off);
        assert_eq!(
            check_sub_share(&plan, honest, 3, &off),
            Err(Fault::BadSubShare)
        );
        let other = secret.sub_share(&plan, 4).unwrap();
        assert_eq!(
            check_sub_share(&plan, honest, 3, &other),
            Err(Fault::BadSubShare)
        );
    }

    #[test]
    fn a_proof_made_for_another_context_does_not_verify() {
        // A proof of knowledge is bound to the session, the dealer and the coefficient: one
        // made with any of them changed in its challenge is refused, as is one whose commit
        // was swapped for another proof's.
        let f = insecure_committee_2of3();
        let plan = plan(&f);
        let dealt = dealings(&f, &plan);
        let (secret, honest) = &dealt[1];
        let position = plan.dealers()[1];
        let reprove = |sid: &[u8], dealer: u16, coefficient: u16| {
            let k = 1usize;
            let (eph, commit) = schnorr_pok::prover_commits_ephemeral_secret(&mut OsRng);
            let challenge =
                pok_challenge(sid, dealer, coefficient, &honest.commitments[k], &commit);
            let proof = schnorr_pok::prove(&eph, &challenge, &secret.coefficients[k]);
            let mut d = honest.clone();
            d.proofs[0] = CoefficientProof { commit, proof };
            d
        };
        let check = |d: &Dealing<Curve>| check_dealing(SID, &plan, 1, &recommit(&plan, 1, d), d);
        // The honest context passes (the re-made proof is as good as the original).
        check(&reprove(SID, position, 1)).unwrap();
        for (sid, dealer, coefficient) in [
            (&b"another session"[..], position, 1),
            (SID, plan.dealers()[0], 1),
            (SID, position, 2),
        ] {
            assert_eq!(
                check(&reprove(sid, dealer, coefficient)),
                Err(Fault::BadProof(1)),
                "{dealer} {coefficient}"
            );
        }
        let mut swapped = honest.clone();
        swapped.proofs[0].commit = honest.proofs[1].commit.clone();
        assert_eq!(check(&swapped), Err(Fault::BadProof(1)));
    }

    #[test]
    fn the_same_key_check_compares_every_part_of_the_key_info() {
        let f = insecure_committee_2of3();
        let k = key(&f);
        assert!(same_key(&k, &k.clone()));
        let other = crate::fixtures::insecure_committee_3of5();
        let mut public_key = k.clone();
        public_key.shared_public_key = other.shares[0].core.key_info.shared_public_key;
        let mut shares = k.clone();
        shares.public_shares.swap(0, 1);
        let mut setup = k.clone();
        if let Some(vss) = setup.vss_setup.as_mut() {
            vss.min_signers = 3;
        }
        let mut points = k.clone();
        if let Some(vss) = points.vss_setup.as_mut() {
            vss.I.swap(0, 2);
        }
        let mut chain = k.clone();
        chain.chain_code = Some([1; 32]);
        let mut no_chain = k.clone();
        no_chain.chain_code = None;
        let mut additive = k.clone();
        additive.vss_setup = None;
        for changed in [public_key, shares, setup, points, chain, no_chain, additive] {
            assert!(!same_key(&k, &changed));
            assert!(!same_key(&changed, &k));
        }
    }

    #[test]
    fn dealings_that_do_not_sum_to_the_key_give_no_share() {
        let f = insecure_committee_2of3();
        let plan = plan(&f);
        let dealt = dealings(&f, &plan);
        let mut public: Vec<Dealing<Curve>> = dealt.iter().map(|(_, d)| d.clone()).collect();
        public[1].commitments[0] = public[0].commitments[0];
        assert!(matches!(
            new_key_info(&plan, &public),
            Err(OutputError::WrongKey)
        ));
        assert!(matches!(
            new_key_info(&plan, &public[..1]),
            Err(OutputError::Inputs(_))
        ));
    }

    #[test]
    fn refresh_keeps_the_key_and_needs_the_receivers_own_share() {
        let f = insecure_committee_2of3();
        let plan = Plan::refresh(&key(&f)).unwrap();
        assert_eq!(plan.dealers(), &[0, 1, 2]);
        let dealt: Vec<_> = (0..3)
            .map(|d| deal(&mut OsRng, SID, &plan, d, &share(&f, d)).unwrap())
            .collect();
        let public: Vec<Dealing<Curve>> = dealt.iter().map(|(_, d)| d.clone()).collect();
        for (d, dealing) in public.iter().enumerate() {
            assert!(dealing.commitments[0].is_zero());
            check_dealing(SID, &plan, d, &recommit(&plan, d, dealing), dealing).unwrap();
        }
        let subs = |j: u16| -> Vec<_> {
            dealt
                .iter()
                .map(|(s, _)| s.sub_share(&plan, j).unwrap())
                .collect()
        };
        let renewed = new_share(&plan, 1, &public, &subs(1), Some(&share(&f, 1))).unwrap();
        assert_ne!(value(&renewed.x), value(&share(&f, 1).x));
        assert_eq!(renewed.shared_public_key, key(&f).shared_public_key);
        assert!(new_share(&plan, 1, &public, &subs(1), None).is_err());
        assert!(new_share(&plan, 1, &public, &subs(1), Some(&share(&f, 2))).is_err());
        // A refresh dealing with a non-zero constant would move the key: refused.
        let mut d = public[0].clone();
        d.commitments[0] = Point::generator().into();
        assert_eq!(
            check_dealing(SID, &plan, 0, &recommit(&plan, 0, &d), &d),
            Err(Fault::BadConstantTerm)
        );
    }
}
