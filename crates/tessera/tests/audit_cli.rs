//! `tessera audit verify` and `show` over a log file and the JetStream stream together, on a
//! plain `nats-server -js` on 127.0.0.1: sources that agree verify; a file cut short (its last
//! event gone, which its own chain cannot show) is caught by comparing it with the stream.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use tessera_audit::stream::{self, StreamSink};
use tessera_audit::{AuditLog, Emitter, LogOptions, NewEvent};
use tessera_channel::identity::PartyIdentity;
use tessera_channel::{Roster, SignedRoster};
use tessera_wire::{ClusterId, PartyId};

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn tessera(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(args)
        .output()
        .expect("run tessera")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_compares_the_file_with_the_stream_and_catches_a_file_cut_short() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _server = Server(
        Command::new(std::env::var("NATS_SERVER_BIN").unwrap_or_else(|_| "nats-server".into()))
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(d.join("js"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server (./scripts/setup.sh installs it)"),
    );
    let url = format!("nats://127.0.0.1:{port}");
    let mut client = None;
    for _ in 0..100 {
        if let Ok(c) = async_nats::connect(&url).await {
            client = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let js = async_nats::jetstream::new(client.expect("nats-server came up"));

    let cluster: ClusterId = "audit-cli".parse().unwrap();
    let identities: Vec<PartyIdentity> = (1..=2)
        .map(|i| PartyIdentity::generate(PartyId(i), cluster.clone(), None))
        .collect();
    let publics: Vec<_> = identities.iter().map(|i| i.public(None)).collect();
    let roster = Roster::build(cluster.clone(), 1, &publics).unwrap();
    let roster_file = d.join("roster.json");
    std::fs::write(&roster_file, SignedRoster::new(roster).to_json()).unwrap();

    let name = stream::default_stream_name(cluster.as_str());
    stream::ensure_stream(&js, cluster.as_str(), &name, 1)
        .await
        .unwrap();
    let log_file = d.join("p1.audit.jsonl");
    let signer = PartyIdentity::from_json(&identities[0].to_json()).unwrap();
    let log = AuditLog::open(
        Box::new(signer),
        LogOptions {
            file: Some(log_file.clone()),
            ..Default::default()
        },
    )
    .unwrap();
    let forwarder = log.attach_stream(StreamSink {
        js: js.clone(),
        stream: name.clone(),
    });
    for i in 0..5 {
        log.record(NewEvent::new(
            "ana",
            "test.approved",
            format!("request:r-{i}"),
        ))
        .unwrap();
    }
    let emitter = Emitter::Party(PartyId(1));
    for _ in 0..200 {
        if stream::last_seq(&js, &name, cluster.as_str(), &emitter)
            .await
            .unwrap()
            == 5
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    forwarder.abort();
    drop(log);

    // Both sources verify and agree.
    let verify = |file: &Path| {
        tessera(&[
            "audit",
            "verify",
            "--roster",
            s(&roster_file),
            "--nats",
            &url,
            s(file),
        ])
    };
    let out = verify(&log_file);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("stream {name}: verified 5 event(s)")),
        "{stdout}"
    );
    assert!(
        stdout.contains("p1.audit.jsonl: verified 5 event(s)"),
        "{stdout}"
    );

    // The auditor reads the stream, verified, filtered.
    let out = tessera(&[
        "audit",
        "show",
        "--nats",
        &url,
        "--roster",
        s(&roster_file),
        "--request",
        "r-3",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(shown.lines().count(), 1, "{shown}");
    assert!(
        shown.contains("test.approved") && shown.contains("request:r-3"),
        "{shown}"
    );

    // The file without its last event still verifies on its own, but not against the stream.
    let text = std::fs::read_to_string(&log_file).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let cut = d.join("cut.audit.jsonl");
    std::fs::write(&cut, lines[..4].join("\n") + "\n").unwrap();
    let alone = tessera(&["audit", "verify", "--roster", s(&roster_file), s(&cut)]);
    assert!(alone.status.success());
    let out = verify(&cut);
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("p1: the stream holds records up to seq 5 but the file ends at 4"),
        "{stdout}"
    );
}
