//! Test support, behind the cargo feature `testing`: throwaway PostgreSQL servers and
//! databases. For tests only; never enable the feature in a release build.
//!
//! [`PostgresServer::start`] uses the server named by `TESSERA_TEST_POSTGRES_URL` when set
//! (creating a database with a random name on it, dropped again afterwards); otherwise it runs
//! Debian's `initdb` and `postgres` in a temp dir (port on 127.0.0.1 chosen at random, unix
//! socket in the temp dir, fsync off), and stops the server and deletes the dir on drop. As
//! root it runs them as the `postgres` system user, since PostgreSQL refuses to run as root.
//! Without PostgreSQL installed it fails (tests must not silently skip): run
//! `./scripts/setup.sh`.

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sqlx::postgres::PgConnection;
use sqlx::{Connection, Executor};
use tempfile::TempDir;
use tessera_wire::RequestId;

/// The environment variable naming an existing PostgreSQL server for tests, as a URL whose user
/// may create databases, e.g. `postgres://tessera:secret@db.example:5432/postgres`.
pub const POSTGRES_URL_ENV: &str = "TESSERA_TEST_POSTGRES_URL";

/// How long a local server may take to accept connections.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a local server may take to stop before it is killed.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a test server or database could not be provided.
#[derive(Debug, thiserror::Error)]
pub enum TestingError {
    /// No PostgreSQL binaries were found.
    #[error(
        "PostgreSQL is not installed (no initdb and postgres in /usr/lib/postgresql/*/bin or on \
         the PATH): run ./scripts/setup.sh, or set {POSTGRES_URL_ENV} to a server the tests may \
         create databases on"
    )]
    NotInstalled,
    /// Running as root, but there is no `postgres` user to run the server as.
    #[error(
        "PostgreSQL refuses to run as root and there is no `postgres` system user: run \
         ./scripts/setup.sh (the postgresql package creates the user) or run the tests as an \
         ordinary user"
    )]
    NoPostgresUser,
    /// A file operation or a command failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The failure.
        source: std::io::Error,
    },
    /// `initdb` failed.
    #[error("initdb failed ({status}): {output}")]
    Initdb {
        /// Its exit status.
        status: String,
        /// What it printed.
        output: String,
    },
    /// The server did not come up.
    #[error("PostgreSQL did not start: {0}")]
    Startup(String),
    /// A test database could not be created.
    #[error(
        "cannot create a test database on {server}: {reason}; check that the server is up and \
         the user may create databases"
    )]
    CreateDatabase {
        /// The server (password redacted).
        server: String,
        /// The failure.
        reason: String,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> TestingError {
    let what = what.into();
    move |source| TestingError::Io { what, source }
}

/// A PostgreSQL server for one test, and the databases created on it.
pub struct PostgresServer {
    /// URL of the server's maintenance database, used to create and drop test databases.
    admin_url: String,
    /// URL of this server's first test database.
    url: String,
    local: Option<LocalServer>,
    /// Databases created on an external server, dropped on drop.
    created: Mutex<Vec<String>>,
}

impl std::fmt::Debug for PostgresServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresServer")
            .field("url", &crate::store::redact_url(&self.url))
            .field("local", &self.local.is_some())
            .finish_non_exhaustive()
    }
}

struct LocalServer {
    child: Child,
    /// Deleted after the server has stopped: fields drop after `Drop::drop` runs.
    _dir: TempDir,
}

impl PostgresServer {
    /// Starts a server (or, with `TESSERA_TEST_POSTGRES_URL`, a fresh database on that server);
    /// [`url`](Self::url) connects to an empty database on it.
    pub async fn start() -> Result<PostgresServer, TestingError> {
        match std::env::var(POSTGRES_URL_ENV) {
            Ok(url) if !url.is_empty() => {
                let mut server = PostgresServer {
                    admin_url: url,
                    url: String::new(),
                    local: None,
                    created: Mutex::new(Vec::new()),
                };
                server.url = server.fresh_database().await?;
                Ok(server)
            }
            _ => start_local().await,
        }
    }

    /// The URL of this server's test database.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Creates another empty database on the same server and returns its URL: cheaper than
    /// another server (about 0.15 s, against 0.4 s for a server from the cached template and
    /// 1.5 s for the first one, which runs initdb). Dropped with the server.
    pub async fn fresh_database(&self) -> Result<String, TestingError> {
        let name = format!("tessera_test_{}", RequestId::random());
        let failed = |e: sqlx::Error| TestingError::CreateDatabase {
            server: crate::store::redact_url(&self.admin_url),
            reason: e.to_string(),
        };
        let mut admin = PgConnection::connect(&self.admin_url)
            .await
            .map_err(failed)?;
        admin
            .execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .map_err(failed)?;
        admin.close().await.map_err(failed)?;
        if self.local.is_none() {
            self.created
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .push(name.clone());
        }
        Ok(with_database(&self.admin_url, &name))
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        if let Some(local) = &mut self.local {
            stop(&mut local.child);
            return;
        }
        let names = std::mem::take(
            self.created
                .get_mut()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        );
        if names.is_empty() {
            return;
        }
        // Drop cannot await: drop the databases from a thread with its own runtime.
        let admin_url = self.admin_url.clone();
        let dropper = std::thread::spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot drop test databases");
                    return;
                }
            };
            runtime.block_on(async {
                let mut admin = match PgConnection::connect(&admin_url).await {
                    Ok(admin) => admin,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot drop test databases");
                        return;
                    }
                };
                for name in names {
                    let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                    if let Err(e) = admin.execute(sql.as_str()).await {
                        tracing::warn!(database = %name, error = %e, "cannot drop test database");
                    }
                }
            });
        });
        let _ = dropper.join();
    }
}

/// Stops a local server: fast shutdown (SIGINT), then SIGKILL if it lingers.
fn stop(child: &mut Child) {
    let interrupted = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if interrupted {
        let deadline = Instant::now() + SHUTDOWN_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// `url` with its database (path) replaced by `name`.
fn with_database(url: &str, name: &str) -> String {
    let authority_start = url.find("://").map_or(0, |i| i + 3);
    let rest = &url[authority_start..];
    let authority_end = authority_start + rest.find(['/', '?']).unwrap_or(rest.len());
    let query = url[authority_end..]
        .find('?')
        .map_or("", |i| &url[authority_end + i..]);
    format!("{}/{name}{query}", &url[..authority_end])
}

/// The directory holding `initdb` and `postgres`: Debian's newest version, else the PATH.
fn find_binaries() -> Result<PathBuf, TestingError> {
    find_binaries_in(
        Path::new("/usr/lib/postgresql"),
        std::env::var_os("PATH").as_deref(),
    )
}

fn find_binaries_in(
    debian_root: &Path,
    path: Option<&std::ffi::OsStr>,
) -> Result<PathBuf, TestingError> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(debian_root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .collect();
    versions.sort();
    let path_dirs = path
        .map(|p| std::env::split_paths(p).collect::<Vec<_>>())
        .unwrap_or_default();
    versions
        .into_iter()
        .rev()
        .map(|(_, dir)| dir)
        .chain(path_dirs)
        .find(|dir| dir.join("initdb").is_file() && dir.join("postgres").is_file())
        .ok_or(TestingError::NotInstalled)
}

/// The output of `id <args>`, as a number.
fn id(args: &[&str]) -> Option<u32> {
    let out = Command::new("id").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8(out.stdout).ok()?.trim().parse().ok()
}

/// A command, run as `user` (uid, gid) when given.
fn command(program: &Path, user: Option<(u32, u32)>) -> Command {
    match user {
        Some((uid, gid)) => {
            let mut cmd = Command::new("setpriv");
            cmd.arg(format!("--reuid={uid}"))
                .arg(format!("--regid={gid}"))
                .arg("--clear-groups")
                .arg("--")
                .arg(program);
            cmd
        }
        None => Command::new(program),
    }
}

async fn start_local() -> Result<PostgresServer, TestingError> {
    let began = Instant::now();
    let bin = find_binaries()?;
    let user = if id(&["-u"]) == Some(0) {
        let uid = id(&["-u", "postgres"]).ok_or(TestingError::NoPostgresUser)?;
        let gid = id(&["-g", "postgres"]).ok_or(TestingError::NoPostgresUser)?;
        Some((uid, gid))
    } else {
        None
    };
    let dir = tempfile::Builder::new()
        .prefix("tessera-pg-")
        .tempdir()
        .map_err(io("creating a temp dir for PostgreSQL"))?;
    if let Some((uid, gid)) = user {
        std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).map_err(io(format!(
            "handing {} to the postgres user",
            dir.path().display()
        )))?;
    }
    let data = dir.path().join("data");
    init_data_dir(&bin, user, dir.path(), &data).await?;
    let initdb_time = began.elapsed();

    // A free port can be taken by someone else before the server binds it: try a few.
    let mut last_error = String::new();
    for _ in 0..5 {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(io("finding a free port"))?
            .port();
        let log = dir.path().join(format!("postgres-{port}.log"));
        let log_file = File::create(&log).map_err(io(format!("creating {}", log.display())))?;
        let log_err = log_file
            .try_clone()
            .map_err(io(format!("opening {}", log.display())))?;
        let mut child = command(&bin.join("postgres"), user)
            .arg("-D")
            .arg(&data)
            .arg("-k")
            .arg(dir.path())
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
            .args(["-c", "full_page_writes=off", "-c", "max_connections=50"])
            .args(["-c", "shared_buffers=16MB", "-c", "logging_collector=off"])
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(log_err)
            .spawn()
            .map_err(io("starting postgres (as root it runs through setpriv)"))?;
        let admin_url = format!("postgres://postgres@127.0.0.1:{port}/postgres");
        match wait_until_ready(&mut child, &log, &admin_url).await {
            Ok(()) => {
                tracing::info!(
                    port,
                    init_ms = initdb_time.as_millis() as u64,
                    total_ms = began.elapsed().as_millis() as u64,
                    "test PostgreSQL server up"
                );
                return Ok(PostgresServer {
                    url: admin_url.clone(),
                    admin_url,
                    local: Some(LocalServer { child, _dir: dir }),
                    created: Mutex::new(Vec::new()),
                });
            }
            Err(Ready::PortTaken(log)) => {
                let _ = child.wait();
                last_error = log;
            }
            Err(Ready::Failed(reason)) => {
                stop(&mut child);
                return Err(TestingError::Startup(reason));
            }
        }
    }
    Err(TestingError::Startup(format!(
        "no free port after 5 tries; last log: {last_error}"
    )))
}

/// `initdb`'s arguments besides the data directory.
const INITDB_ARGS: &[&str] = &[
    "--username=postgres",
    "--auth=trust",
    "--encoding=UTF8",
    "--locale=C",
    "--no-sync",
    "--no-instructions",
];
/// Bumped whenever [`INITDB_ARGS`] change, so older templates are not reused.
const TEMPLATE_FORMAT: u32 = 1;
/// The file marking a complete template.
const TEMPLATE_READY: &str = "tessera-template-ready";

/// Runs a command off the async threads.
async fn output(mut cmd: Command, what: &str) -> Result<std::process::Output, TestingError> {
    tokio::task::spawn_blocking(move || cmd.output())
        .await
        .map_err(|e| TestingError::Startup(format!("{what}: {e}")))?
        .map_err(io(format!(
            "running {what} (as root it runs through setpriv)"
        )))
}

/// Fills `data` with a fresh cluster. `initdb` takes one to two seconds, so its first result is
/// kept as a template in the temp dir (one per PostgreSQL version and server user, published
/// atomically) and later servers copy it, which takes tens of milliseconds.
async fn init_data_dir(
    bin: &Path,
    user: Option<(u32, u32)>,
    dir: &Path,
    data: &Path,
) -> Result<(), TestingError> {
    let template = template_path(bin, user).await;
    if let Some(template) = &template {
        if template_usable(template, user) {
            let mut cp = command(Path::new("cp"), user);
            cp.arg("-a").arg(template).arg(data);
            match output(cp, "cp").await {
                Ok(out) if out.status.success() => return Ok(()),
                _ => {
                    tracing::warn!(template = %template.display(), "cannot copy the PostgreSQL template; running initdb")
                }
            }
        }
    }
    let mut initdb = command(&bin.join("initdb"), user);
    initdb
        .arg("--pgdata")
        .arg(data)
        .args(INITDB_ARGS)
        .current_dir(dir);
    let out = output(initdb, "initdb").await?;
    if !out.status.success() {
        return Err(TestingError::Initdb {
            status: out.status.to_string(),
            output: format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        });
    }
    if let Some(template) = template {
        publish_template(data, &template, user).await;
    }
    Ok(())
}

/// Where the template for this PostgreSQL version and server user lives.
async fn template_path(bin: &Path, user: Option<(u32, u32)>) -> Option<PathBuf> {
    let mut version = command(&bin.join("postgres"), None);
    version.arg("--version");
    let out = output(version, "postgres --version").await.ok()?;
    // "postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)"
    let text = String::from_utf8(out.stdout).ok()?;
    let version: String = text
        .split_whitespace()
        .nth(2)?
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '.')
        .collect();
    let uid = match user {
        Some((uid, _)) => uid,
        None => id(&["-u"])?,
    };
    Some(std::env::temp_dir().join(format!(
        "tessera-pg-template-{version}-f{TEMPLATE_FORMAT}-u{uid}"
    )))
}

/// Whether `template` is complete and belongs to the server user (not planted by another).
fn template_usable(template: &Path, user: Option<(u32, u32)>) -> bool {
    use std::os::unix::fs::MetadataExt;
    let owner_ok = match (std::fs::metadata(template), user) {
        (Ok(meta), Some((uid, _))) => meta.uid() == uid,
        (Ok(meta), None) => Some(meta.uid()) == id(&["-u"]),
        (Err(_), _) => false,
    };
    owner_ok && template.join(TEMPLATE_READY).is_file()
}

/// Copies a fresh data dir to `template`, atomically; best effort.
async fn publish_template(data: &Path, template: &Path, user: Option<(u32, u32)>) {
    let mut build = template.as_os_str().to_owned();
    build.push(format!(".build-{}", RequestId::random()));
    let build = PathBuf::from(build);
    let mut cp = command(Path::new("cp"), user);
    cp.arg("-a").arg(data).arg(&build);
    let copied = matches!(output(cp, "cp").await, Ok(out) if out.status.success());
    let published = copied
        && File::create(build.join(TEMPLATE_READY)).is_ok()
        && std::fs::rename(&build, template).is_ok();
    if !published {
        // Another test published first, or the temp dir is not writable: no template.
        let _ = std::fs::remove_dir_all(&build);
    }
}

/// Why a local server is not up.
enum Ready {
    /// Another process took the port first: try another.
    PortTaken(String),
    /// Anything else.
    Failed(String),
}

/// The last lines of a log, for error messages.
fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// Waits until the server accepts connections at `url`, or exits, or times out.
async fn wait_until_ready(child: &mut Child, log: &Path, url: &str) -> Result<(), Ready> {
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            return Err(
                if text.contains("could not bind") || text.contains("Address already in use") {
                    Ready::PortTaken(tail(&text))
                } else {
                    Ready::Failed(format!(
                        "postgres exited ({status}); its log:\n{}",
                        tail(&text)
                    ))
                },
            );
        }
        if let Ok(conn) = PgConnection::connect(url).await {
            let _ = conn.close().await;
            return Ok(());
        }
        if Instant::now() > deadline {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            return Err(Ready::Failed(format!(
                "not accepting connections after {STARTUP_TIMEOUT:?}; its log:\n{}",
                tail(&text)
            )));
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_postgres_says_to_run_setup() {
        let empty = tempfile::tempdir().unwrap();
        let err = find_binaries_in(empty.path(), Some(empty.path().as_os_str())).unwrap_err();
        assert!(matches!(err, TestingError::NotInstalled));
        assert!(err.to_string().contains("run ./scripts/setup.sh"), "{err}");
    }

    #[test]
    fn newest_debian_version_wins_over_the_path() {
        let root = tempfile::tempdir().unwrap();
        for dir in ["13/bin", "16/bin", "9/bin", "other/bin", "path"] {
            let dir = root.path().join(dir);
            std::fs::create_dir_all(&dir).unwrap();
            for tool in ["initdb", "postgres"] {
                File::create(dir.join(tool)).unwrap();
            }
        }
        // 17 lacks postgres: not a candidate.
        std::fs::create_dir_all(root.path().join("17/bin")).unwrap();
        File::create(root.path().join("17/bin/initdb")).unwrap();
        let path = root.path().join("path");
        assert_eq!(
            find_binaries_in(root.path(), Some(path.as_os_str())).unwrap(),
            root.path().join("16/bin")
        );
        let nowhere = root.path().join("nowhere");
        assert_eq!(
            find_binaries_in(&nowhere, Some(path.as_os_str())).unwrap(),
            path
        );
    }

    #[test]
    fn database_urls_keep_server_and_options() {
        assert_eq!(
            with_database("postgres://u:p@h:5/postgres?sslmode=disable", "t1"),
            "postgres://u:p@h:5/t1?sslmode=disable"
        );
        assert_eq!(with_database("postgres://u@h", "t1"), "postgres://u@h/t1");
        assert_eq!(
            with_database("postgres://u@h?x=1", "t1"),
            "postgres://u@h/t1?x=1"
        );
    }
}
