//! `tessera-coordinator`: the coordinator service and its REST API.
//!
//! ```text
//! tessera-coordinator --config coordinator.toml check   # validate everything, touch nothing remote
//! tessera-coordinator --config coordinator.toml run     # serve until SIGINT or SIGTERM
//! ```
//!
//! The configuration format, with a full example, is documented in
//! `tessera_coordinator::config`. Logs go to stderr; `RUST_LOG` sets the filter (default
//! `info`).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use tessera_audit::AuditLog;
use tessera_control::nats::NatsControl;
use tessera_control::Starter;
use tessera_coordinator::api::{self, ApiState};
use tessera_coordinator::config::CoordinatorConfig;
use tessera_coordinator::service::Coordinator;
use tessera_coordinator::Store;
use tessera_transport::nats::{connect_coordinator, NatsMetrics};

/// Shown after `--help`.
const EXAMPLE: &str = "\
Example coordinator.toml (paths relative to the file):

  listen = \"127.0.0.1:8700\"                  # default
  database_url = \"sqlite://coordinator.db\"   # default; or postgres://user@host/db
  roster = \"roster.json\"
  roster_pin = \"<64 hex digits: the roster hash the nodes pin>\"
  policy = \"policy.toml\"
  policy_pin = \"<sha256sum of policy.toml, as the nodes pin it>\"
  coordinator_key = \"coordinator.key.json\"   # a coordinator of the roster, mode 0600

  [nats]
  url = \"tls://127.0.0.1:4222\"
  ca = \"nats/tls/ca.pem\"
  cert = \"nats/clients/coord-main/cert.pem\"
  key = \"nats/clients/coord-main/key.pem\"
  connect_timeout_secs = 10                  # default

  [api]
  public_metrics = false                     # default: GET /metrics needs ReadMetrics

  [service]                                  # defaults shown
  signing_attempts = 3
  session_deadline_secs = 120
  aux_info_deadline_secs = 900
  expiry_sweep_interval_secs = 30
  rotation_check_interval_secs = 60
  spend_delivery_interval_secs = 30
  worker_poll_interval_secs = 5
  stale_signing_after_secs = 60
  presignature_pool_target = 0
  presignature_refill_interval_secs = 10
  presignature_max_age_secs = 18000          # below the nodes' presignature_lifetime_secs
  default_request_lifetime_secs = 3600
  proposal_lifetime_secs = 86400
  blame_cooldown_secs = 300
  shutdown_grace_secs = 10

The API: GET /openapi.json describes every route; every /v1 route and /metrics takes
requests signed with a principal's key (x-tessera-* headers). Logs: RUST_LOG (default info).";

/// The Tessera coordinator: accepts sign requests over a REST API, applies the policy and the
/// approvals, and starts threshold sessions on the party nodes over NATS. It holds no key
/// share; its only secret is its roster coordinator key, and every node re-checks each request
/// before it signs.
#[derive(Parser)]
#[command(name = "tessera-coordinator", version, long_about, after_long_help = EXAMPLE)]
struct Cli {
    /// The configuration file (TOML): listen address, database URL, roster and roster_pin,
    /// policy and policy_pin, coordinator_key, [nats], [api] and [service]. Relative paths in it
    /// are relative to its directory. Environment overrides:
    /// TESSERA_COORDINATOR_DATABASE_URL, TESSERA_COORDINATOR_LISTEN,
    /// TESSERA_COORDINATOR_NATS_URL.
    #[arg(
        long,
        short,
        env = "TESSERA_COORDINATOR_CONFIG",
        default_value = "coordinator.toml"
    )]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check the configuration: the roster against roster_pin, the policy against policy_pin,
    /// the coordinator key against the roster, the NATS TLS files, and the database (opened and
    /// migrated; its active policy must be the pinned one). Does not connect to NATS.
    Check,
    /// Connect to the database and the broker, start the service and serve the API until
    /// SIGINT or SIGTERM; then stop taking calls, let running ones finish, and give a running
    /// signing session the service's shutdown grace.
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
    let config = CoordinatorConfig::load(&cli.config)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    match cli.command {
        Command::Check => runtime.block_on(check(config)),
        Command::Run => runtime.block_on(run(config)),
    }
}

async fn check(config: CoordinatorConfig) -> Result<()> {
    let roster = config.load_roster()?;
    let policy = config.load_policy()?;
    let key = config.load_coordinator_key(&roster)?;
    config.nats_config(&roster, &key)?;
    let tls = config.api_tls()?;
    config
        .service
        .settings()
        .validate()
        .context("the [service] settings")?;
    let store = Store::connect(&config.database_url).await?;
    let active = store.active_policy().await?;
    store.close().await;
    if let Some(active) = &active {
        anyhow::ensure!(
            active.hash[..] == policy.hash().0[..],
            "the database's active policy is revision {} ({}), not the pinned {}: start with \
             the policy the nodes pin",
            active.revision,
            hex::encode(&active.hash),
            policy.hash()
        );
    }
    println!("configuration OK");
    println!("  cluster      {}", roster.cluster);
    println!(
        "  roster       version {}, hash {}",
        roster.version,
        roster.hash()
    );
    println!(
        "  policy       revision {}, hash {}",
        policy.revision(),
        policy.hash()
    );
    println!("  coordinator  {}", key.name());
    println!(
        "  database     {} ({})",
        store.backend(),
        match active {
            Some(_) => "policy active",
            None => "new: the policy is activated on first run",
        }
    );
    let scheme = if tls.is_some() { "https" } else { "http" };
    println!("  listen       {scheme}://{}", config.listen);
    println!("  nats         {}", config.nats.url);
    Ok(())
}

async fn run(config: CoordinatorConfig) -> Result<()> {
    let roster = config.load_roster()?;
    let policy = config.load_policy()?;
    let key = config.load_coordinator_key(&roster)?;
    let nats = config.nats_config(&roster, &key)?;
    let tls = config.api_tls()?;
    let store = Store::connect(&config.database_url).await?;
    let client = connect_coordinator(&nats, Arc::new(NatsMetrics::default()))
        .await
        .with_context(|| format!("connecting to the broker at {}", nats.url))?;
    let control = Arc::new(NatsControl::new(client.clone(), roster.cluster.clone()));
    let name = key.name().to_owned();
    let starter = Starter::new(key, roster)
        .with_context(|| format!("coordinator '{name}' is not in the roster"))?;
    let audit_options = config
        .audit
        .options(PathBuf::from("coordinator.audit.jsonl"));
    let audit = Arc::new(
        AuditLog::open(starter.audit_signer(), audit_options)
            .context("cannot open the audit log")?,
    );
    if config.audit.stream {
        let replicas = config.audit.stream_replicas.unwrap_or(1);
        tessera_audit::stream::forward_to_cluster_stream(&audit, client, Some(replicas))
            .await
            .context("cannot create or open the audit stream (the broker needs JetStream)")?;
    }
    let coordinator = Coordinator::start(
        store,
        Arc::new(starter),
        control,
        policy,
        config.service.settings(),
        audit,
    )
    .await?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let state = ApiState::new(coordinator.clone(), config.api_options());
    let served = match tls {
        Some(tls) => api::serve_tls(listener, state, tls, shutdown_signal()).await,
        None => {
            if !config.listen.ip().is_loopback() {
                tracing::warn!(listen = %config.listen, "the API is plain HTTP on a non-loopback address: set [api] tls_cert and tls_key");
            }
            api::serve(listener, state, shutdown_signal()).await
        }
    };
    coordinator.shutdown().await;
    coordinator.store().close().await;
    served.context("serving the API")?;
    tracing::info!("coordinator stopped");
    Ok(())
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(term) => term,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM; SIGINT still stops");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
    }
}
