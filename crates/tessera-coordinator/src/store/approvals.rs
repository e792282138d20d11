//! The `approvals` table: approvers' signed decisions on requests and policy proposals.

use sqlx::any::AnyRow;

use super::row::Cols;
use super::{ApprovalSubject, Decision, Store, StoreError};

/// An approver's signed decision on a request or a policy proposal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Approval {
    /// What is decided on.
    pub subject: ApprovalSubject,
    /// The deciding principal.
    pub approver: String,
    /// In favour or against.
    pub decision: Decision,
    /// The approver's signature over the canonical subject.
    pub signature: Vec<u8>,
    /// When the decision was received (Unix seconds).
    pub created_at: i64,
}

/// The result of [`Store::add_approval`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AddApproval {
    /// The decision is recorded.
    Added,
    /// The approver had already decided on this subject; here is that decision, unchanged.
    Duplicate(Approval),
}

const COLUMNS: &str = "subject, approver, decision, signature, created_at";

fn approval_row(row: &AnyRow) -> Result<Approval, StoreError> {
    let c = Cols::new(row, "approvals");
    Ok(Approval {
        subject: c.parse("subject")?,
        approver: c.text("approver")?,
        decision: c.parse("decision")?,
        signature: c.hex("signature")?,
        created_at: c.int("created_at")?,
    })
}

impl Store {
    /// Records a decision. A principal decides once per subject: a second decision (even a
    /// different one) is not stored and returns [`AddApproval::Duplicate`] with the first.
    pub async fn add_approval(&self, approval: &Approval) -> Result<AddApproval, StoreError> {
        let subject = approval.subject.to_string();
        let inserted = sqlx::query(&format!(
            "INSERT INTO approvals ({COLUMNS}) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING"
        ))
        .bind(&subject)
        .bind(&approval.approver)
        .bind(approval.decision.as_str())
        .bind(hex::encode(&approval.signature))
        .bind(approval.created_at)
        .execute(&self.pool)
        .await
        .map_err(|e| StoreError::db(format_args!("recording a decision on {subject}"), e))?
        .rows_affected();
        if inserted == 1 {
            tracing::info!(%subject, approver = %approval.approver, decision = %approval.decision, "decision recorded");
            return Ok(AddApproval::Added);
        }
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM approvals WHERE subject = $1 AND approver = $2"
        ))
        .bind(&subject)
        .bind(&approval.approver)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| StoreError::db(format_args!("reading a decision on {subject}"), e))?;
        Ok(AddApproval::Duplicate(approval_row(&row)?))
    }

    /// Every decision on `subject`, oldest first.
    pub async fn approvals_for(
        &self,
        subject: ApprovalSubject,
    ) -> Result<Vec<Approval>, StoreError> {
        sqlx::query(&format!(
            "SELECT {COLUMNS} FROM approvals WHERE subject = $1 ORDER BY created_at, approver"
        ))
        .bind(subject.to_string())
        .fetch_all(&self.pool)
        .await
        .map_err(|e| StoreError::db(format_args!("reading the decisions on {subject}"), e))?
        .iter()
        .map(approval_row)
        .collect()
    }
}
