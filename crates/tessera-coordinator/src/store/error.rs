//! Why a store operation failed.

/// Why a store operation failed. The message says what to do next.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be opened. `url` has any password replaced by `***`.
    #[error("cannot open the coordinator database {url}: {reason}")]
    Connect {
        /// The URL that was given, password redacted.
        url: String,
        /// What went wrong and what to check.
        reason: String,
    },
    /// The schema migrations could not be applied.
    #[error("cannot migrate the coordinator database: {0}")]
    Migrate(String),
    /// The database was migrated by a newer coordinator than this one.
    #[error(
        "the coordinator database has schema version {found} but this coordinator knows versions \
         up to {supported}: run a coordinator at least as new as the one that upgraded the \
         database, or point this one at another database"
    )]
    SchemaTooNew {
        /// The newest schema version applied to the database.
        found: i64,
        /// The newest schema version this code knows.
        supported: i64,
    },
    /// The write contradicts a stored record (for example a reused id with different content).
    #[error("{0}")]
    Conflict(String),
    /// A record the operation needs does not exist.
    #[error("{0}")]
    NotFound(String),
    /// An argument cannot be stored as given.
    #[error("invalid {what}: {reason}")]
    Invalid {
        /// Which argument.
        what: &'static str,
        /// What is wrong with it and what is expected.
        reason: String,
    },
    /// The database failed, or returned a row this code cannot read.
    #[error("coordinator database error: {0}")]
    Database(String),
}

impl StoreError {
    /// A database error with what was being done when it happened.
    pub(crate) fn db(doing: impl std::fmt::Display, err: sqlx::Error) -> StoreError {
        StoreError::Database(format!(
            "{doing}: {err}; check that the database is reachable and writable"
        ))
    }

    /// A stored value this code cannot read: the database was edited by hand or by other software.
    pub(crate) fn corrupt(table: &str, column: &str, reason: impl std::fmt::Display) -> StoreError {
        StoreError::Database(format!(
            "unreadable value in {table}.{column} ({reason}); the row was not written by this \
             coordinator: restore the database from a backup or repair the row"
        ))
    }
}

/// Whether `err` is the database refusing a row whose foreign key points nowhere.
pub(crate) fn is_foreign_key_violation(err: &sqlx::Error) -> bool {
    matches!(
        err.as_database_error().map(|e| e.kind()),
        Some(sqlx::error::ErrorKind::ForeignKeyViolation)
    )
}

/// Replaces the password of `scheme://user:password@host/...` by `***`, so URLs can be shown.
pub(crate) fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let authority_start = scheme_end + 3;
    let rest = &url[authority_start..];
    let authority_len = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_len];
    let Some(at) = authority.rfind('@') else {
        return url.to_owned();
    };
    let userinfo = &authority[..at];
    let Some(colon) = userinfo.find(':') else {
        return url.to_owned();
    };
    format!(
        "{}{}:***{}",
        &url[..authority_start],
        &userinfo[..colon],
        &url[authority_start + at..]
    )
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("postgres://alice:s3cr@t@db.example:5432/tessera?sslmode=require"),
            "postgres://alice:***@db.example:5432/tessera?sslmode=require"
        );
        assert_eq!(
            redact_url("postgres://alice@db/tessera"),
            "postgres://alice@db/tessera"
        );
        assert_eq!(redact_url("postgres://db/x@y"), "postgres://db/x@y");
        assert_eq!(
            redact_url("sqlite:///var/lib/c.db"),
            "sqlite:///var/lib/c.db"
        );
        assert_eq!(redact_url("sqlite::memory:"), "sqlite::memory:");
    }
}
