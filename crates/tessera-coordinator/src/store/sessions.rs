//! The `sessions` table: protocol sessions (key generation, signing...) the coordinator started,
//! their outcome and the parties blamed for a failure.

use sqlx::any::AnyRow;
use tessera_wire::{PartyId, SessionId};

use super::row::Cols;
use super::types::{parties_from_text, parties_to_text};
use super::{SessionSubject, Store, StoreError};

/// A session being started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewSession {
    /// The session's id.
    pub session_id: SessionId,
    /// The request or key it works for.
    pub subject: SessionSubject,
    /// The operation, e.g. `keygen` or `sign`.
    pub operation: String,
    /// The parties taking part.
    pub parties: Vec<PartyId>,
    /// When it started (Unix seconds).
    pub started_at: i64,
}

/// How a session ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionOutcome {
    /// It completed. Stored as `ok`.
    Ok,
    /// It failed; the error text is stored as is.
    Failed(String),
}

/// A stored session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionRow {
    /// The session's id.
    pub session_id: SessionId,
    /// The request or key it works for.
    pub subject: SessionSubject,
    /// The operation.
    pub operation: String,
    /// The parties taking part.
    pub parties: Vec<PartyId>,
    /// When it started (Unix seconds).
    pub started_at: i64,
    /// When it ended (Unix seconds), if it has.
    pub finished_at: Option<i64>,
    /// How it ended, if it has.
    pub outcome: Option<SessionOutcome>,
    /// The parties blamed for a failure.
    pub blamed: Vec<PartyId>,
}

const COLUMNS: &str =
    "session_id, subject, operation, parties, started_at, finished_at, outcome, blamed";

fn session_row(row: &AnyRow) -> Result<SessionRow, StoreError> {
    let c = Cols::new(row, "sessions");
    let blamed = match c.opt_text("blamed")? {
        Some(text) => {
            parties_from_text(&text).map_err(|e| StoreError::corrupt("sessions", "blamed", e))?
        }
        None => Vec::new(),
    };
    Ok(SessionRow {
        session_id: c.parse("session_id")?,
        subject: c.parse("subject")?,
        operation: c.text("operation")?,
        parties: c.with("parties", parties_from_text)?,
        started_at: c.int("started_at")?,
        finished_at: c.opt_int("finished_at")?,
        outcome: c.opt_text("outcome")?.map(|text| {
            if text == "ok" {
                SessionOutcome::Ok
            } else {
                SessionOutcome::Failed(text)
            }
        }),
        blamed,
    })
}

impl Store {
    /// Records a session as started. Its id must be new ([`StoreError::Conflict`] otherwise).
    pub async fn insert_session(&self, new: &NewSession) -> Result<(), StoreError> {
        if new.operation.is_empty() || new.parties.is_empty() {
            return Err(StoreError::Invalid {
                what: "session",
                reason: "name the operation and at least one party".into(),
            });
        }
        let inserted = sqlx::query(
            "INSERT INTO sessions (session_id, subject, operation, parties, started_at, \
             finished_at, outcome, blamed) VALUES ($1, $2, $3, $4, $5, NULL, NULL, NULL) \
             ON CONFLICT DO NOTHING",
        )
        .bind(new.session_id.to_string())
        .bind(new.subject.to_string())
        .bind(&new.operation)
        .bind(parties_to_text(&new.parties))
        .bind(new.started_at)
        .execute(&self.pool)
        .await
        .map_err(|e| StoreError::db(format_args!("recording session {}", new.session_id), e))?
        .rows_affected();
        if inserted == 0 {
            return Err(StoreError::Conflict(format!(
                "session {} is already recorded; start each session with a fresh id",
                new.session_id
            )));
        }
        tracing::debug!(session = %new.session_id, subject = %new.subject, operation = %new.operation, "session recorded");
        Ok(())
    }

    /// Records how a running session ended, and whom it blames. Returns false if it had
    /// already ended (the first outcome stays); [`StoreError::NotFound`] if unknown.
    pub async fn finish_session(
        &self,
        session_id: SessionId,
        outcome: &SessionOutcome,
        blamed: &[PartyId],
    ) -> Result<bool, StoreError> {
        let outcome_text = match outcome {
            SessionOutcome::Ok => "ok",
            SessionOutcome::Failed(text) if text.is_empty() || text == "ok" => {
                return Err(StoreError::Invalid {
                    what: "session error",
                    reason: format!(
                        "{text:?} does not describe a failure; give the error's message"
                    ),
                })
            }
            SessionOutcome::Failed(text) => text.as_str(),
        };
        let blamed_text = (!blamed.is_empty()).then(|| parties_to_text(blamed));
        let changed = sqlx::query(
            "UPDATE sessions SET finished_at = $1, outcome = $2, blamed = $3 \
             WHERE session_id = $4 AND finished_at IS NULL",
        )
        .bind(self.now())
        .bind(outcome_text)
        .bind(blamed_text)
        .bind(session_id.to_string())
        .execute(&self.pool)
        .await
        .map_err(|e| StoreError::db(format_args!("finishing session {session_id}"), e))?
        .rows_affected();
        if changed == 1 {
            tracing::info!(session = %session_id, outcome = %outcome_text, blamed = %PartyId::list(blamed), "session finished");
            return Ok(true);
        }
        let exists = sqlx::query("SELECT session_id FROM sessions WHERE session_id = $1")
            .bind(session_id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| StoreError::db(format_args!("reading session {session_id}"), e))?
            .is_some();
        if exists {
            Ok(false)
        } else {
            Err(StoreError::NotFound(format!(
                "no session {session_id}; record the session when it starts"
            )))
        }
    }

    /// The sessions run for `subject`, oldest first.
    pub async fn sessions_for(
        &self,
        subject: SessionSubject,
    ) -> Result<Vec<SessionRow>, StoreError> {
        sqlx::query(&format!(
            "SELECT {COLUMNS} FROM sessions WHERE subject = $1 ORDER BY started_at, session_id"
        ))
        .bind(subject.to_string())
        .fetch_all(&self.pool)
        .await
        .map_err(|e| StoreError::db(format_args!("reading the sessions of {subject}"), e))?
        .iter()
        .map(session_row)
        .collect()
    }
}
