use std::path::PathBuf;

/// Why a store operation failed. Each kind of damage has its own variant, and the message says
/// what to do next.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The passphrase does not open this store.
    #[error("wrong passphrase for the store at {0}")]
    WrongPassphrase(PathBuf),
    /// A store already exists where one was to be created.
    #[error("a store already exists at {0}; open it instead, or choose another directory")]
    AlreadyExists(PathBuf),
    /// No store exists at the path.
    #[error("no store at {0}; create one first")]
    NoStore(PathBuf),
    /// No record with that name.
    #[error("no record named {0:?} in the store")]
    NotFound(String),
    /// A file's checksum does not match its content: bytes were changed on disk.
    #[error("{path} is corrupt ({reason}); restore it from a backup")]
    Corrupt {
        /// The damaged file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A file is shorter than its format requires.
    #[error(
        "{path} is truncated ({len} bytes, at least {needed} expected); restore it from a backup"
    )]
    Truncated {
        /// The damaged file.
        path: PathBuf,
        /// Its length.
        len: usize,
        /// The length its header requires.
        needed: usize,
    },
    /// The file under one record's name holds another record: it was renamed or copied.
    #[error("{path} holds record {found:?}, not {expected:?}: the file was renamed or copied; put it back under its own name")]
    Moved {
        /// The file.
        path: PathBuf,
        /// The name that was asked for.
        expected: String,
        /// The name inside the file.
        found: String,
    },
    /// The record was written by another store.
    #[error("{0} belongs to another store; it cannot be read with this store's key")]
    ForeignStore(PathBuf),
    /// The checksum matches but decryption fails: the file was forged, not damaged.
    #[error("{0} does not decrypt although its checksum matches: it was tampered with")]
    Tampered(PathBuf),
    /// The record name is not allowed.
    #[error(
        "invalid record name {0:?}: use 1 to 128 of a-z, 0-9, '.', '_', '-', not starting with '.'"
    )]
    InvalidName(String),
    /// The record is larger than allowed.
    #[error("record of {len} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Its size.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// Key-derivation parameters are out of range.
    #[error("invalid key-derivation parameters: {0}")]
    KdfParams(String),
    /// The file system failed.
    #[error("{context} {path}: {source}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// The path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}
