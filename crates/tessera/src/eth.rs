//! Ethereum addresses and independent signature checks for the CLI's output.

use anyhow::{Context, Result};
use k256::ecdsa::signature::hazmat::PrehashVerifier;

/// The EIP-55 checksummed Ethereum address of a SEC1 public key.
pub fn ethereum_address(public_key: &[u8]) -> Result<String> {
    let address = tessera_chain::address(public_key).context("not a secp256k1 public key")?;
    Ok(tessera_chain::checksummed(&address))
}

/// Verifies `r || s` over a 32-byte digest against a SEC1 public key with `k256`.
pub fn verify_with_k256(public_key: &[u8], digest: &[u8; 32], signature: &[u8]) -> Result<()> {
    let key = k256::ecdsa::VerifyingKey::from_sec1_bytes(public_key)
        .context("not a secp256k1 public key")?;
    let sig = k256::ecdsa::Signature::from_slice(signature).context("not an r || s signature")?;
    key.verify_prehash(digest, &sig)
        .context("the signature does not verify against the public key")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_of_a_known_key() {
        // The key of private scalar 1 (the generator): a well-known address.
        let g = k256::ProjectivePoint::GENERATOR.to_affine();
        let bytes = k256::EncodedPoint::from(g);
        assert_eq!(
            ethereum_address(bytes.as_bytes()).unwrap(),
            "0x7E5F4552091A69125d5DfCb7b8C2659029395Bdf"
        );
        assert!(ethereum_address(b"junk").is_err());
    }
}
