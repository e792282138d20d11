//! The JetStream sink against a real `nats-server -js` on 127.0.0.1: the stream refuses
//! delete and purge, records arrive once each (deduplicated by `emitter/seq`), a log attached
//! late catches up from its file, and the stream reads back equal to the file and verifies.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use async_nats::jetstream;
use tessera_audit::stream::{self, StreamSink};
use tessera_audit::{file, AuditLog, Emitter, LogOptions, NewEvent, TrustedKeys, Verifier};
use tessera_channel::identity::PartyIdentity;
use tessera_wire::{ClusterId, PartyId};

struct Server {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let binary = std::env::var("NATS_SERVER_BIN").unwrap_or_else(|_| "nats-server".into());
        let child = Command::new(&binary)
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {binary} ({e}): run ./scripts/setup.sh"));
        Server {
            child,
            url: format!("nats://127.0.0.1:{port}"),
            _dir: dir,
        }
    }

    async fn connect(&self) -> jetstream::Context {
        for _ in 0..100 {
            if let Ok(client) = async_nats::connect(&self.url).await {
                return jetstream::new(client);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("nats-server at {} did not come up", self.url);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const CLUSTER: &str = "audit-stream";

fn identity() -> PartyIdentity {
    PartyIdentity::generate(PartyId(1), CLUSTER.parse::<ClusterId>().unwrap(), None)
}

fn keys(identity: &PartyIdentity) -> TrustedKeys {
    let mut keys = BTreeMap::new();
    keys.insert(Emitter::Party(PartyId(1)), identity.verifying_key());
    TrustedKeys::new(CLUSTER, keys)
}

fn copy(identity: &PartyIdentity) -> Box<PartyIdentity> {
    Box::new(PartyIdentity::from_json(&identity.to_json()).unwrap())
}

async fn wait_for(js: &jetstream::Context, name: &str, seq: u64) {
    let emitter = Emitter::Party(PartyId(1));
    for _ in 0..200 {
        if stream::last_seq(js, name, CLUSTER, &emitter).await.unwrap() >= seq {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the stream never reached seq {seq}");
}

#[tokio::test]
async fn the_stream_refuses_delete_and_purge_and_reads_back_equal_to_the_file() {
    let server = Server::start();
    let js = server.connect().await;
    let name = stream::default_stream_name(CLUSTER);
    let audit_stream = stream::ensure_stream(&js, CLUSTER, &name, 1).await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p1.log");
    let identity = identity();
    let log = AuditLog::open(
        copy(&identity),
        LogOptions {
            file: Some(path.clone()),
            ..Default::default()
        },
    )
    .unwrap();
    // Two records before the stream is attached: the forwarder catches up from the file.
    for i in 0..2 {
        log.record(NewEvent::new("system", "node.started", format!("node:{i}")))
            .unwrap();
    }
    let forwarder = log.attach_stream(StreamSink {
        js: js.clone(),
        stream: name.clone(),
    });
    for i in 0..8 {
        log.record(
            NewEvent::new("coordinator:c", "session.joined", format!("session:s-{i}"))
                .detail("request", format!("r-{i}")),
        )
        .unwrap();
    }
    wait_for(&js, &name, 10).await;

    // Publishing a record again (a retry after a lost acknowledgement) stores nothing new.
    let records: Vec<_> = file::read(&path)
        .unwrap()
        .into_iter()
        .map(Result::unwrap)
        .collect();
    stream::publish(&js, &name, CLUSTER, &records[4])
        .await
        .unwrap();

    let from_stream: Vec<_> = stream::read_all(&js, &name)
        .await
        .unwrap()
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        from_stream, records,
        "the stream holds exactly the file's records"
    );
    let summary = Verifier::verify_all(keys(&identity), from_stream.into_iter().map(Ok)).unwrap();
    assert_eq!(summary.events, 10);

    // The server refuses to remove anything.
    let deleted = audit_stream.delete_message(3).await;
    assert!(deleted.is_err(), "delete must be refused: {deleted:?}");
    let purged = audit_stream.purge().await;
    assert!(purged.is_err(), "purge must be refused: {purged:?}");
    assert_eq!(stream::read_all(&js, &name).await.unwrap().len(), 10);

    // A stream that allows deletes is not accepted as an audit stream.
    let lax = "LAX_AUDIT";
    js.create_stream(jetstream::stream::Config {
        name: lax.into(),
        subjects: vec!["lax.audit.>".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let error = stream::ensure_stream(&js, "lax", lax, 1).await.unwrap_err();
    assert!(error.to_string().contains("deny"), "{error}");
    forwarder.abort();
}

#[tokio::test]
async fn a_restarted_emitter_resumes_publishing_where_the_stream_stopped() {
    let server = Server::start();
    let js = server.connect().await;
    let name = stream::default_stream_name(CLUSTER);
    stream::ensure_stream(&js, CLUSTER, &name, 1).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p1.log");
    let identity = identity();
    let options = LogOptions {
        file: Some(path.clone()),
        ..Default::default()
    };
    {
        let log = AuditLog::open(copy(&identity), options.clone()).unwrap();
        let forwarder = log.attach_stream(StreamSink {
            js: js.clone(),
            stream: name.clone(),
        });
        for i in 0..3 {
            log.record(NewEvent::new("system", "test.event", format!("n:{i}")))
                .unwrap();
        }
        wait_for(&js, &name, 3).await;
        forwarder.abort();
        // Written while the stream was unreachable.
        log.record(NewEvent::new("system", "test.event", "n:3"))
            .unwrap();
    }
    let log = AuditLog::open(copy(&identity), options).unwrap();
    let forwarder = log.attach_stream(StreamSink {
        js: js.clone(),
        stream: name.clone(),
    });
    log.record(NewEvent::new("system", "node.started", "node:p1"))
        .unwrap();
    wait_for(&js, &name, 5).await;
    let from_stream: Vec<_> = stream::read_all(&js, &name).await.unwrap();
    let summary = Verifier::verify_all(keys(&identity), from_stream).unwrap();
    assert_eq!(summary.events, 5);
    forwarder.abort();
}
