//! Prometheus metrics and health endpoints shared by Tessera services.
//!
//! A service keeps its metrics in a [`Telemetry`] (which owns a `prometheus-client`
//! [`Registry`]) and says what it needs to be ready with a [`Readiness`] check; [`router`] and
//! [`serve`] then answer:
//!
//! | path | answer |
//! |---|---|
//! | `GET /metrics` | 200, every registered metric in the OpenMetrics 1.0 text format ([`CONTENT_TYPE`]), ending in `# EOF` |
//! | `GET /healthz` | 200 `ok` while the process runs |
//! | `GET /readyz` | 200 `ready` when the readiness check finds nothing missing, else 503 with one unmet condition per line |
//!
//! The OpenMetrics text is what `prometheus-client` encodes; Prometheus asks for it by
//! default and reads it. Counters carry the `_total` suffix the format requires: a counter
//! registered as `x_sessions` is exposed as `x_sessions_total`.
//!
//! Metrics that are cheaper to read when scraped than to keep up to date (pool levels, counts
//! kept elsewhere) are registered as a [`Collector`](prometheus_client::collector::Collector);
//! `/metrics` and `/readyz` run on a blocking thread, so a collector or check may read a disk
//! store.
//!
//! The endpoints carry no secrets and need no authentication: bind them to loopback or a
//! monitoring network.

mod http;
mod readiness;
mod stages;

use std::fmt;

pub use prometheus_client;
use prometheus_client::registry::Registry;

pub use http::{router, serve};
pub use readiness::{AlwaysReady, Readiness};
pub use stages::{StageClock, StageTimes, StageTotal};

/// The `Content-Type` of `GET /metrics`: the OpenMetrics 1.0 text format.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Why metrics could not be rendered or served.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// A metric or collector failed to encode.
    #[error("cannot encode the metrics")]
    Encode(#[from] fmt::Error),
    /// The HTTP server failed.
    #[error("the metrics and health server failed: {0}")]
    Serve(#[from] std::io::Error),
}

/// A service's metrics: a registry of metrics and collectors, rendered on demand.
///
/// Register everything first (through [`registry_mut`](Self::registry_mut)), then share it
/// (e.g. in an `Arc`) with [`router`] or [`serve`].
#[derive(Debug, Default)]
pub struct Telemetry {
    registry: Registry,
}

impl Telemetry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes over an already filled registry.
    pub fn from_registry(registry: Registry) -> Self {
        Telemetry { registry }
    }

    /// The registry.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The registry, to register metrics and collectors in.
    pub fn registry_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// Every metric in the OpenMetrics text format, ending in `# EOF`. Collectors run now.
    pub fn render(&self) -> Result<String, TelemetryError> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

impl From<Registry> for Telemetry {
    fn from(registry: Registry) -> Self {
        Telemetry::from_registry(registry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;

    #[test]
    fn renders_registered_counters_with_the_total_suffix_and_eof() {
        let mut telemetry = Telemetry::new();
        let counter: Counter = Counter::default();
        telemetry
            .registry_mut()
            .register("demo_things", "Things done", counter.clone());
        counter.inc_by(3);
        let text = telemetry.render().unwrap();
        assert!(text.contains("# TYPE demo_things counter"), "{text}");
        assert!(text.contains("\ndemo_things_total 3\n"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
