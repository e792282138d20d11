//! What the coordinator writes to its audit log (`tessera-audit`): every decision a principal
//! makes and every state a request, session, key, committee or policy change reaches.
//!
//! Events are written after the state change they describe is stored (the database is the
//! coordinator's truth; the log is its signed history). A failure to write is logged and the
//! service goes on; the nodes' own logs, which refuse to sign when they cannot write, cover
//! every signature.
//!
//! Request events are on disk before the call that caused them returns, and a request's
//! final event before the next request is taken. Session events (internal to the
//! coordinator) are written without waiting for the disk and flushed with the request's next
//! event (group commit, `tessera-audit`).

use std::sync::Arc;

use tessera_audit::{AuditLog, NewEvent};
use tessera_wire::{PartyId, RequestId, SessionId};

use super::Coordinator;

/// The actor of events the coordinator causes itself (expiry, retries, sessions).
pub const SYSTEM: &str = "system";

impl Coordinator {
    /// The coordinator's audit log.
    pub fn audit(&self) -> &Arc<AuditLog> {
        &self.audit
    }

    /// Records an event about request `id`.
    pub(crate) fn audit_request(
        &self,
        actor: &str,
        action: &str,
        id: RequestId,
        details: &[(&str, String)],
    ) {
        self.audit.note(request_event(actor, action, id, details));
    }

    /// Records an event about session `session` of request `id`.
    pub(crate) fn audit_session(
        &self,
        action: &str,
        session: SessionId,
        id: RequestId,
        parties: &[PartyId],
        details: &[(&str, String)],
    ) {
        let mut event = NewEvent::new(SYSTEM, action, format!("session:{session}"))
            .detail("request", id)
            .detail("parties", PartyId::list(parties));
        for (key, value) in details {
            event = event.detail(*key, value);
        }
        self.audit.note_unflushed(event);
    }

    /// Records an event about request `id` without waiting for the disk; the caller flushes
    /// ([`audit_flush`](Self::audit_flush)) before it answers.
    pub(crate) fn audit_request_unflushed(
        &self,
        actor: &str,
        action: &str,
        id: RequestId,
        details: &[(&str, String)],
    ) {
        self.audit
            .note_unflushed(request_event(actor, action, id, details));
    }

    /// Makes every event written so far durable (nothing to do if a flush covered them).
    pub(crate) fn audit_flush(&self) {
        self.audit.flush_quietly();
    }

    /// Records any other event.
    pub(crate) fn audit_note(&self, event: NewEvent) {
        self.audit.note(event);
    }
}

/// The event `action` by `actor` about request `id`, with `details`.
fn request_event(actor: &str, action: &str, id: RequestId, details: &[(&str, String)]) -> NewEvent {
    let mut event = NewEvent::new(actor, action, format!("request:{id}"));
    for (key, value) in details {
        event = event.detail(*key, value);
    }
    event
}
