//! Round trips with k and more officers, k-1 officers, strangers, every kind of tampering, and
//! signatures that are not the party's.

use age::secrecy::ExposeSecret;
use ed25519_dalek::{Signer, SigningKey, Verifier};

use super::*;

/// The party's signing key in these tests (its roster identity in real use).
fn party_key() -> SigningKey {
    SigningKey::from_bytes(&[7; 32])
}

fn sign(digest: &[u8; 32]) -> [u8; 64] {
    party_key().sign(digest).to_bytes()
}

/// Accepts p2's signature by [`party_key`], as a roster would.
fn verify(party: &str, digest: &[u8; 32], signature: &[u8]) -> bool {
    let Ok(signature) = ed25519_dalek::Signature::from_slice(signature) else {
        return false;
    };
    party == "p2"
        && party_key()
            .verifying_key()
            .verify(digest, &signature)
            .is_ok()
}

/// [`super::restore`] with the test party's verifier.
fn restore(backup: &Backup, ids: &[age::x25519::Identity]) -> Result<Restored, BackupError> {
    super::restore(backup, ids, verify)
}

/// `backup` signed again by the party after a change, so that only the check the change
/// targets can refuse it.
fn resigned(mut backup: Backup) -> Backup {
    backup.signature = hex::encode(sign(&backup.signed_digest()));
    backup
}

/// [`super::create`] signed by the test party.
fn create(
    secret: &[u8],
    metadata: Metadata,
    officers: &[Officer],
    threshold: u8,
) -> Result<Backup, BackupError> {
    super::create(secret, metadata, officers, threshold, sign)
}

const SECRET: &[u8] = b"a key share and its auxiliary info";

struct Officers {
    identities: Vec<age::x25519::Identity>,
    officers: Vec<Officer>,
}

fn officers(m: usize) -> Officers {
    let identities: Vec<_> = (0..m).map(|_| age::x25519::Identity::generate()).collect();
    let officers = identities
        .iter()
        .enumerate()
        .map(|(i, id)| Officer::parse(&format!("officer{i}={}", id.to_public())).unwrap())
        .collect();
    Officers {
        identities,
        officers,
    }
}

fn metadata() -> Metadata {
    Metadata {
        party: "p2".into(),
        key: "00112233445566778899aabbccddeeff".into(),
        public_key: "02".repeat(33),
        committee: "p1-p2-p3".into(),
        threshold: 2,
        epoch: 3,
        created_at: 1_800_000_000,
    }
}

fn pick(o: &Officers, which: &[usize]) -> Vec<age::x25519::Identity> {
    which.iter().map(|i| o.identities[*i].clone()).collect()
}

#[test]
fn any_three_of_five_officers_restore_and_the_file_round_trips() {
    let o = officers(5);
    let backup = create(SECRET, metadata(), &o.officers, 3).unwrap();
    let backup = Backup::from_json(&backup.to_json()).unwrap();
    assert!(
        !backup.to_json().contains("a key share"),
        "the secret is not in the clear"
    );
    for which in [vec![0, 2, 4], vec![1, 2, 3], vec![4, 3, 0, 1, 2]] {
        let restored = restore(&backup, &pick(&o, &which)).unwrap();
        assert_eq!(&restored.secret[..], SECRET);
        assert_eq!(restored.officers.len(), which.len());
    }
}

#[test]
fn two_of_three_needed_officers_fail_clearly() {
    let o = officers(5);
    let backup = create(SECRET, metadata(), &o.officers, 3).unwrap();
    let err = restore(&backup, &pick(&o, &[1, 3])).err().unwrap();
    match &err {
        BackupError::NotEnoughOfficers { needed, opened, .. } => {
            assert_eq!(*needed, 3);
            assert_eq!(opened, &["officer1", "officer3"]);
        }
        other => panic!("expected not enough officers, got {other}"),
    }
    let text = err.to_string();
    assert!(text.contains("3 officers are needed"), "{text}");
    assert!(
        text.contains("1 more of officer0, officer2, officer4"),
        "{text}"
    );
    // The same identity twice counts once.
    let twice = vec![
        o.identities[1].clone(),
        o.identities[1].clone(),
        o.identities[3].clone(),
    ];
    assert!(matches!(
        restore(&backup, &twice),
        Err(BackupError::NotEnoughOfficers { .. })
    ));
    // Strangers open nothing.
    let strangers = officers(3).identities;
    let err = restore(&backup, &strangers).err().unwrap();
    assert!(err.to_string().contains("none of the identities"), "{err}");
}

#[test]
fn a_changed_ciphertext_or_header_is_refused() {
    let o = officers(3);
    let backup = create(SECRET, metadata(), &o.officers, 2).unwrap();
    let ids = pick(&o, &[0, 2]);

    let mut changed = backup.clone();
    let mut bytes = base64::engine::general_purpose::STANDARD
        .decode(&changed.ciphertext)
        .unwrap();
    bytes[3] ^= 1;
    changed.ciphertext = base64::engine::general_purpose::STANDARD.encode(bytes);
    assert!(matches!(
        restore(&resigned(changed.clone()), &ids),
        Err(BackupError::Tampered)
    ));

    // The header is authenticated: claiming another key or party fails.
    let mut changed = backup.clone();
    changed.header.metadata.public_key = "03".repeat(33);
    assert!(matches!(
        restore(&resigned(changed.clone()), &ids),
        Err(BackupError::Tampered)
    ));
    // Claiming another party: its signature is checked against that party, and fails.
    let mut changed = backup.clone();
    changed.header.metadata.party = "p3".into();
    assert!(matches!(
        restore(&resigned(changed.clone()), &ids),
        Err(BackupError::BadSignature(_))
    ));

    let mut changed = backup.clone();
    changed.nonce = "00".repeat(24);
    assert!(matches!(
        restore(&resigned(changed.clone()), &ids),
        Err(BackupError::Tampered)
    ));

    // A piece edited inside its age file does not open.
    let mut changed = backup.clone();
    let armored = &mut changed.pieces[0].age;
    let mid = armored.len() / 2;
    let flipped = if armored.as_bytes()[mid] == b'A' {
        "B"
    } else {
        "A"
    };
    armored.replace_range(mid..mid + 1, flipped);
    assert!(matches!(
        restore(&resigned(changed.clone()), &ids),
        Err(BackupError::NotEnoughOfficers { .. })
    ));
}

#[test]
fn a_lowered_threshold_or_pieces_of_another_backup_do_not_give_a_key() {
    let o = officers(5);
    let backup = create(SECRET, metadata(), &o.officers, 3).unwrap();
    // Two pieces of a 3-of-5 split combine to a wrong key: the commitment catches it.
    let mut lowered = backup.clone();
    lowered.header.threshold = 2;
    assert!(matches!(
        restore(&resigned(lowered.clone()), &pick(&o, &[0, 1])),
        Err(BackupError::WrongPieces)
    ));
    // A piece moved in from another backup of the same officers is refused.
    let other = create(SECRET, metadata(), &o.officers, 3).unwrap();
    let mut mixed = backup.clone();
    mixed.pieces[0] = other.pieces[0].clone();
    assert!(matches!(
        restore(&resigned(mixed.clone()), &pick(&o, &[0, 1, 2])),
        Err(BackupError::WrongPieces)
    ));
}

#[test]
fn officer_lists_that_cannot_work_are_refused() {
    let o = officers(3);
    for (list, k) in [
        (&o.officers[..1], 1),
        (&o.officers[..], 1),
        (&o.officers[..], 4),
    ] {
        assert!(matches!(
            create(SECRET, metadata(), list, k),
            Err(BackupError::Officers(_))
        ));
    }
    let mut twice = o.officers.clone();
    twice[2] = twice[0].clone();
    twice[2].name = "someone-else".into();
    assert!(matches!(
        create(SECRET, metadata(), &twice, 2),
        Err(BackupError::Officers(_))
    ));
    for bad in ["alice", "alice=age1nope", "bad name=age1x", "=age1x"] {
        assert!(Officer::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn identity_files_and_backup_files_are_parsed_strictly() {
    let id = age::x25519::Identity::generate();
    let file = format!(
        "# created: today\n# public key: {}\n{}\n",
        id.to_public(),
        id.to_string().expose_secret()
    );
    let parsed = parse_identities(&file).unwrap();
    assert_eq!(
        parsed[0].to_public().to_string(),
        id.to_public().to_string()
    );
    assert!(parse_identities("# nothing\n").is_err());
    assert!(parse_identities("AGE-SECRET-KEY-1NOTAKEY").is_err());

    let o = officers(2);
    let backup = create(SECRET, metadata(), &o.officers, 2).unwrap();
    let mut value: serde_json::Value = serde_json::from_str(&backup.to_json()).unwrap();
    value["extra"] = serde_json::json!(1);
    assert!(Backup::from_json(&value.to_string()).is_err());
    let mut value: serde_json::Value = serde_json::from_str(&backup.to_json()).unwrap();
    value["header"]["format"] = serde_json::json!("tessera-backup/v9");
    let future = Backup::from_json(&value.to_string()).unwrap();
    assert!(matches!(
        restore(&future, &o.identities),
        Err(BackupError::Format(_))
    ));
    assert!(Backup::from_json("{not json").is_err());
}

#[test]
fn a_backup_not_signed_by_its_party_or_changed_after_signing_is_refused() {
    let o = officers(3);
    let backup = create(SECRET, metadata(), &o.officers, 2).unwrap();
    let ids = pick(&o, &[0, 1]);
    assert_eq!(&restore(&backup, &ids).unwrap().secret[..], SECRET);
    // Signed by someone else's key.
    let forged = super::create(SECRET, metadata(), &o.officers, 2, |d| {
        SigningKey::from_bytes(&[8; 32]).sign(d).to_bytes()
    })
    .unwrap();
    // The epoch changed after signing (the cipher's associated data catches it too, but the
    // signature is checked first), the signature cut, or missing.
    let mut relabelled = backup.clone();
    relabelled.header.metadata.epoch = 4;
    let mut cut = backup.clone();
    cut.signature.truncate(10);
    let mut unsigned = backup.clone();
    unsigned.signature.clear();
    for bad in [forged, relabelled, cut, unsigned] {
        let err = restore(&bad, &ids).err().unwrap();
        assert!(
            matches!(err, BackupError::BadSignature(ref p) if p == "p2"),
            "{err}"
        );
        assert!(err.to_string().contains("not p2's"), "{err}");
    }
}
