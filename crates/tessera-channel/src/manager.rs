//! One party's channels to every other party in the roster.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rand_core::{OsRng, RngCore};
use subtle::ConstantTimeEq;
use tessera_wire::{FrameKind, PartyId, Protocol, Round, SessionId, WireMessage, TAG_LEN};

use crate::broadcast::{BroadcastEvidence, SIGNATURE_LEN};
use crate::error::{ChannelError, RefusalCounters};
use crate::identity::PartyIdentity;
use crate::peer::{Local, PeerChannel};
use crate::roster::{Roster, RosterError};

/// Channel settings. The defaults suit a custody cluster; every field is documented with its
/// effect.
#[derive(Clone, Debug)]
pub struct ChannelConfig {
    /// Largest application payload accepted or sent. Frames above it are refused before any
    /// cryptography.
    pub max_payload: usize,
    /// How long the initiator waits for a handshake answer before starting over.
    pub handshake_timeout: Duration,
    /// Re-handshake (fresh ephemeral keys) after this many records on one epoch.
    pub rekey_after_messages: u64,
    /// Re-handshake after this much time on one epoch.
    pub rekey_after: Duration,
    /// Records that may wait for the first handshake with one peer.
    pub max_queue: usize,
}

impl Default for ChannelConfig {
    fn default() -> Self {
        ChannelConfig {
            max_payload: tessera_wire::DEFAULT_MAX_PAYLOAD,
            handshake_timeout: Duration::from_secs(5),
            rekey_after_messages: 100_000,
            rekey_after: Duration::from_secs(600),
            max_queue: 4096,
        }
    }
}

/// Where a payload belongs: bound into the frame's associated data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FrameContext {
    /// The session.
    pub session: SessionId,
    /// The round.
    pub round: Round,
    /// The protocol.
    pub protocol: Protocol,
}

impl FrameContext {
    /// Context of channel-internal control records.
    pub(crate) fn control() -> Self {
        FrameContext {
            session: SessionId([0; 16]),
            round: 0,
            protocol: Protocol::CONTROL,
        }
    }
}

/// Bytes to hand to the transport for one party.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outbound {
    /// The recipient.
    pub to: PartyId,
    /// The encoded wire message.
    pub bytes: Vec<u8>,
}

/// An authenticated payload for the application.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// The authenticated sender.
    pub from: PartyId,
    /// Session, round and protocol, as authenticated.
    pub context: FrameContext,
    /// The payload.
    pub payload: Vec<u8>,
    /// For a broadcast: the verified signed statement, to keep as evidence.
    pub broadcast: Option<BroadcastEvidence>,
}

/// The outcome of one inbound message.
#[derive(Debug, Default)]
pub struct Received {
    /// A payload to deliver, if the message carried one.
    pub delivery: Option<Delivery>,
    /// Messages to send in response (handshake answers, released queue).
    pub outbound: Vec<Outbound>,
}

/// A party's pairwise channels to every other roster party (sans-IO).
pub struct ChannelManager {
    identity: PartyIdentity,
    roster: Roster,
    config: ChannelConfig,
    peers: BTreeMap<PartyId, PeerChannel>,
    counters: RefusalCounters,
}

impl ChannelManager {
    /// Creates channels for `identity` to every other party of `roster`. The roster must
    /// already be verified and pinned; this checks that it lists this party with this party's
    /// keys.
    pub fn new(
        identity: PartyIdentity,
        roster: Roster,
        config: ChannelConfig,
    ) -> Result<Self, RosterError> {
        roster.validate()?;
        let me = identity.party();
        let own = roster.entry(me).ok_or(RosterError::BadKey {
            party: me,
            field: "party (this identity is not in the roster)",
        })?;
        let mine = identity.public(None);
        if own.ed25519 != mine.ed25519 || own.x25519 != mine.x25519 {
            return Err(RosterError::BadKey {
                party: me,
                field: "keys (the roster lists other keys for this identity)",
            });
        }
        let mut peers = BTreeMap::new();
        for entry in roster.parties.iter().filter(|e| e.party != me) {
            // A random first epoch makes a restarted party's epochs unlikely to collide with
            // the generations its peers still hold.
            let first_epoch = OsRng.next_u32() >> 1;
            peers.insert(
                entry.party,
                PeerChannel::new(entry.party, entry.static_key()?, first_epoch),
            );
        }
        Ok(ChannelManager {
            identity,
            roster,
            config,
            peers,
            counters: RefusalCounters::default(),
        })
    }

    /// This party.
    pub fn party(&self) -> PartyId {
        self.identity.party()
    }

    /// The pinned roster.
    pub fn roster(&self) -> &Roster {
        &self.roster
    }

    /// The settings.
    pub fn config(&self) -> &ChannelConfig {
        &self.config
    }

    /// Refusals so far, per reason.
    pub fn counters(&self) -> &RefusalCounters {
        &self.counters
    }

    /// Handshakes that timed out and were started again, over all peers.
    pub fn handshake_timeouts(&self) -> u64 {
        self.peers.values().map(|p| p.handshake_timeouts).sum()
    }

    /// The epoch used for sending to `peer`, once a channel is established.
    pub fn epoch(&self, peer: PartyId) -> Option<u32> {
        self.peers.get(&peer).and_then(PeerChannel::epoch)
    }

    fn split(&mut self) -> (Local<'_>, &mut BTreeMap<PartyId, PeerChannel>) {
        (
            Local {
                identity: &self.identity,
                config: &self.config,
            },
            &mut self.peers,
        )
    }

    fn peer_error(&self, to: PartyId) -> ChannelError {
        if to == self.identity.party() {
            ChannelError::SelfChannel
        } else {
            ChannelError::UnknownParty(to)
        }
    }

    fn check_payload(&self, len: usize) -> Result<(), ChannelError> {
        if len > self.config.max_payload {
            return Err(ChannelError::PayloadTooLarge {
                len,
                limit: self.config.max_payload,
            });
        }
        Ok(())
    }

    /// Seals `payload` for `to`. Before the first handshake completes the payload is queued and
    /// a handshake message is returned instead.
    pub fn send(
        &mut self,
        to: PartyId,
        context: FrameContext,
        payload: &[u8],
        now: Instant,
    ) -> Result<Vec<Outbound>, ChannelError> {
        self.check_payload(payload.len())?;
        self.send_record(to, FrameKind::Direct, context, payload, now)
    }

    /// Signs `payload` once and seals it, with the signature, for each of `recipients`.
    pub fn broadcast(
        &mut self,
        recipients: &[PartyId],
        context: FrameContext,
        payload: &[u8],
        now: Instant,
    ) -> Result<Vec<Outbound>, ChannelError> {
        self.check_payload(payload.len())?;
        let mut evidence = BroadcastEvidence::unsigned(
            self.identity.cluster(),
            context.session,
            context.round,
            context.protocol,
            self.identity.party(),
            payload,
        );
        let signature = self.identity.sign(&evidence.statement_bytes());
        evidence.signature = signature.to_vec();
        let mut plaintext = Vec::with_capacity(payload.len() + SIGNATURE_LEN);
        plaintext.extend_from_slice(payload);
        plaintext.extend_from_slice(&signature);
        self.send_raw(recipients, FrameKind::Broadcast, context, &plaintext, now)
    }

    /// Seals an exact plaintext of the given kind for each recipient, with no checks on its
    /// content. This is what a misbehaving party could do with its own channel keys; tests use
    /// it to play such a party.
    pub fn send_raw(
        &mut self,
        recipients: &[PartyId],
        kind: FrameKind,
        context: FrameContext,
        plaintext: &[u8],
        now: Instant,
    ) -> Result<Vec<Outbound>, ChannelError> {
        let mut out = Vec::new();
        for &to in recipients {
            out.extend(self.send_record(to, kind, context, plaintext, now)?);
        }
        Ok(out)
    }

    fn send_record(
        &mut self,
        to: PartyId,
        kind: FrameKind,
        context: FrameContext,
        plaintext: &[u8],
        now: Instant,
    ) -> Result<Vec<Outbound>, ChannelError> {
        let err = self.peer_error(to);
        let (local, peers) = self.split();
        let peer = peers.get_mut(&to).ok_or(err)?;
        let messages = peer.send(&local, kind, context, plaintext, now)?;
        Ok(outbound(to, messages))
    }

    /// Starts a re-handshake with `peer` now (fresh ephemeral keys).
    pub fn rekey(&mut self, peer: PartyId, now: Instant) -> Result<Vec<Outbound>, ChannelError> {
        let err = self.peer_error(peer);
        let (local, peers) = self.split();
        let channel = peers.get_mut(&peer).ok_or(err)?;
        Ok(outbound(peer, channel.rekey(&local, now)?))
    }

    /// Timer work: handshake retries and due rekeys. Call it every second or so.
    pub fn tick(&mut self, now: Instant) -> Vec<Outbound> {
        let (local, peers) = self.split();
        let mut out = Vec::new();
        for (&id, peer) in peers.iter_mut() {
            // Starting a handshake only fails if the Noise parameters are broken, which the
            // first send would already have reported.
            if let Ok(messages) = peer.tick(&local, now) {
                out.extend(outbound(id, messages));
            }
        }
        out
    }

    /// Handles one inbound message. `transport_sender` is the sender as the transport knows it
    /// (e.g. from the NATS subject, which the broker's permissions guarantee), if it knows.
    ///
    /// A refusal returns a typed error, bumps its counter and changes no channel state.
    pub fn receive(
        &mut self,
        transport_sender: Option<PartyId>,
        bytes: &[u8],
        now: Instant,
    ) -> Result<Received, ChannelError> {
        let result = self.receive_inner(transport_sender, bytes, now);
        if let Err(e) = &result {
            self.counters.record(e.reason());
        }
        result
    }

    fn receive_inner(
        &mut self,
        transport_sender: Option<PartyId>,
        bytes: &[u8],
        now: Instant,
    ) -> Result<Received, ChannelError> {
        let max_body = self.config.max_payload + SIGNATURE_LEN + TAG_LEN;
        let message = WireMessage::decode(bytes, max_body)?;
        let from = message.from();
        if let Some(transport) = transport_sender {
            if !bool::from(transport.ct_eq(&from)) {
                return Err(ChannelError::SenderMismatch {
                    claimed: from,
                    transport,
                });
            }
        }
        let me = self.identity.party();
        if !bool::from(message.to().ct_eq(&me)) {
            return Err(ChannelError::Misaddressed {
                to: message.to(),
                me,
            });
        }
        let cluster = self.identity.cluster().clone();
        let (local, peers) = self.split();
        let peer = peers
            .get_mut(&from)
            .ok_or(ChannelError::UnknownParty(from))?;
        match message {
            WireMessage::Handshake(h) => Ok(Received {
                delivery: None,
                outbound: outbound(from, peer.on_handshake(&local, &h, now)?),
            }),
            WireMessage::Record(frame) => {
                let (plaintext, released) = peer.open(&local, &frame)?;
                let context = FrameContext {
                    session: frame.header.session,
                    round: frame.header.round,
                    protocol: frame.header.protocol,
                };
                let delivery = match frame.header.kind {
                    FrameKind::Control => None,
                    FrameKind::Direct => Some(Delivery {
                        from,
                        context,
                        payload: plaintext.to_vec(),
                        broadcast: None,
                    }),
                    FrameKind::Broadcast => {
                        let bad = ChannelError::BadBroadcastSignature { from };
                        let split = plaintext.len().checked_sub(SIGNATURE_LEN).ok_or(bad)?;
                        let (payload, signature) = plaintext.split_at(split);
                        let mut evidence = BroadcastEvidence::unsigned(
                            &cluster,
                            context.session,
                            context.round,
                            context.protocol,
                            from,
                            payload,
                        );
                        evidence.signature = signature.to_vec();
                        evidence.verify(&self.roster)?;
                        Some(Delivery {
                            from,
                            context,
                            payload: payload.to_vec(),
                            broadcast: Some(evidence),
                        })
                    }
                };
                Ok(Received {
                    delivery,
                    outbound: outbound(from, released),
                })
            }
        }
    }
}

fn outbound(to: PartyId, messages: Vec<WireMessage>) -> Vec<Outbound> {
    messages
        .into_iter()
        .map(|m| Outbound {
            to,
            bytes: m.encode(),
        })
        .collect()
}
