//! Resharing and refresh over secure sessions in memory (`docs/protocols/reshare.md`): the
//! public key and chain code survive, new quorums sign (verified with k256), any `t'` new
//! shares reconstruct the same secret while old and new shares do not combine, cheating
//! dealers are named and nobody gets a share, and a party that drops out leaves the old shares
//! signing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use cggmp24::generic_ec::{NonZero, Point, Scalar, SecretScalar};
use cggmp24::key_share::{reconstruct_secret_key, Validate};
use generic_ec_zkp::polynomial::lagrange_coefficient_at_zero;
use rand_core::OsRng;
use tessera_mpc::fixtures::{insecure_committee_2of3, insecure_committee_3of5, CommitteeFixture};
use tessera_mpc::reshare::core as reshare_core;
use tessera_mpc::reshare::{
    reshare, reshare_with, Contribution, Fault, Kind, ReshareOutput, ReshareSetup,
};
use tessera_mpc::{
    sign, verify_signature, Blame, Curve, IncompleteKeyShare, KeyShare, MpcConfig, MpcError,
    SessionSpec, SigningInput,
};
use tessera_transport::SecureTransport;
use tessera_wire::{PartyId, Protocol};

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
        key: fixture.shares[0].core.key_info.clone(),
        old_committee: fixture.committee.clone(),
        dealers: parties(dealers),
        new_committee: parties(new_committee),
        new_threshold,
    }
}

type Outcomes = BTreeMap<PartyId, Result<ReshareOutput, MpcError>>;

/// Runs one session of `setup`, every participant but `absent` its own side.
async fn run(
    nodes: &[Arc<SecureTransport>],
    setup: &ReshareSetup,
    shares: &BTreeMap<PartyId, IncompleteKeyShare>,
    config: &MpcConfig,
    absent: &[PartyId],
) -> Outcomes {
    let s = spec(Protocol::RESHARE, &setup.participants());
    run_in(nodes, setup, shares, s, None, config, absent).await
}

/// Runs session `s` of `setup`; `cheat` replaces one dealer's contribution.
async fn run_in(
    nodes: &[Arc<SecureTransport>],
    setup: &ReshareSetup,
    shares: &BTreeMap<PartyId, IncompleteKeyShare>,
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
            let contribution = if cheater == Some(*p) {
                contribution.take()
            } else {
                None
            };
            let p = *p;
            async move {
                let result = match contribution {
                    Some(c) => {
                        reshare_with(net, &s, &setup, share.as_ref(), Some(c), &config).await
                    }
                    None => reshare(net, &s, &setup, share.as_ref(), &config).await,
                };
                (p, result)
            }
        })
        .collect::<Vec<_>>();
    futures::future::join_all(runs).await.into_iter().collect()
}

/// The new shares by party, after checking every participant succeeded and agrees.
fn new_shares(outcomes: Outcomes, setup: &ReshareSetup) -> Vec<IncompleteKeyShare> {
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
    setup
        .new_committee
        .iter()
        .map(|p| shares[p].clone())
        .collect()
}

/// Signs with `signers` (positions in `committee`), whose key shares are `shares` combined
/// with the auxiliary info of the fixture committee of the same size; returns whether k256
/// verifies the signature.
async fn signs(
    nodes: &[Arc<SecureTransport>],
    committee: &[PartyId],
    shares: &[IncompleteKeyShare],
    aux_from: &CommitteeFixture,
    signers: &[PartyId],
) -> bool {
    let s = spec(Protocol::SIGN, signers);
    let input = SigningInput::Sha256(b"reshared key signs".to_vec());
    let runs = signers.iter().map(|p| {
        let k = committee.iter().position(|c| c == p).unwrap();
        let aux = aux_from.shares[k].aux.clone().validate().unwrap();
        let share = KeyShare::from_parts((shares[k].clone(), aux)).unwrap();
        let (net, s, input) = (node_of(nodes, *p), s.clone(), input.clone());
        let committee = committee.to_vec();
        async move {
            sign(
                net,
                &s,
                &committee,
                &share,
                &[],
                &input,
                &MpcConfig::default(),
            )
            .await
        }
    });
    let sigs = futures::future::try_join_all(runs).await.unwrap();
    let pk = shares[0].shared_public_key;
    sigs.iter()
        .all(|sig| verify_signature(&pk.into_inner(), &input, sig))
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
async fn refresh_renews_every_share_of_the_same_key() {
    let keys = keys(3);
    let nodes = memory_nodes(&keys, 3).await;
    let old = insecure_committee_2of3();
    let old_shares = incomplete_shares(&old);
    let setup = setup(Kind::Refresh, &old, &[1, 2, 3], &[1, 2, 3], 2);
    let outcomes = run(&nodes, &setup, &old_shares, &MpcConfig::default(), &[]).await;
    let new = new_shares(outcomes, &setup);
    assert_same_key(&old, &new);
    for (k, share) in new.iter().enumerate() {
        let before = &old.shares[k].core;
        assert_eq!(share.i, before.i);
        assert_ne!(value(&share.x), value(&before.x), "share {k} renewed");
        assert_ne!(share.public_shares, before.public_shares);
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
    // The committee's auxiliary info still fits: the refreshed shares sign.
    let committee = parties(&[1, 2, 3]);
    assert!(signs(&nodes, &committee, &new, &old, &parties(&[1, 3])).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_of_three_reshares_to_three_of_five_and_back() {
    let keys = keys(5);
    let nodes = memory_nodes(&keys, 5).await;
    let old = insecure_committee_2of3();
    let old_shares = incomplete_shares(&old);
    let five = insecure_committee_3of5();

    // 2-of-3 (p1 p2 p3) -> 3-of-5 (p1..p5); p1 and p3 deal, p2 only receives.
    let up = setup(Kind::Reshare, &old, &[1, 3], &[1, 2, 3, 4, 5], 3);
    let outcomes = run(&nodes, &up, &old_shares, &MpcConfig::default(), &[]).await;
    let new = new_shares(outcomes, &up);
    assert_same_key(&old, &new);
    for share in &new {
        assert_eq!(share.min_signers(), 3);
        assert_eq!(share.public_shares.len(), 5);
    }
    let old_list: Vec<_> = old_shares.values().cloned().collect();
    let x = secret(&old_list[..2]);
    for quorum in [[0, 1, 2], [2, 3, 4], [0, 2, 4], [1, 3, 4]] {
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
    let committee5 = parties(&[1, 2, 3, 4, 5]);
    assert!(signs(&nodes, &committee5, &new, &five, &parties(&[2, 4, 5])).await);

    // 3-of-5 -> 2-of-3 (p2 p4 p5 -> p5 p1 p3): overlapping committees, a new order, p2 and
    // p4 leave, p1 and p3 only receive.
    let by_party: BTreeMap<PartyId, IncompleteKeyShare> = committee5
        .iter()
        .copied()
        .zip(new.iter().cloned())
        .collect();
    let mut down = ReshareSetup {
        kind: Kind::Reshare,
        key: new[0].key_info.clone(),
        old_committee: committee5.clone(),
        dealers: parties(&[2, 4, 5]),
        new_committee: parties(&[5, 1, 3]),
        new_threshold: 2,
    };
    let outcomes = run(&nodes, &down, &by_party, &MpcConfig::default(), &[]).await;
    let back = new_shares(outcomes, &down);
    assert_same_key(&old, &back);
    assert_eq!(secret(&back[..2]), x);
    assert_eq!(secret(&back[1..]), x);
    let committee3 = parties(&[5, 1, 3]);
    assert!(signs(&nodes, &committee3, &back, &old, &parties(&[3, 5])).await);

    // A dealer set that is not exactly t holders is refused before anything is sent.
    down.dealers = parties(&[2, 4]);
    let s = spec(Protocol::RESHARE, &down.participants());
    let err = reshare(
        node_of(&nodes, PartyId(2)),
        &s,
        &down,
        by_party.get(&PartyId(2)),
        &MpcConfig::default(),
    )
    .await
    .err()
    .expect("two dealers for a 3-of-5 key refused");
    assert!(matches!(err, MpcError::InvalidSession(_)), "{err}");
}

/// A dealer that cheats is named by the parties that caught it, and nobody gets a share.
fn assert_blamed(outcomes: &Outcomes, cheater: PartyId, fault: &Fault, by: &[PartyId]) {
    for (p, outcome) in outcomes {
        match outcome {
            Err(MpcError::Blamed { blamed, .. }) => {
                assert_eq!(Blame::parties(blamed), vec![cheater], "{p}: {blamed:?}");
                let accusers: Vec<PartyId> = blamed.iter().map(|b| b.by).collect();
                assert_eq!(accusers, by, "{p}");
                assert!(blamed.iter().all(|b| b.reason == fault.to_string()));
            }
            Err(other) => panic!("{p}: expected blame, got {other}"),
            Ok(_) => panic!("{p} finished despite a cheating dealer"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dealer_whose_sub_share_does_not_match_its_commitments_is_named() {
    let keys = keys(5);
    let nodes = memory_nodes(&keys, 5).await;
    let old = insecure_committee_2of3();
    let old_shares = incomplete_shares(&old);
    let up = setup(Kind::Reshare, &old, &[1, 3], &[1, 2, 3, 4, 5], 3);
    let s = spec(Protocol::RESHARE, &up.participants());
    // p3 deals honestly except for p4's sub-share.
    let mut bad = Contribution::deal(&s, &up, &old_shares[&PartyId(3)], PartyId(3)).unwrap();
    bad.sub_shares[3] = SecretScalar::random(&mut OsRng);
    let outcomes = run_in(
        &nodes,
        &up,
        &old_shares,
        s,
        Some((PartyId(3), bad)),
        &MpcConfig::default(),
        &[],
    )
    .await;
    assert_eq!(outcomes.len(), 5);
    assert_blamed(&outcomes, PartyId(3), &Fault::BadSubShare, &[PartyId(4)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dealer_whose_constant_term_is_wrong_is_named_by_everyone() {
    let keys = keys(5);
    let nodes = memory_nodes(&keys, 5).await;
    let old = insecure_committee_2of3();
    let old_shares = incomplete_shares(&old);
    let up = setup(Kind::Reshare, &old, &[1, 3], &[1, 2, 3, 4, 5], 3);
    let s = spec(Protocol::RESHARE, &up.participants());
    let sid = s.execution_id();
    let plan = up.plan().unwrap();
    // p1 deals a consistent polynomial around a share it does not hold (x1 + 1): every
    // sub-share matches the commitments, but the constant term is not its weighted share.
    let mut fake = (*old_shares[&PartyId(1)]).clone();
    let mut shifted = *value(&fake.x) + Scalar::one();
    fake.x = NonZero::from_secret_scalar(SecretScalar::new(&mut shifted)).unwrap();
    let (secret, dealing) = reshare_core::deal(&mut OsRng, &sid, &plan, 0, &fake).unwrap();
    let bad = Contribution {
        commitment: reshare_core::commitment(&sid, 0, &dealing),
        sub_shares: (0..5)
            .map(|j| secret.sub_share(&plan, j).unwrap())
            .collect(),
        dealing,
    };
    let outcomes = run_in(
        &nodes,
        &up,
        &old_shares,
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
    let outcomes = run(&nodes, &up, &old_shares, &config, &[PartyId(5)]).await;
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
    let shares: Vec<_> = old_shares.values().cloned().collect();
    assert!(signs(&nodes, &committee, &shares, &old, &parties(&[1, 2])).await);
}
