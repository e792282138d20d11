//! The `keys` table: threshold keys and their generation status.

use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use tessera_control::SignedOutcome;
use tessera_policy::ApprovedKeyChange;
use tessera_wire::{KeyId, KeyKind, PartyId, SessionId};

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
    /// What kind of key.
    pub kind: KeyKind,
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
    /// What kind of key.
    pub kind: KeyKind,
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
    /// The key's epoch: 0 after key generation, one more after each refresh or reshare.
    pub epoch: u64,
    /// The step of the last rotation that has not reached every party yet.
    pub lifecycle: Option<Lifecycle>,
}

/// Where a rotation recorded as the key's new epoch still has to reach parties
/// (`docs/protocols/reshare.md`, Activation and erasure).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LifecyclePhase {
    /// The participants activate the new epoch on the activation certificate.
    Activate,
    /// Every holder of the old epoch closes (erases) it on the closure certificate.
    Close,
}

/// A rotation's remaining work: the certificates the nodes need and who has yet to answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lifecycle {
    /// The reshare session.
    pub session: SessionId,
    /// What is due.
    pub phase: LifecyclePhase,
    /// The activation certificate: every participant's signed reshare outcome.
    pub certificate: Vec<SignedOutcome>,
    /// The new holders' signed activations received so far (all of them: the closure
    /// certificate).
    pub activated: Vec<SignedOutcome>,
    /// The admins' approved change, which holders that took no part check before they close.
    pub approved: Option<ApprovedKeyChange>,
    /// Who must answer in the phase and has not yet: the participants (activate), every
    /// holder of the old epoch and every participant (close).
    pub due: Vec<PartyId>,
    /// Every holder of the old epoch and every participant: who closes it.
    pub holders: Vec<PartyId>,
}

impl Lifecycle {
    /// The canonical encoding, as stored.
    fn to_text(&self) -> String {
        hex::encode(tessera_wire::encode(self))
    }

    fn from_text(text: &str) -> Result<Self, String> {
        let bytes = hex::decode(text).map_err(|e| e.to_string())?;
        tessera_wire::decode(&bytes, 4 * 1024 * 1024).map_err(|e| e.to_string())
    }
}

const COLUMNS: &str = "id, name, threshold, committee, kind, public_key, chain_code, status, \
                       error, created_at, updated_at, refresh_every_secs, next_refresh_at, \
                       rotated_at, epoch, lifecycle";

fn lifecycle(c: &Cols<'_>) -> Result<Option<Lifecycle>, StoreError> {
    c.opt_text("lifecycle")?
        .map(|text| {
            Lifecycle::from_text(&text).map_err(|reason| StoreError::Invalid {
                what: "key lifecycle",
                reason,
            })
        })
        .transpose()
}

fn key_row(row: &AnyRow) -> Result<KeyRow, StoreError> {
    let c = Cols::new(row, "keys");
    Ok(KeyRow {
        id: c.parse("id")?,
        name: c.text("name")?,
        threshold: c.small("threshold")?,
        committee: c.with("committee", parties_from_text)?,
        kind: c.parse("kind")?,
        public_key: c.opt_hex("public_key")?,
        chain_code: c.opt_hex("chain_code")?,
        status: c.parse("status")?,
        error: c.opt_text("error")?,
        created_at: c.int("created_at")?,
        updated_at: c.int("updated_at")?,
        refresh_every_secs: c.opt_int("refresh_every_secs")?,
        next_refresh_at: c.opt_int("next_refresh_at")?,
        rotated_at: c.opt_int("rotated_at")?,
        epoch: c.small("epoch")?,
        lifecycle: lifecycle(&c)?,
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
    /// Takes the rotation lease of key `id` for `owner` (a token unique to one rotation) for
    /// `ttl_secs`: true if it was free or its holder let it lapse, false if another rotation
    /// holds it. One statement, so that across every coordinator on this database at most one
    /// rotation of a key holds it; [`StoreError::NotFound`] if the key is unknown.
    pub async fn lease_rotation(
        &self,
        id: KeyId,
        owner: &str,
        ttl_secs: i64,
    ) -> Result<bool, StoreError> {
        let now = self.now();
        let changed = sqlx::query(
            "UPDATE keys SET rotation_owner = $1, rotation_until = $2 \
             WHERE id = $3 AND (rotation_owner IS NULL OR rotation_until < $4)",
        )
        .bind(owner)
        .bind(now.saturating_add(ttl_secs))
        .bind(id.to_string())
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(|e| StoreError::db(format_args!("leasing the rotation of key {id}"), e))?
        .rows_affected();
        if changed == 1 {
            return Ok(true);
        }
        match self.get_key(id).await? {
            Some(_) => Ok(false),
            None => Err(StoreError::NotFound(format!("no key {id}"))),
        }
    }

    /// Extends `owner`'s rotation lease of key `id` by `ttl_secs` from now; false if `owner`
    /// no longer holds it (it lapsed and another rotation took it).
    pub async fn renew_rotation_lease(
        &self,
        id: KeyId,
        owner: &str,
        ttl_secs: i64,
    ) -> Result<bool, StoreError> {
        let changed = sqlx::query(
            "UPDATE keys SET rotation_until = $1 WHERE id = $2 AND rotation_owner = $3",
        )
        .bind(self.now().saturating_add(ttl_secs))
        .bind(id.to_string())
        .bind(owner)
        .execute(&self.pool)
        .await
        .map_err(|e| StoreError::db(format_args!("renewing the rotation lease of key {id}"), e))?
        .rows_affected();
        Ok(changed == 1)
    }

    /// Gives back `owner`'s rotation lease of key `id` (nothing if it does not hold it).
    pub async fn release_rotation_lease(&self, id: KeyId, owner: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE keys SET rotation_owner = NULL, rotation_until = NULL \
             WHERE id = $1 AND rotation_owner = $2",
        )
        .bind(id.to_string())
        .bind(owner)
        .execute(&self.pool)
        .await
        .map_err(|e| StoreError::db(format_args!("releasing the rotation lease of key {id}"), e))?;
        Ok(())
    }

    /// Records a key to be generated. Idempotent: the same key again returns
    /// [`InsertOutcome::Existing`]; the id reused for another key, or the name taken by another
    /// key, is a [`StoreError::Conflict`].
    pub async fn insert_key(&self, new: &NewKey) -> Result<InsertOutcome<KeyRow>, StoreError> {
        validate(new)?;
        let inserted = sqlx::query(
            "INSERT INTO keys (id, name, threshold, committee, kind, public_key, status, error, \
             created_at, updated_at) VALUES ($1, $2, $3, $4, $5, NULL, $6, NULL, $7, $7) \
             ON CONFLICT DO NOTHING",
        )
        .bind(new.id.to_string())
        .bind(&new.name)
        .bind(i64::from(new.threshold))
        .bind(parties_to_text(&new.committee))
        .bind(new.kind.as_str())
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
                    && existing.committee == new.committee
                    && existing.kind == new.kind =>
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

    /// Records a ready key's new committee, threshold and epoch after a reshare (or the same
    /// committee after a refresh), its rotation time and next scheduled refresh, and the
    /// rotation's remaining `lifecycle` (one statement: the commit point of a rotation). Only
    /// from epoch `from` with no lifecycle due: returns false if the key is not ready, moved
    /// past that epoch, or has a rotation still due; [`StoreError::NotFound`] if unknown.
    pub async fn set_key_rotated(
        &self,
        id: KeyId,
        from: u64,
        committee: &[PartyId],
        threshold: u16,
        lifecycle: &Lifecycle,
    ) -> Result<bool, StoreError> {
        let now = self.now();
        let epoch = i64::try_from(from.saturating_add(1)).unwrap_or(i64::MAX);
        let changed = sqlx::query(
            "UPDATE keys SET committee = $1, threshold = $2, updated_at = $3, rotated_at = $3, \
             next_refresh_at = CASE WHEN refresh_every_secs IS NULL THEN NULL \
                                    ELSE $3 + refresh_every_secs END, \
             epoch = $6, lifecycle_session = $7, lifecycle = $8 \
             WHERE id = $4 AND status = $5 AND epoch = $9 AND lifecycle IS NULL",
        )
        .bind(parties_to_text(committee))
        .bind(i64::from(threshold))
        .bind(now)
        .bind(id.to_string())
        .bind(KeyStatus::Ready.as_str())
        .bind(epoch)
        .bind(lifecycle.session.to_string())
        .bind(lifecycle.to_text())
        .bind(i64::try_from(from).unwrap_or(i64::MAX))
        .execute(&self.pool)
        .await
        .map_err(|e| StoreError::db(format_args!("recording key {id}'s new epoch"), e))?
        .rows_affected();
        if changed == 1 {
            tracing::info!(key = %id, committee = %PartyId::list(committee), threshold, epoch, "key epoch recorded");
            return Ok(true);
        }
        match self.get_key(id).await? {
            Some(_) => Ok(false),
            None => Err(StoreError::NotFound(format!("key {id}"))),
        }
    }

    /// Replaces the remaining lifecycle of reshare `session` on key `id` with `next` (`None`:
    /// nothing is due any more). Returns false if another (or no) rotation is due.
    pub async fn update_lifecycle(
        &self,
        id: KeyId,
        session: SessionId,
        next: Option<&Lifecycle>,
    ) -> Result<bool, StoreError> {
        let changed = sqlx::query(
            "UPDATE keys SET lifecycle_session = $1, lifecycle = $2, updated_at = $3 \
             WHERE id = $4 AND lifecycle_session = $5",
        )
        .bind(next.map(|l| l.session.to_string()))
        .bind(next.map(Lifecycle::to_text))
        .bind(self.now())
        .bind(id.to_string())
        .bind(session.to_string())
        .execute(&self.pool)
        .await
        .map_err(|e| StoreError::db(format_args!("updating key {id}'s lifecycle"), e))?
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

    /// Ready keys whose scheduled refresh is due at `now`, and keys with a rotation step still
    /// to deliver; by name.
    pub async fn keys_due_for_rotation_work(&self, now: i64) -> Result<Vec<KeyRow>, StoreError> {
        sqlx::query(&format!(
            "SELECT {COLUMNS} FROM keys WHERE status = $1 AND (lifecycle IS NOT NULL \
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
