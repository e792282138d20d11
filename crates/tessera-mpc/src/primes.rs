//! The prime pool: safe primes for auxiliary info, generated ahead of time.
//!
//! Auxiliary info needs four large safe primes per party, and finding them takes minutes. A node
//! keeps a pool of prime sets, each in its own encrypted record, refilled by a background thread
//! ([`PrimePool::spawn_refill`]). Auxiliary info generation [`take`](PrimePool::take)s one set:
//! the record is durably deleted before the primes are returned, so a Paillier key is never
//! built twice from the same primes, even across a crash.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rand_core::{OsRng, RngCore};
use tessera_store::{RecordName, SecretStore, StoreError};

use crate::PrimeSet;

const PREFIX: &str = "primes.";

/// Why the prime pool failed.
#[derive(Debug, thiserror::Error)]
pub enum PrimeError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A record does not hold a usable prime set.
    #[error("prime record {0} is not a valid prime set: {1}")]
    Format(String, String),
}

/// The pool of pre-generated prime sets in a [`SecretStore`].
pub struct PrimePool<S: SecretStore> {
    store: Arc<S>,
    generating: Arc<AtomicUsize>,
}

impl<S: SecretStore> Clone for PrimePool<S> {
    fn clone(&self) -> Self {
        PrimePool {
            store: self.store.clone(),
            generating: self.generating.clone(),
        }
    }
}

impl<S: SecretStore + 'static> PrimePool<S> {
    /// The pool kept in `store`.
    pub fn new(store: Arc<S>) -> Self {
        PrimePool {
            store,
            generating: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Adds a prime set (generated here by the refill thread, or imported).
    pub fn put(&self, primes: &PrimeSet) -> Result<(), PrimeError> {
        let mut id = [0u8; 16];
        OsRng.fill_bytes(&mut id);
        let name = RecordName::new(format!("{PREFIX}{}", hex::encode(id)))?;
        let bytes = zeroize::Zeroizing::new(serde_json::to_vec(primes).expect("primes serialize"));
        self.store.put(&name, &bytes)?;
        Ok(())
    }

    fn names(&self) -> Result<Vec<RecordName>, PrimeError> {
        Ok(self
            .store
            .list()?
            .into_iter()
            .filter(|n| n.as_str().starts_with(PREFIX))
            .collect())
    }

    /// How many prime sets are ready.
    pub fn len(&self) -> Result<usize, PrimeError> {
        Ok(self.names()?.len())
    }

    /// Whether no prime set is ready.
    pub fn is_empty(&self) -> Result<bool, PrimeError> {
        Ok(self.len()? == 0)
    }

    /// Whether the refill thread is generating a set right now.
    pub fn generating(&self) -> bool {
        self.generating.load(Ordering::Relaxed) > 0
    }

    /// Takes one prime set out of the pool, durably deleting it first; `None` if the pool is
    /// empty. A record that does not hold valid primes is deleted and reported.
    pub fn take(&self) -> Result<Option<PrimeSet>, PrimeError> {
        let Some(name) = self.names()?.into_iter().next() else {
            return Ok(None);
        };
        let bytes = self.store.get(&name)?;
        self.store.delete(&name)?;
        let parsed: PrimeSet = serde_json::from_slice(&bytes)
            .map_err(|e| PrimeError::Format(name.to_string(), e.to_string()))?;
        // serde checks nothing: re-check the sizes the security level needs.
        let primes = PrimeSet::try_from(parsed.into_primes()).map_err(|_| {
            PrimeError::Format(
                name.to_string(),
                "primes too small for the security level".into(),
            )
        })?;
        Ok(Some(primes))
    }

    /// Starts a background thread that keeps `target` prime sets ready until `stop` is set.
    /// Each set takes minutes of one core; progress is logged.
    pub fn spawn_refill(&self, target: usize, stop: Arc<AtomicBool>) -> JoinHandle<()>
    where
        S: Send + Sync,
    {
        let pool = self.clone();
        std::thread::Builder::new()
            .name("prime-pool".into())
            .spawn(move || pool.refill(target, &stop))
            .expect("spawn the prime pool thread")
    }

    fn refill(&self, target: usize, stop: &AtomicBool) {
        while !stop.load(Ordering::Relaxed) {
            let ready = match self.len() {
                Ok(n) => n,
                Err(e) => {
                    tracing::error!(error = %e, "prime pool: cannot read the store");
                    std::thread::sleep(Duration::from_secs(5));
                    continue;
                }
            };
            if ready >= target {
                std::thread::sleep(Duration::from_millis(500));
                continue;
            }
            tracing::info!(
                ready,
                target,
                "prime pool: generating a prime set (takes minutes)"
            );
            let started = Instant::now();
            self.generating.fetch_add(1, Ordering::Relaxed);
            let primes = PrimeSet::generate(&mut OsRng);
            self.generating.fetch_sub(1, Ordering::Relaxed);
            match self.put(&primes) {
                Ok(()) => tracing::info!(
                    ready = ready + 1,
                    target,
                    seconds = started.elapsed().as_secs(),
                    "prime pool: prime set ready"
                ),
                Err(e) => {
                    tracing::error!(error = %e, "prime pool: cannot store a prime set");
                    std::thread::sleep(Duration::from_secs(5));
                }
            }
        }
    }
}
