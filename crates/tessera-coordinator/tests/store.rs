//! The coordinator store's behaviour, written once and run against SQLite (a temp file) and
//! PostgreSQL (a throwaway server from `tessera_coordinator::testing`). PostgreSQL tests fail,
//! not skip, when PostgreSQL is missing: run ./scripts/setup.sh.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use sqlx::any::AnyPoolOptions;
use tempfile::TempDir;
use tessera_coordinator::store::{
    AddApproval, Admission, Approval, ApprovalSubject, Backend, CommitteeStatus, Decision,
    InsertOutcome, KeyStatus, Lifecycle, LifecyclePhase, LinkRow, NewKey, NewProposal, NewRequest,
    NewSession, PolicyRow, ProposalId, ProposalState, RequestFilter, RequestKind, RequestState,
    SessionOutcome, SessionSubject, SignedRequest, Spend, Store, StoreError, SCHEMA_VERSION,
};
use tessera_coordinator::testing::PostgresServer;
use tessera_wire::{KeyId, PartyId, RequestId, SessionId};

/// A database for one test, kept alive as long as the value.
struct Db {
    url: String,
    clock: Arc<AtomicI64>,
    _sqlite_dir: Option<TempDir>,
    _postgres: Option<PostgresServer>,
}

impl Db {
    fn sqlite() -> Db {
        let dir = tempfile::tempdir().expect("temp dir");
        Db {
            url: format!("sqlite://{}", dir.path().join("coordinator.db").display()),
            clock: Arc::new(AtomicI64::new(1_000)),
            _sqlite_dir: Some(dir),
            _postgres: None,
        }
    }

    async fn postgres() -> Db {
        let server = PostgresServer::start()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        Db {
            url: server.url().to_owned(),
            clock: Arc::new(AtomicI64::new(1_000)),
            _sqlite_dir: None,
            _postgres: Some(server),
        }
    }

    /// A store whose clock is [`Db::set_time`].
    async fn store(&self) -> Store {
        let clock = self.clock.clone();
        Store::connect(&self.url)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .with_clock(move || clock.load(Ordering::SeqCst))
    }

    fn set_time(&self, now: i64) {
        self.clock.store(now, Ordering::SeqCst);
    }

    /// Raw SQL, as an operator or another program could run it.
    async fn raw(&self, sql: &str) {
        sqlx::any::install_default_drivers();
        let pool = AnyPoolOptions::new()
            .max_connections(1)
            .connect(&self.url)
            .await
            .expect("raw connection");
        sqlx::query(sql).execute(&pool).await.expect(sql);
        pool.close().await;
    }
}

/// Runs each named behaviour against SQLite and PostgreSQL.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(&super::Db::sqlite()).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(&super::Db::postgres().await).await;
                }
            )*
        }
    };
}

on_both_backends!(
    migrations_are_idempotent_and_data_survives_reopen,
    concurrent_first_opens_migrate_once,
    newer_schema_is_refused,
    keys_lifecycle,
    insert_request_is_idempotent_and_detects_conflicts,
    transitions_compare_and_set,
    concurrent_writers_agree,
    list_requests_filters_orders_and_pages,
    expire_due_moves_only_open_requests_past_expiry,
    approvals_are_decided_once,
    nonce_replays_are_detected_and_pruned,
    spend_windows_and_large_amounts,
    policy_activation_picks_highest_revision,
    policy_changes_activate_once_against_the_policy_in_force,
    policy_proposals_lifecycle,
    sessions_lifecycle,
    unreadable_rows_are_errors_not_panics,
    committees_lifecycle,
    request_reasons_queue_and_liveness,
    stale_key_generations_fail,
    key_epochs_and_their_lifecycle,
    rotation_leases_hold_across_coordinators,
    admissions_reserve_spend_one_at_a_time_across_coordinators,
    requests_are_counted_by_state,
    shared_windows_admit_across_keys_one_at_a_time,
    spend_chain_links_signatures_and_heads,
    an_attempt_and_a_signature_are_each_one_transaction,
);

fn kid(n: u8) -> KeyId {
    KeyId([n; 16])
}

fn rid(n: u8) -> RequestId {
    RequestId([n; 16])
}

fn new_key(n: u8, name: &str) -> NewKey {
    NewKey {
        id: kid(n),
        name: name.to_owned(),
        threshold: 2,
        committee: vec![PartyId(1), PartyId(2), PartyId(3)],
        kind: tessera_wire::KeyKind::Ecdsa,
        created_at: 100,
    }
}

fn new_request(n: u8, key: KeyId, created_at: i64) -> NewRequest {
    NewRequest {
        id: rid(n),
        key_id: key,
        kind: RequestKind::Transfer,
        state: RequestState::PendingApproval,
        body: vec![0xab, n, 0x00, 0xff],
        request_digest: vec![n; 32],
        submitted_by: "operator-1".to_owned(),
        created_at,
        expires_at: created_at + 3_600,
        reasons: Vec::new(),
    }
}

async fn store_with_key(db: &Db) -> Store {
    let store = db.store().await;
    store.insert_key(&new_key(1, "treasury")).await.unwrap();
    store
}

async fn migrations_are_idempotent_and_data_survives_reopen(db: &Db) {
    let store = store_with_key(db).await;
    assert_eq!(store.schema_version().await.unwrap(), SCHEMA_VERSION);
    store.close().await;

    // Reconnecting runs the migrator again: nothing is re-applied and the data is still there.
    let again = db.store().await;
    assert_eq!(again.schema_version().await.unwrap(), SCHEMA_VERSION);
    let key = again
        .get_key(kid(1))
        .await
        .unwrap()
        .expect("key survives reopen");
    assert_eq!(key.name, "treasury");
    // A second store on the same database at the same time is fine too.
    let third = db.store().await;
    assert_eq!(third.list_keys().await.unwrap().len(), 1);
    again.close().await;
    third.close().await;

    // Exactly one row per migration.
    sqlx::any::install_default_drivers();
    let pool = AnyPoolOptions::new().connect(&db.url).await.unwrap();
    let applied: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(applied, SCHEMA_VERSION);
    if db.url.starts_with("sqlite") {
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(mode, "wal");
    }
    pool.close().await;
}

async fn concurrent_first_opens_migrate_once(db: &Db) {
    // Coordinators starting together on a new database.
    let opens = (0..4).map(|_| {
        let url = db.url.clone();
        tokio::spawn(async move { Store::connect(&url).await })
    });
    for open in opens {
        let store = open.await.unwrap().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(store.schema_version().await.unwrap(), SCHEMA_VERSION);
    }
}

async fn newer_schema_is_refused(db: &Db) {
    db.store().await.close().await;
    // What a newer coordinator would leave behind: a migration this code does not know.
    sqlx::any::install_default_drivers();
    let pool = AnyPoolOptions::new().connect(&db.url).await.unwrap();
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(SCHEMA_VERSION + 1)
    .bind("from the future")
    .bind(true)
    .bind(vec![0u8; 48])
    .bind(0i64)
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;

    let err = Store::connect(&db.url).await.unwrap_err();
    match &err {
        StoreError::SchemaTooNew { found, supported } => {
            assert_eq!(*found, SCHEMA_VERSION + 1);
            assert_eq!(*supported, SCHEMA_VERSION);
        }
        other => panic!("expected SchemaTooNew, got {other:?}"),
    }
    assert!(err.to_string().contains("at least as new"), "{err}");
}

async fn keys_lifecycle(db: &Db) {
    let store = db.store().await;
    db.set_time(500);
    assert_eq!(
        store.insert_key(&new_key(2, "zeta")).await.unwrap(),
        InsertOutcome::Inserted
    );
    assert_eq!(
        store.insert_key(&new_key(1, "alpha")).await.unwrap(),
        InsertOutcome::Inserted
    );
    // A retry is idempotent.
    let InsertOutcome::Existing(existing) = store.insert_key(&new_key(1, "alpha")).await.unwrap()
    else {
        panic!("retry not recognised");
    };
    assert_eq!(existing.status, KeyStatus::Creating);
    assert_eq!(existing.committee, vec![PartyId(1), PartyId(2), PartyId(3)]);
    assert_eq!(existing.kind, tessera_wire::KeyKind::Ecdsa);
    assert_eq!(existing.public_key, None);
    // The same id and name for another kind of key is another key.
    let mut other_kind = new_key(1, "alpha");
    other_kind.kind = tessera_wire::KeyKind::Ed25519;
    assert!(matches!(
        store.insert_key(&other_kind).await,
        Err(StoreError::Conflict(_))
    ));
    // Every kind is stored and read back.
    for (n, kind) in [
        (5, tessera_wire::KeyKind::Taproot),
        (6, tessera_wire::KeyKind::Ed25519),
    ] {
        let mut key = new_key(n, &format!("{kind}-key"));
        key.kind = kind;
        store.insert_key(&key).await.unwrap();
        assert_eq!(store.get_key(kid(n)).await.unwrap().unwrap().kind, kind);
    }
    // The name is taken; the id is taken by another key.
    let err = store.insert_key(&new_key(3, "alpha")).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict(ref m) if m.contains("already exists")),
        "{err}"
    );
    let err = store.insert_key(&new_key(1, "beta")).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict(ref m) if m.contains("different key")),
        "{err}"
    );
    // Bad shapes are refused before the database.
    let mut bad = new_key(4, "bad");
    bad.threshold = 4;
    assert!(matches!(
        store.insert_key(&bad).await,
        Err(StoreError::Invalid { .. })
    ));
    bad.threshold = 2;
    bad.committee = vec![PartyId(1), PartyId(1)];
    assert!(matches!(
        store.insert_key(&bad).await,
        Err(StoreError::Invalid { .. })
    ));

    let names: Vec<_> = store
        .list_keys()
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.name)
        .collect();
    assert_eq!(names, ["alpha", "ed25519-key", "taproot-key", "zeta"]);
    assert_eq!(
        store.get_key_by_name("zeta").await.unwrap().unwrap().id,
        kid(2)
    );
    assert_eq!(store.get_key_by_name("nope").await.unwrap(), None);
    assert_eq!(store.get_key(kid(9)).await.unwrap(), None);

    db.set_time(600);
    let public_key = [2u8; 33];
    assert!(store
        .set_key_ready(kid(1), &public_key, Some(&[7u8; 32]))
        .await
        .unwrap());
    // Only a key being created can finish.
    assert!(!store.set_key_failed(kid(1), "late").await.unwrap());
    assert!(!store.set_key_ready(kid(1), &[3u8; 33], None).await.unwrap());
    let ready = store.get_key(kid(1)).await.unwrap().unwrap();
    assert_eq!(ready.status, KeyStatus::Ready);
    assert_eq!(ready.public_key.as_deref(), Some(&public_key[..]));
    assert_eq!(ready.chain_code.as_deref(), Some(&[7u8; 32][..]));
    assert_eq!(ready.error, None);
    assert_eq!((ready.created_at, ready.updated_at), (100, 600));

    assert!(store.set_key_failed(kid(2), "p3 timed out").await.unwrap());
    let failed = store.get_key(kid(2)).await.unwrap().unwrap();
    assert_eq!(failed.status, KeyStatus::Failed);
    assert_eq!(failed.error.as_deref(), Some("p3 timed out"));
    assert!(matches!(
        store.set_key_ready(kid(9), &public_key, None).await,
        Err(StoreError::NotFound(_))
    ));
}

async fn key_epochs_and_their_lifecycle(db: &Db) {
    let store = db.store().await;
    db.set_time(500);
    store.insert_key(&new_key(1, "alpha")).await.unwrap();
    // Not ready yet: no rotation can be recorded.
    let lifecycle = Lifecycle {
        session: SessionId([5; 16]),
        phase: LifecyclePhase::Activate,
        certificate: Vec::new(),
        activated: Vec::new(),
        approved: None,
        due: vec![PartyId(1), PartyId(2)],
        holders: vec![PartyId(1), PartyId(2), PartyId(3)],
    };
    let four = [PartyId(1), PartyId(2), PartyId(3), PartyId(4)];
    assert!(!store
        .set_key_rotated(kid(1), 0, &four, 3, &lifecycle)
        .await
        .unwrap());
    store.set_key_ready(kid(1), &[2; 33], None).await.unwrap();
    let fresh = store.get_key(kid(1)).await.unwrap().unwrap();
    assert_eq!((fresh.epoch, fresh.lifecycle.as_ref()), (0, None));
    // From epoch 0 only, and only once (the compare-and-set of concurrent replicas).
    assert!(!store
        .set_key_rotated(kid(1), 1, &four, 3, &lifecycle)
        .await
        .unwrap());
    db.set_time(700);
    assert!(store
        .set_key_rotated(kid(1), 0, &four, 3, &lifecycle)
        .await
        .unwrap());
    assert!(!store
        .set_key_rotated(kid(1), 0, &four, 3, &lifecycle)
        .await
        .unwrap());
    let rotated = store.get_key(kid(1)).await.unwrap().unwrap();
    assert_eq!(
        (rotated.epoch, &rotated.committee[..], rotated.threshold),
        (1, &four[..], 3)
    );
    assert_eq!(rotated.rotated_at, Some(700));
    assert_eq!(rotated.lifecycle.as_ref(), Some(&lifecycle));
    let due = store.keys_due_for_rotation_work(0).await.unwrap();
    assert_eq!(due.iter().map(|k| k.id).collect::<Vec<_>>(), [kid(1)]);
    // While a step is due, no other rotation is recorded on top of it.
    assert!(!store
        .set_key_rotated(kid(1), 1, &four, 3, &lifecycle)
        .await
        .unwrap());
    // The next step replaces it, only for its own session; then nothing is due.
    let closing = Lifecycle {
        phase: LifecyclePhase::Close,
        due: vec![PartyId(3)],
        ..lifecycle.clone()
    };
    assert!(!store
        .update_lifecycle(kid(1), SessionId([6; 16]), Some(&closing))
        .await
        .unwrap());
    assert!(store
        .update_lifecycle(kid(1), lifecycle.session, Some(&closing))
        .await
        .unwrap());
    assert_eq!(
        store.get_key(kid(1)).await.unwrap().unwrap().lifecycle,
        Some(closing)
    );
    assert!(store
        .update_lifecycle(kid(1), lifecycle.session, None)
        .await
        .unwrap());
    assert_eq!(
        store.get_key(kid(1)).await.unwrap().unwrap().lifecycle,
        None
    );
    assert!(store
        .keys_due_for_rotation_work(0)
        .await
        .unwrap()
        .is_empty());
    assert!(store
        .set_key_rotated(kid(1), 1, &four[..3], 2, &lifecycle)
        .await
        .unwrap());
    assert_eq!(store.get_key(kid(1)).await.unwrap().unwrap().epoch, 2);
}

async fn insert_request_is_idempotent_and_detects_conflicts(db: &Db) {
    let store = store_with_key(db).await;
    let request = new_request(1, kid(1), 1_000);
    assert_eq!(
        store.insert_request(&request).await.unwrap(),
        InsertOutcome::Inserted
    );

    // The same request again: the stored row, unchanged, with its current state.
    assert!(store
        .transition_request(
            request.id,
            &[RequestState::PendingApproval],
            RequestState::Approved,
            None,
            None
        )
        .await
        .unwrap());
    let InsertOutcome::Existing(row) = store.insert_request(&request).await.unwrap() else {
        panic!("retry not recognised");
    };
    assert_eq!(row.id, request.id);
    assert_eq!(row.key_id, request.key_id);
    assert_eq!(row.kind, request.kind);
    assert_eq!(row.body, request.body);
    assert_eq!(row.request_digest, request.request_digest);
    assert_eq!(row.submitted_by, request.submitted_by);
    assert_eq!((row.created_at, row.expires_at), (1_000, 4_600));
    assert_eq!(row.state, RequestState::Approved);
    assert_eq!((row.result, row.error, row.attempts), (None, None, 0));

    // The same id for anything else is a conflict.
    let mut other_body = request.clone();
    other_body.body.push(1);
    let mut other_digest = request.clone();
    other_digest.request_digest[0] ^= 1;
    for conflicting in [other_body, other_digest] {
        let err = store.insert_request(&conflicting).await.unwrap_err();
        assert!(
            matches!(err, StoreError::Conflict(ref m) if m.contains("already used for a different request")),
            "{err}"
        );
    }
    assert_eq!(
        store.get_request(request.id).await.unwrap().unwrap().body,
        request.body
    );

    // A request for a key that does not exist (foreign keys are enforced).
    let err = store
        .insert_request(&new_request(2, kid(9), 1_000))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::NotFound(ref m) if m.contains("create the key")),
        "{err}"
    );
    assert_eq!(store.get_request(rid(2)).await.unwrap(), None);
}

async fn transitions_compare_and_set(db: &Db) {
    let store = store_with_key(db).await;
    let id = rid(1);
    db.set_time(1_000);
    store
        .insert_request(&new_request(1, kid(1), 1_000))
        .await
        .unwrap();

    db.set_time(1_010);
    use RequestState::*;
    assert!(store
        .transition_request(id, &[PendingApproval], Approved, None, None)
        .await
        .unwrap());
    // The second mover from the old state loses.
    assert!(!store
        .transition_request(id, &[PendingApproval], Rejected, None, None)
        .await
        .unwrap());
    assert!(!store
        .transition_request(id, &[], Signing, None, None)
        .await
        .unwrap());
    let row = store.get_request(id).await.unwrap().unwrap();
    assert_eq!((row.state, row.updated_at), (Approved, 1_010));

    db.set_time(1_020);
    assert!(store
        .transition_request(id, &[Approved, Signing], Signing, None, None)
        .await
        .unwrap());
    assert_eq!(store.increment_attempts(id).await.unwrap(), 1);
    // A failed attempt goes back for a retry with its error kept.
    assert!(store
        .transition_request(id, &[Signing], Approved, None, Some("p2 timed out"))
        .await
        .unwrap());
    assert!(store
        .transition_request(id, &[Approved], Signing, None, None)
        .await
        .unwrap());
    assert_eq!(store.increment_attempts(id).await.unwrap(), 2);
    let row = store.get_request(id).await.unwrap().unwrap();
    assert_eq!(row.error.as_deref(), Some("p2 timed out"));

    db.set_time(1_030);
    let signed = vec![0x02, 0xf8, 0x6b];
    assert!(store
        .transition_request(id, &[Signing], Signed, Some(&signed), None)
        .await
        .unwrap());
    let row = store.get_request(id).await.unwrap().unwrap();
    assert_eq!(row.state, Signed);
    assert_eq!(row.result.as_deref(), Some(&signed[..]));
    assert_eq!(row.attempts, 2);
    assert_eq!(row.updated_at, 1_030);
    // Final: nothing moves it from a state it is not in.
    assert!(!store
        .transition_request(
            id,
            &[PendingApproval, Approved, Signing],
            Cancelled,
            None,
            None
        )
        .await
        .unwrap());

    assert!(matches!(
        store
            .transition_request(rid(9), &[PendingApproval], Approved, None, None)
            .await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store.increment_attempts(rid(9)).await,
        Err(StoreError::NotFound(_))
    ));
}

async fn concurrent_writers_agree(db: &Db) {
    let store = store_with_key(db).await;
    let request = new_request(1, kid(1), 1_000);
    let inserts = (0..8).map(|_| {
        let store = store.clone();
        let request = request.clone();
        tokio::spawn(async move { store.insert_request(&request).await })
    });
    let mut inserted = 0;
    for insert in inserts {
        match insert.await.unwrap().unwrap() {
            InsertOutcome::Inserted => inserted += 1,
            InsertOutcome::Existing(row) => assert_eq!(row.body, request.body),
        }
    }
    assert_eq!(inserted, 1);

    let moves = (0..8).map(|_| {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .transition_request(
                    rid(1),
                    &[RequestState::PendingApproval],
                    RequestState::Approved,
                    None,
                    None,
                )
                .await
        })
    });
    let mut won = 0;
    for m in moves {
        won += usize::from(m.await.unwrap().unwrap());
    }
    assert_eq!(won, 1);
}

async fn list_requests_filters_orders_and_pages(db: &Db) {
    let store = store_with_key(db).await;
    store.insert_key(&new_key(2, "ops")).await.unwrap();
    // (request, key, created_at); 3 and 4 share a creation time.
    for (n, key, at) in [
        (1, 1, 100),
        (2, 2, 200),
        (3, 1, 300),
        (4, 2, 300),
        (5, 1, 500),
    ] {
        store
            .insert_request(&new_request(n, kid(key), at))
            .await
            .unwrap();
    }
    store
        .transition_request(
            rid(3),
            &[RequestState::PendingApproval],
            RequestState::Approved,
            None,
            None,
        )
        .await
        .unwrap();
    store
        .transition_request(
            rid(4),
            &[RequestState::PendingApproval],
            RequestState::Approved,
            None,
            None,
        )
        .await
        .unwrap();

    let ids = |rows: Vec<tessera_coordinator::store::RequestRow>| {
        rows.into_iter().map(|r| r.id).collect::<Vec<_>>()
    };
    let all = ids(store
        .list_requests(&RequestFilter::default())
        .await
        .unwrap());
    // Newest first; equal times by id, descending.
    assert_eq!(all, [rid(5), rid(4), rid(3), rid(2), rid(1)]);

    let approved = RequestFilter {
        state: Some(RequestState::Approved),
        ..RequestFilter::default()
    };
    assert_eq!(
        ids(store.list_requests(&approved).await.unwrap()),
        [rid(4), rid(3)]
    );
    let key1 = RequestFilter {
        key_id: Some(kid(1)),
        ..RequestFilter::default()
    };
    assert_eq!(
        ids(store.list_requests(&key1).await.unwrap()),
        [rid(5), rid(3), rid(1)]
    );
    let both = RequestFilter {
        state: Some(RequestState::Approved),
        key_id: Some(kid(2)),
        ..RequestFilter::default()
    };
    assert_eq!(ids(store.list_requests(&both).await.unwrap()), [rid(4)]);
    let none = RequestFilter {
        state: Some(RequestState::Signed),
        ..RequestFilter::default()
    };
    assert!(store.list_requests(&none).await.unwrap().is_empty());

    // Pages of two, following the last id of each page, cover everything once.
    let mut paged = Vec::new();
    let mut after = None;
    loop {
        let page = ids(store
            .list_requests(&RequestFilter {
                limit: 2,
                after,
                ..RequestFilter::default()
            })
            .await
            .unwrap());
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 2);
        after = page.last().copied();
        paged.extend(page);
    }
    assert_eq!(paged, all);
    // Paging within a filter.
    let page = ids(store
        .list_requests(&RequestFilter {
            after: Some(rid(5)),
            ..key1.clone()
        })
        .await
        .unwrap());
    assert_eq!(page, [rid(3), rid(1)]);
    assert!(matches!(
        store
            .list_requests(&RequestFilter {
                after: Some(rid(9)),
                ..RequestFilter::default()
            })
            .await,
        Err(StoreError::NotFound(_))
    ));
    let zero = RequestFilter {
        limit: 0,
        ..RequestFilter::default()
    };
    assert!(store.list_requests(&zero).await.unwrap().is_empty());
}

async fn expire_due_moves_only_open_requests_past_expiry(db: &Db) {
    let store = store_with_key(db).await;
    // Request n expires at 1000 + 100 n.
    for n in 1..=6 {
        let mut request = new_request(n, kid(1), 0);
        request.expires_at = 1_000 + 100 * i64::from(n);
        store.insert_request(&request).await.unwrap();
    }
    use RequestState::*;
    store
        .transition_request(rid(2), &[PendingApproval], Approved, None, None)
        .await
        .unwrap();
    store
        .transition_request(rid(3), &[PendingApproval], Signing, None, None)
        .await
        .unwrap();
    store
        .transition_request(rid(4), &[PendingApproval], Cancelled, None, None)
        .await
        .unwrap();

    db.set_time(7_777);
    // At 1400: 1 (pending), 2 (approved), 4's expiry has come (1400) but it is cancelled;
    // 3 is signing: a running session is not cut off. 5 and 6 are not due yet.
    assert_eq!(store.expire_due(1_400).await.unwrap(), [rid(1), rid(2)]);
    assert_eq!(store.expire_due(1_400).await.unwrap(), []);
    let states: Vec<_> = states_of_six(&store).await;
    assert_eq!(
        states,
        [
            Expired,
            Expired,
            Signing,
            Cancelled,
            PendingApproval,
            PendingApproval
        ]
    );
    assert_eq!(
        store.get_request(rid(1)).await.unwrap().unwrap().updated_at,
        1_400
    );
    // Expiry is inclusive: due exactly at its expiry time.
    assert_eq!(store.expire_due(1_500).await.unwrap(), [rid(5)]);
}

async fn states_of_six(store: &Store) -> Vec<RequestState> {
    let mut states = Vec::new();
    for n in 1..=6 {
        states.push(store.get_request(rid(n)).await.unwrap().unwrap().state);
    }
    states
}

async fn approvals_are_decided_once(db: &Db) {
    let store = db.store().await;
    let subject = ApprovalSubject::Request(rid(1));
    let approval = |approver: &str, decision, at| Approval {
        subject,
        approver: approver.to_owned(),
        decision,
        signature: vec![0x5a; 64],
        created_at: at,
    };
    let alice = approval("alice", Decision::Approve, 10);
    assert_eq!(
        store.add_approval(&alice).await.unwrap(),
        AddApproval::Added
    );
    // Alice cannot change her mind, nor count twice.
    assert_eq!(
        store
            .add_approval(&approval("alice", Decision::Reject, 11))
            .await
            .unwrap(),
        AddApproval::Duplicate(alice.clone())
    );
    assert_eq!(
        store.add_approval(&alice).await.unwrap(),
        AddApproval::Duplicate(alice.clone())
    );
    let bob = approval("bob", Decision::Reject, 12);
    assert_eq!(store.add_approval(&bob).await.unwrap(), AddApproval::Added);
    // The same approver on another subject is another decision.
    let policy = ApprovalSubject::Policy(ProposalId([7; 16]));
    let on_policy = Approval {
        subject: policy,
        ..alice.clone()
    };
    assert_eq!(
        store.add_approval(&on_policy).await.unwrap(),
        AddApproval::Added
    );

    assert_eq!(store.approvals_for(subject).await.unwrap(), [alice, bob]);
    assert_eq!(store.approvals_for(policy).await.unwrap(), [on_policy]);
    assert!(store
        .approvals_for(ApprovalSubject::Request(rid(2)))
        .await
        .unwrap()
        .is_empty());
}

async fn nonce_replays_are_detected_and_pruned(db: &Db) {
    let store = db.store().await;
    assert!(store.remember_nonce("alice", "n1", 100).await.unwrap());
    assert!(
        !store.remember_nonce("alice", "n1", 100).await.unwrap(),
        "replay accepted"
    );
    assert!(
        !store.remember_nonce("alice", "n1", 999).await.unwrap(),
        "replay accepted"
    );
    // Nonces are per principal.
    assert!(store.remember_nonce("bob", "n1", 100).await.unwrap());
    assert!(store.remember_nonce("alice", "n2", 200).await.unwrap());

    // At 100 the nonces expiring at 100 are still kept; at 101 they go.
    assert_eq!(store.prune_nonces(100).await.unwrap(), 0);
    assert_eq!(store.prune_nonces(101).await.unwrap(), 2);
    assert!(
        !store.remember_nonce("alice", "n2", 200).await.unwrap(),
        "unexpired nonce pruned"
    );
    assert!(store.remember_nonce("alice", "n1", 300).await.unwrap());
    assert_eq!(store.prune_nonces(101).await.unwrap(), 0);
}

async fn spend_windows_and_large_amounts(db: &Db) {
    let store = store_with_key(db).await;
    store.insert_key(&new_key(2, "ops")).await.unwrap();
    let u256_max = "115792089237316195423570985008687907853269984665640564039457584007913129639935";
    let above_u64 = "18446744073709551616";
    // (request, key, asset, amount, signed_at)
    let spends = [
        (1, 1, "eth", "5", 100),
        (2, 1, "eth", above_u64, 200),
        (3, 1, "usdc", "7", 200),
        (4, 2, "eth", "9", 250),
        (5, 1, "eth", u256_max, 300),
    ];
    for (n, key, asset, amount, at) in spends {
        store
            .insert_request(&new_request(n, kid(key), 0))
            .await
            .unwrap();
        let spend = Spend {
            request_id: rid(n),
            key_id: kid(key),
            asset: asset.to_owned(),
            amount: amount.to_owned(),
            signed_at: at,
        };
        assert_eq!(
            store.record_spend(&spend).await.unwrap(),
            InsertOutcome::Inserted
        );
        assert_eq!(
            store.record_spend(&spend).await.unwrap(),
            InsertOutcome::Existing(spend.clone())
        );
    }
    assert_eq!(
        store.spends_since(kid(1), "eth", 0, None).await.unwrap(),
        ["5", above_u64, u256_max]
    );
    // The window's start is inclusive.
    assert_eq!(
        store.spends_since(kid(1), "eth", 200, None).await.unwrap(),
        [above_u64, u256_max]
    );
    assert_eq!(
        store.spends_since(kid(1), "eth", 301, None).await.unwrap(),
        Vec::<String>::new()
    );
    assert_eq!(
        store.spends_since(kid(1), "usdc", 0, None).await.unwrap(),
        ["7"]
    );
    assert_eq!(
        store.spends_since(kid(2), "eth", 0, None).await.unwrap(),
        ["9"]
    );

    let mut twice = Spend {
        request_id: rid(1),
        key_id: kid(1),
        asset: "eth".to_owned(),
        amount: "6".to_owned(),
        signed_at: 100,
    };
    assert!(matches!(
        store.record_spend(&twice).await,
        Err(StoreError::Conflict(_))
    ));
    twice.amount = "1.5".to_owned();
    assert!(matches!(
        store.record_spend(&twice).await,
        Err(StoreError::Invalid { .. })
    ));
    // One request spends in several assets (a token transfer pays its fee in ETH): one record
    // each, each counted in its own asset's window.
    let fee = Spend {
        request_id: rid(3),
        key_id: kid(1),
        asset: "eth".to_owned(),
        amount: "2".to_owned(),
        signed_at: 200,
    };
    assert_eq!(
        store.record_spend(&fee).await.unwrap(),
        InsertOutcome::Inserted
    );
    assert_eq!(
        store.spends_since(kid(1), "eth", 200, None).await.unwrap(),
        [above_u64, "2", u256_max]
    );
    assert_eq!(
        store.spends_since(kid(1), "usdc", 0, None).await.unwrap(),
        ["7"]
    );
    twice.request_id = rid(9);
    twice.amount = "1".to_owned();
    assert!(matches!(
        store.record_spend(&twice).await,
        Err(StoreError::NotFound(_))
    ));
}

async fn policy_activation_picks_highest_revision(db: &Db) {
    let store = db.store().await;
    assert_eq!(store.active_policy().await.unwrap(), None);
    let policy = |revision: i64, hash: u8| PolicyRow {
        hash: vec![hash; 32],
        revision,
        document: format!("{{\"revision\": {revision}}}"),
        activated_at: 1_000 + revision,
    };
    assert_eq!(
        store.activate_policy(&policy(1, 0xa1)).await.unwrap(),
        InsertOutcome::Inserted
    );
    assert_eq!(
        store.activate_policy(&policy(3, 0xa3)).await.unwrap(),
        InsertOutcome::Inserted
    );
    assert_eq!(store.active_policy().await.unwrap(), Some(policy(3, 0xa3)));
    // Idempotent retry.
    assert_eq!(
        store.activate_policy(&policy(3, 0xa3)).await.unwrap(),
        InsertOutcome::Existing(policy(3, 0xa3))
    );
    // An older or equal revision cannot take over.
    for stale in [policy(2, 0xa2), policy(3, 0xb3)] {
        let err = store.activate_policy(&stale).await.unwrap_err();
        assert!(
            matches!(err, StoreError::Conflict(ref m) if m.contains("not newer")),
            "{err}"
        );
    }
    // A document is activated once.
    assert!(matches!(
        store.activate_policy(&policy(4, 0xa1)).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        store.activate_policy(&policy(10, 0xaa)).await.unwrap(),
        InsertOutcome::Inserted
    );
    assert_eq!(store.active_policy().await.unwrap().unwrap().revision, 10);
    // Superseded policies stay readable by hash (requests pin them).
    assert_eq!(
        store.policy_by_hash(&[0xa1; 32]).await.unwrap(),
        Some(policy(1, 0xa1))
    );
    assert_eq!(store.policy_by_hash(&[0xa2; 32]).await.unwrap(), None);
}

async fn policy_changes_activate_once_against_the_policy_in_force(db: &Db) {
    let store = db.store().await;
    let policy = |revision: i64, hash: u8| PolicyRow {
        hash: vec![hash; 32],
        revision,
        document: format!("{{\"revision\": {revision}}}"),
        activated_at: 1_000 + revision,
    };
    store.activate_policy(&policy(1, 0xa1)).await.unwrap();
    // Two changes proposed against revision 1, with different revisions, activated at once
    // (as two replicas would): exactly one wins, whatever the order.
    let racers = [policy(2, 0xb2), policy(3, 0xb3)].map(|row| {
        let store = store.clone();
        tokio::spawn(async move { store.activate_policy_change(&row, &[0xa1; 32]).await })
    });
    let mut won = 0;
    for racer in racers {
        match racer.await.unwrap() {
            Ok(InsertOutcome::Inserted) => won += 1,
            Err(StoreError::Conflict(m)) => assert!(m.contains("propose it again"), "{m}"),
            other => panic!("unexpected: {other:?}"),
        }
    }
    assert_eq!(won, 1);
    let active = store.active_policy().await.unwrap().unwrap();
    assert!(active.revision == 2 || active.revision == 3, "{active:?}");
    // Later, a change still proposed against revision 1 is refused with what to do.
    let err = store
        .activate_policy_change(&policy(9, 0xb9), &[0xa1; 32])
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict(ref m) if m.contains("proposed against policy a1a1")
            && m.contains("propose it again against the policy in force")),
        "{err}"
    );
    // A change against the policy in force is activated, once; a retry finds it.
    assert_eq!(
        store
            .activate_policy_change(&policy(5, 0xc5), &active.hash)
            .await
            .unwrap(),
        InsertOutcome::Inserted
    );
    assert_eq!(
        store
            .activate_policy_change(&policy(5, 0xc5), &active.hash)
            .await
            .unwrap(),
        InsertOutcome::Existing(policy(5, 0xc5))
    );
    assert_eq!(store.active_policy().await.unwrap(), Some(policy(5, 0xc5)));
}

async fn policy_proposals_lifecycle(db: &Db) {
    let store = db.store().await;
    let proposal = |n: u8, created_at: i64| NewProposal {
        id: ProposalId([n; 16]),
        previous_hash: (n > 1).then(|| vec![n - 1; 32]),
        document: format!("policy {n}"),
        proposed_by: "admin".to_owned(),
        created_at,
        expires_at: created_at + 100,
        body: vec![n, 0xee],
    };
    db.set_time(5);
    for (n, at) in [(1, 10), (2, 20), (3, 30)] {
        assert_eq!(
            store.insert_proposal(&proposal(n, at)).await.unwrap(),
            InsertOutcome::Inserted
        );
    }
    let InsertOutcome::Existing(row) = store.insert_proposal(&proposal(2, 20)).await.unwrap()
    else {
        panic!("retry not recognised");
    };
    assert_eq!(row.state, ProposalState::Pending);
    assert_eq!(row.previous_hash, Some(vec![1; 32]));
    assert_eq!(row.body, vec![2, 0xee]);
    let mut changed = proposal(2, 20);
    changed.document.push('!');
    assert!(matches!(
        store.insert_proposal(&changed).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        store
            .get_proposal(ProposalId([1; 16]))
            .await
            .unwrap()
            .unwrap()
            .previous_hash,
        None
    );

    db.set_time(50);
    let id2 = ProposalId([2; 16]);
    use ProposalState::*;
    assert!(store
        .transition_proposal(id2, &[Pending], Applied)
        .await
        .unwrap());
    assert!(!store
        .transition_proposal(id2, &[Pending], Rejected)
        .await
        .unwrap());
    assert_eq!(
        store.get_proposal(id2).await.unwrap().unwrap().updated_at,
        50
    );
    assert!(matches!(
        store
            .transition_proposal(ProposalId([9; 16]), &[Pending], Applied)
            .await,
        Err(StoreError::NotFound(_))
    ));

    let listed: Vec<_> = store
        .list_proposals(None, None, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.id.0[0])
        .collect();
    assert_eq!(listed, [3, 2, 1]);
    let pending: Vec<_> = store
        .list_proposals(Some(Pending), None, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.id.0[0])
        .collect();
    assert_eq!(pending, [3, 1]);
    assert_eq!(store.list_proposals(None, None, 1).await.unwrap().len(), 1);
    // Pages continue after the last row of the one before, with or without a filter.
    let after = |id: u8| Some(ProposalId([id; 16]));
    let page = |rows: Vec<tessera_coordinator::store::ProposalRow>| -> Vec<u8> {
        rows.into_iter().map(|p| p.id.0[0]).collect()
    };
    assert_eq!(
        page(store.list_proposals(None, after(3), 1).await.unwrap()),
        [2]
    );
    assert_eq!(
        page(store.list_proposals(None, after(2), 10).await.unwrap()),
        [1]
    );
    assert_eq!(
        page(
            store
                .list_proposals(Some(Pending), after(3), 10)
                .await
                .unwrap()
        ),
        [1]
    );
    assert!(store
        .list_proposals(None, after(1), 10)
        .await
        .unwrap()
        .is_empty());
    assert!(matches!(
        store.list_proposals(None, after(9), 10).await,
        Err(StoreError::NotFound(_))
    ));

    // 1 expires at 110, 3 at 130; 2 is applied.
    assert_eq!(
        store.expire_due_proposals(120).await.unwrap(),
        [ProposalId([1; 16])]
    );
    assert_eq!(
        store.expire_due_proposals(500).await.unwrap(),
        [ProposalId([3; 16])]
    );
    assert_eq!(
        store.get_proposal(id2).await.unwrap().unwrap().state,
        Applied
    );
}

async fn sessions_lifecycle(db: &Db) {
    let store = store_with_key(db).await;
    let request = SessionSubject::Request(rid(1));
    let session = |n: u8, subject, at| NewSession {
        session_id: SessionId([n; 16]),
        subject,
        operation: "sign".to_owned(),
        parties: vec![PartyId(1), PartyId(2)],
        started_at: at,
    };
    store
        .insert_session(&session(2, request, 20))
        .await
        .unwrap();
    store
        .insert_session(&session(1, request, 10))
        .await
        .unwrap();
    let keygen = NewSession {
        operation: "keygen".to_owned(),
        parties: vec![PartyId(1), PartyId(2), PartyId(3)],
        ..session(3, SessionSubject::Key(kid(1)), 5)
    };
    store.insert_session(&keygen).await.unwrap();
    assert!(matches!(
        store.insert_session(&session(1, request, 10)).await,
        Err(StoreError::Conflict(_))
    ));

    db.set_time(15);
    let failure = SessionOutcome::Failed("p2 timed out in round 3".to_owned());
    assert!(store
        .finish_session(SessionId([1; 16]), &failure, &[PartyId(2)])
        .await
        .unwrap());
    // The first outcome stays.
    db.set_time(16);
    assert!(!store
        .finish_session(SessionId([1; 16]), &SessionOutcome::Ok, &[])
        .await
        .unwrap());
    db.set_time(25);
    assert!(store
        .finish_session(SessionId([2; 16]), &SessionOutcome::Ok, &[])
        .await
        .unwrap());
    assert!(matches!(
        store
            .finish_session(SessionId([9; 16]), &SessionOutcome::Ok, &[])
            .await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store
            .finish_session(
                SessionId([3; 16]),
                &SessionOutcome::Failed("ok".into()),
                &[]
            )
            .await,
        Err(StoreError::Invalid { .. })
    ));

    let rows = store.sessions_for(request).await.unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].session_id, SessionId([1; 16]));
    assert_eq!(rows[0].finished_at, Some(15));
    assert_eq!(rows[0].outcome, Some(failure));
    assert_eq!(rows[0].blamed, [PartyId(2)]);
    assert_eq!(rows[0].parties, [PartyId(1), PartyId(2)]);
    assert_eq!(rows[1].outcome, Some(SessionOutcome::Ok));
    assert_eq!(rows[1].blamed, []);
    let key_sessions = store
        .sessions_for(SessionSubject::Key(kid(1)))
        .await
        .unwrap();
    assert_eq!(key_sessions.len(), 1);
    assert_eq!(key_sessions[0].operation, "keygen");
    assert_eq!(
        (key_sessions[0].finished_at, key_sessions[0].outcome.clone()),
        (None, None)
    );
}

async fn unreadable_rows_are_errors_not_panics(db: &Db) {
    let store = store_with_key(db).await;
    store
        .insert_request(&new_request(1, kid(1), 0))
        .await
        .unwrap();
    store
        .insert_request(&new_request(2, kid(1), 0))
        .await
        .unwrap();
    // Someone edits rows by hand.
    db.raw(&format!(
        "UPDATE requests SET body = 'not hex' WHERE id = '{}'",
        rid(1)
    ))
    .await;
    db.raw(&format!(
        "UPDATE keys SET committee = '1,x' WHERE id = '{}'",
        kid(1)
    ))
    .await;
    let err = store.get_request(rid(1)).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Database(ref m) if m.contains("requests.body")),
        "{err}"
    );
    assert!(matches!(
        store.list_requests(&RequestFilter::default()).await,
        Err(StoreError::Database(_))
    ));
    assert!(store.get_request(rid(2)).await.unwrap().is_some());
    let err = store.get_key(kid(1)).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Database(ref m) if m.contains("keys.committee")),
        "{err}"
    );
}

#[tokio::test]
async fn in_memory_sqlite_keeps_state_for_the_life_of_the_store() {
    let store = Store::connect("sqlite::memory:").await.unwrap();
    assert_eq!(store.backend(), Backend::Sqlite);
    store.insert_key(&new_key(1, "k")).await.unwrap();
    store
        .insert_request(&new_request(1, kid(1), 0))
        .await
        .unwrap();
    // Many operations on the one connection see the same database.
    for _ in 0..20 {
        assert!(store.get_request(rid(1)).await.unwrap().is_some());
    }
    // A second in-memory store is another database.
    let other = Store::connect("sqlite::memory:").await.unwrap();
    assert!(other.list_keys().await.unwrap().is_empty());
}

#[tokio::test]
async fn bad_urls_say_what_is_expected() {
    for url in ["mysql://root@localhost/tessera", "tessera.db", ""] {
        let err = Store::connect(url).await.unwrap_err();
        assert!(matches!(err, StoreError::Connect { .. }), "{url}: {err:?}");
        let message = err.to_string();
        assert!(message.contains("sqlite://<path>"), "{message}");
        assert!(message.contains("postgres://"), "{message}");
    }
    let err = Store::connect("sqlite://").await.unwrap_err();
    assert!(err.to_string().contains("names no file"), "{err}");

    // A missing directory.
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/missing/dir/c.db", dir.path().display());
    let message = Store::connect(&url).await.unwrap_err().to_string();
    assert!(
        message.contains("check that the directory exists"),
        "{message}"
    );

    // A server that is not there: the password is not shown.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgres://tessera:hunter2@127.0.0.1:{port}/tessera");
    let err = Store::connect(&url).await.unwrap_err();
    assert!(matches!(err, StoreError::Connect { .. }), "{err:?}");
    let message = err.to_string();
    assert!(!message.contains("hunter2"), "{message}");
    assert!(message.contains("tessera:***@127.0.0.1"), "{message}");
    assert!(
        message.contains("check that the server is running"),
        "{message}"
    );
}

#[tokio::test]
async fn fresh_postgres_databases_are_separate() {
    let server = PostgresServer::start()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let first = Store::connect(server.url()).await.unwrap();
    assert_eq!(first.backend(), Backend::Postgres);
    first.insert_key(&new_key(1, "k")).await.unwrap();
    let url = server.fresh_database().await.unwrap();
    assert_ne!(url, server.url());
    let second = Store::connect(&url).await.unwrap();
    assert!(second.list_keys().await.unwrap().is_empty());
    second.insert_key(&new_key(1, "k")).await.unwrap();
    assert_eq!(first.list_keys().await.unwrap().len(), 1);
    // The server's Debug output never shows a password.
    assert!(format!("{server:?}").contains("PostgresServer"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn coordinators_opening_a_new_sqlite_file_together_all_succeed() {
    // SQLite has no migration lock: the losers of the race to create the tables must recover.
    for _ in 0..10 {
        let db = Db::sqlite();
        let opens: Vec<_> = (0..6)
            .map(|_| {
                let url = db.url.clone();
                tokio::spawn(async move { Store::connect(&url).await })
            })
            .collect();
        for open in opens {
            let store = open.await.unwrap().unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(store.schema_version().await.unwrap(), SCHEMA_VERSION);
        }
    }
}

async fn committees_lifecycle(db: &Db) {
    let store = db.store().await;
    let parties = [PartyId(1), PartyId(2), PartyId(3)];
    assert_eq!(store.get_committee(&parties).await.unwrap(), None);
    assert_eq!(
        store
            .insert_committee(&parties, CommitteeStatus::Creating, 100)
            .await
            .unwrap(),
        InsertOutcome::Inserted
    );
    // Idempotent: the stored committee comes back whatever status is asked.
    let InsertOutcome::Existing(existing) = store
        .insert_committee(&parties, CommitteeStatus::Ready, 200)
        .await
        .unwrap()
    else {
        panic!("a second insert must return the stored committee");
    };
    assert_eq!(existing.status, CommitteeStatus::Creating);
    assert_eq!(existing.created_at, 100);
    // Another order is another committee.
    let reversed = [PartyId(3), PartyId(2), PartyId(1)];
    assert_eq!(store.get_committee(&reversed).await.unwrap(), None);

    db.set_time(300);
    assert!(store
        .transition_committee(
            &parties,
            &[CommitteeStatus::Creating],
            CommitteeStatus::Failed,
            Some("p3 timed out")
        )
        .await
        .unwrap());
    assert!(!store
        .transition_committee(
            &parties,
            &[CommitteeStatus::Creating],
            CommitteeStatus::Ready,
            None
        )
        .await
        .unwrap());
    let failed = store.get_committee(&parties).await.unwrap().unwrap();
    assert_eq!(failed.status, CommitteeStatus::Failed);
    assert_eq!(failed.error.as_deref(), Some("p3 timed out"));
    assert_eq!((failed.created_at, failed.updated_at), (100, 300));
    // Moving on clears the error.
    assert!(store
        .transition_committee(
            &parties,
            &[CommitteeStatus::Failed],
            CommitteeStatus::Ready,
            None
        )
        .await
        .unwrap());
    assert_eq!(
        store.get_committee(&parties).await.unwrap().unwrap().error,
        None
    );
    assert!(matches!(
        store
            .transition_committee(
                &reversed,
                &[CommitteeStatus::Ready],
                CommitteeStatus::Failed,
                None
            )
            .await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store.insert_committee(&[], CommitteeStatus::Ready, 1).await,
        Err(StoreError::Invalid { .. })
    ));

    // Set-ups that cannot still be running fail; others are left alone.
    let pair = [PartyId(1), PartyId(2)];
    store
        .insert_committee(&pair, CommitteeStatus::Creating, 1_000)
        .await
        .unwrap();
    db.set_time(2_000);
    assert_eq!(
        store.fail_stale_committees(500, "abandoned").await.unwrap(),
        0
    );
    assert_eq!(
        store
            .fail_stale_committees(1_001, "abandoned")
            .await
            .unwrap(),
        1
    );
    let listed = store.list_committees().await.unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0].parties, parties);
    assert_eq!(listed[1].status, CommitteeStatus::Failed);
    assert_eq!(listed[1].error.as_deref(), Some("abandoned"));
}

async fn request_reasons_queue_and_liveness(db: &Db) {
    let store = store_with_key(db).await;
    let mut with_reasons = new_request(1, kid(1), 1_000);
    with_reasons.reasons = vec!["needs 2 approvals".into(), "quote \" and ' survive".into()];
    store.insert_request(&with_reasons).await.unwrap();
    let row = store.get_request(rid(1)).await.unwrap().unwrap();
    assert_eq!(row.reasons, with_reasons.reasons);
    // Reasons are not part of a request's identity: a retry with other reasons is the same.
    let mut retry = with_reasons.clone();
    retry.reasons.clear();
    assert!(matches!(
        store.insert_request(&retry).await.unwrap(),
        InsertOutcome::Existing(_)
    ));

    db.set_time(1_100);
    let pending = [RequestState::PendingApproval];
    assert!(store
        .set_request_reasons(rid(1), &pending, &["has 1".into()])
        .await
        .unwrap());
    assert_eq!(
        store.get_request(rid(1)).await.unwrap().unwrap().reasons,
        ["has 1"]
    );
    assert!(!store
        .set_request_reasons(rid(1), &[RequestState::Approved], &[])
        .await
        .unwrap());
    assert!(store
        .set_request_reasons(rid(1), &pending, &[])
        .await
        .unwrap());
    assert!(store
        .get_request(rid(1))
        .await
        .unwrap()
        .unwrap()
        .reasons
        .is_empty());
    assert!(matches!(
        store.set_request_reasons(rid(9), &pending, &[]).await,
        Err(StoreError::NotFound(_))
    ));

    // Concluding moves the state and replaces the reasons in one statement; a plain transition
    // keeps them.
    assert!(store
        .set_request_reasons(rid(1), &pending, &["has 1".into()])
        .await
        .unwrap());
    assert!(store
        .transition_request(rid(1), &pending, RequestState::PendingApproval, None, None)
        .await
        .unwrap());
    assert_eq!(
        store.get_request(rid(1)).await.unwrap().unwrap().reasons,
        ["has 1"]
    );
    assert!(!store
        .conclude_request(
            rid(1),
            &[RequestState::Approved],
            RequestState::Signing,
            None,
            &[]
        )
        .await
        .unwrap());
    assert!(store
        .conclude_request(rid(1), &pending, RequestState::Approved, None, &[])
        .await
        .unwrap());
    let row = store.get_request(rid(1)).await.unwrap().unwrap();
    assert_eq!(row.state, RequestState::Approved);
    assert!(row.reasons.is_empty(), "{:?}", row.reasons);
    assert!(store
        .conclude_request(
            rid(1),
            &[RequestState::Approved],
            RequestState::Rejected,
            Some("no"),
            &["no".into()],
        )
        .await
        .unwrap());
    let row = store.get_request(rid(1)).await.unwrap().unwrap();
    assert_eq!(
        (row.state, row.error.as_deref(), row.reasons),
        (RequestState::Rejected, Some("no"), vec!["no".to_owned()])
    );
    assert!(matches!(
        store
            .conclude_request(rid(9), &pending, RequestState::Approved, None, &[])
            .await,
        Err(StoreError::NotFound(_))
    ));
    // The rest of this test wants request 1 pending again.
    assert!(store
        .transition_request(
            rid(1),
            &[RequestState::Rejected],
            RequestState::PendingApproval,
            None,
            None
        )
        .await
        .unwrap());

    // The queue: by state, least recently changed first, only those changed by the cutoff.
    store
        .insert_request(&new_request(2, kid(1), 900))
        .await
        .unwrap();
    store
        .insert_request(&new_request(3, kid(1), 950))
        .await
        .unwrap();
    let queue = |cutoff| {
        let store = store.clone();
        async move {
            store
                .requests_in_state(RequestState::PendingApproval, cutoff, 10)
                .await
                .unwrap()
                .into_iter()
                .map(|r| r.id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(queue(i64::MAX).await, [rid(2), rid(3), rid(1)]);
    assert_eq!(queue(950).await, [rid(2), rid(3)]);
    assert_eq!(
        store
            .requests_in_state(RequestState::PendingApproval, i64::MAX, 1)
            .await
            .unwrap()
            .len(),
        1
    );

    // Liveness: a heartbeat refreshes a request only in its state; a stale one is claimed once.
    db.set_time(2_000);
    assert!(!store
        .touch_request(rid(2), RequestState::Signing)
        .await
        .unwrap());
    assert!(store
        .transition_request(rid(2), &pending, RequestState::Signing, None, None)
        .await
        .unwrap());
    db.set_time(2_010);
    assert!(store
        .touch_request(rid(2), RequestState::Signing)
        .await
        .unwrap());
    assert!(
        !store
            .claim_stale(rid(2), RequestState::Signing, 2_005)
            .await
            .unwrap(),
        "touched at 2010: not stale at 2005"
    );
    db.set_time(2_100);
    assert!(store
        .claim_stale(rid(2), RequestState::Signing, 2_050)
        .await
        .unwrap());
    assert!(
        !store
            .claim_stale(rid(2), RequestState::Signing, 2_050)
            .await
            .unwrap(),
        "a claim refreshes the request: a second claimer loses"
    );
    assert_eq!(
        store.get_request(rid(2)).await.unwrap().unwrap().updated_at,
        2_100
    );
    assert!(!store
        .claim_stale(rid(3), RequestState::Signing, i64::MAX)
        .await
        .unwrap());
}

/// Two coordinators (each its own store and connection pool) on one database: a key's rotation
/// lease is held by one rotation at a time, lapses if its holder stops renewing it, and is
/// given back by its holder only.
async fn rotation_leases_hold_across_coordinators(db: &Db) {
    let first = store_with_key(db).await;
    let second = db.store().await;
    db.set_time(2_000);
    // Both try at once: exactly one gets it.
    let (a, b) = tokio::join!(
        first.lease_rotation(kid(1), "rotation-a", 90),
        second.lease_rotation(kid(1), "rotation-b", 90)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert!(a ^ b, "one lease, got {a} and {b}");
    let (holder, other, held_by, waiting) = if a {
        (&first, &second, "rotation-a", "rotation-b")
    } else {
        (&second, &first, "rotation-b", "rotation-a")
    };
    // Not again, not by the holder's own replica either, while it is renewed.
    assert!(!holder.lease_rotation(kid(1), waiting, 90).await.unwrap());
    db.set_time(2_080);
    assert!(holder
        .renew_rotation_lease(kid(1), held_by, 90)
        .await
        .unwrap());
    db.set_time(2_160);
    assert!(!other.lease_rotation(kid(1), waiting, 90).await.unwrap());
    // Only its holder gives it back.
    other.release_rotation_lease(kid(1), waiting).await.unwrap();
    assert!(!other.lease_rotation(kid(1), waiting, 90).await.unwrap());
    holder
        .release_rotation_lease(kid(1), held_by)
        .await
        .unwrap();
    assert!(other.lease_rotation(kid(1), waiting, 90).await.unwrap());
    // A holder that stops renewing (a coordinator that died) loses it once it lapses.
    db.set_time(2_160 + 91);
    assert!(holder
        .lease_rotation(kid(1), "rotation-c", 90)
        .await
        .unwrap());
    assert!(!other
        .renew_rotation_lease(kid(1), waiting, 90)
        .await
        .unwrap());
    // Unknown key.
    assert!(matches!(
        holder.lease_rotation(kid(9), "rotation-d", 90).await,
        Err(StoreError::NotFound(_))
    ));
}

async fn stale_key_generations_fail(db: &Db) {
    let store = db.store().await;
    store.insert_key(&new_key(1, "old")).await.unwrap();
    let mut young = new_key(2, "young");
    young.created_at = 900;
    store.insert_key(&young).await.unwrap();
    store.insert_key(&new_key(3, "done")).await.unwrap();
    store.set_key_ready(kid(3), &[2u8; 33], None).await.unwrap();
    db.set_time(1_000);
    assert_eq!(
        store.fail_stale_keys(500, "abandoned").await.unwrap(),
        [kid(1)]
    );
    let old = store.get_key(kid(1)).await.unwrap().unwrap();
    assert_eq!(old.status, KeyStatus::Failed);
    assert_eq!(old.error.as_deref(), Some("abandoned"));
    assert_eq!(
        store.get_key(kid(2)).await.unwrap().unwrap().status,
        KeyStatus::Creating
    );
    let done = store.get_key(kid(3)).await.unwrap().unwrap();
    assert_eq!(done.status, KeyStatus::Ready);
    assert_eq!(done.chain_code, None);
    assert!(store
        .fail_stale_keys(500, "again")
        .await
        .unwrap()
        .is_empty());
}

/// The link that puts request `n` of key `key` after the chain's head, read inside
/// `admission` (its hash is made up: the store keeps hashes, it does not compute them).
async fn next_link(admission: &mut Admission, n: u8, key: u8) -> LinkRow {
    let (seq, prev) = admission.chain_head().await.unwrap();
    LinkRow {
        key_id: kid(key),
        seq: seq + 1,
        request_id: rid(n),
        prev,
        hash: [n; 32],
        signed_at: 500,
        signature: None,
    }
}

/// Asserts that `key`'s spend chain is places 1 to `count`, each naming the one before.
async fn assert_one_chain(store: &Store, key: u8, count: u64) {
    let links = store
        .spend_links_after(kid(key), 0, u64::MAX >> 1, 100)
        .await
        .unwrap();
    let seqs: Vec<u64> = links.iter().map(|l| l.link.seq).collect();
    assert_eq!(seqs, (1..=count).collect::<Vec<_>>());
    let mut prev = [0; 32];
    for l in &links {
        assert_eq!(
            l.link.prev, prev,
            "place {} names the one before",
            l.link.seq
        );
        prev = l.link.hash;
    }
}

async fn spend_chain_links_signatures_and_heads(db: &Db) {
    let store = store_with_key(db).await;
    for n in 1..=3 {
        store
            .insert_request(&NewRequest {
                state: RequestState::Approved,
                ..new_request(n, kid(1), 400)
            })
            .await
            .unwrap();
    }
    for n in 1..=2 {
        let mut admission = store
            .begin_admission(rid(n), kid(1), &Default::default())
            .await
            .unwrap();
        let link = next_link(&mut admission, n, 1).await;
        assert!(admission.admit(&[], 500, &link).await.unwrap());
    }
    assert_one_chain(&store, 1, 2).await;
    // Both are signing: nothing has settled. Once the first is signed, it has.
    assert_eq!(store.spend_chain_settled(kid(1)).await.unwrap(), 0);
    store
        .transition_request(
            rid(1),
            &[RequestState::Signing],
            RequestState::Signed,
            Some(&[1]),
            None,
        )
        .await
        .unwrap();
    assert_eq!(store.spend_chain_settled(kid(1)).await.unwrap(), 1);
    assert_eq!(
        store.spend_chain_settled(kid(2)).await.unwrap(),
        0,
        "no chain"
    );
    let link = store.spend_link(rid(2)).await.unwrap().unwrap();
    assert_eq!((link.seq, link.prev, link.signature), (2, [1; 32], None));
    assert_eq!(store.spend_link(rid(3)).await.unwrap(), None);
    // The signature, once the nodes made it.
    store.set_link_signature(rid(2), &[7; 64]).await.unwrap();
    let linked = store.spend_links_after(kid(1), 1, 2, 10).await.unwrap();
    assert_eq!(linked.len(), 1);
    assert_eq!(linked[0].link.signature.as_deref(), Some(&[7u8; 64][..]));
    assert_eq!(linked[0].body, new_request(2, kid(1), 400).body);
    // A request already signing without a link (admitted before spend chains) gets the next
    // place; one that has a link keeps it.
    store
        .transition_request(
            rid(3),
            &[RequestState::Approved],
            RequestState::Signing,
            None,
            None,
        )
        .await
        .unwrap();
    let mut admission = store
        .begin_admission(rid(3), kid(1), &Default::default())
        .await
        .unwrap();
    let link = next_link(&mut admission, 3, 1).await;
    assert!(admission.link_only(&link).await.unwrap());
    let mut admission = store
        .begin_admission(rid(3), kid(1), &Default::default())
        .await
        .unwrap();
    let link = next_link(&mut admission, 3, 1).await;
    assert!(!admission.link_only(&link).await.unwrap());
    assert_one_chain(&store, 1, 3).await;
    // Where each holder stands: recorded, and moved.
    assert!(store.spend_heads(kid(1)).await.unwrap().is_empty());
    store.set_spend_head(kid(1), PartyId(1), 2).await.unwrap();
    store.set_spend_head(kid(1), PartyId(2), 1).await.unwrap();
    store.set_spend_head(kid(1), PartyId(1), 3).await.unwrap();
    assert_eq!(
        store.spend_heads(kid(1)).await.unwrap(),
        [(PartyId(1), 3), (PartyId(2), 1)].into()
    );
}

/// Admits as many of `requests` as fit in `limit` (per asset "eth"), each reading the window
/// inside its admission; returns the requests it admitted.
async fn admit_within(store: &Store, requests: &[u8], amount: u64, limit: u64) -> Vec<u8> {
    let mut admitted = Vec::new();
    for &n in requests {
        let mut admission = store
            .begin_admission(rid(n), kid(1), &Default::default())
            .await
            .unwrap();
        let spent: u64 = admission
            .spends_since(kid(1), "eth", 0)
            .await
            .unwrap()
            .iter()
            .map(|a| a.parse::<u64>().unwrap())
            .sum();
        if spent + amount > limit {
            continue; // dropped: rolled back
        }
        // Give the other coordinator every chance to interleave.
        tokio::task::yield_now().await;
        let link = next_link(&mut admission, n, 1).await;
        if admission
            .admit(&[("eth".to_owned(), amount.to_string())], 500, &link)
            .await
            .unwrap()
        {
            admitted.push(n);
        }
    }
    admitted
}

async fn admissions_reserve_spend_one_at_a_time_across_coordinators(db: &Db) {
    let first = store_with_key(db).await;
    let second = db.store().await;
    let approved = |n: u8| NewRequest {
        state: RequestState::Approved,
        ..new_request(n, kid(1), 400)
    };
    for n in 1..=12 {
        first.insert_request(&approved(n)).await.unwrap();
    }
    // Two coordinators admit the same twelve requests of 10 against a window of 45, at once
    // and in opposite orders: four fit, whoever admits them, and each request is admitted once.
    let forward: Vec<u8> = (1..=12).collect();
    let backward: Vec<u8> = (1..=12).rev().collect();
    let (a, b) = tokio::join!(
        admit_within(&first, &forward, 10, 45),
        admit_within(&second, &backward, 10, 45)
    );
    let mut all: Vec<u8> = a.iter().chain(&b).copied().collect();
    all.sort();
    all.dedup();
    assert_eq!(a.len() + b.len(), 4, "admitted {a:?} and {b:?}");
    assert_eq!(all.len(), 4, "a request admitted twice: {a:?} and {b:?}");
    let reserved = first.spends_since(kid(1), "eth", 0, None).await.unwrap();
    assert_eq!(reserved, ["10", "10", "10", "10"]);
    for n in &all {
        let row = first.get_request(rid(*n)).await.unwrap().unwrap();
        assert_eq!(row.state, RequestState::Signing);
    }
    // A request no longer approved is not admitted, and nothing is reserved for it.
    let signing = all[0];
    let mut again = second
        .begin_admission(rid(signing), kid(1), &Default::default())
        .await
        .unwrap();
    assert_eq!(
        again.spends_since(kid(1), "eth", 0).await.unwrap(),
        ["10", "10", "10"],
        "an admission does not count the request's own reservation"
    );
    let link = next_link(&mut again, signing, 1).await;
    assert!(!again
        .admit(&[("eth".to_owned(), "10".to_owned())], 500, &link)
        .await
        .unwrap());
    // The four admitted requests are places 1 to 4 of the key's one spend chain, whichever
    // coordinator admitted them.
    assert_one_chain(&first, 1, 4).await;
    assert_eq!(first.spend_of(rid(signing)).await.unwrap().len(), 1);
    // A request whose signing fails gives its reservation back, in the same step: the row
    // stays, released, and the room is there for the next admission.
    db.set_time(600);
    assert!(first.fail_signing(rid(signing), "no quorum").await.unwrap());
    assert!(!first.fail_signing(rid(signing), "again").await.unwrap());
    let row = first.get_request(rid(signing)).await.unwrap().unwrap();
    assert_eq!(row.state, RequestState::Failed);
    assert_eq!(row.error.as_deref(), Some("no quorum"));
    let spend = first.spend_of(rid(signing)).await.unwrap();
    assert_eq!(spend.len(), 1);
    assert_eq!(spend[0].0.amount, "10");
    assert_eq!(spend[0].1, Some(600));
    assert_eq!(
        first.spends_since(kid(1), "eth", 0, None).await.unwrap(),
        ["10", "10", "10"]
    );
    let left: Vec<u8> = (1..=12).filter(|n| !all.contains(n)).collect();
    assert_eq!(admit_within(&second, &left, 10, 45).await.len(), 1);
    // The admissions that found no room were dropped and changed nothing.
    let still_approved = first
        .requests_in_state(RequestState::Approved, i64::MAX, 100)
        .await
        .unwrap();
    assert_eq!(still_approved.len(), 12 - 5);
    // An unknown key is refused.
    assert!(matches!(
        first
            .begin_admission(rid(1), kid(9), &Default::default())
            .await,
        Err(StoreError::NotFound(_))
    ));
}

/// Admits requests of keys 1 and 2, whose window of 25 is shared, counting both keys' spend
/// inside each admission; returns the requests admitted.
async fn admit_shared(store: &Store, requests: &[(u8, u8)]) -> Vec<u8> {
    let shared: std::collections::BTreeSet<KeyId> = [kid(1), kid(2)].into();
    let mut admitted = Vec::new();
    for &(n, key) in requests {
        let mut admission = store
            .begin_admission(rid(n), kid(key), &shared)
            .await
            .unwrap();
        let mut spent = 0u64;
        for counted in [kid(1), kid(2)] {
            for amount in admission.spends_since(counted, "eth", 0).await.unwrap() {
                spent += amount.parse::<u64>().unwrap();
            }
        }
        if spent + 10 > 25 {
            continue;
        }
        tokio::task::yield_now().await;
        let link = next_link(&mut admission, n, key).await;
        if admission
            .admit(&[("eth".to_owned(), "10".to_owned())], 500, &link)
            .await
            .unwrap()
        {
            admitted.push(n);
        }
    }
    admitted
}

async fn shared_windows_admit_across_keys_one_at_a_time(db: &Db) {
    let first = store_with_key(db).await;
    first.insert_key(&new_key(2, "ops")).await.unwrap();
    let second = db.store().await;
    // Requests 1-6 on key 1, 7-12 on key 2, all approved; a window of 25 shared by both keys
    // fits two requests of 10, whichever keys they are for.
    for n in 1..=12u8 {
        let key = if n <= 6 { 1 } else { 2 };
        first
            .insert_request(&NewRequest {
                state: RequestState::Approved,
                ..new_request(n, kid(key), 400)
            })
            .await
            .unwrap();
    }
    let on_key_1: Vec<(u8, u8)> = (1..=6).map(|n| (n, 1)).collect();
    let on_key_2: Vec<(u8, u8)> = (7..=12).map(|n| (n, 2)).collect();
    let (a, b) = tokio::join!(
        admit_shared(&first, &on_key_1),
        admit_shared(&second, &on_key_2)
    );
    assert_eq!(a.len() + b.len(), 2, "admitted {a:?} and {b:?}");
    // A key outside the database in the shared set is no error: it has no spend here.
    let mut outside: std::collections::BTreeSet<KeyId> = [kid(2)].into();
    outside.insert(kid(7));
    assert!(first
        .begin_admission(rid(1), kid(1), &outside)
        .await
        .is_ok());
}

async fn requests_are_counted_by_state(db: &Db) {
    let store = store_with_key(db).await;
    let counts = store.count_requests_by_state().await.unwrap();
    assert_eq!(counts.len(), RequestState::ALL.len());
    assert!(counts.values().all(|n| *n == 0));
    for (n, state) in [
        (1, RequestState::PendingApproval),
        (2, RequestState::PendingApproval),
        (3, RequestState::Approved),
        (4, RequestState::Signed),
    ] {
        store
            .insert_request(&NewRequest {
                state,
                ..new_request(n, kid(1), 100)
            })
            .await
            .unwrap();
    }
    let counts = store.count_requests_by_state().await.unwrap();
    assert_eq!(counts["pending_approval"], 2);
    assert_eq!(counts["approved"], 1);
    assert_eq!(counts["signed"], 1);
    assert_eq!(counts["failed"], 0);
}

fn attempt_session(n: u8, request: u8) -> NewSession {
    NewSession {
        session_id: SessionId([n; 16]),
        subject: SessionSubject::Request(rid(request)),
        operation: "online_sign".into(),
        parties: vec![PartyId(1), PartyId(2)],
        started_at: 600,
    }
}

async fn an_attempt_and_a_signature_are_each_one_transaction(db: &Db) {
    let store = store_with_key(db).await;
    for n in 1..=2 {
        store
            .insert_request(&NewRequest {
                state: RequestState::Approved,
                ..new_request(n, kid(1), 400)
            })
            .await
            .unwrap();
        let mut admission = store
            .begin_admission(rid(n), kid(1), &Default::default())
            .await
            .unwrap();
        let link = next_link(&mut admission, n, 1).await;
        assert!(admission.admit(&[], 500, &link).await.unwrap());
    }

    // An attempt is counted with its session; a reused session id changes neither.
    assert_eq!(
        store
            .begin_attempt(rid(1), &attempt_session(1, 1))
            .await
            .unwrap(),
        1
    );
    assert!(matches!(
        store.begin_attempt(rid(1), &attempt_session(1, 1)).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        store.get_request(rid(1)).await.unwrap().unwrap().attempts,
        1
    );
    assert!(matches!(
        store.begin_attempt(rid(9), &attempt_session(9, 9)).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(store
        .sessions_for(SessionSubject::Request(rid(9)))
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        store
            .begin_attempt(rid(1), &attempt_session(2, 1))
            .await
            .unwrap(),
        2
    );

    // A signature: the session ends, the link keeps the signature, the signers' heads move
    // and the request is signed with its result, together.
    let heads = [(PartyId(1), 1), (PartyId(2), 1)];
    let signed = SignedRequest {
        request: rid(1),
        session: SessionId([2; 16]),
        blamed: &[PartyId(3)],
        signature: &[7; 64],
        key: kid(1),
        heads: &heads,
        result: Some(b"signed transaction"),
    };
    assert!(store.record_signed(&signed).await.unwrap());
    let row = store.get_request(rid(1)).await.unwrap().unwrap();
    assert_eq!(row.state, RequestState::Signed);
    assert_eq!(row.result.as_deref(), Some(&b"signed transaction"[..]));
    let link = store.spend_link(rid(1)).await.unwrap().unwrap();
    assert_eq!(link.signature.as_deref(), Some(&[7u8; 64][..]));
    assert_eq!(
        store.spend_heads(kid(1)).await.unwrap(),
        [(PartyId(1), 1), (PartyId(2), 1)].into()
    );
    let sessions = store
        .sessions_for(SessionSubject::Request(rid(1)))
        .await
        .unwrap();
    let ended = sessions
        .iter()
        .find(|s| s.session_id == SessionId([2; 16]))
        .unwrap();
    assert_eq!(ended.outcome, Some(SessionOutcome::Ok));
    assert_eq!(ended.blamed, [PartyId(3)]);
    // Recorded twice: the request is no longer signing, nothing moves.
    assert!(!store.record_signed(&signed).await.unwrap());

    // Without a result (it could not be assembled) the request stays signing, the rest is
    // kept.
    store
        .begin_attempt(rid(2), &attempt_session(3, 2))
        .await
        .unwrap();
    let unassembled = SignedRequest {
        request: rid(2),
        session: SessionId([3; 16]),
        blamed: &[],
        signature: &[8; 64],
        key: kid(1),
        heads: &[(PartyId(1), 2)],
        result: None,
    };
    assert!(!store.record_signed(&unassembled).await.unwrap());
    let row = store.get_request(rid(2)).await.unwrap().unwrap();
    assert_eq!((row.state, row.result), (RequestState::Signing, None));
    let link = store.spend_link(rid(2)).await.unwrap().unwrap();
    assert_eq!(link.signature.as_deref(), Some(&[8u8; 64][..]));
    assert_eq!(store.spend_heads(kid(1)).await.unwrap()[&PartyId(1)], 2);
}
