//! Known-answer vectors for every digest that people and nodes sign: a sign request, a policy
//! change and a key change. Approvals made by other tools (wallets, SDKs) must produce these
//! bytes; a change to an encoding that moves a digest breaks every approval in flight, so it
//! must show here first (and be versioned by its label).

use tessera_chain::{Eip1559Request, U256};
use tessera_policy::{
    KeyChange, KeyEpoch, KeyOperation, Payload, PolicyChange, PolicyHash, SignRequest,
};
use tessera_wire::{KeyId, PartyId, RequestId};

const CREATED: u64 = 1_800_000_000;

fn request() -> SignRequest {
    let raw = Eip1559Request::transfer(11_155_111, 7, [0x42; 20], U256::from(5u64)).encode();
    SignRequest::new(
        RequestId([0x11; 16]),
        KeyId([0x22; 16]),
        vec![0, 7],
        Payload::EthereumTx { raw },
        PolicyHash([0x33; 32]),
        "olivia",
        CREATED,
        CREATED + 600,
    )
    .unwrap()
}

#[test]
fn the_sign_request_digest_is_pinned() {
    let request = request();
    assert_eq!(
        hex::encode(request.digest),
        "d4e3677405555241f9e50cec8c2efae0ac606a0a014203e23199567941808e9b",
        "the transaction's signing digest (EIP-1559)"
    );
    assert_eq!(
        hex::encode(request.request_digest()),
        "71428c4929b19f68121e25d374ee2bfce170fe46b02bdb1e5d53f9611efc4c3c"
    );
    // A message request, too.
    let message = SignRequest::new(
        RequestId([0x11; 16]),
        KeyId([0x22; 16]),
        Vec::new(),
        Payload::Message {
            bytes: b"proof of control".to_vec(),
        },
        PolicyHash([0x33; 32]),
        "olivia",
        CREATED,
        CREATED + 600,
    )
    .unwrap();
    assert_eq!(
        hex::encode(message.request_digest()),
        "19989a22734a101aed3fd6a691b475027d503c23ab3cad3402b484bc842ce95c"
    );
}

#[test]
fn the_policy_change_digest_is_pinned() {
    let change = PolicyChange {
        id: RequestId([0x44; 16]),
        previous: PolicyHash([0x33; 32]),
        document: b"version = 1\nrevision = 2\n".to_vec(),
        proposed_by: "ada".into(),
        created_at: CREATED,
        expires_at: CREATED + 3600,
    };
    assert_eq!(
        hex::encode(change.change_digest()),
        "efebfa206fadc05c5ed6ef8de4664dcf96cd5bae8c338b16a1b59c6bf987b75f"
    );
}

#[test]
fn the_key_change_digests_are_pinned() {
    let change = |operation: KeyOperation| KeyChange {
        id: RequestId([0x55; 16]),
        policy: PolicyHash([0x33; 32]),
        key: KeyId([0x22; 16]),
        from: KeyEpoch {
            epoch: 3,
            committee: vec![PartyId(1), PartyId(2), PartyId(3)],
            threshold: 2,
        },
        operation,
        proposed_by: "ada".into(),
        created_at: CREATED,
        expires_at: CREATED + 3600,
    };
    assert_eq!(
        hex::encode(change(KeyOperation::Refresh).change_digest()),
        "2782b6663fc81188a7b31f7b842b4a0ef3ff33f576e435e03d5912478d5d9ce1"
    );
    assert_eq!(
        hex::encode(
            change(KeyOperation::Reshare {
                committee: vec![PartyId(1), PartyId(2), PartyId(4)],
                threshold: 2,
            })
            .change_digest()
        ),
        "5606db3f8a6ceb7118f01de7acbe6b6bc917ab0d966a398ac55ecac14d568eb2"
    );
}
