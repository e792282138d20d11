//! Behaviour of the encrypted file store, including every kind of damage.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use sha2::{Digest, Sha256};
use tessera_store::{FileStore, KdfParams, RecordName, SecretStore, StoreError};

const PASS: &[u8] = b"correct horse battery staple";

fn name(s: &str) -> RecordName {
    RecordName::new(s).unwrap()
}

fn store(dir: &Path) -> FileStore {
    FileStore::create(dir, PASS, KdfParams::MINIMUM).unwrap()
}

fn record_path(dir: &Path, n: &str) -> PathBuf {
    dir.join(format!("{n}.rec"))
}

/// Reads `n`, expects an error, and checks the file on disk was left exactly as it was.
fn get_fails(s: &FileStore, dir: &Path, n: &str) -> StoreError {
    let path = record_path(dir, n);
    let before = fs::read(&path).ok();
    let err = s.get(&name(n)).expect_err("must fail");
    assert_eq!(
        fs::read(&path).ok(),
        before,
        "a failed read changed the file"
    );
    err
}

#[test]
fn round_trip_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("store");
    let s = store(&d);
    s.put(&name("key-share.1"), b"share bytes").unwrap();
    s.put(&name("aux-info"), &vec![7u8; 100_000]).unwrap();
    s.put(&name("empty"), b"").unwrap();
    assert_eq!(
        s.list().unwrap(),
        vec![name("aux-info"), name("empty"), name("key-share.1")]
    );
    drop(s);
    let s = FileStore::open(&d, PASS).unwrap();
    assert_eq!(
        s.get(&name("key-share.1")).unwrap().as_slice(),
        b"share bytes"
    );
    assert_eq!(s.get(&name("aux-info")).unwrap().len(), 100_000);
    assert_eq!(s.get(&name("empty")).unwrap().as_slice(), b"");
    // Replace, then delete.
    s.put(&name("key-share.1"), b"new").unwrap();
    assert_eq!(s.get(&name("key-share.1")).unwrap().as_slice(), b"new");
    s.delete(&name("key-share.1")).unwrap();
    assert!(!s.contains(&name("key-share.1")).unwrap());
    assert!(matches!(
        s.get(&name("key-share.1")),
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        s.delete(&name("key-share.1")),
        Err(StoreError::NotFound(_))
    ));
    // A lazy delete removes the record as well (without syncing the directory).
    s.delete_lazily(&name("empty")).unwrap();
    assert!(!s.contains(&name("empty")).unwrap());
    assert!(matches!(
        s.delete_lazily(&name("empty")),
        Err(StoreError::NotFound(_))
    ));
    // No temporary files are left behind.
    let stray: Vec<_> = fs::read_dir(&d)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp"))
        .collect();
    assert!(stray.is_empty());
}

#[test]
fn files_are_private() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("store");
    let s = store(&d);
    s.put(&name("share"), b"x").unwrap();
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&d), 0o700);
    assert_eq!(mode(&d.join("store.header")), 0o600);
    assert_eq!(mode(&record_path(&d, "share")), 0o600);
    // The secret does not appear in the clear on disk.
    let bytes = fs::read(record_path(&d, "share")).unwrap();
    s.put(&name("plain-check"), b"SECRET-MARKER-1234").unwrap();
    let bytes2 = fs::read(record_path(&d, "plain-check")).unwrap();
    assert!(!bytes2.windows(18).any(|w| w == b"SECRET-MARKER-1234"));
    assert!(!bytes.is_empty());
}

#[test]
fn wrong_passphrase_is_its_own_error() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("store");
    store(&d).put(&name("share"), b"x").unwrap();
    let header_before = fs::read(d.join("store.header")).unwrap();
    let err = FileStore::open(&d, b"wrong").unwrap_err();
    assert!(matches!(err, StoreError::WrongPassphrase(_)), "{err}");
    assert!(err.to_string().contains("wrong passphrase"));
    assert_eq!(fs::read(d.join("store.header")).unwrap(), header_before);
    FileStore::open(&d, PASS).unwrap();
}

#[test]
fn create_and_open_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("store");
    store(&d);
    assert!(matches!(
        FileStore::create(&d, PASS, KdfParams::MINIMUM),
        Err(StoreError::AlreadyExists(_))
    ));
    assert!(matches!(
        FileStore::open(&dir.path().join("none"), PASS),
        Err(StoreError::NoStore(_))
    ));
    let weak = KdfParams {
        m_cost: 16,
        t_cost: 1,
        p_cost: 1,
    };
    assert!(matches!(
        FileStore::create(&dir.path().join("weak"), PASS, weak),
        Err(StoreError::KdfParams(_))
    ));
    for bad in ["", ".hidden", "UPPER", "a/b", &"x".repeat(129)] {
        assert!(
            matches!(RecordName::new(bad), Err(StoreError::InvalidName(_))),
            "{bad}"
        );
    }
}

#[test]
fn a_flipped_byte_anywhere_in_a_record_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("store");
    let s = store(&d);
    s.put(&name("share"), b"the secret share").unwrap();
    let path = record_path(&d, "share");
    let original = fs::read(&path).unwrap();
    for i in 0..original.len() {
        let mut bytes = original.clone();
        bytes[i] ^= 0x10;
        fs::write(&path, &bytes).unwrap();
        let err = get_fails(&s, &d, "share");
        assert!(
            matches!(
                err,
                StoreError::Corrupt { .. } | StoreError::Truncated { .. }
            ),
            "byte {i}: {err}"
        );
    }
    fs::write(&path, &original).unwrap();
    assert_eq!(
        s.get(&name("share")).unwrap().as_slice(),
        b"the secret share"
    );
}

#[test]
fn truncated_files_are_reported_as_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("store");
    let s = store(&d);
    s.put(&name("share"), &[9u8; 1000]).unwrap();
    let path = record_path(&d, "share");
    let original = fs::read(&path).unwrap();
    for cut in [0, 5, 8, 40, original.len() / 2, original.len() - 1] {
        fs::write(&path, &original[..cut]).unwrap();
        let err = get_fails(&s, &d, "share");
        assert!(
            matches!(err, StoreError::Truncated { .. }),
            "cut at {cut}: {err}"
        );
        assert!(err.to_string().contains("restore it from a backup"));
    }
    let header = d.join("store.header");
    let h = fs::read(&header).unwrap();
    fs::write(&header, &h[..h.len() - 3]).unwrap();
    assert!(matches!(
        FileStore::open(&d, PASS),
        Err(StoreError::Truncated { .. })
    ));
    let mut flipped = h.clone();
    flipped[20] ^= 1;
    fs::write(&header, &flipped).unwrap();
    assert!(matches!(
        FileStore::open(&d, PASS),
        Err(StoreError::Corrupt { .. })
    ));
}

#[test]
fn a_record_moved_to_another_name_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("store");
    let s = store(&d);
    s.put(&name("share-a"), b"A").unwrap();
    s.put(&name("share-b"), b"B").unwrap();
    fs::copy(record_path(&d, "share-a"), record_path(&d, "share-b")).unwrap();
    let err = get_fails(&s, &d, "share-b");
    match err {
        StoreError::Moved {
            expected, found, ..
        } => {
            assert_eq!((expected.as_str(), found.as_str()), ("share-b", "share-a"))
        }
        other => panic!("{other}"),
    }
}

#[test]
fn a_record_from_another_store_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (d1, d2) = (dir.path().join("s1"), dir.path().join("s2"));
    let (s1, s2) = (store(&d1), store(&d2));
    s1.put(&name("share"), b"one").unwrap();
    s2.put(&name("share"), b"two").unwrap();
    fs::copy(record_path(&d1, "share"), record_path(&d2, "share")).unwrap();
    let err = get_fails(&s2, &d2, "share");
    assert!(matches!(err, StoreError::ForeignStore(_)), "{err}");
}

#[test]
fn a_forged_record_with_a_valid_checksum_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("store");
    let s = store(&d);
    s.put(&name("share"), b"the secret share").unwrap();
    let path = record_path(&d, "share");
    let mut bytes = fs::read(&path).unwrap();
    let body_len = bytes.len() - 32;
    bytes[body_len - 3] ^= 0xff; // inside the ciphertext
    let sum = Sha256::digest(&bytes[..body_len]);
    bytes[body_len..].copy_from_slice(&sum);
    fs::write(&path, &bytes).unwrap();
    let err = get_fails(&s, &d, "share");
    assert!(matches!(err, StoreError::Tampered(_)), "{err}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// Whatever bytes sit in a record file, reading it fails cleanly and never panics.
    #[test]
    fn arbitrary_record_files_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("store");
        let s = store(&d);
        fs::write(record_path(&d, "x"), &bytes).unwrap();
        prop_assert!(s.get(&name("x")).is_err());
    }
}

/// Rewrites the header's Argon2 parameters (offsets 10, 14 and 18) with a valid checksum, as
/// someone with write access to the disk could.
fn forge_kdf_params(header: &Path, params: KdfParams) {
    let mut h = fs::read(header).unwrap();
    h[10..14].copy_from_slice(&params.m_cost.to_be_bytes());
    h[14..18].copy_from_slice(&params.t_cost.to_be_bytes());
    h[18..22].copy_from_slice(&params.p_cost.to_be_bytes());
    let body = h.len() - 32;
    let sum = Sha256::digest(&h[..body]);
    h[body..].copy_from_slice(&sum);
    fs::write(header, h).unwrap();
}

#[test]
fn a_header_asking_for_absurd_key_derivation_costs_is_refused_before_deriving() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("store");
    store(&d).put(&name("share"), b"secret").unwrap();
    let header = d.join("store.header");
    let original = fs::read(&header).unwrap();
    let max = KdfParams::MAXIMUM;
    for params in [
        // 4 TiB of memory: allocating it would abort the process.
        KdfParams {
            m_cost: u32::MAX,
            ..KdfParams::MINIMUM
        },
        KdfParams {
            m_cost: max.m_cost + 1,
            ..KdfParams::MINIMUM
        },
        // Billions of passes: an unlock that never ends.
        KdfParams {
            t_cost: u32::MAX,
            ..KdfParams::MINIMUM
        },
        KdfParams {
            p_cost: max.p_cost + 1,
            ..KdfParams::MINIMUM
        },
        KdfParams {
            t_cost: 0,
            ..KdfParams::MINIMUM
        },
    ] {
        fs::write(&header, &original).unwrap();
        forge_kdf_params(&header, params);
        let err = FileStore::open(&d, PASS).expect_err("must refuse");
        assert!(
            matches!(err, StoreError::Corrupt { .. }),
            "{params:?}: {err}"
        );
        let text = err.to_string();
        assert!(text.contains("outside the accepted range"), "{text}");
        assert!(text.contains("restore it from a backup"), "{text}");
    }
    // Parameters in range but not the ones the store was made with: the derived key does not
    // unwrap the data key (the parameters are bound into it).
    fs::write(&header, &original).unwrap();
    forge_kdf_params(
        &header,
        KdfParams {
            t_cost: 2,
            ..KdfParams::MINIMUM
        },
    );
    assert!(matches!(
        FileStore::open(&d, PASS),
        Err(StoreError::WrongPassphrase(_))
    ));
    // The genuine header still opens.
    fs::write(&header, &original).unwrap();
    let s = FileStore::open(&d, PASS).unwrap();
    assert_eq!(&s.get(&name("share")).unwrap()[..], b"secret");
}

#[test]
fn creating_a_store_outside_the_accepted_costs_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    for params in [
        KdfParams {
            m_cost: KdfParams::MAXIMUM.m_cost * 2,
            ..KdfParams::MINIMUM
        },
        KdfParams {
            m_cost: 1024,
            ..KdfParams::MINIMUM
        },
    ] {
        let d = dir.path().join(format!("store-{}", params.m_cost));
        let err = FileStore::create(&d, PASS, params).expect_err("must refuse");
        assert!(matches!(err, StoreError::KdfParams(_)), "{err}");
        assert!(!d.join("store.header").exists());
    }
    assert!(KdfParams::default().in_range());
    assert!(KdfParams::MAXIMUM.in_range() && KdfParams::MINIMUM.in_range());
}
