//! Tessera coordinator: the service that accepts signing requests, applies policy and
//! approvals, and starts threshold sessions on the nodes. It holds no secret.
//!
//! [`store`] keeps the coordinator's state in SQLite (embedded default) or PostgreSQL
//! (production and replicas) through one code path. The service and its REST API are being
//! built on top of it.

pub mod store;

#[cfg(feature = "testing")]
pub mod testing;

pub use store::{Store, StoreError};
