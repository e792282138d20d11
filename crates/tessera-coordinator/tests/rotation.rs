//! Key rotation through the coordinator: refreshes, reshares and refresh schedules are key
//! changes an admin proposes and another approves; nodes re-check reshares' approvals; the
//! rotation check runs scheduled refreshes and resends activations that missed a party.

use crate::on_both_backends;
use crate::service_support;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use service_support::*;
use tessera_coordinator::service::{
    Coordinator, KeyChangeView, ProposeKeyChange, ServiceError, Submit,
};
use tessera_coordinator::store::{KeyChangeState, ProposalId, SessionOutcome, SessionSubject};
use tessera_policy::{KeyOperation, Payload};
use tessera_wire::{PartyId, RequestId};

on_both_backends!(
    keys_are_refreshed_and_reshared_once_another_admin_approves,
    a_refresh_schedule_refreshes_the_key_when_due,
    an_activation_that_missed_a_party_is_resent_until_it_arrives,
);

fn now() -> i64 {
    now_i64()
}

fn now_i64() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn submit(key: &str, text: &str) -> Submit {
    Submit {
        id: RequestId::random(),
        key: key.to_owned(),
        path: Vec::new(),
        payload: Payload::Message {
            bytes: text.as_bytes().to_vec(),
        },
        lifetime_secs: None,
    }
}

fn proposal(key: &str, operation: KeyOperation) -> ProposeKeyChange {
    ProposeKeyChange {
        id: ProposalId::random(),
        key: key.to_owned(),
        operation,
        lifetime_secs: None,
    }
}

fn reshare(committee: &[PartyId], threshold: u16) -> KeyOperation {
    KeyOperation::Reshare {
        committee: committee.to_vec(),
        threshold,
    }
}

/// `ada` proposes, `abe` approves (enough under the development policy); returns the change
/// as the approval left it.
async fn approved(
    c: &Arc<Coordinator>,
    cluster: &Cluster,
    key: &str,
    operation: KeyOperation,
) -> KeyChangeView {
    let pending = c
        .propose_key_change("ada", proposal(key, operation))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(pending.state, KeyChangeState::Pending);
    let signature = cluster.sign("abe", &pending.change.change_digest());
    c.approve_key_change("abe", pending.id, signature)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Signs a message with `key` through approvals (waits until signed).
async fn signs_message(c: &Arc<Coordinator>, cluster: &Cluster, key: &str, text: &str) {
    let pending = c.submit("olivia", submit(key, text)).await.unwrap();
    for approver in ["ana", "ben"] {
        c.approve(approver, pending.id, cluster.approval(approver, &pending))
            .await
            .unwrap();
    }
    wait_for(
        c,
        pending.id,
        tessera_coordinator::store::RequestState::Signed,
    )
    .await;
}

async fn keys_are_refreshed_and_reshared_once_another_admin_approves(db: &Db) {
    let cluster = Cluster::start().await;
    let c = coordinator(db, &cluster, cluster.control(), settings()).await;
    let key = fixture_key(&c, "rotating").await;
    let before = c.get_key(&key).await.unwrap();
    let share_of = |p: usize| {
        let record = cluster.nodes[p].state().key_record(before.id).unwrap();
        serde_json::to_value(&record.share).unwrap()
    };
    let old_share = share_of(0);

    // Proposed: nothing happens until another admin approves.
    let pending = c
        .propose_key_change("ada", proposal(&key, KeyOperation::Refresh))
        .await
        .unwrap();
    assert_eq!(share_of(0), old_share);
    // Not by an operator, not by the proposer, not with a signature over something else.
    assert!(matches!(
        c.propose_key_change("olivia", proposal(&key, KeyOperation::Refresh))
            .await,
        Err(ServiceError::Forbidden { .. })
    ));
    let own = cluster.sign("ada", &pending.change.change_digest());
    assert!(matches!(
        c.approve_key_change("ada", pending.id, own).await,
        Err(ServiceError::Forbidden { .. })
    ));
    let wrong = cluster.sign("abe", &[7; 32]);
    assert!(matches!(
        c.approve_key_change("abe", pending.id, wrong).await,
        Err(ServiceError::Invalid(_))
    ));
    assert_eq!(
        c.get_key_change(pending.id).await.unwrap().state,
        KeyChangeState::Pending
    );
    // abe approves: the refresh runs. New shares, same key, committee and threshold.
    let signature = cluster.sign("abe", &pending.change.change_digest());
    let done = c
        .approve_key_change("abe", pending.id, signature)
        .await
        .unwrap();
    assert_eq!(done.state, KeyChangeState::Applied, "{:?}", done.error);
    assert_eq!(done.decisions.len(), 1);
    let refreshed = c.get_key(&key).await.unwrap();
    assert_eq!(refreshed.public_key, before.public_key);
    assert_eq!(
        (refreshed.threshold, &refreshed.committee),
        (2, &before.committee)
    );
    assert!(refreshed.rotated_at.is_some());
    assert_eq!(refreshed.activation_due, None);
    assert_ne!(share_of(0), old_share, "p1's share was renewed");
    signs_message(&c, &cluster, &key, "after the refresh").await;
    // An applied change takes no more approvals.
    let again = cluster.sign("abe", &pending.change.change_digest());
    assert!(matches!(
        c.approve_key_change("abe", pending.id, again).await,
        Err(ServiceError::Conflict(_))
    ));

    // Reshare to 3-of-3 on the same (ready) committee, then back to 2-of-3.
    let three = approved(&c, &cluster, &key, reshare(&[P1, P2, P3], 3)).await;
    assert_eq!(three.state, KeyChangeState::Applied, "{:?}", three.error);
    let key_view = c.get_key(&key).await.unwrap();
    assert_eq!(key_view.threshold, 3);
    assert_eq!(key_view.public_key, before.public_key);
    for node in &cluster.nodes {
        assert_eq!(node.state().key_record(before.id).unwrap().threshold, 3);
    }
    signs_message(&c, &cluster, &key, "signed by all three").await;
    let two = approved(&c, &cluster, &key, reshare(&[P1, P2, P3], 2)).await;
    assert_eq!(two.state, KeyChangeState::Applied, "{:?}", two.error);
    assert_eq!(c.get_key(&key).await.unwrap().threshold, 2);
    signs_message(&c, &cluster, &key, "two of three again").await;

    // Refused when proposed: a bad threshold, a committee out of order or not set up, an
    // unknown key.
    for (committee, t) in [
        (vec![P1, P2, P3], 4),
        (vec![P1, P2, P3], 1),
        (vec![P3, P2, P1], 2),
    ] {
        let refused = c
            .propose_key_change("ada", proposal(&key, reshare(&committee, t)))
            .await;
        assert!(
            matches!(refused, Err(ServiceError::Invalid(_))),
            "{refused:?}"
        );
    }
    assert!(matches!(
        c.propose_key_change("ada", proposal(&key, reshare(&[P1, P2], 2)))
            .await,
        Err(ServiceError::NotFound(_))
    ));
    assert!(matches!(
        c.propose_key_change("ada", proposal("no-such-key", KeyOperation::Refresh))
            .await,
        Err(ServiceError::NotFound(_))
    ));
    // Every change is listed; each rotation is a recorded session.
    let listed = c.list_key_changes(None, 10).await.unwrap();
    assert_eq!(listed.len(), 3, "the refresh and the two reshares");
    let mut operations: Vec<String> = c
        .store()
        .sessions_for(SessionSubject::Key(before.id))
        .await
        .unwrap()
        .into_iter()
        .filter(|s| s.outcome == Some(SessionOutcome::Ok))
        .map(|s| s.operation)
        .collect();
    operations.sort();
    assert_eq!(operations, ["keygen", "refresh", "reshare", "reshare"]);
    c.shutdown().await;
}

async fn a_refresh_schedule_refreshes_the_key_when_due(db: &Db) {
    let cluster = Cluster::start().await;
    let c = coordinator(db, &cluster, cluster.control(), settings()).await;
    let key = fixture_key(&c, "scheduled").await;
    let id = c.get_key(&key).await.unwrap().id;
    let share =
        || serde_json::to_value(&cluster.nodes[1].state().key_record(id).unwrap().share).unwrap();
    let old_share = share();

    // Shorter than an hour is refused; a day is approved and set, first due in a day.
    let too_often = KeyOperation::RefreshSchedule {
        every_secs: Some(60),
    };
    assert!(matches!(
        c.propose_key_change("ada", proposal(&key, too_often)).await,
        Err(ServiceError::Invalid(_))
    ));
    let daily = KeyOperation::RefreshSchedule {
        every_secs: Some(86_400),
    };
    let set = approved(&c, &cluster, &key, daily).await;
    assert_eq!(set.state, KeyChangeState::Applied, "{:?}", set.error);
    let view = c.get_key(&key).await.unwrap();
    assert_eq!(view.refresh_every_secs, Some(86_400));
    let next = view.next_refresh_at.unwrap();
    assert!(next > now() + 86_000, "next refresh at {next}");
    // Not due: several rotation checks leave the share alone.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(share(), old_share);

    // A day passes (the schedule was set a day and a second ago): the rotation check
    // refreshes the key by itself, and schedules the next refresh a day on.
    let earlier = db.store().await.with_clock(|| now_i64() - 86_401);
    earlier
        .set_refresh_schedule(id, Some(86_400))
        .await
        .unwrap();
    let started = Instant::now();
    while share() == old_share {
        assert!(started.elapsed() < WAIT, "the scheduled refresh never ran");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let started = Instant::now();
    let view = loop {
        let view = c.get_key(&key).await.unwrap();
        if view.activation_due.is_none() && view.next_refresh_at.is_some_and(|t| t > now() + 86_000)
        {
            break view;
        }
        assert!(
            started.elapsed() < WAIT,
            "the next refresh was not scheduled: {view:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(view.public_key, c.get_key(&key).await.unwrap().public_key);
    assert!(view.rotated_at.is_some());
    signs_message(&c, &cluster, &key, "after the scheduled refresh").await;

    // Stopping the schedule is a key change too.
    let off = approved(
        &c,
        &cluster,
        &key,
        KeyOperation::RefreshSchedule { every_secs: None },
    )
    .await;
    assert_eq!(off.state, KeyChangeState::Applied);
    let view = c.get_key(&key).await.unwrap();
    assert_eq!(
        (view.refresh_every_secs, view.next_refresh_at),
        (None, None)
    );
    c.shutdown().await;
}

async fn an_activation_that_missed_a_party_is_resent_until_it_arrives(db: &Db) {
    let cluster = Cluster::start().await;
    let control = LosesActivationToP3::new(&cluster);
    let c = coordinator(db, &cluster, control.clone(), settings()).await;
    let key = fixture_key(&c, "half-activated").await;
    let id = c.get_key(&key).await.unwrap().id;

    // The refresh succeeds everywhere, but its activation never reaches p3: the change is
    // reported failed with the reason, the new committee is recorded (every participant
    // confirmed), and the activation stays due.
    let change = approved(&c, &cluster, &key, KeyOperation::Refresh).await;
    assert_eq!(change.state, KeyChangeState::Failed);
    let error = change.error.unwrap();
    assert!(
        error.contains("activation") && error.contains("p3"),
        "{error}"
    );
    let due = c.get_key(&key).await.unwrap().activation_due;
    let session = due.expect("the activation is due");
    let pending = cluster.nodes[2]
        .state()
        .reshare(id, session.parse().unwrap())
        .unwrap();
    assert!(
        matches!(
            pending,
            Some(tessera_node::state::ReshareRecord::Pending { .. })
        ),
        "p3 still holds its new share pending"
    );
    // Asking by hand while p3 is still cut off: refused, naming p3.
    let refused = c.complete_activation(&key).await.unwrap_err();
    assert!(refused.to_string().contains("p3"), "{refused}");
    // Another rotation waits for it: refused until the activation arrived.
    let blocked = approved(&c, &cluster, &key, KeyOperation::Refresh).await;
    assert_eq!(blocked.state, KeyChangeState::Failed);
    assert!(blocked.error.unwrap().contains(&session));

    // p3 is back: the rotation check delivers the activation by itself.
    control.lose.store(false, Ordering::Relaxed);
    let started = Instant::now();
    while c.get_key(&key).await.unwrap().activation_due.is_some() {
        assert!(started.elapsed() < WAIT, "the activation was never resent");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let record = cluster.nodes[2]
        .state()
        .reshare(id, session.parse().unwrap())
        .unwrap();
    assert!(matches!(
        record,
        Some(tessera_node::state::ReshareRecord::Activated { .. })
    ));
    signs_message(&c, &cluster, &key, "p1 and p3 after the activation").await;
    c.shutdown().await;
}
