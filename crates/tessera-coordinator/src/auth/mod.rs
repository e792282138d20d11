//! Operator authentication and role checks for the coordinator's REST API, sans-IO.
//!
//! The HTTP layer hands [`authenticate`] the method, the request target (path and query exactly
//! as received), the headers and the body bytes; it gets back the [`Caller`] (a principal of the
//! active policy and its roles) or an [`AuthError`] whose [`status`](AuthError::status) is the
//! HTTP status to answer with. Handlers then call [`require`] with the [`Permission`] the
//! endpoint needs. Nothing here knows HTTP types, so the CLI, tests and the embedded mode use it
//! directly.
//!
//! # Signed requests
//!
//! Every API request carries four headers:
//!
//! | Header                | Value                                                          |
//! |-----------------------|----------------------------------------------------------------|
//! | `x-tessera-principal` | the principal's name in the active policy                      |
//! | `x-tessera-timestamp` | Unix seconds, decimal, no sign and no leading zero             |
//! | `x-tessera-nonce`     | 32 lowercase hex digits (16 random bytes), fresh per request   |
//! | `x-tessera-signature` | hex of the [`PrincipalSignature`](tessera_policy::PrincipalSignature) |
//!
//! and, for a body over [`UNDECLARED_BODY_BYTES`] (64 KiB), the body's hash, which
//! [`sign_request`] always adds:
//!
//! | Header                     | Value                                                     |
//! |----------------------------|-----------------------------------------------------------|
//! | `x-tessera-content-sha256` | hex(SHA-256(body)), 64 lowercase hex digits               |
//!
//! With it the coordinator checks the signature (which covers that hash) before it reads the
//! body, then refuses a body with another hash (400); without it, it reads at most 64 KiB
//! before the signature is checked (413 beyond). Unauthenticated callers can make it buffer no
//! more than that.
//!
//! The signature is [`OperatorKey::sign`](tessera_policy::OperatorKey::sign)`(`[`API_LABEL`]`,
//! digest)`, checked with [`PrincipalKey::verify`](tessera_policy::PrincipalKey::verify), so both
//! Ed25519 and Ethereum (EIP-191 `personal_sign`) principals can sign. `digest` is the SHA-256 of
//! the canonical text ([`canonical_request`]):
//!
//! ```text
//! tessera/api-request/v1\n
//! <METHOD>\n
//! <path-and-query>\n
//! <timestamp>\n
//! <nonce>\n
//! <hex(SHA-256(body))>
//! ```
//!
//! (no newline after the body hash). The method is the uppercase method as sent (`GET`, `POST`…)
//! and the path and query are the request target exactly as sent: not decoded, not normalised,
//! query parameters in their order. The HTTP layer must therefore pass the raw
//! `uri.path_and_query()`, never a re-encoded or routed path. The label differs from every other
//! label operators sign under (approvals sign `tessera/approval/v1 || digest`, a message of
//! another length), so an API signature is never an approval and vice versa.
//!
//! [`sign_request`] produces the headers (the CLI uses it).
//!
//! # What [`authenticate`] checks, in this order
//!
//! 1. The body is at most [`MAX_BODY_BYTES`] (413); the method and target are well-formed (400).
//! 2. The four headers are present (401) and well-formed (400), and so is
//!    `x-tessera-content-sha256` if given; a header given twice is malformed.
//! 3. The timestamp is within [`MAX_SKEW_SECS`] of the coordinator's clock, either way (401,
//!    with the skew and "check your clock").
//!
//! Steps 1 to 3 need neither the body nor the policy ([`check_presented`]); the API runs them
//! before it reads either.
//!
//! 4. The principal exists in the active policy (401).
//! 5. The signature verifies against that principal's key (401).
//! 6. Only then is the nonce remembered, until `timestamp + `[`NONCE_TTL_SECS`], through a
//!    [`NonceStore`]; a nonce already remembered for that principal is a replay (401). Checking
//!    the signature first means that nobody but the key holder can use up a principal's nonces.
//!
//! A nonce is kept for [`NONCE_TTL_SECS`] (120 s) although a timestamp is accepted for only 60 s
//! after it was made, so coordinator replicas whose clocks differ by up to a minute still share
//! one replay window. Expired nonces are never needed again: **pruning them is the caller's
//! job** — call [`Store::prune_nonces`](crate::Store::prune_nonces) or
//! [`MemoryNonces::prune`] with the current time every minute or so. A nonce that is pruned too
//! early would let a captured request be replayed within its timestamp window.
//!
//! # Roles
//!
//! See [`rbac`] for the permission matrix. The API's role checks protect the coordinator's
//! state; they are not what keeps keys safe: every node re-checks the policy and the approvals
//! before it signs.

mod error;
mod nonces;
pub mod rbac;
mod request;
mod verify;

pub use error::AuthError;
pub use nonces::{MemoryNonces, NonceStore};
pub use rbac::{permitted, require, Permission};
pub use request::{
    canonical_request, digest_over_body_hash, request_digest, sign_request, SignedHeaders,
    API_LABEL, HEADER_CONTENT_SHA256, HEADER_NONCE, HEADER_PRINCIPAL, HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
};
pub use verify::{
    authenticate, check_presented, ApiRequest, Caller, Presented, MAX_BODY_BYTES, MAX_SKEW_SECS,
    NONCE_TTL_SECS, UNDECLARED_BODY_BYTES,
};
