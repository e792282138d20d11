//! [`ControlChannel`]s: in process (the demo, tests) and over NATS.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use tessera_store::SecretStore;
use tessera_wire::{subject, ClusterId};

use crate::control::{
    SessionOutcome, SessionStart, SignedOutcome, SignedStart, MAX_CONTROL_MESSAGE,
};
use crate::starter::{ControlChannel, StarterError};
use crate::Node;

/// Hands starts straight to nodes running in this process.
pub struct InProcessControl<S: SecretStore> {
    nodes: Vec<Arc<Node<S>>>,
}

impl<S: SecretStore> InProcessControl<S> {
    /// Control over these nodes.
    pub fn new(nodes: Vec<Arc<Node<S>>>) -> Self {
        InProcessControl { nodes }
    }
}

#[async_trait]
impl<S: SecretStore + Send + Sync + 'static> ControlChannel for InProcessControl<S> {
    async fn run(
        &self,
        start: &SessionStart,
        signed: &SignedStart,
        deadline: Duration,
    ) -> Result<Vec<SignedOutcome>, StarterError> {
        let runs = self
            .nodes
            .iter()
            .filter(|n| start.parties.contains(&n.party()))
            .map(|node| {
                let (node, signed) = (node.clone(), signed.clone());
                tokio::spawn(async move { node.execute(&signed).await })
            });
        let all = futures::future::join_all(runs);
        let joined = tokio::time::timeout(deadline, all)
            .await
            .unwrap_or_default();
        Ok(joined
            .into_iter()
            .filter_map(|r| r.ok().flatten())
            .collect())
    }
}

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
