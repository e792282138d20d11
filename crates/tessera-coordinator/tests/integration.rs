//! Every integration test of this crate, built as one binary (one link instead of one per
//! file; nextest still runs each test in its own process).

mod api;
mod audit_flow;
mod auth;
mod chains;
mod rotation;
mod service;
mod service_support;
mod store;
