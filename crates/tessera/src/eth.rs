//! Ethereum addresses and independent signature checks for the CLI's output.

use anyhow::{Context, Result};
use k256::ecdsa::signature::Verifier;
use sha3::{Digest, Keccak256};

/// The EIP-55 checksummed Ethereum address of a SEC1 public key.
pub fn ethereum_address(public_key: &[u8]) -> Result<String> {
    let key = k256::PublicKey::from_sec1_bytes(public_key).context("not a secp256k1 public key")?;
    let uncompressed = k256::elliptic_curve::sec1::ToEncodedPoint::to_encoded_point(&key, false);
    // Keccak-256 of the 64 coordinate bytes, without the 0x04 tag.
    let hash = Keccak256::digest(&uncompressed.as_bytes()[1..]);
    let address = hex::encode(&hash[12..]);
    let checksum = hex::encode(Keccak256::digest(address.as_bytes()));
    let mixed: String = address
        .chars()
        .zip(checksum.chars())
        .map(|(c, h)| {
            if c.is_ascii_alphabetic() && h >= '8' {
                c.to_ascii_uppercase()
            } else {
                c
            }
        })
        .collect();
    Ok(format!("0x{mixed}"))
}

/// Verifies `r || s` over SHA-256(`message`) against a SEC1 public key with `k256`.
pub fn verify_with_k256(public_key: &[u8], message: &[u8], signature: &[u8]) -> Result<()> {
    let key = k256::ecdsa::VerifyingKey::from_sec1_bytes(public_key)
        .context("not a secp256k1 public key")?;
    let sig = k256::ecdsa::Signature::from_slice(signature).context("not an r || s signature")?;
    key.verify(message, &sig)
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
