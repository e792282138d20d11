//! The whole request flow with every log at TRACE: a real key generation, a presignature pool,
//! an approved transfer signed online and a message signed on a child key. Afterwards:
//!
//! - the audit logs of the coordinator and of every node verify against the roster, and tell
//!   who submitted, who approved, which parties joined which session;
//! - no log line and no audit event contains any secret the nodes hold (key shares, Paillier
//!   primes and their CRT secrets, presignature nonces, the prime pool, the store passphrase),
//!   in hex, base64 or decimal.

use crate::service_support;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use service_support::*;
use tessera_audit::{file, Filter, TrustedKeys, Verifier};
use tessera_chain::{Eip1559Request, U256};
use tessera_coordinator::service::{CoordinatorSettings, Submit};
use tessera_coordinator::store::RequestState;
use tessera_policy::dev::DEV_CHAIN_ID;
use tessera_policy::Payload;
use tessera_store::SecretStore;
use tessera_wire::RequestId;

/// Every log line of the process, at TRACE.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

/// Field names under which the nodes' records keep secrets: the share (`x`), Paillier primes
/// (`p`, `q`) and the CRT values derived from them, presignature nonces (`k`, `chi`).
const SECRET_FIELDS: &[&str] = &["x", "p", "q", "phi_n1", "phi_n2", "k", "chi"];

/// Collects the bytes of every secret leaf of `value`.
fn secrets_in(value: &Value, under_secret: bool, out: &mut BTreeSet<Vec<u8>>) {
    match value {
        Value::Object(map) => {
            for (name, v) in map {
                let secret = under_secret || SECRET_FIELDS.contains(&name.as_str());
                // {radix: 16, value: "…"} big integers keep their digits under "value".
                secrets_in(v, secret, out);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| secrets_in(v, under_secret, out)),
        Value::String(text) if under_secret => {
            let digits = text.trim_start_matches("0x");
            if digits.len() >= 32 {
                if let Ok(bytes) = hex::decode(digits) {
                    out.insert(bytes);
                }
            }
        }
        _ => {}
    }
}

/// Every secret in every record of every node's store.
fn node_secrets(cluster: &Cluster) -> BTreeSet<Vec<u8>> {
    let mut out = BTreeSet::new();
    for node in &cluster.nodes {
        let store = node.state().store();
        for name in store.list().unwrap() {
            let bytes = store.get(&name).unwrap();
            if let Ok(value) = serde_json::from_slice::<Value>(&bytes) {
                secrets_in(&value, false, &mut out);
            }
        }
    }
    out
}

/// Big-endian bytes as decimal digits.
fn decimal(bytes: &[u8]) -> String {
    let mut digits = vec![0u8]; // little-endian base 10
    for &byte in bytes {
        let mut carry = u32::from(byte);
        for d in digits.iter_mut() {
            let v = u32::from(*d) * 256 + carry;
            *d = (v % 10) as u8;
            carry = v / 10;
        }
        while carry > 0 {
            digits.push((carry % 10) as u8);
            carry /= 10;
        }
    }
    digits.iter().rev().map(|d| char::from(b'0' + d)).collect()
}

/// The texts a leak of `secret` would contain: its hex (both cases), base64 (standard and
/// URL-safe, at each of the three alignments) and decimal, whole and as a 16-byte window from
/// the middle (a truncated print).
fn leak_patterns(secret: &[u8]) -> Vec<String> {
    use base64::Engine as _;
    let engines = [
        base64::engine::general_purpose::STANDARD_NO_PAD,
        base64::engine::general_purpose::URL_SAFE_NO_PAD,
    ];
    let mut out = Vec::new();
    let middle = secret.len() / 2;
    let window = &secret[middle.saturating_sub(8)..(middle + 8).min(secret.len())];
    for part in [secret, window] {
        out.push(hex::encode(part));
        out.push(hex::encode_upper(part));
        for shift in 0..3.min(part.len()) {
            for engine in &engines {
                // Drop the last, partial character group: it depends on what follows.
                let text = engine.encode(&part[shift..]);
                out.push(text[..text.len() - text.len() % 4].to_owned());
            }
        }
    }
    let digits = decimal(secret);
    out.push(digits[digits.len() / 4..digits.len() / 4 + 30.min(digits.len() / 2)].to_owned());
    out.retain(|p| p.len() >= 16);
    out
}

fn transfer(nonce: u64, wei: u128) -> Payload {
    Payload::EthereumTx {
        raw: Eip1559Request::transfer(DEV_CHAIN_ID, nonce, [0x42; 20], U256::from(wei)).encode(),
    }
}

async fn sign_approved(
    c: &tessera_coordinator::service::Coordinator,
    cluster: &Cluster,
    key: &str,
    path: Vec<u32>,
    payload: Payload,
) -> RequestId {
    let pending = c
        .submit(
            "olivia",
            Submit {
                id: RequestId::random(),
                key: key.to_owned(),
                path,
                payload,
                lifetime_secs: None,
            },
        )
        .await
        .unwrap();
    let mut view = c
        .sign_as_submitter("olivia", pending.id, cluster.approval("olivia", &pending))
        .await
        .unwrap();
    for approver in ["ana", "ben"] {
        if view.state == RequestState::PendingApproval {
            view = c
                .approve(approver, pending.id, cluster.approval(approver, &pending))
                .await
                .unwrap();
        }
    }
    wait_for(c, pending.id, RequestState::Signed).await;
    pending.id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audited_flow_verifies_and_no_secret_reaches_a_log_or_an_event() {
    let captured = Captured::default();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("trace"))
        .with_writer(captured.clone())
        .with_ansi(false)
        .init();

    let db = Db::sqlite();
    let cluster = Cluster::start().await;
    let settings = CoordinatorSettings {
        presignature_pool_target: 1,
        presignature_refill_interval: Duration::from_millis(200),
        ..settings()
    };
    let c = coordinator(&db, &cluster, cluster.control(), settings).await;
    let key = fixture_key(&c, "treasury").await;
    wait_for_presignature(&c, &key).await;
    // The secrets as they are before signing (the presignature is consumed by it).
    let mut secrets = node_secrets(&cluster);
    let online = sign_approved(&c, &cluster, &key, vec![], transfer(0, 1_000)).await;
    let full = sign_approved(
        &c,
        &cluster,
        &key,
        vec![0, 7],
        Payload::Message {
            bytes: b"audited".to_vec(),
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    secrets.extend(node_secrets(&cluster));
    c.shutdown().await;

    // The audit logs: the coordinator's and each node's verify against the roster.
    let mut logs: Vec<PathBuf> = std::fs::read_dir(cluster.audit_dir())
        .unwrap()
        .chain(std::fs::read_dir(cluster.node_audit_dir()).unwrap())
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".audit.jsonl"))
        .collect();
    logs.sort();
    assert!(
        logs.len() >= 4,
        "a log per node and the coordinator's: {logs:?}"
    );
    let keys = TrustedKeys::from_roster(&cluster.roster).unwrap();
    let mut records = Vec::new();
    for path in &logs {
        let items = file::read(path).unwrap();
        Verifier::verify_all(
            keys.clone(),
            items.iter().map(|i| Ok(i.as_ref().unwrap().clone())),
        )
        .unwrap_or_else(|b| panic!("{}: {b}", path.display()));
        records.extend(items.into_iter().map(Result::unwrap));
    }
    let about = |id: RequestId| {
        let filter = Filter {
            request: Some(id.to_string()),
            ..Default::default()
        };
        records
            .iter()
            .filter(|r| filter.matches(r))
            .map(|r| format!("{} {} {}", r.emitter, r.actor, r.action))
            .collect::<BTreeSet<String>>()
    };
    let online_events = about(online);
    for expected in [
        "coordinator:local olivia request.submitted",
        "coordinator:local ana request.approved",
        "coordinator:local ben request.approved",
        "coordinator:local system request.signed",
        "coordinator:local system session.started",
        "coordinator:local system session.ended",
    ] {
        assert!(
            online_events.contains(expected),
            "{expected} in {online_events:#?}"
        );
    }
    let joined: Vec<&String> = online_events
        .iter()
        .filter(|e| e.ends_with("session.joined"))
        .collect();
    assert_eq!(joined.len(), 2, "both signers joined: {online_events:#?}");
    assert!(about(full).iter().any(|e| e.ends_with("session.ended")));
    assert!(
        records.iter().any(|r| r.action == "presignature.consumed"),
        "the online signature consumed a presignature"
    );

    // No secret in any log line or audit event.
    let mut haystack = captured.0.lock().unwrap().clone();
    for path in &logs {
        haystack.extend(std::fs::read(path).unwrap());
    }
    let haystack = String::from_utf8_lossy(&haystack).into_owned();
    assert!(
        haystack.len() > 100_000,
        "TRACE logging captured the flow ({} bytes)",
        haystack.len()
    );
    let passphrase = tessera_node::local::LOCAL_PASSPHRASE;
    secrets.insert(passphrase.to_vec());
    assert!(
        secrets.len() >= 3 * 3,
        "shares, primes and presignatures of 3 nodes"
    );
    // The scanner finds each encoding of a secret when one is planted (so a clean scan means
    // something).
    {
        use base64::Engine as _;
        let secret = secrets
            .iter()
            .find(|s| s.len() == 32)
            .expect("a share scalar");
        for planted in [
            format!("share={}", hex::encode(secret)),
            format!("share={:?}", hex::encode_upper(&secret[4..24])),
            format!(
                "b64:{}",
                base64::engine::general_purpose::STANDARD.encode(&secret[1..])
            ),
            format!(
                "url:{}",
                base64::engine::general_purpose::URL_SAFE.encode(secret)
            ),
            format!("dec {}", decimal(secret)),
        ] {
            assert!(
                leak_patterns(secret)
                    .iter()
                    .any(|p| planted.contains(p.as_str())),
                "the scanner misses {planted}"
            );
        }
    }
    let mut checked = 0;
    for secret in &secrets {
        for pattern in leak_patterns(secret) {
            assert!(
                !haystack.contains(&pattern),
                "a secret leaked into the logs or audit events: {pattern}"
            );
            checked += 1;
        }
    }
    assert!(
        !haystack.contains(std::str::from_utf8(passphrase).unwrap()),
        "the store passphrase leaked"
    );
    eprintln!(
        "scanned {} bytes of logs and events for {} secrets ({checked} patterns)",
        haystack.len(),
        secrets.len()
    );
}
