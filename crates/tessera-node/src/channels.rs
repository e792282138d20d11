//! The in-process [`ControlChannel`]: starts handed straight to nodes of this process (the
//! demo, tests). The NATS one, for separate processes, is [`tessera_control::nats`].

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tessera_control::{ControlChannel, SessionStart, SignedOutcome, SignedStart, StarterError};
use tessera_store::SecretStore;

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
