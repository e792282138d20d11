//! Seal/open throughput and latency of established channels for the protocols' message sizes
//! (CGGMP24 sends 80 B to 212 KB messages).
//!
//! Run: `cargo bench -p tessera-channel --bench seal_open`

use std::time::Instant;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use tessera_channel::identity::PartyIdentity;
use tessera_channel::{ChannelConfig, ChannelManager, FrameContext, Roster};
use tessera_wire::{ClusterId, PartyId, Protocol, SessionId};

const SIZES: [(usize, &str); 3] = [(100, "100B"), (10 * 1024, "10KB"), (200 * 1024, "200KB")];

fn pair() -> (ChannelManager, ChannelManager) {
    let cluster = ClusterId::new("bench").unwrap();
    let ids: Vec<_> = (1..=2)
        .map(|i| PartyIdentity::generate(PartyId(i), cluster.clone(), None))
        .collect();
    let publics: Vec<_> = ids.iter().map(|i| i.public(None)).collect();
    let roster = Roster::build(cluster, 1, &publics).unwrap();
    let config = ChannelConfig {
        rekey_after_messages: u64::MAX,
        rekey_after: std::time::Duration::from_secs(86_400),
        ..ChannelConfig::default()
    };
    let mut it = ids.into_iter();
    let mut a = ChannelManager::new(it.next().unwrap(), roster.clone(), config.clone()).unwrap();
    let mut b = ChannelManager::new(it.next().unwrap(), roster, config).unwrap();
    // Handshake: a -> b -> a -> b.
    let now = Instant::now();
    let mut to_b = a.send(PartyId(2), ctx(), b"hello", now).unwrap();
    while !to_b.is_empty() {
        let mut to_a = Vec::new();
        for o in to_b.drain(..) {
            to_a.extend(b.receive(Some(PartyId(1)), &o.bytes, now).unwrap().outbound);
        }
        for o in to_a {
            to_b.extend(a.receive(Some(PartyId(2)), &o.bytes, now).unwrap().outbound);
        }
    }
    (a, b)
}

fn ctx() -> FrameContext {
    FrameContext {
        session: SessionId([1; 16]),
        round: 1,
        protocol: Protocol::SIGN,
    }
}

fn bench(c: &mut Criterion) {
    let (mut a, mut b) = pair();
    for (size, name) in SIZES {
        let payload = vec![0x5au8; size];
        let mut group = c.benchmark_group(format!("channel/{name}"));
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function("seal", |bench| {
            bench.iter(|| a.send(PartyId(2), ctx(), &payload, Instant::now()).unwrap())
        });
        group.bench_function("open", |bench| {
            bench.iter_batched(
                || {
                    a.send(PartyId(2), ctx(), &payload, Instant::now())
                        .unwrap()
                        .remove(0)
                },
                |frame| {
                    let r = b
                        .receive(Some(PartyId(1)), &frame.bytes, Instant::now())
                        .unwrap();
                    assert!(r.delivery.is_some());
                },
                BatchSize::SmallInput,
            )
        });
        group.bench_function("seal+open", |bench| {
            bench.iter(|| {
                let frame = a.send(PartyId(2), ctx(), &payload, Instant::now()).unwrap();
                b.receive(Some(PartyId(1)), &frame[0].bytes, Instant::now())
                    .unwrap()
            })
        });
        group.bench_function("broadcast-seal+open", |bench| {
            bench.iter(|| {
                let frame = a
                    .broadcast(&[PartyId(2)], ctx(), &payload, Instant::now())
                    .unwrap();
                b.receive(Some(PartyId(1)), &frame[0].bytes, Instant::now())
                    .unwrap()
            })
        });
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
