//! Rotating a key's shares without changing the key (`docs/protocols/reshare.md`, ADR 0008):
//! refreshing its committee's shares, or resharing it to another committee or threshold (a
//! party joins or leaves, or a lost party is replaced from the remaining holders).
//!
//! The coordinator asks the dealers for the key's public info, runs the reshare, and only when
//! every participant reported the same confirmation records the new committee and tells every
//! participant to activate. A failed reshare is discarded and changes nothing.

use std::sync::Arc;
use std::time::Duration;

use tessera_audit::NewEvent;
use tessera_mpc::reshare::{Kind, ReshareSetup};
use tessera_node::{Operation, Output, StarterError};
use tessera_wire::{KeyId, PartyId, SessionId};

use super::{now_unix, quorum, to_db, Coordinator, KeyView, ServiceError, SYSTEM};
use crate::store::{
    CommitteeStatus, KeyRow, KeyStatus, NewSession, SessionOutcome, SessionSubject,
};

/// How often activation is sent before the coordinator reports it incomplete.
const ACTIVATION_ATTEMPTS: usize = 3;

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Reshare => "reshare",
        Kind::Refresh => "refresh",
    }
}

fn done_action(kind: Kind) -> &'static str {
    match kind {
        Kind::Reshare => "key.reshared",
        Kind::Refresh => "key.refreshed",
    }
}

impl Coordinator {
    /// Refreshes `key` (name or id): every holder gets a new share of the same key; shares
    /// taken before no longer combine with shares after. Every holder must be reachable.
    pub async fn refresh_key(self: &Arc<Self>, key: &str) -> Result<KeyView, ServiceError> {
        let row = self.ready_key(key).await?;
        let committee = row.committee.clone();
        let threshold = row.threshold;
        self.rotate(row, Kind::Refresh, committee, threshold).await
    }

    /// Reshares `key` (name or id) to `committee` with `threshold`: `threshold` reachable
    /// holders deal, the new committee (which must be set up: its auxiliary info exists)
    /// receives. The public key, addresses and HD chain code do not change.
    pub async fn reshare_key(
        self: &Arc<Self>,
        key: &str,
        committee: Vec<PartyId>,
        threshold: u16,
    ) -> Result<KeyView, ServiceError> {
        let row = self.ready_key(key).await?;
        let committee = self.committee_parties(&committee)?;
        if threshold < 2 || usize::from(threshold) > committee.len() {
            return Err(ServiceError::Invalid(format!(
                "threshold {threshold} for a committee of {}: it must be 2 to {}",
                committee.len(),
                committee.len()
            )));
        }
        let ready = self.committee(&committee).await?;
        if ready.status != CommitteeStatus::Ready {
            return Err(ServiceError::Unavailable(format!(
                "committee {} is {}; set it up before resharing to it",
                PartyId::list(&committee),
                ready.status
            )));
        }
        self.rotate(row, Kind::Reshare, committee, threshold).await
    }

    async fn ready_key(&self, key: &str) -> Result<KeyRow, ServiceError> {
        let row = self.resolve_key(key).await?;
        if row.status != KeyStatus::Ready {
            return Err(ServiceError::Unavailable(format!(
                "key '{}' is {}; only a ready key can be rotated",
                row.name, row.status
            )));
        }
        Ok(row)
    }

    /// Runs one rotation in its own task (it completes and is recorded even if the caller
    /// stops waiting) and returns the key as recorded afterwards.
    async fn rotate(
        self: &Arc<Self>,
        row: KeyRow,
        kind: Kind,
        committee: Vec<PartyId>,
        threshold: u16,
    ) -> Result<KeyView, ServiceError> {
        let this = self.clone();
        let id = row.id;
        tokio::spawn(async move { this.run_rotation(row, kind, committee, threshold).await })
            .await
            .map_err(|e| ServiceError::Unavailable(format!("the rotation task failed: {e}")))??;
        Ok(self.key_row(id).await?.into())
    }

    async fn run_rotation(
        &self,
        row: KeyRow,
        kind: Kind,
        committee: Vec<PartyId>,
        threshold: u16,
    ) -> Result<(), ServiceError> {
        let dealers = match kind {
            Kind::Refresh => row.committee.clone(),
            Kind::Reshare => self
                .health
                .pick(&row.committee, row.threshold, &Default::default())
                .ok_or_else(|| {
                    ServiceError::Unavailable(format!(
                        "key '{}' needs {} dealers of {}",
                        row.name,
                        row.threshold,
                        PartyId::list(&row.committee)
                    ))
                })?,
        };
        let key_info = self.describe_key(&row, &dealers).await?;
        let setup = ReshareSetup {
            kind,
            key: key_info,
            old_committee: row.committee.clone(),
            dealers,
            new_committee: committee.clone(),
            new_threshold: threshold,
        };
        let participants = setup.participants();
        let name = kind_name(kind);
        self.audit_note(
            NewEvent::new(
                SYSTEM,
                format!("key.{name}_started"),
                format!("key:{}", row.id),
            )
            .detail("committee", PartyId::list(&row.committee))
            .detail("dealers", PartyId::list(&setup.dealers))
            .detail("new_committee", PartyId::list(&committee))
            .detail("new_threshold", threshold),
        );
        let operation = Operation::Reshare {
            key: row.id,
            setup: setup.clone(),
        };
        let (session, outcome) = self
            .run_key_session(row.id, name, &participants, operation)
            .await?;
        let confirmation = match outcome {
            Ok(Output::Reshare { confirmation }) => confirmation,
            other => {
                let error = match other {
                    Ok(output) => format!("the {name} returned {output:?}"),
                    Err(e) => e.to_string(),
                };
                // Nothing is active yet: every pending share is dropped, the key unchanged.
                let _ = self
                    .finish_reshare(row.id, session, &participants, [0; 32], false)
                    .await;
                self.audit_note(
                    NewEvent::new(
                        SYSTEM,
                        format!("key.{name}_failed"),
                        format!("key:{}", row.id),
                    )
                    .detail("session", session)
                    .detail("error", &error),
                );
                return Err(ServiceError::Unavailable(format!(
                    "the {name} of key '{}' failed and was discarded; the key is unchanged: {error}",
                    row.name
                )));
            }
        };
        // The commit point: every participant holds the same result.
        self.store
            .set_key_committee(row.id, &committee, threshold)
            .await?;
        if let Some(pool) = &self.pool {
            pool.forget(row.id);
            pool.track(row.id, &quorum::preferred(&committee, threshold));
        }
        let mut last = None;
        for attempt in 0..ACTIVATION_ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            match self
                .finish_reshare(row.id, session, &participants, confirmation, true)
                .await
            {
                Ok(()) => {
                    last = None;
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        if let Some(e) = last {
            self.audit_note(
                NewEvent::new(
                    SYSTEM,
                    "key.activation_incomplete",
                    format!("key:{}", row.id),
                )
                .detail("session", session)
                .detail("error", &e)
                .detail("blamed", PartyId::list(&e.blamed())),
            );
            return Err(ServiceError::Unavailable(format!(
                "key '{}': the {name} succeeded and is recorded, but activation did not reach \
                 every participant ({e}); the parties named must be brought back and sent \
                 activation for session {session}",
                row.name
            )));
        }
        tracing::info!(key = %row.id, %name, committee = %PartyId::list(&committee), threshold, "key rotated");
        self.audit_note(
            NewEvent::new(SYSTEM, done_action(kind), format!("key:{}", row.id))
                .detail("session", session)
                .detail("committee", PartyId::list(&committee))
                .detail("threshold", threshold)
                .detail("confirmation", hex::encode(confirmation)),
        );
        Ok(())
    }

    /// The key's public info as the dealers hold it; they must agree with each other and
    /// with the recorded committee, threshold and public key.
    async fn describe_key(
        &self,
        row: &KeyRow,
        dealers: &[PartyId],
    ) -> Result<tessera_mpc::reshare::KeyInfo, ServiceError> {
        let outcome = self
            .starter
            .run(
                self.control.as_ref(),
                dealers,
                Operation::DescribeKey { key: row.id },
                self.settings.session_deadline,
            )
            .await;
        let unavailable = |m: String| ServiceError::Unavailable(m);
        let (committee, threshold, key_info) = match outcome {
            Ok(Output::KeyInfo {
                committee,
                threshold,
                key_info,
            }) => (committee, threshold, key_info),
            Ok(other) => {
                return Err(unavailable(format!(
                    "describing the key returned {other:?}"
                )))
            }
            Err(e) => {
                self.health.failed(&e.blamed());
                return Err(unavailable(format!(
                    "the holders of key '{}' could not describe it: {e}",
                    row.name
                )));
            }
        };
        if committee != row.committee || threshold != row.threshold {
            return Err(ServiceError::corrupt(format_args!(
                "key {}: the nodes hold it as {threshold}-of-{} on {}, the coordinator recorded {}-of-{} on {}",
                row.id,
                committee.len(),
                PartyId::list(&committee),
                row.threshold,
                row.committee.len(),
                PartyId::list(&row.committee)
            )));
        }
        let info: tessera_mpc::reshare::KeyInfo = serde_json::from_str(&key_info)
            .map_err(|e| unavailable(format!("the nodes' key info does not decode: {e}")))?;
        if row.public_key.as_deref() != Some(&info.shared_public_key.to_bytes(true)[..]) {
            return Err(ServiceError::corrupt(format_args!(
                "key {}: the nodes' public key differs from the recorded one",
                row.id
            )));
        }
        Ok(info)
    }

    /// Sends activate or discard for reshare `session` to its participants.
    async fn finish_reshare(
        &self,
        key: KeyId,
        session: SessionId,
        participants: &[PartyId],
        confirmation: [u8; 32],
        activate: bool,
    ) -> Result<(), StarterError> {
        let operation = Operation::FinishReshare {
            key,
            reshare: session,
            confirmation,
            activate,
        };
        self.starter
            .run(
                self.control.as_ref(),
                participants,
                operation,
                self.settings.session_deadline,
            )
            .await
            .map(|_| ())
    }

    /// Runs a session about `key`, recorded in the sessions table and the counters.
    async fn run_key_session(
        &self,
        key: KeyId,
        name: &str,
        parties: &[PartyId],
        operation: Operation,
    ) -> Result<(SessionId, Result<Output, StarterError>), ServiceError> {
        let (start, signed) = self.starter.start(parties, operation);
        self.store
            .insert_session(&NewSession {
                session_id: start.session,
                subject: SessionSubject::Key(key),
                operation: name.into(),
                parties: parties.to_vec(),
                started_at: to_db(now_unix()),
            })
            .await?;
        let began = std::time::Instant::now();
        let outcome = match self
            .control
            .run(&start, &signed, self.settings.session_deadline)
            .await
        {
            Ok(outcomes) => self.starter.check(&start, &outcomes),
            Err(e) => Err(e),
        };
        self.counters
            .session(name, outcome.is_ok(), began.elapsed());
        match &outcome {
            Ok(_) => {
                self.store
                    .finish_session(start.session, &SessionOutcome::Ok, &[])
                    .await?;
                self.health.succeeded(parties);
            }
            Err(e) => {
                let blamed = e.blamed();
                self.store
                    .finish_session(
                        start.session,
                        &SessionOutcome::Failed(e.to_string()),
                        &blamed,
                    )
                    .await?;
                self.health.failed(&blamed);
            }
        }
        Ok((start.session, outcome))
    }
}
