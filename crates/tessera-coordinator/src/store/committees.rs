//! The `committees` table: party sets that share auxiliary info, and where their set-up is.

use sqlx::any::AnyRow;
use tessera_wire::PartyId;

use super::row::Cols;
use super::types::{parties_from_text, parties_to_text};
use super::{placeholders, CommitteeStatus, InsertOutcome, Store, StoreError};

/// A stored committee.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommitteeRow {
    /// The parties, in protocol order.
    pub parties: Vec<PartyId>,
    /// Where its set-up is.
    pub status: CommitteeStatus,
    /// Why the set-up failed.
    pub error: Option<String>,
    /// When the set-up was requested (Unix seconds).
    pub created_at: i64,
    /// When the row last changed (Unix seconds).
    pub updated_at: i64,
}

const COLUMNS: &str = "parties, status, error, created_at, updated_at";

fn committee_row(row: &AnyRow) -> Result<CommitteeRow, StoreError> {
    let c = Cols::new(row, "committees");
    Ok(CommitteeRow {
        parties: c.with("parties", parties_from_text)?,
        status: c.parse("status")?,
        error: c.opt_text("error")?,
        created_at: c.int("created_at")?,
        updated_at: c.int("updated_at")?,
    })
}

fn unknown(parties: &[PartyId]) -> StoreError {
    StoreError::NotFound(format!(
        "no committee {}; set the committee up first",
        PartyId::list(parties)
    ))
}

impl Store {
    /// Records a committee with `status`. Idempotent: if the committee is already stored,
    /// returns [`InsertOutcome::Existing`] with it as stored (whatever its status).
    pub async fn insert_committee(
        &self,
        parties: &[PartyId],
        status: CommitteeStatus,
        created_at: i64,
    ) -> Result<InsertOutcome<CommitteeRow>, StoreError> {
        if parties.is_empty() {
            return Err(StoreError::Invalid {
                what: "committee",
                reason: "name at least one party".into(),
            });
        }
        let inserted = sqlx::query(&format!(
            "INSERT INTO committees ({COLUMNS}) VALUES ($1, $2, NULL, $3, $3) \
             ON CONFLICT DO NOTHING"
        ))
        .bind(parties_to_text(parties))
        .bind(status.as_str())
        .bind(created_at)
        .execute(&self.pool)
        .await
        .map_err(|e| {
            StoreError::db(
                format_args!("inserting committee {}", PartyId::list(parties)),
                e,
            )
        })?
        .rows_affected();
        if inserted == 1 {
            tracing::debug!(committee = %PartyId::list(parties), %status, "committee recorded");
            return Ok(InsertOutcome::Inserted);
        }
        let existing = self.get_committee(parties).await?.ok_or_else(|| {
            StoreError::Database(format!(
                "committee {} was neither inserted nor found; retry",
                PartyId::list(parties)
            ))
        })?;
        Ok(InsertOutcome::Existing(existing))
    }

    /// The committee of exactly these parties (in this order), if any.
    pub async fn get_committee(
        &self,
        parties: &[PartyId],
    ) -> Result<Option<CommitteeRow>, StoreError> {
        sqlx::query(&format!(
            "SELECT {COLUMNS} FROM committees WHERE parties = $1"
        ))
        .bind(parties_to_text(parties))
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| {
            StoreError::db(
                format_args!("reading committee {}", PartyId::list(parties)),
                e,
            )
        })?
        .as_ref()
        .map(committee_row)
        .transpose()
    }

    /// Every committee, oldest first.
    pub async fn list_committees(&self) -> Result<Vec<CommitteeRow>, StoreError> {
        sqlx::query(&format!(
            "SELECT {COLUMNS} FROM committees ORDER BY created_at, parties"
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(|e| StoreError::db("listing committees", e))?
        .iter()
        .map(committee_row)
        .collect()
    }

    /// Compare-and-set: moves the committee to `to` if it is in one of `from`, replacing its
    /// error (`None` clears it) and bumping `updated_at`. Returns false if it is in another
    /// state (or `from` is empty); [`StoreError::NotFound`] if unknown.
    pub async fn transition_committee(
        &self,
        parties: &[PartyId],
        from: &[CommitteeStatus],
        to: CommitteeStatus,
        error: Option<&str>,
    ) -> Result<bool, StoreError> {
        if from.is_empty() {
            return Ok(false);
        }
        let sql = format!(
            "UPDATE committees SET status = $1, error = $2, updated_at = $3 WHERE parties = $4 \
             AND status IN ({})",
            placeholders(5, from.len())
        );
        let mut query = sqlx::query(&sql)
            .bind(to.as_str())
            .bind(error)
            .bind(self.now())
            .bind(parties_to_text(parties));
        for status in from {
            query = query.bind(status.as_str());
        }
        let changed = query
            .execute(&self.pool)
            .await
            .map_err(|e| {
                StoreError::db(
                    format_args!("moving committee {} to {to}", PartyId::list(parties)),
                    e,
                )
            })?
            .rows_affected();
        if changed == 1 {
            tracing::info!(committee = %PartyId::list(parties), status = %to, "committee status changed");
            return Ok(true);
        }
        match self.get_committee(parties).await? {
            Some(_) => Ok(false),
            None => Err(unknown(parties)),
        }
    }

    /// Marks every committee still being set up since before `before` (Unix seconds) as
    /// failed with `error`; returns how many.
    pub async fn fail_stale_committees(&self, before: i64, error: &str) -> Result<u64, StoreError> {
        let failed = sqlx::query(
            "UPDATE committees SET status = $1, error = $2, updated_at = $3 \
             WHERE status = $4 AND updated_at < $5",
        )
        .bind(CommitteeStatus::Failed.as_str())
        .bind(error)
        .bind(self.now())
        .bind(CommitteeStatus::Creating.as_str())
        .bind(before)
        .execute(&self.pool)
        .await
        .map_err(|e| StoreError::db("failing stale committee set-ups", e))?
        .rows_affected();
        if failed > 0 {
            tracing::warn!(count = failed, "stale committee set-ups marked failed");
        }
        Ok(failed)
    }
}
