//! A whole cluster in one process: `n` nodes, their encrypted stores in a directory, and a
//! starter, over the in-memory transport or a real `nats-server` started on loopback with the
//! permissioned configuration. Used by `tessera demo`, `tessera bench` and tests.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tessera_audit::{AuditLog, LogOptions, StreamSink};
use tessera_channel::identity::{CoordinatorKey, PartyIdentity};
use tessera_channel::{ChannelConfig, ChannelManager, Roster, SignedRoster};
use tessera_policy::dev::DevPolicy;
use tessera_policy::PolicyDocument;
use tessera_store::{FileStore, KdfParams};
use tessera_telemetry::Telemetry;
use tessera_transport::memory::MemoryNetwork;
use tessera_transport::nats::server::LocalNatsServer;
use tessera_transport::nats::{
    connect_client, connect_coordinator, connect_unauthenticated, NatsMetrics, NatsTransport,
};
use tessera_transport::{SecureTransport, Transport};
use tessera_wire::{subject, ClusterId, KeyId, PartyId, SessionId};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use zeroize::Zeroizing;

use tessera_control::certificate::verify_activation;
use tessera_control::nats::NatsControl;
use tessera_control::pool::PresignaturePool;
use tessera_control::spend::MAX_RECORDS_PER_DELIVERY;
use tessera_control::{
    all_succeeded, ControlChannel, EpochReport, Operation, Output, SignedOutcome, SpendChain,
    SpendRecord, Starter, StarterError,
};
use tessera_mpc::reshare::ReshareSetup;
use tessera_policy::{Approval, ApprovedKeyChange, SignRequest};

use crate::channels::InProcessControl;
use crate::metrics::NodeCollector;
use crate::{Node, NodeSettings};

/// The name of the local cluster's coordinator key.
pub const LOCAL_COORDINATOR: &str = "local";

/// How the local cluster's parties talk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Network {
    /// The in-memory transport; starts handed to nodes directly.
    Memory,
    /// A `nats-server` started on loopback (mTLS, one NKey user per party and for the
    /// coordinator, subject permissions); starts and outcomes over its control subjects.
    SpawnNats,
    /// DEVELOPMENT ONLY: an existing broker at this URL that asks for no TLS and no
    /// credentials (e.g. `nats-server -p 4222`). Everything stays sealed end to end, but the
    /// broker enforces no permissions.
    DevBroker(String),
}

/// Why the local cluster could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot start the local cluster: {0}")]
pub struct LocalError(String);

fn setup<E: std::fmt::Display>(e: E) -> LocalError {
    LocalError(e.to_string())
}

/// Options of [`LocalCluster::start`].
#[derive(Clone, Debug)]
pub struct LocalOptions {
    /// Number of parties (`p1..pn`).
    pub parties: u16,
    /// The network.
    pub network: Network,
    /// Node settings.
    pub settings: NodeSettings,
    /// Key derivation for the stores' passphrase.
    pub kdf: KdfParams,
    /// The policy every node pins; `None` generates a development policy with its own
    /// principals ([`DevPolicy`]), kept in [`LocalCluster::dev`].
    pub policy: Option<PolicyDocument>,
}

impl Default for LocalOptions {
    fn default() -> Self {
        LocalOptions {
            parties: 3,
            network: Network::Memory,
            settings: NodeSettings::default(),
            kdf: KdfParams::default(),
            policy: None,
        }
    }
}

/// A running local cluster.
pub struct LocalCluster {
    /// The parties, `p1..pn`.
    pub parties: Vec<PartyId>,
    /// The nodes, in party order.
    pub nodes: Vec<Arc<Node<FileStore>>>,
    /// The roster.
    pub roster: Roster,
    /// The policy every node pins.
    pub policy: PolicyDocument,
    /// The generated development policy and its principals' keys, unless a policy was given.
    pub dev: Option<DevPolicy>,
    starter: Arc<Starter>,
    control: Arc<dyn ControlChannel>,
    nats: Option<LocalNatsServer>,
    dev_url: Option<String>,
    stop: watch::Sender<bool>,
    serving: Vec<JoinHandle<()>>,
    telemetry: Vec<Arc<Telemetry>>,
    audit_dir: PathBuf,
    memory: Option<MemoryNetwork>,
    audit_stream: Option<(async_nats::Client, String)>,
    forwarders: Vec<JoinHandle<()>>,
    /// Every NATS connection's counters, told of an orderly stop before the server goes.
    connections: Vec<Arc<NatsMetrics>>,
    identities: Vec<Zeroizing<String>>,
    spends: Mutex<SpendChain>,
    spend_heads: Mutex<BTreeMap<(KeyId, PartyId), u64>>,
}

/// The passphrase of the local cluster's throwaway stores (public: never use a local
/// cluster's keys for value).
pub const LOCAL_PASSPHRASE: &[u8] = b"local cluster: a throwaway store";
const PASSPHRASE: &[u8] = LOCAL_PASSPHRASE;

impl LocalCluster {
    /// Creates identities, a roster with one coordinator, and a store per party under `dir`,
    /// then starts the nodes.
    pub async fn start(dir: &Path, options: LocalOptions) -> Result<Self, LocalError> {
        let cluster = ClusterId::new("local").map_err(setup)?;
        let (policy, dev) = match options.policy {
            Some(policy) => (policy, None),
            None => {
                let dev = DevPolicy::generate().map_err(setup)?;
                (dev.document.clone(), Some(dev))
            }
        };
        let parties: Vec<PartyId> = (1..=options.parties).map(PartyId).collect();
        let mut identities = Vec::new();
        let mut seeds = Vec::new();
        let mut publics = Vec::new();
        for &p in &parties {
            let nkey = nkeys::KeyPair::new_user();
            let seed = nkey.seed().map_err(setup)?;
            let identity = PartyIdentity::generate(p, cluster.clone(), Some(seed.clone()));
            publics.push(identity.public(Some(nkey.public_key())));
            identities.push(identity);
            seeds.push(seed);
        }
        let coordinator_nkey = nkeys::KeyPair::new_user();
        let coordinator_seed = coordinator_nkey.seed().map_err(setup)?;
        let coordinator = CoordinatorKey::generate(
            LOCAL_COORDINATOR,
            cluster.clone(),
            Some(coordinator_seed.clone()),
        )
        .map_err(setup)?;
        let roster = Roster::build(cluster.clone(), 1, &publics)
            .and_then(|r| {
                r.with_coordinators(vec![coordinator.public(Some(coordinator_nkey.public_key()))])
            })
            .map_err(setup)?;

        let nats = match &options.network {
            Network::SpawnNats => {
                Some(LocalNatsServer::start_in(&roster, &dir.join("nats")).map_err(setup)?)
            }
            _ => None,
        };
        let dev_url = match &options.network {
            Network::DevBroker(url) => Some(url.clone()),
            _ => None,
        };
        let audit_dir = dir.join("audit");
        std::fs::create_dir_all(&audit_dir).map_err(setup)?;
        // For auditors: `tessera audit verify --roster <dir>/roster.json <dir>/audit/*`.
        std::fs::write(
            dir.join("roster.json"),
            SignedRoster::new(roster.clone()).to_json(),
        )
        .map_err(setup)?;
        let memory = MemoryNetwork::new();
        let (stop, stopped) = watch::channel(false);
        let mut nodes = Vec::new();
        let mut serving = Vec::new();
        let mut telemetry = Vec::new();
        let mut audit_clients = Vec::new();
        let mut connections = Vec::new();
        let identity_copies: Vec<Zeroizing<String>> =
            identities.iter().map(PartyIdentity::to_json).collect();
        for (identity, seed) in identities.into_iter().zip(&seeds) {
            let mut nats_metrics = Vec::new();
            let p = identity.party();
            let store_dir = dir.join(p.to_string());
            let store = FileStore::create(&store_dir, PASSPHRASE, options.kdf).map_err(setup)?;
            let transport: Arc<dyn Transport> = match (&nats, &dev_url) {
                (Some(server), _) => {
                    let config = server.client_config(&roster, p, seed).map_err(setup)?;
                    let transport = NatsTransport::connect(&config).await.map_err(setup)?;
                    nats_metrics.push(("transport", transport.metrics().clone()));
                    Arc::new(transport)
                }
                (None, Some(url)) => {
                    let transport = NatsTransport::connect_unauthenticated(url, cluster.clone(), p)
                        .await
                        .map_err(setup)?;
                    nats_metrics.push(("transport", transport.metrics().clone()));
                    Arc::new(transport)
                }
                (None, None) => Arc::new(memory.connect(p)),
            };
            let channel_identity = PartyIdentity::from_json(&identity.to_json()).map_err(setup)?;
            let manager =
                ChannelManager::new(channel_identity, roster.clone(), ChannelConfig::default())
                    .map_err(setup)?;
            let net = Arc::new(
                SecureTransport::start(manager, transport)
                    .await
                    .map_err(setup)?,
            );
            let audit_identity = PartyIdentity::from_json(&identity.to_json()).map_err(setup)?;
            let audit = AuditLog::open(
                Box::new(audit_identity),
                LogOptions {
                    file: Some(audit_dir.join(format!("{p}.audit.jsonl"))),
                    ..LogOptions::default()
                },
            )
            .map_err(setup)?;
            let node = Arc::new(
                Node::new(
                    net,
                    identity,
                    roster.clone(),
                    Arc::new(store),
                    policy.clone(),
                    options.settings.clone(),
                    Arc::new(audit),
                )
                .map_err(setup)?,
            );
            let control_metrics = Arc::new(NatsMetrics::default());
            let control_client = match (&nats, &dev_url) {
                (Some(server), _) => {
                    let config = server.client_config(&roster, p, seed).map_err(setup)?;
                    Some(
                        connect_client(&config, control_metrics.clone())
                            .await
                            .map_err(setup)?,
                    )
                }
                (None, Some(url)) => Some(
                    connect_unauthenticated(
                        url,
                        &p.to_string(),
                        subject::reply_inbox_prefix(&cluster, p),
                        control_metrics.clone(),
                    )
                    .await
                    .map_err(setup)?,
                ),
                (None, None) => None,
            };
            let mut collector = NodeCollector::new(node.clone());
            for (connection, metrics) in nats_metrics {
                connections.push(metrics.clone());
                collector = collector.with_nats(connection, metrics);
            }
            if let Some(client) = &control_client {
                connections.push(control_metrics.clone());
                collector = collector
                    .with_nats("control", control_metrics)
                    .with_broker(client.clone());
            }
            telemetry.push(Arc::new(collector.telemetry()));
            if let Some(client) = &control_client {
                audit_clients.push((node.clone(), client.clone()));
            }
            if let Some(client) = control_client {
                let mut stopped = stopped.clone();
                let node = node.clone();
                serving.push(tokio::spawn(async move {
                    let shutdown = async move {
                        let _ = stopped.changed().await;
                    };
                    if let Err(e) =
                        crate::serve::serve(node, client, shutdown, Duration::from_secs(5)).await
                    {
                        tracing::error!(error = %e, "local node stopped serving");
                    }
                }));
            }
            nodes.push(node);
        }
        for node in &nodes {
            let unreachable = node.net().connect_peers(Duration::from_secs(10)).await;
            if !unreachable.is_empty() {
                return Err(LocalError(format!(
                    "{} cannot reach {unreachable:?}",
                    node.party()
                )));
            }
        }
        let (control, coordinator_client): (Arc<dyn ControlChannel>, _) = match (&nats, &dev_url) {
            (None, None) => (Arc::new(InProcessControl::new(nodes.clone())), None),
            (None, Some(url)) => {
                let metrics = Arc::new(NatsMetrics::default());
                connections.push(metrics.clone());
                let client = connect_unauthenticated(
                    url,
                    "coordinator",
                    subject::coordinator_reply_prefix(&cluster, LOCAL_COORDINATOR),
                    metrics,
                )
                .await
                .map_err(setup)?;
                (
                    Arc::new(NatsControl::new(client.clone(), cluster.clone())),
                    Some(client),
                )
            }
            (Some(server), _) => {
                let config = server
                    .coordinator_config(&roster, LOCAL_COORDINATOR, &coordinator_seed)
                    .map_err(setup)?;
                let metrics = Arc::new(NatsMetrics::default());
                connections.push(metrics.clone());
                let client = connect_coordinator(&config, metrics).await.map_err(setup)?;
                (
                    Arc::new(NatsControl::new(client.clone(), cluster.clone())),
                    Some(client),
                )
            }
        };
        // Over a broker, the nodes' audit events also go to the cluster's JetStream stream,
        // which the coordinator creates (deny-delete, deny-purge). A development broker without
        // JetStream keeps the files only.
        let name = subject::audit_stream(&cluster);
        let mut audit_stream = None;
        let mut forwarders = Vec::new();
        if let Some(client) = &coordinator_client {
            let js = async_nats::jetstream::new(client.clone());
            match tessera_audit::stream::ensure_stream(&js, cluster.as_str(), &name, 1).await {
                Ok(_) => {
                    for (node, client) in &audit_clients {
                        forwarders.push(node.audit().attach_stream(StreamSink {
                            js: async_nats::jetstream::new(client.clone()),
                            stream: name.clone(),
                        }));
                    }
                    audit_stream = Some((client.clone(), name.clone()));
                }
                Err(e) if nats.is_none() => {
                    tracing::warn!(error = %e, "no audit stream on the development broker; audit events stay in the files");
                }
                Err(e) => return Err(setup(e)),
            }
        }
        let starter = Arc::new(Starter::new(coordinator, roster.clone()).map_err(setup)?);
        let memory = (nats.is_none() && dev_url.is_none()).then_some(memory);
        Ok(LocalCluster {
            spends: Mutex::new(SpendChain::new()),
            spend_heads: Mutex::new(BTreeMap::new()),
            identities: identity_copies,
            parties,
            nodes,
            roster,
            policy,
            dev,
            starter,
            control,
            nats,
            dev_url,
            stop,
            serving,
            telemetry,
            audit_dir,
            memory,
            audit_stream,
            forwarders,
            connections,
        })
    }

    /// The in-memory network the nodes talk over (`None` over NATS): tests connect extra,
    /// misbehaving senders to it.
    pub fn memory(&self) -> Option<&MemoryNetwork> {
        self.memory.as_ref()
    }

    /// The coordinator's broker connection and the name of the cluster's audit stream, when the
    /// cluster runs over a broker with JetStream: the nodes forward their audit events to it.
    pub fn audit_stream(&self) -> Option<&(async_nats::Client, String)> {
        self.audit_stream.as_ref()
    }

    /// Where the nodes' audit logs are (`p1.audit.jsonl`, …); the roster to verify them with
    /// is `roster.json` in the cluster's directory.
    pub fn audit_dir(&self) -> &Path {
        &self.audit_dir
    }

    /// A copy of party `p`'s identity (its secret keys), for tests that play that party going
    /// rogue: signing outcomes, broadcasts or frames in its name.
    pub fn party_identity(&self, p: PartyId) -> PartyIdentity {
        let json = &self.identities[usize::from(p.0 - 1)];
        PartyIdentity::from_json(json).expect("an identity this cluster wrote")
    }

    /// The node of party `p`.
    pub fn node(&self, p: PartyId) -> &Arc<Node<FileStore>> {
        &self.nodes[usize::from(p.0 - 1)]
    }

    /// The metrics of party `p`'s node (with its NATS connections' counters when the cluster
    /// runs over NATS), to render or to serve with [`tessera_telemetry::serve`].
    pub fn telemetry(&self, p: PartyId) -> Option<&Arc<Telemetry>> {
        self.telemetry.get(usize::from(p.0).checked_sub(1)?)
    }

    /// The broker's URL, if the cluster runs over NATS.
    pub fn nats_url(&self) -> Option<&str> {
        self.nats
            .as_ref()
            .map(|s| s.url())
            .or(self.dev_url.as_deref())
    }

    /// The starter.
    pub fn starter(&self) -> &Starter {
        &self.starter
    }

    /// The control channel.
    pub fn control(&self) -> &dyn ControlChannel {
        self.control.as_ref()
    }

    /// The starter and control channel, shared: for a coordinator service running on this
    /// cluster (`tessera dev`).
    pub fn shared(&self) -> (Arc<Starter>, Arc<dyn ControlChannel>) {
        (self.starter.clone(), self.control.clone())
    }

    /// A presignature pool of `target` per (key, signers), made through this cluster.
    pub fn presignature_pool(&self, target: usize) -> Arc<PresignaturePool> {
        Arc::new(PresignaturePool::new(
            self.starter.clone(),
            self.control.clone(),
            target,
            Duration::from_secs(120),
            Duration::from_secs(tessera_control::pool::DEFAULT_MAX_AGE_SECS),
        ))
    }

    /// Runs one session with `parties` and returns the agreed result.
    pub async fn run(
        &self,
        parties: &[PartyId],
        operation: Operation,
        deadline: Duration,
    ) -> Result<Output, StarterError> {
        self.starter
            .run(self.control.as_ref(), parties, operation, deadline)
            .await
    }

    /// Signs `request` with `parties` as a coordinator does: gives the signing the next place
    /// in its key's spend chain (kept in memory), first delivers to the signers the records of
    /// the chain they lack, runs online signing with `presignature` (or full signing), and
    /// records the signature in the chain.
    pub async fn sign(
        &self,
        parties: &[PartyId],
        request: &SignRequest,
        approvals: Vec<Approval>,
        presignature: Option<SessionId>,
        deadline: Duration,
    ) -> Result<Output, StarterError> {
        let link = self
            .spends
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .link(request, tessera_control::now_unix());
        self.deliver_spends(request.key, parties, link.seq - 1, deadline)
            .await?;
        let operation = match presignature {
            Some(presignature) => Operation::OnlineSign {
                presignature,
                request: request.clone(),
                approvals,
                link: Some(link),
            },
            None => Operation::Sign {
                request: request.clone(),
                approvals,
                link: Some(link),
            },
        };
        let output = self.run(parties, operation, deadline).await?;
        if let Output::Signature { signature } = &output {
            self.spends
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .signed(request.key, link.seq, signature.clone());
            // A signer that held the chain up to the place before holds this signing's own
            // record too: the next signing need not deliver it.
            let mut heads = self.spend_heads.lock().unwrap_or_else(|p| p.into_inner());
            for party in parties {
                let head = heads.entry((request.key, *party)).or_insert(0);
                if *head + 1 == link.seq {
                    *head = link.seq;
                }
            }
        }
        Ok(output)
    }

    /// Delivers to each of `parties` the records of `key`'s spend chain up to place `upto`
    /// that it lacks, as far as this cluster knows.
    pub async fn deliver_spends(
        &self,
        key: KeyId,
        parties: &[PartyId],
        upto: u64,
        deadline: Duration,
    ) -> Result<(), StarterError> {
        for party in parties {
            let head = self.spend_head(key, *party);
            let records: Vec<SpendRecord> = self
                .spends
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .records_after(key, head)
                .into_iter()
                .filter(|r| r.link.seq <= upto)
                .collect();
            for batch in records.chunks(MAX_RECORDS_PER_DELIVERY) {
                let operation = Operation::RecordSpends {
                    key,
                    records: batch.to_vec(),
                };
                if let Output::SpendsRecorded { head, .. } =
                    self.run(&[*party], operation, deadline).await?
                {
                    self.spend_heads
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert((key, *party), head);
                }
            }
        }
        Ok(())
    }

    /// Where `party`'s copy of `key`'s spend chain stands, as it last said.
    pub fn spend_head(&self, key: KeyId, party: PartyId) -> u64 {
        self.spend_heads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(key, party))
            .copied()
            .unwrap_or(0)
    }

    /// Runs a reshare or refresh of `key` through its whole life, as a coordinator does (without
    /// its database): the session, then its activation certificate (every participant's
    /// signed report) to the participants, then the closure certificate (every new holder's
    /// signed activation) to every holder of the old epoch and every participant. Returns the
    /// session's report.
    pub async fn rotate(
        &self,
        key: KeyId,
        setup: ReshareSetup,
        approved: Option<ApprovedKeyChange>,
        deadline: Duration,
    ) -> Result<EpochReport, StarterError> {
        let participants = setup.participants();
        let holders: Vec<PartyId> = {
            let mut all: Vec<PartyId> = setup
                .old_committee
                .iter()
                .chain(&participants)
                .copied()
                .collect();
            all.sort();
            all.dedup();
            all
        };
        let operation = Operation::Reshare {
            key,
            setup,
            approved: approved.clone().map(Box::new),
        };
        let (start, reports) = self
            .starter
            .run_collect(self.control.as_ref(), &participants, operation, deadline)
            .await?;
        all_succeeded(&start, &reports)?;
        let certificate: Vec<SignedOutcome> = reports.values().map(|r| r.signed.clone()).collect();
        let report = verify_activation(&self.roster, key, start.session, &certificate)
            .map_err(|e| StarterError::Channel(e.to_string()))?;
        let activate = Operation::ActivateEpoch {
            key,
            reshare: start.session,
            certificate: certificate.clone(),
        };
        let (start_activate, activated) = self
            .starter
            .run_collect(self.control.as_ref(), &participants, activate, deadline)
            .await?;
        all_succeeded(&start_activate, &activated)?;
        let close = Operation::CloseEpoch {
            key,
            reshare: start.session,
            certificate,
            activated: activated
                .iter()
                .filter(|(p, _)| report.new_committee.contains(p))
                .map(|(_, r)| r.signed.clone())
                .collect(),
            approved: approved.map(Box::new),
        };
        let (start_close, closed) = self
            .starter
            .run_collect(self.control.as_ref(), &holders, close, deadline)
            .await?;
        all_succeeded(&start_close, &closed)?;
        Ok(report)
    }

    /// Stops serving and waits for the nodes' control loops to end.
    pub async fn shutdown(self) {
        for forwarder in &self.forwarders {
            forwarder.abort();
        }
        let _ = self.stop.send(true);
        for task in self.serving {
            let _ = task.await;
        }
        // The broker stops with the cluster, possibly before its clients notice: an
        // orderly stop, not a lost connection.
        for connection in &self.connections {
            connection.close();
        }
    }
}
