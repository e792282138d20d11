//! Every integration test of this crate, built as one binary (one link instead of one per
//! file; nextest still runs each test in its own process).

mod common;
mod flood;
mod hold;
mod memory;
mod nats;
mod nats_coordinator;
