//! Why a service operation failed, with what to do about it.

use crate::StoreError;

/// Why a [`Coordinator`](super::Coordinator) operation failed. Every message says what to do
/// next; none holds a secret.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The request, key, committee or proposal does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The principal may not do this under the active policy.
    #[error(
        "'{principal}' may not do this: it needs {needed}; the roles come from the active \
         policy, which admins change by a policy change"
    )]
    Forbidden {
        /// Who asked.
        principal: String,
        /// What it would need (a role, or another condition), in words.
        needed: String,
    },
    /// The input cannot be used as given.
    #[error("invalid input: {0}")]
    Invalid(String),
    /// The policy denies the request; nothing will sign it. Submit a different request.
    #[error("the policy denies the request: {}", .reasons.join("; "))]
    Denied {
        /// Every reason, as operators read them.
        reasons: Vec<String>,
    },
    /// The operation contradicts the current state (a reused id, a request in the wrong
    /// state, a duplicate decision).
    #[error("{0}")]
    Conflict(String),
    /// The operation cannot run now (no quorum, a key or committee not ready, a session
    /// failed); it may succeed later or after the named fix.
    #[error("{0}")]
    Unavailable(String),
    /// The database failed.
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(m) => ServiceError::NotFound(m),
            StoreError::Conflict(m) => ServiceError::Conflict(m),
            StoreError::Invalid { what, reason } => {
                ServiceError::Invalid(format!("{what}: {reason}"))
            }
            other => ServiceError::Store(other),
        }
    }
}

impl ServiceError {
    pub(crate) fn forbidden(principal: &str, needed: impl Into<String>) -> Self {
        ServiceError::Forbidden {
            principal: principal.chars().take(80).collect(),
            needed: needed.into(),
        }
    }

    /// A stored row this code cannot read back (edited by hand or by other software).
    pub(crate) fn corrupt(what: impl std::fmt::Display) -> Self {
        ServiceError::Store(StoreError::Database(format!(
            "{what}; the row was not written by this coordinator: restore the database from a \
             backup or repair the row"
        )))
    }
}
