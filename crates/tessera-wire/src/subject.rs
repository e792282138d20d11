//! NATS subject names. `<c>` is the cluster id.
//!
//! | subject | who publishes | who subscribes |
//! |---|---|---|
//! | `tessera.<c>.node.<to>.inbox.<from>` | party `<from>` only | party `<to>` only |
//! | `tessera.<c>.ctrl` | the coordinator | every party |
//! | `tessera.<c>.result.<session>.<party>` | party `<party>` only | the coordinator |
//! | `tessera.<c>.audit.<emitter>` | the emitter only | auditors |
//! | `_INBOX.tessera.<c>.<party>.<id>` | whoever answers that party's request | that party only |
//! | `_INBOX.tessera.<c>.coord.<name>.<id>` | whoever answers that coordinator's request | that coordinator only |
//!
//! The sender is part of the inbox and result subjects (not a header) so that the broker's
//! per-user permissions stop one party from publishing in another party's name.

use crate::ids::{ClusterId, PartyId, SessionId};

/// The subject on which `to` receives frames from `from`.
pub fn inbox(cluster: &ClusterId, to: PartyId, from: PartyId) -> String {
    format!("tessera.{cluster}.node.{}.inbox.{}", to.0, from.0)
}

/// The wildcard subject covering every frame addressed to `to`.
pub fn inbox_wildcard(cluster: &ClusterId, to: PartyId) -> String {
    format!("tessera.{cluster}.node.{}.inbox.*", to.0)
}

/// The subjects `from` may publish frames on: any party's inbox, with itself as sender.
pub fn inbox_publish_pattern(cluster: &ClusterId, from: PartyId) -> String {
    format!("tessera.{cluster}.node.*.inbox.{}", from.0)
}

/// Parses the sender out of an inbox subject addressed to `to`; `None` if the subject is not
/// such an inbox subject.
pub fn parse_inbox_sender(cluster: &ClusterId, to: PartyId, subject: &str) -> Option<PartyId> {
    let prefix = format!("tessera.{cluster}.node.{}.inbox.", to.0);
    let sender: u16 = subject.strip_prefix(&prefix)?.parse().ok()?;
    (sender != 0).then_some(PartyId(sender))
}

/// The prefix of `party`'s request/reply inboxes (`<prefix>.<unique id>`): only that party may
/// subscribe below it, so nobody else reads the answers to its requests.
pub fn reply_inbox_prefix(cluster: &ClusterId, party: PartyId) -> String {
    format!("_INBOX.tessera.{cluster}.{}", party.0)
}

/// The prefix of coordinator `name`'s request/reply inboxes (`<prefix>.<unique id>`): only that
/// coordinator may subscribe below it.
///
/// The token after the cluster is the literal `coord`, never a number, so this prefix can never
/// equal or lie below a party's [`reply_inbox_prefix`]. `name` is a roster coordinator name
/// (`[a-z0-9-]{1,32}`, checked by the roster), so it is exactly one subject token.
pub fn coordinator_reply_prefix(cluster: &ClusterId, name: &str) -> String {
    debug_assert!(
        !name.is_empty() && !name.contains(['.', '*', '>', ' ']),
        "coordinator name must be one subject token"
    );
    format!("_INBOX.tessera.{cluster}.coord.{name}")
}

/// Control messages from the coordinator to the nodes.
pub fn ctrl(cluster: &ClusterId) -> String {
    format!("tessera.{cluster}.ctrl")
}

/// `party`'s result of one session, from that node to the coordinator.
pub fn result(cluster: &ClusterId, session: SessionId, party: PartyId) -> String {
    format!("tessera.{cluster}.result.{session}.{}", party.0)
}

/// Every party's result of one session.
pub fn session_results(cluster: &ClusterId, session: SessionId) -> String {
    format!("tessera.{cluster}.result.{session}.*")
}

/// The subjects `party` may publish its results on: its own, of any session.
pub fn result_publish_pattern(cluster: &ClusterId, party: PartyId) -> String {
    format!("tessera.{cluster}.result.*.{}", party.0)
}

/// Results of every session, from every party.
pub fn result_wildcard(cluster: &ClusterId) -> String {
    format!("tessera.{cluster}.result.*.*")
}

/// The party a result subject of `session` names as its sender; `None` if the subject is not
/// one.
pub fn parse_result_sender(
    cluster: &ClusterId,
    session: SessionId,
    subject: &str,
) -> Option<PartyId> {
    let prefix = format!("tessera.{cluster}.result.{session}.");
    let sender: u16 = subject.strip_prefix(&prefix)?.parse().ok()?;
    (sender != 0).then_some(PartyId(sender))
}

/// Audit events of one emitter.
pub fn audit(cluster: &ClusterId, emitter: PartyId) -> String {
    format!("tessera.{cluster}.audit.{}", emitter.0)
}

/// Audit events of roster coordinator `name`. The token `coord-<name>` is never a number, so it
/// never equals a party's.
pub fn coordinator_audit(cluster: &ClusterId, name: &str) -> String {
    format!("tessera.{cluster}.audit.coord-{name}")
}

/// Every audit subject of the cluster: the audit stream's subjects.
pub fn audit_wildcard(cluster: &ClusterId) -> String {
    format!("tessera.{cluster}.audit.>")
}

/// The name of the cluster's JetStream audit stream: `TESSERA_AUDIT_<CLUSTER>`.
pub fn audit_stream(cluster: &ClusterId) -> String {
    format!(
        "TESSERA_AUDIT_{}",
        cluster.as_str().to_ascii_uppercase().replace('-', "_")
    )
}

/// The JetStream API subjects an emitter needs besides publishing its own events: the stream's
/// info and reading one message (where the stream's copy of its chain ends, after a restart).
pub fn audit_stream_api(cluster: &ClusterId) -> [String; 2] {
    let stream = audit_stream(cluster);
    [
        format!("$JS.API.STREAM.INFO.{stream}"),
        format!("$JS.API.STREAM.MSG.GET.{stream}"),
    ]
}

/// The JetStream API subject that creates the audit stream (granted to coordinators, which
/// create it with deny-delete and deny-purge at start).
pub fn audit_stream_create(cluster: &ClusterId) -> String {
    format!("$JS.API.STREAM.CREATE.{}", audit_stream(cluster))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inbox_sender_round_trip() {
        let c = ClusterId::new("c1").unwrap();
        let s = inbox(&c, PartyId(2), PartyId(3));
        assert_eq!(s, "tessera.c1.node.2.inbox.3");
        assert_eq!(parse_inbox_sender(&c, PartyId(2), &s), Some(PartyId(3)));
        assert_eq!(parse_inbox_sender(&c, PartyId(1), &s), None);
        assert_eq!(
            parse_inbox_sender(&c, PartyId(2), "tessera.c1.node.2.inbox.x"),
            None
        );
    }

    #[test]
    fn coordinator_reply_prefix_never_meets_a_partys() {
        let c = ClusterId::new("c1").unwrap();
        let coord = coordinator_reply_prefix(&c, "main");
        assert_eq!(coord, "_INBOX.tessera.c1.coord.main");
        // Subjects are compared token by token: a party's prefix has a number where the
        // coordinator's has `coord`, so neither is a prefix of the other's `.>` space.
        for party in [1, 2, 9, 10, u16::MAX] {
            let party = reply_inbox_prefix(&c, PartyId(party));
            assert_ne!(coord, party);
            assert!(!coord.starts_with(&format!("{party}.")));
            assert!(!party.starts_with(&format!("{coord}.")));
        }
        // Nor do two coordinators' prefixes nest, whatever their names.
        let other = coordinator_reply_prefix(&c, "main-2");
        assert!(!other.starts_with(&format!("{coord}.")));
        assert_ne!(
            coordinator_reply_prefix(&ClusterId::new("c2").unwrap(), "main"),
            coord
        );
    }
}
