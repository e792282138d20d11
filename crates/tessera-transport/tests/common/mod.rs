//! Shared set-up for transport tests: a three-party cluster with NATS credentials.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use tessera_channel::identity::PartyIdentity;
use tessera_channel::{ChannelConfig, ChannelManager, Delivery, FrameContext, Roster};
use tessera_transport::nats::server::LocalNatsServer;
use tessera_transport::nats::NatsTransport;
use tessera_transport::{SecureTransport, Transport};
use tessera_wire::{ClusterId, PartyId, Protocol, SessionId};

pub const PARTIES: [PartyId; 3] = [PartyId(1), PartyId(2), PartyId(3)];

pub struct Keys {
    pub identities: Vec<String>,
    pub nats_seeds: Vec<String>,
    pub roster: Roster,
}

pub fn keys(n: u16) -> Keys {
    let cluster = ClusterId::new("itest").unwrap();
    let mut identities = Vec::new();
    let mut nats_seeds = Vec::new();
    let mut publics = Vec::new();
    for i in 1..=n {
        let nkey = nkeys::KeyPair::new_user();
        let seed = nkey.seed().unwrap();
        let id = PartyIdentity::generate(PartyId(i), cluster.clone(), Some(seed.clone()));
        publics.push(id.public(Some(nkey.public_key())));
        identities.push(id.to_json().to_string());
        nats_seeds.push(seed);
    }
    let roster = Roster::build(cluster, 1, &publics).unwrap();
    Keys {
        identities,
        nats_seeds,
        roster,
    }
}

impl Keys {
    pub fn manager(&self, party: PartyId, config: ChannelConfig) -> ChannelManager {
        let id = PartyIdentity::from_json(&self.identities[party.0 as usize - 1]).unwrap();
        ChannelManager::new(id, self.roster.clone(), config).unwrap()
    }

    pub fn seed(&self, party: PartyId) -> &str {
        &self.nats_seeds[party.0 as usize - 1]
    }

    pub async fn nats(&self, server: &LocalNatsServer, party: PartyId) -> NatsTransport {
        let config = server
            .client_config(&self.roster, party, self.seed(party))
            .unwrap();
        NatsTransport::connect(&config).await.unwrap()
    }

    pub async fn secure(
        &self,
        party: PartyId,
        transport: Arc<dyn Transport>,
        config: ChannelConfig,
    ) -> SecureTransport {
        SecureTransport::start(self.manager(party, config), transport)
            .await
            .unwrap()
    }
}

pub fn ctx(round: u16) -> FrameContext {
    FrameContext {
        session: SessionId([5; 16]),
        round,
        protocol: Protocol::PING,
    }
}

pub const WAIT: Duration = Duration::from_secs(10);

pub async fn expect(node: &SecureTransport, from: PartyId, payload: &[u8]) -> Delivery {
    let d = node
        .recv_timeout(WAIT)
        .await
        .unwrap_or_else(|| panic!("{} got nothing from {from}", node.party()));
    assert_eq!(d.from, from);
    assert_eq!(d.payload, payload);
    d
}

/// Every party sends a direct message to every other party and a broadcast to all; checks
/// that each arrives authenticated and intact.
pub async fn exchange_every_kind(nodes: &[SecureTransport]) {
    for a in nodes {
        for b in nodes {
            if a.party() != b.party() {
                let msg = format!("direct {}->{}", a.party(), b.party());
                a.send(b.party(), ctx(1), msg.as_bytes()).await.unwrap();
            }
        }
    }
    for a in nodes {
        let mut got: Vec<String> = Vec::new();
        for _ in 1..nodes.len() {
            let d = a.recv_timeout(WAIT).await.expect("direct message");
            assert_eq!(d.context, ctx(1));
            assert!(d.broadcast.is_none());
            got.push(String::from_utf8(d.payload).unwrap());
        }
        got.sort();
        let mut want: Vec<String> = nodes
            .iter()
            .filter(|b| b.party() != a.party())
            .map(|b| format!("direct {}->{}", b.party(), a.party()))
            .collect();
        want.sort();
        assert_eq!(got, want);
    }
    for a in nodes {
        let others: Vec<_> = nodes
            .iter()
            .map(|n| n.party())
            .filter(|p| *p != a.party())
            .collect();
        let msg = format!("broadcast from {}", a.party());
        a.broadcast(&others, ctx(2), msg.as_bytes()).await.unwrap();
        for b in nodes.iter().filter(|b| b.party() != a.party()) {
            let d = expect(b, a.party(), msg.as_bytes()).await;
            assert!(d.broadcast.expect("signed").signature.len() == 64);
        }
    }
    // A payload near the protocols' largest message size.
    let big = vec![0x42u8; 220 * 1024];
    nodes[0].send(nodes[1].party(), ctx(3), &big).await.unwrap();
    expect(&nodes[1], nodes[0].party(), &big).await;
    for n in nodes {
        assert_eq!(
            n.refusals().frames(),
            0,
            "honest traffic refused at {}",
            n.party()
        );
    }
}
