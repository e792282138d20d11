//! The `requests` table: signing requests and their states.

use sqlx::any::AnyRow;
use tessera_wire::{KeyId, RequestId};

use super::error::is_foreign_key_violation;
use super::page::{Arg, Page};
use super::row::Cols;
use super::{placeholders, InsertOutcome, RequestKind, RequestState, Store, StoreError};

/// A signing request to store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewRequest {
    /// The client-chosen id that makes retries idempotent.
    pub id: RequestId,
    /// The key asked to sign.
    pub key_id: KeyId,
    /// What is to be signed.
    pub kind: RequestKind,
    /// The initial state ([`RequestState::PendingApproval`], or
    /// [`RequestState::Approved`] when policy needs no approval).
    pub state: RequestState,
    /// The canonical encoded request; opaque to the store.
    pub body: Vec<u8>,
    /// The digest to be signed.
    pub request_digest: Vec<u8>,
    /// The principal who submitted it.
    pub submitted_by: String,
    /// When it was submitted (Unix seconds).
    pub created_at: i64,
    /// When it expires unsigned (Unix seconds).
    pub expires_at: i64,
    /// Why it is not (yet) allowed: the reasons of the policy evaluation at submission.
    pub reasons: Vec<String>,
}

/// A stored signing request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestRow {
    /// The client-chosen id.
    pub id: RequestId,
    /// The key asked to sign.
    pub key_id: KeyId,
    /// What is to be signed.
    pub kind: RequestKind,
    /// Where the request is in its life.
    pub state: RequestState,
    /// The canonical encoded request.
    pub body: Vec<u8>,
    /// The digest to be signed.
    pub request_digest: Vec<u8>,
    /// The principal who submitted it.
    pub submitted_by: String,
    /// When it was submitted (Unix seconds).
    pub created_at: i64,
    /// When it expires unsigned (Unix seconds).
    pub expires_at: i64,
    /// When the row last changed (Unix seconds).
    pub updated_at: i64,
    /// The signed transaction or signature, once signed.
    pub result: Option<Vec<u8>>,
    /// The latest error.
    pub error: Option<String>,
    /// How many signing attempts were started.
    pub attempts: u32,
    /// The reasons of the last policy evaluation, or why it was rejected.
    pub reasons: Vec<String>,
}

/// Which requests [`Store::list_requests`] returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestFilter {
    /// Only requests in this state.
    pub state: Option<RequestState>,
    /// Only requests for this key.
    pub key_id: Option<KeyId>,
    /// At most this many (capped at [`RequestFilter::MAX_LIMIT`]).
    pub limit: u32,
    /// Only requests listed after this one (the last of the previous page).
    pub after: Option<RequestId>,
}

impl RequestFilter {
    /// The largest page.
    pub const MAX_LIMIT: u32 = 1000;
}

impl Default for RequestFilter {
    /// Every request, first page of 100.
    fn default() -> Self {
        RequestFilter {
            state: None,
            key_id: None,
            limit: 100,
            after: None,
        }
    }
}

const COLUMNS: &str = "id, key_id, kind, state, body, request_digest, submitted_by, created_at, \
                       expires_at, updated_at, result, error, attempts, reasons";

fn reasons_to_text(reasons: &[String]) -> Option<String> {
    // A list of strings always serializes.
    (!reasons.is_empty()).then(|| serde_json::to_string(reasons).unwrap_or_default())
}

fn reasons_from_text(text: &str) -> Result<Vec<String>, String> {
    serde_json::from_str(text).map_err(|e| format!("not a JSON list of strings: {e}"))
}

fn request_row(row: &AnyRow) -> Result<RequestRow, StoreError> {
    let c = Cols::new(row, "requests");
    Ok(RequestRow {
        id: c.parse("id")?,
        key_id: c.parse("key_id")?,
        kind: c.parse("kind")?,
        state: c.parse("state")?,
        body: c.hex("body")?,
        request_digest: c.hex("request_digest")?,
        submitted_by: c.text("submitted_by")?,
        created_at: c.int("created_at")?,
        expires_at: c.int("expires_at")?,
        updated_at: c.int("updated_at")?,
        result: c.opt_hex("result")?,
        error: c.opt_text("error")?,
        attempts: c.small("attempts")?,
        reasons: match c.opt_text("reasons")? {
            Some(text) => reasons_from_text(&text)
                .map_err(|e| StoreError::corrupt("requests", "reasons", e))?,
            None => Vec::new(),
        },
    })
}

fn unknown(id: RequestId) -> StoreError {
    StoreError::NotFound(format!(
        "no request {id}; check the request id (list the requests to see them)"
    ))
}

impl Store {
    /// Stores a request. Idempotent by id: the same request again returns
    /// [`InsertOutcome::Existing`] with its current state; the id reused with a different body,
    /// digest, key or kind is a [`StoreError::Conflict`]. An unknown key is
    /// [`StoreError::NotFound`].
    pub async fn insert_request(
        &self,
        new: &NewRequest,
    ) -> Result<InsertOutcome<RequestRow>, StoreError> {
        let result = sqlx::query(
            "INSERT INTO requests (id, key_id, kind, state, body, request_digest, submitted_by, \
             created_at, expires_at, updated_at, result, error, attempts, reasons) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $8, NULL, NULL, 0, $10) \
             ON CONFLICT DO NOTHING",
        )
        .bind(new.id.to_string())
        .bind(new.key_id.to_string())
        .bind(new.kind.as_str())
        .bind(new.state.as_str())
        .bind(hex::encode(&new.body))
        .bind(hex::encode(&new.request_digest))
        .bind(&new.submitted_by)
        .bind(new.created_at)
        .bind(new.expires_at)
        .bind(reasons_to_text(&new.reasons))
        .execute(&self.pool)
        .await;
        let inserted = match result {
            Ok(done) => done.rows_affected(),
            Err(e) if is_foreign_key_violation(&e) => {
                return Err(StoreError::NotFound(format!(
                    "no key {}; create the key before submitting requests for it",
                    new.key_id
                )))
            }
            Err(e) => {
                return Err(StoreError::db(
                    format_args!("inserting request {}", new.id),
                    e,
                ))
            }
        };
        if inserted == 1 {
            tracing::debug!(request = %new.id, key = %new.key_id, state = %new.state, "request stored");
            return Ok(InsertOutcome::Inserted);
        }
        let existing = self.get_request(new.id).await?.ok_or_else(|| {
            StoreError::Database(format!(
                "request {} was neither inserted nor found; retry the request",
                new.id
            ))
        })?;
        if existing.body == new.body
            && existing.request_digest == new.request_digest
            && existing.key_id == new.key_id
            && existing.kind == new.kind
        {
            Ok(InsertOutcome::Existing(existing))
        } else {
            tracing::warn!(request = %new.id, "request id reused for a different request");
            Err(StoreError::Conflict(format!(
                "the request id {} is already used for a different request; choose a new \
                 request id (a retry must resend exactly the same request)",
                new.id
            )))
        }
    }

    /// The request with this id, if any.
    pub async fn get_request(&self, id: RequestId) -> Result<Option<RequestRow>, StoreError> {
        sqlx::query(&format!("SELECT {COLUMNS} FROM requests WHERE id = $1"))
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| StoreError::db(format_args!("reading request {id}"), e))?
            .as_ref()
            .map(request_row)
            .transpose()
    }

    /// Requests matching `filter`, newest first (by creation time, then id). To page, pass the
    /// last request of a page as `after`; an unknown `after` is [`StoreError::NotFound`].
    pub async fn list_requests(
        &self,
        filter: &RequestFilter,
    ) -> Result<Vec<RequestRow>, StoreError> {
        let mut page = Page::default();
        if let Some(state) = filter.state {
            page.filter("state", Arg::Text(state.as_str().to_owned()));
        }
        if let Some(key_id) = filter.key_id {
            page.filter("key_id", Arg::Text(key_id.to_string()));
        }
        if let Some(after) = filter.after {
            let created_at = self
                .get_request(after)
                .await?
                .ok_or_else(|| {
                    StoreError::NotFound(format!(
                        "no request {after} to list after; start again from the first page"
                    ))
                })?
                .created_at;
            page.after(created_at, after.to_string());
        }
        let limit = filter.limit.min(RequestFilter::MAX_LIMIT);
        page.fetch(&self.pool, COLUMNS, "requests", limit, "requests")
            .await?
            .iter()
            .map(request_row)
            .collect()
    }

    /// Compare-and-set: moves the request to `to` if it is in one of `from`, and bumps
    /// `updated_at`. `result` and `error`, when given, replace the stored ones; when `None` the
    /// stored values stay. Returns false if the request is in another state (someone else moved
    /// it first, or `from` is empty); [`StoreError::NotFound`] if unknown. Which moves are
    /// allowed is the caller's rule, not the store's.
    pub async fn transition_request(
        &self,
        id: RequestId,
        from: &[RequestState],
        to: RequestState,
        result: Option<&[u8]>,
        error: Option<&str>,
    ) -> Result<bool, StoreError> {
        self.move_request(id, from, to, result, error, None).await
    }

    /// As [`transition_request`](Self::transition_request) without a result, and replacing the
    /// reasons of the last policy evaluation (empty = none) in the same statement, so that
    /// nobody ever sees the new state with the old reasons (a request approved but still
    /// showing "has 1 approval of 2", because a signer took it between two updates).
    pub async fn conclude_request(
        &self,
        id: RequestId,
        from: &[RequestState],
        to: RequestState,
        error: Option<&str>,
        reasons: &[String],
    ) -> Result<bool, StoreError> {
        self.move_request(id, from, to, None, error, Some(reasons))
            .await
    }

    async fn move_request(
        &self,
        id: RequestId,
        from: &[RequestState],
        to: RequestState,
        result: Option<&[u8]>,
        error: Option<&str>,
        reasons: Option<&[String]>,
    ) -> Result<bool, StoreError> {
        if from.is_empty() {
            return Ok(false);
        }
        // $6 is the new reasons; `replace_reasons` ($7) tells an empty list from "keep them".
        let sql = format!(
            "UPDATE requests SET state = $1, updated_at = $2, result = COALESCE($3, result), \
             error = COALESCE($4, error), \
             reasons = CASE WHEN $6 THEN $7 ELSE reasons END \
             WHERE id = $5 AND state IN ({})",
            placeholders(8, from.len())
        );
        let mut query = sqlx::query(&sql)
            .bind(to.as_str())
            .bind(self.now())
            .bind(result.map(hex::encode))
            .bind(error)
            .bind(id.to_string())
            .bind(reasons.is_some())
            .bind(reasons.and_then(reasons_to_text));
        for state in from {
            query = query.bind(state.as_str());
        }
        let changed = query
            .execute(&self.pool)
            .await
            .map_err(|e| StoreError::db(format_args!("moving request {id} to {to}"), e))?
            .rows_affected();
        if changed == 1 {
            tracing::info!(request = %id, state = %to, "request state changed");
            return Ok(true);
        }
        match self.get_request(id).await? {
            Some(_) => Ok(false),
            None => Err(unknown(id)),
        }
    }

    /// Counts one more signing attempt; returns the new count.
    pub async fn increment_attempts(&self, id: RequestId) -> Result<u32, StoreError> {
        let row = sqlx::query(
            "UPDATE requests SET attempts = attempts + 1, updated_at = $1 WHERE id = $2 \
             RETURNING attempts",
        )
        .bind(self.now())
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| StoreError::db(format_args!("counting an attempt of request {id}"), e))?
        .ok_or_else(|| unknown(id))?;
        Cols::new(&row, "requests").small("attempts")
    }

    /// Replaces the reasons of the request's last policy evaluation (empty = none). Returns
    /// false if the request is not in one of `states` (it moved on meanwhile);
    /// [`StoreError::NotFound`] if unknown.
    pub async fn set_request_reasons(
        &self,
        id: RequestId,
        states: &[RequestState],
        reasons: &[String],
    ) -> Result<bool, StoreError> {
        if states.is_empty() {
            return Ok(false);
        }
        let sql = format!(
            "UPDATE requests SET reasons = $1, updated_at = $2 WHERE id = $3 AND state IN ({})",
            placeholders(4, states.len())
        );
        let mut query = sqlx::query(&sql)
            .bind(reasons_to_text(reasons))
            .bind(self.now())
            .bind(id.to_string());
        for state in states {
            query = query.bind(state.as_str());
        }
        let changed = query
            .execute(&self.pool)
            .await
            .map_err(|e| StoreError::db(format_args!("updating the reasons of request {id}"), e))?
            .rows_affected();
        if changed == 1 {
            return Ok(true);
        }
        match self.get_request(id).await? {
            Some(_) => Ok(false),
            None => Err(unknown(id)),
        }
    }

    /// Up to `limit` requests in `state` whose last change was at or before `changed_before`
    /// (Unix seconds), least recently changed first: the signing worker's queue.
    pub async fn requests_in_state(
        &self,
        state: RequestState,
        changed_before: i64,
        limit: u32,
    ) -> Result<Vec<RequestRow>, StoreError> {
        sqlx::query(&format!(
            "SELECT {COLUMNS} FROM requests WHERE state = $1 AND updated_at <= $2 \
             ORDER BY updated_at, id LIMIT $3"
        ))
        .bind(state.as_str())
        .bind(changed_before)
        .bind(i64::from(limit.min(RequestFilter::MAX_LIMIT)))
        .fetch_all(&self.pool)
        .await
        .map_err(|e| StoreError::db(format_args!("listing requests in state {state}"), e))?
        .iter()
        .map(request_row)
        .collect()
    }

    /// Compare-and-set on liveness: bumps `updated_at` of a request in `state` only if it was
    /// last changed at or before `changed_before`. Returns whether it did. A signer uses it to
    /// take over a request in [`RequestState::Signing`] that nobody touched for a while (its
    /// coordinator stopped); two replicas cannot both take the same one.
    pub async fn claim_stale(
        &self,
        id: RequestId,
        state: RequestState,
        changed_before: i64,
    ) -> Result<bool, StoreError> {
        let changed = sqlx::query(
            "UPDATE requests SET updated_at = $1 WHERE id = $2 AND state = $3 AND updated_at <= $4",
        )
        .bind(self.now())
        .bind(id.to_string())
        .bind(state.as_str())
        .bind(changed_before)
        .execute(&self.pool)
        .await
        .map_err(|e| StoreError::db(format_args!("claiming request {id}"), e))?
        .rows_affected();
        Ok(changed == 1)
    }

    /// Bumps `updated_at` of a request still in `state` (a heartbeat while it is being
    /// signed). Returns false if it is in another state.
    pub async fn touch_request(
        &self,
        id: RequestId,
        state: RequestState,
    ) -> Result<bool, StoreError> {
        let changed =
            sqlx::query("UPDATE requests SET updated_at = $1 WHERE id = $2 AND state = $3")
                .bind(self.now())
                .bind(id.to_string())
                .bind(state.as_str())
                .execute(&self.pool)
                .await
                .map_err(|e| StoreError::db(format_args!("touching request {id}"), e))?
                .rows_affected();
        Ok(changed == 1)
    }

    /// How many requests are in each state (every state, 0 included): one grouped count,
    /// whatever the history's length.
    pub async fn count_requests_by_state(
        &self,
    ) -> Result<std::collections::BTreeMap<&'static str, u64>, StoreError> {
        let rows = sqlx::query("SELECT state, COUNT(*) AS n FROM requests GROUP BY state")
            .fetch_all(&self.pool)
            .await
            .map_err(|e| StoreError::db("counting requests", e))?;
        let mut counts: std::collections::BTreeMap<&'static str, u64> = RequestState::ALL
            .iter()
            .map(|state| (state.as_str(), 0))
            .collect();
        for row in &rows {
            let c = Cols::new(row, "requests");
            let state: RequestState = c.parse("state")?;
            counts.insert(state.as_str(), u64::try_from(c.int("n")?).unwrap_or(0));
        }
        Ok(counts)
    }

    /// Moves every pending or approved request whose expiry is at or before `now` to
    /// [`RequestState::Expired`]; returns their ids, sorted.
    pub async fn expire_due(&self, now: i64) -> Result<Vec<RequestId>, StoreError> {
        let rows = sqlx::query(
            "UPDATE requests SET state = $1, updated_at = $2 \
             WHERE state IN ($3, $4) AND expires_at <= $2 RETURNING id",
        )
        .bind(RequestState::Expired.as_str())
        .bind(now)
        .bind(RequestState::PendingApproval.as_str())
        .bind(RequestState::Approved.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(|e| StoreError::db("expiring requests", e))?;
        let mut ids = rows
            .iter()
            .map(|row| Cols::new(row, "requests").parse::<RequestId>("id"))
            .collect::<Result<Vec<_>, _>>()?;
        ids.sort();
        if !ids.is_empty() {
            tracing::info!(count = ids.len(), "requests expired");
        }
        Ok(ids)
    }
}
