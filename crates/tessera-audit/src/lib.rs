//! The Tessera audit log: who asked for what, who approved, which parties signed, and proof
//! that nobody rewrote that history.
//!
//! Every service (the coordinator and every party node) is an [`Emitter`] with its own chain:
//! events numbered `1, 2, 3, …`, each carrying the SHA-256 of the one before
//! ([`AuditRecord::prev_hash`]) and signed with the emitter's Ed25519 key from the roster. An
//! event's hash covers a canonical encoding of all its fields (see [`event`] and
//! `docs/audit.md`), so editing one byte, deleting, reordering or inserting an event breaks
//! the chain at that event, and an event signed by a key the roster does not list is refused.
//!
//! - [`event`]: the event, its canonical encoding, hash and signature.
//! - [`log`]: [`AuditLog`], one emitter's appender; continues its chain after a restart.
//! - [`file`]: the append-only file sink (fsync per event or per batch) and its reader.
//! - [`stream`]: the NATS JetStream sink (deny-delete, deny-purge, publish deduplicated by
//!   `emitter/seq`) and its reader.
//! - [`verify`]: checks a sequence of records against the trusted keys.
//! - [`filter`]: selects events for auditors (`tessera audit show`).
//! - [`index`]: an incrementally verified index of a log file, for paging through it.
//!
//! No secret ever enters an event: details are short, public facts (ids, hashes, reasons).

mod error;
pub mod event;
pub mod file;
pub mod filter;
pub mod index;
pub mod log;
pub mod stream;
pub mod verify;

pub use error::AuditError;
pub use event::{AuditRecord, Emitter, EventHash, NewEvent};
pub use filter::Filter;
pub use index::{FileIndex, Page};
pub use log::{AuditLog, AuditSection, AuditSigner, FsyncPolicy, LogOptions};
pub use stream::StreamSink;
pub use verify::{Broken, BrokenReason, Summary, TrustedKeys, Verifier};
