//! What every handler shares: the service, where nonces are kept, the parsed active policy.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tessera_policy::PolicyDocument;
use tokio::task::JoinHandle;

use super::limits::{RateLimitCounts, RateLimits};
use super::ApiError;
use crate::auth::{MemoryNonces, NonceStore};
use crate::service::Coordinator;
use crate::Store;

/// How the API runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiOptions {
    /// Serve `GET /metrics` without authentication, for a Prometheus scraper that cannot sign
    /// requests. Off by default: metrics show request volumes, which is business data, so a
    /// scraper must sign like any client (as a principal with the auditor or admin role).
    /// Turn it on only when the listener is reachable from a trusted network alone.
    pub public_metrics: bool,
    /// Signed `/v1` calls each principal may make per second on average (its token bucket's
    /// refill rate); calls over it are answered 429 with `Retry-After`. Failed authentications,
    /// all together, get the same budget. Default [`DEFAULT_RATE_LIMIT_PER_SECOND`]; 0 disables
    /// the limits.
    pub rate_limit_per_second: u32,
    /// Signed `/v1` calls each principal may make at once after a quiet spell (its bucket's
    /// size). Default [`DEFAULT_RATE_LIMIT_BURST`]; 0 disables the limits.
    pub rate_limit_burst: u32,
}

/// The default of [`ApiOptions::rate_limit_per_second`]: 20 calls per second and principal.
/// People and their tools make a few calls per request (fetch, decode, approve; poll the state
/// every second or so), and a metrics scraper one every few seconds; an operator's batch tool
/// submitting 20 requests every second, all day, would already outrun what the committee can
/// sign. Beyond that, a principal is broken or compromised, and must not starve the others.
pub const DEFAULT_RATE_LIMIT_PER_SECOND: u32 = 20;
/// The default of [`ApiOptions::rate_limit_burst`]: 100 calls at once, e.g. a batch of
/// submissions, or a page-by-page listing of requests, at full speed.
pub const DEFAULT_RATE_LIMIT_BURST: u32 = 100;

impl Default for ApiOptions {
    fn default() -> Self {
        ApiOptions {
            public_metrics: false,
            rate_limit_per_second: DEFAULT_RATE_LIMIT_PER_SECOND,
            rate_limit_burst: DEFAULT_RATE_LIMIT_BURST,
        }
    }
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
    /// Per-principal and failed-authentication rate limits (see [`super::limits`]).
    limits: RateLimits,
    /// The coordinator's audit log, verified as it grows, for `GET /v1/audit`.
    audit_index: Arc<Mutex<Option<tessera_audit::FileIndex>>>,
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
                limits: RateLimits::new(options.rate_limit_per_second, options.rate_limit_burst),
                audit_index: Arc::new(Mutex::new(None)),
                options,
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

    pub(crate) fn limits(&self) -> &RateLimits {
        &self.inner.limits
    }

    /// The index of the coordinator's audit log (made on first use).
    pub(crate) fn audit_index(&self) -> Arc<Mutex<Option<tessera_audit::FileIndex>>> {
        self.inner.audit_index.clone()
    }

    /// Calls answered 429 (`rate_limited`) so far: per principal, and failed authentications
    /// over their shared budget. For metrics (`tessera_coordinator_api_rate_limited_total`).
    pub fn rate_limited(&self) -> RateLimitCounts {
        self.inner.limits.counts()
    }

    /// The active policy (another replica may have changed it): one query for its hash, and
    /// the document read and parsed only when that changed.
    pub(crate) async fn active_policy(&self) -> Result<Arc<PolicyDocument>, ApiError> {
        Ok(self.inner.coordinator.active_document().await?)
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
