//! The route table: every route's method, path and permission, in one place. The router is
//! built from it and the tests check it against the OpenAPI document, so neither can gain a
//! route the other lacks.

use axum::routing::MethodFilter;

use crate::auth::Permission;

use Endpoint as E;
use Method::{Get, Post};
use Permission as P;

/// An HTTP method the API uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    /// `GET`.
    Get,
    /// `POST`.
    Post,
}

impl Method {
    /// The method as sent (`GET`, `POST`).
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
        }
    }

    pub(crate) fn filter(self) -> MethodFilter {
        match self {
            Method::Get => MethodFilter::GET,
            Method::Post => MethodFilter::POST,
        }
    }
}

/// What a route does; each has its handler.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// Liveness.
    Healthz,
    /// Readiness: the database answers.
    Readyz,
    /// The OpenAPI document.
    OpenApi,
    /// Prometheus metrics.
    Metrics,
    /// List committees.
    ListCommittees,
    /// Start a committee's set-up (202).
    SetupCommittee,
    /// One committee.
    GetCommittee,
    /// List keys.
    ListKeys,
    /// Generate a key.
    CreateKey,
    /// One key.
    GetKey,
    /// Propose to refresh a key's shares.
    RefreshKey,
    /// Propose to reshare a key to a committee and threshold.
    ReshareKey,
    /// Propose a key's refresh schedule.
    ScheduleRefresh,
    /// Resend a key's due activation.
    ActivateKey,
    /// List key changes.
    ListKeyChanges,
    /// One key change.
    GetKeyChange,
    /// Approve a key change.
    ApproveKeyChange,
    /// A key's address at a derivation path.
    KeyAddress,
    /// Submit a sign request.
    SubmitRequest,
    /// List sign requests.
    ListRequests,
    /// One sign request.
    GetRequest,
    /// The submitter's signature of its own sign request.
    SignRequest,
    /// Approve a sign request.
    ApproveRequest,
    /// Reject a sign request.
    RejectRequest,
    /// Cancel a sign request.
    CancelRequest,
    /// The active policy.
    GetPolicy,
    /// Propose a policy change.
    ProposePolicy,
    /// List policy proposals.
    ListProposals,
    /// One policy proposal.
    GetProposal,
    /// Approve a policy proposal.
    ApproveProposal,
    /// The coordinator's audit events.
    AuditEvents,
}

/// One route: method, path (axum and OpenAPI syntax: `{name}` for a parameter), the
/// permission it needs (`None`: no authentication) and what it does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route {
    /// The method.
    pub method: Method,
    /// The path template.
    pub path: &'static str,
    /// What the caller must be allowed to do; `None` for the unauthenticated probes.
    pub permission: Option<Permission>,
    /// The handler.
    pub endpoint: Endpoint,
}

const fn route(
    method: Method,
    path: &'static str,
    permission: Option<Permission>,
    endpoint: Endpoint,
) -> Route {
    Route {
        method,
        path,
        permission,
        endpoint,
    }
}

/// Every route of the API. `/metrics` needs [`Permission::ReadMetrics`] unless the API runs
/// with [`ApiOptions::public_metrics`](super::ApiOptions::public_metrics).
pub const ROUTES: &[Route] = &[
    route(Get, "/healthz", None, E::Healthz),
    route(Get, "/readyz", None, E::Readyz),
    route(Get, "/openapi.json", None, E::OpenApi),
    route(Get, "/metrics", Some(P::ReadMetrics), E::Metrics),
    route(Get, "/v1/committees", Some(P::ReadKeys), E::ListCommittees),
    route(
        Post,
        "/v1/committees",
        Some(P::SetupCommittees),
        E::SetupCommittee,
    ),
    route(
        Get,
        "/v1/committees/{parties}",
        Some(P::ReadKeys),
        E::GetCommittee,
    ),
    route(Get, "/v1/keys", Some(P::ReadKeys), E::ListKeys),
    route(Post, "/v1/keys", Some(P::CreateKeys), E::CreateKey),
    route(Get, "/v1/keys/{key}", Some(P::ReadKeys), E::GetKey),
    route(
        Post,
        "/v1/keys/{key}/refresh",
        Some(P::CreateKeys),
        E::RefreshKey,
    ),
    route(
        Post,
        "/v1/keys/{key}/reshare",
        Some(P::CreateKeys),
        E::ReshareKey,
    ),
    route(
        Post,
        "/v1/keys/{key}/refresh-schedule",
        Some(P::CreateKeys),
        E::ScheduleRefresh,
    ),
    route(
        Post,
        "/v1/keys/{key}/activate",
        Some(P::CreateKeys),
        E::ActivateKey,
    ),
    route(
        Get,
        "/v1/keys/{key}/address",
        Some(P::ReadKeys),
        E::KeyAddress,
    ),
    route(Get, "/v1/key-changes", Some(P::ReadKeys), E::ListKeyChanges),
    route(
        Get,
        "/v1/key-changes/{id}",
        Some(P::ReadKeys),
        E::GetKeyChange,
    ),
    route(
        Post,
        "/v1/key-changes/{id}/approve",
        Some(P::CreateKeys),
        E::ApproveKeyChange,
    ),
    route(
        Post,
        "/v1/requests",
        Some(P::SubmitRequests),
        E::SubmitRequest,
    ),
    route(Get, "/v1/requests", Some(P::ReadRequests), E::ListRequests),
    route(
        Get,
        "/v1/requests/{id}",
        Some(P::ReadRequests),
        E::GetRequest,
    ),
    route(
        Post,
        "/v1/requests/{id}/sign",
        Some(P::SubmitRequests),
        E::SignRequest,
    ),
    route(
        Post,
        "/v1/requests/{id}/approve",
        Some(P::ApproveRequests),
        E::ApproveRequest,
    ),
    route(
        Post,
        "/v1/requests/{id}/reject",
        Some(P::ApproveRequests),
        E::RejectRequest,
    ),
    route(
        Post,
        "/v1/requests/{id}/cancel",
        Some(P::CancelRequests),
        E::CancelRequest,
    ),
    route(Get, "/v1/policy", Some(P::ReadPolicy), E::GetPolicy),
    route(
        Post,
        "/v1/policy/proposals",
        Some(P::ProposePolicy),
        E::ProposePolicy,
    ),
    route(
        Get,
        "/v1/policy/proposals",
        Some(P::ReadPolicy),
        E::ListProposals,
    ),
    route(
        Get,
        "/v1/policy/proposals/{id}",
        Some(P::ReadPolicy),
        E::GetProposal,
    ),
    route(
        Post,
        "/v1/policy/proposals/{id}/approve",
        Some(P::ApprovePolicy),
        E::ApproveProposal,
    ),
    route(Get, "/v1/audit", Some(P::ReadAudit), E::AuditEvents),
];

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn routes_are_unique_and_versioned() {
        let mut seen = HashSet::new();
        let mut endpoints = HashSet::new();
        for r in ROUTES {
            assert!(seen.insert((r.method, r.path)), "{r:?} twice");
            assert!(endpoints.insert(r.endpoint), "{:?} twice", r.endpoint);
            // Everything but the probes is versioned and authenticated.
            assert_eq!(
                r.path.starts_with("/v1/"),
                r.permission.is_some() && r.endpoint != Endpoint::Metrics,
                "{r:?}"
            );
        }
    }
}
