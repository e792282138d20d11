//! `GET /metrics` in the Prometheus text format (version 0.0.4).
//!
//! The metrics are listed in the [API documentation](super#metrics).
//!
//! Party health is the service's memory of recent sessions: a restarted coordinator starts
//! from zero.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::{ApiError, ApiState};
use crate::store::{CommitteeStatus, KeyStatus, RequestState};

/// Renders every metric.
pub(crate) async fn render(state: &ApiState) -> Result<String, ApiError> {
    let coordinator = state.coordinator();
    let mut out = String::new();

    let requests = coordinator
        .store()
        .count_requests_by_state()
        .await
        .map_err(|e| ApiError::from(crate::service::ServiceError::from(e)))?;
    family(
        &mut out,
        "tessera_coordinator_requests",
        "Sign requests by state.",
    );
    for state in RequestState::ALL {
        let n = requests.get(state.as_str()).copied().unwrap_or(0);
        let _ = writeln!(
            out,
            "tessera_coordinator_requests{{state=\"{}\"}} {n}",
            state.as_str()
        );
    }

    let mut keys: BTreeMap<&str, u64> = KeyStatus::ALL.iter().map(|s| (s.as_str(), 0)).collect();
    for key in coordinator.list_keys().await? {
        *keys.entry(key.status.as_str()).or_default() += 1;
    }
    family(&mut out, "tessera_coordinator_keys", "Keys by status.");
    for (status, n) in keys {
        let _ = writeln!(out, "tessera_coordinator_keys{{status=\"{status}\"}} {n}");
    }

    let mut committees: BTreeMap<&str, u64> = CommitteeStatus::ALL
        .iter()
        .map(|s| (s.as_str(), 0))
        .collect();
    for committee in coordinator.list_committees().await? {
        *committees.entry(committee.status.as_str()).or_default() += 1;
    }
    family(
        &mut out,
        "tessera_coordinator_committees",
        "Committees by status.",
    );
    for (status, n) in committees {
        let _ = writeln!(
            out,
            "tessera_coordinator_committees{{status=\"{status}\"}} {n}"
        );
    }

    let policy = coordinator.policy().await?;
    family(
        &mut out,
        "tessera_coordinator_policy_revision",
        "Revision of the active policy.",
    );
    let _ = writeln!(
        out,
        "tessera_coordinator_policy_revision {}",
        policy.revision
    );

    let health = coordinator.party_health();
    family(
        &mut out,
        "tessera_coordinator_party_consecutive_failures",
        "Sessions failed in a row with the party blamed or silent.",
    );
    for party in &health {
        let _ = writeln!(
            out,
            "tessera_coordinator_party_consecutive_failures{{party=\"{}\"}} {}",
            party.party, party.consecutive_failures
        );
    }
    family(
        &mut out,
        "tessera_coordinator_party_seconds_since_failure",
        "Seconds since the party's last failed session.",
    );
    for party in &health {
        if let Some(secs) = party.secs_since_failure {
            let _ = writeln!(
                out,
                "tessera_coordinator_party_seconds_since_failure{{party=\"{}\"}} {secs}",
                party.party
            );
        }
    }
    render_counters(&mut out, state);
    Ok(out)
}

/// The counters: sessions, policy refusals, rate limits, audit events.
fn render_counters(out: &mut String, state: &ApiState) {
    let coordinator = state.coordinator();
    let sessions = coordinator.counters().sessions();
    counter(
        out,
        "tessera_coordinator_sessions_total",
        "Sessions the coordinator ran, by operation and outcome.",
    );
    for ((operation, outcome), stats) in &sessions {
        let _ = writeln!(
            out,
            "tessera_coordinator_sessions_total{{operation=\"{operation}\",outcome=\"{outcome}\"}} {}",
            stats.count
        );
    }
    counter(
        out,
        "tessera_coordinator_session_seconds_total",
        "Time spent in sessions, by operation and outcome (divide by sessions_total for the mean).",
    );
    for ((operation, outcome), stats) in &sessions {
        let _ = writeln!(
            out,
            "tessera_coordinator_session_seconds_total{{operation=\"{operation}\",outcome=\"{outcome}\"}} {:.6}",
            stats.seconds
        );
    }
    counter(
        out,
        "tessera_coordinator_policy_refusals_total",
        "Requests refused by policy: at submission, on re-evaluation after an approval, or by every node of the quorum.",
    );
    for (stage, n) in coordinator.counters().policy_refusals() {
        let _ = writeln!(
            out,
            "tessera_coordinator_policy_refusals_total{{stage=\"{}\"}} {n}",
            stage.as_str()
        );
    }
    let limited = state.rate_limited();
    counter(
        out,
        "tessera_coordinator_api_rate_limited_total",
        "API calls refused with 429, by principal (\"\": failed authentications over their budget).",
    );
    let _ = writeln!(
        out,
        "tessera_coordinator_api_rate_limited_total{{principal=\"\"}} {}",
        limited.unauthenticated
    );
    for (principal, n) in &limited.per_principal {
        let _ = writeln!(
            out,
            "tessera_coordinator_api_rate_limited_total{{principal=\"{}\"}} {n}",
            escape(principal)
        );
    }
    if let Ok(stages) = coordinator.counters().stages().encode(
        "tessera_coordinator_stage_seconds",
        "Time spent in each stage of an approval or a request's signing",
    ) {
        out.push_str(&stages);
    }
    let audit = coordinator.audit();
    family(
        out,
        "tessera_coordinator_audit_events",
        "Events in the coordinator's audit chain (its last sequence number).",
    );
    let _ = writeln!(
        out,
        "tessera_coordinator_audit_events {}",
        audit.next_seq() - 1
    );
    counter(
        out,
        "tessera_coordinator_audit_forward_dropped_total",
        "Audit events the stream forwarder had to re-read from the file (queue full).",
    );
    let _ = writeln!(
        out,
        "tessera_coordinator_audit_forward_dropped_total {}",
        audit.forward_dropped()
    );
}

/// A label value with `\\`, `"` and newlines escaped.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn family(out: &mut String, name: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} gauge");
}

fn counter(out: &mut String, name: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} counter");
}
