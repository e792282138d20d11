//! Errors of the audit log.

use std::path::PathBuf;

/// Why an audit operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// Input that is not a valid event, record, emitter or filter.
    #[error("{0}")]
    Invalid(String),
    /// Reading or writing the log file failed.
    #[error("audit log {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The log file does not continue this emitter's chain (another emitter's file, a broken
    /// last record, or a record this key did not sign).
    #[error("audit log {path} cannot be continued: {reason}; verify it with `tessera audit verify {path}`")]
    CannotResume {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The JetStream stream could not be created, written or read.
    #[error("audit stream {stream}: {reason}")]
    Stream {
        /// The stream name.
        stream: String,
        /// Why.
        reason: String,
    },
}

impl AuditError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        AuditError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn stream(stream: &str, reason: impl std::fmt::Display) -> Self {
        AuditError::Stream {
            stream: stream.to_owned(),
            reason: reason.to_string(),
        }
    }
}
