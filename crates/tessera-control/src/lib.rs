//! The control protocol between Tessera's coordinators and its party nodes.
//!
//! Node and coordinator both speak it and neither depends on the other (`../shared/DESIGN.md`,
//! Layers):
//! - [`messages`]: a coordinator's [`SignedStart`] (signed with its roster coordinator key)
//!   and a node's [`SignedOutcome`] (signed with its party identity), with the [`Operation`]s
//!   a session runs and the [`Output`]s it reports;
//! - [`starter`]: the coordinator's side of a session: sign a start, hand it to the nodes over
//!   a [`ControlChannel`], check what comes back;
//! - [`certificate`]: the signed outcomes a node checks before it activates, closes or
//!   abandons an epoch of a key;
//! - [`nats`]: the [`ControlChannel`] over a NATS broker;
//! - [`pool`]: presignature pools kept full by the starter, and signing online or in full;
//! - [`spend`]: the spend chain of a key, which every holder counts its windows from.

pub mod certificate;
pub mod messages;
pub mod nats;
pub mod pool;
pub mod spend;
pub mod starter;

pub use certificate::CertificateError;
pub use messages::{
    now_unix, ControlError, EpochReport, Failure, Operation, Output, SessionOutcome, SessionStart,
    SignedOutcome, SignedStart, MAX_CONTROL_MESSAGE,
};
pub use spend::{SpendChain, SpendLink, SpendRecord, SpendRecordError};
pub use starter::{agreed, all_succeeded, ControlChannel, Report, Reports, Starter, StarterError};
