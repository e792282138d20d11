//! The `tessera-coordinator` configuration: a TOML file, with environment overrides.
//!
//! A complete example (every optional setting at its default):
//!
//! ```toml
//! # Relative paths, and a relative SQLite file in database_url, are relative to this file's
//! # directory.
//! listen = "127.0.0.1:8700"                 # the REST API (HTTPS with [api] tls_cert)
//! database_url = "sqlite://coordinator.db"  # or postgres://user:password@host:5432/tessera
//! roster = "roster.json"                    # the admin-signed roster
//! roster_pin = "3f1c…"                      # its hash (`tessera roster verify`); the roster
//!                                           # file must have this hash
//! policy = "policy.toml"                    # the signing policy the nodes pin
//! policy_pin = "9a0e…"                      # its SHA-256 (`sha256sum policy.toml`)
//! coordinator_key = "coordinator.key.json"  # this coordinator's secret key
//!                                           # (`tessera coordinator new`); it must be a
//!                                           # coordinator of the roster (mode 0600)
//!
//! [nats]
//! url = "tls://127.0.0.1:4222"
//! ca = "nats/tls/ca.pem"                    # the broker's private CA
//! cert = "nats/clients/coord-main/cert.pem" # this coordinator's client certificate
//! key = "nats/clients/coord-main/key.pem"   # and key (secret)
//! connect_timeout_secs = 10
//!
//! [api]
//! # tls_cert = "api/server.pem"             # HTTPS: the server's certificate chain (PEM)
//! # tls_key = "api/server.key"              # and its key (secret). Both or neither; without
//!                                           # them the API is plain HTTP (loopback only)
//! public_metrics = false                    # true: GET /metrics without authentication
//! rate_limit_per_second = 20                # signed calls per second and principal (0: off)
//! rate_limit_burst = 100                    # calls at once per principal; beyond: 429
//!
//! [audit]
//! file = "coordinator.audit.jsonl"          # this coordinator's signed event log (one file
//!                                           # per coordinator instance)
//! fsync_every = 1                           # flush to disk after every event; n: every n
//! stream = false                            # true: create the cluster's JetStream audit stream
//!                                           # (deny-delete, deny-purge) and publish to it
//! stream_replicas = 1                       # its replicas when created (3 on a NATS cluster)
//!
//! [service]
//! signing_attempts = 3                      # signing sessions per request before it fails
//! session_deadline_secs = 120               # keygen, presign and sign sessions
//! aux_info_deadline_secs = 900              # committee set-up (auxiliary info)
//! expiry_sweep_interval_secs = 30
//! rotation_check_interval_secs = 60         # scheduled refreshes, activations to resend
//! spend_delivery_interval_secs = 30         # spend chain records to holders that lack them
//! worker_poll_interval_secs = 5
//! stale_signing_after_secs = 60             # take over requests a stopped replica left
//! presignature_pool_target = 0              # presignatures kept per key (0: full signing)
//! presignature_refill_interval_secs = 10
//! presignature_max_age_secs = 18000         # pooled presignatures older than this are
//!                                           # replaced; keep it below the nodes'
//!                                           # presignature_lifetime_secs (default 21600)
//! default_request_lifetime_secs = 3600
//! proposal_lifetime_secs = 86400
//! blame_cooldown_secs = 300
//! shutdown_grace_secs = 10                  # a running session's time to finish on stop
//! ```
//!
//! Environment overrides (they win over the file): `TESSERA_COORDINATOR_DATABASE_URL`
//! (used as given: a relative SQLite path is relative to the working directory),
//! `TESSERA_COORDINATOR_LISTEN` and `TESSERA_COORDINATOR_NATS_URL`. Keep a PostgreSQL password
//! in the environment variable rather than in the file.
//!
//! Unknown settings are errors (a typo is never silently ignored).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tessera_channel::identity::CoordinatorKey;
use tessera_channel::{Roster, RosterHash, SignedRoster};
use tessera_policy::{PolicyDocument, PolicyHash};
use tessera_transport::nats::CoordinatorNatsConfig;

use crate::api::ApiOptions;
use crate::service::CoordinatorSettings;

/// The environment variable overriding `database_url`.
pub const ENV_DATABASE_URL: &str = "TESSERA_COORDINATOR_DATABASE_URL";
/// The environment variable overriding `listen`.
pub const ENV_LISTEN: &str = "TESSERA_COORDINATOR_LISTEN";
/// The environment variable overriding `nats.url`.
pub const ENV_NATS_URL: &str = "TESSERA_COORDINATOR_NATS_URL";

/// Why the configuration, or a file it names, is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file cannot be read.
    #[error("cannot read {what} {path}: {reason}")]
    Read {
        /// What the file is.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The configuration is not valid TOML for this program.
    #[error("{path} is not a valid coordinator configuration: {reason}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The TOML parser's message, with line and column.
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
    /// A setting or a file it names is unusable.
    #[error("{0}")]
    Invalid(String),
}

/// The broker connection.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NatsSection {
    /// Server URL, e.g. `tls://10.0.0.5:4222`.
    pub url: String,
    /// The private CA's certificate (PEM).
    pub ca: PathBuf,
    /// This coordinator's client certificate (PEM).
    pub cert: PathBuf,
    /// This coordinator's client key (PEM, secret).
    pub key: PathBuf,
    /// Seconds to wait for the first connection.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_secs: u64,
}

/// The REST API.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ApiSection {
    /// The server's certificate chain (PEM) for HTTPS; with [`tls_key`](Self::tls_key).
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    /// The server's private key (PEM) for HTTPS; with [`tls_cert`](Self::tls_cert).
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    /// Serve `GET /metrics` without authentication (see [`ApiOptions::public_metrics`]).
    #[serde(default)]
    pub public_metrics: bool,
    /// Signed calls per second each principal may make on average; beyond its burst, calls
    /// are answered 429 with `Retry-After`. Failed authentications, all together, get the same
    /// budget. Default 20; 0 disables the limits (see
    /// [`ApiOptions::rate_limit_per_second`] for why 20).
    #[serde(default = "default_rate_limit_per_second")]
    pub rate_limit_per_second: u32,
    /// Signed calls each principal may make at once. Default 100; 0 disables the limits.
    #[serde(default = "default_rate_limit_burst")]
    pub rate_limit_burst: u32,
}

impl Default for ApiSection {
    fn default() -> Self {
        ApiSection {
            tls_cert: None,
            tls_key: None,
            public_metrics: false,
            rate_limit_per_second: default_rate_limit_per_second(),
            rate_limit_burst: default_rate_limit_burst(),
        }
    }
}

fn default_rate_limit_per_second() -> u32 {
    crate::api::DEFAULT_RATE_LIMIT_PER_SECOND
}

fn default_rate_limit_burst() -> u32 {
    crate::api::DEFAULT_RATE_LIMIT_BURST
}

/// The service's settings, in seconds; see [`CoordinatorSettings`] for each.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
#[allow(missing_docs)]
pub struct ServiceSection {
    pub signing_attempts: u32,
    pub session_deadline_secs: u64,
    pub aux_info_deadline_secs: u64,
    pub expiry_sweep_interval_secs: u64,
    pub rotation_check_interval_secs: u64,
    pub spend_delivery_interval_secs: u64,
    pub worker_poll_interval_secs: u64,
    pub stale_signing_after_secs: u64,
    pub presignature_pool_target: usize,
    pub presignature_refill_interval_secs: u64,
    pub presignature_max_age_secs: u64,
    pub default_request_lifetime_secs: u64,
    pub proposal_lifetime_secs: u64,
    pub blame_cooldown_secs: u64,
    pub shutdown_grace_secs: u64,
}

impl Default for ServiceSection {
    fn default() -> Self {
        let d = CoordinatorSettings::default();
        ServiceSection {
            signing_attempts: d.signing_attempts,
            session_deadline_secs: d.session_deadline.as_secs(),
            aux_info_deadline_secs: d.aux_info_deadline.as_secs(),
            expiry_sweep_interval_secs: d.expiry_sweep_interval.as_secs(),
            rotation_check_interval_secs: d.rotation_check_interval.as_secs(),
            spend_delivery_interval_secs: d.spend_delivery_interval.as_secs(),
            worker_poll_interval_secs: d.worker_poll_interval.as_secs(),
            stale_signing_after_secs: d.stale_signing_after.as_secs(),
            presignature_pool_target: d.presignature_pool_target,
            presignature_refill_interval_secs: d.presignature_refill_interval.as_secs(),
            presignature_max_age_secs: d.presignature_max_age.as_secs(),
            default_request_lifetime_secs: d.default_request_lifetime.as_secs(),
            proposal_lifetime_secs: d.proposal_lifetime.as_secs(),
            blame_cooldown_secs: d.blame_cooldown.as_secs(),
            shutdown_grace_secs: d.shutdown_grace.as_secs(),
        }
    }
}

impl ServiceSection {
    /// As the service takes them (validated by the service at start).
    pub fn settings(&self) -> CoordinatorSettings {
        let secs = Duration::from_secs;
        CoordinatorSettings {
            signing_attempts: self.signing_attempts,
            session_deadline: secs(self.session_deadline_secs),
            aux_info_deadline: secs(self.aux_info_deadline_secs),
            expiry_sweep_interval: secs(self.expiry_sweep_interval_secs),
            rotation_check_interval: secs(self.rotation_check_interval_secs),
            spend_delivery_interval: secs(self.spend_delivery_interval_secs),
            worker_poll_interval: secs(self.worker_poll_interval_secs),
            stale_signing_after: secs(self.stale_signing_after_secs),
            presignature_pool_target: self.presignature_pool_target,
            presignature_refill_interval: secs(self.presignature_refill_interval_secs),
            presignature_max_age: secs(self.presignature_max_age_secs),
            default_request_lifetime: secs(self.default_request_lifetime_secs),
            proposal_lifetime: secs(self.proposal_lifetime_secs),
            blame_cooldown: secs(self.blame_cooldown_secs),
            shutdown_grace: secs(self.shutdown_grace_secs),
        }
    }
}

fn default_connect_timeout() -> u64 {
    10
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8700))
}

fn default_database_url() -> String {
    "sqlite://coordinator.db".into()
}

/// The coordinator's configuration (see the [module documentation](self)).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CoordinatorConfig {
    /// The API's listen address. Default `127.0.0.1:8700`.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// The database. Default `sqlite://coordinator.db` (next to the configuration file).
    #[serde(default = "default_database_url")]
    pub database_url: String,
    /// The signed roster file.
    pub roster: PathBuf,
    /// The roster hash the nodes pin (64 hex digits).
    pub roster_pin: String,
    /// The policy file (TOML) the nodes pin.
    pub policy: PathBuf,
    /// Its SHA-256 (64 hex digits).
    pub policy_pin: String,
    /// This coordinator's secret key file.
    pub coordinator_key: PathBuf,
    /// The broker.
    pub nats: NatsSection,
    /// The REST API.
    #[serde(default)]
    pub api: ApiSection,
    /// The service.
    #[serde(default)]
    pub service: ServiceSection,
    /// The audit log (default file `coordinator.audit.jsonl` next to this file).
    #[serde(default)]
    pub audit: tessera_audit::AuditSection,
}

impl CoordinatorConfig {
    /// Reads `path`, resolves relative paths against its directory and applies the
    /// environment overrides.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            what: "the configuration",
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        let mut config = Self::parse(&text).map_err(|reason| ConfigError::Parse {
            path: path.to_owned(),
            reason,
        })?;
        config.resolve(path.parent().unwrap_or(Path::new(".")));
        config.apply_env()?;
        Ok(config)
    }

    /// Parses TOML text (no path resolution, no overrides).
    pub fn parse(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// Makes relative paths (and a relative SQLite file) relative to `base`.
    pub fn resolve(&mut self, base: &Path) {
        let join = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        join(&mut self.roster);
        join(&mut self.policy);
        join(&mut self.coordinator_key);
        join(&mut self.nats.ca);
        join(&mut self.nats.cert);
        join(&mut self.nats.key);
        for path in [&mut self.api.tls_cert, &mut self.api.tls_key]
            .into_iter()
            .flatten()
        {
            join(path);
        }
        self.audit.resolve(base);
        if self.audit.file.is_none() {
            self.audit.file = Some(base.join("coordinator.audit.jsonl"));
        }
        self.database_url = resolve_sqlite(&self.database_url, base);
    }

    fn apply_env(&mut self) -> Result<(), ConfigError> {
        if let Some(url) = env(ENV_DATABASE_URL)? {
            self.database_url = url;
        }
        if let Some(listen) = env(ENV_LISTEN)? {
            self.listen = listen.parse().map_err(|e| ConfigError::Env {
                name: ENV_LISTEN,
                reason: format!("{e}: expected an address such as 127.0.0.1:8700"),
            })?;
        }
        if let Some(url) = env(ENV_NATS_URL)? {
            self.nats.url = url;
        }
        Ok(())
    }

    /// The API's options.
    /// The API's TLS settings: `None` for plain HTTP. Refuses a certificate without its key
    /// (or the reverse), and files that do not make a usable certificate and key.
    pub fn api_tls(&self) -> Result<Option<Arc<rustls::ServerConfig>>, ConfigError> {
        match (&self.api.tls_cert, &self.api.tls_key) {
            (None, None) => Ok(None),
            (Some(cert), Some(key)) => {
                warn_if_readable_by_others(key);
                crate::tls::server_config(cert, key)
                    .map(Some)
                    .map_err(|e| ConfigError::Invalid(format!("[api] TLS: {e}")))
            }
            _ => Err(ConfigError::Invalid(
                "[api] tls_cert and tls_key go together: give both for HTTPS, or neither for \
                 plain HTTP"
                    .into(),
            )),
        }
    }

    pub fn api_options(&self) -> ApiOptions {
        ApiOptions {
            public_metrics: self.api.public_metrics,
            rate_limit_per_second: self.api.rate_limit_per_second,
            rate_limit_burst: self.api.rate_limit_burst,
        }
    }

    /// Reads the roster and checks it against `roster_pin` and its own structure.
    pub fn load_roster(&self) -> Result<Roster, ConfigError> {
        let text = read("the roster", &self.roster)?;
        let signed = SignedRoster::from_json(&text).map_err(|e| {
            ConfigError::Invalid(format!("{} is not a roster: {e}", self.roster.display()))
        })?;
        let pin = RosterHash::from_hex(&self.roster_pin)
            .map_err(|e| ConfigError::Invalid(format!("roster_pin must be 64 hex digits: {e}")))?;
        signed.roster.validate().map_err(|e| {
            ConfigError::Invalid(format!(
                "the roster {} is invalid: {e}",
                self.roster.display()
            ))
        })?;
        let actual = signed.roster.hash();
        if !actual.matches(&pin) {
            return Err(ConfigError::Invalid(format!(
                "the roster {} has hash {actual}, but roster_pin is {pin}; use the roster the \
                 nodes pin (verify a new one with `tessera roster verify` and update roster_pin)",
                self.roster.display()
            )));
        }
        Ok(signed.roster)
    }

    /// Reads the policy and checks it against `policy_pin`.
    pub fn load_policy(&self) -> Result<PolicyDocument, ConfigError> {
        let bytes = std::fs::read(&self.policy).map_err(|e| ConfigError::Read {
            what: "the policy",
            path: self.policy.clone(),
            reason: e.to_string(),
        })?;
        let policy = PolicyDocument::from_toml(&bytes).map_err(|e| {
            ConfigError::Invalid(format!(
                "{} is not a valid policy: {e}",
                self.policy.display()
            ))
        })?;
        let pin: PolicyHash = self.policy_pin.parse().map_err(|e| {
            ConfigError::Invalid(format!(
                "policy_pin must be 64 hex digits (sha256sum of the policy file): {e}"
            ))
        })?;
        if policy.hash() != pin {
            return Err(ConfigError::Invalid(format!(
                "the policy {} has hash {}, but policy_pin is {pin}; the coordinator must run \
                 with the policy the nodes pin",
                self.policy.display(),
                policy.hash()
            )));
        }
        Ok(policy)
    }

    /// Reads the coordinator key and checks that `roster` names it as a coordinator with the
    /// same public key, and that it has a NATS key. Warns if others may read the file.
    pub fn load_coordinator_key(&self, roster: &Roster) -> Result<CoordinatorKey, ConfigError> {
        warn_if_readable_by_others(&self.coordinator_key);
        let text = read("the coordinator key", &self.coordinator_key)?;
        let key = CoordinatorKey::from_json(&text).map_err(|e| {
            ConfigError::Invalid(format!(
                "{} is not a coordinator key: {e}",
                self.coordinator_key.display()
            ))
        })?;
        let entry = roster.coordinator(key.name()).ok_or_else(|| {
            ConfigError::Invalid(format!(
                "coordinator '{}' is not in the roster; add it to the roster (and re-pin the \
                 nodes) or use a key the roster names",
                key.name()
            ))
        })?;
        let same = entry
            .verifying_key()
            .is_ok_and(|pinned| pinned == key.verifying_key());
        if !same {
            return Err(ConfigError::Invalid(format!(
                "the roster names coordinator '{}' with another public key than {}",
                key.name(),
                self.coordinator_key.display()
            )));
        }
        if key.nats_seed().is_none() {
            return Err(ConfigError::Invalid(format!(
                "{} has no NATS key; create the coordinator key with one",
                self.coordinator_key.display()
            )));
        }
        Ok(key)
    }

    /// The broker connection for `key` in `roster`'s cluster. Checks that the TLS files exist.
    pub fn nats_config(
        &self,
        roster: &Roster,
        key: &CoordinatorKey,
    ) -> Result<CoordinatorNatsConfig, ConfigError> {
        for (what, path) in [
            ("the NATS CA certificate", &self.nats.ca),
            ("the NATS client certificate", &self.nats.cert),
            ("the NATS client key", &self.nats.key),
        ] {
            std::fs::metadata(path).map_err(|e| ConfigError::Read {
                what,
                path: path.clone(),
                reason: e.to_string(),
            })?;
        }
        warn_if_readable_by_others(&self.nats.key);
        let seed = key
            .nats_seed()
            .ok_or_else(|| ConfigError::Invalid("the coordinator key has no NATS key".into()))?;
        Ok(CoordinatorNatsConfig {
            url: self.nats.url.clone(),
            cluster: roster.cluster.clone(),
            name: key.name().to_owned(),
            nkey_seed: seed.to_owned().into(),
            ca_file: self.nats.ca.clone(),
            cert_file: self.nats.cert.clone(),
            key_file: self.nats.key.clone(),
            connect_timeout: Duration::from_secs(self.nats.connect_timeout_secs),
        })
    }
}

fn env(name: &'static str) -> Result<Option<String>, ConfigError> {
    match std::env::var(name) {
        Ok(value) if value.is_empty() => Ok(None),
        Ok(value) => Ok(Some(value)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => Err(ConfigError::Env {
            name,
            reason: "not UTF-8".into(),
        }),
    }
}

fn read(what: &'static str, path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
        what,
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

fn warn_if_readable_by_others(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path) {
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(
                    file = %path.display(),
                    "a secret file is readable by other users; run `chmod 600` on it"
                );
            }
        }
    }
}

/// `sqlite://<relative path>` made relative to `base`; other URLs as they are.
fn resolve_sqlite(url: &str, base: &Path) -> String {
    let Some(rest) = url.strip_prefix("sqlite://") else {
        return url.to_owned();
    };
    let (file, params) = match rest.split_once('?') {
        Some((file, params)) => (file, Some(params)),
        None => (rest, None),
    };
    if file.is_empty() || file == ":memory:" || Path::new(file).is_absolute() {
        return url.to_owned();
    }
    let joined = base.join(file);
    match params {
        Some(params) => format!("sqlite://{}?{params}", joined.display()),
        None => format!("sqlite://{}", joined.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
roster = "roster.json"
roster_pin = "00"
policy = "policy.toml"
policy_pin = "00"
coordinator_key = "coordinator.key.json"
[nats]
url = "tls://127.0.0.1:4222"
ca = "ca.pem"
cert = "cert.pem"
key = "key.pem"
"#;

    #[test]
    fn defaults_and_relative_paths() {
        let mut config = CoordinatorConfig::parse(MINIMAL).unwrap();
        assert_eq!(config.listen, "127.0.0.1:8700".parse().unwrap());
        assert_eq!(config.database_url, "sqlite://coordinator.db");
        assert_eq!(config.service.settings(), CoordinatorSettings::default());
        assert!(!config.api.public_metrics);
        assert_eq!(config.api_options(), ApiOptions::default());
        assert_eq!(config.api, ApiSection::default());
        assert_eq!(config.nats.connect_timeout_secs, 10);
        config.resolve(Path::new("/etc/tessera"));
        assert_eq!(config.database_url, "sqlite:///etc/tessera/coordinator.db");
        assert_eq!(config.policy, Path::new("/etc/tessera/policy.toml"));
        assert_eq!(config.nats.key, Path::new("/etc/tessera/key.pem"));
    }

    #[test]
    fn sqlite_urls_resolve_only_when_relative() {
        let base = Path::new("/srv");
        assert_eq!(resolve_sqlite("sqlite://a.db", base), "sqlite:///srv/a.db");
        assert_eq!(
            resolve_sqlite("sqlite://a.db?mode=rw", base),
            "sqlite:///srv/a.db?mode=rw"
        );
        for same in [
            "sqlite:///abs.db",
            "sqlite::memory:",
            "sqlite://:memory:",
            "postgres://u@h/db",
        ] {
            assert_eq!(resolve_sqlite(same, base), same);
        }
    }

    #[test]
    fn service_settings_and_unknown_keys() {
        let text =
            format!("{MINIMAL}\n[service]\nsigning_attempts = 5\nsession_deadline_secs = 30\n");
        let config = CoordinatorConfig::parse(&text).unwrap();
        let settings = config.service.settings();
        assert_eq!(settings.signing_attempts, 5);
        assert_eq!(settings.session_deadline, Duration::from_secs(30));
        assert_eq!(settings.aux_info_deadline, Duration::from_secs(900));

        let typo = MINIMAL.replace("policy_pin", "policy_pn");
        let err = CoordinatorConfig::parse(&typo).unwrap_err();
        assert!(err.contains("policy_pn"), "{err}");
        let err =
            CoordinatorConfig::parse(&format!("{MINIMAL}\n[service]\nattempts = 1\n")).unwrap_err();
        assert!(err.contains("attempts"), "{err}");
        let err =
            CoordinatorConfig::parse(&format!("listen = \"nowhere\"\n{MINIMAL}")).unwrap_err();
        assert!(err.contains("listen") || err.contains("address"), "{err}");
    }

    #[test]
    fn api_rate_limits_are_configurable() {
        let text = format!("{MINIMAL}\n[api]\nrate_limit_per_second = 5\nrate_limit_burst = 7\n");
        let options = CoordinatorConfig::parse(&text).unwrap().api_options();
        assert_eq!(
            (options.rate_limit_per_second, options.rate_limit_burst),
            (5, 7)
        );
        assert!(!options.public_metrics);
        let err =
            CoordinatorConfig::parse(&format!("{MINIMAL}\n[api]\nrate_limit = 5\n")).unwrap_err();
        assert!(err.contains("rate_limit"), "{err}");
    }

    #[test]
    fn the_documented_example_parses_with_every_default() {
        let source = include_str!("config.rs");
        let example: String = source
            .lines()
            .skip_while(|l| *l != "//! ```toml")
            .skip(1)
            .take_while(|l| *l != "//! ```")
            .map(|l| l.trim_start_matches("//!").strip_prefix(' ').unwrap_or(""))
            .collect::<Vec<_>>()
            .join("\n");
        assert!(example.contains("[service]"), "{example}");
        let config = CoordinatorConfig::parse(&example).unwrap_or_else(|e| panic!("{e}"));
        let defaults = CoordinatorConfig::parse(MINIMAL).unwrap();
        assert_eq!(config.service, defaults.service);
        assert_eq!(config.api, defaults.api);
        assert_eq!(config.listen, defaults.listen);
        assert_eq!(config.database_url, defaults.database_url);
    }

    #[test]
    fn environment_overrides_win() {
        // nextest runs each test in its own process, so the environment is ours.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("coordinator.toml");
        std::fs::write(&path, MINIMAL).unwrap();
        let config = CoordinatorConfig::load(&path).unwrap();
        assert_eq!(
            config.database_url,
            format!("sqlite://{}", dir.path().join("coordinator.db").display())
        );
        std::env::set_var(ENV_DATABASE_URL, "postgres://tessera@db/tessera");
        std::env::set_var(ENV_LISTEN, "0.0.0.0:9000");
        std::env::set_var(ENV_NATS_URL, "tls://10.0.0.9:4222");
        let config = CoordinatorConfig::load(&path).unwrap();
        assert_eq!(config.database_url, "postgres://tessera@db/tessera");
        assert_eq!(config.listen, "0.0.0.0:9000".parse().unwrap());
        assert_eq!(config.nats.url, "tls://10.0.0.9:4222");
        std::env::set_var(ENV_LISTEN, "port 9000");
        let err = CoordinatorConfig::load(&path).unwrap_err();
        assert!(err.to_string().contains(ENV_LISTEN), "{err}");
        for name in [ENV_DATABASE_URL, ENV_LISTEN, ENV_NATS_URL] {
            std::env::remove_var(name);
        }
    }
}
