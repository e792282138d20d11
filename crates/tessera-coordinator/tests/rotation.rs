//! Key rotation through the coordinator: refreshes, reshares and refresh schedules are key
//! changes an admin proposes and another approves, bound to the key's epoch; nodes re-check
//! reshares' approvals; each rotation makes a new epoch, activated on the participants'
//! certificate and closed (the old epoch erased) by every old holder; the rotation check runs
//! scheduled refreshes and resends activations and closures that missed a party. (The
//! service flow runs on SQLite; the store's statements behind it are tested on both backends
//! in `store.rs`.)

use crate::service_support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use service_support::*;
use tessera_coordinator::service::{Coordinator, CoordinatorSettings, ServiceError, Submit};
use tessera_coordinator::store::{KeyChangeState, SessionOutcome, SessionSubject};
use tessera_policy::{KeyOperation, Payload};
use tessera_wire::{PartyId, RequestId};

/// The rotation tests, on SQLite.
macro_rules! on_sqlite {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(&super::service_support::Db::sqlite()).await;
                }
            )*
        }
    };
}

on_sqlite!(
    keys_are_refreshed_and_reshared_once_another_admin_approves,
    a_refresh_schedule_refreshes_the_key_when_due,
    an_activation_that_missed_a_party_is_resent_until_it_arrives,
    a_holder_that_misses_the_closure_is_shown_not_confirmed_erased_until_it_answers,
    a_rotation_waits_for_primes_and_says_so,
    a_failed_reshare_is_abandoned_at_every_participant,
);

/// The actions the coordinator audited so far.
fn audited(cluster: &Cluster) -> Vec<String> {
    let mut actions = Vec::new();
    for entry in std::fs::read_dir(cluster.audit_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.to_string_lossy().ends_with(".audit.jsonl") {
            for record in tessera_audit::file::read(&path).unwrap() {
                actions.push(record.unwrap().action);
            }
        }
    }
    actions
}

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

/// Signs a message with `key` through approvals (waits until signed).
async fn signs_message(c: &Arc<Coordinator>, cluster: &Cluster, key: &str, text: &str) {
    let pending = c.submit("olivia", submit(key, text)).await.unwrap();
    c.sign_as_submitter("olivia", pending.id, cluster.approval("olivia", &pending))
        .await
        .unwrap();
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
    give_primes(&cluster, 3);
    let c = coordinator(db, &cluster, cluster.control(), settings()).await;
    let key = fixture_key(&c, "rotating").await;
    let before = c.get_key(&key).await.unwrap();
    let share_of = |p: usize| {
        let record = cluster.nodes[p].state().key_record(before.id).unwrap();
        serde_json::to_value(&record.share).unwrap()
    };
    let old_share = share_of(0);

    // Proposed: nothing happens until another admin approves. The change names the epoch it
    // applies to.
    let pending = c
        .propose_key_change("ada", proposal(&key, KeyOperation::Refresh))
        .await
        .unwrap();
    assert_eq!(share_of(0), old_share);
    assert_eq!(pending.change.from.epoch, 0);
    assert!(pending.notes.is_empty(), "{:?}", pending.notes);
    // Another refresh proposed against epoch 0 too: once the first ran, it no longer applies.
    let overtaken = c
        .propose_key_change("ada", proposal(&key, KeyOperation::Refresh))
        .await
        .unwrap();
    // Not by an operator, not with a signature over something else.
    assert!(matches!(
        c.propose_key_change("olivia", proposal(&key, KeyOperation::Refresh))
            .await,
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
    // abe approves, but ada (the proposer) has not signed it: a change nobody verifiably
    // proposed waits. Once ada signs, the refresh runs. New shares, same key, committee and
    // threshold.
    let signature = cluster.sign("abe", &pending.change.change_digest());
    let waiting = c
        .approve_key_change("abe", pending.id, signature)
        .await
        .unwrap();
    assert_eq!(waiting.state, KeyChangeState::Pending);
    assert_eq!(share_of(0), old_share);
    let own = cluster.sign("ada", &pending.change.change_digest());
    let done = c.approve_key_change("ada", pending.id, own).await.unwrap();
    assert_eq!(done.state, KeyChangeState::Applied, "{:?}", done.error);
    assert_eq!(done.decisions.len(), 2);
    let refreshed = c.get_key(&key).await.unwrap();
    assert_eq!(refreshed.public_key, before.public_key);
    assert_eq!(
        (refreshed.threshold, &refreshed.committee),
        (2, &before.committee)
    );
    assert!(refreshed.rotated_at.is_some());
    assert_eq!(refreshed.activation_due, None);
    assert_eq!(refreshed.epoch, 1);
    assert!(refreshed.erasure_unconfirmed.is_empty());
    assert_ne!(share_of(0), old_share, "p1's share was renewed");
    for node in &cluster.nodes {
        assert_eq!(node.state().key_record(before.id).unwrap().epoch, 1);
    }
    c.approve_key_change(
        "ada",
        overtaken.id,
        cluster.sign("ada", &overtaken.change.change_digest()),
    )
    .await
    .unwrap();
    let stale = c
        .approve_key_change(
            "abe",
            overtaken.id,
            cluster.sign("abe", &overtaken.change.change_digest()),
        )
        .await
        .unwrap();
    assert_eq!(stale.state, KeyChangeState::Failed);
    assert!(
        stale
            .error
            .as_deref()
            .unwrap()
            .contains("was approved for epoch 0"),
        "{:?}",
        stale.error
    );
    signs_message(&c, &cluster, &key, "after the refresh").await;
    // An applied change takes no more approvals.
    let again = cluster.sign("abe", &pending.change.change_digest());
    assert!(matches!(
        c.approve_key_change("abe", pending.id, again).await,
        Err(ServiceError::Conflict(_))
    ));

    // Reshare to 3-of-3 on the same (ready) committee, then back to 2-of-3.
    let three = approved_change(&c, &cluster, &key, reshare(&[P1, P2, P3], 3)).await;
    assert_eq!(three.state, KeyChangeState::Applied, "{:?}", three.error);
    let key_view = c.get_key(&key).await.unwrap();
    assert_eq!(key_view.threshold, 3);
    assert_eq!(key_view.public_key, before.public_key);
    for node in &cluster.nodes {
        assert_eq!(node.state().key_record(before.id).unwrap().threshold, 3);
    }
    signs_message(&c, &cluster, &key, "signed by all three").await;
    let two = approved_change(&c, &cluster, &key, reshare(&[P1, P2, P3], 2)).await;
    assert_eq!(two.state, KeyChangeState::Applied, "{:?}", two.error);
    assert_eq!(c.get_key(&key).await.unwrap().threshold, 2);
    signs_message(&c, &cluster, &key, "two of three again").await;

    let view = c.get_key(&key).await.unwrap();
    assert_eq!(view.epoch, 3, "a refresh and two reshares");
    // Refused when proposed: a bad threshold, a committee out of order or with a party not
    // in the roster, an unknown key. (A committee need not be set up: its parties make the new
    // epoch's auxiliary info.)
    for (committee, t) in [
        (vec![P1, P2, P3], 4),
        (vec![P1, P2, P3], 1),
        (vec![P3, P2, P1], 2),
        (vec![P1, P2, PartyId(9)], 2),
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
        c.propose_key_change("ada", proposal("no-such-key", KeyOperation::Refresh))
            .await,
        Err(ServiceError::NotFound(_))
    ));
    // Every change is listed; each rotation is a recorded session.
    let listed = c.list_key_changes(None, None, 10).await.unwrap();
    assert_eq!(
        listed.len(),
        4,
        "the refresh, the overtaken refresh and the two reshares"
    );
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
    give_primes(&cluster, 1);
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
    let set = approved_change(&c, &cluster, &key, daily).await;
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
    let off = approved_change(
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
    give_primes(&cluster, 1);
    let control = LosesToP3::new(&cluster, Losing::Activations);
    let c = coordinator(db, &cluster, control.clone(), settings()).await;
    let key = fixture_key(&c, "half-activated").await;
    let id = c.get_key(&key).await.unwrap().id;

    // The refresh succeeds everywhere, but its activation never reaches p3: the change is
    // reported failed with the reason, the new epoch is recorded (every participant reported
    // the same result), and the activation stays due.
    let change = approved_change(&c, &cluster, &key, KeyOperation::Refresh).await;
    assert_eq!(change.state, KeyChangeState::Failed);
    let error = change.error.unwrap();
    assert!(
        error.contains("activation") && error.contains("p3"),
        "{error}"
    );
    let view = c.get_key(&key).await.unwrap();
    assert_eq!(view.epoch, 1);
    let session = view.activation_due.expect("the activation is due");
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
    // p1 and p2 activated but kept their old epoch retired: nothing is erased before every
    // participant activated.
    assert!(matches!(
        cluster.nodes[0]
            .state()
            .reshare(id, session.parse().unwrap())
            .unwrap(),
        Some(tessera_node::state::ReshareRecord::Activated {
            retired: Some(_),
            ..
        })
    ));
    // Asking by hand while p3 is still cut off: refused, naming p3.
    let refused = c.complete_activation(&key).await.unwrap_err();
    assert!(refused.to_string().contains("p3"), "{refused}");
    // Another rotation waits for it: refused until the activation arrived.
    let blocked = approved_change(&c, &cluster, &key, KeyOperation::Refresh).await;
    assert_eq!(blocked.state, KeyChangeState::Failed);
    assert!(blocked.error.unwrap().contains("p3"));

    // p3 is back: the rotation check delivers the activation by itself, then the closure.
    control.lose(Losing::Nothing);
    let started = Instant::now();
    loop {
        let view = c.get_key(&key).await.unwrap();
        if view.activation_due.is_none() && view.erasure_unconfirmed.is_empty() {
            break;
        }
        assert!(started.elapsed() < WAIT, "the activation was never resent");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for node in &cluster.nodes {
        let record = node.state().reshare(id, session.parse().unwrap()).unwrap();
        assert!(matches!(
            record,
            Some(tessera_node::state::ReshareRecord::Closed { .. })
        ));
    }
    let actions = audited(&cluster);
    for expected in [
        "key.activation_incomplete",
        "key.epoch_activated",
        "key.epoch_closed",
    ] {
        assert!(
            actions.iter().any(|a| a == expected),
            "{expected} in {actions:?}"
        );
    }
    signs_message(&c, &cluster, &key, "p1 and p3 after the activation").await;
    c.shutdown().await;
}

async fn a_holder_that_misses_the_closure_is_shown_not_confirmed_erased_until_it_answers(db: &Db) {
    let cluster = Cluster::start().await;
    give_primes(&cluster, 1);
    let control = LosesToP3::new(&cluster, Losing::Closures);
    let c = coordinator(db, &cluster, control.clone(), settings()).await;
    let key = fixture_key(&c, "half-closed").await;
    let id = c.get_key(&key).await.unwrap().id;

    // The refresh is active everywhere; only p3 does not hear that the old epoch closes.
    let change = approved_change(&c, &cluster, &key, KeyOperation::Refresh).await;
    assert_eq!(change.state, KeyChangeState::Applied, "{:?}", change.error);
    let view = c.get_key(&key).await.unwrap();
    assert_eq!((view.epoch, view.activation_due.as_deref()), (1, None));
    assert_eq!(view.erasure_unconfirmed, vec![P3]);
    assert!(audited(&cluster)
        .iter()
        .any(|a| a == "key.erasure_unconfirmed"));
    let session = cluster.nodes[2]
        .state()
        .reshares(id)
        .unwrap()
        .into_iter()
        .find(|(_, r)| r.state() == "activated")
        .map(|(s, _)| s)
        .expect("p3 activated");
    // p3 still keeps its old epoch retired; p1 and p2 erased theirs.
    let retired_at = |k: usize| match cluster.nodes[k].state().reshare(id, session).unwrap() {
        Some(tessera_node::state::ReshareRecord::Activated { retired, .. }) => retired.is_some(),
        _ => false,
    };
    assert!(retired_at(2));
    assert!(!retired_at(0) && !retired_at(1));
    // The key keeps signing meanwhile.
    signs_message(&c, &cluster, &key, "while p3 has not confirmed").await;

    // p3 answers again: the rotation check closes the epoch there too.
    control.lose(Losing::Nothing);
    let started = Instant::now();
    while !c
        .get_key(&key)
        .await
        .unwrap()
        .erasure_unconfirmed
        .is_empty()
    {
        assert!(started.elapsed() < WAIT, "the closure was never resent");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        cluster.nodes[2]
            .state()
            .reshare(id, session)
            .unwrap()
            .map(|r| r.state()),
        Some("closed")
    );
    c.shutdown().await;
}

async fn a_rotation_waits_for_primes_and_says_so(db: &Db) {
    let cluster = Cluster::start().await;
    let c = coordinator(
        db,
        &cluster,
        cluster.control(),
        CoordinatorSettings {
            aux_info_deadline: Duration::from_secs(2),
            ..settings()
        },
    )
    .await;
    let key = fixture_key(&c, "no-primes").await;
    // p1 and p2 have prime sets, p3 none: the proposal says the refresh will wait for it.
    let primes = tessera_mpc::fixtures::insecure_test_primes();
    cluster.nodes[0].primes().put(&primes[3]).unwrap();
    cluster.nodes[1].primes().put(&primes[4]).unwrap();
    let pending = c
        .propose_key_change("ada", proposal(&key, KeyOperation::Refresh))
        .await
        .unwrap();
    assert_eq!(pending.notes.len(), 1, "{:?}", pending.notes);
    assert!(
        pending.notes[0].contains("p3 has no prime set ready"),
        "{}",
        pending.notes[0]
    );
    // Approved, it waits (audited) and gives up after the deadline; nothing changed.
    let own = cluster.sign("ada", &pending.change.change_digest());
    c.approve_key_change("ada", pending.id, own).await.unwrap();
    let signature = cluster.sign("abe", &pending.change.change_digest());
    let done = c
        .approve_key_change("abe", pending.id, signature)
        .await
        .unwrap();
    assert_eq!(done.state, KeyChangeState::Failed);
    assert!(
        done.error
            .as_deref()
            .unwrap()
            .contains("p3 still had no prime set ready"),
        "{:?}",
        done.error
    );
    assert!(audited(&cluster)
        .iter()
        .any(|a| a == "key.waiting_for_primes"));
    let view = c.get_key(&key).await.unwrap();
    assert_eq!((view.epoch, view.activation_due), (0, None));
    // No prime set was used up.
    assert_eq!(cluster.nodes[0].primes().len().unwrap(), 1);
    c.shutdown().await;
}

async fn a_failed_reshare_is_abandoned_at_every_participant(db: &Db) {
    let cluster = Cluster::start_with(tessera_node::NodeSettings {
        round_timeout: Duration::from_secs(2),
        ..tessera_node::NodeSettings::default()
    })
    .await;
    give_primes(&cluster, 1);
    let control = LosesToP3::new(&cluster, Losing::Reshares);
    let c = coordinator(db, &cluster, control.clone(), settings()).await;
    let key = fixture_key(&c, "abandoned").await;
    let id = c.get_key(&key).await.unwrap().id;
    // p3 never hears of the refresh: p1 and p2 time out waiting for it.
    let change = approved_change(&c, &cluster, &key, KeyOperation::Refresh).await;
    assert_eq!(change.state, KeyChangeState::Failed);
    let error = change.error.unwrap();
    assert!(
        error.contains("abandoned") && error.contains("p3"),
        "{error}"
    );
    // Every participant recorded the session abandoned, p3 too (it signed that it holds no
    // result of it and never will); the key is unchanged and signs.
    let session = cluster.nodes[0]
        .state()
        .reshares(id)
        .unwrap()
        .into_iter()
        .next()
        .map(|(s, _)| s)
        .expect("p1 recorded the session");
    for node in &cluster.nodes {
        assert_eq!(
            node.state()
                .reshare(id, session)
                .unwrap()
                .map(|r| r.state()),
            Some("abandoned"),
            "{}",
            node.party()
        );
        assert_eq!(node.state().key_record(id).unwrap().epoch, 0);
    }
    assert!(audited(&cluster).iter().any(|a| a == "key.refresh_failed"));
    assert_eq!(c.get_key(&key).await.unwrap().epoch, 0);
    signs_message(&c, &cluster, &key, "after the abandoned refresh").await;
    c.shutdown().await;
}
