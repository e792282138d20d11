//! Every integration test of this crate, built as one binary (one link instead of one per
//! file; nextest still runs each test in its own process).

mod approvals;
mod canonical;
mod chains;
mod change;
mod common;
mod document;
mod evaluate;
mod key_change;
mod vectors;
mod workflows;
