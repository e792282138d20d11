//! Rolling spend limits that hold whichever holders sign (issue 16 A.1,
//! `docs/protocols/spend-chain.md`): a 2-of-3 key signed by its three pairs in turn, driven
//! here as a coordinator would (honest, or withholding, forking and lying about records).

use crate::common;
use crate::requests::Fixture;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use tessera_chain::{Eip1559Request, U256};
use tessera_control::{Operation, Output, SpendChain, SpendLink, SpendRecord, StarterError};
use tessera_node::requests::{KeyFacts, RequestLedger};
use tessera_node::NodeSettings;
use tessera_policy::dev::{DevPolicy, DEV_CHAIN_ID, DEV_PER_REQUEST_WEI};
use tessera_policy::{Payload, SignRequest};
use tessera_store::{FileStore, KdfParams};
use tessera_wire::{KeyId, PartyId};

const RECIPIENT: [u8; 20] = [0x42; 20];
/// The development policy's window: ten times the per-request limit, per day.
const WINDOW_WEI: u128 = DEV_PER_REQUEST_WEI * 10;

/// A transfer that spends exactly the per-request limit, its maximum fee included.
fn full_transfer(nonce: u64) -> Payload {
    let fee = Eip1559Request::transfer(DEV_CHAIN_ID, nonce, RECIPIENT, U256::ZERO)
        .max_fee()
        .to::<u128>();
    Payload::EthereumTx {
        raw: Eip1559Request::transfer(
            DEV_CHAIN_ID,
            nonce,
            RECIPIENT,
            U256::from(DEV_PER_REQUEST_WEI - fee),
        )
        .encode(),
    }
}

/// A local 2-of-3 cluster under the development policy, driven by the test as its
/// coordinator, with the coordinator's copy of the key's spend chain.
struct Driver {
    f: Fixture,
    chain: SpendChain,
}

impl Driver {
    /// Nodes wait `round_timeout` for a round's messages (a signer left alone by a refusing
    /// partner gives up after it).
    async fn new(round_timeout: Duration) -> Self {
        let settings = NodeSettings {
            round_timeout,
            ..NodeSettings::default()
        };
        Driver {
            f: Fixture::with(settings).await,
            chain: SpendChain::new(),
        }
    }

    fn dev(&self) -> &DevPolicy {
        self.f.dev()
    }

    fn request(&self, nonce: u64) -> SignRequest {
        self.dev()
            .request(self.f.key, Vec::new(), full_transfer(nonce), now())
            .unwrap()
    }

    /// Runs `operation` with `parties`.
    async fn run(&self, parties: &[PartyId], operation: Operation) -> Result<Output, StarterError> {
        self.f.cluster.run(parties, operation, DEADLINE).await
    }

    /// Where `party`'s copy of the key's spend chain stands.
    fn head(&self, party: PartyId) -> (u64, [u8; 32]) {
        self.f
            .cluster
            .node(party)
            .ledger()
            .chain_head(self.f.key)
            .unwrap()
    }

    /// Delivers every record of the chain before place `upto` to each of `parties`.
    async fn deliver(&self, parties: &[PartyId], upto: u64) -> Result<Output, StarterError> {
        let records: Vec<SpendRecord> = self
            .chain
            .records_after(self.f.key, 0)
            .into_iter()
            .filter(|r| r.link.seq <= upto)
            .collect();
        let mut last = None;
        for p in parties {
            let operation = Operation::RecordSpends {
                key: self.f.key,
                records: records.clone(),
            };
            last = Some(self.run(&[*p], operation).await?);
        }
        Ok(last.expect("at least one party"))
    }

    /// Signs `request` with `signers` at `link`.
    async fn sign_at(
        &self,
        signers: &[PartyId],
        request: &SignRequest,
        link: SpendLink,
    ) -> Result<Output, StarterError> {
        let operation = Operation::Sign {
            request: request.clone(),
            approvals: self.dev().approve(request),
            link: Some(link),
        };
        self.run(signers, operation).await
    }

    /// Signs `request` with `signers` at the chain's next place, as an honest coordinator
    /// does if `deliver` (the records the signers lack first), or one that withholds them.
    async fn sign(
        &mut self,
        signers: &[PartyId],
        request: &SignRequest,
        deliver: bool,
    ) -> Result<Output, StarterError> {
        let link = self.chain.link(request, now());
        if deliver && link.seq > 1 {
            self.deliver(signers, link.seq - 1).await?;
        }
        let output = self.sign_at(signers, request, link).await?;
        if let Output::Signature { signature } = &output {
            assert!(k256_verifies(&self.f.public_key, &request.digest, &output));
            self.chain.signed(self.f.key, link.seq, signature.clone());
        }
        Ok(output)
    }
}

/// The messages of every signer that refused.
fn refusals(err: &StarterError) -> Vec<(PartyId, String)> {
    match err {
        StarterError::Failed { failures, .. } => failures
            .iter()
            .map(|(p, f)| (*p, f.message.clone()))
            .collect(),
        other => panic!("expected refusals by the nodes, got {other}"),
    }
}

const PAIRS: [[PartyId; 2]; 3] = [[P1, P2], [P2, P3], [P1, P3]];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_the_signer_pairs_of_a_2_of_3_key_never_signs_more_than_the_window() {
    let mut d = Driver::new(NodeSettings::default().round_timeout).await;
    // Each pair in turn signs the per-request limit; the window holds ten of them. Counting
    // only what it signed itself, each node would let about fifteen through.
    let mut signed = 0u128;
    let mut refused = Vec::new();
    for round in 0..12u64 {
        let pair = PAIRS[round as usize % 3];
        let request = d.request(round);
        match d.sign(&pair, &request, true).await {
            Ok(_) => signed += DEV_PER_REQUEST_WEI,
            Err(e) => refused.push((round, refusals(&e))),
        }
        assert!(
            signed <= WINDOW_WEI,
            "round {round}: {signed} wei signed, over the {WINDOW_WEI} wei window"
        );
    }
    assert_eq!(signed, WINDOW_WEI, "the window is used up, not less");
    assert_eq!(
        refused.iter().map(|(r, _)| *r).collect::<Vec<_>>(),
        [10, 11]
    );
    for (round, messages) in &refused {
        assert_eq!(messages.len(), 2, "round {round}: both signers refuse");
        for (p, message) in messages {
            assert!(
                message.contains("already spent"),
                "round {round}: {p} said {message}"
            );
        }
    }
    // Every holder, signer of it or not, holds every signing once delivered.
    d.deliver(&[P1, P2, P3], 12).await.unwrap();
    for p in [P1, P2, P3] {
        let (head, _) = d.head(p);
        assert_eq!(head, 12, "{p}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_that_withholds_forks_or_forges_the_chain_is_refused() {
    let mut d = Driver::new(Duration::from_secs(5)).await;

    // Withholding: p1 and p2 sign; p3 is never told, so it will not sign a window-limited
    // request with p2 while it cannot count that signing.
    let first = d.request(0);
    d.sign(&[P1, P2], &first, true).await.unwrap();
    let second = d.request(1);
    let err = d.sign(&[P2, P3], &second, false).await.unwrap_err();
    let messages = refusals(&err);
    let (_, p3) = messages.iter().find(|(p, _)| *p == P3).expect("p3 refuses");
    assert!(
        p3.contains("spend chain only up to record 0") && p3.contains("deliver records 1 to 1"),
        "{p3}"
    );

    // Forking: a second chain whose first place is another signing. p1 and p2 took part in
    // the real first one and refuse it; a delivery of the forged record is refused too, and
    // they audit the fork.
    let mut forged = SpendChain::new();
    let other = d.request(2);
    let fork = forged.link(&other, now());
    let err = d.sign_at(&[P1, P2], &other, fork).await.unwrap_err();
    for (p, message) in refusals(&err) {
        assert!(
            message.contains("conflicts with the record held here"),
            "{p}: {message}"
        );
    }
    let forged_records = forged.records_after(d.f.key, 0);
    let err = d
        .run(
            &[P1],
            Operation::RecordSpends {
                key: d.f.key,
                records: forged_records,
            },
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("forked"), "{err}");
    for p in [P1, P2] {
        let audit =
            std::fs::read_to_string(d.f.cluster.audit_dir().join(format!("{p}.audit.jsonl")))
                .unwrap();
        assert!(audit.contains("spend_chain.fork"), "{p} audits the fork");
    }

    // Forging: the real first record with its amount changed (the signature no longer
    // verifies), and with another signature.
    let mut records = d.chain.records_after(d.f.key, 0);
    let mut tampered = records.remove(0);
    tampered.request.digest[0] ^= 1;
    let mut bad_signature = d.chain.records_after(d.f.key, 0).remove(0);
    bad_signature.signature.as_mut().unwrap()[40] ^= 1;
    for (what, record, expected) in [
        ("tampered request", tampered, "does not check"),
        ("bad signature", bad_signature, "does not verify"),
    ] {
        let err = d
            .run(
                &[P3],
                Operation::RecordSpends {
                    key: d.f.key,
                    records: vec![record],
                },
            )
            .await
            .unwrap_err();
        assert!(err.to_string().contains(expected), "{what}: {err}");
    }
    let (head, _) = d.head(P3);
    assert_eq!(head, 0, "p3 kept nothing forged");

    // A link that is missing or backdated.
    let request = d.request(3);
    let missing = Operation::Sign {
        request: request.clone(),
        approvals: d.dev().approve(&request),
        link: None,
    };
    let err = d.run(&[P1, P2], missing).await.unwrap_err();
    assert!(err.to_string().contains("carries none"), "{err}");
    let (_, prev) = d.head(P1);
    let backdated = SpendLink::new(2, prev, now() - 3600);
    let err = d.sign_at(&[P1, P2], &request, backdated).await.unwrap_err();
    assert!(err.to_string().contains("at most 900 s old"), "{err}");

    // Delivered at last, p3 signs with p2.
    let delivered = d.deliver(&[P3], 1).await.unwrap();
    assert!(
        matches!(delivered, Output::SpendsRecorded { head: 1, .. }),
        "{delivered:?}"
    );
    let fourth = d.request(4);
    d.sign(&[P2, P3], &fourth, true).await.unwrap();
}

#[test]
fn a_window_limited_request_on_a_key_without_a_signing_majority_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(FileStore::create(dir.path(), b"ledger", KdfParams::MINIMUM).unwrap());
    let ledger = RequestLedger::new(store);
    let dev = DevPolicy::generate().unwrap();
    let key = KeyId::random();
    let mut chain = SpendChain::new();
    let limited = dev
        .request(key, Vec::new(), full_transfer(0), now())
        .unwrap();
    let link = chain.link(&limited, now());
    let approvals = dev.approve(&limited);
    // 2-of-4: pairs {1,2} and {3,4} share no holder, so each could spend the window unseen by
    // the other.
    let two_of_four = KeyFacts {
        holders: 4,
        threshold: 2,
        kind: tessera_wire::KeyKind::Ecdsa,
        public_key_at: &any_public_key,
    };
    let err = ledger
        .admit(
            &dev.document,
            &limited,
            &approvals,
            Some(&link),
            &two_of_four,
            now(),
        )
        .err()
        .expect("refused");
    assert!(
        err.to_string().contains("above half their holders"),
        "{err}"
    );
    // A message spends nothing: signed without a place in the chain.
    let message = dev
        .request(
            key,
            Vec::new(),
            Payload::Message {
                bytes: b"hello".to_vec(),
            },
            now(),
        )
        .unwrap();
    let approvals = dev.approve(&message);
    drop(
        ledger
            .admit(
                &dev.document,
                &message,
                &approvals,
                None,
                &two_of_four,
                now(),
            )
            .expect("a message needs no majority"),
    );
    // 3-of-5 has one.
    let three_of_five = KeyFacts {
        holders: 5,
        threshold: 3,
        ..two_of_four
    };
    let approvals = dev.approve(&limited);
    drop(
        ledger
            .admit(
                &dev.document,
                &limited,
                &approvals,
                Some(&link),
                &three_of_five,
                now(),
            )
            .expect("3-of-5"),
    );
}

#[test]
fn the_spend_chain_survives_a_restart_and_a_restored_copy_is_refused_what_it_missed() {
    let dir = tempfile::tempdir().unwrap();
    let pass = b"chain test";
    let store = Arc::new(FileStore::create(dir.path(), pass, KdfParams::MINIMUM).unwrap());
    let dev = DevPolicy::generate().unwrap();
    let key = KeyId::random();
    let mut chain = SpendChain::new();
    let ledger = RequestLedger::new(store);
    for nonce in 0..3 {
        let request = dev
            .request(key, Vec::new(), full_transfer(nonce), now())
            .unwrap();
        let link = chain.link(&request, now());
        drop(admit(&ledger, &dev, &request, Some(&link), now()).unwrap());
    }
    let head = ledger.chain_head(key).unwrap();
    assert_eq!(head.0, 3);
    drop(ledger);
    let ledger = RequestLedger::new(Arc::new(FileStore::open(dir.path(), pass).unwrap()));
    assert_eq!(
        ledger.chain_head(key).unwrap(),
        head,
        "kept across a restart"
    );

    // A copy of the store from before the last two signings knows only the first: it will
    // not sign a limited request until it is given the two it missed.
    let copy = tempfile::tempdir().unwrap();
    let restored = Arc::new(FileStore::create(copy.path(), pass, KdfParams::MINIMUM).unwrap());
    let first = chain.records_after(key, 0).remove(0);
    let ledger = RequestLedger::new(restored);
    ledger.accept_record(key, &first, &[2; 33]).unwrap();
    let request = dev
        .request(key, Vec::new(), full_transfer(3), now())
        .unwrap();
    let link = chain.link(&request, now());
    let err = admit(&ledger, &dev, &request, Some(&link), now())
        .err()
        .expect("incomplete");
    assert!(err.to_string().contains("deliver records 2 to 3"), "{err}");
    for record in chain.records_after(key, 1).into_iter().take(2) {
        ledger.accept_record(key, &record, &[2; 33]).unwrap();
    }
    drop(admit(&ledger, &dev, &request, Some(&link), now()).expect("complete now"));
}
