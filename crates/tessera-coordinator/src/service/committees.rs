//! Committees (admin operations): the party sets that share auxiliary info, set up once with
//! the slow aux-info protocol and reused by every key of the committee.

use std::collections::BTreeSet;
use std::sync::Arc;

use tessera_audit::NewEvent;
use tessera_control::{Operation, Output};
use tessera_wire::PartyId;

use super::{now_unix, to_db, CommitteeView, Coordinator, ServiceError, SYSTEM};
use crate::store::{CommitteeRow, CommitteeStatus, InsertOutcome};

impl From<CommitteeRow> for CommitteeView {
    fn from(row: CommitteeRow) -> Self {
        CommitteeView {
            parties: row.parties,
            status: row.status,
            error: row.error,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

impl Coordinator {
    /// Checks a committee's parties (at least two, distinct, all in the roster) and returns
    /// them in protocol order (ascending).
    pub(crate) fn committee_parties(
        &self,
        parties: &[PartyId],
    ) -> Result<Vec<PartyId>, ServiceError> {
        let set: BTreeSet<PartyId> = parties.iter().copied().collect();
        if set.len() != parties.len() {
            return Err(ServiceError::Invalid(format!(
                "the committee {} names a party twice",
                PartyId::list(parties)
            )));
        }
        if set.len() < 2 {
            return Err(ServiceError::Invalid(
                "a committee needs at least two parties".into(),
            ));
        }
        let roster = self.starter.roster();
        if let Some(p) = set.iter().find(|p| roster.entry(**p).is_none()) {
            return Err(ServiceError::Invalid(format!(
                "{p} is not in the roster; a committee is made of roster parties"
            )));
        }
        Ok(set.into_iter().collect())
    }

    /// Sets up a committee: runs auxiliary info generation on its parties (each node uses one
    /// prime set from its pool; minutes if a pool is empty) and records the committee `ready`.
    /// The parties are put in ascending order. Idempotent: a ready committee is returned as is;
    /// one being set up is a [`ServiceError::Conflict`]; a failed one is tried again.
    ///
    /// The protocol runs in its own task: if the caller stops waiting, the set-up still
    /// completes and is recorded.
    pub async fn setup_committee(
        self: &Arc<Self>,
        parties: Vec<PartyId>,
    ) -> Result<CommitteeView, ServiceError> {
        let parties = self.committee_parties(&parties)?;
        let name = PartyId::list(&parties);
        match self
            .store
            .insert_committee(&parties, CommitteeStatus::Creating, to_db(now_unix()))
            .await?
        {
            InsertOutcome::Inserted => {}
            InsertOutcome::Existing(row) => match row.status {
                CommitteeStatus::Ready => return Ok(row.into()),
                CommitteeStatus::Creating => {
                    return Err(ServiceError::Conflict(format!(
                        "committee {name} is being set up; wait for it (list the committees \
                         to see its status)"
                    )))
                }
                CommitteeStatus::Failed => {
                    if !self
                        .store
                        .transition_committee(
                            &parties,
                            &[CommitteeStatus::Failed],
                            CommitteeStatus::Creating,
                            None,
                        )
                        .await?
                    {
                        return Err(ServiceError::Conflict(format!(
                            "committee {name} is being set up again by someone else; wait for it"
                        )));
                    }
                }
            },
        }
        tracing::info!(committee = %name, "committee set-up started");
        self.audit_note(NewEvent::new(
            SYSTEM,
            "committee.setup_started",
            format!("committee:{name}"),
        ));
        let this = self.clone();
        let run_parties = parties.clone();
        let task = tokio::spawn(async move {
            let began = std::time::Instant::now();
            let outcome = this
                .starter
                .run(
                    this.control.as_ref(),
                    &run_parties,
                    Operation::AuxInfo,
                    this.settings.aux_info_deadline,
                )
                .await;
            this.counters
                .session("aux_info", outcome.is_ok(), began.elapsed());
            let (status, error) = match outcome {
                Ok(Output::AuxInfo) => (CommitteeStatus::Ready, None),
                Ok(other) => (
                    CommitteeStatus::Failed,
                    Some(format!(
                        "auxiliary info returned {other:?}, not auxiliary info"
                    )),
                ),
                Err(e) => (CommitteeStatus::Failed, Some(e.to_string())),
            };
            if let Some(error) = &error {
                tracing::warn!(committee = %PartyId::list(&run_parties), %error, "committee set-up failed");
            }
            let mut event = NewEvent::new(
                SYSTEM,
                format!("committee.{status}"),
                format!("committee:{}", PartyId::list(&run_parties)),
            );
            if let Some(error) = &error {
                event = event.detail("error", error);
            }
            this.audit_note(event);
            this.store
                .transition_committee(
                    &run_parties,
                    &[CommitteeStatus::Creating],
                    status,
                    error.as_deref(),
                )
                .await
        });
        task.await
            .map_err(|e| ServiceError::Unavailable(format!("the set-up task failed: {e}")))??;
        let row = self.committee(&parties).await?;
        match row.status {
            CommitteeStatus::Ready => Ok(row.into()),
            _ => Err(ServiceError::Unavailable(format!(
                "setting up committee {name} failed: {}; fix the cause (are the nodes running, \
                 do their prime pools hold a prime set?) and set it up again",
                row.error.as_deref().unwrap_or("no reason recorded")
            ))),
        }
    }

    /// Records a committee as ready **without running auxiliary info**: for a committee whose
    /// auxiliary info the nodes already hold because it was installed out of band (the
    /// INSECURE fixture committees of tests and demos, or a committee carried over from an
    /// earlier deployment). If the nodes do not hold it, key generation on the committee
    /// fails. Idempotent.
    pub async fn register_committee_ready(
        &self,
        parties: Vec<PartyId>,
    ) -> Result<CommitteeView, ServiceError> {
        let parties = self.committee_parties(&parties)?;
        match self
            .store
            .insert_committee(&parties, CommitteeStatus::Ready, to_db(now_unix()))
            .await?
        {
            InsertOutcome::Inserted => {}
            InsertOutcome::Existing(row) if row.status == CommitteeStatus::Ready => {}
            InsertOutcome::Existing(_) => {
                self.store
                    .transition_committee(
                        &parties,
                        &[CommitteeStatus::Creating, CommitteeStatus::Failed],
                        CommitteeStatus::Ready,
                        None,
                    )
                    .await?;
            }
        }
        tracing::warn!(committee = %PartyId::list(&parties), "committee registered as ready without running auxiliary info");
        Ok(self.committee(&parties).await?.into())
    }

    /// The committee of these parties (any order).
    pub async fn get_committee(&self, parties: &[PartyId]) -> Result<CommitteeView, ServiceError> {
        let parties = self.committee_parties(parties)?;
        Ok(self.committee(&parties).await?.into())
    }

    /// Every committee, oldest first.
    pub async fn list_committees(&self) -> Result<Vec<CommitteeView>, ServiceError> {
        Ok(self
            .store
            .list_committees()
            .await?
            .into_iter()
            .map(Into::into)
            .collect())
    }

    pub(crate) async fn committee(
        &self,
        parties: &[PartyId],
    ) -> Result<CommitteeRow, ServiceError> {
        self.store.get_committee(parties).await?.ok_or_else(|| {
            ServiceError::NotFound(format!(
                "no committee {}; set it up first",
                PartyId::list(parties)
            ))
        })
    }
}
