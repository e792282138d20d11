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
use tessera_wire::{KeyId, KeyKind, PartyId};

use crate::eth::verify_with_k256;

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
            p99_ms: rank(0.99),
            samples_ms: samples.iter().map(|d| d.as_secs_f64() * 1e3).collect(),
        }
    }
}

#[derive(Serialize)]
struct Report {
    n: u16,
    t: u16,
    runs: usize,
    note: &'static str,
    measurements: Vec<Measurement>,
    /// Median through Tessera / median of the raw library, per step and network.
    overhead: Vec<Overhead>,
}

#[derive(Serialize)]
struct Overhead {
    step: &'static str,
    network: &'static str,
    ratio: f64,
}

const STEPS: [&str; 6] = [
    "dkg",
    "aux info",
    "presign",
    "online sign",
    "full sign",
    "refresh",
];

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
    println!(
        "tessera bench: {t}-of-{n}, {runs} runs per step (auxiliary info: 1 run, refresh: at most 3)\n\
         INSECURE: auxiliary info uses the public test primes bundled with Tessera; the keys are \
         throwaway.\n",
        t = args.t,
        n = args.n,
        runs = args.runs
    );
    let mut measurements = Vec::new();
    let mut networks = vec![("memory", Network::Memory)];
    if args.spawn_nats {
        networks.push(("nats", Network::SpawnNats));
    }
    for (name, network) in networks {
        println!("{name}:");
        measurements.extend(bench_tessera(&args, name, network).await?);
    }
    println!("raw library (one process, no transport):");
    measurements.extend(bench_raw(&args).await?);

    let overhead: Vec<Overhead> = measurements
        .iter()
        .filter(|m| m.network != "raw")
        .filter_map(|m| {
            let raw = measurements
                .iter()
                .find(|r| r.network == "raw" && r.step == m.step)?;
            Some(Overhead {
                step: m.step,
                network: m.network,
                ratio: m.median_ms / raw.median_ms,
            })
        })
        .collect();
    print_table(&measurements, &overhead);
    let report = Report {
        n: args.n,
        t: args.t,
        runs: args.runs,
        note: "milliseconds; Tessera steps are timed at the starter, from signing the start to \
               the checked outcome of every party (signatures verified with k256); Tessera signs approved \
               EIP-191 message requests, which every node re-checks (digest, policy, two \
               approvals, durable request ledger); raw signs the same Keccak-256 preimage",
        measurements,
        overhead,
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
) -> Result<Vec<Measurement>> {
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
    let mut samples = Vec::new();
    let bar = progress(format!("{name}: refresh"), refresh_runs);
    for _ in 0..refresh_runs {
        let record = cluster.node(committee[0]).state().key_record(key)?;
        let setup = ReshareSetup {
            kind: Kind::Refresh,
            key_id: key,
            epoch: record.epoch,
            key: record
                .share
                .secp256k1()
                .context("the benchmark key is an ECDSA key")?
                .key_info
                .clone(),
            old_committee: committee.clone(),
            dealers: committee.clone(),
            new_committee: committee.clone(),
            new_threshold: args.t,
            authorisation: [0; 32],
        };
        let t = Instant::now();
        // Unapproved, as a scheduled refresh runs.
        cluster.rotate(key, setup, None, DEADLINE).await?;
        samples.push(t.elapsed());
        bar.inc(1);
    }
    bar.finish_and_clear();
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
        println!("  {:<12} median {:>10.2} ms", m.step, m.median_ms);
    }
    Ok(out)
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
    for m in &out {
        println!("  {:<12} median {:>10.2} ms", m.step, m.median_ms);
    }
    Ok(out)
}

fn print_table(measurements: &[Measurement], overhead: &[Overhead]) {
    println!("\n| step | network | runs | min ms | median ms | p99 ms | overhead (median / raw) |");
    println!("|---|---|---:|---:|---:|---:|---:|");
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
                "| {} | {} | {} | {:.2} | {:.2} | {:.2} | {} |",
                m.step, m.network, m.runs, m.min_ms, m.median_ms, m.p99_ms, ratio
            );
        }
    }
}
