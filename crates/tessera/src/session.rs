//! `tessera session`: start threshold sessions on running nodes, as a roster coordinator.
//!
//! Until the coordinator service exists, this is how an operator drives a cluster of
//! `tessera-node` processes: it signs a session start with a coordinator key from the roster,
//! publishes it on the cluster's control subject, and checks every party's signed outcome.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use tessera_channel::identity::CoordinatorKey;
use tessera_channel::{RosterHash, SignedRoster};
use tessera_control::nats::NatsControl;
use tessera_control::{Operation, Output, Starter};
use tessera_policy::{Approval, SignRequest};
use tessera_transport::nats::{connect_coordinator, CoordinatorNatsConfig, NatsMetrics};
use tessera_wire::{KeyId, KeyKind, PartyId, SessionId};
use zeroize::Zeroizing;

use crate::eth::{ethereum_address, verify_with_k256};
use crate::files::{read_secret, read_text};

/// Where the cluster is and who is starting the session.
#[derive(Args)]
pub struct SessionArgs {
    /// The signed roster.
    #[arg(long)]
    roster: PathBuf,
    /// The roster hash the nodes pin; the command refuses a roster with another hash.
    #[arg(long)]
    pin: String,
    /// The coordinator's secret key file (`tessera coordinator new`); it must be in the roster.
    #[arg(long)]
    coordinator_key: PathBuf,
    /// The broker URL, e.g. tls://10.0.0.5:4222.
    #[arg(long, env = "TESSERA_NATS_URL")]
    nats_url: String,
    /// The directory `tessera nats-config` wrote (for the CA and the coordinator's client
    /// certificate under clients/coord-<name>/).
    #[arg(long)]
    nats_dir: PathBuf,
    /// How long to wait for every party's outcome.
    #[arg(long, default_value_t = 300)]
    deadline_secs: u64,
    #[command(subcommand)]
    command: SessionCommand,
}

/// The session to run.
#[derive(Subcommand)]
pub enum SessionCommand {
    /// Auxiliary info for a committee (each node takes a prime set from its pool).
    Aux {
        /// The committee, in order, e.g. p1,p2,p3.
        #[arg(long, value_delimiter = ',', required = true)]
        parties: Vec<PartyId>,
    },
    /// Distributed key generation (an ECDSA key needs its committee's auxiliary info first).
    Keygen {
        /// The committee, in the same order as for aux info.
        #[arg(long, value_delimiter = ',', required = true)]
        parties: Vec<PartyId>,
        /// Signers needed.
        #[arg(long)]
        threshold: u16,
        /// The key's kind: ecdsa (Ethereum, Bitcoin P2WPKH), taproot (Bitcoin P2TR, FROST) or
        /// ed25519 (Solana, FROST).
        #[arg(long, default_value = "ecdsa")]
        kind: KeyKind,
        /// The new key's id (default: random).
        #[arg(long)]
        key: Option<KeyId>,
    },
    /// Make presignatures for a set of signers.
    Presign {
        /// The key.
        #[arg(long)]
        key: KeyId,
        /// The signers who will use them, in order.
        #[arg(long, value_delimiter = ',', required = true)]
        parties: Vec<PartyId>,
        /// How many.
        #[arg(long, default_value_t = 1)]
        count: u32,
    },
    /// Sign an approved request: online with `--presignature`, else full signing. Every node
    /// re-checks the request, its approvals and its policy before it signs. This command
    /// keeps no spend chain, so the nodes refuse here a transfer that a rolling window limits
    /// (sign those through the coordinator); messages and unlimited keys sign.
    Sign {
        /// The signers, in order (for a presignature: the ones that made it).
        #[arg(long, value_delimiter = ',', required = true)]
        parties: Vec<PartyId>,
        /// JSON file `{"request": …, "approvals": […]}`: the request as approvers signed it,
        /// and their approvals.
        #[arg(long)]
        request: PathBuf,
        /// A presignature made by exactly these parties (from `session presign`); master key
        /// (empty derivation path) only.
        #[arg(long)]
        presignature: Option<SessionId>,
        /// The signing key's public key (hex, SEC1), to verify the signature with k256 (for a
        /// child key: the child's public key).
        #[arg(long)]
        public_key: Option<String>,
    },
}

/// An approved request as `session sign` reads it.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ApprovedRequest {
    request: SignRequest,
    approvals: Vec<Approval>,
}

pub fn run(args: SessionArgs) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(session(args))
}

async fn session(args: SessionArgs) -> Result<()> {
    let signed = SignedRoster::from_json(&read_text(&args.roster, "the roster")?)
        .with_context(|| format!("{} is not a roster", args.roster.display()))?;
    let pin = RosterHash::from_hex(&args.pin).context("--pin")?;
    if !signed.roster.hash().matches(&pin) {
        bail!(
            "the roster has hash {}, not the pinned {pin}; use the roster the nodes pin",
            signed.roster.hash()
        );
    }
    let roster = signed.roster;
    let key =
        CoordinatorKey::from_json(&read_secret(&args.coordinator_key, "the coordinator key")?)
            .with_context(|| {
                format!(
                    "{} is not a coordinator key",
                    args.coordinator_key.display()
                )
            })?;
    let name = key.name().to_owned();
    let seed = key
        .nats_seed()
        .context("the coordinator key has no NATS key; create it without --no-nats")?
        .to_owned();
    let client_dir = args.nats_dir.join("clients").join(format!("coord-{name}"));
    let config = CoordinatorNatsConfig {
        url: args.nats_url.clone(),
        cluster: roster.cluster.clone(),
        name: name.clone(),
        nkey_seed: Zeroizing::new(seed),
        ca_file: args.nats_dir.join("tls").join("ca.pem"),
        cert_file: client_dir.join("cert.pem"),
        key_file: client_dir.join("key.pem"),
        connect_timeout: Duration::from_secs(10),
    };
    let client = connect_coordinator(&config, Arc::new(NatsMetrics::default())).await?;
    let control = NatsControl::new(client, roster.cluster.clone());
    let starter = Starter::new(key, roster)
        .with_context(|| format!("coordinator {name} is not in the roster"))?;
    let deadline = Duration::from_secs(args.deadline_secs);
    let run = |parties: Vec<PartyId>, operation: Operation| {
        let (starter, control) = (&starter, &control);
        async move { starter.run(control, &parties, operation, deadline).await }
    };

    match args.command {
        SessionCommand::Aux { parties } => {
            eprintln!("running auxiliary info (tens of seconds)...");
            run(parties.clone(), Operation::AuxInfo).await?;
            println!("auxiliary info stored for committee {}", list(&parties));
        }
        SessionCommand::Keygen {
            parties,
            threshold,
            kind,
            key,
        } => {
            let key = key.unwrap_or_else(KeyId::random);
            let Output::Keygen { public_key, .. } = run(
                parties,
                Operation::Keygen {
                    key,
                    threshold,
                    kind,
                },
            )
            .await?
            else {
                bail!("key generation returned no public key");
            };
            println!("key              {key}");
            println!("kind             {kind}");
            println!("public key       {}", hex::encode(&public_key));
            match kind {
                KeyKind::Ecdsa => println!("Ethereum address {}", ethereum_address(&public_key)?),
                KeyKind::Taproot => {
                    let output_key = tessera_chain::bitcoin::taproot_output_key(&public_key)?;
                    let script = tessera_chain::bitcoin::p2tr_script(&output_key)?;
                    let address = tessera_chain::bitcoin::address_of_script(
                        &script,
                        tessera_chain::bitcoin::BitcoinNetwork::Mainnet,
                    )
                    .context("a Taproot output has an address")?;
                    println!("Bitcoin address  {address} (mainnet, key path)");
                }
                KeyKind::Ed25519 => {
                    let key: [u8; 32] = public_key
                        .as_slice()
                        .try_into()
                        .context("an Ed25519 public key is 32 bytes")?;
                    println!("Solana address   {}", tessera_chain::solana::address(&key));
                }
            }
        }
        SessionCommand::Presign {
            key,
            parties,
            count,
        } => {
            for _ in 0..count {
                let Output::Presign { presignature } =
                    run(parties.clone(), Operation::Presign { key }).await?
                else {
                    bail!("presigning returned no presignature");
                };
                println!("presignature {presignature}");
            }
        }
        SessionCommand::Sign {
            parties,
            request,
            presignature,
            public_key,
        } => {
            let text = read_text(&request, "the request")?;
            let ApprovedRequest { request, approvals } = serde_json::from_str(&text)
                .with_context(|| format!("{} is not an approved request", request.display()))?;
            let digest = request.digest;
            let operation = match presignature {
                // No place in a spend chain: nodes refuse a request that a rolling window
                // limits without one (sign those through the coordinator).
                Some(presignature) => Operation::OnlineSign {
                    presignature,
                    request,
                    approvals,
                    link: None,
                },
                None => Operation::Sign {
                    request,
                    approvals,
                    link: None,
                },
            };
            let Output::Signature { signature } = run(parties, operation).await? else {
                bail!("signing returned no signature");
            };
            println!("signature {}", hex::encode(&signature));
            if let Some(pk) = public_key {
                let pk = hex::decode(pk.trim()).context("--public-key is not hex")?;
                verify_with_k256(&pk, &digest, &signature)?;
                println!("verified with k256 against the public key");
            }
        }
    }
    Ok(())
}

fn list(parties: &[PartyId]) -> String {
    parties
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}
