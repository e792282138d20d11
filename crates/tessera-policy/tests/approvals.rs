//! Approvals by Ed25519 and Ethereum principals.

use crate::common;

use alloy_primitives::keccak256;
use common::*;
use k256::ecdsa::SigningKey;
use sha2::{Digest, Sha256};
use tessera_policy::{Approval, PolicyError, PrincipalSignature, APPROVAL_LABEL};

fn digest() -> [u8; 32] {
    Sha256::digest(b"some request").into()
}

#[test]
fn approvals_by_both_key_types_verify_and_name_the_approver() {
    let policy = example();
    for name in ["bob", "carol"] {
        let approval = Approval::sign(&digest(), name, &key(name));
        let principal = approval.verify(&digest(), &policy).unwrap();
        assert_eq!(principal.name, name);
        let expected_len = if name == "carol" { 65 } else { 64 };
        assert_eq!(approval.signature.0.len(), expected_len);
    }
}

#[test]
fn tampered_misattributed_and_unknown_approvals_are_refused() {
    let policy = example();
    for name in ["bob", "carol"] {
        let approval = Approval::sign(&digest(), name, &key(name));
        // Another digest.
        let mut other = digest();
        other[0] ^= 0x80;
        assert!(matches!(
            approval.verify(&other, &policy),
            Err(PolicyError::BadApproval { ref approver, .. }) if approver == name
        ));
        // One byte of the signature changed.
        for i in [0, 31, 32, 63] {
            let mut tampered = approval.clone();
            tampered.signature.0[i] ^= 1;
            assert!(
                matches!(
                    tampered.verify(&digest(), &policy),
                    Err(PolicyError::BadApproval { .. })
                ),
                "{name} byte {i}"
            );
        }
        // Signed with someone else's key, claimed as `name`.
        for signer in ["alice", "erin"] {
            let forged = Approval::sign(&digest(), name, &key(signer));
            let err = forged.verify(&digest(), &policy).unwrap_err();
            assert!(
                matches!(err, PolicyError::BadApproval { ref approver, .. } if approver == name),
                "{err}"
            );
            assert!(err.to_string().contains(name));
        }
    }
    let stranger = Approval::sign(&digest(), "mallory", &key("bob"));
    assert!(matches!(
        stranger.verify(&digest(), &policy),
        Err(PolicyError::UnknownApprover(ref n)) if n == "mallory"
    ));
    let empty = Approval {
        approver: "bob".into(),
        signature: PrincipalSignature(vec![]),
    };
    let err = empty.verify(&digest(), &policy).unwrap_err().to_string();
    assert!(err.contains("64 bytes"), "{err}");
}

/// Signs like a wallet's `personal_sign` does, without going through `OperatorKey`.
fn wallet_sign(secret: &SigningKey, message: &[u8]) -> ([u8; 64], u8) {
    let mut prefixed = format!("\x19Ethereum Signed Message:\n{}", message.len()).into_bytes();
    prefixed.extend_from_slice(message);
    let hash = keccak256(&prefixed);
    let (sig, recid) = secret.sign_prehash_recoverable(hash.as_slice()).unwrap();
    (sig.to_bytes().into(), recid.to_byte())
}

#[test]
fn an_ethereum_approval_made_by_a_wallet_verifies() {
    let policy = example();
    let secret: [u8; 32] = Sha256::digest(b"tessera example carol").into();
    let carol = SigningKey::from_slice(&secret).unwrap();
    let message = [APPROVAL_LABEL, &digest()].concat();
    let (rs, parity) = wallet_sign(&carol, &message);
    let mut sig = rs.to_vec();
    sig.push(27 + parity);
    let approval = Approval {
        approver: "carol".into(),
        signature: PrincipalSignature(sig),
    };
    assert_eq!(approval.verify(&digest(), &policy).unwrap().name, "carol");
    // One form only: the same signature with v = 0/1 would be a second encoding of the
    // approval, and is refused with what to do.
    let mut raw_v = rs.to_vec();
    raw_v.push(parity);
    let err = Approval {
        approver: "carol".into(),
        signature: PrincipalSignature(raw_v),
    }
    .verify(&digest(), &policy)
    .unwrap_err()
    .to_string();
    assert!(err.contains("v = 27 or 28"), "{err}");
    // The other parity recovers another key; a v outside {27, 28} is refused.
    for v in [28 - parity, 1 - parity, 29, 2] {
        let mut sig = rs.to_vec();
        sig.push(v);
        let approval = Approval {
            approver: "carol".into(),
            signature: PrincipalSignature(sig),
        };
        assert!(approval.verify(&digest(), &policy).is_err(), "v = {v}");
    }
    // The same signature with high s (n - s) and the flipped parity is valid ECDSA, but
    // refused (EIP-2 malleability).
    let sig = k256::ecdsa::Signature::from_slice(&rs).unwrap();
    let high = k256::ecdsa::Signature::from_scalars(sig.r(), -sig.s()).unwrap();
    let mut bytes = high.to_bytes().to_vec();
    bytes.push(28 - parity);
    let approval = Approval {
        approver: "carol".into(),
        signature: PrincipalSignature(bytes),
    };
    let err = approval.verify(&digest(), &policy).unwrap_err().to_string();
    assert!(err.contains("high s"), "{err}");
}

#[test]
fn an_ed25519_approval_made_by_another_tool_verifies() {
    use ed25519_dalek::Signer;
    let policy = example();
    let secret: [u8; 32] = Sha256::digest(b"tessera example bob").into();
    let bob = ed25519_dalek::SigningKey::from_bytes(&secret);
    let sig = bob.sign(&[APPROVAL_LABEL, &digest()].concat());
    let approval = Approval {
        approver: "bob".into(),
        signature: PrincipalSignature(sig.to_bytes().to_vec()),
    };
    assert_eq!(approval.verify(&digest(), &policy).unwrap().name, "bob");
    // Without the label it is another message.
    let bare = Approval {
        approver: "bob".into(),
        signature: PrincipalSignature(bob.sign(&digest()).to_bytes().to_vec()),
    };
    assert!(bare.verify(&digest(), &policy).is_err());
}

#[test]
fn approvals_travel_as_json_and_postcard() {
    let approval = Approval::sign(&digest(), "carol", &key("carol"));
    let json = serde_json::to_value(&approval).unwrap();
    assert_eq!(json["approver"], "carol");
    assert_eq!(json["signature"], hex::encode(&approval.signature.0));
    let back: Approval = serde_json::from_value(json).unwrap();
    assert_eq!(back, approval);
    let bytes = tessera_wire::encode(&approval);
    let back: Approval = tessera_wire::decode(&bytes, 1024).unwrap();
    assert_eq!(back, approval);
}
