//! `tessera demo`: a 2-of-3 threshold ECDSA key created and used by three party nodes in one
//! process, without any of them ever holding the key.

use std::time::{Duration, Instant};

use crate::now_unix;
use anyhow::{bail, Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use tessera_audit::{file as audit_file, TrustedKeys, Verifier};
use tessera_chain::{Eip1559Request, UnsignedTx, U256};
use tessera_control::{Operation, Output, StarterError};
use tessera_mpc::derive_child_public_key;
use tessera_mpc::fixtures::insecure_test_primes;
use tessera_node::local::{LocalCluster, LocalOptions, Network};
use tessera_policy::{dev, Payload};
use tessera_store::KdfParams;
use tessera_wire::{KeyId, KeyKind, PartyId};

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

const STEPS: u8 = 9;
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
    let Output::Keygen {
        public_key,
        chain_code,
    } = cluster
        .run(
            &committee,
            Operation::Keygen {
                key,
                threshold: 2,
                kind: KeyKind::Ecdsa,
            },
            DEADLINE,
        )
        .await?
    else {
        bail!("key generation returned no public key");
    };
    println!("      key {key} in {:.1?}", t.elapsed());
    println!("      public key       0x{}", hex::encode(&public_key));
    println!("      Ethereum address {}", ethereum_address(&public_key)?);

    let dev = cluster
        .dev
        .as_ref()
        .context("the local cluster has no development policy")?;
    step(
        4,
        "the policy every node pins, and a presignature with p1 and p2",
    );
    println!(
        "      policy {} (development): 2 approvals by approvers ({}); per request at most \
         10 ETH on Sepolia, 1 BTC on regtest (fee at most 100 000 sat) and 10 SOL; {} denied",
        cluster.policy.hash(),
        dev.approvers
            .iter()
            .map(|a| a.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        dev::DEV_DENIED
    );
    let t = Instant::now();
    let Output::Presign { presignature } = cluster
        .run(&[P1, P2], Operation::Presign { key }, DEADLINE)
        .await?
    else {
        bail!("presigning returned no presignature");
    };
    println!("      presignature {presignature} in {:.1?}", t.elapsed());

    step(
        5,
        "olivia asks to send 0.5 ETH on Sepolia; ana and ben approve; online signing",
    );
    let to = parse_address(RECIPIENT)?;
    let raw = Eip1559Request::transfer(
        dev::DEV_CHAIN_ID,
        0,
        to,
        U256::from(500_000_000_000_000_000u128),
    )
    .encode();
    let request = dev.request(
        key,
        Vec::new(),
        Payload::EthereumTx { raw: raw.clone() },
        now_unix(),
    )?;
    let approvals = dev.approve(&request);
    println!(
        "      request {} digest 0x{}",
        request.id,
        hex::encode(request.digest)
    );
    let t = Instant::now();
    // As a coordinator does: the signing takes the next place in the key's spend chain.
    let output = cluster
        .sign(
            &[P1, P2],
            &request,
            approvals.clone(),
            Some(presignature),
            DEADLINE,
        )
        .await?;
    let signature = signature_of(&output)?;
    verify_with_k256(&public_key, &request.digest, signature)?;
    let signed = UnsignedTx::decode(&raw)?.assemble(signature, &public_key)?;
    let sender = tessera_chain::recover_sender(&signed)?;
    println!("      signed in {:.1?}; verified with k256", t.elapsed());
    println!("      signed transaction 0x{}", hex::encode(&signed));
    println!(
        "      its sender recovers to {} (the key's address)",
        tessera_chain::checksummed(&sender)
    );
    if sender != tessera_chain::address(&public_key)? {
        bail!("the signed transaction's sender is not the key's address");
    }
    cluster.deliver_spends(key, &[P3], 1, DEADLINE).await?;
    println!(
        "      p3, which did not sign, now holds this signing as record {} of the key's spend \
         chain: its rolling windows count it",
        cluster.spend_head(key, P3)
    );

    step(
        6,
        "full signing with p2 and p3: an EIP-191 message from the HD child key m/0/7",
    );
    let path = vec![0, 7];
    let child = derive_child_public_key(&public_key, &chain_code, &path)?;
    let message = Payload::Message {
        bytes: b"Tessera demo: proof of control".to_vec(),
    };
    let request = dev.request(key, path, message, now_unix())?;
    let approvals = dev.approve(&request);
    let t = Instant::now();
    let output = cluster
        .run(
            &[P2, P3],
            Operation::Sign {
                request: request.clone(),
                approvals: approvals.clone(),
                // A message moves nothing: it has no place in the spend chain.
                link: None,
            },
            DEADLINE,
        )
        .await?;
    verify_with_k256(&child, &request.digest, signature_of(&output)?)?;
    println!(
        "      signed in {:.1?} by {} (child address); verified with k256",
        t.elapsed(),
        ethereum_address(&child)?
    );

    step(
        7,
        "FROST keys: a Taproot key spends two P2TR outputs (PSBT, regtest), an Ed25519 key \
         signs a Solana transfer",
    );
    frost_keys(&cluster, dev).await?;

    step(8, "what the nodes refuse, each with its reason");
    let replay = Operation::Sign {
        request,
        approvals,
        link: None,
    };
    refused(
        "the same request again",
        cluster.run(&[P2, P3], replay, DEADLINE).await,
    )?;
    for (what, to, wei) in [
        (
            "20 ETH (over the 10 ETH limit)",
            RECIPIENT,
            20_000_000_000_000_000_000u128,
        ),
        ("a transfer to the denied address", dev::DEV_DENIED, 1),
    ] {
        let raw =
            Eip1559Request::transfer(dev::DEV_CHAIN_ID, 1, parse_address(to)?, U256::from(wei))
                .encode();
        let request = dev.request(key, Vec::new(), Payload::EthereumTx { raw }, now_unix())?;
        let approvals = dev.approve(&request);
        refused(
            what,
            cluster
                .sign(&[P1, P2], &request, approvals, None, DEADLINE)
                .await,
        )?;
    }
    let raw = Eip1559Request::transfer(dev::DEV_CHAIN_ID, 2, to, U256::from(1u64)).encode();
    let request = dev.request(key, Vec::new(), Payload::EthereumTx { raw }, now_unix())?;
    let mut approvals = dev.approve(&request);
    approvals.remove(1);
    refused(
        "a request with one approval of two",
        cluster
            .sign(&[P1, P2], &request, approvals, None, DEADLINE)
            .await,
    )?;

    step(
        9,
        "the nodes' audit logs: hash chains signed by each node, checked against the roster",
    );
    let keys = TrustedKeys::from_roster(&cluster.roster)?;
    for node in &cluster.nodes {
        let log = node.audit();
        let path = log.file().context("the nodes keep audit files")?;
        let summary = Verifier::verify_all(keys.clone(), audit_file::read(path)?)
            .map_err(|broken| anyhow::anyhow!("{}: BROKEN at {broken}", path.display()))?;
        let refusals = audit_file::read(path)?
            .into_iter()
            .flatten()
            .filter(|r| r.action == "request.refused")
            .count();
        println!(
            "      {}: {} events verified ({refusals} refusals recorded), head {}",
            log.emitter(),
            summary.events,
            &summary.chains[log.emitter()].head.to_string()[..16]
        );
    }
    if args.dir.is_some() {
        println!(
            "      verify them yourself: tessera audit verify --roster {} {}/*.audit.jsonl",
            dir.join("roster.json").display(),
            cluster.audit_dir().display()
        );
    } else {
        println!(
            "      (run with --dir DIR to keep them and check them with `tessera audit verify`)"
        );
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

const RECIPIENT: &str = "0x6069a6c32cf691f5982febae4faf8a6f3ab2f0f6";

/// Generates a 2-of-3 key of `kind` (FROST: no auxiliary info needed) and returns its id and
/// public key.
async fn frost_key(cluster: &LocalCluster, kind: KeyKind) -> Result<(KeyId, Vec<u8>)> {
    let key = KeyId::random();
    let t = Instant::now();
    let Output::Keygen { public_key, .. } = cluster
        .run(
            &[P1, P2, P3],
            Operation::Keygen {
                key,
                threshold: 2,
                kind,
            },
            DEADLINE,
        )
        .await?
    else {
        bail!("key generation returned no public key");
    };
    println!(
        "      {kind} key {key} generated in {:.1?} by p1, p2, p3",
        t.elapsed()
    );
    Ok((key, public_key))
}

/// Step 7: a Taproot key's key-path spend of two outputs, and a Solana transfer, each
/// approved, re-checked by the signers, signed with FROST and verified.
async fn frost_keys(cluster: &LocalCluster, dev: &dev::DevPolicy) -> Result<()> {
    use tessera_chain::bitcoin::{self as btc, BitcoinNetwork, InputSignature, SpentOutput};

    let (key, internal) = frost_key(cluster, KeyKind::Taproot).await?;
    let output_key = btc::taproot_output_key(&internal)?;
    let own = btc::p2tr_script(&output_key)?;
    let network = BitcoinNetwork::Regtest;
    println!(
        "      its address {}",
        btc::address_of_script(&own, network).context("a P2TR address")?
    );
    let spent = |n: u8, value: u64| SpentOutput {
        txid: [n; 32],
        vout: 0,
        value,
        script_pubkey: own.clone(),
    };
    let away = btc::p2wpkh_script(&public_key_of(RECIPIENT_BTC_KEY)?)?;
    let psbt = btc::unsigned_psbt(
        &[spent(1, 600_000), spent(2, 400_000)],
        &[(away, 700_000), (own.clone(), 298_000)],
    )?;
    let payload = Payload::BitcoinPsbt {
        network,
        psbt: psbt.clone(),
        signer: output_key.to_vec(),
    };
    let derived = tessera_policy::derive(&payload)?;
    println!(
        "      olivia asks: {}; fee {} sat",
        derived.action,
        derived.max_fee.map(|(_, fee)| fee).unwrap_or_default()
    );
    let request = dev.request(key, Vec::new(), payload, now_unix())?;
    let t = Instant::now();
    let output = cluster
        .sign(&[P1, P3], &request, dev.approve(&request), None, DEADLINE)
        .await?;
    let signatures = signature_of(&output)?;
    let verifying = k256::schnorr::VerifyingKey::from_bytes(&output_key)?;
    for (signing, signature) in derived.signings.iter().zip(signatures.chunks(64)) {
        let tessera_policy::Signing::Taproot { sighash } = signing else {
            bail!("a Taproot key signs BIP-340");
        };
        verifying
            .verify_raw(sighash, &k256::schnorr::Signature::try_from(signature)?)
            .context("a BIP-340 signature does not verify with k256")?;
    }
    let tx = btc::Psbt::decode(&psbt, network)?.finalize(
        &signatures
            .chunks(64)
            .map(|s| InputSignature::Schnorr {
                signature: s.to_vec(),
            })
            .collect::<Vec<_>>(),
    )?;
    println!(
        "      p1 and p3 signed both inputs in {:.1?} (one BIP-340 signature each, verified \
         with k256); finalized key-path spend of {} bytes",
        t.elapsed(),
        tx.len()
    );

    let (key, public_key) = frost_key(cluster, KeyKind::Ed25519).await?;
    let from: [u8; 32] = public_key
        .as_slice()
        .try_into()
        .context("an Ed25519 key is 32 bytes")?;
    println!(
        "      its Solana address {}",
        tessera_chain::solana::address(&from)
    );
    let message = tessera_chain::solana::Transfer {
        from,
        to: [0x42; 32],
        lamports: 1_500_000_000,
        recent_blockhash: [0x24; 32],
    }
    .build();
    let payload = Payload::SolanaTransfer {
        message: message.clone(),
    };
    let request = dev.request(key, Vec::new(), payload, now_unix())?;
    println!(
        "      olivia asks: {}",
        tessera_policy::derive(&request.payload)?.action
    );
    let t = Instant::now();
    let output = cluster
        .sign(&[P2, P3], &request, dev.approve(&request), None, DEADLINE)
        .await?;
    let signature: [u8; 64] = signature_of(&output)?
        .try_into()
        .context("one Ed25519 signature")?;
    ed25519_dalek::VerifyingKey::from_bytes(&from)?
        .verify_strict(&message, &ed25519_dalek::Signature::from_bytes(&signature))
        .context("the Ed25519 signature does not verify")?;
    let tx = tessera_chain::solana::Transfer::assemble(&message, &signature)?;
    println!(
        "      p2 and p3 signed in {:.1?}; verified with ed25519-dalek; signed transaction of \
         {} bytes",
        t.elapsed(),
        tx.len()
    );
    Ok(())
}

/// A public test key the demo's bitcoin goes to (SEC1 compressed; nobody's).
const RECIPIENT_BTC_KEY: &str =
    "0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798";

fn public_key_of(text: &str) -> Result<Vec<u8>> {
    hex::decode(text).context("a hex public key")
}

fn parse_address(text: &str) -> Result<tessera_chain::Address> {
    let mut address = [0u8; 20];
    hex::decode_to_slice(text.trim_start_matches("0x"), &mut address)
        .with_context(|| format!("{text} is not an address"))?;
    Ok(address)
}

fn signature_of(output: &Output) -> Result<&[u8]> {
    match output {
        Output::Signature { signature } => Ok(signature),
        _ => bail!("signing returned no signature"),
    }
}

/// Prints why the nodes refused; a success here would be a bug.
fn refused(what: &str, result: Result<Output, StarterError>) -> Result<()> {
    match result {
        Ok(_) => bail!("the nodes signed {what}; they must refuse it"),
        Err(StarterError::Failed { failures, .. }) if !failures.is_empty() => {
            let (party, failure) = &failures[0];
            println!("      {what}: refused by {} signer(s)", failures.len());
            println!("        {party}: {}", failure.message);
            Ok(())
        }
        Err(e) => bail!("{what}: expected a refusal by the nodes, got {e}"),
    }
}
