//! The writes of a request's signing that belong together, each in one transaction (one
//! commit, one flush of the database's log, where they were several): starting an attempt,
//! and recording a signature.

use tessera_wire::{KeyId, PartyId, RequestId, SessionId};

use super::spend_chain::to_i64;
use super::types::parties_to_text;
use super::{NewSession, RequestState, Store, StoreError};

/// What a successful signing session leaves in the store.
#[derive(Clone, Debug)]
pub struct SignedRequest<'a> {
    /// The request.
    pub request: RequestId,
    /// The session that signed it.
    pub session: SessionId,
    /// Parties of the session that reported a signature that does not verify.
    pub blamed: &'a [PartyId],
    /// The agreed signature, kept in the request's link of its key's spend chain.
    pub signature: &'a [u8],
    /// The key signed with.
    pub key: KeyId,
    /// The signers that now hold the key's spend chain up to the request's place, and that
    /// place.
    pub heads: &'a [(PartyId, u64)],
    /// The request's result (the signed transaction or the signature), which moves it to
    /// `signed`; `None` leaves the request as it is (its result could not be assembled).
    pub result: Option<&'a [u8]>,
}

impl Store {
    /// Counts one more signing attempt of request `id` and records its session as started, in
    /// one transaction. Returns the new count; [`StoreError::Conflict`] if the session id is
    /// not new, [`StoreError::NotFound`] if the request is unknown (nothing is changed then).
    pub async fn begin_attempt(
        &self,
        id: RequestId,
        session: &NewSession,
    ) -> Result<u32, StoreError> {
        if session.operation.is_empty() || session.parties.is_empty() {
            return Err(StoreError::Invalid {
                what: "session",
                reason: "name the operation and at least one party".into(),
            });
        }
        let what = format!("starting an attempt of request {id}");
        let mut tx = self.begin_write(&what).await?;
        let attempts: Option<i64> = sqlx::query_scalar(
            "UPDATE requests SET attempts = attempts + 1, updated_at = $1 WHERE id = $2 \
             RETURNING attempts",
        )
        .bind(self.now())
        .bind(id.to_string())
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| StoreError::db(format_args!("counting an attempt of request {id}"), e))?;
        let attempts = attempts.ok_or_else(|| StoreError::NotFound(format!("no request {id}")))?;
        let inserted = sqlx::query(
            "INSERT INTO sessions (session_id, subject, operation, parties, started_at, \
             finished_at, outcome, blamed) VALUES ($1, $2, $3, $4, $5, NULL, NULL, NULL) \
             ON CONFLICT DO NOTHING",
        )
        .bind(session.session_id.to_string())
        .bind(session.subject.to_string())
        .bind(&session.operation)
        .bind(parties_to_text(&session.parties))
        .bind(session.started_at)
        .execute(&mut *tx)
        .await
        .map_err(|e| StoreError::db(format_args!("recording session {}", session.session_id), e))?
        .rows_affected();
        if inserted == 0 {
            return Err(StoreError::Conflict(format!(
                "session {} is already recorded; start each session with a fresh id",
                session.session_id
            )));
        }
        tx.commit()
            .await
            .map_err(|e| StoreError::db(format_args!("{what}"), e))?;
        u32::try_from(attempts).map_err(|_| {
            StoreError::corrupt(
                "requests",
                "attempts",
                format!("{attempts} is out of range"),
            )
        })
    }

    /// Records a successful signing in one transaction: the session ends `ok` (blaming the
    /// parties that reported a bad signature), the signature goes into the request's spend
    /// link, the signers' spend chain heads advance, and, given a result, the request moves
    /// from `signing` to `signed` with it. Returns whether the request moved: false without a
    /// result, or if it had left `signing` meanwhile (the rest is recorded all the same: it
    /// happened).
    pub async fn record_signed(&self, signed: &SignedRequest<'_>) -> Result<bool, StoreError> {
        let id = signed.request;
        let what = format!("recording the signature of request {id}");
        let now = self.now();
        let mut tx = self.begin_write(&what).await?;
        let blamed = (!signed.blamed.is_empty()).then(|| parties_to_text(signed.blamed));
        sqlx::query(
            "UPDATE sessions SET finished_at = $1, outcome = 'ok', blamed = $2 \
             WHERE session_id = $3 AND finished_at IS NULL",
        )
        .bind(now)
        .bind(blamed)
        .bind(signed.session.to_string())
        .execute(&mut *tx)
        .await
        .map_err(|e| StoreError::db(format_args!("finishing session {}", signed.session), e))?;
        sqlx::query("UPDATE spend_links SET signature = $1 WHERE request_id = $2")
            .bind(hex::encode(signed.signature))
            .bind(id.to_string())
            .execute(&mut *tx)
            .await
            .map_err(|e| StoreError::db(format_args!("{what}"), e))?;
        for (party, head) in signed.heads {
            sqlx::query(
                "INSERT INTO spend_heads (key_id, party, head) VALUES ($1, $2, $3) \
                 ON CONFLICT (key_id, party) DO UPDATE SET head = excluded.head",
            )
            .bind(signed.key.to_string())
            .bind(i64::from(party.0))
            .bind(to_i64(*head, "spend chain place")?)
            .execute(&mut *tx)
            .await
            .map_err(|e| {
                StoreError::db(
                    format_args!(
                        "recording where {party}'s spend chain of key {} stands",
                        signed.key
                    ),
                    e,
                )
            })?;
        }
        let mut moved = 0;
        if let Some(result) = signed.result {
            moved = sqlx::query(
                "UPDATE requests SET state = $1, updated_at = $2, result = $3 \
                 WHERE id = $4 AND state = $5",
            )
            .bind(RequestState::Signed.as_str())
            .bind(now)
            .bind(hex::encode(result))
            .bind(id.to_string())
            .bind(RequestState::Signing.as_str())
            .execute(&mut *tx)
            .await
            .map_err(|e| StoreError::db(format_args!("moving request {id} to signed"), e))?
            .rows_affected();
        }
        tx.commit()
            .await
            .map_err(|e| StoreError::db(format_args!("{what}"), e))?;
        if moved == 1 {
            tracing::info!(request = %id, session = %signed.session, "request state changed to signed");
        }
        Ok(moved == 1)
    }
}
