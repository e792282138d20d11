//! Online signing through the coordinator, for each key kind: from the approval that makes a
//! request signable to its result, verified against the key. The coordinator runs in this
//! process on SQLite (its service API, without HTTP) over the cluster's network, and signs
//! from its pool of presignatures (ECDSA) and committed nonces (FROST), as it does in use.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tessera_audit::{AuditLog, LogOptions};
use tessera_chain::bitcoin::{key_path_signatures, BitcoinNetwork};
use tessera_coordinator::service::{Coordinator, CoordinatorSettings, Submit};
use tessera_coordinator::store::RequestState;
use tessera_coordinator::Store;
use tessera_node::local::LocalCluster;
use tessera_policy::dev::DevPolicy;
use tessera_policy::{Approval, Payload};
use tessera_wire::{KeyKind, RequestId};

use super::{frost_payload, progress, BenchArgs, Measurement, MESSAGE};

/// The steps, one per key kind, and the raw library's step each compares with.
pub(super) const API_STEPS: [(KeyKind, &str, &str); 3] = [
    (KeyKind::Ecdsa, "api online sign", "online sign"),
    (
        KeyKind::Taproot,
        "taproot api online sign",
        "taproot online sign",
    ),
    (
        KeyKind::Ed25519,
        "ed25519 api online sign",
        "ed25519 online sign",
    ),
];

/// How long the pool may take to fill (ECDSA presignatures take most of a second each).
const POOL_DEADLINE: Duration = Duration::from_secs(600);

/// How often the benchmark asks whether the request is signed: far below what it measures.
const POLL: Duration = Duration::from_micros(250);

/// Starts a coordinator over `cluster` (its database in `dir`), makes one key of each kind on
/// the whole committee, fills each key's pool with `args.runs` presignatures or committed
/// nonces, then times `args.runs` requests per kind through the coordinator.
pub(super) async fn bench_api(
    cluster: &LocalCluster,
    args: &BenchArgs,
    name: &'static str,
    dir: &Path,
) -> Result<Vec<Measurement>> {
    let dev = cluster
        .dev
        .as_ref()
        .context("the local cluster has no development policy")?;
    let store = Store::connect(&format!(
        "sqlite://{}",
        dir.join("coordinator.db").display()
    ))
    .await?;
    let (starter, control) = cluster.shared();
    let audit = Arc::new(AuditLog::open(
        starter.audit_signer(),
        LogOptions {
            file: Some(cluster.audit_dir().join("coordinator.audit.jsonl")),
            ..Default::default()
        },
    )?);
    let settings = CoordinatorSettings {
        presignature_pool_target: args.runs,
        presignature_refill_interval: Duration::from_millis(200),
        ..CoordinatorSettings::default()
    };
    let coordinator = Coordinator::start(
        store,
        starter,
        control,
        cluster.policy.clone(),
        settings,
        audit,
    )
    .await?;
    // The nodes made the committee's auxiliary info in the benchmark's first step.
    coordinator
        .register_committee_ready(cluster.parties.clone())
        .await?;
    let mut out = Vec::new();
    for (kind, step, _) in API_STEPS {
        let samples = timed_requests(&coordinator, dev, cluster, args, kind, name, step).await;
        out.push(Measurement::new(step, name, &samples?));
    }
    coordinator.shutdown().await;
    Ok(out)
}

/// One key of `kind`, its pool filled, and `args.runs` requests signed from it, timed.
async fn timed_requests(
    coordinator: &Arc<Coordinator>,
    dev: &DevPolicy,
    cluster: &LocalCluster,
    args: &BenchArgs,
    kind: KeyKind,
    name: &str,
    step: &str,
) -> Result<Vec<Duration>> {
    let key = coordinator
        .create_key(
            &format!("bench-{kind}"),
            cluster.parties.clone(),
            args.t,
            kind,
        )
        .await?;
    let bar = progress(format!("{name}: {step} (fills the pool)"), args.runs);
    let began = Instant::now();
    loop {
        let ready = coordinator.presignatures_ready(&key.name).await?;
        bar.set_position(ready as u64);
        if ready >= args.runs {
            break;
        }
        if began.elapsed() > POOL_DEADLINE {
            bail!(
                "the pool of key {} held {ready} after {POOL_DEADLINE:?}",
                key.name
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bar.finish_and_clear();
    let internal = hex::decode(key.public_key.as_deref().context("a generated key")?)?;
    let verifying = hex::decode(
        coordinator
            .key_address(&key.name, &[], None, BitcoinNetwork::Regtest)
            .await?
            .public_key,
    )?;
    let bar = progress(format!("{name}: {step}"), args.runs);
    let mut samples = Vec::new();
    for _ in 0..args.runs {
        let payload = match kind {
            KeyKind::Ecdsa => Payload::Message {
                bytes: MESSAGE.to_vec(),
            },
            _ => frost_payload(kind, &internal)?,
        };
        samples.push(sign_one(coordinator, dev, &key.name, payload, &verifying).await?);
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(samples)
}

/// Submits `payload` as the operator and has the first approver approve it (before the
/// clock starts: people work ahead of signing); times the second approval (which makes the
/// request signable) to the signed request, and verifies its result against `verifying`.
async fn sign_one(
    coordinator: &Coordinator,
    dev: &DevPolicy,
    key: &str,
    payload: Payload,
    verifying: &[u8],
) -> Result<Duration> {
    let operator = &dev.operator;
    let view = coordinator
        .submit(
            &operator.name,
            Submit {
                id: RequestId::random(),
                key: key.to_owned(),
                path: Vec::new(),
                payload,
                lifetime_secs: None,
            },
        )
        .await?;
    let digest = view.request.request_digest();
    let derived = view.request.check()?;
    let sign = |name: &str, key| Approval::sign(&digest, name, key).signature;
    coordinator
        .sign_as_submitter(&operator.name, view.id, sign(&operator.name, &operator.key))
        .await?;
    let [first, last] = &dev.approvers[..] else {
        bail!("the development policy has two approvers");
    };
    coordinator
        .approve(&first.name, view.id, sign(&first.name, &first.key))
        .await?;
    let t = Instant::now();
    coordinator
        .approve(&last.name, view.id, sign(&last.name, &last.key))
        .await?;
    let signed = loop {
        let now = coordinator.get(view.id).await?;
        match now.state {
            RequestState::Signed => break now,
            RequestState::PendingApproval | RequestState::Approved | RequestState::Signing => {
                tokio::time::sleep(POLL).await
            }
            other => bail!(
                "request {} ended {other}: {}",
                view.id,
                now.error.unwrap_or_default()
            ),
        }
    };
    let elapsed = t.elapsed();
    let result = hex::decode(signed.result.context("a signed request has a result")?)?;
    let signatures = match derived.kind() {
        KeyKind::Ecdsa => result
            .get(..64)
            .context("an r || s || v signature")?
            .to_vec(),
        KeyKind::Taproot => key_path_signatures(&result)?.concat(),
        KeyKind::Ed25519 => result,
    };
    if !derived.verify(verifying, &signatures) {
        bail!("request {}: the signature does not verify", view.id);
    }
    Ok(elapsed)
}
