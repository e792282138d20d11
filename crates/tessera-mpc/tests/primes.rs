//! The prime pool: durable, each set handed out once, bad records refused.

use std::sync::Arc;

use tessera_mpc::fixtures::insecure_test_primes;
use tessera_mpc::{PrimeError, PrimePool};
use tessera_store::{FileStore, KdfParams, RecordName, SecretStore};

#[test]
fn prime_sets_survive_a_restart_and_are_handed_out_once() {
    let dir = tempfile::tempdir().unwrap();
    let pass = b"prime pool test";
    let store = FileStore::create(dir.path(), pass, KdfParams::MINIMUM).unwrap();
    let pool = PrimePool::new(Arc::new(store));
    assert!(pool.is_empty().unwrap());
    assert!(pool.take().unwrap().is_none());
    let fixtures = insecure_test_primes();
    for set in &fixtures[..2] {
        pool.put(set).unwrap();
    }
    assert_eq!(pool.len().unwrap(), 2);
    drop(pool);

    // After a restart both are there; each comes out once, then the pool is empty for good.
    let pool = PrimePool::new(Arc::new(FileStore::open(dir.path(), pass).unwrap()));
    assert_eq!(pool.len().unwrap(), 2);
    let a = serde_json::to_string(&pool.take().unwrap().unwrap()).unwrap();
    let b = serde_json::to_string(&pool.take().unwrap().unwrap()).unwrap();
    assert_ne!(a, b);
    let originals: Vec<String> = fixtures[..2]
        .iter()
        .map(|p| serde_json::to_string(p).unwrap())
        .collect();
    assert!(originals.contains(&a) && originals.contains(&b));
    assert!(pool.take().unwrap().is_none());
    let pool = PrimePool::new(Arc::new(FileStore::open(dir.path(), pass).unwrap()));
    assert!(pool.is_empty().unwrap());
}

#[test]
fn a_record_that_is_not_a_usable_prime_set_is_refused_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(FileStore::create(dir.path(), b"p", KdfParams::MINIMUM).unwrap());
    let pool = PrimePool::new(store.clone());
    let name = RecordName::new("primes.00").unwrap();
    store.put(&name, b"{\"primes\": 7}").unwrap();
    assert!(matches!(pool.take(), Err(PrimeError::Format(..))));
    assert!(pool.is_empty().unwrap(), "the bad record is gone");
    // Small primes (valid JSON, too weak for the security level) are refused too.
    let small = |v: &str| serde_json::json!({ "radix": 16, "value": v });
    let weak = serde_json::json!({
        "primes": [small("11"), small("17"), small("2f"), small("3b")],
        "_phantom": null,
    });
    store.put(&name, weak.to_string().as_bytes()).unwrap();
    let err = pool.take().err().expect("weak primes refused");
    assert!(err.to_string().contains("too small"), "{err}");
}
