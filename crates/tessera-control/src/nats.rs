//! The NATS [`ControlChannel`]: a roster coordinator's user publishes signed starts on
//! `tessera.<c>.ctrl` and collects signed outcomes from `tessera.<c>.result.<session>.<party>`,
//! each party's on its own subject (the broker lets a party publish only on its own). An
//! outcome on another party's subject than its signer's, or from a non-participant, is ignored
//! and counted ([`NatsControl::refused`]).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use tessera_wire::{subject, ClusterId};

use crate::messages::{
    SessionOutcome, SessionStart, SignedOutcome, SignedStart, MAX_CONTROL_MESSAGE,
};
use crate::starter::{ControlChannel, StarterError};

/// After one party reported failure, how long to wait for the others' reports.
pub const FAILURE_GRACE: Duration = Duration::from_secs(2);

/// Publishes starts on `tessera.<c>.ctrl` and collects outcomes from
/// `tessera.<c>.result.<session>`, as a roster coordinator's NATS user.
pub struct NatsControl {
    client: async_nats::Client,
    cluster: ClusterId,
    refused: Arc<AtomicU64>,
}

impl NatsControl {
    /// Control over a connected coordinator client.
    pub fn new(client: async_nats::Client, cluster: ClusterId) -> Self {
        NatsControl {
            client,
            cluster,
            refused: Arc::default(),
        }
    }

    /// Outcomes ignored so far: malformed, from a non-participant, or on another party's
    /// result subject than their signer's.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

#[async_trait]
impl ControlChannel for NatsControl {
    async fn run(
        &self,
        start: &SessionStart,
        signed: &SignedStart,
        deadline: Duration,
    ) -> Result<Vec<SignedOutcome>, StarterError> {
        let channel = |e: String| StarterError::Channel(e);
        // Subscribe before publishing on the same connection: the server processes both in
        // order, so no outcome can be published before the subscription exists.
        let mut results = self
            .client
            .subscribe(subject::session_results(&self.cluster, start.session))
            .await
            .map_err(|e| channel(e.to_string()))?;
        self.client
            .publish(subject::ctrl(&self.cluster), signed.to_bytes().into())
            .await
            .map_err(|e| channel(e.to_string()))?;
        self.client
            .flush()
            .await
            .map_err(|e| channel(e.to_string()))?;
        let mut outcomes = BTreeMap::new();
        let mut until = tokio::time::Instant::now() + deadline;
        while outcomes.len() < start.parties.len() {
            let message = match tokio::time::timeout_at(until, results.next()).await {
                Ok(Some(message)) => message,
                Ok(None) | Err(_) => break,
            };
            let sender = subject::parse_result_sender(
                &self.cluster,
                start.session,
                message.subject.as_str(),
            );
            let outcome = match SignedOutcome::from_bytes(&message.payload) {
                Ok(o) if start.parties.contains(&o.party) && sender == Some(o.party) => o,
                Ok(o) => {
                    tracing::warn!(party = %o.party, subject = %message.subject, "outcome from a non-participant or on another party's subject ignored");
                    self.refused.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "malformed outcome ignored");
                    self.refused.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
            };
            // Once a party reports failure the session is lost: give the others a moment to
            // report theirs (their blame is useful), not the whole deadline. The starter
            // verifies every outcome; this peek only shortens the wait.
            let failed = tessera_wire::decode::<SessionOutcome>(&outcome.body, MAX_CONTROL_MESSAGE)
                .map(|o| o.result.is_err())
                .unwrap_or(false);
            if failed {
                until = until.min(tokio::time::Instant::now() + FAILURE_GRACE);
            }
            outcomes.insert(outcome.party, outcome);
        }
        let _ = results.unsubscribe().await;
        Ok(outcomes.into_values().collect())
    }
}
