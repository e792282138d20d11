//! Group commit: records from concurrent callers share flushes, no caller returns before its
//! record is on disk, and a process killed (SIGKILL) while many threads record loses no event
//! whose `record` returned: the file verifies and the log reopens where it stopped.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use tessera_audit::{file, AuditLog, Emitter, LogOptions, NewEvent, TrustedKeys, Verifier};
use tessera_channel::identity::PartyIdentity;
use tessera_wire::{ClusterId, PartyId};

/// The environment variable that turns the child test on, naming its directory.
const CHILD_DIR: &str = "TESSERA_AUDIT_CRASH_CHILD_DIR";
/// Threads recording at once in the child.
const CHILD_THREADS: usize = 4;
/// Acknowledged events the parent waits for before it kills the child.
const KILL_AFTER: usize = 300;

fn identity(dir: &Path) -> PartyIdentity {
    let path = dir.join("p1.id");
    if let Ok(text) = fs::read_to_string(&path) {
        return PartyIdentity::from_json(&text).unwrap();
    }
    let cluster: ClusterId = "audit-commit".parse().unwrap();
    let identity = PartyIdentity::generate(PartyId(1), cluster, None);
    fs::write(&path, identity.to_json().as_bytes()).unwrap();
    identity
}

fn open(dir: &Path) -> AuditLog {
    AuditLog::open(
        Box::new(identity(dir)),
        LogOptions {
            file: Some(dir.join("p1.audit.jsonl")),
            ..Default::default()
        },
    )
    .unwrap()
}

fn verify(dir: &Path) -> tessera_audit::Summary {
    let identity = identity(dir);
    let keys = TrustedKeys::new(
        identity.cluster().to_string(),
        BTreeMap::from([(Emitter::Party(PartyId(1)), identity.verifying_key())]),
    );
    Verifier::verify_all(keys, file::read(&dir.join("p1.audit.jsonl")).unwrap()).unwrap()
}

fn event(thread: usize, i: usize) -> NewEvent {
    NewEvent::new("system", "commit.test", format!("thread:{thread}")).detail("i", i)
}

#[test]
fn appended_events_share_one_flush_and_sync_covers_them() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let flushes = log.flushes();
    for i in 0..10 {
        let record = log.append(event(0, i)).unwrap();
        assert!(
            log.durable_seq() < record.seq,
            "append does not wait for the disk"
        );
    }
    let last = log.record(event(0, 10)).unwrap();
    assert_eq!(log.durable_seq(), last.seq);
    assert_eq!(log.flushes(), flushes + 1, "one flush for eleven events");
    log.sync().unwrap();
    assert_eq!(log.flushes(), flushes + 1, "nothing left to flush");
    log.append(event(0, 11)).unwrap();
    log.sync().unwrap();
    assert_eq!(log.durable_seq(), last.seq + 1);
    assert_eq!(log.flushes(), flushes + 2);
    drop(log);
    assert_eq!(verify(dir.path()).events, 12);
}

#[test]
fn concurrent_callers_each_return_only_once_their_record_is_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(open(dir.path()));
    let flushes = log.flushes();
    let (threads, each) = (8, 40);
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                (0..each)
                    .map(|i| {
                        let record = log.record(event(t, i)).unwrap();
                        assert!(
                            log.durable_seq() >= record.seq,
                            "record {} returned before it was flushed",
                            record.seq
                        );
                        record.seq
                    })
                    .collect::<Vec<u64>>()
            })
        })
        .collect();
    let seqs: BTreeSet<u64> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    let total = (threads * each) as u64;
    assert_eq!(
        seqs,
        (1..=total).collect(),
        "every record got its own place"
    );
    assert!(log.flushes() - flushes <= total as usize);
    drop(log);
    let summary = verify(dir.path());
    assert_eq!(summary.events, total);
}

/// The child side of [`killed_while_recording_keeps_every_acknowledged_event`]: records from
/// several threads until killed, printing `ack <seq>` after each `record` returns.
#[test]
#[ignore = "a child process of killed_while_recording_keeps_every_acknowledged_event"]
fn crash_child_records_until_killed() {
    let Ok(dir) = std::env::var(CHILD_DIR) else {
        return;
    };
    let log = Arc::new(open(Path::new(&dir)));
    let out = Arc::new(Mutex::new(std::io::stdout()));
    let handles: Vec<_> = (0..CHILD_THREADS)
        .map(|t| {
            let (log, out) = (log.clone(), out.clone());
            std::thread::spawn(move || {
                for i in 0.. {
                    let record = log.record(event(t, i)).unwrap();
                    let mut out = out.lock().unwrap();
                    writeln!(out, "ack {}", record.seq).unwrap();
                    out.flush().unwrap();
                }
            })
        })
        .collect();
    for handle in handles {
        let _ = handle.join();
    }
}

#[test]
fn killed_while_recording_keeps_every_acknowledged_event() {
    let dir = tempfile::tempdir().unwrap();
    identity(dir.path());
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "commit::crash_child_records_until_killed",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut acked = BTreeSet::new();
    for line in lines.by_ref() {
        if let Some(seq) = line.unwrap().strip_prefix("ack ") {
            acked.insert(seq.parse::<u64>().unwrap());
            if acked.len() >= KILL_AFTER {
                break;
            }
        }
    }
    assert!(acked.len() >= KILL_AFTER, "the child stopped early");
    // SIGKILL, mid-append for some thread: no destructor, no final flush.
    child.kill().unwrap();
    child.wait().unwrap();
    // Acknowledgements printed before the kill.
    for line in lines {
        let Ok(line) = line else { break };
        if let Some(seq) = line.strip_prefix("ack ") {
            acked.insert(seq.parse::<u64>().unwrap());
        }
    }

    // The log reopens (cutting a torn last line, if the kill left one) and continues.
    let log = open(dir.path());
    log.record(NewEvent::new("system", "node.started", "node:p1"))
        .unwrap();
    let next = log.next_seq();
    drop(log);
    let summary = verify(dir.path());
    assert_eq!(summary.events, next - 1, "one unbroken chain");
    let present: BTreeSet<u64> = file::read(&dir.path().join("p1.audit.jsonl"))
        .unwrap()
        .into_iter()
        .map(|r| r.unwrap())
        .filter(|r| r.action == "commit.test")
        .map(|r| r.seq)
        .collect();
    let missing: Vec<&u64> = acked.difference(&present).collect();
    assert!(missing.is_empty(), "acknowledged but lost: {missing:?}");
}
