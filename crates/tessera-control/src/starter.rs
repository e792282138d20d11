//! The starter: the coordinator's side of a session, without policy (that comes with the
//! coordinator service). It signs a [`SessionStart`] with a roster coordinator key, hands it to
//! the nodes over a [`ControlChannel`], and checks what comes back: every outcome signed by its
//! party, every party reporting, all agreeing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tessera_channel::identity::CoordinatorKey;
use tessera_channel::Roster;
use tessera_wire::{PartyId, SessionId};

use crate::messages::{
    now_unix, ControlError, Failure, Operation, Output, SessionStart, SignedOutcome, SignedStart,
};

/// Why a session did not produce an agreed result.
#[derive(Debug, thiserror::Error)]
pub enum StarterError {
    /// Some parties reported failure.
    #[error("session {session} failed: {}", describe(.failures))]
    Failed {
        /// The session.
        session: SessionId,
        /// Each failing party's report.
        failures: Vec<(PartyId, Failure)>,
    },
    /// Some parties did not report in time.
    #[error("session {session}: no outcome from {} before the deadline; are those nodes running?", PartyId::list(.missing))]
    NoOutcome {
        /// The session.
        session: SessionId,
        /// Parties that did not report.
        missing: Vec<PartyId>,
    },
    /// The parties reported different results.
    #[error("session {0}: the parties reported different results")]
    Disagreement(SessionId),
    /// An outcome did not verify.
    #[error("an outcome was refused: {0}")]
    Outcome(#[from] ControlError),
    /// The control channel failed.
    #[error("control channel: {0}")]
    Channel(String),
}

impl StarterError {
    /// Parties blamed by any failing party, or missing.
    pub fn blamed(&self) -> Vec<PartyId> {
        let mut blamed: Vec<PartyId> = match self {
            StarterError::Failed { failures, .. } => failures
                .iter()
                .flat_map(|(_, f)| f.blamed.iter().copied())
                .collect(),
            StarterError::NoOutcome { missing, .. } => missing.clone(),
            _ => Vec::new(),
        };
        blamed.sort();
        blamed.dedup();
        blamed
    }
}

fn describe(failures: &[(PartyId, Failure)]) -> String {
    failures
        .iter()
        .map(|(p, f)| format!("{p}: {}", f.message))
        .collect::<Vec<_>>()
        .join("; ")
}

/// How starts reach the nodes and outcomes come back.
#[async_trait]
pub trait ControlChannel: Send + Sync {
    /// Delivers `signed` to the session's parties and returns the outcomes received before
    /// `deadline` (possibly fewer than the parties).
    async fn run(
        &self,
        start: &SessionStart,
        signed: &SignedStart,
        deadline: Duration,
    ) -> Result<Vec<SignedOutcome>, StarterError>;
}

/// Signs starts and checks outcomes.
pub struct Starter {
    key: Arc<CoordinatorKey>,
    roster: Roster,
    /// How long a start stays valid.
    pub lifetime: Duration,
}

impl Starter {
    /// A starter with a coordinator key listed in `roster`.
    pub fn new(key: CoordinatorKey, roster: Roster) -> Result<Self, ControlError> {
        if roster.coordinator(key.name()).is_none() {
            return Err(ControlError::UnknownCoordinator(key.name().to_owned()));
        }
        Ok(Starter {
            key: Arc::new(key),
            roster,
            lifetime: Duration::from_secs(300),
        })
    }

    /// The coordinator key as the signer of the coordinator's audit log (the same roster key,
    /// under the audit log's own signature domain).
    pub fn audit_signer(&self) -> Box<dyn tessera_audit::AuditSigner> {
        Box::new(self.key.clone())
    }

    /// The roster.
    pub fn roster(&self) -> &Roster {
        &self.roster
    }

    /// A signed start of a fresh session.
    pub fn start(&self, parties: &[PartyId], operation: Operation) -> (SessionStart, SignedStart) {
        let issued_at = now_unix();
        let start = SessionStart {
            cluster: self.roster.cluster.clone(),
            roster: self.roster.hash().0,
            session: SessionId::random(),
            parties: parties.to_vec(),
            issued_at,
            expires_at: issued_at + self.lifetime.as_secs(),
            operation,
        };
        let signed = SignedStart::sign(&start, &self.key);
        (start, signed)
    }

    /// Signs an already built start (its session id must be fresh).
    pub fn sign(&self, start: &SessionStart) -> SignedStart {
        SignedStart::sign(start, &self.key)
    }

    /// Runs one session over `channel` and returns every party's verified report, whatever
    /// it says (see [`collect`](Self::collect)).
    pub async fn run_collect(
        &self,
        channel: &dyn ControlChannel,
        parties: &[PartyId],
        operation: Operation,
        deadline: Duration,
    ) -> Result<(SessionStart, Reports), StarterError> {
        let (start, signed) = self.start(parties, operation);
        let outcomes = channel.run(&start, &signed, deadline).await?;
        let reports = self.collect(&start, &outcomes);
        Ok((start, reports))
    }

    /// The outcomes of `start` by party: each signed by its party, of this session and from
    /// one of its parties; anything else is ignored (logged), so one party's forged or damaged
    /// outcome cannot spoil the others' reports. Parties without a valid report are absent
    /// (and so count as missing).
    pub fn collect(&self, start: &SessionStart, outcomes: &[SignedOutcome]) -> Reports {
        let mut reports = BTreeMap::new();
        for signed in outcomes {
            let outcome = match signed.verify(&self.roster) {
                Ok(outcome) => outcome,
                Err(e) => {
                    tracing::warn!(session = %start.session, party = %signed.party, error = %e, "an outcome that does not verify was ignored");
                    continue;
                }
            };
            if outcome.session != start.session || !start.parties.contains(&outcome.party) {
                continue;
            }
            reports.insert(
                outcome.party,
                Report {
                    result: outcome.result,
                    signed: signed.clone(),
                },
            );
        }
        reports
    }

    /// Runs one session over `channel` and returns the result all parties agree on.
    pub async fn run(
        &self,
        channel: &dyn ControlChannel,
        parties: &[PartyId],
        operation: Operation,
        deadline: Duration,
    ) -> Result<Output, StarterError> {
        let (start, signed) = self.start(parties, operation);
        let outcomes = channel.run(&start, &signed, deadline).await?;
        self.check(&start, &outcomes)
    }

    /// Checks the outcomes of `start`: each signed by its party, all parties present, all
    /// successful and equal.
    pub fn check(
        &self,
        start: &SessionStart,
        outcomes: &[SignedOutcome],
    ) -> Result<Output, StarterError> {
        agreed(start, self.collect(start, outcomes))
    }
}

/// One party's verified report of a session.
#[derive(Clone, Debug)]
pub struct Report {
    /// What it reported.
    pub result: Result<Output, Failure>,
    /// The signed outcome it came in (to pass on as part of a certificate).
    pub signed: SignedOutcome,
}

/// Every reporting party's report of one session.
pub type Reports = BTreeMap<PartyId, Report>;

/// Whether every party of `start` reported success; otherwise the failures (with the
/// parties' reports) or who is missing.
pub fn all_succeeded(start: &SessionStart, reports: &Reports) -> Result<(), StarterError> {
    let failures: Vec<(PartyId, Failure)> = reports
        .iter()
        .filter_map(|(p, r)| r.result.as_ref().err().map(|f| (*p, f.clone())))
        .collect();
    if !failures.is_empty() {
        return Err(StarterError::Failed {
            session: start.session,
            failures,
        });
    }
    let missing: Vec<PartyId> = start
        .parties
        .iter()
        .copied()
        .filter(|p| !reports.contains_key(p))
        .collect();
    if !missing.is_empty() || reports.is_empty() {
        return Err(StarterError::NoOutcome {
            session: start.session,
            missing,
        });
    }
    Ok(())
}

/// The result every party of `start` reported, or why there is none: failures (with the
/// parties' reports), missing parties, or disagreement.
pub fn agreed(start: &SessionStart, reports: Reports) -> Result<Output, StarterError> {
    all_succeeded(start, &reports)?;
    let mut outputs = reports.into_values().filter_map(|r| r.result.ok());
    let first = outputs.next().ok_or(StarterError::NoOutcome {
        session: start.session,
        missing: Vec::new(),
    })?;
    if outputs.any(|o| o != first) {
        return Err(StarterError::Disagreement(start.session));
    }
    Ok(first)
}
