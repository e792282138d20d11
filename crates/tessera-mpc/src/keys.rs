//! The public key a chain sees, for a key of any kind, from public information alone.

use tessera_wire::KeyKind;

use crate::frost::{frost_child_public_key, Bitcoin, Ed25519};
use crate::MpcError;

/// The public key of the child at `path` of a key of `kind`, as its chain sees it, from the
/// key's public key as key generation reports it and its HD chain code: SEC1 compressed for
/// ECDSA, the x-only Taproot output key (BIP-341 key path, no script tree) for Taproot, the
/// 32-byte key for Ed25519. This is the form a PSBT's `signer` and a Solana sender take.
pub fn chain_public_key(
    kind: KeyKind,
    public_key: &[u8],
    chain_code: &[u8],
    path: &[u32],
) -> Result<Vec<u8>, MpcError> {
    match kind {
        KeyKind::Ecdsa if path.is_empty() => Ok(public_key.to_vec()),
        KeyKind::Ecdsa => crate::derive_child_public_key(public_key, chain_code, path),
        KeyKind::Taproot => frost_child_public_key::<Bitcoin>(public_key, chain_code, path),
        KeyKind::Ed25519 => frost_child_public_key::<Ed25519>(public_key, chain_code, path),
    }
}
