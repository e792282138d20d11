//! The coordinator service end to end with real parts: an in-memory cluster of three real
//! nodes (fixture aux info, real key generation and signing), the real store on SQLite and
//! PostgreSQL (each behaviour runs on both), the development policy and its principals
//! (olivia operator, ana and ben approvers, ada and abe admins, aude auditor).
//! PostgreSQL tests fail, not skip, when PostgreSQL is missing: run ./scripts/setup.sh.

use crate::on_both_backends;
use crate::service_support;

use std::time::Duration;

use service_support::*;
use tessera_chain::{address, checksummed, recover_sender, Eip1559Request, U256};
use tessera_coordinator::service::Coordinator;
use tessera_coordinator::service::{
    rejection_digest, CoordinatorSettings, ProposePolicy, RequestUpdate, ServiceError, Submit,
};
use tessera_coordinator::store::{
    ProposalId, ProposalState, RequestKind, RequestState, SessionOutcome, SessionSubject,
};
use tessera_node::NodeSettings;
use tessera_policy::dev::{DEV_CHAIN_ID, DEV_DENIED, DEV_PER_REQUEST_WEI};
use tessera_policy::{OperatorKey, Payload, PolicyChange};
use tessera_wire::RequestId;

on_both_backends!(
    holders_are_given_the_spend_chain_before_they_sign,
    every_holder_learns_each_signing_in_the_background,
    two_coordinators_admit_against_one_window_at_once,
    failed_signing_gives_its_reservation_back,
    transfer_signed_online_after_two_approvals,
    message_on_a_child_key_signed_by_the_child_key,
    submissions_are_idempotent_and_checked_at_once,
    rejection_and_cancellation,
    expired_requests_are_swept,
    a_silent_party_is_replaced_by_another_quorum,
    a_party_reporting_a_forged_signature_is_blamed_and_cannot_block_signing,
    policy_change_applies_and_unpinned_nodes_refuse_without_retry,
    restarted_coordinator_finishes_a_request_left_signing,
    committees_keys_and_the_pinned_policy,
);

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

fn message(text: &str) -> Payload {
    Payload::Message {
        bytes: text.as_bytes().to_vec(),
    }
}

fn submit(key: &str, path: Vec<u32>, payload: Payload) -> Submit {
    Submit {
        id: RequestId::random(),
        key: key.to_owned(),
        path,
        payload,
        lifetime_secs: None,
    }
}

fn parse_address(text: &str) -> [u8; 20] {
    let mut out = [0u8; 20];
    hex::decode_to_slice(text.trim_start_matches("0x"), &mut out).unwrap();
    out
}

#[track_caller]
fn assert_forbidden(result: Result<impl std::fmt::Debug, ServiceError>, needs: &str) {
    match result {
        Err(e @ ServiceError::Forbidden { .. }) => {
            assert!(e.to_string().contains(needs), "{e}; expected {needs:?}")
        }
        other => panic!("expected Forbidden ({needs}), got {other:?}"),
    }
}

#[track_caller]
fn assert_conflict(result: Result<impl std::fmt::Debug, ServiceError>, says: &str) {
    match result {
        Err(e @ ServiceError::Conflict(_)) => {
            assert!(e.to_string().contains(says), "{e}; expected {says:?}")
        }
        other => panic!("expected Conflict ({says}), got {other:?}"),
    }
}

#[track_caller]
fn assert_denied(result: Result<impl std::fmt::Debug, ServiceError>, reason: &str) -> Vec<String> {
    match result {
        Err(ServiceError::Denied { reasons }) => {
            assert!(
                reasons.iter().any(|r| r.contains(reason)),
                "{reasons:?}; expected {reason:?}"
            );
            reasons
        }
        other => panic!("expected Denied ({reason}), got {other:?}"),
    }
}

async fn transfer_signed_online_after_two_approvals(db: &Db) {
    let cluster = Cluster::start().await;
    let settings = CoordinatorSettings {
        presignature_pool_target: 1,
        presignature_refill_interval: Duration::from_millis(200),
        ..settings()
    };
    let c = coordinator(db, &cluster, cluster.control(), settings).await;
    let key = fixture_key(&c, "treasury").await;
    let key_view = c.get_key(&key).await.unwrap();

    let pending = c
        .submit(
            "olivia",
            submit(&key, vec![], transfer(0, RECIPIENT, 1_000)),
        )
        .await
        .unwrap();
    assert_eq!(pending.state, RequestState::PendingApproval);
    assert_eq!(pending.kind, RequestKind::Transfer);
    assert!(
        pending
            .reasons
            .iter()
            .any(|r| r.contains("needs 2 approvals")),
        "{:?}",
        pending.reasons
    );
    assert_eq!(pending.address, key_view.address);
    let id = pending.id;

    // Who may not approve, and forged or repeated approvals.
    assert_forbidden(
        c.approve("aude", id, cluster.approval("aude", &pending))
            .await,
        "approver role",
    );
    assert_forbidden(
        c.approve("ada", id, cluster.approval("ada", &pending))
            .await,
        "approver role",
    );
    // Until the submitter signs the request it was answered with, nothing shows it asked for
    // it: the nodes would refuse it, so it waits.
    assert!(
        pending
            .reasons
            .iter()
            .any(|r| r.contains("'olivia' has not signed")),
        "{:?}",
        pending.reasons
    );
    // Only the submitter signs as the submitter; nobody signs in its name; and the submitter
    // neither approves nor rejects.
    assert_forbidden(
        c.sign_as_submitter("ana", id, cluster.approval("ana", &pending))
            .await,
        "to be the submitter",
    );
    match c
        .sign_as_submitter("olivia", id, cluster.approval("ana", &pending))
        .await
    {
        Err(ServiceError::Invalid(m)) => assert!(m.contains("does not verify"), "{m}"),
        other => panic!("a forged submitter signature was not refused: {other:?}"),
    }
    assert_forbidden(
        c.approve("olivia", id, cluster.approval("olivia", &pending))
            .await,
        "submitter",
    );
    assert_forbidden(
        c.reject("olivia", id, cluster.approval("olivia", &pending))
            .await,
        "submitter",
    );
    let own = c
        .sign_as_submitter("olivia", id, cluster.approval("olivia", &pending))
        .await
        .unwrap();
    assert_eq!(own.state, RequestState::PendingApproval);
    assert!(
        !own.reasons.iter().any(|r| r.contains("has not signed")),
        "{:?}",
        own.reasons
    );
    // The submitter's signature is no approval, and it is given once.
    assert!(
        own.reasons.iter().any(|r| r.contains("has 0")),
        "{:?}",
        own.reasons
    );
    assert_conflict(
        c.sign_as_submitter("olivia", id, cluster.approval("olivia", &pending))
            .await,
        "already decided",
    );
    assert_forbidden(
        c.approve("zed", id, cluster.approval("ana", &pending))
            .await,
        "not a principal",
    );
    let forged = tessera_policy::Approval::sign(
        &pending.request.request_digest(),
        "ben",
        &OperatorKey::generate_ed25519(),
    );
    match c.approve("ben", id, forged.signature).await {
        Err(ServiceError::Invalid(m)) => assert!(m.contains("does not verify"), "{m}"),
        other => panic!("a forged approval was not refused: {other:?}"),
    }
    // ben signing ana's approval of another request does not count either.
    let other = c
        .submit("olivia", submit(&key, vec![], transfer(1, RECIPIENT, 5)))
        .await
        .unwrap();
    assert!(matches!(
        c.approve("ben", id, cluster.approval("ben", &other)).await,
        Err(ServiceError::Invalid(_))
    ));

    let one = c
        .approve("ana", id, cluster.approval("ana", &pending))
        .await
        .unwrap();
    assert_eq!(one.state, RequestState::PendingApproval);
    assert!(
        one.reasons.iter().any(|r| r.contains("has 1")),
        "{:?}",
        one.reasons
    );
    assert_conflict(
        c.approve("ana", id, cluster.approval("ana", &pending))
            .await,
        "already decided",
    );

    // The pool holds a presignature for the preferred quorum: the request signs online.
    wait_for_presignature(&c, &key).await;
    let mut updates = c.subscribe();
    let approved = c
        .approve("ben", id, cluster.approval("ben", &pending))
        .await
        .unwrap();
    assert!(matches!(
        approved.state,
        RequestState::Approved | RequestState::Signing | RequestState::Signed
    ));
    let signed = wait_for(&c, id, RequestState::Signed).await;
    // A subscriber was told each state the request reached, in order.
    let mut told = Vec::new();
    while let Ok(update) = updates.try_recv() {
        if update.id == id {
            told.push(update.state);
        }
    }
    assert_eq!(
        told,
        [
            RequestState::Approved,
            RequestState::Signing,
            RequestState::Signed
        ]
    );
    // Where the time went, stage by stage.
    let stages: Vec<(&str, &str, u64)> = c
        .counters()
        .stages()
        .totals()
        .iter()
        .map(|t| (t.operation, t.stage, t.count))
        .collect();
    for stage in ["admission", "preparation", "session", "recording"] {
        assert!(
            stages.contains(&("request", stage, 1)),
            "{stage}: {stages:?}"
        );
    }
    assert!(
        stages
            .iter()
            .any(|(o, s, n)| (*o, *s) == ("approve", "api") && *n >= 2),
        "{stages:?}"
    );
    let raw = hex::decode(signed.result.as_deref().unwrap()).unwrap();
    let sender = checksummed(&recover_sender(&raw).unwrap());
    assert_eq!(Some(sender), key_view.address, "signed by the key");
    assert_eq!(signed.address, key_view.address);
    assert_eq!(signed.attempts, 1);
    assert!(signed.reasons.is_empty());
    let mut names: Vec<&str> = signed
        .decisions
        .iter()
        .map(|d| d.principal.as_str())
        .collect();
    names.sort();
    assert_eq!(names, ["ana", "ben", "olivia"]);
    let sessions = c
        .store()
        .sessions_for(SessionSubject::Request(id))
        .await
        .unwrap();
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].operation, "online_sign");
    assert_eq!(sessions[0].outcome, Some(SessionOutcome::Ok));
    let spent = c
        .store()
        .spends_since(signed.key_id, &format!("eth:{DEV_CHAIN_ID}"), 0, None)
        .await
        .unwrap();
    // The value and the maximum fee, as the limits count them.
    assert_eq!(spent, [(1_000 + transfer_fee()).to_string()]);
    // Signed is final.
    assert_conflict(
        c.approve("ben", id, cluster.approval("ben", &pending))
            .await,
        "is signed",
    );
    assert_conflict(c.cancel("olivia", id).await, "can no longer be cancelled");
    c.shutdown().await;
}

async fn message_on_a_child_key_signed_by_the_child_key(db: &Db) {
    let cluster = Cluster::start().await;
    let c = coordinator(db, &cluster, cluster.control(), settings()).await;
    let key = fixture_key(&c, "hot").await;
    let path = vec![0, 7];
    let child = c
        .key_address(
            &key,
            &path,
            None,
            tessera_chain::bitcoin::BitcoinNetwork::Mainnet,
        )
        .await
        .unwrap();
    let master = c
        .key_address(
            &key,
            &[],
            None,
            tessera_chain::bitcoin::BitcoinNetwork::Mainnet,
        )
        .await
        .unwrap();
    assert_ne!(child.address, master.address);
    assert_eq!(
        Some(master.address.clone()),
        c.get_key(&key).await.unwrap().address
    );

    let pending = c
        .submit(
            "olivia",
            submit(&key, path.clone(), message("proof of control")),
        )
        .await
        .unwrap();
    assert_eq!(pending.kind, RequestKind::Message);
    assert_eq!(pending.address.as_deref(), Some(child.address.as_str()));
    c.sign_as_submitter("olivia", pending.id, cluster.approval("olivia", &pending))
        .await
        .unwrap();
    for approver in ["ana", "ben"] {
        c.approve(approver, pending.id, cluster.approval(approver, &pending))
            .await
            .unwrap();
    }
    let signed = wait_for(&c, pending.id, RequestState::Signed).await;
    let signature = hex::decode(signed.result.unwrap()).unwrap();
    assert_eq!(signature.len(), 65);
    assert!(matches!(signature[64], 27 | 28));

    // The signature verifies against the child key (with k256), and recovers to its address.
    use k256::ecdsa::signature::hazmat::PrehashVerifier;
    use k256::ecdsa::{RecoveryId, Signature, VerifyingKey};
    let child_key = hex::decode(&child.public_key).unwrap();
    let digest = tessera_chain::personal_message_digest(b"proof of control");
    let sig = Signature::from_slice(&signature[..64]).unwrap();
    VerifyingKey::from_sec1_bytes(&child_key)
        .unwrap()
        .verify_prehash(&digest, &sig)
        .expect("signed by the child key");
    let recovered = VerifyingKey::recover_from_prehash(
        &digest,
        &sig,
        RecoveryId::from_byte(signature[64] - 27).unwrap(),
    )
    .unwrap();
    let recovered = address(&recovered.to_sec1_bytes()).unwrap();
    assert_eq!(checksummed(&recovered), child.address);
    // ...and not against the master key.
    let master_key = hex::decode(&master.public_key).unwrap();
    assert!(VerifyingKey::from_sec1_bytes(&master_key)
        .unwrap()
        .verify_prehash(&digest, &sig)
        .is_err());
    // Messages spend nothing.
    let spent = c
        .store()
        .spends_since(signed.key_id, &format!("eth:{DEV_CHAIN_ID}"), 0, None)
        .await
        .unwrap();
    assert!(spent.is_empty());
    c.shutdown().await;
}

async fn submissions_are_idempotent_and_checked_at_once(db: &Db) {
    let cluster = Cluster::start().await;
    let c = coordinator(db, &cluster, cluster.control(), settings()).await;
    let key = fixture_key(&c, "ops").await;

    let request = submit(&key, vec![], transfer(0, RECIPIENT, 1_000));
    let first = c.submit("olivia", request.clone()).await.unwrap();
    // The same request again, by name or by id: the stored request, unchanged.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let again = c.submit("olivia", request.clone()).await.unwrap();
    assert_eq!(again, first);
    let by_name = Submit {
        key: "ops".into(),
        ..request.clone()
    };
    assert_eq!(c.submit("olivia", by_name).await.unwrap(), first);
    // The same id for something else.
    let other_payload = Submit {
        payload: transfer(0, RECIPIENT, 1_001),
        ..request.clone()
    };
    assert_conflict(c.submit("olivia", other_payload).await, "different request");
    let other_path = Submit {
        path: vec![1],
        ..request.clone()
    };
    assert_conflict(c.submit("olivia", other_path).await, "different request");
    let other_lifetime = Submit {
        lifetime_secs: Some(60),
        ..request.clone()
    };
    assert_conflict(
        c.submit("olivia", other_lifetime).await,
        "different request",
    );

    // Denied at once, with the reasons, and the same answer on a retry.
    let over = submit(
        &key,
        vec![],
        transfer(1, RECIPIENT, DEV_PER_REQUEST_WEI + 1),
    );
    let reasons = assert_denied(c.submit("olivia", over.clone()).await, "per-request limit");
    assert_eq!(
        assert_denied(c.submit("olivia", over.clone()).await, "per-request limit"),
        reasons
    );
    let stored = c.get(over.id).await.unwrap();
    assert_eq!(stored.state, RequestState::Rejected);
    assert_eq!(stored.reasons, reasons);
    let dead = submit(&key, vec![], transfer(1, parse_address(DEV_DENIED), 1));
    assert_denied(c.submit("olivia", dead).await, "deny list");
    let long = Submit {
        lifetime_secs: Some(86_401),
        ..submit(&key, vec![], transfer(1, RECIPIENT, 1))
    };
    // A lifetime above the policy's cap is a mistake in the call: refused with what to ask
    // for, and nothing stored.
    match c.submit("olivia", long.clone()).await {
        Err(ServiceError::Invalid(m)) => {
            assert!(m.contains("max_request_lifetime_secs (86400)"), "{m}");
            assert!(m.contains("ask for at most 86400 s"), "{m}");
        }
        other => panic!("a lifetime over the cap was not refused: {other:?}"),
    }
    assert!(matches!(
        c.get(long.id).await,
        Err(ServiceError::NotFound(_))
    ));

    // Rolling window (100 ETH per 24 h): spend recorded as by earlier signatures counts.
    c.store()
        .record_spend(&tessera_coordinator::store::Spend {
            request_id: over.id,
            key_id: first.key_id,
            asset: format!("eth:{DEV_CHAIN_ID}"),
            amount: (DEV_PER_REQUEST_WEI * 9 + 1).to_string(),
            signed_at: i64::try_from(first.created_at).unwrap(),
        })
        .await
        .unwrap();
    let beyond = submit(&key, vec![], transfer(2, RECIPIENT, DEV_PER_REQUEST_WEI));
    assert_denied(
        c.submit("olivia", beyond).await,
        "already spent in the last 86400 s",
    );
    // (The value and the maximum fee together fill the window to one wei below its limit.)
    let within = submit(
        &key,
        vec![],
        transfer(2, RECIPIENT, DEV_PER_REQUEST_WEI - 1 - transfer_fee()),
    );
    assert_eq!(
        c.submit("olivia", within).await.unwrap().state,
        RequestState::PendingApproval
    );

    // Who may submit, and what.
    assert_forbidden(
        c.submit("ana", submit(&key, vec![], transfer(1, RECIPIENT, 1)))
            .await,
        "operator role",
    );
    assert_forbidden(
        c.submit("mallory", submit(&key, vec![], transfer(1, RECIPIENT, 1)))
            .await,
        "not a principal",
    );
    assert!(matches!(
        c.submit(
            "olivia",
            submit("no-such-key", vec![], transfer(1, RECIPIENT, 1))
        )
        .await,
        Err(ServiceError::NotFound(_))
    ));
    let garbage = Payload::EthereumTx {
        raw: vec![0x02, 0xc0],
    };
    assert!(matches!(
        c.submit("olivia", submit(&key, vec![], garbage)).await,
        Err(ServiceError::Invalid(_))
    ));
    assert!(matches!(
        c.submit("olivia", submit(&key, vec![1 << 31], message("x")))
            .await,
        Err(ServiceError::Invalid(_))
    ));
    assert!(matches!(
        c.get(RequestId::random()).await,
        Err(ServiceError::NotFound(_))
    ));

    // Listing: newest first, by state.
    // (The request asking for too long a lifetime was never stored.)
    let all = c.list(&Default::default()).await.unwrap();
    assert_eq!(all.len(), 5);
    assert_eq!(all.last().unwrap().id, first.id, "newest first");
    let rejected = c
        .list(&tessera_coordinator::store::RequestFilter {
            state: Some(RequestState::Rejected),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(rejected.len(), 3);
    c.shutdown().await;
}

async fn rejection_and_cancellation(db: &Db) {
    let cluster = Cluster::start().await;
    let c = coordinator(db, &cluster, cluster.control(), settings()).await;
    let key = fixture_key(&c, "cold").await;

    // A rejection is signed over the rejection digest; an approval signature is refused.
    let request = submit(&key, vec![], transfer(0, RECIPIENT, 7));
    let view = c.submit("olivia", request.clone()).await.unwrap();
    assert!(matches!(
        c.reject("ana", view.id, cluster.approval("ana", &view))
            .await,
        Err(ServiceError::Invalid(_))
    ));
    assert_forbidden(
        c.reject(
            "olivia",
            view.id,
            cluster.sign("olivia", &rejection_digest(&view.request.request_digest())),
        )
        .await,
        "submitter",
    );
    c.approve("ben", view.id, cluster.approval("ben", &view))
        .await
        .unwrap();
    let mut updates = c.subscribe();
    let rejected = c
        .reject(
            "ana",
            view.id,
            cluster.sign("ana", &rejection_digest(&view.request.request_digest())),
        )
        .await
        .unwrap();
    assert_eq!(rejected.state, RequestState::Rejected);
    assert_eq!(rejected.reasons, ["rejected by 'ana'"]);
    assert_eq!(rejected.decisions.len(), 2);
    assert_conflict(
        c.approve("ana", view.id, cluster.approval("ana", &view))
            .await,
        "is rejected",
    );
    assert_denied(c.submit("olivia", request).await, "rejected by 'ana'");

    // Cancellation: by the submitter or an admin, before signing.
    let mine = c
        .submit("olivia", submit(&key, vec![], transfer(1, RECIPIENT, 7)))
        .await
        .unwrap();
    assert_forbidden(
        c.cancel("ben", mine.id).await,
        "submitter ('olivia') or an admin",
    );
    let cancelled = c.cancel("olivia", mine.id).await.unwrap();
    assert_eq!(cancelled.state, RequestState::Cancelled);
    assert_eq!(cancelled.reasons, ["cancelled by 'olivia'"]);
    assert_conflict(c.cancel("olivia", mine.id).await, "is cancelled");
    let told: Vec<_> = std::iter::from_fn(|| updates.try_recv().ok()).collect();
    assert_eq!(
        told,
        [
            RequestUpdate {
                id: view.id,
                state: RequestState::Rejected
            },
            RequestUpdate {
                id: mine.id,
                state: RequestState::Cancelled
            }
        ]
    );
    let theirs = c
        .submit("olivia", submit(&key, vec![], transfer(2, RECIPIENT, 7)))
        .await
        .unwrap();
    assert_eq!(
        c.cancel("ada", theirs.id).await.unwrap().state,
        RequestState::Cancelled
    );
    assert_conflict(
        c.approve("ana", theirs.id, cluster.approval("ana", &theirs))
            .await,
        "is cancelled",
    );
    c.shutdown().await;
}

async fn expired_requests_are_swept(db: &Db) {
    let cluster = Cluster::start().await;
    let c = coordinator(db, &cluster, cluster.control(), settings()).await;
    let key = fixture_key(&c, "brief").await;
    let short = Submit {
        lifetime_secs: Some(1),
        ..submit(&key, vec![], message("soon gone"))
    };
    let view = c.submit("olivia", short).await.unwrap();
    assert_eq!(view.expires_at, view.created_at + 1);
    let expired = wait_for(&c, view.id, RequestState::Expired).await;
    assert!(expired.result.is_none());
    assert_conflict(
        c.approve("ana", view.id, cluster.approval("ana", &view))
            .await,
        "is expired",
    );
    c.shutdown().await;
}

async fn a_silent_party_is_replaced_by_another_quorum(db: &Db) {
    // p1 never hears of any session (stopped, or cut off from the broker): p2 waits for its
    // messages until the round deadline, blames it, and the coordinator retries with p2, p3.
    let cluster = Cluster::start_with(NodeSettings {
        round_timeout: Duration::from_secs(5),
        ..NodeSettings::default()
    })
    .await;
    let everyone = coordinator(db, &cluster, cluster.control(), settings()).await;
    let key = fixture_key(&everyone, "quorum").await;
    everyone.shutdown().await;
    let c = coordinator(db, &cluster, cluster.control_without(P1), settings()).await;

    let view = c
        .submit("olivia", submit(&key, vec![], transfer(0, RECIPIENT, 3)))
        .await
        .unwrap();
    c.sign_as_submitter("olivia", view.id, cluster.approval("olivia", &view))
        .await
        .unwrap();
    for approver in ["ana", "ben"] {
        c.approve(approver, view.id, cluster.approval(approver, &view))
            .await
            .unwrap();
    }
    let signed = wait_for(&c, view.id, RequestState::Signed).await;
    assert_eq!(signed.attempts, 2);
    let raw = hex::decode(signed.result.unwrap()).unwrap();
    assert_eq!(
        Some(checksummed(&recover_sender(&raw).unwrap())),
        signed.address
    );
    let sessions = c
        .store()
        .sessions_for(SessionSubject::Request(view.id))
        .await
        .unwrap();
    assert_eq!(sessions.len(), 2, "{sessions:?}");
    assert_eq!(sessions[0].parties, [P1, P2]);
    assert!(matches!(
        sessions[0].outcome,
        Some(SessionOutcome::Failed(_))
    ));
    assert_eq!(sessions[0].blamed, [P1]);
    assert_eq!(sessions[1].parties, [P2, P3]);
    assert_eq!(sessions[1].outcome, Some(SessionOutcome::Ok));
    let health = c.party_health();
    let p1 = health.iter().find(|h| h.party == P1).unwrap();
    assert_eq!(p1.consecutive_failures, 1);

    // Key generation needs every party: without p1 it fails, naming p1; the name stays taken.
    match c
        .create_key("nope", vec![P1, P2, P3], 2, tessera_wire::KeyKind::Ecdsa)
        .await
    {
        Err(ServiceError::Unavailable(m)) => assert!(m.contains("p1"), "{m}"),
        other => panic!("key generation without p1 succeeded? {other:?}"),
    }
    assert_eq!(
        c.get_key("nope").await.unwrap().status,
        tessera_coordinator::store::KeyStatus::Failed
    );
    c.shutdown().await;
}

async fn a_party_reporting_a_forged_signature_is_blamed_and_cannot_block_signing(db: &Db) {
    let cluster = Cluster::start().await;
    let honest = coordinator(db, &cluster, cluster.control(), settings()).await;
    let key = fixture_key(&honest, "forged").await;
    honest.shutdown().await;

    // p1 reports an invalid signature (in an outcome it really signed); p2 reports the real
    // one. The coordinator checks each against the key: p2's is the result, p1 is blamed.
    let c = coordinator(db, &cluster, cluster.control_forging(&[P1]), settings()).await;
    let view = c
        .submit("olivia", submit(&key, vec![], message("one liar")))
        .await
        .unwrap();
    c.sign_as_submitter("olivia", view.id, cluster.approval("olivia", &view))
        .await
        .unwrap();
    for approver in ["ana", "ben"] {
        c.approve(approver, view.id, cluster.approval(approver, &view))
            .await
            .unwrap();
    }
    let signed = wait_for(&c, view.id, RequestState::Signed).await;
    assert_eq!(signed.attempts, 1);
    let sessions = c
        .store()
        .sessions_for(SessionSubject::Request(view.id))
        .await
        .unwrap();
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    assert_eq!(sessions[0].parties, [P1, P2]);
    assert_eq!(sessions[0].outcome, Some(SessionOutcome::Ok));
    assert_eq!(sessions[0].blamed, [P1]);
    let health = c.party_health();
    let p1 = health.iter().find(|h| h.party == P1).unwrap();
    assert_eq!(p1.consecutive_failures, 1);
    c.shutdown().await;

    // Every party lies: no signature is accepted, each liar is excluded in turn, and the
    // request fails saying who reported what, with no result stored.
    let c = coordinator(
        db,
        &cluster,
        cluster.control_forging(&[P1, P2, P3]),
        settings(),
    )
    .await;
    let view = c
        .submit("olivia", submit(&key, vec![], message("all liars")))
        .await
        .unwrap();
    c.sign_as_submitter("olivia", view.id, cluster.approval("olivia", &view))
        .await
        .unwrap();
    for approver in ["ana", "ben"] {
        c.approve(approver, view.id, cluster.approval(approver, &view))
            .await
            .unwrap();
    }
    let failed = wait_for(&c, view.id, RequestState::Failed).await;
    let error = failed.error.unwrap();
    assert!(
        error.contains("reported a signature that does not verify against the key"),
        "{error}"
    );
    assert!(failed.result.is_none());
    let sessions = c
        .store()
        .sessions_for(SessionSubject::Request(view.id))
        .await
        .unwrap();
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    assert_eq!(sessions[0].blamed, [P1, P2]);
    c.shutdown().await;
}

async fn policy_change_applies_and_unpinned_nodes_refuse_without_retry(db: &Db) {
    let cluster = Cluster::start().await;
    let c = coordinator(db, &cluster, cluster.control(), settings()).await;
    let key = fixture_key(&c, "policy").await;
    let before = c.policy().await.unwrap();
    assert_eq!(before.revision, 1);
    assert_eq!(before.hash, cluster.dev.document.hash().to_string());
    let old_request = c
        .submit("olivia", submit(&key, vec![], message("under revision 1")))
        .await
        .unwrap();

    // Revision 2 needs no approval for anything.
    let next = dev_variant(&cluster.dev, 2, "{ count = 0 }");
    let proposal = ProposePolicy {
        id: ProposalId::random(),
        document: next.bytes().to_vec(),
        lifetime_secs: None,
    };
    assert_forbidden(
        c.propose_policy("ana", proposal.clone()).await,
        "admin role",
    );
    let stale = ProposePolicy {
        id: ProposalId::random(),
        document: dev_variant(&cluster.dev, 1, "{ count = 0 }")
            .bytes()
            .to_vec(),
        lifetime_secs: None,
    };
    match c.propose_policy("ada", stale).await {
        Err(ServiceError::Invalid(m)) => assert!(m.contains("revision"), "{m}"),
        other => panic!("a change that does not raise the revision was accepted: {other:?}"),
    }
    let proposed = c.propose_policy("ada", proposal.clone()).await.unwrap();
    assert_eq!(proposed.state, ProposalState::Pending);
    assert_eq!(
        c.propose_policy("ada", proposal.clone()).await.unwrap(),
        proposed
    );
    let digest = PolicyChange::change_digest(&proposed.change);
    // The proposer's signature is not an approval by another admin: still pending after it,
    // and it signs once.
    let signed = c
        .approve_policy("ada", proposal.id, cluster.sign("ada", &digest))
        .await
        .unwrap();
    assert_eq!(signed.state, ProposalState::Pending);
    assert_conflict(
        c.approve_policy("ada", proposal.id, cluster.sign("ada", &digest))
            .await,
        "already signed",
    );
    assert_forbidden(
        c.approve_policy("ben", proposal.id, cluster.sign("ben", &digest))
            .await,
        "admin role",
    );
    assert!(matches!(
        c.approve_policy("abe", proposal.id, cluster.sign("ada", &digest))
            .await,
        Err(ServiceError::Invalid(_))
    ));
    let applied = c
        .approve_policy("abe", proposal.id, cluster.sign("abe", &digest))
        .await
        .unwrap();
    assert_eq!(applied.state, ProposalState::Applied);
    let after = c.policy().await.unwrap();
    assert_eq!(
        (after.revision, after.hash.clone()),
        (2, next.hash().to_string())
    );
    assert_conflict(
        c.approve_policy("abe", proposal.id, cluster.sign("abe", &digest))
            .await,
        "is applied",
    );

    // A request made under revision 1 can no longer be approved: submit it again.
    assert_conflict(
        c.approve("ana", old_request.id, cluster.approval("ana", &old_request))
            .await,
        "submit it again",
    );
    // Under revision 2 a request is allowed once its submitter signed it, but the nodes still
    // pin revision 1: every signer refuses it, and a refusal by policy is not retried.
    let view = c
        .submit("olivia", submit(&key, vec![], message("under revision 2")))
        .await
        .unwrap();
    assert_eq!(view.policy_hash, next.hash().to_string());
    assert_eq!(view.state, RequestState::PendingApproval);
    c.sign_as_submitter("olivia", view.id, cluster.approval("olivia", &view))
        .await
        .unwrap();
    let failed = wait_for(&c, view.id, RequestState::Failed).await;
    let error = failed.error.unwrap();
    assert!(error.starts_with("the nodes refused to sign it"), "{error}");
    assert!(error.contains("does not allow"), "{error}");
    assert_eq!(failed.attempts, 1, "a refusal by policy is not retried");
    c.shutdown().await;

    // The database's policy is now revision 2: a coordinator given revision 1 (what the
    // nodes pin) does not start, and says how to proceed.
    let err = tessera_coordinator::service::Coordinator::start(
        db.store().await,
        cluster.starter.clone(),
        cluster.control(),
        cluster.dev.document.clone(),
        settings(),
        audit_log(&cluster),
    )
    .await
    .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("revision 2") && text.contains("pin"),
        "{text}"
    );
    // With the new document it starts.
    let restarted = tessera_coordinator::service::Coordinator::start(
        db.store().await,
        cluster.starter.clone(),
        cluster.control(),
        next,
        settings(),
        audit_log(&cluster),
    )
    .await
    .unwrap();
    restarted.shutdown().await;
}

async fn restarted_coordinator_finishes_a_request_left_signing(db: &Db) {
    let cluster = Cluster::start().await;
    let setup = coordinator(db, &cluster, cluster.control(), settings()).await;
    let key = fixture_key(&setup, "restart").await;
    setup.shutdown().await;

    // A coordinator cut off from the nodes takes the request and stops while signing it.
    let cut_off = coordinator(
        db,
        &cluster,
        std::sync::Arc::new(Unreachable),
        CoordinatorSettings {
            shutdown_grace: Duration::from_millis(100),
            ..settings()
        },
    )
    .await;
    let view = cut_off
        .submit("olivia", submit(&key, vec![], transfer(0, RECIPIENT, 11)))
        .await
        .unwrap();
    cut_off
        .sign_as_submitter("olivia", view.id, cluster.approval("olivia", &view))
        .await
        .unwrap();
    for approver in ["ana", "ben"] {
        cut_off
            .approve(approver, view.id, cluster.approval(approver, &view))
            .await
            .unwrap();
    }
    wait_for(&cut_off, view.id, RequestState::Signing).await;
    cut_off.shutdown().await;
    let left = setup.get(view.id).await.unwrap();
    assert_eq!(left.state, RequestState::Signing);
    assert_eq!(left.attempts, 1);

    // The next coordinator takes over once the request is stale, and finishes it.
    let next = coordinator(
        db,
        &cluster,
        cluster.control(),
        CoordinatorSettings {
            stale_signing_after: Duration::from_secs(1),
            ..settings()
        },
    )
    .await;
    let signed = wait_for(&next, view.id, RequestState::Signed).await;
    assert_eq!(signed.attempts, 2);
    let raw = hex::decode(signed.result.unwrap()).unwrap();
    assert_eq!(
        Some(checksummed(&recover_sender(&raw).unwrap())),
        signed.address
    );
    next.shutdown().await;
}

async fn committees_keys_and_the_pinned_policy(db: &Db) {
    let cluster = Cluster::start().await;
    let c = coordinator(db, &cluster, cluster.control(), settings()).await;
    use tessera_wire::PartyId;

    // Committees: roster parties only, at least two, each once.
    for bad in [vec![P1, PartyId(9)], vec![P1], vec![P1, P1, P2]] {
        assert!(matches!(
            c.register_committee_ready(bad).await,
            Err(ServiceError::Invalid(_))
        ));
    }
    assert!(matches!(
        c.create_key("early", vec![P1, P2, P3], 2, tessera_wire::KeyKind::Ecdsa)
            .await,
        Err(ServiceError::NotFound(_))
    ));
    let committee = c.register_committee_ready(vec![P3, P1, P2]).await.unwrap();
    assert_eq!(committee.parties, [P1, P2, P3]);
    assert_eq!(
        c.list_committees().await.unwrap(),
        std::slice::from_ref(&committee)
    );
    // Set-up of a ready committee returns it without running aux info again.
    assert_eq!(
        c.setup_committee(vec![P1, P2, P3]).await.unwrap(),
        committee
    );

    // A real set-up fails at once when the nodes' prime pools are empty, and says why.
    match c.setup_committee(vec![P2, P1]).await {
        Err(ServiceError::Unavailable(m)) => assert!(m.contains("prime pool is empty"), "{m}"),
        other => panic!("a set-up without primes succeeded? {other:?}"),
    }
    let failed = c.get_committee(&[P1, P2]).await.unwrap();
    assert_eq!(
        failed.status,
        tessera_coordinator::store::CommitteeStatus::Failed
    );
    assert!(failed.error.unwrap().contains("prime pool is empty"));
    assert!(matches!(
        c.create_key("on-failed", vec![P1, P2], 2, tessera_wire::KeyKind::Ecdsa)
            .await,
        Err(ServiceError::Unavailable(_))
    ));

    // Keys: a real key generation on the committee; idempotent by name.
    for threshold in [1, 4] {
        assert!(matches!(
            c.create_key(
                "bad",
                vec![P1, P2, P3],
                threshold,
                tessera_wire::KeyKind::Ecdsa
            )
            .await,
            Err(ServiceError::Invalid(_))
        ));
    }
    let key = c
        .create_key("vault", vec![P1, P2, P3], 2, tessera_wire::KeyKind::Ecdsa)
        .await
        .unwrap();
    assert_eq!(key.status, tessera_coordinator::store::KeyStatus::Ready);
    let public_key = hex::decode(key.public_key.as_deref().unwrap()).unwrap();
    assert_eq!(key.chain_code.as_deref().map(str::len), Some(64));
    assert_eq!(
        key.address.as_deref(),
        Some(checksummed(&address(&public_key).unwrap()).as_str())
    );
    assert_eq!(
        c.create_key("vault", vec![P1, P2, P3], 2, tessera_wire::KeyKind::Ecdsa)
            .await
            .unwrap(),
        key
    );
    assert_conflict(
        c.create_key("vault", vec![P1, P2, P3], 3, tessera_wire::KeyKind::Ecdsa)
            .await,
        "already exists",
    );
    assert_eq!(c.get_key("vault").await.unwrap(), key);
    assert_eq!(c.get_key(&key.id.to_string()).await.unwrap(), key);
    assert!(matches!(
        c.get_key("nothing").await,
        Err(ServiceError::NotFound(_))
    ));
    assert_eq!(c.list_keys().await.unwrap(), std::slice::from_ref(&key));

    // Addresses: master and child, derived from the public key and chain code.
    let master = c
        .key_address(
            "vault",
            &[],
            None,
            tessera_chain::bitcoin::BitcoinNetwork::Mainnet,
        )
        .await
        .unwrap();
    assert_eq!(Some(master.address.clone()), key.address);
    let child = c
        .key_address(
            "vault",
            &[0, 7],
            None,
            tessera_chain::bitcoin::BitcoinNetwork::Mainnet,
        )
        .await
        .unwrap();
    let expected = tessera_mpc::derive_child_public_key(
        &public_key,
        &hex::decode(key.chain_code.unwrap()).unwrap(),
        &[0, 7],
    )
    .unwrap();
    assert_eq!(child.public_key, hex::encode(&expected));
    assert!(matches!(
        c.key_address(
            "vault",
            &[1 << 31],
            None,
            tessera_chain::bitcoin::BitcoinNetwork::Mainnet
        )
        .await,
        Err(ServiceError::Invalid(_))
    ));
    c.shutdown().await;

    // The database pins its policy: a coordinator given another document does not start.
    let other = tessera_policy::dev::DevPolicy::generate().unwrap();
    let err = tessera_coordinator::service::Coordinator::start(
        db.store().await,
        cluster.starter.clone(),
        cluster.control(),
        other.document,
        settings(),
        audit_log(&cluster),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ServiceError::Conflict(_)), "{err}");
    assert!(err.to_string().contains("the one the nodes pin"), "{err}");
    // Bad settings are refused with the setting's name.
    let err = tessera_coordinator::service::Coordinator::start(
        db.store().await,
        cluster.starter.clone(),
        cluster.control(),
        cluster.dev.document.clone(),
        CoordinatorSettings {
            signing_attempts: 0,
            ..settings()
        },
        audit_log(&cluster),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("signing_attempts"), "{err}");
}

/// A real committee set-up (auxiliary info from the INSECURE fixture primes put in the nodes'
/// prime pools, like `tessera demo`), key generation on it and one signing. Slow (tens of
/// seconds), so it runs once, on SQLite: the committee records are covered on both databases.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_committee_setup_key_generation_and_signing() {
    let db = Db::sqlite();
    let cluster = Cluster::start_bare(NodeSettings::default()).await;
    for (node, primes) in cluster
        .nodes
        .iter()
        .zip(tessera_mpc::fixtures::insecure_test_primes())
    {
        node.primes().put(&primes).unwrap();
    }
    let c = coordinator(&db, &cluster, cluster.control(), settings()).await;
    let started = std::time::Instant::now();
    let committee = c.setup_committee(vec![P1, P2, P3]).await.unwrap();
    eprintln!("auxiliary info in {:.1?}", started.elapsed());
    assert_eq!(
        committee.status,
        tessera_coordinator::store::CommitteeStatus::Ready
    );
    let key = c
        .create_key("real", vec![P1, P2, P3], 2, tessera_wire::KeyKind::Ecdsa)
        .await
        .unwrap();
    let view = c
        .submit("olivia", submit("real", vec![], message("real committee")))
        .await
        .unwrap();
    c.sign_as_submitter("olivia", view.id, cluster.approval("olivia", &view))
        .await
        .unwrap();
    for approver in ["ana", "ben"] {
        c.approve(approver, view.id, cluster.approval(approver, &view))
            .await
            .unwrap();
    }
    let signed = wait_for(&c, view.id, RequestState::Signed).await;
    assert_eq!(signed.address, key.address);
    c.shutdown().await;
}

/// A control channel whose broker is down: every session fails at once.
struct BrokerDown;

#[async_trait::async_trait]
impl tessera_control::ControlChannel for BrokerDown {
    async fn run(
        &self,
        _start: &tessera_control::SessionStart,
        _signed: &tessera_control::SignedStart,
        _deadline: Duration,
    ) -> Result<Vec<tessera_control::SignedOutcome>, tessera_control::StarterError> {
        Err(tessera_control::StarterError::Channel(
            "the broker is down".to_owned(),
        ))
    }
}

/// What one transfer of `wei` reserves in the window: its value and its maximum fee.
fn cost(wei: u128) -> u128 {
    wei + transfer_fee()
}

/// Fills the dev policy's rolling window (10 × the per-request limit per 24 h) so that `room`
/// wei are left, with the spend of a cancelled request of `key`.
async fn leave_room_in_window(c: &Coordinator, key: &str, room: u128) {
    let filler = c
        .submit("olivia", submit(key, vec![], transfer(99, RECIPIENT, 1)))
        .await
        .unwrap();
    c.cancel("olivia", filler.id).await.unwrap();
    c.store()
        .record_spend(&tessera_coordinator::store::Spend {
            request_id: filler.id,
            key_id: filler.key_id,
            asset: format!("eth:{DEV_CHAIN_ID}"),
            amount: (DEV_PER_REQUEST_WEI * 10 - room).to_string(),
            signed_at: i64::try_from(filler.created_at).unwrap(),
        })
        .await
        .unwrap();
}

/// Submits a transfer of `wei` and has it signed by its submitter and approved by ana and ben.
async fn submit_and_approve(
    c: &Coordinator,
    cluster: &Cluster,
    key: &str,
    nonce: u64,
    wei: u128,
) -> RequestId {
    let view = c
        .submit(
            "olivia",
            submit(key, vec![], transfer(nonce, RECIPIENT, wei)),
        )
        .await
        .unwrap();
    c.sign_as_submitter("olivia", view.id, cluster.approval("olivia", &view))
        .await
        .unwrap();
    c.approve("ana", view.id, cluster.approval("ana", &view))
        .await
        .unwrap();
    let approved = c
        .approve("ben", view.id, cluster.approval("ben", &view))
        .await
        .unwrap();
    assert_ne!(
        approved.state,
        RequestState::PendingApproval,
        "{:?}",
        approved.reasons
    );
    view.id
}

/// Issue 16 A.1: every signing of a key takes the next place in the key's spend chain, in the
/// transaction that admits it; a holder that took no part in a signing is given its record
/// before it signs a window-limited request (which it would refuse otherwise).
async fn holders_are_given_the_spend_chain_before_they_sign(db: &Db) {
    let cluster = Cluster::start_with(NodeSettings {
        round_timeout: Duration::from_secs(5),
        ..NodeSettings::default()
    })
    .await;
    // No background delivery here: what p3 learns, it learns before it signs.
    let no_background = CoordinatorSettings {
        spend_delivery_interval: Duration::from_secs(3600),
        ..settings()
    };
    let everyone = coordinator(db, &cluster, cluster.control(), no_background.clone()).await;
    let key = fixture_key(&everyone, "treasury").await;
    // p1 and p2 sign the first transfer; p3 hears nothing of it.
    let first = submit_and_approve(&everyone, &cluster, &key, 0, 1_000).await;
    wait_for(&everyone, first, RequestState::Signed).await;
    everyone.shutdown().await;
    let key_id = everyone.get(first).await.unwrap().key_id;
    let (p3_head, _) = cluster.nodes[2].ledger().chain_head(key_id).unwrap();
    assert_eq!(p3_head, 0);

    // p1 goes silent: the second transfer is signed by p2 and p3, and p3 is given the first
    // signing's record first.
    let c = coordinator(db, &cluster, cluster.control_without(P1), no_background).await;
    let second = submit_and_approve(&c, &cluster, &key, 1, 1_000).await;
    let signed = wait_for(&c, second, RequestState::Signed).await;
    assert_eq!(signed.attempts, 2);
    let sessions = c
        .store()
        .sessions_for(SessionSubject::Request(second))
        .await
        .unwrap();
    assert_eq!(sessions.last().unwrap().parties, [P2, P3]);
    for (p, node) in [(P2, &cluster.nodes[1]), (P3, &cluster.nodes[2])] {
        let (head, _) = node.ledger().chain_head(key_id).unwrap();
        assert_eq!(head, 2, "{p} holds both signings");
        let record = node.ledger().chain_record(key_id, 1).unwrap().unwrap();
        assert_eq!(record.request.id, first);
    }
    // The coordinator's chain: two places, linked, both signatures recorded; where the
    // signers stand.
    let links = c
        .store()
        .spend_links_after(key_id, 0, 10, 10)
        .await
        .unwrap();
    assert_eq!(links.len(), 2);
    assert_eq!(links[0].link.request_id, first);
    assert_eq!(links[1].link.prev, links[0].link.hash);
    assert!(links.iter().all(|l| l.link.signature.is_some()));
    let heads = c.store().spend_heads(key_id).await.unwrap();
    assert_eq!((heads.get(&P2), heads.get(&P3)), (Some(&2), Some(&2)));
    c.shutdown().await;
}

/// Issue 16 A.1: a holder that takes no part in a signing is given its record in the
/// background, without waiting to sign itself.
async fn every_holder_learns_each_signing_in_the_background(db: &Db) {
    let cluster = Cluster::start().await;
    let c = coordinator(db, &cluster, cluster.control(), settings()).await;
    let key = fixture_key(&c, "treasury").await;
    let first = submit_and_approve(&c, &cluster, &key, 0, 1_000).await;
    wait_for(&c, first, RequestState::Signed).await;
    let key_id = c.get(first).await.unwrap().key_id;
    let started = std::time::Instant::now();
    while cluster.nodes[2].ledger().chain_head(key_id).unwrap().0 < 1 {
        assert!(started.elapsed() < WAIT, "p3 never learned of the signing");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let record = cluster.nodes[2]
        .ledger()
        .chain_record(key_id, 1)
        .unwrap()
        .unwrap();
    assert_eq!(record.request.id, first);
    assert!(record.signature.is_some(), "with its signature");
    // The coordinator records where p3 stands once p3's answer is back, a moment after p3
    // kept the record.
    while c.store().spend_heads(key_id).await.unwrap().get(&P3) != Some(&1) {
        assert!(
            started.elapsed() < WAIT,
            "the coordinator never recorded that p3 holds record 1"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    c.shutdown().await;
}

/// Issue 16 B.4: coordinator replicas on one database admit requests of one key one at a
/// time, each seeing the others' reservations, so together they never admit more than the
/// rolling window allows (before, each counted only what was signed, and both admitted).
async fn two_coordinators_admit_against_one_window_at_once(db: &Db) {
    let cluster = Cluster::start().await;
    let setup = coordinator(db, &cluster, cluster.control(), settings()).await;
    let key = fixture_key(&setup, "treasury").await;
    // No worker of its own from here on: the requests it approves wait for the replicas.
    setup.shutdown().await;
    let wei = DEV_PER_REQUEST_WEI / 2;
    // Room for one of these transfers and a half.
    leave_room_in_window(&setup, &key, cost(wei) * 3 / 2).await;
    let mut ids = Vec::new();
    for nonce in 0..6 {
        ids.push(submit_and_approve(&setup, &cluster, &key, nonce, wei).await);
    }
    for id in &ids {
        assert_eq!(setup.get(*id).await.unwrap().state, RequestState::Approved);
    }
    // Two replicas start together, each with a broker that never answers (a request admitted
    // stays signing), and race over the six approved requests.
    let (a, b) = tokio::join!(
        coordinator(db, &cluster, std::sync::Arc::new(Unreachable), settings()),
        coordinator(db, &cluster, std::sync::Arc::new(Unreachable), settings())
    );
    let mut states = Vec::new();
    let started = std::time::Instant::now();
    loop {
        states.clear();
        for id in &ids {
            states.push(a.get(*id).await.unwrap());
        }
        if states.iter().all(|v| v.state != RequestState::Approved) {
            break;
        }
        assert!(
            started.elapsed() < WAIT,
            "requests still approved: {states:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let signing: Vec<_> = states
        .iter()
        .filter(|v| v.state == RequestState::Signing)
        .collect();
    assert_eq!(signing.len(), 1, "admitted: {signing:?}");
    for view in states.iter().filter(|v| v.state != RequestState::Signing) {
        assert_eq!(view.state, RequestState::Failed);
        let error = view.error.as_deref().unwrap_or_default();
        assert!(error.contains("not admitted to signing"), "{error}");
        assert!(
            error.contains("already spent in the last 86400 s"),
            "{error}"
        );
    }
    // What is reserved: the filler and the one admitted request, value and fee.
    let reserved = a
        .store()
        .spends_since(signing[0].key_id, &format!("eth:{DEV_CHAIN_ID}"), 0, None)
        .await
        .unwrap();
    let total: u128 = reserved.iter().map(|r| r.parse::<u128>().unwrap()).sum();
    assert_eq!(
        total,
        DEV_PER_REQUEST_WEI * 10 - cost(wei) * 3 / 2 + cost(wei)
    );
    assert!(total <= DEV_PER_REQUEST_WEI * 10);
    let refused: u64 = [&a, &b]
        .iter()
        .map(|c| {
            c.counters().policy_refusals()[&tessera_coordinator::service::RefusalStage::Admission]
        })
        .sum();
    assert_eq!(refused, 5);
    a.shutdown().await;
    b.shutdown().await;
}

/// Issue 16 B.4: a request whose signing fails gives its reservation back (kept, marked
/// released), so the window has room again for the next one.
async fn failed_signing_gives_its_reservation_back(db: &Db) {
    let cluster = Cluster::start().await;
    let setup = coordinator(db, &cluster, cluster.control(), settings()).await;
    let key = fixture_key(&setup, "treasury").await;
    setup.shutdown().await;
    let c = coordinator(db, &cluster, std::sync::Arc::new(BrokerDown), settings()).await;
    let wei = DEV_PER_REQUEST_WEI / 2;
    leave_room_in_window(&c, &key, cost(wei) * 3 / 2).await;
    for nonce in 0..2 {
        let id = submit_and_approve(&c, &cluster, &key, nonce, wei).await;
        let failed = wait_for(&c, id, RequestState::Failed).await;
        let error = failed.error.unwrap_or_default();
        // Each was admitted (its spend fitted) and failed in signing.
        assert!(error.contains("the broker is down"), "{error}");
        let spend = c.store().spend_of(id).await.unwrap();
        assert_eq!(spend.len(), 1, "{spend:?}");
        assert_eq!(spend[0].0.amount, cost(wei).to_string());
        assert!(spend[0].1.is_some(), "released: {spend:?}");
    }
    c.shutdown().await;
}
