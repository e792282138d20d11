//! `tessera bench`: times each threshold step through Tessera (nodes, signed control messages,
//! sealed channels; in memory and over a real nats-server) and through the raw library in one
//! process with no transport, and prints the overhead ratios.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::now_unix;
use anyhow::{bail, Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use tessera_control::{Operation, Output};
use tessera_mpc::fixtures::insecure_test_primes;
use tessera_mpc::reshare::{Kind, ReshareSetup};
use tessera_mpc::{baseline, KeyShare, PrimeSet, SigningInput};
use tessera_node::local::{LocalCluster, LocalOptions, Network};
use tessera_policy::dev::DevPolicy;
use tessera_policy::{Approval, Payload, SignRequest};
use tessera_store::KdfParams;
use tessera_wire::{KeyId, KeyKind, PartyId, SessionId};

use crate::eth::verify_with_k256;

mod api;

/// Options of `tessera bench`.
#[derive(Args)]
pub struct BenchArgs {
    /// Parties in the committee (2 to 6: the bundled test primes cover six parties).
    #[arg(long, default_value_t = 3)]
    n: u16,
    /// Signers needed.
    #[arg(long, default_value_t = 2)]
    t: u16,
    /// Timed runs of each fast step (key generation, presigning, online and full signing).
    /// Auxiliary info runs once per network (it takes tens of seconds), a refresh (which renews
    /// the auxiliary info) at most three times.
    #[arg(long, default_value_t = 10)]
    runs: usize,
    /// Also run over a real nats-server started on loopback (mTLS, NKeys, permissions).
    #[arg(long)]
    spawn_nats: bool,
    /// Write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

const DEADLINE: Duration = Duration::from_secs(600);
const MESSAGE: &[u8] = b"tessera bench: transfer 1 ETH";

/// What both sides sign: the message's EIP-191 preimage, hashed with Keccak-256.
fn signing_input() -> SigningInput {
    SigningInput::Keccak256(tessera_chain::personal_message_preimage(MESSAGE))
}

/// A fresh approved request for `MESSAGE` (made before the clock starts: operators and
/// approvers work ahead of signing).
fn approved(dev: &DevPolicy, key: KeyId) -> Result<(SignRequest, Vec<Approval>)> {
    let payload = Payload::Message {
        bytes: MESSAGE.to_vec(),
    };
    let request = dev.request(key, Vec::new(), payload, now_unix())?;
    let approvals = dev.approve(&request);
    Ok((request, approvals))
}

/// One step's timings on one network.
#[derive(Serialize)]
struct Measurement {
    step: &'static str,
    network: &'static str,
    runs: usize,
    min_ms: f64,
    median_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    samples_ms: Vec<f64>,
}

impl Measurement {
    fn new(step: &'static str, network: &'static str, samples: &[Duration]) -> Self {
        let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        ms.sort_by(f64::total_cmp);
        // Nearest rank.
        let rank = |q: f64| ms[((q * ms.len() as f64).ceil() as usize).clamp(1, ms.len()) - 1];
        Measurement {
            step,
            network,
            runs: ms.len(),
            min_ms: ms[0],
            median_ms: rank(0.5),
            p90_ms: rank(0.9),
            p99_ms: rank(0.99),
            samples_ms: samples.iter().map(|d| d.as_secs_f64() * 1e3).collect(),
        }
    }
}

/// The machine a report was measured on.
#[derive(Serialize)]
struct Machine {
    cores: usize,
    cpu: String,
    memory_mib: u64,
    os: String,
}

impl Machine {
    /// This machine, as Linux describes it (`/proc`); what cannot be read is left empty.
    fn this() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|rest| rest.split_once(':'))
            .map(|(_, name)| name.trim().to_owned())
            .unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory_kib: u64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0);
        Machine {
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            cpu,
            memory_mib: memory_kib / 1024,
            os: std::env::consts::OS.to_owned(),
        }
    }
}

#[derive(Serialize)]
struct Report {
    machine: Machine,
    n: u16,
    t: u16,
    runs: usize,
    note: &'static str,
    measurements: Vec<Measurement>,
    /// Median through Tessera / median of the raw library, per step and network.
    overhead: Vec<Overhead>,
    /// Where the api steps' time goes: the mean of each stage at the coordinator and at the
    /// nodes.
    stages: Vec<api::StageReport>,
}

#[derive(Serialize)]
struct Overhead {
    step: &'static str,
    network: &'static str,
    ratio: f64,
}

const STEPS: [&str; 22] = [
    "dkg",
    api::DKG_STEPS[0].1,
    "aux info",
    "presign",
    "online sign",
    "full sign",
    "refresh",
    TAPROOT_STEPS.dkg,
    api::DKG_STEPS[1].1,
    TAPROOT_STEPS.commit,
    TAPROOT_STEPS.online,
    TAPROOT_STEPS.full,
    TAPROOT_STEPS.refresh,
    ED25519_STEPS.dkg,
    api::DKG_STEPS[2].1,
    ED25519_STEPS.commit,
    ED25519_STEPS.online,
    ED25519_STEPS.full,
    ED25519_STEPS.refresh,
    api::API_STEPS[2].1,
    api::API_STEPS[0].1,
    api::API_STEPS[1].1,
];

/// The step names of one FROST scheme.
struct FrostSteps {
    kind: KeyKind,
    dkg: &'static str,
    commit: &'static str,
    online: &'static str,
    full: &'static str,
    refresh: &'static str,
}

const TAPROOT_STEPS: FrostSteps = FrostSteps {
    kind: KeyKind::Taproot,
    dkg: "taproot dkg",
    commit: "taproot commit",
    online: "taproot online sign",
    full: "taproot full sign",
    refresh: "taproot refresh",
};

const ED25519_STEPS: FrostSteps = FrostSteps {
    kind: KeyKind::Ed25519,
    dkg: "ed25519 dkg",
    commit: "ed25519 commit",
    online: "ed25519 online sign",
    full: "ed25519 full sign",
    refresh: "ed25519 refresh",
};

/// A fresh approved request for `payload` with `key`'s master key.
fn approved_payload(
    dev: &DevPolicy,
    key: KeyId,
    payload: Payload,
) -> Result<(SignRequest, Vec<Approval>)> {
    let request = dev.request(key, Vec::new(), payload, now_unix())?;
    let approvals = dev.approve(&request);
    Ok((request, approvals))
}

/// What the benchmark signs with a FROST key: for Taproot a PSBT spending one of the key's
/// outputs (decoded, its sighash derived and its outputs checked by every signer), for Ed25519
/// the benchmark's message as raw bytes.
fn frost_payload(kind: KeyKind, public_key: &[u8]) -> Result<Payload> {
    use tessera_chain::bitcoin::{self as btc, SpentOutput};
    Ok(match kind {
        KeyKind::Taproot => {
            let output_key = btc::taproot_output_key(public_key)?;
            let own = btc::p2tr_script(&output_key)?;
            let spent = SpentOutput {
                txid: rand_txid(),
                vout: 0,
                value: 100_000,
                script_pubkey: own.clone(),
            };
            Payload::BitcoinPsbt {
                network: btc::BitcoinNetwork::Regtest,
                psbt: btc::unsigned_psbt(&[spent], &[(own, 99_000)])?,
                signer: output_key.to_vec(),
            }
        }
        _ => Payload::Ed25519Message {
            bytes: MESSAGE.to_vec(),
        },
    })
}

/// A random transaction id, so that no two benchmark PSBTs are alike.
fn rand_txid() -> [u8; 32] {
    let mut id = [0u8; 32];
    id[..16].copy_from_slice(&KeyId::random().0);
    id[16..].copy_from_slice(&KeyId::random().0);
    id
}

/// The public key signatures of `kind`'s master key verify against.
fn frost_verifying_key(kind: KeyKind, public_key: &[u8]) -> Result<Vec<u8>> {
    Ok(match kind {
        KeyKind::Taproot => tessera_chain::bitcoin::taproot_output_key(public_key)?.to_vec(),
        _ => public_key.to_vec(),
    })
}

/// Times `runs` refreshes of `key` on its committee through its whole life (session,
/// activation, closure), unapproved as a scheduled refresh runs.
async fn refreshes(
    cluster: &LocalCluster,
    key: KeyId,
    runs: usize,
    label: String,
) -> Result<Vec<Duration>> {
    let mut samples = Vec::new();
    let bar = progress(label, runs);
    for _ in 0..runs {
        let record = cluster.node(cluster.parties[0]).state().key_record(key)?;
        let setup = ReshareSetup {
            kind: Kind::Refresh,
            key_id: key,
            key_kind: record.kind,
            epoch: record.epoch,
            key: record.share.setup_key(),
            old_committee: record.committee.clone(),
            dealers: record.committee.clone(),
            new_committee: record.committee.clone(),
            new_threshold: record.threshold,
            authorisation: [0; 32],
        };
        let t = Instant::now();
        cluster.rotate(key, setup, None, DEADLINE).await?;
        samples.push(t.elapsed());
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(samples)
}

/// FROST key generation, committed nonces, one-round and full signing of scheme `steps` over
/// `cluster`, each signature verified; then refreshes (FROST keys have no auxiliary info, so
/// no prime set is used) and one more verified signature with the refreshed shares.
async fn bench_frost(
    cluster: &LocalCluster,
    args: &BenchArgs,
    name: &'static str,
    steps: &FrostSteps,
) -> Result<Vec<Measurement>> {
    let committee = cluster.parties.clone();
    let signers: Vec<PartyId> = committee[..usize::from(args.t)].to_vec();
    let dev = cluster
        .dev
        .as_ref()
        .context("the local cluster has no development policy")?;
    let mut out = Vec::new();
    let mut samples = Vec::new();
    let mut first = None;
    let bar = progress(format!("{name}: {}", steps.dkg), args.runs);
    for _ in 0..args.runs {
        let key = KeyId::random();
        let t = Instant::now();
        let output = cluster
            .run(
                &committee,
                Operation::Keygen {
                    key,
                    threshold: args.t,
                    kind: steps.kind,
                },
                DEADLINE,
            )
            .await?;
        samples.push(t.elapsed());
        let Output::Keygen { public_key, .. } = output else {
            bail!("key generation returned no public key");
        };
        first.get_or_insert((key, public_key));
        bar.inc(1);
    }
    bar.finish_and_clear();
    out.push(Measurement::new(steps.dkg, name, &samples));
    let (key, public_key) = first.context("at least one run")?;
    let verifying = frost_verifying_key(steps.kind, &public_key)?;

    let mut samples = Vec::new();
    let mut committed = Vec::new();
    let bar = progress(
        format!("{name}: {} (fills the pool)", steps.commit),
        args.runs,
    );
    for _ in 0..args.runs {
        let t = Instant::now();
        let output = cluster
            .run(&signers, Operation::Presign { key }, DEADLINE)
            .await?;
        samples.push(t.elapsed());
        let Output::Presign { presignature } = output else {
            bail!("the commit session returned nothing");
        };
        committed.push(presignature);
        bar.inc(1);
    }
    bar.finish_and_clear();
    out.push(Measurement::new(steps.commit, name, &samples));

    for (step, pool) in [(steps.online, Some(committed)), (steps.full, None)] {
        let mut samples = Vec::new();
        let bar = progress(format!("{name}: {step}"), args.runs);
        let material: Vec<Option<SessionId>> = match pool {
            Some(ids) => ids.into_iter().map(Some).collect(),
            None => vec![None; args.runs],
        };
        for presignature in material {
            let (request, approvals) =
                approved_payload(dev, key, frost_payload(steps.kind, &public_key)?)?;
            let derived = request.check()?;
            let t = Instant::now();
            // As a coordinator does (a PSBT spends: its signing takes a place in the key's
            // spend chain).
            let output = cluster
                .sign(&signers, &request, approvals, presignature, DEADLINE)
                .await?;
            let Output::Signature { signature } = &output else {
                bail!("signing returned no signature");
            };
            if !derived.verify(&verifying, signature) {
                bail!("a {} signature does not verify", steps.kind);
            }
            samples.push(t.elapsed());
            bar.inc(1);
        }
        bar.finish_and_clear();
        out.push(Measurement::new(step, name, &samples));
    }
    let runs = args.runs.min(REFRESH_RUNS);
    let samples = refreshes(cluster, key, runs, format!("{name}: {}", steps.refresh)).await?;
    let (request, approvals) = approved_payload(dev, key, frost_payload(steps.kind, &public_key)?)?;
    let derived = request.check()?;
    let output = cluster
        .sign(&signers, &request, approvals, None, DEADLINE)
        .await?;
    match &output {
        Output::Signature { signature } if derived.verify(&verifying, signature) => {}
        _ => bail!("signing with a refreshed {} key failed", steps.kind),
    }
    out.push(Measurement::new(steps.refresh, name, &samples));
    Ok(out)
}

/// The same steps with `givre` alone, in one process.
async fn bench_frost_raw<C: tessera_mpc::frost::Scheme>(
    args: &BenchArgs,
    steps: &FrostSteps,
) -> Result<Vec<Measurement>> {
    let signers: Vec<u16> = (0..args.t).collect();
    let message: Vec<u8> = match steps.kind {
        KeyKind::Taproot => rand_txid().to_vec(),
        _ => MESSAGE.to_vec(),
    };
    let mut out = Vec::new();
    let mut samples = Vec::new();
    let mut first = None;
    for _ in 0..args.runs {
        let t = Instant::now();
        let shares = baseline::frost_keygen::<C>(args.n, args.t).await?;
        samples.push(t.elapsed());
        first.get_or_insert(shares);
    }
    out.push(Measurement::new(steps.dkg, "raw", &samples));
    let shares = first.context("at least one run")?;
    let mut samples = Vec::new();
    let mut pool = Vec::new();
    for _ in 0..args.runs {
        let t = Instant::now();
        pool.push(baseline::frost_commit_all::<C>(&shares, &signers));
        samples.push(t.elapsed());
    }
    out.push(Measurement::new(steps.commit, "raw", &samples));
    let mut samples = Vec::new();
    for committed in pool {
        let t = Instant::now();
        baseline::frost_online_sign::<C>(&shares, &signers, committed, &message)?;
        samples.push(t.elapsed());
    }
    out.push(Measurement::new(steps.online, "raw", &samples));
    let mut samples = Vec::new();
    for _ in 0..args.runs {
        let t = Instant::now();
        baseline::frost_sign::<C>(&shares, &signers, &message).await?;
        samples.push(t.elapsed());
    }
    out.push(Measurement::new(steps.full, "raw", &samples));
    Ok(out)
}

pub fn run(args: BenchArgs) -> Result<()> {
    if args.t < 2 || args.t > args.n || args.n > 6 {
        bail!("need 2 <= t <= n <= 6 (the bundled test primes cover six parties)");
    }
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(bench(args))
}

fn progress(label: String, total: usize) -> ProgressBar {
    let bar = ProgressBar::new(total as u64);
    bar.set_style(
        ProgressStyle::with_template("  {msg:<34} [{bar:30}] {pos}/{len} {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message(label);
    bar
}

/// Timed refreshes at most: each renews the auxiliary info, which takes seconds.
const REFRESH_RUNS: usize = 3;

/// The fixture prime sets for `n` parties (INSECURE, public; benchmark keys are throwaway).
fn primes_for(n: u16) -> Vec<PrimeSet> {
    let all = insecure_test_primes();
    (0..usize::from(n))
        .map(|i| all[i % all.len()].clone())
        .collect()
}

async fn bench(args: BenchArgs) -> Result<()> {
    let machine = Machine::this();
    println!(
        "machine: {} cores, {}, {} MiB memory",
        machine.cores,
        if machine.cpu.is_empty() {
            "unknown CPU"
        } else {
            &machine.cpu
        },
        machine.memory_mib
    );
    println!(
        "tessera bench: {t}-of-{n}, {runs} runs per step (auxiliary info: 1 run, refresh: at most 3)\n\
         INSECURE: auxiliary info uses the public test primes bundled with Tessera; the keys are \
         throwaway.\n",
        t = args.t,
        n = args.n,
        runs = args.runs
    );
    let mut measurements = Vec::new();
    let mut stages = Vec::new();
    let mut networks = vec![("memory", Network::Memory)];
    if args.spawn_nats {
        networks.push(("nats", Network::SpawnNats));
    }
    for (name, network) in networks {
        println!("{name}:");
        let (timed, spent) = bench_tessera(&args, name, network).await?;
        measurements.extend(timed);
        stages.extend(spent);
    }
    println!("raw library (one process, no transport):");
    measurements.extend(bench_raw(&args).await?);

    let overhead: Vec<Overhead> = measurements
        .iter()
        .filter(|m| m.network != "raw")
        .filter_map(|m| {
            // Through the coordinator, a step compares with the library's step it runs.
            let raw_step = api::raw_step(m.step);
            let raw = measurements
                .iter()
                .find(|r| r.network == "raw" && r.step == raw_step)?;
            Some(Overhead {
                step: m.step,
                network: m.network,
                ratio: m.median_ms / raw.median_ms,
            })
        })
        .collect();
    print_table(&measurements, &overhead);
    print_stages(&stages);
    let report = Report {
        machine,
        n: args.n,
        t: args.t,
        runs: args.runs,
        note: "milliseconds; Tessera steps are timed at the starter, from signing the start to \
               the checked outcome of every party (signatures verified with k256); Tessera signs approved \
               EIP-191 message requests with the ECDSA key, PSBTs spending one output with the \
               Taproot key (through the key's spend chain, as a coordinator signs) and raw \
               messages with the Ed25519 key, which every node re-checks (decoding, digest, \
               policy, two approvals, durable request ledger); raw (cggmp24, givre) signs the \
               same preimage, a 32-byte sighash for Taproot and the same message for Ed25519; \
               the api steps run through the coordinator (in process, SQLite, its pool of \
               presignatures and committed nonces), from the last approval to the signed \
               request's result verified against the key, and compare with the library's \
               online signing; the api dkg steps create keys on the ready committee through a \
               coordinator, from the call to the key's address",
        measurements,
        overhead,
        stages,
    };
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
        println!("\nwrote {}", path.display());
    }
    Ok(())
}

async fn bench_tessera(
    args: &BenchArgs,
    name: &'static str,
    network: Network,
) -> Result<(Vec<Measurement>, Vec<api::StageReport>)> {
    let dir = tempfile::tempdir()?;
    let options = LocalOptions {
        parties: args.n,
        network,
        kdf: KdfParams::MINIMUM,
        ..LocalOptions::default()
    };
    let cluster = LocalCluster::start(dir.path(), options).await?;
    let committee = cluster.parties.clone();
    let signers: Vec<PartyId> = committee[..usize::from(args.t)].to_vec();
    let mut out = Vec::new();

    for (node, primes) in cluster.nodes.iter().zip(primes_for(args.n)) {
        node.primes().put(&primes)?;
    }
    let bar = progress(format!("{name}: aux info"), 1);
    let t = Instant::now();
    cluster
        .run(&committee, Operation::AuxInfo, DEADLINE)
        .await?;
    out.push(Measurement::new("aux info", name, &[t.elapsed()]));
    bar.inc(1);
    bar.finish_and_clear();

    let mut samples = Vec::new();
    let mut keys = Vec::new();
    let bar = progress(format!("{name}: dkg"), args.runs);
    for _ in 0..args.runs {
        let key = KeyId::random();
        let t = Instant::now();
        let output = cluster
            .run(
                &committee,
                Operation::Keygen {
                    key,
                    threshold: args.t,
                    kind: KeyKind::Ecdsa,
                },
                DEADLINE,
            )
            .await?;
        samples.push(t.elapsed());
        let Output::Keygen { public_key, .. } = output else {
            bail!("key generation returned no public key");
        };
        keys.push((key, public_key));
        bar.inc(1);
    }
    bar.finish_and_clear();
    out.push(Measurement::new("dkg", name, &samples));
    let (key, public_key) = keys[0].clone();

    let mut samples = Vec::new();
    let mut presignatures = Vec::new();
    let bar = progress(format!("{name}: presign (fills the pool)"), args.runs);
    for _ in 0..args.runs {
        let t = Instant::now();
        let output = cluster
            .run(&signers, Operation::Presign { key }, DEADLINE)
            .await?;
        samples.push(t.elapsed());
        let Output::Presign { presignature } = output else {
            bail!("presigning returned no presignature");
        };
        presignatures.push(presignature);
        bar.inc(1);
    }
    bar.finish_and_clear();
    out.push(Measurement::new("presign", name, &samples));

    let dev = cluster
        .dev
        .as_ref()
        .context("the local cluster has no development policy")?;
    let digest = signing_input().digest();
    let mut samples = Vec::new();
    let bar = progress(format!("{name}: online sign (warm pool)"), args.runs);
    for presignature in presignatures {
        let (request, approvals) = approved(dev, key)?;
        // A message moves nothing, so it takes no place in the key's spend chain.
        let operation = Operation::OnlineSign {
            presignature,
            request,
            approvals,
            link: None,
        };
        let t = Instant::now();
        let output = cluster.run(&signers, operation, DEADLINE).await?;
        let Output::Signature { signature } = &output else {
            bail!("online signing returned no signature");
        };
        verify_with_k256(&public_key, &digest, signature)?;
        samples.push(t.elapsed());
        bar.inc(1);
    }
    bar.finish_and_clear();
    out.push(Measurement::new("online sign", name, &samples));

    let mut samples = Vec::new();
    let bar = progress(format!("{name}: full sign"), args.runs);
    for _ in 0..args.runs {
        let (request, approvals) = approved(dev, key)?;
        let operation = Operation::Sign {
            request,
            approvals,
            link: None,
        };
        let t = Instant::now();
        let output = cluster.run(&signers, operation, DEADLINE).await?;
        let Output::Signature { signature } = &output else {
            bail!("signing returned no signature");
        };
        verify_with_k256(&public_key, &digest, signature)?;
        samples.push(t.elapsed());
        bar.inc(1);
    }
    bar.finish_and_clear();
    out.push(Measurement::new("full sign", name, &samples));

    // Refresh (our own protocol; the library has none): new shares of the same key and new
    // auxiliary info (fresh Paillier keys: its cost is the auxiliary-info protocol's), activated
    // and the old epoch closed on every node, then a full signature with the refreshed shares.
    // Each refresh takes one prime set per node: the bundled sets, rotated so that a node's
    // Paillier key changes every time.
    let refresh_runs = args.runs.min(REFRESH_RUNS);
    let all_primes = insecure_test_primes();
    for run in 0..refresh_runs {
        for (k, node) in cluster.nodes.iter().enumerate() {
            node.primes()
                .put(&all_primes[(k + run + 1) % all_primes.len()])?;
        }
    }
    let samples = refreshes(&cluster, key, refresh_runs, format!("{name}: refresh")).await?;
    let (request, approvals) = approved(dev, key)?;
    let output = cluster
        .run(
            &signers,
            Operation::Sign {
                request,
                approvals,
                link: None,
            },
            DEADLINE,
        )
        .await?;
    let Output::Signature { signature } = &output else {
        bail!("signing after the refresh returned no signature");
    };
    verify_with_k256(&public_key, &digest, signature)?;
    out.push(Measurement::new("refresh", name, &samples));
    for steps in [&TAPROOT_STEPS, &ED25519_STEPS] {
        out.extend(bench_frost(&cluster, args, name, steps).await?);
    }
    let (timed, stages) = api::bench_api(&cluster, args, name, dir.path()).await?;
    out.extend(timed);
    let refused: u64 = cluster
        .nodes
        .iter()
        .map(|n| n.net().refusals().frames())
        .sum();
    if refused > 0 {
        bail!("{refused} frames were refused during the benchmark");
    }
    cluster.shutdown().await;
    for m in &out {
        println!("  {:<20} median {:>10.2} ms", m.step, m.median_ms);
    }
    Ok((out, stages))
}

async fn bench_raw(args: &BenchArgs) -> Result<Vec<Measurement>> {
    let signers: Vec<u16> = (0..args.t).collect();
    let mut out = Vec::new();

    let bar = progress("raw: aux info".into(), 1);
    let t = Instant::now();
    let aux = baseline::aux_info(primes_for(args.n)).await?;
    out.push(Measurement::new("aux info", "raw", &[t.elapsed()]));
    bar.finish_and_clear();

    let mut samples = Vec::new();
    let mut first = None;
    let bar = progress("raw: dkg".into(), args.runs);
    for _ in 0..args.runs {
        let t = Instant::now();
        let shares = baseline::keygen(args.n, args.t).await?;
        samples.push(t.elapsed());
        first.get_or_insert(shares);
        bar.inc(1);
    }
    bar.finish_and_clear();
    out.push(Measurement::new("dkg", "raw", &samples));
    let shares: Vec<KeyShare> = first
        .expect("at least one run")
        .into_iter()
        .zip(aux)
        .map(KeyShare::from_parts)
        .collect::<Result<_, _>>()
        .context("raw shares do not validate")?;

    let mut samples = Vec::new();
    let mut pool = Vec::new();
    let bar = progress("raw: presign".into(), args.runs);
    for _ in 0..args.runs {
        let t = Instant::now();
        pool.push(baseline::presign(&shares, &signers).await?);
        samples.push(t.elapsed());
        bar.inc(1);
    }
    bar.finish_and_clear();
    out.push(Measurement::new("presign", "raw", &samples));

    let mut samples = Vec::new();
    for presignatures in pool {
        let t = Instant::now();
        baseline::online_sign(presignatures, &shares[0], &signing_input())?;
        samples.push(t.elapsed());
    }
    out.push(Measurement::new("online sign", "raw", &samples));

    let mut samples = Vec::new();
    let bar = progress("raw: full sign".into(), args.runs);
    for _ in 0..args.runs {
        let t = Instant::now();
        baseline::sign(&shares, &signers, &signing_input()).await?;
        samples.push(t.elapsed());
        bar.inc(1);
    }
    bar.finish_and_clear();
    out.push(Measurement::new("full sign", "raw", &samples));
    let bar = progress("raw: FROST (givre)".into(), 2);
    out.extend(bench_frost_raw::<tessera_mpc::frost::Bitcoin>(args, &TAPROOT_STEPS).await?);
    bar.inc(1);
    out.extend(bench_frost_raw::<tessera_mpc::frost::Ed25519>(args, &ED25519_STEPS).await?);
    bar.finish_and_clear();
    for m in &out {
        println!("  {:<20} median {:>10.2} ms", m.step, m.median_ms);
    }
    Ok(out)
}

fn print_table(measurements: &[Measurement], overhead: &[Overhead]) {
    println!(
        "\n| step | network | runs | min ms | median ms | p90 ms | p99 ms | overhead (median / raw) |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|");
    for step in STEPS {
        for m in measurements.iter().filter(|m| m.step == step) {
            let ratio = overhead
                .iter()
                .find(|o| o.step == step && o.network == m.network)
                .map(|o| format!("{:.2}x", o.ratio))
                .unwrap_or_else(|| {
                    if m.network == "raw" {
                        "baseline".into()
                    } else {
                        "no library equivalent".into()
                    }
                });
            println!(
                "| {} | {} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {} |",
                m.step, m.network, m.runs, m.min_ms, m.median_ms, m.p90_ms, m.p99_ms, ratio
            );
        }
    }
}

/// Where each api step's time goes: the mean of each stage, at the coordinator and at the
/// nodes.
fn print_stages(stages: &[api::StageReport]) {
    if stages.is_empty() {
        return;
    }
    println!(
        "\nwhere the api steps' time goes (mean per stage; the nodes' stages run in parallel):"
    );
    println!("\n| step | network | service | operation | stage | mean ms | observations |");
    println!("|---|---|---|---|---|---:|---:|");
    for s in stages {
        println!(
            "| {} | {} | {} | {} | {} | {:.3} | {} |",
            s.step, s.network, s.service, s.operation, s.stage, s.mean_ms, s.observations
        );
    }
}
