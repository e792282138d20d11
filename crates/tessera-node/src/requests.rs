//! Signing requests as a node re-checks them, and its durable ledger of requests it signed.
//!
//! Before a node takes part in any signing session it checks, itself and with its own copy of
//! the policy (pinned by hash):
//! - the digest, re-derived from the raw transaction or message (the coordinator's is never
//!   trusted);
//! - the policy decision: limits, destinations, hours, expiry, and every approval's signature
//!   and role (a bad approval means a misbehaving coordinator: refused);
//! - the ledger: a request id that was signed before is refused, and the same id may not name
//!   a different request.
//!
//! The ledger keeps, per request id, `request.<id>.started` (written, durably, before this node
//! contributes to a signature) and `request.<id>.signed` (after the signature verified). A
//! started but unfinished request may be retried, for the very same request only; rolling-window
//! limits count both, so a signature this node may have helped produce is never forgotten.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};

use alloy_primitives::U256;
use serde::{Deserialize, Serialize};
use tessera_mpc::SigningInput;
use tessera_policy::{
    evaluate, Approval, Asset, Payload, PolicyDocument, SignRequest, SpendHistory, Verdict,
};
use tessera_store::{RecordName, SecretStore};
use tessera_wire::{KeyId, RequestId};
use zeroize::Zeroizing;

use crate::metrics::NodeMetrics;
use crate::node::NodeError;
use crate::state::StateError;

/// How far a request has come on this node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LedgerStatus {
    /// This node agreed to sign it and may have contributed to a signature.
    Started,
    /// This node saw the signature complete and verify.
    Signed,
}

impl LedgerStatus {
    /// A short stable name, for metrics labels: `started` or `signed`.
    pub fn as_str(self) -> &'static str {
        match self {
            LedgerStatus::Started => "started",
            LedgerStatus::Signed => "signed",
        }
    }
}

/// What the ledger remembers of one request.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LedgerEntry {
    /// The request's digest (what approvers signed), hex.
    pub request_digest: String,
    /// The key.
    pub key: KeyId,
    /// The asset and amount it moved, in entries written before fees counted (read, never
    /// written now).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spend: Option<(String, String)>,
    /// What it spends, per asset (what it moves, and the native coin for its maximum fee).
    #[serde(default)]
    pub spends: Vec<(String, String)>,
    /// Unix seconds when this node agreed to sign it.
    pub at: u64,
    /// How far it came.
    pub status: LedgerStatus,
}

/// The node's durable record of the requests it agreed to sign.
pub struct RequestLedger<S: SecretStore> {
    store: Arc<S>,
    entries: Mutex<Option<BTreeMap<RequestId, LedgerEntry>>>,
    in_flight: Mutex<HashSet<RequestId>>,
    metrics: NodeMetrics,
}

fn record(id: RequestId, suffix: &str) -> RecordName {
    RecordName::new(format!("request.{id}.{suffix}")).expect("request ids make valid record names")
}

/// A request this node is signing; the in-flight mark is released on drop.
pub struct Admitted<'a, S: SecretStore> {
    ledger: &'a RequestLedger<S>,
    id: RequestId,
    /// What the signers sign.
    pub input: SigningInput,
}

impl<S: SecretStore> Drop for Admitted<'_, S> {
    fn drop(&mut self) {
        self.ledger
            .in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
    }
}

impl<S: SecretStore> Admitted<'_, S> {
    /// Records that the signature completed and verified.
    pub fn signed(&self) -> Result<(), NodeError> {
        self.ledger.mark_signed(self.id)
    }
}

struct History<'a>(&'a BTreeMap<RequestId, LedgerEntry>);

impl SpendHistory for History<'_> {
    fn spent_since(&self, key: KeyId, asset: &Asset, since: u64) -> U256 {
        let asset = asset.to_string();
        self.0
            .values()
            .filter(|e| e.key == key && e.at >= since)
            .flat_map(|e| e.spend.iter().chain(&e.spends))
            .filter(|(a, _)| *a == asset)
            .filter_map(|(_, amount)| amount.parse::<U256>().ok())
            .fold(U256::ZERO, |sum, amount| sum.saturating_add(amount))
    }
}

/// The bytes the signers hash (with Keccak-256, inside the protocol library) for `payload`.
pub fn signing_input(payload: &Payload) -> Result<SigningInput, NodeError> {
    match payload {
        Payload::EthereumTx { raw } => {
            let tx = tessera_chain::UnsignedTx::decode(raw)
                .map_err(|e| NodeError::Refused(format!("the transaction does not decode: {e}")))?;
            Ok(SigningInput::Keccak256(tx.encoded_for_signing()))
        }
        Payload::Message { bytes } => Ok(SigningInput::Keccak256(
            tessera_chain::personal_message_preimage(bytes),
        )),
    }
}

impl<S: SecretStore> RequestLedger<S> {
    /// The ledger kept in `store`.
    pub fn new(store: Arc<S>) -> Self {
        Self::with_metrics(store, NodeMetrics::default())
    }

    /// The ledger kept in `store`, counting refusals in `metrics`.
    pub(crate) fn with_metrics(store: Arc<S>, metrics: NodeMetrics) -> Self {
        RequestLedger {
            store,
            entries: Mutex::new(None),
            in_flight: Mutex::new(HashSet::new()),
            metrics,
        }
    }

    /// A refusal, counted under `reason` (a stable metrics label).
    fn refuse(&self, reason: &'static str, message: String) -> NodeError {
        self.metrics.policy_refusal(reason);
        NodeError::Refused(message)
    }

    fn load(&self) -> Result<BTreeMap<RequestId, LedgerEntry>, NodeError> {
        let mut entries = BTreeMap::new();
        let names = self.store.list().map_err(StateError::from)?;
        for name in names {
            let Some(rest) = name.as_str().strip_prefix("request.") else {
                continue;
            };
            let Some((id, suffix)) = rest.split_once('.') else {
                continue;
            };
            let (Ok(id), "started") = (id.parse::<RequestId>(), suffix) else {
                continue;
            };
            let bytes = self.store.get(&name).map_err(StateError::from)?;
            let mut entry: LedgerEntry = serde_json::from_slice(&bytes)
                .map_err(|e| StateError::Format(name.to_string(), e.to_string()))?;
            if self
                .store
                .contains(&record(id, "signed"))
                .map_err(StateError::from)?
            {
                entry.status = LedgerStatus::Signed;
            }
            entries.insert(id, entry);
        }
        Ok(entries)
    }

    fn with_entries<T>(
        &self,
        f: impl FnOnce(&mut BTreeMap<RequestId, LedgerEntry>) -> Result<T, NodeError>,
    ) -> Result<T, NodeError> {
        let mut guard = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if guard.is_none() {
            *guard = Some(self.load()?);
        }
        let entries = guard.as_mut().expect("loaded above");
        f(entries)
    }

    /// What the ledger holds for `id`.
    pub fn entry(&self, id: RequestId) -> Result<Option<LedgerEntry>, NodeError> {
        self.with_entries(|entries| Ok(entries.get(&id).cloned()))
    }

    /// How many requests have come exactly as far as `status`.
    pub fn count(&self, status: LedgerStatus) -> Result<usize, NodeError> {
        self.with_entries(|entries| Ok(entries.values().filter(|e| e.status == status).count()))
    }

    /// Re-checks `request` and its approvals against `policy` at `now`, and if everything
    /// holds, records it durably as started before returning what to sign. Nothing is recorded
    /// for a refused request.
    pub fn admit(
        &self,
        policy: &PolicyDocument,
        request: &SignRequest,
        approvals: &[Approval],
        now: u64,
    ) -> Result<Admitted<'_, S>, NodeError> {
        let derived = request
            .check()
            .map_err(|e| self.refuse("invalid_request", e.to_string()))?;
        let input = signing_input(&request.payload).map_err(|e| match e {
            NodeError::Refused(message) => self.refuse("undecodable", message),
            other => other,
        })?;
        if input.digest() != derived.digest {
            return Err(self.refuse(
                "digest_mismatch",
                "the digest to sign does not match the transaction".into(),
            ));
        }
        let request_digest = hex::encode(request.request_digest());
        {
            let mut in_flight = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
            if !in_flight.insert(request.id) {
                return Err(self.refuse(
                    "in_flight",
                    format!(
                        "request {} is being signed in another session here",
                        request.id
                    ),
                ));
            }
        }
        let admitted = Admitted {
            ledger: self,
            id: request.id,
            input,
        };
        self.with_entries(|entries| {
            if let Some(entry) = entries.get(&request.id) {
                if entry.request_digest != request_digest {
                    return Err(self.refuse(
                        "request_id_reused",
                        format!(
                            "request id {} was already used here for a different request; a request id is never reused",
                            request.id
                        ),
                    ));
                }
                if entry.status == LedgerStatus::Signed {
                    return Err(self.refuse(
                        "already_signed",
                        format!(
                            "request {} was already signed here; it is never signed twice",
                            request.id
                        ),
                    ));
                }
            }
            // Retrying a started request must not count its own amount twice.
            let others: BTreeMap<RequestId, LedgerEntry> = entries
                .iter()
                .filter(|(id, _)| **id != request.id)
                .map(|(id, e)| (*id, e.clone()))
                .collect();
            let decision = evaluate(policy, request, approvals, &History(&others), now);
            match decision.verdict {
                Verdict::Allow => {}
                Verdict::Pending | Verdict::Deny => {
                    for reason in &decision.reasons {
                        self.metrics.policy_refusal(reason.code());
                    }
                    let reasons: Vec<String> =
                        decision.reasons.iter().map(ToString::to_string).collect();
                    return Err(NodeError::Refused(format!(
                        "policy {} does not allow request {}: {}",
                        policy.hash(),
                        request.id,
                        reasons.join("; ")
                    )));
                }
            }
            if let std::collections::btree_map::Entry::Vacant(vacant) = entries.entry(request.id)
            {
                // Whatever the policy counts against its limits (transfers, value sent with
                // contract calls, and maximum fees) is what the ledger remembers.
                let spends = derived
                    .spends()
                    .into_iter()
                    .map(|(asset, amount)| (asset.to_string(), amount.to_string()))
                    .collect();
                let entry = LedgerEntry {
                    request_digest: request_digest.clone(),
                    key: request.key,
                    spend: None,
                    spends,
                    at: now,
                    status: LedgerStatus::Started,
                };
                let bytes =
                    Zeroizing::new(serde_json::to_vec(&entry).expect("ledger entries serialize"));
                self.store
                    .put(&record(request.id, "started"), &bytes)
                    .map_err(StateError::from)?;
                vacant.insert(entry);
            }
            Ok(())
        })?;
        Ok(admitted)
    }

    fn mark_signed(&self, id: RequestId) -> Result<(), NodeError> {
        self.with_entries(|entries| {
            self.store
                .put(&record(id, "signed"), b"signed")
                .map_err(StateError::from)?;
            if let Some(entry) = entries.get_mut(&id) {
                entry.status = LedgerStatus::Signed;
            }
            Ok(())
        })
    }
}
