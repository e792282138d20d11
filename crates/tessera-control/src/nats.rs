//! The NATS [`ControlChannel`]: a roster coordinator's user publishes signed starts on
//! `tessera.<c>.ctrl` and collects signed outcomes from `tessera.<c>.result.<session>`.

use std::collections::BTreeMap;
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
}

impl NatsControl {
    /// Control over a connected coordinator client.
    pub fn new(client: async_nats::Client, cluster: ClusterId) -> Self {
        NatsControl { client, cluster }
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
            .subscribe(subject::result(&self.cluster, start.session))
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
            let outcome = match SignedOutcome::from_bytes(&message.payload) {
                Ok(o) if start.parties.contains(&o.party) => o,
                Ok(o) => {
                    tracing::warn!(party = %o.party, "outcome from a non-participant ignored");
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "malformed outcome ignored");
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
