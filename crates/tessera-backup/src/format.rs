//! The backup file: JSON, readable without any secret (who made it, for which key, which
//! officers, how many are needed), with the encrypted secret and one age-encrypted piece per
//! officer.

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::BackupError;

/// The format tag of this version (v2: bound to a key epoch and signed by the party).
pub const FORMAT: &str = "tessera-backup/v2";

/// What the backup holds, in the clear (no secret).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    /// The party whose share this is (`p1`).
    pub party: String,
    /// The key id.
    pub key: String,
    /// The key's public key (hex, compressed), to check the restored share against.
    pub public_key: String,
    /// The key's committee (`p1-p2-p3`) and threshold.
    pub committee: String,
    /// Signers needed.
    pub threshold: u16,
    /// The key's epoch the share belongs to (0 after key generation, one more after each
    /// refresh or reshare): a backup of an epoch that was replaced is stale.
    pub epoch: u64,
    /// Unix seconds when the backup was made.
    pub created_at: u64,
}

/// An officer as listed in the header.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OfficerEntry {
    /// The officer's name.
    pub name: String,
    /// Their age recipient (`age1…`).
    pub recipient: String,
}

/// The authenticated header.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    /// [`FORMAT`].
    pub format: String,
    /// Random id binding the pieces to this backup (32 hex digits).
    pub id: String,
    /// What the backup holds.
    pub metadata: Metadata,
    /// Officers needed to restore.
    pub threshold: u8,
    /// Every officer, in piece order.
    pub officers: Vec<OfficerEntry>,
    /// SHA-256 of a domain tag and the data key (hex): tells a wrong combination of pieces
    /// from the right one.
    pub key_commitment: String,
}

/// One officer's piece of the data key, age-encrypted (ASCII armor).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Piece {
    /// The officer it is encrypted to.
    pub officer: String,
    /// The age file.
    pub age: String,
}

/// A backup file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backup {
    /// The header, authenticated with the secret.
    pub header: Header,
    /// One piece per officer.
    pub pieces: Vec<Piece>,
    /// XChaCha20-Poly1305 nonce (hex).
    pub nonce: String,
    /// The encrypted secret (base64).
    pub ciphertext: String,
    /// The party's signature (hex) over [`Backup::signed_digest`]: who made the backup
    /// vouches for everything in it.
    pub signature: String,
}

/// The parts of a backup its party signs (everything but the signature), in file order.
#[derive(Serialize)]
struct Signed<'a> {
    header: &'a Header,
    pieces: &'a [Piece],
    nonce: &'a str,
    ciphertext: &'a str,
}

/// Domain separation of [`Backup::signed_digest`].
pub const SIGNATURE_LABEL: &[u8] = b"tessera/backup/v2/signature";

impl Header {
    /// The cipher's associated data: the header's JSON form.
    pub(crate) fn associated_data(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a header serializes")
    }

    pub(crate) fn check(&self) -> Result<(), BackupError> {
        if self.format != FORMAT {
            return Err(BackupError::Format(format!(
                "format {:?}; this version reads {FORMAT}",
                self.format
            )));
        }
        if self.threshold < 2 || usize::from(self.threshold) > self.officers.len() {
            return Err(BackupError::Format(format!(
                "threshold {} of {} officers",
                self.threshold,
                self.officers.len()
            )));
        }
        Ok(())
    }
}

impl Backup {
    /// What the party signs: SHA-256 of [`SIGNATURE_LABEL`] and the JSON of the header, the
    /// pieces, the nonce and the ciphertext.
    pub fn signed_digest(&self) -> [u8; 32] {
        use sha2::{Digest, Sha256};
        let body = serde_json::to_vec(&Signed {
            header: &self.header,
            pieces: &self.pieces,
            nonce: &self.nonce,
            ciphertext: &self.ciphertext,
        })
        .expect("a backup serializes");
        let mut h = Sha256::new();
        h.update(SIGNATURE_LABEL);
        h.update(body);
        h.finalize().into()
    }

    /// Parses a backup file.
    pub fn from_json(text: &str) -> Result<Self, BackupError> {
        serde_json::from_str(text).map_err(|e| BackupError::Format(e.to_string()))
    }

    /// The file form.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a backup serializes")
    }
}

/// What an officer's piece decrypts to: the backup id, so a piece of another backup is
/// refused, and the Shamir share (index byte first).
#[derive(Serialize, Deserialize)]
struct PiecePlaintext {
    backup: String,
    share: String,
}

pub(crate) fn piece_plaintext(id: &str, share: &[u8]) -> String {
    serde_json::to_string(&PiecePlaintext {
        backup: id.to_owned(),
        share: hex::encode(share),
    })
    .expect("a piece serializes")
}

pub(crate) fn parse_piece(id: &str, plain: &[u8]) -> Result<Zeroizing<Vec<u8>>, BackupError> {
    let piece: PiecePlaintext = serde_json::from_slice(plain)
        .map_err(|_| BackupError::Format("an officer's piece does not decode".into()))?;
    let share = Zeroizing::new(piece.share);
    if piece.backup != id {
        return Err(BackupError::WrongPieces);
    }
    hex::decode(share.as_bytes())
        .map(Zeroizing::new)
        .map_err(|_| BackupError::Format("an officer's piece does not decode".into()))
}
