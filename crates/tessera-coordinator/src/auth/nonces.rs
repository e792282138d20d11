//! Where the nonces of authenticated requests are remembered.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use crate::{Store, StoreError};

/// Remembers the nonces of authenticated requests so that none is accepted twice.
///
/// Expired nonces are never needed again; removing them is the caller's job (a periodic task
/// calling [`Store::prune_nonces`] or [`MemoryNonces::prune`] with the current time).
#[async_trait::async_trait]
pub trait NonceStore: Send + Sync {
    /// Remembers `nonce` for `principal` until `expires_at` (Unix seconds). Returns false if it
    /// was already remembered (the request is a replay), true if it is new.
    async fn remember(
        &self,
        principal: &str,
        nonce: &str,
        expires_at: u64,
    ) -> Result<bool, StoreError>;
}

/// The coordinator's database: nonces are shared by every replica using it.
#[async_trait::async_trait]
impl NonceStore for Store {
    async fn remember(
        &self,
        principal: &str,
        nonce: &str,
        expires_at: u64,
    ) -> Result<bool, StoreError> {
        let expires_at = i64::try_from(expires_at).unwrap_or(i64::MAX);
        self.remember_nonce(principal, nonce, expires_at).await
    }
}

/// Nonces in memory, for tests and the embedded mode (one coordinator in one process).
///
/// Only requests whose signature verified are remembered, so it grows with the legitimate
/// request rate over [`NONCE_TTL_SECS`](super::NONCE_TTL_SECS); call [`prune`](Self::prune)
/// periodically.
#[derive(Debug, Default)]
pub struct MemoryNonces {
    /// `(principal, nonce)` to the time it expires.
    seen: Mutex<HashMap<(String, String), u64>>,
}

impl MemoryNonces {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Forgets nonces that expired before `now` (a nonce is kept through its expiry second, as
    /// in [`Store::prune_nonces`]); returns how many.
    pub fn prune(&self, now: u64) -> usize {
        let mut seen = self.lock();
        let before = seen.len();
        seen.retain(|_, expires_at| *expires_at >= now);
        before - seen.len()
    }

    /// How many nonces are remembered.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no nonce is remembered.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<(String, String), u64>> {
        // The map is consistent after any panic (single inserts and retains).
        self.seen
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait::async_trait]
impl NonceStore for MemoryNonces {
    async fn remember(
        &self,
        principal: &str,
        nonce: &str,
        expires_at: u64,
    ) -> Result<bool, StoreError> {
        use std::collections::hash_map::Entry;
        match self.lock().entry((principal.to_owned(), nonce.to_owned())) {
            Entry::Occupied(_) => Ok(false),
            Entry::Vacant(slot) => {
                slot.insert(expires_at);
                Ok(true)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_nonces_refuse_a_second_use_until_pruned() {
        let nonces = MemoryNonces::new();
        assert!(nonces.remember("alice", "n1", 100).await.unwrap());
        assert!(!nonces.remember("alice", "n1", 100).await.unwrap());
        // Per principal.
        assert!(nonces.remember("bob", "n1", 100).await.unwrap());
        assert!(nonces.remember("alice", "n2", 200).await.unwrap());
        assert_eq!(nonces.len(), 3);
        // Kept through the expiry second.
        assert_eq!(nonces.prune(100), 0);
        assert_eq!(nonces.prune(101), 2);
        assert!(!nonces.remember("alice", "n2", 200).await.unwrap());
        assert!(nonces.remember("alice", "n1", 100).await.unwrap());
    }
}
