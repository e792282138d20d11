//! Runs a real `nats-server` on loopback with a provisioned configuration: for `tessera dev`,
//! benchmarks with `--spawn-nats`, and integration tests. Production brokers are run by
//! operators from the file `tessera nats-config` writes.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tessera_channel::Roster;
use tessera_wire::PartyId;
use zeroize::Zeroizing;

use super::provision::{provision, Provisioned, ServerSettings};
use super::{CoordinatorNatsConfig, NatsConfig};
use crate::TransportError;

/// Environment variable naming the `nats-server` binary (default: `nats-server` on `PATH`).
pub const NATS_SERVER_ENV: &str = "NATS_SERVER_BIN";

/// A `nats-server` child process, stopped when dropped.
pub struct LocalNatsServer {
    child: Child,
    provisioned: Provisioned,
    dir: PathBuf,
    _tempdir: Option<tempfile::TempDir>,
}

impl LocalNatsServer {
    /// Provisions `roster` into a fresh temporary directory, starts `nats-server` on a free
    /// loopback port and waits until it accepts connections.
    pub fn start(roster: &Roster) -> Result<Self, TransportError> {
        let tempdir = tempfile::Builder::new()
            .prefix("tessera-nats-")
            .tempdir()
            .map_err(|e| TransportError::io("creating a temporary directory", e))?;
        let dir = tempdir.path().to_path_buf();
        let mut server = Self::start_in(roster, &dir)?;
        server._tempdir = Some(tempdir);
        Ok(server)
    }

    /// As [`start`](Self::start), in a directory the caller keeps.
    pub fn start_in(roster: &Roster, dir: &Path) -> Result<Self, TransportError> {
        let port = free_port()?;
        let provisioned = provision(roster, &ServerSettings::loopback(port), dir)?;
        let child = spawn(&provisioned.config, dir)?;
        let mut server = LocalNatsServer {
            child,
            provisioned,
            dir: dir.to_path_buf(),
            _tempdir: None,
        };
        server.wait_ready(Duration::from_secs(15))?;
        Ok(server)
    }

    /// Stops the server and starts it again on the same port with the same configuration, as a
    /// broker restart would. Connected clients reconnect on their own.
    pub fn restart(&mut self) -> Result<(), TransportError> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = spawn(&self.provisioned.config, &self.dir)?;
        self.wait_ready(Duration::from_secs(15))
    }

    fn port(&self) -> u16 {
        self.provisioned
            .url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("provisioned URL ends with the port")
    }

    fn wait_ready(&mut self, limit: Duration) -> Result<(), TransportError> {
        let port = self.port();
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Ok(Some(status)) = self.child.try_wait() {
                let log = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
                return Err(TransportError::Setup(format!(
                    "nats-server exited with {status} before accepting connections:\n{log}"
                )));
            }
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        Err(TransportError::Setup(format!(
            "nats-server did not accept connections on port {port} within {limit:?}"
        )))
    }

    /// The client URL.
    pub fn url(&self) -> &str {
        &self.provisioned.url
    }

    /// What was provisioned (config, CA, client certificates).
    pub fn provisioned(&self) -> &Provisioned {
        &self.provisioned
    }

    /// The directory holding config, certificates and the server log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Connection settings for `party` with its NKey seed.
    pub fn client_config(
        &self,
        roster: &Roster,
        party: PartyId,
        nkey_seed: &str,
    ) -> Result<NatsConfig, TransportError> {
        let files = self.provisioned.client(party).ok_or_else(|| {
            TransportError::Setup(format!("party {party} has no client certificate"))
        })?;
        Ok(NatsConfig {
            url: self.provisioned.url.clone(),
            cluster: roster.cluster.clone(),
            party,
            nkey_seed: Zeroizing::new(nkey_seed.to_owned()),
            ca_file: self.provisioned.ca_cert.clone(),
            cert_file: files.cert.clone(),
            key_file: files.key.clone(),
            connect_timeout: Duration::from_secs(5),
        })
    }

    /// Connection settings for the roster coordinator `name` with its NKey seed.
    pub fn coordinator_config(
        &self,
        roster: &Roster,
        name: &str,
        nkey_seed: &str,
    ) -> Result<CoordinatorNatsConfig, TransportError> {
        let files = self.provisioned.coordinator_client(name).ok_or_else(|| {
            TransportError::Setup(format!(
                "coordinator {name} has no client certificate; is it in the roster with a NATS \
                 user?"
            ))
        })?;
        Ok(CoordinatorNatsConfig {
            url: self.provisioned.url.clone(),
            cluster: roster.cluster.clone(),
            name: name.to_owned(),
            nkey_seed: Zeroizing::new(nkey_seed.to_owned()),
            ca_file: self.provisioned.ca_cert.clone(),
            cert_file: files.cert.clone(),
            key_file: files.key.clone(),
            connect_timeout: Duration::from_secs(5),
        })
    }
}

impl Drop for LocalNatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(config: &Path, dir: &Path) -> Result<Child, TransportError> {
    let binary = std::env::var(NATS_SERVER_ENV).unwrap_or_else(|_| "nats-server".into());
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("server.log"))
        .map_err(|e| TransportError::io("opening the server log", e))?;
    let log_err = log
        .try_clone()
        .map_err(|e| TransportError::io("opening the server log", e))?;
    Command::new(&binary)
        .arg("-c")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .spawn()
        .map_err(|e| {
            TransportError::Setup(format!(
                "cannot run {binary:?} ({e}); install it with `apt-get install nats-server` \
                 or set {NATS_SERVER_ENV}"
            ))
        })
}

fn free_port() -> Result<u16, TransportError> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .map_err(|e| TransportError::io("finding a free port", e))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| TransportError::io("finding a free port", e))
}
