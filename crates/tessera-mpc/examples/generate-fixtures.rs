//! Regenerates an INSECURE fixture committee, `fixtures/INSECURE-<t>of<n>-committee.json`: runs
//! the real key generation and auxiliary-info protocols (the raw library, in process) using the
//! first `n` fixture prime sets. INSECURE: the primes are public.
//!
//! Run: `cargo run --release -p tessera-mpc --example generate-fixtures -- <t> <n>`
//! (default 2 3).

use std::time::Instant;

use cggmp24::key_share::AnyKeyShare;
use tessera_mpc::baseline;
use tessera_mpc::fixtures::{insecure_test_primes, CommitteeFixture};
use tessera_mpc::KeyShare;
use tessera_wire::PartyId;

#[tokio::main]
async fn main() {
    let args: Vec<u16> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("usage: generate-fixtures <t> <n>"))
        .collect();
    let (t, n) = match args[..] {
        [] => (2, 3),
        [t, n] => (t, n),
        _ => panic!("usage: generate-fixtures <t> <n>"),
    };
    let primes = insecure_test_primes();
    assert!(
        usize::from(n) <= primes.len(),
        "only {} prime sets",
        primes.len()
    );

    let started = Instant::now();
    let cores = baseline::keygen(n, t).await.unwrap();
    eprintln!("keygen: {:.1?}", started.elapsed());
    let started = Instant::now();
    let aux = baseline::aux_info(primes[..usize::from(n)].to_vec())
        .await
        .unwrap();
    eprintln!("aux info: {:.1?}", started.elapsed());

    let shares: Vec<KeyShare> = cores
        .into_iter()
        .zip(aux)
        .map(|parts| KeyShare::from_parts(parts).unwrap())
        .collect();
    eprintln!(
        "public key: {}",
        hex::encode(shares[0].shared_public_key().to_bytes(true))
    );
    let fixture = CommitteeFixture {
        committee: (1..=n).map(PartyId).collect(),
        threshold: t,
        shares,
    };
    let path = format!(
        "{}/fixtures/INSECURE-{t}of{n}-committee.json",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::write(&path, serde_json::to_string(&fixture).unwrap()).unwrap();
    eprintln!("wrote {path}");
}
