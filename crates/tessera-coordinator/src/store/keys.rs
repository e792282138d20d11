//! The `keys` table: threshold keys and their generation status.

use sqlx::any::AnyRow;
use tessera_wire::{KeyId, PartyId, SessionId};

use super::row::Cols;
use super::types::{parties_from_text, parties_to_text};
use super::{InsertOutcome, KeyStatus, Store, StoreError};

/// A key to create; it starts in [`KeyStatus::Creating`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewKey {
    /// The key's id.
    pub id: KeyId,
    /// A unique human name.
    pub name: String,
    /// How many parties sign together.
    pub threshold: u16,
    /// The parties holding shares.
    pub committee: Vec<PartyId>,
    /// When key generation was requested (Unix seconds).
    pub created_at: i64,
}

/// A stored key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRow {
    /// The key's id.
    pub id: KeyId,
    /// Its unique human name.
    pub name: String,
    /// How many parties sign together.
    pub threshold: u16,
    /// The parties holding shares.
    pub committee: Vec<PartyId>,
    /// The public key once generated (its encoding is the caller's).
    pub public_key: Option<Vec<u8>>,
    /// The HD chain code key generation reported, if any.
    pub chain_code: Option<Vec<u8>>,
    /// Where the key is in its life.
    pub status: KeyStatus,
    /// Why key generation failed.
    pub error: Option<String>,
    /// When key generation was requested (Unix seconds).
    pub created_at: i64,
    /// When the row last changed (Unix seconds).
    pub updated_at: i64,
    /// Refresh the key automatically this often (seconds), if set.
    pub refresh_every_secs: Option<i64>,
    /// When the next scheduled refresh is due (Unix seconds), if scheduled.
    pub next_refresh_at: Option<i64>,
    /// When its shares last changed by a refresh or reshare (Unix seconds), if ever.
    pub rotated_at: Option<i64>,
    /// A recorded rotation whose activation has not reached every participant yet.
    pub pending_activation: Option<PendingActivation>,
}

/// A rotation recorded as the key's committee whose activation is still to be delivered to
/// some participants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingActivation {
    /// The reshare session.
    pub session: SessionId,
    /// The confirmation every participant reported.
    pub confirmation: [u8; 32],
    /// The session's participants.
    pub parties: Vec<PartyId>,
}

const COLUMNS: &str = "id, name, threshold, committee, public_key, chain_code, status, error, \
                       created_at, updated_at, refresh_every_secs, next_refresh_at, rotated_at, activation_session, \
                       activation_confirmation, activation_parties";

fn pending_activation(c: &Cols<'_>) -> Result<Option<PendingActivation>, StoreError> {
    let Some(session) = c.opt_text("activation_session")? else {
        return Ok(None);
    };
    let invalid = |reason: String| StoreError::Invalid {
        what: "pending activation",
        reason,
    };
    let session = session
        .parse()
        .map_err(|_| invalid(format!("{session:?} is not a session id")))?;
    let confirmation = c
        .opt_hex("activation_confirmation")?
        .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
        .ok_or_else(|| invalid("the confirmation is not 32 bytes".into()))?;
    let parties = c.with("activation_parties", parties_from_text)?;
    Ok(Some(PendingActivation {
        session,
        confirmation,
        parties,
    }))
}

fn key_row(row: &AnyRow) -> Result<KeyRow, StoreError> {
    let c = Cols::new(row, "keys");
    Ok(KeyRow {
        id: c.parse("id")?,
        name: c.text("name")?,
        threshold: c.small("threshold")?,
        committee: c.with("committee", parties_from_text)?,
        public_key: c.opt_hex("public_key")?,
        chain_code: c.opt_hex("chain_code")?,
        status: c.parse("status")?,
        error: c.opt_text("error")?,
        created_at: c.int("created_at")?,
        updated_at: c.int("updated_at")?,
        refresh_every_secs: c.opt_int("refresh_every_secs")?,
        next_refresh_at: c.opt_int("next_refresh_at")?,
        rotated_at: c.opt_int("rotated_at")?,
        pending_activation: pending_activation(&c)?,
    })
}

fn validate(new: &NewKey) -> Result<(), StoreError> {
    let invalid = |what, reason: String| Err(StoreError::Invalid { what, reason });
    if new.name.trim().is_empty() || new.name.len() > 128 {
        return invalid("key name", "use 1 to 128 characters".into());
    }
    let mut committee = new.committee.clone();
    committee.sort();
    committee.dedup();
    if committee.len() != new.committee.len() || committee.iter().any(|p| p.0 == 0) {
        return invalid(
            "committee",
            format!(
                "{} must list distinct parties numbered from 1",
                PartyId::list(&new.committee)
            ),
        );
    }
    if new.threshold == 0 || usize::from(new.threshold) > new.committee.len() {
        return invalid(
            "threshold",
            format!(
                "{} must be between 1 and the committee size {}",
                new.threshold,
                new.committee.len()
            ),
        );
    }
    Ok(())
}

impl Store {
    /// Records a key to be generated. Idempotent: the same key again returns
    /// [`InsertOutcome::Existing`]; the id reused for another key, or the name taken by another
    /// key, is a [`StoreError::Conflict`].
    pub async fn insert_key(&self, new: &NewKey) -> Result<InsertOutcome<KeyRow>, StoreError> {
        validate(new)?;
        let inserted = sqlx::query(
            "INSERT INTO keys (id, name, threshold, committee, public_key, status, error, \
             created_at, updated_at) VALUES ($1, $2, $3, $4, NULL, $5, NULL, $6, $6) \
             ON CONFLICT DO NOTHING",
        )
        .bind(new.id.to_string())
        .bind(&new.name)
        .bind(i64::from(new.threshold))
        .bind(parties_to_text(&new.committee))
        .bind(KeyStatus::Creating.as_str())
        .bind(new.created_at)
        .execute(&self.pool)
        .await
        .map_err(|e| StoreError::db(format_args!("inserting key {}", new.id), e))?
        .rows_affected();
        if inserted == 1 {
            tracing::debug!(key = %new.id, name = %new.name, "key recorded");
            return Ok(InsertOutcome::Inserted);
        }
        match self.get_key(new.id).await? {
            Some(existing)
                if existing.name == new.name
                    && existing.threshold == new.threshold
                    && existing.committee == new.committee =>
            {
                Ok(InsertOutcome::Existing(existing))
            }
            Some(_) => Err(StoreError::Conflict(format!(
                "key id {} is already used for a different key; choose a new key id",
                new.id
            ))),
            None => Err(StoreError::Conflict(format!(
                "a key named {:?} already exists; choose another name",
                new.name
            ))),
        }
    }

    /// The key with this id, if any.
    pub async fn get_key(&self, id: KeyId) -> Result<Option<KeyRow>, StoreError> {
        sqlx::query(&format!("SELECT {COLUMNS} FROM keys WHERE id = $1"))
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| StoreError::db(format_args!("reading key {id}"), e))?
            .as_ref()
            .map(key_row)
            .transpose()
    }

    /// The key with this name, if any.
    pub async fn get_key_by_name(&self, name: &str) -> Result<Option<KeyRow>, StoreError> {
        sqlx::query(&format!("SELECT {COLUMNS} FROM keys WHERE name = $1"))
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| StoreError::db(format_args!("reading key {name:?}"), e))?
            .as_ref()
            .map(key_row)
            .transpose()
    }

    /// Every key, by name.
    pub async fn list_keys(&self) -> Result<Vec<KeyRow>, StoreError> {
        sqlx::query(&format!("SELECT {COLUMNS} FROM keys ORDER BY name"))
            .fetch_all(&self.pool)
            .await
            .map_err(|e| StoreError::db("listing keys", e))?
            .iter()
            .map(key_row)
            .collect()
    }

    /// Marks a key being created as ready with its public key and HD chain code (if key
    /// generation reported one). Returns false if the key is no longer being created (already
    /// ready or failed); [`StoreError::NotFound`] if unknown.
    pub async fn set_key_ready(
        &self,
        id: KeyId,
        public_key: &[u8],
        chain_code: Option<&[u8]>,
    ) -> Result<bool, StoreError> {
        self.finish_key(
            id,
            KeyStatus::Ready,
            Some(hex::encode(public_key)),
            chain_code.map(hex::encode),
            None,
        )
        .await
    }

    /// Records a ready key's new committee and threshold after a reshare (or the same ones
    /// after a refresh), its rotation time and next scheduled refresh, and `activation` as
    /// still to be delivered (one statement: the commit point of a rotation). Returns false if the key is not ready;
    /// [`StoreError::NotFound`] if unknown.
    pub async fn set_key_committee(
        &self,
        id: KeyId,
        committee: &[PartyId],
        threshold: u16,
        activation: &PendingActivation,
    ) -> Result<bool, StoreError> {
        let now = self.now();
        let changed = sqlx::query(
            "UPDATE keys SET committee = $1, threshold = $2, updated_at = $3, rotated_at = $3, \
             next_refresh_at = CASE WHEN refresh_every_secs IS NULL THEN NULL \
                                    ELSE $3 + refresh_every_secs END, \
             activation_session = $6, activation_confirmation = $7, activation_parties = $8 \
             WHERE id = $4 AND status = $5",
        )
        .bind(parties_to_text(committee))
        .bind(i64::from(threshold))
        .bind(now)
        .bind(id.to_string())
        .bind(KeyStatus::Ready.as_str())
        .bind(activation.session.to_string())
        .bind(hex::encode(activation.confirmation))
        .bind(parties_to_text(&activation.parties))
        .execute(&self.pool)
        .await
        .map_err(|e| StoreError::db(format_args!("recording key {id}'s new committee"), e))?
        .rows_affected();
        if changed == 1 {
            tracing::info!(key = %id, committee = %PartyId::list(committee), threshold, "key committee changed");
            return Ok(true);
        }
        match self.get_key(id).await? {
            Some(_) => Ok(false),
            None => Err(StoreError::NotFound(format!("key {id}"))),
        }
    }

    /// Records that every participant of reshare `session` activated: the key has no
    /// activation due any more. Returns false if another (or no) activation is due.
    pub async fn clear_pending_activation(
        &self,
        id: KeyId,
        session: SessionId,
    ) -> Result<bool, StoreError> {
        let changed = sqlx::query(
            "UPDATE keys SET activation_session = NULL, activation_confirmation = NULL, \
             activation_parties = NULL, updated_at = $1 WHERE id = $2 AND activation_session = $3",
        )
        .bind(self.now())
        .bind(id.to_string())
        .bind(session.to_string())
        .execute(&self.pool)
        .await
        .map_err(|e| StoreError::db(format_args!("clearing key {id}'s pending activation"), e))?
        .rows_affected();
        Ok(changed == 1)
    }

    /// Sets (or with `None` clears) how often a ready key is refreshed automatically; the
    /// first scheduled refresh is one interval from now. Returns false if the key is not
    /// ready; [`StoreError::NotFound`] if unknown.
    pub async fn set_refresh_schedule(
        &self,
        id: KeyId,
        every_secs: Option<i64>,
    ) -> Result<bool, StoreError> {
        let now = self.now();
        let changed = sqlx::query(
            "UPDATE keys SET refresh_every_secs = $1, next_refresh_at = $5, updated_at = $2 \
             WHERE id = $3 AND status = $4",
        )
        .bind(every_secs)
        .bind(now)
        .bind(id.to_string())
        .bind(KeyStatus::Ready.as_str())
        .bind(every_secs.map(|every| now.saturating_add(every)))
        .execute(&self.pool)
        .await
        .map_err(|e| StoreError::db(format_args!("setting key {id}'s refresh schedule"), e))?
        .rows_affected();
        if changed == 1 {
            return Ok(true);
        }
        match self.get_key(id).await? {
            Some(_) => Ok(false),
            None => Err(StoreError::NotFound(format!("key {id}"))),
        }
    }

    /// Claims a ready key's scheduled refresh if it is due at `now`: moves its next refresh
    /// to `retry_at` (where it stays if this attempt fails; a successful rotation sets it one
    /// interval on). Only one caller (of any replica) wins a due refresh.
    pub async fn claim_scheduled_refresh(
        &self,
        id: KeyId,
        now: i64,
        retry_at: i64,
    ) -> Result<bool, StoreError> {
        let changed = sqlx::query(
            "UPDATE keys SET next_refresh_at = $1 WHERE id = $2 AND status = $3 \
             AND next_refresh_at IS NOT NULL AND next_refresh_at <= $4",
        )
        .bind(retry_at)
        .bind(id.to_string())
        .bind(KeyStatus::Ready.as_str())
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(|e| StoreError::db(format_args!("claiming key {id}'s scheduled refresh"), e))?
        .rows_affected();
        Ok(changed == 1)
    }

    /// Ready keys whose scheduled refresh is due at `now`, and keys with an activation still
    /// to deliver; by name.
    pub async fn keys_due_for_rotation_work(&self, now: i64) -> Result<Vec<KeyRow>, StoreError> {
        sqlx::query(&format!(
            "SELECT {COLUMNS} FROM keys WHERE status = $1 AND (activation_session IS NOT NULL \
             OR next_refresh_at <= $2) ORDER BY name"
        ))
        .bind(KeyStatus::Ready.as_str())
        .bind(now)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| StoreError::db("listing keys due for rotation work", e))?
        .iter()
        .map(key_row)
        .collect()
    }

    /// Marks a key being created as failed with the reason. Returns false if the key is no
    /// longer being created; [`StoreError::NotFound`] if unknown.
    pub async fn set_key_failed(&self, id: KeyId, error: &str) -> Result<bool, StoreError> {
        self.finish_key(id, KeyStatus::Failed, None, None, Some(error))
            .await
    }

    /// Marks every key still being created since before `before` (Unix seconds) as failed with
    /// `error`: its key generation cannot still be running. Returns their ids, sorted.
    pub async fn fail_stale_keys(
        &self,
        before: i64,
        error: &str,
    ) -> Result<Vec<KeyId>, StoreError> {
        let rows = sqlx::query(
            "UPDATE keys SET status = $1, error = $2, updated_at = $3 \
             WHERE status = $4 AND updated_at < $5 RETURNING id",
        )
        .bind(KeyStatus::Failed.as_str())
        .bind(error)
        .bind(self.now())
        .bind(KeyStatus::Creating.as_str())
        .bind(before)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| StoreError::db("failing stale key generations", e))?;
        let mut ids = rows
            .iter()
            .map(|row| Cols::new(row, "keys").parse::<KeyId>("id"))
            .collect::<Result<Vec<_>, _>>()?;
        ids.sort();
        if !ids.is_empty() {
            tracing::warn!(count = ids.len(), "stale key generations marked failed");
        }
        Ok(ids)
    }

    async fn finish_key(
        &self,
        id: KeyId,
        status: KeyStatus,
        public_key: Option<String>,
        chain_code: Option<String>,
        error: Option<&str>,
    ) -> Result<bool, StoreError> {
        let changed = sqlx::query(
            "UPDATE keys SET status = $1, public_key = $2, chain_code = $3, error = $4, \
             updated_at = $5 WHERE id = $6 AND status = $7",
        )
        .bind(status.as_str())
        .bind(public_key)
        .bind(chain_code)
        .bind(error)
        .bind(self.now())
        .bind(id.to_string())
        .bind(KeyStatus::Creating.as_str())
        .execute(&self.pool)
        .await
        .map_err(|e| StoreError::db(format_args!("marking key {id} {status}"), e))?
        .rows_affected();
        if changed == 1 {
            tracing::info!(key = %id, %status, "key status changed");
            return Ok(true);
        }
        match self.get_key(id).await? {
            Some(_) => Ok(false),
            None => Err(StoreError::NotFound(format!(
                "no key {id}; check the key id (list the keys to see them)"
            ))),
        }
    }
}
