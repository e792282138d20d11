//! The NATS JetStream sink: one stream per cluster holding every emitter's records on
//! `tessera.<cluster>.audit.<emitter>`.
//!
//! The stream is created with `deny_delete` and `deny_purge` (the server refuses to remove
//! messages), `discard: new` with no limits (nothing ages out), and a duplicate window, so that
//! a record published twice under its message id `emitter/seq` is stored once. The file is the
//! emitter's authority; the stream is a second copy in another trust domain. A forwarder task
//! publishes each record after it was written to the file, and when it falls behind (broker
//! down, queue full) it catches up from the file, starting after the last record of this
//! emitter the stream holds.

use std::path::PathBuf;
use std::time::Duration;

use async_nats::jetstream::{self, message::PublishMessage, stream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::{AuditError, AuditLog, AuditRecord, Emitter};

/// How long the stream remembers message ids to drop duplicates.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
/// Records waiting for the forwarder before it falls back to reading the file.
pub const FORWARD_QUEUE: usize = 1024;

/// The subject of one emitter's records.
pub fn subject(cluster: &str, emitter: &Emitter) -> String {
    format!("tessera.{cluster}.audit.{}", emitter.subject_token())
}

/// The default stream name of a cluster (`TESSERA_AUDIT_<cluster>`, upper case; the name
/// [`tessera_wire::subject::audit_stream`] gives and broker provisioning grants access to).
pub fn default_stream_name(cluster: &str) -> String {
    format!(
        "TESSERA_AUDIT_{}",
        cluster.to_ascii_uppercase().replace('-', "_")
    )
}

/// Creates the cluster's audit stream, or checks that the existing one refuses deletes and
/// purges. `replicas` is 1 on a single server and 3 on a production cluster.
pub async fn ensure_stream(
    js: &jetstream::Context,
    cluster: &str,
    name: &str,
    replicas: usize,
) -> Result<stream::Stream, AuditError> {
    let config = stream::Config {
        name: name.to_owned(),
        subjects: vec![format!("tessera.{cluster}.audit.>")],
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::Limits,
        discard: stream::DiscardPolicy::New,
        deny_delete: true,
        deny_purge: true,
        allow_rollup: false,
        duplicate_window: DUPLICATE_WINDOW,
        num_replicas: replicas.max(1),
        description: Some(format!("Tessera audit log of cluster {cluster}")),
        ..Default::default()
    };
    let mut stream = js
        .get_or_create_stream(config)
        .await
        .map_err(|e| AuditError::stream(name, format!("cannot create or open it: {e}")))?;
    let info = stream
        .info()
        .await
        .map_err(|e| AuditError::stream(name, format!("cannot read its configuration: {e}")))?;
    if !info.config.deny_delete || !info.config.deny_purge || info.config.allow_rollup {
        return Err(AuditError::stream(
            name,
            "it exists but allows deleting, purging or rolling up messages; an audit stream \
             must deny all three (recreate it, or name another stream)",
        ));
    }
    Ok(stream)
}

/// Publishes one record and waits for the stream's acknowledgement.
pub async fn publish(
    js: &jetstream::Context,
    stream_name: &str,
    cluster: &str,
    record: &AuditRecord,
) -> Result<(), AuditError> {
    let message = PublishMessage::build()
        .payload(record.to_json_line().into())
        .message_id(record.message_id());
    let ack = js
        .send_publish(subject(cluster, &record.emitter), message)
        .await
        .map_err(|e| AuditError::stream(stream_name, format!("publish failed: {e}")))?;
    let ack = ack
        .await
        .map_err(|e| AuditError::stream(stream_name, format!("no acknowledgement: {e}")))?;
    if ack.stream != stream_name {
        return Err(AuditError::stream(
            stream_name,
            format!("the record was stored in stream {} instead", ack.stream),
        ));
    }
    Ok(())
}

/// Every message of the stream, in order, as records (or why one is not a record). A missing
/// sequence number (a deleted message) is reported in its place.
pub async fn read_all(
    js: &jetstream::Context,
    stream_name: &str,
) -> Result<Vec<Result<AuditRecord, AuditError>>, AuditError> {
    let mut stream = js
        .get_stream(stream_name)
        .await
        .map_err(|e| AuditError::stream(stream_name, format!("cannot open it: {e}")))?;
    let state = stream
        .info()
        .await
        .map_err(|e| AuditError::stream(stream_name, format!("cannot read its state: {e}")))?
        .state
        .clone();
    let mut out = Vec::new();
    if state.messages == 0 {
        return Ok(out);
    }
    if state.first_sequence > 1 {
        out.push(Err(AuditError::Invalid(format!(
            "the stream starts at message {}: messages 1 to {} are gone",
            state.first_sequence,
            state.first_sequence - 1
        ))));
    }
    for seq in state.first_sequence..=state.last_sequence {
        let item = match stream.get_raw_message(seq).await {
            Ok(message) => std::str::from_utf8(&message.payload)
                .map_err(|_| AuditError::Invalid(format!("stream message {seq} is not UTF-8")))
                .and_then(AuditRecord::from_json),
            Err(e) if e.kind() == stream::RawMessageErrorKind::NoMessageFound => Err(
                AuditError::Invalid(format!("stream message {seq} is missing (deleted)")),
            ),
            Err(e) => {
                return Err(AuditError::stream(
                    stream_name,
                    format!("cannot read message {seq}: {e}"),
                ))
            }
        };
        out.push(item);
    }
    Ok(out)
}

/// The sequence number of the last record of `emitter` in the stream (0 if none).
pub async fn last_seq(
    js: &jetstream::Context,
    stream_name: &str,
    cluster: &str,
    emitter: &Emitter,
) -> Result<u64, AuditError> {
    let stream = js
        .get_stream(stream_name)
        .await
        .map_err(|e| AuditError::stream(stream_name, format!("cannot open it: {e}")))?;
    match stream
        .get_last_raw_message_by_subject(&subject(cluster, emitter))
        .await
    {
        Ok(message) => {
            let text = std::str::from_utf8(&message.payload)
                .map_err(|_| AuditError::stream(stream_name, "the last record is not UTF-8"))?;
            Ok(AuditRecord::from_json(text)?.seq)
        }
        Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => Ok(0),
        Err(e) => Err(AuditError::stream(
            stream_name,
            format!("cannot read the last record of {emitter}: {e}"),
        )),
    }
}

/// Forwards `log` to its cluster's audit stream over `client` (the service's own broker
/// connection, whose user may publish only this emitter's subject). With `create` (coordinators),
/// the stream is first created with that many replicas, or checked if it exists; nodes only
/// publish, and their forwarder retries until a coordinator created it.
pub async fn forward_to_cluster_stream(
    log: &AuditLog,
    client: async_nats::Client,
    create: Option<usize>,
) -> Result<JoinHandle<()>, AuditError> {
    let js = jetstream::new(client);
    let name = default_stream_name(log.cluster());
    if let Some(replicas) = create {
        ensure_stream(&js, log.cluster(), &name, replicas).await?;
    }
    Ok(log.attach_stream(StreamSink { js, stream: name }))
}

/// Where an emitter's forwarder publishes.
#[derive(Clone)]
pub struct StreamSink {
    /// The JetStream context (over the emitter's own NATS connection).
    pub js: jetstream::Context,
    /// The stream's name.
    pub stream: String,
}

impl AuditLog {
    /// Starts forwarding this log's records to the stream: first the records of the file the
    /// stream does not have yet, then each new record. Returns the forwarder task.
    pub fn attach_stream(&self, sink: StreamSink) -> JoinHandle<()> {
        let (tx, rx) = mpsc::channel(FORWARD_QUEUE);
        self.set_forward(tx);
        let forwarder = Forwarder {
            sink,
            cluster: self.cluster().to_owned(),
            emitter: self.emitter().clone(),
            file: self.file().map(|p| p.to_path_buf()),
            published: 0,
        };
        tokio::spawn(forwarder.run(rx))
    }
}

struct Forwarder {
    sink: StreamSink,
    cluster: String,
    emitter: Emitter,
    file: Option<PathBuf>,
    /// The last sequence number known to be in the stream.
    published: u64,
}

impl Forwarder {
    async fn run(mut self, mut rx: mpsc::Receiver<AuditRecord>) {
        let mut behind = true;
        loop {
            if behind {
                match self.catch_up().await {
                    Ok(()) => behind = false,
                    Err(e) => {
                        tracing::warn!(error = %e, "audit stream behind; retrying in 2 s");
                        tokio::time::sleep(Duration::from_secs(2)).await;
                        // Records queued meanwhile are in the file: drain them.
                        while rx.try_recv().is_ok() {}
                        continue;
                    }
                }
            }
            let Some(record) = rx.recv().await else {
                return;
            };
            if record.seq <= self.published {
                continue;
            }
            if record.seq != self.published + 1 {
                behind = true;
                continue;
            }
            match publish(&self.sink.js, &self.sink.stream, &self.cluster, &record).await {
                Ok(()) => self.published = record.seq,
                Err(e) => {
                    tracing::warn!(seq = record.seq, error = %e, "audit record not published yet");
                    behind = true;
                }
            }
        }
    }

    /// Publishes the file's records after the last one the stream holds.
    async fn catch_up(&mut self) -> Result<(), AuditError> {
        let (js, name) = (&self.sink.js, self.sink.stream.as_str());
        self.published = last_seq(js, name, &self.cluster, &self.emitter).await?;
        let Some(path) = &self.file else {
            return Ok(());
        };
        let path = path.clone();
        let records = tokio::task::spawn_blocking(move || crate::file::read(&path))
            .await
            .map_err(|e| AuditError::Invalid(format!("file reader failed: {e}")))??;
        for record in records.into_iter().flatten() {
            if record.seq > self.published {
                publish(js, name, &self.cluster, &record).await?;
                self.published = record.seq;
            }
        }
        Ok(())
    }
}
