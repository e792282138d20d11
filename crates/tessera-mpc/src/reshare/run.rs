//! Runs a resharing or refresh session over a secure session: the three rounds of
//! `docs/protocols/reshare.md` (commit; reveal and signed sub-shares; echo and verdict) around
//! the sans-IO [`core`](super::core), then the receivers' new auxiliary info.

use std::sync::Arc;

use cggmp24::generic_ec::{Curve as EcCurve, SecretScalar};
use cggmp24::key_share::{DirtyIncompleteKeyShare, DirtyKeyInfo};
use futures::SinkExt;
use rand_core::OsRng;
use round_based::rounds_router::simple_store::RoundInput;
use round_based::rounds_router::RoundsRouter;
use round_based::{Outgoing, ProtocolMessage};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tessera_channel::BroadcastEvidence;
use tessera_transport::SecureTransport;
use tessera_wire::{KeyKind, PartyId, Protocol};

use super::core::{self, Dealing, Fault, Hash, Kind, Plan};
use super::setup::{ReshareCurve, ReshareSetup};
use crate::delivery::{connect_signed, MpcConfig, SessionSpec};
use crate::protocols::{expect_protocol, AuxInfo, Curve, IncompleteKeyShare, KeyShare, PrimeSet};
use crate::{Blame, MpcError};

/// What a receiver needs for the new auxiliary info: one fresh prime set (consumed) and the
/// round deadline of the auxiliary-info protocol, whose rounds include long proofs.
pub struct AuxInput {
    /// This receiver's primes, from its pool.
    pub primes: PrimeSet,
    /// Settings of the auxiliary-info protocol.
    pub config: MpcConfig,
}

/// A receiver's new epoch: its share and the new auxiliary info, which form a valid key share.
pub struct NewShare {
    /// The share, without auxiliary info.
    pub core: IncompleteKeyShare,
    /// The receivers' new auxiliary info (fresh Paillier keys and ring-Pedersen parameters).
    pub aux: AuxInfo,
    /// A hash of the public part of the new auxiliary info (every receiver's Paillier modulus
    /// and ring-Pedersen parameters); every receiver computes the same one.
    pub aux_digest: Hash,
}

/// What a party gets out of a successful session.
pub struct ReshareOutput {
    /// The new epoch, for a party of the new committee. It must stay pending until the
    /// session's activation certificate arrives (`docs/protocols/reshare.md`).
    pub share: Option<NewShare>,
    /// The new public key info (same public key and chain code, new public shares).
    pub key: DirtyKeyInfo<Curve>,
    /// A hash of the session and the new public key info. Every participant computes the
    /// same one.
    pub confirmation: Hash,
}

/// Everything a dealer sends: its round-1 commitment, its dealing, and one sub-share per
/// receiver in new-committee order. [`Contribution::deal`] makes an honest one.
pub struct Contribution<E: EcCurve = Curve> {
    /// Round 1.
    pub commitment: Hash,
    /// Round 2, broadcast.
    pub dealing: Dealing<E>,
    /// Round 2, point to point, indexed by position in the new committee (`None`: send that
    /// receiver no value).
    pub sub_shares: Vec<Option<SecretScalar<E>>>,
}

impl<E: ReshareCurve> Contribution<E> {
    /// An honest dealer's contribution for `spec`'s session.
    pub fn deal(
        spec: &SessionSpec,
        setup: &ReshareSetup,
        share: &DirtyIncompleteKeyShare<E>,
        me: PartyId,
    ) -> Result<Self, MpcError> {
        let plan = setup.plan::<E>()?;
        let d = setup
            .dealers
            .iter()
            .position(|p| *p == me)
            .ok_or_else(|| MpcError::InvalidSession(format!("{me} is not a dealer")))?;
        let sid = setup.session_hash(spec, &plan);
        let (secret, dealing) = core::deal(&mut OsRng, &sid, &plan, d, share)
            .map_err(|e| MpcError::InvalidSession(e.to_string()))?;
        let sub_shares = (0..plan.new_parties())
            .map(|j| secret.sub_share(&plan, j).map(Some))
            .collect::<Result<_, _>>()
            .map_err(|e| MpcError::InvalidSession(e.to_string()))?;
        Ok(Contribution {
            commitment: core::commitment(&sid, plan.dealers()[d], &dealing),
            dealing,
            sub_shares,
        })
    }
}

/// A dealer's signed round-2 message to the complainer, as the complainer received it: what
/// makes a sub-share complaint provable.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubShareEvidence {
    /// The dealer's signed statement over the message.
    pub signed: BroadcastEvidence,
    /// The encoded message (`ReshareMsg::SubShare`). It reveals the sub-share of a session
    /// that is aborted.
    pub payload: Vec<u8>,
}

/// One accusation: `accused`'s messages failed `fault` at the sender of the verdict.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Complaint {
    /// The dealer accused.
    pub accused: PartyId,
    /// What was wrong.
    pub fault: Fault,
    /// For a sub-share fault, the dealer's signed message.
    pub evidence: Option<SubShareEvidence>,
}

/// The protocol's messages, one variant per round.
#[derive(Clone, Serialize, Deserialize, ProtocolMessage)]
#[serde(bound = "")]
pub enum ReshareMsg<E: EcCurve = Curve> {
    /// Round 1.
    Commit(CommitMsg),
    /// Round 2, broadcast.
    Reveal(RevealMsg<E>),
    /// Round 2, point to point, signed.
    SubShare(SubShareMsg<E>),
    /// Round 3.
    Echo(EchoMsg),
}

/// The round of [`ReshareMsg::SubShare`]: its point-to-point messages travel signed.
pub const SUB_SHARE_ROUND: u16 = 2;

/// Round 1: a dealer's commitment (`None` from a party that does not deal).
#[derive(Clone, Serialize, Deserialize)]
pub struct CommitMsg(pub Option<Hash>);

/// Round 2: a dealer's reveal (`None` from a party that does not deal).
#[derive(Clone, Serialize, Deserialize)]
#[serde(bound = "")]
pub struct RevealMsg<E: EcCurve = Curve>(pub Option<Dealing<E>>);

/// Round 2, point to point: from a dealer to a receiver, the receiver's position in the new
/// committee and its sub-share; empty otherwise. Signed by the sender.
#[derive(Clone, Serialize, Deserialize)]
#[serde(bound = "")]
pub struct SubShareMsg<E: EcCurve = Curve> {
    /// The recipient's position in the new committee, if it receives.
    pub receiver: Option<u16>,
    /// The sub-share, if the sender deals to this receiver.
    pub value: Option<SecretScalar<E>>,
}

/// A dealer's signed round-1 and round-2 broadcast statements as one participant received
/// them: what the echo compares.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeenBroadcasts {
    /// The dealer's signed statement over its commit message.
    pub commit: BroadcastEvidence,
    /// The dealer's signed statement over its reveal message.
    pub reveal: BroadcastEvidence,
}

/// Round 3: for every dealer (in dealing order) its broadcasts as the sender received them
/// (`None` for the sender's own dealing), and the complaints.
#[derive(Clone, Serialize, Deserialize)]
pub struct EchoMsg {
    /// Each dealer's signed broadcasts as the sender received them.
    pub seen: Vec<Option<SeenBroadcasts>>,
    /// Dealers whose messages failed the sender's checks.
    pub complaints: Vec<Complaint>,
}

/// Runs the session as `net`'s party: deals if it is a dealer (from `share`), receives if it is
/// in the new committee (a refresh also needs its current `share`, and every receiver a prime
/// set for the new auxiliary info).
pub async fn reshare(
    net: Arc<SecureTransport>,
    spec: &SessionSpec,
    setup: &ReshareSetup,
    share: Option<&IncompleteKeyShare>,
    aux: Option<AuxInput>,
    config: &MpcConfig,
) -> Result<ReshareOutput, MpcError> {
    let me = net.party();
    let contribution = match share {
        Some(share) if setup.dealers.contains(&me) => {
            Some(Contribution::deal(spec, setup, share, me)?)
        }
        _ => None,
    };
    reshare_with(net, spec, setup, share, contribution, aux, config).await
}

/// Runs the session for a FROST key (Taproot, Ed25519), as `net`'s party: the share protocol
/// alone, since FROST keys have no auxiliary info. Deals from `share` if this party deals; a
/// refresh's receiver also needs its current `share`.
pub async fn reshare_frost<E: ReshareCurve>(
    net: Arc<SecureTransport>,
    spec: &SessionSpec,
    setup: &ReshareSetup,
    share: Option<&DirtyIncompleteKeyShare<E>>,
    config: &MpcConfig,
) -> Result<SharesOutput<E>, MpcError> {
    if !setup.key_kind.is_frost() {
        return Err(MpcError::InvalidSession(format!(
            "the setup names key kind {}, which needs new auxiliary info too (run `reshare`)",
            setup.key_kind
        )));
    }
    let me = net.party();
    let contribution = match share {
        Some(share) if setup.dealers.contains(&me) => {
            Some(Contribution::deal(spec, setup, share, me)?)
        }
        _ => None,
    };
    reshare_shares(net, spec, setup, share, contribution, config).await
}

/// [`reshare`] with the dealer's contribution given: tests use it to play a dealer that
/// cheats.
pub async fn reshare_with(
    net: Arc<SecureTransport>,
    spec: &SessionSpec,
    setup: &ReshareSetup,
    share: Option<&IncompleteKeyShare>,
    contribution: Option<Contribution>,
    aux: Option<AuxInput>,
    config: &MpcConfig,
) -> Result<ReshareOutput, MpcError> {
    if setup.key_kind != KeyKind::Ecdsa {
        return Err(MpcError::InvalidSession(format!(
            "the setup names key kind {}; only ECDSA keys have auxiliary info (run the \
             share protocol alone for it)",
            setup.key_kind
        )));
    }
    let me = net.party();
    let receiver = setup.new_committee.contains(&me);
    if receiver != aux.is_some() {
        return Err(MpcError::InvalidSession(format!(
            "{me} {} the new committee but {} a prime set for its auxiliary info",
            if receiver { "is in" } else { "is not in" },
            if aux.is_some() { "has" } else { "has no" }
        )));
    }
    let out = reshare_shares(
        net.clone(),
        spec,
        setup,
        share.map(|s| &**s),
        contribution,
        config,
    )
    .await?;
    let share = match (out.share, aux) {
        (Some(core), Some(aux)) => Some(renew_aux(net, spec, setup, &out.sid, core, aux).await?),
        _ => None,
    };
    Ok(ReshareOutput {
        share,
        key: out.key,
        confirmation: out.confirmation,
    })
}

/// What the share protocol gives one party of a session, before any auxiliary info.
pub struct SharesOutput<E: EcCurve> {
    /// A receiver's new share (validated by the library); `None` for a dealer that does not
    /// receive.
    pub share: Option<cggmp24::IncompleteKeyShare<E>>,
    /// The new public key info (same public key and chain code, new public shares).
    pub key: DirtyKeyInfo<E>,
    /// A hash of the session and the new public key info; every participant computes the
    /// same one.
    pub confirmation: Hash,
    /// The session hash.
    pub sid: Vec<u8>,
}

/// The three rounds of the share protocol (`docs/protocols/reshare.md`) for a key on any
/// curve: what [`reshare`] runs before the auxiliary info of an ECDSA key, and all a FROST key
/// needs. Deals from `share` with `contribution` if this party deals; a refresh also needs the
/// receiver's current `share`.
pub async fn reshare_shares<E: ReshareCurve>(
    net: Arc<SecureTransport>,
    spec: &SessionSpec,
    setup: &ReshareSetup,
    share: Option<&DirtyIncompleteKeyShare<E>>,
    contribution: Option<Contribution<E>>,
    config: &MpcConfig,
) -> Result<SharesOutput<E>, MpcError> {
    expect_protocol(spec, Protocol::RESHARE)?;
    let me = net.party();
    let i = spec.my_index(me)?;
    let plan = setup.plan::<E>()?;
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
        if !core::same_key(&share.key_info, setup.key_info::<E>()?) {
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
    let sid = setup.session_hash(spec, &plan);

    let (incoming, mut outgoing, failure, evidence) =
        connect_signed::<ReshareMsg<E>>(net.clone(), spec, me, config, &[SUB_SHARE_ROUND]);
    let n = spec.parties.len() as u16;
    let mut rounds = RoundsRouter::<ReshareMsg<E>>::builder();
    let round1 = rounds.add_round(RoundInput::<CommitMsg>::broadcast(i, n));
    let round2 = rounds.add_round(RoundInput::<RevealMsg<E>>::broadcast(i, n));
    // Point to point, but signed: the library sees signed messages as broadcasts.
    let round2_p2p = rounds.add_round(RoundInput::<SubShareMsg<E>>::broadcast(i, n));
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

    // Round 2: reveal, and a signed message to every other participant (its sub-share for a
    // receiver).
    let my_dealing = contribution.as_ref().map(|c| c.dealing.clone());
    outgoing
        .send(Outgoing::broadcast(ReshareMsg::Reveal(RevealMsg(
            my_dealing.clone(),
        ))))
        .await
        .map_err(|e| io(&e))?;
    let mut my_sub_share = None;
    for (k, party) in spec.parties.iter().enumerate() {
        let position = setup
            .new_committee
            .iter()
            .position(|p| p == party)
            .map(|j| j as u16);
        let value = contribution
            .as_ref()
            .and_then(|c| c.sub_shares.get(usize::from(position?)).cloned().flatten());
        if *party == me {
            my_sub_share = value;
        } else {
            let message = SubShareMsg {
                receiver: position,
                value,
            };
            outgoing
                .send(Outgoing::p2p(k as u16, ReshareMsg::SubShare(message)))
                .await
                .map_err(|e| io(&e))?;
        }
    }
    let dealings = rounds.complete(round2).await.map_err(|e| io(&e))?;
    let dealings: Vec<Option<Dealing<E>>> = dealings
        .into_iter_including_me(RevealMsg(my_dealing))
        .map(|m| m.0)
        .collect();
    let sub_shares = rounds.complete(round2_p2p).await.map_err(|e| io(&e))?;
    let sub_shares: Vec<SubShareMsg<E>> = sub_shares
        .into_iter_including_me(SubShareMsg {
            receiver,
            value: my_sub_share.clone(),
        })
        .collect();

    // Checks 1-5, for every dealer in dealing order.
    let mut complaints = Vec::new();
    let mut checked = Vec::new();
    let mut seen = Vec::new();
    let mut broadcast_ok = Vec::new();
    for (d, dealer_party) in setup.dealers.iter().enumerate() {
        let k = usize::from(spec.index_of(*dealer_party).expect("dealers take part"));
        let (commitment, dealing) = (commitments[k].as_ref(), dealings[k].as_ref());
        let mine = *dealer_party == me;
        seen.push(if mine {
            None
        } else {
            evidence
                .get(0, *dealer_party)
                .zip(evidence.get(1, *dealer_party))
                .map(|(c, r)| SeenBroadcasts {
                    commit: c.evidence,
                    reveal: r.evidence,
                })
        });
        // Our own dealing too: every participant judges every dealing the same way.
        let broadcast = commitment
            .zip(dealing)
            .ok_or(Fault::Missing)
            .and_then(|(c, dealing)| {
                core::check_dealing(&sid, &plan, d, c, dealing)?;
                Ok(dealing)
            });
        broadcast_ok.push(broadcast.is_ok());
        let result = broadcast.and_then(|dealing| {
            let sub_share = match receiver {
                Some(j) => Some(check_sub_share(&plan, dealing, j, &sub_shares[k])?),
                None => None,
            };
            Ok(Checked {
                dealing: dealing.clone(),
                sub_share,
            })
        });
        match result {
            Ok(parts) => checked.push(parts),
            // A party does not accuse itself; the others name it.
            Err(_) if mine => {}
            Err(fault) => complaints.push(Complaint {
                accused: *dealer_party,
                evidence: if fault.in_sub_share() {
                    evidence
                        .get(SUB_SHARE_ROUND, *dealer_party)
                        .map(|m| SubShareEvidence {
                            signed: m.evidence,
                            payload: m.payload.to_vec(),
                        })
                } else {
                    None
                },
                fault,
            }),
        }
    }

    // Round 3: echo and verdict.
    let my_verdict = EchoMsg {
        seen: seen.clone(),
        complaints: complaints.clone(),
    };
    outgoing
        .send(Outgoing::broadcast(ReshareMsg::Echo(my_verdict.clone())))
        .await
        .map_err(|e| io(&e))?;
    let verdicts = rounds.complete(round3).await.map_err(|e| io(&e))?;
    let verdicts: Vec<EchoMsg> = verdicts.into_iter_including_me(my_verdict).collect();
    let sent = |msg: ReshareMsg<E>| payload_hash(&tessera_wire::encode(&msg));
    let mine = SentBroadcasts {
        commit: sent(ReshareMsg::Commit(CommitMsg(my_commitment))),
        reveal: sent(ReshareMsg::Reveal(RevealMsg(
            contribution.as_ref().map(|c| c.dealing.clone()),
        ))),
    };
    let judge = Judge {
        net: &net,
        spec,
        setup,
        plan: &plan,
        me,
        broadcast_ok: &broadcast_ok,
        dealings: &dealings,
        seen: &seen,
        sent: &mine,
    };
    judge.verdicts(&verdicts)?;

    // Output.
    let dealings: Vec<Dealing<E>> = checked.iter().map(|c| c.dealing.clone()).collect();
    let key = core::new_key_info(&plan, &dealings)
        .map_err(|e| aborted(spec, format!("cannot build the new key: {e}")))?;
    let confirmation = core::confirmation(&sid, &key);
    let share = match receiver {
        Some(j) => {
            let subs: Vec<SecretScalar<E>> =
                checked.into_iter().filter_map(|c| c.sub_share).collect();
            let core = core::new_share(&plan, j, &dealings, &subs, old_share)
                .map_err(|e| aborted(spec, format!("cannot build the new share: {e}")))?;
            Some(core)
        }
        None => None,
    };
    Ok(SharesOutput {
        share,
        key,
        confirmation,
        sid,
    })
}

/// Runs the receivers' auxiliary-info protocol for the new epoch and checks that it fits the
/// new share.
async fn renew_aux(
    net: Arc<SecureTransport>,
    spec: &SessionSpec,
    setup: &ReshareSetup,
    sid: &[u8],
    core: IncompleteKeyShare,
    aux: AuxInput,
) -> Result<NewShare, MpcError> {
    let aux_spec = setup.aux_session(spec.session);
    let mut binding = aux_spec.execution_id();
    binding.extend_from_slice(sid);
    let info =
        crate::protocols::aux_info_bound(net, &aux_spec, &binding, aux.primes, &aux.config).await?;
    let aux_digest = aux_digest(sid, &info);
    KeyShare::from_parts((core.clone(), info.clone())).map_err(|e| {
        aborted(
            spec,
            format!("the new share and auxiliary info do not form a key share: {e}"),
        )
    })?;
    Ok(NewShare {
        core,
        aux: info,
        aux_digest,
    })
}

/// The auxiliary digest: a hash of the public part of the auxiliary info (every party's
/// Paillier modulus and ring-Pedersen parameters), bound to the session.
pub fn aux_digest(sid: &[u8], aux: &AuxInfo) -> Hash {
    let public: Vec<[udigest::Bytes<Vec<u8>>; 4]> = aux
        .N
        .iter()
        .zip(&aux.pedersen_params)
        .map(|(n, p)| [n, &p.hat_N, &p.s, &p.t].map(|x| udigest::Bytes(x.to_bytes_msf())))
        .collect();
    udigest::hash::<Sha256>(&AuxDigest { sid, public }).into()
}

#[derive(udigest::Digestable)]
#[udigest(tag = "tessera/reshare/v3/aux")]
struct AuxDigest<'a> {
    #[udigest(as_bytes)]
    sid: &'a [u8],
    public: Vec<[udigest::Bytes<Vec<u8>>; 4]>,
}

/// A dealer's messages after they passed every check: its dealing, and this party's
/// sub-share if it receives one.
struct Checked<E: EcCurve> {
    dealing: Dealing<E>,
    sub_share: Option<SecretScalar<E>>,
}

/// Check 5 on a dealer's signed message to receiver `j`: it names `j` and carries a sub-share
/// that matches the dealer's commitments.
fn check_sub_share<E: EcCurve>(
    plan: &Plan<E>,
    dealing: &Dealing<E>,
    j: u16,
    message: &SubShareMsg<E>,
) -> Result<SecretScalar<E>, Fault> {
    if message.receiver != Some(j) {
        return Err(Fault::BadSubShare);
    }
    let value = message.value.as_ref().ok_or(Fault::MissingSubShare)?;
    core::check_sub_share(plan, dealing, j, value)?;
    Ok(value.clone())
}

fn aborted(spec: &SessionSpec, detail: String) -> MpcError {
    MpcError::Aborted {
        protocol: spec.protocol,
        session: spec.session,
        detail,
    }
}

/// Checks 6 and 7, as every participant makes them on the same broadcast verdicts.
struct Judge<'a, E: EcCurve> {
    net: &'a SecureTransport,
    spec: &'a SessionSpec,
    setup: &'a ReshareSetup,
    plan: &'a Plan<E>,
    me: PartyId,
    /// Whether each dealer's broadcasts passed this party's checks 1-4, in dealing order.
    broadcast_ok: &'a [bool],
    /// Every participant's reveal as received here, in session order.
    dealings: &'a [Option<Dealing<E>>],
    /// Each dealer's broadcasts as received here (`None` for our own).
    seen: &'a [Option<SeenBroadcasts>],
    /// What we broadcast ourselves.
    sent: &'a SentBroadcasts,
}

/// The payload hashes of this party's own commit and reveal messages.
struct SentBroadcasts {
    commit: [u8; 32],
    reveal: [u8; 32],
}

fn payload_hash(payload: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    Sha256::digest(payload).into()
}

impl<E: EcCurve> Judge<'_, E> {
    /// Aborts naming the responsible parties if a dealer's broadcasts differ between
    /// participants, a verdict misreports them, or anybody complained.
    fn verdicts(&self, verdicts: &[EchoMsg]) -> Result<(), MpcError> {
        let blamed = self.echo_blame(verdicts);
        if !blamed.is_empty() {
            return Err(self.blame(blamed));
        }
        let blamed: Vec<Blame> = verdicts
            .iter()
            .zip(&self.spec.parties)
            .flat_map(|(v, by)| v.complaints.iter().map(move |c| self.judge(*by, c)))
            .collect();
        if !blamed.is_empty() {
            return Err(self.blame(blamed));
        }
        Ok(())
    }

    fn blame(&self, blamed: Vec<Blame>) -> MpcError {
        MpcError::Blamed {
            protocol: self.spec.protocol,
            session: self.spec.session,
            blamed,
        }
    }

    /// Check 6: every participant shows each dealer's signed commit and reveal as it received
    /// them. A statement that is not that dealer's, for this session and round, names the
    /// participant that shows it; two valid statements of one dealer over different messages
    /// prove that the dealer showed different broadcasts to different parties, and name it.
    /// An echo must have exactly one entry per dealer: one with fewer or more (a verdict of
    /// the wrong shape) names its sender once, and its entries are not read.
    fn echo_blame(&self, verdicts: &[EchoMsg]) -> Vec<Blame> {
        let mut blamed = Vec::new();
        let dealers = self.setup.dealers.len();
        // Whether each participant's echo has the right shape (our own is taken as it is).
        let shaped: Vec<bool> = verdicts
            .iter()
            .zip(&self.spec.parties)
            .map(|(v, by)| *by == self.me || v.seen.len() == dealers)
            .collect();
        for ((v, by), ok) in verdicts.iter().zip(&self.spec.parties).zip(&shaped) {
            if !ok {
                blamed.push(Blame {
                    party: *by,
                    by: self.me,
                    reason: format!(
                        "its echo has {} entries for {dealers} dealers",
                        v.seen.len()
                    ),
                });
            }
        }
        for (d, dealer) in self.setup.dealers.iter().enumerate() {
            let here = match &self.seen[d] {
                Some(seen) => (seen.commit.payload_hash, seen.reveal.payload_hash),
                None if *dealer == self.me => (self.sent.commit, self.sent.reveal),
                None => continue,
            };
            let mut differing = Vec::new();
            for ((v, by), ok) in verdicts.iter().zip(&self.spec.parties).zip(&shaped) {
                if *by == self.me || by == dealer || !ok {
                    continue;
                }
                let misreport = |what: String| Blame {
                    party: *by,
                    by: self.me,
                    reason: format!("its echo {what}"),
                };
                let Some(shown) = &v.seen[d] else {
                    blamed.push(misreport(format!("shows no broadcasts of {dealer}")));
                    continue;
                };
                let genuine = |e: &BroadcastEvidence, round: u16| {
                    e.session == self.spec.session
                        && e.protocol == self.spec.protocol
                        && e.round == round
                        && e.sender == *dealer
                        && self.net.verify_evidence(e)
                };
                if !genuine(&shown.commit, 0) || !genuine(&shown.reveal, 1) {
                    blamed.push(misreport(format!(
                        "shows broadcasts that are not {dealer}'s signed messages of this session"
                    )));
                    continue;
                }
                if (shown.commit.payload_hash, shown.reveal.payload_hash) != here {
                    differing.push(*by);
                }
            }
            if !differing.is_empty() {
                blamed.push(Blame {
                    party: *dealer,
                    by: self.me,
                    reason: format!(
                        "it showed different broadcasts to different parties: its signed \
                         messages to {} differ from those to {}",
                        PartyId::list(&differing),
                        self.me
                    ),
                });
            }
        }
        blamed
    }

    /// Check 7 on one complaint by `by`: who is at fault, on evidence every participant
    /// checks the same way.
    fn judge(&self, by: PartyId, complaint: &Complaint) -> Blame {
        let dealer = complaint.accused;
        let guilty = |party: PartyId, reason: String| Blame { party, by, reason };
        let Some(d) = self.setup.dealers.iter().position(|p| *p == dealer) else {
            return guilty(by, format!("it accused {dealer}, who does not deal"));
        };
        let lied = |what: &str| Blame {
            party: by,
            by: self.me,
            reason: format!("it accused {dealer} ({}) but {what}", complaint.fault),
        };
        if complaint.fault.in_sub_share() {
            return match self.sub_share_fault(by, d, complaint) {
                Ok(true) => guilty(dealer, complaint.fault.to_string()),
                Ok(false) => lied("the signed sub-share it shows is correct"),
                Err(problem) => lied(problem),
            };
        }
        // Broadcast data: the same here (the echoes agree) and checked here too.
        if self.broadcast_ok[d] {
            lied("its broadcasts pass every check")
        } else {
            guilty(dealer, complaint.fault.to_string())
        }
    }

    /// Whether the complainer's evidence proves dealer number `d` sent it a missing or wrong
    /// sub-share (`Ok(false)`: it proves the sub-share right; `Err`: the evidence is not the
    /// dealer's signed message to the complainer in this session).
    fn sub_share_fault(
        &self,
        by: PartyId,
        d: usize,
        complaint: &Complaint,
    ) -> Result<bool, &'static str> {
        let dealer = self.setup.dealers[d];
        let evidence = complaint
            .evidence
            .as_ref()
            .ok_or("it shows no signed message")?;
        let signed = &evidence.signed;
        let ours = signed.session == self.spec.session
            && signed.protocol == self.spec.protocol
            && signed.round == SUB_SHARE_ROUND
            && signed.sender == dealer
            && signed.covers(&evidence.payload)
            && self.net.verify_evidence(signed);
        if !ours {
            return Err("the message it shows is not the dealer's signed message");
        }
        let message = match tessera_wire::decode::<ReshareMsg<E>>(
            &evidence.payload,
            tessera_wire::DEFAULT_MAX_PAYLOAD,
        ) {
            Ok(ReshareMsg::SubShare(m)) => m,
            _ => return Err("the message it shows is not a sub-share"),
        };
        let position = self
            .setup
            .new_committee
            .iter()
            .position(|p| *p == by)
            .ok_or("it receives nothing")? as u16;
        let k = usize::from(self.spec.index_of(dealer).expect("dealers take part"));
        let Some(dealing) = &self.dealings[k] else {
            // A dealer without a reveal is caught on broadcast data already.
            return Ok(true);
        };
        if message.receiver != Some(position) {
            // Signed by the dealer for this session but naming another receiver: the dealer
            // sent the complainer a message that is not its own.
            return Ok(true);
        }
        Ok(check_sub_share(self.plan, dealing, position, &message).is_err())
    }
}
