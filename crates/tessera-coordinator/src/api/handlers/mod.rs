//! The handlers, one module per resource, and the map from [`Endpoint`] to handler.

mod audit;
mod committees;
mod key_changes;
mod keys;
mod policy;
mod requests;
mod system;

use axum::routing::{on, MethodRouter};

use super::routes::{Endpoint, Route};
use super::ApiState;

/// The handler of `route`, for its method only.
pub(crate) fn method_router(route: &Route) -> MethodRouter<ApiState> {
    let method = route.method.filter();
    match route.endpoint {
        Endpoint::Healthz => on(method, system::healthz),
        Endpoint::Readyz => on(method, system::readyz),
        Endpoint::OpenApi => on(method, system::openapi),
        Endpoint::Metrics => on(method, system::metrics),
        Endpoint::ListCommittees => on(method, committees::list),
        Endpoint::SetupCommittee => on(method, committees::setup),
        Endpoint::GetCommittee => on(method, committees::get),
        Endpoint::ListKeys => on(method, keys::list),
        Endpoint::CreateKey => on(method, keys::create),
        Endpoint::RefreshKey => on(method, keys::refresh),
        Endpoint::ReshareKey => on(method, keys::reshare),
        Endpoint::ScheduleRefresh => on(method, keys::schedule_refresh),
        Endpoint::ActivateKey => on(method, keys::activate),
        Endpoint::ListKeyChanges => on(method, key_changes::list),
        Endpoint::GetKeyChange => on(method, key_changes::get),
        Endpoint::ApproveKeyChange => on(method, key_changes::approve),
        Endpoint::GetKey => on(method, keys::get),
        Endpoint::KeyAddress => on(method, keys::address),
        Endpoint::SubmitRequest => on(method, requests::submit),
        Endpoint::ListRequests => on(method, requests::list),
        Endpoint::GetRequest => on(method, requests::get),
        Endpoint::SignRequest => on(method, requests::sign),
        Endpoint::ApproveRequest => on(method, requests::approve),
        Endpoint::RejectRequest => on(method, requests::reject),
        Endpoint::CancelRequest => on(method, requests::cancel),
        Endpoint::GetPolicy => on(method, policy::get),
        Endpoint::ProposePolicy => on(method, policy::propose),
        Endpoint::ListProposals => on(method, policy::list),
        Endpoint::GetProposal => on(method, policy::get_proposal),
        Endpoint::ApproveProposal => on(method, policy::approve),
        Endpoint::AuditEvents => on(method, audit::list),
    }
}
