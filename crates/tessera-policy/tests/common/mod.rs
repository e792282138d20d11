//! Shared test fixtures: the example policy, its test keys, transactions, a spend history.
#![allow(dead_code)]

use std::cell::RefCell;
use std::collections::HashMap;

use alloy_consensus::{SignableTransaction, TxEip1559, TxLegacy};
use alloy_primitives::{Address as AlloyAddress, TxKind, U256};
use sha2::{Digest, Sha256};
use tessera_policy::{
    Approval, Asset, KeyChange, KeyEpoch, KeyOperation, OperatorKey, Payload, PolicyDocument,
    SignRequest, SpendHistory,
};
use tessera_wire::{KeyId, PartyId, RequestId};

pub const EXAMPLE: &str = include_str!("../../../../docs/examples/policy.toml");
pub const TREASURY_KEY: &str = "5f0a3c1e9b7d4e2fa1c3b5d7e9f1a2b4";
pub const HOT_KEY: &str = "7a2c5e3b1d9f6a4bc3e5d7f9a1b3c4d6";
pub const USDC: &str = "a0b86991c6218b36c1d19d4a2e9eb0ce3606eb48";
pub const ROUTER: &str = "3fc91a3afd70395cd496c647d5a6cc9d4b2b7fad";
pub const DEPOSIT: [u8; 20] = [0x11; 20];
pub const DEAD: &str = "000000000000000000000000000000000000dead";
/// Monday 2024-01-01 10:00:00 UTC.
pub const MONDAY_10AM: u64 = 1_704_067_200 + 10 * 3600;
pub const ETH: u128 = 1_000_000_000_000_000_000;

pub fn example() -> PolicyDocument {
    PolicyDocument::from_toml(EXAMPLE.as_bytes()).expect("the example policy parses")
}

/// The example's test keys: secret = SHA-256("tessera example <name>").
pub fn key(name: &str) -> OperatorKey {
    let kind = match name {
        "carol" | "erin" => "ethereum",
        _ => "ed25519",
    };
    let secret = hex::encode(Sha256::digest(format!("tessera example {name}")));
    OperatorKey::from_json(&format!("{{\"kind\":\"{kind}\",\"secret\":\"{secret}\"}}"))
        .expect("test key")
}

pub fn key_id(hex: &str) -> KeyId {
    hex.parse().expect("key id")
}

pub fn addr(hex_digits: &str) -> [u8; 20] {
    let mut out = [0u8; 20];
    hex::decode_to_slice(hex_digits, &mut out).expect("address");
    out
}

/// An EIP-1559 transaction on chain 1 that pays no fee (its gas price is zero), so that tests
/// of limits on value see only the value; [`eip1559_paying`] for one that pays.
pub fn eip1559(to: [u8; 20], value: U256, input: Vec<u8>) -> Vec<u8> {
    eip1559_paying(to, value, input, 60_000, 0)
}

/// An EIP-1559 transaction on chain 1 whose maximum fee is `gas_limit * max_fee_per_gas`.
pub fn eip1559_paying(
    to: [u8; 20],
    value: U256,
    input: Vec<u8>,
    gas_limit: u64,
    max_fee_per_gas: u128,
) -> Vec<u8> {
    TxEip1559 {
        chain_id: 1,
        nonce: 3,
        gas_limit,
        to: TxKind::Call(AlloyAddress::from(to)),
        value,
        input: input.into(),
        max_fee_per_gas,
        max_priority_fee_per_gas: max_fee_per_gas.min(1_000_000_000),
        access_list: Default::default(),
    }
    .encoded_for_signing()
}

pub fn legacy(chain_id: u64, to: Option<[u8; 20]>, value: U256, input: Vec<u8>) -> Vec<u8> {
    TxLegacy {
        chain_id: Some(chain_id),
        nonce: 9,
        // No fee: tests of limits on value see only the value.
        gas_price: 0,
        gas_limit: 100_000,
        to: to.map_or(TxKind::Create, |a| TxKind::Call(AlloyAddress::from(a))),
        value,
        input: input.into(),
    }
    .encoded_for_signing()
}

pub fn erc20_transfer_input(to: [u8; 20], amount: U256) -> Vec<u8> {
    let mut input = vec![0xa9, 0x05, 0x9c, 0xbb];
    input.extend_from_slice(&[0u8; 12]);
    input.extend_from_slice(&to);
    input.extend_from_slice(&amount.to_be_bytes::<32>());
    input
}

pub fn eth(n: u128) -> U256 {
    U256::from(n * ETH)
}

pub fn new_request(
    policy: &PolicyDocument,
    key: &str,
    payload: Payload,
    created_at: u64,
) -> SignRequest {
    SignRequest::new(
        RequestId::random(),
        key_id(key),
        vec![0, 1],
        payload,
        policy.hash(),
        "alice",
        created_at,
        created_at + 600,
    )
    .expect("valid request")
}

/// The approvals of `names`, then the submitter's own signature (which every request needs
/// and which counts as no approval).
pub fn approve(request: &SignRequest, names: &[&str]) -> Vec<Approval> {
    names
        .iter()
        .copied()
        .chain([request.submitted_by.as_str()])
        .map(|n| Approval::sign(&request.request_digest(), n, &key(n)))
        .collect()
}

/// Spend records `(key, asset, time, amount)` with the queries made, to check the window.
#[derive(Default)]
pub struct MapHistory {
    pub spent: HashMap<(KeyId, Asset), Vec<(u64, U256)>>,
    pub queries: RefCell<Vec<(KeyId, Asset, u64)>>,
}

impl MapHistory {
    pub fn record(&mut self, key: KeyId, asset: Asset, at: u64, amount: U256) {
        self.spent
            .entry((key, asset))
            .or_default()
            .push((at, amount));
    }
}

impl SpendHistory for MapHistory {
    fn spent_since(&self, key: KeyId, asset: &Asset, since: u64) -> U256 {
        self.queries.borrow_mut().push((key, *asset, since));
        self.spent
            .get(&(key, *asset))
            .map(|entries| {
                entries
                    .iter()
                    .filter(|(t, _)| *t >= since)
                    .fold(U256::ZERO, |sum, (_, a)| sum + *a)
            })
            .unwrap_or_default()
    }
}

/// A change of the treasury key (epoch 0, held 2-of-3 by p1, p2, p3) under `policy`, proposed
/// by `by` at Monday 10:00 and living an hour.
pub fn treasury_key_change(
    policy: &PolicyDocument,
    operation: KeyOperation,
    by: &str,
) -> KeyChange {
    KeyChange {
        id: RequestId::random(),
        policy: policy.hash(),
        key: key_id(TREASURY_KEY),
        from: KeyEpoch {
            epoch: 0,
            committee: vec![PartyId(1), PartyId(2), PartyId(3)],
            threshold: 2,
        },
        operation,
        proposed_by: by.into(),
        created_at: MONDAY_10AM,
        expires_at: MONDAY_10AM + 3600,
    }
}

/// The approvals of `change` by `names`, with their test keys.
pub fn key_change_approvals(change: &KeyChange, names: &[&str]) -> Vec<Approval> {
    names
        .iter()
        .map(|n| Approval::sign(&change.change_digest(), n, &key(n)))
        .collect()
}
