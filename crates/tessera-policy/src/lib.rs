//! Tessera policy: the policy document, sign requests, approvals and rule evaluation.
//!
//! The same code runs in the coordinator (to decide and to show reasons) and in every party
//! node (to re-check before signing). It is sans-IO and deterministic: the time (`now`, Unix
//! seconds) and what was already spent ([`SpendHistory`]) are inputs.
//!
//! - [`PolicyDocument`]: TOML, validated when parsed, pinned by the SHA-256 of its exact bytes
//!   ([`PolicyHash`]). The format is described in `docs/policy.md`.
//! - [`SignRequest`]: what to sign with which key; [`SignRequest::check`] re-derives the digest
//!   and the [`Action`] from the payload and never trusts the carried digest.
//! - [`Approval`]: a principal's signature (Ed25519, or EIP-191 by an Ethereum address) over
//!   a request digest or a policy-change digest.
//! - [`evaluate()`]: Allow, Pending or Deny with every [`Reason`].
//! - [`evaluate_change()`]: the policy-change flow (admins approve new documents).
//! - [`evaluate_key_change()`]: key changes (refresh, reshare, refresh schedule) admins
//!   approve.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod approval;
pub mod change;
pub mod dev;
pub mod document;
mod encoding;
pub mod error;
pub mod evaluate;
pub mod key_change;
pub mod principal;
pub mod request;

pub use approval::{Approval, APPROVAL_LABEL};
pub use change::{evaluate_change, ChangeDecision, PolicyChange, CHANGE_DIGEST_LABEL};
pub use document::{PolicyDocument, Rule};
pub use encoding::parse_address;
pub use error::PolicyError;
pub use evaluate::{evaluate, Decision, Reason, SpendHistory, Verdict, MAX_CLOCK_SKEW_SECS};
pub use key_change::{
    evaluate_key_change, ApprovedKeyChange, KeyChange, KeyChangeDecision, KeyEpoch, KeyOperation,
    KEY_CHANGE_DIGEST_LABEL,
};
pub use principal::{OperatorKey, Principal, PrincipalKey, PrincipalSignature, Role};
pub use request::{
    derive, Action, ActionKind, Asset, Derived, Destination, EcdsaHash, Payload, PolicyHash,
    SignRequest, Signing, ERC20_TRANSFER_FROM_SELECTOR, ERC20_TRANSFER_SELECTOR, MAX_MESSAGE_BYTES,
    MAX_TX_BYTES, REQUEST_DIGEST_LABEL, SIGNATURE_LEN, SIGNINGS_DIGEST_LABEL,
};
