//! The client side: the canonical text of a request, its digest, and the signed headers.

use rand_core::{OsRng, RngCore};
use sha2::{Digest, Sha256};
use tessera_policy::OperatorKey;

/// The label API request digests are signed under (`label || digest`).
pub const API_LABEL: &[u8] = b"tessera/api-request/v1";

/// The header naming the principal.
pub const HEADER_PRINCIPAL: &str = "x-tessera-principal";
/// The header carrying the request time in Unix seconds.
pub const HEADER_TIMESTAMP: &str = "x-tessera-timestamp";
/// The header carrying the request's random nonce (32 lowercase hex digits).
pub const HEADER_NONCE: &str = "x-tessera-nonce";
/// The header carrying the hex signature.
pub const HEADER_SIGNATURE: &str = "x-tessera-signature";
/// The header carrying the body's hash, hex(SHA-256(body)), as the signature covers it. With
/// it the coordinator checks the signature before it reads the body; a body longer than
/// [`UNDECLARED_BODY_BYTES`](super::UNDECLARED_BODY_BYTES) must have it.
pub const HEADER_CONTENT_SHA256: &str = "x-tessera-content-sha256";

/// The canonical text of a request:
/// `"tessera/api-request/v1\n" METHOD "\n" path-and-query "\n" timestamp "\n" nonce "\n"
/// hex(SHA-256(body))`, with the timestamp in decimal and the hash in lowercase hex.
///
/// `method` is the method as sent (uppercase) and `path_and_query` the request target exactly
/// as sent.
pub fn canonical_request(
    method: &str,
    path_and_query: &str,
    timestamp: u64,
    nonce: &str,
    body: &[u8],
) -> String {
    canonical_text(
        method,
        path_and_query,
        timestamp,
        nonce,
        &Sha256::digest(body).into(),
    )
}

fn canonical_text(
    method: &str,
    path_and_query: &str,
    timestamp: u64,
    nonce: &str,
    body_sha256: &[u8; 32],
) -> String {
    let body_hash = hex::encode(body_sha256);
    format!("tessera/api-request/v1\n{method}\n{path_and_query}\n{timestamp}\n{nonce}\n{body_hash}")
}

/// The digest a principal signs for a request: SHA-256 of [`canonical_request`].
pub fn request_digest(
    method: &str,
    path_and_query: &str,
    timestamp: u64,
    nonce: &str,
    body: &[u8],
) -> [u8; 32] {
    digest_over_body_hash(
        method,
        path_and_query,
        timestamp,
        nonce,
        &Sha256::digest(body).into(),
    )
}

/// [`request_digest`] from the body's SHA-256 instead of the body.
pub fn digest_over_body_hash(
    method: &str,
    path_and_query: &str,
    timestamp: u64,
    nonce: &str,
    body_sha256: &[u8; 32],
) -> [u8; 32] {
    Sha256::digest(canonical_text(
        method,
        path_and_query,
        timestamp,
        nonce,
        body_sha256,
    ))
    .into()
}

/// The authentication headers of one signed request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedHeaders {
    /// `x-tessera-principal`.
    pub principal: String,
    /// `x-tessera-timestamp`.
    pub timestamp: String,
    /// `x-tessera-nonce`.
    pub nonce: String,
    /// `x-tessera-signature`.
    pub signature: String,
    /// `x-tessera-content-sha256`.
    pub content_sha256: String,
}

impl SignedHeaders {
    /// The headers as `(name, value)` pairs, names in lowercase.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &str)> + '_ {
        [
            (HEADER_PRINCIPAL, self.principal.as_str()),
            (HEADER_TIMESTAMP, self.timestamp.as_str()),
            (HEADER_NONCE, self.nonce.as_str()),
            (HEADER_SIGNATURE, self.signature.as_str()),
            (HEADER_CONTENT_SHA256, self.content_sha256.as_str()),
        ]
        .into_iter()
    }
}

/// Signs a request as `principal` at time `now` (Unix seconds) with a fresh random nonce.
///
/// `method` must be the method exactly as it will be sent (uppercase, e.g. `POST`) and
/// `path_and_query` the request target exactly as it will be sent (e.g.
/// `/v1/requests?state=pending`); `body` the exact body bytes (empty for none). Sign each
/// request once, just before sending it: the coordinator accepts it for
/// [`MAX_SKEW_SECS`](super::MAX_SKEW_SECS) seconds and only once.
pub fn sign_request(
    key: &OperatorKey,
    principal: &str,
    method: &str,
    path_and_query: &str,
    body: &[u8],
    now: u64,
) -> SignedHeaders {
    let mut nonce = [0u8; 16];
    OsRng.fill_bytes(&mut nonce);
    let nonce = hex::encode(nonce);
    let body_sha256: [u8; 32] = Sha256::digest(body).into();
    let digest = digest_over_body_hash(method, path_and_query, now, &nonce, &body_sha256);
    let signature = key.sign(API_LABEL, &digest);
    SignedHeaders {
        principal: principal.to_owned(),
        timestamp: now.to_string(),
        nonce,
        signature: signature.to_string(),
        content_sha256: hex::encode(body_sha256),
    }
}
