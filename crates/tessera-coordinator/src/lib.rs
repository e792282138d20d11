//! Tessera coordinator: the service that accepts signing requests, applies policy and
//! approvals, and starts threshold sessions on the nodes. It holds no secret.
//!
//! [`store`] keeps the coordinator's state in SQLite (embedded default) or PostgreSQL
//! (production and replicas) through one code path.

pub mod api;
pub mod auth;
pub mod client;
pub mod config;
pub mod service;
pub mod store;
pub mod tls;

#[cfg(feature = "testing")]
pub mod testing;

pub use store::{Store, StoreError};
