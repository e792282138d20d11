//! Runs a resharing or refresh session over a secure session: the three rounds of
//! `docs/protocols/reshare.md` (commit; reveal and sub-shares; echo and verdict) around the
//! sans-IO [`core`](super::core).

use std::sync::Arc;

use cggmp24::generic_ec::SecretScalar;
use cggmp24::key_share::DirtyKeyInfo;
use futures::SinkExt;
use rand_core::OsRng;
use round_based::rounds_router::simple_store::RoundInput;
use round_based::rounds_router::RoundsRouter;
use round_based::{Outgoing, ProtocolMessage};
use serde::{Deserialize, Serialize};
use tessera_transport::SecureTransport;
use tessera_wire::{PartyId, Protocol};

use super::core::{self, Dealing, Fault, Hash, Kind, Plan};
use crate::delivery::{connect, MpcConfig, SessionSpec};
use crate::protocols::{expect_protocol, Curve, IncompleteKeyShare};
use crate::MpcError;

/// A reshare or refresh session as the coordinator's signed session start describes it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReshareSetup {
    /// Reshare or refresh.
    pub kind: Kind,
    /// The key's public info before the session (from the key share; a new party gets it from
    /// the session start). Carried as JSON text: the library's serde form omits absent fields,
    /// which a binary codec cannot decode.
    #[serde(with = "key_info_text")]
    pub key: DirtyKeyInfo<Curve>,
    /// The committee holding the key, in key order (position `k` holds share `k`).
    pub old_committee: Vec<PartyId>,
    /// Who deals, in dealing order: exactly the key's threshold of old holders for a reshare,
    /// the whole committee for a refresh.
    pub dealers: Vec<PartyId>,
    /// The committee receiving the key, in its new key order; the old one for a refresh.
    pub new_committee: Vec<PartyId>,
    /// The new threshold; the old one for a refresh.
    pub new_threshold: u16,
}

impl PartialEq for ReshareSetup {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind
            && core::same_key(&self.key, &other.key)
            && self.old_committee == other.old_committee
            && self.dealers == other.dealers
            && self.new_committee == other.new_committee
            && self.new_threshold == other.new_threshold
    }
}

impl Eq for ReshareSetup {}

mod key_info_text {
    //! A key's public info as JSON text inside any serde format.
    use cggmp24::key_share::DirtyKeyInfo;
    use serde::{de::Error as _, ser::Error as _, Deserialize, Deserializer, Serializer};

    use crate::Curve;

    pub fn serialize<S: Serializer>(key: &DirtyKeyInfo<Curve>, s: S) -> Result<S::Ok, S::Error> {
        let text = serde_json::to_string(key).map_err(S::Error::custom)?;
        s.serialize_str(&text)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DirtyKeyInfo<Curve>, D::Error> {
        let text = String::deserialize(d)?;
        serde_json::from_str(&text).map_err(D::Error::custom)
    }
}

impl ReshareSetup {
    /// The session's participants, in protocol order: the dealers, then the receivers that do
    /// not deal.
    pub fn participants(&self) -> Vec<PartyId> {
        let mut parties = self.dealers.clone();
        parties.extend(
            self.new_committee
                .iter()
                .filter(|p| !self.dealers.contains(p)),
        );
        parties
    }

    /// Checks the setup and turns it into the core's plan.
    pub fn plan(&self) -> Result<Plan<Curve>, MpcError> {
        let invalid = |m: String| MpcError::InvalidSession(m);
        let distinct =
            |list: &[PartyId]| list.iter().enumerate().all(|(a, p)| !list[..a].contains(p));
        if !distinct(&self.old_committee) || !distinct(&self.new_committee) {
            return Err(invalid("a committee lists a party twice".into()));
        }
        if self.old_committee.len() != self.key.public_shares.len() {
            return Err(invalid(format!(
                "the old committee has {} parties but the key {} shares",
                self.old_committee.len(),
                self.key.public_shares.len()
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
            Kind::Reshare => Plan::reshare(&self.key, positions, n, self.new_threshold),
            Kind::Refresh => {
                if self.dealers != self.old_committee || self.new_committee != self.old_committee {
                    return Err(invalid(
                        "a refresh is dealt by and to the whole committee, in key order".into(),
                    ));
                }
                Plan::refresh(&self.key)
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
}

/// What a party gets out of a successful session.
pub struct ReshareOutput {
    /// The new key share, for a party of the new committee. It must stay pending until the
    /// coordinator activates it (every receiver confirmed the same `confirmation`).
    pub share: Option<IncompleteKeyShare>,
    /// The new public key info (same public key and chain code, new public shares).
    pub key: DirtyKeyInfo<Curve>,
    /// What this party reports to the coordinator: a hash of the session and the new public
    /// key info. Every participant computes the same one.
    pub confirmation: Hash,
}

/// Everything a dealer sends: its round-1 commitment, its dealing, and one sub-share per
/// receiver in new-committee order. [`Contribution::deal`] makes an honest one.
pub struct Contribution {
    /// Round 1.
    pub commitment: Hash,
    /// Round 2, broadcast.
    pub dealing: Dealing<Curve>,
    /// Round 2, point to point, indexed by position in the new committee.
    pub sub_shares: Vec<SecretScalar<Curve>>,
}

impl Contribution {
    /// An honest dealer's contribution for `spec`'s session.
    pub fn deal(
        spec: &SessionSpec,
        setup: &ReshareSetup,
        share: &IncompleteKeyShare,
        me: PartyId,
    ) -> Result<Self, MpcError> {
        let plan = setup.plan()?;
        let d = setup
            .dealers
            .iter()
            .position(|p| *p == me)
            .ok_or_else(|| MpcError::InvalidSession(format!("{me} is not a dealer")))?;
        let sid = spec.execution_id();
        let (secret, dealing) = core::deal(&mut OsRng, &sid, &plan, d, share)
            .map_err(|e| MpcError::InvalidSession(e.to_string()))?;
        let sub_shares = (0..plan.new_parties())
            .map(|j| secret.sub_share(&plan, j))
            .collect::<Result<_, _>>()
            .map_err(|e| MpcError::InvalidSession(e.to_string()))?;
        Ok(Contribution {
            commitment: core::commitment(&sid, plan.dealers()[d], &dealing),
            dealing,
            sub_shares,
        })
    }
}

/// One accusation: `accused`'s messages failed `fault` at `by`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Complaint {
    /// The dealer accused.
    pub accused: PartyId,
    /// What was wrong.
    pub fault: Fault,
}

/// The protocol's messages, one variant per round.
#[derive(Clone, Serialize, Deserialize, ProtocolMessage)]
#[serde(bound = "")]
pub enum ReshareMsg {
    /// Round 1.
    Commit(CommitMsg),
    /// Round 2, broadcast.
    Reveal(RevealMsg),
    /// Round 2, point to point.
    SubShare(SubShareMsg),
    /// Round 3.
    Echo(EchoMsg),
}

/// Round 1: a dealer's commitment (`None` from a party that does not deal).
#[derive(Clone, Serialize, Deserialize)]
pub struct CommitMsg(pub Option<Hash>);

/// Round 2: a dealer's reveal (`None` from a party that does not deal).
#[derive(Clone, Serialize, Deserialize)]
#[serde(bound = "")]
pub struct RevealMsg(pub Option<Dealing<Curve>>);

/// Round 2, point to point: the recipient's sub-share, if it is a dealer's message to a
/// receiver.
#[derive(Clone, Serialize, Deserialize)]
pub struct SubShareMsg(pub Option<SecretScalar<Curve>>);

/// Round 3: the echo hash (`None` from a party that complains) and the complaints.
#[derive(Clone, Serialize, Deserialize)]
pub struct EchoMsg {
    /// Hash of every commitment and dealing as the sender saw them.
    pub echo: Option<Hash>,
    /// Dealers whose messages failed the sender's checks.
    pub complaints: Vec<Complaint>,
}

/// Runs the session as `net`'s party: deals if it is a dealer (from `share`), receives if it is
/// in the new committee (a refresh also needs its current `share`).
pub async fn reshare(
    net: Arc<SecureTransport>,
    spec: &SessionSpec,
    setup: &ReshareSetup,
    share: Option<&IncompleteKeyShare>,
    config: &MpcConfig,
) -> Result<ReshareOutput, MpcError> {
    let me = net.party();
    let contribution = match share {
        Some(share) if setup.dealers.contains(&me) => {
            Some(Contribution::deal(spec, setup, share, me)?)
        }
        _ => None,
    };
    reshare_with(net, spec, setup, share, contribution, config).await
}

/// [`reshare`] with the dealer's contribution given: tests use it to play a dealer that
/// cheats.
pub async fn reshare_with(
    net: Arc<SecureTransport>,
    spec: &SessionSpec,
    setup: &ReshareSetup,
    share: Option<&IncompleteKeyShare>,
    contribution: Option<Contribution>,
    config: &MpcConfig,
) -> Result<ReshareOutput, MpcError> {
    expect_protocol(spec, Protocol::RESHARE)?;
    let me = net.party();
    let i = spec.my_index(me)?;
    let plan = setup.plan()?;
    if spec.parties != setup.participants() {
        return Err(MpcError::InvalidSession(
            "the session's parties are not the reshare's dealers and receivers in order".into(),
        ));
    }
    let dealer = setup.dealers.iter().position(|p| *p == me);
    let receiver = setup
        .new_committee
        .iter()
        .position(|p| *p == me)
        .map(|j| j as u16);
    if dealer.is_some() != contribution.is_some() {
        return Err(MpcError::InvalidSession(format!(
            "{me} {} a dealer but {} a contribution",
            if dealer.is_some() { "is" } else { "is not" },
            if contribution.is_some() {
                "has"
            } else {
                "has no"
            }
        )));
    }
    if let Some(share) = share {
        if !core::same_key(&share.key_info, &setup.key) {
            return Err(MpcError::InvalidSession(
                "the key share is not of the key being reshared".into(),
            ));
        }
    }
    let old_share = match (setup.kind, receiver) {
        (Kind::Refresh, Some(_)) => Some(share.ok_or_else(|| {
            MpcError::InvalidSession("a refresh needs this party's current share".into())
        })?),
        _ => None,
    };

    let (incoming, mut outgoing, failure) = connect::<ReshareMsg>(net, spec, me, config);
    let n = spec.parties.len() as u16;
    let mut rounds = RoundsRouter::<ReshareMsg>::builder();
    let round1 = rounds.add_round(RoundInput::<CommitMsg>::broadcast(i, n));
    let round2 = rounds.add_round(RoundInput::<RevealMsg>::broadcast(i, n));
    let round2_p2p = rounds.add_round(RoundInput::<SubShareMsg>::p2p(i, n));
    let round3 = rounds.add_round(RoundInput::<EchoMsg>::broadcast(i, n));
    let mut rounds = rounds.listen(incoming);
    let io = |e: &dyn std::fmt::Display| {
        failure.take().unwrap_or_else(|| MpcError::Aborted {
            protocol: spec.protocol,
            session: spec.session,
            detail: e.to_string(),
        })
    };

    // Round 1: commit.
    let my_commitment = contribution.as_ref().map(|c| c.commitment);
    outgoing
        .send(Outgoing::broadcast(ReshareMsg::Commit(CommitMsg(
            my_commitment,
        ))))
        .await
        .map_err(|e| io(&e))?;
    let commitments = rounds.complete(round1).await.map_err(|e| io(&e))?;
    let commitments: Vec<Option<Hash>> = commitments
        .into_iter_including_me(CommitMsg(my_commitment))
        .map(|m| m.0)
        .collect();

    // Round 2: reveal, and a sub-share to every receiver.
    let my_dealing = contribution.as_ref().map(|c| c.dealing.clone());
    outgoing
        .send(Outgoing::broadcast(ReshareMsg::Reveal(RevealMsg(
            my_dealing.clone(),
        ))))
        .await
        .map_err(|e| io(&e))?;
    let mut my_sub_share = None;
    for (k, party) in spec.parties.iter().enumerate() {
        let sub_share = contribution.as_ref().and_then(|c| {
            let j = setup.new_committee.iter().position(|p| p == party)?;
            c.sub_shares.get(j).cloned()
        });
        if *party == me {
            my_sub_share = sub_share;
        } else {
            outgoing
                .send(Outgoing::p2p(
                    k as u16,
                    ReshareMsg::SubShare(SubShareMsg(sub_share)),
                ))
                .await
                .map_err(|e| io(&e))?;
        }
    }
    let dealings = rounds.complete(round2).await.map_err(|e| io(&e))?;
    let dealings: Vec<Option<Dealing<Curve>>> = dealings
        .into_iter_including_me(RevealMsg(my_dealing))
        .map(|m| m.0)
        .collect();
    let sub_shares = rounds.complete(round2_p2p).await.map_err(|e| io(&e))?;
    let sub_shares: Vec<Option<SecretScalar<Curve>>> = sub_shares
        .into_iter_including_me(SubShareMsg(my_sub_share))
        .map(|m| m.0)
        .collect();

    // Checks 1-5, for every dealer in dealing order.
    let sid = spec.execution_id();
    let mut complaints = Vec::new();
    let mut checked = Vec::new();
    for (d, dealer_party) in setup.dealers.iter().enumerate() {
        let k = usize::from(spec.index_of(*dealer_party).expect("dealers take part"));
        let sub_share = receiver.map(|j| (j, sub_shares[k].as_ref()));
        let result = if *dealer_party == me {
            // Our own dealing: computed here, not checked against ourselves.
            own(commitments[k].as_ref(), dealings[k].as_ref(), sub_share)
        } else {
            check_dealer(
                &sid,
                &plan,
                d,
                commitments[k].as_ref(),
                dealings[k].as_ref(),
                sub_share,
            )
        };
        match result {
            Ok(parts) => checked.push(parts),
            Err(fault) => complaints.push(Complaint {
                accused: *dealer_party,
                fault,
            }),
        }
    }

    // Round 3: echo and verdict.
    let my_echo = complaints.is_empty().then(|| {
        let hashes: Vec<Hash> = checked.iter().map(|c| c.0).collect();
        let all: Vec<Dealing<Curve>> = checked.iter().map(|c| c.1.clone()).collect();
        core::echo(&sid, &hashes, &all)
    });
    let my_verdict = EchoMsg {
        echo: my_echo,
        complaints: complaints.clone(),
    };
    outgoing
        .send(Outgoing::broadcast(ReshareMsg::Echo(my_verdict.clone())))
        .await
        .map_err(|e| io(&e))?;
    let verdicts = rounds.complete(round3).await.map_err(|e| io(&e))?;
    let verdicts: Vec<EchoMsg> = verdicts.into_iter_including_me(my_verdict).collect();
    judge(spec, &verdicts, my_echo)?;

    // Output.
    let dealings: Vec<Dealing<Curve>> = checked.iter().map(|c| c.1.clone()).collect();
    let key = core::new_key_info(&plan, &dealings)
        .map_err(|e| aborted(spec, format!("cannot build the new key: {e}")))?;
    let share = match receiver {
        Some(j) => {
            let subs: Vec<SecretScalar<Curve>> = checked.into_iter().filter_map(|c| c.2).collect();
            let old = old_share.map(|s| &**s);
            Some(
                core::new_share(&plan, j, &dealings, &subs, old)
                    .map_err(|e| aborted(spec, format!("cannot build the new share: {e}")))?,
            )
        }
        None => None,
    };
    let confirmation = core::confirmation(&sid, &key);
    Ok(ReshareOutput {
        share,
        key,
        confirmation,
    })
}

/// A dealer's messages after they passed every check: commitment, dealing, and this party's
/// sub-share if it receives one.
type Checked = (Hash, Dealing<Curve>, Option<SecretScalar<Curve>>);

fn check_dealer(
    sid: &[u8],
    plan: &Plan<Curve>,
    d: usize,
    commitment: Option<&Hash>,
    dealing: Option<&Dealing<Curve>>,
    receiving: Option<(u16, Option<&SecretScalar<Curve>>)>,
) -> Result<Checked, Fault> {
    let (commitment, dealing) = commitment.zip(dealing).ok_or(Fault::Missing)?;
    core::check_dealing(sid, plan, d, commitment, dealing)?;
    let sub_share = match receiving {
        Some((j, sub_share)) => {
            let sub_share = sub_share.ok_or(Fault::Missing)?;
            core::check_sub_share(plan, dealing, j, sub_share)?;
            Some(sub_share.clone())
        }
        None => None,
    };
    Ok((*commitment, dealing.clone(), sub_share))
}

fn own(
    commitment: Option<&Hash>,
    dealing: Option<&Dealing<Curve>>,
    receiving: Option<(u16, Option<&SecretScalar<Curve>>)>,
) -> Result<Checked, Fault> {
    let (commitment, dealing) = commitment.zip(dealing).ok_or(Fault::Missing)?;
    let sub_share = match receiving {
        Some((_, sub_share)) => Some(sub_share.ok_or(Fault::Missing)?.clone()),
        None => None,
    };
    Ok((*commitment, dealing.clone(), sub_share))
}

fn aborted(spec: &SessionSpec, detail: String) -> MpcError {
    MpcError::Aborted {
        protocol: spec.protocol,
        session: spec.session,
        detail,
    }
}

/// Checks 6 and 7: nobody complained, and everybody saw the same broadcasts.
fn judge(spec: &SessionSpec, verdicts: &[EchoMsg], mine: Option<Hash>) -> Result<(), MpcError> {
    let blamed: Vec<crate::Blame> = verdicts
        .iter()
        .zip(&spec.parties)
        .flat_map(|(v, by)| {
            v.complaints.iter().map(|c| crate::Blame {
                party: c.accused,
                by: *by,
                reason: c.fault.to_string(),
            })
        })
        .collect();
    if !blamed.is_empty() {
        return Err(MpcError::Blamed {
            protocol: spec.protocol,
            session: spec.session,
            blamed,
        });
    }
    let differing: Vec<PartyId> = verdicts
        .iter()
        .zip(&spec.parties)
        .filter(|(v, _)| v.echo.is_none() || v.echo != mine)
        .map(|(_, p)| *p)
        .collect();
    if !differing.is_empty() {
        return Err(aborted(
            spec,
            format!(
                "broadcasts were not consistent: {} saw different commitments",
                PartyId::list(&differing)
            ),
        ));
    }
    Ok(())
}
