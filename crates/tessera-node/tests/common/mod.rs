//! Shared test support: fixture committees, approved requests and signature checks.
#![allow(dead_code)]

use std::time::Duration;

use tessera_control::{Operation, Output, SpendLink};
use tessera_mpc::fixtures::{insecure_committee_2of3, CommitteeFixture};
use tessera_mpc::{AuxInfo, IncompleteKeyShare};
use tessera_node::local::LocalCluster;
use tessera_node::requests::{Admitted, KeyFacts, RequestLedger};
use tessera_node::state::KeyRecord;
use tessera_node::NodeError;
use tessera_policy::dev::DevPolicy;
use tessera_policy::{Approval, Payload, SignRequest};
use tessera_store::FileStore;
use tessera_wire::{KeyId, PartyId};

pub const P1: PartyId = PartyId(1);
pub const P2: PartyId = PartyId(2);
pub const P3: PartyId = PartyId(3);
pub const DEADLINE: Duration = Duration::from_secs(60);

/// Splits a fixture key share into the parts a node stores.
pub fn parts(share: &tessera_mpc::KeyShare) -> (IncompleteKeyShare, AuxInfo) {
    let mut value = serde_json::to_value(share).unwrap();
    let core = serde_json::from_value(value["core"].take()).unwrap();
    let aux = serde_json::from_value(value["aux"].take()).unwrap();
    (core, aux)
}

/// Installs the INSECURE fixture 2-of-3 committee (aux info + one key) in the cluster's first
/// three nodes, as if aux info and key generation had run. Returns the key and its public key.
pub fn install_fixture_committee(cluster: &LocalCluster) -> (KeyId, Vec<u8>) {
    install(cluster, insecure_committee_2of3())
}

/// Installs a fixture committee (aux info + one key) in the cluster's nodes.
pub fn install(cluster: &LocalCluster, fixture: CommitteeFixture) -> (KeyId, Vec<u8>) {
    use cggmp24::key_share::AnyKeyShare;
    let key = KeyId::random();
    for (p, share) in fixture.committee.iter().zip(&fixture.shares) {
        let (core, aux) = parts(share);
        let state = cluster.node(*p).state();
        state.put_aux(&fixture.committee, &aux).unwrap();
        let record = KeyRecord {
            committee: fixture.committee.clone(),
            threshold: fixture.threshold,
            epoch: 0,
            kind: tessera_wire::KeyKind::Ecdsa,
            share: tessera_node::state::StoredShare::Secp256k1(core),
            aux: Some(aux),
        };
        state.put_key(key, &record).unwrap();
    }
    let public = fixture.shares[0]
        .shared_public_key()
        .to_bytes(true)
        .to_vec();
    (key, public)
}

/// Puts INSECURE fixture prime set `set` (0 to 5) into the pool of each `(party, set)`: a
/// refresh or reshare takes one from every receiver.
pub fn give_primes(cluster: &LocalCluster, sets: &[(PartyId, usize)]) {
    let primes = tessera_mpc::fixtures::insecure_test_primes();
    for (p, set) in sets {
        cluster.node(*p).primes().put(&primes[*set]).unwrap();
    }
}

/// A fresh request by the development operator to sign `text` as an EIP-191 message with
/// the master key, and both development approvers' approvals.
pub fn approved(cluster: &LocalCluster, key: KeyId, text: &[u8]) -> (SignRequest, Vec<Approval>) {
    approved_payload(
        cluster,
        key,
        Payload::Message {
            bytes: text.to_vec(),
        },
    )
}

/// A fresh approved request for `payload` (master key).
pub fn approved_payload(
    cluster: &LocalCluster,
    key: KeyId,
    payload: Payload,
) -> (SignRequest, Vec<Approval>) {
    let dev = cluster.dev.as_ref().expect("a development policy");
    let request = dev.request(key, Vec::new(), payload, now()).unwrap();
    let approvals = dev.approve(&request);
    (request, approvals)
}

/// Full signing of a fresh approved message request.
pub fn sign_message(cluster: &LocalCluster, key: KeyId, text: &[u8]) -> (Operation, [u8; 32]) {
    let (request, approvals) = approved(cluster, key, text);
    let digest = request.digest;
    (
        Operation::Sign {
            request,
            approvals,
            link: None,
        },
        digest,
    )
}

/// Any public key: the records that ledger tests keep carry no signature to check.
pub fn any_public_key(_path: &[u32]) -> Option<Vec<u8>> {
    Some(vec![2; 33])
}

/// A 2-of-3 key, as a request ledger needs to know it (for ledger tests without a cluster).
pub fn two_of_three() -> KeyFacts<'static> {
    KeyFacts {
        holders: 3,
        threshold: 2,
        kind: tessera_wire::KeyKind::Ecdsa,
        public_key_at: &any_public_key,
    }
}

/// Offers `request`, approved by `dev`'s principals, to `ledger` at `link` of a 2-of-3 key's
/// spend chain, at `at`.
pub fn admit<'l>(
    ledger: &'l RequestLedger<FileStore>,
    dev: &DevPolicy,
    request: &SignRequest,
    link: Option<&SpendLink>,
    at: u64,
) -> Result<Admitted<'l, FileStore>, NodeError> {
    let approvals = dev.approve(request);
    ledger.admit(
        &dev.document,
        request,
        &approvals,
        link,
        &two_of_three(),
        at,
    )
}

/// Unix seconds now.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Checks `r || s` over a 32-byte digest against a compressed public key, with k256.
pub fn k256_verifies(public_key: &[u8], digest: &[u8; 32], output: &Output) -> bool {
    use k256::ecdsa::signature::hazmat::PrehashVerifier;
    let Output::Signature { signature } = output else {
        return false;
    };
    let key = k256::ecdsa::VerifyingKey::from_sec1_bytes(public_key).unwrap();
    let Ok(sig) = k256::ecdsa::Signature::from_slice(signature) else {
        return false;
    };
    key.verify_prehash(digest, &sig).is_ok()
}
