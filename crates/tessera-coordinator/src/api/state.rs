//! What every handler shares: the service, where nonces are kept, the parsed active policy.

use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tessera_policy::PolicyDocument;
use tokio::task::JoinHandle;

use super::ApiError;
use crate::auth::{MemoryNonces, NonceStore};
use crate::service::Coordinator;
use crate::Store;

/// How the API runs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ApiOptions {
    /// Serve `GET /metrics` without authentication, for a Prometheus scraper that cannot sign
    /// requests. Off by default: metrics show request volumes, which is business data, so a
    /// scraper must sign like any client (as a principal with the auditor or admin role).
    /// Turn it on only when the listener is reachable from a trusted network alone.
    pub public_metrics: bool,
}

/// Where the nonces of signed requests are remembered.
#[derive(Clone)]
pub enum Nonces {
    /// In the coordinator's database, shared by every replica (the default).
    Store(Store),
    /// In memory: one coordinator in one process (embedded mode, tests).
    Memory(Arc<MemoryNonces>),
}

impl Nonces {
    fn as_dyn(&self) -> &dyn NonceStore {
        match self {
            Nonces::Store(store) => store,
            Nonces::Memory(memory) => memory.as_ref(),
        }
    }

    /// Forgets the nonces that expired before `now` (Unix seconds); returns how many.
    pub async fn prune(&self, now: u64) -> Result<u64, crate::StoreError> {
        match self {
            Nonces::Store(store) => {
                store
                    .prune_nonces(i64::try_from(now).unwrap_or(i64::MAX))
                    .await
            }
            Nonces::Memory(memory) => Ok(memory.prune(now) as u64),
        }
    }
}

/// The state of the API: cheap to clone.
#[derive(Clone)]
pub struct ApiState {
    inner: Arc<Inner>,
}

struct Inner {
    coordinator: Arc<Coordinator>,
    nonces: Nonces,
    options: ApiOptions,
    /// The active policy, parsed once per document.
    policy: RwLock<Option<Arc<PolicyDocument>>>,
}

impl ApiState {
    /// The API over `coordinator`, remembering nonces in the coordinator's database.
    pub fn new(coordinator: Arc<Coordinator>, options: ApiOptions) -> Self {
        let nonces = Nonces::Store(coordinator.store().clone());
        Self::with_nonces(coordinator, nonces, options)
    }

    /// The API over `coordinator` with nonces kept in `nonces`.
    pub fn with_nonces(coordinator: Arc<Coordinator>, nonces: Nonces, options: ApiOptions) -> Self {
        ApiState {
            inner: Arc::new(Inner {
                coordinator,
                nonces,
                options,
                policy: RwLock::new(None),
            }),
        }
    }

    /// The service.
    pub fn coordinator(&self) -> &Arc<Coordinator> {
        &self.inner.coordinator
    }

    /// The options.
    pub fn options(&self) -> &ApiOptions {
        &self.inner.options
    }

    /// Where nonces are remembered.
    pub fn nonces(&self) -> &Nonces {
        &self.inner.nonces
    }

    pub(crate) fn nonce_store(&self) -> &dyn NonceStore {
        self.inner.nonces.as_dyn()
    }

    /// The active policy as the service shows it (another replica may have changed it),
    /// parsed only when its hash changes.
    pub(crate) async fn active_policy(&self) -> Result<Arc<PolicyDocument>, ApiError> {
        let view = self.inner.coordinator.policy().await?;
        let cached = self
            .inner
            .policy
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(document) = cached.filter(|d| d.hash().to_string() == view.hash) {
            return Ok(document);
        }
        let document = PolicyDocument::from_toml(view.document.as_bytes())
            .ok()
            .filter(|d| d.hash().to_string() == view.hash)
            .map(Arc::new)
            .ok_or_else(|| {
                tracing::error!(
                    policy = %view.hash,
                    "the active policy does not parse back to its hash"
                );
                ApiError::unavailable(
                    "the coordinator cannot read its active policy; an operator must repair it",
                )
            })?;
        *self.inner.policy.write().unwrap_or_else(|p| p.into_inner()) = Some(document.clone());
        Ok(document)
    }
}

/// Unix seconds now.
pub(crate) fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// How often expired nonces are pruned while the API runs.
pub const NONCE_PRUNE_INTERVAL: Duration = Duration::from_secs(60);

/// Spawns the task that forgets expired nonces every `interval` (a nonce must be kept until
/// it expires, and is never needed after: see [`crate::auth`]). Abort the handle to stop it.
pub fn spawn_nonce_pruner(nonces: Nonces, interval: Duration) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            match nonces.prune(now_unix()).await {
                Ok(0) => {}
                Ok(pruned) => tracing::debug!(pruned, "expired API nonces pruned"),
                Err(e) => tracing::warn!(error = %e, "cannot prune API nonces; retrying later"),
            }
        }
    })
}
