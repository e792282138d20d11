//! The control loop over NATS: session starts arrive on `tessera.<c>.ctrl`, each runs in its
//! own task, and each outcome is published, signed, on the node's own result subject
//! `tessera.<c>.result.<session>.<party>`. Every
//! [`SWEEP_INTERVAL`] the node abandons reshare results that expired while pending.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tessera_store::SecretStore;
use tessera_wire::subject;
use tokio::task::JoinSet;

use crate::Node;

/// How often expired pending reshare results are looked for.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(600);

/// Why the control loop stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Subscribing to the control subject failed.
    #[error("cannot subscribe to {subject}: {reason}")]
    Subscribe {
        /// The subject.
        subject: String,
        /// Why.
        reason: String,
    },
}

/// Serves session starts until `shutdown` completes, then lets running sessions finish for at
/// most `grace` before returning.
pub async fn serve<S>(
    node: Arc<Node<S>>,
    client: async_nats::Client,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) -> Result<(), ServeError>
where
    S: SecretStore + Send + Sync + 'static,
{
    let cluster = node.roster().cluster.clone();
    let ctrl = subject::ctrl(&cluster);
    let mut starts = client
        .subscribe(ctrl.clone())
        .await
        .map_err(|e| ServeError::Subscribe {
            subject: ctrl.clone(),
            reason: e.to_string(),
        })?;
    // Send the subscription out now. (async-nats's flush does not wait for the server to
    // register it: a start published in the same instant may be missed, and the coordinator
    // then runs the session with another quorum or again.)
    let _ = client.flush().await;
    tracing::info!(party = %node.party(), subject = %ctrl, "serving session starts");
    let mut running = JoinSet::new();
    let mut sweep = tokio::time::interval(SWEEP_INTERVAL);
    sweep.tick().await;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = sweep.tick() => {
                // Expired reshare results are abandoned; each is audited.
                if let Err(e) = node.sweep_reshares(false) {
                    tracing::warn!(error = %e, "cannot sweep expired reshare results; trying again later");
                }
                // Presignatures past their lifetime are erased unused.
                if let Err(e) = node.sweep_presignatures() {
                    tracing::warn!(error = %e, "cannot sweep expired presignatures; trying again later");
                }
            }
            message = starts.next() => {
                let Some(message) = message else {
                    tracing::warn!("control subscription ended");
                    break;
                };
                let (node, client, cluster) = (node.clone(), client.clone(), cluster.clone());
                running.spawn(async move {
                    let Some((session, outcome)) = node.handle(&message.payload).await else {
                        return;
                    };
                    let subject = subject::result(&cluster, session, node.party());
                    if let Err(e) = client.publish(subject, outcome.to_bytes().into()).await {
                        tracing::warn!(%session, error = %e, "cannot publish the session outcome");
                        node.metrics().outcome_unpublished();
                    }
                    let _ = client.flush().await;
                });
            }
            Some(done) = running.join_next(), if !running.is_empty() => {
                if let Err(e) = done {
                    tracing::error!(error = %e, "a session task failed");
                }
            }
        }
    }
    let _ = starts.unsubscribe().await;
    if !running.is_empty() {
        tracing::info!(
            sessions = running.len(),
            grace_secs = grace.as_secs(),
            "shutting down: waiting for running sessions"
        );
        let drain = async { while running.join_next().await.is_some() {} };
        if tokio::time::timeout(grace, drain).await.is_err() {
            tracing::warn!(
                sessions = running.len(),
                "shutdown grace period over: aborting running sessions"
            );
            running.abort_all();
        }
    }
    tracing::info!("stopped");
    Ok(())
}
