//! Secret storage for Tessera party nodes.
//!
//! [`SecretStore`] is what a node keeps its secrets in: key shares, auxiliary info, Paillier
//! primes, presignatures. [`FileStore`] is the encrypted-file implementation:
//!
//! * a random 256-bit *data key* encrypts every record with XChaCha20-Poly1305, with the store's
//!   id and the record's name as associated data, so a record file copied to another name or
//!   another store never opens;
//! * the data key is stored wrapped under a *key-encryption key* derived from a passphrase with
//!   Argon2id; the Argon2id parameters and salt are in the store header, so they can be raised
//!   for new stores without breaking old ones;
//! * every file carries a SHA-256 checksum, so corruption is told apart from a wrong
//!   passphrase, a moved file and a file from another store: each has its own [`StoreError`];
//! * writes are atomic (temporary file, fsync, rename, fsync of the directory) and files are
//!   created with mode 0600; a failed operation leaves every existing file as it was.
//!
//! Secrets are returned in [`Zeroizing`] buffers and never logged.

mod error;
mod file;
mod format;
mod name;

pub use error::StoreError;
pub use file::{FileStore, KdfParams};
pub use name::RecordName;
pub use zeroize::Zeroizing;

/// Largest record accepted (key shares with multiexp tables are about 1 MB).
pub const MAX_RECORD_BYTES: usize = 16 * 1024 * 1024;

/// Where a node keeps its secrets.
pub trait SecretStore: Send + Sync {
    /// Stores `secret` under `name`, atomically replacing any previous value.
    fn put(&self, name: &RecordName, secret: &[u8]) -> Result<(), StoreError>;

    /// Reads the secret stored under `name`.
    fn get(&self, name: &RecordName) -> Result<Zeroizing<Vec<u8>>, StoreError>;

    /// Removes the record (durably: the directory is synced).
    fn delete(&self, name: &RecordName) -> Result<(), StoreError>;

    /// Removes the record without waiting for the removal to reach the disk: after a power
    /// loss the record may be back. Only for a record whose removal another record, already
    /// durable, stands for (a presignature whose consumed marker is written). The default is
    /// [`delete`](Self::delete).
    fn delete_lazily(&self, name: &RecordName) -> Result<(), StoreError> {
        self.delete(name)
    }

    /// Whether a record exists (without decrypting it).
    fn contains(&self, name: &RecordName) -> Result<bool, StoreError>;

    /// All record names, sorted.
    fn list(&self) -> Result<Vec<RecordName>, StoreError>;
}
