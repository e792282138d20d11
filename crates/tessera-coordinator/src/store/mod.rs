//! The coordinator's state: committees, keys, signing requests, approvals, spend, API nonces, policies,
//! policy proposals and protocol sessions.
//!
//! One code path serves SQLite (the embedded default) and PostgreSQL (production, shared by
//! coordinator replicas): every query is portable SQL run through [`sqlx::AnyPool`], with `$1,
//! $2…` placeholders, `BIGINT` integers and byte strings stored as lowercase hex `TEXT`.
//!
//! Writes that may race are single statements: inserts are `INSERT … ON CONFLICT DO NOTHING`
//! followed by a read of the stored row (rows are never deleted, except expired nonces), and
//! state changes are compare-and-set `UPDATE … WHERE state IN (…)`. The few operations that
//! need several statements at once (admitting a request to signing with its spend reserved,
//! giving the reservation back when signing fails) run in a write transaction that takes the
//! writer lock first ([`Store::begin_write`]: `BEGIN IMMEDIATE` on SQLite), so SQLite's lock is
//! never upgraded mid-transaction.
//!
//! Creation times come from the caller (they are part of what clients sign); `updated_at` and a
//! session's `finished_at` come from the store's clock ([`Store::with_clock`]).

mod approvals;
mod committees;
mod error;
mod key_changes;
mod keys;
mod migrate;
mod nonces;
mod page;
mod policies;
mod requests;
mod row;
mod sessions;
mod signing;
mod spend;
mod spend_chain;
mod types;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::any::AnyPoolOptions;
use sqlx::{AnyConnection, AnyPool, Connection};

pub use approvals::{AddApproval, Approval};
pub use committees::CommitteeRow;
pub use error::StoreError;
pub use key_changes::{KeyChangeRow, NewKeyChange};
pub use keys::{KeyRow, Lifecycle, LifecyclePhase, NewKey};
pub use migrate::SCHEMA_VERSION;
pub use policies::{NewProposal, PolicyRow, ProposalRow};
pub use requests::{NewRequest, RequestFilter, RequestRow};
pub use sessions::{NewSession, SessionOutcome, SessionRow};
pub use signing::SignedRequest;
pub use spend::{Admission, Spend};
pub use spend_chain::{LinkRow, LinkedRequest};
pub use types::{
    ApprovalSubject, CommitteeStatus, Decision, InsertOutcome, KeyChangeState, KeyStatus,
    ProposalId, ProposalState, RequestKind, RequestState, SessionSubject,
};

pub(crate) use error::redact_url;

/// How long to wait for a database connection before giving up.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections to a SQLite file: readers run in parallel under WAL, writers take turns.
const SQLITE_CONNECTIONS: u32 = 4;
/// Connections to a PostgreSQL server per coordinator.
const POSTGRES_CONNECTIONS: u32 = 10;

/// Which database engine a [`Store`] runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// SQLite, in a file or in memory.
    Sqlite,
    /// A PostgreSQL server.
    Postgres,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        })
    }
}

/// The clock that stamps `updated_at` and `finished_at`: Unix seconds.
type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

fn system_clock() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The coordinator's database. Cheap to clone: clones share one connection pool.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    clock: Clock,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

/// A parsed database URL.
enum Target {
    /// `sqlite::memory:`: one connection, gone when the store closes.
    SqliteMemory,
    /// A SQLite file; the URL asks for it to be created when missing.
    SqliteFile(String),
    /// A PostgreSQL server.
    Postgres,
}

const EXPECTED_URLS: &str = "use sqlite://<path> (created if missing), sqlite::memory: \
                             (nothing is kept) or postgres://<user>[:<password>]@<host>[:<port>]/<database>";

impl Target {
    fn parse(url: &str) -> Result<Target, String> {
        let Some((scheme, _)) = url.split_once(':') else {
            return Err(format!("not a database URL: {EXPECTED_URLS}"));
        };
        match scheme {
            "sqlite" => {
                let rest = url
                    .strip_prefix("sqlite://")
                    .or_else(|| url.strip_prefix("sqlite:"))
                    .unwrap_or_default();
                let (database, params) = match rest.split_once('?') {
                    Some((database, params)) => (database, Some(params)),
                    None => (rest, None),
                };
                if database == ":memory:" {
                    return Ok(Target::SqliteMemory);
                }
                if database.is_empty() {
                    return Err(format!("the SQLite URL names no file: {EXPECTED_URLS}"));
                }
                match params {
                    None => Ok(Target::SqliteFile(format!("{url}?mode=rwc"))),
                    Some(p) if p.split('&').any(|kv| kv.starts_with("mode=")) => {
                        Ok(Target::SqliteFile(url.to_owned()))
                    }
                    Some(_) => Ok(Target::SqliteFile(format!("{url}&mode=rwc"))),
                }
            }
            "postgres" | "postgresql" => Ok(Target::Postgres),
            other => Err(format!("unsupported scheme {other:?}: {EXPECTED_URLS}")),
        }
    }
}

impl Store {
    /// Opens the database at `url`, creating a SQLite file if missing, and brings its schema up
    /// to [`SCHEMA_VERSION`] (idempotent: a database already at that version is left as is).
    ///
    /// Accepted URLs: `sqlite://<path>` (relative or, with a third slash, absolute; WAL journal
    /// and foreign keys on), `sqlite::memory:` (one connection; everything is lost when the
    /// store is dropped) and `postgres://user:password@host:port/database`.
    ///
    /// Refuses, with [`StoreError::SchemaTooNew`], a database a newer coordinator migrated.
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        // Safe to call repeatedly; nothing else in the process installs sqlx drivers.
        sqlx::any::install_default_drivers();
        let shown = redact_url(url);
        let connect_error = |reason: String| StoreError::Connect {
            url: shown.clone(),
            reason,
        };
        let target = Target::parse(url).map_err(connect_error)?;
        let options = AnyPoolOptions::new().acquire_timeout(ACQUIRE_TIMEOUT);
        let (backend, options, url, hint) = match &target {
            Target::SqliteMemory => (
                Backend::Sqlite,
                // Each new connection would open a new, empty in-memory database: keep one.
                options
                    .max_connections(1)
                    .min_connections(1)
                    .idle_timeout(None)
                    .max_lifetime(None),
                url,
                "",
            ),
            Target::SqliteFile(url) => (
                Backend::Sqlite,
                options.max_connections(SQLITE_CONNECTIONS),
                url.as_str(),
                "; check that the directory exists and that this user may write to it",
            ),
            Target::Postgres => (
                Backend::Postgres,
                options.max_connections(POSTGRES_CONNECTIONS),
                url,
                "; check that the server is running and reachable, and the user name, password \
                 and database name",
            ),
        };
        if !matches!(target, Target::SqliteMemory) {
            // One attempt first, so a wrong URL or a server that is down fails at once with its
            // cause (the pool would retry until its timeout and report only the timeout).
            let probe = tokio::time::timeout(ACQUIRE_TIMEOUT, AnyConnection::connect(url))
                .await
                .map_err(|_| connect_error(format!("no answer within {ACQUIRE_TIMEOUT:?}{hint}")))?
                .map_err(|e| connect_error(format!("{e}{hint}")))?;
            // The probe's only job was to fail early; a failing close changes nothing.
            let _ = probe.close().await;
        }
        let pool = options
            .connect(url)
            .await
            .map_err(|e| connect_error(format!("{e}{hint}")))?;
        if let Target::SqliteFile(_) = target {
            if let Err(e) = enable_wal(&pool).await {
                pool.close().await;
                return Err(connect_error(e));
            }
        }
        if let Err(e) = migrate::run(&pool).await {
            pool.close().await;
            return Err(e);
        }
        tracing::info!(%backend, url = %shown, schema_version = SCHEMA_VERSION, "coordinator store ready");
        Ok(Store {
            pool,
            backend,
            clock: Arc::new(system_clock),
        })
    }

    /// Replaces the clock that stamps `updated_at` and `finished_at` (Unix seconds); for tests
    /// and simulations. The default is the system clock.
    pub fn with_clock(mut self, clock: impl Fn() -> i64 + Send + Sync + 'static) -> Store {
        self.clock = Arc::new(clock);
        self
    }

    /// The database engine in use.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The newest schema version applied to the database.
    pub async fn schema_version(&self) -> Result<i64, StoreError> {
        let version: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations")
            .fetch_one(&self.pool)
            .await
            .map_err(|e| StoreError::db("reading the schema version", e))?;
        Ok(version.unwrap_or(0))
    }

    /// Waits for running queries and closes every connection. Later calls fail.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    fn now(&self) -> i64 {
        (self.clock)()
    }

    /// Starts a transaction that will write: on SQLite it takes the writer lock at once
    /// (`BEGIN IMMEDIATE`, waiting for another writer as long as the busy timeout allows),
    /// on PostgreSQL a plain `BEGIN` (the first write locks the rows it changes).
    async fn begin_write(
        &self,
        what: &str,
    ) -> Result<sqlx::Transaction<'static, sqlx::Any>, StoreError> {
        let begun = match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await,
            Backend::Postgres => self.pool.begin().await,
        };
        begun.map_err(|e| StoreError::db(format_args!("starting {what}"), e))
    }
}

/// Switches a SQLite file to write-ahead logging (persistent in the file).
async fn enable_wal(pool: &AnyPool) -> Result<(), String> {
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(pool)
        .await
        .map_err(|e| format!("cannot read the SQLite journal mode: {e}"))?;
    if mode.eq_ignore_ascii_case("wal") {
        return Ok(());
    }
    // Switching needs the file to itself: another coordinator opening the same new file at
    // the same moment makes this fail with "database is locked" (SQLite's busy handler does not
    // cover it), so retry for a few seconds before giving up.
    let mut attempts = 0;
    let mode: String = loop {
        match sqlx::query_scalar("PRAGMA journal_mode = WAL")
            .fetch_one(pool)
            .await
        {
            Ok(mode) => break mode,
            Err(e) if attempts < 100 && e.to_string().contains("database is locked") => {
                attempts += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => return Err(format!("cannot switch the SQLite file to WAL: {e}")),
        }
    };
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(format!(
            "SQLite kept journal mode {mode:?} instead of WAL; use a local file system that \
             supports shared memory"
        ));
    }
    Ok(())
}

/// `$first, $first+1, …` for `count` values, for `IN (…)` lists.
fn placeholders(first: usize, count: usize) -> String {
    (first..first + count)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}
