//! Support for the service tests: databases on both backends, a `LocalCluster` of real nodes
//! in memory with the INSECURE fixture committee's auxiliary info, and a control channel that
//! never answers (a coordinator cut off from the broker).
#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tempfile::TempDir;
use tessera_audit::{AuditLog, LogOptions};
use tessera_channel::identity::PartyIdentity;
use tessera_channel::Roster;
use tessera_control::{ControlChannel, Starter, StarterError};
use tessera_control::{Output, SessionStart, SignedOutcome, SignedStart};
use tessera_coordinator::service::{
    Coordinator, CoordinatorSettings, KeyChangeView, ProposeKeyChange, RequestView, ServiceError,
};
use tessera_coordinator::store::RequestState;
use tessera_coordinator::store::{KeyChangeState, ProposalId};
use tessera_coordinator::testing::PostgresServer;
use tessera_coordinator::Store;
use tessera_node::channels::InProcessControl;
use tessera_node::local::{LocalCluster, LocalOptions};
use tessera_node::{Node, NodeSettings};
use tessera_policy::dev::DevPolicy;
use tessera_policy::{Approval, KeyOperation, OperatorKey, PolicyDocument, PrincipalSignature};
use tessera_store::{FileStore, KdfParams};
use tessera_wire::{PartyId, RequestId};

pub const P1: PartyId = PartyId(1);
pub const P2: PartyId = PartyId(2);
pub const P3: PartyId = PartyId(3);
/// How long a test waits for a request to reach a state.
pub const WAIT: Duration = Duration::from_secs(90);

/// A database for one test, kept alive as long as the value.
pub struct Db {
    pub url: String,
    _sqlite_dir: Option<TempDir>,
    _postgres: Option<PostgresServer>,
}

impl Db {
    pub fn sqlite() -> Db {
        let dir = tempfile::tempdir().expect("temp dir");
        Db {
            url: format!("sqlite://{}", dir.path().join("coordinator.db").display()),
            _sqlite_dir: Some(dir),
            _postgres: None,
        }
    }

    pub async fn postgres() -> Db {
        let server = PostgresServer::start()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        Db {
            url: server.url().to_owned(),
            _sqlite_dir: None,
            _postgres: Some(server),
        }
    }

    pub async fn store(&self) -> Store {
        Store::connect(&self.url)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }
}

/// Runs each named behaviour against SQLite and PostgreSQL.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(&super::service_support::Db::sqlite()).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(&super::service_support::Db::postgres().await).await;
                }
            )*
        }
    };
}

/// Three real party nodes in one process over the in-memory transport
/// (`tessera_node::local::LocalCluster`), each with its own encrypted store, pinning a
/// generated development policy; and the roster coordinator's starter.
pub struct Cluster {
    pub nodes: Vec<Arc<Node<FileStore>>>,
    pub roster: Roster,
    pub dev: DevPolicy,
    pub starter: Arc<Starter>,
    control: Arc<dyn ControlChannel>,
    _local: LocalCluster,
    _dir: TempDir,
}

impl Cluster {
    /// Starts the nodes with the default node settings.
    pub async fn start() -> Cluster {
        Cluster::start_with(NodeSettings::default()).await
    }

    /// Starts the nodes with `settings`, and installs the INSECURE fixture committee's
    /// auxiliary info (p1, p2, p3) in them, as if aux info generation had run.
    pub async fn start_with(settings: NodeSettings) -> Cluster {
        let cluster = Cluster::start_bare(settings).await;
        install_fixture_aux_info(&cluster.nodes);
        cluster
    }

    /// Starts the nodes with `settings` and nothing installed: no auxiliary info, empty prime
    /// pools.
    pub async fn start_bare(settings: NodeSettings) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let options = LocalOptions {
            settings,
            kdf: KdfParams::MINIMUM,
            ..LocalOptions::default()
        };
        let mut local = LocalCluster::start(dir.path(), options).await.unwrap();
        let dev = local.dev.take().expect("a development policy");
        let (starter, control) = local.shared();
        Cluster {
            nodes: local.nodes.clone(),
            roster: local.roster.clone(),
            dev,
            starter,
            control,
            _local: local,
            _dir: dir,
        }
    }

    /// A directory for this cluster's audit logs.
    pub fn audit_dir(&self) -> &std::path::Path {
        self._dir.path()
    }

    /// Where the nodes' audit logs are.
    pub fn node_audit_dir(&self) -> &std::path::Path {
        self._local.audit_dir()
    }

    /// Starts reaching every node: the cluster's own control channel.
    pub fn control(&self) -> Arc<dyn ControlChannel> {
        self.control.clone()
    }

    /// Starts reaching every node but `down`: that node never hears of a session, as if it
    /// were stopped or cut off from the broker.
    pub fn control_without(&self, down: PartyId) -> Arc<dyn ControlChannel> {
        let nodes = self
            .nodes
            .iter()
            .filter(|n| n.party() != down)
            .cloned()
            .collect();
        Arc::new(InProcessControl::new(nodes))
    }

    /// Starts reaching every node, but the `rogues` lie about their results: each one's
    /// reported signature is replaced by an invalid one, in an outcome signed with the rogue
    /// party's own identity (a malicious node, not a forger on the wire).
    pub fn control_forging(&self, rogues: &[PartyId]) -> Arc<dyn ControlChannel> {
        Arc::new(ForgesSignatures {
            all: self.control(),
            roster: self.roster.clone(),
            rogues: rogues
                .iter()
                .map(|p| (*p, self._local.party_identity(*p)))
                .collect(),
        })
    }

    /// The development principal named `name` and its key.
    pub fn key_of(&self, name: &str) -> &OperatorKey {
        let dev = &self.dev;
        std::iter::once(&dev.operator)
            .chain(&dev.approvers)
            .chain(&dev.admins)
            .chain(std::iter::once(&dev.auditor))
            .find(|p| p.name == name)
            .map(|p| &p.key)
            .unwrap_or_else(|| panic!("no development principal {name}"))
    }

    /// `name`'s approval signature over `digest`.
    pub fn sign(&self, name: &str, digest: &[u8; 32]) -> PrincipalSignature {
        Approval::sign(digest, name, self.key_of(name)).signature
    }

    /// `name`'s approval of the request shown in `view`, over the request digest recomputed
    /// from the request itself (never the coordinator's hex).
    pub fn approval(&self, name: &str, view: &RequestView) -> PrincipalSignature {
        self.sign(name, &view.request.request_digest())
    }
}

/// Installs the fixture committee's auxiliary info (p1, p2, p3) in the nodes.
fn install_fixture_aux_info(nodes: &[Arc<Node<FileStore>>]) {
    let fixture = tessera_mpc::fixtures::insecure_committee_2of3();
    for (p, share) in fixture.committee.iter().zip(&fixture.shares) {
        let mut value = serde_json::to_value(share).unwrap();
        let aux: tessera_mpc::AuxInfo = serde_json::from_value(value["aux"].take()).unwrap();
        let node = nodes.iter().find(|n| n.party() == *p).unwrap();
        node.state().put_aux(&fixture.committee, &aux).unwrap();
    }
}

/// Settings for tests: quick polling and sweeping.
pub fn settings() -> CoordinatorSettings {
    CoordinatorSettings {
        worker_poll_interval: Duration::from_millis(200),
        expiry_sweep_interval: Duration::from_millis(200),
        rotation_check_interval: Duration::from_millis(300),
        spend_delivery_interval: Duration::from_millis(300),
        shutdown_grace: Duration::from_secs(1),
        ..CoordinatorSettings::default()
    }
}

/// A fresh audit log for one coordinator of `cluster` (each coordinator instance writes its
/// own file: two instances appending to one chain would fork it).
pub fn audit_log(cluster: &Cluster) -> Arc<AuditLog> {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let file = cluster
        .audit_dir()
        .join(format!("coordinator-{n}.audit.jsonl"));
    Arc::new(
        AuditLog::open(
            cluster.starter.audit_signer(),
            LogOptions {
                file: Some(file),
                ..Default::default()
            },
        )
        .unwrap_or_else(|e| panic!("{e}")),
    )
}

/// A coordinator on `db` for `cluster` over `control`, with the nodes' policy.
pub async fn coordinator(
    db: &Db,
    cluster: &Cluster,
    control: Arc<dyn ControlChannel>,
    settings: CoordinatorSettings,
) -> Arc<Coordinator> {
    Coordinator::start(
        db.store().await,
        cluster.starter.clone(),
        control,
        cluster.dev.document.clone(),
        settings,
        audit_log(cluster),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"))
}

/// Registers the fixture committee (its aux info is installed) and generates a 2-of-3 key on
/// it with a real key generation.
pub async fn fixture_key(coordinator: &Arc<Coordinator>, name: &str) -> String {
    coordinator
        .register_committee_ready(vec![P1, P2, P3])
        .await
        .unwrap();
    let key = coordinator
        .create_key(name, vec![P1, P2, P3], 2, tessera_wire::KeyKind::Ecdsa)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    key.id.to_string()
}

/// Waits until the presignature pool holds a presignature for `key`.
pub async fn wait_for_presignature(coordinator: &Coordinator, key: &str) {
    let started = Instant::now();
    while coordinator.presignatures_ready(key).await.unwrap() == 0 {
        assert!(
            started.elapsed() < WAIT,
            "the presignature pool never filled"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until request `id` is in `state` (panics with the request if it ends elsewhere or
/// takes too long).
pub async fn wait_for(
    coordinator: &Coordinator,
    id: RequestId,
    state: RequestState,
) -> RequestView {
    let started = Instant::now();
    loop {
        let view = coordinator.get(id).await.unwrap();
        if view.state == state {
            return view;
        }
        let terminal = matches!(
            view.state,
            RequestState::Signed
                | RequestState::Failed
                | RequestState::Rejected
                | RequestState::Cancelled
                | RequestState::Expired
        );
        if terminal || started.elapsed() > WAIT {
            panic!(
                "request {id} is {} (error {:?}, reasons {:?}), expected {state}",
                view.state, view.error, view.reasons
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The message of an error, for assertions.
pub fn message(e: &ServiceError) -> String {
    e.to_string()
}

/// A control channel that never answers: the coordinator is cut off from the nodes.
pub struct Unreachable;

#[async_trait]
impl ControlChannel for Unreachable {
    async fn run(
        &self,
        _start: &SessionStart,
        _signed: &SignedStart,
        _deadline: Duration,
    ) -> Result<Vec<SignedOutcome>, StarterError> {
        std::future::pending().await
    }
}

/// See [`Cluster::control_forging`].
struct ForgesSignatures {
    all: Arc<dyn ControlChannel>,
    roster: Roster,
    rogues: Vec<(PartyId, PartyIdentity)>,
}

#[async_trait]
impl ControlChannel for ForgesSignatures {
    async fn run(
        &self,
        start: &SessionStart,
        signed: &SignedStart,
        deadline: Duration,
    ) -> Result<Vec<SignedOutcome>, StarterError> {
        let mut outcomes = self.all.run(start, signed, deadline).await?;
        for signed in &mut outcomes {
            let Some((_, identity)) = self.rogues.iter().find(|(p, _)| *p == signed.party) else {
                continue;
            };
            let mut outcome = signed.verify(&self.roster).expect("a node's own outcome");
            if let Ok(Output::Signature { signature }) = &mut outcome.result {
                // Still a well-formed `r || s`, but not a signature of this digest.
                signature[0] ^= 1;
                *signed = SignedOutcome::sign(&outcome, identity);
            }
        }
        Ok(outcomes)
    }
}

/// A policy document: `dev`'s with `revision` and every rule's approvals replaced.
pub fn dev_variant(dev: &DevPolicy, revision: u64, approvals: &str) -> PolicyDocument {
    let text = String::from_utf8(dev.document.bytes().to_vec()).unwrap();
    let text = text
        .replace("revision = 1", &format!("revision = {revision}"))
        .replace(
            "approvals = { count = 2, roles = [\"approver\"] }",
            &format!("approvals = {approvals}"),
        );
    PolicyDocument::from_toml(text.as_bytes()).unwrap()
}

/// What a [`LosesToP3`] control channel loses on its way to p3.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Losing {
    /// Nothing: every message arrives.
    Nothing,
    /// Activations of a rotation's new epoch.
    Activations,
    /// Closures of a rotation's old epoch.
    Closures,
    /// The rotation sessions themselves (p3 never hears of one).
    Reshares,
}

/// A control channel that loses one kind of rotation message to p3 (p3 stays reachable for
/// everything else), as when a node restarts at the wrong moment.
pub struct LosesToP3 {
    all: Arc<dyn ControlChannel>,
    without_p3: Arc<dyn ControlChannel>,
    losing: std::sync::Mutex<Losing>,
}

impl LosesToP3 {
    /// Over `cluster`'s nodes, losing `losing` from the start.
    pub fn new(cluster: &Cluster, losing: Losing) -> Arc<Self> {
        Arc::new(LosesToP3 {
            all: cluster.control(),
            without_p3: cluster.control_without(P3),
            losing: std::sync::Mutex::new(losing),
        })
    }

    /// From now on, loses `losing`.
    pub fn lose(&self, losing: Losing) {
        *self.losing.lock().unwrap() = losing;
    }
}

#[async_trait]
impl ControlChannel for LosesToP3 {
    async fn run(
        &self,
        start: &SessionStart,
        signed: &SignedStart,
        deadline: Duration,
    ) -> Result<Vec<SignedOutcome>, StarterError> {
        let kind = match start.operation {
            tessera_control::Operation::ActivateEpoch { .. } => Losing::Activations,
            tessera_control::Operation::CloseEpoch { .. } => Losing::Closures,
            tessera_control::Operation::Reshare { .. } => Losing::Reshares,
            _ => Losing::Nothing,
        };
        let losing = *self.losing.lock().unwrap();
        if kind != Losing::Nothing && kind == losing {
            self.without_p3.run(start, signed, deadline).await
        } else {
            self.all.run(start, signed, deadline).await
        }
    }
}

/// Puts INSECURE fixture prime sets into the pools of p1, p2 and p3 for `rotations` key
/// rotations (each takes one set from every receiver). A party's sets are its own (p1: 0 and
/// 3, p2: 1 and 4, p3: 2 and 5), so any rotation's receivers hold distinct ones.
pub fn give_primes(cluster: &Cluster, rotations: usize) {
    let primes = tessera_mpc::fixtures::insecure_test_primes();
    for r in 0..rotations {
        for (k, node) in cluster.nodes.iter().enumerate() {
            node.primes().put(&primes[k + 3 * ((r + 1) % 2)]).unwrap();
        }
    }
}

/// A key change proposal of `operation` on `key`.
pub fn proposal(key: &str, operation: KeyOperation) -> ProposeKeyChange {
    ProposeKeyChange {
        id: ProposalId::random(),
        key: key.to_owned(),
        operation,
        lifetime_secs: None,
    }
}

/// A reshare to `committee` with `threshold`.
pub fn reshare(committee: &[PartyId], threshold: u16) -> KeyOperation {
    KeyOperation::Reshare {
        committee: committee.to_vec(),
        threshold,
    }
}

/// `ada` proposes, `abe` approves (enough under the development policy); returns the change
/// as the approval left it.
pub async fn approved_change(
    c: &Arc<Coordinator>,
    cluster: &Cluster,
    key: &str,
    operation: KeyOperation,
) -> KeyChangeView {
    let pending = c
        .propose_key_change("ada", proposal(key, operation))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(pending.state, KeyChangeState::Pending);
    let own = cluster.sign("ada", &pending.change.change_digest());
    let signed = c
        .approve_key_change("ada", pending.id, own)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(signed.state, KeyChangeState::Pending);
    let signature = cluster.sign("abe", &pending.change.change_digest());
    c.approve_key_change("abe", pending.id, signature)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}
