//! EIP-191 `personal_sign` signatures by Ethereum-address principals.

use k256::ecdsa::{RecoveryId, Signature, SigningKey, VerifyingKey};
use subtle::ConstantTimeEq;
use tessera_chain::{address, checksummed, personal_message_digest, Address};

use crate::PolicyError;

/// The digest an Ethereum principal signs for `label || message`.
pub(crate) fn digest(label: &[u8], message: &[u8]) -> [u8; 32] {
    personal_message_digest(&[label, message].concat())
}

/// Signs `label || message` as `personal_sign` does: 65 bytes `r || s || v`, low `s`,
/// `v` = 27 or 28.
pub(crate) fn sign(key: &SigningKey, label: &[u8], message: &[u8]) -> Vec<u8> {
    let digest = digest(label, message);
    // A 32-byte prehash is always accepted and RFC 6979 nonces never fail for a valid key;
    // an error here would be a bug in k256, not something an input can cause.
    let (signature, recovery) = key
        .sign_prehash_recoverable(&digest)
        .expect("ECDSA signing of a 32-byte prehash cannot fail");
    // k256 already returns low-s signatures; normalise anyway, flipping the parity with s.
    let (signature, odd) = match signature.normalize_s() {
        Some(low) => (low, !recovery.is_y_odd()),
        None => (signature, recovery.is_y_odd()),
    };
    let mut out = signature.to_bytes().to_vec();
    out.push(27 + u8::from(odd));
    out
}

/// Checks a 65-byte `r || s || v` signature over `label || message` by `expected`.
pub(crate) fn verify(
    expected: &Address,
    label: &[u8],
    message: &[u8],
    signature: &[u8],
) -> Result<(), PolicyError> {
    let bytes: &[u8; 65] = signature
        .try_into()
        .map_err(|_| PolicyError::SignatureLength {
            kind: "Ethereum",
            expected: 65,
            got: signature.len(),
        })?;
    let (rs, v) = bytes.split_at(64);
    // One form only, as personal_sign produces it: accepting 0/1 too would give every
    // approval a second encoding.
    let odd = match v {
        [27] => false,
        [28] => true,
        [v @ (0 | 1)] => {
            return Err(PolicyError::BadSignature(format!(
                "recovery byte v = {v}; only the personal_sign form is accepted: v = 27 or 28 \
                 (add 27)"
            )))
        }
        _ => {
            return Err(PolicyError::BadSignature(format!(
                "recovery byte v = {:?}; expected 27 or 28",
                v
            )))
        }
    };
    let sig = Signature::from_slice(rs).map_err(|_| {
        PolicyError::BadSignature("r or s is zero or not below the curve order".into())
    })?;
    if sig.normalize_s().is_some() {
        return Err(PolicyError::BadSignature(
            "high s: only low-s signatures are accepted (EIP-2)".into(),
        ));
    }
    let recovered = VerifyingKey::recover_from_prehash(
        &digest(label, message),
        &sig,
        RecoveryId::new(odd, false),
    )
    .map_err(|_| PolicyError::BadSignature("no public key recovers from it".into()))?;
    let recovered = address(recovered.to_encoded_point(false).as_bytes())?;
    if bool::from(recovered.ct_eq(expected)) {
        Ok(())
    } else {
        Err(PolicyError::BadSignature(format!(
            "it recovers to {} instead of {}",
            checksummed(&recovered),
            checksummed(expected)
        )))
    }
}
