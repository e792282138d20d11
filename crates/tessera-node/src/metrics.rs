//! The node's metrics (Prometheus, OpenMetrics text) and readiness.
//!
//! [`NodeMetrics`] holds what the node counts as it works (kept in [`Node`] and updated by the
//! session runner and the request ledger). [`NodeCollector`] reads everything else when
//! scraped: pool levels, the request ledger, the secure transport's refusal counters and, on
//! NATS, the connection counters. [`NodeReadiness`] is the node's `/readyz` check.
//!
//! | metric | type | labels | what |
//! |---|---|---|---|
//! | `tessera_node_sessions_total` | counter | `kind`, `outcome` | sessions this node took part in, by [kind](SESSION_KINDS) and [outcome](SESSION_OUTCOMES) |
//! | `tessera_node_sessions_running` | gauge | | sessions running now |
//! | `tessera_node_session_duration_seconds` | histogram | `kind` | duration of successful sessions, from the verified start to the stored result |
//! | `tessera_node_stage_seconds` | histogram | `operation`, `stage` | where a session's time goes (see below) |
//! | `tessera_node_policy_refusals_total` | counter | `reason` | sign requests this node refused, by reason (a request refused for several policy reasons counts once under each) |
//! | `tessera_node_starts_refused_total` | counter | `reason` | session starts dropped before running: undecodable, untrusted signer, other cluster or roster |
//! | `tessera_node_outcomes_unpublished_total` | counter | | signed outcomes the control loop failed to publish |
//! | `tessera_node_primes_ready` | gauge | | prime sets ready for auxiliary info |
//! | `tessera_node_primes_generating` | gauge | | 1 while a prime set is being generated |
//! | `tessera_node_keys` | gauge | | keys held |
//! | `tessera_node_presignatures_fresh` | gauge | `key` | unused presignatures per key |
//! | `tessera_node_requests` | gauge | `state` (`started`, `signed`) | the request ledger: agreed to sign but not seen complete, and signed |
//! | `tessera_node_frames_refused_total` | counter | `reason` | inputs the secure channels refused ([`RefusalReason::as_str`]; every known reason, zeros included) |
//! | `tessera_node_deliveries_dropped_total` | counter | `reason` (`over_peer_limit`, `over_session_limit`, `late_for_closed_session`) | authenticated payloads no session took: over what one peer may have waiting in all sessions or in one, or late for a closed session |
//! | `tessera_node_deliveries_held` | gauge | | payloads held for sessions not yet opened |
//! | `tessera_node_deliveries_queued` | gauge | | payloads queued in open sessions, not yet read |
//! | `tessera_node_broker_connected` | gauge | | 1 while the control connection is up (NATS only) |
//! | `tessera_node_nats_connects_total`, `_disconnects_total`, `_permission_violations_total`, `_slow_consumer_drops_total`, `_server_errors_total`, `_unparsable_subjects_total` | counter | `connection` (`transport`, `control`) | NATS client events (NATS only) |
//!
//! Policy refusal reasons: the policy's own codes ([`tessera_policy::Reason::code`], e.g.
//! `over_per_request`, `destination_denied`, `needs_approvals`, `bad_approval`, `expired`) and
//! the node's checks around them: `invalid_request`, `undecodable`, `digest_mismatch`,
//! `in_flight`, `request_id_reused`, `already_signed`, `online_child_path`.
//!
//! Stages (`tessera_node_stage_seconds`, one observation per stage and session, from the
//! received start; the stages of a session add up to its time at this node): `start`
//! (verifying the start, recording `session.joined`), then for `sign` and `online_sign`:
//! `policy` (loading the key, decoding the request, policy, approvals, the durable request
//! ledger entry), `material` (`online_sign`: taking the presignature or committed nonces out
//! of the store durably), `protocol` (the protocol's rounds with the other signers), `record`
//! (verifying the signature, marking the request signed, recording `request.signed`); for
//! every other operation `run` (the whole operation); a session that fails or is refused
//! ends its last stage as `failed` instead; and last `outcome` (recording `session.ended`,
//! flushing the audit log, signing the outcome). Round latencies inside a protocol are not measured:
//! the protocol library drives the rounds inside `tessera-mpc`, which exposes no per-round hook.
//!
//! Readiness ([`NodeReadiness`]): the control connection to the broker is up, the store can
//! be read, at least [`PoolFloors::primes`] prime sets are ready, and every key held has at
//! least [`PoolFloors::presignatures`] fresh presignatures.

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tessera_channel::RefusalReason;
use tessera_mpc::MpcError;
use tessera_store::SecretStore;
use tessera_telemetry::prometheus_client::collector::Collector;
use tessera_telemetry::prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeMetric,
};
use tessera_telemetry::prometheus_client::metrics::counter::{ConstCounter, Counter};
use tessera_telemetry::prometheus_client::metrics::family::Family;
use tessera_telemetry::prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use tessera_telemetry::prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use tessera_telemetry::prometheus_client::metrics::MetricType;
use tessera_telemetry::prometheus_client::registry::Registry;
use tessera_telemetry::{Readiness, StageTimes, Telemetry, TelemetryError};
use tessera_transport::nats::NatsMetrics;

use crate::node::{Node, NodeError};
use crate::requests::LedgerStatus;
use crate::state::StateError;
use tessera_control::{ControlError, Operation, Output};

/// Values of the `kind` label: one per [`Operation`].
pub const SESSION_KINDS: [&str; 5] = ["aux_info", "keygen", "presign", "sign", "online_sign"];

/// Values of the `outcome` label: `ok`; `refused` (the node declined before the protocol ran:
/// stale or replayed start, request or policy refused, key or presignature missing or
/// existing); `timeout` (a round deadline passed; the silent parties are blamed); `failed`
/// (the protocol or the store failed).
pub const SESSION_OUTCOMES: [&str; 4] = ["ok", "refused", "timeout", "failed"];

/// Channel refusal reasons rendered even at zero; any other reason the counters report is
/// rendered as well.
const KNOWN_FRAME_REFUSALS: [RefusalReason; 14] = [
    RefusalReason::Malformed,
    RefusalReason::UnknownParty,
    RefusalReason::Misaddressed,
    RefusalReason::SenderMismatch,
    RefusalReason::Replay,
    RefusalReason::UnknownEpoch,
    RefusalReason::AuthenticationFailed,
    RefusalReason::BadBroadcastSignature,
    RefusalReason::HandshakeFailed,
    RefusalReason::StaleHandshake,
    RefusalReason::PayloadTooLarge,
    RefusalReason::QueueFull,
    RefusalReason::SelfChannel,
    RefusalReason::RateLimited,
];

type Labels<const N: usize> = [(&'static str, &'static str); N];
type Histograms = Family<Labels<1>, Histogram, fn() -> Histogram>;

fn duration_histogram() -> Histogram {
    // 10 ms to about 5.5 minutes (auxiliary info).
    Histogram::new(exponential_buckets(0.01, 2.0, 16))
}

/// The `kind` label of an operation.
pub fn session_kind(operation: &Operation) -> &'static str {
    match operation {
        Operation::AuxInfo => "aux_info",
        Operation::Keygen { .. } => "keygen",
        Operation::Presign { .. } => "presign",
        Operation::Sign { .. } => "sign",
        Operation::OnlineSign { .. } => "online_sign",
        Operation::Reshare { setup, .. } => match setup.kind {
            tessera_mpc::reshare::Kind::Reshare => "reshare",
            tessera_mpc::reshare::Kind::Refresh => "refresh",
        },
        Operation::DescribeKey { .. } => "describe_key",
        Operation::Primes => "primes",
        Operation::ActivateEpoch { .. } => "activate_epoch",
        Operation::CloseEpoch { .. } => "close_epoch",
        Operation::RecordSpends { .. } => "record_spends",
        Operation::AbandonReshare { .. } => "abandon_reshare",
    }
}

/// The `outcome` label of a session's result (see [`SESSION_OUTCOMES`]).
pub fn session_outcome(result: &Result<Output, NodeError>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(
            NodeError::Control(_)
            | NodeError::Stale(_)
            | NodeError::Replayed(_)
            | NodeError::Refused(_)
            | NodeError::State(
                StateError::Exists(_)
                | StateError::UnknownKey(_)
                | StateError::NoAuxInfo(_)
                | StateError::ChangeUsed { .. },
            )
            | NodeError::Presignature(
                tessera_mpc::PresignatureError::NotAvailable { .. }
                | tessera_mpc::PresignatureError::Consumed { .. }
                | tessera_mpc::PresignatureError::Expired { .. },
            )
            | NodeError::Mpc(MpcError::InvalidSession(_))
            | NodeError::Certificate(_)
            | NodeError::Reshare(_),
        ) => "refused",
        Err(NodeError::Mpc(MpcError::Timeout { .. })) => "timeout",
        Err(_) => "failed",
    }
}

fn start_refusal(error: &ControlError) -> &'static str {
    match error {
        ControlError::Malformed(_) => "malformed",
        ControlError::UnknownCoordinator(_) => "unknown_coordinator",
        ControlError::UnknownParty(_) => "unknown_party",
        ControlError::BadSignature(_) => "bad_signature",
        ControlError::WrongCluster { .. } => "wrong_cluster",
        ControlError::WrongRoster(_) => "wrong_roster",
    }
}

/// What a node counts as it works. Clones share the same counters.
#[derive(Clone, Debug)]
pub struct NodeMetrics {
    sessions: Family<Labels<2>, Counter>,
    running: Gauge,
    durations: Histograms,
    stages: StageTimes,
    policy_refusals: Family<Labels<1>, Counter>,
    starts_refused: Family<Labels<1>, Counter>,
    outcomes_unpublished: Counter,
}

impl Default for NodeMetrics {
    fn default() -> Self {
        let metrics = NodeMetrics {
            sessions: Family::default(),
            running: Gauge::default(),
            durations: Family::new_with_constructor(duration_histogram),
            stages: StageTimes::new(),
            policy_refusals: Family::default(),
            starts_refused: Family::default(),
            outcomes_unpublished: Counter::default(),
        };
        // Every kind and outcome from zero, so rates exist before the first event.
        for kind in SESSION_KINDS {
            for outcome in SESSION_OUTCOMES {
                drop(
                    metrics
                        .sessions
                        .get_or_create(&[("kind", kind), ("outcome", outcome)]),
                );
            }
        }
        metrics
    }
}

/// Decrements the running-sessions gauge when dropped.
pub(crate) struct Running(Gauge);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl NodeMetrics {
    /// Fresh counters.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers the counters in `registry` (names in the [module](self) docs). The registry
    /// ends each help text with a full stop.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "tessera_node_sessions",
            "Sessions this node took part in, by kind and outcome",
            self.sessions.clone(),
        );
        registry.register(
            "tessera_node_sessions_running",
            "Sessions running now",
            self.running.clone(),
        );
        registry.register(
            "tessera_node_session_duration_seconds",
            "Duration of successful sessions, from the verified start to the stored result",
            self.durations.clone(),
        );
        self.stages.register(
            registry,
            "tessera_node_stage_seconds",
            "Time spent in each stage of a session at this node, by operation and stage",
        );
        registry.register(
            "tessera_node_policy_refusals",
            "Sign requests this node refused, by reason; a request refused for several policy reasons counts once under each",
            self.policy_refusals.clone(),
        );
        registry.register(
            "tessera_node_starts_refused",
            "Session starts dropped before running, by reason",
            self.starts_refused.clone(),
        );
        registry.register(
            "tessera_node_outcomes_unpublished",
            "Signed session outcomes the control loop could not publish",
            self.outcomes_unpublished.clone(),
        );
    }

    /// Renders `node`'s metrics once, without NATS counters (for in-process clusters and
    /// tests; a served node uses [`NodeCollector`]).
    pub fn render<S>(node: &Arc<Node<S>>) -> Result<String, TelemetryError>
    where
        S: SecretStore + Send + Sync + 'static,
    {
        NodeCollector::new(node.clone()).telemetry().render()
    }

    /// Where sessions' time goes, by operation and stage.
    pub fn stages(&self) -> &StageTimes {
        &self.stages
    }

    /// Counts a session as running until the guard drops.
    pub(crate) fn running(&self) -> Running {
        self.running.inc();
        Running(self.running.clone())
    }

    /// Counts a finished session; observes its duration if it succeeded.
    pub(crate) fn session_finished(
        &self,
        operation: &Operation,
        result: &Result<Output, NodeError>,
        elapsed: Duration,
    ) {
        let kind = session_kind(operation);
        let outcome = session_outcome(result);
        self.sessions
            .get_or_create(&[("kind", kind), ("outcome", outcome)])
            .inc();
        if result.is_ok() {
            self.durations
                .get_or_create(&[("kind", kind)])
                .observe(elapsed.as_secs_f64());
        }
    }

    /// Counts a request refused for `reason` (a stable label).
    pub(crate) fn policy_refusal(&self, reason: &'static str) {
        self.policy_refusals
            .get_or_create(&[("reason", reason)])
            .inc();
    }

    /// Counts a session start dropped for `error`.
    pub(crate) fn start_refused(&self, error: &ControlError) {
        self.starts_refused
            .get_or_create(&[("reason", start_refusal(error))])
            .inc();
    }

    /// Counts an outcome the control loop could not publish.
    pub(crate) fn outcome_unpublished(&self) {
        self.outcomes_unpublished.inc();
    }
}

/// Reads, when scraped, what a node keeps elsewhere: pools, the request ledger, the secure
/// transport's refusals and routing drops, and NATS connection counters.
pub struct NodeCollector<S: SecretStore> {
    node: Arc<Node<S>>,
    nats: Vec<(&'static str, Arc<NatsMetrics>)>,
    broker: Option<async_nats::Client>,
}

impl<S: SecretStore + Send + Sync + 'static> fmt::Debug for NodeCollector<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeCollector")
            .field("party", &self.node.party())
            .field("nats", &self.nats)
            .finish_non_exhaustive()
    }
}

impl<S: SecretStore + Send + Sync + 'static> NodeCollector<S> {
    /// A collector of `node`.
    pub fn new(node: Arc<Node<S>>) -> Self {
        NodeCollector {
            node,
            nats: Vec::new(),
            broker: None,
        }
    }

    /// Also renders the counters of a NATS connection, labelled `connection="<connection>"`.
    pub fn with_nats(mut self, connection: &'static str, metrics: Arc<NatsMetrics>) -> Self {
        self.nats.push((connection, metrics));
        self
    }

    /// Also renders whether the control connection `client` is up.
    pub fn with_broker(mut self, client: async_nats::Client) -> Self {
        self.broker = Some(client);
        self
    }

    /// Everything the node exposes: its [`NodeMetrics`] and this collector.
    pub fn telemetry(self) -> Telemetry {
        let mut telemetry = Telemetry::new();
        self.node.metrics().register(telemetry.registry_mut());
        telemetry.registry_mut().register_collector(Box::new(self));
        telemetry
    }

    fn encode_pools(&self, encoder: &mut DescriptorEncoder) -> fmt::Result {
        let primes = self.node.primes();
        match primes.len() {
            Ok(n) => gauge(
                encoder,
                "tessera_node_primes_ready",
                "Prime sets ready for auxiliary info.",
                n,
            )?,
            Err(e) => tracing::warn!(error = %e, "metrics: cannot read the prime pool"),
        }
        gauge(
            encoder,
            "tessera_node_primes_generating",
            "1 while a prime set is being generated.",
            usize::from(primes.generating()),
        )?;
        let keys = match self.node.state().keys() {
            Ok(keys) => keys,
            Err(e) => {
                tracing::warn!(error = %e, "metrics: cannot list the keys");
                return Ok(());
            }
        };
        gauge(encoder, "tessera_node_keys", "Keys held.", keys.len())?;
        let mut fresh = Vec::with_capacity(keys.len());
        for key in keys {
            match self.node.state().online_ready(key) {
                Ok(available) => fresh.push(([("key", key.to_string())], available.len())),
                Err(e) => tracing::warn!(%key, error = %e, "metrics: cannot list presignatures"),
            }
        }
        family(
            encoder,
            "tessera_node_presignatures_fresh",
            "Unused presignatures (ECDSA) or committed nonces (FROST) per key.",
            MetricType::Gauge,
            &fresh,
        )
    }

    fn encode_requests(&self, encoder: &mut DescriptorEncoder) -> fmt::Result {
        let ledger = self.node.ledger();
        let mut states = Vec::new();
        for status in [LedgerStatus::Started, LedgerStatus::Signed] {
            match ledger.count(status) {
                Ok(n) => states.push(([("state", status.as_str())], n)),
                Err(e) => {
                    tracing::warn!(error = %e, "metrics: cannot read the request ledger");
                    return Ok(());
                }
            }
        }
        family(
            encoder,
            "tessera_node_requests",
            "Requests in the ledger: agreed to sign but not seen complete (started), and signed.",
            MetricType::Gauge,
            &states,
        )
    }

    fn encode_transport(&self, encoder: &mut DescriptorEncoder) -> fmt::Result {
        let refusals = self.node.net().refusals();
        let mut counts: std::collections::BTreeMap<&'static str, u64> = KNOWN_FRAME_REFUSALS
            .iter()
            .map(|r| (r.as_str(), 0))
            .collect();
        for (reason, n) in refusals.iter() {
            counts.insert(reason.as_str(), n);
        }
        let frames: Vec<_> = counts
            .into_iter()
            .map(|(reason, n)| ([("reason", reason)], n))
            .collect();
        family(
            encoder,
            "tessera_node_frames_refused",
            "Inputs the secure channels refused, by reason.",
            MetricType::Counter,
            &frames,
        )?;
        let router = self.node.net().router_stats();
        family(
            encoder,
            "tessera_node_deliveries_dropped",
            "Authenticated payloads no session took, by reason.",
            MetricType::Counter,
            &[
                ([("reason", "over_peer_limit")], router.over_peer_limit),
                (
                    [("reason", "over_session_limit")],
                    router.over_session_limit,
                ),
                (
                    [("reason", "late_for_closed_session")],
                    router.late_for_closed_session,
                ),
            ],
        )?;
        gauge(
            encoder,
            "tessera_node_deliveries_held",
            "Payloads held for sessions not yet opened.",
            router.held,
        )?;
        gauge(
            encoder,
            "tessera_node_deliveries_queued",
            "Payloads queued in open sessions, not yet read.",
            router.queued,
        )
    }

    fn encode_nats(&self, encoder: &mut DescriptorEncoder) -> fmt::Result {
        if let Some(client) = &self.broker {
            let up = client.connection_state() == async_nats::connection::State::Connected;
            gauge(
                encoder,
                "tessera_node_broker_connected",
                "1 while the control connection to the broker is up.",
                usize::from(up),
            )?;
        }
        if self.nats.is_empty() {
            return Ok(());
        }
        type Field = fn(&NatsMetrics) -> &std::sync::atomic::AtomicU64;
        let counters: [(&str, &str, Field); 6] = [
            (
                "tessera_node_nats_connects",
                "Times the NATS connection was (re-)established.",
                |m| &m.connects,
            ),
            (
                "tessera_node_nats_disconnects",
                "Times the NATS connection was lost.",
                |m| &m.disconnects,
            ),
            (
                "tessera_node_nats_permission_violations",
                "Publishes or subscriptions the broker refused for lack of permission.",
                |m| &m.permission_violations,
            ),
            (
                "tessera_node_nats_slow_consumer_drops",
                "Messages the client dropped because the node read too slowly.",
                |m| &m.slow_consumer_drops,
            ),
            (
                "tessera_node_nats_server_errors",
                "Other errors the broker reported.",
                |m| &m.server_errors,
            ),
            (
                "tessera_node_nats_unparsable_subjects",
                "Inbound messages on an inbox subject naming no valid sender.",
                |m| &m.unparsable_subjects,
            ),
        ];
        for (name, help, field) in counters {
            let samples: Vec<_> = self
                .nats
                .iter()
                .map(|(connection, m)| {
                    (
                        [("connection", *connection)],
                        field(m).load(Ordering::Relaxed),
                    )
                })
                .collect();
            family(encoder, name, help, MetricType::Counter, &samples)?;
        }
        Ok(())
    }
}

impl<S: SecretStore + Send + Sync + 'static> Collector for NodeCollector<S> {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        self.encode_pools(&mut encoder)?;
        self.encode_requests(&mut encoder)?;
        self.encode_transport(&mut encoder)?;
        self.encode_nats(&mut encoder)
    }
}

fn gauge(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: usize) -> fmt::Result {
    let metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX)).encode(metric)
}

/// One family of constant counters or gauges, a sample per label set.
fn family<L: EncodeLabelSet, N: TryInto<i64> + Copy>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    metric_type: MetricType,
    samples: &[(L, N)],
) -> fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, None, metric_type)?;
    for (labels, value) in samples {
        let value: i64 = (*value).try_into().unwrap_or(i64::MAX);
        let sample = metric.encode_family(labels)?;
        match metric_type {
            MetricType::Counter => {
                ConstCounter::new(u64::try_from(value).unwrap_or(0)).encode(sample)?
            }
            _ => ConstGauge::new(value).encode(sample)?,
        }
    }
    Ok(())
}

/// Pool levels below which a node reports itself not ready.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolFloors {
    /// Prime sets that must be ready (0: not checked).
    pub primes: usize,
    /// Fresh presignatures every key held must have (0: not checked).
    pub presignatures: usize,
}

/// The node's readiness check (`/readyz`): broker connected, store readable, pools at or
/// above their floors.
pub struct NodeReadiness<S: SecretStore> {
    node: Arc<Node<S>>,
    floors: PoolFloors,
    broker: Option<async_nats::Client>,
}

impl<S: SecretStore + Send + Sync + 'static> NodeReadiness<S> {
    /// Checks `node` against `floors`.
    pub fn new(node: Arc<Node<S>>, floors: PoolFloors) -> Self {
        NodeReadiness {
            node,
            floors,
            broker: None,
        }
    }

    /// Also requires the control connection `client` to be up.
    pub fn with_broker(mut self, client: async_nats::Client) -> Self {
        self.broker = Some(client);
        self
    }
}

impl<S: SecretStore + Send + Sync + 'static> Readiness for NodeReadiness<S> {
    fn unmet(&self) -> Vec<String> {
        let mut unmet = Vec::new();
        if let Some(client) = &self.broker {
            let state = client.connection_state();
            if state != async_nats::connection::State::Connected {
                unmet.push(format!("broker: {state}"));
            }
        }
        if let Some(failure) = self.node.audit().failure() {
            unmet.push(format!(
                "audit log: stopped after a write failure ({failure})"
            ));
        }
        let keys = match self.node.state().keys() {
            Ok(keys) => keys,
            Err(e) => {
                unmet.push(format!("store: cannot be read: {e}"));
                return unmet;
            }
        };
        if self.floors.primes > 0 {
            match self.node.primes().len() {
                Ok(n) if n < self.floors.primes => unmet.push(format!(
                    "primes: {n} set(s) ready, floor {}",
                    self.floors.primes
                )),
                Ok(_) => {}
                Err(e) => unmet.push(format!("primes: cannot be read: {e}")),
            }
        }
        if self.floors.presignatures > 0 {
            for key in keys {
                match self.node.state().online_ready(key) {
                    Ok(fresh) if fresh.len() < self.floors.presignatures => unmet.push(format!(
                        "presignatures: key {key} has {} fresh, floor {}",
                        fresh.len(),
                        self.floors.presignatures
                    )),
                    Ok(_) => {}
                    Err(e) => unmet.push(format!("presignatures: key {key}: cannot be read: {e}")),
                }
            }
        }
        unmet
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_separate_refusals_timeouts_and_failures() {
        let ok: Result<Output, NodeError> = Ok(Output::AuxInfo);
        assert_eq!(session_outcome(&ok), "ok");
        let refused = Err(NodeError::Refused("no".into()));
        assert_eq!(session_outcome(&refused), "refused");
        let exists = Err(NodeError::State(StateError::Exists("key".into())));
        assert_eq!(session_outcome(&exists), "refused");
        let timeout = Err(NodeError::Mpc(MpcError::Timeout {
            protocol: tessera_wire::Protocol::SIGN,
            session: tessera_wire::SessionId::random(),
            round: 1,
            missing: vec![tessera_wire::PartyId(2)],
        }));
        assert_eq!(session_outcome(&timeout), "timeout");
        let format = Err(NodeError::State(StateError::Format("x".into(), "y".into())));
        assert_eq!(session_outcome(&format), "failed");
        for outcome in [&ok, &refused, &exists, &timeout, &format].map(session_outcome) {
            assert!(SESSION_OUTCOMES.contains(&outcome));
        }
    }

    #[test]
    fn every_session_kind_and_outcome_is_rendered_from_zero() {
        let metrics = NodeMetrics::new();
        metrics.session_finished(
            &Operation::AuxInfo,
            &Ok(Output::AuxInfo),
            Duration::from_millis(1500),
        );
        metrics.policy_refusal("over_per_request");
        metrics.start_refused(&ControlError::BadSignature("mallory".into()));
        let mut telemetry = Telemetry::new();
        metrics.register(telemetry.registry_mut());
        let text = telemetry.render().unwrap();
        for kind in SESSION_KINDS {
            for outcome in SESSION_OUTCOMES {
                let n = if (kind, outcome) == ("aux_info", "ok") {
                    1
                } else {
                    0
                };
                let line = format!(
                    "tessera_node_sessions_total{{kind=\"{kind}\",outcome=\"{outcome}\"}} {n}"
                );
                assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
            }
        }
        for line in [
            "tessera_node_session_duration_seconds_count{kind=\"aux_info\"} 1",
            "tessera_node_session_duration_seconds_bucket{le=\"2.56\",kind=\"aux_info\"} 1",
            "tessera_node_session_duration_seconds_bucket{le=\"1.28\",kind=\"aux_info\"} 0",
            "tessera_node_policy_refusals_total{reason=\"over_per_request\"} 1",
            "tessera_node_starts_refused_total{reason=\"bad_signature\"} 1",
            "tessera_node_sessions_running 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
    }
}
