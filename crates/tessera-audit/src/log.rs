//! [`AuditLog`]: one emitter's appender.
//!
//! Recording is synchronous: the record is built, signed, written to the file and (by policy)
//! flushed to disk before [`AuditLog::record`] returns, so a caller that records "about to
//! sign" and then signs can rely on the record. A stream sink, if attached, receives records
//! afterwards from a background task and catches up from the file when it falls behind.
//!
//! **Group commit.** Records are written under the chain's lock, but flushed to disk outside
//! it: while one caller waits for the disk, others append, and the next flush makes all of
//! them durable at once (one `fdatasync` for many events). A caller that finds its record
//! already flushed by another returns without touching the disk. [`AuditLog::append`] writes
//! a record without waiting for the disk, for events whose action is acknowledged later:
//! the caller makes them durable with [`AuditLog::sync`] before it acknowledges (a node
//! appends `session.joined` and flushes once before anything of the session leaves).
//!
//! A write failure poisons the log: every later append fails too (a gap in the chain would be
//! worse than a refusal), until the service restarts and [`AuditLog::open`] resumes from the
//! file.

use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use ed25519_dalek::VerifyingKey;
use tessera_channel::identity::{CoordinatorKey, PartyIdentity};
use tokio::sync::mpsc;

use crate::file::FileSink;
use crate::{AuditError, AuditRecord, Emitter, EventHash, NewEvent};

/// A key that signs an emitter's events: a party identity or a coordinator key.
pub trait AuditSigner: Send + Sync {
    /// The emitter this key speaks for.
    fn emitter(&self) -> Emitter;
    /// The cluster, bound into every signature.
    fn cluster(&self) -> String;
    /// Signs `message` with the Ed25519 key.
    fn sign(&self, message: &[u8]) -> [u8; 64];
    /// The public key a verifier finds in the roster.
    fn verifying_key(&self) -> VerifyingKey;
}

impl AuditSigner for PartyIdentity {
    fn emitter(&self) -> Emitter {
        Emitter::Party(self.party())
    }
    fn cluster(&self) -> String {
        PartyIdentity::cluster(self).to_string()
    }
    fn sign(&self, message: &[u8]) -> [u8; 64] {
        PartyIdentity::sign(self, message)
    }
    fn verifying_key(&self) -> VerifyingKey {
        PartyIdentity::verifying_key(self)
    }
}

impl AuditSigner for CoordinatorKey {
    fn emitter(&self) -> Emitter {
        Emitter::Coordinator(self.name().to_owned())
    }
    fn cluster(&self) -> String {
        CoordinatorKey::cluster(self).to_string()
    }
    fn sign(&self, message: &[u8]) -> [u8; 64] {
        CoordinatorKey::sign(self, message).to_bytes()
    }
    fn verifying_key(&self) -> VerifyingKey {
        CoordinatorKey::verifying_key(self)
    }
}

impl<T: AuditSigner + ?Sized> AuditSigner for std::sync::Arc<T> {
    fn emitter(&self) -> Emitter {
        (**self).emitter()
    }
    fn cluster(&self) -> String {
        (**self).cluster()
    }
    fn sign(&self, message: &[u8]) -> [u8; 64] {
        (**self).sign(message)
    }
    fn verifying_key(&self) -> VerifyingKey {
        (**self).verifying_key()
    }
}

/// When the file sink flushes to disk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// After every record (the default): a record that was returned survives a crash.
    #[default]
    EveryEvent,
    /// After every `n` records, and on drop: faster, but a crash can lose the last `n - 1`.
    Batch(usize),
}

impl FsyncPolicy {
    fn every(self) -> usize {
        match self {
            FsyncPolicy::EveryEvent => 1,
            FsyncPolicy::Batch(n) => n.max(1),
        }
    }
}

/// Where an emitter's records go.
#[derive(Clone, Debug, Default)]
pub struct LogOptions {
    /// The append-only file (one per emitter). `None` keeps no file: only for tests and for
    /// a stream-only deployment.
    pub file: Option<PathBuf>,
    /// When the file is flushed to disk.
    pub fsync: FsyncPolicy,
}

/// The `[audit]` section of a service's configuration file:
///
/// ```toml
/// [audit]
/// file = "audit/p1.audit.jsonl"   # default: <service>.audit.jsonl next to the configuration
/// fsync_every = 1                 # flush to disk after every event (default); n: every n
/// stream = false                  # true: also publish to the cluster's JetStream stream
/// stream_replicas = 1             # coordinators: replicas when they create the stream
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditSection {
    /// The log file; relative paths are relative to the configuration file.
    pub file: Option<PathBuf>,
    /// Flush to disk after this many events (1, the default: after every event).
    pub fsync_every: Option<usize>,
    /// Also publish every event to the cluster's JetStream audit stream
    /// (`TESSERA_AUDIT_<CLUSTER>`) over the service's own broker connection. Default false.
    pub stream: bool,
    /// Replicas of the stream when a coordinator creates it (1 on one server, 3 on a
    /// production cluster). Default 1.
    pub stream_replicas: Option<usize>,
}

impl AuditSection {
    /// Makes a relative `file` relative to `base`.
    pub fn resolve(&mut self, base: &std::path::Path) {
        if let Some(file) = &mut self.file {
            if file.is_relative() {
                *file = base.join(&*file);
            }
        }
    }

    /// The log options, with `default_file` if the section names none.
    pub fn options(&self, default_file: PathBuf) -> LogOptions {
        LogOptions {
            file: Some(self.file.clone().unwrap_or(default_file)),
            fsync: match self.fsync_every {
                None | Some(0) | Some(1) => FsyncPolicy::EveryEvent,
                Some(n) => FsyncPolicy::Batch(n),
            },
        }
    }
}

struct Chain {
    next_seq: u64,
    prev_hash: EventHash,
    file: Option<FileSink>,
    poisoned: Option<String>,
    forward: Option<mpsc::Sender<AuditRecord>>,
}

/// One emitter's audit log.
pub struct AuditLog {
    signer: Box<dyn AuditSigner>,
    emitter: Emitter,
    cluster: String,
    fsync_every: usize,
    file_path: Option<PathBuf>,
    chain: Mutex<Chain>,
    /// Held by the one caller flushing the file; the handle flushes the same file as the
    /// chain's sink, so appends go on meanwhile.
    flusher: Mutex<Option<File>>,
    /// Every record up to this sequence number is on disk.
    durable_seq: AtomicU64,
    /// Flushes done (for tests and the benchmark: many events per flush under load).
    flushes: AtomicUsize,
    forward_dropped: AtomicU64,
}

impl AuditLog {
    /// Opens the log, continuing the chain found in the file (after checking that its last
    /// record is this emitter's, intact and signed by this key). A partial last line left by
    /// a crash is cut off and recorded as an `audit.torn_tail_discarded` event.
    pub fn open(signer: Box<dyn AuditSigner>, options: LogOptions) -> Result<Self, AuditError> {
        let emitter = signer.emitter();
        let cluster = signer.cluster();
        let (mut next_seq, mut prev_hash) = (1, EventHash::GENESIS);
        let mut torn_bytes = 0;
        let file = match &options.file {
            None => None,
            Some(path) => {
                let (sink, tail) = FileSink::open(path)?;
                torn_bytes = tail.torn_bytes;
                if let Some(last) = tail.last {
                    let cannot = |reason: String| AuditError::CannotResume {
                        path: path.clone(),
                        reason,
                    };
                    if last.emitter != emitter {
                        return Err(cannot(format!(
                            "its last record was written by {}, not {emitter}",
                            last.emitter
                        )));
                    }
                    if last.compute_hash() != last.hash {
                        return Err(cannot(format!(
                            "its last record (seq {}) does not match its hash",
                            last.seq
                        )));
                    }
                    if !last.verify_signature(&cluster, &signer.verifying_key()) {
                        return Err(cannot(format!(
                            "its last record (seq {}) is not signed by this emitter's key",
                            last.seq
                        )));
                    }
                    next_seq = last.seq + 1;
                    prev_hash = last.hash;
                }
                Some(sink)
            }
        };
        let flusher = match &file {
            Some(sink) => Some(sink.handle()?),
            None => None,
        };
        let log = AuditLog {
            signer,
            emitter,
            cluster,
            fsync_every: options.fsync.every(),
            file_path: options.file.clone(),
            flusher: Mutex::new(flusher),
            durable_seq: AtomicU64::new(next_seq - 1),
            flushes: AtomicUsize::new(0),
            chain: Mutex::new(Chain {
                next_seq,
                prev_hash,
                file,
                poisoned: None,
                forward: None,
            }),
            forward_dropped: AtomicU64::new(0),
        };
        if torn_bytes > 0 {
            log.record(
                NewEvent::new("system", "audit.torn_tail_discarded", "audit:file")
                    .detail("bytes", torn_bytes),
            )?;
        }
        Ok(log)
    }

    /// Signs and appends one event and returns the stored record once it is on disk (with
    /// [`FsyncPolicy::Batch`], once `n` records wait for a flush).
    pub fn record(&self, event: NewEvent) -> Result<AuditRecord, AuditError> {
        let record = self.append(event)?;
        let waiting = record
            .seq
            .saturating_sub(self.durable_seq.load(Ordering::Acquire));
        if waiting >= self.fsync_every as u64 {
            self.flush_through(record.seq)?;
        }
        Ok(record)
    }

    /// Signs and writes one event without waiting for the disk; returns the stored record.
    /// Its action must not be acknowledged before [`sync`](Self::sync) (or a later
    /// [`record`](Self::record)) returns: a crash before then can lose it.
    pub fn append(&self, event: NewEvent) -> Result<AuditRecord, AuditError> {
        event.check()?;
        let mut chain = self.chain();
        if let Some(reason) = &chain.poisoned {
            return Err(stopped(reason));
        }
        let record = AuditRecord::seal(
            self.emitter.clone(),
            chain.next_seq,
            now_millis(),
            chain.prev_hash,
            event,
            &self.cluster,
            |m| self.signer.sign(m),
        );
        if let Some(file) = chain.file.as_mut() {
            if let Err(e) = file.write(&record) {
                chain.poisoned = Some(e.to_string());
                tracing::error!(error = %e, "audit log write failed; refusing further events");
                return Err(e);
            }
        } else {
            // Nothing to flush: the record is as durable as it will be.
            self.durable_seq.store(record.seq, Ordering::Release);
        }
        chain.next_seq += 1;
        chain.prev_hash = record.hash;
        if let Some(forward) = &chain.forward {
            if forward.try_send(record.clone()).is_err() {
                // The stream task catches up from the file.
                self.forward_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        tracing::debug!(
            emitter = %record.emitter,
            seq = record.seq,
            action = %record.action,
            subject = %record.subject,
            "audit event"
        );
        Ok(record)
    }

    /// Makes every record written so far durable, flushing the file unless another caller's
    /// flush already covered them.
    pub fn sync(&self) -> Result<(), AuditError> {
        let written = {
            let chain = self.chain();
            if let Some(reason) = &chain.poisoned {
                return Err(stopped(reason));
            }
            chain.next_seq - 1
        };
        self.flush_through(written)
    }

    /// Returns once record `seq` is on disk: flushes the file (outside the chain's lock, so
    /// others append meanwhile) unless a flush that started after it was written covers it.
    fn flush_through(&self, seq: u64) -> Result<(), AuditError> {
        if self.durable_seq.load(Ordering::Acquire) >= seq {
            return Ok(());
        }
        let flusher = self.flusher.lock().unwrap_or_else(|p| p.into_inner());
        // Another caller may have flushed while this one waited for the lock.
        if self.durable_seq.load(Ordering::Acquire) >= seq {
            return Ok(());
        }
        let Some(file) = flusher.as_ref() else {
            return Ok(());
        };
        // Everything written before this point is covered by the flush below.
        let written = {
            let chain = self.chain();
            if let Some(reason) = &chain.poisoned {
                return Err(stopped(reason));
            }
            chain.next_seq - 1
        };
        if let Err(e) = file.sync_data() {
            let path = self.file_path.clone().unwrap_or_default();
            let error = AuditError::io(path, e);
            self.chain().poisoned = Some(error.to_string());
            tracing::error!(error = %error, "audit log flush failed; refusing further events");
            return Err(error);
        }
        self.flushes.fetch_add(1, Ordering::Relaxed);
        self.durable_seq.fetch_max(written, Ordering::AcqRel);
        Ok(())
    }

    /// Records `event`, logging instead of failing: for events about something that already
    /// happened and cannot be undone (a session that ended, a call that was answered).
    pub fn note(&self, event: NewEvent) {
        let action = event.action.clone();
        if let Err(e) = self.record(event) {
            tracing::error!(%action, error = %e, "cannot record an audit event");
        }
    }

    /// Appends `event` without waiting for the disk, logging instead of failing: for events
    /// that a later [`record`](Self::record), [`note`](Self::note) or [`sync`](Self::sync)
    /// makes durable before anything depending on them is acknowledged.
    pub fn note_unflushed(&self, event: NewEvent) {
        let action = event.action.clone();
        if let Err(e) = self.append(event) {
            tracing::error!(%action, error = %e, "cannot record an audit event");
        }
    }

    /// [`sync`](Self::sync), logging instead of failing.
    pub fn flush_quietly(&self) {
        if let Err(e) = self.sync() {
            tracing::error!(error = %e, "cannot flush the audit log");
        }
    }

    /// The last sequence number known to be on disk.
    pub fn durable_seq(&self) -> u64 {
        self.durable_seq.load(Ordering::Acquire)
    }

    /// How many flushes this log has done since it opened.
    pub fn flushes(&self) -> usize {
        self.flushes.load(Ordering::Relaxed)
    }

    /// Why the log stopped taking events (a write failed), if it did. A service with a stopped
    /// log is not ready.
    pub fn failure(&self) -> Option<String> {
        self.chain().poisoned.clone()
    }

    /// This log's emitter.
    pub fn emitter(&self) -> &Emitter {
        &self.emitter
    }

    /// The cluster bound into the signatures.
    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    /// The emitter's public key.
    pub fn verifying_key(&self) -> VerifyingKey {
        self.signer.verifying_key()
    }

    /// The file, if the log keeps one.
    pub fn file(&self) -> Option<&std::path::Path> {
        self.file_path.as_deref()
    }

    /// The sequence number the next event gets.
    pub fn next_seq(&self) -> u64 {
        self.chain().next_seq
    }

    /// Records handed to the stream task after its queue was full (it re-reads them from the
    /// file).
    pub fn forward_dropped(&self) -> u64 {
        self.forward_dropped.load(Ordering::Relaxed)
    }

    /// Sends every later record to `sender` (the stream task), without waiting.
    pub(crate) fn set_forward(&self, sender: mpsc::Sender<AuditRecord>) {
        self.chain().forward = Some(sender);
    }

    fn chain(&self) -> MutexGuard<'_, Chain> {
        // Appends leave the chain consistent at every step.
        self.chain.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn stopped(reason: &str) -> AuditError {
    AuditError::Invalid(format!(
        "the audit log stopped after a write failure ({reason}); restart the service"
    ))
}

fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
