//! Three `tessera-node` processes over a real, permissioned nats-server, driven by a roster
//! coordinator: auxiliary info, key generation, presigning, online signing of an approved
//! EIP-1559 transfer (its sender recovers to the key) and full signing of a message; then a
//! node killed and restarted (its used presignature stays used, its fresh one survives, what
//! it signed stays signed), a node down (named, the rest sign) and a graceful shutdown.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use tessera_chain::{Eip1559Request, UnsignedTx, U256};
use tessera_channel::identity::{AdminKey, CoordinatorKey, PartyIdentity};
use tessera_channel::{Roster, SignedRoster};
use tessera_control::nats::NatsControl;
use tessera_control::{ControlChannel, Operation, Output, SpendChain, Starter, StarterError};
use tessera_mpc::fixtures::insecure_test_primes;
use tessera_mpc::PrimePool;
use tessera_policy::dev::{DevPolicy, DEV_CHAIN_ID};
use tessera_policy::{Approval, Payload, SignRequest};
use tessera_store::FileStore;
use tessera_transport::nats::server::LocalNatsServer;
use tessera_transport::nats::{connect_coordinator, NatsMetrics};
use tessera_wire::{ClusterId, KeyId, PartyId, SessionId};

const PASSPHRASE: &str = "correct horse battery staple for the node store";

struct NodeProcess {
    party: PartyId,
    dir: PathBuf,
    child: Option<Child>,
    starts: usize,
}

impl NodeProcess {
    fn config(&self) -> PathBuf {
        self.dir.join("node.toml")
    }

    fn log(&self) -> PathBuf {
        self.dir.join(format!("node-{}.log", self.starts))
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tessera-node"));
        cmd.arg("--config")
            .arg(self.config())
            .env("TESSERA_NODE_PRIMES_TARGET", "0")
            .env("TESSERA_NODE_ROUND_TIMEOUT_SECS", "5")
            .env("RUST_LOG", "info")
            .env_remove("TESSERA_NODE_PASSPHRASE");
        cmd
    }

    fn start(&mut self) {
        self.starts += 1;
        let log = std::fs::File::create(self.log()).unwrap();
        let child = self
            .command()
            .arg("run")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.log_text().contains("serving session starts") {
            assert!(
                Instant::now() < deadline,
                "{} did not start:\n{}",
                self.party,
                self.log_text()
            );
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("{} exited with {status}:\n{}", self.party, self.log_text());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(self.log()).unwrap_or_default()
    }

    /// The metrics server's base URL, from the address its start-up line logs.
    fn metrics_url(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let log = strip_ansi(&self.log_text());
            let addr = log
                .lines()
                .filter(|l| l.contains("serving /metrics"))
                .find_map(|l| l.split_whitespace().find_map(|w| w.strip_prefix("addr=")));
            if let Some(addr) = addr {
                return format!("http://{addr}");
            }
            assert!(
                Instant::now() < deadline,
                "{} serves no metrics:\n{log}",
                self.party
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn kill(&mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `text` without terminal colour codes (`ESC [ ... m`).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Writes `dir/node.toml` (with `extra` appended) and the passphrase file.
fn write_node_config(
    dir: &Path,
    server: &LocalNatsServer,
    p: PartyId,
    pin: &str,
    policy_pin: &str,
    extra: &str,
) {
    let files = server.provisioned().client(p).unwrap();
    let config = format!(
        r#"identity = "identity.json"
roster = "../roster.json"
roster_pin = "{pin}"
policy = "../policy.toml"
policy_pin = "{policy_pin}"
store = "store"
passphrase_file = "passphrase"

[nats]
url = "{url}"
ca = "{ca}"
cert = "{cert}"
key = "{key}"
{extra}"#,
        url = server.url(),
        ca = server.provisioned().ca_cert.display(),
        cert = files.cert.display(),
        key = files.key.display(),
    );
    std::fs::write(dir.join("node.toml"), config).unwrap();
    std::fs::write(dir.join("passphrase"), format!("{PASSPHRASE}\n")).unwrap();
}

/// A fresh approved request for `payload` under the development policy.
fn approved(dev: &DevPolicy, key: KeyId, payload: Payload) -> (SignRequest, Vec<Approval>) {
    let request = dev.request(key, Vec::new(), payload, now()).unwrap();
    let approvals = dev.approve(&request);
    (request, approvals)
}

fn message(text: &[u8]) -> Payload {
    Payload::Message {
        bytes: text.to_vec(),
    }
}

async fn expect_signature(
    starter: &Starter,
    control: &dyn ControlChannel,
    parties: &[PartyId],
    operation: Operation,
    public_key: &[u8],
) -> Vec<u8> {
    let digest = match &operation {
        Operation::Sign { request, .. } | Operation::OnlineSign { request, .. } => request.digest,
        _ => panic!("not a signing operation"),
    };
    let output = starter
        .run(control, parties, operation, DEADLINE)
        .await
        .unwrap();
    assert!(k256_verifies(public_key, &digest, &output), "{output:?}");
    let Output::Signature { signature } = output else {
        unreachable!("verified above")
    };
    signature
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_node_processes_over_a_permissioned_nats_server() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = ClusterId::new("proc-test").unwrap();
    let parties = [P1, P2, P3];

    // Operator set-up: identities, a coordinator key, an admin-signed roster.
    let mut identities = Vec::new();
    let mut publics = Vec::new();
    for &p in &parties {
        let nkey = nkeys::KeyPair::new_user();
        let id = PartyIdentity::generate(p, cluster.clone(), Some(nkey.seed().unwrap()));
        publics.push(id.public(Some(nkey.public_key())));
        identities.push(id);
    }
    let coordinator_nkey = nkeys::KeyPair::new_user();
    let coordinator_seed = coordinator_nkey.seed().unwrap();
    let coordinator =
        CoordinatorKey::generate("ops", cluster.clone(), Some(coordinator_seed.clone())).unwrap();
    let roster = Roster::build(cluster.clone(), 1, &publics)
        .unwrap()
        .with_coordinators(vec![coordinator.public(Some(coordinator_nkey.public_key()))])
        .unwrap();
    let mut signed = SignedRoster::new(roster.clone());
    signed.sign(&AdminKey::generate());
    std::fs::write(dir.path().join("roster.json"), signed.to_json()).unwrap();
    let pin = roster.hash().to_string();
    let dev = DevPolicy::generate().unwrap();
    std::fs::write(dir.path().join("policy.toml"), dev.document.bytes()).unwrap();
    let policy_pin = dev.document.hash().to_string();
    let server = LocalNatsServer::start_in(&roster, &dir.path().join("nats")).unwrap();

    // Each node: its files, `tessera-node init`, and (test only) fixture primes in its pool.
    let all_primes = insecure_test_primes();
    let mut nodes = Vec::new();
    for (i, identity) in identities.iter().enumerate() {
        let p = identity.party();
        let node_dir = dir.path().join(p.to_string());
        std::fs::create_dir_all(&node_dir).unwrap();
        std::fs::write(
            node_dir.join("identity.json"),
            identity.to_json().as_bytes(),
        )
        .unwrap();
        // p1 serves metrics and health on a port of its choosing, and is ready only with a
        // prime set in its pool.
        let extra = if p == P1 {
            "\n[metrics]\nlisten = \"127.0.0.1:0\"\nprimes_floor = 1\n"
        } else {
            ""
        };
        write_node_config(&node_dir, &server, p, &pin, &policy_pin, extra);
        let mut node = NodeProcess {
            party: p,
            dir: node_dir.clone(),
            child: None,
            starts: 0,
        };
        let init = node.command().arg("init").output().unwrap();
        assert!(
            init.status.success(),
            "{}",
            String::from_utf8_lossy(&init.stderr)
        );
        let store = FileStore::open(&node_dir.join("store"), PASSPHRASE.as_bytes()).unwrap();
        PrimePool::new(Arc::new(store)).put(&all_primes[i]).unwrap();
        node.start();
        nodes.push(node);
    }

    let config = server
        .coordinator_config(&roster, "ops", &coordinator_seed)
        .unwrap();
    let client = connect_coordinator(&config, Arc::new(NatsMetrics::default()))
        .await
        .unwrap();
    let control = NatsControl::new(client, cluster.clone());
    let starter = Starter::new(coordinator, roster.clone()).unwrap();

    // p1's health: alive, and ready (broker connected, store readable, one prime set).
    let metrics_url = nodes[0].metrics_url();
    let http = reqwest::Client::new();
    let get = |path: &str| http.get(format!("{metrics_url}{path}")).send();
    assert_eq!(get("/healthz").await.unwrap().status(), 200);
    let ready = get("/readyz").await.unwrap();
    assert_eq!(ready.status(), 200, "{:?}", ready.text().await);

    // Committee set-up (real auxiliary info from the fixture primes) and a 2-of-3 key.
    starter
        .run(
            &control,
            &parties,
            Operation::AuxInfo,
            Duration::from_secs(300),
        )
        .await
        .unwrap();
    // Auxiliary info took p1's prime set: below its floor, so not ready, and counted.
    let ready = get("/readyz").await.unwrap();
    assert_eq!(ready.status(), 503);
    let body = ready.text().await.unwrap();
    assert_eq!(body, "primes: 0 set(s) ready, floor 1\n");
    let text = get("/metrics").await.unwrap().text().await.unwrap();
    for line in [
        "tessera_node_sessions_total{kind=\"aux_info\",outcome=\"ok\"} 1",
        "tessera_node_primes_ready 0",
        "tessera_node_broker_connected 1",
        "tessera_node_nats_permission_violations_total{connection=\"transport\"} 0",
        "tessera_node_nats_permission_violations_total{connection=\"control\"} 0",
    ] {
        assert!(text.lines().any(|l| l == line), "{line}:\n{text}");
    }
    let key = KeyId::random();
    let Output::Keygen { public_key, .. } = starter
        .run(
            &control,
            &parties,
            Operation::Keygen {
                key,
                threshold: 2,
                kind: tessera_wire::KeyKind::Ecdsa,
            },
            DEADLINE,
        )
        .await
        .unwrap()
    else {
        panic!("keygen returns the public key");
    };

    // Two presignatures for p1 and p2; online signing with the first; full signing.
    let mut presignatures = Vec::new();
    for _ in 0..2 {
        let Output::Presign { presignature } = starter
            .run(&control, &[P1, P2], Operation::Presign { key }, DEADLINE)
            .await
            .unwrap()
        else {
            panic!("presign names the presignature");
        };
        presignatures.push(presignature);
    }
    // The test is the coordinator: a transfer takes the next place in the key's spend chain
    // (a message, which moves nothing, takes none).
    let chain = std::sync::Mutex::new(SpendChain::new());
    let online = |presignature: SessionId, payload: Payload| {
        let (request, approvals) = approved(&dev, key, payload);
        let link = matches!(request.payload, Payload::EthereumTx { .. })
            .then(|| chain.lock().unwrap().link(&request, now()));
        Operation::OnlineSign {
            presignature,
            request,
            approvals,
            link,
        }
    };
    let full = |payload: Payload| {
        let (request, approvals) = approved(&dev, key, payload);
        Operation::Sign {
            request,
            approvals,
            link: None,
        }
    };
    // An EIP-1559 transfer on Sepolia, online: the signed transaction's sender is the key.
    let to = [0x42; 20];
    let raw = Eip1559Request::transfer(DEV_CHAIN_ID, 0, to, U256::from(1_000_000_000u64)).encode();
    let signature = expect_signature(
        &starter,
        &control,
        &[P1, P2],
        online(presignatures[0], Payload::EthereumTx { raw: raw.clone() }),
        &public_key,
    )
    .await;
    let signed_tx = UnsignedTx::decode(&raw)
        .unwrap()
        .assemble(&signature, &public_key)
        .unwrap();
    assert_eq!(
        tessera_chain::recover_sender(&signed_tx).unwrap(),
        tessera_chain::address(&public_key).unwrap()
    );
    let signed_before_restart = full(message(b"full: proof of reserves"));
    expect_signature(
        &starter,
        &control,
        &[P1, P3],
        signed_before_restart.clone(),
        &public_key,
    )
    .await;

    // p1 is killed and restarted: the used presignature stays used, the fresh one survives,
    // and the request it signed stays signed (its ledger is durable).
    nodes[0].kill();
    nodes[0].start();
    let err = starter
        .run(
            &control,
            &[P1, P2],
            online(presignatures[0], message(b"again")),
            DEADLINE,
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("already used"), "{err}");
    let err = starter
        .run(&control, &[P1, P2], signed_before_restart, DEADLINE)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("already signed"), "{err}");
    expect_signature(
        &starter,
        &control,
        &[P1, P2],
        online(presignatures[1], message(b"after the restart")),
        &public_key,
    )
    .await;

    // p3 is killed while a full signing session with p1 runs: the session fails within the
    // round deadline with p3 named, and p1 and p2 then sign the same request.
    let began = Instant::now();
    let interrupted = full(message(b"interrupted"));
    let session = starter.run(
        &control,
        &[P1, P3],
        interrupted.clone(),
        Duration::from_secs(30),
    );
    let kill_p3 = async {
        tokio::time::sleep(Duration::from_millis(150)).await;
        nodes[2].kill();
    };
    let (result, ()) = tokio::join!(session, kill_p3);
    let err = result.unwrap_err();
    assert!(began.elapsed() < Duration::from_secs(30));
    assert!(matches!(err, StarterError::Failed { .. }), "{err}");
    assert_eq!(err.blamed(), vec![P3], "{err}");
    expect_signature(&starter, &control, &[P2, P1], interrupted, &public_key).await;

    // Graceful shutdown on SIGTERM.
    let pid = nodes[1].child.as_ref().unwrap().id();
    let term = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let status = nodes[1].child.take().unwrap().wait().unwrap();
    assert!(status.success(), "{status}");
    let log = nodes[1].log_text();
    assert!(
        log.contains("SIGTERM: shutting down") && log.contains("stopped"),
        "{log}"
    );

    // No log line carries the store passphrase.
    for node in &nodes {
        for start in 1..=node.starts {
            let text = std::fs::read_to_string(node.dir.join(format!("node-{start}.log"))).unwrap();
            assert!(!text.contains(PASSPHRASE), "{}", node.party);
        }
    }
}
