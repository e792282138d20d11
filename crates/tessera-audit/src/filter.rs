//! Selecting events for auditors: by request, key, actor, emitter, action and time range.
//!
//! Events name what they concern in their subject (`request:<id>`, `key:<id>`) or in a detail
//! of the same name (`request`, `key`), so a filter on a request also finds the sessions and
//! refusals of the nodes that worked on it.

use serde::Deserialize;

use crate::{AuditError, AuditRecord};

/// Which events to show. Every condition given must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Filter {
    /// Events about this sign request.
    pub request: Option<String>,
    /// Events about this key.
    pub key: Option<String>,
    /// Events caused by this actor.
    pub actor: Option<String>,
    /// Events written by this emitter (`p1`, `coordinator:<name>`).
    pub emitter: Option<String>,
    /// Events whose action starts with this (`request.`, `session.joined`).
    pub action: Option<String>,
    /// Events at or after this time (ms since the epoch).
    pub since: Option<u64>,
    /// Events before this time (ms since the epoch).
    pub until: Option<u64>,
}

impl Filter {
    /// Whether `record` passes.
    pub fn matches(&self, record: &AuditRecord) -> bool {
        let about = |kind: &str, id: &Option<String>| match id {
            None => true,
            Some(id) => {
                record
                    .subject
                    .strip_prefix(kind)
                    .and_then(|s| s.strip_prefix(':'))
                    == Some(id)
                    || record.details.get(kind) == Some(id)
            }
        };
        about("request", &self.request)
            && about("key", &self.key)
            && self.actor.as_ref().is_none_or(|a| &record.actor == a)
            && self
                .emitter
                .as_ref()
                .is_none_or(|e| &record.emitter.to_string() == e)
            && self
                .action
                .as_ref()
                .is_none_or(|a| record.action.starts_with(a.as_str()))
            && self.since.is_none_or(|t| record.time >= t)
            && self.until.is_none_or(|t| record.time < t)
    }
}

/// Parses a time for `--since`/`--until`: RFC 3339 (`2026-11-22T07:00:00Z`) or milliseconds
/// since the epoch.
pub fn parse_time(text: &str) -> Result<u64, AuditError> {
    if let Ok(ms) = text.parse::<u64>() {
        return Ok(ms);
    }
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.timestamp_millis().max(0) as u64)
        .map_err(|e| {
            AuditError::Invalid(format!(
                "{text:?} is not a time: use RFC 3339 (2026-11-22T07:00:00Z) or milliseconds \
                 since the epoch ({e})"
            ))
        })
}

/// Formats a record's time as RFC 3339 UTC with milliseconds.
pub fn format_time(ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(ms as i64)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| format!("{ms}ms"))
}
