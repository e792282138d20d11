//! The `policies` table (activated policy documents, by revision) and the `policy_proposals`
//! table (proposed changes awaiting approval).

use sqlx::any::AnyRow;

use super::page::{Arg, Page};
use super::row::Cols;
use super::{placeholders, InsertOutcome, ProposalId, ProposalState, Store, StoreError};

/// An activated policy document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyRow {
    /// The document's hash (how requests and nodes pin it).
    pub hash: Vec<u8>,
    /// Its revision; the highest revision is the active policy.
    pub revision: i64,
    /// The document itself.
    pub document: String,
    /// When it was activated (Unix seconds).
    pub activated_at: i64,
}

/// A policy change to propose; it starts [`ProposalState::Pending`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewProposal {
    /// The proposal's id, chosen by the client so retries are idempotent.
    pub id: ProposalId,
    /// The hash of the policy it replaces (`None` when no policy is active yet).
    pub previous_hash: Option<Vec<u8>>,
    /// The proposed document.
    pub document: String,
    /// The proposing principal.
    pub proposed_by: String,
    /// When it was proposed (Unix seconds).
    pub created_at: i64,
    /// When it expires unapproved (Unix seconds).
    pub expires_at: i64,
    /// The canonical encoded proposal that approvers sign; opaque to the store.
    pub body: Vec<u8>,
}

/// A stored policy change proposal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProposalRow {
    /// The proposal's id.
    pub id: ProposalId,
    /// The hash of the policy it replaces.
    pub previous_hash: Option<Vec<u8>>,
    /// The proposed document.
    pub document: String,
    /// The proposing principal.
    pub proposed_by: String,
    /// Where the proposal is in its life.
    pub state: ProposalState,
    /// When it was proposed (Unix seconds).
    pub created_at: i64,
    /// When it expires unapproved (Unix seconds).
    pub expires_at: i64,
    /// When the row last changed (Unix seconds).
    pub updated_at: i64,
    /// The canonical encoded proposal.
    pub body: Vec<u8>,
}

const POLICY_COLUMNS: &str = "hash, revision, document, activated_at";
const PROPOSAL_COLUMNS: &str =
    "id, previous_hash, document, proposed_by, state, created_at, expires_at, updated_at, body";

fn policy_row(row: &AnyRow) -> Result<PolicyRow, StoreError> {
    let c = Cols::new(row, "policies");
    Ok(PolicyRow {
        hash: c.hex("hash")?,
        revision: c.int("revision")?,
        document: c.text("document")?,
        activated_at: c.int("activated_at")?,
    })
}

fn proposal_row(row: &AnyRow) -> Result<ProposalRow, StoreError> {
    let c = Cols::new(row, "policy_proposals");
    Ok(ProposalRow {
        id: c.parse("id")?,
        previous_hash: c.opt_hex("previous_hash")?,
        document: c.text("document")?,
        proposed_by: c.text("proposed_by")?,
        state: c.parse("state")?,
        created_at: c.int("created_at")?,
        expires_at: c.int("expires_at")?,
        updated_at: c.int("updated_at")?,
        body: c.hex("body")?,
    })
}

impl Store {
    /// Activates a policy document. Its revision must be higher than every stored revision
    /// ([`StoreError::Conflict`] otherwise). Idempotent: the same policy again returns
    /// [`InsertOutcome::Existing`].
    pub async fn activate_policy(
        &self,
        policy: &PolicyRow,
    ) -> Result<InsertOutcome<PolicyRow>, StoreError> {
        self.insert_policy(policy, None).await
    }

    /// As [`activate_policy`](Self::activate_policy), for a change proposed against the policy
    /// `previous` (its hash): activated only while `previous` is the latest policy, and only
    /// once per `previous` (a unique index, so two changes proposed against the same policy
    /// cannot both be activated, even by replicas at PostgreSQL's default isolation).
    pub async fn activate_policy_change(
        &self,
        policy: &PolicyRow,
        previous: &[u8],
    ) -> Result<InsertOutcome<PolicyRow>, StoreError> {
        self.insert_policy(policy, Some(previous)).await
    }

    async fn insert_policy(
        &self,
        policy: &PolicyRow,
        previous: Option<&[u8]>,
    ) -> Result<InsertOutcome<PolicyRow>, StoreError> {
        let hash = hex::encode(&policy.hash);
        let previous_hex = previous.map(hex::encode);
        // One statement: the checks and the insert cannot be split by another writer; the
        // unique `previous` settles writers that both passed the checks.
        let inserted = sqlx::query(&format!(
            "INSERT INTO policies ({POLICY_COLUMNS}, previous) SELECT $1, $2, $3, $4, $5 \
             WHERE NOT EXISTS (SELECT 1 FROM policies WHERE revision >= $2) \
             AND ($6 = 0 OR $5 = (SELECT hash FROM policies ORDER BY revision DESC LIMIT 1)) \
             ON CONFLICT DO NOTHING"
        ))
        .bind(&hash)
        .bind(policy.revision)
        .bind(&policy.document)
        .bind(policy.activated_at)
        .bind(previous_hex.clone())
        .bind(i64::from(previous.is_some()))
        .execute(&self.pool)
        .await
        .map_err(|e| {
            StoreError::db(
                format_args!("activating policy revision {}", policy.revision),
                e,
            )
        })?
        .rows_affected();
        if inserted == 1 {
            tracing::info!(revision = policy.revision, %hash, "policy activated");
            return Ok(InsertOutcome::Inserted);
        }
        if let Some(existing) = self.policy_by_hash(&policy.hash).await? {
            return if existing.revision == policy.revision && existing.document == policy.document {
                Ok(InsertOutcome::Existing(existing))
            } else {
                Err(StoreError::Conflict(format!(
                    "policy {hash} is already active as revision {}; a document is activated once",
                    existing.revision
                )))
            };
        }
        let active = self.active_policy().await?;
        if let (Some(previous), Some(active)) = (&previous_hex, &active) {
            if *previous != hex::encode(&active.hash) {
                return Err(StoreError::Conflict(format!(
                    "the change was proposed against policy {previous}, but policy {} \
                     (revision {}) is in force now: propose it again against the policy in force",
                    hex::encode(&active.hash),
                    active.revision
                )));
            }
        }
        Err(StoreError::Conflict(match active {
            Some(active) => format!(
                "policy revision {} is not newer than the latest revision {}: propose the change \
                 against the latest policy with a higher revision",
                policy.revision, active.revision
            ),
            None => format!(
                "policy revision {} could not be activated; retry",
                policy.revision
            ),
        }))
    }

    /// The active policy: the one with the highest revision, if any.
    pub async fn active_policy(&self) -> Result<Option<PolicyRow>, StoreError> {
        sqlx::query(&format!(
            "SELECT {POLICY_COLUMNS} FROM policies ORDER BY revision DESC LIMIT 1"
        ))
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| StoreError::db("reading the active policy", e))?
        .as_ref()
        .map(policy_row)
        .transpose()
    }

    /// The active policy's hash (the one with the highest revision), if any: a cheap check that
    /// a cached document is still the one in force.
    pub async fn active_policy_hash(&self) -> Result<Option<Vec<u8>>, StoreError> {
        sqlx::query("SELECT hash FROM policies ORDER BY revision DESC LIMIT 1")
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| StoreError::db("reading the active policy's hash", e))?
            .as_ref()
            .map(|row| Cols::new(row, "policies").hex("hash"))
            .transpose()
    }

    /// The policy with this hash, active or superseded.
    pub async fn policy_by_hash(&self, hash: &[u8]) -> Result<Option<PolicyRow>, StoreError> {
        let hash = hex::encode(hash);
        sqlx::query(&format!(
            "SELECT {POLICY_COLUMNS} FROM policies WHERE hash = $1"
        ))
        .bind(&hash)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| StoreError::db(format_args!("reading policy {hash}"), e))?
        .as_ref()
        .map(policy_row)
        .transpose()
    }

    /// Stores a policy change proposal. Idempotent by id like
    /// [`insert_request`](Store::insert_request): the id reused for a different proposal is a
    /// [`StoreError::Conflict`].
    pub async fn insert_proposal(
        &self,
        new: &NewProposal,
    ) -> Result<InsertOutcome<ProposalRow>, StoreError> {
        let inserted = sqlx::query(&format!(
            "INSERT INTO policy_proposals ({PROPOSAL_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $6, $8) ON CONFLICT DO NOTHING"
        ))
        .bind(new.id.to_string())
        .bind(new.previous_hash.as_deref().map(hex::encode))
        .bind(&new.document)
        .bind(&new.proposed_by)
        .bind(ProposalState::Pending.as_str())
        .bind(new.created_at)
        .bind(new.expires_at)
        .bind(hex::encode(&new.body))
        .execute(&self.pool)
        .await
        .map_err(|e| StoreError::db(format_args!("inserting policy proposal {}", new.id), e))?
        .rows_affected();
        if inserted == 1 {
            tracing::info!(proposal = %new.id, by = %new.proposed_by, "policy change proposed");
            return Ok(InsertOutcome::Inserted);
        }
        let existing = self.get_proposal(new.id).await?.ok_or_else(|| {
            StoreError::Database(format!(
                "policy proposal {} was neither inserted nor found; retry",
                new.id
            ))
        })?;
        if existing.body == new.body
            && existing.document == new.document
            && existing.previous_hash == new.previous_hash
        {
            Ok(InsertOutcome::Existing(existing))
        } else {
            Err(StoreError::Conflict(format!(
                "the proposal id {} is already used for a different proposal; choose a new \
                 proposal id (a retry must resend exactly the same proposal)",
                new.id
            )))
        }
    }

    /// The proposal with this id, if any.
    pub async fn get_proposal(&self, id: ProposalId) -> Result<Option<ProposalRow>, StoreError> {
        sqlx::query(&format!(
            "SELECT {PROPOSAL_COLUMNS} FROM policy_proposals WHERE id = $1"
        ))
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| StoreError::db(format_args!("reading policy proposal {id}"), e))?
        .as_ref()
        .map(proposal_row)
        .transpose()
    }

    /// Proposals, newest first, optionally only those in `state`, after proposal `after` (the
    /// last of the previous page); at most `limit` (capped at 1000). An unknown `after` is
    /// [`StoreError::NotFound`].
    pub async fn list_proposals(
        &self,
        state: Option<ProposalState>,
        after: Option<ProposalId>,
        limit: u32,
    ) -> Result<Vec<ProposalRow>, StoreError> {
        let mut page = Page::default();
        if let Some(state) = state {
            page.filter("state", Arg::Text(state.as_str().to_owned()));
        }
        if let Some(after) = after {
            let row = self.get_proposal(after).await?.ok_or_else(|| {
                StoreError::NotFound(format!(
                    "no policy proposal {after} to list after; start again from the first page"
                ))
            })?;
            page.after(row.created_at, after.to_string());
        }
        page.fetch(
            &self.pool,
            PROPOSAL_COLUMNS,
            "policy_proposals",
            limit.min(1000),
            "policy proposals",
        )
        .await?
        .iter()
        .map(proposal_row)
        .collect()
    }

    /// Compare-and-set: moves the proposal to `to` if it is in one of `from`, bumping
    /// `updated_at`. Returns false if it is in another state (or `from` is empty);
    /// [`StoreError::NotFound`] if unknown.
    pub async fn transition_proposal(
        &self,
        id: ProposalId,
        from: &[ProposalState],
        to: ProposalState,
    ) -> Result<bool, StoreError> {
        if from.is_empty() {
            return Ok(false);
        }
        let sql = format!(
            "UPDATE policy_proposals SET state = $1, updated_at = $2 WHERE id = $3 \
             AND state IN ({})",
            placeholders(4, from.len())
        );
        let mut query = sqlx::query(&sql)
            .bind(to.as_str())
            .bind(self.now())
            .bind(id.to_string());
        for state in from {
            query = query.bind(state.as_str());
        }
        let changed = query
            .execute(&self.pool)
            .await
            .map_err(|e| StoreError::db(format_args!("moving policy proposal {id} to {to}"), e))?
            .rows_affected();
        if changed == 1 {
            tracing::info!(proposal = %id, state = %to, "policy proposal state changed");
            return Ok(true);
        }
        match self.get_proposal(id).await? {
            Some(_) => Ok(false),
            None => Err(StoreError::NotFound(format!(
                "no policy proposal {id}; check the proposal id (list the proposals to see them)"
            ))),
        }
    }

    /// Moves every pending proposal whose expiry is at or before `now` to
    /// [`ProposalState::Expired`]; returns their ids, sorted.
    pub async fn expire_due_proposals(&self, now: i64) -> Result<Vec<ProposalId>, StoreError> {
        let rows = sqlx::query(
            "UPDATE policy_proposals SET state = $1, updated_at = $2 \
             WHERE state = $3 AND expires_at <= $2 RETURNING id",
        )
        .bind(ProposalState::Expired.as_str())
        .bind(now)
        .bind(ProposalState::Pending.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(|e| StoreError::db("expiring policy proposals", e))?;
        let mut ids = rows
            .iter()
            .map(|row| Cols::new(row, "policy_proposals").parse::<ProposalId>("id"))
            .collect::<Result<Vec<_>, _>>()?;
        ids.sort();
        Ok(ids)
    }
}
