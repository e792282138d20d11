//! Ethereum addresses of secp256k1 keys.

use alloy_primitives::keccak256;
use k256::elliptic_curve::sec1::ToEncodedPoint;

use crate::ChainError;

/// A 20-byte Ethereum address.
pub type Address = [u8; 20];

/// The address of a SEC1 public key (compressed or not): the last 20 bytes of the Keccak-256
/// of the uncompressed point's coordinates.
pub fn address(public_key: &[u8]) -> Result<Address, ChainError> {
    let key = k256::PublicKey::from_sec1_bytes(public_key).map_err(|_| ChainError::BadPublicKey)?;
    let point = key.to_encoded_point(false);
    let hash = keccak256(&point.as_bytes()[1..]);
    let mut out = [0u8; 20];
    out.copy_from_slice(&hash[12..]);
    Ok(out)
}

/// The EIP-55 mixed-case checksummed form, `0x…`.
pub fn checksummed(address: &Address) -> String {
    let lower = hex::encode(address);
    let hash = hex::encode(keccak256(lower.as_bytes()));
    let mixed: String = lower
        .chars()
        .zip(hash.chars())
        .map(|(c, h)| {
            if c.is_ascii_alphabetic() && h >= '8' {
                c.to_ascii_uppercase()
            } else {
                c
            }
        })
        .collect();
    format!("0x{mixed}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generators_address_is_the_well_known_one() {
        // Private key 1: its public key is the generator.
        let g = k256::ProjectivePoint::GENERATOR
            .to_affine()
            .to_encoded_point(true);
        let a = address(g.as_bytes()).unwrap();
        assert_eq!(
            checksummed(&a),
            "0x7E5F4552091A69125d5DfCb7b8C2659029395Bdf"
        );
        let uncompressed = k256::ProjectivePoint::GENERATOR
            .to_affine()
            .to_encoded_point(false);
        assert_eq!(address(uncompressed.as_bytes()).unwrap(), a);
        assert_eq!(address(b"junk"), Err(ChainError::BadPublicKey));
    }
}
