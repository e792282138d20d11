//! `tessera backup` through the binary: a node's share backed up for three officers, restored
//! into a fresh store by two of them (and validated against the key), refused with one, and a
//! changed backup file refused.

use std::path::Path;
use std::sync::Arc;

use tessera_mpc::fixtures::insecure_committee_2of3;
use tessera_node::state::{KeyRecord, NodeState};
use tessera_store::{FileStore, KdfParams};
use tessera_wire::KeyId;

use crate::cli::{fails, ok, s};

const PASSPHRASE: &str = "a node store passphrase";

fn store(dir: &Path) -> NodeState<FileStore> {
    let store = FileStore::create(dir, PASSPHRASE.as_bytes(), KdfParams::MINIMUM).unwrap();
    NodeState::new(Arc::new(store))
}

fn open(dir: &Path) -> NodeState<FileStore> {
    NodeState::new(Arc::new(
        FileStore::open(dir, PASSPHRASE.as_bytes()).unwrap(),
    ))
}

fn refs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

#[test]
fn a_share_backed_up_for_three_officers_is_restored_by_two_and_not_by_one() {
    let dir = tempfile::tempdir().unwrap();
    let pass = dir.path().join("passphrase");
    std::fs::write(&pass, format!("{PASSPHRASE}\n")).unwrap();

    // p2's node holds its share of the fixture key.
    let fixture = insecure_committee_2of3();
    let mut parts = serde_json::to_value(&fixture.shares[1]).unwrap();
    let share: tessera_mpc::IncompleteKeyShare =
        serde_json::from_value(parts["core"].take()).unwrap();
    let aux: tessera_mpc::AuxInfo = serde_json::from_value(parts["aux"].take()).unwrap();
    let key = KeyId::random();
    let node = dir.path().join("p2-store");
    let state = store(&node);
    state.put_aux(&fixture.committee, &aux).unwrap();
    let record = KeyRecord {
        committee: fixture.committee.clone(),
        threshold: 2,
        share,
    };
    state.put_key(key, &record).unwrap();

    let mut officers = Vec::new();
    for name in ["ana", "bo", "cy"] {
        let file = dir.path().join(format!("{name}.key"));
        let public = ok(&["backup", "officer-key", "--out", s(&file)]);
        assert!(public.trim().starts_with("age1"), "{public}");
        officers.push(format!("{name}={}", public.trim()));
    }
    let backup = dir.path().join("p2.backup.json");
    let key_text = key.to_string();
    let mut create = vec![
        "backup",
        "create",
        "--store",
        s(&node),
        "--passphrase-file",
        s(&pass),
        "--key",
        &key_text,
        "--threshold",
        "2",
        "--out",
        s(&backup),
    ];
    for o in &officers {
        create.extend(["--officer", o.as_str()]);
    }
    let created = ok(&create);
    assert!(
        created.contains("any 2 of 3 officers (ana, bo, cy)"),
        "{created}"
    );
    let text = std::fs::read_to_string(&backup).unwrap();
    assert!(!text.contains(&hex::encode(serde_json::to_vec(&record.share).unwrap())));
    let shown = ok(&["backup", "inspect", s(&backup)]);
    assert!(
        shown.contains("p2 of key") && shown.contains("any 2 of 3 officers"),
        "{shown}"
    );

    // The replacement machine's fresh store.
    let fresh = dir.path().join("new-store");
    drop(store(&fresh));
    let restore = |backup: &Path, who: &[&str]| {
        let ids: Vec<String> = who
            .iter()
            .map(|n| dir.path().join(format!("{n}.key")).display().to_string())
            .collect();
        let mut args = vec![
            "backup".to_owned(),
            "restore".into(),
            backup.display().to_string(),
            "--store".into(),
            fresh.display().to_string(),
            "--passphrase-file".into(),
            pass.display().to_string(),
        ];
        for id in ids {
            args.extend(["--identity".into(), id]);
        }
        args
    };

    // One officer is not enough, and nothing is written.
    let one = restore(&backup, &["bo"]);
    let err = fails(&refs(&one));
    assert!(
        err.contains("2 officers are needed") && err.contains("only bo"),
        "{err}"
    );
    assert!(!open(&fresh).has_key(key).unwrap());

    // A changed byte in the encrypted share is refused.
    let mut value: serde_json::Value = serde_json::from_str(&text).unwrap();
    let c = value["ciphertext"].as_str().unwrap().to_owned();
    let flipped = if c.starts_with('A') { "B" } else { "A" };
    value["ciphertext"] = serde_json::json!(format!("{flipped}{}", &c[1..]));
    let tampered = dir.path().join("tampered.json");
    std::fs::write(&tampered, value.to_string()).unwrap();
    let args = restore(&tampered, &["ana", "cy"]);
    let err = fails(&refs(&args));
    assert!(err.contains("was changed or damaged"), "{err}");
    assert!(!open(&fresh).has_key(key).unwrap());

    // Two officers restore it; the node loads the same share with the key's public key.
    let args = restore(&backup, &["ana", "cy"]);
    let restored = ok(&refs(&args));
    assert!(restored.contains("with ana, cy"), "{restored}");
    let state = open(&fresh);
    let (loaded, _) = state.key_share(key).unwrap();
    assert_eq!(
        serde_json::to_value(&loaded.share).unwrap(),
        serde_json::to_value(&record.share).unwrap()
    );
    // Restoring over a key the store holds is refused.
    let err = fails(&refs(&args));
    assert!(err.contains("already holds key"), "{err}");
}
