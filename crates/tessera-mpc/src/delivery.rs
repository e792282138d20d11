//! Connects `round_based` protocols to a [`SecureTransport`] session.
//!
//! A session is described by a [`SessionSpec`]: its id, its protocol and the ordered list of
//! participating parties (position `i` in the list is party index `i` for the library). Outgoing
//! messages are encoded with the canonical codec and sealed for one party, or signed and sealed
//! for all; incoming ones are checked to come from a session participant, to be of the session's
//! protocol and to carry the round their authenticated frame header names.
//!
//! The library has no timeouts, so the incoming stream enforces one: if no message arrives for
//! [`MpcConfig::round_timeout`], the session fails naming every party that has not delivered
//! the earliest incomplete round.

use std::collections::{BTreeMap, BTreeSet};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{Sink, Stream};
use round_based::{Incoming, MessageDestination, MessageType, Outgoing, ProtocolMessage};
use serde::{de::DeserializeOwned, Serialize};
use tessera_channel::{BroadcastEvidence, FrameContext};
use tessera_transport::{SecureTransport, SessionInbox};
use tessera_wire::{PartyId, Protocol, SessionId, DEFAULT_MAX_PAYLOAD};

use crate::MpcError;

/// Protocol settings.
#[derive(Clone, Debug)]
pub struct MpcConfig {
    /// How long a party waits for the next message of a session before failing it. It must
    /// cover the slowest computation a peer does between two messages (auxiliary info: tens of
    /// seconds).
    pub round_timeout: Duration,
}

impl Default for MpcConfig {
    fn default() -> Self {
        MpcConfig {
            round_timeout: Duration::from_secs(120),
        }
    }
}

/// One protocol session: who takes part, in which order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionSpec {
    /// The session id; never reused.
    pub session: SessionId,
    /// The protocol run in it.
    pub protocol: Protocol,
    /// Participants; a party's position is its index in the protocol.
    pub parties: Vec<PartyId>,
}

impl SessionSpec {
    /// The protocol index of `party`, if it takes part.
    pub fn index_of(&self, party: PartyId) -> Option<u16> {
        self.parties
            .iter()
            .position(|p| *p == party)
            .map(|i| i as u16)
    }

    /// Checks the participant list and returns `me`'s index.
    pub fn my_index(&self, me: PartyId) -> Result<u16, MpcError> {
        let unique: BTreeSet<_> = self.parties.iter().collect();
        if unique.len() != self.parties.len() || self.parties.len() < 2 {
            return Err(MpcError::InvalidSession(
                "a session needs two or more distinct parties".into(),
            ));
        }
        self.index_of(me).ok_or_else(|| {
            MpcError::InvalidSession(format!(
                "{me} is not a participant of session {}",
                self.session
            ))
        })
    }

    /// Part `index` of a session that runs its protocol several times in a row (one
    /// signature per PSBT input): part 0 is the session itself, a later part is the same
    /// protocol and parties under a session id derived from the session's and the index, so
    /// no two parts share an execution id or a frame.
    pub fn part(&self, index: usize) -> SessionSpec {
        if index == 0 {
            return self.clone();
        }
        use sha2::{Digest, Sha256};
        let mut hasher = Sha256::new();
        hasher.update(b"tessera/session-part/v1");
        hasher.update(self.session.as_bytes());
        hasher.update((index as u64).to_be_bytes());
        let digest = hasher.finalize();
        let mut id = [0u8; 16];
        id.copy_from_slice(&digest[..16]);
        SessionSpec {
            session: SessionId(id),
            ..self.clone()
        }
    }

    /// The library's execution id: binds the session id, protocol and participants, so
    /// messages of one execution can never be replayed into another.
    pub fn execution_id(&self) -> Vec<u8> {
        let mut eid = b"tessera/execution/v1".to_vec();
        eid.extend_from_slice(&self.protocol.0.to_be_bytes());
        eid.extend_from_slice(self.session.as_bytes());
        for p in &self.parties {
            eid.extend_from_slice(&p.to_be_bytes());
        }
        eid
    }
}

#[cfg(test)]
mod part_tests {
    use super::*;

    #[test]
    fn parts_of_a_session_have_distinct_ids_and_the_same_parties() {
        let spec = SessionSpec {
            session: SessionId([7; 16]),
            protocol: Protocol::SIGN,
            parties: vec![PartyId(1), PartyId(3)],
        };
        assert_eq!(spec.part(0), spec);
        let ids: BTreeSet<SessionId> = (0..5).map(|i| spec.part(i).session).collect();
        assert_eq!(ids.len(), 5);
        assert_eq!(spec.part(2), spec.part(2));
        assert_eq!(spec.part(3).parties, spec.parties);
        assert_ne!(spec.part(1).execution_id(), spec.execution_id());
    }
}

/// The error handed to the library when a message cannot be received; the full reason is kept
/// in the [`FailureSlot`].
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ReceiveError(String);

/// The error handed to the library when a message cannot be sent.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SendError(String);

/// Where the incoming stream records why it failed, so the caller can report it precisely
/// instead of the library's generic I/O error.
#[derive(Clone, Default)]
pub(crate) struct FailureSlot(Arc<Mutex<Option<MpcError>>>);

impl FailureSlot {
    fn set(&self, error: MpcError) -> ReceiveError {
        let text = error.to_string();
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(error);
        ReceiveError(text)
    }

    pub(crate) fn take(&self) -> Option<MpcError> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// Signed messages (broadcasts and signed point-to-point ones) as received, by (round,
/// sender): the sender's signed statement and the exact payload, to show others later (see
/// [`connect_signed`]).
#[derive(Clone, Default)]
pub(crate) struct EvidenceLog(Arc<Mutex<BTreeMap<(u16, PartyId), SignedMessage>>>);

/// One signed message as received.
#[derive(Clone)]
pub(crate) struct SignedMessage {
    /// The sender's signed statement (covers the payload's hash).
    pub evidence: BroadcastEvidence,
    /// The payload, as it was sealed. It may hold a secret (a sub-share): zeroized on drop.
    pub payload: zeroize::Zeroizing<Vec<u8>>,
}

impl EvidenceLog {
    fn keep(&self, round: u16, from: PartyId, message: SignedMessage) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((round, from), message);
    }

    /// The signed message `from` sent in `round`, if one arrived.
    pub(crate) fn get(&self, round: u16, from: PartyId) -> Option<SignedMessage> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(round, from))
            .cloned()
    }
}

/// The incoming half handed to `MpcParty::connected`.
pub(crate) type IncomingStream<M> =
    Pin<Box<dyn Stream<Item = Result<Incoming<M>, ReceiveError>> + Send>>;
/// The outgoing half handed to `MpcParty::connected`.
pub(crate) type OutgoingSink<M> = Pin<Box<dyn Sink<Outgoing<M>, Error = SendError> + Send>>;

struct Receiver {
    inbox: SessionInbox,
    spec: Arc<SessionSpec>,
    me: PartyId,
    next_id: u64,
    delivered: BTreeMap<u16, BTreeSet<PartyId>>,
    timeout: Duration,
    failure: FailureSlot,
    finished: bool,
    signed_rounds: Vec<u16>,
    evidence: Option<EvidenceLog>,
}

impl Receiver {
    /// The earliest round some other participant has not delivered, and who is missing.
    fn stalled_round(&self) -> (u16, Vec<PartyId>) {
        let others: BTreeSet<PartyId> = self
            .spec
            .parties
            .iter()
            .copied()
            .filter(|p| *p != self.me)
            .collect();
        let last = self.delivered.keys().max().copied().unwrap_or(0);
        for round in 0..=last.saturating_add(1) {
            let got = self.delivered.get(&round).cloned().unwrap_or_default();
            let missing: Vec<PartyId> = others.difference(&got).copied().collect();
            if !missing.is_empty() {
                return (round, missing);
            }
        }
        (last + 1, others.into_iter().collect())
    }

    fn fail(&mut self, error: MpcError) -> ReceiveError {
        self.finished = true;
        self.failure.set(error)
    }

    async fn next<M>(&mut self) -> Option<Result<Incoming<M>, ReceiveError>>
    where
        M: DeserializeOwned + ProtocolMessage,
    {
        if self.finished {
            return None;
        }
        let (session, protocol) = (self.spec.session, self.spec.protocol);
        loop {
            let delivery = match tokio::time::timeout(self.timeout, self.inbox.recv()).await {
                Err(_) => {
                    let (round, missing) = self.stalled_round();
                    tracing::warn!(%session, %protocol, round, ?missing, "session timed out");
                    let error = MpcError::Timeout {
                        protocol,
                        session,
                        round,
                        missing,
                    };
                    return Some(Err(self.fail(error)));
                }
                Ok(None) => {
                    self.finished = true;
                    return None;
                }
                Ok(Some(d)) => d,
            };
            let Some(sender) = self.spec.index_of(delivery.from) else {
                tracing::warn!(%session, from = %delivery.from, "message from a non-participant ignored");
                continue;
            };
            if delivery.context.protocol != protocol {
                tracing::warn!(%session, from = %delivery.from, "message of another protocol ignored");
                continue;
            }
            let invalid = |reason: String| MpcError::InvalidMessage {
                protocol,
                session,
                from: delivery.from,
                reason,
            };
            let msg: M = match tessera_wire::decode(&delivery.payload, DEFAULT_MAX_PAYLOAD) {
                Ok(m) => m,
                Err(e) => return Some(Err(self.fail(invalid(e.to_string())))),
            };
            if msg.round() != delivery.context.round {
                let reason = format!(
                    "message of round {} sealed as round {}",
                    msg.round(),
                    delivery.context.round
                );
                return Some(Err(self.fail(invalid(reason))));
            }
            if self.signed_rounds.contains(&msg.round()) && delivery.broadcast.is_none() {
                let reason = format!("round {} needs a signed message", msg.round());
                return Some(Err(self.fail(invalid(reason))));
            }
            if let (Some(log), Some(evidence)) = (&self.evidence, &delivery.broadcast) {
                // The channel verified the signature; keep it to show.
                log.keep(
                    msg.round(),
                    delivery.from,
                    SignedMessage {
                        evidence: evidence.clone(),
                        payload: zeroize::Zeroizing::new(delivery.payload.clone()),
                    },
                );
            }
            self.delivered
                .entry(msg.round())
                .or_default()
                .insert(delivery.from);
            let id = self.next_id;
            self.next_id += 1;
            let msg_type = if delivery.broadcast.is_some() {
                MessageType::Broadcast
            } else {
                MessageType::P2P
            };
            return Some(Ok(Incoming {
                id,
                sender,
                msg_type,
                msg,
            }));
        }
    }
}

/// Opens `spec`'s session on `net` for `me` and returns the library's two halves plus the
/// failure slot.
pub(crate) fn connect<M>(
    net: Arc<SecureTransport>,
    spec: &SessionSpec,
    me: PartyId,
    config: &MpcConfig,
) -> (IncomingStream<M>, OutgoingSink<M>, FailureSlot)
where
    M: Serialize + DeserializeOwned + ProtocolMessage + Send + 'static,
{
    open(net, spec, me, config, &[], None)
}

/// [`connect`], where the point-to-point messages of `signed_rounds` are sent signed by this
/// party (as broadcasts to one party) and must arrive signed. The library sees them as
/// broadcast messages (declare those rounds with `RoundInput::broadcast`). The returned
/// [`EvidenceLog`] keeps every signed message received (broadcasts included) with its signed
/// statement.
pub(crate) fn connect_signed<M>(
    net: Arc<SecureTransport>,
    spec: &SessionSpec,
    me: PartyId,
    config: &MpcConfig,
    signed_rounds: &[u16],
) -> (IncomingStream<M>, OutgoingSink<M>, FailureSlot, EvidenceLog)
where
    M: Serialize + DeserializeOwned + ProtocolMessage + Send + 'static,
{
    let evidence = EvidenceLog::default();
    let (incoming, outgoing, failure) =
        open(net, spec, me, config, signed_rounds, Some(evidence.clone()));
    (incoming, outgoing, failure, evidence)
}

fn open<M>(
    net: Arc<SecureTransport>,
    spec: &SessionSpec,
    me: PartyId,
    config: &MpcConfig,
    signed_rounds: &[u16],
    evidence: Option<EvidenceLog>,
) -> (IncomingStream<M>, OutgoingSink<M>, FailureSlot)
where
    M: Serialize + DeserializeOwned + ProtocolMessage + Send + 'static,
{
    let spec = Arc::new(spec.clone());
    let signed: Arc<[u16]> = signed_rounds.into();
    let failure = FailureSlot::default();
    let receiver = Receiver {
        inbox: net.open_session(spec.session),
        spec: spec.clone(),
        me,
        next_id: 0,
        delivered: BTreeMap::new(),
        timeout: config.round_timeout,
        failure: failure.clone(),
        finished: false,
        signed_rounds: signed_rounds.to_vec(),
        evidence,
    };
    let incoming = futures::stream::unfold(receiver, |mut r| async move {
        let item = r.next::<M>().await?;
        Some((item, r))
    });
    let outgoing = futures::sink::unfold(
        (net, spec, me, signed),
        |(net, spec, me, signed), out: Outgoing<M>| async move {
            let payload = tessera_wire::encode(&out.msg);
            let context = FrameContext {
                session: spec.session,
                round: out.msg.round(),
                protocol: spec.protocol,
            };
            let sent = match out.recipient {
                MessageDestination::AllParties => {
                    let others: Vec<PartyId> =
                        spec.parties.iter().copied().filter(|p| *p != me).collect();
                    net.broadcast(&others, context, &payload).await
                }
                MessageDestination::OneParty(i) => {
                    let to = *spec.parties.get(usize::from(i)).ok_or_else(|| {
                        SendError(format!("party index {i} is not in the session"))
                    })?;
                    if signed.contains(&context.round) {
                        net.send_signed(to, context, &payload).await
                    } else {
                        net.send(to, context, &payload).await
                    }
                }
            };
            sent.map_err(|e| SendError(e.to_string()))?;
            Ok::<_, SendError>((net, spec, me, signed))
        },
    );
    (Box::pin(incoming), Box::pin(outgoing), failure)
}
