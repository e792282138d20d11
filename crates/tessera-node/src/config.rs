//! The node's configuration: a TOML file, with a few environment overrides.
//!
//! ```toml
//! # Paths are relative to this file's directory.
//! identity = "p1.identity.json"        # the party's secret identity (tessera identity new)
//! roster = "roster.json"               # the admin-signed roster
//! roster_pin = "3f1c…"                 # its hash, as printed by `tessera roster verify`
//! policy = "policy.toml"               # the signing policy (docs/policy.md)
//! policy_pin = "9a0e…"                 # its SHA-256 (`sha256sum policy.toml`); the node
//!                                      # refuses to start if the file has another hash
//! store = "store"                      # the encrypted store directory (tessera-node init)
//! passphrase_file = "passphrase"       # optional; else TESSERA_NODE_PASSPHRASE
//!
//! [nats]
//! url = "tls://127.0.0.1:4222"
//! ca = "nats/tls/ca.pem"
//! cert = "nats/clients/p1/cert.pem"
//! key = "nats/clients/p1/key.pem"
//! connect_timeout_secs = 10            # default 10
//!
//! [sessions]
//! round_timeout_secs = 20              # default 20: keygen, presign and sign rounds
//! aux_info_round_timeout_secs = 180    # default 180: auxiliary info rounds carry long proofs
//! max_start_lifetime_secs = 600        # default 600
//! shutdown_grace_secs = 30             # default 30: running sessions get this long to finish
//! pending_reshare_lifetime_secs = 86400 # default one day: a rotation's result waits this long
//!                                      # for its activation certificate, then is abandoned
//! presignature_lifetime_secs = 21600   # default six hours: a presignature not used by then is
//!                                      # erased unused, so a restored snapshot of the store
//!                                      # re-arms none older (keep the coordinator's
//!                                      # presignature_max_age_secs below it)
//!
//! [primes]
//! pool_target = 2                      # default 2: prime sets kept ready; 0 disables refill
//!
//! [metrics]                            # optional
//! listen = "127.0.0.1:9464"            # default: none (no HTTP server); serves GET /metrics,
//!                                      # /healthz and /readyz, unauthenticated: keep it on
//!                                      # loopback or a monitoring network
//! primes_floor = 0                     # default 0: /readyz needs this many prime sets ready
//! presignature_floor = 0               # default 0: /readyz needs this many fresh
//!                                      # presignatures for every key held
//!
//! [audit]                              # optional (docs/audit.md)
//! file = "p1.audit.jsonl"              # default: <party>.audit.jsonl next to this file; the
//!                                      # node's signed event log, continued after restarts
//! fsync_every = 1                      # default 1: flush to disk after every event
//! stream = false                       # true: also publish to the cluster's JetStream audit
//!                                      # stream (the coordinator creates it)
//! ```
//!
//! Environment overrides: `TESSERA_NODE_NATS_URL`, `TESSERA_NODE_STORE`,
//! `TESSERA_NODE_ROSTER_PIN`, `TESSERA_NODE_POLICY_PIN`, `TESSERA_NODE_PRIMES_TARGET`, `TESSERA_NODE_ROUND_TIMEOUT_SECS`,
//! `TESSERA_NODE_METRICS_LISTEN`;
//! the store passphrase comes from `TESSERA_NODE_PASSPHRASE` or `passphrase_file`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use zeroize::Zeroizing;

/// Why the configuration is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read {path}: {reason}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The TOML is invalid.
    #[error("{path} is not a valid node configuration: {reason}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why (the TOML parser's message, with line and column).
        reason: String,
    },
    /// An environment override is invalid.
    #[error("environment variable {name} is invalid: {reason}")]
    Env {
        /// The variable.
        name: &'static str,
        /// Why.
        reason: String,
    },
    /// No passphrase given.
    #[error(
        "no store passphrase: set TESSERA_NODE_PASSPHRASE or passphrase_file in the configuration"
    )]
    NoPassphrase,
}

/// The broker connection.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsSection {
    /// Server URL.
    pub url: String,
    /// CA certificate (PEM).
    pub ca: PathBuf,
    /// This party's client certificate (PEM).
    pub cert: PathBuf,
    /// This party's client key (PEM, secret).
    pub key: PathBuf,
    /// Seconds to wait for the first connection.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_secs: u64,
}

/// Session limits.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionsSection {
    /// Seconds to wait for the next message of a keygen, presign or sign session.
    #[serde(default = "default_round_timeout")]
    pub round_timeout_secs: u64,
    /// Seconds to wait for the next message of an auxiliary info session.
    #[serde(default = "default_aux_round_timeout")]
    pub aux_info_round_timeout_secs: u64,
    /// Longest validity a session start may ask for.
    #[serde(default = "default_lifetime")]
    pub max_start_lifetime_secs: u64,
    /// On shutdown, how long running sessions may take to finish.
    #[serde(default = "default_grace")]
    pub shutdown_grace_secs: u64,
    /// How long a refresh's or reshare's result waits here for its activation certificate
    /// before it is abandoned (its new share erased).
    #[serde(default = "default_pending_reshare_lifetime")]
    pub pending_reshare_lifetime_secs: u64,
    /// How long a presignature may wait for its request before it is erased unused.
    #[serde(default = "default_presignature_lifetime")]
    pub presignature_lifetime_secs: u64,
}

impl Default for SessionsSection {
    fn default() -> Self {
        SessionsSection {
            round_timeout_secs: default_round_timeout(),
            aux_info_round_timeout_secs: default_aux_round_timeout(),
            max_start_lifetime_secs: default_lifetime(),
            shutdown_grace_secs: default_grace(),
            pending_reshare_lifetime_secs: default_pending_reshare_lifetime(),
            presignature_lifetime_secs: default_presignature_lifetime(),
        }
    }
}

/// The prime pool.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrimesSection {
    /// Prime sets to keep ready (each takes minutes of one core to generate).
    #[serde(default = "default_primes_target")]
    pub pool_target: usize,
}

impl Default for PrimesSection {
    fn default() -> Self {
        PrimesSection {
            pool_target: default_primes_target(),
        }
    }
}

/// The metrics and health HTTP server, and what `/readyz` requires.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSection {
    /// Where to serve `GET /metrics`, `/healthz` and `/readyz`; `None` (the default): no
    /// server.
    #[serde(default)]
    pub listen: Option<SocketAddr>,
    /// Prime sets that must be ready for `/readyz` (default 0: not checked).
    #[serde(default)]
    pub primes_floor: usize,
    /// Fresh presignatures every key held must have for `/readyz` (default 0: not checked).
    #[serde(default)]
    pub presignature_floor: usize,
}

impl MetricsSection {
    /// The readiness floors.
    pub fn floors(&self) -> crate::metrics::PoolFloors {
        crate::metrics::PoolFloors {
            primes: self.primes_floor,
            presignatures: self.presignature_floor,
        }
    }
}

fn default_connect_timeout() -> u64 {
    10
}
fn default_round_timeout() -> u64 {
    20
}
fn default_aux_round_timeout() -> u64 {
    180
}
fn default_lifetime() -> u64 {
    600
}
fn default_grace() -> u64 {
    30
}
fn default_pending_reshare_lifetime() -> u64 {
    24 * 3600
}
fn default_presignature_lifetime() -> u64 {
    crate::node::DEFAULT_PRESIGNATURE_LIFETIME_SECS
}
fn default_primes_target() -> usize {
    2
}

/// A node's configuration.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// The party's secret identity file.
    pub identity: PathBuf,
    /// The signed roster file.
    pub roster: PathBuf,
    /// The roster hash this node accepts (64 hex digits).
    pub roster_pin: String,
    /// The signing policy file (TOML).
    pub policy: PathBuf,
    /// The policy's SHA-256 this node accepts (64 hex digits).
    pub policy_pin: String,
    /// The encrypted store directory.
    pub store: PathBuf,
    /// A file holding the store passphrase (else `TESSERA_NODE_PASSPHRASE`).
    #[serde(default)]
    pub passphrase_file: Option<PathBuf>,
    /// The broker.
    pub nats: NatsSection,
    /// Session limits.
    #[serde(default)]
    pub sessions: SessionsSection,
    /// The prime pool.
    #[serde(default)]
    pub primes: PrimesSection,
    /// The metrics and health server.
    #[serde(default)]
    pub metrics: MetricsSection,
    /// The audit log (default file `<party>.audit.jsonl` next to this file).
    #[serde(default)]
    pub audit: tessera_audit::AuditSection,
    /// The configuration file's directory (relative paths are resolved against it).
    #[serde(skip)]
    dir: PathBuf,
}

fn env_override<T: std::str::FromStr>(name: &'static str, target: &mut T) -> Result<(), ConfigError>
where
    T::Err: std::fmt::Display,
{
    if let Ok(text) = std::env::var(name) {
        *target = text.parse().map_err(|e: T::Err| ConfigError::Env {
            name,
            reason: e.to_string(),
        })?;
    }
    Ok(())
}

impl NodeConfig {
    /// Reads `path`, resolves relative paths against its directory and applies the
    /// environment overrides.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        let mut config = Self::parse(&text).map_err(|reason| ConfigError::Parse {
            path: path.to_owned(),
            reason,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.resolve(base);
        config.apply_env()?;
        Ok(config)
    }

    /// Parses TOML text (no path resolution, no overrides).
    pub fn parse(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    fn resolve(&mut self, base: &Path) {
        let join = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        join(&mut self.identity);
        join(&mut self.roster);
        join(&mut self.policy);
        join(&mut self.store);
        if let Some(p) = self.passphrase_file.as_mut() {
            join(p);
        }
        join(&mut self.nats.ca);
        join(&mut self.nats.cert);
        join(&mut self.nats.key);
        self.audit.resolve(base);
        self.dir = base.to_owned();
    }

    /// The audit log's options: `[audit]`, with the file defaulting to
    /// `<party>.audit.jsonl` next to the configuration file.
    pub fn audit_options(&self, party: tessera_wire::PartyId) -> tessera_audit::LogOptions {
        self.audit
            .options(self.dir.join(format!("{party}.audit.jsonl")))
    }

    fn apply_env(&mut self) -> Result<(), ConfigError> {
        env_override("TESSERA_NODE_NATS_URL", &mut self.nats.url)?;
        env_override("TESSERA_NODE_STORE", &mut self.store)?;
        env_override("TESSERA_NODE_ROSTER_PIN", &mut self.roster_pin)?;
        env_override("TESSERA_NODE_POLICY_PIN", &mut self.policy_pin)?;
        env_override("TESSERA_NODE_PRIMES_TARGET", &mut self.primes.pool_target)?;
        env_override(
            "TESSERA_NODE_ROUND_TIMEOUT_SECS",
            &mut self.sessions.round_timeout_secs,
        )?;
        if let Ok(text) = std::env::var("TESSERA_NODE_METRICS_LISTEN") {
            self.metrics.listen = if text.is_empty() {
                None
            } else {
                Some(
                    text.parse()
                        .map_err(|e: std::net::AddrParseError| ConfigError::Env {
                            name: "TESSERA_NODE_METRICS_LISTEN",
                            reason: e.to_string(),
                        })?,
                )
            };
        }
        Ok(())
    }

    /// The store passphrase: `TESSERA_NODE_PASSPHRASE`, else the passphrase file (one
    /// trailing newline is removed).
    pub fn passphrase(&self) -> Result<Zeroizing<Vec<u8>>, ConfigError> {
        if let Ok(p) = std::env::var("TESSERA_NODE_PASSPHRASE") {
            return Ok(Zeroizing::new(p.into_bytes()));
        }
        let path = self
            .passphrase_file
            .as_ref()
            .ok_or(ConfigError::NoPassphrase)?;
        let mut bytes = Zeroizing::new(std::fs::read(path).map_err(|e| ConfigError::Read {
            path: path.clone(),
            reason: e.to_string(),
        })?);
        if bytes.last() == Some(&b'\n') {
            bytes.pop();
        }
        Ok(bytes)
    }

    /// Session limits as [`crate::NodeSettings`].
    pub fn settings(&self) -> crate::NodeSettings {
        crate::NodeSettings {
            round_timeout: Duration::from_secs(self.sessions.round_timeout_secs),
            aux_info_round_timeout: Duration::from_secs(self.sessions.aux_info_round_timeout_secs),
            max_start_lifetime: Duration::from_secs(self.sessions.max_start_lifetime_secs),
            pending_reshare_lifetime: Duration::from_secs(
                self.sessions.pending_reshare_lifetime_secs,
            ),
            presignature_lifetime: Duration::from_secs(self.sessions.presignature_lifetime_secs),
            ..crate::NodeSettings::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
identity = "p1.identity.json"
roster = "roster.json"
roster_pin = "00"
policy = "policy.toml"
policy_pin = "00"
store = "store"
[nats]
url = "tls://127.0.0.1:4222"
ca = "ca.pem"
cert = "cert.pem"
key = "key.pem"
"#;

    #[test]
    fn defaults_fill_the_optional_sections_and_paths_resolve() {
        let mut config = NodeConfig::parse(MINIMAL).unwrap();
        assert_eq!(config.sessions.round_timeout_secs, 20);
        assert_eq!(config.sessions.aux_info_round_timeout_secs, 180);
        assert_eq!(config.primes.pool_target, 2);
        assert_eq!(config.nats.connect_timeout_secs, 10);
        assert_eq!(config.metrics.listen, None);
        assert_eq!(
            config.metrics.floors(),
            crate::metrics::PoolFloors::default()
        );
        config.resolve(Path::new("/etc/tessera"));
        assert_eq!(config.store, Path::new("/etc/tessera/store"));
        assert_eq!(config.policy, Path::new("/etc/tessera/policy.toml"));
        assert_eq!(config.nats.key, Path::new("/etc/tessera/key.pem"));
    }

    #[test]
    fn the_metrics_section_sets_the_server_and_the_readiness_floors() {
        let text = format!(
            "{MINIMAL}[metrics]\nlisten = \"127.0.0.1:9464\"\nprimes_floor = 1\npresignature_floor = 3\n"
        );
        let config = NodeConfig::parse(&text).unwrap();
        assert_eq!(
            config.metrics.listen,
            Some("127.0.0.1:9464".parse().unwrap())
        );
        assert_eq!(
            config.metrics.floors(),
            crate::metrics::PoolFloors {
                primes: 1,
                presignatures: 3
            }
        );
        let bad = format!("{MINIMAL}[metrics]\nlisten = \"localhost\"\n");
        let err = NodeConfig::parse(&bad).unwrap_err();
        assert!(err.contains("listen"), "{err}");
    }

    #[test]
    fn unknown_keys_and_missing_fields_are_errors_with_a_location() {
        let typo = MINIMAL.replace("store = ", "stor = ");
        let err = NodeConfig::parse(&typo).unwrap_err();
        assert!(err.contains("stor"), "{err}");
        let err = NodeConfig::parse("identity = 1").unwrap_err();
        assert!(err.contains("line 1"), "{err}");
    }

    #[test]
    fn environment_overrides_win_and_bad_values_are_named() {
        // nextest runs each test in its own process, so the environment is ours.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        std::fs::write(&path, MINIMAL).unwrap();
        std::env::set_var("TESSERA_NODE_NATS_URL", "tls://10.0.0.9:4222");
        std::env::set_var("TESSERA_NODE_PRIMES_TARGET", "5");
        let config = NodeConfig::load(&path).unwrap();
        assert_eq!(config.nats.url, "tls://10.0.0.9:4222");
        assert_eq!(config.primes.pool_target, 5);
        assert_eq!(config.identity, dir.path().join("p1.identity.json"));
        std::env::set_var("TESSERA_NODE_PRIMES_TARGET", "many");
        let err = NodeConfig::load(&path).unwrap_err();
        assert!(
            err.to_string().contains("TESSERA_NODE_PRIMES_TARGET"),
            "{err}"
        );
        std::env::remove_var("TESSERA_NODE_PRIMES_TARGET");
        std::env::set_var("TESSERA_NODE_METRICS_LISTEN", "127.0.0.1:9999");
        let config = NodeConfig::load(&path).unwrap();
        assert_eq!(
            config.metrics.listen,
            Some("127.0.0.1:9999".parse().unwrap())
        );
        std::env::set_var("TESSERA_NODE_METRICS_LISTEN", "port 9999");
        let err = NodeConfig::load(&path).unwrap_err();
        assert!(
            err.to_string().contains("TESSERA_NODE_METRICS_LISTEN"),
            "{err}"
        );
        std::env::remove_var("TESSERA_NODE_METRICS_LISTEN");

        // The passphrase: the variable, else the file without its trailing newline.
        std::env::remove_var("TESSERA_NODE_PASSPHRASE");
        let mut config = NodeConfig::load(&path).unwrap();
        assert!(matches!(
            config.passphrase(),
            Err(ConfigError::NoPassphrase)
        ));
        std::fs::write(dir.path().join("pass"), "secret words\n").unwrap();
        config.passphrase_file = Some(dir.path().join("pass"));
        assert_eq!(&config.passphrase().unwrap()[..], b"secret words");
        std::env::set_var("TESSERA_NODE_PASSPHRASE", "from env");
        assert_eq!(&config.passphrase().unwrap()[..], b"from env");
    }
}
