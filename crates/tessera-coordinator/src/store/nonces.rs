//! The `api_nonces` table: nonces of signed API requests, remembered until they expire so a
//! captured request cannot be replayed.

use super::{Store, StoreError};

impl Store {
    /// Remembers `nonce` for `principal` until `expires_at`. Returns false if it was already
    /// remembered: the request is a replay and must be refused.
    pub async fn remember_nonce(
        &self,
        principal: &str,
        nonce: &str,
        expires_at: i64,
    ) -> Result<bool, StoreError> {
        let inserted = sqlx::query(
            "INSERT INTO api_nonces (principal, nonce, expires_at) VALUES ($1, $2, $3) \
             ON CONFLICT DO NOTHING",
        )
        .bind(principal)
        .bind(nonce)
        .bind(expires_at)
        .execute(&self.pool)
        .await
        .map_err(|e| StoreError::db(format_args!("remembering a nonce of {principal}"), e))?
        .rows_affected();
        if inserted == 0 {
            tracing::warn!(%principal, "replayed API nonce");
        }
        Ok(inserted == 1)
    }

    /// Forgets nonces that expired before `now` (a nonce is kept through its expiry second);
    /// returns how many. Requests older than their nonce's lifetime must be refused by time.
    pub async fn prune_nonces(&self, now: i64) -> Result<u64, StoreError> {
        let pruned = sqlx::query("DELETE FROM api_nonces WHERE expires_at < $1")
            .bind(now)
            .execute(&self.pool)
            .await
            .map_err(|e| StoreError::db("pruning expired nonces", e))?
            .rows_affected();
        tracing::debug!(pruned, "expired nonces pruned");
        Ok(pruned)
    }
}
