//! The channel between this party and one peer: handshakes, epochs and the send queue.
//!
//! Either side may start a handshake (first contact, rekey, reconnect). If both start at once,
//! the lower party id's handshake wins and the higher one answers it. The responder keeps the new
//! keys as *pending* and keeps sending on the old epoch until a record on the new epoch
//! authenticates (the initiator sends an empty control record at once for that), so a lost
//! handshake message never leaves the two sides on different keys.

use std::collections::VecDeque;
use std::time::Instant;

use tessera_wire::{FrameHeader, FrameKind, HandshakeMessage, PartyId, RecordFrame, WireMessage};
use zeroize::Zeroizing;

use crate::epoch::{EpochKeys, OpenError};
use crate::error::ChannelError;
use crate::identity::PartyIdentity;
use crate::manager::{ChannelConfig, FrameContext};
use crate::{NOISE_PARAMS, PROLOGUE_LABEL};

/// Responder-side handshakes kept while waiting for the initiator's first record.
const MAX_PENDING: usize = 4;
/// Epochs remembered per peer (started, answered or used): an initiation for one of them is a
/// replay. A restarted party starts from a random epoch, so it does not collide with these.
const SEEN_EPOCHS: usize = 4096;

struct Initiating {
    epoch: u32,
    state: snow::HandshakeState,
    deadline: Instant,
}

struct PendingResponse {
    epoch: u32,
    hs1: Vec<u8>,
    hs2: Vec<u8>,
    keys: EpochKeys,
}

struct QueuedRecord {
    kind: FrameKind,
    ctx: FrameContext,
    plaintext: Zeroizing<Vec<u8>>,
}

/// What the local party brings to every channel operation.
pub(crate) struct Local<'a> {
    pub(crate) identity: &'a PartyIdentity,
    pub(crate) config: &'a ChannelConfig,
}

pub(crate) struct PeerChannel {
    peer: PartyId,
    peer_static: [u8; 32],
    current: Option<EpochKeys>,
    previous: Option<EpochKeys>,
    pending: VecDeque<PendingResponse>,
    initiating: Option<Initiating>,
    next_epoch: u32,
    /// Every epoch this channel started, answered or used lately (at most [`SEEN_EPOCHS`]).
    seen_epochs: VecDeque<u32>,
    queue: VecDeque<QueuedRecord>,
    /// Set when the peer used an epoch we do not have (we restarted, or it did): the next tick
    /// starts a fresh handshake.
    resync: bool,
    pub(crate) handshake_timeouts: u64,
}

impl PeerChannel {
    pub(crate) fn new(peer: PartyId, peer_static: [u8; 32], first_epoch: u32) -> Self {
        PeerChannel {
            peer,
            peer_static,
            current: None,
            previous: None,
            pending: VecDeque::new(),
            initiating: None,
            next_epoch: first_epoch,
            seen_epochs: VecDeque::new(),
            queue: VecDeque::new(),
            resync: false,
            handshake_timeouts: 0,
        }
    }

    /// Remembers `epoch` as started, answered or used here.
    fn saw(&mut self, epoch: u32) {
        if self.seen_epochs.contains(&epoch) {
            return;
        }
        if self.seen_epochs.len() >= SEEN_EPOCHS {
            self.seen_epochs.pop_front();
        }
        self.seen_epochs.push_back(epoch);
    }

    /// The epoch currently used for sending, if established.
    pub(crate) fn epoch(&self) -> Option<u32> {
        self.current.as_ref().map(|k| k.epoch)
    }

    fn noise(
        &self,
        local: &Local<'_>,
        initiator: PartyId,
        responder: PartyId,
        epoch: u32,
        as_initiator: bool,
    ) -> Result<snow::HandshakeState, ChannelError> {
        let mut prologue = PROLOGUE_LABEL.to_vec();
        let cluster = local.identity.cluster().as_str().as_bytes();
        prologue.push(cluster.len() as u8);
        prologue.extend_from_slice(cluster);
        prologue.extend_from_slice(&initiator.to_be_bytes());
        prologue.extend_from_slice(&responder.to_be_bytes());
        prologue.extend_from_slice(&epoch.to_be_bytes());
        let secret = local.identity.static_secret_bytes();
        let fail = |e: snow::Error| ChannelError::HandshakeFailed {
            peer: self.peer,
            reason: e.to_string(),
        };
        let builder = snow::Builder::new(NOISE_PARAMS.parse().map_err(fail)?)
            .local_private_key(secret.as_ref())
            .map_err(fail)?
            .remote_public_key(&self.peer_static)
            .map_err(fail)?
            .prologue(&prologue)
            .map_err(fail)?;
        if as_initiator {
            builder.build_initiator().map_err(fail)
        } else {
            builder.build_responder().map_err(fail)
        }
    }

    fn start_handshake(
        &mut self,
        local: &Local<'_>,
        now: Instant,
    ) -> Result<WireMessage, ChannelError> {
        let me = local.identity.party();
        let epoch = self.next_epoch;
        self.next_epoch = epoch.wrapping_add(1);
        self.saw(epoch);
        let mut state = self.noise(local, me, self.peer, epoch, true)?;
        let mut buf = [0u8; 256];
        let n = state
            .write_message(&[], &mut buf)
            .map_err(|e| ChannelError::HandshakeFailed {
                peer: self.peer,
                reason: e.to_string(),
            })?;
        self.initiating = Some(Initiating {
            epoch,
            state,
            deadline: now + local.config.handshake_timeout,
        });
        Ok(WireMessage::Handshake(HandshakeMessage {
            from: me,
            to: self.peer,
            epoch,
            stage: 1,
            noise: buf[..n].to_vec(),
        }))
    }

    /// Starts a rekey now unless one is already under way.
    pub(crate) fn rekey(
        &mut self,
        local: &Local<'_>,
        now: Instant,
    ) -> Result<Vec<WireMessage>, ChannelError> {
        if self.initiating.is_some() {
            return Ok(Vec::new());
        }
        Ok(vec![self.start_handshake(local, now)?])
    }

    fn rekey_due(&self, config: &ChannelConfig, now: Instant) -> bool {
        self.current.as_ref().is_some_and(|k| {
            k.sent() >= config.rekey_after_messages
                || now.duration_since(k.established) >= config.rekey_after
        })
    }

    /// Timer work: retries an expired handshake, starts a due rekey.
    pub(crate) fn tick(
        &mut self,
        local: &Local<'_>,
        now: Instant,
    ) -> Result<Vec<WireMessage>, ChannelError> {
        if let Some(init) = &self.initiating {
            if now < init.deadline {
                return Ok(Vec::new());
            }
            self.initiating = None;
            self.handshake_timeouts += 1;
        }
        let waiting = self.current.is_none() && !self.queue.is_empty();
        if waiting || self.resync || self.rekey_due(local.config, now) {
            self.resync = false;
            return Ok(vec![self.start_handshake(local, now)?]);
        }
        Ok(Vec::new())
    }

    /// Seals a record, or queues it until the first handshake completes.
    pub(crate) fn send(
        &mut self,
        local: &Local<'_>,
        kind: FrameKind,
        ctx: FrameContext,
        plaintext: &[u8],
        now: Instant,
    ) -> Result<Vec<WireMessage>, ChannelError> {
        let mut out = Vec::new();
        match self.current.as_mut() {
            Some(keys) => {
                let header = ctx.header(kind, local.identity.party(), self.peer);
                out.push(WireMessage::Record(keys.seal(header, plaintext)));
                if self.initiating.is_none() && self.rekey_due(local.config, now) {
                    out.push(self.start_handshake(local, now)?);
                }
            }
            None => {
                if self.queue.len() >= local.config.max_queue {
                    return Err(ChannelError::QueueFull {
                        peer: self.peer,
                        limit: local.config.max_queue,
                    });
                }
                self.queue.push_back(QueuedRecord {
                    kind,
                    ctx,
                    plaintext: Zeroizing::new(plaintext.to_vec()),
                });
                if self.initiating.is_none() {
                    out.push(self.start_handshake(local, now)?);
                }
            }
        }
        Ok(out)
    }

    fn flush_queue(&mut self, local: &Local<'_>) -> Vec<WireMessage> {
        let Some(keys) = self.current.as_mut() else {
            return Vec::new();
        };
        self.queue
            .drain(..)
            .map(|q| {
                let header = q.ctx.header(q.kind, local.identity.party(), self.peer);
                WireMessage::Record(keys.seal(header, &q.plaintext))
            })
            .collect()
    }

    fn promote(&mut self, keys: EpochKeys) {
        self.previous = self.current.take();
        self.current = Some(keys);
        self.pending.clear();
    }

    /// Handles a handshake message from the peer.
    pub(crate) fn on_handshake(
        &mut self,
        local: &Local<'_>,
        msg: &HandshakeMessage,
        now: Instant,
    ) -> Result<Vec<WireMessage>, ChannelError> {
        match msg.stage {
            1 => self.on_initiation(local, msg, now),
            _ => self.on_response(local, msg, now),
        }
    }

    fn on_initiation(
        &mut self,
        local: &Local<'_>,
        msg: &HandshakeMessage,
        now: Instant,
    ) -> Result<Vec<WireMessage>, ChannelError> {
        let me = local.identity.party();
        if self.initiating.is_some() && me < self.peer {
            // Both sides started at once: ours wins, the peer will answer it.
            return Ok(Vec::new());
        }
        let stale = ChannelError::StaleHandshake {
            peer: self.peer,
            epoch: msg.epoch,
        };
        let in_use = [&self.current, &self.previous]
            .into_iter()
            .flatten()
            .any(|k| k.epoch == msg.epoch);
        if in_use {
            return Err(stale);
        }
        if let Some(p) = self.pending.iter().find(|p| p.epoch == msg.epoch) {
            // A repeated initiation (our answer was lost, or a replay): answer identically.
            if p.hs1 == msg.noise {
                return Ok(vec![self.response(me, msg.epoch, p.hs2.clone())]);
            }
            return Err(stale);
        }
        // Both sides may pick the same epoch number at the same moment (each starts from the
        // epoch after the last one it saw). Then the peer's initiation of the epoch we are
        // initiating ourselves is the genuine collision, not a replay: as the higher party we
        // answer it (a reflected copy of our own initiation fails the Noise read below, which
        // leaves our handshake in flight).
        let colliding = self
            .initiating
            .as_ref()
            .is_some_and(|i| i.epoch == msg.epoch);
        if self.seen_epochs.contains(&msg.epoch) && !colliding {
            // An epoch this channel already went through (retired, or evicted while pending):
            // a replayed initiation, which must not cancel our own handshake or take a pending
            // slot.
            return Err(stale);
        }
        let mut state = self.noise(local, self.peer, me, msg.epoch, false)?;
        let fail = |e: snow::Error| ChannelError::HandshakeFailed {
            peer: self.peer,
            reason: e.to_string(),
        };
        let mut scratch = [0u8; 256];
        state.read_message(&msg.noise, &mut scratch).map_err(fail)?;
        let mut buf = [0u8; 256];
        let n = state.write_message(&[], &mut buf).map_err(fail)?;
        let keys = EpochKeys::from_split(msg.epoch, false, state.dangerously_get_raw_split(), now);
        if self.pending.len() >= MAX_PENDING {
            self.pending.pop_front();
        }
        self.pending.push_back(PendingResponse {
            epoch: msg.epoch,
            hs1: msg.noise.clone(),
            hs2: buf[..n].to_vec(),
            keys,
        });
        self.initiating = None;
        self.saw(msg.epoch);
        self.next_epoch = self.next_epoch.max(msg.epoch.wrapping_add(1));
        Ok(vec![self.response(me, msg.epoch, buf[..n].to_vec())])
    }

    fn response(&self, me: PartyId, epoch: u32, noise: Vec<u8>) -> WireMessage {
        WireMessage::Handshake(HandshakeMessage {
            from: me,
            to: self.peer,
            epoch,
            stage: 2,
            noise,
        })
    }

    fn on_response(
        &mut self,
        local: &Local<'_>,
        msg: &HandshakeMessage,
        now: Instant,
    ) -> Result<Vec<WireMessage>, ChannelError> {
        let matches = self
            .initiating
            .as_ref()
            .is_some_and(|i| i.epoch == msg.epoch);
        if !matches {
            return Err(ChannelError::StaleHandshake {
                peer: self.peer,
                epoch: msg.epoch,
            });
        }
        let mut scratch = [0u8; 256];
        // A forged or damaged answer changes nothing: the handshake stays in flight (snow keeps
        // its state when a read fails), so the genuine answer still completes it, and if none
        // comes the next tick retries after the deadline.
        self.initiating
            .as_mut()
            .expect("checked above")
            .state
            .read_message(&msg.noise, &mut scratch)
            .map_err(|e| ChannelError::HandshakeFailed {
                peer: self.peer,
                reason: e.to_string(),
            })?;
        let mut init = self.initiating.take().expect("checked above");
        let keys = EpochKeys::from_split(
            init.epoch,
            true,
            init.state.dangerously_get_raw_split(),
            now,
        );
        self.promote(keys);
        let me = local.identity.party();
        let keys = self.current.as_mut().expect("just promoted");
        // An empty control record tells the responder the new keys are in use.
        let confirm = FrameContext::control().header(FrameKind::Control, me, self.peer);
        let mut out = vec![WireMessage::Record(keys.seal(confirm, &[]))];
        out.extend(self.flush_queue(local));
        Ok(out)
    }

    /// Opens a record from the peer. Returns the plaintext and anything to send as a result
    /// (queued records released by a completed handshake).
    pub(crate) fn open(
        &mut self,
        local: &Local<'_>,
        frame: &RecordFrame,
    ) -> Result<(Zeroizing<Vec<u8>>, Vec<WireMessage>), ChannelError> {
        let epoch = frame.header.epoch;
        let from = frame.header.from;
        let mut failure = None;
        if let Some(i) = self.pending.iter().position(|p| p.epoch == epoch) {
            match self.pending[i].keys.open(frame) {
                Ok(plaintext) => {
                    let p = self.pending.remove(i).expect("index in range");
                    self.promote(p.keys);
                    return Ok((plaintext, self.flush_queue(local)));
                }
                Err(e) => failure = Some(e),
            }
        }
        let confirmed = [self.current.as_mut(), self.previous.as_mut()]
            .into_iter()
            .flatten()
            .find(|k| k.epoch == epoch);
        let result = match confirmed {
            Some(keys) => keys.open(frame),
            None => match failure {
                Some(e) => Err(e),
                None => {
                    self.resync = true;
                    return Err(ChannelError::UnknownEpoch { from, epoch });
                }
            },
        };
        match result {
            Ok(plaintext) => Ok((plaintext, Vec::new())),
            Err(OpenError::Replay) => Err(ChannelError::Replay {
                from,
                epoch,
                counter: frame.header.counter,
            }),
            Err(OpenError::Authentication) => Err(ChannelError::AuthenticationFailed { from }),
        }
    }
}

impl FrameContext {
    pub(crate) fn header(&self, kind: FrameKind, from: PartyId, to: PartyId) -> FrameHeader {
        FrameHeader {
            kind,
            epoch: 0,
            counter: 0,
            from,
            to,
            session: self.session,
            round: self.round,
            protocol: self.protocol,
            len: 0,
        }
    }
}
