//! `tessera backup` through the binary: a node's share backed up for three officers and signed
//! by the party, restored into a fresh store by two of them (and validated against the key),
//! refused with one, refused when changed or signed by anyone else, and refused when the key
//! has moved past the backup's epoch unless overridden (which the node's audit log records).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tessera_channel::identity::PartyIdentity;
use tessera_channel::{Roster, SignedRoster};
use tessera_control::EpochReport;
use tessera_mpc::fixtures::insecure_committee_2of3;
use tessera_mpc::reshare::Kind;
use tessera_node::state::{KeyRecord, NodeState, ReshareRecord};
use tessera_store::{FileStore, KdfParams, RecordName, SecretStore};
use tessera_wire::{ClusterId, KeyId, PartyId, SessionId};

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

/// Identities of p1 to p3 and their roster, written to `dir` (`p2.identity.json`,
/// `roster.json`); returns the roster file.
fn identities(dir: &Path, name: &str) -> PathBuf {
    let cluster = ClusterId::new("backup-test").unwrap();
    let ids: Vec<PartyIdentity> = (1..=3)
        .map(|p| PartyIdentity::generate(PartyId(p), cluster.clone(), None))
        .collect();
    let publics: Vec<_> = ids.iter().map(|i| i.public(None)).collect();
    let roster = Roster::build(cluster, 1, &publics).unwrap();
    for id in &ids {
        std::fs::write(
            dir.join(format!("{name}-{}.identity.json", id.party())),
            id.to_json().as_bytes(),
        )
        .unwrap();
    }
    let file = dir.join(format!("{name}-roster.json"));
    std::fs::write(&file, SignedRoster::new(roster).to_json()).unwrap();
    file
}

/// A node configuration for p2 over `store`, with its identity and roster, writing its audit
/// log next to it.
fn node_config(dir: &Path, store: &Path, pass: &Path) -> PathBuf {
    let file = dir.join("p2-node.toml");
    std::fs::write(
        &file,
        format!(
            "identity = \"{}\"\nroster = \"{}\"\nroster_pin = \"{pin}\"\npolicy = \"policy.toml\"\n\
             policy_pin = \"{pin}\"\nstore = \"{}\"\npassphrase_file = \"{}\"\n\n[nats]\n\
             url = \"tls://127.0.0.1:4222\"\nca = \"ca.pem\"\ncert = \"cert.pem\"\nkey = \"key.pem\"\n",
            dir.join("real-p2.identity.json").display(),
            dir.join("real-roster.json").display(),
            store.display(),
            pass.display(),
            pin = "00".repeat(32),
        ),
    )
    .unwrap();
    file
}

#[test]
fn a_share_backed_up_for_three_officers_is_restored_by_two_and_not_by_one() {
    let dir = tempfile::tempdir().unwrap();
    let pass = dir.path().join("passphrase");
    std::fs::write(&pass, format!("{PASSPHRASE}\n")).unwrap();
    let roster = identities(dir.path(), "real");
    let other_roster = identities(dir.path(), "other");
    let identity = dir.path().join("real-p2.identity.json");

    // p2's node holds its share of the fixture key, epoch 0.
    let fixture = insecure_committee_2of3();
    let mut parts = serde_json::to_value(&fixture.shares[1]).unwrap();
    let share: tessera_mpc::IncompleteKeyShare =
        serde_json::from_value(parts["core"].take()).unwrap();
    let aux: tessera_mpc::AuxInfo = serde_json::from_value(parts["aux"].take()).unwrap();
    let key = KeyId::random();
    let node = dir.path().join("p2-store");
    let state = store(&node);
    let record = KeyRecord {
        committee: fixture.committee.clone(),
        threshold: 2,
        epoch: 0,
        kind: tessera_wire::KeyKind::Ecdsa,
        share: tessera_node::state::StoredShare::Secp256k1(share),
        aux: Some(aux),
    };
    state.put_key(key, &record).unwrap();

    let mut officers = Vec::new();
    for name in ["ana", "bo", "cy"] {
        let file = dir.path().join(format!("{name}.key"));
        let public = ok(&["backup", "officer-key", "--out", s(&file)]);
        assert!(public.trim().starts_with("age1"), "{public}");
        officers.push(format!("{name}={}", public.trim()));
    }
    let key_text = key.to_string();
    let create = |out: &Path, identity: &Path| {
        let mut args = vec![
            "backup".to_owned(),
            "create".into(),
            "--store".into(),
            node.display().to_string(),
            "--passphrase-file".into(),
            pass.display().to_string(),
            "--identity".into(),
            identity.display().to_string(),
            "--key".into(),
            key_text.clone(),
            "--threshold".into(),
            "2".into(),
            "--out".into(),
            out.display().to_string(),
        ];
        for o in &officers {
            args.extend(["--officer".into(), o.clone()]);
        }
        args
    };
    // Made with p3's identity: refused (a backup is signed by the party whose share it is).
    let wrong = dir.path().join("wrong.backup.json");
    let err = fails(&refs(&create(
        &wrong,
        &dir.path().join("real-p3.identity.json"),
    )));
    assert!(err.contains("the identity is p3's"), "{err}");
    let backup = dir.path().join("p2.backup.json");
    let created = ok(&refs(&create(&backup, &identity)));
    assert!(
        created.contains("(epoch 0)")
            && created.contains("signed by p2")
            && created.contains("any 2 of 3 officers (ana, bo, cy)"),
        "{created}"
    );
    let text = std::fs::read_to_string(&backup).unwrap();
    assert!(!text.contains(&hex::encode(serde_json::to_vec(&record.share).unwrap())));
    let shown = ok(&["backup", "inspect", s(&backup), "--roster", s(&roster)]);
    assert!(
        shown.contains("p2 of key")
            && shown.contains("epoch 0")
            && shown.contains("checked against the roster")
            && shown.contains("any 2 of 3 officers"),
        "{shown}"
    );
    let err = fails(&[
        "backup",
        "inspect",
        s(&backup),
        "--roster",
        s(&other_roster),
    ]);
    assert!(err.contains("not p2's by this roster"), "{err}");

    // The replacement machine's fresh store.
    let fresh = dir.path().join("new-store");
    drop(store(&fresh));
    let restore = |backup: &Path, who: &[&str], roster: &Path, extra: &[&str]| {
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
            "--roster".into(),
            roster.display().to_string(),
        ];
        for id in ids {
            args.extend(["--identity".into(), id]);
        }
        args.extend(extra.iter().map(|e| e.to_string()));
        args
    };

    // One officer is not enough, and nothing is written.
    let one = restore(&backup, &["bo"], &roster, &[]);
    let err = fails(&refs(&one));
    assert!(
        err.contains("2 officers are needed") && err.contains("only bo"),
        "{err}"
    );
    assert!(!open(&fresh).has_key(key).unwrap());

    // A changed byte anywhere, or a roster in which p2 has another key, fails the party's
    // signature before anything is opened.
    let mut value: serde_json::Value = serde_json::from_str(&text).unwrap();
    let c = value["ciphertext"].as_str().unwrap().to_owned();
    let flipped = if c.starts_with('A') { "B" } else { "A" };
    value["ciphertext"] = serde_json::json!(format!("{flipped}{}", &c[1..]));
    let tampered = dir.path().join("tampered.json");
    std::fs::write(&tampered, value.to_string()).unwrap();
    for (file, roster) in [(&tampered, &roster), (&backup, &other_roster)] {
        let err = fails(&refs(&restore(file, &["ana", "cy"], roster, &[])));
        assert!(err.contains("signature is not p2's"), "{err}");
    }
    assert!(!open(&fresh).has_key(key).unwrap());

    // The key has moved on (epoch 1, as a coordinator or `tessera key show` says): the
    // backup of epoch 0 is stale, listed as such and refused.
    let listed = ok(&["backup", "list", s(&backup), "--current-epoch", "1"]);
    assert!(
        listed.contains("epoch 0") && listed.contains("STALE"),
        "{listed}"
    );
    let listed = ok(&["backup", "list", s(&backup), "--current-epoch", "0"]);
    assert!(listed.contains("current"), "{listed}");
    let err = fails(&refs(&restore(
        &backup,
        &["ana", "cy"],
        &roster,
        &["--current-epoch", "1"],
    )));
    assert!(
        err.contains("holds epoch 0")
            && err.contains("at epoch 1")
            && err.contains("--allow-superseded"),
        "{err}"
    );
    assert!(!open(&fresh).has_key(key).unwrap());
    // The override needs the node's configuration, to record it in the node's audit log.
    let err = fails(&refs(&restore(
        &backup,
        &["ana", "cy"],
        &roster,
        &["--current-epoch", "1", "--allow-superseded"],
    )));
    assert!(err.contains("--config"), "{err}");

    // Two officers restore it; the node loads the same share with the key's public key.
    let args = restore(&backup, &["ana", "cy"], &roster, &["--current-epoch", "0"]);
    let restored = ok(&refs(&args));
    assert!(
        restored.contains("with ana, cy") && restored.contains("epoch 0"),
        "{restored}"
    );
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

#[test]
fn a_store_that_saw_the_epoch_replaced_refuses_it_and_the_override_is_audited() {
    let dir = tempfile::tempdir().unwrap();
    let pass = dir.path().join("passphrase");
    std::fs::write(&pass, format!("{PASSPHRASE}\n")).unwrap();
    identities(dir.path(), "real");
    let fixture = insecure_committee_2of3();
    let mut parts = serde_json::to_value(&fixture.shares[1]).unwrap();
    let share: tessera_mpc::IncompleteKeyShare =
        serde_json::from_value(parts["core"].take()).unwrap();
    let aux: tessera_mpc::AuxInfo = serde_json::from_value(parts["aux"].take()).unwrap();
    let key = KeyId::random();
    let node = dir.path().join("p2-store");
    store(&node)
        .put_key(
            key,
            &KeyRecord {
                committee: fixture.committee.clone(),
                threshold: 2,
                epoch: 0,
                kind: tessera_wire::KeyKind::Ecdsa,
                share: tessera_node::state::StoredShare::Secp256k1(share),
                aux: Some(aux),
            },
        )
        .unwrap();
    let officer = dir.path().join("ana.key");
    let officer2 = dir.path().join("bo.key");
    let ana = ok(&["backup", "officer-key", "--out", s(&officer)]);
    let bo = ok(&["backup", "officer-key", "--out", s(&officer2)]);
    let backup = dir.path().join("p2.backup.json");
    let config = node_config(dir.path(), &node, &pass);
    ok(&[
        "backup",
        "create",
        "--config",
        s(&config),
        "--key",
        &key.to_string(),
        "--threshold",
        "2",
        "--officer",
        &format!("ana={}", ana.trim()),
        "--officer",
        &format!("bo={}", bo.trim()),
        "--out",
        s(&backup),
    ]);

    // The node's store now knows epoch 0 was replaced (its reshare record says so) and holds
    // no share of the key: restoring the epoch-0 backup into it is refused without being told
    // the current epoch.
    let state = open(&node);
    state
        .store()
        .delete(&RecordName::new(format!("key.{key}")).unwrap())
        .unwrap();
    let session = SessionId::random();
    let report = EpochReport {
        key,
        reshare: session,
        kind: Kind::Refresh,
        from_epoch: 0,
        old_committee: fixture.committee.clone(),
        dealers: fixture.committee.clone(),
        new_committee: fixture.committee.clone(),
        new_threshold: 2,
        public_key: vec![2; 33],
        confirmation: [1; 32],
        authorisation: [0; 32],
        aux: None,
    };
    state
        .store()
        .put(
            &RecordName::new(format!("reshare.{key}.{session}")).unwrap(),
            &serde_json::to_vec(&ReshareRecord::Closed { report }).unwrap(),
        )
        .unwrap();
    let restore = |extra: &[&str]| {
        let mut args = vec![
            "backup".to_owned(),
            "restore".into(),
            backup.display().to_string(),
            "--config".into(),
            config.display().to_string(),
            "--identity".into(),
            officer.display().to_string(),
            "--identity".into(),
            officer2.display().to_string(),
        ];
        args.extend(extra.iter().map(|e| e.to_string()));
        args
    };
    let err = fails(&refs(&restore(&[])));
    assert!(err.contains("at epoch 1"), "{err}");
    assert!(!open(&node).has_key(key).unwrap());

    // Disaster recovery: restored on purpose, and the node's audit log says so.
    let out = ok(&refs(&restore(&["--allow-superseded"])));
    assert!(out.contains("restored p2's share"), "{out}");
    assert!(open(&node).has_key(key).unwrap());
    let log = dir.path().join("p2.audit.jsonl");
    let actions: Vec<String> = tessera_audit::file::read(&log)
        .unwrap()
        .into_iter()
        .map(|r| r.unwrap().action)
        .collect();
    assert_eq!(actions, ["backup.restored_superseded"]);
}
