//! Shared set-up for the protocol tests: identities, a roster and secure transports.

use std::sync::Arc;

use tessera_channel::identity::PartyIdentity;
use tessera_channel::{ChannelConfig, ChannelManager, Roster};
use tessera_mpc::SessionSpec;
use tessera_transport::memory::MemoryNetwork;
use tessera_transport::{SecureTransport, Transport};
use tessera_wire::{ClusterId, PartyId, Protocol, SessionId};

/// Identities (JSON), NKey seeds and the roster of a test cluster.
pub struct Keys {
    pub identities: Vec<String>,
    pub seeds: Vec<String>,
    pub roster: Roster,
}

/// Identities and a roster for parties p1 to pn.
pub fn keys(n: u16) -> Keys {
    let cluster = ClusterId::new("mpc-test").unwrap();
    let (mut identities, mut seeds, mut publics) = (Vec::new(), Vec::new(), Vec::new());
    for i in 1..=n {
        let nkey = nkeys::KeyPair::new_user();
        let seed = nkey.seed().unwrap();
        let id = PartyIdentity::generate(PartyId(i), cluster.clone(), Some(seed.clone()));
        publics.push(id.public(Some(nkey.public_key())));
        identities.push(id.to_json().to_string());
        seeds.push(seed);
    }
    let roster = Roster::build(cluster, 1, &publics).unwrap();
    Keys {
        identities,
        seeds,
        roster,
    }
}

/// One party's secure transport over `transport`.
pub async fn node(keys: &Keys, p: PartyId, transport: Arc<dyn Transport>) -> Arc<SecureTransport> {
    let id = PartyIdentity::from_json(&keys.identities[p.0 as usize - 1]).unwrap();
    let manager = ChannelManager::new(id, keys.roster.clone(), ChannelConfig::default()).unwrap();
    Arc::new(SecureTransport::start(manager, transport).await.unwrap())
}

/// Parties p1 to pn on one in-memory network.
pub async fn memory_nodes(keys: &Keys, n: u16) -> Vec<Arc<SecureTransport>> {
    let net = MemoryNetwork::new();
    let mut nodes = Vec::new();
    for p in (1..=n).map(PartyId) {
        nodes.push(node(keys, p, Arc::new(net.connect(p))).await);
    }
    nodes
}

/// A fresh session of `protocol` among `parties`, in order.
pub fn spec(protocol: Protocol, parties: &[PartyId]) -> SessionSpec {
    SessionSpec {
        session: SessionId::random(),
        protocol,
        parties: parties.to_vec(),
    }
}
