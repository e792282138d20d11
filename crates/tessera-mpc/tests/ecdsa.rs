//! Threshold ECDSA over secure sessions: in memory and over a real nats-server.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cggmp24::key_share::AnyKeyShare;
use cggmp24::{DataToSign, PartialSignature};
use sha2::Sha256;
use tessera_mpc::fixtures::insecure_committee_2of3;
use tessera_mpc::{
    child_public_key, derive_child_public_key, keygen, presign, sign, verify_signature, MpcConfig,
    MpcError, SessionSpec, SigningInput,
};
use tessera_transport::nats::server::LocalNatsServer;
use tessera_transport::nats::NatsTransport;
use tessera_transport::SecureTransport;
use tessera_wire::{PartyId, Protocol};

use crate::common::{keys, memory_nodes, node, spec};

const P1: PartyId = PartyId(1);
const P2: PartyId = PartyId(2);
const P3: PartyId = PartyId(3);

/// What the tests sign: SHA-256 of arbitrary bytes.
fn sha(message: &[u8]) -> SigningInput {
    SigningInput::Sha256(message.to_vec())
}

fn idx(p: PartyId) -> usize {
    p.0 as usize - 1
}

/// Signs `message` with `signers`, each running its own side of one session.
async fn sign_with(
    nodes: &[Arc<SecureTransport>],
    signers: &[PartyId],
    message: &[u8],
    config: &MpcConfig,
) -> Vec<Result<tessera_mpc::Signature, MpcError>> {
    let fixture = insecure_committee_2of3();
    let s = spec(Protocol::SIGN, signers);
    let runs = signers.iter().map(|p| {
        let share = fixture.shares[idx(*p)].clone();
        let (net, s, committee) = (nodes[idx(*p)].clone(), s.clone(), fixture.committee.clone());
        let config = config.clone();
        let message = message.to_vec();
        async move {
            let input = SigningInput::Sha256(message);
            sign(net, &s, &committee, &share, &[], &input, &config).await
        }
    });
    futures::future::join_all(runs).await
}

/// Generates a presignature with the session's parties, each running its own side.
async fn presign_with(
    nodes: &[Arc<SecureTransport>],
    s: &SessionSpec,
) -> Vec<(
    tessera_mpc::Presignature,
    tessera_mpc::PresignaturePublicData,
)> {
    let fixture = insecure_committee_2of3();
    let runs = s.parties.iter().map(|p| {
        let share = fixture.shares[idx(*p)].clone();
        let (net, s, committee) = (nodes[idx(*p)].clone(), s.clone(), fixture.committee.clone());
        async move { presign(net, &s, &committee, &share, &MpcConfig::default()).await }
    });
    futures::future::try_join_all(runs).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keygen_runs_over_secure_sessions() {
    let keys = keys(3);
    let nodes = memory_nodes(&keys, 3).await;
    let s = spec(Protocol::KEYGEN, &[P1, P2, P3]);
    let config = MpcConfig::default();
    let runs = nodes.iter().map(|n| keygen(n.clone(), &s, 2, &config));
    let shares = futures::future::try_join_all(runs).await.unwrap();
    let pk = shares[0].shared_public_key();
    for (i, share) in shares.iter().enumerate() {
        assert_eq!(share.shared_public_key(), pk);
        assert_eq!(usize::from(share.i), i);
        assert_eq!(share.min_signers(), 2);
    }
    // Every protocol message travelled sealed: nothing was refused, nothing left over.
    for n in &nodes {
        let refusals: Vec<String> = n
            .refusals()
            .iter()
            .map(|(r, c)| format!("{r}: {c}"))
            .collect();
        assert_eq!(n.refusals().frames(), 0, "{refusals:?}");
    }
    // A threshold outside 2..=n is refused before anything is sent.
    let err = keygen(
        nodes[0].clone(),
        &spec(Protocol::KEYGEN, &[P1, P2, P3]),
        4,
        &MpcConfig::default(),
    )
    .await
    .err()
    .expect("threshold 4 of 3 refused");
    assert!(matches!(err, MpcError::InvalidSession(_)), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_of_three_sign_and_k256_verifies() {
    let keys = keys(3);
    let nodes = memory_nodes(&keys, 3).await;
    let fixture = insecure_committee_2of3();
    let pk = fixture.shares[0].shared_public_key();
    let message = b"transfer 1.5 ETH to 0x00000000000000000000000000000000000000aa";
    let results = sign_with(&nodes, &[P1, P3], message, &MpcConfig::default()).await;
    for r in results {
        let sig = r.unwrap();
        assert!(verify_signature(&pk, &sha(message), &sig));
        assert!(!verify_signature(&pk, &sha(b"another message"), &sig));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presignature_then_online_signing() {
    let keys = keys(3);
    let nodes = memory_nodes(&keys, 3).await;
    let fixture = insecure_committee_2of3();
    let presigs = presign_with(&nodes, &spec(Protocol::PRESIGN, &[P2, P3])).await;
    assert_eq!(
        presigs[0].1, presigs[1].1,
        "every signer learns the same public data"
    );
    // Online phase: one local step per signer, then combine.
    let message = b"withdraw 0.1 BTC";
    let data = DataToSign::digest::<Sha256>(message);
    let public = presigs[0].1.clone();
    let t = Instant::now();
    let partials: Vec<PartialSignature<_>> = presigs
        .into_iter()
        .map(|(presig, _)| presig.issue_partial_signature(data))
        .collect();
    let sig = PartialSignature::combine(&partials, &public, data).expect("partials combine");
    let online = t.elapsed();
    assert!(verify_signature(
        &fixture.shares[0].shared_public_key(),
        &sha(message),
        &sig
    ));
    eprintln!("online signing from a presignature: {online:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_signing_names_a_bad_partial_and_refuses_another_signer_set() {
    use tessera_channel::FrameContext;
    use tessera_mpc::{online_sign, StoredPresignature};

    let keys = keys(3);
    let nodes = memory_nodes(&keys, 3).await;
    let fixture = insecure_committee_2of3();
    let public_key = *fixture.shares[0].shared_public_key();
    let made = presign_with(&nodes, &spec(Protocol::PRESIGN, &[P2, P3])).await;
    let stored = |i: usize| StoredPresignature {
        presignature: made[i].0.clone(),
        public: made[i].1.clone(),
        signers: vec![P2, P3],
    };
    let input = SigningInput::Sha256(b"pay invoice 7".to_vec());
    let config = MpcConfig {
        round_timeout: Duration::from_secs(5),
    };

    // A presignature of p2 and p3 offered to a session of p2 and p1: refused before anything
    // is sent (it would combine with nobody's partial).
    let other_signers = spec(Protocol::ONLINE_SIGN, &[P2, P1]);
    let err = online_sign(
        nodes[idx(P2)].clone(),
        &other_signers,
        stored(0),
        &public_key,
        &input,
        &config,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, MpcError::InvalidSession(ref m) if m.contains("was made by")),
        "{err}"
    );

    // p3 sends a partial signature over another message: p2 refuses to combine and names p3.
    let session = spec(Protocol::ONLINE_SIGN, &[P2, P3]);
    let honest = tokio::spawn({
        let (net, session, presignature, input, config) = (
            nodes[idx(P2)].clone(),
            session.clone(),
            stored(0),
            input.clone(),
            config.clone(),
        );
        async move { online_sign(net, &session, presignature, &public_key, &input, &config).await }
    });
    let forged = made[1]
        .0
        .clone()
        .issue_partial_signature(DataToSign::digest::<Sha256>(b"something else"));
    let context = FrameContext {
        session: session.session,
        round: 0,
        protocol: Protocol::ONLINE_SIGN,
    };
    nodes[idx(P3)]
        .broadcast(&[P2], context, &tessera_wire::encode(&forged))
        .await
        .unwrap();
    match honest.await.unwrap() {
        Err(MpcError::InvalidMessage { from, reason, .. }) => {
            assert_eq!(from, P3);
            assert!(
                reason.contains("does not match its presignature"),
                "{reason}"
            );
        }
        other => panic!("a bad partial was not blamed: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_over_a_real_permissioned_nats_server() {
    let keys = keys(3);
    let server = LocalNatsServer::start(&keys.roster).unwrap();
    let mut nodes = Vec::new();
    for p in [P1, P2, P3] {
        let config = server
            .client_config(&keys.roster, p, &keys.seeds[idx(p)])
            .unwrap();
        let transport = Arc::new(NatsTransport::connect(&config).await.unwrap());
        nodes.push(node(&keys, p, transport).await);
    }
    let fixture = insecure_committee_2of3();
    let message = b"rotate the hot wallet";
    for r in sign_with(&nodes, &[P2, P1], message, &MpcConfig::default()).await {
        assert!(verify_signature(
            &fixture.shares[0].shared_public_key(),
            &sha(message),
            &r.unwrap()
        ));
    }
    for n in &nodes {
        assert_eq!(n.refusals().frames(), 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_party_is_named_and_the_remaining_quorum_signs() {
    let keys = keys(3);
    let nodes = memory_nodes(&keys, 3).await;
    let fixture = insecure_committee_2of3();
    let config = MpcConfig {
        round_timeout: Duration::from_secs(3),
    };
    // p3 is asked to sign with p1 but never takes part.
    let results = sign_with(&nodes[..], &[P1], b"x", &config).await;
    assert!(
        matches!(results[0], Err(MpcError::InvalidSession(_))),
        "one signer is not enough"
    );
    let s = spec(Protocol::SIGN, &[P1, P3]);
    let started = Instant::now();
    let err = sign(
        nodes[0].clone(),
        &s,
        &fixture.committee,
        &fixture.shares[0],
        &[],
        &sha(b"transfer"),
        &config,
    )
    .await
    .unwrap_err();
    match &err {
        MpcError::Timeout { missing, round, .. } => {
            assert_eq!(missing, &vec![P3]);
            assert_eq!(*round, 0);
        }
        other => panic!("expected a timeout naming p3, got {other}"),
    }
    assert!(err.to_string().contains("no message from p3"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(30));
    // The other nodes are healthy: a new session with the remaining quorum succeeds.
    let message = b"transfer";
    for r in sign_with(&nodes, &[P1, P2], message, &MpcConfig::default()).await {
        assert!(verify_signature(
            &fixture.shares[0].shared_public_key(),
            &sha(message),
            &r.unwrap()
        ));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_presignature_is_used_at_most_once_even_across_restarts() {
    use tessera_mpc::{PresignatureError, PresignatureStore, StoredPresignature};
    use tessera_store::{FileStore, KdfParams};

    let keys = keys(3);
    let nodes = memory_nodes(&keys, 3).await;
    let fixture = insecure_committee_2of3();
    let key = tessera_wire::KeyId::random();
    let dir = tempfile::tempdir().unwrap();
    let store_dir = |p: PartyId| dir.path().join(p.to_string());
    let pass = b"node passphrase";
    for p in [P1, P2] {
        FileStore::create(&store_dir(p), pass, KdfParams::MINIMUM).unwrap();
    }
    let open = |p: PartyId| {
        let store = FileStore::open(&store_dir(p), pass).unwrap();
        PresignatureStore::new(Arc::new(store), key)
    };

    // Presign with p1 and p2; each node stores its presignature durably.
    let s = spec(Protocol::PRESIGN, &[P1, P2]);
    let made = presign_with(&nodes, &s).await;
    for (p, (presignature, public)) in [P1, P2].into_iter().zip(made) {
        let item = StoredPresignature {
            presignature,
            public,
            signers: vec![P1, P2],
        };
        open(p).put(s.session, &item, NOW, LIFETIME).unwrap();
    }

    // The nodes restart (stores reopened from disk) and sign once with it.
    let (pool1, pool2) = (open(P1), open(P2));
    assert_eq!(pool1.available().unwrap(), vec![s.session]);
    let message = b"pay invoice 42";
    let data = DataToSign::digest::<Sha256>(message);
    let taken: Vec<StoredPresignature> = [&pool1, &pool2]
        .iter()
        .map(|pool| pool.take(s.session, NOW + 1, LIFETIME).unwrap())
        .collect();
    let public = taken[0].public.clone();
    let partials: Vec<PartialSignature<_>> = taken
        .into_iter()
        .map(|t| t.presignature.issue_partial_signature(data))
        .collect();
    let sig = PartialSignature::combine(&partials, &public, data).unwrap();
    assert!(verify_signature(
        &fixture.shares[0].shared_public_key(),
        &sha(message),
        &sig
    ));

    // Never again: not now, and not after another restart; the refusal says it was used.
    assert!(matches!(
        pool1.take(s.session, NOW + 2, LIFETIME),
        Err(PresignatureError::Consumed { used_at, .. }) if used_at == NOW + 1
    ));
    drop((pool1, pool2));
    for p in [P1, P2] {
        let pool = open(p);
        assert!(pool.available().unwrap().is_empty());
        assert!(matches!(
            pool.take(s.session, NOW + 2, LIFETIME),
            Err(PresignatureError::Consumed { .. })
        ));
    }
}

const NOW: u64 = 1_800_000_000;
const LIFETIME: u64 = 3600;

/// p1's half of a real presigning session of p1 and p2.
async fn presignature_item() -> tessera_mpc::StoredPresignature {
    let keys = keys(3);
    let nodes = memory_nodes(&keys, 3).await;
    let (presignature, public) = presign_with(&nodes, &spec(Protocol::PRESIGN, &[P1, P2]))
        .await
        .remove(0);
    tessera_mpc::StoredPresignature {
        presignature,
        public,
        signers: vec![P1, P2],
    }
}

fn copy_item(item: &tessera_mpc::StoredPresignature) -> tessera_mpc::StoredPresignature {
    tessera_mpc::StoredPresignature {
        presignature: item.presignature.clone(),
        public: item.public.clone(),
        signers: item.signers.clone(),
    }
}

/// The presignatures of `key` in the store at `dir` (created if new).
fn open_pool(
    dir: &std::path::Path,
    key: tessera_wire::KeyId,
) -> tessera_mpc::PresignatureStore<tessera_store::FileStore> {
    use tessera_store::{FileStore, KdfParams};
    let store = if dir.join("store.header").exists() {
        FileStore::open(dir, b"node passphrase").unwrap()
    } else {
        FileStore::create(dir, b"node passphrase", KdfParams::MINIMUM).unwrap()
    };
    tessera_mpc::PresignatureStore::new(Arc::new(store), key)
}

/// Stores a copy of `item` in `pool` under a new session, made at `created_at`.
fn store_one(
    pool: &tessera_mpc::PresignatureStore<tessera_store::FileStore>,
    item: &tessera_mpc::StoredPresignature,
    created_at: u64,
) -> tessera_wire::SessionId {
    let session = tessera_wire::SessionId::random();
    pool.put(session, &copy_item(item), created_at, LIFETIME)
        .unwrap();
    session
}

/// Copies every file of `from` into `to` (a snapshot of the store, or its restore).
fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_presignature_record_put_back_is_refused_as_consumed_and_erased_again() {
    use tessera_mpc::PresignatureError;
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let key = tessera_wire::KeyId::random();
    let item = presignature_item().await;
    let pool = open_pool(&store, key);
    let session = store_one(&pool, &item, NOW);
    // Someone keeps a copy of the record files (or of the whole store, before the signing).
    let snapshot = dir.path().join("snapshot");
    copy_dir(&store, &snapshot);
    pool.take(session, NOW + 10, LIFETIME).unwrap();
    // The record file is put back (the consumed-id record stays): refused, and erased again.
    for entry in std::fs::read_dir(&snapshot).unwrap() {
        let entry = entry.unwrap();
        if !store.join(entry.file_name()).exists() {
            std::fs::copy(entry.path(), store.join(entry.file_name())).unwrap();
        }
    }
    assert_eq!(pool.available().unwrap(), vec![session]);
    match pool.take(session, NOW + 20, LIFETIME) {
        Err(e @ PresignatureError::Consumed { .. }) => {
            assert!(e.to_string().contains("restored snapshot"), "{e}")
        }
        other => panic!("a record put back was not refused: {:?}", other.err()),
    }
    assert!(pool.available().unwrap().is_empty(), "erased again");
    // A coordinator reusing the session id cannot store a presignature under it again.
    assert!(matches!(
        pool.put(session, &copy_item(&item), NOW + 30, LIFETIME),
        Err(PresignatureError::Consumed { .. })
    ));
    assert!(pool.available().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presignatures_expire_and_a_snapshot_older_than_the_lifetime_re_arms_nothing() {
    use tessera_mpc::{PresignatureError, Swept};
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let key = tessera_wire::KeyId::random();
    let item = presignature_item().await;
    let pool = open_pool(&store, key);

    // Past its lifetime it is refused and erased unused.
    let session = store_one(&pool, &item, NOW);
    match pool.take(session, NOW + LIFETIME, LIFETIME) {
        Err(PresignatureError::Expired { expires_at, .. }) => {
            assert_eq!(expires_at, NOW + LIFETIME)
        }
        other => panic!("an expired presignature was not refused: {:?}", other.err()),
    }
    assert!(pool.available().unwrap().is_empty());

    // A lifetime lowered since it was stored applies at once.
    let session = store_one(&pool, &item, NOW);
    assert!(matches!(
        pool.take(session, NOW + 100, 50),
        Err(PresignatureError::Expired { expires_at, .. }) if expires_at == NOW + 50
    ));

    // A snapshot taken while one was fresh, restored after its lifetime: nothing to use.
    let session = store_one(&pool, &item, NOW);
    let snapshot = dir.path().join("snapshot");
    copy_dir(&store, &snapshot);
    pool.take(session, NOW + 10, LIFETIME).unwrap();
    drop(pool);
    std::fs::remove_dir_all(&store).unwrap();
    copy_dir(&snapshot, &store);
    let pool = open_pool(&store, key);
    assert_eq!(
        pool.available().unwrap(),
        vec![session],
        "re-armed by the restore"
    );
    assert!(matches!(
        pool.take(session, NOW + LIFETIME + 1, LIFETIME),
        Err(PresignatureError::Expired { .. })
    ));

    // The sweep erases what expired and forgets consumed ids no copy could use any more.
    let fresh = store_one(&pool, &item, NOW + 5000);
    let used = store_one(&pool, &item, NOW + 5000);
    pool.take(used, NOW + 5001, LIFETIME).unwrap();
    let _stale = store_one(&pool, &item, NOW);
    assert_eq!(
        pool.sweep(NOW + LIFETIME + 10, LIFETIME).unwrap(),
        Swept {
            expired: 1,
            forgotten: 0
        }
    );
    assert_eq!(pool.available().unwrap(), vec![fresh]);
    assert!(matches!(
        pool.take(used, NOW + 5002, LIFETIME),
        Err(PresignatureError::Consumed { .. })
    ));
    assert_eq!(
        pool.sweep(NOW + 5000 + LIFETIME, LIFETIME).unwrap(),
        Swept {
            expired: 1,
            forgotten: 1
        }
    );
    assert!(pool.available().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hd_child_keys_sign_keccak_preimages_and_bad_paths_are_refused() {
    let keys = keys(3);
    let nodes = memory_nodes(&keys, 3).await;
    let fixture = insecure_committee_2of3();
    let master = *fixture.shares[0].shared_public_key();
    let path = [44u32, 7];
    let child = child_public_key(&fixture.shares[0], &path).unwrap();
    assert_ne!(child, master, "a child key differs from the master key");
    assert_eq!(child, child_public_key(&fixture.shares[1], &path).unwrap());
    // Anyone with the public key and chain code derives the same child, without a share.
    let chain_code = fixture.shares[0]
        .chain_code
        .expect("HD keys have a chain code");
    let derived = derive_child_public_key(&master.to_bytes(true), &chain_code, &path).unwrap();
    assert_eq!(derived, child.to_bytes(true).to_vec());
    assert!(derive_child_public_key(&master.to_bytes(true), &chain_code, &[1 << 31]).is_err());
    let input = SigningInput::Keccak256(b"an ethereum signing payload".to_vec());
    let s = spec(Protocol::SIGN, &[P1, P2]);
    let runs = [P1, P2].map(|p| {
        let share = fixture.shares[idx(p)].clone();
        let (net, s, committee) = (nodes[idx(p)].clone(), s.clone(), fixture.committee.clone());
        let input = input.clone();
        async move {
            sign(
                net,
                &s,
                &committee,
                &share,
                &path,
                &input,
                &MpcConfig::default(),
            )
            .await
        }
    });
    for r in futures::future::join_all(runs).await {
        let sig = r.unwrap();
        assert!(verify_signature(&child, &input, &sig));
        assert!(
            !verify_signature(&master, &input, &sig),
            "signed by the child, not the master"
        );
        assert!(!verify_signature(
            &child,
            &sha(b"an ethereum signing payload"),
            &sig
        ));
    }
    // A hardened index is refused before anything is sent.
    let err = sign(
        nodes[0].clone(),
        &spec(Protocol::SIGN, &[P1, P2]),
        &fixture.committee,
        &fixture.shares[0],
        &[1u32 << 31],
        &input,
        &MpcConfig::default(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, MpcError::InvalidPath(_)), "{err}");
}
