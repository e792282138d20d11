//! Resharing and refresh over secure sessions in memory (`docs/protocols/reshare.md`): the
//! public key and chain code survive, the auxiliary info is renewed, new quorums sign (verified
//! with k256), any `t'` new shares reconstruct the same secret while old and new shares do not
//! combine, cheating dealers are named with evidence and nobody gets a share, a lying receiver
//! gets itself blamed and not an honest dealer, and a party that drops out leaves the old
//! shares signing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use cggmp24::generic_ec::{NonZero, Point, Scalar, SecretScalar};
use cggmp24::key_share::{reconstruct_secret_key, Validate};
use generic_ec_zkp::polynomial::lagrange_coefficient_at_zero;
use rand_core::OsRng;
use tessera_channel::{BroadcastEvidence, FrameContext};
use tessera_mpc::fixtures::{insecure_committee_2of3, insecure_test_primes, CommitteeFixture};
use tessera_mpc::reshare::core as reshare_core;
use tessera_mpc::reshare::run::{
    CommitMsg, EchoMsg, ReshareMsg, RevealMsg, SeenBroadcasts, SubShareMsg,
};
use tessera_mpc::reshare::{
    reshare, reshare_with, AuxInput, Complaint, Contribution, Fault, Kind, NewShare, ReshareOutput,
    ReshareSetup, SetupKey, SubShareEvidence, SUB_SHARE_ROUND,
};
use tessera_mpc::{
    sign, verify_signature, AuxInfo, Blame, Curve, IncompleteKeyShare, KeyShare, MpcConfig,
    MpcError, SessionSpec, SigningInput,
};
use tessera_transport::SecureTransport;
use tessera_wire::{KeyId, KeyKind, PartyId, Protocol};

use crate::common::{keys, memory_nodes, spec};

fn parties(ids: &[u16]) -> Vec<PartyId> {
    ids.iter().map(|i| PartyId(*i)).collect()
}

fn node_of(nodes: &[Arc<SecureTransport>], p: PartyId) -> Arc<SecureTransport> {
    nodes[usize::from(p.0) - 1].clone()
}

/// The fixture's shares without their auxiliary info, by party.
fn incomplete_shares(fixture: &CommitteeFixture) -> BTreeMap<PartyId, IncompleteKeyShare> {
    fixture
        .committee
        .iter()
        .zip(&fixture.shares)
        .map(|(p, s)| (*p, s.core.clone().validate().unwrap()))
        .collect()
}

fn setup(
    kind: Kind,
    fixture: &CommitteeFixture,
    dealers: &[u16],
    new_committee: &[u16],
    new_threshold: u16,
) -> ReshareSetup {
    ReshareSetup {
        kind,
        key_id: KeyId([7; 16]),
        key_kind: KeyKind::Ecdsa,
        epoch: 0,
        key: fixture.shares[0].core.key_info.clone().into(),
        old_committee: fixture.committee.clone(),
        dealers: parties(dealers),
        new_committee: parties(new_committee),
        new_threshold,
        authorisation: [0; 32],
    }
}

/// A secp256k1 setup's key info.
fn info(setup: &ReshareSetup) -> &cggmp24::key_share::DirtyKeyInfo<Curve> {
    setup.key_info::<Curve>().expect("a secp256k1 key")
}

/// A secp256k1 setup's key info, to change.
fn info_mut(setup: &mut ReshareSetup) -> &mut cggmp24::key_share::DirtyKeyInfo<Curve> {
    match &mut setup.key {
        SetupKey::Secp256k1(key) => key,
        SetupKey::Ed25519(_) => panic!("a secp256k1 key"),
    }
}

type Outcomes = BTreeMap<PartyId, Result<ReshareOutput, MpcError>>;

/// Which INSECURE fixture prime set each receiver uses for its new auxiliary info: a map from
/// party to set number (0 to 5). The fixture committees were made with sets 0 to 4 in party
/// order.
type Primes = BTreeMap<PartyId, usize>;

fn primes(assignments: &[(u16, usize)]) -> Primes {
    assignments.iter().map(|(p, s)| (PartyId(*p), *s)).collect()
}

fn aux_input(primes: &Primes, p: PartyId) -> Option<AuxInput> {
    let set = *primes.get(&p)?;
    Some(AuxInput {
        primes: insecure_test_primes().swap_remove(set),
        config: MpcConfig::default(),
    })
}

/// Runs one session of `setup`, every participant but `absent` its own side.
async fn run(
    nodes: &[Arc<SecureTransport>],
    setup: &ReshareSetup,
    shares: &BTreeMap<PartyId, IncompleteKeyShare>,
    primes: &Primes,
    config: &MpcConfig,
    absent: &[PartyId],
) -> Outcomes {
    let s = spec(Protocol::RESHARE, &setup.participants());
    run_in(nodes, setup, shares, primes, s, None, config, absent).await
}

/// Runs session `s` of `setup`; `cheat` replaces one dealer's contribution.
#[allow(clippy::too_many_arguments)]
async fn run_in(
    nodes: &[Arc<SecureTransport>],
    setup: &ReshareSetup,
    shares: &BTreeMap<PartyId, IncompleteKeyShare>,
    primes: &Primes,
    s: SessionSpec,
    cheat: Option<(PartyId, Contribution)>,
    config: &MpcConfig,
    absent: &[PartyId],
) -> Outcomes {
    let (cheater, mut contribution) = match cheat {
        Some((p, c)) => (Some(p), Some(c)),
        None => (None, None),
    };
    let runs = s
        .parties
        .iter()
        .filter(|p| !absent.contains(p))
        .map(|p| {
            let (net, s, setup) = (node_of(nodes, *p), s.clone(), setup.clone());
            let share = shares.get(p).cloned();
            let config = config.clone();
            let aux = aux_input(primes, *p);
            let contribution = if cheater == Some(*p) {
                contribution.take()
            } else {
                None
            };
            let p = *p;
            async move {
                let result = match contribution {
                    Some(c) => {
                        reshare_with(net, &s, &setup, share.as_ref(), Some(c), aux, &config).await
                    }
                    None => reshare(net, &s, &setup, share.as_ref(), aux, &config).await,
                };
                (p, result)
            }
        })
        .collect::<Vec<_>>();
    futures::future::join_all(runs).await.into_iter().collect()
}

/// The new epochs by party, after checking every participant succeeded and agrees: the same
/// confirmation everywhere, the same auxiliary digest at every receiver.
fn new_shares(outcomes: Outcomes, setup: &ReshareSetup) -> Vec<NewShare> {
    let mut confirmations = Vec::new();
    let mut shares = BTreeMap::new();
    for (p, outcome) in outcomes {
        let out = outcome.unwrap_or_else(|e| panic!("{p} failed: {e}"));
        confirmations.push(out.confirmation);
        assert_eq!(out.share.is_some(), setup.new_committee.contains(&p));
        if let Some(share) = out.share {
            shares.insert(p, share);
        }
    }
    assert!(
        confirmations.windows(2).all(|w| w[0] == w[1]),
        "every participant confirms the same new key"
    );
    let new: Vec<NewShare> = setup
        .new_committee
        .iter()
        .map(|p| shares.remove(p).unwrap())
        .collect();
    assert!(
        new.windows(2).all(|w| w[0].aux_digest == w[1].aux_digest),
        "every receiver reports the same auxiliary info"
    );
    new
}

fn cores(new: &[NewShare]) -> Vec<IncompleteKeyShare> {
    new.iter().map(|s| s.core.clone()).collect()
}

/// Signs with `signers`, whose key shares are the parts at their position in `committee`;
/// returns whether k256 verifies the signature.
async fn signs(
    nodes: &[Arc<SecureTransport>],
    committee: &[PartyId],
    shares: &[(IncompleteKeyShare, AuxInfo)],
    signers: &[PartyId],
) -> bool {
    let s = spec(Protocol::SIGN, signers);
    let input = SigningInput::Sha256(b"reshared key signs".to_vec());
    let runs = signers.iter().map(|p| {
        let k = committee.iter().position(|c| c == p).unwrap();
        let share = KeyShare::from_parts(shares[k].clone()).unwrap();
        let (net, s, input) = (node_of(nodes, *p), s.clone(), input.clone());
        let committee = committee.to_vec();
        let config = MpcConfig {
            round_timeout: Duration::from_secs(20),
        };
        async move { sign(net, &s, &committee, &share, &[], &input, &config).await }
    });
    let Ok(sigs) = futures::future::try_join_all(runs).await else {
        return false;
    };
    let pk = shares[0].0.shared_public_key;
    sigs.iter()
        .all(|sig| verify_signature(&pk.into_inner(), &input, sig))
}

/// The parts of a new epoch.
fn epoch(new: &[NewShare]) -> Vec<(IncompleteKeyShare, AuxInfo)> {
    new.iter()
        .map(|s| (s.core.clone(), s.aux.clone()))
        .collect()
}

/// The parts of a fixture committee's key shares.
fn fixture_epoch(fixture: &CommitteeFixture) -> Vec<(IncompleteKeyShare, AuxInfo)> {
    fixture
        .shares
        .iter()
        .map(|s| {
            (
                s.core.clone().validate().unwrap(),
                s.aux.clone().validate().unwrap(),
            )
        })
        .collect()
}

/// The secret behind `shares` by the library's own reconstruction (tests only).
fn secret(shares: &[IncompleteKeyShare]) -> Scalar<Curve> {
    *reconstruct_secret_key(shares).unwrap().as_ref()
}

/// A key share's secret value.
type ShareValue = NonZero<SecretScalar<Curve>>;

/// Lagrange-combines raw share values at their points: what an attacker holding them gets.
fn combine(values: &[(&ShareValue, NonZero<Scalar<Curve>>)]) -> Scalar<Curve> {
    let points: Vec<_> = values.iter().map(|(_, p)| *p).collect();
    values
        .iter()
        .enumerate()
        .map(|(j, (x, _))| {
            lagrange_coefficient_at_zero(j, &points)
                .unwrap()
                .into_inner()
                * value(x)
        })
        .sum()
}

/// A share's value as a plain scalar.
fn value(x: &ShareValue) -> &Scalar<Curve> {
    x.as_ref()
}

fn point(i: u16) -> NonZero<Scalar<Curve>> {
    NonZero::from_scalar(Scalar::from(i)).unwrap()
}

fn assert_same_key(old: &CommitteeFixture, new: &[IncompleteKeyShare]) {
    let key = &old.shares[0].core.key_info;
    for share in new {
        assert_eq!(share.shared_public_key, key.shared_public_key);
        assert_eq!(
            share.chain_code, key.chain_code,
            "the HD chain code is carried"
        );
        assert!(share.chain_code.is_some());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_renews_every_share_and_the_auxiliary_info_of_the_same_key() {
    let keys = keys(3);
    let nodes = memory_nodes(&keys, 3).await;
    let old = insecure_committee_2of3();
    let old_shares = incomplete_shares(&old);
    let setup = setup(Kind::Refresh, &old, &[1, 2, 3], &[1, 2, 3], 2);
    let fresh_primes = primes(&[(1, 3), (2, 4), (3, 5)]);
    let outcomes = run(
        &nodes,
        &setup,
        &old_shares,
        &fresh_primes,
        &MpcConfig::default(),
        &[],
    )
    .await;
    let renewed = new_shares(outcomes, &setup);
    let new = cores(&renewed);
    assert_same_key(&old, &new);
    for (k, share) in renewed.iter().enumerate() {
        let before = &old.shares[k];
        assert_eq!(share.core.i, before.core.i);
        assert_ne!(
            value(&share.core.x),
            value(&before.core.x),
            "share {k} renewed"
        );
        assert_ne!(share.core.public_shares, before.core.public_shares);
        // New Paillier keys and ring-Pedersen parameters, for every party.
        assert_ne!(
            share.aux.p, before.aux.p,
            "party {k}'s Paillier key renewed"
        );
        for j in 0..3 {
            assert_ne!(share.aux.N[j], before.aux.N[j]);
            let (new_rp, old_rp) = (
                &share.aux.pedersen_params[j],
                &before.aux.pedersen_params[j],
            );
            assert_ne!(new_rp.hat_N, old_rp.hat_N);
            assert_ne!((&new_rp.s, &new_rp.t), (&old_rp.s, &old_rp.t));
        }
    }
    let old_list: Vec<_> = old_shares.values().cloned().collect();
    assert_eq!(secret(&new[..2]), secret(&old_list[..2]));
    assert_eq!(secret(&new[1..]), secret(&old_list[..2]));
    // A share stolen before the refresh does not combine with one taken after it.
    let y = old.shares[0].core.key_info.shared_public_key.into_inner();
    let mixed = combine(&[(&old_list[0].x, point(1)), (&new[1].x, point(2))]);
    assert_ne!(Point::generator() * mixed, y);
    let fresh = combine(&[(&new[0].x, point(1)), (&new[1].x, point(2))]);
    assert_eq!(Point::generator() * fresh, y);
    // The new epoch signs; an old-epoch share with a new-epoch one does not.
    let committee = parties(&[1, 2, 3]);
    let new_epoch = epoch(&renewed);
    assert!(signs(&nodes, &committee, &new_epoch, &parties(&[1, 3])).await);
    let mut mixed_epochs = new_epoch.clone();
    mixed_epochs[0] = fixture_epoch(&old)[0].clone();
    assert!(!signs(&nodes, &committee, &mixed_epochs, &parties(&[1, 3])).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_of_three_reshares_to_three_of_four_and_back() {
    let keys = keys(4);
    let nodes = memory_nodes(&keys, 4).await;
    let old = insecure_committee_2of3();
    let old_shares = incomplete_shares(&old);

    // 2-of-3 (p1 p2 p3) -> 3-of-4 (p1..p4); p1 and p3 deal, p2 only receives, p4 joins.
    let up = setup(Kind::Reshare, &old, &[1, 3], &[1, 2, 3, 4], 3);
    let to_four = primes(&[(1, 3), (2, 4), (3, 5), (4, 0)]);
    let outcomes = run(
        &nodes,
        &up,
        &old_shares,
        &to_four,
        &MpcConfig::default(),
        &[],
    )
    .await;
    let renewed = new_shares(outcomes, &up);
    let new = cores(&renewed);
    assert_same_key(&old, &new);
    for share in &renewed {
        assert_eq!(share.core.min_signers(), 3);
        assert_eq!(share.core.public_shares.len(), 4);
        assert_eq!(share.aux.N.len(), 4, "auxiliary info for the new committee");
    }
    let old_list: Vec<_> = old_shares.values().cloned().collect();
    let x = secret(&old_list[..2]);
    for quorum in [[0, 1, 2], [1, 2, 3], [0, 2, 3], [0, 1, 3]] {
        let q: Vec<_> = quorum.iter().map(|k| new[*k].clone()).collect();
        assert_eq!(
            secret(&q),
            x,
            "quorum {quorum:?} reconstructs the same secret"
        );
    }
    // Two new shares are not enough, and old shares do not stand in for the third.
    let y = old.shares[0].core.key_info.shared_public_key.into_inner();
    let two = combine(&[(&new[0].x, point(1)), (&new[1].x, point(2))]);
    assert_ne!(Point::generator() * two, y);
    let mixed = combine(&[
        (&new[0].x, point(1)),
        (&new[1].x, point(2)),
        (&old_list[2].x, point(3)),
    ]);
    assert_ne!(Point::generator() * mixed, y);
    let committee4 = parties(&[1, 2, 3, 4]);
    assert!(signs(&nodes, &committee4, &epoch(&renewed), &parties(&[2, 3, 4])).await);
    // The new epoch's auxiliary info is not the old committee's.
    assert_ne!(renewed[0].aux.N[0], old.shares[0].aux.N[0]);

    // 3-of-4 -> 2-of-3 (p2 p3 p4 -> p4 p1 p3): overlapping committees, a new order, p2
    // leaves, p1 only receives, p3 and p4 deal and stay.
    let by_party: BTreeMap<PartyId, IncompleteKeyShare> = committee4
        .iter()
        .copied()
        .zip(new.iter().cloned())
        .collect();
    let mut down = ReshareSetup {
        kind: Kind::Reshare,
        key_id: up.key_id,
        key_kind: KeyKind::Ecdsa,
        epoch: 1,
        key: new[0].key_info.clone().into(),
        old_committee: committee4.clone(),
        dealers: parties(&[2, 3, 4]),
        new_committee: parties(&[4, 1, 3]),
        new_threshold: 2,
        authorisation: [9; 32],
    };
    let to_three = primes(&[(4, 1), (1, 2), (3, 0)]);
    let outcomes = run(
        &nodes,
        &down,
        &by_party,
        &to_three,
        &MpcConfig::default(),
        &[],
    )
    .await;
    let back = new_shares(outcomes, &down);
    let back_cores = cores(&back);
    assert_same_key(&old, &back_cores);
    assert_eq!(secret(&back_cores[..2]), x);
    assert_eq!(secret(&back_cores[1..]), x);
    let committee3 = parties(&[4, 1, 3]);
    assert!(signs(&nodes, &committee3, &epoch(&back), &parties(&[3, 4])).await);

    // A dealer set that is not exactly t holders is refused before anything is sent.
    down.dealers = parties(&[2, 4]);
    let s = spec(Protocol::RESHARE, &down.participants());
    let err = reshare(
        node_of(&nodes, PartyId(2)),
        &s,
        &down,
        by_party.get(&PartyId(2)),
        None,
        &MpcConfig::default(),
    )
    .await
    .err()
    .expect("two dealers for a 3-of-4 key refused");
    assert!(matches!(err, MpcError::InvalidSession(_)), "{err}");
}

#[test]
fn a_refresh_must_be_dealt_by_and_to_the_whole_committee_in_key_order() {
    let old = insecure_committee_2of3();
    let honest = setup(Kind::Refresh, &old, &[1, 2, 3], &[1, 2, 3], 2);
    honest.plan::<Curve>().unwrap();
    for (dealers, receivers, threshold) in [
        (&[1, 2][..], &[1, 2, 3][..], 2),
        (&[1, 2, 3], &[1, 2], 2),
        (&[3, 2, 1], &[3, 2, 1], 2),
        (&[1, 2, 3], &[1, 2, 3, 4], 2),
        (&[1, 2, 3], &[1, 2, 3], 3),
    ] {
        let bad = setup(Kind::Refresh, &old, dealers, receivers, threshold);
        let err = bad.plan::<Curve>().unwrap_err();
        assert!(
            matches!(err, MpcError::InvalidSession(_)),
            "{dealers:?}: {err}"
        );
    }
}

#[test]
fn the_session_hash_binds_every_input_of_the_setup() {
    let old = insecure_committee_2of3();
    let base = setup(Kind::Reshare, &old, &[1, 3], &[1, 2, 3, 4, 5], 3);
    let s = spec(Protocol::RESHARE, &base.participants());
    let sid = |setup: &ReshareSetup, s: &SessionSpec| {
        setup.session_hash(s, &setup.plan::<Curve>().unwrap())
    };
    let reference = sid(&base, &s);
    let mut variants: Vec<ReshareSetup> = Vec::new();
    let mut v = base.clone();
    v.key_id = KeyId([8; 16]);
    variants.push(v);
    let mut v = base.clone();
    v.epoch = 1;
    variants.push(v);
    let mut v = base.clone();
    v.authorisation = [1; 32];
    variants.push(v);
    let mut v = base.clone();
    v.new_threshold = 4;
    variants.push(v);
    let mut v = base.clone();
    v.new_committee = parties(&[1, 2, 3, 5, 4]);
    variants.push(v);
    for v in &variants {
        let s = SessionSpec {
            parties: v.participants(),
            ..s.clone()
        };
        assert_ne!(sid(v, &s), reference, "{v:?}");
    }
    let other_session = spec(Protocol::RESHARE, &base.participants());
    assert_ne!(sid(&base, &other_session), reference);
    assert_eq!(sid(&base, &s), reference, "deterministic");
}

/// The public info of the degree-1 sharing `A + x·B` (in the exponent) of a 2-of-n key
/// like `key`: `A` is `key`'s public key or a random one (another key), `B` is `key`'s own
/// slope or a random one (other public shares, as after a refresh), over `key`'s evaluation
/// points or over `points`.
fn key_with(
    key: &cggmp24::key_share::DirtyKeyInfo<Curve>,
    same_public_key: bool,
    points: Option<&[u16]>,
    same_slope: bool,
) -> cggmp24::key_share::DirtyKeyInfo<Curve> {
    let mut key = key.clone();
    let vss = key.vss_setup.as_mut().expect("a threshold key");
    let g = Point::<Curve>::generator();
    let a = if same_public_key {
        key.shared_public_key.into_inner()
    } else {
        g * Scalar::<Curve>::random(&mut OsRng)
    };
    // The slope of the key's degree-1 polynomial in the exponent: (P_1 - A) / x_1.
    let slope = if same_slope {
        (key.public_shares[0].into_inner() - key.shared_public_key.into_inner())
            * vss.I[0].invert().into_inner()
    } else {
        g * Scalar::<Curve>::random(&mut OsRng)
    };
    if let Some(points) = points {
        vss.I = points
            .iter()
            .map(|x| NonZero::from_scalar(Scalar::from(*x)).unwrap())
            .collect();
    }
    key.public_shares = vss
        .I
        .iter()
        .map(|x| NonZero::from_point(a + slope * x.as_ref()).unwrap())
        .collect();
    key.shared_public_key = NonZero::from_point(a).unwrap();
    key.clone().validate().expect("a valid key info");
    key
}

#[test]
fn the_session_hash_binds_the_kind_the_dealers_the_old_committee_and_the_key_info() {
    // One execution id for every setup: only the setup differs, so each difference in the
    // hash comes from the setup itself, not from the session's participants.
    let old = insecure_committee_2of3();
    let base = setup(Kind::Reshare, &old, &[1, 3], &[1, 2, 3, 4, 5], 3);
    let s = spec(Protocol::RESHARE, &base.participants());
    let sid = |setup: &ReshareSetup| setup.session_hash(&s, &setup.plan::<Curve>().unwrap());
    let reference = sid(&base);
    assert_eq!(
        sid(&key_with_unchanged(&base)),
        reference,
        "the key info as rebuilt from its own polynomial hashes the same"
    );
    let with = |change: &dyn Fn(&mut ReshareSetup)| {
        let mut v = base.clone();
        change(&mut v);
        v
    };
    let mut chain_code = info(&base).chain_code.unwrap_or([1; 32]);
    chain_code[0] ^= 1;
    let mut variants = vec![
        // Dealers: another pair of holders, the same pair in the other dealing order.
        ("dealers 1, 2", with(&|v| v.dealers = parties(&[1, 2]))),
        ("dealers 2, 3", with(&|v| v.dealers = parties(&[2, 3]))),
        ("dealers 3, 1", with(&|v| v.dealers = parties(&[3, 1]))),
        // The old committee: p2 (which does not deal) named p5, so the plan is the same;
        // the committee in another key order.
        (
            "old committee p1, p5, p3",
            with(&|v| v.old_committee = parties(&[1, 5, 3])),
        ),
        (
            "old committee p3, p2, p1",
            with(&|v| v.old_committee = parties(&[3, 2, 1])),
        ),
        // The key info: another chain code, the same public key with other public shares
        // (as after a refresh), another key, the same key on other evaluation points.
        (
            "another chain code",
            with(&|v| info_mut(v).chain_code = Some(chain_code)),
        ),
        (
            "other public shares",
            with(&|v| v.key = key_with(info(&base), true, None, false).into()),
        ),
        (
            "another public key",
            with(&|v| v.key = key_with(info(&base), false, None, false).into()),
        ),
        (
            "other evaluation points",
            with(&|v| v.key = key_with(info(&base), true, Some(&[4, 5, 6]), true).into()),
        ),
    ];
    // The key's kind: the same secp256k1 key as a Taproot key.
    variants.push(("a Taproot key", with(&|v| v.key_kind = KeyKind::Taproot)));
    if info(&base).chain_code.is_some() {
        variants.push(("no chain code", with(&|v| info_mut(v).chain_code = None)));
    }
    let mut seen = vec![reference.clone()];
    for (what, v) in &variants {
        assert_ne!(v, &base, "{what}: the setups differ");
        let hash = sid(v);
        assert!(!seen.contains(&hash), "{what}: the session hash changes");
        seen.push(hash);
    }

    // The kind: a 3-of-3 view of the fixture key (its degree-1 polynomial is one of degree
    // at most 2), so that a reshare (exactly t = 3 dealers) and a refresh (every holder)
    // have the same dealers, committees and threshold and differ only in their kind.
    let mut key3 = info(&base).clone();
    key3.vss_setup.as_mut().unwrap().min_signers = 3;
    let refresh = ReshareSetup {
        key: key3.into(),
        ..setup(Kind::Refresh, &old, &[1, 2, 3], &[1, 2, 3], 3)
    };
    let reshare = ReshareSetup {
        kind: Kind::Reshare,
        ..refresh.clone()
    };
    let s = spec(Protocol::RESHARE, &refresh.participants());
    let sid = |setup: &ReshareSetup| setup.session_hash(&s, &setup.plan::<Curve>().unwrap());
    assert_eq!(refresh.participants(), reshare.participants());
    assert_ne!(sid(&refresh), sid(&reshare), "the kind is bound");
    // And the key's threshold: the refresh of its 2-of-3 view (which keeps 2-of-3).
    let refresh2 = setup(Kind::Refresh, &old, &[1, 2, 3], &[1, 2, 3], 2);
    assert_ne!(
        sid(&refresh),
        sid(&refresh2),
        "the key's threshold is bound"
    );
}

/// `setup` with its key info rebuilt from the key's own polynomial (a check of
/// [`key_with`]).
fn key_with_unchanged(setup: &ReshareSetup) -> ReshareSetup {
    let mut v = setup.clone();
    v.key = key_with(info(setup), true, None, true).into();
    v
}

/// Each participant's blame list: who it names, by whom (the accuser, or the judge where a
/// complainer lied), and why.
fn blames(outcomes: &Outcomes) -> BTreeMap<PartyId, Vec<Blame>> {
    outcomes
        .iter()
        .map(|(p, outcome)| match outcome {
            Err(MpcError::Blamed { blamed, .. }) => (*p, blamed.clone()),
            Err(other) => panic!("{p}: expected blame, got {other}"),
            Ok(_) => panic!("{p} finished despite a cheating party"),
        })
        .collect()
}

/// A dealer that cheats is named by the parties that caught it, and nobody gets a share.
fn assert_blamed(outcomes: &Outcomes, cheater: PartyId, fault: &Fault, by: &[PartyId]) {
    for (p, blamed) in blames(outcomes) {
        assert_eq!(Blame::parties(&blamed), vec![cheater], "{p}: {blamed:?}");
        let accusers: Vec<PartyId> = blamed.iter().map(|b| b.by).collect();
        assert_eq!(accusers, by, "{p}");
        assert!(blamed.iter().all(|b| b.reason == fault.to_string()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dealer_whose_sub_share_does_not_match_its_commitments_is_named_on_its_signature() {
    let keys = keys(5);
    let nodes = memory_nodes(&keys, 5).await;
    let old = insecure_committee_2of3();
    let old_shares = incomplete_shares(&old);
    let up = setup(Kind::Reshare, &old, &[1, 3], &[1, 2, 3, 4, 5], 3);
    let s = spec(Protocol::RESHARE, &up.participants());
    // p3 deals honestly except for p4's sub-share, and sends p5 none at all.
    let mut bad = Contribution::deal(&s, &up, &old_shares[&PartyId(3)], PartyId(3)).unwrap();
    bad.sub_shares[3] = Some(SecretScalar::random(&mut OsRng));
    bad.sub_shares[4] = None;
    let outcomes = run_in(
        &nodes,
        &up,
        &old_shares,
        &primes(&[(1, 1), (2, 2), (3, 3), (4, 4), (5, 5)]),
        s,
        Some((PartyId(3), bad)),
        &MpcConfig::default(),
        &[],
    )
    .await;
    assert_eq!(outcomes.len(), 5);
    // Every participant, not only the two that received the bad messages, checked the
    // evidence and names p3.
    for (p, blamed) in blames(&outcomes) {
        assert_eq!(Blame::parties(&blamed), vec![PartyId(3)], "{p}: {blamed:?}");
        let found: Vec<(PartyId, String)> =
            blamed.iter().map(|b| (b.by, b.reason.clone())).collect();
        assert_eq!(
            found,
            vec![
                (PartyId(4), Fault::BadSubShare.to_string()),
                (PartyId(5), Fault::MissingSubShare.to_string())
            ],
            "{p}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dealer_whose_constant_term_is_wrong_is_named_by_everyone() {
    let keys = keys(5);
    let nodes = memory_nodes(&keys, 5).await;
    let old = insecure_committee_2of3();
    let old_shares = incomplete_shares(&old);
    let up = setup(Kind::Reshare, &old, &[1, 3], &[1, 2, 3, 4, 5], 3);
    let s = spec(Protocol::RESHARE, &up.participants());
    let plan = up.plan().unwrap();
    let sid = up.session_hash(&s, &plan);
    // p1 deals a consistent polynomial around a share it does not hold (x1 + 1): every
    // sub-share matches the commitments, but the constant term is not its weighted share.
    let mut fake = (*old_shares[&PartyId(1)]).clone();
    let mut shifted = *value(&fake.x) + Scalar::one();
    fake.x = NonZero::from_secret_scalar(SecretScalar::new(&mut shifted)).unwrap();
    let (secret, dealing) = reshare_core::deal(&mut OsRng, &sid, &plan, 0, &fake).unwrap();
    let bad = Contribution {
        commitment: reshare_core::commitment(&sid, 0, &dealing),
        sub_shares: (0..5)
            .map(|j| Some(secret.sub_share(&plan, j).unwrap()))
            .collect(),
        dealing,
    };
    let outcomes = run_in(
        &nodes,
        &up,
        &old_shares,
        &primes(&[(1, 1), (2, 2), (3, 3), (4, 4), (5, 5)]),
        s,
        Some((PartyId(1), bad)),
        &MpcConfig::default(),
        &[],
    )
    .await;
    // Checked on broadcast data: every other participant catches it.
    assert_blamed(
        &outcomes,
        PartyId(1),
        &Fault::BadConstantTerm,
        &parties(&[3, 2, 4, 5]),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_party_that_drops_out_leaves_the_old_shares_signing() {
    let keys = keys(5);
    let nodes = memory_nodes(&keys, 5).await;
    let old = insecure_committee_2of3();
    let old_shares = incomplete_shares(&old);
    let up = setup(Kind::Reshare, &old, &[1, 3], &[1, 2, 3, 4, 5], 3);
    let config = MpcConfig {
        round_timeout: Duration::from_secs(2),
    };
    let outcomes = run(
        &nodes,
        &up,
        &old_shares,
        &primes(&[(1, 1), (2, 2), (3, 3), (4, 4), (5, 5)]),
        &config,
        &[PartyId(5)],
    )
    .await;
    assert_eq!(outcomes.len(), 4);
    for (p, outcome) in &outcomes {
        match outcome {
            Err(MpcError::Timeout { missing, .. }) => assert_eq!(missing, &[PartyId(5)], "{p}"),
            Err(other) => panic!("{p}: expected a timeout naming p5, got {other}"),
            Ok(_) => panic!("{p} finished without p5"),
        }
    }
    // Nothing was installed anywhere; the old committee signs as before.
    let committee = parties(&[1, 2, 3]);
    assert!(signs(&nodes, &committee, &fixture_epoch(&old), &parties(&[1, 2])).await);
}

/// A participant played by hand over its own secure transport: it sends exactly the messages
/// a test gives it, to whom it chooses, and reads what the others send it.
struct Scripted {
    net: Arc<SecureTransport>,
    spec: SessionSpec,
    inbox: tessera_transport::SessionInbox,
    /// Messages of later rounds that arrived before they were asked for.
    early: Vec<Received>,
}

/// A message as the scripted party received it.
struct Received {
    from: PartyId,
    round: u16,
    payload: Vec<u8>,
    signed: Option<BroadcastEvidence>,
}

impl Scripted {
    fn new(net: Arc<SecureTransport>, spec: &SessionSpec) -> Self {
        let inbox = net.open_session(spec.session);
        Scripted {
            net,
            spec: spec.clone(),
            inbox,
            early: Vec::new(),
        }
    }

    fn context(&self, round: u16) -> FrameContext {
        FrameContext {
            session: self.spec.session,
            round,
            protocol: Protocol::RESHARE,
        }
    }

    fn others(&self) -> Vec<PartyId> {
        let me = self.net.party();
        self.spec
            .parties
            .iter()
            .copied()
            .filter(|p| *p != me)
            .collect()
    }

    /// Broadcasts (signed) `msg` of `round` to `to`.
    async fn broadcast(&self, round: u16, msg: &ReshareMsg, to: &[PartyId]) {
        let payload = tessera_wire::encode(msg);
        self.net
            .broadcast(to, self.context(round), &payload)
            .await
            .unwrap();
    }

    /// Sends `msg` of `round` signed to one party.
    async fn send_signed(&self, round: u16, msg: &ReshareMsg, to: PartyId) {
        let payload = tessera_wire::encode(msg);
        self.net
            .send_signed(to, self.context(round), &payload)
            .await
            .unwrap();
    }

    /// Rounds 1 and 2 of a party that deals nothing: empty commit and reveal to everyone, an
    /// empty signed message to each other party (naming its receiver position, if any).
    /// Returns the others' commits and reveals.
    async fn deal_nothing(&mut self, setup: &ReshareSetup) -> (Vec<Received>, Vec<Received>) {
        let others = self.others();
        self.broadcast(0, &ReshareMsg::Commit(CommitMsg(None)), &others)
            .await;
        let commits = self.receive(0).await;
        self.broadcast(1, &ReshareMsg::Reveal(RevealMsg(None)), &others)
            .await;
        for p in &others {
            let msg = ReshareMsg::SubShare(SubShareMsg {
                receiver: setup
                    .new_committee
                    .iter()
                    .position(|c| c == p)
                    .map(|j| j as u16),
                value: None,
            });
            self.send_signed(SUB_SHARE_ROUND, &msg, *p).await;
        }
        (commits, self.receive(1).await)
    }

    /// Every other participant's message of `round`.
    async fn receive(&mut self, round: u16) -> Vec<Received> {
        let (mut got, early): (Vec<_>, Vec<_>) =
            self.early.drain(..).partition(|r| r.round == round);
        self.early = early;
        while got.len() < self.others().len() {
            let d = tokio::time::timeout(Duration::from_secs(20), self.inbox.recv())
                .await
                .expect("the others send")
                .expect("the session is open");
            let received = Received {
                from: d.from,
                round: d.context.round,
                payload: d.payload,
                signed: d.broadcast,
            };
            if received.round == round {
                got.push(received);
            } else {
                self.early.push(received);
            }
        }
        got
    }
}

/// What an honest participant shows in its echo: each dealer's signed broadcasts as received
/// (none for its own dealing).
fn seen(
    setup: &ReshareSetup,
    me: PartyId,
    commits: &[Received],
    reveals: &[Received],
) -> Vec<Option<SeenBroadcasts>> {
    setup
        .dealers
        .iter()
        .map(|dealer| {
            let of = |list: &[Received]| {
                list.iter()
                    .find(|r| r.from == *dealer)
                    .and_then(|r| r.signed.clone())
            };
            (*dealer != me).then(|| SeenBroadcasts {
                commit: of(commits).expect("a signed commit"),
                reveal: of(reveals).expect("a signed reveal"),
            })
        })
        .collect()
}

/// A 2-of-3 -> 3-of-5 reshare in which `scripted` plays its own side by hand (`script`) and
/// every other participant runs the protocol honestly; returns the honest outcomes.
async fn with_scripted<F, Fut>(scripted: PartyId, script: F) -> (Outcomes, ReshareSetup)
where
    F: FnOnce(Scripted, ReshareSetup, BTreeMap<PartyId, IncompleteKeyShare>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let keys = keys(5);
    let nodes = memory_nodes(&keys, 5).await;
    let old = insecure_committee_2of3();
    let old_shares = incomplete_shares(&old);
    let up = setup(Kind::Reshare, &old, &[1, 3], &[1, 2, 3, 4, 5], 3);
    let s = spec(Protocol::RESHARE, &up.participants());
    let script = tokio::spawn(script(
        Scripted::new(node_of(&nodes, scripted), &s),
        up.clone(),
        old_shares.clone(),
    ));
    let outcomes = run_in(
        &nodes,
        &up,
        &old_shares,
        &primes(&[(1, 1), (2, 2), (3, 3), (4, 4), (5, 5)]),
        s,
        None,
        &MpcConfig::default(),
        &[scripted],
    )
    .await;
    script.await.unwrap();
    (outcomes, up)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dealer_that_shows_different_dealings_to_different_parties_is_named_by_the_echo() {
    // p3 makes two valid dealings and shows p2 and p4 one, p1 and p5 the other: each passes
    // every check on its own; only the echo shows they differ.
    let (outcomes, _) = with_scripted(PartyId(3), |me, setup, shares| async move {
        let plan = setup.plan().unwrap();
        let sid = setup.session_hash(&me.spec, &plan);
        let share = &shares[&PartyId(3)];
        let deal = || reshare_core::deal(&mut OsRng, &sid, &plan, 1, share).unwrap();
        let (secret_a, a) = deal();
        let (secret_b, b) = deal();
        let group_a = parties(&[2, 4]);
        let group_b = parties(&[1, 5]);
        let commit = |d: &reshare_core::Dealing<Curve>| {
            ReshareMsg::Commit(CommitMsg(Some(reshare_core::commitment(&sid, 2, d))))
        };
        me.broadcast(0, &commit(&a), &group_a).await;
        me.broadcast(0, &commit(&b), &group_b).await;
        let mut me = me;
        let commits = me.receive(0).await;
        me.broadcast(1, &ReshareMsg::Reveal(RevealMsg(Some(a.clone()))), &group_a)
            .await;
        me.broadcast(1, &ReshareMsg::Reveal(RevealMsg(Some(b.clone()))), &group_b)
            .await;
        for (group, secret) in [(&group_a, &secret_a), (&group_b, &secret_b)] {
            for p in group {
                let j = setup.new_committee.iter().position(|c| c == p).unwrap() as u16;
                let msg = ReshareMsg::SubShare(SubShareMsg {
                    receiver: Some(j),
                    value: Some(secret.sub_share(&plan, j).unwrap()),
                });
                me.send_signed(SUB_SHARE_ROUND, &msg, *p).await;
            }
        }
        let reveals = me.receive(1).await;
        me.receive(2).await;
        let echo = ReshareMsg::Echo(EchoMsg {
            seen: seen(&setup, PartyId(3), &commits, &reveals),
            complaints: Vec::new(),
        });
        me.broadcast(3, &echo, &me.others()).await;
    })
    .await;
    for (p, blamed) in blames(&outcomes) {
        assert_eq!(Blame::parties(&blamed), vec![PartyId(3)], "{p}: {blamed:?}");
        assert!(
            blamed[0].reason.contains("different broadcasts"),
            "{p}: {}",
            blamed[0].reason
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dealer_that_deals_nothing_is_named_for_the_missing_broadcasts() {
    let (outcomes, _) = with_scripted(PartyId(1), |mut me, setup, _| async move {
        let others = me.others();
        let (commits, reveals) = me.deal_nothing(&setup).await;
        me.receive(2).await;
        let echo = ReshareMsg::Echo(EchoMsg {
            seen: seen(&setup, PartyId(1), &commits, &reveals),
            complaints: Vec::new(),
        });
        me.broadcast(3, &echo, &others).await;
    })
    .await;
    for (p, blamed) in blames(&outcomes) {
        assert_eq!(Blame::parties(&blamed), vec![PartyId(1)], "{p}: {blamed:?}");
        assert!(blamed
            .iter()
            .all(|b| b.reason == Fault::Missing.to_string()));
    }
}

/// Each honest dealer's signed sub-share message to the scripted receiver: payload and
/// statement.
type SubShares = BTreeMap<PartyId, (Vec<u8>, BroadcastEvidence)>;

/// p5 plays a receiver that takes part honestly except for its verdict, which `verdict`
/// writes from what it received (each honest dealer's signed sub-share message to it, and the
/// honest echo).
async fn lying_receiver(
    verdict: impl FnOnce(&SubShares, Vec<Option<SeenBroadcasts>>) -> EchoMsg + Send + 'static,
) -> Outcomes {
    let (outcomes, _) = with_scripted(PartyId(5), |mut me, setup, _| async move {
        let others = me.others();
        let (commits, reveals) = me.deal_nothing(&setup).await;
        let subs = me.receive(2).await;
        let honest = seen(&setup, PartyId(5), &commits, &reveals);
        let received = subs
            .into_iter()
            .map(|r| {
                (
                    r.from,
                    (r.payload, r.signed.expect("sub-shares are signed")),
                )
            })
            .collect();
        let echo = ReshareMsg::Echo(verdict(&received, honest));
        me.broadcast(3, &echo, &others).await;
    })
    .await;
    outcomes
}

fn assert_only_the_liar_is_blamed(outcomes: &Outcomes, expected: &str) {
    for (p, blamed) in blames(outcomes) {
        assert_eq!(Blame::parties(&blamed), vec![PartyId(5)], "{p}: {blamed:?}");
        assert_eq!(blamed[0].by, p, "{p} judged it itself");
        assert!(
            blamed[0].reason.contains(expected),
            "{p}: {}",
            blamed[0].reason
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_shows_an_honest_dealers_correct_sub_share_as_bad_is_blamed_itself() {
    let outcomes = lying_receiver(|received, seen| {
        let (payload, signed) = received[&PartyId(1)].clone();
        EchoMsg {
            seen,
            complaints: vec![Complaint {
                accused: PartyId(1),
                fault: Fault::BadSubShare,
                evidence: Some(SubShareEvidence { signed, payload }),
            }],
        }
    })
    .await;
    assert_only_the_liar_is_blamed(&outcomes, "the signed sub-share it shows is correct");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_alters_or_withholds_the_evidence_is_blamed_itself() {
    for case in ["altered", "withheld", "another dealer's"] {
        let outcomes = lying_receiver(move |received, seen| {
            let (mut payload, signed) = received[&PartyId(1)].clone();
            let evidence = match case {
                "altered" => {
                    let last = payload.len() - 1;
                    payload[last] ^= 1;
                    Some(SubShareEvidence { signed, payload })
                }
                "withheld" => None,
                _ => {
                    let (payload, signed) = received[&PartyId(3)].clone();
                    Some(SubShareEvidence { signed, payload })
                }
            };
            EchoMsg {
                seen,
                complaints: vec![Complaint {
                    accused: PartyId(1),
                    fault: Fault::MissingSubShare,
                    evidence,
                }],
            }
        })
        .await;
        let expected = match case {
            "withheld" => "it shows no signed message",
            _ => "not the dealer's signed message",
        };
        assert_only_the_liar_is_blamed(&outcomes, expected);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_accuses_an_honest_dealers_broadcasts_is_blamed_itself() {
    let outcomes = lying_receiver(|_, seen| EchoMsg {
        seen,
        complaints: vec![Complaint {
            accused: PartyId(3),
            fault: Fault::BadProof(1),
            evidence: None,
        }],
    })
    .await;
    assert_only_the_liar_is_blamed(&outcomes, "its broadcasts pass every check");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_participant_whose_echo_misreports_a_dealers_broadcasts_is_blamed_itself() {
    // Shows p3's statements under another session id, a statement over another payload
    // (re-hashed, so its signature no longer verifies), another round's statement, or none.
    for case in [
        "another session",
        "another payload",
        "another round",
        "none",
    ] {
        let outcomes = lying_receiver(move |_, mut seen| {
            let shown = seen[1].as_mut().expect("p3 deals");
            match case {
                "another session" => shown.commit.session = tessera_wire::SessionId::random(),
                "another payload" => shown.reveal.payload_hash[0] ^= 1,
                "another round" => shown.commit = shown.reveal.clone(),
                _ => seen[1] = None,
            }
            EchoMsg {
                seen,
                complaints: Vec::new(),
            }
        })
        .await;
        let expected = match case {
            "none" => "shows no broadcasts of p3",
            _ => "not p3's signed messages of this session",
        };
        assert_only_the_liar_is_blamed(&outcomes, expected);
    }
}

/// p5 (a receiver) broadcasts an echo of `seen` changed by `reshape` (an honest one has one
/// entry per dealer); every other participant blames p5 alone, once, for `expected`.
async fn an_echo_of_the_wrong_shape_is_blamed_once(
    reshape: impl FnOnce(&mut Vec<Option<SeenBroadcasts>>) + Send + 'static,
    expected: &str,
) {
    let outcomes = lying_receiver(move |_, mut seen| {
        assert_eq!(seen.len(), 2, "an honest echo has one entry per dealer");
        reshape(&mut seen);
        EchoMsg {
            seen,
            complaints: Vec::new(),
        }
    })
    .await;
    assert_only_the_liar_is_blamed(&outcomes, expected);
    for (p, blamed) in blames(&outcomes) {
        // One blame for the echo, however many entries it lacks or has too many.
        assert_eq!(blamed.len(), 1, "{p}: {blamed:?}");
        assert_eq!(blamed[0].reason, expected, "{p}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_participant_whose_echo_has_too_few_entries_for_the_dealers_is_blamed_itself() {
    // Two dealers (p1, p3): p5's echo lists only p1's broadcasts, or none at all.
    for (keep, expected) in [
        (1, "its echo has 1 entries for 2 dealers"),
        (0, "its echo has 0 entries for 2 dealers"),
    ] {
        an_echo_of_the_wrong_shape_is_blamed_once(move |seen| seen.truncate(keep), expected).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_participant_whose_echo_has_more_entries_than_dealers_is_blamed_itself() {
    // Two dealers (p1, p3): p5's echo is honest for both, then repeats p1's broadcasts (a
    // genuine statement, so only the entry count is wrong), or adds an empty entry.
    for extra in ["repeated", "empty"] {
        an_echo_of_the_wrong_shape_is_blamed_once(
            move |seen| {
                let more = match extra {
                    "repeated" => seen[0].clone(),
                    _ => None,
                };
                seen.push(more);
            },
            "its echo has 3 entries for 2 dealers",
        )
        .await;
    }
}

#[test]
fn a_setup_whose_key_is_not_on_its_kinds_curve_is_refused() {
    let old = insecure_committee_2of3();
    let mut ed25519 = setup(Kind::Refresh, &old, &[1, 2, 3], &[1, 2, 3], 2);
    ed25519.key_kind = KeyKind::Ed25519;
    let err = ed25519.plan::<Curve>().unwrap_err();
    assert!(
        err.to_string()
            .contains("names key kind ed25519 but carries a key on secp256k1"),
        "{err}"
    );
    // A secp256k1 key run as if it were on edwards25519.
    let honest = setup(Kind::Refresh, &old, &[1, 2, 3], &[1, 2, 3], 2);
    let err = honest.plan::<tessera_mpc::reshare::Edwards>().unwrap_err();
    assert!(err.to_string().contains("not on the curve"), "{err}");
}

#[tokio::test]
async fn the_ecdsa_runner_refuses_a_taproot_key_which_has_no_auxiliary_info() {
    let fixture = insecure_committee_2of3();
    let keys = keys(3);
    let nodes = memory_nodes(&keys, 3).await;
    let mut taproot = setup(Kind::Refresh, &fixture, &[1, 2, 3], &[1, 2, 3], 2);
    taproot.key_kind = KeyKind::Taproot;
    let shares = incomplete_shares(&fixture);
    let s = spec(Protocol::RESHARE, &taproot.participants());
    let err = reshare(
        nodes[0].clone(),
        &s,
        &taproot,
        shares.get(&PartyId(1)),
        aux_input(&primes(&[(1, 0)]), PartyId(1)),
        &MpcConfig::default(),
    )
    .await
    .err()
    .expect("refused");
    assert!(matches!(err, MpcError::InvalidSession(_)), "{err}");
    assert!(
        err.to_string()
            .contains("only ECDSA keys have auxiliary info"),
        "{err}"
    );
}
