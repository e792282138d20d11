//! A typed HTTP client of the coordinator's REST API ([`crate::api`]).
//!
//! [`CoordinatorClient`] signs every request with the principal's key ([`sign_request`]: a
//! fresh nonce and the current time, over the exact path, query and body it sends) and returns the API's documents ([`crate::api::model`]). A refusal is a
//! [`ClientError::Api`] carrying the server's `{error, message, reasons}`.
//!
//! Approvals are a second, separate signature: the approver signs the request digest with
//! the same key ([`CoordinatorClient::approval_for`]), recomputed from the request itself,
//! never taken from the coordinator's hex. Check what the request does before approving it.
//!
//! ```no_run
//! # async fn example(key: tessera_policy::OperatorKey) -> Result<(), tessera_coordinator::client::ClientError> {
//! use tessera_coordinator::client::CoordinatorClient;
//!
//! let ana = CoordinatorClient::new("http://127.0.0.1:8700", "ana", key)?;
//! for request in ana.list_requests(&Default::default()).await?.requests {
//!     println!("{} {} {}", request.id, request.state, request.action);
//! }
//! # Ok(()) }
//! ```
//!
//! Over HTTPS ([`CoordinatorClient::with_ca`]) the client trusts only the CA it is given
//! (the coordinator's `[api] tls_cert` chains to it; `tessera dev` writes one): no built-in
//! roots, so a certificate from any public CA for the same name is refused. Plain `http://` is
//! for loopback and tests.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::header::CONTENT_TYPE;
use reqwest::{Method, Url};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tessera_chain::bitcoin::BitcoinNetwork;
use tessera_chain::Chain;
use tessera_policy::{
    Approval, KeyChange, OperatorKey, PolicyChange, PrincipalSignature, SignRequest,
};
use tessera_wire::{KeyKind, PartyId, RequestId};

use crate::api::model::{
    parties_segment, AuditEvents, CommitteeList, CommitteeView, CreateKeyBody, DecisionBody,
    DerivationPath, ErrorBody, Health, KeyAddress, KeyChangeList, KeyChangeView, KeyList, KeyView,
    PartyRef, PolicyView, ProposalList, ProposalView, ProposeBody, RefreshKeyBody,
    RefreshScheduleBody, RequestPage, RequestView, ReshareKeyBody, SetupCommitteeBody, SubmitBody,
};
use crate::auth::sign_request;
use crate::service::rejection_digest;
use crate::store::{KeyChangeState, ProposalId, ProposalState, RequestState};

/// How long a call may take unless another client is given with
/// [`CoordinatorClient::with_http_client`]: key generation answers when the key is ready.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The coordinator refused the call with its error document.
    #[error("the coordinator answered {status} ({error}): {message}{}", list_reasons(.reasons))]
    Api {
        /// The HTTP status.
        status: u16,
        /// The error code (`bad_request`, `denied`…).
        error: String,
        /// The coordinator's message.
        message: String,
        /// The policy's reasons (for `denied`), else empty.
        reasons: Vec<String>,
    },
    /// The coordinator could not be reached, or the connection failed.
    #[error("cannot reach the coordinator ({url}): {source}")]
    Transport {
        /// The URL called.
        url: String,
        /// The cause.
        #[source]
        source: reqwest::Error,
    },
    /// The answer is not the JSON expected (not a coordinator, or another version).
    #[error("the coordinator answered {status} with an unexpected body: {reason}")]
    Decode {
        /// The HTTP status.
        status: u16,
        /// What did not parse.
        reason: String,
    },
    /// The base URL is unusable.
    #[error("invalid coordinator URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL given.
        url: String,
        /// Why.
        reason: String,
    },
}

fn list_reasons(reasons: &[String]) -> String {
    if reasons.is_empty() {
        String::new()
    } else {
        format!(" ({})", reasons.join("; "))
    }
}

impl ClientError {
    /// The HTTP status of an answered call.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } | ClientError::Decode { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The coordinator's error code (`denied`, `conflict`…), for a refusal.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api { error, .. } => Some(error),
            _ => None,
        }
    }

    /// The policy's reasons, for a `denied` refusal; else empty.
    pub fn reasons(&self) -> &[String] {
        match self {
            ClientError::Api { reasons, .. } => reasons,
            _ => &[],
        }
    }
}

/// Which requests [`CoordinatorClient::list_requests`] asks for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestQuery {
    /// Only requests in this state.
    pub state: Option<RequestState>,
    /// Only requests for this key (name or id).
    pub key: Option<String>,
    /// At most this many (1 to 1000; default 100).
    pub limit: Option<u32>,
    /// The page after this request (the previous page's `next_after`).
    pub after: Option<RequestId>,
}

/// A client of the coordinator's API, acting as one principal.
pub struct CoordinatorClient {
    http: reqwest::Client,
    base: Url,
    principal: String,
    key: OperatorKey,
}

impl std::fmt::Debug for CoordinatorClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoordinatorClient")
            .field("base", &self.base.as_str())
            .field("principal", &self.principal)
            .finish_non_exhaustive()
    }
}

/// The query of a paged list: `state`, `limit` and `after`, those given.
fn list_params(
    state: Option<impl std::fmt::Display>,
    limit: Option<u32>,
    after: Option<ProposalId>,
) -> Vec<(&'static str, String)> {
    let mut params = Vec::new();
    if let Some(state) = state {
        params.push(("state", state.to_string()));
    }
    if let Some(limit) = limit {
        params.push(("limit", limit.to_string()));
    }
    if let Some(after) = after {
        params.push(("after", after.to_string()));
    }
    params
}

/// The request target as it will be sent: path and query, exactly.
fn target(url: &Url) -> String {
    match url.query() {
        Some(query) => format!("{}?{query}", url.path()),
        None => url.path().to_owned(),
    }
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl CoordinatorClient {
    /// A client of the coordinator at `base_url` (e.g. `http://127.0.0.1:8700`) acting as
    /// `principal_name`, signing with `key` (the key the active policy names for it).
    ///
    /// An `https` URL needs the CA to trust: use [`with_ca`](Self::with_ca).
    pub fn new(
        base_url: &str,
        principal_name: impl Into<String>,
        key: OperatorKey,
    ) -> Result<Self, ClientError> {
        Self::build(base_url, principal_name, key, None)
    }

    /// A client of the coordinator at `base_url` (`https://host:port`) that trusts only the
    /// CA certificate(s) in `ca_pem` (PEM) for the server's certificate.
    pub fn with_ca(
        base_url: &str,
        principal_name: impl Into<String>,
        key: OperatorKey,
        ca_pem: &[u8],
    ) -> Result<Self, ClientError> {
        Self::build(base_url, principal_name, key, Some(ca_pem))
    }

    fn build(
        base_url: &str,
        principal_name: impl Into<String>,
        key: OperatorKey,
        ca_pem: Option<&[u8]>,
    ) -> Result<Self, ClientError> {
        let invalid = |reason: &str| ClientError::InvalidUrl {
            url: base_url.to_owned(),
            reason: reason.to_owned(),
        };
        let base = Url::parse(base_url).map_err(|e| invalid(&e.to_string()))?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            return Err(invalid(
                "expected https://host:port (or http:// on loopback)",
            ));
        }
        if base.query().is_some() || base.fragment().is_some() {
            return Err(invalid("the base URL takes no query or fragment"));
        }
        let mut builder = reqwest::Client::builder()
            .timeout(DEFAULT_TIMEOUT)
            .use_rustls_tls()
            .tls_built_in_root_certs(false);
        match (base.scheme(), ca_pem) {
            ("https", None) => {
                return Err(invalid(
                    "an https URL needs the coordinator's CA certificate to trust: give it \
                     with --ca-cert or TESSERA_CA_CERT (CoordinatorClient::with_ca)",
                ))
            }
            ("http", Some(_)) => {
                return Err(invalid(
                    "a CA certificate was given for a plain http URL: use https://",
                ))
            }
            (_, Some(pem)) => {
                let roots = reqwest::Certificate::from_pem_bundle(pem)
                    .map_err(|e| invalid(&format!("the CA certificate is not usable PEM: {e}")))?;
                if roots.is_empty() {
                    return Err(invalid("the CA file holds no PEM certificate"));
                }
                for root in roots {
                    builder = builder.add_root_certificate(root);
                }
                builder = builder.https_only(true);
            }
            _ => {}
        }
        let http = builder.build().map_err(|e| invalid(&e.to_string()))?;
        Ok(CoordinatorClient {
            http,
            base,
            principal: principal_name.into(),
            key,
        })
    }

    /// Uses `http` for the calls (timeouts, proxies, connection pools).
    pub fn with_http_client(mut self, http: reqwest::Client) -> Self {
        self.http = http;
        self
    }

    /// The principal this client acts as.
    pub fn principal(&self) -> &str {
        &self.principal
    }

    /// This principal's approval of `request`: its signature over the request digest,
    /// recomputed from the request.
    pub fn approval_for(&self, request: &SignRequest) -> PrincipalSignature {
        Approval::sign(&request.request_digest(), &self.principal, &self.key).signature
    }

    /// This principal's rejection of `request`: its signature over the rejection digest.
    pub fn rejection_for(&self, request: &SignRequest) -> PrincipalSignature {
        let digest = rejection_digest(&request.request_digest());
        Approval::sign(&digest, &self.principal, &self.key).signature
    }

    /// This principal's approval of a policy change: its signature over the change digest.
    pub fn policy_approval_for(&self, change: &PolicyChange) -> PrincipalSignature {
        Approval::sign(&change.change_digest(), &self.principal, &self.key).signature
    }

    /// This principal's approval of a key change: a signature over its digest, recomputed
    /// from the change (never the digest the coordinator reports).
    pub fn key_change_approval_for(&self, change: &KeyChange) -> PrincipalSignature {
        Approval::sign(&change.change_digest(), &self.principal, &self.key).signature
    }

    // ----- probes ------------------------------------------------------------------------

    /// `GET /healthz`.
    pub async fn health(&self) -> Result<Health, ClientError> {
        self.get(&["healthz"], &[]).await
    }

    /// `GET /readyz`: an error with status 503 when the database does not answer.
    pub async fn ready(&self) -> Result<Health, ClientError> {
        self.get(&["readyz"], &[]).await
    }

    /// `GET /openapi.json`.
    pub async fn openapi(&self) -> Result<serde_json::Value, ClientError> {
        self.get(&["openapi.json"], &[]).await
    }

    /// `GET /metrics` (signed): the Prometheus text.
    pub async fn metrics(&self) -> Result<String, ClientError> {
        let url = self.url(&["metrics"], &[])?;
        let (_, body) = self.send(Method::GET, url, Vec::new()).await?;
        String::from_utf8(body).map_err(|e| ClientError::Decode {
            status: 200,
            reason: e.to_string(),
        })
    }

    // ----- committees ----------------------------------------------------------------------

    /// `GET /v1/committees`.
    pub async fn list_committees(&self) -> Result<Vec<CommitteeView>, ClientError> {
        let list: CommitteeList = self.get(&["v1", "committees"], &[]).await?;
        Ok(list.committees)
    }

    /// `POST /v1/committees`: starts the set-up; the view is `creating` (poll
    /// [`get_committee`](Self::get_committee)) or `ready` if it already was.
    pub async fn setup_committee(&self, parties: &[PartyId]) -> Result<CommitteeView, ClientError> {
        let body = SetupCommitteeBody {
            parties: parties.iter().copied().map(PartyRef).collect(),
        };
        self.post(&["v1", "committees"], &body).await
    }

    /// `GET /v1/committees/{parties}`.
    pub async fn get_committee(&self, parties: &[PartyId]) -> Result<CommitteeView, ClientError> {
        self.get(&["v1", "committees", &parties_segment(parties)], &[])
            .await
    }

    // ----- keys -----------------------------------------------------------------------------

    /// `GET /v1/keys`.
    pub async fn list_keys(&self) -> Result<Vec<KeyView>, ClientError> {
        let list: KeyList = self.get(&["v1", "keys"], &[]).await?;
        Ok(list.keys)
    }

    /// `POST /v1/keys`: generates a `threshold`-of-n key named `name` on a ready committee
    /// and returns it ready.
    pub async fn create_key(
        &self,
        name: &str,
        committee: &[PartyId],
        threshold: u16,
        kind: KeyKind,
    ) -> Result<KeyView, ClientError> {
        let body = CreateKeyBody {
            name: name.to_owned(),
            committee: committee.iter().copied().map(PartyRef).collect(),
            threshold,
            kind,
        };
        self.post(&["v1", "keys"], &body).await
    }

    /// `POST /v1/keys/{key}/refresh`: proposes new shares of the same key (a key change
    /// with id `id`), carried out once other admins approved it
    /// ([`approve_key_change`](Self::approve_key_change)).
    pub async fn refresh_key(
        &self,
        key: &str,
        id: ProposalId,
        lifetime_secs: Option<u64>,
    ) -> Result<KeyChangeView, ClientError> {
        let body = RefreshKeyBody { id, lifetime_secs };
        self.post(&["v1", "keys", key, "refresh"], &body).await
    }

    /// `POST /v1/keys/{key}/reshare`: proposes to hand the key to `committee` (a ready
    /// committee) with `threshold`; the public key and addresses do not change.
    pub async fn reshare_key(
        &self,
        key: &str,
        id: ProposalId,
        committee: &[PartyId],
        threshold: u16,
        lifetime_secs: Option<u64>,
    ) -> Result<KeyChangeView, ClientError> {
        let body = ReshareKeyBody {
            id,
            committee: committee.iter().copied().map(PartyRef).collect(),
            threshold,
            lifetime_secs,
        };
        self.post(&["v1", "keys", key, "reshare"], &body).await
    }

    /// `POST /v1/keys/{key}/refresh-schedule`: proposes to refresh the key every `every_secs`
    /// seconds (`None` stops it).
    pub async fn schedule_refresh(
        &self,
        key: &str,
        id: ProposalId,
        every_secs: Option<u64>,
        lifetime_secs: Option<u64>,
    ) -> Result<KeyChangeView, ClientError> {
        let body = RefreshScheduleBody {
            id,
            every_secs,
            lifetime_secs,
        };
        self.post(&["v1", "keys", key, "refresh-schedule"], &body)
            .await
    }

    /// `POST /v1/keys/{key}/activate`: resends the activation of the key's last rotation.
    pub async fn activate_key(&self, key: &str) -> Result<KeyView, ClientError> {
        self.post(&["v1", "keys", key, "activate"], &serde_json::json!({}))
            .await
    }

    /// `GET /v1/key-changes?state=&limit=&after=`: a page of summaries, newest first (pass a
    /// page's `next_after` as `after` for the next).
    pub async fn list_key_changes(
        &self,
        state: Option<KeyChangeState>,
        limit: Option<u32>,
        after: Option<ProposalId>,
    ) -> Result<KeyChangeList, ClientError> {
        let params = list_params(state, limit, after);
        self.get(&["v1", "key-changes"], &params).await
    }

    /// `GET /v1/key-changes/{id}`.
    pub async fn get_key_change(&self, id: ProposalId) -> Result<KeyChangeView, ClientError> {
        self.get(&["v1", "key-changes", &id.to_string()], &[]).await
    }

    /// `POST /v1/key-changes/{id}/approve` with `signature` (see
    /// [`key_change_approval_for`](Self::key_change_approval_for)). The approval that
    /// completes the change carries it out before answering.
    pub async fn approve_key_change(
        &self,
        id: ProposalId,
        signature: &PrincipalSignature,
    ) -> Result<KeyChangeView, ClientError> {
        let body = DecisionBody::new(signature);
        self.post(&["v1", "key-changes", &id.to_string(), "approve"], &body)
            .await
    }

    /// `GET /v1/keys/{key}` (name or id).
    pub async fn get_key(&self, key: &str) -> Result<KeyView, ClientError> {
        self.get(&["v1", "keys", key], &[]).await
    }

    /// `GET /v1/keys/{key}/address?path=…&chain=…&network=…`: the key at `path` on `chain`
    /// (the key's default chain if `None`; Bitcoin addresses on `network`, default mainnet).
    pub async fn key_address(
        &self,
        key: &str,
        path: &[u32],
        chain: Option<Chain>,
        network: Option<BitcoinNetwork>,
    ) -> Result<KeyAddress, ClientError> {
        let mut query = vec![("path", DerivationPath(path.to_vec()).to_string())];
        if let Some(chain) = chain {
            query.push(("chain", chain.to_string()));
        }
        if let Some(network) = network {
            query.push(("network", network.to_string()));
        }
        self.get(&["v1", "keys", key, "address"], &query).await
    }

    // ----- requests -------------------------------------------------------------------------

    /// `POST /v1/requests`. A retry with the same body returns the stored request; a policy
    /// denial is [`ClientError::Api`] with status 422 and the reasons.
    pub async fn submit(&self, request: &SubmitBody) -> Result<RequestView, ClientError> {
        self.post(&["v1", "requests"], request).await
    }

    /// `GET /v1/requests?…`: a page, newest first.
    pub async fn list_requests(&self, query: &RequestQuery) -> Result<RequestPage, ClientError> {
        let mut params = Vec::new();
        if let Some(state) = query.state {
            params.push(("state", state.to_string()));
        }
        if let Some(key) = &query.key {
            params.push(("key", key.clone()));
        }
        if let Some(limit) = query.limit {
            params.push(("limit", limit.to_string()));
        }
        if let Some(after) = query.after {
            params.push(("after", after.to_string()));
        }
        self.get(&["v1", "requests"], &params).await
    }

    /// `GET /v1/requests/{id}`.
    pub async fn get_request(&self, id: RequestId) -> Result<RequestView, ClientError> {
        self.get(&["v1", "requests", &id.to_string()], &[]).await
    }

    /// `POST /v1/requests/{id}/approve` with `signature` (see
    /// [`approval_for`](Self::approval_for)).
    pub async fn approve(
        &self,
        id: RequestId,
        signature: &PrincipalSignature,
    ) -> Result<RequestView, ClientError> {
        let body = DecisionBody::new(signature);
        self.post(&["v1", "requests", &id.to_string(), "approve"], &body)
            .await
    }

    /// `POST /v1/requests/{id}/sign`: the submitter's `signature` over the request digest (see
    /// [`approval_for`](Self::approval_for)).
    pub async fn sign(
        &self,
        id: RequestId,
        signature: &PrincipalSignature,
    ) -> Result<RequestView, ClientError> {
        let body = DecisionBody::new(signature);
        self.post(&["v1", "requests", &id.to_string(), "sign"], &body)
            .await
    }

    /// Signs `request`, which this principal submitted, as its submitter (nodes sign nothing
    /// its submitter did not sign). Check first that it is the request meant.
    pub async fn sign_submitted(&self, request: &SignRequest) -> Result<RequestView, ClientError> {
        self.sign(request.id, &self.approval_for(request)).await
    }

    /// Approves `request` with this principal's own approval signature.
    pub async fn approve_request(&self, request: &SignRequest) -> Result<RequestView, ClientError> {
        self.approve(request.id, &self.approval_for(request)).await
    }

    /// `POST /v1/requests/{id}/reject` with `signature` (see
    /// [`rejection_for`](Self::rejection_for)).
    pub async fn reject(
        &self,
        id: RequestId,
        signature: &PrincipalSignature,
    ) -> Result<RequestView, ClientError> {
        let body = DecisionBody::new(signature);
        self.post(&["v1", "requests", &id.to_string(), "reject"], &body)
            .await
    }

    /// Rejects `request` with this principal's own rejection signature.
    pub async fn reject_request(&self, request: &SignRequest) -> Result<RequestView, ClientError> {
        self.reject(request.id, &self.rejection_for(request)).await
    }

    /// `POST /v1/requests/{id}/cancel`.
    pub async fn cancel(&self, id: RequestId) -> Result<RequestView, ClientError> {
        let url = self.url(&["v1", "requests", &id.to_string(), "cancel"], &[])?;
        let (status, body) = self.send(Method::POST, url, Vec::new()).await?;
        decode(status, &body)
    }

    // ----- policy ---------------------------------------------------------------------------

    /// `GET /v1/policy`.
    pub async fn policy(&self) -> Result<PolicyView, ClientError> {
        self.get(&["v1", "policy"], &[]).await
    }

    /// `POST /v1/policy/proposals`: proposes `document` (TOML) under the client-chosen `id`.
    pub async fn propose_policy(
        &self,
        id: ProposalId,
        document: &str,
        lifetime_secs: Option<u64>,
    ) -> Result<ProposalView, ClientError> {
        let body = ProposeBody {
            id,
            document: document.to_owned(),
            lifetime_secs,
        };
        self.post(&["v1", "policy", "proposals"], &body).await
    }

    /// `GET /v1/policy/proposals?state=&limit=&after=`: a page of summaries, newest first
    /// (pass a page's `next_after` as `after` for the next).
    pub async fn list_proposals(
        &self,
        state: Option<ProposalState>,
        limit: Option<u32>,
        after: Option<ProposalId>,
    ) -> Result<ProposalList, ClientError> {
        let params = list_params(state, limit, after);
        self.get(&["v1", "policy", "proposals"], &params).await
    }

    /// `GET /v1/audit?…`: a page of the coordinator's audit events matching `filter` (its
    /// `emitter` is ignored: the coordinator serves its own log): the newest `limit` before
    /// position `before` (a previous page's `next_before`), oldest first.
    pub async fn audit_events(
        &self,
        filter: &tessera_audit::Filter,
        limit: Option<usize>,
        before: Option<u64>,
    ) -> Result<AuditEvents, ClientError> {
        let mut params = Vec::new();
        let text = [
            ("request", &filter.request),
            ("key", &filter.key),
            ("actor", &filter.actor),
            ("action", &filter.action),
        ];
        for (name, value) in text {
            if let Some(value) = value {
                params.push((name, value.clone()));
            }
        }
        if let Some(since) = filter.since {
            params.push(("since", since.to_string()));
        }
        if let Some(until) = filter.until {
            params.push(("until", until.to_string()));
        }
        if let Some(limit) = limit {
            params.push(("limit", limit.to_string()));
        }
        if let Some(before) = before {
            params.push(("before", before.to_string()));
        }
        self.get(&["v1", "audit"], &params).await
    }

    /// `GET /v1/policy/proposals/{id}`.
    pub async fn get_proposal(&self, id: ProposalId) -> Result<ProposalView, ClientError> {
        self.get(&["v1", "policy", "proposals", &id.to_string()], &[])
            .await
    }

    /// `POST /v1/policy/proposals/{id}/approve` with `signature` (see
    /// [`policy_approval_for`](Self::policy_approval_for)).
    pub async fn approve_proposal(
        &self,
        id: ProposalId,
        signature: &PrincipalSignature,
    ) -> Result<ProposalView, ClientError> {
        let body = DecisionBody::new(signature);
        self.post(
            &["v1", "policy", "proposals", &id.to_string(), "approve"],
            &body,
        )
        .await
    }

    // ----- plumbing -------------------------------------------------------------------------

    /// The URL of `segments` (each percent-encoded as needed) under the base, with `query`.
    fn url(&self, segments: &[&str], query: &[(&str, String)]) -> Result<Url, ClientError> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|()| ClientError::InvalidUrl {
                url: self.base.to_string(),
                reason: "cannot hold a path".into(),
            })?
            .pop_if_empty()
            .extend(segments);
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        Ok(url)
    }

    async fn get<T: DeserializeOwned>(
        &self,
        segments: &[&str],
        query: &[(&str, String)],
    ) -> Result<T, ClientError> {
        let url = self.url(segments, query)?;
        let (status, body) = self.send(Method::GET, url, Vec::new()).await?;
        decode(status, &body)
    }

    async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        segments: &[&str],
        body: &B,
    ) -> Result<T, ClientError> {
        let url = self.url(segments, &[])?;
        let body = serde_json::to_vec(body).map_err(|e| ClientError::Decode {
            status: 0,
            reason: format!("cannot encode the request body: {e}"),
        })?;
        let (status, body) = self.send(Method::POST, url, body).await?;
        decode(status, &body)
    }

    /// Signs and sends one request; a non-2xx answer is an error.
    async fn send(
        &self,
        method: Method,
        url: Url,
        body: Vec<u8>,
    ) -> Result<(u16, Vec<u8>), ClientError> {
        let shown = url.to_string();
        let transport = |source| ClientError::Transport {
            url: shown.clone(),
            source,
        };
        let headers = sign_request(
            &self.key,
            &self.principal,
            method.as_str(),
            &target(&url),
            &body,
            now_unix(),
        );
        let mut request = self.http.request(method, url);
        for (name, value) in headers.iter() {
            request = request.header(name, value);
        }
        if !body.is_empty() {
            request = request.header(CONTENT_TYPE, "application/json").body(body);
        }
        let response = request.send().await.map_err(transport)?;
        let status = response.status().as_u16();
        let bytes = response.bytes().await.map_err(transport)?.to_vec();
        if (200..300).contains(&status) {
            return Ok((status, bytes));
        }
        Err(match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(error) => ClientError::Api {
                status,
                error: error.error,
                message: error.message,
                reasons: error.reasons.unwrap_or_default(),
            },
            Err(_) => ClientError::Decode {
                status,
                reason: format!(
                    "not an error document: {}",
                    String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
                ),
            },
        })
    }
}

fn decode<T: DeserializeOwned>(status: u16, body: &[u8]) -> Result<T, ClientError> {
    serde_json::from_slice(body).map_err(|e| ClientError::Decode {
        status,
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(base: &str) -> Result<CoordinatorClient, ClientError> {
        CoordinatorClient::new(base, "ana", OperatorKey::generate_ed25519())
    }

    #[test]
    fn urls_are_built_from_segments_and_signed_as_sent() {
        let c = client("http://127.0.0.1:8700").unwrap();
        let url = c.url(
            &["v1", "keys", "hot wallet/1", "address"],
            &[("path", "m/0/7".into())],
        );
        let url = url.unwrap();
        assert_eq!(
            target(&url),
            "/v1/keys/hot%20wallet%2F1/address?path=m%2F0%2F7"
        );
        let c = client("http://127.0.0.1:8700/prefix/").unwrap();
        assert_eq!(
            target(&c.url(&["v1", "policy"], &[]).unwrap()),
            "/prefix/v1/policy"
        );
        for bad in ["127.0.0.1:8700", "ftp://x", "http://x/?q=1", "not a url"] {
            assert!(
                matches!(client(bad), Err(ClientError::InvalidUrl { .. })),
                "{bad}"
            );
        }
    }
}
