//! Sign requests: submission (policy evaluated at once), reading, and how requests are shown.
//! Decisions on them are in `decisions`.

use tessera_chain::bitcoin::BitcoinNetwork;
use tessera_chain::Chain;
use tessera_policy::{evaluate, ActionKind, Derived, Payload, Role, SignRequest, Verdict};
use tessera_wire::RequestId;

use super::decisions::principal;
use super::keys::{key_address_at, public_key_at, KeyNames};
use super::{
    expires_at, hash_hex, history, now_unix, to_db, Coordinator, RequestSummary, RequestView,
    ServiceError,
};
use crate::store::{
    ApprovalSubject, InsertOutcome, KeyRow, KeyStatus, NewRequest, RequestFilter, RequestKind,
    RequestRow, RequestState, StoreError,
};

/// A sign request as an operator submits it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Submit {
    /// Chosen by the client, so a retry is recognised: the same id with the same content
    /// returns the stored request; the same id with other content is refused.
    pub id: RequestId,
    /// The key's name or id.
    pub key: String,
    /// Non-hardened derivation path (empty = the master key).
    pub path: Vec<u32>,
    /// What to sign.
    pub payload: Payload,
    /// Seconds until it expires unsigned; default
    /// [`CoordinatorSettings::default_request_lifetime`](super::CoordinatorSettings), capped
    /// at the policy's `max_request_lifetime_secs`.
    pub lifetime_secs: Option<u64>,
}

pub(crate) fn kind_of(kind: ActionKind) -> RequestKind {
    match kind {
        ActionKind::Transfer => RequestKind::Transfer,
        ActionKind::ContractCall => RequestKind::ContractCall,
        ActionKind::ContractCreation => RequestKind::ContractCreation,
        ActionKind::Message | ActionKind::RawMessage => RequestKind::Message,
    }
}

/// Refuses a request the key cannot sign: signatures of another kind than the key's, or a
/// payload naming another signer than the key at the request's path (the nodes refuse both
/// too; refusing here says so before anyone approves).
fn check_signer(
    key: &KeyRow,
    request: &SignRequest,
    derived: &Derived,
) -> Result<(), ServiceError> {
    if derived.kind() != key.kind {
        return Err(ServiceError::Invalid(format!(
            "key '{}' is of kind {} and this payload asks for {} signatures; submit it with \
             a {} key",
            key.name,
            key.kind,
            derived.kind(),
            derived.kind()
        )));
    }
    if let Some(signer) = &derived.signer {
        let own = public_key_at(key, &request.path)?;
        if own != *signer {
            return Err(ServiceError::Invalid(format!(
                "the payload's signer is {} but key '{}' at path {:?} is {}; for a PSBT, set \
                 its signer to the key's public key (`tessera key address`)",
                hex::encode(signer),
                key.name,
                request.path,
                hex::encode(own)
            )));
        }
    }
    Ok(())
}

/// The address a request spends from: the key's at the request's path, on the payload's
/// chain (Bitcoin on the PSBT's network).
fn request_address(key: &KeyRow, request: &SignRequest) -> Option<String> {
    let (chain, network) = match &request.payload {
        Payload::EthereumTx { .. } | Payload::Message { .. } => (Chain::Ethereum, None),
        Payload::BitcoinPsbt { network, .. } => (Chain::Bitcoin, Some(*network)),
        Payload::SolanaTransfer { .. } | Payload::Ed25519Message { .. } => (Chain::Solana, None),
    };
    key_address_at(
        key,
        &request.path,
        Some(chain),
        network.unwrap_or(BitcoinNetwork::Mainnet),
    )
    .ok()
    .map(|(_, _, address)| address)
}

/// The stored request, decoded.
pub(crate) fn decode(row: &RequestRow) -> Result<SignRequest, ServiceError> {
    SignRequest::decode(&row.body).map_err(|e| {
        ServiceError::corrupt(format_args!("request {} does not decode ({e})", row.id))
    })
}

impl Coordinator {
    /// Submits a sign request as `principal` (who must have the operator role in the active
    /// policy) and evaluates the policy at once:
    /// - allowed: stored `approved` and queued for signing (never at submission: the request
    ///   answered has times and the policy hash filled in, and waits for the submitter to sign
    ///   its digest through [`approve`](Self::approve), which the nodes require);
    /// - the submitter's signature or approvals missing: stored `pending_approval`, with the
    ///   reasons;
    /// - denied: stored `rejected` with the reasons, and returned as
    ///   [`ServiceError::Denied`] (a retry with the same id gets the same answer).
    ///
    /// The same id with the same content returns the stored request; with other content it is a
    /// [`ServiceError::Conflict`].
    pub async fn submit(
        &self,
        principal_name: &str,
        submit: Submit,
    ) -> Result<RequestView, ServiceError> {
        let active = self.active().await?;
        let policy = &active.document;
        let who = principal(policy, principal_name, "the operator role")?;
        if !who.has_role(Role::Operator) {
            return Err(ServiceError::forbidden(principal_name, "the operator role"));
        }
        let key = self.resolve_key(&submit.key).await?;
        if let Some(existing) = self.store.get_request(submit.id).await? {
            return self
                .resubmitted(existing, principal_name, &submit, &key)
                .await;
        }
        if key.status != KeyStatus::Ready {
            return Err(ServiceError::Unavailable(format!(
                "key '{}' is {}; requests are accepted for ready keys only",
                key.name, key.status
            )));
        }
        let now = now_unix();
        let expires_at = expires_at(
            now,
            submit.lifetime_secs,
            self.settings.default_request_lifetime.as_secs(),
            policy.max_request_lifetime_secs(),
        )?;
        let request = SignRequest::new(
            submit.id,
            key.id,
            submit.path.clone(),
            submit.payload.clone(),
            policy.hash(),
            principal_name,
            now,
            expires_at,
        )
        .map_err(|e| ServiceError::Invalid(format!("the request is invalid: {e}")))?;
        let derived = request
            .check()
            .map_err(|e| ServiceError::Invalid(format!("the request is invalid: {e}")))?;
        check_signer(&key, &request, &derived)?;
        let history = history::load(
            history::Source::Store(&self.store, None),
            policy,
            key.id,
            &derived,
            now,
        )
        .await?;
        let decision = evaluate(policy, &request, &[], &history, now);
        let reasons: Vec<String> = decision.reasons.iter().map(ToString::to_string).collect();
        let state = match decision.verdict {
            Verdict::Allow => RequestState::Approved,
            Verdict::Pending => RequestState::PendingApproval,
            Verdict::Deny => RequestState::Rejected,
        };
        let new = NewRequest {
            id: request.id,
            key_id: key.id,
            kind: kind_of(derived.action.kind()),
            state,
            body: request.canonical_bytes(),
            request_digest: request.request_digest().to_vec(),
            submitted_by: principal_name.to_owned(),
            created_at: to_db(now),
            expires_at: to_db(expires_at),
            reasons: reasons.clone(),
        };
        match self.store.insert_request(&new).await {
            Ok(InsertOutcome::Inserted) => {}
            Ok(InsertOutcome::Existing(row)) => {
                return self.resubmitted(row, principal_name, &submit, &key).await
            }
            // Submitted concurrently, at another second: compare the content.
            Err(StoreError::Conflict(_)) => {
                let row = self.store.get_request(submit.id).await?.ok_or_else(|| {
                    ServiceError::Unavailable(format!(
                        "request {} could not be stored; retry",
                        submit.id
                    ))
                })?;
                return self.resubmitted(row, principal_name, &submit, &key).await;
            }
            Err(e) => return Err(e.into()),
        }
        tracing::info!(request = %request.id, key = %key.name, by = %principal_name, %state, action = %derived.action, "request submitted");
        self.audit_request(
            principal_name,
            "request.submitted",
            request.id,
            &[
                ("key", key.name.clone()),
                ("action", derived.action.to_string()),
                ("digest", hex::encode(request.request_digest())),
                ("policy", policy.hash().to_string()),
                ("state", state.to_string()),
                ("reasons", reasons.join("; ")),
            ],
        );
        match state {
            RequestState::Rejected => {
                self.counters.policy_refusal(super::RefusalStage::Submit);
                Err(ServiceError::Denied { reasons })
            }
            RequestState::Approved => {
                self.wake.notify_one();
                self.get(request.id).await
            }
            _ => self.get(request.id).await,
        }
    }

    /// A submission whose id is already stored: the stored request if the content is the same.
    async fn resubmitted(
        &self,
        existing: RequestRow,
        principal_name: &str,
        submit: &Submit,
        key: &KeyRow,
    ) -> Result<RequestView, ServiceError> {
        let stored = decode(&existing)?;
        let same_lifetime = submit
            .lifetime_secs
            .is_none_or(|secs| stored.expires_at.checked_sub(stored.created_at) == Some(secs));
        if stored.key != key.id
            || stored.path != submit.path
            || stored.payload != submit.payload
            || stored.submitted_by != principal_name
            || !same_lifetime
        {
            return Err(ServiceError::Conflict(format!(
                "request id {} is already used for a different request; choose a new id (a \
                 retry must send the same key, path, payload and lifetime, as the same principal)",
                submit.id
            )));
        }
        if existing.state == RequestState::Rejected {
            return Err(ServiceError::Denied {
                reasons: existing.reasons,
            });
        }
        self.view(existing).await
    }

    /// The request with this id.
    pub async fn get(&self, id: RequestId) -> Result<RequestView, ServiceError> {
        let row = self.request_row(id).await?;
        self.view(row).await
    }

    /// Requests matching `filter`, newest first (see [`RequestFilter`] for paging).
    pub async fn list(&self, filter: &RequestFilter) -> Result<Vec<RequestSummary>, ServiceError> {
        let rows = self.store.list_requests(filter).await?;
        let mut names = KeyNames::default();
        let mut summaries = Vec::with_capacity(rows.len());
        for row in rows {
            let action = match decode(&row).map(|r| tessera_policy::derive(&r.payload)) {
                Ok(Ok(derived)) => derived.action.to_string(),
                Ok(Err(e)) => format!("undecodable payload: {e}"),
                Err(e) => e.to_string(),
            };
            summaries.push(RequestSummary {
                id: row.id,
                key_id: row.key_id,
                key_name: names.name(self, row.key_id).await?,
                kind: row.kind,
                action,
                state: row.state,
                submitted_by: row.submitted_by,
                created_at: row.created_at,
                updated_at: row.updated_at,
                attempts: row.attempts,
                error: row.error,
            });
        }
        Ok(summaries)
    }

    pub(crate) async fn request_row(&self, id: RequestId) -> Result<RequestRow, ServiceError> {
        self.store.get_request(id).await?.ok_or_else(|| {
            ServiceError::NotFound(format!(
                "no request {id}; check the id (list the requests to see them)"
            ))
        })
    }

    /// How a stored request is shown.
    pub(crate) async fn view(&self, row: RequestRow) -> Result<RequestView, ServiceError> {
        let request = decode(&row)?;
        let key = self.key_row(row.key_id).await?;
        let action = match tessera_policy::derive(&request.payload) {
            Ok(derived) => derived.action.to_string(),
            Err(e) => format!("undecodable payload: {e}"),
        };
        let address = if key.status == KeyStatus::Ready {
            request_address(&key, &request)
        } else {
            None
        };
        let decisions = self
            .decision_views(ApprovalSubject::Request(row.id))
            .await?;
        Ok(RequestView {
            id: row.id,
            key_id: row.key_id,
            key_name: key.name,
            path: request.path.clone(),
            kind: row.kind,
            action,
            state: row.state,
            digest: hex::encode(request.digest),
            request_digest: hex::encode(&row.request_digest),
            policy_hash: hash_hex(&request.policy),
            submitted_by: row.submitted_by,
            created_at: request.created_at,
            expires_at: request.expires_at,
            updated_at: row.updated_at,
            decisions,
            reasons: row.reasons,
            result: row.result.as_deref().map(hex::encode),
            address,
            attempts: row.attempts,
            error: row.error,
            request,
        })
    }
}
