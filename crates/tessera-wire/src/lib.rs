//! Tessera's wire format.
//!
//! Everything that crosses a process boundary is defined here and nowhere else:
//!
//! * [`ids`]: typed identifiers ([`PartyId`], [`SessionId`], [`KeyId`], [`RequestId`],
//!   [`ClusterId`]) and the [`Protocol`] tag;
//! * [`codec`]: the one canonical encoding for structured values (a version byte followed by
//!   `postcard`), with a size limit checked before decoding;
//! * [`frame`]: the fixed-layout record frames and handshake messages that the channel layer
//!   seals and opens; their headers are parsed and bounded before any cryptography runs;
//! * [`subject`]: NATS subject names.

pub mod codec;
pub mod frame;
pub mod ids;
pub mod subject;

pub use codec::{decode, encode, CodecError, CODEC_VERSION};
pub use frame::{
    FrameError, FrameHeader, FrameKind, HandshakeMessage, RecordFrame, WireMessage,
    DEFAULT_MAX_PAYLOAD, FRAME_HEADER_LEN, HANDSHAKE_HEADER_LEN, MAX_WIRE_MESSAGE, TAG_LEN,
    WIRE_VERSION,
};
pub use ids::{ClusterId, IdError, KeyId, KeyKind, PartyId, Protocol, RequestId, Round, SessionId};
