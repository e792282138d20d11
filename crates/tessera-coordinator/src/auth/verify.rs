//! The server side: authenticating a signed request against the active policy.

use std::collections::BTreeSet;

use tessera_policy::principal::check_name;
use tessera_policy::{PolicyDocument, PrincipalSignature, Role};

use sha2::{Digest, Sha256};

use super::request::{
    digest_over_body_hash, API_LABEL, HEADER_CONTENT_SHA256, HEADER_NONCE, HEADER_PRINCIPAL,
    HEADER_SIGNATURE, HEADER_TIMESTAMP,
};
use super::{AuthError, NonceStore};

/// The largest request body accepted, in bytes (4 MiB). The largest legitimate body is a
/// policy proposal: a policy document of up to 1 MiB, hex-encoded in JSON (2 MiB), plus the
/// envelope. The HTTP layer must refuse larger bodies before buffering them (its body limit
/// should be this constant); the check here keeps the limit in one place for embedded use.
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// The longest body accepted without an `x-tessera-content-sha256` header (64 KiB): the server
/// reads at most this much before the signature is checked. Every body the tessera client
/// sends declares its hash, so this only bounds what an unauthenticated caller can make the
/// coordinator buffer.
pub const UNDECLARED_BODY_BYTES: usize = 64 * 1024;

/// How far, in seconds, a request's timestamp may be from the coordinator's clock, either way.
pub const MAX_SKEW_SECS: u64 = 60;

/// How long after its timestamp a request's nonce is remembered, in seconds. Twice
/// [`MAX_SKEW_SECS`]: longer than any coordinator accepts the timestamp, with a minute to spare
/// for replicas whose clocks differ.
pub const NONCE_TTL_SECS: u64 = 2 * MAX_SKEW_SECS;

/// The longest method accepted.
const MAX_METHOD_LEN: usize = 16;

/// A request as the HTTP layer received it.
#[derive(Clone, Copy, Debug)]
pub struct ApiRequest<'a> {
    /// The method as received (`GET`, `POST`…).
    pub method: &'a str,
    /// The request target as received, e.g. `/v1/requests?state=pending`: the raw path and
    /// query, neither decoded nor normalised.
    pub path_and_query: &'a str,
    /// Every header as `(name, value)`; names are matched without regard to case, other headers
    /// are ignored. From an `http::HeaderMap`:
    /// `map.iter().map(|(n, v)| (n.as_str(), v.as_bytes())).collect::<Vec<_>>()`.
    pub headers: &'a [(&'a str, &'a [u8])],
    /// The body bytes (empty for none).
    pub body: &'a [u8],
}

/// An authenticated principal of the active policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The principal's name.
    pub name: String,
    /// The principal's roles in the active policy.
    pub roles: BTreeSet<Role>,
}

impl Caller {
    /// Whether the caller has `role`.
    pub fn has_role(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }
}

/// Authenticates `request` against the principals of `policy` at time `now` (Unix seconds),
/// remembering its nonce in `nonces`. See the [module documentation](super) for the headers,
/// the canonical text and the order of the checks.
///
/// The nonce is remembered only after the signature verified, so a forged request never uses
/// up a principal's nonce. Pruning expired nonces is the caller's job.
///
/// This takes the whole body; a server that must not read a large body before the signature
/// is checked uses [`check_presented`] and [`Presented::verify`] instead.
pub async fn authenticate(
    request: &ApiRequest<'_>,
    policy: &PolicyDocument,
    nonces: &dyn NonceStore,
    now: u64,
) -> Result<Caller, AuthError> {
    if request.body.len() > MAX_BODY_BYTES {
        return Err(AuthError::TooLarge {
            size: request.body.len(),
            limit: MAX_BODY_BYTES,
        });
    }
    let presented = check_presented(request.method, request.path_and_query, request.headers, now)?;
    let body_sha256: [u8; 32] = Sha256::digest(request.body).into();
    if presented
        .content_sha256
        .is_some_and(|declared| declared != body_sha256)
    {
        return Err(AuthError::BodyMismatch);
    }
    presented.verify(&body_sha256, policy, nonces).await
}

/// A request's authentication headers, checked for form and freshness: all that can be
/// checked before the body is read or the policy consulted ([`check_presented`]).
#[derive(Clone, Debug)]
pub struct Presented {
    method: String,
    path_and_query: String,
    principal: String,
    timestamp: u64,
    nonce: String,
    signature: PrincipalSignature,
    content_sha256: Option<[u8; 32]>,
}

/// Checks the method and target, the authentication headers' presence and form and the
/// timestamp's freshness (steps 1 to 3 of the [module documentation](super), but for the
/// body's size): cheap checks that need neither the body nor the policy.
pub fn check_presented(
    method: &str,
    path_and_query: &str,
    headers: &[(&str, &[u8])],
    now: u64,
) -> Result<Presented, AuthError> {
    check_method(method)?;
    check_target(path_and_query)?;

    // Every header present before any is parsed, so a client missing one hears that first.
    let principal = header(headers, HEADER_PRINCIPAL)?;
    let timestamp = header(headers, HEADER_TIMESTAMP)?;
    let nonce = header(headers, HEADER_NONCE)?;
    let signature = header(headers, HEADER_SIGNATURE)?;
    let content_sha256 = optional_header(headers, HEADER_CONTENT_SHA256)?
        .map(parse_content_sha256)
        .transpose()?;

    check_name(principal).map_err(|_| {
        AuthError::Malformed(
            HEADER_PRINCIPAL,
            "expected a principal name: 1 to 64 characters of A-Z a-z 0-9 . _ - @".into(),
        )
    })?;
    let timestamp = parse_timestamp(timestamp)?;
    check_nonce(nonce)?;
    let signature = parse_signature(signature)?;

    if now.saturating_sub(timestamp) > MAX_SKEW_SECS {
        return Err(AuthError::Stale {
            skew: now - timestamp,
            max: MAX_SKEW_SECS,
        });
    }
    if timestamp.saturating_sub(now) > MAX_SKEW_SECS {
        return Err(AuthError::FromTheFuture {
            skew: timestamp - now,
            max: MAX_SKEW_SECS,
        });
    }
    Ok(Presented {
        method: method.to_owned(),
        path_and_query: path_and_query.to_owned(),
        principal: principal.to_owned(),
        timestamp,
        nonce: nonce.to_owned(),
        signature,
        content_sha256,
    })
}

impl Presented {
    /// The body hash the request declared in `x-tessera-content-sha256`, if it did.
    pub fn content_sha256(&self) -> Option<[u8; 32]> {
        self.content_sha256
    }

    /// Checks the signature over the request with a body whose SHA-256 is `body_sha256`
    /// against the principals of `policy`, then remembers the nonce (steps 4 to 6 of the
    /// [module documentation](super)). A caller that verifies against the declared
    /// [`content_sha256`](Self::content_sha256) before reading the body must then check that
    /// the body has that hash.
    pub async fn verify(
        &self,
        body_sha256: &[u8; 32],
        policy: &PolicyDocument,
        nonces: &dyn NonceStore,
    ) -> Result<Caller, AuthError> {
        let principal = self.principal.as_str();
        let Some(known) = policy.principal(principal) else {
            // The same answer as a bad signature: a caller learns nothing about who is a
            // principal. (The log tells the operators.)
            tracing::debug!(%principal, "signed request by a name that is not a principal");
            return Err(AuthError::BadSignature(principal.to_owned()));
        };

        let digest = digest_over_body_hash(
            &self.method,
            &self.path_and_query,
            self.timestamp,
            &self.nonce,
            body_sha256,
        );
        known
            .key
            .verify(API_LABEL, &digest, &self.signature)
            .map_err(|_| AuthError::BadSignature(known.name.clone()))?;

        // Only a verified request may use up a nonce.
        let fresh = nonces
            .remember(
                &known.name,
                &self.nonce,
                self.timestamp.saturating_add(NONCE_TTL_SECS),
            )
            .await
            .map_err(AuthError::Unavailable)?;
        if !fresh {
            return Err(AuthError::Replayed);
        }
        Ok(Caller {
            name: known.name.clone(),
            roles: known.roles.clone(),
        })
    }
}

/// 64 lowercase hex digits.
fn parse_content_sha256(text: &str) -> Result<[u8; 32], AuthError> {
    let mut hash = [0u8; 32];
    if text.len() != 64
        || !text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        || hex::decode_to_slice(text, &mut hash).is_err()
    {
        return Err(AuthError::Malformed(
            HEADER_CONTENT_SHA256,
            "expected 64 lowercase hex digits: the SHA-256 of the body as sent".into(),
        ));
    }
    Ok(hash)
}

/// The method is one uppercase token, so it cannot run into the next line of the canonical
/// text.
fn check_method(method: &str) -> Result<(), AuthError> {
    if method.is_empty()
        || method.len() > MAX_METHOD_LEN
        || !method.bytes().all(|b| b.is_ascii_uppercase())
    {
        return Err(AuthError::InvalidRequest(format!(
            "method {:?}: expected an uppercase method such as GET or POST",
            method.chars().take(MAX_METHOD_LEN + 4).collect::<String>()
        )));
    }
    Ok(())
}

/// The target is an origin-form path (and query) of printable ASCII without spaces, so it
/// cannot run into the next line of the canonical text.
fn check_target(target: &str) -> Result<(), AuthError> {
    if !target.starts_with('/') || !target.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(AuthError::InvalidRequest(
            "the request target must be a path starting with '/' (and an optional query) of \
             printable ASCII characters, percent-encoded as sent"
                .into(),
        ));
    }
    Ok(())
}

/// The value of header `name`: present once, printable ASCII.
fn header<'a>(headers: &[(&str, &'a [u8])], name: &'static str) -> Result<&'a str, AuthError> {
    optional_header(headers, name)?.ok_or(AuthError::Missing(name))
}

/// The value of header `name` if present: at most once, printable ASCII.
fn optional_header<'a>(
    headers: &[(&str, &'a [u8])],
    name: &'static str,
) -> Result<Option<&'a str>, AuthError> {
    let mut values = headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| *v);
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(AuthError::Malformed(
            name,
            "given more than once; send it exactly once".into(),
        ));
    }
    std::str::from_utf8(value)
        .ok()
        .filter(|text| text.bytes().all(|b| b.is_ascii_graphic()))
        .map(Some)
        .ok_or_else(|| AuthError::Malformed(name, "not printable ASCII without spaces".into()))
}

/// Unix seconds in canonical decimal: digits only, no leading zero, fitting a u64.
fn parse_timestamp(text: &str) -> Result<u64, AuthError> {
    let canonical = !text.is_empty()
        && text.bytes().all(|b| b.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'));
    if !canonical {
        return Err(AuthError::Malformed(
            HEADER_TIMESTAMP,
            "expected Unix seconds as decimal digits, without sign, fraction or leading zeros"
                .into(),
        ));
    }
    text.parse()
        .map_err(|_| AuthError::Malformed(HEADER_TIMESTAMP, "too large for Unix seconds".into()))
}

/// 32 lowercase hex digits.
fn check_nonce(nonce: &str) -> Result<(), AuthError> {
    if nonce.len() != 32
        || !nonce
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return Err(AuthError::Malformed(
            HEADER_NONCE,
            "expected 32 lowercase hex digits (16 random bytes, new for every request)".into(),
        ));
    }
    Ok(())
}

/// 128 (Ed25519) or 130 (Ethereum `r || s || v`) hex digits.
fn parse_signature(text: &str) -> Result<PrincipalSignature, AuthError> {
    if text.len() != 128 && text.len() != 130 {
        return Err(AuthError::Malformed(
            HEADER_SIGNATURE,
            format!(
                "{} characters; expected 128 hex digits (Ed25519) or 130 (Ethereum r || s || v)",
                text.len()
            ),
        ));
    }
    hex::decode(text)
        .map(PrincipalSignature)
        .map_err(|_| AuthError::Malformed(HEADER_SIGNATURE, "not hexadecimal".into()))
}
