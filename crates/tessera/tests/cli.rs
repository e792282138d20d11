//! The operator flow through the real binary: identities, a coordinator key, admin keys, roster,
//! NATS config; then a real nats-server run from the generated configuration, with parties and
//! the coordinator connecting using the generated files.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tessera_channel::identity::{CoordinatorKey, PartyIdentity};
use tessera_channel::{ChannelConfig, ChannelManager, FrameContext, SignedRoster};
use tessera_transport::nats::{
    connect_coordinator, CoordinatorNatsConfig, NatsConfig, NatsMetrics, NatsTransport,
};
use tessera_transport::SecureTransport;
use tessera_wire::{PartyId, Protocol, SessionId};

pub fn tessera(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(args)
        .output()
        .expect("run tessera")
}

pub fn ok(args: &[&str]) -> String {
    let out = tessera(args);
    assert!(
        out.status.success(),
        "tessera {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

pub fn fails(args: &[&str]) -> String {
    let out = tessera(args);
    assert!(!out.status.success(), "tessera {args:?} should fail");
    String::from_utf8(out.stderr).unwrap()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

pub fn s(p: &Path) -> &str {
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

    // The coordinator's key: nodes accept session starts only when it signed them.
    ok(&[
        "coordinator",
        "new",
        "--name",
        "main",
        "--cluster",
        "ops",
        "--out",
        s(d),
    ]);
    assert_eq!(mode(&d.join("main.coordinator.json")), 0o600);
    let coordinator_public = d.join("main.coordinator.public.json");
    let entry: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&coordinator_public).unwrap()).unwrap();
    assert_eq!(entry["name"], "main");
    assert!(entry["nats_user"].as_str().unwrap().starts_with('U'));
    let err = fails(&[
        "coordinator",
        "new",
        "--name",
        "main",
        "--cluster",
        "ops",
        "--out",
        s(d),
    ]);
    assert!(err.contains("already exists"), "{err}");
    let err = fails(&[
        "coordinator",
        "new",
        "--name",
        "Main.1",
        "--cluster",
        "ops",
        "--out",
        s(d),
    ]);
    assert!(
        err.contains("coordinator name \"Main.1\" is not valid"),
        "{err}"
    );
    assert!(!d.join("Main.1.coordinator.json").exists());

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
    build.extend(["--coordinator", s(&coordinator_public)]);
    build.extend(publics.iter().map(|p| s(p)));
    // A party's public identity is not a coordinator's.
    let mut wrong = build.clone();
    let p1_public = s(&publics[0]).to_owned();
    wrong.extend(["--coordinator", &p1_public]);
    let err = fails(&wrong);
    assert!(
        err.contains("is not a coordinator public key file"),
        "{err}"
    );
    let out = ok(&build);
    assert!(out.contains("(3 parties, 1 coordinator)"), "{out}");

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
    let listed = out
        .lines()
        .find(|l| l.trim_start().starts_with("coordinator main "))
        .unwrap_or_else(|| panic!("roster verify does not name the coordinator:\n{out}"));
    assert!(
        listed.contains(entry["ed25519"].as_str().unwrap()),
        "{listed}"
    );
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
    let nats_out = ok(&[
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
    assert_eq!(mode(&nats_dir.join("clients/coord-main/key.pem")), 0o600);
    assert!(
        nats_out.contains("client cert coordinator main"),
        "{nats_out}"
    );
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
    // So does the coordinator (its certificate and NKey user are accepted).
    let coordinator = CoordinatorKey::from_json(
        &std::fs::read_to_string(d.join("main.coordinator.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        signed
            .roster
            .coordinator("main")
            .unwrap()
            .verifying_key()
            .unwrap(),
        coordinator.verifying_key()
    );
    let coordinator_config = CoordinatorNatsConfig {
        url: format!("tls://127.0.0.1:{port}"),
        cluster: signed.roster.cluster.clone(),
        name: coordinator.name().to_owned(),
        nkey_seed: zeroize::Zeroizing::new(coordinator.nats_seed().unwrap().to_owned()),
        ca_file: nats_dir.join("tls/ca.pem"),
        cert_file: nats_dir.join("clients/coord-main/cert.pem"),
        key_file: nats_dir.join("clients/coord-main/key.pem"),
        connect_timeout: Duration::from_secs(5),
    };
    let coordinator_client =
        connect_coordinator(&coordinator_config, Arc::new(NatsMetrics::default()))
            .await
            .unwrap();
    coordinator_client.flush().await.unwrap();
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
    drop(nodes);
    drop(coordinator_client);

    // Party nodes from the same files, and sessions started with `tessera session`.
    let node_bin = Path::new(env!("CARGO_BIN_EXE_tessera")).with_file_name("tessera-node");
    assert!(
        node_bin.exists(),
        "{} is missing: build the whole workspace (scripts/test.sh does)",
        node_bin.display()
    );
    let dev = tessera_policy::dev::DevPolicy::generate().unwrap();
    std::fs::write(d.join("policy.toml"), dev.document.bytes()).unwrap();
    let policy_pin = dev.document.hash().to_string();
    let mut node_processes = Vec::new();
    for p in ["p1", "p2", "p3"] {
        let config = d.join(format!("{p}.node.toml"));
        std::fs::write(
            &config,
            format!(
                "identity = \"{p}.identity.json\"\nroster = \"roster.json\"\nroster_pin = \"{hash}\"\n\
                 policy = \"policy.toml\"\npolicy_pin = \"{policy_pin}\"\n\
                 store = \"{p}-store\"\n[nats]\nurl = \"tls://127.0.0.1:{port}\"\n\
                 ca = \"nats/tls/ca.pem\"\ncert = \"nats/clients/{p}/cert.pem\"\n\
                 key = \"nats/clients/{p}/key.pem\"\n[primes]\npool_target = 0\n"
            ),
        )
        .unwrap();
        let node = |command: &str| {
            let mut cmd = Command::new(&node_bin);
            cmd.args(["--config", s(&config), command])
                .env("TESSERA_NODE_PASSPHRASE", "node store passphrase");
            cmd
        };
        let init = node("init").output().unwrap();
        assert!(
            init.status.success(),
            "{}",
            String::from_utf8_lossy(&init.stderr)
        );
        let log = d.join(format!("{p}.log"));
        let child = node("run")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        node_processes.push(Server(child));
        let start = Instant::now();
        while !std::fs::read_to_string(&log)
            .unwrap()
            .contains("serving session starts")
        {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "{p} did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let url = format!("tls://127.0.0.1:{port}");
    let coordinator_key = d.join("main.coordinator.json");
    let session = |extra: &[&str]| {
        let mut args = vec![
            "session",
            "--roster",
            s(&roster),
            "--pin",
            &hash,
            "--coordinator-key",
            s(&coordinator_key),
            "--nats-url",
            &url,
            "--nats-dir",
            s(&nats_dir),
            "--deadline-secs",
            "30",
        ];
        args.extend_from_slice(extra);
        tessera(&args)
    };
    let out = session(&["keygen", "--parties", "p1,p2,p3", "--threshold", "2"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("Ethereum address 0x"), "{stdout}");
    let key = stdout
        .lines()
        .find_map(|l| l.strip_prefix("key "))
        .unwrap()
        .trim()
        .to_owned();
    // Signing needs the committee's auxiliary info, and aux info needs primes: both refused
    // by every node, with the reason.
    let payload = tessera_policy::Payload::Message {
        bytes: b"hi".to_vec(),
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let request = dev
        .request(key.parse().unwrap(), Vec::new(), payload, now)
        .unwrap();
    let approved = serde_json::json!({
        "request": request,
        "approvals": dev.approve(&request),
    });
    let request_file = d.join("request.json");
    std::fs::write(&request_file, approved.to_string()).unwrap();
    let out = session(&["sign", "--parties", "p1,p2", "--request", s(&request_file)]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("no auxiliary info for committee p1-p2-p3"),
        "{stderr}"
    );
    let out = session(&["aux", "--parties", "p1,p2,p3"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("prime pool is empty"), "{stderr}");
    // Another roster than the pinned one is refused before anything is sent.
    let mut args = vec!["--pin".to_owned(), "00".repeat(32)];
    args.extend(["keygen", "--parties", "p1,p2", "--threshold", "2"].map(String::from));
    let out = tessera(
        &[
            "session",
            "--roster",
            s(&roster),
            "--coordinator-key",
            s(&coordinator_key),
            "--nats-url",
            &url,
            "--nats-dir",
            s(&nats_dir),
        ]
        .into_iter()
        .chain(args.iter().map(String::as_str))
        .collect::<Vec<_>>(),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not the pinned"), "{stderr}");
    drop(node_processes);
    drop(server);
}

#[test]
fn demo_creates_a_key_and_signs_on_the_embedded_default() {
    let out = ok(&["demo"]);
    assert!(out.contains("[9/9]"), "{out}");
    // Each node's audit chain verifies; the two signers of each refused request recorded it.
    for party in ["p1", "p2", "p3"] {
        assert!(out.contains(&format!("      {party}: ")), "{out}");
    }
    assert_eq!(out.matches(" events verified (").count(), 3, "{out}");
    assert!(out.contains("INSECURE DEMO SHORTCUT"), "{out}");
    assert!(out.contains("Ethereum address 0x"), "{out}");
    // ECDSA online and child-key signatures, and the Taproot key's BIP-340 signatures.
    assert_eq!(out.matches("verified with k256").count(), 3, "{out}");
    assert!(out.contains("finalized key-path spend"), "{out}");
    assert!(out.contains("its address bcrt1p"), "{out}");
    assert!(out.contains("verified with ed25519-dalek"), "{out}");
    assert!(out.contains("(the key's address)"), "{out}");
    assert!(out.contains("signed transaction 0x02"), "{out}");
    // Every refusal comes from both signers, with the nodes' reason.
    assert_eq!(out.matches("refused by 2 signer(s)").count(), 4, "{out}");
    for reason in [
        "already signed",
        "per-request limit",
        "deny list",
        "needs 2 approvals",
    ] {
        assert!(out.contains(reason), "{reason}: {out}");
    }
    assert!(
        out.contains("in-memory transport, 0 frames refused"),
        "{out}"
    );
}

#[test]
fn demo_runs_over_a_development_broker() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _server = Server(
        Command::new(std::env::var("NATS_SERVER_BIN").unwrap_or_else(|_| "nats-server".into()))
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
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
    let url = format!("nats://127.0.0.1:{port}");
    let out = ok(&["demo", "--nats", &url]);
    assert!(
        out.contains(&format!("development broker at {url}")),
        "{out}"
    );
    assert_eq!(out.matches("verified with k256").count(), 3, "{out}");
    assert!(out.contains("verified with ed25519-dalek"), "{out}");
    assert_eq!(out.matches("refused by 2 signer(s)").count(), 4, "{out}");
    assert!(out.contains("NATS transport, 0 frames refused"), "{out}");
    // Nothing listening: a clear error, not a hang.
    drop(_server);
    let err = fails(&["demo", "--nats", &url]);
    assert!(err.contains("cannot start the local cluster"), "{err}");
}

#[test]
fn principals_keys_and_an_offline_policy_check() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Keys for an operator (Ed25519) and an approver with an Ethereum address.
    let key_line = |out: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix("key = "))
            .unwrap()
            .trim_matches('"')
            .to_owned()
    };
    let olivia = key_line(&ok(&["operator", "new", "--out", s(&d.join("olivia"))]));
    assert!(olivia.starts_with("ed25519:"), "{olivia}");
    assert_eq!(mode(&d.join("olivia.key.json")), 0o600);
    let ana = key_line(&ok(&[
        "operator",
        "new",
        "--ethereum",
        "--out",
        s(&d.join("ana")),
    ]));
    assert!(ana.starts_with("eth:0x"), "{ana}");
    assert_eq!(
        key_line(&ok(&["operator", "show", s(&d.join("ana.key.json"))])),
        ana
    );
    // Never overwritten.
    fails(&["operator", "new", "--out", s(&d.join("ana"))]);

    let policy = format!(
        r#"version = 1
revision = 1
[admin]
approvals = 1
[[principals]]
name = "olivia"
roles = ["operator"]
key = "{olivia}"
[[principals]]
name = "ana"
roles = ["approver"]
key = "{ana}"
[[principals]]
name = "ada"
roles = ["admin"]
key = "{}"
[[principals]]
name = "abe"
roles = ["admin"]
key = "{}"
[[rules]]
name = "treasury"
keys = ["*"]
approvals = {{ count = 1, roles = ["approver"] }}
[[rules.limits]]
asset = "eth:1"
per_request = "1000"
"#,
        tessera_policy::OperatorKey::generate_ed25519().public(),
        tessera_policy::OperatorKey::generate_ed25519().public(),
    );
    let file = d.join("policy.toml");
    std::fs::write(&file, &policy).unwrap();
    let out = ok(&["policy", "check", s(&file)]);
    let expected = tessera_policy::PolicyHash::of(policy.as_bytes()).to_string();
    assert!(
        out.contains(&format!("policy_pin = \"{expected}\"")),
        "{out}"
    );
    assert!(out.contains("principal  ana (approver) eth:0x"), "{out}");
    // An invalid policy names its problem.
    std::fs::write(&file, policy.replace("count = 1", "count = 5")).unwrap();
    let err = fails(&["policy", "check", s(&file)]);
    assert!(err.contains("treasury"), "{err}");
    // Valid for the nodes, but admins cannot approve requests through the coordinator's API:
    // refused, with what to change.
    let admins_approve = policy.replace(
        r#"count = 1, roles = ["approver"]"#,
        r#"count = 1, roles = ["admin"]"#,
    );
    assert_ne!(admins_approve, policy);
    std::fs::write(&file, admins_approve).unwrap();
    let err = fails(&["policy", "check", s(&file)]);
    assert!(
        err.contains("cannot be served by the coordinator's API"),
        "{err}"
    );
    assert!(err.contains("rule 'treasury' needs 1 approval(s)"), "{err}");
}

/// `tessera dev --spawn-nats` (3 nodes over a real permissioned nats-server, the coordinator
/// and its API on loopback, SQLite) driven by the CLI as its principals: an EIP-1559 transfer
/// submitted, approved by two approvers and signed; its sender recovers to the key's address.
#[test]
fn dev_runs_the_whole_request_flow_over_nats_through_the_cli() {
    use std::io::{BufRead, BufReader};

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let mut child = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["dev", "--spawn-nats", "--listen", &listen, "--dir", s(d)])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut banner = String::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        banner.push_str(&line);
        banner.push('\n');
        if line.contains("Press Ctrl-C") {
            break;
        }
    }
    let dev = Server(child);
    assert!(banner.contains("over nats-server at"), "{banner}");
    assert!(banner.contains("INSECURE DEV SHORTCUT"), "{banner}");
    // HTTPS with the development CA it printed; no other CA is trusted.
    let url = format!("https://{listen}");
    let ca = d.join("api-tls").join("ca.pem");
    assert!(
        banner.contains(&format!("export TESSERA_CA_CERT={}", ca.display())),
        "{banner}"
    );
    let as_principal = |name: &str, args: &[&str]| {
        let key = d.join(format!("{name}.key.json"));
        let mut all = vec![
            "--ca-cert",
            s(&ca),
            "--coordinator",
            &url,
            "--principal",
            name,
            "--key-file",
            s(&key),
        ];
        all.extend_from_slice(args);
        all.iter().map(|a| a.to_string()).collect::<Vec<_>>()
    };
    let run = |name: &str, command: &[&str], args: &[&str]| {
        let mut full: Vec<String> = command.iter().map(|c| c.to_string()).collect();
        full.extend(as_principal(name, args));
        tessera(&full.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let stdout = |out: &Output| String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = |out: &Output| String::from_utf8_lossy(&out.stderr).into_owned();

    let keys = run("aude", &["key", "list"], &[]);
    assert!(keys.status.success(), "{}", stderr(&keys));
    // Without the CA an https URL is refused before any call, with what to give; another CA
    // (a certificate for the same names from anyone else) is not trusted.
    let aude_key = d.join("aude.key.json");
    let plain = [
        "key",
        "list",
        "--coordinator",
        &url,
        "--principal",
        "aude",
        "--key-file",
        s(&aude_key),
    ];
    let no_ca = tessera(&plain);
    assert!(!no_ca.status.success());
    assert!(
        stderr(&no_ca).contains("needs the coordinator's CA certificate"),
        "{}",
        stderr(&no_ca)
    );
    let other = tessera_coordinator::tls::dev_certificates(
        &d.join("other-tls"),
        &["127.0.0.1".to_owned(), "localhost".to_owned()],
    )
    .unwrap();
    let mut wrong_ca = plain.to_vec();
    wrong_ca.extend(["--ca-cert", s(&other.ca)]);
    let refused = tessera(&wrong_ca);
    assert!(!refused.status.success(), "{}", stdout(&refused));
    assert!(
        stderr(&refused).to_lowercase().contains("certificate"),
        "{}",
        stderr(&refused)
    );
    let address = stdout(&keys)
        .split_whitespace()
        .find(|w| w.starts_with("0x"))
        .unwrap()
        .to_owned();

    // An admin proposes a refresh through the CLI and another approves it, which runs it
    // (every node gets a new share); the address stays, an operator may not propose, and the
    // signing below uses the refreshed shares.
    let proposed = run("ada", &["key", "refresh", "treasury"], &[]);
    assert!(proposed.status.success(), "{}", stderr(&proposed));
    let text = stdout(&proposed);
    assert!(text.contains("state    pending"), "{text}");
    let change = text
        .lines()
        .find_map(|l| l.strip_prefix("change   "))
        .expect("the change id")
        .trim()
        .to_owned();
    // `tessera key refresh` signed it for its proposer already: ada's approval is refused as
    // a second signature, and the change waits for another admin.
    assert!(text.contains("approved ada"), "{text}");
    let own = run("ada", &["key", "approve-change", &change], &["--yes"]);
    assert!(!own.status.success(), "the proposer signs once");
    assert!(stderr(&own).contains("already signed"), "{}", stderr(&own));
    // An approver signs nothing it was not shown and did not confirm, nor anything made under
    // another policy than the one it pinned.
    let shown = run("aude", &["policy", "show"], &[]);
    let pin = stdout(&shown)
        .lines()
        .find_map(|l| l.strip_prefix("policy_pin = \""))
        .and_then(|rest| rest.strip_suffix('"'))
        .expect("the policy pin")
        .to_owned();
    let unconfirmed = run("abe", &["key", "approve-change", &change], &[]);
    assert!(!unconfirmed.status.success());
    let text = stderr(&unconfirmed);
    assert!(text.contains("about to approve this key change"), "{text}");
    assert!(text.contains("operation refresh"), "{text}");
    assert!(text.contains("not signing without confirmation"), "{text}");
    let other_pin = "00".repeat(32);
    let mispinned = run(
        "abe",
        &["key", "approve-change", &change],
        &["--policy-pin", &other_pin, "--yes"],
    );
    assert!(!mispinned.status.success());
    assert!(
        stderr(&mispinned).contains("not the policy you pinned"),
        "{}",
        stderr(&mispinned)
    );
    let approved = run(
        "abe",
        &["key", "approve-change", &change],
        &["--policy-pin", &pin, "--yes"],
    );
    assert!(approved.status.success(), "{}", stderr(&approved));
    assert!(
        stdout(&approved).contains("state    applied"),
        "{}",
        stdout(&approved)
    );
    let listed = run("aude", &["key", "changes"], &[]);
    assert!(
        stdout(&listed).contains(&format!("{change} treasury applied refresh (by ada)")),
        "{}",
        stdout(&listed)
    );
    let refused = run("olivia", &["key", "refresh", "treasury"], &[]);
    assert!(!refused.status.success());
    let too_often = run(
        "ada",
        &["key", "schedule-refresh", "treasury"],
        &["--every", "10m"],
    );
    assert!(!too_often.status.success());
    assert!(
        stderr(&too_often).contains("too often"),
        "{}",
        stderr(&too_often)
    );
    let keys = run("aude", &["key", "list"], &[]);
    assert!(stdout(&keys).contains(&address), "{}", stdout(&keys));
    // The refresh made epoch 1, active everywhere, and every holder erased epoch 0.
    let shown = run("aude", &["key", "show", "treasury"], &[]);
    let text = stdout(&shown);
    assert!(
        text.contains("ready, epoch 1") && !text.contains("not confirmed erased"),
        "{text}"
    );
    // A backup of epoch 0 is stale now, as the coordinator tells `tessera backup list`.
    let key_id = text
        .lines()
        .find_map(|l| l.strip_prefix("key        treasury ("))
        .and_then(|rest| rest.strip_suffix(')'))
        .expect("the key id")
        .to_owned();
    // (Listing reads only the header: the signature and the secret do not matter here.)
    let unsigned = |_: &[u8; 32]| [0u8; 64];
    let officers = ["ana", "bo"].map(|n| {
        let recipient = age::x25519::Identity::generate().to_public();
        tessera_backup::Officer::parse(&format!("{n}={recipient}")).unwrap()
    });
    let old = tessera_backup::create(
        b"an old share",
        tessera_backup::Metadata {
            party: "p1".into(),
            key: key_id,
            public_key: "02".repeat(33),
            committee: "p1-p2-p3".into(),
            threshold: 2,
            epoch: 0,
            created_at: 1,
        },
        &officers,
        2,
        unsigned,
    )
    .unwrap();
    let file = d.join("old.backup.json");
    std::fs::write(&file, old.to_json()).unwrap();
    let listed = tessera(&[
        "backup",
        "list",
        s(&file),
        "--check-coordinator",
        &url,
        "--ca-cert",
        s(&ca),
        "--principal",
        "aude",
        "--key-file",
        s(&aude_key),
    ]);
    assert!(listed.status.success(), "{}", stderr(&listed));
    assert!(
        stdout(&listed).contains("STALE: the key is at epoch 1"),
        "{}",
        stdout(&listed)
    );

    let submit = |to: &str, wei: &str, nonce: &str| {
        run(
            "olivia",
            &["request", "submit"],
            &[
                "--yes",
                "--signing-key",
                "treasury",
                "--transfer-to",
                to,
                "--value-wei",
                wei,
                "--chain-id",
                "11155111",
                "--nonce",
                nonce,
            ],
        )
    };
    let out = submit(
        "0x6069a6c32cf691f5982febae4faf8a6f3ab2f0f6",
        "500000000000000000",
        "0",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let id = stdout(&out)
        .lines()
        .find_map(|l| l.strip_prefix("request"))
        .unwrap()
        .trim()
        .to_owned();
    assert!(
        stdout(&out).contains("pending_approval"),
        "{}",
        stdout(&out)
    );

    // Submitting signed the request as its submitter (the nodes require it), after checking
    // it locally; the submitter's signature is no approval, and it signs once.
    let shown = stderr(&out);
    assert!(
        shown.contains("about to sign this request as its submitter"),
        "{shown}"
    );
    assert!(
        shown.contains("transfer 500000000000000000 eth:11155111"),
        "{shown}"
    );
    assert!(
        shown
            .to_lowercase()
            .contains("to 0x6069a6c32cf691f5982febae4faf8a6f3ab2f0f6"),
        "{shown}"
    );
    // 21000 gas at 30 gwei.
    assert!(shown.contains("maximum fee 630000000000000 wei"), "{shown}");
    assert!(!stdout(&out).contains("has not signed"), "{}", stdout(&out));
    // The operator may not approve.
    let out = run("olivia", &["request", "approve"], &["--yes", &id]);
    assert!(stderr(&out).contains("403"), "{}", stderr(&out));
    // A key that is not the principal's is not authenticated.
    let mut forged = as_principal("ben", &["--yes", &id]);
    let ana_key = d.join("ana.key.json");
    let at = forged.iter().position(|a| a == "--key-file").unwrap() + 1;
    forged[at] = s(&ana_key).to_owned();
    let mut args = vec!["request".to_owned(), "approve".to_owned()];
    args.extend(forged);
    let out = tessera(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(stderr(&out).contains("401"), "{}", stderr(&out));

    // Not without confirmation, nor under another policy than the pinned one.
    let out = run("ana", &["request", "approve"], &[&id]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("not signing without confirmation"),
        "{}",
        stderr(&out)
    );
    let out = run(
        "ana",
        &["request", "approve"],
        &["--policy-pin", &other_pin, "--yes", &id],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("not the policy you pinned"),
        "{}",
        stderr(&out)
    );
    for approver in ["ana", "ben"] {
        let out = run(
            approver,
            &["request", "approve"],
            &["--policy-pin", &pin, "--yes", &id],
        );
        assert!(out.status.success(), "{}", stderr(&out));
        let shown = stderr(&out);
        assert!(shown.contains("about to approve this request"), "{shown}");
        assert!(
            shown.contains("transfer 500000000000000000 eth:11155111"),
            "{shown}"
        );
        assert!(shown.contains("maximum fee 630000000000000 wei"), "{shown}");
    }
    let started = Instant::now();
    let signed = loop {
        let out = run("aude", &["request", "show"], &[&id]);
        let text = stdout(&out);
        if text.contains("state     signed") {
            break text;
        }
        assert!(
            !text.contains("state     failed") && started.elapsed() < Duration::from_secs(120),
            "{text}"
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    let raw = signed
        .lines()
        .find_map(|l| l.strip_prefix("result    0x"))
        .unwrap();
    let sender = tessera_chain::recover_sender(&hex::decode(raw).unwrap()).unwrap();
    assert_eq!(tessera_chain::checksummed(&sender), address);

    // Taproot and Ed25519 keys through the CLI: an admin creates them, their addresses are
    // shown, a PSBT and a Solana transfer are submitted, approved and signed into network
    // transactions that Bitcoin Core's script interpreter and ed25519-dalek accept.
    let wait_signed = |id: &str| {
        let started = Instant::now();
        loop {
            let out = run("aude", &["request", "show"], &[id]);
            let text = stdout(&out);
            if text.contains("state     signed") {
                let raw = text
                    .lines()
                    .find_map(|l| l.strip_prefix("result    0x"))
                    .unwrap_or_else(|| panic!("no result: {text}"));
                break hex::decode(raw).unwrap();
            }
            assert!(
                !text.contains("state     failed") && started.elapsed() < Duration::from_secs(120),
                "{text}"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    };
    let submit_and_approve = |args: &[&str]| {
        let mut all = vec!["--yes"];
        all.extend_from_slice(args);
        let out = run("olivia", &["request", "submit"], &all);
        assert!(out.status.success(), "{}", stderr(&out));
        let id = stdout(&out)
            .lines()
            .find_map(|l| l.strip_prefix("request"))
            .unwrap()
            .trim()
            .to_owned();
        let mut shown = String::new();
        for approver in ["ana", "ben"] {
            let out = run(
                approver,
                &["request", "approve"],
                &["--policy-pin", &pin, "--yes", &id],
            );
            assert!(out.status.success(), "{}", stderr(&out));
            shown = stderr(&out);
        }
        (id, shown)
    };
    let key_address = |name: &str, chain: &str| {
        let out = run(
            "aude",
            &["key", "address"],
            &[name, "--chain", chain, "--network", "regtest", "--json"],
        );
        assert!(out.status.success(), "{}", stderr(&out));
        let view: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
        (
            hex::decode(view["public_key"].as_str().unwrap()).unwrap(),
            view["address"].as_str().unwrap().to_owned(),
        )
    };
    for (name, kind) in [("cold-btc", "taproot"), ("hot-sol", "ed25519")] {
        let out = run(
            "ada",
            &["key", "create"],
            &[
                "--name",
                name,
                "--committee",
                "p1,p2,p3",
                "--threshold",
                "2",
                "--kind",
                kind,
            ],
        );
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(
            stdout(&out).contains(&format!("kind     {kind}")),
            "{}",
            stdout(&out)
        );
    }
    let (output_key, btc_address) = key_address("cold-btc", "bitcoin");
    assert!(btc_address.starts_with("bcrt1p"), "{btc_address}");
    let own = tessera_chain::bitcoin::p2tr_script(&output_key).unwrap();
    let away = tessera_chain::bitcoin::p2wpkh_script(
        &hex::decode("0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798").unwrap(),
    )
    .unwrap();
    let spent_output = tessera_chain::bitcoin::SpentOutput {
        txid: [9; 32],
        vout: 1,
        value: 100_000,
        script_pubkey: own.clone(),
    };
    let psbt = tessera_chain::bitcoin::unsigned_psbt(
        std::slice::from_ref(&spent_output),
        &[(away, 60_000), (own.clone(), 39_000)],
    )
    .unwrap();
    let psbt_file = d.join("spend.psbt");
    std::fs::write(&psbt_file, &psbt).unwrap();
    let (id, shown) = submit_and_approve(&[
        "--signing-key",
        "cold-btc",
        "--psbt",
        s(&psbt_file),
        "--network",
        "regtest",
    ]);
    for says in [
        "pay 60000 sat to btc:regtest:bcrt1q",
        "change 39000 sat",
        "fee 1000 sat",
    ] {
        assert!(shown.contains(says), "{says}: {shown}");
    }
    let tx = wait_signed(&id);
    tessera_chain::testing::consensus_verifies(&tx, &[spent_output])
        .expect("the CLI's Taproot spend is valid by consensus rules");

    let (sol_key, sol_address) = key_address("hot-sol", "solana");
    let to = tessera_chain::solana::address(&[5; 32]);
    let blockhash = tessera_chain::solana::address(&[6; 32]);
    let (id, shown) = submit_and_approve(&[
        "--signing-key",
        "hot-sol",
        "--solana-transfer",
        &to,
        "--lamports",
        "1000000",
        "--recent-blockhash",
        &blockhash,
    ]);
    assert!(shown.contains(&format!("from {sol_address}")), "{shown}");
    let tx = wait_signed(&id);
    let key = ed25519_dalek::VerifyingKey::from_bytes(&sol_key.try_into().unwrap()).unwrap();
    let signature = ed25519_dalek::Signature::from_slice(&tx[1..65]).unwrap();
    key.verify_strict(&tx[65..], &signature)
        .expect("the CLI's Solana transfer is signed by the key");
    // A key of another kind refuses the payload before anyone approves.
    let out = run(
        "olivia",
        &["request", "submit"],
        &["--yes", "--signing-key", "hot-sol", "--message", "hi"],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("asks for ecdsa signatures"),
        "{}",
        stderr(&out)
    );

    // Denied by policy at submission, with the reason.
    let out = submit("0x000000000000000000000000000000000000dead", "1", "1");
    assert!(!out.status.success());
    assert!(stderr(&out).contains("deny list"), "{}", stderr(&out));

    // The auditor reads the request's history through the API; olivia may not.
    let out = run("aude", &["audit", "events"], &["--request", &id]);
    assert!(out.status.success(), "{}", stderr(&out));
    for action in [
        "request.submitted",
        "request.approved",
        "session.started",
        "request.signed",
    ] {
        assert!(stdout(&out).contains(action), "{action}: {}", stdout(&out));
    }
    assert!(stdout(&out).contains("verified"), "{}", stdout(&out));
    let out = run("olivia", &["audit", "events"], &[]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("may not read the audit log"),
        "{}",
        stderr(&out)
    );

    // Ctrl-C stops it cleanly.
    let pid = dev.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
    let rest: String = lines.map_while(Result::ok).collect::<Vec<_>>().join("\n");
    assert!(rest.contains("stopped"), "{rest}");

    // Every audit log of the run (the coordinator's and the three nodes') verifies against the
    // roster, and tells the request's story from both sides.
    let nodes = d.join("nodes");
    let roster = nodes.join("roster.json");
    let logs: Vec<String> = ["coordinator", "p1", "p2", "p3"]
        .iter()
        .map(|e| s(&nodes.join("audit").join(format!("{e}.audit.jsonl"))).to_owned())
        .collect();
    let mut verify: Vec<&str> = vec!["audit", "verify", "--roster", s(&roster)];
    verify.extend(logs.iter().map(String::as_str));
    let out = tessera(&verify);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    for emitter in ["coordinator:local", "p1", "p2", "p3"] {
        assert!(stdout(&out).contains(emitter), "{}", stdout(&out));
    }
    let mut show: Vec<&str> = vec!["audit", "show", "--roster", s(&roster), "--request", &id];
    show.extend(logs.iter().map(String::as_str));
    let out = tessera(&show);
    assert!(out.status.success(), "{}", stderr(&out));
    let story = stdout(&out);
    for action in [
        "request.submitted",
        "request.approved",
        "session.joined",
        "request.signed",
    ] {
        assert!(story.contains(action), "{action}: {story}");
    }

    // A deleted event breaks the chain at the event after it, and verify says where.
    let coordinator_log = &logs[0];
    let text = std::fs::read_to_string(coordinator_log).unwrap();
    let mut kept: Vec<&str> = text.lines().collect();
    kept.remove(2);
    let tampered = d.join("tampered.audit.jsonl");
    std::fs::write(&tampered, kept.join("\n") + "\n").unwrap();
    let out = tessera(&["audit", "verify", "--roster", s(&roster), s(&tampered)]);
    assert!(!out.status.success());
    let error = stderr(&out);
    assert!(
        error.contains("BROKEN at record 3") && error.contains("expected seq 3"),
        "{error}"
    );
}
