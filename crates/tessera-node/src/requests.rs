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

use std::cell::Cell;
use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};

use alloy_primitives::U256;
use serde::{Deserialize, Serialize};
use tessera_control::{SpendLink, SpendRecord};
use tessera_policy::{
    evaluate, Approval, Asset, Derived, PolicyDocument, SignRequest, SpendHistory, Verdict,
};
use tessera_store::{RecordName, SecretStore};
use tessera_wire::{KeyId, KeyKind, RequestId};
use zeroize::Zeroizing;

use crate::metrics::NodeMetrics;
use crate::node::NodeError;
use crate::spends::{ChainError, Chains};
use crate::state::StateError;

/// How old a signing's spend link may be when a signer admits it (seconds): a coordinator
/// cannot backdate a spend to make it leave a window early by more than this.
pub const MAX_SPEND_LINK_AGE_SECS: u64 = 900;
/// How far in the future a spend link's time may be (clock skew).
pub const SPEND_LINK_SKEW_SECS: u64 = 60;

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
    /// Its place in the key's spend chain, if the signing had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// How far it came.
    pub status: LedgerStatus,
}

/// What the ledger holds in memory: its entries and the spend chains.
struct LedgerState<S: SecretStore> {
    entries: BTreeMap<RequestId, LedgerEntry>,
    chains: Chains<S>,
}

/// What the ledger needs to know of the key a request signs with.
pub struct KeyFacts<'a> {
    /// How many parties hold it.
    pub holders: usize,
    /// How many sign.
    pub threshold: u16,
    /// Its kind: a request must ask for signatures of this kind.
    pub kind: KeyKind,
    /// The public key at a derivation path as its chain sees it (SEC1 compressed for ECDSA,
    /// the x-only output key for Taproot, 32 bytes for Ed25519); `None` for a path it has no
    /// child at.
    pub public_key_at: &'a (dyn Fn(&[u32]) -> Option<Vec<u8>> + Sync),
}

/// The node's durable record of the requests it agreed to sign.
pub struct RequestLedger<S: SecretStore> {
    store: Arc<S>,
    state: Mutex<Option<LedgerState<S>>>,
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
    key: KeyId,
    seq: Option<u64>,
    /// What the request was checked to be: what the signers sign, in order.
    pub derived: Derived,
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
    /// Records that the signatures (one 64-byte signature per signing) completed and verified.
    pub fn signed(&self, signature: &[u8]) -> Result<(), NodeError> {
        self.ledger
            .mark_signed(self.id, self.key, self.seq, signature)
    }
}

/// What a request's windows count: the spend chains' records, and the ledger's entries of
/// signings that have no record (made before spend chains), but for the request's own.
struct History<'a, S: SecretStore> {
    entries: &'a BTreeMap<RequestId, LedgerEntry>,
    chains: &'a Chains<S>,
    except: RequestId,
    /// Whether the policy read a window (the request is amount-limited over time).
    consulted: Cell<bool>,
}

impl<S: SecretStore> SpendHistory for History<'_, S> {
    fn spent_since(&self, key: KeyId, asset: &Asset, since: u64) -> U256 {
        self.consulted.set(true);
        let asset = asset.to_string();
        let chained = self.chains.requests(key);
        let unchained = self
            .entries
            .iter()
            .filter(|(id, e)| {
                e.key == key && e.at >= since && **id != self.except && !chained.contains(id)
            })
            .flat_map(|(_, e)| e.spend.iter().chain(&e.spends))
            .filter(|(a, _)| *a == asset)
            .filter_map(|(_, amount)| amount.parse::<U256>().ok())
            .fold(U256::ZERO, |sum, amount| sum.saturating_add(amount));
        unchained.saturating_add(self.chains.spent_since(key, &asset, since, self.except))
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
            state: Mutex::new(None),
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

    fn with_state<T>(
        &self,
        f: impl FnOnce(&mut LedgerState<S>) -> Result<T, NodeError>,
    ) -> Result<T, NodeError> {
        let mut guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if guard.is_none() {
            *guard = Some(LedgerState {
                entries: self.load()?,
                chains: Chains::load(self.store.clone())?,
            });
        }
        f(guard.as_mut().expect("loaded above"))
    }

    fn with_entries<T>(
        &self,
        f: impl FnOnce(&mut BTreeMap<RequestId, LedgerEntry>) -> Result<T, NodeError>,
    ) -> Result<T, NodeError> {
        self.with_state(|state| f(&mut state.entries))
    }

    /// Checks spend record `record` of `key` (with `public_key`, the SEC1 key at its path)
    /// and keeps it (see [`crate::spends`]).
    pub fn accept_record(
        &self,
        key: KeyId,
        record: &SpendRecord,
        public_key: &[u8],
    ) -> Result<(), NodeError> {
        self.with_state(|state| {
            state
                .chains
                .accept(key, record, public_key)
                .map_err(|e| self.chain_refusal(e))
        })
    }

    /// Where `key`'s spend chain stands here: the last place up to which every record is held
    /// (0 for none) and its hash.
    pub fn chain_head(&self, key: KeyId) -> Result<(u64, [u8; 32]), NodeError> {
        self.with_state(|state| Ok(state.chains.head(key)))
    }

    /// The record held at place `seq` of `key`'s spend chain.
    pub fn chain_record(&self, key: KeyId, seq: u64) -> Result<Option<SpendRecord>, NodeError> {
        self.with_state(|state| Ok(state.chains.get(key, seq).cloned()))
    }

    fn chain_refusal(&self, error: ChainError) -> NodeError {
        match error {
            ChainError::State(e) => e.into(),
            ChainError::Fork { .. } => {
                self.metrics.policy_refusal("spend_chain_fork");
                NodeError::SpendChain(error)
            }
            ChainError::Broken { .. } => {
                self.metrics.policy_refusal("spend_chain_broken");
                NodeError::SpendChain(error)
            }
            ChainError::Record(_) => {
                self.metrics.policy_refusal("spend_record_invalid");
                NodeError::SpendChain(error)
            }
        }
    }

    /// What the ledger holds for `id`.
    pub fn entry(&self, id: RequestId) -> Result<Option<LedgerEntry>, NodeError> {
        self.with_entries(|entries| Ok(entries.get(&id).cloned()))
    }

    /// How many requests have come exactly as far as `status`.
    pub fn count(&self, status: LedgerStatus) -> Result<usize, NodeError> {
        self.with_entries(|entries| Ok(entries.values().filter(|e| e.status == status).count()))
    }

    /// Re-checks `request` and its approvals against `policy` at `now`, and its place `link`
    /// in the key's spend chain, and if everything holds, records it durably as started (and
    /// its spend record) before returning what to sign. Nothing is recorded for a refused
    /// request.
    ///
    /// A request that spends from a key whose spend a window counts is signed only with a
    /// link (a message, which spends nothing, may come without). A request the policy limits
    /// by a window is admitted only if this node holds every record of the chain before the
    /// link, and only on a key where any two signer sets share a holder (2t > n): otherwise
    /// two signer sets could each spend the window unseen by the other.
    pub fn admit(
        &self,
        policy: &PolicyDocument,
        request: &SignRequest,
        approvals: &[Approval],
        link: Option<&SpendLink>,
        key: &KeyFacts<'_>,
        now: u64,
    ) -> Result<Admitted<'_, S>, NodeError> {
        let derived = request
            .check()
            .map_err(|e| self.refuse("invalid_request", e.to_string()))?;
        if derived.kind() != key.kind {
            return Err(self.refuse(
                "key_kind_mismatch",
                format!(
                    "request {} asks for {} signatures, but key {} is of kind {}",
                    request.id,
                    derived.kind(),
                    request.key,
                    key.kind
                ),
            ));
        }
        if let Some(signer) = &derived.signer {
            let own = (key.public_key_at)(&request.path);
            if own.as_deref() != Some(signer.as_slice()) {
                return Err(self.refuse(
                    "signer_mismatch",
                    format!(
                        "request {} names signer {}, but key {} at path {:?} is {}",
                        request.id,
                        hex::encode(signer),
                        request.key,
                        request.path,
                        own.map_or_else(|| "not derivable".to_owned(), hex::encode)
                    ),
                ));
            }
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
            key: request.key,
            seq: link.map(|l| l.seq),
            derived: derived.clone(),
        };
        self.with_state(|state| {
            let LedgerState { entries, chains } = state;
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
            let history = History {
                entries,
                chains,
                except: request.id,
                consulted: Cell::new(false),
            };
            let decision = evaluate(policy, request, approvals, &history, now);
            let limited = history.consulted.get();
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
            let spends = !derived.spends().is_empty();
            self.check_link(policy, request, link, key, (spends, limited), chains, now)?;
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
                    seq: link.map(|l| l.seq),
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

    /// Checks `request`'s spend link (see [`Self::admit`]) and takes the signing's record into
    /// the key's chain, durably, before anything is signed.
    #[allow(clippy::too_many_arguments)]
    fn check_link(
        &self,
        policy: &PolicyDocument,
        request: &SignRequest,
        link: Option<&SpendLink>,
        key: &KeyFacts<'_>,
        (spends, limited): (bool, bool),
        chains: &mut Chains<S>,
        now: u64,
    ) -> Result<(), NodeError> {
        let Some(link) = link else {
            if spends && policy.windows_count(&request.key) {
                return Err(self.refuse(
                    "spend_link_missing",
                    format!(
                        "a rolling window counts what key {} spends, so every signing of it must \
                            carry its place in the key's spend chain, and this one carries none; \
                            sign through a coordinator that keeps spend chains",
                        request.key
                    ),
                ));
            }
            return Ok(());
        };
        if link.signed_at > now.saturating_add(SPEND_LINK_SKEW_SECS)
            || link.signed_at.saturating_add(MAX_SPEND_LINK_AGE_SECS) < now
        {
            return Err(self.refuse(
                "spend_link_stale",
                format!(
                    "the signing's spend link is dated {} and this node's clock says {now}; a \
                        link must be at most {MAX_SPEND_LINK_AGE_SECS} s old (check the \
                        coordinator's clock, or submit a new request)",
                    link.signed_at
                ),
            ));
        }
        if limited {
            if 2 * usize::from(key.threshold) <= key.holders {
                return Err(self.refuse(
                    "limits_need_majority",
                    format!(
                        "key {} is {}-of-{}: two signer sets that share no holder could each \
                            spend a rolling window unseen by the other, so its requests cannot be \
                            limited by a window; give limited keys a threshold above half their \
                            holders, or remove the window from the rules covering it",
                        request.key, key.threshold, key.holders
                    ),
                ));
            }
            let (head, _) = chains.head(request.key);
            if head.saturating_add(1) < link.seq {
                return Err(self.refuse(
                    "spend_chain_incomplete",
                    format!(
                        "this request is limited by a rolling window, and this node holds \
                            key {}'s spend chain only up to record {head} while the signing is \
                            record {}: it cannot count what others signed in between; deliver \
                            records {} to {} first",
                        request.key,
                        link.seq,
                        head + 1,
                        link.seq - 1
                    ),
                ));
            }
        }
        let public_key = (key.public_key_at)(&request.path).ok_or_else(|| {
            self.refuse(
                "invalid_request",
                format!("key {} has no child key at {:?}", request.key, request.path),
            )
        })?;
        let record = SpendRecord {
            link: *link,
            request: request.clone(),
            signature: None,
        };
        chains
            .accept(request.key, &record, &public_key)
            .map_err(|e| self.chain_refusal(e))
    }

    fn mark_signed(
        &self,
        id: RequestId,
        key: KeyId,
        seq: Option<u64>,
        signature: &[u8],
    ) -> Result<(), NodeError> {
        self.with_state(|state| {
            self.store
                .put(&record(id, "signed"), b"signed")
                .map_err(StateError::from)?;
            if let Some(entry) = state.entries.get_mut(&id) {
                entry.status = LedgerStatus::Signed;
            }
            if let Some(seq) = seq {
                // The signature verified against the key before it got here.
                state.chains.add_signature(key, seq, signature)?;
            }
            Ok(())
        })
    }
}
