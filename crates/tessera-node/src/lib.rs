//! The Tessera party node.
//!
//! A node holds this party's key shares, auxiliary info, prime pool and presignatures in an
//! encrypted [`SecretStore`](tessera_store::SecretStore), and takes part in threshold sessions
//! over the secure transport. It starts nothing by itself: a session begins with a
//! [`SignedStart`](tessera_control::SignedStart) from a coordinator listed in the pinned roster, which
//! the node checks (signature, cluster, roster hash, expiry, replay, its own place in the
//! session) before it runs anything. It answers with a [`SignedOutcome`](tessera_control::SignedOutcome)
//! signed with its party identity. It signs only approved requests that its own copy of the
//! policy (pinned by hash) allows, over a digest it derived itself from the transaction.
//!
//! - [`node`]: the session runner ([`Node`]); a key's epochs (reshare, activation, closure,
//!   abandonment on certificates it checks itself) are in its `lifecycle` module, and the
//!   refusal and expiry of presignatures in its `presignatures` module.
//! - [`metrics`]: the node's Prometheus metrics and readiness check.
//! - [`requests`]: the re-checks before any signing (digest, policy, approvals) and the durable
//!   ledger of requests signed.
//! - [`state`]: where shares, auxiliary info and presignatures live in the store.
//! - [`config`]: the node's TOML configuration with environment overrides.
//! - [`serve`]: the NATS control loop of the `tessera-node` binary.
//! - [`channels`]: starts handed to nodes in this process.
//! - [`local`]: a whole cluster in one process (demo, bench, tests).
//!
//! The messages themselves, and the coordinator's side of a session, are the control protocol
//! crate [`tessera_control`], which the coordinator uses too.

pub mod channels;
pub mod config;
mod lifecycle;
pub mod local;
pub mod metrics;
pub mod node;
mod presignatures;
pub mod requests;
pub mod serve;
pub mod spends;
pub mod state;

pub use metrics::NodeMetrics;
pub use node::{Node, NodeError, NodeSettings};
