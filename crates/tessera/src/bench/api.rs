//! Online signing through the coordinator, for each key kind: from the approval that makes a
//! request signable to its result, verified against the key. The coordinator runs in this
//! process on SQLite (its service API, without HTTP) over the cluster's network, and signs
//! from its pool of presignatures (ECDSA) and committed nonces (FROST), as it does in use.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;
use tessera_audit::{AuditLog, LogOptions};
use tessera_chain::bitcoin::{key_path_signatures, BitcoinNetwork};
use tessera_coordinator::service::{Coordinator, CoordinatorSettings, Submit};
use tessera_coordinator::store::RequestState;
use tessera_coordinator::Store;
use tessera_node::local::LocalCluster;
use tessera_policy::dev::DevPolicy;
use tessera_policy::{Approval, Payload};
use tessera_telemetry::StageTotal;
use tessera_wire::{KeyKind, RequestId};
use tokio::sync::broadcast::error::RecvError;

use super::{frost_payload, progress, BenchArgs, Measurement, MESSAGE};

/// The steps, one per key kind, and the raw library's step each compares with.
pub(super) const API_STEPS: [(KeyKind, &str, &str); 3] = [
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
    (KeyKind::Ecdsa, "api online sign", "online sign"),
];

/// Key generation through the coordinator, one step per key kind, and the library's step
/// each compares with.
pub(super) const DKG_STEPS: [(KeyKind, &str, &str); 3] = [
    (KeyKind::Ecdsa, "api dkg", "dkg"),
    (KeyKind::Taproot, "taproot api dkg", "taproot dkg"),
    (KeyKind::Ed25519, "ed25519 api dkg", "ed25519 dkg"),
];

/// How long one request may take to be signed.
const SIGNED_DEADLINE: Duration = Duration::from_secs(60);

/// How long the pool may take to fill (ECDSA presignatures take most of a second each).
const POOL_DEADLINE: Duration = Duration::from_secs(600);

/// The mean time of one stage of an API step, at the coordinator or at the nodes (over every
/// signer's sessions).
#[derive(Serialize)]
pub(super) struct StageReport {
    pub step: &'static str,
    pub network: &'static str,
    /// `coordinator` or `nodes`.
    pub service: &'static str,
    pub operation: &'static str,
    pub stage: &'static str,
    pub mean_ms: f64,
    pub observations: u64,
}

/// The nodes' stage timings added up (their observations and times).
fn node_totals(cluster: &LocalCluster) -> Vec<StageTotal> {
    let mut sum: Vec<StageTotal> = Vec::new();
    for node in &cluster.nodes {
        for total in node.metrics().stages().totals() {
            match sum
                .iter_mut()
                .find(|s| s.operation == total.operation && s.stage == total.stage)
            {
                Some(s) => {
                    s.count += total.count;
                    s.seconds += total.seconds;
                }
                None => sum.push(total),
            }
        }
    }
    sum
}

/// Starts a coordinator over `cluster` (its database in `dir`), makes one key of each kind on
/// the whole committee, fills each key's pool with `args.runs` presignatures or committed
/// nonces, then times `args.runs` requests per kind through the coordinator, and where their
/// time went at the coordinator and at the nodes.
pub(super) async fn bench_api(
    cluster: &LocalCluster,
    args: &BenchArgs,
    name: &'static str,
    dir: &Path,
) -> Result<(Vec<Measurement>, Vec<StageReport>)> {
    let dev = cluster
        .dev
        .as_ref()
        .context("the local cluster has no development policy")?;
    let audit = Arc::new(AuditLog::open(
        cluster.shared().0.audit_signer(),
        LogOptions {
            file: Some(cluster.audit_dir().join("coordinator.audit.jsonl")),
            ..Default::default()
        },
    )?);
    let mut out = timed_key_generations(cluster, args, name, dir, audit.clone()).await?;
    let settings = CoordinatorSettings {
        presignature_pool_target: args.runs,
        presignature_refill_interval: Duration::from_millis(200),
        ..CoordinatorSettings::default()
    };
    let coordinator = start(cluster, &dir.join("coordinator.db"), audit, settings).await?;
    let mut stages = Vec::new();
    for (kind, step, _) in API_STEPS {
        let (samples, spent) =
            timed_requests(&coordinator, dev, cluster, args, kind, name, step).await?;
        out.push(Measurement::new(step, name, &samples));
        stages.extend(spent);
    }
    coordinator.shutdown().await;
    Ok((out, stages))
}

/// The stages of approvals and signing requests observed between `before` and now, at the
/// coordinator and at the nodes (their sessions added up).
fn stage_reports(
    step: &'static str,
    network: &'static str,
    before: &(Vec<StageTotal>, Vec<StageTotal>),
    coordinator: &Coordinator,
    cluster: &LocalCluster,
) -> Vec<StageReport> {
    let at_coordinator = StageTotal::since(&before.0, coordinator.counters().stages().totals());
    let at_nodes = StageTotal::since(&before.1, node_totals(cluster));
    let services = [("coordinator", at_coordinator), ("nodes", at_nodes)];
    services
        .into_iter()
        .flat_map(|(service, totals)| {
            totals
                .into_iter()
                // The pool's refills run beside the timed requests; they are not timed.
                .filter(|t| matches!(t.operation, "approve" | "request" | "online_sign" | "sign"))
                .map(move |t| StageReport {
                    step,
                    network,
                    service,
                    operation: t.operation,
                    stage: t.stage,
                    mean_ms: t.mean_ms(),
                    observations: t.count,
                })
        })
        .collect()
}

/// A coordinator over `cluster` on SQLite at `db`, its committee registered as ready (the
/// nodes made its auxiliary info in the benchmark's first step).
async fn start(
    cluster: &LocalCluster,
    db: &Path,
    audit: Arc<AuditLog>,
    settings: CoordinatorSettings,
) -> Result<Arc<Coordinator>> {
    let store = Store::connect(&format!("sqlite://{}", db.display())).await?;
    let (starter, control) = cluster.shared();
    let coordinator = Coordinator::start(
        store,
        starter,
        control,
        cluster.policy.clone(),
        settings,
        audit,
    )
    .await?;
    coordinator
        .register_committee_ready(cluster.parties.clone())
        .await?;
    Ok(coordinator)
}

/// Key generation for the existing committee through the coordinator, `args.runs` keys of
/// each kind: from the call that creates the key to its address. On a coordinator of its
/// own without a pool (a pool would start filling for every new key).
async fn timed_key_generations(
    cluster: &LocalCluster,
    args: &BenchArgs,
    name: &'static str,
    dir: &Path,
    audit: Arc<AuditLog>,
) -> Result<Vec<Measurement>> {
    let coordinator = start(
        cluster,
        &dir.join("coordinator-keys.db"),
        audit,
        CoordinatorSettings::default(),
    )
    .await?;
    let mut out = Vec::new();
    for (kind, step, _) in DKG_STEPS {
        let bar = progress(format!("{name}: {step}"), args.runs);
        let mut samples = Vec::new();
        for i in 0..args.runs {
            let t = Instant::now();
            let key = coordinator
                .create_key(
                    &format!("bench-{kind}-{i}"),
                    cluster.parties.clone(),
                    args.t,
                    kind,
                )
                .await?;
            let address = coordinator
                .key_address(&key.name, &[], None, BitcoinNetwork::Regtest)
                .await?;
            samples.push(t.elapsed());
            if address.address.is_empty() {
                bail!("key {} has no address", key.name);
            }
            bar.inc(1);
        }
        bar.finish_and_clear();
        out.push(Measurement::new(step, name, &samples));
    }
    coordinator.shutdown().await;
    Ok(out)
}

/// The library's step a step through the coordinator compares with.
pub(super) fn raw_step(step: &str) -> &str {
    API_STEPS
        .iter()
        .chain(&DKG_STEPS)
        .find(|(_, api, _)| *api == step)
        .map_or(step, |(_, _, raw)| *raw)
}

/// One key of `kind`, its pool filled, and `args.runs` requests signed from it, timed.
async fn timed_requests(
    coordinator: &Arc<Coordinator>,
    dev: &DevPolicy,
    cluster: &LocalCluster,
    args: &BenchArgs,
    kind: KeyKind,
    name: &'static str,
    step: &'static str,
) -> Result<(Vec<Duration>, Vec<StageReport>)> {
    let key = coordinator
        .create_key(
            &format!("bench-{kind}"),
            cluster.parties.clone(),
            args.t,
            kind,
        )
        .await?;
    fill_pool(
        coordinator,
        &key.name,
        args.runs,
        format!("{name}: {step} (fills the pool)"),
    )
    .await?;
    let internal = hex::decode(key.public_key.as_deref().context("a generated key")?)?;
    let verifying = hex::decode(
        coordinator
            .key_address(&key.name, &[], None, BitcoinNetwork::Regtest)
            .await?
            .public_key,
    )?;
    let bar = progress(format!("{name}: {step}"), args.runs);
    let mut samples = Vec::new();
    let before = (
        coordinator.counters().stages().totals(),
        node_totals(cluster),
    );
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
    let stages = stage_reports(step, name, &before, coordinator, cluster);
    // The next step runs on a quiet machine, not beside this key's refills (an ECDSA
    // presignature takes most of a second of both signers' CPU).
    fill_pool(
        coordinator,
        &key.name,
        args.runs,
        format!("{name}: {step} (refills)"),
    )
    .await?;
    Ok((samples, stages))
}

/// Waits until `key`'s pool holds `target` presignatures or committed nonces.
async fn fill_pool(
    coordinator: &Coordinator,
    key: &str,
    target: usize,
    label: String,
) -> Result<()> {
    let bar = progress(label, target);
    let began = Instant::now();
    loop {
        let ready = coordinator.presignatures_ready(key).await?;
        bar.set_position(ready as u64);
        if ready >= target {
            break;
        }
        if began.elapsed() > POOL_DEADLINE {
            bail!("the pool of key {key} held {ready} after {POOL_DEADLINE:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bar.finish_and_clear();
    Ok(())
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
    // Told when the request is signed, as a client subscribed to its requests is (polling
    // would take the signers' CPU).
    let mut updates = coordinator.subscribe();
    let t = Instant::now();
    coordinator
        .approve(&last.name, view.id, sign(&last.name, &last.key))
        .await?;
    let state = loop {
        match tokio::time::timeout(SIGNED_DEADLINE, updates.recv()).await {
            Ok(Ok(update)) if update.id == view.id && update.state.is_final() => {
                break update.state
            }
            Ok(Ok(_)) => {}
            // Fell behind: read the request itself.
            Ok(Err(RecvError::Lagged(_))) => {
                let now = coordinator.get(view.id).await?;
                if now.state.is_final() {
                    break now.state;
                }
            }
            Ok(Err(RecvError::Closed)) => bail!("the coordinator stopped"),
            Err(_) => bail!(
                "request {} was not signed within {SIGNED_DEADLINE:?}",
                view.id
            ),
        }
    };
    let elapsed = t.elapsed();
    let signed = coordinator.get(view.id).await?;
    if state != RequestState::Signed {
        bail!(
            "request {} ended {state}: {}",
            view.id,
            signed.error.unwrap_or_default()
        );
    }
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
