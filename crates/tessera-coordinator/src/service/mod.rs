//! The coordinator's service core: committees and keys, sign requests and their approvals,
//! policy changes, and the signing worker that drives the party nodes. No HTTP here; the API
//! layer (and `auth`) sit on top of [`Coordinator`].
//!
//! The coordinator holds no secret except its roster coordinator key, inside the
//! [`Starter`]: it cannot sign anything by itself, and every node re-checks each request, its
//! approvals and the policy before it takes part (ADR 0005). All state lives in the
//! [`Store`], so coordinator replicas may share one PostgreSQL database: state changes are
//! compare-and-set, and a request is signed by the replica that moved it from `approved` to
//! `signing`.
//!
//! Request life: `submit` evaluates the policy ([`tessera_policy::evaluate()`]) and stores the
//! request `pending_approval`, `approved` (no approval needed) or `rejected` (denied, with the
//! reasons). Each approval is verified and the policy re-evaluated; when it allows, the
//! request is `approved` and the signing worker takes it (`signing`), picks a healthy quorum,
//! runs the session, verifies the signature against the (child) public key, assembles the
//! transaction, records the spend and stores the result (`signed`), or retries with another
//! quorum and finally fails (`failed`). The sweeper expires requests nobody signed in time.
//!
//! **Policy pinning.** Nodes sign only under the policy whose hash they pin in their
//! configuration. [`Coordinator::start`] therefore insists that the database's active policy
//! is the document it is given (the one the nodes pin). A policy change applied through
//! [`Coordinator::approve_policy`] becomes the coordinator's active policy at once, but the
//! nodes keep their pin: until every node is re-pinned to the new hash (and the coordinator
//! restarted with the new document), requests made under the new policy are refused by the
//! nodes, and requests made under the old one are denied by the coordinator.

mod approvals;
mod audit;
mod committees;
mod counters;
mod decisions;
mod error;
mod history;
mod key_changes;
mod keys;
mod policy;
mod quorum;
mod requests;
mod rotation;
mod settings;
mod signing;
mod spend_chain;
mod views;

use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tessera_audit::{AuditLog, NewEvent};
use tessera_control::pool::PresignaturePool;
use tessera_control::{ControlChannel, Starter};
use tessera_policy::{PolicyDocument, PolicyHash};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use crate::store::{InsertOutcome, KeyStatus, PolicyRow, RequestState, Store};
use tessera_wire::RequestId;

pub use audit::SYSTEM;
pub use counters::{RefusalStage, ServiceCounters, SessionStats};
pub use decisions::{rejection_digest, REJECTION_LABEL};
pub use error::ServiceError;
pub use key_changes::ProposeKeyChange;
pub use policy::ProposePolicy;
pub use requests::Submit;
pub use settings::CoordinatorSettings;
pub use views::{
    CommitteeView, DecisionView, KeyAddress, KeyChangeSummary, KeyChangeView, KeyView,
    PartyHealthView, PolicyView, ProposalSummary, ProposalView, RequestSummary, RequestView,
};

/// Updates a slow subscriber may fall behind by before it misses some (it is told how many).
const UPDATES_BUFFER: usize = 1024;

/// A state a request reached at this coordinator (see [`Coordinator::subscribe`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestUpdate {
    /// The request.
    pub id: RequestId,
    /// The state it is now in.
    pub state: RequestState,
}

/// The policy in force, parsed once per document.
struct ActivePolicy {
    document: Arc<PolicyDocument>,
    activated_at: i64,
}

/// The coordinator service. Create it with [`Coordinator::start`]; stop its background tasks
/// with [`Coordinator::shutdown`].
pub struct Coordinator {
    store: Store,
    starter: Arc<Starter>,
    control: Arc<dyn ControlChannel>,
    settings: CoordinatorSettings,
    /// The coordinator's signed event history (see [`audit`]).
    audit: Arc<AuditLog>,
    /// Sessions and policy refusals, for `/metrics`.
    counters: ServiceCounters,
    /// Cache of the active policy; the store is the truth (another replica may change it).
    policy: RwLock<Arc<ActivePolicy>>,
    health: quorum::Health,
    pool: Option<Arc<PresignaturePool>>,
    /// Wakes the signing worker when a request is approved.
    wake: Arc<Notify>,
    /// Request states reached, for [`subscribe`](Coordinator::subscribe).
    updates: tokio::sync::broadcast::Sender<RequestUpdate>,
    stop: watch::Sender<bool>,
    pool_stop: Arc<std::sync::atomic::AtomicBool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coordinator")
            .field("store", &self.store)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Drop for Coordinator {
    /// Stops the background tasks of a coordinator dropped without
    /// [`shutdown`](Coordinator::shutdown): the worker and the sweeper end at their next
    /// iteration, the presignature refill after its current round.
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        self.pool_stop
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Unix seconds now.
pub(crate) fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// When something asked to live `requested` seconds (else `default`, capped at `cap`) expires,
/// counted from `now`: refuses a lifetime of 0 and one that does not fit the database.
pub(crate) fn expires_at(
    now: u64,
    requested: Option<u64>,
    default: u64,
    cap: u64,
) -> Result<u64, ServiceError> {
    let lifetime = match requested {
        Some(0) => {
            return Err(ServiceError::Invalid(
                "lifetime_secs must be at least 1".into(),
            ))
        }
        // Refused before anything is stored: a request (or change) that could never be
        // allowed is a mistake in the call, not a decision of the policy.
        Some(secs) if secs > cap => {
            return Err(ServiceError::Invalid(format!(
                "lifetime_secs {secs} is above the policy's max_request_lifetime_secs ({cap}); \
                 ask for at most {cap} s, or leave it out for the default"
            )))
        }
        Some(secs) => secs,
        None => default.min(cap),
    };
    now.checked_add(lifetime)
        .filter(|t| i64::try_from(*t).is_ok())
        .ok_or_else(|| ServiceError::Invalid(format!("lifetime_secs {lifetime} is too large")))
}

/// Unix seconds as stored (BIGINT).
pub(crate) fn to_db(secs: u64) -> i64 {
    i64::try_from(secs).unwrap_or(i64::MAX)
}

impl Coordinator {
    /// Starts the service on `store`, signing session starts with `starter` (whose key must be
    /// a coordinator of the roster the nodes pin) and reaching the nodes over `control`.
    ///
    /// `policy` must be the document the nodes pin. On first start it is activated in the
    /// store; afterwards the store's active policy must be that same document (same hash),
    /// otherwise the start is refused with what to do. Spawns the signing worker (which also
    /// resumes requests a stopped coordinator left `signing`), the expiry sweeper and, with
    /// [`CoordinatorSettings::presignature_pool_target`] above 0, the presignature refill.
    /// Decisions and state changes are recorded in `audit`, signed with the coordinator's
    /// roster key.
    pub async fn start(
        store: Store,
        starter: Arc<Starter>,
        control: Arc<dyn ControlChannel>,
        policy: PolicyDocument,
        settings: CoordinatorSettings,
        audit: Arc<AuditLog>,
    ) -> Result<Arc<Coordinator>, ServiceError> {
        settings.validate()?;
        let active = activate_or_check(&store, &policy).await?;
        let pool = (settings.presignature_pool_target > 0).then(|| {
            Arc::new(PresignaturePool::new(
                starter.clone(),
                control.clone(),
                settings.presignature_pool_target,
                settings.session_deadline,
                settings.presignature_max_age,
            ))
        });
        let (stop, _) = watch::channel(false);
        let coordinator = Arc::new(Coordinator {
            store,
            starter,
            control,
            audit,
            counters: ServiceCounters::default(),
            health: quorum::Health::new(settings.blame_cooldown),
            settings,
            policy: RwLock::new(Arc::new(active)),
            pool,
            wake: Arc::new(Notify::new()),
            updates: tokio::sync::broadcast::channel(UPDATES_BUFFER).0,
            stop,
            pool_stop: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            tasks: Mutex::new(Vec::new()),
        });
        coordinator.fail_abandoned().await?;
        let mut tasks = vec![
            tokio::spawn(signing::worker(
                Arc::downgrade(&coordinator),
                coordinator.wake.clone(),
                coordinator.stop.subscribe(),
                coordinator.settings.worker_poll_interval,
            )),
            tokio::spawn(periodic(
                Arc::downgrade(&coordinator),
                coordinator.stop.subscribe(),
                coordinator.settings.expiry_sweep_interval,
                Job::Sweep,
            )),
            tokio::spawn(periodic(
                Arc::downgrade(&coordinator),
                coordinator.stop.subscribe(),
                coordinator.settings.rotation_check_interval,
                Job::Rotation,
            )),
            tokio::spawn(periodic(
                Arc::downgrade(&coordinator),
                coordinator.stop.subscribe(),
                coordinator.settings.spend_delivery_interval,
                Job::Spends,
            )),
        ];
        if let Some(pool) = &coordinator.pool {
            for key in coordinator.store.list_keys().await? {
                if key.status == KeyStatus::Ready {
                    pool.track(key.id, &quorum::preferred(&key.committee, key.threshold));
                }
            }
            tasks.push(pool.spawn_refill(
                coordinator.settings.presignature_refill_interval,
                coordinator.pool_stop.clone(),
            ));
        }
        coordinator
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(tasks);
        let hash = coordinator.policy_cache().document.hash();
        coordinator.audit_note(
            NewEvent::new(SYSTEM, "coordinator.started", "coordinator")
                .detail("policy", hash)
                .detail(
                    "policy_revision",
                    coordinator.policy_cache().document.revision(),
                ),
        );
        tracing::info!(policy = %hash, "coordinator service started");
        Ok(coordinator)
    }

    /// Stops the background tasks: no new work is taken; a session already running may finish
    /// within [`CoordinatorSettings::shutdown_grace`], after which it is abandoned (its request
    /// stays `signing` and is resumed by the next coordinator). Idempotent.
    pub async fn shutdown(&self) {
        let _ = self.stop.send(true);
        self.pool_stop
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let tasks: Vec<JoinHandle<()>> = self
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
            .collect();
        let deadline = tokio::time::Instant::now() + self.settings.shutdown_grace;
        for mut task in tasks {
            if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
                task.abort();
                let _ = task.await;
            }
        }
        self.audit_note(NewEvent::new(SYSTEM, "coordinator.stopped", "coordinator"));
        if let Err(e) = self.audit.sync() {
            tracing::error!(error = %e, "cannot flush the audit log");
        }
        tracing::info!("coordinator service stopped");
    }

    /// Sessions and policy refusals counted since the service started.
    pub fn counters(&self) -> &ServiceCounters {
        &self.counters
    }

    /// Every state a request reaches at this coordinator from now on, as it is stored:
    /// `approved` (the last approval), `signing`, and the final states (`signed`, `failed`,
    /// `rejected`, `cancelled`, `expired`). A subscriber that falls more than a thousand
    /// updates behind is told how many it missed (`RecvError::Lagged`) and should read the
    /// requests it waits for again. Another replica's changes are not seen.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<RequestUpdate> {
        self.updates.subscribe()
    }

    /// Tells the subscribers that request `id` reached `state` (stored).
    pub(crate) fn announce(&self, id: RequestId, state: RequestState) {
        // No subscriber is not an error.
        let _ = self.updates.send(RequestUpdate { id, state });
    }

    /// The store the service runs on.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The settings.
    pub fn settings(&self) -> &CoordinatorSettings {
        &self.settings
    }

    /// What the coordinator remembers of each party's recent sessions (in memory: a restarted
    /// coordinator starts with a clean slate).
    pub fn party_health(&self) -> Vec<PartyHealthView> {
        self.health.view()
    }

    /// Presignatures ready in the pool for `key` (name or id) and its preferred quorum (the
    /// committee's first `threshold` parties); 0 without a pool.
    pub async fn presignatures_ready(&self, key: &str) -> Result<usize, ServiceError> {
        let key = self.resolve_key(key).await?;
        Ok(self.pool.as_ref().map_or(0, |pool| {
            pool.level(key.id, &quorum::preferred(&key.committee, key.threshold))
        }))
    }

    fn policy_cache(&self) -> Arc<ActivePolicy> {
        self.policy
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The active policy from the store (another replica may have changed it), parsed once
    /// per document.
    async fn active(&self) -> Result<Arc<ActivePolicy>, ServiceError> {
        // The hash alone first: the document is read and parsed only when it changed.
        let cached = self.policy_cache();
        if let Some(hash) = self.store.active_policy_hash().await? {
            if cached.document.hash().0[..] == hash[..] {
                return Ok(cached);
            }
        }
        let row = self.store.active_policy().await?.ok_or_else(|| {
            ServiceError::Unavailable(
                "the database has no active policy; restart the coordinator with the policy \
                 document the nodes pin"
                    .into(),
            )
        })?;
        let cached = self.policy_cache();
        if cached.document.hash().0[..] == row.hash[..] {
            return Ok(cached);
        }
        let active = Arc::new(parse_row(&row)?);
        *self.policy.write().unwrap_or_else(|p| p.into_inner()) = active.clone();
        Ok(active)
    }

    /// The policy document in force (another replica may have changed it): one cheap query
    /// when it has not changed.
    pub(crate) async fn active_document(&self) -> Result<Arc<PolicyDocument>, ServiceError> {
        Ok(self.active().await?.document.clone())
    }

    /// Marks key generations and committee set-ups that cannot still be running as failed.
    async fn fail_abandoned(&self) -> Result<(), ServiceError> {
        let now = to_db(now_unix());
        let key_cutoff = now.saturating_sub(to_db(2 * self.settings.session_deadline.as_secs()));
        self.store
            .fail_stale_keys(
                key_cutoff,
                "key generation was abandoned (its coordinator stopped); create the key again \
                 under another name",
            )
            .await?;
        let aux_cutoff = now.saturating_sub(to_db(2 * self.settings.aux_info_deadline.as_secs()));
        self.store
            .fail_stale_committees(
                aux_cutoff,
                "the set-up was abandoned (its coordinator stopped); set the committee up again",
            )
            .await?;
        Ok(())
    }

    /// One sweep: expire requests, proposals and key changes past their expiry, fail
    /// abandoned set-ups.
    async fn sweep(&self) -> Result<(), ServiceError> {
        let now = to_db(now_unix());
        let expired = self.store.expire_due(now).await?;
        for id in &expired {
            self.announce(*id, RequestState::Expired);
            tracing::info!(request = %id, "request expired unsigned");
            self.audit_request(SYSTEM, "request.expired", *id, &[]);
        }
        self.store.expire_due_proposals(now).await?;
        self.store.expire_due_key_changes(now).await?;
        self.fail_abandoned().await
    }
}

/// Activates `policy` in an empty store, or checks that it is the store's active policy.
async fn activate_or_check(
    store: &Store,
    policy: &PolicyDocument,
) -> Result<ActivePolicy, ServiceError> {
    let given = policy.hash();
    if let Some(row) = store.active_policy().await? {
        return if row.hash[..] == given.0[..] {
            parse_row(&row)
        } else {
            let stored = hex::encode(&row.hash);
            let newer = i64::try_from(policy.revision()).unwrap_or(i64::MAX) > row.revision;
            Err(ServiceError::Conflict(format!(
                "the database's active policy is revision {} ({stored}), but this coordinator \
                 was started with revision {} ({given}). Nodes sign only under the policy they \
                 pin: start the coordinator with the active document (the one the nodes pin){}",
                row.revision,
                policy.revision(),
                if newer {
                    "; to move to the new document, propose it as a policy change, have the \
                     admins approve it, re-pin every node to its hash, then restart the \
                     coordinator with it"
                } else {
                    ""
                }
            )))
        };
    }
    let document = String::from_utf8(policy.bytes().to_vec())
        .map_err(|_| ServiceError::Invalid("the policy document is not UTF-8".into()))?;
    let row = PolicyRow {
        hash: given.0.to_vec(),
        revision: i64::try_from(policy.revision())
            .map_err(|_| ServiceError::Invalid("the policy revision is too large".into()))?,
        document,
        activated_at: to_db(now_unix()),
    };
    match store.activate_policy(&row).await? {
        InsertOutcome::Inserted => {
            tracing::info!(policy = %given, revision = policy.revision(), "initial policy activated");
            Ok(ActivePolicy {
                document: Arc::new(policy.clone()),
                activated_at: row.activated_at,
            })
        }
        InsertOutcome::Existing(existing) => parse_row(&existing),
    }
}

fn parse_row(row: &PolicyRow) -> Result<ActivePolicy, ServiceError> {
    let document = PolicyDocument::from_toml(row.document.as_bytes()).map_err(|e| {
        ServiceError::corrupt(format_args!(
            "the stored policy revision {} does not parse ({e})",
            row.revision
        ))
    })?;
    if document.hash().0[..] != row.hash[..] {
        return Err(ServiceError::corrupt(format_args!(
            "the stored policy revision {} does not match its hash",
            row.revision
        )));
    }
    Ok(ActivePolicy {
        document: Arc::new(document),
        activated_at: row.activated_at,
    })
}

/// The hash a request or proposal names, as hex.
pub(crate) fn hash_hex(hash: &PolicyHash) -> String {
    hash.to_string()
}

/// A background job of the service.
#[derive(Clone, Copy, Debug)]
enum Job {
    /// [`Coordinator::sweep`]: expiries and abandoned set-ups.
    Sweep,
    /// [`Coordinator::rotation_check`]: scheduled refreshes and activations to resend.
    Rotation,
    /// [`Coordinator::deliver_spends`]: spend chain records to the holders that lack them.
    Spends,
}

/// Runs `job` every `interval` until stopped or dropped.
async fn periodic(
    weak: Weak<Coordinator>,
    mut stop: watch::Receiver<bool>,
    interval: Duration,
    job: Job,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
        let Some(coordinator) = weak.upgrade() else {
            return;
        };
        let outcome = match job {
            Job::Sweep => coordinator.sweep().await,
            Job::Rotation => coordinator.rotation_check().await,
            Job::Spends => coordinator.deliver_spends().await,
        };
        if let Err(e) = outcome {
            tracing::warn!(error = %e, ?job, "background job failed; retrying at the next interval");
        }
    }
}
