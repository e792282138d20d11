//! What the service counts for `GET /metrics`: sessions by operation and outcome (with their
//! total duration), requests refused by policy, by where they were refused, and where a
//! request's time goes (stages). Kept in memory: a restarted coordinator starts from zero,
//! which Prometheus counters allow.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use tessera_telemetry::StageTimes;

/// Where a request was refused by policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum RefusalStage {
    /// Denied when submitted.
    Submit,
    /// Denied when re-evaluated after an approval (e.g. a window used up meanwhile).
    Approval,
    /// Denied when admitted to signing (the window, as every coordinator reserved it, has no
    /// room left; the policy changed; the request expired).
    Admission,
    /// Every node of the quorum refused it (their own policy check).
    Nodes,
}

impl RefusalStage {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            RefusalStage::Submit => "submit",
            RefusalStage::Approval => "approval",
            RefusalStage::Admission => "admission",
            RefusalStage::Nodes => "nodes",
        }
    }
}

/// Sessions of one operation with one outcome.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SessionStats {
    /// How many.
    pub count: u64,
    /// Their total duration in seconds.
    pub seconds: f64,
}

/// The service's counters.
#[derive(Debug, Default)]
pub struct ServiceCounters {
    sessions: Mutex<BTreeMap<(String, &'static str), SessionStats>>,
    refusals: Mutex<BTreeMap<RefusalStage, u64>>,
    stages: StageTimes,
}

impl ServiceCounters {
    /// Where approvals' and requests' time goes, by operation and stage. Operation `approve`,
    /// stage `api`: the whole approval call (checks, the durable decision, the policy
    /// re-evaluated). Operation `request`, from the worker taking an approved request to its
    /// recorded result: `admission` (the policy against the reserved windows, the
    /// reservation, the move to `signing`), `preparation` (reading the key and approvals,
    /// counting the attempt, bringing the signers' spend chains up to date, picking pool
    /// material, recording the session), `session` (the start published, the parties'
    /// outcomes received and checked), `recording` (the session's end, the signature in the
    /// key's spend chain, the transaction assembled, the request marked signed).
    pub fn stages(&self) -> &StageTimes {
        &self.stages
    }

    /// Counts one session of `operation` that took `elapsed`.
    pub(crate) fn session(&self, operation: &str, ok: bool, elapsed: Duration) {
        let outcome = if ok { "ok" } else { "failed" };
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        let stats = sessions.entry((operation.to_owned(), outcome)).or_default();
        stats.count += 1;
        stats.seconds += elapsed.as_secs_f64();
    }

    /// Counts one request refused by policy at `stage`.
    pub(crate) fn policy_refusal(&self, stage: RefusalStage) {
        *self
            .refusals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(stage)
            .or_default() += 1;
    }

    /// Sessions by (operation, outcome).
    pub fn sessions(&self) -> BTreeMap<(String, &'static str), SessionStats> {
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Policy refusals by stage (every stage, 0 included).
    pub fn policy_refusals(&self) -> BTreeMap<RefusalStage, u64> {
        let counted = self.refusals.lock().unwrap_or_else(|p| p.into_inner());
        [
            RefusalStage::Submit,
            RefusalStage::Approval,
            RefusalStage::Admission,
            RefusalStage::Nodes,
        ]
        .into_iter()
        .map(|s| (s, counted.get(&s).copied().unwrap_or(0)))
        .collect()
    }
}
