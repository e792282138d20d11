//! `tessera-node`: one party of a Tessera cluster.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use tessera_audit::AuditLog;
use tessera_channel::identity::PartyIdentity;
use tessera_channel::{ChannelConfig, ChannelManager, RosterHash, SignedRoster};
use tessera_node::config::NodeConfig;
use tessera_node::metrics::{NodeCollector, NodeReadiness};
use tessera_node::{serve, Node};
use tessera_policy::{PolicyDocument, PolicyHash};
use tessera_store::{FileStore, KdfParams};
use tessera_transport::nats::{connect_client, NatsConfig, NatsMetrics, NatsTransport};
use tessera_transport::SecureTransport;
use zeroize::Zeroizing;

/// A Tessera party node: holds this party's key shares (encrypted at rest) and takes part in
/// threshold sessions started by a roster coordinator. It never holds a whole key.
#[derive(Parser)]
#[command(name = "tessera-node", version)]
struct Cli {
    /// The node's configuration file (TOML; see the `config` module docs or README).
    #[arg(long, short, env = "TESSERA_NODE_CONFIG", default_value = "node.toml")]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create the encrypted store (passphrase from TESSERA_NODE_PASSPHRASE or passphrase_file).
    Init,
    /// Check the configuration, the roster pin and the store; print what the node holds.
    Status,
    /// Connect to the broker and serve sessions until SIGINT or SIGTERM.
    Run,
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let config = NodeConfig::load(&cli.config)?;
    match cli.command {
        Command::Init => init(&config),
        Command::Status => status(&config),
        Command::Run => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(run(config)),
    }
}

fn init(config: &NodeConfig) -> Result<()> {
    let passphrase = config.passphrase()?;
    FileStore::create(&config.store, &passphrase, KdfParams::default())?;
    println!("created the encrypted store at {}", config.store.display());
    Ok(())
}

struct Loaded {
    identity: PartyIdentity,
    roster: tessera_channel::Roster,
    policy: PolicyDocument,
    store: Arc<FileStore>,
}

/// Reads the policy file and checks it against the pinned hash.
fn load_policy(config: &NodeConfig) -> Result<PolicyDocument> {
    let bytes = std::fs::read(&config.policy)
        .with_context(|| format!("cannot read the policy {}", config.policy.display()))?;
    let policy = PolicyDocument::from_toml(&bytes)
        .with_context(|| format!("{} is not a valid policy", config.policy.display()))?;
    let pin: PolicyHash = config
        .policy_pin
        .parse()
        .context("policy_pin must be 64 hex digits (the SHA-256 of the policy file)")?;
    let actual = policy.hash();
    if actual != pin {
        bail!(
            "the policy {} has hash {actual}, but the configuration pins {pin}; \
             review the new policy and update policy_pin (sha256sum of the file)",
            config.policy.display()
        );
    }
    Ok(policy)
}

fn load(config: &NodeConfig) -> Result<Loaded> {
    let identity_text = Zeroizing::new(
        std::fs::read_to_string(&config.identity)
            .with_context(|| format!("cannot read the identity {}", config.identity.display()))?,
    );
    let identity = PartyIdentity::from_json(&identity_text)
        .with_context(|| format!("{} is not a party identity", config.identity.display()))?;
    let roster_text = std::fs::read_to_string(&config.roster)
        .with_context(|| format!("cannot read the roster {}", config.roster.display()))?;
    let signed = SignedRoster::from_json(&roster_text)?;
    let pin = RosterHash::from_hex(&config.roster_pin).context("roster_pin")?;
    let actual = signed.roster.hash();
    if !actual.matches(&pin) {
        bail!(
            "the roster {} has hash {actual}, but the configuration pins {pin}; \
             verify the new roster with `tessera roster verify` and update roster_pin",
            config.roster.display()
        );
    }
    if signed.roster.entry(identity.party()).is_none() {
        bail!("{} is not in the roster", identity.party());
    }
    let policy = load_policy(config)?;
    let passphrase = config.passphrase()?;
    let store = FileStore::open(&config.store, &passphrase)?;
    Ok(Loaded {
        identity,
        roster: signed.roster,
        policy,
        store: Arc::new(store),
    })
}

fn status(config: &NodeConfig) -> Result<()> {
    let loaded = load(config)?;
    let state = tessera_node::state::NodeState::new(loaded.store.clone());
    println!("party:   {}", loaded.identity.party());
    println!("cluster: {}", loaded.roster.cluster);
    println!(
        "roster:  version {}, hash {}",
        loaded.roster.version,
        loaded.roster.hash()
    );
    println!(
        "policy:  revision {}, hash {}",
        loaded.policy.revision(),
        loaded.policy.hash()
    );
    println!("primes:  {} set(s) ready", state.primes().len()?);
    for key in state.keys()? {
        let record = state.key_record(key)?;
        let fresh = state.online_ready(key)?.len();
        let rotations: Vec<String> = state
            .reshares(key)?
            .into_iter()
            .filter(|(_, r)| {
                matches!(
                    r,
                    tessera_node::state::ReshareRecord::Pending { .. }
                        | tessera_node::state::ReshareRecord::Activated { .. }
                )
            })
            .map(|(session, r)| format!("{session} {}", r.state()))
            .collect();
        println!(
            "key {key}: epoch {}, {}-of-{} on {}, {fresh} fresh presignature(s){}",
            record.epoch,
            record.threshold,
            record.committee.len(),
            tessera_wire::PartyId::list(&record.committee),
            if rotations.is_empty() {
                String::new()
            } else {
                format!("; rotation not finished here: {}", rotations.join(", "))
            }
        );
    }
    Ok(())
}

async fn run(config: NodeConfig) -> Result<()> {
    let loaded = load(&config)?;
    let party = loaded.identity.party();
    let seed = loaded
        .identity
        .nats_seed()
        .context("the identity has no NATS key; create it with `tessera identity new`")?
        .to_owned();
    let nats = NatsConfig {
        url: config.nats.url.clone(),
        cluster: loaded.roster.cluster.clone(),
        party,
        nkey_seed: Zeroizing::new(seed),
        ca_file: config.nats.ca.clone(),
        cert_file: config.nats.cert.clone(),
        key_file: config.nats.key.clone(),
        connect_timeout: Duration::from_secs(config.nats.connect_timeout_secs),
    };
    let transport = Arc::new(NatsTransport::connect(&nats).await?);
    let transport_metrics = transport.metrics().clone();
    let control_metrics = Arc::new(NatsMetrics::default());
    let control = connect_client(&nats, control_metrics.clone()).await?;
    let identity_for_channels = PartyIdentity::from_json(&loaded.identity.to_json())?;
    let manager = ChannelManager::new(
        identity_for_channels,
        loaded.roster.clone(),
        ChannelConfig::default(),
    )?;
    let net = Arc::new(SecureTransport::start(manager, transport).await?);
    // Tell every peer at once that this party has (re)started with new channel keys.
    let unreachable = net.connect_peers(Duration::from_secs(5)).await;
    if !unreachable.is_empty() {
        tracing::warn!(
            ?unreachable,
            "no channel yet to some peers; they will be retried when needed"
        );
    }
    let audit_identity = PartyIdentity::from_json(&loaded.identity.to_json())?;
    let audit = AuditLog::open(Box::new(audit_identity), config.audit_options(party))
        .context("cannot open the audit log")?;
    let node = Arc::new(Node::new(
        net,
        loaded.identity,
        loaded.roster,
        loaded.store,
        loaded.policy,
        config.settings(),
        Arc::new(audit),
    )?);
    if config.audit.stream {
        // Retries in the background until the coordinator has created the stream.
        tessera_audit::stream::forward_to_cluster_stream(node.audit(), control.clone(), None)
            .await?;
    }
    let stop = Arc::new(AtomicBool::new(false));
    if config.primes.pool_target > 0 {
        node.primes()
            .spawn_refill(config.primes.pool_target, stop.clone());
    }
    let (stop_metrics, metrics_stopped) = tokio::sync::oneshot::channel::<()>();
    let metrics_server = match config.metrics.listen {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen for metrics on {addr}"))?;
            let telemetry = NodeCollector::new(node.clone())
                .with_nats("transport", transport_metrics)
                .with_nats("control", control_metrics)
                .with_broker(control.clone())
                .telemetry();
            let readiness = NodeReadiness::new(node.clone(), config.metrics.floors())
                .with_broker(control.clone());
            let served = tessera_telemetry::serve(
                listener,
                Arc::new(telemetry),
                Arc::new(readiness),
                async move {
                    let _ = metrics_stopped.await;
                },
            );
            Some(tokio::spawn(async move {
                if let Err(e) = served.await {
                    tracing::error!(error = %e, "the metrics server stopped");
                }
            }))
        }
        None => None,
    };
    tracing::info!(%party, url = %config.nats.url, primes_ready = node.primes().len()?, "node ready");
    let served = serve::serve(
        node,
        control,
        shutdown_signal(),
        Duration::from_secs(config.sessions.shutdown_grace_secs),
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    let _ = stop_metrics.send(());
    if let Some(server) = metrics_server {
        let _ = server.await;
    }
    served?;
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
    }
}
