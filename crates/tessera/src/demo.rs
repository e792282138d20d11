//! `tessera demo`: a 2-of-3 threshold ECDSA key created and used by three party nodes in one
//! process, without any of them ever holding the key.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use tessera_mpc::fixtures::insecure_test_primes;
use tessera_node::local::{LocalCluster, LocalOptions, Network};
use tessera_node::{Operation, Output};
use tessera_store::KdfParams;
use tessera_wire::{KeyId, PartyId};

use crate::eth::{ethereum_address, verify_with_k256};

/// Options of `tessera demo`.
#[derive(Args)]
pub struct DemoArgs {
    /// Run the nodes over a real nats-server started on loopback (mTLS, one NKey user per
    /// party and for the coordinator, subject permissions) instead of the in-memory transport.
    /// Needs `nats-server` on PATH (scripts/setup.sh installs it).
    #[arg(long, conflicts_with = "nats")]
    spawn_nats: bool,
    /// Run the nodes over an existing development broker at this URL that asks for no TLS and
    /// no credentials (e.g. `nats-server -p 4222`, then `--nats nats://127.0.0.1:4222`). Every
    /// message stays sealed end to end, but such a broker enforces no permissions: use
    /// `tessera nats-config` for real clusters.
    #[arg(long, value_name = "URL")]
    nats: Option<String>,
    /// Keep the nodes' encrypted stores in this directory (default: a temporary directory,
    /// deleted at the end).
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
}

const STEPS: u8 = 7;
const DEADLINE: Duration = Duration::from_secs(600);
const P1: PartyId = PartyId(1);
const P2: PartyId = PartyId(2);
const P3: PartyId = PartyId(3);

pub fn run(args: DemoArgs) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(demo(args))
}

fn step(n: u8, text: &str) {
    println!("[{n}/{STEPS}] {text}");
}

/// Runs `work` with a spinner showing the elapsed time (hidden when stdout is not a terminal).
async fn with_spinner<T>(label: &str, work: impl std::future::Future<Output = T>) -> T {
    let spinner = ProgressBar::new_spinner();
    spinner.set_style(
        ProgressStyle::with_template("      {spinner} {msg} {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    spinner.set_message(label.to_owned());
    spinner.enable_steady_tick(Duration::from_millis(120));
    let out = work.await;
    spinner.finish_and_clear();
    out
}

async fn demo(args: DemoArgs) -> Result<()> {
    let started = Instant::now();
    let temp = tempfile::tempdir().context("creating a temporary directory")?;
    let dir = args.dir.clone().unwrap_or_else(|| temp.path().to_owned());
    let network = match (&args.nats, args.spawn_nats) {
        (Some(url), _) => Network::DevBroker(url.clone()),
        (None, true) => Network::SpawnNats,
        (None, false) => Network::Memory,
    };
    let dev_broker = matches!(network, Network::DevBroker(_));

    step(
        1,
        "starting 3 party nodes, each with its own encrypted store",
    );
    let options = LocalOptions {
        network,
        kdf: KdfParams::MINIMUM,
        ..LocalOptions::default()
    };
    let cluster = LocalCluster::start(&dir, options).await?;
    match cluster.nats_url() {
        Some(url) if dev_broker => println!(
            "      transport: development broker at {url} (no TLS, no credentials: the broker \
             enforces nothing, every message is still sealed end to end)"
        ),
        Some(url) => println!(
            "      transport: nats-server at {url} (mTLS, NKeys, per-party subject permissions)"
        ),
        None => println!("      transport: in-memory (every message still sealed end to end)"),
    }
    println!(
        "      roster {} with coordinator \"{}\"; stores under {}",
        cluster.roster.hash(),
        tessera_node::local::LOCAL_COORDINATOR,
        dir.display()
    );

    step(
        2,
        "committee set-up: auxiliary info (Paillier keys, ring-Pedersen, ZK proofs)",
    );
    println!(
        "      INSECURE DEMO SHORTCUT: each node's prime pool is filled with PUBLIC test primes \
         bundled with Tessera.\n      Real nodes generate their own safe primes in the \
         background (minutes per set). Never use this cluster's keys for value."
    );
    for (node, primes) in cluster.nodes.iter().zip(insecure_test_primes()) {
        node.primes().put(&primes)?;
    }
    let committee = [P1, P2, P3];
    let t = Instant::now();
    with_spinner(
        "running auxiliary info generation (tens of seconds)",
        cluster.run(&committee, Operation::AuxInfo, DEADLINE),
    )
    .await?;
    println!("      done in {:.1?}", t.elapsed());

    step(
        3,
        "distributed key generation, 2-of-3 (nobody ever holds the key)",
    );
    let key = KeyId::random();
    let t = Instant::now();
    let Output::Keygen { public_key } = cluster
        .run(
            &committee,
            Operation::Keygen { key, threshold: 2 },
            DEADLINE,
        )
        .await?
    else {
        bail!("key generation returned no public key");
    };
    println!("      key {key} in {:.1?}", t.elapsed());
    println!("      public key       0x{}", hex::encode(&public_key));
    println!("      Ethereum address {}", ethereum_address(&public_key)?);

    step(
        4,
        "presignature with p1 and p2 (stored encrypted, usable once)",
    );
    let t = Instant::now();
    let Output::Presign { presignature } = cluster
        .run(&[P1, P2], Operation::Presign { key }, DEADLINE)
        .await?
    else {
        bail!("presigning returned no presignature");
    };
    println!("      presignature {presignature} in {:.1?}", t.elapsed());

    let message = b"Tessera demo: transfer 1.5 ETH to 0x000000000000000000000000000000000000dEaD";
    step(5, "online signing from the presignature (one round)");
    let t = Instant::now();
    let online = Operation::OnlineSign {
        key,
        presignature,
        message: message.to_vec(),
    };
    let signature = cluster.run(&[P1, P2], online.clone(), DEADLINE).await?;
    let elapsed = t.elapsed();
    show_signature(&public_key, message, &signature, elapsed)?;

    step(6, "full interactive signing with p2 and p3");
    let t = Instant::now();
    let signature = cluster
        .run(
            &[P2, P3],
            Operation::Sign {
                key,
                message: message.to_vec(),
            },
            DEADLINE,
        )
        .await?;
    show_signature(&public_key, message, &signature, t.elapsed())?;

    step(7, "using the presignature again is refused");
    match cluster.run(&[P1, P2], online, DEADLINE).await {
        Ok(_) => bail!("a presignature was used twice"),
        Err(e) => println!("      refused: {e}"),
    }

    let refused: u64 = cluster
        .nodes
        .iter()
        .map(|n| n.net().refusals().frames())
        .sum();
    println!(
        "\nDone in {:.1?}: 3 nodes, {} transport, {refused} frames refused; every protocol \
         message sealed end to end.",
        started.elapsed(),
        if cluster.nats_url().is_some() {
            "NATS"
        } else {
            "in-memory"
        }
    );
    cluster.shutdown().await;
    Ok(())
}

fn show_signature(
    public_key: &[u8],
    message: &[u8],
    output: &Output,
    elapsed: Duration,
) -> Result<()> {
    let Output::Signature { signature } = output else {
        bail!("signing returned no signature");
    };
    verify_with_k256(public_key, message, signature)?;
    println!(
        "      signature 0x{} in {elapsed:.1?}",
        hex::encode(signature)
    );
    println!("      verified with k256 against the public key");
    Ok(())
}
