//! The operator flow through the real binary: identities, admin keys, roster, NATS config; then
//! a real nats-server run from the generated configuration, with parties connecting using the
//! generated files.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tessera_channel::identity::PartyIdentity;
use tessera_channel::{ChannelConfig, ChannelManager, FrameContext, SignedRoster};
use tessera_transport::nats::{NatsConfig, NatsTransport};
use tessera_transport::SecureTransport;
use tessera_wire::{PartyId, Protocol, SessionId};

fn tessera(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(args)
        .output()
        .expect("run tessera")
}

fn ok(args: &[&str]) -> String {
    let out = tessera(args);
    assert!(
        out.status.success(),
        "tessera {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn fails(args: &[&str]) -> String {
    let out = tessera(args);
    assert!(!out.status.success(), "tessera {args:?} should fail");
    String::from_utf8(out.stderr).unwrap()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_flow_to_a_working_permissioned_broker() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for p in ["p1", "p2", "p3"] {
        ok(&[
            "identity",
            "new",
            "--party",
            p,
            "--cluster",
            "ops",
            "--out",
            s(d),
        ]);
        assert_eq!(mode(&d.join(format!("{p}.identity.json"))), 0o600);
    }
    // Never overwrites a key.
    let err = fails(&[
        "identity",
        "new",
        "--party",
        "p1",
        "--cluster",
        "ops",
        "--out",
        s(d),
    ]);
    assert!(err.contains("already exists"), "{err}");

    let a1 = d.join("admin1");
    let a2 = d.join("admin2");
    ok(&["admin", "new", "--out", s(&a1)]);
    ok(&["admin", "new", "--out", s(&a2)]);
    assert_eq!(mode(&a1.with_extension("key")), 0o600);

    let roster = d.join("roster.json");
    let publics: Vec<PathBuf> = (1..=3)
        .map(|i| d.join(format!("p{i}.public.json")))
        .collect();
    let mut build = vec!["roster", "build", "--cluster", "ops", "--admin-key"];
    let a1_key = a1.with_extension("key");
    let a2_key = a2.with_extension("key");
    let a1_pub = a1.with_extension("pub");
    let a2_pub = a2.with_extension("pub");
    build.extend([s(&a1_key), "--out", s(&roster)]);
    build.extend(publics.iter().map(|p| s(p)));
    ok(&build);

    // Quorum 2 needs the second admin.
    let verify = [
        "roster",
        "verify",
        s(&roster),
        "--admin",
        s(&a1_pub),
        "--admin",
        s(&a2_pub),
        "--quorum",
        "2",
    ];
    let err = fails(&verify);
    assert!(err.contains("1 valid signatures"), "{err}");
    ok(&["roster", "sign", "--admin-key", s(&a2_key), s(&roster)]);
    let out = ok(&verify);
    let hash = out
        .lines()
        .find_map(|l| l.strip_prefix("hash: "))
        .unwrap()
        .to_owned();
    // Pinned to another hash: refused.
    let mut pinned = verify.to_vec();
    pinned.extend(["--pin", &hash]);
    ok(&pinned);
    let wrong = "00".repeat(32);
    let mut wrong_pin = verify.to_vec();
    wrong_pin.extend(["--pin", &wrong]);
    let err = fails(&wrong_pin);
    assert!(err.contains("does not match the pinned hash"), "{err}");
    // A tampered roster fails verification.
    let tampered = d.join("tampered.json");
    let text = std::fs::read_to_string(&roster).unwrap();
    std::fs::write(
        &tampered,
        text.replacen("\"version\": 1", "\"version\": 2", 1),
    )
    .unwrap();
    let err = fails(&["roster", "verify", s(&tampered), "--admin", s(&a1_pub)]);
    assert!(err.contains("0 valid signatures"), "{err}");
    // Bad JSON gives a clear error.
    std::fs::write(d.join("bad.json"), "{not json").unwrap();
    let err = fails(&[
        "roster",
        "verify",
        s(&d.join("bad.json")),
        "--admin",
        s(&a1_pub),
    ]);
    assert!(err.contains("not a valid roster file"), "{err}");

    // NATS configuration for the roster, on a free port.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let nats_dir = d.join("nats");
    ok(&[
        "nats-config",
        "--roster",
        s(&roster),
        "--admin",
        s(&a1_pub),
        "--admin",
        s(&a2_pub),
        "--quorum",
        "2",
        "--out",
        s(&nats_dir),
        "--port",
        &port.to_string(),
    ]);
    assert_eq!(mode(&nats_dir.join("tls/ca-key.pem")), 0o600);
    assert_eq!(mode(&nats_dir.join("clients/p1/key.pem")), 0o600);
    let server = Server(
        Command::new(std::env::var("NATS_SERVER_BIN").unwrap_or_else(|_| "nats-server".into()))
            .arg("-c")
            .arg(nats_dir.join("nats.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server on PATH"),
    );
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "nats-server did not start"
        );
        std::thread::sleep(Duration::from_millis(25));
    }

    // Parties connect with exactly the files the commands wrote.
    let signed = SignedRoster::from_json(&std::fs::read_to_string(&roster).unwrap()).unwrap();
    let mut nodes = Vec::new();
    for i in 1..=3u16 {
        let party = PartyId(i);
        let identity = PartyIdentity::from_json(
            &std::fs::read_to_string(d.join(format!("{party}.identity.json"))).unwrap(),
        )
        .unwrap();
        let config = NatsConfig {
            url: format!("tls://127.0.0.1:{port}"),
            cluster: signed.roster.cluster.clone(),
            party,
            nkey_seed: zeroize::Zeroizing::new(identity.nats_seed().unwrap().to_owned()),
            ca_file: nats_dir.join("tls/ca.pem"),
            cert_file: nats_dir.join(format!("clients/{party}/cert.pem")),
            key_file: nats_dir.join(format!("clients/{party}/key.pem")),
            connect_timeout: Duration::from_secs(5),
        };
        let transport = Arc::new(NatsTransport::connect(&config).await.unwrap());
        let manager =
            ChannelManager::new(identity, signed.roster.clone(), ChannelConfig::default()).unwrap();
        nodes.push(SecureTransport::start(manager, transport).await.unwrap());
    }
    let ctx = FrameContext {
        session: SessionId::random(),
        round: 1,
        protocol: Protocol::PING,
    };
    nodes[0]
        .broadcast(&[PartyId(2), PartyId(3)], ctx, b"over the generated config")
        .await
        .unwrap();
    for n in &nodes[1..] {
        let d = n
            .recv_timeout(Duration::from_secs(10))
            .await
            .expect("broadcast delivered");
        assert_eq!(d.payload, b"over the generated config");
        d.broadcast.unwrap().verify(&signed.roster).unwrap();
    }
    drop(server);
}

#[test]
fn demo_runs_on_the_embedded_default() {
    let out = ok(&["demo", "--messages", "3"]);
    assert!(out.contains("[6/6]"), "{out}");
    assert!(
        out.contains("refused the forgery (authentication_failed: 1)"),
        "{out}"
    );
    assert!(out.contains("in-memory transport"), "{out}");
}

#[test]
fn demo_runs_over_a_spawned_nats_server() {
    let out = ok(&["demo", "--spawn-nats", "--messages", "3"]);
    assert!(out.contains("NATS transport"), "{out}");
}
