//! `tessera demo`: three parties in one process talking over authenticated, encrypted channels.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use tessera_channel::identity::{AdminKey, PartyIdentity};
use tessera_channel::{ChannelConfig, ChannelManager, FrameContext, Roster, SignedRoster};
use tessera_transport::memory::MemoryNetwork;
use tessera_transport::nats::server::LocalNatsServer;
use tessera_transport::nats::NatsTransport;
use tessera_transport::{SecureTransport, Transport};
use tessera_wire::{
    ClusterId, FrameHeader, FrameKind, PartyId, Protocol, RecordFrame, SessionId, WireMessage,
};

/// Options of `tessera demo`.
#[derive(Args)]
pub struct DemoArgs {
    /// Run the parties over a real nats-server started on loopback (mTLS, NKeys, permissions)
    /// instead of the in-memory transport. Needs `nats-server` on PATH.
    #[arg(long)]
    spawn_nats: bool,
    /// Direct messages each party sends to each other party.
    #[arg(long, default_value_t = 10)]
    messages: u16,
}

const WAIT: Duration = Duration::from_secs(10);

pub fn run(args: DemoArgs) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(demo(args))
}

struct Party {
    identity: PartyIdentity,
    nats_seed: String,
    nats_user: String,
}

async fn demo(args: DemoArgs) -> Result<()> {
    let started = Instant::now();
    let cluster = ClusterId::new("demo")?;
    let parties: Vec<PartyId> = (1..=3).map(PartyId).collect();

    step(1, "creating party identities and a signed roster");
    let mut keys = Vec::new();
    for &p in &parties {
        let nkey = nkeys::KeyPair::new_user();
        let nats_seed = nkey.seed().context("encoding an NKey seed")?;
        let identity = PartyIdentity::generate(p, cluster.clone(), Some(nats_seed.clone()));
        keys.push(Party {
            identity,
            nats_seed,
            nats_user: nkey.public_key(),
        });
    }
    let publics: Vec<_> = keys
        .iter()
        .map(|k| k.identity.public(Some(k.nats_user.clone())))
        .collect();
    let roster = Roster::build(cluster, 1, &publics)?;
    let admin = AdminKey::generate();
    let mut signed = SignedRoster::new(roster.clone());
    signed.sign(&admin);
    let hash = signed.verify(&[admin.verifying_key()], 1)?;
    println!("      roster {hash} signed by 1 admin; parties p1, p2, p3");

    let memory = MemoryNetwork::new();
    let server = if args.spawn_nats {
        step(
            2,
            "starting nats-server on loopback (mTLS, one NKey user per party)",
        );
        let server = LocalNatsServer::start(&roster)?;
        println!("      broker at {}", server.url());
        Some(server)
    } else {
        step(2, "connecting the parties over the in-memory transport");
        None
    };
    let mut nodes = Vec::new();
    for (k, &p) in keys.into_iter().zip(&parties) {
        let transport: Arc<dyn Transport> = match &server {
            Some(server) => Arc::new(
                NatsTransport::connect(&server.client_config(&roster, p, &k.nats_seed)?).await?,
            ),
            None => Arc::new(memory.connect(p)),
        };
        let manager = ChannelManager::new(k.identity, roster.clone(), ChannelConfig::default())?;
        nodes.push(SecureTransport::start(manager, transport).await?);
    }

    step(
        3,
        "Noise KK handshakes and direct messages between every pair",
    );
    let session = SessionId::random();
    let ctx = |round| FrameContext {
        session,
        round,
        protocol: Protocol::PING,
    };
    let t = Instant::now();
    for a in &nodes {
        for b in nodes.iter().filter(|b| b.party() != a.party()) {
            for i in 0..args.messages {
                let text = format!("message {i} from {} to {}", a.party(), b.party());
                a.send(b.party(), ctx(1), text.as_bytes()).await?;
            }
        }
    }
    let expected = 2 * args.messages as usize;
    for node in &nodes {
        for _ in 0..expected {
            let d = node
                .recv_timeout(WAIT)
                .await
                .with_context(|| format!("{} stopped receiving", node.party()))?;
            let text = String::from_utf8_lossy(&d.payload);
            if !text.ends_with(&format!("to {}", node.party())) {
                bail!(
                    "{} received a message meant for someone else: {text}",
                    node.party()
                );
            }
        }
        let epochs: Vec<String> = parties
            .iter()
            .filter(|p| **p != node.party())
            .map(|p| format!("{p}@epoch {}", node.epoch(*p).unwrap_or_default()))
            .collect();
        println!(
            "      {} received {expected} authenticated messages ({})",
            node.party(),
            epochs.join(", ")
        );
    }
    println!(
        "      {} messages sealed, sent and opened in {:.1?}",
        expected * nodes.len(),
        t.elapsed()
    );

    step(4, "signed broadcasts");
    for a in &nodes {
        let others: Vec<_> = parties
            .iter()
            .copied()
            .filter(|p| *p != a.party())
            .collect();
        let text = format!("commitment of {}", a.party());
        a.broadcast(&others, ctx(2), text.as_bytes()).await?;
        for b in nodes.iter().filter(|b| b.party() != a.party()) {
            let d = b.recv_timeout(WAIT).await.context("broadcast lost")?;
            let evidence = d.broadcast.context("broadcast without a signature")?;
            evidence.verify(&roster)?;
            println!(
                "      {} got {:?} from {}, Ed25519 signature verified against the roster",
                b.party(),
                String::from_utf8_lossy(&d.payload),
                d.from
            );
        }
    }

    step(5, "a forged frame is refused and the channel keeps working");
    let (p1, p2) = (parties[0], parties[1]);
    let forged = WireMessage::Record(RecordFrame {
        header: FrameHeader {
            kind: FrameKind::Direct,
            epoch: nodes[0].epoch(p2).unwrap_or_default(),
            counter: 1 << 40,
            from: p2,
            to: p1,
            session,
            round: 1,
            protocol: Protocol::PING,
            len: 32,
        },
        ciphertext: vec![0x42; 32],
    });
    nodes[1]
        .transport()
        .send(p1, forged.encode().into())
        .await?;
    nodes[1].send(p1, ctx(3), b"genuine").await?;
    let d = nodes[0]
        .recv_timeout(WAIT)
        .await
        .context("genuine message lost")?;
    let refusals = nodes[0].refusals();
    let refused: Vec<String> = refusals
        .iter()
        .map(|(reason, n)| format!("{reason}: {n}"))
        .collect();
    println!(
        "      p1 refused the forgery ({}) and then accepted {:?} from {}",
        refused.join(", "),
        String::from_utf8_lossy(&d.payload),
        d.from
    );
    if refusals.total() == 0 {
        bail!("the forged frame was not refused");
    }

    step(6, "re-handshake on demand (fresh ephemeral keys)");
    let before = nodes[0].epoch(p2);
    nodes[0].rekey(p2).await?;
    let deadline = Instant::now() + WAIT;
    while nodes[0].epoch(p2) == before || nodes[1].epoch(p1) != nodes[0].epoch(p2) {
        if Instant::now() > deadline {
            bail!("the re-handshake did not complete");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    nodes[0].send(p2, ctx(4), b"after rekey").await?;
    let d = nodes[1]
        .recv_timeout(WAIT)
        .await
        .context("message after rekey lost")?;
    println!(
        "      p1<->p2 moved from epoch {} to {}; {:?} delivered",
        before.unwrap_or_default(),
        nodes[0].epoch(p2).unwrap_or_default(),
        String::from_utf8_lossy(&d.payload)
    );

    println!(
        "\nDone in {:.1?}: 3 parties, every message sealed end to end (ChaCha20-Poly1305 under \
         Noise KK keys), {} transport.",
        started.elapsed(),
        if server.is_some() {
            "NATS"
        } else {
            "in-memory"
        }
    );
    Ok(())
}

fn step(n: u8, text: &str) {
    println!("[{n}/6] {text}");
}
