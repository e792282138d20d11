//! The encrypted file store.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use argon2::{Algorithm, Argon2, Params, Version};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::XChaCha20Poly1305;
use rand_core::{OsRng, RngCore};
use zeroize::Zeroizing;

use crate::format::{record_aad, Header, Record, HEADER_BOUND_LEN, NONCE_LEN};
use crate::{RecordName, SecretStore, StoreError, MAX_RECORD_BYTES};

const HEADER_FILE: &str = "store.header";
const RECORD_EXT: &str = "rec";
const DEK_LABEL: &[u8] = b"tessera-store/dek/v1";

/// Argon2id cost parameters for deriving the key-encryption key from a passphrase.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory in KiB.
    pub m_cost: u32,
    /// Passes.
    pub t_cost: u32,
    /// Lanes.
    pub p_cost: u32,
}

impl KdfParams {
    /// The smallest parameters accepted: 8 MiB, one pass. Used by tests to keep them quick.
    pub const MINIMUM: KdfParams = KdfParams {
        m_cost: 8 * 1024,
        t_cost: 1,
        p_cost: 1,
    };

    /// The largest parameters accepted: 1 GiB, 16 passes, 8 lanes. A header asking for more
    /// is refused before any memory is taken: it was damaged or forged, and honouring it could
    /// exhaust the machine's memory or take hours.
    pub const MAXIMUM: KdfParams = KdfParams {
        m_cost: 1024 * 1024,
        t_cost: 16,
        p_cost: 8,
    };

    /// Whether every parameter is within [`MINIMUM`](Self::MINIMUM) and
    /// [`MAXIMUM`](Self::MAXIMUM).
    pub fn in_range(&self) -> bool {
        let (lo, hi) = (Self::MINIMUM, Self::MAXIMUM);
        (lo.m_cost..=hi.m_cost).contains(&self.m_cost)
            && (lo.t_cost..=hi.t_cost).contains(&self.t_cost)
            && (lo.p_cost..=hi.p_cost).contains(&self.p_cost)
    }

    fn argon2(&self) -> Result<Argon2<'static>, StoreError> {
        if !self.in_range() {
            return Err(StoreError::KdfParams(format!(
                "{self:?} is outside the accepted range, from {:?} to {:?}",
                Self::MINIMUM,
                Self::MAXIMUM
            )));
        }
        let params = Params::new(self.m_cost, self.t_cost, self.p_cost, Some(32))
            .map_err(|e| StoreError::KdfParams(e.to_string()))?;
        Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
    }
}

impl Default for KdfParams {
    /// 64 MiB, 3 passes, 1 lane: about half a second on a server core, paid once per unlock.
    fn default() -> Self {
        KdfParams {
            m_cost: 64 * 1024,
            t_cost: 3,
            p_cost: 1,
        }
    }
}

/// Secrets in a directory, each record in its own encrypted file.
pub struct FileStore {
    dir: PathBuf,
    store_id: [u8; 16],
    data_key: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for FileStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileStore")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

fn io<'a>(context: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        context,
        path: path.to_owned(),
        source,
    }
}

fn derive_kek(
    passphrase: &[u8],
    params: &KdfParams,
    salt: &[u8; 16],
) -> Result<Zeroizing<[u8; 32]>, StoreError> {
    let mut kek = Zeroizing::new([0u8; 32]);
    params
        .argon2()?
        .hash_password_into(passphrase, salt, kek.as_mut())
        .map_err(|e| StoreError::KdfParams(e.to_string()))?;
    Ok(kek)
}

fn dek_aad(header: &Header) -> Vec<u8> {
    let mut aad = DEK_LABEL.to_vec();
    aad.extend_from_slice(&header.bound_bytes()[..HEADER_BOUND_LEN]);
    aad
}

impl FileStore {
    /// Creates a new store in `dir` (created with mode 0700 if missing) protected by
    /// `passphrase`. Refuses if a store already exists there.
    pub fn create(dir: &Path, passphrase: &[u8], params: KdfParams) -> Result<Self, StoreError> {
        let header_path = dir.join(HEADER_FILE);
        if header_path.exists() {
            return Err(StoreError::AlreadyExists(dir.to_owned()));
        }
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io("creating the store directory", dir))?;
        let mut header = Header {
            m_cost: params.m_cost,
            t_cost: params.t_cost,
            p_cost: params.p_cost,
            salt: [0; 16],
            store_id: [0; 16],
            nonce: [0; NONCE_LEN],
            wrapped_key: [0; 48],
        };
        OsRng.fill_bytes(&mut header.salt);
        OsRng.fill_bytes(&mut header.store_id);
        OsRng.fill_bytes(&mut header.nonce);
        let mut data_key = Zeroizing::new([0u8; 32]);
        OsRng.fill_bytes(data_key.as_mut());
        let kek = derive_kek(passphrase, &params, &header.salt)?;
        let wrapped = XChaCha20Poly1305::new(kek.as_ref().into())
            .encrypt(
                &header.nonce.into(),
                Payload {
                    msg: data_key.as_ref(),
                    aad: &dek_aad(&header),
                },
            )
            .expect("encrypting 32 bytes cannot fail");
        header.wrapped_key.copy_from_slice(&wrapped);
        write_atomic(dir, &header_path, &header.encode())?;
        tracing::info!(dir = %dir.display(), "created secret store");
        Ok(FileStore {
            dir: dir.to_owned(),
            store_id: header.store_id,
            data_key,
        })
    }

    /// Opens the store in `dir` with `passphrase`.
    pub fn open(dir: &Path, passphrase: &[u8]) -> Result<Self, StoreError> {
        let header_path = dir.join(HEADER_FILE);
        if !header_path.exists() {
            return Err(StoreError::NoStore(dir.to_owned()));
        }
        let bytes = fs::read(&header_path).map_err(io("reading", &header_path))?;
        let header = Header::decode(&bytes, &header_path)?;
        let params = KdfParams {
            m_cost: header.m_cost,
            t_cost: header.t_cost,
            p_cost: header.p_cost,
        };
        // The header's parameters are authenticated only once the key they derive unwraps the
        // data key: bound them before spending memory and time on them.
        if !params.in_range() {
            return Err(StoreError::Corrupt {
                path: header_path,
                reason: format!(
                    "its key-derivation parameters {params:?} are outside the accepted range, \
                     from {:?} to {:?}",
                    KdfParams::MINIMUM,
                    KdfParams::MAXIMUM
                ),
            });
        }
        let kek = derive_kek(passphrase, &params, &header.salt)?;
        let unwrapped = XChaCha20Poly1305::new(kek.as_ref().into())
            .decrypt(
                &header.nonce.into(),
                Payload {
                    msg: &header.wrapped_key,
                    aad: &dek_aad(&header),
                },
            )
            .map_err(|_| StoreError::WrongPassphrase(dir.to_owned()))?;
        let unwrapped = Zeroizing::new(unwrapped);
        let mut data_key = Zeroizing::new([0u8; 32]);
        data_key.copy_from_slice(&unwrapped);
        Ok(FileStore {
            dir: dir.to_owned(),
            store_id: header.store_id,
            data_key,
        })
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, name: &RecordName) -> PathBuf {
        self.dir.join(format!("{name}.{RECORD_EXT}"))
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(self.data_key.as_ref().into())
    }
}

impl SecretStore for FileStore {
    fn put(&self, name: &RecordName, secret: &[u8]) -> Result<(), StoreError> {
        if secret.len() > MAX_RECORD_BYTES {
            return Err(StoreError::TooLarge {
                len: secret.len(),
                limit: MAX_RECORD_BYTES,
            });
        }
        let mut nonce = [0u8; NONCE_LEN];
        OsRng.fill_bytes(&mut nonce);
        let name_bytes = name.as_str().as_bytes();
        let ciphertext = self
            .cipher()
            .encrypt(
                &nonce.into(),
                Payload {
                    msg: secret,
                    aad: &record_aad(&self.store_id, name_bytes),
                },
            )
            .expect("encrypting an in-memory buffer cannot fail");
        let record = Record {
            store_id: self.store_id,
            name: name_bytes,
            nonce,
            ciphertext: &ciphertext,
        };
        write_atomic(&self.dir, &self.path(name), &record.encode())
    }

    fn get(&self, name: &RecordName) -> Result<Zeroizing<Vec<u8>>, StoreError> {
        let path = self.path(name);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::NotFound(name.to_string()))
            }
            Err(e) => return Err(io("reading", &path)(e)),
        };
        let record = Record::decode(&bytes, &path)?;
        if record.store_id != self.store_id {
            return Err(StoreError::ForeignStore(path));
        }
        if record.name != name.as_str().as_bytes() {
            return Err(StoreError::Moved {
                path,
                expected: name.to_string(),
                found: String::from_utf8_lossy(record.name).into_owned(),
            });
        }
        let plaintext = self
            .cipher()
            .decrypt(
                &record.nonce.into(),
                Payload {
                    msg: record.ciphertext,
                    aad: &record_aad(&self.store_id, record.name),
                },
            )
            .map_err(|_| StoreError::Tampered(path))?;
        Ok(Zeroizing::new(plaintext))
    }

    fn delete(&self, name: &RecordName) -> Result<(), StoreError> {
        let path = self.path(name);
        match fs::remove_file(&path) {
            Ok(()) => sync_dir(&self.dir),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(StoreError::NotFound(name.to_string()))
            }
            Err(e) => Err(io("deleting", &path)(e)),
        }
    }

    fn delete_lazily(&self, name: &RecordName) -> Result<(), StoreError> {
        let path = self.path(name);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(StoreError::NotFound(name.to_string()))
            }
            Err(e) => Err(io("deleting", &path)(e)),
        }
    }

    fn contains(&self, name: &RecordName) -> Result<bool, StoreError> {
        let path = self.path(name);
        path.try_exists().map_err(io("checking", &path))
    }

    fn list(&self) -> Result<Vec<RecordName>, StoreError> {
        let entries = fs::read_dir(&self.dir).map_err(io("listing", &self.dir))?;
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io("listing", &self.dir))?;
            let file_name = entry.file_name();
            let Some(stem) = file_name
                .to_str()
                .and_then(|n| n.strip_suffix(&format!(".{RECORD_EXT}")))
            else {
                continue;
            };
            if let Ok(name) = RecordName::new(stem) {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }
}

/// Writes `bytes` to `path` so that a crash leaves either the old file or the new one: a
/// temporary file in the same directory (mode 0600), fsync, rename, fsync of the directory.
fn write_atomic(dir: &Path, path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(dir)
        .map_err(io("creating a temporary file in", dir))?;
    tmp.as_file()
        .set_permissions(fs::Permissions::from_mode(0o600))
        .map_err(io("setting permissions of", tmp.path()))?;
    tmp.write_all(bytes).map_err(io("writing", path))?;
    tmp.as_file().sync_all().map_err(io("syncing", path))?;
    tmp.persist(path)
        .map_err(|e| io("replacing", path)(e.error))?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("syncing directory", dir))
}
