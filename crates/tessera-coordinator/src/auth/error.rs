//! Why a request was refused.

use crate::StoreError;

use super::Permission;

/// Why an API request was refused. The message is meant for the API client; the HTTP layer
/// answers with [`status`](AuthError::status).
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The body is larger than [`MAX_BODY_BYTES`](super::MAX_BODY_BYTES). Status 413.
    #[error("the request body has {size} bytes; at most {limit} are accepted")]
    TooLarge {
        /// The body's size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// A body longer than [`UNDECLARED_BODY_BYTES`](super::UNDECLARED_BODY_BYTES) came
    /// without its hash in `x-tessera-content-sha256`. Status 413.
    #[error(
        "a request body over {limit} bytes must declare its SHA-256 in x-tessera-content-sha256 \
         (the tessera client and sign_request do), so that its signature is checked before the \
         body is read"
    )]
    UndeclaredBody {
        /// The limit for bodies without the header.
        limit: usize,
    },
    /// The body's hash differs from the one its `x-tessera-content-sha256` header declared
    /// (and the signature covers). Status 400.
    #[error(
        "the request body does not match its x-tessera-content-sha256 header: send the body \
         exactly as signed"
    )]
    BodyMismatch,
    /// The method or the request target cannot be signed unambiguously. Status 400.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// An authentication header is missing. Status 401.
    #[error(
        "missing header {0}: every API request must be signed (headers x-tessera-principal, \
         x-tessera-timestamp, x-tessera-nonce and x-tessera-signature)"
    )]
    Missing(&'static str),
    /// An authentication header is present but not in the expected form. Status 400.
    #[error("malformed header {0}: {1}")]
    Malformed(&'static str, String),
    /// The timestamp is more than the allowed skew behind the coordinator's clock. Status 401.
    #[error(
        "the request was signed {skew} s ago, more than the {max} s allowed: check your clock \
         and sign the request again just before sending it"
    )]
    Stale {
        /// How many seconds the timestamp is behind the coordinator's clock.
        skew: u64,
        /// The allowed skew.
        max: u64,
    },
    /// The timestamp is more than the allowed skew ahead of the coordinator's clock. Status 401.
    #[error(
        "the request's timestamp is {skew} s ahead of the coordinator's clock, more than the \
         {max} s allowed: check your clock"
    )]
    FromTheFuture {
        /// How many seconds the timestamp is ahead of the coordinator's clock.
        skew: u64,
        /// The allowed skew.
        max: u64,
    },
    /// The signature does not verify with the principal's key, or the principal is not in the
    /// active policy: one answer for both, so that a caller cannot tell which names are
    /// principals. Status 401.
    #[error(
        "the request signature does not verify for principal '{0}': sign \
         tessera/api-request/v1 over the method, path and query, timestamp, nonce and body \
         hash exactly as sent, with the key the policy names for this principal"
    )]
    BadSignature(String),
    /// The nonce was already used by this principal. Status 401.
    #[error(
        "this request was already received (its nonce was used before): sign every request \
         with a fresh random nonce"
    )]
    Replayed,
    /// The caller's roles do not grant the permission. Status 403.
    #[error("principal '{name}' may not {permission}: {}", needs(*permission))]
    Forbidden {
        /// The caller.
        name: String,
        /// The permission the endpoint needs.
        permission: Permission,
    },
    /// The nonce store failed; the request may be retried. Status 503. The source holds the
    /// database error for the logs; the message does not show it to the client.
    #[error("the coordinator cannot check request nonces right now; try again later")]
    Unavailable(#[source] StoreError),
}

/// Which roles would grant `permission`, for the error message.
fn needs(permission: Permission) -> String {
    let roles: Vec<&str> = tessera_policy::Role::ALL
        .into_iter()
        .filter(|role| super::rbac::grants(*role, permission))
        .map(|role| role.as_str())
        .collect();
    match roles.as_slice() {
        [] => "no role grants that".to_owned(),
        [one] => format!("that needs the {one} role"),
        many => format!("that needs one of the roles {}", many.join(", ")),
    }
}

impl AuthError {
    /// The HTTP status to answer with: 400 (malformed request or header), 401 (not
    /// authenticated), 403 (authenticated but not permitted), 413 (body too large) or 503
    /// (the nonce store failed; retry).
    pub fn status(&self) -> u16 {
        match self {
            AuthError::TooLarge { .. } | AuthError::UndeclaredBody { .. } => 413,
            AuthError::InvalidRequest(_) | AuthError::Malformed(..) | AuthError::BodyMismatch => {
                400
            }
            AuthError::Missing(_)
            | AuthError::Stale { .. }
            | AuthError::FromTheFuture { .. }
            | AuthError::BadSignature(_)
            | AuthError::Replayed => 401,
            AuthError::Forbidden { .. } => 403,
            AuthError::Unavailable(_) => 503,
        }
    }
}
