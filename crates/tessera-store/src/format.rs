//! On-disk layouts. All integers big-endian; every file ends with a SHA-256 checksum of all the
//! bytes before it.
//!
//! ```text
//! store.header: "TSSTORE1" | version u8 | kdf u8 (1 = Argon2id v1.3) | m_cost u32 (KiB)
//!               | t_cost u32 | p_cost u32 | salt [16] | store_id [16]
//!               | nonce [24] | wrapped data key [48] | sha256 [32]
//! <name>.rec:   "TSREC001" | version u8 | store_id [16] | name_len u8 | name
//!               | nonce [24] | ct_len u32 | ciphertext [ct_len] | sha256 [32]
//! ```

use std::path::Path;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::StoreError;

pub(crate) const HEADER_MAGIC: &[u8; 8] = b"TSSTORE1";
pub(crate) const RECORD_MAGIC: &[u8; 8] = b"TSREC001";
pub(crate) const FORMAT_VERSION: u8 = 1;
pub(crate) const KDF_ARGON2ID: u8 = 1;
pub(crate) const NONCE_LEN: usize = 24;
pub(crate) const WRAPPED_KEY_LEN: usize = 32 + 16;
const CHECKSUM_LEN: usize = 32;

/// The parsed store header.
pub(crate) struct Header {
    pub(crate) m_cost: u32,
    pub(crate) t_cost: u32,
    pub(crate) p_cost: u32,
    pub(crate) salt: [u8; 16],
    pub(crate) store_id: [u8; 16],
    pub(crate) nonce: [u8; NONCE_LEN],
    pub(crate) wrapped_key: [u8; WRAPPED_KEY_LEN],
}

/// Bytes of a header up to (not including) the nonce: what the wrapped key is bound to.
pub(crate) const HEADER_BOUND_LEN: usize = 8 + 1 + 1 + 12 + 16 + 16;
const HEADER_LEN: usize = HEADER_BOUND_LEN + NONCE_LEN + WRAPPED_KEY_LEN + CHECKSUM_LEN;

impl Header {
    pub(crate) fn bound_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN);
        out.extend_from_slice(HEADER_MAGIC);
        out.extend_from_slice(&[FORMAT_VERSION, KDF_ARGON2ID]);
        out.extend_from_slice(&self.m_cost.to_be_bytes());
        out.extend_from_slice(&self.t_cost.to_be_bytes());
        out.extend_from_slice(&self.p_cost.to_be_bytes());
        out.extend_from_slice(&self.salt);
        out.extend_from_slice(&self.store_id);
        out
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = self.bound_bytes();
        out.extend_from_slice(&self.nonce);
        out.extend_from_slice(&self.wrapped_key);
        seal_checksum(out)
    }

    pub(crate) fn decode(bytes: &[u8], path: &Path) -> Result<Self, StoreError> {
        check_prefix(bytes, HEADER_MAGIC, HEADER_LEN, path, "store header")?;
        let body = verify_checksum(bytes, HEADER_LEN, path)?;
        if bytes.len() > HEADER_LEN {
            return Err(corrupt(path, "trailing bytes after the header"));
        }
        let mut r = Reader::new(body);
        r.skip(8);
        if r.u8() != FORMAT_VERSION || r.u8() != KDF_ARGON2ID {
            return Err(corrupt(
                path,
                "unsupported header version or key derivation",
            ));
        }
        Ok(Header {
            m_cost: r.u32(),
            t_cost: r.u32(),
            p_cost: r.u32(),
            salt: r.array(),
            store_id: r.array(),
            nonce: r.array(),
            wrapped_key: r.array(),
        })
    }
}

/// A parsed record file.
pub(crate) struct Record<'a> {
    pub(crate) store_id: [u8; 16],
    pub(crate) name: &'a [u8],
    pub(crate) nonce: [u8; NONCE_LEN],
    pub(crate) ciphertext: &'a [u8],
}

const RECORD_FIXED_LEN: usize = 8 + 1 + 16 + 1 + NONCE_LEN + 4 + CHECKSUM_LEN;

/// The associated data of a record: binds it to its store and its name.
pub(crate) fn record_aad(store_id: &[u8; 16], name: &[u8]) -> Vec<u8> {
    let mut aad = b"tessera-store/record/v1".to_vec();
    aad.extend_from_slice(store_id);
    aad.push(name.len() as u8);
    aad.extend_from_slice(name);
    aad
}

impl<'a> Record<'a> {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out =
            Vec::with_capacity(RECORD_FIXED_LEN + self.name.len() + self.ciphertext.len());
        out.extend_from_slice(RECORD_MAGIC);
        out.push(FORMAT_VERSION);
        out.extend_from_slice(&self.store_id);
        out.push(self.name.len() as u8);
        out.extend_from_slice(self.name);
        out.extend_from_slice(&self.nonce);
        out.extend_from_slice(&(self.ciphertext.len() as u32).to_be_bytes());
        out.extend_from_slice(self.ciphertext);
        seal_checksum(out)
    }

    pub(crate) fn decode(bytes: &'a [u8], path: &Path) -> Result<Self, StoreError> {
        check_prefix(bytes, RECORD_MAGIC, RECORD_FIXED_LEN, path, "store record")?;
        let name_len = bytes[8 + 1 + 16] as usize;
        let ct_len_at = 8 + 1 + 16 + 1 + name_len + NONCE_LEN;
        let needed_for_len = ct_len_at + 4;
        if bytes.len() < needed_for_len {
            return Err(StoreError::Truncated {
                path: path.to_owned(),
                len: bytes.len(),
                needed: needed_for_len + CHECKSUM_LEN,
            });
        }
        let ct_len =
            u32::from_be_bytes(bytes[ct_len_at..ct_len_at + 4].try_into().expect("4 bytes"))
                as usize;
        let needed = RECORD_FIXED_LEN + name_len + ct_len;
        if bytes.len() < needed {
            return Err(StoreError::Truncated {
                path: path.to_owned(),
                len: bytes.len(),
                needed,
            });
        }
        if bytes.len() > needed {
            return Err(corrupt(path, "trailing bytes after the record"));
        }
        let body = verify_checksum(bytes, needed, path)?;
        let mut r = Reader::new(body);
        r.skip(8);
        if r.u8() != FORMAT_VERSION {
            return Err(corrupt(path, "unsupported record version"));
        }
        let store_id = r.array();
        let name_len = r.u8() as usize;
        let name = r.take(name_len);
        let nonce = r.array();
        let ct_len = r.u32() as usize;
        let ciphertext = r.take(ct_len);
        Ok(Record {
            store_id,
            name,
            nonce,
            ciphertext,
        })
    }
}

fn corrupt(path: &Path, reason: &str) -> StoreError {
    StoreError::Corrupt {
        path: path.to_owned(),
        reason: reason.to_owned(),
    }
}

fn seal_checksum(mut bytes: Vec<u8>) -> Vec<u8> {
    let sum = Sha256::digest(&bytes);
    bytes.extend_from_slice(&sum);
    bytes
}

/// Checks the magic (when there are enough bytes to hold it) and the minimum length.
fn check_prefix(
    bytes: &[u8],
    magic: &[u8; 8],
    minimum: usize,
    path: &Path,
    what: &str,
) -> Result<(), StoreError> {
    if bytes.len() >= magic.len() && &bytes[..magic.len()] != magic {
        return Err(corrupt(path, &format!("not a Tessera {what}")));
    }
    if bytes.len() < minimum {
        return Err(StoreError::Truncated {
            path: path.to_owned(),
            len: bytes.len(),
            needed: minimum,
        });
    }
    Ok(())
}

/// Verifies the checksum at the end of `bytes[..len]`; returns the bytes before it.
fn verify_checksum<'a>(bytes: &'a [u8], len: usize, path: &Path) -> Result<&'a [u8], StoreError> {
    let (body, sum) = bytes[..len].split_at(len - CHECKSUM_LEN);
    let expected = Sha256::digest(body);
    if !bool::from(expected.as_slice().ct_eq(sum)) {
        return Err(corrupt(path, "checksum mismatch"));
    }
    Ok(body)
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

/// Reads fields whose presence the caller has already checked.
impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes, pos: 0 }
    }

    fn skip(&mut self, n: usize) {
        self.pos += n;
    }

    fn take(&mut self, n: usize) -> &'a [u8] {
        let s = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        s
    }

    fn array<const N: usize>(&mut self) -> [u8; N] {
        self.take(N).try_into().expect("length checked")
    }

    fn u8(&mut self) -> u8 {
        self.take(1)[0]
    }

    fn u32(&mut self) -> u32 {
        u32::from_be_bytes(self.array())
    }
}
