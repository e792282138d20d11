//! Every node re-checks what it is asked to sign: the digest against the raw transaction, the
//! pinned policy, every approval, expiry and its durable ledger. A refused request produces no
//! partial signature anywhere: every signer refuses before the protocol starts, nothing is
//! recorded in any ledger, and a presignature offered with it is not consumed.

use crate::common;

use common::*;
use tessera_chain::{Eip1559Request, U256};
use tessera_control::{Operation, Output, SpendChain, StarterError};
use tessera_node::local::{LocalCluster, LocalOptions};
use tessera_node::NodeSettings;
use tessera_policy::dev::{DevPolicy, DEV_CHAIN_ID, DEV_DENIED, DEV_PER_REQUEST_WEI};
use tessera_policy::{Approval, OperatorKey, Payload, PolicyHash, SignRequest};
use tessera_store::KdfParams;
use tessera_wire::{KeyId, RequestId};

const RECIPIENT: [u8; 20] = [0x42; 20];

/// What [`transfer`] may cost in fees (limits count it besides the value).
fn transfer_fee() -> u128 {
    Eip1559Request::transfer(DEV_CHAIN_ID, 0, RECIPIENT, U256::ZERO)
        .max_fee()
        .to::<u128>()
}

fn transfer(nonce: u64, to: [u8; 20], wei: u128) -> Payload {
    Payload::EthereumTx {
        raw: Eip1559Request::transfer(DEV_CHAIN_ID, nonce, to, U256::from(wei)).encode(),
    }
}

fn address(text: &str) -> [u8; 20] {
    let mut out = [0u8; 20];
    hex::decode_to_slice(text.trim_start_matches("0x"), &mut out).unwrap();
    out
}

/// A local 2-of-3 cluster under the development policy, with the fixture key installed.
pub(crate) struct Fixture {
    pub(crate) cluster: LocalCluster,
    pub(crate) key: KeyId,
    pub(crate) public_key: Vec<u8>,
    _dir: tempfile::TempDir,
}

impl Fixture {
    async fn new() -> Self {
        Self::with(NodeSettings::default()).await
    }

    /// The cluster's nodes run with `settings`.
    pub(crate) async fn with(settings: NodeSettings) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let options = LocalOptions {
            kdf: KdfParams::MINIMUM,
            settings,
            ..LocalOptions::default()
        };
        let cluster = LocalCluster::start(dir.path(), options).await.unwrap();
        let (key, public_key) = install_fixture_committee(&cluster);
        Fixture {
            cluster,
            key,
            public_key,
            _dir: dir,
        }
    }

    pub(crate) fn dev(&self) -> &DevPolicy {
        self.cluster.dev.as_ref().unwrap()
    }

    fn request(&self, payload: Payload) -> SignRequest {
        self.dev()
            .request(self.key, Vec::new(), payload, now())
            .unwrap()
    }

    /// Asserts that both signers refuse `operation` with `reason`, and that nothing was
    /// recorded or consumed.
    async fn refused(&self, what: &str, request_id: RequestId, operation: Operation, reason: &str) {
        let signers = [P1, P2];
        let err = self
            .cluster
            .run(&signers, operation, DEADLINE)
            .await
            .expect_err(what);
        let StarterError::Failed { failures, .. } = &err else {
            panic!("{what}: expected refusals by the nodes, got {err}");
        };
        assert_eq!(failures.len(), 2, "{what}: every signer refuses: {err}");
        for (party, failure) in failures {
            assert!(
                failure.message.contains(reason),
                "{what}: {party} said {:?}, expected {reason:?}",
                failure.message
            );
            assert!(failure.blamed.is_empty(), "{what}: nobody to blame");
        }
        for p in signers {
            let node = self.cluster.node(p);
            assert!(
                node.ledger().entry(request_id).unwrap().is_none(),
                "{what}: {p} recorded a refused request"
            );
            assert_eq!(node.net().refusals().frames(), 0);
        }
    }
}

fn sign(request: SignRequest, approvals: Vec<Approval>) -> (RequestId, Operation) {
    (
        request.id,
        Operation::Sign {
            request,
            approvals,
            link: None,
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approved_transfer_signs_and_everything_else_is_refused_with_its_reason() {
    let f = Fixture::new().await;
    let dev = f.dev();

    // The control case: an approved transfer within the limits signs, and the signed
    // transaction's sender is the key's address.
    let request = f.request(transfer(0, RECIPIENT, 1_000));
    let approvals = dev.approve(&request);
    let id = request.id;
    let output = f
        .cluster
        .sign(&[P1, P2], &request, approvals.clone(), None, DEADLINE)
        .await
        .unwrap();
    assert!(k256_verifies(&f.public_key, &request.digest, &output));
    let Output::Signature { signature } = &output else {
        unreachable!()
    };
    let Payload::EthereumTx { raw } = &request.payload else {
        unreachable!()
    };
    let signed = tessera_chain::UnsignedTx::decode(raw)
        .unwrap()
        .assemble(signature, &f.public_key)
        .unwrap();
    assert_eq!(
        tessera_chain::recover_sender(&signed).unwrap(),
        tessera_chain::address(&f.public_key).unwrap()
    );
    for p in [P1, P2] {
        assert!(f.cluster.node(p).ledger().entry(id).unwrap().is_some());
    }

    // A replayed request id: already signed (p1 and p2), never twice.
    let (_, replay) = sign(request.clone(), approvals.clone());
    let err = f
        .cluster
        .run(&[P1, P2], replay, DEADLINE)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("already signed"), "{err}");
    // ...and the same id for a different request is refused by the nodes that know it.
    let mut reused = f.request(transfer(9, RECIPIENT, 5));
    reused.id = request.id;
    let approvals_reused = dev.approve(&reused);
    let err = f
        .cluster
        .run(
            &[P1, P2],
            Operation::Sign {
                request: reused,
                approvals: approvals_reused,
                link: None,
            },
            DEADLINE,
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("never reused"), "{err}");

    // Over the per-request limit.
    let request = f.request(transfer(1, RECIPIENT, DEV_PER_REQUEST_WEI + 1));
    let approvals = dev.approve(&request);
    let (id, op) = sign(request, approvals);
    f.refused("over the limit", id, op, "per-request limit")
        .await;

    // A denied destination.
    let request = f.request(transfer(1, address(DEV_DENIED), 1));
    let approvals = dev.approve(&request);
    let (id, op) = sign(request, approvals);
    f.refused("denied destination", id, op, "deny list").await;

    // A missing approval: one of the two required.
    let request = f.request(transfer(1, RECIPIENT, 1));
    let mut approvals = dev.approve(&request);
    approvals.remove(1);
    let (id, op) = sign(request, approvals);
    f.refused("one approval of two", id, op, "has 1").await;

    // Every approval, but not the submitter's signature: a coordinator (or an approver) that
    // names an operator as the submitter of a request the operator never made.
    let request = f.request(transfer(1, RECIPIENT, 1));
    let approvals = dev.approvals(&request);
    let (id, op) = sign(request, approvals);
    f.refused(
        "not signed by its submitter",
        id,
        op,
        "'olivia' has not signed",
    )
    .await;
    // ...nor with the submitter's signature made by another principal's key.
    let request = f.request(transfer(1, RECIPIENT, 1));
    let mut approvals = dev.approve(&request);
    approvals[2] = Approval::sign(
        &request.request_digest(),
        &dev.operator.name,
        &dev.approvers[0].key,
    );
    let (id, op) = sign(request, approvals);
    f.refused("submitter's signature forged", id, op, "'olivia'")
        .await;

    // A forged approval: ben's name, someone else's key.
    let request = f.request(transfer(1, RECIPIENT, 1));
    let mut approvals = dev.approve(&request);
    approvals[1] = Approval::sign(
        &request.request_digest(),
        "ben",
        &OperatorKey::generate_ed25519(),
    );
    let (id, op) = sign(request, approvals);
    f.refused("forged approval", id, op, "ben").await;

    // An approval by the wrong role: an admin is not an approver.
    let request = f.request(transfer(1, RECIPIENT, 1));
    let mut approvals = dev.approve(&request);
    let admin = &dev.admins[0];
    approvals[1] = Approval::sign(&request.request_digest(), &admin.name, &admin.key);
    let (id, op) = sign(request, approvals);
    f.refused("approval by an admin", id, op, "approval").await;

    // An expired request (approved while it was valid).
    let created = now() - 7200;
    let request = dev
        .request(f.key, Vec::new(), transfer(1, RECIPIENT, 1), created)
        .unwrap();
    let approvals = dev.approve(&request);
    let (id, op) = sign(request, approvals);
    f.refused("expired", id, op, "expired").await;

    // A coordinator (test double holding the real coordinator key) that sends a digest that
    // is not the transaction's: whether the approvers were shown the real digest or were
    // fooled into approving the swapped one, the nodes recompute it and refuse.
    let honest = f.request(transfer(1, RECIPIENT, 1));
    let approvals = dev.approve(&honest);
    let mut swapped = honest.clone();
    swapped.digest = tessera_chain::personal_message_digest(b"something else");
    let (id, op) = sign(swapped.clone(), approvals);
    f.refused("digest swapped after approval", id, op, "digest")
        .await;
    let fooled = dev.approve(&swapped);
    let (id, op) = sign(swapped, fooled);
    f.refused("digest swapped before approval", id, op, "digest")
        .await;

    // A request made under a policy the nodes do not pin (approved under it).
    let mut other = f.request(transfer(1, RECIPIENT, 1));
    other.policy = PolicyHash([9; 32]);
    let approvals = dev.approve(&other);
    let (id, op) = sign(other, approvals);
    f.refused("unpinned policy", id, op, "policy").await;
}

/// Issue 16 C: the other reasons a policy gives, each over the real session start, each
/// refused by every signer with its reason before anything is signed or recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_other_policy_reason_is_refused_by_every_signer() {
    let f = Fixture::new().await;
    let dev = f.dev();
    let submitted_as = |by: &str, created_at: u64, expires_at: u64, payload: Payload| {
        SignRequest::new(
            RequestId::random(),
            f.key,
            Vec::new(),
            payload,
            dev.document.hash(),
            by,
            created_at,
            expires_at,
        )
        .unwrap()
    };

    // The same approver twice.
    let request = f.request(transfer(1, RECIPIENT, 1));
    let mut approvals = dev.approve(&request);
    approvals.push(approvals[0].clone());
    let (id, op) = sign(request, approvals);
    f.refused("duplicate approval", id, op, "approved more than once")
        .await;

    // An approval by a name the policy does not know.
    let request = f.request(transfer(1, RECIPIENT, 1));
    let mut approvals = dev.approve(&request);
    approvals.push(Approval::sign(
        &request.request_digest(),
        "mallory",
        &OperatorKey::generate_ed25519(),
    ));
    let (id, op) = sign(request, approvals);
    f.refused(
        "unknown approver",
        id,
        op,
        "'mallory', who is not a principal",
    )
    .await;

    // More approvals than the policy has principals.
    let request = f.request(transfer(1, RECIPIENT, 1));
    let mut approvals = dev.approve(&request);
    for n in 0..dev.document.principals().len() {
        approvals.push(Approval::sign(
            &request.request_digest(),
            &format!("extra{n}"),
            &OperatorKey::generate_ed25519(),
        ));
    }
    let (id, op) = sign(request, approvals);
    f.refused(
        "too many approvals",
        id,
        op,
        "some are duplicates or forged",
    )
    .await;

    // A lifetime over the policy's cap, and a request from the future.
    let request = submitted_as(
        &dev.operator.name,
        now(),
        now() + 3 * 86_400,
        transfer(1, RECIPIENT, 1),
    );
    let approvals = dev.approve(&request);
    let (id, op) = sign(request, approvals);
    f.refused("lifetime too long", id, op, "max_request_lifetime_secs")
        .await;
    let request = submitted_as(
        &dev.operator.name,
        now() + 3_600,
        now() + 7_200,
        transfer(1, RECIPIENT, 1),
    );
    let approvals = dev.approve(&request);
    let (id, op) = sign(request, approvals);
    f.refused("from the future", id, op, "check the clocks")
        .await;

    // A submitter the policy does not know, and one that is no operator (both signing).
    for (who, reason) in [
        ("mallory", "the submitter 'mallory' is not a principal"),
        ("ana", "the submitter 'ana' does not have the operator role"),
    ] {
        let request = submitted_as(who, now(), now() + 600, transfer(1, RECIPIENT, 1));
        let mut approvals = dev.approvals(&request);
        let stranger = OperatorKey::generate_ed25519();
        let key = dev
            .approvers
            .iter()
            .find(|a| a.name == who)
            .map_or(&stranger, |a| &a.key);
        approvals.push(Approval::sign(&request.request_digest(), who, key));
        let (id, op) = sign(request, approvals);
        f.refused(who, id, op, reason).await;
    }

    // A kind the rule does not allow: a contract call.
    let call = Eip1559Request {
        input: vec![0xde, 0xad, 0xbe, 0xef],
        ..Eip1559Request::transfer(DEV_CHAIN_ID, 1, RECIPIENT, U256::ZERO)
    };
    let request = f.request(Payload::EthereumTx { raw: call.encode() });
    let approvals = dev.approve(&request);
    let (id, op) = sign(request, approvals);
    f.refused("contract call", id, op, "does not allow contract_call")
        .await;

    // An asset the rule sets no limit for: ETH on mainnet.
    let request = f.request(Payload::EthereumTx {
        raw: Eip1559Request::transfer(1, 1, RECIPIENT, U256::from(1)).encode(),
    });
    let approvals = dev.approve(&request);
    let (id, op) = sign(request, approvals);
    f.refused("no limit", id, op, "sets no limit for eth:1")
        .await;

    // A token call that is not a canonical transfer (a trailing byte), put in a request by a
    // coordinator that built it by hand: the nodes decode it themselves and refuse it.
    let mut token =
        Eip1559Request::erc20_transfer(DEV_CHAIN_ID, 1, RECIPIENT, RECIPIENT, U256::from(5));
    token.input.push(0);
    let mut request = f.request(transfer(1, RECIPIENT, 1));
    request.payload = Payload::EthereumTx {
        raw: token.encode(),
    };
    let approvals = dev.approve(&request);
    let (id, op) = sign(request, approvals);
    f.refused(
        "ambiguous token call",
        id,
        op,
        "only in their canonical ABI encoding",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_online_request_keeps_its_presignature_and_limits_span_requests() {
    let f = Fixture::new().await;
    let dev = f.dev();
    let Output::Presign { presignature } = f
        .cluster
        .run(&[P1, P2], Operation::Presign { key: f.key }, DEADLINE)
        .await
        .unwrap()
    else {
        panic!("presign names the presignature");
    };

    // Refused (one approval): the presignature is still there on both nodes.
    let request = f.request(transfer(0, RECIPIENT, 1));
    let mut approvals = dev.approve(&request);
    approvals.truncate(1);
    let id = request.id;
    let op = Operation::OnlineSign {
        presignature,
        request,
        approvals,
        link: None,
    };
    f.refused("online, one approval", id, op, "approval").await;
    for p in [P1, P2] {
        let fresh = f
            .cluster
            .node(p)
            .state()
            .presignatures(f.key)
            .available()
            .unwrap();
        assert_eq!(fresh, vec![presignature], "{p} kept its presignature");
    }
}

/// Makes `store` hold exactly the files of `snapshot`, as restoring a backup of it would.
fn restore(store: &std::path::Path, snapshot: &std::path::Path) {
    for entry in std::fs::read_dir(store).unwrap() {
        let entry = entry.unwrap();
        if !snapshot.join(entry.file_name()).exists() {
            std::fs::remove_file(entry.path()).unwrap();
        }
    }
    for entry in std::fs::read_dir(snapshot).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), store.join(entry.file_name())).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restored_from_a_snapshot_cannot_use_a_consumed_presignature_again() {
    let dir = tempfile::tempdir().unwrap();
    let options = LocalOptions {
        kdf: KdfParams::MINIMUM,
        settings: tessera_node::NodeSettings {
            // p1 waits this long for the partial signature its peer never sends.
            round_timeout: std::time::Duration::from_secs(2),
            ..Default::default()
        },
        ..LocalOptions::default()
    };
    let cluster = LocalCluster::start(dir.path(), options).await.unwrap();
    let (key, public_key) = install_fixture_committee(&cluster);
    let dev = cluster.dev.as_ref().unwrap();
    let Output::Presign { presignature } = cluster
        .run(&[P1, P2], Operation::Presign { key }, DEADLINE)
        .await
        .unwrap()
    else {
        panic!("presign names the presignature");
    };
    // p1's store is backed up while the presignature is fresh.
    let p1_store = dir.path().join(P1.to_string());
    let snapshot = dir.path().join("p1-snapshot");
    std::fs::create_dir(&snapshot).unwrap();
    for entry in std::fs::read_dir(&p1_store).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), snapshot.join(entry.file_name())).unwrap();
    }
    // Signed as a coordinator signs: at the next place of the key's spend chain, with the
    // records the signers lack delivered first.
    let online = |request: SignRequest| {
        let cluster = &cluster;
        async move {
            let approvals = dev.approve(&request);
            cluster
                .sign(&[P1, P2], &request, approvals, Some(presignature), DEADLINE)
                .await
        }
    };
    let request = dev
        .request(key, Vec::new(), transfer(0, RECIPIENT, 1), now())
        .unwrap();
    let output = online(request.clone()).await.unwrap();
    assert!(k256_verifies(&public_key, &request.digest, &output));

    // p1's disk is restored from the backup: the presignature is back, and p1 has no memory
    // of having used it. A coordinator offers it again for another approved request.
    restore(&p1_store, &snapshot);
    assert_eq!(
        cluster
            .node(P1)
            .state()
            .presignatures(key)
            .available()
            .unwrap(),
        vec![presignature],
        "the restore re-armed p1's copy"
    );
    let other = dev
        .request(key, Vec::new(), transfer(1, RECIPIENT, 1), now())
        .unwrap();
    let err = online(other)
        .await
        .expect_err("a consumed presignature must not sign again");
    // p2 remembers it used it, refuses, and says why; no signature comes of it.
    let StarterError::Failed { failures, .. } = &err else {
        panic!("expected refusals, got {err}");
    };
    let p2 = failures
        .iter()
        .find(|(p, _)| *p == P2)
        .map(|(_, f)| f.message.clone())
        .unwrap_or_else(|| panic!("p2 did not refuse: {err}"));
    assert!(p2.contains("already used here"), "{p2}");
    assert!(p2.contains("restored snapshot"), "{p2}");
    let audit = std::fs::read_to_string(dir.path().join("audit").join("p2.audit.jsonl")).unwrap();
    assert!(
        audit.contains("presignature.refused") && audit.contains("consumed"),
        "p2 audits the refusal"
    );
}

#[test]
fn concurrent_identical_requests_are_admitted_once() {
    use std::sync::{Arc, Barrier};
    use tessera_node::requests::{LedgerStatus, RequestLedger};
    use tessera_store::FileStore;

    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(FileStore::create(dir.path(), b"ledger", KdfParams::MINIMUM).unwrap());
    let dev = DevPolicy::generate().unwrap();
    let ledger = RequestLedger::new(store);
    let request = dev
        .request(
            KeyId::random(),
            Vec::new(),
            transfer(0, RECIPIENT, 1),
            now(),
        )
        .unwrap();
    let link = SpendChain::new().link(&request, now());
    // Eight sessions offer the same request at the same instant (a coordinator starting it
    // twice, or replaying a start): one is admitted, the others are refused as in flight.
    const RACERS: usize = 8;
    let barrier = Barrier::new(RACERS);
    let (admitted, refusals) = std::thread::scope(|scope| {
        let racers: Vec<_> = (0..RACERS)
            .map(|_| {
                scope.spawn(|| {
                    barrier.wait();
                    match admit(&ledger, &dev, &request, Some(&link), now()) {
                        // Held until every racer tried.
                        Ok(admitted) => {
                            std::thread::sleep(std::time::Duration::from_millis(200));
                            admitted.signed(&[0; 64]).unwrap();
                            None
                        }
                        Err(e) => Some(e.to_string()),
                    }
                })
            })
            .collect();
        let results: Vec<Option<String>> = racers.into_iter().map(|r| r.join().unwrap()).collect();
        let refusals: Vec<String> = results.iter().flatten().cloned().collect();
        (results.len() - refusals.len(), refusals)
    });
    assert_eq!(admitted, 1, "{refusals:?}");
    for refusal in &refusals {
        assert!(
            refusal.contains("being signed in another session"),
            "{refusal}"
        );
    }
    // Signed once; never again.
    assert_eq!(ledger.count(LedgerStatus::Signed).unwrap(), 1);
    let err = admit(&ledger, &dev, &request, Some(&link), now())
        .err()
        .expect("already signed");
    assert!(err.to_string().contains("already signed"), "{err}");
}

#[test]
fn the_ledger_counts_the_rolling_window_and_survives_a_restart() {
    use std::sync::Arc;
    use tessera_node::requests::RequestLedger;
    use tessera_store::FileStore;

    let dir = tempfile::tempdir().unwrap();
    let pass = b"ledger test";
    let store = Arc::new(FileStore::create(dir.path(), pass, KdfParams::MINIMUM).unwrap());
    let dev = DevPolicy::generate().unwrap();
    let key = KeyId::random();
    let ledger = RequestLedger::new(store);
    let mut chain = SpendChain::new();
    let mut approved = |nonce: u64, at: u64| {
        let request = dev
            .request(
                key,
                Vec::new(),
                // With its maximum fee, each spends exactly the per-request limit.
                transfer(nonce, RECIPIENT, DEV_PER_REQUEST_WEI - transfer_fee()),
                at,
            )
            .unwrap();
        let link = chain.link(&request, at);
        (request, link)
    };
    // 10 x 10 ETH fill the 100 ETH window; signed or only started, both count.
    let mut started_only = Vec::new();
    for nonce in 0..10u64 {
        let (request, link) = approved(nonce, now());
        let admitted = admit(&ledger, &dev, &request, Some(&link), now()).unwrap();
        if nonce % 2 == 0 {
            admitted.signed(&[0; 64]).unwrap();
        } else {
            started_only.push((request, link));
        }
    }
    let (request, link) = approved(10, now());
    let err = admit(&ledger, &dev, &request, Some(&link), now())
        .err()
        .expect("over the window");
    assert!(err.to_string().contains("already spent"), "{err}");
    // A started request may be retried (the same request): its own amount is not counted
    // twice, so it still fits.
    let (retry, retry_link) = &started_only[0];
    drop(
        admit(&ledger, &dev, retry, Some(retry_link), now()).expect("a retry of a started request"),
    );
    drop(ledger);

    // Reopened from disk: the same decisions.
    let store = Arc::new(FileStore::open(dir.path(), pass).unwrap());
    let ledger = RequestLedger::new(store);
    let err = admit(&ledger, &dev, &request, Some(&link), now())
        .err()
        .expect("still over the window after a restart");
    assert!(err.to_string().contains("already spent"), "{err}");
    // A day later the window has room again, and a signed request is never signed twice.
    let later = now() + 86_400 + 1;
    let (request, link) = approved(12, later);
    // The refused request kept its place in the chain (it counts as spent where it is known);
    // this node is given its record before it signs the next.
    let eleventh = chain.records_after(key, 10).remove(0);
    ledger.accept_record(key, &eleventh, &[2; 33]).unwrap();
    let admitted = admit(&ledger, &dev, &request, Some(&link), later).unwrap();
    admitted.signed(&[0; 64]).unwrap();
    drop(admitted);
    let err = admit(&ledger, &dev, &request, Some(&link), later)
        .err()
        .expect("signed once");
    assert!(err.to_string().contains("already signed"), "{err}");
}
