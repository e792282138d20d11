//! Regenerates `fixtures/INSECURE-2of3-committee.json`: runs the real key generation and
//! auxiliary-info protocols for a 2-of-3 committee over secure in-memory sessions, using the
//! first three fixture prime sets. INSECURE: the primes are public.
//!
//! Run: `cargo run --release -p tessera-mpc --example generate-fixtures`

use std::sync::Arc;
use std::time::Instant;

use cggmp24::key_share::AnyKeyShare;
use tessera_channel::identity::PartyIdentity;
use tessera_channel::{ChannelConfig, ChannelManager, Roster};
use tessera_mpc::fixtures::{insecure_test_primes, CommitteeFixture};
use tessera_mpc::{aux_info, keygen, KeyShare, MpcConfig, SessionSpec};
use tessera_transport::memory::MemoryNetwork;
use tessera_transport::SecureTransport;
use tessera_wire::{ClusterId, PartyId, Protocol, SessionId};

#[tokio::main]
async fn main() {
    let cluster = ClusterId::new("fixtures").unwrap();
    let committee: Vec<PartyId> = (1..=3).map(PartyId).collect();
    let ids: Vec<_> = committee
        .iter()
        .map(|p| PartyIdentity::generate(*p, cluster.clone(), None))
        .collect();
    let roster = Roster::build(
        cluster,
        1,
        &ids.iter().map(|i| i.public(None)).collect::<Vec<_>>(),
    )
    .unwrap();
    let net = MemoryNetwork::new();
    let mut nodes = Vec::new();
    for id in ids {
        let p = id.party();
        let manager = ChannelManager::new(id, roster.clone(), ChannelConfig::default()).unwrap();
        nodes.push(Arc::new(
            SecureTransport::start(manager, Arc::new(net.connect(p)))
                .await
                .unwrap(),
        ));
    }
    let config = MpcConfig::default();

    let t = Instant::now();
    let spec = SessionSpec {
        session: SessionId::random(),
        protocol: Protocol::KEYGEN,
        parties: committee.clone(),
    };
    let runs = nodes.iter().map(|n| keygen(n.clone(), &spec, 2, &config));
    let cores = futures::future::try_join_all(runs).await.unwrap();
    eprintln!("keygen: {:.1?}", t.elapsed());

    let t = Instant::now();
    let spec = SessionSpec {
        session: SessionId::random(),
        protocol: Protocol::AUX_INFO,
        parties: committee.clone(),
    };
    let primes = insecure_test_primes();
    let runs = nodes
        .iter()
        .zip(primes)
        .map(|(n, p)| aux_info(n.clone(), &spec, p, &config));
    let aux = futures::future::try_join_all(runs).await.unwrap();
    eprintln!("aux info: {:.1?}", t.elapsed());

    let shares: Vec<KeyShare> = cores
        .into_iter()
        .zip(aux)
        .map(|parts| KeyShare::from_parts(parts).unwrap())
        .collect();
    eprintln!(
        "public key: {}",
        hex(&shares[0].shared_public_key().to_bytes(true))
    );
    let fixture = CommitteeFixture {
        committee,
        threshold: 2,
        shares,
    };
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/INSECURE-2of3-committee.json"
    );
    std::fs::write(path, serde_json::to_string(&fixture).unwrap()).unwrap();
    eprintln!("wrote {path}");
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
