//! Behaviour of the sans-IO channel layer between three parties.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use tessera_channel::identity::{AdminKey, PartyIdentity};
use tessera_channel::{
    ChannelConfig, ChannelError, ChannelManager, Delivery, FrameContext, Outbound, RefusalReason,
    Roster, SignedRoster,
};
use tessera_wire::{
    ClusterId, FrameKind, HandshakeMessage, PartyId, Protocol, SessionId, WireMessage,
    DEFAULT_MAX_PAYLOAD,
};

const P1: PartyId = PartyId(1);
const P2: PartyId = PartyId(2);
const P3: PartyId = PartyId(3);

struct Cluster {
    nodes: Vec<ChannelManager>,
    /// Messages in flight: (from, outbound).
    wire: VecDeque<(PartyId, Outbound)>,
    inbox: Vec<Vec<Delivery>>,
    now: Instant,
    identities_json: Vec<String>,
    roster: Roster,
}

fn cluster_with(config: ChannelConfig) -> Cluster {
    let cluster = ClusterId::new("test").unwrap();
    let identities: Vec<PartyIdentity> = (1..=3)
        .map(|i| PartyIdentity::generate(PartyId(i), cluster.clone(), None))
        .collect();
    let publics: Vec<_> = identities.iter().map(|i| i.public(None)).collect();
    let roster = Roster::build(cluster, 1, &publics).unwrap();
    let admin = AdminKey::generate();
    let mut signed = SignedRoster::new(roster.clone());
    signed.sign(&admin);
    signed.verify(&[admin.verifying_key()], 1).unwrap();
    let identities_json = identities.iter().map(|i| i.to_json().to_string()).collect();
    let nodes = identities
        .into_iter()
        .map(|id| ChannelManager::new(id, roster.clone(), config.clone()).unwrap())
        .collect();
    Cluster {
        nodes,
        wire: VecDeque::new(),
        inbox: vec![Vec::new(); 3],
        now: Instant::now(),
        identities_json,
        roster,
    }
}

fn cluster() -> Cluster {
    cluster_with(ChannelConfig::default())
}

fn ctx(round: u16) -> FrameContext {
    FrameContext {
        session: SessionId([9; 16]),
        round,
        protocol: Protocol::PING,
    }
}

fn idx(p: PartyId) -> usize {
    p.0 as usize - 1
}

impl Cluster {
    fn node(&mut self, p: PartyId) -> &mut ChannelManager {
        &mut self.nodes[idx(p)]
    }

    fn send(&mut self, from: PartyId, to: PartyId, round: u16, payload: &[u8]) {
        let now = self.now;
        let out = self.node(from).send(to, ctx(round), payload, now).unwrap();
        self.wire.extend(out.into_iter().map(|o| (from, o)));
    }

    fn broadcast(&mut self, from: PartyId, payload: &[u8]) {
        let now = self.now;
        let others: Vec<_> = [P1, P2, P3].into_iter().filter(|p| *p != from).collect();
        let out = self
            .node(from)
            .broadcast(&others, ctx(1), payload, now)
            .unwrap();
        self.wire.extend(out.into_iter().map(|o| (from, o)));
    }

    /// Delivers one message; returns the receiver's verdict.
    fn deliver_one(&mut self, from: PartyId, o: Outbound) -> Result<(), ChannelError> {
        let now = self.now;
        let received = self.node(o.to).receive(Some(from), &o.bytes, now)?;
        if let Some(d) = received.delivery {
            self.inbox[idx(o.to)].push(d);
        }
        let to = o.to;
        self.wire
            .extend(received.outbound.into_iter().map(|r| (to, r)));
        Ok(())
    }

    /// Delivers everything in flight until the network is quiet.
    fn run(&mut self) {
        while let Some((from, o)) = self.wire.pop_front() {
            self.deliver_one(from, o)
                .expect("honest traffic is accepted");
        }
    }

    fn take_inbox(&mut self, p: PartyId) -> Vec<Delivery> {
        std::mem::take(&mut self.inbox[idx(p)])
    }

    /// Establishes every channel and returns a captured, deliverable record from p1 to p2.
    fn established_record(&mut self) -> (PartyId, Outbound) {
        for a in [P1, P2, P3] {
            for b in [P1, P2, P3] {
                if a != b {
                    self.send(a, b, 0, b"hello");
                }
            }
        }
        self.run();
        for p in [P1, P2, P3] {
            self.take_inbox(p);
        }
        self.send(P1, P2, 3, b"captured");
        let captured = self.wire.pop_front().unwrap();
        assert!(self.wire.is_empty());
        captured
    }

    fn assert_still_works(&mut self, from: PartyId, to: PartyId) {
        self.send(from, to, 7, b"still works");
        self.run();
        let got = self.take_inbox(to);
        assert_eq!(got.len(), 1, "channel {from}->{to} broken");
        assert_eq!(got[0].payload, b"still works");
    }
}

#[test]
fn direct_messages_round_trip_between_all_pairs() {
    let mut c = cluster();
    for a in [P1, P2, P3] {
        for b in [P1, P2, P3] {
            if a != b {
                c.send(a, b, 1, format!("{a}->{b}").as_bytes());
            }
        }
    }
    c.run();
    for p in [P1, P2, P3] {
        let mut got: Vec<String> = c
            .take_inbox(p)
            .into_iter()
            .map(|d| {
                assert_eq!(d.context, ctx(1));
                assert!(d.broadcast.is_none());
                String::from_utf8(d.payload).unwrap()
            })
            .collect();
        got.sort();
        let mut want: Vec<String> = [P1, P2, P3]
            .into_iter()
            .filter(|q| *q != p)
            .map(|q| format!("{q}->{p}"))
            .collect();
        want.sort();
        assert_eq!(got, want);
    }
    for p in [P1, P2, P3] {
        assert_eq!(c.node(p).counters().total(), 0);
    }
}

#[test]
fn broadcast_is_signed_and_verifiable_later() {
    let mut c = cluster();
    c.broadcast(P2, b"commitment");
    c.run();
    for p in [P1, P3] {
        let got = c.take_inbox(p);
        assert_eq!(got.len(), 1);
        let d = &got[0];
        assert_eq!((d.from, d.payload.as_slice()), (P2, &b"commitment"[..]));
        let evidence = d.broadcast.clone().expect("broadcast evidence");
        // Anyone with the roster can check it later, and it speaks of this payload only.
        evidence.verify(&c.roster).unwrap();
        assert!(evidence.covers(b"commitment"));
        assert!(!evidence.covers(b"other"));
        let mut forged = evidence.clone();
        forged.round += 1;
        assert!(matches!(
            forged.verify(&c.roster),
            Err(ChannelError::BadBroadcastSignature { .. })
        ));
    }
}

#[test]
fn empty_and_max_size_payloads_round_trip() {
    let mut c = cluster();
    let big = vec![0xab; DEFAULT_MAX_PAYLOAD];
    c.send(P1, P3, 1, b"");
    c.send(P1, P3, 2, &big);
    c.run();
    let got = c.take_inbox(P3);
    assert_eq!(got[0].payload, b"");
    assert_eq!(got[1].payload, big);
    let too_big = vec![0; DEFAULT_MAX_PAYLOAD + 1];
    let now = c.now;
    assert!(matches!(
        c.node(P1).send(P3, ctx(1), &too_big, now),
        Err(ChannelError::PayloadTooLarge { .. })
    ));
}

/// Feeds `bytes` to `to` as if from `from`, expects the given refusal, checks its counter and
/// that the channel keeps working.
fn expect_refusal(
    c: &mut Cluster,
    from: PartyId,
    to: PartyId,
    bytes: Vec<u8>,
    reason: RefusalReason,
) -> ChannelError {
    let before = c.node(to).counters().get(reason);
    let err = c
        .deliver_one(from, Outbound { to, bytes })
        .expect_err("must be refused");
    assert_eq!(err.reason(), reason, "got {err}");
    assert_eq!(c.node(to).counters().get(reason), before + 1);
    c.assert_still_works(from, to);
    err
}

#[test]
fn replayed_frame_is_refused() {
    let mut c = cluster();
    let (from, record) = c.established_record();
    c.deliver_one(from, record.clone()).unwrap();
    assert_eq!(c.take_inbox(P2)[0].payload, b"captured");
    expect_refusal(&mut c, from, P2, record.bytes, RefusalReason::Replay);
}

#[test]
fn flipped_bits_in_header_body_and_tag_are_refused() {
    let mut c = cluster();
    let (from, record) = c.established_record();
    let len = record.bytes.len();
    // Header fields (epoch, counter, session, round, protocol, length), body, tag.
    for (i, reason) in [
        (3, RefusalReason::UnknownEpoch),
        (6, RefusalReason::AuthenticationFailed),
        (20, RefusalReason::AuthenticationFailed),
        (34, RefusalReason::AuthenticationFailed),
        (36, RefusalReason::AuthenticationFailed),
        (41, RefusalReason::Malformed),
        (len - 20, RefusalReason::AuthenticationFailed),
        (len - 1, RefusalReason::AuthenticationFailed),
    ] {
        let mut bytes = record.bytes.clone();
        bytes[i] ^= 0x01;
        expect_refusal(&mut c, from, P2, bytes, reason);
    }
    let mut kind = record.bytes.clone();
    kind[1] = 3; // direct -> broadcast
    expect_refusal(&mut c, from, P2, kind, RefusalReason::AuthenticationFailed);
    // The untouched original still opens: refusals did not move the replay window.
    c.deliver_one(from, record).unwrap();
    assert_eq!(c.take_inbox(P2).last().unwrap().payload, b"captured");
}

fn reencode(bytes: &[u8], edit: impl FnOnce(&mut tessera_wire::RecordFrame)) -> Vec<u8> {
    let WireMessage::Record(mut frame) = WireMessage::decode(bytes, usize::MAX).unwrap() else {
        panic!("not a record");
    };
    edit(&mut frame);
    WireMessage::Record(frame).encode()
}

#[test]
fn readdressed_frames_are_refused() {
    let mut c = cluster();
    let (from, record) = c.established_record();
    // Delivered to the wrong party as is.
    expect_refusal(
        &mut c,
        from,
        P3,
        record.bytes.clone(),
        RefusalReason::Misaddressed,
    );
    // Header rewritten to name the wrong recipient: p3 has no such keys with p1.
    let to_p3 = reencode(&record.bytes, |f| f.header.to = P3);
    let err = c
        .deliver_one(
            from,
            Outbound {
                to: P3,
                bytes: to_p3,
            },
        )
        .unwrap_err();
    assert!(matches!(
        err.reason(),
        RefusalReason::AuthenticationFailed | RefusalReason::UnknownEpoch
    ));
    // Moved to another session or round.
    let other_session = reencode(&record.bytes, |f| f.header.session = SessionId([1; 16]));
    expect_refusal(
        &mut c,
        from,
        P2,
        other_session,
        RefusalReason::AuthenticationFailed,
    );
    let other_round = reencode(&record.bytes, |f| f.header.round += 1);
    expect_refusal(
        &mut c,
        from,
        P2,
        other_round,
        RefusalReason::AuthenticationFailed,
    );
    let other_protocol = reencode(&record.bytes, |f| f.header.protocol = Protocol::SIGN);
    expect_refusal(
        &mut c,
        from,
        P2,
        other_protocol,
        RefusalReason::AuthenticationFailed,
    );
    // The transport says p3 sent it, the frame says p1.
    let err = c
        .deliver_one(P3, record.clone())
        .expect_err("sender mismatch");
    assert_eq!(err.reason(), RefusalReason::SenderMismatch);
    // Unmodified, it still opens.
    c.deliver_one(from, record).unwrap();
}

#[test]
fn garbage_truncated_and_oversized_frames_are_refused() {
    let mut c = cluster();
    let (from, record) = c.established_record();
    expect_refusal(
        &mut c,
        from,
        P2,
        b"\x01garbage".to_vec(),
        RefusalReason::Malformed,
    );
    expect_refusal(&mut c, from, P2, Vec::new(), RefusalReason::Malformed);
    let truncated = record.bytes[..record.bytes.len() - 5].to_vec();
    let err = expect_refusal(&mut c, from, P2, truncated, RefusalReason::Malformed);
    assert!(err.to_string().contains("truncated"), "{err}");
    // A header that declares a body over the limit is refused without reading further.
    let mut oversized = record.bytes.clone();
    oversized[38..42].copy_from_slice(&(DEFAULT_MAX_PAYLOAD as u32 + 1000).to_be_bytes());
    let err = expect_refusal(&mut c, from, P2, oversized, RefusalReason::Malformed);
    assert!(err.to_string().contains("exceeds the limit"), "{err}");
    let huge = vec![1u8; 2 * 1024 * 1024];
    expect_refusal(&mut c, from, P2, huge, RefusalReason::Malformed);
}

#[test]
fn unknown_party_and_unknown_key_are_refused() {
    let mut c = cluster();
    let (from, record) = c.established_record();
    // A party id that is not in the roster.
    let from_p9 = reencode(&record.bytes, |f| f.header.from = PartyId(9));
    let err = c
        .deliver_one(
            PartyId(9),
            Outbound {
                to: P2,
                bytes: from_p9,
            },
        )
        .unwrap_err();
    assert_eq!(err.reason(), RefusalReason::UnknownParty);

    // An impostor: claims to be p1 but holds keys that are not in the pinned roster.
    let impostor = PartyIdentity::generate(P1, ClusterId::new("test").unwrap(), None);
    let mut fake_publics = vec![impostor.public(None)];
    let real = c.roster.clone();
    for e in real.parties.iter().filter(|e| e.party != P1) {
        fake_publics.push(tessera_channel::PublicIdentity {
            party: e.party,
            cluster: real.cluster.clone(),
            ed25519: e.ed25519.clone(),
            x25519: e.x25519.clone(),
            nats_user: None,
        });
    }
    let fake_roster = Roster::build(real.cluster.clone(), 1, &fake_publics).unwrap();
    let mut fake = ChannelManager::new(impostor, fake_roster, ChannelConfig::default()).unwrap();
    let hello = fake.send(P2, ctx(1), b"trust me", c.now).unwrap();
    assert_eq!(hello.len(), 1, "a handshake");
    expect_refusal(
        &mut c,
        from,
        P2,
        hello[0].bytes.clone(),
        RefusalReason::HandshakeFailed,
    );
    // Its records under made-up epochs are refused as well.
    let _ = from;
    assert!(c.take_inbox(P2).iter().all(|d| d.payload != b"trust me"));
}

/// Seals `payload || signature` as a broadcast from p1 to p2 with p1's real channel keys, as a
/// misbehaving p1 could.
fn forged_broadcast(c: &mut Cluster, payload: &[u8], signature: &[u8]) -> Vec<u8> {
    let mut plaintext = payload.to_vec();
    plaintext.extend_from_slice(signature);
    let now = c.now;
    let out = c
        .node(P1)
        .send_raw(&[P2], FrameKind::Broadcast, ctx(1), &plaintext, now)
        .unwrap();
    out[0].bytes.clone()
}

#[test]
fn broadcast_with_a_bad_signature_is_refused() {
    let mut c = cluster();
    c.established_record();
    c.wire.clear();
    let garbage_signature = forged_broadcast(&mut c, b"commitment", &[0x55; 64]);
    expect_refusal(
        &mut c,
        P1,
        P2,
        garbage_signature,
        RefusalReason::BadBroadcastSignature,
    );

    // A genuine signature, but over another payload.
    c.broadcast(P1, b"different");
    c.run();
    let other_sig = c.take_inbox(P2)[0].broadcast.clone().unwrap().signature;
    let swapped = forged_broadcast(&mut c, b"commitment", &other_sig);
    expect_refusal(
        &mut c,
        P1,
        P2,
        swapped,
        RefusalReason::BadBroadcastSignature,
    );

    // Too short to even hold a signature.
    let short = forged_broadcast(&mut c, b"", &[1, 2, 3]);
    expect_refusal(&mut c, P1, P2, short, RefusalReason::BadBroadcastSignature);
}

#[test]
fn lost_and_reordered_frames_do_not_break_the_channel() {
    let mut c = cluster();
    c.established_record();
    c.wire.clear();
    for i in 0..50u16 {
        c.send(P1, P2, i, &i.to_be_bytes());
    }
    let mut frames: Vec<_> = c.wire.drain(..).collect();
    // Lose every fifth frame, deliver the rest in reverse order.
    frames.reverse();
    let mut delivered = 0;
    for (i, (from, o)) in frames.into_iter().enumerate() {
        if i % 5 == 0 {
            continue;
        }
        c.deliver_one(from, o).unwrap();
        delivered += 1;
    }
    assert_eq!(c.take_inbox(P2).len(), delivered);
    c.assert_still_works(P1, P2);
    c.assert_still_works(P2, P1);
}

#[test]
fn rekey_mid_stream_keeps_delivery() {
    let mut c = cluster_with(ChannelConfig {
        rekey_after_messages: 10,
        ..ChannelConfig::default()
    });
    c.established_record();
    c.wire.clear();
    let first = c.node(P1).epoch(P2).unwrap();
    // Interleave sending and delivery across several automatic rekeys.
    for i in 0..100u16 {
        c.send(P1, P2, i, &i.to_be_bytes());
        c.send(P2, P1, i, &i.to_be_bytes());
        if i % 3 == 0 {
            c.run();
        }
    }
    c.run();
    assert_eq!(c.take_inbox(P2).len(), 100);
    assert_eq!(c.take_inbox(P1).len(), 100);
    assert_ne!(c.node(P1).epoch(P2), Some(first), "rekeyed");
    assert_eq!(c.node(P1).epoch(P2), c.node(P2).epoch(P1));

    // On demand, with frames sealed under the old keys still in flight.
    c.send(P3, P1, 1, b"old epoch");
    let in_flight: Vec<_> = c.wire.drain(..).collect();
    let now = c.now;
    let out = c.node(P1).rekey(P3, now).unwrap();
    c.wire.extend(out.into_iter().map(|o| (P1, o)));
    c.run();
    for (from, o) in in_flight {
        c.deliver_one(from, o).unwrap();
    }
    assert_eq!(c.take_inbox(P1)[0].payload, b"old epoch");
    c.assert_still_works(P1, P3);
    c.assert_still_works(P3, P1);
}

#[test]
fn time_based_rekey_and_lost_handshake_retry() {
    let mut c = cluster_with(ChannelConfig {
        rekey_after: Duration::from_secs(60),
        handshake_timeout: Duration::from_secs(2),
        ..ChannelConfig::default()
    });
    c.established_record();
    c.wire.clear();
    let before = c.node(P1).epoch(P2);
    c.now += Duration::from_secs(61);
    let now = c.now;
    let hs = c.node(P1).tick(now);
    assert!(!hs.is_empty(), "rekey due");
    // The handshake is lost; after the timeout the next tick tries again.
    c.now += Duration::from_secs(3);
    let now = c.now;
    let retry = c.node(P1).tick(now);
    assert!(retry.iter().any(|o| o.to == P2));
    assert!(c.node(P1).handshake_timeouts() >= 1);
    c.wire.extend(retry.into_iter().map(|o| (P1, o)));
    let other = c.node(P2).tick(now);
    c.wire.extend(other.into_iter().map(|o| (P2, o)));
    c.run();
    assert_ne!(c.node(P1).epoch(P2), before);
    c.assert_still_works(P1, P2);
    c.assert_still_works(P2, P1);
}

#[test]
fn simultaneous_first_contact_and_lost_handshake_answer() {
    let mut c = cluster();
    // Both sides start at once: one handshake wins and both queues are delivered.
    c.send(P2, P3, 1, b"from p2");
    c.send(P3, P2, 1, b"from p3");
    c.run();
    assert_eq!(c.take_inbox(P3)[0].payload, b"from p2");
    assert_eq!(c.take_inbox(P2)[0].payload, b"from p3");

    // The responder's answer is lost; the initiator's retry is answered and delivery resumes.
    c.send(P1, P2, 1, b"queued");
    let (from, hs1) = c.wire.pop_front().unwrap();
    c.deliver_one(from, hs1).unwrap();
    c.wire.clear(); // answer lost
    c.now += Duration::from_secs(6);
    let now = c.now;
    let retry = c.node(P1).tick(now);
    c.wire.extend(retry.into_iter().map(|o| (P1, o)));
    c.run();
    assert_eq!(c.take_inbox(P2)[0].payload, b"queued");
}

#[test]
fn restarted_party_re_establishes_its_channels() {
    let mut c = cluster();
    c.established_record();
    c.wire.clear();
    // p2 restarts: same identity, no channel state.
    let identity = PartyIdentity::from_json(&c.identities_json[1]).unwrap();
    c.nodes[1] = ChannelManager::new(identity, c.roster.clone(), ChannelConfig::default()).unwrap();
    // p2 speaks first to p1: a fresh handshake.
    c.assert_still_works(P2, P1);
    c.assert_still_works(P1, P2);
    // p3 speaks first, on keys p2 no longer has: that frame is lost, p2 re-handshakes on its
    // next tick, and the channel works again.
    c.send(P3, P2, 1, b"lost");
    let (from, o) = c.wire.pop_front().unwrap();
    let err = c.deliver_one(from, o).unwrap_err();
    assert_eq!(err.reason(), RefusalReason::UnknownEpoch);
    let now = c.now;
    let out = c.node(P2).tick(now);
    assert_eq!(out.len(), 1);
    c.wire.extend(out.into_iter().map(|o| (P2, o)));
    c.run();
    c.assert_still_works(P3, P2);
    c.assert_still_works(P2, P3);
}

#[test]
fn handshake_replay_is_refused_or_answered_identically() {
    let mut c = cluster();
    c.send(P1, P2, 1, b"x");
    let (from, hs1) = c.wire.pop_front().unwrap();
    c.deliver_one(from, hs1.clone()).unwrap();
    let answer = c.wire.back().unwrap().1.clone();
    // Before confirmation, a repeat gets the same answer.
    c.deliver_one(from, hs1.clone()).unwrap();
    assert_eq!(c.wire.pop_back().unwrap().1, answer);
    c.run();
    assert_eq!(c.take_inbox(P2)[0].payload, b"x");
    // After confirmation the same initiation is stale.
    let err = c.deliver_one(from, hs1).unwrap_err();
    assert_eq!(err.reason(), RefusalReason::StaleHandshake);
    c.assert_still_works(P1, P2);
}

// ---------------------------------------------------------------------------------------------
// Forged, tampered, misaddressed and replayed handshake messages.

fn handshake(bytes: &[u8]) -> HandshakeMessage {
    match WireMessage::decode(bytes, usize::MAX).unwrap() {
        WireMessage::Handshake(h) => h,
        WireMessage::Record(_) => panic!("not a handshake"),
    }
}

fn handshake_epoch(o: &Outbound) -> u32 {
    handshake(&o.bytes).epoch
}

/// Decodes a handshake message, edits it and encodes it again.
fn reencode_handshake(o: &Outbound, edit: impl FnOnce(&mut HandshakeMessage)) -> Vec<u8> {
    let mut h = handshake(&o.bytes);
    edit(&mut h);
    WireMessage::Handshake(h).encode()
}

/// A copy of `o` with one bit of its Noise message flipped (`at` may be negative: from the end).
fn flip_noise(o: &Outbound, at: isize) -> Vec<u8> {
    reencode_handshake(o, |h| {
        let i = if at < 0 {
            h.noise.len() - at.unsigned_abs()
        } else {
            at as usize
        };
        h.noise[i] ^= 0x01;
    })
}

/// An established cluster (every channel up, nothing in flight).
fn established() -> Cluster {
    let mut c = cluster();
    c.established_record();
    c
}

impl Cluster {
    /// Starts an on-demand rekey from `a` to `b` and returns the initiation, undelivered.
    fn start_rekey(&mut self, a: PartyId, b: PartyId) -> Outbound {
        let now = self.now;
        let mut out = self.node(a).rekey(b, now).unwrap();
        assert_eq!(out.len(), 1, "one initiation");
        let hs1 = out.pop().unwrap();
        assert_eq!((hs1.to, handshake(&hs1.bytes).stage), (b, 1));
        hs1
    }

    /// Delivers initiation `hs1` from `from` and takes the answer off the wire, undelivered.
    fn answer(&mut self, from: PartyId, hs1: Outbound) -> Outbound {
        assert!(self.wire.is_empty());
        let responder = hs1.to;
        self.deliver_one(from, hs1).unwrap();
        let (sender, hs2) = self.wire.pop_front().expect("an answer");
        assert!(self.wire.is_empty());
        assert_eq!(
            (sender, hs2.to, handshake(&hs2.bytes).stage),
            (responder, from, 2)
        );
        hs2
    }

    /// A complete rekey from `a` to `b`; returns both handshake messages, to replay later.
    fn rekey_captured(&mut self, a: PartyId, b: PartyId) -> (Outbound, Outbound) {
        let hs1 = self.start_rekey(a, b);
        let epoch = handshake_epoch(&hs1);
        let hs2 = self.answer(a, hs1.clone());
        self.deliver_one(b, hs2.clone()).unwrap();
        // The initiator's confirmation record promotes the responder's pending keys.
        self.run();
        self.assert_epoch(a, b, epoch);
        (hs1, hs2)
    }

    /// Both ends of the `a`-`b` channel send on `epoch`.
    fn assert_epoch(&mut self, a: PartyId, b: PartyId, epoch: u32) {
        assert_eq!(self.node(a).epoch(b), Some(epoch), "{a}'s epoch with {b}");
        assert_eq!(self.node(b).epoch(a), Some(epoch), "{b}'s epoch with {a}");
    }

    /// Like [`expect_refusal`] but without sending anything afterwards, for checks that must
    /// come before any further traffic: feeds `bytes` to `to` as if from `from`, expects the
    /// given refusal and checks that it (and only it) was counted.
    fn refuse(&mut self, from: PartyId, to: PartyId, bytes: Vec<u8>, reason: RefusalReason) {
        let before = self.node(to).counters().clone();
        let err = self
            .deliver_one(from, Outbound { to, bytes })
            .expect_err("must be refused");
        assert_eq!(err.reason(), reason, "got {err}");
        let after = self.node(to).counters();
        assert_eq!(after.get(reason), before.get(reason) + 1);
        assert_eq!(after.total(), before.total() + 1);
    }
}

#[test]
fn tampered_initiation_is_refused_and_the_channel_keeps_working() {
    let mut c = established();
    let e0 = c.node(P1).epoch(P2).unwrap();
    let hs1 = c.start_rekey(P1, P2);
    // A flipped bit in the ephemeral key, in the payload tag, and a truncated Noise message.
    for tampered in [
        flip_noise(&hs1, 0),
        flip_noise(&hs1, 31),
        flip_noise(&hs1, -1),
        reencode_handshake(&hs1, |h| h.noise.truncate(40)),
        reencode_handshake(&hs1, |h| h.noise.clear()),
    ] {
        let err = expect_refusal(&mut c, P1, P2, tampered, RefusalReason::HandshakeFailed);
        assert!(matches!(
            err,
            ChannelError::HandshakeFailed { peer: P1, .. }
        ));
        c.assert_epoch(P1, P2, e0);
    }
    // The genuine initiation is still answered: the refusals left no state behind.
    let e1 = handshake_epoch(&hs1);
    let hs2 = c.answer(P1, hs1);
    c.deliver_one(P2, hs2).unwrap();
    c.run();
    c.assert_epoch(P1, P2, e1);
    c.assert_still_works(P1, P2);
    c.assert_still_works(P2, P1);
}

#[test]
fn tampered_initiation_for_a_pending_epoch_is_stale_and_keeps_the_pending_answer() {
    let mut c = established();
    let e0 = c.node(P1).epoch(P2).unwrap();
    let hs1 = c.start_rekey(P1, P2);
    let e1 = handshake_epoch(&hs1);
    // p2 answered and holds the new keys as pending.
    let hs2 = c.answer(P1, hs1.clone());
    // Other bytes for the pending epoch: refused without touching the pending handshake.
    for tampered in [flip_noise(&hs1, 0), flip_noise(&hs1, -1)] {
        expect_refusal(&mut c, P1, P2, tampered, RefusalReason::StaleHandshake);
    }
    c.assert_epoch(P1, P2, e0);
    // The genuine repeat is still answered identically, and the handshake completes.
    assert_eq!(c.answer(P1, hs1), hs2);
    c.deliver_one(P2, hs2).unwrap();
    c.run();
    c.assert_epoch(P1, P2, e1);
    c.assert_still_works(P1, P2);
    c.assert_still_works(P2, P1);
}

#[test]
fn old_initiation_and_answer_replayed_after_a_rekey_are_stale_and_do_not_roll_back() {
    let mut c = established();
    let (old_hs1, old_hs2) = c.rekey_captured(P1, P2);
    c.rekey_captured(P1, P2);
    let now_epoch = c.node(P1).epoch(P2).unwrap();
    assert_ne!(now_epoch, handshake_epoch(&old_hs1));
    // p2 still holds the old epoch as `previous`: the old initiation is stale.
    let err = expect_refusal(
        &mut c,
        P1,
        P2,
        old_hs1.bytes.clone(),
        RefusalReason::StaleHandshake,
    );
    assert_eq!(
        err,
        ChannelError::StaleHandshake {
            peer: P1,
            epoch: handshake_epoch(&old_hs1)
        }
    );
    c.assert_epoch(P1, P2, now_epoch);
    // p1 is not waiting for any answer: the old answer is stale too.
    expect_refusal(&mut c, P2, P1, old_hs2.bytes, RefusalReason::StaleHandshake);
    c.assert_epoch(P1, P2, now_epoch);
    c.assert_still_works(P2, P1);
}

#[test]
fn tampered_answer_is_refused_and_installs_no_keys() {
    // A flipped bit in the answer's payload tag, and in its ephemeral key.
    for at in [-1, 0] {
        let mut c = established();
        let e0 = c.node(P1).epoch(P2).unwrap();
        let hs1 = c.start_rekey(P1, P2);
        let hs2 = c.answer(P1, hs1);
        let err = expect_refusal(
            &mut c,
            P2,
            P1,
            flip_noise(&hs2, at),
            RefusalReason::HandshakeFailed,
        );
        assert!(matches!(
            err,
            ChannelError::HandshakeFailed { peer: P2, .. }
        ));
        // Neither side moved to the new epoch; both keep sending on the old one.
        c.assert_epoch(P1, P2, e0);
        c.assert_still_works(P1, P2);
        c.assert_epoch(P1, P2, e0);
    }
}

#[test]
fn tampered_answer_at_first_contact_is_refused_and_the_handshake_is_retried() {
    let mut c = cluster();
    c.send(P1, P2, 1, b"queued");
    let (from, hs1) = c.wire.pop_front().unwrap();
    let hs2 = c.answer(from, hs1);
    c.refuse(P2, P1, flip_noise(&hs2, -1), RefusalReason::HandshakeFailed);
    // No keys on either side, and the queued payload was not released.
    assert_eq!(c.node(P1).epoch(P2), None);
    assert_eq!(c.node(P2).epoch(P1), None);
    assert!(c.wire.is_empty());
    assert!(c.take_inbox(P2).is_empty());
    // After the handshake timeout the next tick starts over and the payload arrives.
    c.now += Duration::from_secs(6);
    let now = c.now;
    let retry = c.node(P1).tick(now);
    assert_eq!(retry.len(), 1);
    c.wire.extend(retry.into_iter().map(|o| (P1, o)));
    c.run();
    assert_eq!(c.take_inbox(P2)[0].payload, b"queued");
    c.assert_still_works(P1, P2);
    c.assert_still_works(P2, P1);
}

#[test]
fn answer_to_a_party_that_is_not_initiating_is_stale() {
    let mut c = established();
    let (hs1, hs2) = c.rekey_captured(P1, P2);
    let e1 = handshake_epoch(&hs1);
    let p2_p3 = c.node(P2).epoch(P3).unwrap();
    // The same answer again, after it completed the handshake.
    expect_refusal(
        &mut c,
        P2,
        P1,
        hs2.bytes.clone(),
        RefusalReason::StaleHandshake,
    );
    // Re-addressed to p3, which never started a handshake with p2.
    let to_p3 = reencode_handshake(&hs2, |h| h.to = P3);
    expect_refusal(&mut c, P2, P3, to_p3, RefusalReason::StaleHandshake);
    // An initiation relabelled as an answer, fed to its responder.
    let relabelled = reencode_handshake(&hs1, |h| h.stage = 2);
    expect_refusal(&mut c, P1, P2, relabelled, RefusalReason::StaleHandshake);
    c.assert_epoch(P1, P2, e1);
    c.assert_epoch(P2, P3, p2_p3);
    c.assert_still_works(P2, P1);
    c.assert_still_works(P3, P2);
    c.assert_still_works(P2, P3);
}

#[test]
fn replayed_answer_from_an_earlier_epoch_does_not_disturb_the_handshake_in_flight() {
    let mut c = established();
    let (_, old_hs2) = c.rekey_captured(P1, P2);
    let e1 = c.node(P1).epoch(P2).unwrap();
    let hs1 = c.start_rekey(P1, P2);
    let e2 = handshake_epoch(&hs1);
    let hs2 = c.answer(P1, hs1);
    // p1 waits for an answer on e2; the replayed answer names e1.
    expect_refusal(&mut c, P2, P1, old_hs2.bytes, RefusalReason::StaleHandshake);
    c.assert_epoch(P1, P2, e1);
    // The genuine answer still completes p1's handshake.
    c.deliver_one(P2, hs2).unwrap();
    c.run();
    c.assert_epoch(P1, P2, e2);
    c.assert_still_works(P1, P2);
    c.assert_still_works(P2, P1);
}

#[test]
fn readdressed_and_spoofed_initiations_are_refused() {
    let mut c = established();
    let e0 = c.node(P1).epoch(P2).unwrap();
    let p1_p3 = c.node(P1).epoch(P3).unwrap();
    let hs1 = c.start_rekey(P1, P2);
    // Delivered as is to p3.
    let err = expect_refusal(
        &mut c,
        P1,
        P3,
        hs1.bytes.clone(),
        RefusalReason::Misaddressed,
    );
    assert_eq!(err, ChannelError::Misaddressed { to: P2, me: P3 });
    // Header rewritten to address p3: made for p2's static key and prologue, so p3 refuses it.
    let to_p3 = reencode_handshake(&hs1, |h| h.to = P3);
    expect_refusal(&mut c, P1, P3, to_p3, RefusalReason::HandshakeFailed);
    // Claims to come from p3 while the transport says p1.
    let from_p3 = reencode_handshake(&hs1, |h| h.from = P3);
    expect_refusal(
        &mut c,
        P1,
        P2,
        from_p3.clone(),
        RefusalReason::SenderMismatch,
    );
    // Claims to come from p3 and p3 relays it: not made with p3's static key.
    expect_refusal(&mut c, P3, P2, from_p3, RefusalReason::HandshakeFailed);
    // Claims a sender that is not in the roster.
    let from_p9 = reencode_handshake(&hs1, |h| h.from = PartyId(9));
    c.refuse(PartyId(9), P2, from_p9, RefusalReason::UnknownParty);
    c.assert_epoch(P1, P2, e0);
    c.assert_epoch(P1, P3, p1_p3);
    // The genuine initiation is still answered and completes.
    let e1 = handshake_epoch(&hs1);
    let hs2 = c.answer(P1, hs1);
    c.deliver_one(P2, hs2).unwrap();
    c.run();
    c.assert_epoch(P1, P2, e1);
    c.assert_still_works(P1, P2);
    c.assert_still_works(P1, P3);
    c.assert_still_works(P3, P1);
}

/// `json` (an identity file) moved to cluster `name`, keeping its keys.
fn identity_in_cluster(json: &str, name: &str) -> PartyIdentity {
    let mut value: serde_json::Value = serde_json::from_str(json).unwrap();
    value["cluster"] = serde_json::Value::String(name.to_string());
    PartyIdentity::from_json(&value.to_string()).unwrap()
}

#[test]
fn initiation_for_another_cluster_or_epoch_is_refused() {
    let mut c = established();
    let e0 = c.node(P1).epoch(P2).unwrap();
    // p1's and p2's very keys, but in a cluster named "other": only the prologue differs.
    let other = ClusterId::new("other").unwrap();
    let p1_other = identity_in_cluster(&c.identities_json[0], "other");
    let p2_other = identity_in_cluster(&c.identities_json[1], "other");
    let publics = [p1_other.public(None), p2_other.public(None)];
    let other_roster = Roster::build(other, 1, &publics).unwrap();
    let mut p1_o =
        ChannelManager::new(p1_other, other_roster.clone(), ChannelConfig::default()).unwrap();
    let mut p2_o = ChannelManager::new(p2_other, other_roster, ChannelConfig::default()).unwrap();
    let hello = p1_o.send(P2, ctx(1), b"wrong cluster", c.now).unwrap();
    assert_eq!(hello.len(), 1, "a handshake");
    // The other cluster's p2 accepts it (so nothing else is wrong with it) ...
    let answered = p2_o.receive(Some(P1), &hello[0].bytes, c.now).unwrap();
    assert_eq!(answered.outbound.len(), 1);
    // ... this cluster's p2 refuses it.
    expect_refusal(
        &mut c,
        P1,
        P2,
        hello[0].bytes.clone(),
        RefusalReason::HandshakeFailed,
    );
    assert!(c
        .take_inbox(P2)
        .iter()
        .all(|d| d.payload != b"wrong cluster"));

    // The epoch is bound into the prologue as well.
    let hs1 = c.start_rekey(P1, P2);
    let e1 = handshake_epoch(&hs1);
    for epoch in [e1.wrapping_add(1), e1.wrapping_add(1000), e1 ^ 0x8000_0000] {
        let moved = reencode_handshake(&hs1, |h| h.epoch = epoch);
        expect_refusal(&mut c, P1, P2, moved, RefusalReason::HandshakeFailed);
    }
    // Moved onto the epoch in use: stale before any cryptography.
    let onto_current = reencode_handshake(&hs1, |h| h.epoch = e0);
    expect_refusal(&mut c, P1, P2, onto_current, RefusalReason::StaleHandshake);
    c.assert_epoch(P1, P2, e0);
    let hs2 = c.answer(P1, hs1);
    c.deliver_one(P2, hs2).unwrap();
    c.run();
    c.assert_epoch(P1, P2, e1);
    c.assert_still_works(P1, P2);
    c.assert_still_works(P2, P1);
}

#[test]
fn forged_initiations_do_not_cancel_the_higher_partys_own_handshake() {
    let mut c = established();
    let (old_hs1, _) = c.rekey_captured(P1, P2);
    let e1 = c.node(P1).epoch(P2).unwrap();
    // p2 (the higher id) starts a rekey: an initiation from p1 would normally take over.
    let own = c.start_rekey(P2, P1);
    let own_epoch = handshake_epoch(&own);
    let fresh = own_epoch.wrapping_add(1000);
    // p1's old initiation as is (epoch in use), moved to a fresh epoch, and also tampered.
    expect_refusal(
        &mut c,
        P1,
        P2,
        old_hs1.bytes.clone(),
        RefusalReason::StaleHandshake,
    );
    let moved = reencode_handshake(&old_hs1, |h| h.epoch = fresh);
    expect_refusal(&mut c, P1, P2, moved, RefusalReason::HandshakeFailed);
    let tampered = reencode_handshake(&old_hs1, |h| {
        h.epoch = fresh;
        h.noise[5] ^= 0x10;
    });
    expect_refusal(&mut c, P1, P2, tampered, RefusalReason::HandshakeFailed);
    // p2's own initiation reflected back to it as if p1 had sent it: the epoch p2 is initiating
    // itself, so it could be a genuine collision, but the Noise read fails (the prologue names
    // p2 as the initiator) and p2's own handshake stays in flight.
    let reflected = reencode_handshake(&own, |h| {
        h.from = P1;
        h.to = P2;
    });
    expect_refusal(&mut c, P1, P2, reflected, RefusalReason::HandshakeFailed);
    // p1's answer to p2 relabelled as an initiation (of p2's own epoch): not an initiation
    // either.
    let answer = c.answer(P2, own);
    let relabelled = reencode_handshake(&answer, |h| h.stage = 1);
    expect_refusal(&mut c, P1, P2, relabelled, RefusalReason::HandshakeFailed);
    c.assert_epoch(P1, P2, e1);
    // p2 is still waiting for its own handshake, which completes.
    c.deliver_one(P1, answer).unwrap();
    c.run();
    c.assert_epoch(P1, P2, own_epoch);
    c.assert_still_works(P1, P2);
    c.assert_still_works(P2, P1);
}

#[test]
fn simultaneous_rekeys_of_the_same_epoch_complete_without_a_timeout() {
    let mut c = established();
    // Once each end has answered a handshake of the other's, both pick the epoch after the
    // last one seen: two rekeys started at once carry the same epoch number.
    c.rekey_captured(P1, P2);
    c.rekey_captured(P2, P1);
    let before = c.node(P1).epoch(P2).unwrap();
    let from_p1 = c.start_rekey(P1, P2);
    let from_p2 = c.start_rekey(P2, P1);
    let epoch = handshake_epoch(&from_p1);
    assert_eq!(handshake_epoch(&from_p2), epoch, "the same epoch number");
    // The lower party's initiation wins: p1 ignores p2's, p2 answers p1's.
    c.wire.push_back((P2, from_p2));
    c.wire.push_back((P1, from_p1.clone()));
    c.run();
    c.assert_epoch(P1, P2, epoch);
    assert_ne!(epoch, before);
    assert_eq!(c.node(P1).counters().total(), 0);
    assert_eq!(c.node(P2).counters().total(), 0);
    assert_eq!(c.node(P1).handshake_timeouts(), 0);
    c.assert_still_works(P1, P2);
    c.assert_still_works(P2, P1);
    // Replaying p1's winning initiation now is stale: that epoch is in use.
    c.refuse(P1, P2, from_p1.bytes, RefusalReason::StaleHandshake);
    c.assert_still_works(P1, P2);
}

#[test]
fn forged_confirmation_record_does_not_promote_pending_keys() {
    let mut c = cluster();
    let (_, old_record) = c.established_record();
    let e0 = c.node(P1).epoch(P2).unwrap();
    let hs1 = c.start_rekey(P1, P2);
    let e1 = handshake_epoch(&hs1);
    let hs2 = c.answer(P1, hs1);
    c.deliver_one(P2, hs2).unwrap();
    // p1 moved to e1 and sent its confirmation record; p2 still holds e1 as pending.
    let (from, confirm) = c.wire.pop_front().expect("confirmation record");
    assert!(c.wire.is_empty());
    assert_eq!(c.node(P1).epoch(P2), Some(e1));
    assert_eq!(c.node(P2).epoch(P1), Some(e0));
    let tampered_tag = {
        let mut b = confirm.bytes.clone();
        *b.last_mut().unwrap() ^= 0x01;
        b
    };
    let tampered_counter = reencode(&confirm.bytes, |f| f.header.counter += 1);
    let as_direct = reencode(&confirm.bytes, |f| f.header.kind = FrameKind::Direct);
    // A record sealed under the old keys, relabelled with the pending epoch.
    let old_keys = reencode(&old_record.bytes, |f| f.header.epoch = e1);
    for forged in [tampered_tag, tampered_counter, as_direct, old_keys] {
        c.refuse(from, P2, forged, RefusalReason::AuthenticationFailed);
        assert_eq!(c.node(P2).epoch(P1), Some(e0), "pending keys promoted");
    }
    // The genuine confirmation promotes them; its replay is refused.
    c.deliver_one(from, confirm.clone()).unwrap();
    assert_eq!(c.node(P2).epoch(P1), Some(e1));
    expect_refusal(&mut c, from, P2, confirm.bytes, RefusalReason::Replay);
    c.assert_epoch(P1, P2, e1);
    c.assert_still_works(P2, P1);
}

#[test]
fn malformed_handshakes_are_refused() {
    let mut c = established();
    let e0 = c.node(P1).epoch(P2).unwrap();
    let hs1 = c.start_rekey(P1, P2);
    let mut truncated = hs1.bytes.clone();
    truncated.pop();
    let mut trailing = hs1.bytes.clone();
    trailing.push(0);
    let header_only = hs1.bytes[..10].to_vec();
    for bytes in [
        reencode_handshake(&hs1, |h| h.stage = 0),
        reencode_handshake(&hs1, |h| h.stage = 3),
        reencode_handshake(&hs1, |h| {
            h.noise = vec![0; tessera_wire::frame::MAX_HANDSHAKE_PAYLOAD + 1]
        }),
        truncated,
        trailing,
        header_only,
    ] {
        expect_refusal(&mut c, P1, P2, bytes, RefusalReason::Malformed);
    }
    c.assert_epoch(P1, P2, e0);
    let e1 = handshake_epoch(&hs1);
    let hs2 = c.answer(P1, hs1);
    c.deliver_one(P2, hs2).unwrap();
    c.run();
    c.assert_epoch(P1, P2, e1);
    c.assert_still_works(P2, P1);
}

// Known weaknesses, kept as failing tests until fixed.

#[test]
fn forged_answer_does_not_abort_the_handshake_in_flight() {
    let mut c = established();
    let hs1 = c.start_rekey(P1, P2);
    let e1 = handshake_epoch(&hs1);
    let hs2 = c.answer(P1, hs1);
    c.refuse(P2, P1, flip_noise(&hs2, -1), RefusalReason::HandshakeFailed);
    // The genuine answer, arriving right after the forgery, should still complete the rekey.
    c.deliver_one(P2, hs2)
        .expect("the genuine answer completes the handshake");
    c.run();
    c.assert_epoch(P1, P2, e1);
    c.assert_still_works(P1, P2);
    c.assert_still_works(P2, P1);
}

#[test]
fn initiation_replayed_from_a_retired_epoch_is_refused() {
    let mut c = established();
    let (retired, _) = c.rekey_captured(P1, P2);
    c.rekey_captured(P1, P2);
    c.rekey_captured(P1, P2);
    let now_epoch = c.node(P1).epoch(P2).unwrap();
    let result = c.deliver_one(P1, retired);
    assert_eq!(
        result.map_err(|e| e.reason()),
        Err(RefusalReason::StaleHandshake)
    );
    assert!(c.wire.is_empty(), "the replay was answered");
    c.assert_epoch(P1, P2, now_epoch);
    c.assert_still_works(P1, P2);
    c.assert_still_works(P2, P1);
}

#[test]
fn replayed_retired_initiations_do_not_evict_a_pending_handshake() {
    let mut c = established();
    let mut retired = Vec::new();
    for _ in 0..6 {
        retired.push(c.rekey_captured(P1, P2).0);
    }
    // The last two epochs are still current and previous at p2; the first four are retired.
    retired.truncate(4);
    let hs1 = c.start_rekey(P1, P2);
    let e_new = handshake_epoch(&hs1);
    let hs2 = c.answer(P1, hs1);
    c.deliver_one(P2, hs2).unwrap();
    // p1 now sends on the new epoch; p2 holds it as pending until the confirmation arrives.
    let (from, confirm) = c.wire.pop_front().expect("confirmation record");
    for old in retired {
        // Currently accepted and answered; the answers are stale at p1 and dropped here.
        let _ = c.deliver_one(P1, old);
    }
    c.wire.clear();
    c.deliver_one(from, confirm)
        .expect("the genuine confirmation still promotes the pending keys");
    c.assert_epoch(P1, P2, e_new);
    c.assert_still_works(P1, P2);
    c.assert_still_works(P2, P1);
}
