//! The `key_changes` table: refreshes, reshares and refresh schedules proposed by an admin,
//! approved by others, then carried out.

use sqlx::any::AnyRow;
use tessera_wire::KeyId;

use super::page::{Arg, Page};
use super::row::Cols;
use super::{placeholders, InsertOutcome, KeyChangeState, ProposalId, Store, StoreError};

/// A key change to record; it starts [`KeyChangeState::Pending`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewKeyChange {
    /// Chosen by the client so retries are idempotent.
    pub id: ProposalId,
    /// The key it changes.
    pub key: KeyId,
    /// Its summary for people (e.g. `reshare to 3-of-5 on p1,p2,p3,p4,p5`).
    pub operation: String,
    /// The proposing admin.
    pub proposed_by: String,
    /// When it was proposed (Unix seconds).
    pub created_at: i64,
    /// When it expires unapproved (Unix seconds).
    pub expires_at: i64,
    /// The canonical encoded change that approvers sign; opaque to the store.
    pub body: Vec<u8>,
}

/// A stored key change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyChangeRow {
    /// Its id.
    pub id: ProposalId,
    /// The key it changes.
    pub key: KeyId,
    /// Its summary for people.
    pub operation: String,
    /// The proposing admin.
    pub proposed_by: String,
    /// Where it is in its life.
    pub state: KeyChangeState,
    /// Why carrying it out failed.
    pub error: Option<String>,
    /// When it was proposed (Unix seconds).
    pub created_at: i64,
    /// When it expires unapproved (Unix seconds).
    pub expires_at: i64,
    /// When the row last changed (Unix seconds).
    pub updated_at: i64,
    /// The canonical encoded change.
    pub body: Vec<u8>,
}

const COLUMNS: &str =
    "id, key_id, operation, proposed_by, state, error, created_at, expires_at, updated_at, body";

fn key_change_row(row: &AnyRow) -> Result<KeyChangeRow, StoreError> {
    let c = Cols::new(row, "key_changes");
    Ok(KeyChangeRow {
        id: c.parse("id")?,
        key: c.parse("key_id")?,
        operation: c.text("operation")?,
        proposed_by: c.text("proposed_by")?,
        state: c.parse("state")?,
        error: c.opt_text("error")?,
        created_at: c.int("created_at")?,
        expires_at: c.int("expires_at")?,
        updated_at: c.int("updated_at")?,
        body: c.hex("body")?,
    })
}

impl Store {
    /// Records a key change. Idempotent by id: the same change again returns
    /// [`InsertOutcome::Existing`]; the id reused for another change is a
    /// [`StoreError::Conflict`].
    pub async fn insert_key_change(
        &self,
        new: &NewKeyChange,
    ) -> Result<InsertOutcome<KeyChangeRow>, StoreError> {
        let inserted = sqlx::query(&format!(
            "INSERT INTO key_changes ({COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, NULL, $6, $7, $6, $8) ON CONFLICT DO NOTHING"
        ))
        .bind(new.id.to_string())
        .bind(new.key.to_string())
        .bind(&new.operation)
        .bind(&new.proposed_by)
        .bind(KeyChangeState::Pending.as_str())
        .bind(new.created_at)
        .bind(new.expires_at)
        .bind(hex::encode(&new.body))
        .execute(&self.pool)
        .await
        .map_err(|e| StoreError::db(format_args!("inserting key change {}", new.id), e))?
        .rows_affected();
        if inserted == 1 {
            return Ok(InsertOutcome::Inserted);
        }
        let existing = self.get_key_change(new.id).await?.ok_or_else(|| {
            StoreError::Database(format!(
                "key change {} was neither inserted nor found; retry",
                new.id
            ))
        })?;
        if existing.body == new.body {
            Ok(InsertOutcome::Existing(existing))
        } else {
            Err(StoreError::Conflict(format!(
                "the key change id {} is already used for a different change; choose a new id \
                 (a retry must resend exactly the same change)",
                new.id
            )))
        }
    }

    /// The key change with this id, if any.
    pub async fn get_key_change(&self, id: ProposalId) -> Result<Option<KeyChangeRow>, StoreError> {
        sqlx::query(&format!("SELECT {COLUMNS} FROM key_changes WHERE id = $1"))
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| StoreError::db(format_args!("reading key change {id}"), e))?
            .as_ref()
            .map(key_change_row)
            .transpose()
    }

    /// Key changes, newest first, optionally only those in `state`, after change `after` (the
    /// last of the previous page); at most `limit` (capped at 1000). An unknown `after` is
    /// [`StoreError::NotFound`].
    pub async fn list_key_changes(
        &self,
        state: Option<KeyChangeState>,
        after: Option<ProposalId>,
        limit: u32,
    ) -> Result<Vec<KeyChangeRow>, StoreError> {
        let mut page = Page::default();
        if let Some(state) = state {
            page.filter("state", Arg::Text(state.as_str().to_owned()));
        }
        if let Some(after) = after {
            let row = self.get_key_change(after).await?.ok_or_else(|| {
                StoreError::NotFound(format!(
                    "no key change {after} to list after; start again from the first page"
                ))
            })?;
            page.after(row.created_at, after.to_string());
        }
        page.fetch(
            &self.pool,
            COLUMNS,
            "key_changes",
            limit.min(1000),
            "key changes",
        )
        .await?
        .iter()
        .map(key_change_row)
        .collect()
    }

    /// Moves every pending change whose expiry is at or before `now` to
    /// [`KeyChangeState::Expired`]; returns how many.
    pub async fn expire_due_key_changes(&self, now: i64) -> Result<u64, StoreError> {
        Ok(sqlx::query(
            "UPDATE key_changes SET state = $1, updated_at = $2 \
             WHERE state = $3 AND expires_at <= $2",
        )
        .bind(KeyChangeState::Expired.as_str())
        .bind(now)
        .bind(KeyChangeState::Pending.as_str())
        .execute(&self.pool)
        .await
        .map_err(|e| StoreError::db("expiring key changes", e))?
        .rows_affected())
    }

    /// Compare-and-set: moves the change to `to` (with `error`, if any) if it is in one of
    /// `from`. Returns false if it is in another state; [`StoreError::NotFound`] if unknown.
    pub async fn transition_key_change(
        &self,
        id: ProposalId,
        from: &[KeyChangeState],
        to: KeyChangeState,
        error: Option<&str>,
    ) -> Result<bool, StoreError> {
        if from.is_empty() {
            return Ok(false);
        }
        let sql = format!(
            "UPDATE key_changes SET state = $1, error = $2, updated_at = $3 WHERE id = $4 \
             AND state IN ({})",
            placeholders(5, from.len())
        );
        let mut query = sqlx::query(&sql)
            .bind(to.as_str())
            .bind(error)
            .bind(self.now())
            .bind(id.to_string());
        for state in from {
            query = query.bind(state.as_str());
        }
        let changed = query
            .execute(&self.pool)
            .await
            .map_err(|e| StoreError::db(format_args!("moving key change {id} to {to}"), e))?
            .rows_affected();
        if changed == 1 {
            tracing::info!(change = %id, state = %to, "key change state changed");
            return Ok(true);
        }
        match self.get_key_change(id).await? {
            Some(_) => Ok(false),
            None => Err(StoreError::NotFound(format!(
                "no key change {id}; list the key changes to see them"
            ))),
        }
    }
}
