//! Every integration test of this crate, built as one binary (one link instead of one per
//! file; nextest still runs each test in its own process).

mod chain;
mod commit;
mod stream;
