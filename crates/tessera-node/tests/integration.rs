//! Every integration test of this crate, built as one binary (one link instead of one per
//! file; nextest still runs each test in its own process).

mod audit_stream;
mod common;
mod frost_chains;
mod metrics;
mod node;
mod processes;
mod requests;
mod reshare;
mod spend_chain;
