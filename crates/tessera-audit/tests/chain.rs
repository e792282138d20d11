//! The hash chain and its verification: round trips, restarts, torn tails, and every kind of
//! tampering (deleting, reordering, editing any byte, inserting, forging) caught at the event
//! where it happened.

use std::fs;
use std::path::{Path, PathBuf};

use tessera_audit::file;
use tessera_audit::{
    AuditLog, AuditRecord, BrokenReason, Emitter, Filter, LogOptions, NewEvent, TrustedKeys,
    Verifier,
};
use tessera_channel::identity::{CoordinatorKey, PartyIdentity};
use tessera_channel::Roster;
use tessera_wire::{ClusterId, PartyId};

struct Setup {
    dir: tempfile::TempDir,
    roster: Roster,
    cluster: ClusterId,
}

impl Setup {
    fn new() -> Self {
        let cluster: ClusterId = "audit-test".parse().unwrap();
        let identities: Vec<PartyIdentity> = (1..=3)
            .map(|i| PartyIdentity::generate(PartyId(i), cluster.clone(), None))
            .collect();
        let coordinator = CoordinatorKey::generate("coord", cluster.clone(), None).unwrap();
        let public: Vec<_> = identities.iter().map(|i| i.public(None)).collect();
        let roster = Roster::build(cluster.clone(), 1, &public)
            .unwrap()
            .with_coordinators(vec![coordinator.public(None)])
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        // Keep the secret keys on disk so each test can reopen logs as the same emitter.
        for identity in &identities {
            fs::write(
                dir.path().join(format!("{}.id", identity.party())),
                identity.to_json().as_bytes(),
            )
            .unwrap();
        }
        fs::write(
            dir.path().join("coord.key"),
            coordinator.to_json().as_bytes(),
        )
        .unwrap();
        Setup {
            dir,
            roster,
            cluster,
        }
    }

    fn party(&self, i: u16) -> Box<PartyIdentity> {
        let text = fs::read_to_string(self.dir.path().join(format!("p{i}.id"))).unwrap();
        Box::new(PartyIdentity::from_json(&text).unwrap())
    }

    fn coordinator(&self) -> Box<CoordinatorKey> {
        let text = fs::read_to_string(self.dir.path().join("coord.key")).unwrap();
        Box::new(CoordinatorKey::from_json(&text).unwrap())
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn open(&self, signer: Box<dyn tessera_audit::AuditSigner>, name: &str) -> AuditLog {
        AuditLog::open(
            signer,
            LogOptions {
                file: Some(self.path(name)),
                ..Default::default()
            },
        )
        .unwrap()
    }

    fn keys(&self) -> TrustedKeys {
        TrustedKeys::from_roster(&self.roster).unwrap()
    }

    fn verify(&self, path: &Path) -> Result<tessera_audit::Summary, tessera_audit::Broken> {
        Verifier::verify_all(self.keys(), file::read(path).unwrap())
    }
}

fn event(i: usize) -> NewEvent {
    NewEvent::new("olivia", "request.submitted", format!("request:r-{i}"))
        .detail("key", "treasury")
        .detail("amount_wei", 1000 + i)
}

/// A log of `n` events by party 1.
fn log_of(setup: &Setup, n: usize) -> PathBuf {
    let log = setup.open(setup.party(1), "p1.log");
    for i in 0..n {
        log.record(event(i)).unwrap();
    }
    setup.path("p1.log")
}

fn lines(path: &Path) -> Vec<String> {
    fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn write_lines(path: &Path, lines: &[String]) {
    let mut text = lines.join("\n");
    text.push('\n');
    fs::write(path, text).unwrap();
}

#[test]
fn a_written_log_verifies_with_one_chain_per_emitter() {
    let setup = Setup::new();
    let path = log_of(&setup, 5);
    let summary = setup.verify(&path).unwrap();
    assert_eq!(summary.events, 5);
    let chain = &summary.chains[&Emitter::Party(PartyId(1))];
    assert_eq!(chain.last_seq, 5);
    let last = AuditRecord::from_json(lines(&path).last().unwrap()).unwrap();
    assert_eq!(chain.head, last.hash);
}

#[test]
fn a_restarted_emitter_continues_its_chain() {
    let setup = Setup::new();
    let path = log_of(&setup, 3);
    let log = setup.open(setup.party(1), "p1.log");
    assert_eq!(log.next_seq(), 4);
    log.record(NewEvent::new("system", "node.started", "node:p1"))
        .unwrap();
    drop(log);
    let summary = setup.verify(&path).unwrap();
    assert_eq!(summary.events, 4);
    assert_eq!(summary.chains[&Emitter::Party(PartyId(1))].last_seq, 4);
}

#[test]
fn another_emitters_file_is_not_continued() {
    let setup = Setup::new();
    log_of(&setup, 2);
    let error = AuditLog::open(
        setup.party(2),
        LogOptions {
            file: Some(setup.path("p1.log")),
            ..Default::default()
        },
    )
    .err()
    .expect("p2 must not continue p1's chain");
    assert!(error.to_string().contains("written by p1"), "{error}");
}

#[test]
fn a_partial_last_line_is_cut_off_and_recorded() {
    let setup = Setup::new();
    let path = log_of(&setup, 2);
    let mut bytes = fs::read(&path).unwrap();
    bytes.extend_from_slice(b"{\"seq\":3,\"time\":17");
    fs::write(&path, bytes).unwrap();
    let log = setup.open(setup.party(1), "p1.log");
    assert_eq!(
        log.next_seq(),
        4,
        "the torn record is replaced by a note of it"
    );
    drop(log);
    let records: Vec<AuditRecord> = file::read(&path)
        .unwrap()
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(records[2].action, "audit.torn_tail_discarded");
    assert_eq!(records[2].details["bytes"], "18");
    setup.verify(&path).unwrap();
}

#[test]
fn deleting_an_event_fails_at_the_next_one() {
    let setup = Setup::new();
    let path = log_of(&setup, 5);
    let mut all = lines(&path);
    all.remove(2);
    write_lines(&path, &all);
    let broken = setup.verify(&path).unwrap_err();
    assert_eq!(broken.position, 3);
    assert_eq!(broken.seq, Some(4));
    assert_eq!(broken.reason, BrokenReason::SequenceGap { expected: 3 });
}

#[test]
fn reordering_events_fails_at_the_first_moved_one() {
    let setup = Setup::new();
    let path = log_of(&setup, 5);
    let mut all = lines(&path);
    all.swap(1, 3);
    write_lines(&path, &all);
    let broken = setup.verify(&path).unwrap_err();
    assert_eq!(broken.position, 2);
    assert_eq!(broken.seq, Some(4));
    assert!(matches!(
        broken.reason,
        BrokenReason::SequenceGap { expected: 2 }
    ));
}

#[test]
fn changing_any_single_byte_fails_at_that_event() {
    let setup = Setup::new();
    let path = log_of(&setup, 3);
    let original = fs::read(&path).unwrap();
    let mut line = 1;
    for at in 0..original.len() {
        let mut bytes = original.clone();
        // A different printable byte (never the same one).
        bytes[at] = if bytes[at] == b'7' { b'8' } else { b'7' };
        fs::write(&path, &bytes).unwrap();
        let broken = setup
            .verify(&path)
            .expect_err(&format!("changing byte {at} must break the log"));
        // A changed newline merges two lines: the break is then at the first of them.
        assert_eq!(broken.position, line, "byte {at}: {broken}");
        if original[at] == b'\n' {
            line += 1;
        }
    }
}

#[test]
fn an_edited_field_is_a_hash_mismatch() {
    let setup = Setup::new();
    let path = log_of(&setup, 3);
    let mut all = lines(&path);
    let mut record = AuditRecord::from_json(&all[1]).unwrap();
    record.actor = "mallory".into();
    all[1] = record.to_json_line();
    write_lines(&path, &all);
    let broken = setup.verify(&path).unwrap_err();
    assert_eq!(broken.position, 2);
    assert!(matches!(broken.reason, BrokenReason::HashMismatch { .. }));
}

#[test]
fn an_edited_field_with_its_hash_recomputed_is_a_bad_signature() {
    let setup = Setup::new();
    let path = log_of(&setup, 3);
    let mut all = lines(&path);
    let mut record = AuditRecord::from_json(&all[1]).unwrap();
    record.details.insert("amount_wei".into(), "1".into());
    record.hash = record.compute_hash();
    all[1] = record.to_json_line();
    write_lines(&path, &all);
    let broken = setup.verify(&path).unwrap_err();
    assert_eq!(broken.position, 2);
    assert_eq!(broken.reason, BrokenReason::BadSignature);
}

#[test]
fn an_inserted_copy_of_an_event_fails_at_the_copy() {
    let setup = Setup::new();
    let path = log_of(&setup, 3);
    let mut all = lines(&path);
    let copy = all[0].clone();
    all.insert(2, copy);
    write_lines(&path, &all);
    let broken = setup.verify(&path).unwrap_err();
    assert_eq!(broken.position, 3);
    assert_eq!(broken.reason, BrokenReason::SequenceGap { expected: 3 });
}

#[test]
fn an_event_forged_with_a_key_outside_the_roster_fails() {
    let setup = Setup::new();
    let path = log_of(&setup, 3);
    let mut all = lines(&path);
    // A well-formed event that continues the chain, signed by a key that is not p1's.
    let last = AuditRecord::from_json(&all[2]).unwrap();
    let intruder = PartyIdentity::generate(PartyId(1), setup.cluster.clone(), None);
    let forged = AuditRecord::seal(
        Emitter::Party(PartyId(1)),
        4,
        last.time + 1,
        last.hash,
        NewEvent::new("ana", "request.approved", "request:r-9"),
        setup.cluster.as_str(),
        |m| intruder.sign(m),
    );
    all.push(forged.to_json_line());
    write_lines(&path, &all);
    let broken = setup.verify(&path).unwrap_err();
    assert_eq!(broken.position, 4);
    assert_eq!(broken.reason, BrokenReason::BadSignature);

    // The same forgery under an emitter the roster does not list.
    all.pop();
    let stranger = AuditRecord::seal(
        Emitter::Party(PartyId(9)),
        1,
        last.time + 1,
        tessera_audit::EventHash::GENESIS,
        NewEvent::new("ana", "request.approved", "request:r-9"),
        setup.cluster.as_str(),
        |m| intruder.sign(m),
    );
    all.insert(1, stranger.to_json_line());
    write_lines(&path, &all);
    let broken = setup.verify(&path).unwrap_err();
    assert_eq!(broken.position, 2);
    assert_eq!(broken.reason, BrokenReason::UnknownEmitter);
}

#[test]
fn a_log_signed_for_another_cluster_fails() {
    let setup = Setup::new();
    let path = log_of(&setup, 2);
    let other = TrustedKeys::new("other-cluster", {
        let mut keys = std::collections::BTreeMap::new();
        keys.insert(Emitter::Party(PartyId(1)), setup.party(1).verifying_key());
        keys
    });
    let broken = Verifier::verify_all(other, file::read(&path).unwrap()).unwrap_err();
    assert_eq!(broken.position, 1);
    assert_eq!(broken.reason, BrokenReason::BadSignature);
}

#[test]
fn interleaved_emitters_verify_and_filters_select() {
    let setup = Setup::new();
    let coordinator = setup.open(setup.coordinator(), "coord.log");
    let node = setup.open(setup.party(2), "p2.log");
    coordinator
        .record(
            NewEvent::new("olivia", "request.submitted", "request:r-1").detail("key", "treasury"),
        )
        .unwrap();
    coordinator
        .record(NewEvent::new("ana", "request.approved", "request:r-1"))
        .unwrap();
    node.record(
        NewEvent::new("coordinator:coord", "session.joined", "session:s-1")
            .detail("request", "r-1"),
    )
    .unwrap();
    coordinator
        .record(NewEvent::new("olivia", "request.submitted", "request:r-2"))
        .unwrap();
    // Interleave the two files as a stream would.
    let c: Vec<_> = file::read(&setup.path("coord.log")).unwrap();
    let n: Vec<_> = file::read(&setup.path("p2.log")).unwrap();
    let mut c = c.into_iter();
    let mixed: Vec<_> = vec![c.next().unwrap()]
        .into_iter()
        .chain(n)
        .chain(c)
        .map(Result::unwrap)
        .collect();
    let summary = Verifier::verify_all(setup.keys(), mixed.iter().cloned().map(Ok)).unwrap();
    assert_eq!(summary.events, 4);
    assert_eq!(summary.chains.len(), 2);

    let about_r1 = Filter {
        request: Some("r-1".into()),
        ..Default::default()
    };
    let selected: Vec<_> = mixed.iter().filter(|r| about_r1.matches(r)).collect();
    assert_eq!(
        selected.len(),
        3,
        "two coordinator events and the node's session"
    );
    let by_ana = Filter {
        actor: Some("ana".into()),
        ..Default::default()
    };
    assert_eq!(mixed.iter().filter(|r| by_ana.matches(r)).count(), 1);
    let from_p2 = Filter {
        emitter: Some("p2".into()),
        action: Some("session.".into()),
        ..Default::default()
    };
    assert_eq!(mixed.iter().filter(|r| from_p2.matches(r)).count(), 1);
    let later = Filter {
        since: Some(mixed.last().unwrap().time + 1),
        ..Default::default()
    };
    assert_eq!(mixed.iter().filter(|r| later.matches(r)).count(), 0);
}

#[test]
fn oversized_or_empty_fields_are_refused_before_anything_is_written() {
    let setup = Setup::new();
    let log = setup.open(setup.party(1), "p1.log");
    assert!(log.record(NewEvent::new("", "x", "y")).is_err());
    assert!(log
        .record(NewEvent::new("a", "x", "y").detail("blob", "z".repeat(5000)))
        .is_err());
    assert_eq!(log.next_seq(), 1);
    assert_eq!(fs::read(setup.path("p1.log")).unwrap().len(), 0);
}

/// The paging index: reads and verifies only what was appended, pages newest first with a
/// cursor, waits for a line still being written, stops at a break, and refuses a record edited
/// after it was verified instead of serving it.
#[test]
fn the_index_verifies_appended_records_once_and_pages_newest_first() {
    use tessera_audit::FileIndex;
    let setup = Setup::new();
    let log = setup.open(setup.party(1), "p1.log");
    for i in 0..10 {
        log.record(event(i)).unwrap();
    }
    let path = setup.path("p1.log");
    let mut index = FileIndex::new(&path, setup.keys());
    index.refresh().unwrap();
    assert_eq!(index.len(), 10);
    let all = Filter::default();

    // Newest first, pages of 4: 7..10, then 3..6, then 1..2.
    let seqs = |page: &tessera_audit::Page| page.events.iter().map(|r| r.seq).collect::<Vec<_>>();
    let first = index.page(&all, None, 4, 1000).unwrap();
    assert_eq!(seqs(&first), [7, 8, 9, 10]);
    let second = index.page(&all, first.next_before, 4, 1000).unwrap();
    assert_eq!(seqs(&second), [3, 4, 5, 6]);
    let third = index.page(&all, second.next_before, 4, 1000).unwrap();
    assert_eq!(seqs(&third), [1, 2]);
    assert_eq!(third.next_before, None);
    // A filter; a scan bound that stops early still gives a cursor to go on.
    let only = Filter {
        request: Some("r-3".into()),
        ..Filter::default()
    };
    let found = index.page(&only, None, 10, 1000).unwrap();
    assert_eq!(seqs(&found), [4]);
    let bounded = index.page(&only, None, 10, 5).unwrap();
    assert!(bounded.events.is_empty());
    assert_eq!(bounded.next_before, Some(6));
    assert_eq!(
        seqs(&index.page(&only, bounded.next_before, 10, 5).unwrap()),
        [4]
    );

    // Appended records are picked up; a line still being written waits.
    log.record(event(10)).unwrap();
    let mut text = fs::read(&path).unwrap();
    let complete = text.len();
    text.extend_from_slice(b"{\"partial");
    fs::write(&path, &text).unwrap();
    index.refresh().unwrap();
    assert_eq!(index.len(), 11);
    assert_eq!(index.broken(), None);
    text.truncate(complete);
    fs::write(&path, &text).unwrap();

    // A record edited on disk after it was verified is refused when read back.
    let mut edited = lines(&path);
    edited[4] = edited[4].replace("r-4", "r-9");
    write_lines(&path, &edited);
    let err = index.page(&all, None, 20, 1000).unwrap_err();
    assert!(err.to_string().contains("changed on disk"), "{err}");

    // A fresh index stops at the break and serves only what came before it.
    let mut fresh = FileIndex::new(&path, setup.keys());
    fresh.refresh().unwrap();
    assert_eq!(fresh.len(), 4);
    assert!(
        fresh.broken().unwrap().contains('5'),
        "{:?}",
        fresh.broken()
    );
    assert_eq!(
        seqs(&fresh.page(&all, None, 20, 1000).unwrap()),
        [1, 2, 3, 4]
    );
    // A file that shrank is a break too.
    write_lines(&path, &edited[..2]);
    index.refresh().unwrap();
    assert!(
        index.broken().unwrap().contains("shrank"),
        "{:?}",
        index.broken()
    );
}
