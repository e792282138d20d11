//! Fixed-layout frames: the bytes that actually travel between parties.
//!
//! Two message types exist, both starting with `version | type`:
//!
//! ```text
//! handshake: version u8 | type=1 u8 | from u16 | to u16 | epoch u32 | stage u8 | len u32 | noise[len]
//! record:    version u8 | type u8 (2 direct, 3 broadcast, 4 control) | epoch u32 | counter u64
//!            | from u16 | to u16 | session [16] | round u16 | protocol u16 | len u32 | ciphertext[len]
//! ```
//!
//! All integers are big-endian. A record's whole header is the AEAD associated data, so every
//! field in it (addressing, session, round, protocol, epoch, counter) is authenticated.
//! Parsing checks the total size, the version, the type and that `len` matches the bytes that
//! follow *before* anything is handed to cryptography.

use crate::ids::{PartyId, Protocol, Round, SessionId};

/// The frame layout version this build speaks.
pub const WIRE_VERSION: u8 = 1;
/// Bytes in a record header (the associated data).
pub const FRAME_HEADER_LEN: usize = 1 + 1 + 4 + 8 + 2 + 2 + 16 + 2 + 2 + 4;
/// Bytes in a handshake header.
pub const HANDSHAKE_HEADER_LEN: usize = 1 + 1 + 2 + 2 + 4 + 1 + 4;
/// Bytes of authentication tag that sealing adds.
pub const TAG_LEN: usize = 16;
/// Hard cap on any wire message: NATS' default `max_payload` (1 MiB).
pub const MAX_WIRE_MESSAGE: usize = 1024 * 1024;
/// Default cap on an application payload (the largest CGGMP24 message is about 212 KB).
pub const DEFAULT_MAX_PAYLOAD: usize = 768 * 1024;
/// Largest Noise handshake message we accept (KK messages are 48 to 96 bytes plus payload).
pub const MAX_HANDSHAKE_PAYLOAD: usize = 1024;

const TYPE_HANDSHAKE: u8 = 1;

/// What a record carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FrameKind {
    /// A payload for one recipient.
    Direct,
    /// A payload sent to every party, with the sender's Ed25519 signature inside.
    Broadcast,
    /// Channel-layer control (rekey confirmation); never delivered to an application.
    Control,
}

impl FrameKind {
    fn type_byte(self) -> u8 {
        match self {
            FrameKind::Direct => 2,
            FrameKind::Broadcast => 3,
            FrameKind::Control => 4,
        }
    }

    fn from_type_byte(b: u8) -> Option<Self> {
        match b {
            2 => Some(FrameKind::Direct),
            3 => Some(FrameKind::Broadcast),
            4 => Some(FrameKind::Control),
            _ => None,
        }
    }
}

/// Why bytes are not a well-formed frame. Raised before any cryptography.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// The message is larger than allowed.
    #[error("message of {len} bytes exceeds the limit of {limit} bytes")]
    Oversized {
        /// Message length or declared body length.
        len: usize,
        /// The limit it broke.
        limit: usize,
    },
    /// The message ends before its header or body does.
    #[error("truncated message: {got} bytes, at least {needed} needed")]
    Truncated {
        /// Bytes required.
        needed: usize,
        /// Bytes present.
        got: usize,
    },
    /// The message has bytes after its declared body.
    #[error("{0} trailing bytes after the declared body")]
    Trailing(usize),
    /// The version byte is unknown.
    #[error("unsupported wire version {0} (this build speaks version {WIRE_VERSION})")]
    UnsupportedVersion(u8),
    /// The type byte is unknown.
    #[error("unknown message type {0}")]
    UnknownType(u8),
    /// A party id of zero (ids start at 1).
    #[error("party id 0 is not valid")]
    ZeroParty,
    /// A handshake stage other than 1 or 2.
    #[error("invalid handshake stage {0}")]
    BadStage(u8),
}

/// The authenticated header of a record frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// What the record carries.
    pub kind: FrameKind,
    /// Which channel keys (handshake generation) sealed it.
    pub epoch: u32,
    /// The explicit nonce: unique per (sender, epoch).
    pub counter: u64,
    /// Sender.
    pub from: PartyId,
    /// Recipient.
    pub to: PartyId,
    /// The session the payload belongs to.
    pub session: SessionId,
    /// The protocol round.
    pub round: Round,
    /// The protocol.
    pub protocol: Protocol,
    /// Ciphertext length (payload plus tag).
    pub len: u32,
}

impl FrameHeader {
    /// The header's bytes, which are also the AEAD associated data.
    pub fn to_bytes(&self) -> [u8; FRAME_HEADER_LEN] {
        let mut out = [0u8; FRAME_HEADER_LEN];
        let mut w = Writer::new(&mut out);
        w.put(&[WIRE_VERSION, self.kind.type_byte()]);
        w.put(&self.epoch.to_be_bytes());
        w.put(&self.counter.to_be_bytes());
        w.put(&self.from.to_be_bytes());
        w.put(&self.to.to_be_bytes());
        w.put(self.session.as_bytes());
        w.put(&self.round.to_be_bytes());
        w.put(&self.protocol.0.to_be_bytes());
        w.put(&self.len.to_be_bytes());
        out
    }
}

/// A sealed record: header plus ciphertext.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordFrame {
    /// The authenticated header.
    pub header: FrameHeader,
    /// Payload ciphertext followed by the tag.
    pub ciphertext: Vec<u8>,
}

/// One message of a Noise handshake.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HandshakeMessage {
    /// Sender.
    pub from: PartyId,
    /// Recipient.
    pub to: PartyId,
    /// The channel generation this handshake establishes.
    pub epoch: u32,
    /// 1 for the initiator's message, 2 for the responder's.
    pub stage: u8,
    /// The Noise message.
    pub noise: Vec<u8>,
}

/// Anything that travels between two parties.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WireMessage {
    /// A handshake message.
    Handshake(HandshakeMessage),
    /// A sealed record.
    Record(RecordFrame),
}

impl WireMessage {
    /// The sender named in the message (not yet authenticated).
    pub fn from(&self) -> PartyId {
        match self {
            WireMessage::Handshake(h) => h.from,
            WireMessage::Record(r) => r.header.from,
        }
    }

    /// The recipient named in the message (not yet authenticated).
    pub fn to(&self) -> PartyId {
        match self {
            WireMessage::Handshake(h) => h.to,
            WireMessage::Record(r) => r.header.to,
        }
    }

    /// Encodes the message.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            WireMessage::Record(r) => {
                let mut out = Vec::with_capacity(FRAME_HEADER_LEN + r.ciphertext.len());
                out.extend_from_slice(&r.header.to_bytes());
                out.extend_from_slice(&r.ciphertext);
                out
            }
            WireMessage::Handshake(h) => {
                let mut out = Vec::with_capacity(HANDSHAKE_HEADER_LEN + h.noise.len());
                out.extend_from_slice(&[WIRE_VERSION, TYPE_HANDSHAKE]);
                out.extend_from_slice(&h.from.to_be_bytes());
                out.extend_from_slice(&h.to.to_be_bytes());
                out.extend_from_slice(&h.epoch.to_be_bytes());
                out.push(h.stage);
                out.extend_from_slice(&(h.noise.len() as u32).to_be_bytes());
                out.extend_from_slice(&h.noise);
                out
            }
        }
    }

    /// Parses a message, refusing anything over `max_ciphertext` bytes of body (and anything
    /// over [`MAX_WIRE_MESSAGE`] in total) before looking further.
    pub fn decode(bytes: &[u8], max_ciphertext: usize) -> Result<Self, FrameError> {
        if bytes.len() > MAX_WIRE_MESSAGE {
            return Err(FrameError::Oversized {
                len: bytes.len(),
                limit: MAX_WIRE_MESSAGE,
            });
        }
        let mut r = Reader::new(bytes);
        let version = r.u8()?;
        if version != WIRE_VERSION {
            return Err(FrameError::UnsupportedVersion(version));
        }
        let ty = r.u8()?;
        if ty == TYPE_HANDSHAKE {
            let from = r.party()?;
            let to = r.party()?;
            let epoch = r.u32()?;
            let stage = r.u8()?;
            if stage != 1 && stage != 2 {
                return Err(FrameError::BadStage(stage));
            }
            let noise = r.body(MAX_HANDSHAKE_PAYLOAD)?.to_vec();
            return Ok(WireMessage::Handshake(HandshakeMessage {
                from,
                to,
                epoch,
                stage,
                noise,
            }));
        }
        let kind = FrameKind::from_type_byte(ty).ok_or(FrameError::UnknownType(ty))?;
        let epoch = r.u32()?;
        let counter = r.u64()?;
        let from = r.party()?;
        let to = r.party()?;
        let session = SessionId(r.array::<16>()?);
        let round = r.u16()?;
        let protocol = Protocol(r.u16()?);
        let start = r.pos;
        let ciphertext = r.body(max_ciphertext)?;
        let len = (r.pos - start - 4) as u32;
        Ok(WireMessage::Record(RecordFrame {
            header: FrameHeader {
                kind,
                epoch,
                counter,
                from,
                to,
                session,
                round,
                protocol,
                len,
            },
            ciphertext: ciphertext.to_vec(),
        }))
    }
}

struct Writer<'a> {
    out: &'a mut [u8],
    pos: usize,
}

impl<'a> Writer<'a> {
    fn new(out: &'a mut [u8]) -> Self {
        Writer { out, pos: 0 }
    }

    fn put(&mut self, bytes: &[u8]) {
        self.out[self.pos..self.pos + bytes.len()].copy_from_slice(bytes);
        self.pos += bytes.len();
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes, pos: 0 }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], FrameError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len());
        let end = end.ok_or(FrameError::Truncated {
            needed: self.pos.saturating_add(n),
            got: self.bytes.len(),
        })?;
        let slice = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], FrameError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, FrameError> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, FrameError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, FrameError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, FrameError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    fn party(&mut self) -> Result<PartyId, FrameError> {
        match self.u16()? {
            0 => Err(FrameError::ZeroParty),
            n => Ok(PartyId(n)),
        }
    }

    /// A `len u32 | bytes[len]` body that must end the message exactly.
    fn body(&mut self, limit: usize) -> Result<&'a [u8], FrameError> {
        let len = self.u32()? as usize;
        if len > limit {
            return Err(FrameError::Oversized { len, limit });
        }
        let body = self.take(len)?;
        let rest = self.bytes.len() - self.pos;
        if rest != 0 {
            return Err(FrameError::Trailing(rest));
        }
        Ok(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn record(kind: FrameKind, body: Vec<u8>) -> WireMessage {
        WireMessage::Record(RecordFrame {
            header: FrameHeader {
                kind,
                epoch: 3,
                counter: 99,
                from: PartyId(1),
                to: PartyId(2),
                session: SessionId([7; 16]),
                round: 4,
                protocol: Protocol::SIGN,
                len: body.len() as u32,
            },
            ciphertext: body,
        })
    }

    #[test]
    fn header_length_matches_layout() {
        let m = record(FrameKind::Direct, vec![1, 2, 3]);
        assert_eq!(m.encode().len(), FRAME_HEADER_LEN + 3);
    }

    #[test]
    fn refusals_before_crypto() {
        let bytes = record(FrameKind::Direct, vec![0; 100]).encode();
        assert!(matches!(
            WireMessage::decode(&bytes, 50),
            Err(FrameError::Oversized { len: 100, .. })
        ));
        assert!(matches!(
            WireMessage::decode(&bytes[..bytes.len() - 1], 1000),
            Err(FrameError::Truncated { .. })
        ));
        let mut long = bytes.clone();
        long.push(0);
        assert_eq!(
            WireMessage::decode(&long, 1000),
            Err(FrameError::Trailing(1))
        );
        let huge = vec![WIRE_VERSION; MAX_WIRE_MESSAGE + 1];
        assert!(matches!(
            WireMessage::decode(&huge, usize::MAX),
            Err(FrameError::Oversized { .. })
        ));
        let mut bad_version = bytes.clone();
        bad_version[0] = 0xee;
        assert_eq!(
            WireMessage::decode(&bad_version, 1000),
            Err(FrameError::UnsupportedVersion(0xee))
        );
        let mut bad_type = bytes;
        bad_type[1] = 0x42;
        assert_eq!(
            WireMessage::decode(&bad_type, 1000),
            Err(FrameError::UnknownType(0x42))
        );
    }

    fn arb_message() -> impl Strategy<Value = WireMessage> {
        let record = (
            0u8..3,
            any::<u32>(),
            any::<u64>(),
            1u16..,
            1u16..,
            any::<[u8; 16]>(),
            any::<u16>(),
            any::<u16>(),
            proptest::collection::vec(any::<u8>(), 0..2048),
        )
            .prop_map(|(k, epoch, counter, from, to, s, round, p, body)| {
                let kind =
                    [FrameKind::Direct, FrameKind::Broadcast, FrameKind::Control][k as usize];
                WireMessage::Record(RecordFrame {
                    header: FrameHeader {
                        kind,
                        epoch,
                        counter,
                        from: PartyId(from),
                        to: PartyId(to),
                        session: SessionId(s),
                        round,
                        protocol: Protocol(p),
                        len: body.len() as u32,
                    },
                    ciphertext: body,
                })
            });
        let handshake = (
            1u16..,
            1u16..,
            any::<u32>(),
            1u8..=2,
            proptest::collection::vec(any::<u8>(), 0..MAX_HANDSHAKE_PAYLOAD),
        )
            .prop_map(|(from, to, epoch, stage, noise)| {
                WireMessage::Handshake(HandshakeMessage {
                    from: PartyId(from),
                    to: PartyId(to),
                    epoch,
                    stage,
                    noise,
                })
            });
        prop_oneof![record, handshake]
    }

    proptest! {
        #[test]
        fn encode_decode_round_trip(m in arb_message()) {
            let bytes = m.encode();
            prop_assert_eq!(WireMessage::decode(&bytes, DEFAULT_MAX_PAYLOAD).unwrap(), m);
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
            let _ = WireMessage::decode(&bytes, DEFAULT_MAX_PAYLOAD);
        }

        #[test]
        fn decode_never_panics_on_mutated_frames(
            m in arb_message(),
            idx in any::<prop::sample::Index>(),
            byte in any::<u8>(),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut bytes = m.encode();
            let i = idx.index(bytes.len());
            bytes[i] = byte;
            let _ = WireMessage::decode(&bytes, DEFAULT_MAX_PAYLOAD);
            let c = cut.index(bytes.len());
            let _ = WireMessage::decode(&bytes[..c], DEFAULT_MAX_PAYLOAD);
        }
    }
}
