//! Backups of a party's key share held by recovery officers.
//!
//! [`create`] encrypts a secret (a node's key share and auxiliary info) under a fresh random
//! 256-bit key with XChaCha20-Poly1305, splits that key `k`-of-`m` with Shamir's scheme over
//! GF(256) (`vsss-rs`), and encrypts each piece to one officer's `age` X25519 recipient. The
//! header (who, which key, which officers, how many are needed) is authenticated as the
//! cipher's associated data, and it carries a SHA-256 commitment to the key, so that a wrong
//! combination of pieces is reported as such instead of producing a wrong key.
//!
//! The party that makes a backup signs it ([`Backup::signed_digest`], with a signer the caller
//! gives: the party's roster identity key), and [`restore`] checks that signature before it
//! opens anything, with a verifier the caller gives (the roster).
//!
//! [`restore`] needs `k` officers' identities: fewer fail with [`BackupError::NotEnoughOfficers`]
//! naming who could open a piece; a changed byte anywhere fails authentication. Nothing here
//! writes anything to disk or logs: callers get bytes in [`Zeroizing`] buffers.

mod format;
mod officers;

pub use format::{Backup, Header, Metadata, Piece, FORMAT, SIGNATURE_LABEL};
pub use officers::{parse_identities, Officer};

use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand_core::{OsRng, RngCore};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// Why a backup could not be made or restored.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The officers or the threshold cannot work.
    #[error("invalid officers: {0}")]
    Officers(String),
    /// The file is not a backup this version reads.
    #[error("not a Tessera backup: {0}")]
    Format(String),
    /// Fewer than `needed` officers' identities opened a piece.
    #[error("{}", not_enough(*.needed, .opened, .others))]
    NotEnoughOfficers {
        /// Officers needed.
        needed: u8,
        /// Officers whose pieces were opened.
        opened: Vec<String>,
        /// The other officers of the backup.
        others: Vec<String>,
    },
    /// The pieces opened do not combine to the key this backup was made with.
    #[error("the officers' pieces do not combine to this backup's key: a piece was altered or belongs to another backup")]
    WrongPieces,
    /// The encrypted secret or the header was changed.
    #[error("the backup does not decrypt: the file was changed or damaged")]
    Tampered,
    /// The party's signature does not verify.
    #[error("the backup's signature is not {0}'s: it was not made by that party's node, or was changed since")]
    BadSignature(String),
    /// age failed.
    #[error("age: {0}")]
    Age(String),
}

fn not_enough(needed: u8, opened: &[String], others: &[String]) -> String {
    let missing = usize::from(needed).saturating_sub(opened.len());
    let who = if opened.is_empty() {
        "none of the identities given opened a piece".to_owned()
    } else {
        format!("only {} opened theirs", opened.join(", "))
    };
    format!(
        "{needed} officers are needed to restore this backup and {who}; {missing} more of {} must take part",
        others.join(", ")
    )
}

const KEY_COMMITMENT_TAG: &[u8] = b"tessera/backup/v1/key";

fn commitment(key: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(KEY_COMMITMENT_TAG);
    h.update(key);
    h.finalize().into()
}

/// Encrypts `secret` for `officers`, any `threshold` of whom can restore it, and has the
/// party sign the result with `sign` (its signature over [`Backup::signed_digest`]).
pub fn create(
    secret: &[u8],
    metadata: Metadata,
    officers: &[Officer],
    threshold: u8,
    sign: impl FnOnce(&[u8; 32]) -> [u8; 64],
) -> Result<Backup, BackupError> {
    officers::check(officers, threshold)?;
    let mut key = Zeroizing::new([0u8; 32]);
    OsRng.fill_bytes(&mut key[..]);
    let mut id = [0u8; 16];
    OsRng.fill_bytes(&mut id);
    let header = Header {
        format: FORMAT.to_owned(),
        id: hex::encode(id),
        metadata,
        threshold,
        officers: officers.iter().map(Officer::entry).collect(),
        key_commitment: hex::encode(commitment(&key[..])),
    };
    let shares = Zeroizing::new(
        vsss_rs::Gf256::split_bytes(
            usize::from(threshold),
            officers.len(),
            &key[..],
            getrandom::rand_core::UnwrapErr(getrandom::SysRng),
        )
        .map_err(|e| BackupError::Officers(format!("cannot split the key: {e}")))?,
    );
    let pieces = officers
        .iter()
        .zip(shares.iter())
        .map(|(officer, share)| {
            let plain = Zeroizing::new(format::piece_plaintext(&header.id, share));
            let sealed = age::encrypt_and_armor(&officer.recipient, plain.as_bytes())
                .map_err(|e| BackupError::Age(e.to_string()))?;
            Ok(Piece {
                officer: officer.name.clone(),
                age: sealed,
            })
        })
        .collect::<Result<Vec<_>, BackupError>>()?;
    let mut nonce = [0u8; 24];
    OsRng.fill_bytes(&mut nonce);
    let aad = header.associated_data();
    let ciphertext = XChaCha20Poly1305::new((&*key).into())
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: secret,
                aad: &aad,
            },
        )
        .map_err(|_| BackupError::Format("encryption failed".into()))?;
    let mut backup = Backup {
        header,
        pieces,
        nonce: hex::encode(nonce),
        ciphertext: base64::engine::general_purpose::STANDARD.encode(ciphertext),
        signature: String::new(),
    };
    backup.signature = hex::encode(sign(&backup.signed_digest()));
    Ok(backup)
}

/// What [`restore`] recovered.
pub struct Restored {
    /// The secret.
    pub secret: Zeroizing<Vec<u8>>,
    /// The officers whose pieces were used.
    pub officers: Vec<String>,
}

/// Restores the secret with officers' age identities (any number; each opens the pieces
/// encrypted to it). Needs the backup's threshold of distinct officers, and first a signature
/// that `verify` (given the party named in the backup, the digest and the signature) accepts.
pub fn restore(
    backup: &Backup,
    identities: &[age::x25519::Identity],
    verify: impl FnOnce(&str, &[u8; 32], &[u8]) -> bool,
) -> Result<Restored, BackupError> {
    let header = &backup.header;
    header.check()?;
    let party = &header.metadata.party;
    let signature =
        hex::decode(&backup.signature).map_err(|_| BackupError::BadSignature(party.clone()))?;
    if !verify(party, &backup.signed_digest(), &signature) {
        return Err(BackupError::BadSignature(party.clone()));
    }
    let mut opened = Vec::new();
    let mut shares: Vec<Zeroizing<Vec<u8>>> = Vec::new();
    for piece in &backup.pieces {
        if opened.contains(&piece.officer) {
            continue;
        }
        for identity in identities {
            if let Ok(plain) = age::decrypt(identity, piece.age.as_bytes()) {
                let plain = Zeroizing::new(plain);
                let share = format::parse_piece(&header.id, &plain)?;
                opened.push(piece.officer.clone());
                shares.push(share);
                break;
            }
        }
    }
    if opened.len() < usize::from(header.threshold) {
        let others = header
            .officers
            .iter()
            .map(|o| o.name.clone())
            .filter(|n| !opened.contains(n))
            .collect();
        return Err(BackupError::NotEnoughOfficers {
            needed: header.threshold,
            opened,
            others,
        });
    }
    let shares: Vec<Vec<u8>> = shares.iter().map(|s| s.to_vec()).collect();
    let shares = Zeroizing::new(shares);
    let key = Zeroizing::new(
        vsss_rs::Gf256::combine_bytes(&shares[..]).map_err(|_| BackupError::WrongPieces)?,
    );
    let expected = hex::decode(&header.key_commitment)
        .map_err(|_| BackupError::Format("key_commitment is not hex".into()))?;
    if key.len() != 32 || !bool::from(commitment(&key).ct_eq(&expected[..])) {
        return Err(BackupError::WrongPieces);
    }
    let nonce = hex::decode(&backup.nonce)
        .ok()
        .filter(|n| n.len() == 24)
        .ok_or_else(|| BackupError::Format("nonce is not 24 bytes of hex".into()))?;
    let ciphertext = base64::engine::general_purpose::STANDARD
        .decode(&backup.ciphertext)
        .map_err(|_| BackupError::Format("ciphertext is not base64".into()))?;
    let secret = XChaCha20Poly1305::new(key[..].into())
        .decrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: &ciphertext,
                aad: &header.associated_data(),
            },
        )
        .map_err(|_| BackupError::Tampered)?;
    Ok(Restored {
        secret: Zeroizing::new(secret),
        officers: opened,
    })
}

#[cfg(test)]
mod tests;
