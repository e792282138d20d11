//! `tessera dev`: the whole system in one process for a newcomer to try: three party nodes,
//! the coordinator with its REST API on localhost, SQLite in a directory, a development policy
//! with generated principals whose key files are written next to it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use tessera_audit::{AuditLog, LogOptions};
use tessera_coordinator::api::{self, ApiOptions, ApiState};
use tessera_coordinator::service::{Coordinator, CoordinatorSettings};
use tessera_coordinator::Store;
use tessera_mpc::fixtures::insecure_test_primes;
use tessera_node::local::{LocalCluster, LocalOptions, Network};
use tessera_policy::dev::DevPrincipal;
use tessera_store::KdfParams;
use tessera_wire::PartyId;

use crate::files::write_file;

/// Prime sets each dev node gets for key rotations (each refresh or reshare takes one).
const DEV_ROTATION_PRIMES: usize = 4;

/// Options of `tessera dev`.
#[derive(Args)]
pub struct DevArgs {
    /// Where the API listens.
    #[arg(long, default_value = "127.0.0.1:8700")]
    listen: String,
    /// Directory for the coordinator's SQLite database, the nodes' stores, the policy and the
    /// principals' key files (default: a new temporary directory, deleted on exit).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Run the nodes over a real nats-server started on loopback (mTLS, NKeys, per-party
    /// permissions) instead of the in-memory transport. Needs `nats-server` on PATH.
    #[arg(long)]
    spawn_nats: bool,
    /// Name of the 2-of-3 key created at start.
    #[arg(long, default_value = "treasury")]
    key_name: String,
}

pub fn run(args: DevArgs) -> Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(dev(args))
}

fn write_principal(dir: &std::path::Path, principal: &DevPrincipal) -> Result<PathBuf> {
    let path = dir.join(format!("{}.key.json", principal.name));
    write_file(&path, principal.key.to_json().as_bytes(), true, true)?;
    Ok(path)
}

async fn dev(args: DevArgs) -> Result<()> {
    let temp = tempfile::tempdir().context("creating a temporary directory")?;
    let dir = args.dir.clone().unwrap_or_else(|| temp.path().to_owned());
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {}; is another `tessera dev` running?",
                args.listen
            )
        })?;
    let address = listener.local_addr()?;
    // HTTPS with a development CA made on the spot (its key is not kept): clients trust it
    // with --ca-cert / TESSERA_CA_CERT.
    let hosts = vec![
        address.ip().to_string(),
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
    ];
    let dev_tls = tessera_coordinator::tls::dev_certificates(&dir.join("api-tls"), &hosts)
        .context("making the API's development certificate")?;
    let tls = tessera_coordinator::tls::server_config(&dev_tls.cert, &dev_tls.key)
        .context("loading the API's development certificate")?;

    let network = if args.spawn_nats {
        Network::SpawnNats
    } else {
        Network::Memory
    };
    let options = LocalOptions {
        kdf: KdfParams::MINIMUM,
        network,
        ..LocalOptions::default()
    };
    let cluster = LocalCluster::start(&dir.join("nodes"), options).await?;
    println!(
        "[1/4] 3 party nodes with a development policy, {}",
        match cluster.nats_url() {
            Some(url) => format!("over nats-server at {url} (mTLS, NKeys, permissions)"),
            None => "in memory".into(),
        }
    );
    let dev = cluster
        .dev
        .as_ref()
        .context("the local cluster has no development policy")?;
    std::fs::write(dir.join("policy.toml"), dev.document.bytes())?;
    let mut principals = vec![("operator", &dev.operator)];
    principals.extend(dev.approvers.iter().map(|p| ("approver", p)));
    principals.extend(dev.admins.iter().map(|p| ("admin", p)));
    principals.push(("auditor", &dev.auditor));
    for (_, principal) in &principals {
        write_principal(&dir, principal)?;
    }

    println!(
        "[2/4] starting the coordinator (SQLite at {})",
        dir.join("coordinator.db").display()
    );
    let url = format!("sqlite://{}", dir.join("coordinator.db").display());
    let store = Store::connect(&url).await?;
    let (starter, control) = cluster.shared();
    // Next to the nodes' logs, so that one command verifies them all.
    let audit_file = cluster.audit_dir().join("coordinator.audit.jsonl");
    let audit = Arc::new(AuditLog::open(
        starter.audit_signer(),
        LogOptions {
            file: Some(audit_file),
            ..Default::default()
        },
    )?);
    if let Some((client, _)) = cluster.audit_stream() {
        tessera_audit::stream::forward_to_cluster_stream(&audit, client.clone(), None).await?;
    }
    let coordinator = Coordinator::start(
        store,
        starter,
        control,
        cluster.policy.clone(),
        CoordinatorSettings::default(),
        audit,
    )
    .await?;

    println!(
        "[3/4] committee p1,p2,p3: auxiliary info (about half a minute)\n      INSECURE DEV \
         SHORTCUT: the nodes' prime pools hold PUBLIC test primes (also {DEV_ROTATION_PRIMES} sets \
         each for key refreshes); never use these keys for value."
    );
    for (node, primes) in cluster.nodes.iter().zip(insecure_test_primes()) {
        node.primes().put(&primes)?;
    }
    let committee = [PartyId(1), PartyId(2), PartyId(3)];
    coordinator.setup_committee(committee.to_vec()).await?;
    let ready = tokio::time::Instant::now() + Duration::from_secs(900);
    loop {
        let view = coordinator.get_committee(&committee).await?;
        match view.status.to_string().as_str() {
            "ready" => break,
            "failed" => anyhow::bail!(
                "committee set-up failed: {}",
                view.error.unwrap_or_default()
            ),
            _ if tokio::time::Instant::now() > ready => {
                anyhow::bail!("committee set-up did not finish in 15 minutes")
            }
            _ => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
    // Every refresh or reshare renews the auxiliary info and takes one prime set from each
    // receiver: a few more public test sets, none a node's own of the committee, so the
    // first rotations need not wait minutes for real primes.
    let all = insecure_test_primes();
    for (k, node) in cluster.nodes.iter().enumerate() {
        for round in 0..DEV_ROTATION_PRIMES {
            node.primes()
                .put(&all[(k + 3 * ((round + 1) % 2)) % all.len()])?;
        }
    }
    let key = coordinator
        .create_key(
            &args.key_name,
            committee.to_vec(),
            2,
            tessera_wire::KeyKind::Ecdsa,
        )
        .await?;
    println!(
        "[4/4] key {} (2-of-3): {}",
        key.name,
        key.address.as_deref().unwrap_or("-")
    );

    let base = format!("https://{address}");
    println!("\nThe coordinator API is at {base} (OpenAPI: {base}/openapi.json).");
    println!("Principals (key files in {}):", dir.display());
    for (role, principal) in &principals {
        println!("  {:<6} {}", principal.name, role);
    }
    let key_file = |name: &str| dir.join(format!("{name}.key.json")).display().to_string();
    println!(
        "\nTry it, in another shell:\n\
         export TESSERA_COORDINATOR_URL={base}\n\
         export TESSERA_CA_CERT={ca}\n\
         tessera request submit --principal olivia --key-file {olivia} --signing-key {key} \\\n    \
         --transfer-to 0x6069a6c32cf691f5982febae4faf8a6f3ab2f0f6 --value-wei 500000000000000000 \\\n    \
         --chain-id 11155111 --nonce 0\n\
         tessera request approve --principal ana --key-file {ana} <request id>\n\
         tessera request approve --principal ben --key-file {ben} <request id>\n\
         tessera request show --principal aude --key-file {aude} <request id>\n\
         tessera audit events --principal aude --key-file {aude} --request <request id>\n\
         tessera audit verify --roster {roster} {logs}/*.audit.jsonl\n\
         Bitcoin Taproot and Solana keys (FROST; no auxiliary info, milliseconds):\n\
         tessera key create --principal ada --key-file {ada_key} --name cold-btc \\\n    \
         --committee p1,p2,p3 --threshold 2 --kind taproot   # or --kind ed25519\n\
         tessera key address --principal aude --key-file {aude} cold-btc --network regtest\n\
         tessera request submit --principal olivia --key-file {olivia} --signing-key cold-btc \\\n    \
         --psbt spend.psbt --network regtest\n",
        ca = dev_tls.ca.display(),
        ada_key = key_file("ada"),
        olivia = key_file("olivia"),
        ana = key_file("ana"),
        ben = key_file("ben"),
        aude = key_file("aude"),
        key = args.key_name,
        roster = dir.join("nodes").join("roster.json").display(),
        logs = dir.join("nodes").join("audit").display(),
    );
    println!("Press Ctrl-C to stop.");
    let state = ApiState::new(coordinator.clone(), ApiOptions::default());
    api::serve_tls(listener, state, tls, shutdown_signal())
        .await
        .context("the API stopped")?;
    coordinator.shutdown().await;
    cluster.shutdown().await;
    println!("stopped");
    Ok(())
}

/// SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
